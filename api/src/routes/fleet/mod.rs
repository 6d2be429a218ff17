//! The fleet product's routes under `/v1/fleet`. Admins (the operator
//! console) manage firmware and rollouts; services (the fleet backend)
//! register devices, report versions and read; users get 403 everywhere;
//! the signing key is public.

pub mod catalog;
pub mod devices;
pub mod firmware;
pub mod rollouts;

use super::Routes;

pub fn router() -> Routes {
    Routes::new()
        .merge(catalog::router())
        .merge(firmware::router())
        .merge(devices::router())
        .merge(rollouts::router())
}

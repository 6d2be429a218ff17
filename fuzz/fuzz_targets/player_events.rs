//! Player-event bodies (`POST /v1/events`, no token needed): any bytes are
//! read or refused with a 400. `cargo +nightly fuzz run player_events`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reelay_api::engagement::events;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = events::parse(data) {
        assert_eq!(error.status().as_u16(), 400, "{error}");
    }
});

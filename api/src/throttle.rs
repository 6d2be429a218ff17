//! Rate limits of the endpoints anyone may call without a token: the
//! onboarding collection, player events, comments read anonymously and the
//! development tokens. Each caller, a signed-in user by their id and anyone
//! else by their address, gets `REELAY_PUBLIC_RATE_PER_SEC` requests a
//! second with bursts of `REELAY_PUBLIC_RATE_BURST` on each api replica;
//! past that, 429 with `Retry-After`, before the body is read. GCRA keyed
//! per caller (governor); callers not seen for a while are forgotten.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    num::NonZeroU32,
    sync::{Arc, Weak},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, request::Parts},
};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use uuid::Uuid;

use crate::{
    auth::Caller,
    config::{ApiConfig, PublicRate},
    error::ApiError,
    state::AppState,
};

/// How often callers not limited any more are dropped from memory.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// Who a limit is kept for.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Key {
    User(Uuid),
    Address(IpAddr),
}

#[derive(Clone, Default)]
pub struct Throttle {
    limiter: Option<Arc<DefaultKeyedRateLimiter<Key>>>,
    /// `REELAY_CLIENT_IP_HEADER`: the header the proxy in front names the
    /// client in (its last address), instead of the connection's peer.
    client_ip_header: Option<String>,
}

impl Throttle {
    /// The limiter of `config` (none when the rate is 0), and a task that
    /// forgets idle callers for as long as the limiter lives.
    pub fn new(config: &ApiConfig) -> Self {
        let limiter = config.public_rate.map(|PublicRate { per_sec, burst }| {
            let quota = Quota::per_second(per_sec).allow_burst(burst.max(NonZeroU32::MIN));
            Arc::new(RateLimiter::keyed(quota))
        });
        if let Some(limiter) = &limiter {
            let weak: Weak<DefaultKeyedRateLimiter<Key>> = Arc::downgrade(limiter);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(FORGET_EVERY);
                every.tick().await;
                loop {
                    every.tick().await;
                    let Some(limiter) = weak.upgrade() else { break };
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            });
        }
        Self {
            limiter,
            client_ip_header: config.client_ip_header.clone(),
        }
    }

    fn key(&self, parts: &Parts, caller: Option<Caller>) -> Key {
        // A token that does not verify counts as no token here; the
        // endpoint itself refuses it.
        if let Some(caller) = caller {
            return Key::User(caller.user.0);
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let address = self
            .client_ip_header
            .as_deref()
            .and_then(|name| forwarded(&parts.headers, name))
            .unwrap_or(peer);
        Key::Address(network(address))
    }
}

/// An IPv4 address as itself; an IPv6 one by its /64, what one client
/// gets (counting each of its 2^64 addresses apart would be no limit).
fn network(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// The last address of a proxy's header (`X-Forwarded-For: client, proxy1`
/// gains the peer each proxy saw at its end; the last is the one ours saw).
fn forwarded(headers: &HeaderMap, name: &str) -> Option<IpAddr> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let last = values.iter().flat_map(|v| v.split(',')).next_back()?.trim();
    // A bare address, or one with a port (`1.2.3.4:5678`, `[2001:db8::1]:443`).
    last.parse()
        .ok()
        .or_else(|| last.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            last.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()
        })
}

/// A request to a public endpoint within its caller's rate.
pub struct Throttled;

impl FromRequestParts<AppState> for Throttled {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let throttle = &state.throttle;
        let Some(limiter) = &throttle.limiter else {
            return Ok(Self);
        };
        let caller = Caller::from_request_parts(parts, state).await.ok();
        match limiter.check_key(&throttle.key(parts, caller)) {
            Ok(()) => Ok(Self),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                metrics::counter!("reelay_public_requests_throttled_total").increment(1);
                Err(ApiError::TooManyRequests {
                    retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_last_address_of_the_proxys_header() {
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.7".parse().unwrap(),
        );
        assert_eq!(
            forwarded(&headers, "x-forwarded-for"),
            Some("203.0.113.7".parse().unwrap())
        );
        headers.append("x-forwarded-for", "2001:db8::1".parse().unwrap());
        assert_eq!(
            forwarded(&headers, "x-forwarded-for"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(forwarded(&headers, "x-real-ip"), None);
        headers.insert("x-real-ip", "not an address".parse().unwrap());
        assert_eq!(forwarded(&headers, "x-real-ip"), None);
        headers.insert("x-real-ip", "[2001:db8::7]:443".parse().unwrap());
        assert_eq!(
            forwarded(&headers, "x-real-ip"),
            Some("2001:db8::7".parse().unwrap())
        );
        headers.insert("x-real-ip", "192.0.2.9:5678".parse().unwrap());
        assert_eq!(
            forwarded(&headers, "x-real-ip"),
            Some("192.0.2.9".parse().unwrap())
        );
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_ipv4_itself() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(network(a), network(b));
        assert_ne!(network(a), network("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(
            network("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        assert_ne!(
            network("192.0.2.1".parse().unwrap()),
            network("192.0.2.2".parse().unwrap())
        );
    }
}

//! Rate limits of the subscribe endpoint (governor, keyed): requests per
//! client IP, confirmation mails per address. Both quotas are per hour with
//! the whole hour's allowance as burst, so a test can count without timing.

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;

/// Keys kept before idle ones are evicted early (besides the periodic
/// [`Limits::evict_idle`]): bounds the memory an attacker with many source
/// addresses can make us use.
const MAX_KEYS: usize = 100_000;

/// The two keyed limiters.
pub struct Limits {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_address: DefaultKeyedRateLimiter<String>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("ips", &self.per_ip.len())
            .field("addresses", &self.per_address.len())
            .finish()
    }
}

fn hourly(n: u32) -> Quota {
    Quota::per_hour(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl Limits {
    /// `per_ip` requests and `per_address` mails per hour (0 counts as 1).
    pub fn new(per_ip: u32, per_address: u32) -> Limits {
        Limits {
            per_ip: RateLimiter::keyed(hourly(per_ip)),
            per_address: RateLimiter::keyed(hourly(per_address)),
        }
    }

    /// Takes one request for `ip`; `Err(seconds)` until the next one is allowed.
    /// IPv6 addresses count per /64, the block one customer usually has.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), u64> {
        let key = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut seg = v6.segments();
                    seg[4..].fill(0);
                    IpAddr::V6(seg.into())
                }
            },
            v4 => v4,
        };
        self.guard_size();
        self.per_ip.check_key(&key).map_err(wait_secs)
    }

    /// Takes one mail for the address key (`Address::key`).
    pub fn check_address(&self, key: &str) -> Result<(), u64> {
        self.guard_size();
        self.per_address
            .check_key(&key.to_string())
            .map_err(wait_secs)
    }

    /// Forgets keys whose allowance is full again. Call it now and then.
    pub fn evict_idle(&self) {
        self.per_ip.retain_recent();
        self.per_address.retain_recent();
    }

    fn guard_size(&self) {
        if self.per_ip.len() > MAX_KEYS || self.per_address.len() > MAX_KEYS {
            self.evict_idle();
        }
    }
}

fn wait_secs(n: governor::NotUntil<governor::clock::QuantaInstant>) -> u64 {
    use governor::clock::{Clock, DefaultClock};
    n.wait_time_from(DefaultClock::default().now()).as_secs() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_per_ipv6_block() {
        let l = Limits::new(2, 1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(l.check_ip(a).is_ok() && l.check_ip(a).is_ok());
        assert!(l.check_ip(a).unwrap_err() > 0);
        assert!(l.check_ip(b).is_ok());
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(l.check_ip(v6a).is_ok() && l.check_ip(v6b).is_ok());
        assert!(l.check_ip(v6a).is_err(), "same /64 shares the quota");
        assert!(l.check_address("ann@example.org").is_ok());
        assert!(l.check_address("ann@example.org").is_err());
        assert!(l.check_address("bob@example.org").is_ok());
    }
}

//! Failed-login limits, per account and per client address, on this node.
//!
//! Each account and each address has a token bucket of failures: a failed login takes a
//! token, time puts them back at a steady rate, and a login is refused (429
//! `TOOMANYREQUESTS` with `Retry-After`) without checking the password while either
//! bucket is empty. Limits decay: a bucket refills completely in about a minute, so no
//! one is locked out for longer than an attack keeps failing.
//!
//! An attacker must not be able to lock a user out by failing logins for that account
//! from elsewhere. So a successful login remembers its (account, address) pair for a day,
//! and a known pair is exempt from the account's bucket (never from its address'): the
//! user keeps logging in from where they did before while the account's bucket is empty
//! for everyone else. A success resets nothing: it neither refills its address' bucket
//! (an attacker with one valid account must not reset the count it runs up on others)
//! nor another address' count.
//!
//! Limits hold per node: a scale-out deployment of N nodes behind a balancer allows up to
//! N times as many failures (say so in docs/access.md).
//!
//! Memory is bounded: each map holds at most [`MAX_ENTRIES`]; a full map first drops the
//! buckets that have refilled (they hold no information), then, if an attack keeps more
//! than that many buckets draining at once, starts over. Filling it takes more failed
//! logins a minute than a node can check passwords, because only a checked failure
//! inserts a bucket.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most buckets (or known pairs) kept per map.
pub const MAX_ENTRIES: usize = 65_536;
/// How long a successful (account, address) pair stays exempt from the account's limit.
const KNOWN_FOR: Duration = Duration::from_secs(24 * 3600);

/// A bucket's shape: `burst` failures at once, then one more every `every`.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub per_account: Rate,
    pub per_address: Rate,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            per_account: Rate { burst: 10, every: Duration::from_secs(6) },
            per_address: Rate { burst: 20, every: Duration::from_secs(3) },
        }
    }
}

/// Where a login comes from: an IPv4 address, or an IPv6 /64 (one host usually holds a
/// whole /64, so counting its addresses apart would multiply its allowance).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Origin {
    V4(u32),
    V6Prefix(u64),
    Unknown,
}

impl Origin {
    fn of(peer: Option<IpAddr>) -> Origin {
        match peer.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => Origin::V4(v4.to_bits()),
            Some(IpAddr::V6(v6)) => Origin::V6Prefix((v6.to_bits() >> 64) as u64),
            None => Origin::Unknown,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn level(&self, rate: Rate, now: Instant) -> f64 {
        let refilled = now.saturating_duration_since(self.at).as_secs_f64() / rate.every.as_secs_f64();
        (self.tokens + refilled).min(f64::from(rate.burst))
    }
}

/// Buckets by key, bounded.
struct Buckets<K> {
    rate: Rate,
    map: HashMap<K, Bucket>,
}

impl<K: Eq + Hash> Buckets<K> {
    fn new(rate: Rate) -> Buckets<K> {
        Buckets { rate, map: HashMap::new() }
    }

    /// Seconds until a failure could be afforded, `None` if one can be now.
    fn wait(&self, key: &K, now: Instant) -> Option<u64> {
        let level = self.map.get(key)?.level(self.rate, now);
        (level < 1.0).then(|| ((1.0 - level) * self.rate.every.as_secs_f64()).ceil().max(1.0) as u64)
    }

    fn take(&mut self, key: K, now: Instant) {
        if self.map.len() >= MAX_ENTRIES && !self.map.contains_key(&key) {
            let (rate, full) = (self.rate, f64::from(self.rate.burst));
            self.map.retain(|_, b| b.level(rate, now) < full);
            if self.map.len() >= MAX_ENTRIES {
                tracing::warn!(entries = MAX_ENTRIES, "failed-login buckets full; starting over");
                self.map.clear();
            }
        }
        let rate = self.rate;
        let bucket = self.map.entry(key).or_insert(Bucket { tokens: f64::from(rate.burst), at: now });
        *bucket = Bucket { tokens: (bucket.level(rate, now) - 1.0).max(0.0), at: now };
    }
}

struct State {
    accounts: Buckets<String>,
    addresses: Buckets<Origin>,
    /// (account, origin) pairs that logged in successfully, until when they are exempt.
    known: HashMap<(String, Origin), Instant>,
}

pub struct Limiter {
    state: Mutex<State>,
}

impl Limiter {
    pub fn new(limits: Limits) -> Limiter {
        Limiter {
            state: Mutex::new(State {
                accounts: Buckets::new(limits.per_account),
                addresses: Buckets::new(limits.per_address),
                known: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(seconds to wait)` if a login for `account` from `peer` must not be tried now.
    pub fn check(&self, account: &str, peer: Option<IpAddr>) -> Result<(), u64> {
        let (now, origin) = (Instant::now(), Origin::of(peer));
        let state = self.state();
        let by_address = state.addresses.wait(&origin, now);
        let known = state.known.get(&(account.to_owned(), origin)).is_some_and(|until| now < *until);
        let by_account = if known { None } else { state.accounts.wait(&account.to_owned(), now) };
        match by_address.max(by_account) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    pub fn failed(&self, account: &str, peer: Option<IpAddr>) {
        let (now, origin) = (Instant::now(), Origin::of(peer));
        let mut state = self.state();
        state.addresses.take(origin, now);
        state.accounts.take(account.to_owned(), now);
    }

    pub fn succeeded(&self, account: &str, peer: Option<IpAddr>) {
        let now = Instant::now();
        let mut state = self.state();
        if state.known.len() >= MAX_ENTRIES {
            state.known.retain(|_, until| now < *until);
            if state.known.len() >= MAX_ENTRIES {
                state.known.clear();
            }
        }
        state.known.insert((account.to_owned(), Origin::of(peer)), now + KNOWN_FOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn slow(burst: u32) -> Rate {
        Rate { burst, every: Duration::from_secs(3600) }
    }

    #[test]
    fn an_address_is_limited_after_its_burst_whatever_the_account() {
        let limiter = Limiter::new(Limits { per_account: slow(100), per_address: slow(3) });
        for name in ["a", "b", "c"] {
            assert!(limiter.check(name, ip("10.0.0.1")).is_ok());
            limiter.failed(name, ip("10.0.0.1"));
        }
        let wait = limiter.check("d", ip("10.0.0.1")).unwrap_err();
        assert!((1..=3600).contains(&wait), "{wait}");
        assert!(limiter.check("d", ip("10.0.0.2")).is_ok(), "another address is not limited");
    }

    #[test]
    fn an_account_is_limited_from_every_address_except_where_it_logged_in_before() {
        let limiter = Limiter::new(Limits { per_account: slow(2), per_address: slow(100) });
        limiter.succeeded("alice", ip("192.0.2.7"));
        limiter.failed("alice", ip("10.0.0.1"));
        limiter.failed("alice", ip("10.0.0.2"));
        assert!(limiter.check("alice", ip("10.0.0.3")).is_err(), "the account's bucket is empty");
        assert!(limiter.check("alice", ip("192.0.2.7")).is_ok(), "the address alice used before is exempt");
        assert!(limiter.check("bob", ip("10.0.0.3")).is_ok());
    }

    #[test]
    fn limits_decay() {
        let limiter = Limiter::new(Limits {
            per_account: Rate { burst: 1, every: Duration::from_millis(50) },
            per_address: Rate { burst: 1, every: Duration::from_millis(50) },
        });
        limiter.failed("alice", ip("10.0.0.1"));
        assert_eq!(limiter.check("alice", ip("10.0.0.1")), Err(1));
        std::thread::sleep(Duration::from_millis(80));
        assert!(limiter.check("alice", ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64() {
        let limiter = Limiter::new(Limits { per_account: slow(100), per_address: slow(1) });
        limiter.failed("a", ip("2001:db8::1"));
        assert!(limiter.check("b", ip("2001:db8::2")).is_err());
        assert!(limiter.check("b", ip("2001:db8:0:1::1")).is_ok());
        // An IPv4-mapped address is the IPv4 address.
        limiter.failed("a", ip("10.1.1.1"));
        assert!(limiter.check("b", ip("::ffff:10.1.1.1")).is_err());
    }

    #[test]
    fn refilled_buckets_make_room_when_the_map_is_full() {
        let mut buckets = Buckets::new(Rate { burst: 1, every: Duration::from_nanos(1) });
        let start = Instant::now();
        for i in 0..MAX_ENTRIES as u32 {
            buckets.take(i, start);
        }
        buckets.take(u32::MAX, start + Duration::from_secs(1));
        assert_eq!(buckets.map.len(), 1, "every older bucket had refilled");
    }
}

//! Failed-login limits, per account and per client address, on this node.
//!
//! Each account and each address has a token bucket of failures: a failed password login
//! takes a token, time puts them back at a steady rate. Limits decay: a bucket refills
//! completely in about a minute.
//!
//! **A limit slows logins; it never refuses a right secret.** An attacker who does not
//! know the secret must not be able to keep its owner out, so a login past a limit (its
//! account's bucket or its address' is empty) is not refused unchecked: it waits until
//! the emptier bucket has put back one failure (at most one refill interval, 6 s for an
//! account, 3 s for an address), then its secret is checked. A right one logs in; a wrong
//! one is refused `429 TOOMANYREQUESTS` with `Retry-After` (and counted). Right and wrong
//! wait alike, so the time an answer takes tells an attacker nothing before the check.
//!
//! Guessing stays limited because each address has at most one login past a limit
//! waiting or being checked at a time: another one from it meanwhile is refused 429 at
//! once, unchecked. So past its limit an address gets one guess per refill interval,
//! exactly as many as the bucket allows, however many connections it opens, and an
//! account past its limit gets one guess per 6 s from each address trying it: guessing
//! costs addresses (an IPv6 client counts as its /64), while the owner, at an address of
//! its own, waits at most 6 s. A successful login also remembers its (account, address)
//! pair for a day, and a known pair does not wait for the account's bucket (only for its
//! address'). A success resets nothing: it neither refills its address' bucket (an
//! attacker with one valid account must not reset the count it runs up on others) nor
//! another address' count. Keyless robots' logins never come here (an ID token is
//! signed: there is nothing to guess).
//!
//! A wait is a timer on the request's task: it costs a socket, never a thread, and at
//! most [`MAX_WAITING`] logins wait on a node at once (past that, 429 at once).
//!
//! Limits hold per node: a scale-out deployment of N nodes behind a balancer allows up to
//! N times as many failures (say so in docs/access.md).
//!
//! Memory is bounded: each map holds at most [`MAX_ENTRIES`]; a full map first drops the
//! buckets that have refilled (they hold no information), then, if an attack keeps more
//! than that many buckets draining at once, starts over. Filling it takes more failed
//! logins a minute than a node can check passwords, because only a checked failure
//! inserts a bucket.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most buckets (or known pairs) kept per map.
pub const MAX_ENTRIES: usize = 65_536;
/// Logins past a limit waiting for their check at once on a node.
pub const MAX_WAITING: usize = 4_096;
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

    /// How long until a failure could be afforded, `None` if one can be now.
    fn wait<Q: Eq + Hash + ?Sized>(&self, key: &Q, now: Instant) -> Option<Duration>
    where
        K: Borrow<Q>,
    {
        let level = self.map.get(key)?.level(self.rate, now);
        (level < 1.0).then(|| self.rate.every.mul_f64(1.0 - level))
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
    /// Addresses with a login past a limit waiting or being checked now: one each.
    waiting: HashSet<Origin>,
}

impl State {
    /// How long a login for `account` from `origin` waits before its check, `None`
    /// within the limits.
    fn wait(&self, account: &str, origin: Origin, now: Instant) -> Option<Duration> {
        let by_address = self.addresses.wait(&origin, now);
        let known = self.known.get(&(account.to_owned(), origin)).is_some_and(|until| now < *until);
        let by_account = if known { None } else { self.accounts.wait(account, now) };
        by_address.max(by_account)
    }
}

/// Whole seconds for `Retry-After`, at least one.
fn seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
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
                waiting: HashSet::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The turn of a password login for `account` from `peer`: at once within the
    /// limits; past one, after the wait the module doc describes. `Err(seconds to wait)`
    /// (429 unchecked) if this address already has a login past a limit in progress, or
    /// too many wait on this node.
    pub async fn turn(&self, account: &str, peer: Option<IpAddr>) -> Result<Turn<'_>, u64> {
        let origin = Origin::of(peer);
        let wait = {
            let mut state = self.state();
            let Some(wait) = state.wait(account, origin, Instant::now()) else {
                return Ok(Turn { limiter: self, account: account.to_owned(), origin, past_limit: false });
            };
            if state.waiting.len() >= MAX_WAITING || !state.waiting.insert(origin) {
                return Err(seconds(wait));
            }
            wait
        };
        // Made before the wait, so that a login dropped while waiting gives its place back.
        let turn = Turn { limiter: self, account: account.to_owned(), origin, past_limit: true };
        tokio::time::sleep(wait).await;
        Ok(turn)
    }
}

/// A password login's place under the limits, from [`Limiter::turn`] to its outcome.
pub struct Turn<'a> {
    limiter: &'a Limiter,
    account: String,
    origin: Origin,
    /// It came past a limit: it waited, and holds its address' place in `waiting`.
    past_limit: bool,
}

impl Turn<'_> {
    /// Counts a wrong secret. `Some(seconds)` if the login came past a limit: it is
    /// refused 429 with that `Retry-After` rather than 401.
    pub fn failed(self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.limiter.state();
        state.addresses.take(self.origin, now);
        state.accounts.take(self.account.clone(), now);
        self.past_limit.then(|| seconds(state.wait(&self.account, self.origin, now).unwrap_or_default()))
    }

    /// Remembers the (account, address) pair of a right secret.
    pub fn succeeded(self) {
        let now = Instant::now();
        let mut state = self.limiter.state();
        if state.known.len() >= MAX_ENTRIES {
            state.known.retain(|_, until| now < *until);
            if state.known.len() >= MAX_ENTRIES {
                state.known.clear();
            }
        }
        state.known.insert((self.account.clone(), self.origin), now + KNOWN_FOR);
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.past_limit {
            self.limiter.state().waiting.remove(&self.origin);
        }
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

    fn fail(limiter: &Limiter, account: &str, peer: Option<IpAddr>) {
        let turn = Turn { limiter, account: account.into(), origin: Origin::of(peer), past_limit: false };
        assert_eq!(turn.failed(), None);
    }

    fn wait(limiter: &Limiter, account: &str, peer: Option<IpAddr>) -> Option<Duration> {
        limiter.state().wait(account, Origin::of(peer), Instant::now())
    }

    #[test]
    fn an_address_is_past_its_limit_after_its_burst_whatever_the_account() {
        let limiter = Limiter::new(Limits { per_account: slow(100), per_address: slow(3) });
        for name in ["a", "b", "c"] {
            assert_eq!(wait(&limiter, name, ip("10.0.0.1")), None);
            fail(&limiter, name, ip("10.0.0.1"));
        }
        let left = wait(&limiter, "d", ip("10.0.0.1")).unwrap();
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600), "{left:?}");
        assert_eq!(wait(&limiter, "d", ip("10.0.0.2")), None, "another address is not limited");
    }

    #[test]
    fn an_account_is_past_its_limit_from_every_address_except_where_it_logged_in_before() {
        let limiter = Limiter::new(Limits { per_account: slow(2), per_address: slow(100) });
        let home =
            Turn { limiter: &limiter, account: "alice".into(), origin: Origin::of(ip("192.0.2.7")), past_limit: false };
        home.succeeded();
        fail(&limiter, "alice", ip("10.0.0.1"));
        fail(&limiter, "alice", ip("10.0.0.2"));
        assert!(wait(&limiter, "alice", ip("10.0.0.3")).is_some(), "the account's bucket is empty");
        assert_eq!(wait(&limiter, "alice", ip("192.0.2.7")), None, "the address alice used before is exempt");
        assert_eq!(wait(&limiter, "bob", ip("10.0.0.3")), None);
    }

    #[tokio::test]
    async fn a_login_past_a_limit_waits_then_is_checked_one_per_address_at_a_time() {
        let every = Duration::from_millis(300);
        let limiter = Limiter::new(Limits { per_account: Rate { burst: 1, every }, per_address: slow(100) });
        fail(&limiter, "alice", ip("10.0.0.1"));

        // Past the account's limit: the login waits for the bucket to refill one failure,
        // and meanwhile its address gets no second one (429 at once, unchecked).
        let started = Instant::now();
        let first = limiter.turn("alice", ip("10.0.0.2"));
        let (first, second) = tokio::join!(first, async {
            tokio::task::yield_now().await;
            limiter.turn("alice", ip("10.0.0.2")).await.map(|_| ())
        });
        let first = first.unwrap();
        assert!(started.elapsed() >= every.mul_f64(0.9), "{:?}", started.elapsed());
        assert_eq!(second, Err(1), "one login past a limit per address at a time");
        // Another address, another account: not held up.
        let other = Instant::now();
        let bob = limiter.turn("bob", ip("10.0.0.3")).await.unwrap();
        assert!(other.elapsed() < every / 2);
        drop(bob);

        // A wrong secret past the limit is refused 429, and the address' place is free again.
        assert_eq!(first.failed(), Some(1));
        assert!(limiter.state().waiting.is_empty());
        // A right one past the limit logs in after the same wait.
        let started = Instant::now();
        limiter.turn("alice", ip("10.0.0.4")).await.unwrap().succeeded();
        assert!(started.elapsed() >= every.mul_f64(0.9), "{:?}", started.elapsed());
        // A login dropped while it waits gives its address' place back.
        fail(&limiter, "alice", ip("10.0.0.4"));
        let dropped = tokio::time::timeout(Duration::from_millis(20), limiter.turn("alice", ip("10.0.0.5"))).await;
        assert!(dropped.is_err());
        assert!(limiter.state().waiting.is_empty());
    }

    #[test]
    fn limits_decay() {
        let limiter = Limiter::new(Limits {
            per_account: Rate { burst: 1, every: Duration::from_millis(50) },
            per_address: Rate { burst: 1, every: Duration::from_millis(50) },
        });
        fail(&limiter, "alice", ip("10.0.0.1"));
        assert_eq!(wait(&limiter, "alice", ip("10.0.0.1")).map(seconds), Some(1));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(wait(&limiter, "alice", ip("10.0.0.1")), None);
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64() {
        let limiter = Limiter::new(Limits { per_account: slow(100), per_address: slow(1) });
        fail(&limiter, "a", ip("2001:db8::1"));
        assert!(wait(&limiter, "b", ip("2001:db8::2")).is_some());
        assert_eq!(wait(&limiter, "b", ip("2001:db8:0:1::1")), None);
        // An IPv4-mapped address is the IPv4 address.
        fail(&limiter, "a", ip("10.1.1.1"));
        assert!(wait(&limiter, "b", ip("::ffff:10.1.1.1")).is_some());
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

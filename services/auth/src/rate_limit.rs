//! Abuse limits that slow a guesser down without locking out an account's
//! owner or the other people behind an address (OWASP's authentication
//! cheat sheet: count failures only, prefer growing delays to lockouts, and
//! let a known device through), on `governor`'s GCRA limiters.
//!
//! A login *reserves* a cell on each limiter that applies before the
//! password is checked, so a thousand concurrent guesses cannot all slip
//! past a limit that has room for five; a login that succeeds hands its
//! cells back, so only failures count. With a limit of N per window a key
//! may fail N times in a burst, then once every window/N (the delay grows
//! with the guessing, and shrinks back while it stops):
//!
//! - per email *and* address: N failures (the guesser at one address for
//!   one account; nobody else is touched);
//! - per address, across emails: 10 N (password spraying; a shared NAT
//!   with a few typos among many people is far below it);
//! - per email, across addresses: 4 N (a distributed guess at one account).
//!
//! The last two never apply to a login that presents a device token the
//! same account was given on an earlier success: the account's owner on
//! a known device is never slowed by strangers.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock as _, DefaultClock};
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, StateStore};
use governor::{Quota, RateLimiter};

use crate::error::Error;

/// How many times the pair limit an address may fail across emails.
const SPRAY_FACTOR: u32 = 10;
/// How many times the pair limit an email may fail across addresses.
const DISTRIBUTED_FACTOR: u32 = 4;

/// The limits the login and registration endpoints enforce.
pub struct Limits {
    /// Failed logins per (normalised email, client address).
    per_pair: Limiter<(String, Option<IpAddr>)>,
    /// Failed logins per client address, across emails.
    per_address: Limiter<IpAddr>,
    /// Failed logins per email (existing or not, so the limit reveals
    /// nothing), across addresses.
    per_email: Limiter<String>,
    /// Registrations per client address (each costs an argon2 hash).
    registrations: Limiter<IpAddr>,
}

/// Cells taken for one login attempt, to give back if it succeeds.
#[must_use = "a successful login gives its reservation back"]
pub struct Reservation {
    email: String,
    address: Option<IpAddr>,
    /// Whether the address and email limiters were taken (no known device).
    wide: bool,
}

impl Limits {
    pub fn new(login_failures: NonZeroU32, registrations: NonZeroU32, window: Duration) -> Self {
        let times = |factor: u32| {
            login_failures.saturating_mul(NonZeroU32::new(factor).unwrap_or(NonZeroU32::MIN))
        };
        Self {
            per_pair: Limiter::new(login_failures, window),
            per_address: Limiter::new(times(SPRAY_FACTOR), window),
            per_email: Limiter::new(times(DISTRIBUTED_FACTOR), window),
            registrations: Limiter::new(registrations, window),
        }
    }

    /// Takes one failure's worth of allowance for this attempt before the
    /// password is checked: for the email at this address always, and,
    /// unless `known_device` (a device token this email was given), for the
    /// address and for the email across addresses. [`Error::RateLimited`]
    /// with the time until the next attempt may come when one is used up.
    pub fn reserve_login(
        &self,
        email: &str,
        address: Option<IpAddr>,
        known_device: bool,
    ) -> Result<Reservation, Error> {
        let address = address.map(limit_key);
        let pair = (email.to_owned(), address);
        self.per_pair.take(&pair)?;
        let reservation = Reservation {
            email: email.to_owned(),
            address,
            wide: !known_device,
        };
        if known_device {
            return Ok(reservation);
        }
        if let Some(address) = address
            && let Err(limited) = self.per_address.take(&address)
        {
            self.per_pair.give_back(&pair);
            return Err(limited);
        }
        if let Err(limited) = self.per_email.take(&pair.0) {
            self.per_pair.give_back(&pair);
            if let Some(address) = address {
                self.per_address.give_back(&address);
            }
            return Err(limited);
        }
        Ok(reservation)
    }

    /// The login succeeded: it does not count against anyone.
    pub fn release(&self, reservation: Reservation) {
        self.per_pair
            .give_back(&(reservation.email.clone(), reservation.address));
        if reservation.wide {
            self.per_email.give_back(&reservation.email);
            if let Some(address) = reservation.address {
                self.per_address.give_back(&address);
            }
        }
    }

    /// Takes one registration's worth of allowance for `address`.
    pub fn reserve_registration(&self, address: Option<IpAddr>) -> Result<(), Error> {
        match address {
            Some(address) => self.registrations.take(&limit_key(address)),
            None => Ok(()),
        }
    }

    /// Forgets keys whose allowance is whole again, so the maps stay as small
    /// as the set of recently misbehaving clients (run periodically).
    pub fn forget_idle(&self) {
        self.per_pair.forget_idle();
        self.per_email.forget_idle();
        self.per_address.forget_idle();
        self.registrations.forget_idle();
    }
}

/// The key an address is limited under: IPv6 clients usually hold a whole
/// /64, so they are limited per /64 rather than per address; IPv4-mapped
/// IPv6 addresses count as the IPv4 address.
fn limit_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// One keyed GCRA limiter whose cells can be handed back.
struct Limiter<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, SharedStore<K>, DefaultClock>,
    /// The limiter's state, shared so [`Limiter::give_back`] can reach it.
    store: SharedStore<K>,
    /// The time one cell is worth (window / limit).
    cell: Nanos,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(limit: NonZeroU32, window: Duration) -> Self {
        let cell = (window / limit.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(cell)
            .unwrap_or_else(|| Quota::per_second(limit))
            .allow_burst(limit);
        let store = SharedStore(Arc::new(DashMap::default()));
        Self {
            limiter: RateLimiter::new(quota, store.clone(), DefaultClock::default()),
            store,
            cell: Nanos::from(cell),
        }
    }

    fn take(&self, key: &K) -> Result<(), Error> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| Error::RateLimited {
                retry_after: not_until.wait_time_from(self.limiter.clock().now()),
            })
    }

    /// Undoes one [`Limiter::take`]: moves the key's theoretical arrival
    /// time back by one cell. GCRA treats any arrival time in the past as
    /// "now", so this can never grant more than the configured burst.
    fn give_back(&self, key: &K) {
        let cell = self.cell;
        let _: Result<(), ()> = self.store.measure_and_replace(key, |tat| match tat {
            Some(tat) => Ok(((), tat.saturating_sub(cell))),
            None => Err(()),
        });
    }

    fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// `governor`'s concurrent in-memory store behind an `Arc`, so the limiter
/// and [`Limiter::give_back`] share it (the extension point `governor`
/// offers for custom stores).
struct SharedStore<K: Hash + Eq + Clone>(Arc<DashMap<K, InMemoryState>>);

impl<K: Hash + Eq + Clone> Clone for SharedStore<K> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<K: Hash + Eq + Clone> StateStore for SharedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for SharedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&*self.0);
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&*self.0)
    }

    fn is_empty(&self) -> bool {
        ShrinkableKeyedStateStore::is_empty(&*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: NonZeroU32 = NonZeroU32::new(3).expect("non-zero");
    const HOUR: Duration = Duration::from_secs(3600);

    fn address(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("address"))
    }

    fn limited(result: Result<Reservation, Error>) -> bool {
        matches!(result, Err(Error::RateLimited { .. }))
    }

    /// The finding: five failures with made-up emails from one address,
    /// then the right passwords of four real users from that address, all
    /// refused. Now the guesser's own pair is slowed, nobody else.
    #[test]
    fn failures_for_made_up_emails_never_stop_other_people_at_that_address() {
        let limits = Limits::new(THREE, THREE, HOUR);
        let nat = address("192.0.2.1");
        for n in 0..5 {
            let _ = limits
                .reserve_login(&format!("made-up-{n}@b.c"), nat, false)
                .expect("allowed");
        }
        for n in 0..4 {
            let reservation = limits
                .reserve_login(&format!("real-{n}@b.c"), nat, false)
                .expect("a real user behind the same address");
            limits.release(reservation);
        }
    }

    #[test]
    fn one_email_at_one_address_is_slowed_after_its_own_failures() {
        let limits = Limits::new(THREE, THREE, HOUR);
        for _ in 0..3 {
            let _ = limits
                .reserve_login("a@b.c", address("192.0.2.1"), false)
                .expect("allowed");
        }
        assert!(limited(limits.reserve_login(
            "a@b.c",
            address("192.0.2.1"),
            false
        )));
        // The same account from elsewhere, and others from here, go on.
        assert!(
            limits
                .reserve_login("a@b.c", address("192.0.2.2"), false)
                .is_ok()
        );
        assert!(
            limits
                .reserve_login("b@b.c", address("192.0.2.1"), false)
                .is_ok()
        );
    }

    /// The finding: five wrong passwords for one email from five addresses
    /// locked its owner out everywhere. Now the distributed guess needs four
    /// times the pair limit, and the owner on a known device is never held.
    #[test]
    fn a_distributed_guess_never_locks_the_owner_out_of_a_known_device() {
        let limits = Limits::new(THREE, THREE, HOUR);
        for n in 0..12 {
            let _ = limits
                .reserve_login("a@b.c", address(&format!("192.0.2.{n}")), false)
                .expect("allowed");
        }
        assert!(limited(limits.reserve_login(
            "a@b.c",
            address("198.51.100.1"),
            false
        )));
        let reservation = limits
            .reserve_login("a@b.c", address("198.51.100.1"), true)
            .expect("the owner's known device");
        limits.release(reservation);
    }

    #[test]
    fn spraying_across_emails_from_one_address_is_slowed() {
        let limits = Limits::new(THREE, THREE, HOUR);
        for n in 0..30 {
            let _ = limits
                .reserve_login(&format!("{n}@b.c"), address("192.0.2.1"), false)
                .expect("allowed");
        }
        assert!(limited(limits.reserve_login(
            "new@b.c",
            address("192.0.2.1"),
            false
        )));
        // A known device of that email is not sprayed at.
        assert!(
            limits
                .reserve_login("new@b.c", address("192.0.2.1"), true)
                .is_ok()
        );
    }

    #[test]
    fn the_retry_after_is_when_a_cell_is_back() {
        let limits = Limits::new(THREE, THREE, Duration::from_secs(60));
        for _ in 0..3 {
            let _ = limits.reserve_login("a@b.c", None, false).expect("allowed");
        }
        let Err(Error::RateLimited { retry_after }) = limits.reserve_login("a@b.c", None, false)
        else {
            panic!("expected a limit");
        };
        assert!(
            retry_after > Duration::from_secs(18) && retry_after <= Duration::from_secs(20),
            "{retry_after:?}"
        );
    }

    #[test]
    fn successful_logins_give_their_cells_back() {
        let limits = Limits::new(THREE, THREE, HOUR);
        for _ in 0..10 {
            let reservation = limits
                .reserve_login("a@b.c", address("192.0.2.1"), false)
                .expect("allowed");
            limits.release(reservation);
        }
        for _ in 0..3 {
            let _ = limits
                .reserve_login("a@b.c", address("192.0.2.1"), false)
                .expect("three failures still allowed");
        }
        assert!(limited(limits.reserve_login(
            "a@b.c",
            address("192.0.2.1"),
            false
        )));
    }

    #[test]
    fn giving_back_never_exceeds_the_burst() {
        let limits = Limits::new(THREE, THREE, HOUR);
        for _ in 0..5 {
            limits.release(Reservation {
                email: "a@b.c".into(),
                address: None,
                wide: true,
            });
        }
        for _ in 0..3 {
            let _ = limits.reserve_login("a@b.c", None, false).expect("allowed");
        }
        assert!(limited(limits.reserve_login("a@b.c", None, false)));
    }

    #[test]
    fn the_allowance_comes_back_after_the_window() {
        let limits = Limits::new(THREE, THREE, Duration::from_millis(300));
        for _ in 0..3 {
            let _ = limits.reserve_login("a@b.c", None, false).expect("allowed");
        }
        assert!(limited(limits.reserve_login("a@b.c", None, false)));
        std::thread::sleep(Duration::from_millis(350));
        for _ in 0..3 {
            let _ = limits
                .reserve_login("a@b.c", None, false)
                .expect("allowed again");
        }
        limits.forget_idle();
    }

    #[test]
    fn registrations_are_limited_per_address() {
        let limits = Limits::new(THREE, NonZeroU32::MIN, HOUR);
        assert!(limits.reserve_registration(address("192.0.2.1")).is_ok());
        assert!(limits.reserve_registration(address("192.0.2.1")).is_err());
        assert!(limits.reserve_registration(address("192.0.2.2")).is_ok());
        assert!(limits.reserve_registration(None).is_ok());
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        assert_eq!(
            limit_key("2001:db8:1:2:aaaa::1".parse().expect("v6")),
            "2001:db8:1:2::".parse::<IpAddr>().expect("v6")
        );
        assert_eq!(
            limit_key("::ffff:192.0.2.1".parse().expect("mapped")),
            "192.0.2.1".parse::<IpAddr>().expect("v4")
        );
        assert_eq!(
            limit_key("192.0.2.1".parse().expect("v4")),
            "192.0.2.1".parse::<IpAddr>().expect("v4")
        );
    }
}

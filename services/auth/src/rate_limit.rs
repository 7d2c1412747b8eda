//! Abuse limits: failed logins per email and per client address, and
//! registrations per client address, on `governor`'s GCRA limiters.
//!
//! A login *reserves* a cell on both limiters before the password is
//! checked, so a thousand concurrent guesses cannot all slip past a limit
//! that has room for five; a login that succeeds hands its cells back, so
//! only failures count. With a limit of N per window a key may fail N times
//! in a burst, then once every window/N, and has its whole allowance back
//! after a quiet window.

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

/// The limits the login and registration endpoints enforce.
pub struct Limits {
    /// Failed logins per (normalised) email, whether or not it exists, so
    /// the limit itself does not reveal which accounts exist.
    per_email: Limiter<String>,
    /// Failed logins per client address (password spraying across emails).
    per_address: Limiter<IpAddr>,
    /// Registrations per client address (each costs an argon2 hash).
    registrations: Limiter<IpAddr>,
}

/// Cells taken for one login attempt, to give back if it succeeds.
#[must_use = "a successful login gives its reservation back"]
pub struct Reservation {
    email: String,
    address: Option<IpAddr>,
}

impl Limits {
    pub fn new(login_failures: NonZeroU32, registrations: NonZeroU32, window: Duration) -> Self {
        Self {
            per_email: Limiter::new(login_failures, window),
            per_address: Limiter::new(login_failures, window),
            registrations: Limiter::new(registrations, window),
        }
    }

    /// Takes one failure's worth of allowance for `email` and `address`
    /// (`None` when the client is unknown: a trusted proxy that did not say)
    /// before the password is checked; [`Error::RateLimited`] when either is
    /// used up.
    pub fn reserve_login(
        &self,
        email: &str,
        address: Option<IpAddr>,
    ) -> Result<Reservation, Error> {
        let address = address.map(limit_key);
        if let Some(address) = address {
            self.per_address.take(&address)?;
        }
        if let Err(limited) = self.per_email.take(&email.to_owned()) {
            if let Some(address) = address {
                self.per_address.give_back(&address);
            }
            return Err(limited);
        }
        Ok(Reservation {
            email: email.to_owned(),
            address,
        })
    }

    /// The login succeeded: it does not count against anyone.
    pub fn release(&self, reservation: Reservation) {
        self.per_email.give_back(&reservation.email);
        if let Some(address) = reservation.address {
            self.per_address.give_back(&address);
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

    #[test]
    fn failures_per_email_are_limited_across_addresses() {
        let limits = Limits::new(THREE, THREE, HOUR);
        for n in 0..3 {
            let from = address(&format!("192.0.2.{n}"));
            assert!(limits.reserve_login("a@b.c", from).is_ok());
        }
        assert!(limited(
            limits.reserve_login("a@b.c", address("192.0.2.99"))
        ));
        assert!(
            limits
                .reserve_login("other@b.c", address("192.0.2.99"))
                .is_ok()
        );
    }

    #[test]
    fn failures_per_address_are_limited_across_emails() {
        let limits = Limits::new(THREE, THREE, HOUR);
        for n in 0..3 {
            assert!(
                limits
                    .reserve_login(&format!("{n}@b.c"), address("192.0.2.1"))
                    .is_ok()
            );
        }
        assert!(limited(
            limits.reserve_login("new@b.c", address("192.0.2.1"))
        ));
        // An unknown client address is only limited per email.
        assert!(limits.reserve_login("new@b.c", None).is_ok());
    }

    #[test]
    fn the_retry_after_is_when_a_cell_is_back() {
        let limits = Limits::new(THREE, THREE, Duration::from_secs(60));
        for _ in 0..3 {
            let _ = limits.reserve_login("a@b.c", None).expect("allowed");
        }
        let Err(Error::RateLimited { retry_after }) = limits.reserve_login("a@b.c", None) else {
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
                .reserve_login("a@b.c", address("192.0.2.1"))
                .expect("allowed");
            limits.release(reservation);
        }
        for _ in 0..3 {
            let _ = limits
                .reserve_login("a@b.c", address("192.0.2.1"))
                .expect("three failures still allowed");
        }
        assert!(limited(limits.reserve_login("a@b.c", address("192.0.2.1"))));
    }

    #[test]
    fn giving_back_never_exceeds_the_burst() {
        let limits = Limits::new(THREE, THREE, HOUR);
        // Releasing on a fresh key (or more often than reserved) is harmless.
        for _ in 0..5 {
            limits.release(Reservation {
                email: "a@b.c".into(),
                address: None,
            });
        }
        for _ in 0..3 {
            let _ = limits.reserve_login("a@b.c", None).expect("allowed");
        }
        assert!(limited(limits.reserve_login("a@b.c", None)));
    }

    #[test]
    fn a_limited_email_does_not_use_up_the_address() {
        let limits = Limits::new(THREE, THREE, HOUR);
        for _ in 0..3 {
            let _ = limits.reserve_login("a@b.c", None).expect("allowed");
        }
        for _ in 0..5 {
            assert!(limited(limits.reserve_login("a@b.c", address("192.0.2.1"))));
        }
        for n in 0..3 {
            assert!(
                limits
                    .reserve_login(&format!("{n}@b.c"), address("192.0.2.1"))
                    .is_ok()
            );
        }
    }

    #[test]
    fn the_allowance_comes_back_after_the_window() {
        let limits = Limits::new(THREE, THREE, Duration::from_millis(300));
        for _ in 0..3 {
            let _ = limits.reserve_login("a@b.c", None).expect("allowed");
        }
        assert!(limited(limits.reserve_login("a@b.c", None)));
        std::thread::sleep(Duration::from_millis(350));
        for _ in 0..3 {
            let _ = limits.reserve_login("a@b.c", None).expect("allowed again");
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

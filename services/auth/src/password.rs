//! Password hashing with argon2id. Hashing is deliberately slow and
//! memory-hungry, so it runs on the blocking pool, a bounded number at a
//! time; an unknown email is checked against a dummy hash so the response
//! time does not tell which emails exist.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use tokio::sync::Semaphore;

use crate::error::Error;
use contract::secret::Secret;

/// Argon2id cost, from the OWASP Password Storage Cheat Sheet's first
/// recommended setting: 19 MiB of memory, 2 passes, 1 lane. About 20-50 ms
/// per hash on a server core, which is slow for an attacker with a stolen
/// table and fast enough for a login. Stored hashes carry their own
/// parameters, so raising these later keeps old hashes verifiable.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

/// Salt length in bytes (the PHC string format recommends 16).
const SALT_BYTES: usize = 16;

pub use contract::account::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};

/// Whether `password` may be set on a new account: its length in characters
/// within [`MIN_PASSWORD_CHARS`]..=[`MAX_PASSWORD_CHARS`]. Nothing else is
/// imposed (composition rules make passwords worse, not better).
pub fn check_policy(password: &str) -> Result<(), Error> {
    let chars = password.chars().count();
    if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        Ok(())
    } else {
        Err(Error::InvalidPassword)
    }
}

/// Hashes and verifies passwords without blocking the async executor.
#[derive(Clone)]
pub struct Passwords {
    /// Bounds concurrent hash computations: each takes [`MEMORY_KIB`] of
    /// memory and a core, so a burst of logins queues here instead of
    /// exhausting the machine.
    permits: Arc<Semaphore>,
    /// A real hash of a random password with the current parameters,
    /// verified when the email is unknown so that case costs the same time.
    dummy_hash: Secret,
}

impl Passwords {
    /// Prepares the hasher; computes the dummy hash on the blocking pool.
    pub async fn new() -> Result<Self, Error> {
        let parallel = std::thread::available_parallelism().map_or(1, usize::from);
        let dummy_hash = tokio::task::spawn_blocking(|| {
            let mut random = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut random);
            hash_blocking(&base64_of(&random))
        })
        .await??;
        Ok(Self {
            permits: Arc::new(Semaphore::new(parallel)),
            dummy_hash: Secret::new(dummy_hash),
        })
    }

    /// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`) of `password`.
    pub async fn hash(&self, password: Secret) -> Result<String, Error> {
        self.on_blocking_pool(move || hash_blocking(password.expose()))
            .await
    }

    /// Whether `password` matches `stored` (a PHC string). With no stored
    /// hash (unknown user) the dummy hash is checked instead and the answer
    /// is always `false`, after the same amount of work.
    pub async fn verify(&self, password: Secret, stored: Option<Secret>) -> Result<bool, Error> {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.clone());
        let matches = self
            .on_blocking_pool(move || verify_blocking(password.expose(), hash.expose()))
            .await?;
        Ok(known && matches)
    }

    async fn on_blocking_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        // The semaphore is never closed, so acquiring only waits.
        let _permit = self.permits.clone().acquire_owned().await.ok();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work)).await?
    }
}

fn argon2() -> Result<Argon2<'static>, Error> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// Hashes with a fresh random salt (CPU-bound: call from the blocking pool).
fn hash_blocking(password: &str) -> Result<String, Error> {
    let mut salt = [0u8; SALT_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(argon2()?
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks a password against a PHC string, using the parameters recorded in
/// it (CPU-bound: call from the blocking pool). A malformed stored hash is an
/// error, not a mismatch: it means the table is damaged.
fn verify_blocking(password: &str, phc: &str) -> Result<bool, Error> {
    let parsed = PasswordHash::new(phc)?;
    match argon2()?.verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_with_the_stated_parameters() {
        let hash = hash_blocking("correct horse").expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
    }

    #[test]
    fn the_same_password_gets_a_different_salt_each_time() {
        let first = hash_blocking("pw").expect("hash");
        let second = hash_blocking("pw").expect("hash");
        assert_ne!(first, second);
    }

    #[test]
    fn verify_tells_right_from_wrong() {
        let hash = hash_blocking("pässwörd 🔑").expect("hash");
        assert!(verify_blocking("pässwörd 🔑", &hash).expect("verify"));
        assert!(!verify_blocking("passwort", &hash).expect("verify"));
    }

    #[test]
    fn the_policy_counts_characters_not_bytes() {
        assert!(check_policy("1234567").is_err());
        assert!(check_policy("12345678").is_ok());
        // Seven characters, fourteen bytes.
        assert!(check_policy("ääääääää").is_ok());
        assert!(check_policy("äääääää").is_err());
        assert!(check_policy(&"x".repeat(MAX_PASSWORD_CHARS)).is_ok());
        assert!(check_policy(&"x".repeat(MAX_PASSWORD_CHARS + 1)).is_err());
    }

    #[test]
    fn a_damaged_stored_hash_is_an_error() {
        assert!(verify_blocking("pw", "not a phc string").is_err());
    }

    #[tokio::test]
    async fn unknown_users_never_verify_even_with_the_dummy_password() {
        let passwords = Passwords::new().await.expect("hasher");
        let stored = passwords.hash(Secret::new("pw")).await.expect("hash");
        assert!(
            passwords
                .verify(Secret::new("pw"), Some(Secret::new(stored)))
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify(Secret::new("pw"), None)
                .await
                .expect("verify")
        );
    }
}

//! JSON Web Tokens: what a token says about its holder ([`Claims`]) and the
//! keys that sign and check it ([`TokenKeys`]). HS256 with one shared secret
//! for now; the algorithm and key handling stay behind `TokenKeys` so a
//! public-key scheme the gateway can verify locally can replace it.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::secret::Secret;
use crate::store::User;

/// Clock skew tolerated on `exp` between the issuer and whoever verifies.
pub const LEEWAY_SECS: u64 = 30;

/// Length of the signing key generated when none is configured.
const GENERATED_KEY_BYTES: usize = 32;

/// The payload of a token. `username`, `admin`, `iat` and `exp` are the
/// original system's claim names; `sub` is the standard subject claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's email address.
    pub username: String,
    /// Whether the user is an administrator (from the user table).
    pub admin: bool,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expires at, unix seconds.
    pub exp: u64,
    /// The user's id, as a string (the JWT convention for `sub`).
    pub sub: String,
}

/// Signs and verifies tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// HS256 only (so `alg: none` and algorithm confusion are refused), `exp`
    /// required, [`LEEWAY_SECS`] of leeway.
    validation: Validation,
    /// How long an issued token is valid, in seconds.
    ttl_secs: u64,
}

impl TokenKeys {
    /// Keys for HS256 with `secret`.
    pub fn hs256(secret: &[u8], ttl_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
        }
    }

    /// Keys from the configured secret, or from a random one (with a loud
    /// warning) when none is configured.
    pub fn from_config(secret: Option<&Secret>, ttl_secs: u64) -> Self {
        match secret {
            Some(secret) => {
                if secret.expose().len() < GENERATED_KEY_BYTES {
                    tracing::warn!(
                        "JWT_SECRET is shorter than {GENERATED_KEY_BYTES} bytes; use a long random value"
                    );
                }
                Self::hs256(secret.expose().as_bytes(), ttl_secs)
            }
            None => {
                tracing::warn!(
                    "JWT_SECRET is not set: signing with a random key; every token becomes invalid \
                     when this process restarts, and other replicas will not accept them"
                );
                let mut key = [0u8; GENERATED_KEY_BYTES];
                rand::rngs::OsRng.fill_bytes(&mut key);
                Self::hs256(&key, ttl_secs)
            }
        }
    }

    /// A signed token for `user`, valid from now for the configured TTL.
    pub fn issue(&self, user: &User) -> Result<String, Error> {
        let iat = unix_now();
        let claims = Claims {
            username: user.email.clone(),
            admin: user.is_admin,
            iat,
            exp: iat.saturating_add(self.ttl_secs),
            sub: user.id.to_string(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The claims of a valid token; anything else is [`Error::NotAuthorized`].
    pub fn verify(&self, token: &str) -> Result<Claims, Error> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| {
                tracing::debug!(error = %err, "token refused");
                Error::NotAuthorized
            })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn alice(is_admin: bool) -> User {
        User {
            id: 7,
            email: "alice@example.com".into(),
            password_hash: Secret::new("$argon2id$..."),
            is_admin,
            disabled: false,
            created_at: 0,
        }
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let keys = TokenKeys::hs256(b"s3cret", 600);
        let claims = keys
            .verify(&keys.issue(&alice(true)).expect("issue"))
            .expect("valid");
        assert_eq!(claims.username, "alice@example.com");
        assert!(claims.admin);
        assert_eq!(claims.sub, "7");
        assert_eq!(claims.exp - claims.iat, 600);
    }

    #[test]
    fn the_admin_claim_follows_the_user() {
        let keys = TokenKeys::hs256(b"s3cret", 600);
        let claims = keys
            .verify(&keys.issue(&alice(false)).expect("issue"))
            .expect("valid");
        assert!(!claims.admin);
    }

    #[test]
    fn another_key_is_refused() {
        let token = TokenKeys::hs256(b"one", 600)
            .issue(&alice(false))
            .expect("issue");
        assert!(matches!(
            TokenKeys::hs256(b"two", 600).verify(&token),
            Err(Error::NotAuthorized)
        ));
    }

    #[test]
    fn an_expired_token_is_refused_past_the_leeway() {
        let keys = TokenKeys::hs256(b"s3cret", 600);
        let now = unix_now();
        let claims = Claims {
            username: "alice@example.com".into(),
            admin: false,
            iat: now - 7200,
            exp: now - LEEWAY_SECS - 60,
            sub: "7".into(),
        };
        let token = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .expect("encode");
        assert!(matches!(keys.verify(&token), Err(Error::NotAuthorized)));
    }

    #[test]
    fn alg_none_is_refused() {
        let keys = TokenKeys::hs256(b"s3cret", 600);
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD
            .encode(br#"{"username":"a@b.c","admin":true,"iat":1,"exp":99999999999,"sub":"1"}"#);
        assert!(matches!(
            keys.verify(&format!("{header}.{payload}.")),
            Err(Error::NotAuthorized)
        ));
    }

    #[test]
    fn a_generated_key_still_round_trips() {
        let keys = TokenKeys::from_config(None, 60);
        assert!(
            keys.verify(&keys.issue(&alice(false)).expect("issue"))
                .is_ok()
        );
    }
}

//! JSON Web Tokens: what a token says about its holder ([`Claims`]) and the
//! key that signs and checks it ([`TokenKeys`]).
//!
//! Ed25519 (EdDSA) is the default: the private key stays here and the public
//! half is published as a JWKS, so gateways verify tokens locally. HS256 with
//! a shared secret remains for deployments of the original system. Either
//! way exactly one algorithm is accepted, which is what refuses `alg: none`
//! and algorithm confusion (an HS256 token "signed" with the public key).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::Error;
use crate::store::User;
use contract::secret::Secret;

/// Clock skew tolerated on `exp` between the issuer and whoever verifies.
pub const LEEWAY_SECS: u64 = 30;

/// Below this an HS256 secret is guessable offline from any token.
const MIN_SECRET_BYTES: usize = 32;

/// The PEM label of a PKCS#8 private key.
const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";

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
    /// The user's token version when this token was issued: a token whose
    /// version is below the user's is void (sign out everywhere, a new
    /// password, a disabled or deleted account). Tokens from before it
    /// existed count as version 0.
    #[serde(default)]
    pub ver: i64,
}

/// A freshly signed token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Its `exp` claim, unix seconds.
    pub expires_at: u64,
}

/// Why a configured key could not be used. The messages name the problem,
/// never the key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the private key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the private key is not PEM text")]
    NotPem,
    #[error("the PEM block is `{0}`, expected `{PRIVATE_KEY_LABEL}` (PKCS#8)")]
    WrongLabel(String),
    #[error("the private key is not a PKCS#8 Ed25519 key")]
    NotEd25519,
    #[error("could not generate a key")]
    Generate,
    #[error("JWT_SECRET is empty; unset it to use Ed25519, or give it a long random value")]
    EmptySecret,
}

/// Signs and verifies tokens with one key. Deliberately not `Debug`: it
/// holds the private key.
pub struct TokenKeys {
    algorithm: Algorithm,
    /// Names the key in each token's header and in the JWKS, so verifiers
    /// pick the right key and a rotated one is told apart.
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// One algorithm only, `exp` required, [`LEEWAY_SECS`] of leeway.
    validation: Validation,
    /// How long an issued token is valid, in seconds.
    ttl_secs: u64,
    /// `GET /.well-known/jwks.json`, computed once.
    jwks: serde_json::Value,
    /// A digest of the key material, from which other keys of this
    /// deployment are derived (the device tokens' MAC key): the same on
    /// every replica that signs with the same key.
    seed: [u8; 32],
}

impl TokenKeys {
    /// HS256 with a shared `secret`. The JWKS is empty: a shared secret is
    /// never published.
    pub fn hs256(secret: &[u8], ttl_secs: u64) -> Self {
        // A one-way digest of the secret: stable for a given secret, and no
        // easier to attack than the HMAC on any token.
        let kid = format!(
            "hs256-{}",
            &URL_SAFE_NO_PAD.encode(Sha256::digest(secret))[..16]
        );
        Self {
            algorithm: Algorithm::HS256,
            kid,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation: validation(Algorithm::HS256),
            ttl_secs,
            jwks: serde_json::json!({ "keys": [] }),
            seed: Sha256::digest(secret).into(),
        }
    }

    /// EdDSA with an Ed25519 private key in PKCS#8 DER (v1 as OpenSSL
    /// writes it, or v2 with the public key embedded).
    pub fn ed25519_from_pkcs8(der: &[u8], ttl_secs: u64) -> Result<Self, KeyError> {
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| KeyError::NotEd25519)?;
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let kid = jwk_thumbprint(&x);
        let jwks = serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": x,
                "kid": kid,
                "alg": "EdDSA",
                "use": "sig",
            }]
        });
        Ok(Self {
            algorithm: Algorithm::EdDSA,
            kid,
            encoding: EncodingKey::from_ed_der(der),
            decoding: DecodingKey::from_ed_der(pair.public_key().as_ref()),
            validation: validation(Algorithm::EdDSA),
            ttl_secs,
            jwks,
            seed: Sha256::digest(der).into(),
        })
    }

    /// EdDSA with a PEM-encoded PKCS#8 Ed25519 private key.
    pub fn ed25519_from_pem(pem_text: &str, ttl_secs: u64) -> Result<Self, KeyError> {
        let block = pem::parse(pem_text).map_err(|_| KeyError::NotPem)?;
        if block.tag() != PRIVATE_KEY_LABEL {
            return Err(KeyError::WrongLabel(block.tag().to_owned()));
        }
        Self::ed25519_from_pkcs8(block.contents(), ttl_secs)
    }

    /// The keys the configuration asks for: HS256 with `secret`, Ed25519
    /// from the PEM text or file, or (with none of them) a generated
    /// Ed25519 key and a loud warning.
    pub fn from_config(
        secret: Option<&Secret>,
        private_key_pem: Option<&Secret>,
        private_key_file: Option<&Path>,
        ttl_secs: u64,
    ) -> Result<Self, KeyError> {
        if let Some(secret) = secret {
            if secret.expose().is_empty() {
                return Err(KeyError::EmptySecret);
            }
            if secret.expose().len() < MIN_SECRET_BYTES {
                tracing::warn!(
                    "JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes: tokens can be forged by \
                     guessing it offline; use a long random value, or an Ed25519 key"
                );
            }
            tracing::info!("signing tokens with HS256 (JWT_SECRET)");
            return Ok(Self::hs256(secret.expose().as_bytes(), ttl_secs));
        }
        let keys = if let Some(pem_text) = private_key_pem {
            Self::ed25519_from_pem(pem_text.expose(), ttl_secs)?
        } else if let Some(path) = private_key_file {
            warn_if_readable_by_others(path);
            let pem_text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                path: path.display().to_string(),
                source,
            })?;
            Self::ed25519_from_pem(&pem_text, ttl_secs)?
        } else {
            tracing::warn!(
                "**************************************************************************"
            );
            tracing::warn!(
                "NO JWT KEY CONFIGURED: signing with a throw-away Ed25519 key. Every token \
                 dies with this process and other replicas will refuse it. For anything but \
                 development set JWT_PRIVATE_KEY_FILE (create one with `auth-service key generate`)."
            );
            tracing::warn!(
                "**************************************************************************"
            );
            Self::ed25519_from_pkcs8(&generate_ed25519_pkcs8()?, ttl_secs)?
        };
        tracing::info!(kid = %keys.kid, "signing tokens with EdDSA (Ed25519)");
        Ok(keys)
    }

    /// The algorithm tokens are signed (and must be signed) with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key id in every token's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A 256-bit key for `purpose`, derived from the signing key: every
    /// replica with the same signing key derives the same one.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"mp3converter auth derived key\0");
        hasher.update(purpose.as_bytes());
        hasher.update([0]);
        hasher.update(self.seed);
        hasher.finalize().into()
    }

    /// How long an issued token is valid, in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// The public keys verifiers may use, as a JWK Set.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    /// A signed token for `user`, valid from now for the configured TTL.
    pub fn issue(&self, user: &User) -> Result<IssuedToken, Error> {
        let iat = unix_now();
        let exp = iat.saturating_add(self.ttl_secs);
        let claims = Claims {
            username: user.email.clone(),
            admin: user.is_admin,
            iat,
            exp,
            sub: user.id.to_string(),
            ver: user.token_version,
        };
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        Ok(IssuedToken {
            token: jsonwebtoken::encode(&header, &claims, &self.encoding)?,
            expires_at: exp,
        })
    }

    /// The claims of a valid token; anything else is [`Error::NotAuthorized`].
    pub fn verify(&self, token: &str) -> Result<Claims, Error> {
        let refuse = |reason: &dyn std::fmt::Display| {
            tracing::debug!(%reason, "token refused");
            Error::NotAuthorized
        };
        let header = jsonwebtoken::decode_header(token).map_err(|err| refuse(&err))?;
        // Tokens of the original system carry no `kid`; one naming another
        // key is refused before any cryptography.
        if header.kid.as_deref().is_some_and(|kid| kid != self.kid) {
            return Err(refuse(&"unknown kid"));
        }
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| refuse(&err))
    }
}

/// A new Ed25519 private key as PKCS#8 DER, from the operating system's
/// random source.
pub fn generate_ed25519_pkcs8() -> Result<Vec<u8>, KeyError> {
    let rng = ring::rand::SystemRandom::new();
    Ed25519KeyPair::generate_pkcs8(&rng)
        .map(|document| document.as_ref().to_vec())
        .map_err(|_| KeyError::Generate)
}

/// A new Ed25519 private key as PEM text (`auth-service key generate`).
pub fn generate_ed25519_pem() -> Result<String, KeyError> {
    let der = generate_ed25519_pkcs8()?;
    Ok(pem::encode(&pem::Pem::new(PRIVATE_KEY_LABEL, der)))
}

fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.algorithms = vec![algorithm];
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true;
    validation.set_required_spec_claims(&["exp"]);
    validation
}

/// The RFC 7638 thumbprint of an Ed25519 JWK: a key id that anyone holding
/// the public key can recompute.
fn jwk_thumbprint(x: &str) -> String {
    // Members in lexicographic order, no whitespace, as RFC 7638 requires.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Warns when anyone may read the key. Group access is fine: a Kubernetes
/// Secret volume with `fsGroup` is how a pod's user gets read access.
#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let shared = std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o007 != 0);
    if shared {
        tracing::warn!(
            path = %path.display(),
            "the JWT private key file is readable by every user; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(is_admin: bool) -> User {
        User {
            id: 7,
            email: "alice@example.com".into(),
            password_hash: Secret::new("$argon2id$..."),
            is_admin,
            disabled: false,
            email_notifications: true,
            email_confirmed: true,
            token_version: 0,
            created_at: 0,
        }
    }

    fn ed25519() -> TokenKeys {
        TokenKeys::ed25519_from_pkcs8(&generate_ed25519_pkcs8().expect("key"), 600).expect("keys")
    }

    /// The PKCS#8 v1 encoding OpenSSL writes for an Ed25519 seed.
    fn openssl_style_pkcs8(seed: [u8; 32]) -> Vec<u8> {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        der
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            username: "alice@example.com".into(),
            admin: true,
            iat: unix_now() - 100,
            exp,
            sub: "7".into(),
            ver: 0,
        }
    }

    fn sign_hs256(claims: &Claims, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("encode")
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        for keys in [TokenKeys::hs256(b"s3cret", 600), ed25519()] {
            let issued = keys.issue(&alice(true)).expect("issue");
            let claims = keys.verify(&issued.token).expect("valid");
            assert_eq!(claims.username, "alice@example.com");
            assert!(claims.admin);
            assert_eq!(claims.sub, "7");
            assert_eq!(claims.exp - claims.iat, 600);
            assert_eq!(claims.exp, issued.expires_at);
            let header = jsonwebtoken::decode_header(&issued.token).expect("header");
            assert_eq!(header.kid.as_deref(), Some(keys.kid()));
            assert_eq!(header.alg, keys.algorithm());
        }
    }

    #[test]
    fn the_admin_claim_follows_the_user() {
        let keys = ed25519();
        let token = keys.issue(&alice(false)).expect("issue").token;
        assert!(!keys.verify(&token).expect("valid").admin);
    }

    #[test]
    fn another_key_is_refused() {
        let token = ed25519().issue(&alice(false)).expect("issue").token;
        assert!(matches!(
            ed25519().verify(&token),
            Err(Error::NotAuthorized)
        ));
        let token = TokenKeys::hs256(b"one", 600)
            .issue(&alice(false))
            .expect("issue")
            .token;
        assert!(matches!(
            TokenKeys::hs256(b"two", 600).verify(&token),
            Err(Error::NotAuthorized)
        ));
    }

    #[test]
    fn an_hs256_token_forged_with_the_public_key_is_refused() {
        let keys = ed25519();
        let x = keys.jwks()["keys"][0]["x"].as_str().expect("x").to_owned();
        let raw = URL_SAFE_NO_PAD.decode(&x).expect("base64");
        for secret in [raw.as_slice(), x.as_bytes()] {
            let forged = sign_hs256(&claims(unix_now() + 600), secret);
            assert!(matches!(keys.verify(&forged), Err(Error::NotAuthorized)));
        }
    }

    #[test]
    fn expiry_has_thirty_seconds_of_leeway_and_no_more() {
        let keys = TokenKeys::hs256(b"s3cret", 600);
        let now = unix_now();
        let just_expired = sign_hs256(&claims(now - 10), b"s3cret");
        assert!(keys.verify(&just_expired).is_ok());
        let expired = sign_hs256(&claims(now - LEEWAY_SECS - 5), b"s3cret");
        assert!(matches!(keys.verify(&expired), Err(Error::NotAuthorized)));
    }

    #[test]
    fn alg_none_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD
            .encode(br#"{"username":"a@b.c","admin":true,"iat":1,"exp":99999999999,"sub":"1"}"#);
        for keys in [TokenKeys::hs256(b"s3cret", 600), ed25519()] {
            assert!(matches!(
                keys.verify(&format!("{header}.{payload}.")),
                Err(Error::NotAuthorized)
            ));
        }
    }

    #[test]
    fn a_foreign_kid_is_refused_and_a_missing_one_accepted() {
        let keys = TokenKeys::hs256(b"s3cret", 600);
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("someone-else".into());
        let foreign = jsonwebtoken::encode(
            &header,
            &claims(unix_now() + 600),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .expect("encode");
        assert!(matches!(keys.verify(&foreign), Err(Error::NotAuthorized)));
        // The original system's tokens have no kid.
        assert!(
            keys.verify(&sign_hs256(&claims(unix_now() + 600), b"s3cret"))
                .is_ok()
        );
    }

    #[test]
    fn an_openssl_key_loads_from_pem_and_its_kid_is_the_jwk_thumbprint() {
        let der = openssl_style_pkcs8([7u8; 32]);
        let pem_text = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
        let keys = TokenKeys::ed25519_from_pem(&pem_text, 60).expect("loads");
        let jwk = &keys.jwks()["keys"][0];
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["kid"], keys.kid());
        assert_eq!(
            keys.kid(),
            jwk_thumbprint(jwk["x"].as_str().expect("x")),
            "the kid is recomputable from the public key"
        );
        // The same seed gives the same key id (stable across restarts).
        let again = TokenKeys::ed25519_from_pem(&pem_text, 60).expect("loads");
        assert_eq!(again.kid(), keys.kid());
        // A verifier holding only the JWK accepts the token.
        let token = keys.issue(&alice(false)).expect("issue").token;
        let decoding = DecodingKey::from_ed_components(jwk["x"].as_str().expect("x")).expect("jwk");
        jsonwebtoken::decode::<Claims>(&token, &decoding, &Validation::new(Algorithm::EdDSA))
            .expect("verifies with the published key");
    }

    #[test]
    fn a_generated_pem_round_trips() {
        let pem_text = generate_ed25519_pem().expect("generate");
        assert!(pem_text.starts_with("-----BEGIN PRIVATE KEY-----"));
        let keys = TokenKeys::ed25519_from_pem(&pem_text, 60).expect("loads");
        let token = keys.issue(&alice(false)).expect("issue").token;
        assert!(keys.verify(&token).is_ok());
    }

    #[test]
    fn bad_key_material_is_reported_without_echoing_it() {
        let not_pem = TokenKeys::ed25519_from_pem("hunter2", 60)
            .err()
            .expect("refused");
        assert!(matches!(not_pem, KeyError::NotPem));
        let public = pem::encode(&pem::Pem::new("PUBLIC KEY", vec![1, 2, 3]));
        let wrong = TokenKeys::ed25519_from_pem(&public, 60)
            .err()
            .expect("refused");
        assert!(matches!(wrong, KeyError::WrongLabel(_)));
        let garbage = pem::encode(&pem::Pem::new("PRIVATE KEY", b"hunter2".to_vec()));
        let err = TokenKeys::ed25519_from_pem(&garbage, 60)
            .err()
            .expect("refused");
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn hs256_publishes_no_key_and_its_kid_hides_the_secret() {
        let keys = TokenKeys::hs256(b"s3cret-s3cret-s3cret", 60);
        assert_eq!(keys.jwks(), &serde_json::json!({ "keys": [] }));
        assert!(!keys.kid().contains("s3cret"));
    }

    #[test]
    fn a_missing_key_file_is_reported_by_path() {
        let missing = Path::new("/nonexistent/jwt-key.pem");
        let err = TokenKeys::from_config(None, None, Some(missing), 60)
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("/nonexistent/jwt-key.pem"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_secret_is_refused() {
        let empty = Secret::new("");
        assert!(matches!(
            TokenKeys::from_config(Some(&empty), None, None, 60),
            Err(KeyError::EmptySecret)
        ));
    }

    #[test]
    fn with_no_configuration_a_dev_key_is_generated() {
        let keys = TokenKeys::from_config(None, None, None, 60).expect("keys");
        assert_eq!(keys.algorithm(), Algorithm::EdDSA);
        let token = keys.issue(&alice(false)).expect("issue").token;
        assert!(keys.verify(&token).is_ok());
    }
}

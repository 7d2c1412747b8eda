//! Local token verification against the keys auth publishes at
//! `/.well-known/jwks.json`: no round trip to auth per request.
//!
//! The key set is fetched on first use and cached. A token naming a key id
//! the cache does not hold triggers a refetch (auth rotated its key), at
//! most once per [`REFETCH_INTERVAL`] so forged ids cannot turn the gateway
//! into a load generator against auth. An empty key set means auth signs
//! with a shared HS256 secret it never publishes: the caller then falls
//! back to auth's `POST /validate`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::claims::Claims;

/// Fewest seconds between two fetches of the key set caused by unknown key ids.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// How long a fetched key set (even an empty one) is trusted before the
/// next verification fetches it again.
const MAX_AGE: Duration = Duration::from_secs(300);
/// Clock skew tolerated on `exp` (and `nbf`), in seconds.
const LEEWAY_SECS: u64 = 30;

/// What local verification concluded.
#[derive(Debug)]
pub enum Verdict {
    /// The token is valid; these are its claims.
    Valid(Claims),
    /// The token is not acceptable (bad signature, expired, unknown key...).
    Invalid,
    /// Auth publishes no keys (HS256) or could not be asked yet: only auth
    /// itself can tell.
    AskAuth,
}

/// One key of a JWK Set, as far as Ed25519 needs it.
#[derive(Debug, Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

/// The cached key set.
#[derive(Default)]
struct Cache {
    /// Ed25519 verification keys by key id.
    keys: HashMap<String, DecodingKey>,
    /// When the set was last fetched successfully.
    fetched_at: Option<Instant>,
    /// When a fetch was last attempted (successful or not), for the rate limit.
    attempted_at: Option<Instant>,
}

/// Verifies EdDSA tokens with auth's published keys.
#[derive(Clone)]
pub struct TokenVerifier {
    http: reqwest::Client,
    jwks_url: String,
    validation: Arc<Validation>,
    cache: Arc<Mutex<Cache>>,
    /// Fewest time between two fetches ([`REFETCH_INTERVAL`]; shorter in tests).
    refetch_interval: Duration,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("jwks_url", &self.jwks_url)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub fn new(http: reqwest::Client, auth_base_url: &str) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            http,
            jwks_url: format!(
                "{}/.well-known/jwks.json",
                auth_base_url.trim_end_matches('/')
            ),
            validation: Arc::new(validation),
            cache: Arc::new(Mutex::new(Cache::default())),
            refetch_interval: REFETCH_INTERVAL,
        }
    }

    /// Fetches the key set now (at start-up), so tokens verify even if
    /// auth is down when the first request arrives. A failure is only
    /// logged: the first verification tries again.
    pub async fn prefetch(&self) {
        let mut cache = self.cache.lock().await;
        self.refresh(&mut cache).await;
    }

    /// Checks `token` (the JWT itself, without a scheme word).
    pub async fn verify(&self, token: &str) -> Verdict {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Verdict::Invalid;
        };
        let mut cache = self.cache.lock().await;
        let stale = cache.fetched_at.is_none_or(|at| at.elapsed() >= MAX_AGE);
        if stale && self.may_fetch(&cache) {
            self.refresh(&mut cache).await;
        }
        if cache.fetched_at.is_none() || cache.keys.is_empty() {
            return Verdict::AskAuth;
        }
        if header.alg != Algorithm::EdDSA {
            return Verdict::Invalid;
        }
        let known = |cache: &Cache| match header.kid.as_deref() {
            Some(kid) => cache.keys.contains_key(kid),
            // A token without a key id can only mean the one published key.
            None => cache.keys.len() == 1,
        };
        if !known(&cache) && self.may_fetch(&cache) {
            self.refresh(&mut cache).await;
        }
        let key = match header.kid.as_deref() {
            Some(kid) => cache.keys.get(kid),
            None if cache.keys.len() == 1 => cache.keys.values().next(),
            None => None,
        }
        .cloned();
        // Signatures are checked without holding the cache.
        drop(cache);
        let Some(key) = key else {
            tracing::debug!(kid = ?header.kid, "token signed with an unknown key");
            return Verdict::Invalid;
        };
        match jsonwebtoken::decode::<Claims>(token, &key, &self.validation) {
            Ok(data) => Verdict::Valid(data.claims),
            Err(err) => {
                tracing::debug!(error = %err, "token refused");
                Verdict::Invalid
            }
        }
    }

    fn may_fetch(&self, cache: &Cache) -> bool {
        cache
            .attempted_at
            .is_none_or(|at| at.elapsed() >= self.refetch_interval)
    }

    /// Fetches the key set; on failure the previous one stays in use.
    async fn refresh(&self, cache: &mut Cache) {
        cache.attempted_at = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), "fetched auth's key set");
                cache.keys = keys;
                cache.fetched_at = Some(Instant::now());
            }
            Err(err) => {
                tracing::warn!(error = %err, url = %self.jwks_url, "could not fetch auth's key set")
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, reqwest::Error> {
        let set: JwkSet = self
            .http
            .get(&self.jwks_url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(ed25519_keys(set))
    }
}

/// The usable Ed25519 keys of a set; others (and keys without an id) are skipped.
fn ed25519_keys(set: JwkSet) -> HashMap<String, DecodingKey> {
    set.keys
        .into_iter()
        .filter(|jwk| {
            jwk.kty == "OKP"
                && jwk.crv.as_deref() == Some("Ed25519")
                && jwk.alg.as_deref().is_none_or(|alg| alg == "EdDSA")
        })
        .filter_map(|jwk| {
            let key = DecodingKey::from_ed_components(jwk.x.as_deref()?).ok()?;
            Some((jwk.kid?, key))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ed25519_keys_with_an_id_are_kept() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "a", "alg": "EdDSA"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "n": "x", "e": "AQAB", "kid": "b"},
            {"kty": "OKP", "crv": "X25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "c"},
        ]}))
        .expect("jwks");
        let keys = ed25519_keys(set);
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["a"]);
    }

    use std::sync::atomic::{AtomicUsize, Ordering};

    use auth_service::token::{TokenKeys, generate_ed25519_pem};
    use jsonwebtoken::{EncodingKey, Header};

    /// A stand-in for auth's JWKS endpoint: serves whatever set the test
    /// puts in, and counts the fetches.
    struct JwksServer {
        url: String,
        set: Arc<std::sync::Mutex<serde_json::Value>>,
        hits: Arc<AtomicUsize>,
    }

    impl JwksServer {
        async fn start(set: serde_json::Value) -> JwksServer {
            let set = Arc::new(std::sync::Mutex::new(set));
            let hits = Arc::new(AtomicUsize::new(0));
            let (served, counted) = (set.clone(), hits.clone());
            let app = axum::Router::new().route(
                "/.well-known/jwks.json",
                axum::routing::get(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = served.lock().expect("lock").clone();
                    std::future::ready(axum::Json(body))
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            tokio::spawn(async move { axum::serve(listener, app).await });
            JwksServer { url, set, hits }
        }

        fn publish(&self, set: serde_json::Value) {
            *self.set.lock().expect("lock") = set;
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
    }

    /// A key pair as auth holds it, and a way to sign with it.
    struct Signer {
        pem: String,
        keys: TokenKeys,
    }

    impl Signer {
        fn new() -> Signer {
            let pem = generate_ed25519_pem().expect("key");
            let keys = TokenKeys::ed25519_from_pem(&pem, 60).expect("keys");
            Signer { pem, keys }
        }

        fn token(&self, kid: Option<&str>, claims: serde_json::Value) -> String {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = kid.map(str::to_owned);
            let key = EncodingKey::from_ed_pem(self.pem.as_bytes()).expect("pem");
            jsonwebtoken::encode(&header, &claims, &key).expect("sign")
        }

        fn valid(&self) -> String {
            self.token(Some(self.keys.kid()), claims(60))
        }
    }

    fn claims(expires_in: i64) -> serde_json::Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        serde_json::json!({"username": "u@example.com", "admin": false, "exp": now + expires_in})
    }

    fn verifier(url: &str, refetch_interval: Duration) -> TokenVerifier {
        let mut verifier = TokenVerifier::new(reqwest::Client::new(), url);
        verifier.refetch_interval = refetch_interval;
        verifier
    }

    #[tokio::test]
    async fn unknown_key_ids_refetch_at_most_once_per_interval() {
        let (old, new) = (Signer::new(), Signer::new());
        let server = JwksServer::start(old.keys.jwks().clone()).await;
        let verifier = verifier(&server.url, Duration::from_millis(300));
        verifier.prefetch().await;
        assert_eq!(server.hits(), 1);
        assert!(
            matches!(verifier.verify(&old.valid()).await, Verdict::Valid(c) if c.username == "u@example.com")
        );

        // Auth rotates its key; right after a fetch, the new id is refused
        // without asking again.
        server.publish(new.keys.jwks().clone());
        assert!(matches!(
            verifier.verify(&new.valid()).await,
            Verdict::Invalid
        ));
        assert_eq!(server.hits(), 1);

        // Once the interval has passed, an unknown id fetches the set again.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(matches!(
            verifier.verify(&new.valid()).await,
            Verdict::Valid(_)
        ));
        assert_eq!(server.hits(), 2);
        for _ in 0..5 {
            let forged = new.token(Some("made-up"), claims(60));
            assert!(matches!(verifier.verify(&forged).await, Verdict::Invalid));
        }
        assert_eq!(server.hits(), 2, "forged key ids are rate-limited");
        // The old key is gone with the refetch.
        assert!(matches!(
            verifier.verify(&old.valid()).await,
            Verdict::Invalid
        ));
    }

    #[tokio::test]
    async fn expiry_is_required_with_bounded_leeway() {
        let signer = Signer::new();
        let server = JwksServer::start(signer.keys.jwks().clone()).await;
        let verifier = verifier(&server.url, REFETCH_INTERVAL);
        let kid = Some(signer.keys.kid());
        let within_leeway = signer.token(kid, claims(-10));
        assert!(matches!(
            verifier.verify(&within_leeway).await,
            Verdict::Valid(_)
        ));
        let expired = signer.token(kid, claims(-60));
        assert!(matches!(verifier.verify(&expired).await, Verdict::Invalid));
        let no_exp = signer.token(kid, serde_json::json!({"username": "u@example.com"}));
        assert!(matches!(verifier.verify(&no_exp).await, Verdict::Invalid));
        assert!(matches!(
            verifier.verify("not-a-jwt").await,
            Verdict::Invalid
        ));
    }

    #[tokio::test]
    async fn an_empty_key_set_or_an_unreachable_auth_defers_to_auth() {
        let signer = Signer::new();
        let server = JwksServer::start(serde_json::json!({"keys": []})).await;
        let hs256 = verifier(&server.url, REFETCH_INTERVAL);
        assert!(matches!(
            hs256.verify(&signer.valid()).await,
            Verdict::AskAuth
        ));

        let unreachable = verifier("http://127.0.0.1:9", REFETCH_INTERVAL);
        assert!(matches!(
            unreachable.verify(&signer.valid()).await,
            Verdict::AskAuth
        ));
    }
}

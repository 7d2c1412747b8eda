//! Test harness: `spawn_app(backend)` builds the real [`App`] on port 0
//! against a database created for that test alone (and dropped afterwards),
//! signing with an Ed25519 key file made for it, and returns a [`TestApp`]
//! with typed helpers for each endpoint and for forging tokens.
//!
//! The database servers default to the local ones; override them with
//! `AUTH_TEST_POSTGRES_URL` and `AUTH_TEST_MYSQL_URL` (server URLs without a
//! database name).

use auth_service::{App, Config};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use sqlx::AnyConnection;
use sqlx::Connection as _;
use sqlx::any::AnyRow;
use tokio::sync::oneshot;

/// The HS256 secret of apps started with [`Signing::Hs256`].
pub const JWT_SECRET: &str = "s3cret-for-the-hs256-compatibility-tests";
/// Token lifetime every test app is configured with (deliberately not the
/// default, so the test sees the flag is honoured).
pub const JWT_TTL: u64 = 3_600;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

/// Runs each named `async fn(Backend)` once per backend, as the tests
/// `<module>::sqlite::<name>`, `<module>::postgres::<name>` and
/// `<module>::mysql::<name>`.
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::helpers::Backend::Sqlite).await;
            })+
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::helpers::Backend::Postgres).await;
            })+
        }
        mod mysql {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::helpers::Backend::MySql).await;
            })+
        }
    };
}

/// A database that exists for one test. Dropping it drops the database (or
/// deletes the SQLite file), even when the test panicked.
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    /// For server databases: the server URL and the database name to drop.
    server: Option<(String, String)>,
    /// For SQLite: the directory holding the file, removed on drop.
    _dir: Option<tempfile::TempDir>,
}

fn server_url(backend: Backend) -> String {
    let (variable, default) = match backend {
        Backend::Postgres => (
            "AUTH_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432",
        ),
        Backend::MySql => ("AUTH_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306"),
        Backend::Sqlite => unreachable!("SQLite needs no server"),
    };
    std::env::var(variable).unwrap_or_else(|_| default.to_owned())
}

/// The URL of the server's maintenance database, to create and drop others.
fn admin_url(backend: Backend, server: &str) -> String {
    match backend {
        Backend::Postgres => format!("{server}/postgres"),
        _ => server.to_owned(),
    }
}

async fn admin_execute(backend: Backend, server: &str, statement: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(&admin_url(backend, server))
        .await
        .unwrap_or_else(|err| panic!("cannot reach the {backend:?} server: {err}"));
    sqlx::raw_sql(statement)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|err| panic!("`{statement}` failed: {err}"));
    let _ = conn.close().await;
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        if backend == Backend::Sqlite {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("auth.db").display());
            return Self {
                url,
                backend,
                server: None,
                _dir: Some(dir),
            };
        }
        let name = format!("auth_test_{:016x}", rand::random::<u64>());
        let server = server_url(backend);
        admin_execute(backend, &server, &format!("CREATE DATABASE {name}")).await;
        Self {
            url: format!("{server}/{name}"),
            backend,
            server: Some((server, name)),
            _dir: None,
        }
    }

    /// A connection for reading or changing rows behind the service's back.
    pub async fn connect(&self) -> AnyConnection {
        sqlx::any::install_default_drivers();
        AnyConnection::connect(&self.url)
            .await
            .expect("connect to the test database")
    }

    /// Runs one statement that needs no parameters.
    pub async fn execute(&self, statement: &str) {
        let mut conn = self.connect().await;
        sqlx::raw_sql(statement)
            .execute(&mut conn)
            .await
            .expect(statement);
        let _ = conn.close().await;
    }

    /// Fetches the one row `query` (with no parameters) returns.
    pub async fn fetch_one(&self, query: &str) -> AnyRow {
        let mut conn = self.connect().await;
        let row = sqlx::query(query).fetch_one(&mut conn).await.expect(query);
        let _ = conn.close().await;
        row
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server, name)) = self.server.take() else {
            return;
        };
        let backend = self.backend;
        let statement = match backend {
            // FORCE: the app's pool may still hold connections.
            Backend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            _ => format!("DROP DATABASE IF EXISTS {name}"),
        };
        // Drop cannot await, and may run inside the test's runtime: use a
        // short-lived runtime on its own thread.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(admin_execute(backend, &server, &statement));
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("could not drop test database {name}");
        }
    }
}

/// How a test app signs its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// Ed25519 from a PEM key file (the recommended deployment).
    Ed25519,
    /// HS256 with [`JWT_SECRET`] (the original deployment).
    Hs256,
}

/// The key material a test app signs with, so tests can forge tokens that
/// only differ from real ones where they mean to.
enum Key {
    Ed25519 { pem: String, x: String, kid: String },
    Hs256,
}

/// A running service and a client for it.
pub struct TestApp {
    /// Stops the server when the test app is dropped (declared first so it
    /// fires before the database goes).
    shutdown: Option<oneshot::Sender<()>>,
    /// The server task, to wait for in [`TestApp::stop`].
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub address: String,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    key: Key,
    /// Holds the key file for as long as the app runs.
    _key_dir: tempfile::TempDir,
}

/// Starts the service (Ed25519, defaults) on a fresh database of `backend`.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, Signing::Ed25519, &[]).await
}

/// Starts the service on a fresh database with this signing and these
/// extra flags.
pub async fn spawn_app_with(backend: Backend, signing: Signing, flags: &[&str]) -> TestApp {
    start(TestDatabase::create(backend).await, signing, flags).await
}

/// Starts the service (Ed25519, defaults) on an existing database.
pub async fn spawn_app_on(db: TestDatabase) -> TestApp {
    start(db, Signing::Ed25519, &[]).await
}

/// The configuration tests run with: port 0, this database, a test TTL.
pub fn test_config(database_url: &str, flags: &[&str]) -> Config {
    use clap::Parser as _;
    let ttl = JWT_TTL.to_string();
    let mut args = vec![
        "auth-service",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        database_url,
        "--jwt-ttl",
        &ttl,
    ];
    args.extend_from_slice(flags);
    Config::try_parse_from(args).expect("test config parses")
}

/// Starts the service on `db` with `flags`, returning when it listens.
pub async fn start(db: TestDatabase, signing: Signing, flags: &[&str]) -> TestApp {
    let key_dir = tempfile::tempdir().expect("temp dir");
    let key_file = key_dir.path().join("jwt-key.pem");
    let key_path = key_file.display().to_string();
    let mut all_flags: Vec<&str> = Vec::new();
    let key = match signing {
        Signing::Ed25519 => {
            let pem = auth_service::token::generate_ed25519_pem().expect("key generated");
            std::fs::write(&key_file, &pem).expect("key file written");
            all_flags.extend(["--jwt-private-key-file", &key_path]);
            let keys =
                auth_service::token::TokenKeys::ed25519_from_pem(&pem, JWT_TTL).expect("key loads");
            Key::Ed25519 {
                x: keys.jwks()["keys"][0]["x"].as_str().expect("x").to_owned(),
                kid: keys.kid().to_owned(),
                pem,
            }
        }
        Signing::Hs256 => {
            all_flags.extend(["--jwt-secret", JWT_SECRET]);
            Key::Hs256
        }
    };
    all_flags.extend_from_slice(flags);
    let app = App::build(test_config(&db.url, &all_flags))
        .await
        .expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run(common::testing::cancelled_by(stopped)));
    TestApp {
        shutdown: Some(stop),
        server,
        address,
        client: reqwest::Client::new(),
        db,
        key,
        _key_dir: key_dir,
    }
}

impl TestApp {
    /// Shuts the server down gracefully, waits until it has stopped, and
    /// hands back the database (to start another app on it).
    pub async fn stop(mut self) -> TestDatabase {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(std::time::Duration::from_secs(30), &mut self.server)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("server ran cleanly");
        self.db
    }

    /// Adds a user straight through the library (as `user add` does).
    pub async fn add_user(&self, email: &str, password: &str, is_admin: bool) {
        auth_service::add_user(&self.db.url, email, password, is_admin)
            .await
            .expect("user added");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `POST /login` with HTTP Basic credentials.
    pub async fn post_login(&self, email: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/login"))
            .basic_auth(email, Some(password))
            .send()
            .await
            .expect("request sent")
    }

    /// `POST /login` as a trusted proxy would forward it for `client`.
    pub async fn post_login_for(
        &self,
        client: &str,
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/login"))
            .header("x-forwarded-for", client)
            .basic_auth(email, Some(password))
            .send()
            .await
            .expect("request sent")
    }

    /// `POST /login` with this exact `Authorization` header, or none.
    pub async fn post_login_with(&self, authorization: Option<&str>) -> reqwest::Response {
        self.post_with("/login", authorization).await
    }

    /// `POST /validate` with this exact `Authorization` header, or none.
    pub async fn post_validate(&self, authorization: Option<&str>) -> reqwest::Response {
        self.post_with("/validate", authorization).await
    }

    /// `POST /validate` with `Authorization: Bearer <token>`.
    pub async fn validate_token(&self, token: &str) -> reqwest::Response {
        self.post_validate(Some(&format!("Bearer {token}"))).await
    }

    /// Logs in and returns the token, failing the test otherwise.
    pub async fn login_token(&self, email: &str, password: &str) -> String {
        let response = self.post_login(email, password).await;
        assert_eq!(response.status(), 200, "login of {email} failed");
        response.text().await.expect("token body")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// `POST` of a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// `POST /api/v1/login` `{email, password}`.
    pub async fn api_login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/login",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// `POST /api/v1/register` `{email, password}`.
    pub async fn register(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/register",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// `GET /api/v1/me` with this token.
    pub async fn me(&self, token: &str) -> reqwest::Response {
        self.client
            .get(self.url("/api/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    /// `PUT /api/v1/me/preferences` with this token and body.
    pub async fn put_preferences(&self, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .put(self.url("/api/v1/me/preferences"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    async fn post_with(&self, path: &str, authorization: Option<&str>) -> reqwest::Response {
        let mut request = self.client.post(self.url(path));
        if let Some(value) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        request.send().await.expect("request sent")
    }

    /// Decodes one of the app's tokens the way a gateway would: with the
    /// published key (or the shared secret), checking signature and expiry.
    pub fn decode(&self, token: &str) -> Value {
        let (key, algorithm) = match &self.key {
            Key::Ed25519 { x, .. } => (
                DecodingKey::from_ed_components(x).expect("public key"),
                Algorithm::EdDSA,
            ),
            Key::Hs256 => (
                DecodingKey::from_secret(JWT_SECRET.as_bytes()),
                Algorithm::HS256,
            ),
        };
        jsonwebtoken::decode::<Value>(token, &key, &Validation::new(algorithm))
            .expect("token valid under the app's key")
            .claims
    }

    /// A token carrying `claims`, signed with the app's own key and kid:
    /// everything about it is genuine except what the claims say.
    pub fn sign(&self, claims: &Value) -> String {
        match &self.key {
            Key::Ed25519 { pem, kid, .. } => {
                let mut header = Header::new(Algorithm::EdDSA);
                header.kid = Some(kid.clone());
                jsonwebtoken::encode(
                    &header,
                    claims,
                    &EncodingKey::from_ed_pem(pem.as_bytes()).expect("private key"),
                )
                .expect("token signed")
            }
            Key::Hs256 => sign_hs256(claims, JWT_SECRET.as_bytes()),
        }
    }

    /// The app's kid (Ed25519 apps only).
    pub fn kid(&self) -> &str {
        match &self.key {
            Key::Ed25519 { kid, .. } => kid,
            Key::Hs256 => panic!("HS256 apps have no published kid"),
        }
    }

    /// The app's raw Ed25519 public key, as published in the JWKS `x`.
    pub fn public_key_x(&self) -> &str {
        match &self.key {
            Key::Ed25519 { x, .. } => x,
            Key::Hs256 => panic!("HS256 apps have no public key"),
        }
    }
}

/// Asserts a response's status and exact body text.
pub async fn assert_text(response: reqwest::Response, status: u16, body: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(response.text().await.expect("body"), body);
}

/// Asserts a JSON API error: status and `error.code`, and that the message
/// is there. Returns the response's `Retry-After`, if any.
pub async fn assert_api_error(response: reqwest::Response, status: u16, code: &str) -> Option<u64> {
    assert_eq!(response.status(), status);
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|value| value.to_str().expect("ascii").parse().expect("seconds"));
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    retry_after
}

/// A token signed HS256 with `secret` carrying `claims`, for forging tests.
pub fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("token signed")
}

/// A token signed with a fresh Ed25519 key that is not the app's, under
/// `kid` (or none).
pub fn sign_with_another_ed25519_key(claims: &Value, kid: Option<&str>) -> String {
    let pem = auth_service::token::generate_ed25519_pem().expect("key generated");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_ed_pem(pem.as_bytes()).expect("private key"),
    )
    .expect("token signed")
}

/// An unsigned `alg: none` token carrying `claims`.
pub fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// Claims as the service would issue them for user 1, expiring at `exp`.
pub fn claims(exp: u64) -> Value {
    json!({"username": "alice@example.com", "admin": true, "iat": now() - 10, "exp": exp, "sub": "1"})
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

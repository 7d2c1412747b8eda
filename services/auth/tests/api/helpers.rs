//! Test harness: `spawn_app(backend)` builds the real [`App`] on port 0
//! against a database created for that test alone (and dropped afterwards),
//! and returns a [`TestApp`] with typed helpers for each endpoint.
//!
//! The database servers default to the local ones; override them with
//! `AUTH_TEST_POSTGRES_URL` and `AUTH_TEST_MYSQL_URL` (server URLs without a
//! database name).

use auth_service::{App, Config};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::AnyConnection;
use sqlx::Connection as _;
use sqlx::any::AnyRow;
use tokio::sync::oneshot;

/// The signing key every test app is configured with.
pub const JWT_SECRET: &str = "s3cret";
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

/// A running service and a client for it.
pub struct TestApp {
    /// Stops the server when the test app is dropped (declared first so it
    /// fires before the database goes).
    _shutdown: oneshot::Sender<()>,
    pub address: String,
    pub client: reqwest::Client,
    pub db: TestDatabase,
}

/// Starts the service on a fresh database of `backend`.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_on(TestDatabase::create(backend).await).await
}

/// The configuration tests run with.
pub fn test_config(database_url: &str) -> Config {
    use clap::Parser as _;
    Config::try_parse_from([
        "auth-service",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        database_url,
        "--jwt-secret",
        JWT_SECRET,
        "--jwt-ttl",
        &JWT_TTL.to_string(),
    ])
    .expect("test config parses")
}

/// Starts the service on an existing database.
pub async fn spawn_app_on(db: TestDatabase) -> TestApp {
    let app = App::build(test_config(&db.url)).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    TestApp {
        _shutdown: stop,
        address,
        client: reqwest::Client::new(),
        db,
    }
}

impl TestApp {
    /// Adds a user straight through the library (as `user add` does).
    pub async fn add_user(&self, email: &str, password: &str, is_admin: bool) {
        auth_service::add_user(&self.db.url, email, password, is_admin)
            .await
            .expect("user added");
    }

    /// `POST /login` with HTTP Basic credentials.
    pub async fn post_login(&self, email: &str, password: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/login", self.address))
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

    /// Logs in and returns the token, failing the test otherwise.
    pub async fn login_token(&self, email: &str, password: &str) -> String {
        let response = self.post_login(email, password).await;
        assert_eq!(response.status(), 200, "login of {email} failed");
        response.text().await.expect("token body")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent")
    }

    async fn post_with(&self, path: &str, authorization: Option<&str>) -> reqwest::Response {
        let mut request = self.client.post(format!("{}{path}", self.address));
        if let Some(value) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        request.send().await.expect("request sent")
    }
}

/// Asserts a response's status and exact body text.
pub async fn assert_text(response: reqwest::Response, status: u16, body: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(response.text().await.expect("body"), body);
}

/// A token signed with `secret` carrying `claims`, for forging tests.
pub fn sign(claims: &serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token signed")
}

/// An unsigned `alg: none` token carrying `claims`.
pub fn unsigned(claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// Decodes a token with the test secret, checking its signature and expiry.
pub fn decode(token: &str) -> serde_json::Value {
    jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
    )
    .expect("token valid under the test secret")
    .claims
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

//! The auth service: users in a SQL database (SQLite, PostgreSQL or
//! MySQL/MariaDB) and JSON Web Tokens for them. [`App`] is the server, built
//! from a [`Config`]; [`add_user`] is what `auth-service user add` runs.

pub mod accounts;
pub mod cli;
pub mod client_address;
pub mod config;
pub mod controls;
pub mod devices;
pub mod error;
pub mod links;
pub mod mail;
pub mod password;
pub mod rate_limit;
pub mod routes;
pub mod state;
pub mod store;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use common::server::HeaderLimits;
pub use config::Config;
pub use error::Error;

use client_address::TrustedProxies;
use contract::secret::Secret;
use password::Passwords;
use rate_limit::Limits;
use state::AppState;
use store::UserStore;
use token::TokenKeys;

/// Request headers: a token and a few proxies' worth fit several times over
/// in 16 KiB (431 beyond); a client has 10 s to send them (slow-loris).
pub const HEADER_LIMITS: HeaderLimits = HeaderLimits {
    max_bytes: 16 * 1024,
    read_timeout: Some(Duration::from_secs(10)),
};

/// How long shutdown waits for in-flight requests before dropping them
/// (under Kubernetes' default 30 s termination grace period).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// A ready-to-run server: database connected and migrated, keys loaded,
/// port bound.
pub struct App {
    /// Bound in [`App::build`], so the port is known (and taken) before
    /// [`App::run`]; tests bind port 0 and read the real one.
    listener: TcpListener,
    address: SocketAddr,
    router: axum::Router,
    /// Kept to close the pool once the server has stopped.
    store: UserStore,
    /// Kept to forget idle rate-limit keys while serving.
    limits: Arc<Limits>,
    /// How often idle rate-limit keys are forgotten.
    sweep_every: std::time::Duration,
}

impl App {
    /// Connects to the database, runs its migrations, loads the signing
    /// key, creates the `ADMIN_EMAIL` administrator if asked, and binds the
    /// listener.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let tokens = TokenKeys::from_config(
            config.jwt_secret.as_ref(),
            config.jwt_private_key.as_ref(),
            config.jwt_private_key_file.as_deref(),
            config.jwt_ttl,
        )
        .context("loading the JWT signing key")?;
        let store = UserStore::connect_waiting(
            config.database_url.expose(),
            Duration::from_secs(config.database_wait_secs),
        )
        .await
        .context("opening the user database")?;
        let passwords = Passwords::new()
            .await
            .context("preparing the password hasher")?;
        if let (Some(email), Some(password)) = (&config.admin_email, &config.admin_password) {
            accounts::bootstrap_admin(&store, &passwords, email, password)
                .await
                .context("creating the ADMIN_EMAIL administrator")?;
        }
        let limits = Arc::new(Limits::new(
            config.login_failure_limit,
            config.registration_limit,
            config.rate_limit_window(),
        ));
        let device_key = tokens.derive_key("device tokens");
        let router = routes::router(AppState {
            store: store.clone(),
            passwords,
            tokens: Arc::new(tokens),
            limits: limits.clone(),
            proxies: TrustedProxies::new(config.trusted_proxies.0.clone()),
            allow_registration: config.allow_registration,
            mail: mail::AccountMail::new(&config.mail).context("configuring mail")?,
            devices: Arc::new(devices::DeviceTokens::new(device_key)),
        });
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let address = listener.local_addr().context("reading the bound address")?;
        Ok(App {
            listener,
            address,
            router,
            store,
            limits,
            sweep_every: config.rate_limit_window(),
        })
    }

    /// The port actually bound (useful when configured as 0).
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish
    /// and closes the database pool.
    pub async fn run(self, shutdown: common::shutdown::CancellationToken) -> anyhow::Result<()> {
        tracing::info!(address = %self.address, "auth service listening");
        let limits = self.limits.clone();
        let sweep_every = self.sweep_every;
        let sweeper = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(sweep_every);
            loop {
                ticks.tick().await;
                limits.forget_idle();
            }
        });
        common::server::serve(
            self.listener,
            self.router,
            HEADER_LIMITS,
            shutdown,
            common::server::Shutdown::within(SHUTDOWN_GRACE),
        )
        .await;
        sweeper.abort();
        self.store.close().await;
        tracing::info!("auth service stopped");
        Ok(())
    }
}

/// Connects to `database_url` (running migrations), hashes `password` and
/// inserts the user. Fails with [`Error::EmailTaken`] in the chain when the
/// email (in any case) exists.
pub async fn add_user(
    database_url: &str,
    email: &str,
    password: &str,
    is_admin: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !store::normalize_email(email).is_empty(),
        "the email is empty"
    );
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    let store = UserStore::connect(database_url)
        .await
        .context("opening the user database")?;
    let inserted = async {
        let hash = Passwords::new().await?.hash(Secret::new(password)).await?;
        // An operator's account: the operator vouches for the address.
        store.insert(email, &hash, is_admin, true).await
    }
    .await;
    store.close().await;
    let user = inserted?;
    tracing::info!(user = %user.email, id = user.id, admin = user.is_admin, "user added");
    Ok(())
}

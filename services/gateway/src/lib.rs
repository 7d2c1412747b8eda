//! The gateway: the HTTP front door of the MP3 converter. It authenticates
//! through the auth service, streams uploads into GridFS, queues conversions
//! on RabbitMQ and streams finished MP3s back to their owners.

pub mod account_data;
pub mod auth_client;
pub mod body_guard;
pub mod claims;
pub mod config;
pub mod error;
pub mod events;
pub mod leases;
pub mod linger;
pub mod openapi;
pub mod preferences;
pub mod queue;
pub mod quotas;
pub mod range;
pub mod revocations;
mod routes;
pub mod schemas;
pub mod sniff;
pub mod state;
pub mod token;
pub mod uploads;

use common::shutdown::CancellationToken;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::HeaderName;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use config::Config;
use state::AppState;

/// Request headers: a token, a multipart boundary and a few proxies' worth
/// fit in 64 KiB (431 beyond). 30 s to send them is hyper's own default,
/// kept: uploads from slow links start with these headers too.
const HEADER_LIMITS: common::server::HeaderLimits = common::server::HeaderLimits {
    max_bytes: 64 * 1024,
    read_timeout: Some(std::time::Duration::from_secs(30)),
};

/// A gateway bound to its ports, ready to serve.
pub struct App {
    listener: tokio::net::TcpListener,
    router: Router,
    /// The operations port (`/healthz`, `/readyz`, `/metrics`), apart from
    /// the public one so that an Ingress never exposes them.
    ops_listener: tokio::net::TcpListener,
    ops_router: Router,
    /// Cancelled at shutdown: ends the SSE streams, the event subscription
    /// and the lease upkeep.
    stopping: CancellationToken,
    /// How long requests in flight may run once shutdown has begun.
    grace: std::time::Duration,
    /// Upload clean-ups and commits, waited for at shutdown.
    background: tokio_util::task::TaskTracker,
}

/// How long start-up waits for the event subscription before serving anyway
/// (it keeps trying in the background).
const SUBSCRIBE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl App {
    /// Connects to the broker and MongoDB and binds the listener (port 0 picks a free one).
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let mongo = config.mongo.connect().await?;
        if let Err(err) = mongo.jobs.ensure_indexes().await {
            tracing::warn!(error = %err, "could not create the jobs indexes yet");
        }
        if let Err(err) = quotas::ensure_indexes(&mongo).await {
            tracing::warn!(error = %err, "could not create the quota indexes yet");
        }
        let publisher = common::amqp::Publisher::connect(
            &config.amqp.amqp_url,
            "gateway",
            &[&config.amqp.video_queue],
            &[&config.amqp.events_exchange],
        )
        .await
        .context("connecting to RabbitMQ")?;
        let auth = auth_client::AuthClient::new(&config.auth_url)?;
        auth.prefetch_keys().await;
        let stopping = CancellationToken::new();
        tokio::spawn(auth.follow_revocations(stopping.clone()));
        tokio::spawn(sweep_deleted_accounts(
            mongo.clone(),
            auth.revocations().clone(),
            stopping.clone(),
        ));
        let background = tokio_util::task::TaskTracker::new();
        let events = events::start(
            &config,
            mongo.jobs.clone(),
            stopping.clone(),
            SUBSCRIBE_WAIT,
        )
        .await;
        let leases = leases::Leases::new(&mongo);
        tokio::spawn(leases.clone().maintain(stopping.clone()));
        let state = AppState {
            leases,
            auth,
            mongo,
            publisher: Arc::new(publisher),
            video_queue: config.amqp.video_queue.clone(),
            max_upload_bytes: config.max_upload_bytes,
            events_exchange: config.amqp.events_exchange.clone(),
            events,
            stopping: stopping.clone(),
            sse_keep_alive: std::time::Duration::from_millis(config.sse_keep_alive_ms.max(1)),
            proxies: common::client_address::TrustedProxies::new(config.trusted_proxies.0.clone()),
            upload_pace: config::Pace {
                idle: std::time::Duration::from_secs(config.upload_idle_secs.max(1)),
                window: std::time::Duration::from_secs(config.upload_rate_window_secs.max(1)),
                min_rate: config.upload_min_rate,
            },
            background: background.clone(),
            api_document: openapi::document(),
            quotas: quotas::QuotaLimits {
                jobs_in_flight: config.quota_jobs_in_flight,
                jobs_per_hour: config.quota_jobs_per_hour,
                stored_bytes: config.quota_stored_bytes,
            },
            max_retries_per_job: config.max_retries_per_job,
            streams: events::StreamCounts::new(config.max_streams_per_user),
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let ops_listener = tokio::net::TcpListener::bind(config.ops_listen)
            .await
            .with_context(|| format!("binding {}", config.ops_listen))?;
        Ok(App {
            listener,
            ops_listener,
            ops_router: ops_router(state.clone()),
            router: router(state),
            stopping: stopping.clone(),
            grace: std::time::Duration::from_secs(config.shutdown_grace_secs),
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The operations port.
    pub fn ops_port(&self) -> u16 {
        self.ops_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(0)
    }

    /// Serves until `shutdown` is cancelled, then stops accepting connections,
    /// lets running requests finish within the grace period
    /// (`SHUTDOWN_GRACE_SECS`) and aborts the rest.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(
            port = self.port(),
            ops_port = self.ops_port(),
            "gateway listening"
        );
        // The operations port answers until the public one has finished, so
        // probes see `/readyz` fail (shutting down) and `/healthz` pass
        // while requests drain.
        let ops_done = CancellationToken::new();
        let ops = axum::serve(self.ops_listener, self.ops_router)
            .with_graceful_shutdown(ops_done.clone().cancelled_owned());
        let ops = tokio::spawn(std::future::IntoFuture::into_future(ops));
        // Live event streams never end by themselves: they end with the
        // signal, so the graceful shutdown does not wait for their clients.
        let stopping = self.stopping;
        let signal = shutdown.clone();
        tokio::spawn(async move {
            signal.cancelled().await;
            stopping.cancel();
        });
        let on_shutdown = common::server::Shutdown {
            grace: self.grace,
            background: self.background,
        };
        common::server::serve(
            self.listener,
            self.router,
            HEADER_LIMITS,
            shutdown,
            on_shutdown,
        )
        .await;
        ops_done.cancel();
        if let Ok(Err(err)) = ops.await {
            tracing::warn!(error = %err, "the operations server failed");
        }
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// Finishes account deletions other gateways left half done, every
/// [`account_data::SWEEP_EVERY`], until `stopping`.
async fn sweep_deleted_accounts(
    mongo: common::config::MongoStores,
    revocations: revocations::Revocations,
    stopping: CancellationToken,
) {
    let mut ticks = tokio::time::interval(account_data::SWEEP_EVERY);
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = ticks.tick() => account_data::sweep(&mongo, &revocations).await,
        }
    }
}

/// The public API, with its layers.
fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static(common::amqp::REQUEST_ID_HEADER);
    routes::router(state)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(axum::middleware::from_fn(plain_request_id))
        .layer(axum::middleware::from_fn(linger::drain_unread))
}

/// The longest `X-Request-Id` taken from a client.
const MAX_REQUEST_ID_CHARS: usize = 64;

/// A client's `X-Request-Id` is kept only in a bounded, plain form
/// (letters, digits, `-`, `_`, `.`, `:`; at most 64): it goes into every
/// log line and message about the request, and back in the answer, so
/// anything else (30 KB, spaces that forge log fields) is dropped and the
/// gateway makes its own.
async fn plain_request_id(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let plain = |value: &axum::http::HeaderValue| {
        let bytes = value.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_CHARS
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    let headers = request.headers_mut();
    let all_plain = headers
        .get_all(common::amqp::REQUEST_ID_HEADER)
        .iter()
        .all(plain);
    if !all_plain
        || headers
            .get_all(common::amqp::REQUEST_ID_HEADER)
            .iter()
            .count()
            > 1
    {
        headers.remove(common::amqp::REQUEST_ID_HEADER);
    }
    next.run(request).await
}

/// `/healthz`, `/readyz` and `/metrics`. Ready means the gateway can take
/// uploads and serve jobs, files and events: MongoDB and RabbitMQ answer,
/// and it is not shutting down. Auth is not part of it: only sign-in,
/// registration and the account routes need it (they answer 503 while it
/// is down), tokens are checked with the keys already fetched, and one auth
/// blip must not take every gateway, downloads and live events included,
/// out of the Service.
fn ops_router(state: AppState) -> Router {
    let ready: common::ops::ReadinessCheck = Arc::new(move || {
        let state = state.clone();
        Box::pin(async move {
            if state.stopping.is_cancelled() {
                return Err("shutting down".to_owned());
            }
            if !state.mongo.is_reachable().await {
                return Err("MongoDB".to_owned());
            }
            if !state.publisher.is_connected().await {
                return Err("RabbitMQ".to_owned());
            }
            Ok(())
        })
    });
    common::ops::router(ready)
}

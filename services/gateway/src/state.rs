//! What every request handler shares.

use std::sync::Arc;

use common::amqp::Publisher;
use common::config::MongoStores;
use mongodb::gridfs::GridFsBucket;

use crate::auth_client::AuthClient;

/// Multipart framing around the file itself (boundaries, part headers).
const MULTIPART_OVERHEAD: u64 = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub auth: AuthClient,
    pub mongo: MongoStores,
    /// Confirmed publishing to the `video` queue.
    pub publisher: Arc<Publisher>,
    /// Name of the queue that feeds the converter.
    pub video_queue: String,
    pub max_upload_bytes: u64,
    /// Topic exchange of job state changes (`job.<state>`).
    pub events_exchange: String,
    /// Job events from the broker, fanned out to the SSE streams.
    pub events: tokio::sync::broadcast::Sender<crate::events::Live>,
    /// Cancelled when the server shuts down, so SSE streams end.
    pub stopping: common::shutdown::CancellationToken,
    pub sse_keep_alive: std::time::Duration,
    /// The uploads this gateway holds, and the sweep of dead gateways' ones.
    pub leases: crate::leases::Leases,
    /// How long an upload may pause and how slowly it may come.
    pub upload_pace: crate::config::Pace,
    /// Proxies in front of the gateway whose `X-Forwarded-For` is believed.
    pub proxies: common::client_address::TrustedProxies,
    /// Work that must finish even if the request that started it is
    /// dropped (a client gone, the shutdown grace over): an upload's
    /// clean-up, and its commit (job record, confirmed publish) once the
    /// file is stored. Shutdown waits for it.
    pub background: tokio_util::task::TaskTracker,
    /// The OpenAPI document served at `/api/v1/openapi.json`.
    pub api_document: &'static str,
    /// Per-account limits on jobs and storage.
    pub quotas: crate::quotas::QuotaLimits,
    /// `MAX_RETRIES_PER_JOB`.
    pub max_retries_per_job: u32,
    /// Open live event streams per account, and their limit.
    pub streams: crate::events::StreamCounts,
}

impl AppState {
    pub fn videos_bucket(&self) -> GridFsBucket {
        common::gridfs::bucket(&self.mongo.videos)
    }

    pub fn mp3s_bucket(&self) -> GridFsBucket {
        common::gridfs::bucket(&self.mongo.mp3s)
    }

    /// The largest upload body: the file plus its multipart framing.
    pub fn upload_body_limit(&self) -> u64 {
        self.max_upload_bytes.saturating_add(MULTIPART_OVERHEAD)
    }

    /// The `X-Forwarded-For` to send auth for a request from `peer`.
    pub fn forwarded_for(
        &self,
        peer: std::net::SocketAddr,
        headers: &axum::http::HeaderMap,
    ) -> String {
        self.proxies.forwarded_for(peer.ip(), headers)
    }
}

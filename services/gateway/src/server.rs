//! Serving the router over HTTP/1.1 with a bounded graceful shutdown, which
//! axum's `serve` does not offer: once the shutdown signal fires, the
//! listener is closed (new connections are refused), requests in flight
//! (long uploads above all) get a grace period to finish, and whatever is
//! still running after it is dropped. A dropped upload cleans up after
//! itself (see `routes::upload`); that cleanup runs on the gateway's
//! background tracker, which is waited for last.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// How long the cleanup of dropped requests and the commits already under
/// way (job record, confirmed publish) may take once the grace is over.
const BACKGROUND_WAIT: Duration = Duration::from_secs(10);

/// What shutting down involves besides the connections.
pub struct Shutdown {
    /// How long requests in flight may still run.
    pub grace: Duration,
    /// Told as soon as the signal fires (ends the SSE streams, which never
    /// finish by themselves).
    pub on_signal: Box<dyn FnOnce() + Send>,
    /// Work that must finish even when its request was dropped.
    pub background: TaskTracker,
}

/// Accepts connections on `listener` until `signal` resolves, then shuts
/// down as the module describes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    signal: impl Future<Output = ()>,
    shutdown: Shutdown,
) {
    let http = hyper::server::conn::http1::Builder::new();
    let graceful = GracefulShutdown::new();
    // Connections still open when the grace is over are cancelled, which
    // drops the requests they carry.
    let cut = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off rather
                    // than spin.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // Peer addresses travel to auth in X-Forwarded-For (login limits).
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            router.clone().oneshot(request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let cut = cut.clone();
        connections.spawn(async move {
            tokio::select! {
                served = connection => if let Err(err) = served {
                    tracing::debug!(error = %err, %peer, "connection closed with an error");
                },
                () = cut.cancelled() => {
                    tracing::info!(%peer, "connection cut at the end of the shutdown grace");
                }
            }
        });
    }
    drop(listener);
    (shutdown.on_signal)();
    tracing::info!(
        grace_s = shutdown.grace.as_secs_f64(),
        "no longer accepting connections; letting in-flight requests finish"
    );
    if tokio::time::timeout(shutdown.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = shutdown.grace.as_secs_f64(),
            "requests still running at the end of the shutdown grace; aborting them"
        );
    }
    cut.cancel();
    connections.close();
    connections.wait().await;
    shutdown.background.close();
    if tokio::time::timeout(BACKGROUND_WAIT, shutdown.background.wait())
        .await
        .is_err()
    {
        tracing::error!("background clean-up did not finish in {BACKGROUND_WAIT:?}");
    }
}

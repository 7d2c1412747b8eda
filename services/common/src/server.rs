//! Serving an axum router over HTTP/1.1 with what axum's `serve` does not
//! offer: bounds on request headers (size, and for services that want it a
//! read deadline against slow-loris clients) and a bounded graceful
//! shutdown. Once the signal fires the listener is closed (new connections
//! are refused), requests in flight get a grace period to finish, whatever
//! still runs after it is dropped, and background work that must survive a
//! dropped request is waited for last.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// How long background work (clean-up of dropped requests, commits already
/// under way) may take once the grace is over.
const BACKGROUND_WAIT: Duration = Duration::from_secs(10);

/// Bounds on what a client may send before its request is handled.
#[derive(Debug, Clone, Copy)]
pub struct HeaderLimits {
    /// The request line and headers together (431 beyond).
    pub max_bytes: usize,
    /// How long a client has to send them; `None` for no deadline.
    pub read_timeout: Option<Duration>,
}

/// What shutting down involves besides the connections.
pub struct Shutdown {
    /// How long requests in flight may still run.
    pub grace: Duration,
    /// Work that must finish even when its request was dropped.
    pub background: TaskTracker,
}

impl Shutdown {
    /// Only the grace: nothing to tell, no background work.
    pub fn within(grace: Duration) -> Shutdown {
        Shutdown {
            grace,
            background: TaskTracker::new(),
        }
    }
}

/// Accepts connections on `listener` until `signal` resolves, then shuts
/// down as the module describes. Handlers see the peer address as
/// `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HeaderLimits,
    signal: CancellationToken,
    shutdown: Shutdown,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .max_header_size(limits.max_bytes)
        // The read buffer bounds headers too; hyper's minimum is 8 KiB.
        .max_buf_size(limits.max_bytes.max(8 * 1024));
    let graceful = GracefulShutdown::new();
    // Connections still open when the grace is over are cancelled, which
    // drops the requests they carry.
    let cut = CancellationToken::new();
    let connections = TaskTracker::new();
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
            () = signal.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
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

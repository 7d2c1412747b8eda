//! The process-wide stop signal, and the one way every part of a service
//! is told to stop: a [`CancellationToken`] (servers, consume loops,
//! subscriptions, live streams, background loops), cancelled here on a
//! signal or by a test.

pub use tokio_util::sync::CancellationToken;

/// A token cancelled on SIGTERM or Ctrl-C: what a service's `run` is given.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        signal().await;
        cancel.cancel();
    });
    token
}

/// Resolves on SIGTERM (Kubernetes, `scripts/down`) or Ctrl-C.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

//! The operations endpoints every service serves: `/healthz` (the process is
//! alive), `/readyz` (its dependencies answer) and `/metrics` (Prometheus).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// A readiness probe: resolves to `Ok(())` or the name of what is down.
pub type ReadinessCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The process-wide Prometheus recorder (installed on first use, so several
/// services started in one test process share it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Real histogram buckets (seconds and ratios), not summaries, so
            // Prometheus can aggregate latencies across replicas.
            const BUCKETS: [f64; 14] = [
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 100.0,
            ];
            // `set_buckets` only refuses an empty list.
            let builder = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// `/healthz`, `/readyz` and `/metrics`, to merge into a service's router.
pub fn router(ready: ReadinessCheck) -> Router {
    let handle = metrics_handle();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => (StatusCode::OK, "ready".to_owned()),
                        Err(what) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {what}"),
                        ),
                    }
                }
            }),
        )
        .route("/metrics", get(move || std::future::ready(handle.render())))
}

/// Serves the operations endpoints on `listener` while `work` runs (a
/// worker's consume loop), and stops them once it has finished.
pub async fn serve_while(
    listener: tokio::net::TcpListener,
    ready: ReadinessCheck,
    work: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let done = crate::shutdown::CancellationToken::new();
    let server =
        axum::serve(listener, router(ready)).with_graceful_shutdown(done.clone().cancelled_owned());
    let server = tokio::spawn(std::future::IntoFuture::into_future(server));
    work.await;
    done.cancel();
    server.await.map_err(std::io::Error::other)?
}

//! The HTTP routes. The classic ones (`/login`, `/upload`, `/download`) keep
//! the original system's paths, bodies and status codes.

mod account;
mod download;
mod events;
mod jobs;
mod login;
mod upload;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};

use crate::state::AppState;

/// Multipart framing around the file itself (boundaries, part headers).
const MULTIPART_OVERHEAD: u64 = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    let body_limit = usize::try_from(state.max_upload_bytes.saturating_add(MULTIPART_OVERHEAD))
        .unwrap_or(usize::MAX);
    Router::new()
        .route("/login", post(login::login))
        .route(
            "/upload",
            post(upload::upload).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route("/download", get(download::download))
        .route("/api/v1/login", post(account::login))
        .route("/api/v1/register", post(account::register))
        .route("/api/v1/me", get(account::me))
        .route("/api/v1/me/preferences", put(account::preferences))
        .route(
            "/api/v1/jobs",
            post(jobs::create)
                .layer(DefaultBodyLimit::max(body_limit))
                .get(jobs::list),
        )
        .route("/api/v1/jobs/{id}", get(jobs::get).delete(jobs::delete))
        .route("/api/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/api/v1/jobs/{id}/mp3", get(jobs::mp3))
        .route("/api/v1/events", get(events::events))
        .route_layer(axum::middleware::from_fn(count_requests))
        .with_state(state)
}

/// Counts every routed request in `gateway_http_requests_total`, labelled
/// with the route's pattern (never the raw path, so ids do not explode the
/// label set) and the response status.
async fn count_requests(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    metrics::counter!(
        "gateway_http_requests_total",
        "route" => route,
        "status" => response.status().as_u16().to_string(),
    )
    .increment(1);
    response
}

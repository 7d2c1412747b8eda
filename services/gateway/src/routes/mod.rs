//! The HTTP routes. The classic ones (`/login`, `/upload`, `/download`) keep
//! the original system's paths, bodies and status codes.

mod account;
mod download;
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
        .with_state(state)
}

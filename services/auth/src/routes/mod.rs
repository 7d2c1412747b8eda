//! The HTTP surface: the classic routes of the original system (`POST
//! /login`, `POST /validate`, plain-text errors), the JSON API under
//! `/api/v1` (`{"error": {"code", "message"}}` errors), the JWKS, and the
//! operations endpoints (`/healthz`, `/readyz`, `/metrics`).

mod api;
mod classic;
mod keys;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

/// The classic routes read no body; anything bigger than this is refused
/// with 413 before it is read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// JSON bodies are an email and a password (at most 1024 characters) or one
/// flag: 16 KiB is plenty, and refused with a JSON 413 beyond.
pub const MAX_JSON_BYTES: usize = 16 * 1024;

/// A request (including reading its body) that takes longer than this is
/// answered 408: a slow client cannot hold a connection and a handler.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole HTTP surface of the service.
pub fn router(state: AppState) -> Router {
    let store = state.store.clone();
    let ready: common::ops::ReadinessCheck = Arc::new(move || {
        let store = store.clone();
        Box::pin(async move {
            store.ping().await.map_err(|err| {
                tracing::warn!(error = %err, "database unreachable");
                "database".to_owned()
            })
        })
    });
    let classic = Router::new()
        .route("/login", post(classic::login))
        .route("/validate", post(classic::validate))
        .route("/.well-known/jwks.json", get(keys::jwks))
        .with_state(state.clone())
        .merge(common::ops::router(ready))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES));
    let api = Router::new()
        .route("/api/v1/login", post(api::login))
        .route(
            "/api/v1/register",
            get(api::registration).post(api::register),
        )
        .route("/api/v1/me", get(api::me).delete(api::delete_account))
        .route("/api/v1/me/preferences", put(api::set_preferences))
        .route("/api/v1/me/confirmation", post(api::resend_confirmation))
        .route("/api/v1/me/password", put(api::change_password))
        .route(
            "/api/v1/me/sign-out-everywhere",
            post(api::sign_out_everywhere),
        )
        .route("/api/v1/confirm", post(api::confirm))
        .route("/api/v1/password-reset", post(api::request_reset))
        .route("/api/v1/password-reset/complete", post(api::complete_reset))
        .route("/internal/token-revocations", get(api::revocations))
        // Unknown paths (anywhere) get a JSON 404.
        .fallback(api::not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES));
    classic
        .merge(api)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(TraceLayer::new_for_http())
}

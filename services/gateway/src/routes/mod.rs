//! The HTTP routes. The classic ones (`/login`, `/upload`, `/download`) keep
//! the original system's paths, bodies and status codes (and axum's plain
//! 404 and 405); everything under `/api/v1` answers in JSON, unknown paths
//! and wrong methods included.

pub(crate) mod account;
pub(crate) mod controls;
mod download;
pub(crate) mod events;
pub(crate) mod jobs;
mod login;
pub(crate) mod meta;
mod pages;
mod upload;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};

use crate::error::{ApiError, JsonError};
use crate::state::AppState;

/// Where the JSON API lives.
const API_PREFIX: &str = "/api/v1";

/// The account routes' JSON bodies: an email and a password, or one flag
/// (auth's own limit; over it the gateway answers 413 without forwarding).
pub(crate) const MAX_JSON_BYTES: usize = 16 * 1024;

pub fn router(state: AppState) -> Router {
    let body_limit = usize::try_from(state.upload_body_limit()).unwrap_or(usize::MAX);
    let upload_limits = || {
        (
            DefaultBodyLimit::max(body_limit),
            axum::middleware::from_fn_with_state(state.clone(), crate::body_guard::guard),
        )
    };
    let json = DefaultBodyLimit::max(MAX_JSON_BYTES);
    Router::new()
        .route("/login", post(login::login))
        .route("/upload", post(upload::upload).layer(upload_limits()))
        .route("/download", get(download::download))
        .route("/api/v1/login", api(post(account::login).layer(json)))
        .route(
            "/api/v1/register",
            api(get(account::registration)
                .post(account::register)
                .layer(json)),
        )
        .route(
            "/api/v1/me",
            api(get(controls::me).delete(controls::delete_me).layer(json)),
        )
        .route(
            "/api/v1/me/preferences",
            api(put(account::preferences).layer(json)),
        )
        .route(
            "/api/v1/me/confirmation",
            api(post(controls::resend_confirmation)),
        )
        .route(
            "/api/v1/me/password",
            api(put(controls::change_password).layer(json)),
        )
        .route(
            "/api/v1/me/sign-out-everywhere",
            api(post(controls::sign_out_everywhere)),
        )
        .route("/api/v1/confirm", api(post(controls::confirm).layer(json)))
        .route(
            "/api/v1/password-reset",
            api(post(controls::request_reset).layer(json)),
        )
        .route(
            "/api/v1/password-reset/complete",
            api(post(controls::complete_reset).layer(json)),
        )
        .route(
            "/api/v1/jobs",
            api(post(jobs::create).layer(upload_limits()).get(jobs::list)),
        )
        .route(
            "/api/v1/jobs/{id}",
            api(get(jobs::get).delete(jobs::delete)),
        )
        .route("/api/v1/jobs/{id}/retry", api(post(jobs::retry)))
        .route("/api/v1/jobs/{id}/mp3", api(get(jobs::mp3)))
        .route("/api/v1/events", api(get(events::events)))
        .route("/api/v1/openapi.json", api(get(meta::openapi_json)))
        .route(
            "/account/confirm",
            get(pages::confirm_page).post(pages::confirm).layer(json),
        )
        .route(
            "/account/reset",
            get(pages::reset_page).post(pages::reset).layer(json),
        )
        .route_layer(axum::middleware::from_fn(count_requests))
        .fallback(not_found)
        .with_state(state)
}

/// A `/api/v1` route: a method it does not serve is a JSON 405 (axum adds
/// the `Allow` header).
fn api(route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route.fallback(|| async { JsonError(ApiError::MethodNotAllowed) })
}

/// No route matched: a JSON 404 under `/api/v1`, axum's plain empty one
/// elsewhere (as the classic routes always answered).
async fn not_found(uri: Uri) -> Response {
    let path = uri.path();
    let under_api = path
        .strip_prefix(API_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if under_api {
        JsonError(ApiError::NotFound).into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
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

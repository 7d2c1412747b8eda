//! The account part of the JSON API, served by auth and proxied here so
//! clients talk to one host: login, registration, `me` and preferences.
//! Auth's answers (and its JSON errors) pass through unchanged; when auth
//! cannot be reached the gateway's own JSON error says so.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;

use super::MAX_JSON_BYTES;
use contract::ErrorBody;
use contract::account::{
    Credentials, NewAccount, Preferences, Profile, RegistrationStatus, TokenResponse,
};

use crate::error::{ApiError, JsonError};
use crate::state::AppState;

/// What every account route needs to forward a request.
pub(super) type Forwarded = (State<AppState>, ConnectInfo<SocketAddr>, HeaderMap);

/// A JSON body as read: over [`MAX_JSON_BYTES`] the gateway answers 413
/// itself (JSON), and nothing reaches auth.
pub(super) type Body = Result<Bytes, BytesRejection>;

pub(super) async fn forward(
    request: Forwarded,
    method: Method,
    path: &str,
    body: Body,
) -> Result<Response, JsonError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge(MAX_JSON_BYTES)
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })?;
    let (State(state), ConnectInfo(peer), headers) = request;
    let forwarded_for = state.forwarded_for(peer, &headers);
    Ok(state
        .auth
        .forward(method, path, &headers, &forwarded_for, body)
        .await?)
}

/// `POST /api/v1/login` `{email, password}` -> `{token, expires_at}`.
#[utoipa::path(
    post,
    path = "/api/v1/login",
    tag = "account",
    request_body = Credentials,
    responses(
        (status = 200, description = "A token for `Authorization: Bearer ...`", body = TokenResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "A missing or unknown field, or a wrong type", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
        (status = 503, description = "Auth service unreachable", body = ErrorBody),
    )
)]
pub async fn login(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, JsonError> {
    forward((state, peer, headers), Method::POST, "/api/v1/login", body).await
}

/// `GET /api/v1/register` -> `{enabled}`: whether registration is open, so
/// clients show "create an account" only where it works.
#[utoipa::path(
    get,
    path = "/api/v1/register",
    tag = "account",
    responses(
        (status = 200, description = "Whether `POST /api/v1/register` accepts new accounts", body = RegistrationStatus),
        (status = 503, description = "Auth service unreachable", body = ErrorBody),
    )
)]
pub async fn registration(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, JsonError> {
    forward(
        (state, peer, headers),
        Method::GET,
        "/api/v1/register",
        Ok(Bytes::new()),
    )
    .await
}

/// `POST /api/v1/register` `{email, password}` -> 201 and the new profile.
#[utoipa::path(
    post,
    path = "/api/v1/register",
    tag = "account",
    request_body = NewAccount,
    responses(
        (status = 201, description = "The new account, its address unconfirmed until the link mailed to it is used; `confirmation_sent` says whether that mail went", body = contract::account::Registered),
        (status = 400, description = "Malformed JSON, invalid email or weak password", body = ErrorBody),
        (status = 403, description = "Registration is disabled", body = ErrorBody),
        (status = 409, description = "The email is taken", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "A missing or unknown field, or a wrong type", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
        (status = 503, description = "Auth service unreachable", body = ErrorBody),
    )
)]
pub async fn register(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, JsonError> {
    forward(
        (state, peer, headers),
        Method::POST,
        "/api/v1/register",
        body,
    )
    .await
}

/// `PUT /api/v1/me/preferences {"email_notifications": bool}`.
#[utoipa::path(
    put,
    path = "/api/v1/me/preferences",
    tag = "account",
    request_body = Preferences,
    responses(
        (status = 200, description = "The updated profile", body = Profile),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No Bearer token", body = ErrorBody),
        (status = 403, description = "Invalid or expired token", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "A missing or unknown field, or a wrong type", body = ErrorBody),
        (status = 503, description = "Auth service unreachable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn preferences(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, JsonError> {
    forward(
        (state, peer, headers),
        Method::PUT,
        "/api/v1/me/preferences",
        body,
    )
    .await
}

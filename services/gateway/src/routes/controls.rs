//! The account controls of the JSON API (issue 25), served by auth and
//! proxied here, except what only the gateway can do: `GET /api/v1/me`
//! adds the account's quotas, and `DELETE /api/v1/me` removes the
//! account's jobs and files once auth has removed the account.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use contract::ErrorBody;
use contract::account::{
    AccountDeletion, LinkToken, PasswordChange, Profile, ResetCompletion, ResetRequest,
    TokenResponse,
};

use super::account::{Body, forward};
use crate::error::{ApiError, JsonError};
use crate::state::AppState;

/// `GET /api/v1/me` -> the caller's profile, with its quotas.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "account",
    responses(
        (status = 200, description = "The caller's profile: whether its address is confirmed (no mail goes to it until then), and its quotas with what is used of them", body = Profile),
        (status = 401, description = "No token", body = ErrorBody),
        (status = 403, description = "Invalid, expired or revoked token", body = ErrorBody),
        (status = 503, description = "Auth service or MongoDB unreachable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn me(
    State(state): State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, JsonError> {
    let response = forward(
        (State(state.clone()), peer, headers),
        Method::GET,
        "/api/v1/me",
        Ok(Bytes::new()),
    )
    .await?;
    if response.status() != StatusCode::OK {
        return Ok(response);
    }
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map_err(|err| ApiError::Internal(anyhow::anyhow!("reading auth's profile: {err}")))?;
    let mut profile: Profile = serde_json::from_slice(&body)
        .map_err(|err| ApiError::Internal(anyhow::anyhow!("auth's profile: {err}")))?;
    profile.quotas = Some(
        state
            .quotas
            .usage(&state.mongo, &state.leases, &profile.email)
            .await?,
    );
    Ok(Json(profile).into_response())
}

/// `POST /api/v1/me/confirmation` -> 202: the confirmation link mailed again.
#[utoipa::path(
    post,
    path = "/api/v1/me/confirmation",
    tag = "account",
    responses(
        (status = 202, description = "Mailed (nothing is mailed for a confirmed address)"),
        (status = 401, description = "No token", body = ErrorBody),
        (status = 403, description = "Invalid, expired or revoked token", body = ErrorBody),
        (status = 429, description = "A link went less than a minute ago, or five today (Retry-After)", body = ErrorBody),
        (status = 503, description = "Mail or the auth service unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn resend_confirmation(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, JsonError> {
    forward(
        (state, peer, headers),
        Method::POST,
        "/api/v1/me/confirmation",
        Ok(Bytes::new()),
    )
    .await
}

/// `POST /api/v1/confirm` `{token}` -> the profile, its address confirmed.
#[utoipa::path(
    post,
    path = "/api/v1/confirm",
    tag = "account",
    request_body = LinkToken,
    responses(
        (status = 200, description = "Confirmed", body = Profile),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "The link is unknown, used or expired", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "A missing or unknown field, or a wrong type", body = ErrorBody),
        (status = 503, description = "Auth service unreachable", body = ErrorBody),
    )
)]
pub async fn confirm(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, JsonError> {
    forward(
        (state, peer, headers),
        Method::POST,
        "/api/v1/confirm",
        body,
    )
    .await
}

/// `PUT /api/v1/me/password` -> a new token; every other one stops working.
#[utoipa::path(
    put,
    path = "/api/v1/me/password",
    tag = "account",
    request_body = PasswordChange,
    responses(
        (status = 200, description = "Changed: a fresh token (the others of the account stop working, on every gateway within seconds)", body = TokenResponse),
        (status = 400, description = "The new password is too short or too long", body = ErrorBody),
        (status = 401, description = "No token", body = ErrorBody),
        (status = 403, description = "The current password is wrong, or the token is not valid", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "A missing or unknown field, or a wrong type", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords: they count as failed sign-ins (Retry-After)", body = ErrorBody),
        (status = 503, description = "Auth service unreachable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn change_password(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, JsonError> {
    forward(
        (state, peer, headers),
        Method::PUT,
        "/api/v1/me/password",
        body,
    )
    .await
}

/// `POST /api/v1/me/sign-out-everywhere` -> 204.
#[utoipa::path(
    post,
    path = "/api/v1/me/sign-out-everywhere",
    tag = "account",
    responses(
        (status = 204, description = "Every token of the account, this one included, stops working: on auth at once, on every gateway within seconds"),
        (status = 401, description = "No token", body = ErrorBody),
        (status = 403, description = "Invalid, expired or revoked token", body = ErrorBody),
        (status = 503, description = "Auth service unreachable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn sign_out_everywhere(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, JsonError> {
    forward(
        (state, peer, headers),
        Method::POST,
        "/api/v1/me/sign-out-everywhere",
        Ok(Bytes::new()),
    )
    .await
}

/// `DELETE /api/v1/me` `{password}` -> 204: the account, its jobs, videos
/// and MP3s are gone.
#[utoipa::path(
    delete,
    path = "/api/v1/me",
    tag = "account",
    request_body = AccountDeletion,
    responses(
        (status = 204, description = "Deleted, with every job, video and MP3 of the account"),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No token", body = ErrorBody),
        (status = 403, description = "The password is wrong, or the token is not valid", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "A missing or unknown field, or a wrong type", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords: they count as failed sign-ins (Retry-After)", body = ErrorBody),
        (status = 503, description = "Auth or MongoDB unavailable (what was started is finished later by any gateway)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_me(
    State(state): State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, JsonError> {
    let claims = state.auth.validate_bearer(&headers).await?;
    crate::account_data::begin(&state.mongo, &claims.username, &claims.sub)
        .await
        .map_err(ApiError::from)?;
    let answered = forward(
        (State(state.clone()), peer, headers),
        Method::DELETE,
        "/api/v1/me",
        body,
    )
    .await;
    match answered {
        Ok(response) if response.status().is_success() => {}
        other => {
            crate::account_data::abandon(&state.mongo, &claims.username).await;
            return other;
        }
    }
    // Auth removed the account; its data goes now (or, if this fails, with
    // the next sweep of any gateway).
    crate::account_data::remove(&state.mongo, &claims.username)
        .await
        .map_err(ApiError::from)?;
    tracing::info!(user = %claims.username, "account deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/password-reset` `{email}` -> 202.
#[utoipa::path(
    post,
    path = "/api/v1/password-reset",
    tag = "account",
    request_body = ResetRequest,
    responses(
        (status = 202, description = "If the address is a confirmed account's, a link to choose a new password is on its way (the answer is the same either way)"),
        (status = 400, description = "Malformed JSON, or not an email address", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "A missing or unknown field, or a wrong type", body = ErrorBody),
        (status = 503, description = "Mail or the auth service unavailable", body = ErrorBody),
    )
)]
pub async fn request_reset(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, JsonError> {
    forward(
        (state, peer, headers),
        Method::POST,
        "/api/v1/password-reset",
        body,
    )
    .await
}

/// `POST /api/v1/password-reset/complete` `{token, new_password}` -> 204.
#[utoipa::path(
    post,
    path = "/api/v1/password-reset/complete",
    tag = "account",
    request_body = ResetCompletion,
    responses(
        (status = 204, description = "The new password holds; every token of the account stops working"),
        (status = 400, description = "Malformed JSON, or the password too short or too long", body = ErrorBody),
        (status = 404, description = "The link is unknown, used or expired", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "A missing or unknown field, or a wrong type", body = ErrorBody),
        (status = 503, description = "Auth service unreachable", body = ErrorBody),
    )
)]
pub async fn complete_reset(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, JsonError> {
    forward(
        (state, peer, headers),
        Method::POST,
        "/api/v1/password-reset/complete",
        body,
    )
    .await
}

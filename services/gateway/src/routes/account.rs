//! The account part of the JSON API, served by auth and proxied here so
//! clients talk to one host: login, registration, `me` and preferences.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;

use crate::error::ApiError;
use crate::state::AppState;

/// What every account route needs to forward a request.
type Forwarded = (State<AppState>, ConnectInfo<SocketAddr>, HeaderMap);

async fn forward(
    request: Forwarded,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (State(state), ConnectInfo(peer), headers) = request;
    let forwarded_for = crate::auth_client::forwarded_for(&headers, peer);
    state
        .auth
        .forward(method, path, &headers, &forwarded_for, body)
        .await
}

pub async fn login(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    forward((state, peer, headers), Method::POST, "/api/v1/login", body).await
}

pub async fn register(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    forward(
        (state, peer, headers),
        Method::POST,
        "/api/v1/register",
        body,
    )
    .await
}

pub async fn me(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    forward(
        (state, peer, headers),
        Method::GET,
        "/api/v1/me",
        Bytes::new(),
    )
    .await
}

/// `PUT /api/v1/me/preferences {"email_notifications": bool}`.
pub async fn preferences(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    forward(
        (state, peer, headers),
        Method::PUT,
        "/api/v1/me/preferences",
        body,
    )
    .await
}

//! `POST /login`: HTTP Basic credentials in, the raw JWT out.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header::AUTHORIZATION};

use crate::error::ApiError;
use crate::state::AppState;

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<String, ApiError> {
    let authorization = headers
        .get(AUTHORIZATION)
        .filter(|value| value.as_bytes().starts_with(b"Basic "))
        .ok_or(ApiError::MissingCredentials)?;
    let forwarded_for = crate::auth_client::forwarded_for(&headers, peer);
    state.auth.login(authorization, &forwarded_for).await
}

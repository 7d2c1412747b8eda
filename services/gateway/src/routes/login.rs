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
        // Schemes are case-insensitive (RFC 9110), as auth reads them.
        .filter(|value| {
            value
                .as_bytes()
                .get(..6)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"basic "))
        })
        .ok_or(ApiError::MissingCredentials)?;
    let forwarded_for = state.forwarded_for(peer, &headers);
    state.auth.login(authorization, &forwarded_for).await
}

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
) -> Result<axum::response::Response, ApiError> {
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
    let device = headers.get(crate::auth_client::DEVICE_TOKEN_HEADER);
    let (token, device) = state
        .auth
        .login(authorization, device, &forwarded_for)
        .await?;
    let mut response = axum::response::IntoResponse::into_response(token);
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    // The body stays the raw token (the original contract).
    if let Some(device) = device {
        response
            .headers_mut()
            .insert(crate::auth_client::DEVICE_TOKEN_HEADER, device);
    }
    Ok(response)
}

//! `POST /login`: HTTP Basic credentials in, the raw JWT out.

use axum::extract::State;
use axum::http::{HeaderMap, header::AUTHORIZATION};

use crate::error::ApiError;
use crate::state::AppState;

pub async fn login(State(state): State<AppState>, headers: HeaderMap) -> Result<String, ApiError> {
    let authorization = headers
        .get(AUTHORIZATION)
        .filter(|value| value.as_bytes().starts_with(b"Basic "))
        .ok_or(ApiError::MissingCredentials)?;
    state.auth.login(authorization).await
}

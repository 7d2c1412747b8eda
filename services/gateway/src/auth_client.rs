//! Talks to the auth service: forwards logins and validates tokens.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header::AUTHORIZATION};
use serde::Deserialize;

use crate::error::ApiError;

/// The claims the gateway needs from a validated token.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The user's email address; owner of everything they upload.
    pub username: String,
    /// Admins may download anyone's files.
    #[serde(default)]
    pub admin: bool,
}

/// HTTP client for the auth service.
#[derive(Debug, Clone)]
pub struct AuthClient {
    http: reqwest::Client,
    base_url: String,
}

impl AuthClient {
    pub fn new(base_url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Forwards HTTP Basic credentials; returns the raw JWT, or auth's own
    /// status and body (`invalid credentials`, ...).
    pub async fn login(&self, authorization: &HeaderValue) -> Result<String, ApiError> {
        let response = self
            .http
            .post(format!("{}/login", self.base_url))
            .header(AUTHORIZATION, authorization)
            .send()
            .await
            .map_err(|_| ApiError::Unavailable("auth service"))?;
        passthrough(response).await
    }

    /// Validates the caller's token (any scheme word before it, as the
    /// original accepted). No header -> 401; a token auth rejects -> 403.
    pub async fn validate(&self, headers: &HeaderMap) -> Result<Claims, ApiError> {
        let authorization = headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::MissingCredentials)?;
        let response = self
            .http
            .post(format!("{}/validate", self.base_url))
            .header(AUTHORIZATION, authorization)
            .send()
            .await
            .map_err(|_| ApiError::Unavailable("auth service"))?;
        match response.status() {
            status if status.is_success() => response
                .json::<Claims>()
                .await
                .map_err(|err| ApiError::Internal(err.into())),
            reqwest::StatusCode::UNAUTHORIZED => Err(ApiError::MissingCredentials),
            status if status.is_client_error() => Err(ApiError::NotAuthorized),
            _ => Err(ApiError::Unavailable("auth service")),
        }
    }

    /// True when auth answers its health check (for `/readyz`).
    pub async fn is_reachable(&self) -> bool {
        self.http
            .get(format!("{}/healthz", self.base_url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

async fn passthrough(response: reqwest::Response) -> Result<String, ApiError> {
    let status = StatusCode::from_u16(response.status().as_u16())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = response
        .text()
        .await
        .map_err(|_| ApiError::Unavailable("auth service"))?;
    if status.is_success() {
        Ok(body)
    } else if status.is_server_error() {
        Err(ApiError::Unavailable("auth service"))
    } else {
        Err(ApiError::Upstream(status, body))
    }
}

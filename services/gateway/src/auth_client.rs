//! Talks to the auth service: forwards logins and validates tokens.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header::AUTHORIZATION, header::RETRY_AFTER};

use contract::account::Profile;

use crate::claims::Claims;
use crate::error::ApiError;
use crate::preferences::EmailPreferences;
use crate::revocations::Revocations;
use crate::token::{TokenVerifier, Verdict};

const X_FORWARDED_FOR: &str = "x-forwarded-for";
/// Where a classic client sends its device token and gets it back.
pub const DEVICE_TOKEN_HEADER: &str = "x-device-token";

/// HTTP client for the auth service.
#[derive(Debug, Clone)]
pub struct AuthClient {
    http: reqwest::Client,
    base_url: String,
    /// Checks EdDSA tokens locally with auth's published keys.
    verifier: TokenVerifier,
    /// The email preferences auth's answers told.
    preferences: EmailPreferences,
    /// Tokens revoked before they expired, as auth's feed says.
    revocations: Revocations,
}

impl AuthClient {
    pub fn new(base_url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Self {
            verifier: TokenVerifier::new(http.clone(), base_url),
            preferences: EmailPreferences::default(),
            revocations: Revocations::default(),
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// What this gateway knows of auth's token revocations.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Follows auth's revocations until `stopping` (spawn it once).
    pub fn follow_revocations(
        &self,
        stopping: common::shutdown::CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.revocations
            .clone()
            .follow(self.http.clone(), self.base_url.clone(), stopping)
    }

    /// Loads auth's published keys ahead of the first request.
    pub async fn prefetch_keys(&self) {
        self.verifier.prefetch().await;
    }

    /// Forwards HTTP Basic credentials (and the client's device token);
    /// returns the raw JWT and the device token to keep, or auth's own
    /// status and body (`invalid credentials`, ...).
    pub async fn login(
        &self,
        authorization: &HeaderValue,
        device: Option<&HeaderValue>,
        forwarded_for: &str,
    ) -> Result<(String, Option<HeaderValue>), ApiError> {
        let mut request = self
            .http
            .post(format!("{}/login", self.base_url))
            .header(AUTHORIZATION, authorization)
            .header(X_FORWARDED_FOR, forwarded_for);
        if let Some(device) = device {
            request = request.header(DEVICE_TOKEN_HEADER, device);
        }
        let response = request
            .send()
            .await
            .map_err(|_| ApiError::Unavailable("auth service"))?;
        let device = response.headers().get(DEVICE_TOKEN_HEADER).cloned();
        Ok((passthrough(response).await?, device))
    }

    /// [`AuthClient::validate`] for the JSON API, which takes only
    /// `Authorization: Bearer <token>` (the scheme in any case), as auth's
    /// own `/api/v1` routes do; another scheme is no credentials (401).
    pub async fn validate_bearer(&self, headers: &HeaderMap) -> Result<Claims, ApiError> {
        let bearer = headers.get(AUTHORIZATION).is_some_and(|value| {
            value
                .as_bytes()
                .get(..7)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        });
        if !bearer {
            return Err(ApiError::MissingCredentials);
        }
        self.validate(headers).await
    }

    /// Validates the caller's token (any scheme word before it, as the
    /// original accepted: the classic routes). No header -> 401; a bad token -> 403. Tokens are
    /// verified locally with auth's published keys; when auth publishes
    /// none (HS256 deployments), auth's `POST /validate` decides.
    pub async fn validate(&self, headers: &HeaderMap) -> Result<Claims, ApiError> {
        let authorization = headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::MissingCredentials)?;
        // As auth reads it: what follows the first space; nothing there is
        // as good as no credentials, bytes that are not text are a bad token.
        let value = authorization.as_bytes();
        let token = value
            .iter()
            .position(|&byte| byte == b' ')
            .map(|space| value[space + 1..].trim_ascii())
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::MissingCredentials)?;
        let token = std::str::from_utf8(token).map_err(|_| ApiError::NotAuthorized)?;
        match self.verifier.verify(token).await {
            Verdict::Valid(claims) if self.revocations.is_revoked(&claims) => {
                return Err(ApiError::NotAuthorized);
            }
            Verdict::Valid(claims) => return Ok(claims),
            Verdict::Invalid => return Err(ApiError::NotAuthorized),
            Verdict::AskAuth => {}
        }
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

    /// Whether to mail the caller about a job: wanted (auth keeps the
    /// preference with the user) and the address confirmed by its owner. As
    /// remembered, else asked of auth; unknown means no mail.
    pub async fn wants_email(&self, claims: &Claims, headers: &HeaderMap) -> bool {
        if let Some(wants) = self.preferences.get(&claims.username) {
            return wants;
        }
        let Some(authorization) = headers.get(AUTHORIZATION) else {
            return true;
        };
        let response = self
            .http
            .get(format!("{}/api/v1/me", self.base_url))
            .header(AUTHORIZATION, authorization)
            .send()
            .await;
        let profile = match response {
            Ok(response) if response.status().is_success() => response.json::<Profile>().await.ok(),
            _ => None,
        };
        match profile {
            Some(profile) => {
                self.remember(&profile);
                wants_mail(&profile)
            }
            // Nothing is mailed to an address not known to be confirmed:
            // the desktop app and live events still tell the user.
            None => {
                tracing::warn!(user = %claims.username, "auth did not say whether to mail this user; no mail for this job");
                false
            }
        }
    }

    /// Forwards a JSON API request to auth as it is (method, Authorization,
    /// body) and hands back auth's status, content type and body.
    pub async fn forward(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &HeaderMap,
        forwarded_for: &str,
        body: bytes::Bytes,
    ) -> Result<axum::response::Response, ApiError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .header(X_FORWARDED_FOR, forwarded_for)
            .body(body);
        for name in [AUTHORIZATION, axum::http::header::CONTENT_TYPE] {
            if let Some(value) = headers.get(&name) {
                request = request.header(name, value);
            }
        }
        let response = request
            .send()
            .await
            .map_err(|_| ApiError::Unavailable("auth service"))?;
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let content_type = response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .cloned();
        let retry_after = response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .cloned();
        let body = response
            .bytes()
            .await
            .map_err(|_| ApiError::Unavailable("auth service"))?;
        // A profile (`/me`, `/me/preferences`, a confirmation) says whether
        // to mail the user.
        if status.is_success()
            && (path.starts_with("/api/v1/me") || path == "/api/v1/confirm")
            && let Ok(profile) = serde_json::from_slice::<Profile>(&body)
        {
            self.remember(&profile);
        }
        let mut out = axum::response::Response::new(axum::body::Body::from(body));
        *out.status_mut() = status;
        if let Some(value) = content_type {
            out.headers_mut()
                .insert(axum::http::header::CONTENT_TYPE, value);
        }
        if let Some(value) = retry_after {
            out.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        Ok(out)
    }

    /// Remembers whether to mail `profile`'s owner, once its address is
    /// confirmed: an unconfirmed one is asked again at each upload, so the
    /// first upload after the owner confirms through any gateway is mailed.
    fn remember(&self, profile: &Profile) {
        if profile.email_confirmed {
            self.preferences
                .remember(&profile.email, wants_mail(profile));
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

/// Mail about jobs goes to a user who wants it, at an address its owner
/// confirmed: nobody else's inbox receives what a stranger uploaded.
fn wants_mail(profile: &Profile) -> bool {
    profile.email_notifications && profile.email_confirmed
}

async fn passthrough(response: reqwest::Response) -> Result<String, ApiError> {
    let status = StatusCode::from_u16(response.status().as_u16())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let retry_after = response.headers().get(RETRY_AFTER).cloned();
    let body = response
        .text()
        .await
        .map_err(|_| ApiError::Unavailable("auth service"))?;
    if status.is_success() {
        Ok(body)
    } else if status.is_server_error() {
        Err(ApiError::Unavailable("auth service"))
    } else {
        Err(ApiError::Upstream(status, body, retry_after))
    }
}

//! Who is calling: the claims of a validated token, taken by handlers as
//! extractors, so a route names its caller in its signature instead of
//! validating headers itself. [`Bearer`] is the JSON API's
//! (`Authorization: Bearer <token>`, JSON errors), [`Caller`] the classic
//! routes' (any scheme word, plain-text errors, as the original took it).

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use serde::Deserialize;

use crate::error::{ApiError, JsonError};
use crate::state::AppState;

/// The claims the gateway needs from a validated token.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The user's email address; owner of everything they upload.
    pub username: String,
    /// Admins may download anyone's files.
    #[serde(default)]
    pub admin: bool,
    /// The user's id at auth (empty in tokens of the original system).
    #[serde(default)]
    pub sub: String,
    /// The user's token version when it was issued: below the version auth
    /// last revoked for the user, the token no longer works.
    #[serde(default)]
    pub ver: i64,
    /// When the token expires (seconds since the epoch), where it says: a
    /// live event stream opened with it ends then.
    #[serde(default)]
    pub exp: Option<i64>,
}

/// The caller of a `/api/v1` route.
#[derive(Debug, Clone)]
pub struct Bearer(pub Claims);

/// The caller of a classic route.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl<S> FromRequestParts<S> for Bearer
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = JsonError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        Ok(Bearer(state.auth.validate_bearer(&parts.headers).await?))
    }
}

impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        Ok(Caller(state.auth.validate(&parts.headers).await?))
    }
}

//! The JSON API under `/api/v1`: login, registration, and the caller's own
//! account (`/me`, `/me/preferences`). Errors are `{"error": {"code",
//! "message"}}`, including malformed bodies.

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::accounts;
use crate::client_address::ClientAddress;
use crate::error::{Error, JsonError};
use crate::state::AppState;
use crate::store::User;

use contract::account::{
    AccountDeletion, Credentials, LinkToken, NewAccount, PasswordChange, Preferences, Profile,
    Registered, RegistrationStatus, ResetCompletion, ResetRequest, TokenResponse,
};

use crate::accounts::SignedIn;
use crate::controls;

/// A user as they may see themselves.
fn profile(user: User) -> Profile {
    Profile {
        email: user.email,
        admin: user.is_admin,
        email_notifications: user.email_notifications,
        email_confirmed: user.email_confirmed,
        created_at: rfc3339(user.created_at),
        quotas: None,
    }
}

/// A token answer nobody may cache.
fn token_response(signed_in: SignedIn) -> Response {
    let expires_at = i64::try_from(signed_in.token.expires_at).unwrap_or(i64::MAX);
    let mut response = Json(TokenResponse {
        token: signed_in.token.token,
        expires_at: rfc3339(expires_at),
        device_token: Some(signed_in.device_token),
    })
    .into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /api/v1/login` `{email, password, device_token?}` -> `{token,
/// expires_at, device_token}`.
pub async fn login(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(credentials): ApiJson<Credentials>,
) -> Result<Response, JsonError> {
    let device = credentials
        .device_token
        .as_ref()
        .map(|token| token.expose());
    let signed_in = accounts::login(
        &state,
        &credentials.email,
        credentials.password,
        client,
        device,
    )
    .await?;
    Ok(token_response(signed_in))
}

/// `POST /api/v1/me/confirmation` -> 202: the confirmation link mailed again
/// (at most one a minute, five a day).
pub async fn resend_confirmation(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, JsonError> {
    controls::resend_confirmation(&state, bearer_token(&headers)?).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /api/v1/confirm` `{token}` -> the profile, its address confirmed.
pub async fn confirm(
    State(state): State<AppState>,
    ApiJson(link): ApiJson<LinkToken>,
) -> Result<Json<Profile>, JsonError> {
    Ok(Json(profile(controls::confirm(&state, &link.token).await?)))
}

/// `PUT /api/v1/me/password` `{current_password, new_password}` -> a new
/// token (every other one of the account ends).
pub async fn change_password(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    ApiJson(change): ApiJson<PasswordChange>,
) -> Result<Response, JsonError> {
    let signed_in = controls::change_password(
        &state,
        bearer_token(&headers)?,
        change.current_password,
        change.new_password,
        client,
    )
    .await?;
    Ok(token_response(signed_in))
}

/// `POST /api/v1/me/sign-out-everywhere` -> 204.
pub async fn sign_out_everywhere(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, JsonError> {
    controls::sign_out_everywhere(&state, bearer_token(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/me` `{password}` -> the deleted profile (the gateway
/// removes the account's jobs and files and answers 204).
pub async fn delete_account(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    ApiJson(deletion): ApiJson<AccountDeletion>,
) -> Result<Json<Profile>, JsonError> {
    let user = controls::delete(&state, bearer_token(&headers)?, deletion.password, client).await?;
    Ok(Json(profile(user)))
}

/// `POST /api/v1/password-reset` `{email}` -> 202 whether or not the
/// address has an account.
pub async fn request_reset(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ResetRequest>,
) -> Result<StatusCode, JsonError> {
    controls::request_reset(&state, &request.email).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /api/v1/password-reset/complete` `{token, new_password}` -> 204.
pub async fn complete_reset(
    State(state): State<AppState>,
    ApiJson(completion): ApiJson<ResetCompletion>,
) -> Result<StatusCode, JsonError> {
    controls::complete_reset(&state, &completion.token, completion.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revocations since a moment, for the gateways' token checks.
#[derive(serde::Deserialize)]
pub struct Since {
    #[serde(default)]
    since_ms: i64,
}

/// `GET /internal/token-revocations?since_ms=N` -> `{revocations, now_ms}`:
/// every user whose tokens below some version stopped working at or after
/// `since_ms`, so that gateways checking tokens locally learn it within
/// their poll. Internal: the Ingress routes only the gateway.
pub async fn revocations(
    State(state): State<AppState>,
    axum::extract::Query(since): axum::extract::Query<Since>,
) -> Result<Json<serde_json::Value>, JsonError> {
    let now_ms = crate::store::unix_now_ms();
    let keep_ms =
        i64::try_from(state.tokens.ttl_secs().saturating_add(60) * 1000).unwrap_or(i64::MAX);
    let revocations = state
        .store
        .revocations_since(since.since_ms, keep_ms)
        .await?;
    Ok(Json(
        serde_json::json!({ "revocations": revocations, "now_ms": now_ms }),
    ))
}

/// `GET /api/v1/register` -> `{enabled}`: lets a client offer "create an
/// account" only where it would work, instead of a link that ends in 403.
pub async fn registration(State(state): State<AppState>) -> Json<RegistrationStatus> {
    Json(RegistrationStatus {
        enabled: state.allow_registration,
    })
}

/// `POST /api/v1/register` `{email, password}` -> 201, the new profile
/// (address unconfirmed) and whether the confirmation link was mailed.
pub async fn register(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(account): ApiJson<NewAccount>,
) -> Result<(StatusCode, Json<Registered>), JsonError> {
    let (user, confirmation_sent) =
        accounts::register(&state, &account.email, account.password, client).await?;
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            profile: profile(user),
            confirmation_sent,
        }),
    ))
}

/// `GET /api/v1/me` with a Bearer token -> the caller's profile.
pub async fn me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Profile>, JsonError> {
    let user = accounts::current_user(&state, bearer_token(&headers)?).await?;
    Ok(Json(profile(user)))
}

/// `PUT /api/v1/me/preferences` `{email_notifications}` -> the updated
/// profile.
pub async fn set_preferences(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(preferences): ApiJson<Preferences>,
) -> Result<Json<Profile>, JsonError> {
    let user = accounts::current_user(&state, bearer_token(&headers)?).await?;
    let user = state
        .store
        .set_email_notifications(user.id, preferences.email_notifications)
        .await
        .map_err(|err| match err {
            Error::UnknownUser => Error::NotAuthorized,
            other => other,
        })?;
    tracing::info!(user = %user.email, email_notifications = user.email_notifications, "preferences changed");
    Ok(Json(profile(user)))
}

/// Any path no route matches.
pub async fn not_found() -> JsonError {
    JsonError(Error::NotFound)
}

/// The token of `Authorization: Bearer <token>`; anything else is
/// [`Error::MissingCredentials`].
fn bearer_token(headers: &HeaderMap) -> Result<&str, Error> {
    let value = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or(Error::MissingCredentials)?;
    let (scheme, token) = value.split_once(' ').ok_or(Error::MissingCredentials)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Error::MissingCredentials);
    }
    Ok(token)
}

/// RFC 3339 in UTC (`2026-01-31T12:00:00Z`) for unix seconds.
fn rfc3339(unix_secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix_secs.to_string())
}

/// `axum::Json`, whose refusals (bad JSON, missing fields, wrong content
/// type, too large) are answered in the API's JSON error shape.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = JsonError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(JsonError(Error::BadRequest {
                status: rejection.status(),
                message: rejection.body_text(),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("value"));
        headers
    }

    #[test]
    fn only_bearer_tokens_are_taken() {
        assert_eq!(
            bearer_token(&with_authorization("Bearer abc")).ok(),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&with_authorization("bearer  abc ")).ok(),
            Some("abc")
        );
        for value in ["Basic abc", "Bearer", "Bearer  ", "abc"] {
            assert!(
                matches!(
                    bearer_token(&with_authorization(value)),
                    Err(Error::MissingCredentials)
                ),
                "{value}"
            );
        }
        assert!(bearer_token(&HeaderMap::new()).is_err());
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn credentials_never_print_the_password() {
        let credentials: Credentials =
            serde_json::from_str(r#"{"email":"a@b.c","password":"hunter2hunter2"}"#).expect("json");
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }
}

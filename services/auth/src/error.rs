//! The one error type of the crate, and how each error becomes an HTTP
//! response: as plain text on the classic routes (`missing credentials`,
//! `invalid credentials`, `not authorized` are byte-exact contracts with the
//! gateway and the original clients), as `{"error": {"code", "message"}}`
//! under `/api/v1` ([`JsonError`]). Server-side failures are logged in full
//! and answered with a bare 500.

use std::time::Duration;

use axum::Json;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::password::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};

/// Everything that can go wrong in the auth service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable `Authorization` header.
    #[error("missing credentials")]
    MissingCredentials,
    /// Unknown email, wrong password or disabled account (deliberately
    /// indistinguishable).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The token is invalid, expired, forged or not a token at all (or its
    /// user is gone or disabled).
    #[error("not authorized")]
    NotAuthorized,
    /// Too many failed logins (or registrations) for this email or address.
    #[error("too many attempts, retry later")]
    RateLimited {
        /// When the limiter lets the next attempt through.
        retry_after: Duration,
    },
    /// A user with this email already exists.
    #[error("email already registered")]
    EmailTaken,
    /// No user has this email (operator commands, a deleted account).
    #[error("no such user")]
    UnknownUser,
    /// Not something we accept as an email address.
    #[error("invalid email address")]
    InvalidEmail,
    /// Too short or too long.
    #[error("the password must have {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")]
    InvalidPassword,
    /// No route for this path.
    #[error("no such endpoint")]
    NotFound,
    /// `ALLOW_REGISTRATION=false`.
    #[error("registration is disabled")]
    RegistrationDisabled,
    /// A request body we cannot read (bad JSON, wrong content type, too
    /// big); the status comes from the extractor that refused it.
    #[error("{message}")]
    BadRequest { status: StatusCode, message: String },
    /// The database URL names no backend we support (only the scheme is
    /// kept: the rest of the URL may hold a password).
    #[error(
        "unsupported database URL scheme `{0}` (expected sqlite:, postgres:, postgresql:, mysql: or mariadb:)"
    )]
    UnsupportedDatabase(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("password hashing: {0}")]
    PasswordHash(#[from] argon2::password_hash::Error),
    #[error("argon2 parameters: {0}")]
    Argon2(#[from] argon2::Error),
    #[error("token signing: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
    #[error("blocking task failed: {0}")]
    Blocking(#[from] tokio::task::JoinError),
    /// The current password given to change it (or delete the account) is
    /// not the account's.
    #[error("the current password is wrong")]
    WrongPassword,
    /// A mailed link that is unknown, used, expired or for something else.
    #[error("this link is not valid any more: ask for a new one")]
    InvalidLink,
    /// Mail cannot be sent (no SMTP server configured, or it refused).
    #[error("mail cannot be sent right now, try again later")]
    MailUnavailable,
    /// Something the service needed is missing (a random source).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::MissingCredentials | Error::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Error::NotAuthorized | Error::RegistrationDisabled => StatusCode::FORBIDDEN,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::EmailTaken => StatusCode::CONFLICT,
            // A mailed link that is unknown, used or expired is not found.
            Error::UnknownUser | Error::NotFound | Error::InvalidLink => StatusCode::NOT_FOUND,
            Error::InvalidEmail | Error::InvalidPassword => StatusCode::BAD_REQUEST,
            Error::WrongPassword => StatusCode::FORBIDDEN,
            Error::MailUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Error::BadRequest { status, .. } => *status,
            Error::UnsupportedDatabase(_)
            | Error::Database(_)
            | Error::Migrate(_)
            | Error::PasswordHash(_)
            | Error::Argon2(_)
            | Error::Token(_)
            | Error::Blocking(_)
            | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::MissingCredentials => "missing_credentials",
            Error::InvalidCredentials => "invalid_credentials",
            Error::NotAuthorized => "not_authorized",
            Error::RateLimited { .. } => "rate_limited",
            Error::EmailTaken => "email_taken",
            Error::UnknownUser => "unknown_user",
            Error::InvalidEmail => "invalid_email",
            Error::InvalidPassword => "invalid_password",
            Error::RegistrationDisabled => "registration_disabled",
            Error::NotFound => "not_found",
            Error::BadRequest { .. } => "bad_request",
            Error::WrongPassword => "wrong_password",
            Error::InvalidLink => "invalid_link",
            Error::MailUnavailable => "mail_unavailable",
            _ => "internal",
        }
    }

    /// The client-facing message: the error itself, except for server-side
    /// failures, whose details are logged here and never sent.
    fn public_message(&self) -> String {
        if self.status().is_server_error() && !matches!(self, Error::MailUnavailable) {
            tracing::error!(error = %self, "request failed");
            "internal server error".to_owned()
        } else {
            self.to_string()
        }
    }

    /// `Retry-After` in whole seconds, rounded up (never 0).
    fn retry_after(&self) -> Option<HeaderValue> {
        let Error::RateLimited { retry_after } = self else {
            return None;
        };
        let mut secs = retry_after.as_secs();
        if retry_after.subsec_nanos() > 0 || secs == 0 {
            secs += 1;
        }
        Some(HeaderValue::from(secs))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = self.retry_after();
        let mut response = (status, self.public_message()).into_response();
        if let Some(value) = retry_after {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
        response
    }
}

/// An [`Error`] answered as JSON: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug)]
pub struct JsonError(pub Error);

impl From<Error> for JsonError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let retry_after = self.0.retry_after();
        let body = contract::ErrorBody::new(self.0.code(), self.0.public_message());
        let mut response = (status, Json(body)).into_response();
        if let Some(value) = retry_after {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    async fn body_of(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let bytes = to_bytes(response.into_body(), 1024).await.expect("body");
        (status, String::from_utf8(bytes.to_vec()).expect("utf-8"))
    }

    #[tokio::test]
    async fn client_errors_have_their_contract_bodies() {
        assert_eq!(
            body_of(Error::MissingCredentials.into_response()).await,
            (StatusCode::UNAUTHORIZED, "missing credentials".to_owned())
        );
        assert_eq!(
            body_of(Error::InvalidCredentials.into_response()).await,
            (StatusCode::UNAUTHORIZED, "invalid credentials".to_owned())
        );
        assert_eq!(
            body_of(Error::NotAuthorized.into_response()).await,
            (StatusCode::FORBIDDEN, "not authorized".to_owned())
        );
    }

    #[tokio::test]
    async fn server_errors_hide_their_details() {
        let (status, body) =
            body_of(Error::Database(sqlx::Error::PoolTimedOut).into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, "internal server error");

        let (status, body) =
            body_of(JsonError(Error::Database(sqlx::Error::PoolTimedOut)).into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "internal", "message": "internal server error"}})
        );
    }

    #[tokio::test]
    async fn api_errors_are_json_with_a_code_and_a_message() {
        let (status, body) = body_of(JsonError(Error::EmailTaken).into_response()).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "email_taken", "message": "email already registered"}})
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        for (wait, expected) in [
            (Duration::from_millis(1), "1"),
            (Duration::ZERO, "1"),
            (Duration::from_secs(12), "12"),
            (Duration::from_millis(11_200), "12"),
        ] {
            for response in [
                Error::RateLimited { retry_after: wait }.into_response(),
                JsonError(Error::RateLimited { retry_after: wait }).into_response(),
            ] {
                assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
                assert_eq!(response.headers()[RETRY_AFTER], expected, "{wait:?}");
            }
        }
    }
}

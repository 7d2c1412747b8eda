//! The one error type of the crate, and how each error becomes an HTTP
//! response. The client-facing bodies (`missing credentials`, `invalid
//! credentials`, `not authorized`) are byte-exact contracts with the gateway
//! and the original clients; server-side failures are logged in full and
//! answered with a bare 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

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
    /// The token is invalid, expired, forged or not a token at all.
    #[error("not authorized")]
    NotAuthorized,
    /// A user with this email already exists.
    #[error("email already registered")]
    EmailTaken,
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
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::MissingCredentials | Error::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Error::NotAuthorized => StatusCode::FORBIDDEN,
            Error::EmailTaken => StatusCode::CONFLICT,
            Error::UnsupportedDatabase(_)
            | Error::Database(_)
            | Error::Migrate(_)
            | Error::PasswordHash(_)
            | Error::Argon2(_)
            | Error::Token(_)
            | Error::Blocking(_) => {
                tracing::error!(error = %self, "request failed");
                return (StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
                    .into_response();
            }
        };
        (status, self.to_string()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    async fn body_of(error: Error) -> (StatusCode, String) {
        let response = error.into_response();
        let status = response.status();
        let bytes = to_bytes(response.into_body(), 1024).await.expect("body");
        (status, String::from_utf8(bytes.to_vec()).expect("utf-8"))
    }

    #[tokio::test]
    async fn client_errors_have_their_contract_bodies() {
        assert_eq!(
            body_of(Error::MissingCredentials).await,
            (StatusCode::UNAUTHORIZED, "missing credentials".to_owned())
        );
        assert_eq!(
            body_of(Error::InvalidCredentials).await,
            (StatusCode::UNAUTHORIZED, "invalid credentials".to_owned())
        );
        assert_eq!(
            body_of(Error::NotAuthorized).await,
            (StatusCode::FORBIDDEN, "not authorized".to_owned())
        );
    }

    #[tokio::test]
    async fn server_errors_hide_their_details() {
        let (status, body) = body_of(Error::Database(sqlx::Error::PoolTimedOut)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, "internal server error");
    }
}

//! The gateway's one error type. The classic routes answer with the original
//! system's plain-text bodies and status codes, which clients depend on.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing credentials")]
    MissingCredentials,
    #[error("not authorized")]
    NotAuthorized,
    /// A status and body passed through from the auth service (login).
    #[error("{1}")]
    Upstream(StatusCode, String),
    #[error("exactly 1 file required")]
    ExactlyOneFile,
    #[error("fid is required")]
    FidRequired,
    #[error("not found")]
    NotFound,
    #[error("file too large: the limit is {0} bytes")]
    TooLarge(u64),
    #[error("{0}")]
    BadRequest(String),
    /// A dependency is down; the message names it, never its internals.
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    #[error("internal server error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingCredentials => StatusCode::UNAUTHORIZED,
            Self::NotAuthorized => StatusCode::FORBIDDEN,
            Self::Upstream(status, _) => *status,
            Self::ExactlyOneFile | Self::FidRequired | Self::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(err) => tracing::error!(error = ?err, "request failed"),
            Self::Unavailable(what) => tracing::warn!(dependency = what, "dependency unavailable"),
            _ => {}
        }
        (status, self.to_string()).into_response()
    }
}

impl From<common::Error> for ApiError {
    fn from(err: common::Error) -> Self {
        match err {
            common::Error::Mongo(_) => Self::Unavailable("storage (MongoDB)"),
            common::Error::Amqp(_) | common::Error::NotConfirmed => {
                Self::Unavailable("message broker")
            }
            other => Self::Internal(other.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_strings_and_codes_are_the_originals() {
        let cases = [
            (ApiError::MissingCredentials, 401, "missing credentials"),
            (ApiError::NotAuthorized, 403, "not authorized"),
            (ApiError::ExactlyOneFile, 400, "exactly 1 file required"),
            (ApiError::FidRequired, 400, "fid is required"),
            (
                ApiError::Internal(anyhow::anyhow!("secret detail")),
                500,
                "internal server error",
            ),
        ];
        for (err, code, body) in cases {
            assert_eq!(err.status().as_u16(), code);
            assert_eq!(err.to_string(), body);
        }
    }
}

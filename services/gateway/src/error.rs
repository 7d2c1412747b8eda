//! The gateway's one error type. The classic routes answer with the original
//! system's plain-text bodies and status codes, which clients depend on.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use contract::ErrorBody;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing credentials")]
    MissingCredentials,
    #[error("not authorized")]
    NotAuthorized,
    /// A status and body passed through from the auth service (login),
    /// with its `Retry-After` when it rate-limited the caller.
    #[error("{1}")]
    Upstream(StatusCode, String, Option<HeaderValue>),
    #[error("exactly 1 file required")]
    ExactlyOneFile,
    #[error("fid is required")]
    FidRequired,
    #[error("not found")]
    NotFound,
    /// The path exists under `/api/v1`, but not for this method (405, with
    /// `Allow`).
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("file too large: the limit is {0} bytes")]
    TooLarge(u64),
    /// A JSON request body over the limit (the account routes).
    #[error("request body too large: the limit is {0} bytes")]
    BodyTooLarge(usize),
    /// The body stopped coming, or came too slowly to be a real upload.
    #[error("request timeout: {0}")]
    RequestTimeout(String),
    /// The upload is clearly not media (text, an image, an archive); names what it is.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(&'static str),
    #[error("{0}")]
    BadRequest(String),
    /// Conversion options that cannot be used; the message names the field.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The request does not fit the resource's current state (retrying a
    /// job that has not failed, the MP3 of an unfinished job).
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` names another version of the file.
    #[error("precondition failed")]
    PreconditionFailed,
    /// A `Range` outside the file; carries the file's length.
    #[error("range not satisfiable")]
    RangeNotSatisfiable(u64),
    /// A per-user limit on jobs (in flight, per hour) or live streams is
    /// reached: 429 with `Retry-After` (seconds).
    #[error("{message}")]
    Quota { message: String, retry_after: u64 },
    /// The user's stored bytes are at their limit: 507.
    #[error("your storage is full ({used} of {limit} bytes): delete some jobs to make room")]
    StorageFull { used: u64, limit: u64 },
    /// This upload would take the user past their storage limit: 413.
    #[error(
        "the file is larger than the {0} bytes left in your storage: delete some jobs to make room"
    )]
    OverStorageQuota(u64),
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
            Self::Upstream(status, ..) => *status,
            Self::ExactlyOneFile
            | Self::FidRequired
            | Self::BadRequest(_)
            | Self::InvalidOptions(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge(_) | Self::BodyTooLarge(_) | Self::OverStorageQuota(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::Quota { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::StorageFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `code` of the JSON rendering.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingCredentials => "missing_credentials",
            Self::NotAuthorized => "not_authorized",
            Self::Upstream(..) => "upstream",
            Self::ExactlyOneFile => "exactly_one_file",
            Self::FidRequired => "fid_required",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::TooLarge(_) | Self::BodyTooLarge(_) => "too_large",
            Self::Quota { .. } => "quota",
            Self::StorageFull { .. } => "storage_full",
            Self::OverStorageQuota(_) => "over_storage_quota",
            Self::RequestTimeout(_) => "request_timeout",
            Self::PreconditionFailed => "precondition_failed",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::BadRequest(_) => "bad_request",
            Self::InvalidOptions(_) => "invalid_options",
            Self::Conflict(_) => "conflict",
            Self::RangeNotSatisfiable(_) => "range_not_satisfiable",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn log(&self) {
        match self {
            Self::Internal(err) => tracing::error!(error = ?err, "request failed"),
            Self::Unavailable(what) => tracing::warn!(dependency = what, "dependency unavailable"),
            _ => {}
        }
    }

    /// Headers every rendering carries (`Content-Range` on a 416).
    fn add_headers(&self, response: &mut Response) {
        if let Self::RangeNotSatisfiable(length) = self
            && let Ok(value) = HeaderValue::from_str(&format!("bytes */{length}"))
        {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        if let Self::Quota { retry_after, .. } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if let Self::Upstream(_, _, Some(retry_after)) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after.clone());
        }
    }

    /// `{"error": {"code", "message"}}` with the same status, for the
    /// `/api/v1` routes.
    pub fn into_json_response(self) -> Response {
        self.log();
        let body = ErrorBody::new(self.code(), self.to_string());
        let mut response = (self.status(), Json(body)).into_response();
        self.add_headers(&mut response);
        response
    }
}

/// The classic routes' rendering: the original plain-text bodies.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let mut response = (self.status(), self.to_string()).into_response();
        self.add_headers(&mut response);
        response
    }
}

/// An [`ApiError`] rendered as JSON: what `/api/v1` handlers return.
#[derive(Debug)]
pub struct JsonError(pub ApiError);

impl<E: Into<ApiError>> From<E> for JsonError {
    fn from(err: E) -> Self {
        JsonError(err.into())
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        self.0.into_json_response()
    }
}

impl From<common::Error> for ApiError {
    fn from(err: common::Error) -> Self {
        match err {
            common::Error::Mongo(err) => {
                tracing::warn!(error = %err, "a MongoDB request failed");
                Self::Unavailable("storage (MongoDB)")
            }
            err @ (common::Error::Amqp(_)
            | common::Error::NotConfirmed
            | common::Error::Unresponsive { .. }) => {
                tracing::warn!(error = %err, "a broker request failed");
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
                ApiError::UnsupportedMediaType("PNG image"),
                415,
                "unsupported media type: PNG image",
            ),
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

    #[tokio::test]
    async fn json_errors_have_code_and_message() {
        let response =
            ApiError::InvalidOptions("`quality` must be ...".into()).into_json_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"]["code"], "invalid_options");
        assert_eq!(
            json["error"]["message"],
            "invalid options: `quality` must be ..."
        );
    }

    #[test]
    fn unsatisfiable_ranges_name_the_length() {
        let response = ApiError::RangeNotSatisfiable(1234).into_response();
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(response.headers()[header::CONTENT_RANGE], "bytes */1234");
    }
}

//! The one error body of the JSON APIs (gateway and auth), which the
//! desktop app reads back: `{"error": {"code": "...", "message": "..."}}`.

use serde::{Deserialize, Serialize};

/// `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"error": {"code": "not_found", "message": "not found"}})))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable code for programs, a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable and machine-readable: `missing_credentials`,
    /// `not_authorized`, `not_found`, `method_not_allowed`, `bad_request`,
    /// `invalid_options`, `exactly_one_file`, `too_large`,
    /// `unsupported_media_type`, `conflict`, `range_not_satisfiable`,
    /// `precondition_failed`, `request_timeout`, `unavailable`, `internal`
    /// (and auth's own, e.g. `invalid_credentials`, `email_taken`,
    /// `rate_limited`).
    pub code: String,
    /// A sentence for people; may change.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

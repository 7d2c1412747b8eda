//! The OpenAPI 3 document of `/api/v1`, generated from the handlers'
//! `#[utoipa::path]` annotations and the response types they serialise,
//! and served at `GET /api/v1/openapi.json`.
//!
//! The account routes are proxied to auth, so their bodies are described
//! here rather than taken from auth's (private) types; the conversion
//! options are validated by `common::options` from plain JSON, so their
//! schema is described here too.

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::{ErrorBody, ErrorDetail};
use crate::routes::{account, events, jobs};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "MP3 converter gateway",
        description = "Upload videos, follow their conversion live and download the MP3s. \
                       Every error is `{\"error\": {\"code\", \"message\"}}`. Tokens come from \
                       `POST /api/v1/login` and go in `Authorization: Bearer <token>`."
    ),
    paths(
        account::login,
        account::registration,
        account::register,
        account::me,
        account::preferences,
        jobs::create,
        jobs::list,
        jobs::get,
        jobs::delete,
        jobs::retry,
        jobs::mp3,
        events::events,
        openapi_json,
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        jobs::JobView,
        jobs::JobEnvelope,
        jobs::JobList,
        JobStateName,
        ConversionOptions,
        UploadForm,
        Mp3,
        Credentials,
        TokenResponse,
        Profile,
        RegistrationStatus,
        Preferences,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "account", description = "Login, registration and the caller's account (served by auth, proxied)"),
        (name = "jobs", description = "Conversion jobs: upload, follow, download"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme the operations refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi
            .components
            .get_or_insert_with(utoipa::openapi::Components::new);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The token of `POST /api/v1/login` (or the classic `POST /login`)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"))
    })
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This OpenAPI document (JSON)"))
)]
pub async fn openapi_json() -> Response {
    let mut response = document().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Where a job is.
#[derive(ToSchema)]
#[schema(as = JobState, rename_all = "lowercase")]
#[allow(dead_code)] // documentation only: the real type is common::jobs::JobState
pub enum JobStateName {
    Queued,
    Converting,
    Done,
    Failed,
}

/// Per-job conversion options; every field is optional and anything else
/// is a 400 naming the field. Defaults: LAME VBR V2, the source's sample
/// rate and channels (up to stereo), the best audio track, the whole file,
/// no normalisation.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: validated by common::options
pub struct ConversionOptions {
    /// `"V0"` (best) to `"V9"` (smallest) for VBR, or `"cbr"` together with `bitrate_kbps`.
    #[schema(example = "V2")]
    quality: Option<String>,
    /// Constant bitrate, 32 to 320, with `quality: "cbr"`.
    #[schema(minimum = 32, maximum = 320)]
    bitrate_kbps: Option<u32>,
    /// `"keep"`, 22050, 44100 or 48000.
    #[schema(value_type = Option<Object>, example = 44100)]
    sample_rate: Option<serde_json::Value>,
    /// `"keep"`, `"mono"` or `"stereo"`.
    #[schema(example = "stereo")]
    channels: Option<String>,
    /// Index among the file's audio tracks, from 0; by default FFmpeg's best one.
    audio_track: Option<u32>,
    /// Seconds skipped at the start.
    #[schema(minimum = 0)]
    trim_start_s: Option<f64>,
    /// Where the converted span ends, in seconds from the start of the audio.
    #[schema(minimum = 0)]
    trim_end_s: Option<f64>,
    /// EBU R128 loudness normalisation.
    normalize: Option<bool>,
}

/// The multipart form of `POST /api/v1/jobs`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: the body is streamed, never parsed into this
pub struct UploadForm {
    /// The video: exactly one file part (streamed to storage, never buffered).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Optional conversion options, a JSON object sent as a text part.
    #[schema(value_type = Option<ConversionOptions>)]
    options: Option<String>,
    /// Optional, when `file` holds only the audio of a video: the
    /// original's `{"size_bytes": N, "sha256": "<64 hex digits>"}`, kept
    /// on the job.
    #[schema(value_type = Option<crate::routes::jobs::SourceView>)]
    source: Option<String>,
}

/// The bytes of an MP3 (or the requested range of them): a binary string.
/// Documentation only: the body is streamed from GridFS.
pub struct Mp3;

impl utoipa::PartialSchema for Mp3 {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some("The bytes of the MP3, or of the requested range"))
            .into()
    }
}

impl ToSchema for Mp3 {}

/// `{email, password}`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: the body is passed through to auth
pub struct Credentials {
    #[schema(example = "alice@example.com")]
    email: String,
    #[schema(format = Password)]
    password: String,
}

/// A token and its expiry.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: auth's answer is passed through
pub struct TokenResponse {
    /// The JWT, for `Authorization: Bearer ...`.
    token: String,
    /// When it stops being accepted (RFC 3339, UTC).
    expires_at: String,
}

/// Whether registration is open.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: auth's answer is passed through
pub struct RegistrationStatus {
    /// `true` when `POST /api/v1/register` accepts new accounts.
    enabled: bool,
}

/// A user as they may see themselves.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: auth's answer is passed through
pub struct Profile {
    email: String,
    admin: bool,
    /// Whether "your MP3 is ready" emails are sent.
    email_notifications: bool,
    /// RFC 3339, UTC.
    created_at: String,
}

/// The caller's settings.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: the body is passed through to auth
pub struct Preferences {
    email_notifications: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_with_bearer_auth() {
        let doc: serde_json::Value = serde_json::from_str(document()).expect("json");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for schema in ["Job", "JobState", "ErrorBody", "ConversionOptions", "Mp3"] {
            assert!(
                doc["components"]["schemas"][schema].is_object(),
                "{schema} missing"
            );
        }
    }
}

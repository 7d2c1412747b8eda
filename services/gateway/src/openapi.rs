//! The OpenAPI 3 document of `/api/v1`, generated from the handlers'
//! `#[utoipa::path]` annotations and the response types they serialise,
//! and served at `GET /api/v1/openapi.json` (`routes::meta`, which takes it
//! from the state).
//!
//! The account routes are proxied to auth, so their bodies are described
//! here rather than taken from auth's (private) types; the conversion
//! options are validated by `contract::options` from plain JSON, so their
//! schema is described here too.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{account, controls, events, jobs, meta};
use contract::{ErrorBody, ErrorDetail};

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
        controls::me,
        controls::delete_me,
        account::preferences,
        controls::resend_confirmation,
        controls::confirm,
        controls::change_password,
        controls::sign_out_everywhere,
        controls::request_reset,
        controls::complete_reset,
        jobs::create,
        jobs::list,
        jobs::get,
        jobs::delete,
        jobs::retry,
        jobs::mp3,
        events::events,
        meta::openapi_json,
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        contract::JobView,
        contract::JobEnvelope,
        contract::JobList,
        contract::JobState,
        contract::Options,
        contract::SourceFile,
        crate::schemas::UploadForm,
        crate::schemas::Mp3,
        contract::account::Credentials,
        contract::account::NewAccount,
        contract::account::TokenResponse,
        contract::account::Profile,
        contract::account::RegistrationStatus,
        contract::account::Preferences,
        contract::account::Registered,
        contract::account::Quotas,
        contract::account::Quota,
        contract::account::LinkToken,
        contract::account::PasswordChange,
        contract::account::AccountDeletion,
        contract::account::ResetRequest,
        contract::account::ResetCompletion,
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
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        doc["components"]["schemas"]["ConversionOptions"] = contract::Options::json_schema();
        serde_json::to_string_pretty(&doc).unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"))
    })
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

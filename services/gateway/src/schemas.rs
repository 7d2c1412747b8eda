//! The OpenAPI schemas of what no Rust type holds: the upload form (the
//! body is streamed part by part, never parsed into a struct) and the MP3
//! bytes (streamed from GridFS).

use utoipa::ToSchema;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{Ref, RefOr};

/// The multipart form of `POST /api/v1/jobs`, part by part (the body is
/// streamed, never parsed into a struct): `file`, the video, exactly one
/// file part; `options`, a JSON text part ([`contract::Options`], `null` the
/// same as absent); `source`, a JSON text part ([`contract::SourceFile`]),
/// when `file` holds only the audio of a video.
pub struct UploadForm;

impl utoipa::PartialSchema for UploadForm {
    fn schema() -> RefOr<Schema> {
        let file = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some(
                "The video: exactly one file part (streamed to storage, never buffered); \
                 it must be media, not empty",
            ));
        ObjectBuilder::new()
            .property("file", file)
            .required("file")
            .property("options", Ref::from_schema_name("ConversionOptions"))
            .property("source", Ref::from_schema_name("SourceFile"))
            // Parts of other names are ignored, as the original did.
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ))
            .description(Some(
                "`options`: conversion options as a JSON text part; `source`: when `file` \
                 holds only the audio of a video, the original's size and SHA-256, kept on the job",
            ))
            .into()
    }
}

impl ToSchema for UploadForm {}

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

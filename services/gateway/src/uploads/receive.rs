//! Reading an upload's multipart body: the one file part streamed into
//! GridFS (sniffed, size-limited, hashed on the way), and the small JSON
//! `options` and `source` parts.

use axum::extract::Multipart;
use axum::extract::multipart::{Field, MultipartError};
use futures::AsyncWriteExt;
use mongodb::bson::{Bson, doc, oid::ObjectId};
use sha2::{Digest, Sha256};

use common::jobs::SourceFile;
use contract::options::Options;

use crate::claims::Claims;
use crate::error::ApiError;
use crate::state::AppState;

use super::{StoredVideo, discard};

/// Reads the multipart body: the one file part streamed into GridFS as
/// `fid`, and with `with_options` the `options` and `source` parts. On an
/// error nothing is left stored.
pub(super) async fn receive(
    state: &AppState,
    claims: &Claims,
    mut multipart: Multipart,
    with_options: bool,
    job_id: ObjectId,
    fid: ObjectId,
    storage_left: u64,
) -> Result<(StoredVideo, Options, Option<SourceFile>), ApiError> {
    let mut stored: Option<StoredVideo> = None;
    let mut options = Options::default();
    let mut seen_options = false;
    let mut source = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(err) => {
                discard(state, stored.as_ref()).await;
                let cut = crate::body_guard::BodyLimit::behind(&err).is_some();
                return Err(match stored {
                    None if !cut && err.status() != axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                        ApiError::ExactlyOneFile
                    }
                    _ => multipart_error(err, state.max_upload_bytes),
                });
            }
        };
        if field.file_name().is_none() {
            let read = match field.name() {
                Some("options") if with_options && seen_options => Err(ApiError::InvalidOptions(
                    "more than one `options` part".into(),
                )),
                Some("options") if with_options => {
                    seen_options = true;
                    read_options(field).await.map(|v| options = v)
                }
                Some("source") if with_options && source.is_some() => {
                    Err(ApiError::BadRequest("more than one `source` part".into()))
                }
                Some("source") if with_options => {
                    read_source(field).await.map(|s| source = Some(s))
                }
                // The JSON API's form is `file`, `options` and `source`; the
                // classic route ignores other parts, as the original did.
                Some(other) if with_options => Err(ApiError::BadRequest(format!(
                    "unknown form field `{}`: expected `file`, `options` and `source`",
                    other.chars().take(64).collect::<String>()
                ))),
                _ => Ok(()),
            };
            if let Err(err) = read {
                discard(state, stored.as_ref()).await;
                return Err(err);
            }
            continue;
        }
        if stored.is_some() {
            discard(state, stored.as_ref()).await;
            return Err(ApiError::ExactlyOneFile);
        }
        match store(state, field, claims, job_id, fid, storage_left).await {
            Ok(video) => stored = Some(video),
            // What the client is still sending is drained by `crate::linger`.
            Err(err) => return Err(err),
        }
    }
    let video = stored.ok_or(ApiError::ExactlyOneFile)?;
    if let Some(source) = &source {
        check_source(source, &video)?;
    }
    Ok((video, options, source))
}

/// Largest accepted `options` or `source` part.
pub(super) const MAX_OPTIONS_BYTES: usize = 64 * 1024;

/// A small JSON text part, read whole; errors name the part.
pub(super) async fn read_json_part(
    mut field: Field<'_>,
    name: &str,
    invalid: fn(String) -> ApiError,
) -> Result<serde_json::Value, ApiError> {
    let mut text = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|err| {
        ApiError::BadRequest(format!("malformed multipart body: {}", err.body_text()))
    })? {
        if text.len() + chunk.len() > MAX_OPTIONS_BYTES {
            return Err(invalid(format!(
                "`{name}` must be at most {MAX_OPTIONS_BYTES} bytes"
            )));
        }
        text.extend_from_slice(&chunk);
    }
    let value: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|err| invalid(format!("`{name}` is not valid JSON: {err}")))?;
    // JSON allows a key twice, and a parser keeps the last: what one reader
    // of the part sees must be what every reader sees.
    serde_json::from_slice::<DistinctKeys>(&text)
        .map_err(|_| invalid(format!("`{name}` names a key twice")))?;
    Ok(value)
}

/// Deserialises any JSON and fails on an object that names a key twice, at
/// any depth.
struct DistinctKeys;

impl<'de> serde::Deserialize<'de> for DistinctKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DistinctKeysVisitor)
    }
}

struct DistinctKeysVisitor;

impl<'de> serde::de::Visitor<'de> for DistinctKeysVisitor {
    type Value = DistinctKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<DistinctKeys, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(serde::de::Error::custom("a key named twice"));
            }
            map.next_value::<DistinctKeys>()?;
        }
        Ok(DistinctKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<DistinctKeys, A::Error> {
        while seq.next_element::<DistinctKeys>()?.is_some() {}
        Ok(DistinctKeys)
    }

    fn visit_bool<E>(self, _: bool) -> Result<DistinctKeys, E> {
        Ok(DistinctKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<DistinctKeys, E> {
        Ok(DistinctKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<DistinctKeys, E> {
        Ok(DistinctKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<DistinctKeys, E> {
        Ok(DistinctKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<DistinctKeys, E> {
        Ok(DistinctKeys)
    }
    fn visit_unit<E>(self) -> Result<DistinctKeys, E> {
        Ok(DistinctKeys)
    }
}

/// What a `source` part claims, against the upload it came with: an
/// original at least as large as the file sent (the audio is part of it)
/// and of a size a file can have.
fn check_source(source: &SourceFile, sent: &super::StoredVideo) -> Result<(), ApiError> {
    let sent = i64::try_from(sent.size).unwrap_or(i64::MAX);
    if source.size_bytes < sent {
        return Err(ApiError::BadRequest(format!(
            "`source.size_bytes` ({}) is smaller than the file sent ({sent} bytes): the \
             original holds the audio that was sent",
            source.size_bytes
        )));
    }
    if source.size_bytes > contract::job::MAX_SOURCE_BYTES {
        return Err(ApiError::BadRequest(format!(
            "`source.size_bytes` must be at most {} bytes",
            contract::job::MAX_SOURCE_BYTES
        )));
    }
    Ok(())
}

/// Reads and validates the `source` part.
pub(super) async fn read_source(field: Field<'_>) -> Result<SourceFile, ApiError> {
    let value = read_json_part(field, "source", ApiError::BadRequest).await?;
    SourceFile::from_json(&value).map_err(ApiError::BadRequest)
}

/// Reads and validates the `options` part.
pub(super) async fn read_options(field: Field<'_>) -> Result<Options, ApiError> {
    let value = read_json_part(field, "options", ApiError::InvalidOptions).await?;
    // Kept typed, stored in the canonical form: `"v0"` and `"V0"` are one
    // job's options.
    Options::from_json(&value).map_err(|err| ApiError::InvalidOptions(err.to_string()))
}

/// Streams one file part into GridFS `videos`, enforcing the size limit
/// and what is left of the account's storage.
pub(super) async fn store(
    state: &AppState,
    mut field: Field<'_>,
    claims: &Claims,
    job_id: ObjectId,
    fid: ObjectId,
    storage_left: u64,
) -> Result<StoredVideo, ApiError> {
    // Kept without what would hide or reorder text wherever it is shown
    // (a mail, a download's name, the desktop app).
    let filename = match contract::names::clean_file_name(field.file_name().unwrap_or_default()) {
        name if name.is_empty() => "video".to_owned(),
        name => name,
    };
    let content_type = field
        .content_type()
        .unwrap_or("application/octet-stream")
        .to_owned();
    // The first bytes decide whether this can be media at all; nothing is
    // stored before they have been looked at.
    let mut prefix = Vec::with_capacity(crate::sniff::SNIFF_LEN);
    while prefix.len() < crate::sniff::SNIFF_LEN {
        match field
            .chunk()
            .await
            .map_err(|err| multipart_error(err, state.max_upload_bytes))?
        {
            Some(chunk) => prefix.extend_from_slice(&chunk),
            None => break,
        }
    }
    if prefix.is_empty() {
        // Nothing to convert; said now rather than as a failed job later.
        return Err(ApiError::BadRequest("the file is empty".into()));
    }
    if let Some(what) = crate::sniff::not_media(&prefix) {
        tracing::info!(filename = ?filename, kind = what, user = %claims.username, "refused an upload that is not media");
        return Err(ApiError::UnsupportedMediaType(what));
    }
    let bucket = state.videos_bucket();
    let mut sink = bucket
        .open_upload_stream(&filename)
        .id(Bson::ObjectId(fid))
        .metadata(doc! {
            "owner": &claims.username,
            "filename": &filename,
            "content_type": &content_type,
            "job_id": job_id,
        })
        .await
        .map_err(common::Error::from)?;

    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let copied: Result<(), ApiError> = async {
        let mut first = (!prefix.is_empty()).then(|| bytes::Bytes::from(prefix));
        loop {
            let chunk = match first.take() {
                Some(chunk) => chunk,
                None => match field
                    .chunk()
                    .await
                    .map_err(|err| multipart_error(err, state.max_upload_bytes))?
                {
                    Some(chunk) => chunk,
                    None => break,
                },
            };
            size += chunk.len() as u64;
            if size > state.max_upload_bytes {
                return Err(ApiError::TooLarge(state.max_upload_bytes));
            }
            if size > storage_left {
                return Err(ApiError::OverStorageQuota(storage_left));
            }
            hasher.update(&chunk);
            sink.write_all(&chunk).await.map_err(storage_failed)?;
        }
        sink.close().await.map_err(storage_failed)
    }
    .await;
    if let Err(err) = copied {
        // Removes the chunks written so far.
        let _ = sink.abort().await;
        return Err(err);
    }

    let sha256 = hex(&hasher.finalize());
    let files = state
        .mongo
        .videos
        .collection::<mongodb::bson::Document>("fs.files");
    let recorded = files
        .update_one(
            doc! { "_id": fid },
            doc! { "$set": { "metadata.size": size as i64, "metadata.sha256": &sha256 } },
        )
        .await;
    let video = StoredVideo {
        fid,
        filename,
        size,
        sha256,
    };
    if let Err(err) = recorded {
        discard(state, Some(&video)).await;
        return Err(storage_failed(err));
    }
    Ok(video)
}

/// A failed write to GridFS: logged with its cause, answered 503.
pub(super) fn storage_failed(err: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %err, "writing the upload to MongoDB failed");
    ApiError::Unavailable("storage (MongoDB)")
}

pub(super) fn multipart_error(err: MultipartError, limit: u64) -> ApiError {
    if let Some(cut) = crate::body_guard::BodyLimit::behind(&err) {
        return cut.into_api_error();
    }
    if err.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(limit)
    } else {
        ApiError::BadRequest(format!("malformed multipart body: {}", err.body_text()))
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! `GET /download?fid=<mp3 id>`: streams an MP3 from GridFS `mp3s` to its
//! owner (or an admin). Anyone else gets 404, as for a file that does not
//! exist, so ids cannot be probed.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use mongodb::bson::Bson;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::io::ReaderStream;

use crate::error::ApiError;
use crate::state::AppState;

pub async fn download(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let claims = state.auth.validate(&headers).await?;
    let fid_text = query
        .get("fid")
        .filter(|fid| !fid.trim().is_empty())
        .ok_or(ApiError::FidRequired)?;
    let fid = common::gridfs::parse_fid(fid_text).ok_or(ApiError::NotFound)?;
    let bucket = state.mp3s_bucket();
    let file = common::gridfs::find(&bucket, fid)
        .await?
        .ok_or(ApiError::NotFound)?;
    let owner = file
        .metadata
        .as_ref()
        .and_then(|m| m.get_str("owner").ok())
        .unwrap_or_default();
    if owner != claims.username && !claims.admin {
        return Err(ApiError::NotFound);
    }
    let stream = bucket
        .open_download_stream(Bson::ObjectId(fid))
        .await
        .map_err(common::Error::from)?;
    let body = Body::from_stream(ReaderStream::new(stream.compat()));
    let name = file.filename.as_deref().unwrap_or("audio.mp3");
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/mpeg"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.length));
    if let Ok(value) = HeaderValue::from_str(&content_disposition(name)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// `attachment` with an ASCII fallback name and the exact UTF-8 name
/// (RFC 6266 / RFC 5987), so non-ASCII names survive every browser.
pub fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn ascii_name_is_kept() {
        assert_eq!(
            content_disposition("song.mp3"),
            "attachment; filename=\"song.mp3\"; filename*=UTF-8''song.mp3"
        );
    }

    #[test]
    fn non_ascii_and_quotes_are_encoded() {
        let value = content_disposition("Füße \"x\".mp3");
        assert!(
            value.starts_with("attachment; filename=\"F__e _x_.mp3\""),
            "{value}"
        );
        assert!(
            value.ends_with("filename*=UTF-8''F%C3%BC%C3%9Fe%20%22x%22.mp3"),
            "{value}"
        );
    }
}

//! `GET /download?fid=<mp3 id>`: streams an MP3 from GridFS `mp3s` to its
//! owner (or an admin). Anyone else gets 404, as for a file that does not
//! exist, so ids cannot be probed.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use mongodb::bson::oid::ObjectId;

use crate::claims::{Caller, Claims};
use crate::error::ApiError;
use crate::range::ByteRange;
use crate::state::AppState;

pub async fn download(
    State(state): State<AppState>,
    Caller(claims): Caller,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let fid_text = query
        .get("fid")
        .filter(|fid| !fid.trim().is_empty())
        .ok_or(ApiError::FidRequired)?;
    let fid = common::gridfs::parse_fid(fid_text).ok_or(ApiError::NotFound)?;
    serve_mp3(&state, fid, &claims, &headers).await
}

/// Streams the MP3 `fid` to its owner or an admin (404 for anyone else),
/// honouring a single `Range`. Shared by the classic and the JSON route.
pub async fn serve_mp3(
    state: &AppState,
    fid: ObjectId,
    claims: &Claims,
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    let (file, md5) = common::gridfs::find_with_md5(&state.mongo.mp3s, fid)
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
    let length = file.length;
    let etag = match md5 {
        Some(md5) => format!("\"{md5}\""),
        None => format!("\"{}-{length}\"", fid.to_hex()),
    };
    // Conditional requests (RFC 9110 13): If-Match, then If-None-Match.
    if let Some(wanted) = text(request, header::IF_MATCH)
        && !matches_any(wanted, &etag, false)
    {
        return Err(ApiError::PreconditionFailed);
    }
    if let Some(cached) = text(request, header::IF_NONE_MATCH)
        && matches_any(cached, &etag, true)
    {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        if let Ok(value) = HeaderValue::from_str(&etag) {
            response.headers_mut().insert(header::ETAG, value);
        }
        return Ok(response);
    }
    // A Range counts only while the client's copy is this one (If-Range);
    // otherwise the whole file comes back.
    let range = request
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .filter(|_| text(request, header::IF_RANGE).is_none_or(|tag| tag.trim() == etag));
    let (status, start, end) = match crate::range::parse(range, length) {
        ByteRange::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable(length)),
        ByteRange::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        ByteRange::Full => (StatusCode::OK, 0, length.saturating_sub(1)),
    };
    let body = if length == 0 {
        Body::empty()
    } else {
        Body::from_stream(common::gridfs::read_range(
            &state.mongo.mp3s,
            &file,
            start,
            end,
        ))
    };
    // Capped and cleaned again: files stored before names were.
    let name = contract::names::mp3_name(file.filename.as_deref().unwrap_or("audio.mp3"));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/mpeg"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let sent = if length == 0 { 0 } else { end - start + 1 };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(sent));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{length}"))
    {
        headers.insert(header::CONTENT_RANGE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&content_disposition(&name)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Whether an `If-Match`/`If-None-Match` list names `etag` (or is `*`);
/// `weak` compares as If-None-Match does, ignoring `W/`.
fn matches_any(list: &str, etag: &str, weak: bool) -> bool {
    list.split(',').map(str::trim).any(|tag| {
        tag == "*" || tag == etag || (weak && tag.strip_prefix("W/").is_some_and(|tag| tag == etag))
    })
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

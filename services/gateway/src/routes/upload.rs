//! `POST /upload`, the classic route: one multipart file, `success!` and
//! the job's ids in headers (the upload itself is [`crate::uploads`]).

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::claims::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use crate::uploads::accept;

pub async fn upload(
    State(state): State<AppState>,
    Caller(claims): Caller,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    // Credentials (`Caller`) are checked before the body is looked at.
    let accepted = accept(&state, &claims, &headers, multipart, false).await?;

    let mut response = "success!".into_response();
    let response_headers = response.headers_mut();
    for (name, value) in [
        ("x-job-id", accepted.job.id.to_hex()),
        ("x-video-fid", accepted.job.video_fid.to_hex()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response_headers.insert(HeaderName::from_static(name), value);
        }
    }
    if accepted.deduplicated {
        response_headers.insert(
            HeaderName::from_static("x-deduplicated"),
            HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

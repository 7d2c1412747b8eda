//! Limits on an upload's raw body, applied before the multipart parser sees
//! it. The parser would buffer a part's headers without end (a 64 MiB
//! header was accepted) and take any number of parts, and nothing ended a
//! body that stopped moving. So, on `/upload` and `POST /api/v1/jobs`:
//! - a declared `Content-Length` over the limit is refused at once (413);
//! - a part's headers may take [`MAX_PART_HEADER_BYTES`], a body
//!   [`MAX_PARTS`] parts (400);
//! - a body that brings nothing for a while, or comes slower than a
//!   minimum rate over a window ([`Pace`]), is cut (408).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use memchr::memmem;

use crate::config::Pace;
use crate::error::{ApiError, JsonError};
use crate::state::AppState;

pub const MAX_PART_HEADER_BYTES: usize = 16 * 1024;
pub const MAX_PARTS: usize = 16;

/// Why a body was cut; travels inside the parser's error to the handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyLimit {
    #[error("a part's headers exceed {MAX_PART_HEADER_BYTES} bytes")]
    PartHeaders,
    #[error("more than {MAX_PARTS} parts")]
    TooManyParts,
    #[error("the upload stalled: nothing arrived for {0} s")]
    Idle(u64),
    #[error("the upload is too slow: under {0} bytes in {1} s")]
    TooSlow(u64, u64),
}

impl BodyLimit {
    /// The limit behind a multipart error, if one of ours cut the body.
    pub fn behind(err: &(dyn std::error::Error + 'static)) -> Option<BodyLimit> {
        let mut current = Some(err);
        while let Some(err) = current {
            if let Some(limit) = err.downcast_ref::<BodyLimit>() {
                return Some(limit.clone());
            }
            current = err.source();
        }
        None
    }

    pub fn into_api_error(self) -> ApiError {
        match self {
            BodyLimit::PartHeaders | BodyLimit::TooManyParts => {
                ApiError::BadRequest(format!("malformed multipart body: {self}"))
            }
            BodyLimit::Idle(_) | BodyLimit::TooSlow(..) => {
                ApiError::RequestTimeout(self.to_string())
            }
        }
    }
}

/// The middleware: checks the declared length, then hands the handler a
/// body that enforces the rest as it is read.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.upload_body_limit();
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        let err = ApiError::TooLarge(state.max_upload_bytes);
        return if request.uri().path().starts_with("/api/") {
            JsonError(err).into_response()
        } else {
            err.into_response()
        };
    }
    let boundary = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| multer::parse_boundary(value).ok());
    let Some(boundary) = boundary else {
        // Not multipart: the handler says what it needs.
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let guarded = guarded(body.into_data_stream(), &boundary, state.upload_pace);
    next.run(Request::from_parts(parts, Body::from_stream(guarded)))
        .await
}

/// The body as a stream that ends with an error when a limit is crossed.
fn guarded(
    body: axum::body::BodyDataStream,
    boundary: &str,
    pace: Pace,
) -> impl futures::Stream<Item = Result<bytes::Bytes, axum::BoxError>> + Send + 'static {
    struct Guard {
        body: axum::body::BodyDataStream,
        pace: Pace,
        scanner: Scanner,
        window_started: tokio::time::Instant,
        window_bytes: u64,
        failed: bool,
    }
    let guard = Guard {
        body,
        pace,
        scanner: Scanner::new(boundary),
        window_started: tokio::time::Instant::now(),
        window_bytes: 0,
        failed: false,
    };
    futures::stream::unfold(guard, |mut guard| async move {
        if guard.failed {
            return None;
        }
        let fail = |mut guard: Guard, limit: BodyLimit| {
            guard.failed = true;
            Some((Err(axum::BoxError::from(limit)), guard))
        };
        let pace = guard.pace;
        let next = match tokio::time::timeout(pace.idle, guard.body.next()).await {
            Ok(next) => next,
            Err(_) => return fail(guard, BodyLimit::Idle(pace.idle.as_secs())),
        };
        let chunk = match next? {
            Ok(chunk) => chunk,
            Err(err) => return Some((Err(axum::BoxError::from(err)), guard)),
        };
        guard.window_bytes += chunk.len() as u64;
        if guard.window_started.elapsed() >= pace.window {
            let wanted = pace.min_bytes_per_window();
            if guard.window_bytes < wanted {
                return fail(guard, BodyLimit::TooSlow(wanted, pace.window.as_secs()));
            }
            guard.window_started = tokio::time::Instant::now();
            guard.window_bytes = 0;
        }
        if let Err(limit) = guard.scanner.feed(&chunk) {
            return fail(guard, limit);
        }
        Some((Ok(chunk), guard))
    })
}

/// Follows the multipart framing just enough to count parts and the bytes
/// of each part's headers, without copying the body.
struct Scanner {
    /// `\r\n--<boundary>`: what starts every part (the body is read as if
    /// it began with a line break, so the first one matches too).
    delimiter: Vec<u8>,
    finder: memmem::Finder<'static>,
    state: ScanState,
    /// The end of the last chunk, for a delimiter split across chunks.
    carry: Vec<u8>,
    parts: usize,
}

#[derive(Debug, PartialEq)]
enum ScanState {
    /// In the preamble or a part's data: looking for the next delimiter.
    Data,
    /// Just after a delimiter: `--` ends the body, anything else starts a
    /// part's headers; `seen` bytes so far.
    AfterDelimiter { seen: Vec<u8> },
    /// In a part's headers, `bytes` long so far; `tail` is their last
    /// three bytes, for a `\r\n\r\n` split across chunks.
    Headers { bytes: usize, tail: Vec<u8> },
    /// After the closing delimiter: the epilogue, ignored.
    Done,
}

impl Scanner {
    fn new(boundary: &str) -> Scanner {
        let delimiter = format!("\r\n--{boundary}").into_bytes();
        Scanner {
            finder: memmem::Finder::new(&delimiter).into_owned(),
            delimiter,
            state: ScanState::Data,
            carry: b"\r\n".to_vec(),
            parts: 0,
        }
    }

    fn feed(&mut self, mut chunk: &[u8]) -> Result<(), BodyLimit> {
        while !chunk.is_empty() {
            chunk = match std::mem::replace(&mut self.state, ScanState::Done) {
                ScanState::Done => return Ok(()),
                ScanState::Data => self.data(chunk),
                ScanState::AfterDelimiter { seen } => self.after_delimiter(seen, chunk)?,
                ScanState::Headers { bytes, tail } => self.headers(bytes, tail, chunk)?,
            };
        }
        Ok(())
    }

    /// Looks for the next delimiter; returns what follows it.
    fn data<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        // A delimiter that began in the carried bytes.
        for split in (1..self.delimiter.len()).rev() {
            if self.carry.ends_with(&self.delimiter[..split])
                && chunk.starts_with(&self.delimiter[split..])
            {
                self.carry.clear();
                self.state = ScanState::AfterDelimiter { seen: Vec::new() };
                return &chunk[self.delimiter.len() - split..];
            }
        }
        if let Some(at) = self.finder.find(chunk) {
            self.carry.clear();
            self.state = ScanState::AfterDelimiter { seen: Vec::new() };
            return &chunk[at + self.delimiter.len()..];
        }
        let keep = self.delimiter.len() - 1;
        self.carry
            .extend_from_slice(&chunk[chunk.len().saturating_sub(keep)..]);
        let excess = self.carry.len().saturating_sub(keep);
        self.carry.drain(..excess);
        self.state = ScanState::Data;
        &[]
    }

    fn after_delimiter<'a>(
        &mut self,
        mut seen: Vec<u8>,
        chunk: &'a [u8],
    ) -> Result<&'a [u8], BodyLimit> {
        let take = (2 - seen.len()).min(chunk.len());
        seen.extend_from_slice(&chunk[..take]);
        if seen.len() < 2 {
            self.state = ScanState::AfterDelimiter { seen };
            return Ok(&[]);
        }
        if seen == b"--" {
            self.state = ScanState::Done;
            return Ok(&[]);
        }
        self.parts += 1;
        if self.parts > MAX_PARTS {
            return Err(BodyLimit::TooManyParts);
        }
        self.state = ScanState::Headers {
            bytes: seen.len(),
            tail: seen,
        };
        Ok(&chunk[take..])
    }

    fn headers<'a>(
        &mut self,
        bytes: usize,
        mut tail: Vec<u8>,
        chunk: &'a [u8],
    ) -> Result<&'a [u8], BodyLimit> {
        const END: &[u8] = b"\r\n\r\n";
        let split_end = (1..END.len())
            .rev()
            .find(|&split| tail.ends_with(&END[..split]) && chunk.starts_with(&END[split..]));
        let end = split_end
            .map(|split| END.len() - split)
            .or_else(|| memmem::find(chunk, END).map(|at| at + END.len()));
        match end {
            Some(end) if bytes + end <= MAX_PART_HEADER_BYTES => {
                self.state = ScanState::Data;
                Ok(&chunk[end..])
            }
            Some(_) => Err(BodyLimit::PartHeaders),
            None if bytes + chunk.len() > MAX_PART_HEADER_BYTES => Err(BodyLimit::PartHeaders),
            None => {
                tail.extend_from_slice(chunk);
                let excess = tail.len().saturating_sub(END.len() - 1);
                tail.drain(..excess);
                self.state = ScanState::Headers {
                    bytes: bytes + chunk.len(),
                    tail,
                };
                Ok(&[])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: usize, header_padding: usize) -> Vec<u8> {
        let mut body = Vec::new();
        for i in 0..parts {
            body.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"");
            body.extend_from_slice(&vec![b' '; header_padding]);
            body.extend_from_slice(format!("\r\n\r\npart {i} data\r\n").as_bytes());
        }
        body.extend_from_slice(b"--XyZ--\r\nepilogue");
        body
    }

    /// Feeds `body` in chunks of `size` bytes.
    fn scan(body: &[u8], size: usize) -> Result<usize, BodyLimit> {
        let mut scanner = Scanner::new("XyZ");
        for chunk in body.chunks(size) {
            scanner.feed(chunk)?;
        }
        assert_eq!(
            scanner.state,
            ScanState::Done,
            "the closing delimiter is seen"
        );
        Ok(scanner.parts)
    }

    #[test]
    fn parts_are_counted_whatever_the_chunking() {
        let body = body(3, 0);
        for size in [1, 2, 3, 5, 7, 64, body.len()] {
            assert_eq!(scan(&body, size), Ok(3), "chunks of {size}");
        }
    }

    #[test]
    fn too_many_parts_are_refused() {
        assert_eq!(scan(&body(MAX_PARTS, 0), 13), Ok(MAX_PARTS));
        assert_eq!(
            scan(&body(MAX_PARTS + 1, 0), 13),
            Err(BodyLimit::TooManyParts)
        );
    }

    #[test]
    fn huge_part_headers_are_refused_before_they_end() {
        let ok = body(1, MAX_PART_HEADER_BYTES - 100);
        assert_eq!(scan(&ok, 1000), Ok(1));
        // Headers that never end are cut once they pass the limit.
        let mut endless = b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"".to_vec();
        endless.extend(std::iter::repeat_n(b'a', 64 * 1024));
        let mut scanner = Scanner::new("XyZ");
        let cut = endless
            .chunks(4096)
            .try_for_each(|chunk| scanner.feed(chunk));
        assert_eq!(cut, Err(BodyLimit::PartHeaders));
    }

    #[test]
    fn the_boundary_inside_data_without_a_line_break_is_data() {
        let body = b"--XyZ\r\nH: x\r\n\r\nabc--XyZ-not-a-delimiter\r\n--XyZ--";
        for size in [1, 4, body.len()] {
            assert_eq!(scan(body, size), Ok(1), "chunks of {size}");
        }
    }
}

//! Lingering before an answer to a request whose body was not read to its
//! end. A refused body (a JSON body over its limit, a multipart body cut by
//! [`crate::body_guard`], an upload the store refused) leaves bytes the
//! client is still sending; closing the connection on them makes the kernel
//! reset it, and the client, still writing, sees a broken pipe instead of
//! the status. So the rest is read and thrown away first, within bounds: a
//! body declared bigger than [`MAX_DRAIN_BYTES`] is not drained at all (the
//! client is better told at once), and draining stops after
//! [`MAX_DRAIN_BYTES`] or [`LINGER`], whichever comes first.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use futures::{Stream, StreamExt};

/// Longest a refused request's remaining body is read and thrown away.
pub const LINGER: Duration = Duration::from_secs(10);

/// Most bytes of a refused request's body read and thrown away.
pub const MAX_DRAIN_BYTES: u64 = 64 * 1024 * 1024;

/// The middleware: hands the handler a body it shares with this layer, and
/// drains what the handler left unread before the answer goes out.
pub async fn drain_unread(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_DRAIN_BYTES) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let shared = Shared(Arc::new(Mutex::new(Some(body.into_data_stream()))));
    let handed = Body::from_stream(shared.clone());
    let response = next.run(Request::from_parts(parts, handed)).await;
    // A 408 gave up on a body too slow to come: waiting for it again would
    // hand the slow client the very time it was refused.
    if response.status() != StatusCode::REQUEST_TIMEOUT {
        shared.drain().await;
    }
    response
}

/// The request body, readable by the handler and afterwards by the layer;
/// `None` once it has ended.
#[derive(Clone)]
struct Shared(Arc<Mutex<Option<BodyDataStream>>>);

impl Shared {
    /// Reads and discards what is left, within [`LINGER`] and
    /// [`MAX_DRAIN_BYTES`]; a body read to its end costs nothing here.
    async fn drain(mut self) {
        let drain = async {
            let mut drained = 0u64;
            while let Some(Ok(chunk)) = self.next().await {
                drained += chunk.len() as u64;
                if drained > MAX_DRAIN_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

impl Stream for Shared {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut body = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(stream) = body.as_mut() else {
            return Poll::Ready(None);
        };
        let next = stream.poll_next_unpin(cx);
        if let Poll::Ready(None | Some(Err(_))) = next {
            *body = None;
        }
        next
    }
}

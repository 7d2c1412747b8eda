//! `GET /api/v1/events`: Server-Sent Events of the caller's jobs (everyone's
//! for an admin). Every event is `event: job` with the job exactly as
//! `GET /api/v1/jobs/{id}` renders it, read from MongoDB when the broker
//! announces a change, and an `id` cursor (`<updated_at ms>-<job id>`). A
//! client that reconnects with `Last-Event-ID` first gets every job updated
//! since that cursor, oldest update first, then the live events; without it,
//! the stream starts with the jobs not finished yet. A stream that falls
//! behind the fan-out catches up from MongoDB the same way instead of
//! holding the others back, and so does every stream after the gateway
//! subscribed to the broker again.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use mongodb::bson::{DateTime, oid::ObjectId};
use tokio::sync::{broadcast, mpsc};

use common::jobs::Job;

use crate::claims::{Bearer, Claims};
use contract::ErrorBody;

use crate::error::{ApiError, JsonError};
use crate::events::{Cursor, Live, Rendered};
use crate::state::AppState;

/// The most jobs one replay sends.
const REPLAY_LIMIT: i64 = 1000;
/// Events waiting for a slow client before its stream stops taking live ones.
const CLIENT_BUFFER: usize = 32;

#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "jobs",
    params(
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received: the stream first replays every job updated since"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `event: job`, `data: {\"job\": Job}`, `id: <cursor>`, and `: keep-alive` comments. Without Last-Event-ID the stream starts with the unfinished jobs", content_type = "text/event-stream", body = String),
        (status = 401, description = "No Bearer token", body = ErrorBody),
        (status = 403, description = "Invalid or expired token", body = ErrorBody),
        (status = 429, description = "The account has as many streams open as it may (MAX_STREAMS_PER_USER per gateway)", body = ErrorBody),
        (status = 503, description = "MongoDB down", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    Bearer(claims): Bearer,
    headers: HeaderMap,
) -> Result<Response, JsonError> {
    let resume = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(Cursor::parse);
    let slot = state
        .streams
        .open(&claims.username)
        .ok_or_else(|| ApiError::Quota {
            message: format!(
                "you have {} live event streams open, the most at once: close one first",
                state.streams.limit()
            ),
            retry_after: 5,
        })?;
    // Listen before reading MongoDB, so no change falls in between.
    let live = state.events.subscribe();
    let started = DateTime::now();
    let owner = (!claims.admin).then(|| claims.username.clone());
    let first = state
        .mongo
        .jobs
        .updated_since(
            owner.as_deref(),
            resume.map(|cursor| cursor.updated_at),
            resume.is_none(),
            REPLAY_LIMIT,
        )
        .await
        .map_err(ApiError::from)?;
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let mut feed = Feed {
        state: state.clone(),
        owner,
        claims,
        tx,
        stopping: state.stopping.clone(),
        sent: HashMap::new(),
        since: resume.map(|cursor| cursor.updated_at).unwrap_or(started),
    };
    if let Some(cursor) = resume {
        // The client has that one already.
        feed.sent.insert(cursor.job_id, cursor.updated_at);
    }
    tokio::spawn(async move {
        // The stream's place is held as long as it is followed.
        let _slot = slot;
        if feed.send_all(&first).await {
            feed.follow(live).await;
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<Event, Infallible>(event), rx))
    });
    let keep_alive = KeepAlive::new()
        .interval(state.sse_keep_alive)
        .text("keep-alive");
    Ok(Sse::new(stream).keep_alive(keep_alive).into_response())
}

/// One client's stream: what it was sent, and where to catch up from.
struct Feed {
    state: AppState,
    /// Whose jobs; `None` for an admin (everyone's).
    owner: Option<String>,
    claims: Claims,
    tx: mpsc::Sender<Event>,
    stopping: common::shutdown::CancellationToken,
    /// Per job, the `updated_at` last sent: an older or equal snapshot
    /// (two events read the same document) is not sent again.
    sent: HashMap<ObjectId, DateTime>,
    /// The latest `updated_at` sent (or the stream's start): a lagging
    /// stream catches up from here.
    since: DateTime,
}

impl Feed {
    /// Live events until the client goes, the server stops, or the token
    /// the stream was opened with stops working (revoked or expired): a
    /// stream must not outlive "sign out everywhere" by more than the
    /// revocation poll.
    async fn follow(&mut self, mut live: broadcast::Receiver<Live>) {
        let mut check = tokio::time::interval(crate::revocations::POLL);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let received = tokio::select! {
                () = self.stopping.cancelled() => return,
                _ = self.tx.closed() => return,
                _ = check.tick() => {
                    if self.token_ended() {
                        tracing::info!(user = %self.claims.username, "token revoked or expired; closing its event stream");
                        return;
                    }
                    continue;
                }
                received = live.recv() => received,
            };
            let open = match received {
                Ok(Live::Job(job)) => self.on_job(&job).await,
                Ok(Live::Resync) => self.catch_up().await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(missed, user = %self.claims.username, "slow event stream; catching up from MongoDB");
                    self.catch_up().await
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if !open {
                return;
            }
        }
    }

    fn token_ended(&self) -> bool {
        let expired = self
            .claims
            .exp
            .is_some_and(|exp| exp <= DateTime::now().timestamp_millis() / 1000);
        expired || self.state.auth.revocations().is_revoked(&self.claims)
    }

    /// A changed job, as read once for every stream: whose it is comes from
    /// the record (an event naming another user, or another user's job,
    /// shows nothing to anyone it does not belong to).
    async fn on_job(&mut self, live: &Rendered) -> bool {
        if !self.claims.admin && live.job.owner != self.claims.username {
            return true;
        }
        self.send_rendered(&live.job, &live.data).await
    }

    async fn catch_up(&mut self) -> bool {
        match self
            .state
            .mongo
            .jobs
            .updated_since(self.owner.as_deref(), Some(self.since), false, REPLAY_LIMIT)
            .await
        {
            Ok(jobs) => self.send_all(&jobs).await,
            Err(err) => {
                tracing::warn!(error = %err, "cannot catch up an event stream");
                true
            }
        }
    }

    async fn send_all(&mut self, jobs: &[Job]) -> bool {
        for job in jobs {
            if !self.send(job).await {
                return false;
            }
        }
        true
    }

    /// Sends one job snapshot read for this stream (a replay, a catch-up).
    async fn send(&mut self, job: &Job) -> bool {
        if self.seen(job) {
            return true;
        }
        let data = serde_json::json!({ "job": job.view() }).to_string();
        self.send_rendered(job, &data).await
    }

    /// Whether this stream was sent this snapshot of `job`, or a later one.
    fn seen(&self, job: &Job) -> bool {
        self.sent
            .get(&job.id)
            .is_some_and(|sent| *sent >= job.updated_at)
    }

    /// Sends `job` as `data`; false once the client is gone or the server
    /// stops.
    async fn send_rendered(&mut self, job: &Job, data: &str) -> bool {
        if self.seen(job) {
            return true;
        }
        let event = Event::default()
            .event("job")
            .id(Cursor::of(job).to_string())
            .data(data);
        let delivered = tokio::select! {
            sent = self.tx.send(event) => sent.is_ok(),
            () = self.stopping.cancelled() => false,
        };
        if delivered {
            self.sent.insert(job.id, job.updated_at);
            if job.updated_at > self.since {
                self.since = job.updated_at;
            }
        }
        delivered
    }
}

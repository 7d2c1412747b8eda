//! `GET /api/v1/events`: live job updates over Server-Sent Events for a real
//! conversion, privacy between users, `Last-Event-ID` replay and keep-alives.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::helpers::{AuthDb, CuttableProxy, StackOptions, TestStack, make_video};

const CONVERSION_TIMEOUT: Duration = Duration::from_secs(90);

/// One thing read from an SSE stream.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    /// A `:` line.
    Comment(String),
    Event {
        event: String,
        id: String,
        data: String,
    },
}

/// A small SSE reader over a response's byte stream.
pub(crate) struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    event: String,
    id: String,
    data: Vec<String>,
}

impl SseReader {
    fn new(response: reqwest::Response) -> SseReader {
        SseReader {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
            event: String::new(),
            id: String::new(),
            data: Vec::new(),
        }
    }

    /// The next comment or event, or `None` when nothing came in `within`
    /// (or the stream ended).
    async fn next(&mut self, within: Duration) -> Option<Item> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(at) = self.buffer.find('\n') {
                let line: String = self.buffer.drain(..=at).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if self.data.is_empty() && self.event.is_empty() {
                        continue;
                    }
                    return Some(Item::Event {
                        event: std::mem::take(&mut self.event),
                        id: std::mem::take(&mut self.id),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                if let Some(comment) = line.strip_prefix(':') {
                    return Some(Item::Comment(comment.trim_start().to_owned()));
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                match field {
                    "event" => self.event = value,
                    "id" => self.id = value,
                    "data" => self.data.push(value),
                    _ => {}
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next()).await;
            match chunk {
                Ok(Some(Ok(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Some(Err(err))) => panic!("SSE stream broke: {err}"),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next `job` event (comments skipped): its id and job.
    pub(crate) async fn next_job(&mut self, within: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Item::Comment(_) => continue,
                Item::Event { event, id, data } => {
                    assert_eq!(event, "job", "unexpected event type");
                    let body: Value = serde_json::from_str(&data).expect("event data is JSON");
                    return Some((id, body["job"].clone()));
                }
            }
        }
    }
}

impl TestStack {
    pub(crate) async fn events(&self, token: &str, last_event_id: Option<&str>) -> SseReader {
        let mut request = self
            .http
            .get(format!("{}/api/v1/events", self.gateway))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("events request");
        assert_eq!(response.status(), 200);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        SseReader::new(response)
    }

    /// `POST /api/v1/jobs` with a video; returns the new job's id.
    async fn new_job(&self, token: &str, video: &std::path::Path) -> String {
        let bytes = std::fs::read(video).expect("read video");
        let response = self
            .upload_bytes(
                "/api/v1/jobs",
                &format!("Bearer {token}"),
                "clip.mp4",
                bytes,
            )
            .await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.expect("json");
        body["job"]["id"].as_str().expect("job id").to_owned()
    }
}

fn rank(state: &str) -> u8 {
    match state {
        "queued" => 0,
        "converting" => 1,
        "done" | "failed" => 2,
        other => panic!("unknown state {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_follow_a_conversion_privately_and_replay_after_a_reconnect() {
    let stack = TestStack::start_with(
        AuthDb::Sqlite,
        StackOptions {
            sse_keep_alive_ms: Some(200),
            ..StackOptions::default()
        },
    )
    .await;
    stack.add_user("ann@example.com", "pw-ann").await;
    stack.add_user("bob@example.com", "pw-bob").await;
    let ann = stack.token("ann@example.com", "pw-ann").await;
    let bob = stack.token("bob@example.com", "pw-bob").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let video = make_video(dir.path(), "clip.mp4", 4, true);

    let mut ann_events = stack.events(&ann, None).await;
    let mut bob_events = stack.events(&bob, None).await;

    // Keep-alive comments arrive at the configured interval.
    let mut keep_alives = 0;
    while let Some(item) = ann_events.next(Duration::from_millis(1000)).await {
        match item {
            Item::Comment(text) => {
                assert_eq!(text, "keep-alive");
                keep_alives += 1;
                if keep_alives == 3 {
                    break;
                }
            }
            other => panic!("nothing happened yet, but got {other:?}"),
        }
    }
    assert_eq!(keep_alives, 3, "keep-alive comments every 200 ms");

    let job_id = stack.new_job(&ann, &video).await;

    let mut states = Vec::new();
    let last_id_before_done;
    let mut previous_id = None;
    let done = loop {
        let (id, job) = ann_events
            .next_job(CONVERSION_TIMEOUT)
            .await
            .expect("a job event before the conversion ended");
        assert_eq!(
            job["id"],
            job_id.as_str(),
            "only ann's job is in her stream"
        );
        let (millis, cursor_job) = id.split_once('-').expect("cursor is <ms>-<id>");
        assert_eq!(cursor_job, job_id);
        assert!(millis.parse::<i64>().is_ok(), "{id}");
        let state = job["state"].as_str().expect("state").to_owned();
        states.push(state.clone());
        if state == "done" {
            last_id_before_done = previous_id.clone();
            break job;
        }
        previous_id = Some(id);
    };
    assert_eq!(
        states.first().map(String::as_str),
        Some("queued"),
        "{states:?}"
    );
    assert!(states.iter().any(|s| s == "converting"), "{states:?}");
    assert!(
        states.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])),
        "states go forward only: {states:?}"
    );
    assert_eq!(done["progress"], 1.0);
    assert!(done["mp3_fid"].is_string());

    // The data is the job exactly as GET /api/v1/jobs/{id} shows it.
    let shown: Value = stack
        .http
        .get(format!("{}/api/v1/jobs/{job_id}", stack.gateway))
        .bearer_auth(&ann)
        .send()
        .await
        .expect("get job")
        .json()
        .await
        .expect("json");
    assert_eq!(shown["job"], done);

    // Bob saw nothing of it (keep-alives only).
    assert_eq!(bob_events.next_job(Duration::from_millis(500)).await, None);

    // Ann reconnects with the last id she saw before `done`: the missed
    // `done` snapshot is replayed first.
    let last_id = last_id_before_done.expect("an event before done");
    drop(ann_events);
    let mut resumed = stack.events(&ann, Some(&last_id)).await;
    let (id, job) = resumed
        .next_job(Duration::from_secs(5))
        .await
        .expect("the missed update is replayed");
    assert_eq!(job["id"], job_id.as_str());
    assert_eq!(job["state"], "done");
    assert!(id.ends_with(&job_id));
    // Nothing else was missed.
    assert_eq!(resumed.next_job(Duration::from_millis(600)).await, None);

    // A reconnect with the final id replays nothing.
    let mut up_to_date = stack.events(&ann, Some(&id)).await;
    assert_eq!(up_to_date.next_job(Duration::from_millis(600)).await, None);

    drop((resumed, up_to_date, bob_events));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_need_a_valid_token_and_resubscribe_after_losing_the_broker() {
    let (proxy, stack) = CuttableProxy::with_stack().await;

    let anonymous = stack
        .http
        .get(format!("{}/api/v1/events", stack.gateway))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.expect("json");
    assert_eq!(body["error"]["code"], "missing_credentials");
    let forged = stack
        .http
        .get(format!("{}/api/v1/events", stack.gateway))
        .bearer_auth("not.a.token")
        .send()
        .await
        .expect("request");
    assert_eq!(forged.status(), 403);
    let body: Value = forged.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_authorized");

    stack.add_user("cy@example.com", "pw-cy").await;
    let cy = stack.token("cy@example.com", "pw-cy").await;
    let mut events = stack.events(&cy, None).await;

    // The gateway loses the broker, then gets it back.
    proxy.set_down(true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.set_down(false);

    let dir = tempfile::tempdir().expect("tempdir");
    let video = make_video(dir.path(), "clip.mp4", 2, true);
    // Uploads succeed again once the publisher reconnected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let job_id = loop {
        let bytes = std::fs::read(&video).expect("read video");
        let response = stack
            .upload_bytes("/api/v1/jobs", &format!("Bearer {cy}"), "clip.mp4", bytes)
            .await;
        if response.status() == 202 {
            let body: Value = response.json().await.expect("json");
            break body["job"]["id"].as_str().expect("id").to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "uploads never recovered"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // The open stream keeps going: the subscription came back by itself.
    let deadline = tokio::time::Instant::now() + CONVERSION_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (_, job) = events
            .next_job(left)
            .await
            .expect("events after the broker came back");
        assert_eq!(job["id"], job_id.as_str());
        if job["state"] == "done" {
            break;
        }
    }
    drop(events);
    stack.stop().await;
}

//! Live job events: the gateway follows the events exchange (`job.#`)
//! through its own exclusive queue, reads each changed job from MongoDB
//! once, and fans the job out in-process to the SSE streams of `GET
//! /api/v1/events` (the `job.queued` events of the jobs it queues itself
//! are sent by [`crate::queue`]). One read per change whatever the number
//! of streams, and none while nobody listens; each account holds at most a
//! few streams ([`StreamCounts`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::bson::{DateTime, oid::ObjectId};
use tokio::sync::{broadcast, mpsc, watch};

use common::jobs::{Job, JobStore};
use contract::JobEvent;

use crate::config::Config;

/// What the fan-out carries to the SSE streams.
#[derive(Debug, Clone)]
pub enum Live {
    /// A job changed: the job as read right after (each stream shows it
    /// only to its owner, or an admin), rendered once for every stream.
    Job(Arc<Rendered>),
    /// Events may have been missed (the subscription was re-established,
    /// or changes came faster than they could be read): every stream
    /// catches up from MongoDB.
    Resync,
}

/// A job with its event `data` (`{"job": JobView}`), rendered once: with
/// a thousand streams open, rendering it per stream was a tenth of the
/// gateway's cost of a job update (`scripts/bench-events`).
#[derive(Debug)]
pub struct Rendered {
    pub job: Job,
    pub data: String,
}

impl Rendered {
    pub fn of(job: Job) -> Rendered {
        let data = serde_json::json!({ "job": job.view() }).to_string();
        Rendered { job, data }
    }
}

/// Changes waiting to be read before the fan-out falls back to a resync.
const READ_QUEUE: usize = 4096;

/// Events buffered per SSE stream before a slow one lags (and catches up
/// from MongoDB instead).
const FAN_OUT_CAPACITY: usize = 1024;

/// Starts following the events exchange until `stopping` is cancelled, and returns the sender the SSE streams subscribe to.
/// Waits up to `wait` for the first subscription so events of jobs created
/// right after start-up are not missed; it keeps trying in the background
/// when the broker is not there yet.
pub async fn start(
    config: &Config,
    jobs: JobStore,
    stopping: common::shutdown::CancellationToken,
    wait: Duration,
) -> broadcast::Sender<Live> {
    let (events, _) = broadcast::channel(FAN_OUT_CAPACITY);
    let (changed, to_read) = mpsc::channel::<JobEvent>(READ_QUEUE);
    let fan_out_to = events.clone();
    tokio::spawn(async move {
        read_and_fan_out(jobs, to_read, fan_out_to).await;
    });
    let overflow = events.clone();
    let settings = common::amqp::SubscriptionSettings {
        url: config.amqp.amqp_url.clone(),
        name: "gateway-events".to_owned(),
        exchange: config.amqp.events_exchange.clone(),
        binding: "job.#".to_owned(),
    };
    let (connected_tx, mut connected) = watch::channel(false);
    let mut transitions = connected.clone();
    let resync = events.clone();
    tokio::spawn(async move {
        let mut was_up = false;
        while transitions.changed().await.is_ok() {
            let up = *transitions.borrow_and_update();
            if up && !was_up {
                let _ = resync.send(Live::Resync);
            }
            was_up = up;
        }
    });
    tokio::spawn(async move {
        let handler = move |body: Vec<u8>| match JobEvent::from_slice(&body) {
            Ok(event) => {
                if changed.try_send(event).is_err() {
                    // Reads fell behind: every stream catches up instead.
                    let _ = overflow.send(Live::Resync);
                }
            }
            Err(err) => tracing::warn!(error = %err, "ignoring a malformed job event"),
        };
        common::amqp::subscribe(settings, handler, connected_tx, stopping).await;
    });
    if tokio::time::timeout(wait, connected.wait_for(|up| *up))
        .await
        .is_err()
    {
        tracing::warn!("not subscribed to job events yet; still trying");
    }
    events
}

/// Reads each changed job once and hands it to every stream (none read
/// while no stream listens); returns how many reads it made, once the
/// changes end.
async fn read_and_fan_out(
    jobs: JobStore,
    mut changed: mpsc::Receiver<JobEvent>,
    fan_out: broadcast::Sender<Live>,
) -> u64 {
    let mut reads = 0;
    while let Some(event) = changed.recv().await {
        if fan_out.receiver_count() == 0 {
            continue;
        }
        let Some(id) = common::gridfs::parse_fid(&event.job_id) else {
            continue;
        };
        metrics::counter!("gateway_event_job_reads_total").increment(1);
        reads += 1;
        match jobs.get(id).await {
            Ok(Some(job)) => {
                let _ = fan_out.send(Live::Job(Arc::new(Rendered::of(job))));
            }
            // Deleted since: nothing to show.
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %err, job_id = %id, "cannot read a job for its event; streams catch up");
                let _ = fan_out.send(Live::Resync);
            }
        }
    }
    reads
}

/// How many live event streams each account holds open on this gateway,
/// against the limit: a token cannot open a thousand.
#[derive(Debug, Clone)]
pub struct StreamCounts {
    limit: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream; dropping it frees its place.
#[derive(Debug)]
pub struct StreamSlot {
    counts: StreamCounts,
    user: String,
}

impl StreamCounts {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            open: Arc::default(),
        }
    }

    /// A place for one more stream of `user`, if under the limit.
    pub fn open(&self, user: &str) -> Option<StreamSlot> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(user.to_owned()).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            counts: self.clone(),
            user: user.to_owned(),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// Where an SSE client is: the `updated_at` (ms) of the last job snapshot it
/// got, and that job. Sent as the event `id` (`<ms>-<job id>`), so the
/// client hands it back in `Last-Event-ID` when it reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub updated_at: DateTime,
    pub job_id: ObjectId,
}

impl Cursor {
    pub fn of(job: &Job) -> Cursor {
        Cursor {
            updated_at: job.updated_at,
            job_id: job.id,
        }
    }

    pub fn parse(text: &str) -> Option<Cursor> {
        let (millis, id) = text.trim().split_once('-')?;
        Some(Cursor {
            updated_at: DateTime::from_millis(millis.parse().ok()?),
            job_id: ObjectId::parse_str(id).ok()?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}",
            self.updated_at.timestamp_millis(),
            self.job_id.to_hex()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 25's finding: with 1,000 streams open, each job update cost a
    /// MongoDB read per stream. Now one read serves every stream, and none
    /// is made while nobody listens.
    #[tokio::test]
    async fn one_read_per_change_whatever_the_number_of_streams() {
        let client = mongodb::Client::with_uri_str(common::testing::mongodb_uri())
            .await
            .expect("client");
        let db = client.database(&format!("fanout_{}", ObjectId::new().to_hex()));
        let jobs = JobStore::new(&db);
        let id = ObjectId::new();
        jobs.insert(&Job::queued(id, "a@b.c", "x.mp4", ObjectId::new()))
            .await
            .expect("job");
        let (fan_out, _) = broadcast::channel(16);
        let (changed, to_read) = mpsc::channel(16);
        let reader = tokio::spawn(read_and_fan_out(jobs, to_read, fan_out.clone()));
        let event = || JobEvent {
            job_id: id.to_hex(),
            state: contract::JobState::Converting,
            username: "a@b.c".into(),
            filename: "x.mp4".into(),
            progress: 0.5,
            error: None,
            mp3_fid: None,
        };
        // Nobody listens: nothing is read.
        changed.send(event()).await.expect("send");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut streams: Vec<_> = (0..1000).map(|_| fan_out.subscribe()).collect();

        changed.send(event()).await.expect("send");
        drop(changed);
        let reads = reader.await.expect("reader");

        assert_eq!(reads, 1, "one read for 1,000 streams");
        for stream in &mut streams {
            assert!(matches!(stream.try_recv(), Ok(Live::Job(live)) if live.job.id == id));
        }
        let _ = db.drop().await;
    }

    #[test]
    fn each_account_holds_at_most_its_streams_and_a_closed_one_frees_its_place() {
        let counts = StreamCounts::new(2);
        let first = counts.open("a@b.c").expect("one");
        let _second = counts.open("a@b.c").expect("two");
        assert!(counts.open("a@b.c").is_none());
        assert!(counts.open("other@b.c").is_some(), "others are not counted");
        drop(first);
        assert!(counts.open("a@b.c").is_some());
    }

    #[test]
    fn a_cursor_round_trips_through_its_text() {
        let cursor = Cursor {
            updated_at: DateTime::from_millis(1_764_316_800_123),
            job_id: ObjectId::new(),
        };
        let text = cursor.to_string();
        assert!(text.starts_with("1764316800123-"));
        assert_eq!(Cursor::parse(&text), Some(cursor));
    }

    #[test]
    fn malformed_cursors_are_rejected() {
        for text in [
            "",
            "123",
            "abc-def",
            "12-notanobjectid",
            "-",
            "x-0123456789abcdef01234567",
        ] {
            assert_eq!(Cursor::parse(text), None, "{text}");
        }
    }
}

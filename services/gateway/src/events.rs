//! Live job events: the gateway follows the events exchange (`job.#`)
//! through its own exclusive queue and fans every event out in-process to
//! the SSE streams of `GET /api/v1/events`, and it announces the jobs it
//! queues itself (`job.queued`).

use std::time::Duration;

use mongodb::bson::{DateTime, oid::ObjectId};
use tokio::sync::{broadcast, watch};

use common::jobs::Job;
use common::messages::JobEvent;

use crate::config::Config;
use crate::state::AppState;

/// What the fan-out carries to the SSE streams.
#[derive(Debug, Clone)]
pub enum Live {
    /// A job changed.
    Job(JobEvent),
    /// The subscription was (re)established: events may have been missed
    /// meanwhile, so every stream catches up from MongoDB.
    Resync,
}

/// Events buffered per SSE stream before a slow one lags (and catches up
/// from MongoDB instead).
const FAN_OUT_CAPACITY: usize = 1024;

/// Starts following the events exchange until `stopping` turns true (or its
/// sender is gone), and returns the sender the SSE streams subscribe to.
/// Waits up to `wait` for the first subscription so events of jobs created
/// right after start-up are not missed; it keeps trying in the background
/// when the broker is not there yet.
pub async fn start(
    config: &Config,
    stopping: watch::Receiver<bool>,
    wait: Duration,
) -> broadcast::Sender<Live> {
    let (events, _) = broadcast::channel(FAN_OUT_CAPACITY);
    let fan_out = events.clone();
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
    let mut stop = stopping;
    tokio::spawn(async move {
        let handler = move |body: Vec<u8>| match JobEvent::from_slice(&body) {
            // No SSE client connected is fine: nobody to tell.
            Ok(event) => {
                let _ = fan_out.send(Live::Job(event));
            }
            Err(err) => tracing::warn!(error = %err, "ignoring a malformed job event"),
        };
        let shutdown = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        common::amqp::subscribe(settings, handler, connected_tx, shutdown).await;
    });
    if tokio::time::timeout(wait, connected.wait_for(|up| *up))
        .await
        .is_err()
    {
        tracing::warn!("not subscribed to job events yet; still trying");
    }
    events
}

/// Announces a job state the gateway itself set (`job.queued` on upload and
/// retry). The job document stays the truth, so a lost event is logged and
/// the request goes on.
pub async fn announce(state: &AppState, job: &Job, request_state: &str) {
    let event = JobEvent {
        job_id: job.id.to_hex(),
        state: request_state.to_owned(),
        username: job.owner.clone(),
        filename: job.filename.clone(),
        progress: job.progress,
        error: job.error.clone(),
        mp3_fid: job.mp3_fid.map(|fid| fid.to_hex()),
        notify_email: job.notify_email,
    };
    if let Err(err) = state
        .publisher
        .publish_event(
            &state.events_exchange,
            &event.routing_key(),
            &event.to_vec(),
        )
        .await
    {
        tracing::warn!(error = %err, job_id = %job.id, "could not publish a job event");
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

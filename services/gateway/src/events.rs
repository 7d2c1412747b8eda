//! Live job events: the gateway follows the events exchange (`job.#`)
//! through its own exclusive queue and fans every event out in-process to
//! the SSE streams of `GET /api/v1/events` (the `job.queued` events of the
//! jobs it queues itself are sent by [`crate::queue`]).

use std::time::Duration;

use mongodb::bson::{DateTime, oid::ObjectId};
use tokio::sync::{broadcast, watch};

use common::jobs::Job;
use contract::JobEvent;

use crate::config::Config;

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

/// Starts following the events exchange until `stopping` is cancelled, and returns the sender the SSE streams subscribe to.
/// Waits up to `wait` for the first subscription so events of jobs created
/// right after start-up are not missed; it keeps trying in the background
/// when the broker is not there yet.
pub async fn start(
    config: &Config,
    stopping: common::shutdown::CancellationToken,
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
    tokio::spawn(async move {
        let handler = move |body: Vec<u8>| match JobEvent::from_slice(&body) {
            // No SSE client connected is fine: nobody to tell.
            Ok(event) => {
                let _ = fan_out.send(Live::Job(event));
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

//! Decides what happens to one message: the `mp3` queue's "ready" messages
//! and the `job.failed` events. Each email goes out once per job, under a
//! claim ([`crate::claim`]) that one delivery holds at a time and that
//! `notified_at` / `failure_notified_at` end before the ack. A mail the SMTP
//! server took but never confirmed (the connection dropped after the data)
//! is sent again: delivery is at least once, and both copies carry the same
//! Message-ID, so a receiving system can drop the second. The lapin loop
//! lives in `common::amqp::consume`.

use tracing::Instrument as _;

use common::amqp::{Disposition, Incoming};
use common::config::MongoStores;
use common::jobs::{Job, Notification};
use contract::{JobEvent, JobState, Mp3Result};

use crate::claim::{Held, Lease};
use crate::error::Error;
use crate::mailer::Mailer;

/// What happened to a message that did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// The user turned email off, or was already notified for this job.
    Skipped(&'static str),
}

#[derive(Clone)]
pub struct Worker {
    pub mailer: Mailer,
    pub mongo: MongoStores,
    /// How long a claim on an email outlives a holder that died.
    pub lease: Lease,
}

impl Worker {
    /// Handles a message from the `mp3` queue.
    pub async fn process_ready(&self, incoming: Incoming) -> Disposition {
        let span = tracing::info_span!("notify_ready", job_id = tracing::field::Empty);
        let result = self
            .handle_ready(&incoming.body)
            .instrument(span.clone())
            .await;
        // In the span: the outcome is logged with its job id.
        span.in_scope(|| disposition(result, &incoming, "ready"))
    }

    /// Handles a `job.failed` event.
    pub async fn process_failed(&self, incoming: Incoming) -> Disposition {
        let span = tracing::info_span!("notify_failed", job_id = tracing::field::Empty);
        let result = self
            .handle_failed(&incoming.body)
            .instrument(span.clone())
            .await;
        // In the span: the outcome is logged with its job id.
        span.in_scope(|| disposition(result, &incoming, "failed"))
    }

    /// "Your MP3 is ready", to the job's owner, about the job as recorded:
    /// only for a job that is done with the message's MP3.
    pub async fn handle_ready(&self, body: &[u8]) -> Result<Outcome, Error> {
        // A body without an MP3 (a request on the wrong queue) is refused here.
        let message = Mp3Result::from_slice(body).map_err(common::Error::from)?;
        tracing::Span::current().record("job_id", tracing::field::debug(&message.job_id));
        let Some(job) = self.recorded_job(&message.job_id).await? else {
            return Ok(Outcome::Skipped("the job was deleted"));
        };
        if let Some(what) = job.mismatch(
            &message.video_fid,
            &message.username,
            Some(&message.mp3_fid),
        ) {
            return Err(Error::Mismatch(what.into()));
        }
        if job.state != JobState::Done {
            return Err(Error::Mismatch("the job is not done".into()));
        }
        if !job.notify_email {
            return Ok(Outcome::Skipped("email turned off"));
        }
        if job.notified_at.is_some() {
            return Ok(Outcome::Skipped("already notified"));
        }
        // The same MP3 as the message's, which `mismatch` checked.
        let Some(mp3_fid) = job.mp3_fid else {
            return Err(Error::Mismatch("the job names no MP3".into()));
        };
        let Some(claim) =
            Held::take(&self.mongo.jobs, job.id, Notification::Ready, self.lease).await?
        else {
            return Ok(Outcome::Skipped("already notified"));
        };
        // From here every way out but `sent` gives the claim back.
        let ready = job
            .video_message()
            .converted(mp3_fid.to_hex(), job.duration_s);
        let size = self.mp3_size(mp3_fid).await?;
        let audio_only = job.source.as_ref().map(|source| crate::mailer::AudioOnly {
            uploaded_bytes: u64::try_from(job.size_bytes).unwrap_or(0),
            source,
        });
        let email = self.mailer.ready_email(&ready, size, audio_only)?;
        self.send_and_record(email, claim).await?;
        metrics::counter!("notification_emails_sent_total", "kind" => "ready").increment(1);
        Ok(Outcome::Sent)
    }

    /// "We could not convert ...", to the job's owner, with the reason on
    /// the job: only for a job that has failed.
    pub async fn handle_failed(&self, body: &[u8]) -> Result<Outcome, Error> {
        let event = JobEvent::from_slice(body).map_err(common::Error::from)?;
        tracing::Span::current().record("job_id", tracing::field::debug(&event.job_id));
        let Some(job) = self.recorded_job(&event.job_id).await? else {
            return Ok(Outcome::Skipped("the job was deleted"));
        };
        if event.username != job.owner {
            return Err(Error::Mismatch(
                "the event's user is not the job's owner".into(),
            ));
        }
        if job.state != JobState::Failed {
            return Err(Error::Mismatch("the job has not failed".into()));
        }
        if !job.notify_email {
            return Ok(Outcome::Skipped("email turned off"));
        }
        if job.failure_notified_at.is_some() {
            return Ok(Outcome::Skipped("already notified"));
        }
        let Some(claim) =
            Held::take(&self.mongo.jobs, job.id, Notification::Failed, self.lease).await?
        else {
            return Ok(Outcome::Skipped("already notified"));
        };
        let failed = JobEvent {
            progress: job.progress,
            error: job.error.clone(),
            ..JobEvent::of(&job.video_message(), JobState::Failed)
        };
        let email = self.mailer.failed_email(&failed, job.retries)?;
        self.send_and_record(email, claim).await?;
        metrics::counter!("notification_emails_sent_total", "kind" => "failed").increment(1);
        Ok(Outcome::Sent)
    }

    /// Sends `email` and records it as sent, to the end even when this
    /// delivery is stopped meanwhile. The consumer stops its running
    /// handlers when the broker connection drops, and a mail the SMTP
    /// server took but nobody recorded would go out again on the
    /// redelivery (seen in `scripts/chaos broker-restart`). So the send runs
    /// as a task of its own, holding the claim: the redelivery waits for it,
    /// then finds the mail recorded, or, if the send failed (within the
    /// SMTP timeout), the claim given back.
    async fn send_and_record(&self, email: lettre::Message, claim: Held) -> Result<(), Error> {
        let mailer = self.mailer.clone();
        let commit = tokio::spawn(
            async move {
                mailer.send(email).await?;
                claim.sent().await;
                Ok(())
            }
            .in_current_span(),
        );
        commit
            .await
            .map_err(|err| Error::Interrupted(err.to_string()))?
    }

    /// The job a message names, as recorded; `None` for a job removed
    /// since (its owner deleted it: no mail), and a message for a job that
    /// never was is refused.
    async fn recorded_job(&self, job_id: &str) -> Result<Option<Job>, Error> {
        let id = common::gridfs::parse_fid(job_id)
            .ok_or_else(|| Error::Mismatch(format!("job_id {job_id:?} is not an id")))?;
        match self.mongo.jobs.get(id).await? {
            Some(job) => Ok(Some(job)),
            None if self.mongo.jobs.was_withdrawn(id).await? => Ok(None),
            None => Err(Error::Mismatch("no such job (unknown)".into())),
        }
    }

    /// The MP3's size for the email, from its GridFS record.
    async fn mp3_size(&self, fid: mongodb::bson::oid::ObjectId) -> Result<Option<u64>, Error> {
        let bucket = common::gridfs::bucket(&self.mongo.mp3s);
        Ok(common::gridfs::find(&bucket, fid)
            .await?
            .map(|file| file.length))
    }
}

/// Permanent errors (a 5xx answer, a bad message) go to the dead-letter
/// queue at once; transient ones are retried with backoff.
fn disposition(
    result: Result<Outcome, Error>,
    incoming: &Incoming,
    kind: &'static str,
) -> Disposition {
    let count = |outcome: &'static str| {
        metrics::counter!("notification_messages_total", "kind" => kind, "outcome" => outcome)
            .increment(1);
    };
    match result {
        Ok(outcome) => {
            tracing::info!(?outcome, kind, "notification handled");
            count("ok");
            Disposition::Ack
        }
        // Another delivery is sending this email: wait for its claim to
        // end, which is no failed attempt of this one.
        Err(err @ Error::InFlight { .. }) => {
            count("waited");
            Disposition::Wait(err.to_string())
        }
        Err(err) if err.is_permanent() => {
            tracing::warn!(error = %err, kind, "message dead-lettered");
            count("dead_lettered");
            Disposition::DeadLetter(err.to_string())
        }
        Err(err) => {
            count(if incoming.last_attempt {
                "dead_lettered"
            } else {
                "retried"
            });
            Disposition::Retry(err.to_string())
        }
    }
}

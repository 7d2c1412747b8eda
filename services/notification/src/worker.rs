//! Decides what happens to one message: the `mp3` queue's "ready" messages
//! and the `job.failed` events. Each email goes out at most once per job
//! (`notified_at` / `failure_notified_at` are recorded before the ack). The
//! lapin loop lives in `common::amqp::consume`.

use mongodb::bson::oid::ObjectId;

use common::amqp::{Disposition, Incoming};
use common::config::MongoStores;
use common::jobs::Notification;
use common::messages::{ConversionMessage, JobEvent};

use crate::error::Error;
use crate::mailer::Mailer;

/// What happened to a message that did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// The user turned email off, or was already notified for this job.
    Skipped(&'static str),
}

/// How long a claim on a job's email holds if its holder dies mid-send
/// (well over an SMTP send with its timeouts).
const CLAIM_LEASE: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Clone)]
pub struct Worker {
    pub mailer: Mailer,
    pub mongo: MongoStores,
}

impl Worker {
    /// Handles a message from the `mp3` queue.
    pub async fn process_ready(&self, incoming: Incoming) -> Disposition {
        disposition(self.handle_ready(&incoming.body).await, &incoming, "ready")
    }

    /// Handles a `job.failed` event.
    pub async fn process_failed(&self, incoming: Incoming) -> Disposition {
        disposition(
            self.handle_failed(&incoming.body).await,
            &incoming,
            "failed",
        )
    }

    pub async fn handle_ready(&self, body: &[u8]) -> Result<Outcome, Error> {
        let message = ConversionMessage::from_slice(body)?;
        let span = tracing::info_span!("notify_ready", job_id = %message.job_id);
        let _entered = span.enter();
        if !message.notify_email {
            return Ok(Outcome::Skipped("email turned off"));
        }
        let job_id = common::gridfs::parse_fid(&message.job_id);
        if let Some(id) = job_id
            && let Some(job) = self.mongo.jobs.get(id).await?
            && job.notified_at.is_some()
        {
            return Ok(Outcome::Skipped("already notified"));
        }
        self.claim(job_id, Notification::Ready).await?;
        let size = match message
            .mp3_fid
            .as_deref()
            .and_then(common::gridfs::parse_fid)
        {
            Some(fid) => self.mp3_size(fid).await?,
            None => None,
        };
        let email = self.mailer.ready_email(&message, size)?;
        self.send(email, job_id, Notification::Ready).await?;
        metrics::counter!("notification_emails_sent_total", "kind" => "ready").increment(1);
        if let Some(id) = job_id
            && let Err(err) = self.mongo.jobs.mark_notified(id).await
        {
            // The mail went out: acking is right even if the mark is lost.
            tracing::warn!(error = %err, "sent, but could not record notified_at");
        }
        Ok(Outcome::Sent)
    }

    pub async fn handle_failed(&self, body: &[u8]) -> Result<Outcome, Error> {
        let event = JobEvent::from_slice(body)?;
        let span = tracing::info_span!("notify_failed", job_id = %event.job_id);
        let _entered = span.enter();
        if !event.notify_email {
            return Ok(Outcome::Skipped("email turned off"));
        }
        let job_id = common::gridfs::parse_fid(&event.job_id);
        if let Some(id) = job_id
            && let Some(job) = self.mongo.jobs.get(id).await?
            && job.failure_notified_at.is_some()
        {
            return Ok(Outcome::Skipped("already notified"));
        }
        self.claim(job_id, Notification::Failed).await?;
        let email = self.mailer.failed_email(&event)?;
        self.send(email, job_id, Notification::Failed).await?;
        metrics::counter!("notification_emails_sent_total", "kind" => "failed").increment(1);
        if let Some(id) = job_id
            && let Err(err) = self.mongo.jobs.mark_failure_notified(id).await
        {
            tracing::warn!(error = %err, "sent, but could not record failure_notified_at");
        }
        Ok(Outcome::Sent)
    }

    /// Takes the job's claim for this email, or reports that another
    /// delivery holds it (retried later, when the send is recorded).
    async fn claim(&self, job_id: Option<ObjectId>, kind: Notification) -> Result<(), Error> {
        let Some(id) = job_id else { return Ok(()) };
        if self
            .mongo
            .jobs
            .claim_notification(id, kind, CLAIM_LEASE)
            .await?
        {
            Ok(())
        } else {
            Err(Error::InFlight)
        }
    }

    /// Sends under a claim; a failed send gives the claim back.
    async fn send(
        &self,
        email: lettre::Message,
        job_id: Option<ObjectId>,
        kind: Notification,
    ) -> Result<(), Error> {
        let result = self.mailer.send(email).await;
        if result.is_err()
            && let Some(id) = job_id
            && let Err(err) = self.mongo.jobs.release_notification(id, kind).await
        {
            tracing::warn!(error = %err, "could not release the notification claim");
        }
        result
    }

    /// The MP3's size for the email, from its GridFS record.
    async fn mp3_size(&self, fid: ObjectId) -> Result<Option<u64>, Error> {
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
        Err(err) if err.is_permanent() => {
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

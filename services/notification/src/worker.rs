//! Decides what happens to one message: the `mp3` queue's "ready" messages
//! and the `job.failed` events. Each email goes out at most once per job
//! (`notified_at` / `failure_notified_at` are recorded before the ack). The
//! lapin loop lives in `common::amqp::consume`.

use mongodb::bson::oid::ObjectId;

use common::amqp::{Disposition, Incoming};
use common::config::MongoStores;
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
        let size = match message
            .mp3_fid
            .as_deref()
            .and_then(common::gridfs::parse_fid)
        {
            Some(fid) => self.mp3_size(fid).await?,
            None => None,
        };
        let email = self.mailer.ready_email(&message, size)?;
        self.mailer.send(email).await?;
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
        let email = self.mailer.failed_email(&event)?;
        self.mailer.send(email).await?;
        metrics::counter!("notification_emails_sent_total", "kind" => "failed").increment(1);
        if let Some(id) = job_id
            && let Err(err) = self.mongo.jobs.mark_failure_notified(id).await
        {
            tracing::warn!(error = %err, "sent, but could not record failure_notified_at");
        }
        Ok(Outcome::Sent)
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

//! Handles one `mp3` message: email the owner once, then ack. The lapin loop
//! lives in `common::amqp::consume`; this module only decides.

use common::amqp::{Disposition, Incoming};
use common::jobs::JobStore;
use common::messages::ConversionMessage;

use crate::error::Error;
use crate::mailer::Mailer;

/// What happened to a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// The user turned email off, or was already notified for this job.
    Skipped(&'static str),
}

#[derive(Clone)]
pub struct Worker {
    pub mailer: Mailer,
    pub jobs: JobStore,
}

impl Worker {
    /// Decides the message's fate from [`Worker::handle`]'s result.
    pub async fn process(&self, incoming: Incoming) -> Disposition {
        match self.handle(&incoming.body).await {
            Ok(outcome) => {
                tracing::info!(?outcome, "notification handled");
                metrics::counter!("notification_messages_total", "outcome" => "ok").increment(1);
                Disposition::Ack
            }
            Err(err) if err.is_permanent() => {
                tracing::error!(error = %err, "notification failed permanently; dropping it");
                metrics::counter!("notification_messages_total", "outcome" => "failed")
                    .increment(1);
                Disposition::Ack
            }
            Err(err) => {
                tracing::warn!(error = %err, "notification failed; will retry");
                metrics::counter!("notification_messages_total", "outcome" => "retried")
                    .increment(1);
                Disposition::Requeue
            }
        }
    }

    pub async fn handle(&self, body: &[u8]) -> Result<Outcome, Error> {
        let message = ConversionMessage::from_slice(body)?;
        let span = tracing::info_span!("notify", job_id = %message.job_id);
        let _entered = span.enter();
        if !message.notify_email {
            return Ok(Outcome::Skipped("email turned off"));
        }
        let job_id = common::gridfs::parse_fid(&message.job_id);
        if let Some(id) = job_id
            && let Some(job) = self.jobs.get(id).await?
            && job.notified_at.is_some()
        {
            return Ok(Outcome::Skipped("already notified"));
        }
        let email = self.mailer.ready_email(&message)?;
        self.mailer.send(email).await?;
        if let Some(id) = job_id
            && let Err(err) = self.jobs.mark_notified(id).await
        {
            // The mail went out: acking is right even if the mark is lost.
            tracing::warn!(error = %err, "sent, but could not record notified_at");
        }
        Ok(Outcome::Sent)
    }
}

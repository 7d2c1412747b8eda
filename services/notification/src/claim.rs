//! A delivery's hold on one of a job's emails, for as long as it may still
//! send: taken before the mail is built, renewed while the delivery lives,
//! recorded as sent after the SMTP server took the mail, and given back on
//! every other way out, a dropped (cancelled) delivery included. Only a
//! process that dies holds a claim past its end, and then only until its
//! lease lapses.

use std::time::Duration;

use mongodb::bson::oid::ObjectId;
use tokio::task::JoinHandle;

use common::jobs::{Claim, JobStore, Notification};

use crate::error::Error;

/// How long a claim outlives the last sign of life of its holder. The
/// holder renews it three times per lease, so a live one never loses it;
/// a killed one blocks its job's mail at most this long.
#[derive(Debug, Clone, Copy)]
pub struct Lease(pub Duration);

impl Lease {
    /// How often a holder renews its claim.
    pub fn renew_every(self) -> Duration {
        (self.0 / 3).max(Duration::from_millis(100))
    }
}

/// The claim on one job's email of one kind, held by this delivery. Drop
/// it without [`Held::sent`] and it is released.
pub struct Held {
    store: JobStore,
    job: ObjectId,
    kind: Notification,
    holder: ObjectId,
    renewer: JoinHandle<()>,
    /// False once the mail went out: the claim is then ended by the sent
    /// mark, never released.
    release_on_drop: bool,
}

impl Held {
    /// Takes the claim, or says why not: [`Error::InFlight`] with the end of
    /// another holder's lease, [`Error::Mismatch`] for a deleted job. `None`
    /// when the email was sent already.
    pub async fn take(
        store: &JobStore,
        job: ObjectId,
        kind: Notification,
        lease: Lease,
    ) -> Result<Option<Held>, Error> {
        let holder = ObjectId::new();
        match store.claim_notification(job, kind, holder, lease.0).await? {
            Claim::Taken => {}
            Claim::Sent => return Ok(None),
            Claim::Gone => return Err(Error::Mismatch("no such job (deleted)".into())),
            Claim::HeldUntil(until) => return Err(Error::InFlight { until }),
        }
        let renewer = tokio::spawn(renew(store.clone(), job, kind, holder, lease));
        Ok(Some(Held {
            store: store.clone(),
            job,
            kind,
            holder,
            renewer,
            release_on_drop: true,
        }))
    }

    /// The SMTP server took the mail: records it (which ends the claim) so
    /// that every later delivery skips this email.
    pub async fn sent(mut self) {
        self.release_on_drop = false;
        self.renewer.abort();
        if let Err(err) = self.store.mark_notified(self.job, self.kind).await {
            // The claim then lapses by itself; a delivery after that would
            // send again (at least once, with the same Message-ID).
            tracing::warn!(error = %err, "sent, but could not record it");
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.renewer.abort();
        if !self.release_on_drop {
            return;
        }
        let (store, job, kind, holder) = (self.store.clone(), self.job, self.kind, self.holder);
        let release = async move {
            if let Err(err) = store.release_notification(job, kind, holder).await {
                tracing::warn!(error = %err, "could not give the email claim back; it lapses with its lease");
            }
        };
        // Dropped inside the runtime (an error returned, a delivery
        // cancelled): released in the background. Outside it (the runtime
        // is going away), the lease ends it.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(release);
            }
            Err(_) => tracing::warn!("an email claim is left to lapse with its lease"),
        }
    }
}

/// Keeps the claim alive while its delivery runs (aborted with it).
async fn renew(store: JobStore, job: ObjectId, kind: Notification, holder: ObjectId, lease: Lease) {
    loop {
        tokio::time::sleep(lease.renew_every()).await;
        match store.renew_notification(job, kind, holder, lease.0).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    "the email claim was lost (its lease lapsed); another delivery may send too"
                );
                return;
            }
            Err(err) => tracing::warn!(error = %err, "could not renew the email claim"),
        }
    }
}

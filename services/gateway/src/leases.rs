//! Upload leases: what a gateway that dies mid-upload leaves behind is
//! found and removed by the others. Every upload holds a lease (a document
//! in `videos.uploads` named by the video's GridFS id) from before its
//! first chunk until its job is recorded or its leftovers are removed; its
//! gateway renews the leases it holds every [`RENEW_EVERY`]. A gateway
//! killed outright (no clean-up code runs) stops renewing, and once a
//! lease is older than [`EXPIRED_AFTER`] any gateway's sweeper removes the
//! upload's chunks and file unless a job owns them. A lease names its
//! upload's owner: the uploads an account has under way count against its
//! quotas (`crate::quotas`) before any job exists for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::bson::{DateTime, Document, doc, oid::ObjectId};

/// How often a gateway renews the leases it holds.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// A lease not renewed for this long belongs to a dead gateway.
pub const EXPIRED_AFTER: Duration = Duration::from_secs(45);
/// How often each gateway looks for expired leases.
pub const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// The leases of this gateway, and access to everyone's.
#[derive(Clone)]
pub struct Leases {
    collection: mongodb::Collection<Document>,
    jobs: common::jobs::JobStore,
    videos: mongodb::gridfs::GridFsBucket,
    /// The leases this gateway holds, and whether each is recorded in
    /// MongoDB yet (an insert that failed is made again on renewal, so a
    /// sweeper can find what a dead gateway left even then).
    held: Arc<Mutex<HashMap<ObjectId, Held>>>,
    /// When this gateway last failed to reach MongoDB for its leases: no
    /// lease is judged expired until MongoDB has answered for a whole
    /// [`EXPIRED_AFTER`] since, so an outage that kept every holder from
    /// renewing does not make their live uploads look abandoned.
    last_failure: Arc<Mutex<Option<std::time::Instant>>>,
}

/// One upload's lease; dropping it gives the lease back.
pub struct Lease {
    leases: Leases,
    fid: ObjectId,
    /// Leave the record to expire instead of removing it.
    to_sweeper: bool,
}

/// A lease this gateway holds: whose upload, and whether it is on record.
struct Held {
    owner: String,
    recorded: bool,
}

impl Leases {
    pub fn new(stores: &common::config::MongoStores) -> Leases {
        Leases {
            collection: stores.videos.collection("uploads"),
            jobs: stores.jobs.clone(),
            videos: common::gridfs::bucket(&stores.videos),
            held: Arc::default(),
            last_failure: Arc::default(),
        }
    }

    fn failed(&self) {
        *self
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::time::Instant::now());
    }

    /// Whether MongoDB has answered this gateway for long enough to tell
    /// an abandoned lease from one whose holder could not renew.
    fn trusted(&self) -> bool {
        self.last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none_or(|at| at.elapsed() >= EXPIRED_AFTER)
    }

    /// Takes the lease for `owner`'s upload stored as `fid`. If MongoDB
    /// does not answer, the upload itself will not get far; the lease is
    /// still held in memory so its clean-up path is the same.
    pub async fn take(&self, fid: ObjectId, owner: &str) -> Lease {
        let held = Held {
            owner: owner.to_owned(),
            recorded: false,
        };
        self.held_set().insert(fid, held);
        if let Err(err) = self.record(fid).await {
            tracing::warn!(error = %err, video_fid = %fid, "could not record an upload lease yet");
        }
        Lease {
            leases: self.clone(),
            fid,
            to_sweeper: false,
        }
    }

    /// Writes a lease's record (renewed now) and notes it as recorded.
    async fn record(&self, fid: ObjectId) -> mongodb::error::Result<()> {
        let owner = self.held_set().get(&fid).map(|held| held.owner.clone());
        let Some(owner) = owner else {
            // Given back meanwhile: nothing to record.
            return Ok(());
        };
        self.collection
            .insert_one(lease_record(fid, &owner))
            .await?;
        if let Some(held) = self.held_set().get_mut(&fid) {
            held.recorded = true;
        }
        Ok(())
    }

    fn is_recorded(&self, fid: ObjectId) -> bool {
        self.held_set().get(&fid).is_some_and(|held| held.recorded)
    }

    /// Marks the lease of `fid` as admitted by the account's quotas: from
    /// now on it counts for the account's other uploads.
    pub async fn admit(&self, fid: ObjectId) -> mongodb::error::Result<()> {
        if !self.is_recorded(fid) {
            self.record(fid).await?;
        }
        self.collection
            .update_one(doc! { "_id": fid }, doc! { "$set": { "admitted": true } })
            .await?;
        Ok(())
    }

    /// The uploads `owner` has under way on any gateway: the videos of the
    /// admitted leases on record in their owner's name, renewed within
    /// [`EXPIRED_AFTER`].
    pub async fn under_way(&self, owner: &str) -> mongodb::error::Result<Vec<ObjectId>> {
        let live_since = DateTime::from_millis(
            DateTime::now().timestamp_millis() - EXPIRED_AFTER.as_millis() as i64,
        );
        let mut found = self
            .collection
            .find(doc! {
                "owner": owner,
                "admitted": true,
                "renewed_at": { "$gte": live_since },
                "swept": { "$ne": true },
            })
            .projection(doc! { "_id": 1 })
            .await?;
        let mut fids = Vec::new();
        while found.advance().await? {
            if let Ok(fid) = found.deserialize_current()?.get_object_id("_id") {
                fids.push(fid);
            }
        }
        Ok(fids)
    }

    fn held_set(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectId, Held>> {
        // A poisoned set still holds the right ids.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Renews this gateway's leases and sweeps expired ones, until
    /// `stopping` is cancelled.
    pub async fn maintain(self, stopping: common::shutdown::CancellationToken) {
        let mut renew = tokio::time::interval(RENEW_EVERY);
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                () = stopping.cancelled() => return,
                _ = renew.tick() => self.renew().await,
                _ = sweep.tick() => self.sweep().await,
            }
        }
    }

    async fn renew(&self) {
        let (held, unrecorded): (Vec<_>, Vec<_>) = self
            .held_set()
            .iter()
            .map(|(fid, held)| (*fid, held.recorded))
            .partition(|(_, recorded)| *recorded);
        for (fid, _) in unrecorded {
            if let Err(err) = self.record(fid).await {
                self.failed();
                tracing::warn!(error = %err, video_fid = %fid, "could not record an upload lease yet");
            }
        }
        let held: Vec<ObjectId> = held.into_iter().map(|(fid, _)| fid).collect();
        if held.is_empty() {
            return;
        }
        let renewed = self
            .collection
            .update_many(
                doc! { "_id": { "$in": held }, "swept": { "$ne": true } },
                doc! { "$set": { "renewed_at": DateTime::now() } },
            )
            .await;
        if let Err(err) = renewed {
            self.failed();
            tracing::warn!(error = %err, "could not renew the upload leases");
        }
    }

    /// Removes what dead gateways' uploads left: the chunks and file of
    /// every expired lease that no job owns.
    pub async fn sweep(&self) {
        if !self.trusted() {
            return;
        }
        let cutoff = DateTime::from_millis(
            DateTime::now().timestamp_millis()
                - i64::try_from(EXPIRED_AFTER.as_millis()).unwrap_or(i64::MAX),
        );
        let expired = match self
            .collection
            .find(doc! { "renewed_at": { "$lt": cutoff } })
            .await
        {
            Ok(cursor) => futures::TryStreamExt::try_collect::<Vec<Document>>(cursor).await,
            Err(err) => Err(err),
        };
        let expired = match expired {
            Ok(expired) => expired,
            Err(err) => {
                self.failed();
                tracing::warn!(error = %err, "could not look for expired upload leases");
                return;
            }
        };
        for lease in expired {
            let Ok(fid) = lease.get_object_id("_id") else {
                continue;
            };
            if let Err(err) = self.reclaim(fid, cutoff).await {
                tracing::warn!(error = %err, video_fid = %fid, "could not remove an abandoned upload");
            }
        }
    }

    /// Takes an expired lease over (only if it is still expired: a holder
    /// that renewed meanwhile keeps it) and removes its upload unless a job
    /// owns it. Until the removal is done, a lease of the sweeper's own
    /// stands for it.
    async fn reclaim(&self, fid: ObjectId, cutoff: DateTime) -> common::error::Result<()> {
        let taken = self
            .collection
            .update_one(
                doc! { "_id": fid, "renewed_at": { "$lt": cutoff } },
                doc! { "$set": { "renewed_at": DateTime::now(), "swept": true } },
            )
            .await?;
        if taken.modified_count == 0 {
            return Ok(());
        }
        if !self.jobs.owns_video(fid).await? {
            common::gridfs::delete(&self.videos, fid).await?;
            tracing::info!(video_fid = %fid, "removed an upload its gateway abandoned");
        }
        self.collection.delete_one(doc! { "_id": fid }).await?;
        Ok(())
    }
}

impl Lease {
    /// Renews the lease once more and says whether it is still this
    /// upload's: false when a sweeper took it over (this gateway stalled
    /// past [`EXPIRED_AFTER`]) and may be removing the upload's chunks.
    /// Checked before a job is recorded for the upload.
    pub async fn still_held(&self) -> common::error::Result<bool> {
        if !self.leases.is_recorded(self.fid) {
            // Never recorded (MongoDB failed at the start): no sweeper can
            // have seen it. Recorded now, it is held.
            self.leases.record(self.fid).await?;
            return Ok(true);
        }
        let renewed = self
            .leases
            .collection
            .update_one(
                doc! { "_id": self.fid, "swept": { "$ne": true } },
                doc! { "$set": { "renewed_at": DateTime::now() } },
            )
            .await?;
        Ok(renewed.matched_count == 1)
    }

    /// Stops renewing the lease but leaves its record: what the upload left
    /// could not be removed now (MongoDB did not answer), so the lease
    /// expires and a sweeper removes it later.
    pub fn leave_to_sweeper(mut self) {
        self.to_sweeper = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let held = self.leases.held_set().remove(&self.fid);
        let recorded = held.as_ref().is_some_and(|held| held.recorded);
        let owner = held.map(|held| held.owner).unwrap_or_default();
        // No runtime means the process is going down: the lease expires.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (collection, fid) = (self.leases.collection.clone(), self.fid);
        if self.to_sweeper {
            if !recorded {
                // Left to a sweeper, who must be able to find it.
                tokio::spawn(async move {
                    if let Err(err) = collection.insert_one(lease_record(fid, &owner)).await {
                        tracing::error!(error = %err, video_fid = %fid, "an upload's leftovers have no lease on record: scripts/audit finds them");
                    }
                });
            }
            return;
        }
        tokio::spawn(async move {
            let _ = collection.delete_one(doc! { "_id": fid }).await;
        });
    }
}

/// A lease's record: renewed now, in its owner's name.
fn lease_record(fid: ObjectId, owner: &str) -> Document {
    doc! { "_id": fid, "renewed_at": DateTime::now(), "owner": owner }
}

//! What one account may use: jobs queued or converting at once, jobs per
//! hour, and bytes stored (its videos and MP3s), each a setting, each shown
//! at `GET /api/v1/me`. Checked before an upload reads its body (429 with
//! `Retry-After`, or 507 when the storage is full) and while it streams
//! (413 past what is left). Counted from MongoDB, so every gateway sees the
//! same use. Uploads under way count as jobs once admitted: an account's
//! admissions take turns (a lock document per account, on every gateway),
//! so of a hundred racing uploads exactly as many pass as the quota has
//! room for.

use std::time::{Duration, Instant};

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, doc};

use common::config::MongoStores;
use contract::JobState;
use contract::account::{Quota, Quotas};

use crate::error::ApiError;
use crate::leases::Leases;

/// The limits, from the gateway's configuration.
#[derive(Debug, Clone, Copy)]
pub struct QuotaLimits {
    pub jobs_in_flight: u64,
    pub jobs_per_hour: u64,
    pub stored_bytes: u64,
}

const HOUR_MS: i64 = 3_600_000;

impl QuotaLimits {
    /// What `owner` uses of each limit now.
    pub async fn usage(
        &self,
        mongo: &MongoStores,
        leases: &Leases,
        owner: &str,
    ) -> Result<Quotas, ApiError> {
        let ((in_flight, per_hour, _), stored) = tokio::try_join!(
            jobs_counts(mongo, leases, owner),
            stored_bytes(mongo, owner)
        )?;
        Ok(Quotas {
            jobs_in_flight: Quota {
                used: in_flight,
                limit: self.jobs_in_flight,
            },
            jobs_per_hour: Quota {
                used: per_hour,
                limit: self.jobs_per_hour,
            },
            stored_bytes: Quota {
                used: stored,
                limit: self.stored_bytes,
            },
        })
    }

    /// Whether `owner` may go on with the upload whose lease (`fid`) it
    /// holds; the bytes it may store. Admitted, the lease counts for the
    /// account's next uploads.
    pub async fn admit_upload(
        &self,
        mongo: &MongoStores,
        leases: &Leases,
        owner: &str,
        fid: ObjectId,
    ) -> Result<u64, ApiError> {
        // Read before the turn, to keep turns short: what racing uploads
        // store together is bounded by the in-flight quota.
        let stored = stored_bytes(mongo, owner).await?;
        let turn = Turn::take(mongo, owner).await?;
        let admitted = self.admit(mongo, leases, owner, fid, stored).await;
        turn.end(mongo).await;
        admitted
    }

    /// [`QuotaLimits::admit_upload`] during the account's turn.
    async fn admit(
        &self,
        mongo: &MongoStores,
        leases: &Leases,
        owner: &str,
        fid: ObjectId,
        stored: u64,
    ) -> Result<u64, ApiError> {
        let (in_flight, per_hour, oldest) = jobs_counts(mongo, leases, owner).await?;
        if in_flight >= self.jobs_in_flight {
            return Err(ApiError::Quota {
                message: format!(
                    "you have {in_flight} videos waiting or converting, the most at once: \
                     upload more when some are done"
                ),
                retry_after: 30,
            });
        }
        if per_hour >= self.jobs_per_hour {
            let wait_ms = oldest.map_or(HOUR_MS, |oldest| {
                (oldest.timestamp_millis() + HOUR_MS - DateTime::now().timestamp_millis())
                    .max(1_000)
            });
            return Err(ApiError::Quota {
                message: format!(
                    "you uploaded {per_hour} videos in the last hour, the most an hour allows: \
                     try again later"
                ),
                retry_after: u64::try_from(wait_ms).map_or(3600, |ms| ms.div_ceil(1000)),
            });
        }
        if stored >= self.stored_bytes {
            return Err(ApiError::StorageFull {
                used: stored,
                limit: self.stored_bytes,
            });
        }
        leases.admit(fid).await.map_err(common::Error::from)?;
        Ok(self.stored_bytes - stored)
    }
}

/// How long a turn outlives a gateway that died holding it.
const TURN_LEASE: Duration = Duration::from_secs(5);
/// How long an upload waits for its turn: a burst of a hundred uploads
/// takes turns within it, and a dead holder's turn lapses well within it.
const TURN_WAIT: Duration = Duration::from_secs(30);

/// An account's turn to admit an upload: a document in
/// `videos.admissions` named by the account, held until [`Turn::end`] or
/// for [`TURN_LEASE`]. Taken by an upsert that only matches a lapsed turn:
/// while one is held, the upsert's insert meets the unique `_id` and fails.
struct Turn<'a> {
    owner: &'a str,
    token: ObjectId,
}

impl<'a> Turn<'a> {
    async fn take(mongo: &MongoStores, owner: &'a str) -> Result<Turn<'a>, ApiError> {
        let turns = mongo
            .videos
            .collection::<mongodb::bson::Document>("admissions");
        let token = ObjectId::new();
        let deadline = Instant::now() + TURN_WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            let now = DateTime::now();
            let until = DateTime::from_millis(
                now.timestamp_millis() + i64::try_from(TURN_LEASE.as_millis()).unwrap_or(5_000),
            );
            let taken = turns
                .update_one(
                    doc! { "_id": owner, "until": { "$lt": now } },
                    doc! { "$set": { "until": until, "token": token } },
                )
                .upsert(true)
                .await
                .map_err(common::Error::from);
            match taken {
                Ok(_) => return Ok(Turn { owner, token }),
                Err(err) if err.is_duplicate_key() => {}
                Err(err) => return Err(err.into()),
            }
            if Instant::now() >= deadline {
                return Err(ApiError::Quota {
                    message:
                        "too many of your uploads are starting at once: try again in a few seconds"
                            .to_owned(),
                    retry_after: 5,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Gives the turn back (a failure leaves it to lapse).
    async fn end(self, mongo: &MongoStores) {
        let ended = mongo
            .videos
            .collection::<mongodb::bson::Document>("admissions")
            .delete_one(doc! { "_id": self.owner, "token": self.token })
            .await;
        if let Err(err) = ended {
            tracing::warn!(error = %err, "could not end an admission turn; it lapses");
        }
    }
}

/// `owner`'s jobs in flight and jobs this hour (each with its admitted
/// uploads under way), and when the oldest job of the hour was made. An
/// upload whose job is already recorded counts once.
async fn jobs_counts(
    mongo: &MongoStores,
    leases: &Leases,
    owner: &str,
) -> Result<(u64, u64, Option<DateTime>), ApiError> {
    let under_way = leases.under_way(owner).await.map_err(common::Error::from)?;
    let (in_flight, (per_hour, oldest)) = tokio::try_join!(
        jobs_in_flight(mongo, owner, &under_way),
        jobs_this_hour(mongo, owner, &under_way),
    )?;
    let uploads = under_way.len() as u64;
    Ok((in_flight + uploads, per_hour + uploads, oldest))
}

async fn jobs_in_flight(
    mongo: &MongoStores,
    owner: &str,
    under_way: &[ObjectId],
) -> Result<u64, ApiError> {
    Ok(mongo
        .videos
        .collection::<mongodb::bson::Document>("jobs")
        .count_documents(doc! {
            "owner": owner,
            "state": { "$in": [JobState::Queued.as_str(), JobState::Converting.as_str()] },
            "video_fid": { "$nin": under_way.to_vec() },
        })
        .await
        .map_err(common::Error::from)?)
}

/// How many jobs `owner` created in the last hour (but those of uploads
/// still under way), and when the oldest of them was.
async fn jobs_this_hour(
    mongo: &MongoStores,
    owner: &str,
    under_way: &[ObjectId],
) -> Result<(u64, Option<DateTime>), ApiError> {
    let jobs = mongo.videos.collection::<mongodb::bson::Document>("jobs");
    let since = DateTime::from_millis(DateTime::now().timestamp_millis() - HOUR_MS);
    let filter = doc! {
        "owner": owner,
        "created_at": { "$gte": since },
        "video_fid": { "$nin": under_way.to_vec() },
    };
    let count = jobs
        .count_documents(filter.clone())
        .await
        .map_err(common::Error::from)?;
    let oldest = jobs
        .find_one(filter)
        .sort(doc! { "created_at": 1 })
        .projection(doc! { "created_at": 1 })
        .await
        .map_err(common::Error::from)?
        .and_then(|job| job.get_datetime("created_at").ok().copied());
    Ok((count, oldest))
}

/// The bytes of `owner`'s stored videos and MP3s (their GridFS files carry
/// the owner in their metadata).
async fn stored_bytes(mongo: &MongoStores, owner: &str) -> Result<u64, ApiError> {
    let mut total = 0u64;
    for db in [&mongo.videos, &mongo.mp3s] {
        let mut files = db
            .collection::<mongodb::bson::Document>("fs.files")
            .find(doc! { "metadata.owner": owner })
            .projection(doc! { "length": 1 })
            .await
            .map_err(common::Error::from)?;
        while files.advance().await.map_err(common::Error::from)? {
            let file = files.deserialize_current().map_err(common::Error::from)?;
            let length = file
                .get_i64("length")
                .or_else(|_| file.get_i32("length").map(i64::from))
                .unwrap_or(0);
            total = total.saturating_add(u64::try_from(length).unwrap_or(0));
        }
    }
    Ok(total)
}

/// The indexes the counts rely on (the owner's files in each bucket, the
/// owner's leases).
pub async fn ensure_indexes(mongo: &MongoStores) -> Result<(), common::Error> {
    mongo
        .videos
        .collection::<mongodb::bson::Document>("uploads")
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "owner": 1 })
                .build(),
        )
        .await?;
    for db in [&mongo.videos, &mongo.mp3s] {
        db.collection::<mongodb::bson::Document>("fs.files")
            .create_index(
                mongodb::IndexModel::builder()
                    .keys(doc! { "metadata.owner": 1 })
                    .build(),
            )
            .await?;
    }
    Ok(())
}

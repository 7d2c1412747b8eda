//! What a deleted account leaves: its jobs, videos and MP3s, all removed.
//! The gateway that takes `DELETE /api/v1/me` writes a marker before it
//! asks auth to delete the account, and removes the marker once the data
//! is gone; a marker left by a gateway that died in between is finished by
//! any gateway's sweep (once auth's revocations show the account deleted).

use std::time::Duration;

use futures::TryStreamExt as _;
use mongodb::bson::{DateTime, Document, doc};

use common::config::MongoStores;

use crate::revocations::Revocations;

/// How often each gateway looks for deletions another one left unfinished.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// A marker older than this was left by a gateway that died mid-deletion.
const ABANDONED_AFTER: Duration = Duration::from_secs(120);

fn markers(mongo: &MongoStores) -> mongodb::Collection<Document> {
    mongo.videos.collection("account_deletions")
}

/// Notes that `owner` (auth's user `user_id`) is being deleted.
pub async fn begin(mongo: &MongoStores, owner: &str, user_id: &str) -> common::error::Result<()> {
    markers(mongo)
        .update_one(
            doc! { "_id": owner },
            doc! { "$set": { "user_id": user_id, "at": DateTime::now() } },
        )
        .upsert(true)
        .await?;
    Ok(())
}

/// Auth refused (a wrong password): nothing is being deleted.
pub async fn abandon(mongo: &MongoStores, owner: &str) {
    if let Err(err) = markers(mongo).delete_one(doc! { "_id": owner }).await {
        tracing::warn!(error = %err, "could not remove an account deletion marker");
    }
}

/// Removes every job of `owner` with its video and MP3s, and any file the
/// owner stored that no job names (an upload in flight), then the marker.
pub async fn remove(mongo: &MongoStores, owner: &str) -> common::error::Result<u64> {
    let videos = common::gridfs::bucket(&mongo.videos);
    let mp3s = common::gridfs::bucket(&mongo.mp3s);
    let jobs: Vec<Document> = mongo
        .videos
        .collection::<Document>("jobs")
        .find(doc! { "owner": owner })
        .projection(doc! { "_id": 1 })
        .await?
        .try_collect()
        .await?;
    let mut removed = 0;
    for job in jobs {
        let Ok(id) = job.get_object_id("_id") else {
            continue;
        };
        let Some(job) = mongo.jobs.take(id).await? else {
            continue;
        };
        common::gridfs::delete(&videos, job.video_fid).await?;
        for mp3 in job.mp3_attempts.iter().copied().chain(job.mp3_fid) {
            common::gridfs::delete(&mp3s, mp3).await?;
        }
        removed += 1;
    }
    for bucket in [&videos, &mp3s] {
        let files: Vec<Document> = bucket
            .find(doc! { "metadata.owner": owner })
            .await?
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .map(|file| doc! { "_id": file.id })
            .collect();
        for file in files {
            if let Ok(id) = file.get_object_id("_id") {
                common::gridfs::delete(bucket, id).await?;
            }
        }
    }
    markers(mongo).delete_one(doc! { "_id": owner }).await?;
    tracing::info!(user = %owner, jobs = removed, "a deleted account's jobs and files removed");
    Ok(removed)
}

/// Finishes deletions other gateways left: a marker older than
/// [`ABANDONED_AFTER`] whose account auth's revocations show deleted is
/// removed with its data; one whose account still stands (auth never
/// deleted it) is dropped.
pub async fn sweep(mongo: &MongoStores, revocations: &Revocations) {
    let cutoff = DateTime::from_millis(
        DateTime::now().timestamp_millis()
            - i64::try_from(ABANDONED_AFTER.as_millis()).unwrap_or(i64::MAX),
    );
    let found: Result<Vec<Document>, _> = async {
        markers(mongo)
            .find(doc! { "at": { "$lt": cutoff } })
            .await?
            .try_collect()
            .await
    }
    .await;
    let Ok(found) = found else { return };
    for marker in found {
        let (Ok(owner), Ok(user_id)) = (marker.get_str("_id"), marker.get_str("user_id")) else {
            continue;
        };
        if revocations.is_deleted(user_id) {
            if let Err(err) = remove(mongo, owner).await {
                tracing::warn!(error = %err, user = %owner, "could not finish removing a deleted account's data");
            }
        } else {
            abandon(mongo, owner).await;
        }
    }
}

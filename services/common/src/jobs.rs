//! The `jobs` collection: one document per upload, owned by a user, moved
//! through `queued -> converting -> done | failed` by the gateway and the
//! converter.

use mongodb::bson::{self, DateTime, doc, oid::ObjectId};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Converting,
    Done,
    Failed,
}

/// A job as stored in MongoDB.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Email of the user who uploaded the video.
    pub owner: String,
    pub filename: String,
    pub state: JobState,
    /// 0..1, for progress bars.
    pub progress: f64,
    pub video_fid: ObjectId,
    pub mp3_fid: Option<ObjectId>,
    /// Human-readable reason when `state == Failed`.
    pub error: Option<String>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    pub options: bson::Document,
    pub notify_email: bool,
    pub duration_s: Option<f64>,
    pub size_bytes: i64,
    pub sha256: String,
    /// Set by the notification service once the email went out, so a
    /// redelivered message never sends a second one.
    #[serde(default)]
    pub notified_at: Option<DateTime>,
    /// Set by the converter once the `mp3` message was confirmed, so a
    /// redelivered `video` message re-publishes only if it never went out.
    #[serde(default)]
    pub published_at: Option<DateTime>,
    /// Set by the notification service once the failure email went out.
    #[serde(default)]
    pub failure_notified_at: Option<DateTime>,
}

/// Typed access to the `jobs` collection.
#[derive(Debug, Clone)]
pub struct JobStore {
    collection: mongodb::Collection<Job>,
}

impl JobStore {
    pub fn new(db: &mongodb::Database) -> Self {
        Self {
            collection: db.collection("jobs"),
        }
    }

    /// Creates the indexes the queries below rely on. Idempotent.
    pub async fn ensure_indexes(&self) -> Result<()> {
        let by_owner = mongodb::IndexModel::builder()
            .keys(doc! { "owner": 1, "created_at": -1 })
            .build();
        self.collection.create_index(by_owner).await?;
        Ok(())
    }

    pub async fn insert(&self, job: &Job) -> Result<()> {
        self.collection.insert_one(job).await?;
        Ok(())
    }

    pub async fn get(&self, id: ObjectId) -> Result<Option<Job>> {
        Ok(self.collection.find_one(doc! { "_id": id }).await?)
    }

    pub async fn delete(&self, id: ObjectId) -> Result<()> {
        self.collection.delete_one(doc! { "_id": id }).await?;
        Ok(())
    }

    /// Marks the job as being converted.
    pub async fn mark_converting(&self, id: ObjectId) -> Result<()> {
        self.set(
            id,
            doc! { "state": "converting", "progress": 0.0, "error": null },
        )
        .await
    }

    /// Records conversion progress (0..1) while converting.
    pub async fn set_progress(&self, id: ObjectId, progress: f64) -> Result<()> {
        self.set(id, doc! { "progress": progress.clamp(0.0, 1.0) })
            .await
    }

    /// Records the finished MP3.
    pub async fn mark_done(&self, id: ObjectId, mp3_fid: ObjectId, duration_s: f64) -> Result<()> {
        self.set(
            id,
            doc! {
                "state": "done", "progress": 1.0, "mp3_fid": mp3_fid,
                "duration_s": duration_s, "error": null,
            },
        )
        .await
    }

    /// Records why the job cannot be converted.
    pub async fn mark_failed(&self, id: ObjectId, reason: &str) -> Result<()> {
        self.set(id, doc! { "state": "failed", "error": reason })
            .await
    }

    /// Records that the `mp3` message was confirmed by the broker.
    pub async fn mark_published(&self, id: ObjectId) -> Result<()> {
        self.set(id, doc! { "published_at": DateTime::now() }).await
    }

    /// Records that the user was emailed that the MP3 is ready.
    pub async fn mark_notified(&self, id: ObjectId) -> Result<()> {
        self.set(id, doc! { "notified_at": DateTime::now() }).await
    }

    /// Records that the user was emailed that the job failed.
    pub async fn mark_failure_notified(&self, id: ObjectId) -> Result<()> {
        self.set(id, doc! { "failure_notified_at": DateTime::now() })
            .await
    }

    async fn set(&self, id: ObjectId, mut fields: bson::Document) -> Result<()> {
        fields.insert("updated_at", DateTime::now());
        self.collection
            .update_one(doc! { "_id": id }, doc! { "$set": fields })
            .await?;
        Ok(())
    }
}

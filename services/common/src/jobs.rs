//! The `jobs` collection: one document per upload, owned by a user, moved
//! through `queued -> converting -> done | failed` by the gateway and the
//! converter.

use mongodb::bson::{self, DateTime, doc, oid::ObjectId};
use serde::{Deserialize, Serialize};

pub use contract::{JobState, SourceFile};
use contract::{JobView, Options, VideoRequest};

use crate::error::Result;

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
    /// Stored in their canonical form; validated when read.
    #[serde(default)]
    pub options: Options,
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
    /// The GridFS ids each conversion attempt stores its MP3 under, noted
    /// before it writes a chunk: what a killed or overtaken attempt left
    /// is found through them and removed by the attempt that finishes.
    #[serde(default)]
    pub mp3_attempts: Vec<ObjectId>,
    /// The original file when the upload holds only its audio (the desktop
    /// app copies the audio tracks out and sends those): `size_bytes` and
    /// `sha256` above are then the audio's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceFile>,
    /// How often the owner asked for a failed job to be tried again: each
    /// failure (and its mail) is told apart by it.
    #[serde(default)]
    pub retries: u32,
    /// The uploaded file was removed at once because it was not media: the
    /// job can never be tried again (and stores nothing any more).
    #[serde(default)]
    pub input_removed: bool,
    /// While the job is live (queued, converting, done): its owner, content
    /// and options in one digest, unique across live jobs, so two uploads
    /// of the same file with the same options make one job even when they
    /// race ([`JobStore::insert_unless_duplicate`]). Dropped when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
}

/// The [`Job::dedupe_key`] of `owner`'s content `sha256` with `options`.
pub fn dedupe_key(owner: &str, sha256: &str, options: &Options) -> String {
    use sha2::{Digest as _, Sha256};
    let mut hasher = Sha256::new();
    for part in [owner, sha256, &options.to_json().to_string()] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

impl Job {
    /// A new job in state `queued`, created now, with defaults for the rest
    /// (no options, email on, size and hash unknown); callers override
    /// fields with struct-update syntax.
    pub fn queued(id: ObjectId, owner: &str, filename: &str, video_fid: ObjectId) -> Job {
        let now = DateTime::now();
        Job {
            id,
            owner: owner.to_owned(),
            filename: filename.to_owned(),
            state: JobState::Queued,
            progress: 0.0,
            video_fid,
            mp3_fid: None,
            error: None,
            created_at: now,
            updated_at: now,
            options: Options::default(),
            notify_email: true,
            duration_s: None,
            size_bytes: 0,
            sha256: String::new(),
            notified_at: None,
            published_at: None,
            failure_notified_at: None,
            mp3_attempts: Vec::new(),
            source: None,
            retries: 0,
            input_removed: false,
            dedupe_key: None,
        }
    }
}

impl Job {
    /// The job as the API shows it: ids as hex, times in RFC 3339.
    pub fn view(&self) -> JobView {
        let time = |t: DateTime| t.try_to_rfc3339_string().unwrap_or_default();
        JobView {
            id: self.id.to_hex(),
            filename: self.filename.clone(),
            state: self.state,
            progress: self.progress,
            video_fid: self.video_fid.to_hex(),
            mp3_fid: self.mp3_fid.map(|fid| fid.to_hex()),
            error: self.error.clone(),
            created_at: time(self.created_at),
            updated_at: time(self.updated_at),
            options: self.options.clone(),
            duration_s: self.duration_s,
            size_bytes: self.size_bytes,
            source: self.source.clone(),
            retryable: self.state == JobState::Failed && !self.input_removed,
        }
    }

    /// The `video` message for this job: every field from the record, so
    /// what a worker acts on is what the job says.
    pub fn video_message(&self) -> VideoRequest {
        VideoRequest {
            video_fid: self.video_fid.to_hex(),
            username: self.owner.clone(),
            job_id: self.id.to_hex(),
            filename: self.filename.clone(),
            options: self.options.clone(),
            notify_email: self.notify_email,
        }
    }

    /// Whether a queue message speaks of this job as it is: the same video,
    /// the same owner (and the same MP3 once there is one). `None` when it
    /// does, else what differs, for the dead-letter reason.
    pub fn mismatch(
        &self,
        video_fid: &str,
        username: &str,
        mp3_fid: Option<&str>,
    ) -> Option<&'static str> {
        if video_fid != self.video_fid.to_hex() {
            return Some("the message's video is not the job's");
        }
        if username != self.owner {
            return Some("the message's user is not the job's owner");
        }
        if let Some(mp3_fid) = mp3_fid
            && self.mp3_fid.map(|fid| fid.to_hex()).as_deref() != Some(mp3_fid)
        {
            return Some("the message's MP3 is not the job's");
        }
        None
    }
}

/// Whether a write failed on a unique index (MongoDB error 11000).
pub(crate) fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    match err.kind.as_ref() {
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(write)) => {
            write.code == 11000
        }
        mongodb::error::ErrorKind::Command(command) => command.code == 11000,
        _ => err.to_string().contains("E11000"),
    }
}

/// Which of a job's emails a notification claim is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notification {
    /// "Your MP3 is ready".
    Ready,
    /// "We could not convert ...".
    Failed,
}

impl Notification {
    fn sent_field(self) -> &'static str {
        match self {
            Notification::Ready => "notified_at",
            Notification::Failed => "failure_notified_at",
        }
    }

    fn claim_field(self) -> &'static str {
        match self {
            Notification::Ready => "notify_claim",
            Notification::Failed => "failure_notify_claim",
        }
    }
}

/// Where a job's email claim stands for a delivery that asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This delivery holds it: it may send.
    Taken,
    /// Another delivery holds it until then (renewed while it is alive).
    HeldUntil(DateTime),
    /// The email was sent already.
    Sent,
    /// No such job (deleted).
    Gone,
}

/// `now` plus `lease`, saturating.
fn later(now: DateTime, lease: std::time::Duration) -> DateTime {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    DateTime::from_millis(now.timestamp_millis().saturating_add(lease_ms))
}

/// How long a removed job's id is remembered ([`JobStore::was_withdrawn`]):
/// longer than a message can wait in a queue (its retries, a weekend with
/// every converter down).
pub const WITHDRAWN_FOR: std::time::Duration = std::time::Duration::from_secs(14 * 24 * 3600);

/// Typed access to the `jobs` collection.
#[derive(Debug, Clone)]
pub struct JobStore {
    collection: mongodb::Collection<Job>,
    /// The ids of removed jobs (`withdrawn_jobs`): a message may still name
    /// one (a publish whose confirmation was lost as the broker went down,
    /// so the upload was answered with an error and undone; a job deleted
    /// while queued), and it is then dropped, not dead-lettered as forged.
    withdrawn: mongodb::Collection<bson::Document>,
}

impl JobStore {
    pub fn new(db: &mongodb::Database) -> Self {
        Self {
            collection: db.collection("jobs"),
            withdrawn: db.collection("withdrawn_jobs"),
        }
    }

    /// Creates the indexes the queries below rely on. Idempotent.
    pub async fn ensure_indexes(&self) -> Result<()> {
        let by_owner = mongodb::IndexModel::builder()
            .keys(doc! { "owner": 1, "created_at": -1 })
            .build();
        self.collection.create_index(by_owner).await?;
        let by_update = mongodb::IndexModel::builder()
            .keys(doc! { "owner": 1, "updated_at": 1 })
            .build();
        self.collection.create_index(by_update).await?;
        let dedupe = mongodb::IndexModel::builder()
            .keys(doc! { "dedupe_key": 1 })
            .options(
                mongodb::options::IndexOptions::builder()
                    .unique(true)
                    .partial_filter_expression(doc! { "dedupe_key": { "$exists": true } })
                    .build(),
            )
            .build();
        self.collection.create_index(dedupe).await?;
        let forgotten = mongodb::IndexModel::builder()
            .keys(doc! { "at": 1 })
            .options(
                mongodb::options::IndexOptions::builder()
                    .expire_after(WITHDRAWN_FOR)
                    .build(),
            )
            .build();
        self.withdrawn.create_index(forgotten).await?;
        Ok(())
    }

    /// Remembers that job `id` is being removed, before it is: whoever
    /// finds no job for a message can then tell a withdrawn job from one
    /// that never was.
    async fn withdraw(&self, id: ObjectId) -> Result<()> {
        self.withdrawn
            .update_one(
                doc! { "_id": id },
                doc! { "$set": { "at": DateTime::now() } },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    /// Whether job `id` existed and was removed (within [`WITHDRAWN_FOR`]).
    pub async fn was_withdrawn(&self, id: ObjectId) -> Result<bool> {
        Ok(self.withdrawn.find_one(doc! { "_id": id }).await?.is_some())
    }

    pub async fn insert(&self, job: &Job) -> Result<()> {
        self.collection.insert_one(job).await?;
        Ok(())
    }

    /// Inserts `job` unless a live job has the same [`Job::dedupe_key`]:
    /// then that job, and nothing is inserted. The unique index decides,
    /// so uploads racing each other make one job.
    /// [`crate::Error::Mongo`] with a duplicate key when the job it collided
    /// with failed or went before it could be read: the caller may try once
    /// more.
    pub async fn insert_unless_duplicate(&self, job: &Job) -> Result<Option<Job>> {
        match self.collection.insert_one(job).await {
            Ok(_) => Ok(None),
            Err(err) if is_duplicate_key(&err) => {
                let Some(key) = &job.dedupe_key else {
                    return Err(err.into());
                };
                match self.collection.find_one(doc! { "dedupe_key": key }).await? {
                    Some(existing) => Ok(Some(existing)),
                    None => Err(err.into()),
                }
            }
            Err(err) => Err(err.into()),
        }
    }

    pub async fn get(&self, id: ObjectId) -> Result<Option<Job>> {
        Ok(self.collection.find_one(doc! { "_id": id }).await?)
    }

    /// Jobs newest first (`created_at`, then id), `owner`'s only unless
    /// `None` (admins). `before` continues a listing after that job
    /// (keyset paging); `skip` pages by offset instead.
    pub async fn list(
        &self,
        owner: Option<&str>,
        before: Option<&Job>,
        skip: u64,
        limit: i64,
    ) -> Result<Vec<Job>> {
        let mut filter = doc! {};
        if let Some(owner) = owner {
            filter.insert("owner", owner);
        }
        if let Some(before) = before {
            filter.insert(
                "$or",
                vec![
                    doc! { "created_at": { "$lt": before.created_at } },
                    doc! { "created_at": before.created_at, "_id": { "$lt": before.id } },
                ],
            );
        }
        let cursor = self
            .collection
            .find(filter)
            .sort(doc! { "created_at": -1, "_id": -1 })
            .skip(skip)
            .limit(limit)
            .await?;
        Ok(futures::TryStreamExt::try_collect(cursor).await?)
    }

    /// Jobs (`owner`'s only unless `None`) updated at or after `since`
    /// (all when `None`), optionally only the unfinished ones (queued or
    /// converting), oldest update first: what a live-events client missed.
    pub async fn updated_since(
        &self,
        owner: Option<&str>,
        since: Option<DateTime>,
        unfinished_only: bool,
        limit: i64,
    ) -> Result<Vec<Job>> {
        let mut filter = doc! {};
        if let Some(owner) = owner {
            filter.insert("owner", owner);
        }
        if let Some(since) = since {
            filter.insert("updated_at", doc! { "$gte": since });
        }
        if unfinished_only {
            filter.insert(
                "state",
                doc! { "$in": [JobState::Queued.as_str(), JobState::Converting.as_str()] },
            );
        }
        let cursor = self
            .collection
            .find(filter)
            .sort(doc! { "updated_at": 1, "_id": 1 })
            .limit(limit)
            .await?;
        Ok(futures::TryStreamExt::try_collect(cursor).await?)
    }

    /// `owner`'s jobs for the same content that are not failed: candidates
    /// for answering a repeated upload with the existing job.
    pub async fn live_with_content(&self, owner: &str, sha256: &str) -> Result<Vec<Job>> {
        let cursor = self
            .collection
            .find(doc! {
                "owner": owner,
                "sha256": sha256,
                "state": { "$in": [JobState::Queued.as_str(), JobState::Converting.as_str(), JobState::Done.as_str()] },
            })
            .sort(doc! { "created_at": -1 })
            .await?;
        Ok(futures::TryStreamExt::try_collect(cursor).await?)
    }

    /// Whether a job names this video (a finished upload, not an orphan).
    pub async fn owns_video(&self, video_fid: ObjectId) -> Result<bool> {
        Ok(self
            .collection
            .count_documents(doc! { "video_fid": video_fid })
            .limit(1)
            .await?
            > 0)
    }

    /// Puts a failed job back in the queue, at most `max_retries` times in
    /// all; `false` when it was not failed (someone else retried it first,
    /// or it never failed), its input is gone, or it was retried enough.
    pub async fn requeue_failed(&self, id: ObjectId, max_retries: u32) -> Result<bool> {
        let updated = self
            .collection
            .update_one(
                doc! {
                    "_id": id,
                    "state": JobState::Failed.as_str(),
                    "input_removed": { "$ne": true },
                    "$or": [ { "retries": { "$exists": false } }, { "retries": { "$lt": max_retries } } ],
                },
                doc! {
                    "$set": {
                        "state": JobState::Queued.as_str(), "progress": 0.0, "error": null,
                        "failure_notified_at": null, "updated_at": DateTime::now(),
                    },
                    "$unset": { Notification::Failed.claim_field(): "" },
                    "$inc": { "retries": 1 },
                },
            )
            .await?;
        Ok(updated.modified_count == 1)
    }

    /// Removes job `id`, remembering it as withdrawn. Both writes may be
    /// repeated, so a failed attempt is tried again (after 0.2, 0.4 and
    /// 0.8 s): the caller is undoing an upload whose message did not go, and
    /// a job left behind would stay queued with nothing to convert it. A
    /// pooled connection the server dropped fails one attempt ("broken
    /// pipe", seen in `scripts/chaos broker-restart`); the next one opens
    /// a new connection.
    pub async fn delete(&self, id: ObjectId) -> Result<()> {
        let mut pause = std::time::Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let removed = async {
                self.withdraw(id).await?;
                self.collection.delete_one(doc! { "_id": id }).await?;
                Ok(())
            }
            .await;
            match removed {
                Err(err) if attempt < 4 => {
                    tracing::warn!(job_id = %id, attempt, error = %err, "could not remove a job; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// Removes the job and returns it as it was at that moment: the files
    /// to remove are the ones it named then. A converter finishing later
    /// finds no job to mark done and removes its MP3 itself.
    pub async fn take(&self, id: ObjectId) -> Result<Option<Job>> {
        self.withdraw(id).await?;
        Ok(self
            .collection
            .find_one_and_delete(doc! { "_id": id })
            .await?)
    }

    /// Marks a queued job (or one whose converter died) as being converted;
    /// `false` when the job is gone or in another state.
    pub async fn mark_converting(&self, id: ObjectId) -> Result<bool> {
        self.set_if(
            doc! { "_id": id, "state": { "$in": [JobState::Queued.as_str(), JobState::Converting.as_str()] } },
            doc! { "state": JobState::Converting.as_str(), "progress": 0.0, "error": null },
        )
        .await
    }

    /// Records conversion progress (0..1) while converting.
    pub async fn set_progress(&self, id: ObjectId, progress: f64) -> Result<()> {
        self.set_if(
            doc! { "_id": id, "state": JobState::Converting.as_str() },
            doc! { "progress": progress.clamp(0.0, 1.0) },
        )
        .await?;
        Ok(())
    }

    /// Notes that an attempt is about to store its MP3 as `mp3_fid`;
    /// `false` when the job is no longer being converted.
    pub async fn add_mp3_attempt(&self, id: ObjectId, mp3_fid: ObjectId) -> Result<bool> {
        let updated = self
            .collection
            .update_one(
                doc! { "_id": id, "state": JobState::Converting.as_str() },
                doc! {
                    "$push": { "mp3_attempts": mp3_fid },
                    "$set": { "updated_at": DateTime::now() },
                },
            )
            .await?;
        Ok(updated.matched_count == 1)
    }

    /// Forgets attempts whose files are gone.
    pub async fn forget_mp3_attempts(&self, id: ObjectId, fids: &[ObjectId]) -> Result<()> {
        self.collection
            .update_one(
                doc! { "_id": id },
                doc! { "$pullAll": { "mp3_attempts": fids.to_vec() } },
            )
            .await?;
        Ok(())
    }

    /// Records the finished MP3 and returns the job as it now is (its
    /// `mp3_attempts` name what other attempts stored); `None` when the job
    /// is no longer being converted (deleted, or finished by another
    /// attempt): the MP3 then belongs to nobody.
    pub async fn mark_done(
        &self,
        id: ObjectId,
        mp3_fid: ObjectId,
        duration_s: f64,
    ) -> Result<Option<Job>> {
        Ok(self
            .collection
            .find_one_and_update(
                doc! { "_id": id, "state": JobState::Converting.as_str() },
                doc! { "$set": {
                    "state": JobState::Done.as_str(), "progress": 1.0, "mp3_fid": mp3_fid,
                    "duration_s": duration_s, "error": null, "updated_at": DateTime::now(),
                } },
            )
            .return_document(mongodb::options::ReturnDocument::After)
            .await?)
    }

    /// Records that the job's input was removed (it was not media): no
    /// retry can help it.
    pub async fn mark_input_removed(&self, id: ObjectId) -> Result<()> {
        self.set(id, doc! { "input_removed": true }).await
    }

    /// Records why the job cannot be converted. A failed job is no longer
    /// what a repeated upload of its file is answered with.
    pub async fn mark_failed(&self, id: ObjectId, reason: &str) -> Result<()> {
        self.collection
            .update_one(
                doc! { "_id": id },
                doc! {
                    "$set": {
                        "state": JobState::Failed.as_str(), "error": reason,
                        "updated_at": DateTime::now(),
                    },
                    "$unset": { "dedupe_key": "" },
                },
            )
            .await?;
        Ok(())
    }

    /// Records that the `mp3` message was confirmed by the broker.
    pub async fn mark_published(&self, id: ObjectId) -> Result<()> {
        self.set(id, doc! { "published_at": DateTime::now() }).await
    }

    /// Records that the user was emailed (`kind`) and lets the claim go:
    /// from now on every delivery of the message skips it.
    pub async fn mark_notified(&self, id: ObjectId, kind: Notification) -> Result<()> {
        self.collection
            .update_one(
                doc! { "_id": id },
                doc! {
                    "$set": { kind.sent_field(): DateTime::now(), "updated_at": DateTime::now() },
                    "$unset": { kind.claim_field(): "" },
                },
            )
            .await?;
        Ok(())
    }

    /// Claims the right to send one of a job's emails for `holder` (one
    /// delivery of the message) until `lease` from now. Exactly one holder
    /// at a time: the claim ends when the send is recorded, when its holder
    /// releases it, or when its lease runs out unrenewed (the holder died).
    /// Two deliveries of the same message handled at once send one email.
    pub async fn claim_notification(
        &self,
        id: ObjectId,
        kind: Notification,
        holder: ObjectId,
        lease: std::time::Duration,
    ) -> Result<Claim> {
        let now = DateTime::now();
        let claim = kind.claim_field();
        let until = format!("{claim}.until");
        let result = self
            .collection
            .update_one(
                doc! {
                    "_id": id,
                    kind.sent_field(): null,
                    "$or": [ { claim: null }, { until.as_str(): { "$lte": now } } ],
                },
                doc! { "$set": { claim: { "holder": holder, "until": later(now, lease) } } },
            )
            .await?;
        if result.modified_count == 1 {
            return Ok(Claim::Taken);
        }
        // Why not: read the job as it is now.
        let Some(job) = self
            .collection
            .clone_with_type::<bson::Document>()
            .find_one(doc! { "_id": id })
            .await?
        else {
            return Ok(Claim::Gone);
        };
        if !matches!(job.get(kind.sent_field()), None | Some(bson::Bson::Null)) {
            return Ok(Claim::Sent);
        }
        let held_until = job
            .get_document(claim)
            .ok()
            .and_then(|held| held.get_datetime("until").ok().copied());
        Ok(match held_until {
            Some(until) => Claim::HeldUntil(until),
            // Released between the two reads: free to take on the next try.
            None => Claim::HeldUntil(now),
        })
    }

    /// Extends `holder`'s claim to `lease` from now; `false` when it no
    /// longer holds it (it lapsed and another delivery took it, or the job
    /// is gone).
    pub async fn renew_notification(
        &self,
        id: ObjectId,
        kind: Notification,
        holder: ObjectId,
        lease: std::time::Duration,
    ) -> Result<bool> {
        let claim = kind.claim_field();
        let until = format!("{claim}.until");
        let updated = self
            .collection
            .update_one(
                doc! { "_id": id, format!("{claim}.holder"): holder },
                doc! { "$set": { until: later(DateTime::now(), lease) } },
            )
            .await?;
        Ok(updated.matched_count == 1)
    }

    /// Gives `holder`'s claim back (a send that failed or never happened),
    /// so the next delivery may send at once. A claim that lapsed and was
    /// taken by another delivery is left alone.
    pub async fn release_notification(
        &self,
        id: ObjectId,
        kind: Notification,
        holder: ObjectId,
    ) -> Result<()> {
        let claim = kind.claim_field();
        self.collection
            .update_one(
                doc! { "_id": id, format!("{claim}.holder"): holder },
                doc! { "$unset": { claim: "" } },
            )
            .await?;
        Ok(())
    }

    async fn set(&self, id: ObjectId, fields: bson::Document) -> Result<()> {
        self.set_if(doc! { "_id": id }, fields).await?;
        Ok(())
    }

    /// Sets `fields` (and `updated_at`) on the job `filter` matches; `true`
    /// when one did.
    async fn set_if(&self, filter: bson::Document, mut fields: bson::Document) -> Result<bool> {
        fields.insert("updated_at", DateTime::now());
        let updated = self
            .collection
            .update_one(filter, doc! { "$set": fields })
            .await?;
        Ok(updated.matched_count == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::DateTime;

    #[test]
    fn a_job_shows_exactly_the_design_fields() {
        let job = Job {
            id: ObjectId::new(),
            owner: "a@example.com".into(),
            filename: "clip.mp4".into(),
            state: JobState::Done,
            progress: 1.0,
            video_fid: ObjectId::new(),
            mp3_fid: Some(ObjectId::new()),
            error: None,
            created_at: DateTime::from_millis(0),
            updated_at: DateTime::from_millis(1_000),
            options: Options::from_json(
                &serde_json::json!({"quality": "V6", "sample_rate": 44_100}),
            )
            .expect("valid options"),
            notify_email: true,
            duration_s: Some(4.0),
            size_bytes: 1234,
            sha256: "ab".into(),
            notified_at: None,
            published_at: None,
            failure_notified_at: None,
            mp3_attempts: Vec::new(),
            source: None,
            retries: 0,
            input_removed: false,
            dedupe_key: None,
        };

        let json = serde_json::to_value(job.view()).expect("json");

        let mut keys: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "created_at",
                "duration_s",
                "error",
                "filename",
                "id",
                "mp3_fid",
                "options",
                "progress",
                "retryable",
                "size_bytes",
                "state",
                "updated_at",
                "video_fid"
            ]
        );
        assert_eq!(json["id"], job.id.to_hex());
        assert_eq!(json["state"], "done");
        assert_eq!(json["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(
            json["options"],
            serde_json::json!({"quality": "V6", "sample_rate": 44100})
        );
    }
}

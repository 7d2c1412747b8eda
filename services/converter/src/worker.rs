//! Handles one `video` message: spool the video from GridFS, convert it on a
//! blocking thread, store the MP3, record the job as done and publish to the
//! `mp3` queue. The lapin loop lives in `common::amqp::consume`; this module
//! only decides, and [`Worker::process`] turns the result into ack/requeue.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mongodb::bson::{doc, oid::ObjectId};
use tracing::Instrument as _;

use common::amqp::{Disposition, Incoming, Publisher};
use common::config::MongoStores;
use common::jobs::Job;
use contract::{JobEvent, JobState, VideoRequest};

use crate::error::Error;
use crate::source::{FetchStats, GridFsReader};
use crate::transcode::{self, TimeLimit, TranscodeError};

/// What happened to a message that did not fail.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Converted {
        mp3_fid: ObjectId,
        duration_s: f64,
    },
    /// A redelivery for a job that was already finished.
    AlreadyDone,
    /// The job was deleted while it converted: its MP3 was removed again.
    Discarded,
    /// The job was removed before its message came (deleted, or its upload
    /// undone after an error): nothing to convert.
    Withdrawn,
}

#[derive(Clone)]
pub struct Worker {
    pub mongo: MongoStores,
    pub publisher: Arc<Publisher>,
    /// Queue the finished MP3s are announced on.
    pub mp3_queue: String,
    /// Topic exchange for job state changes.
    pub events_exchange: String,
    pub temp_dir: Option<PathBuf>,
    /// How long one conversion may run before it is stopped.
    pub time_limit: TimeLimit,
}

impl Worker {
    /// Runs [`Worker::handle`] and turns its result into the message's fate:
    /// user errors fail the job (the reason is on it) and are acked;
    /// transient errors are retried until the last attempt, which fails the
    /// job and dead-letters the message.
    pub async fn process(&self, incoming: Incoming) -> Disposition {
        let request_id = incoming.header_text(common::amqp::REQUEST_ID_HEADER);
        let message = match VideoRequest::from_slice(&incoming.body) {
            Ok(message) => message,
            Err(err) => {
                count("invalid");
                return Disposition::DeadLetter(err.to_string());
            }
        };
        // Retried messages wait in delay queues on purpose: only first
        // deliveries say how far behind the converters are.
        if incoming.attempt == 1
            && let Some(lag) = incoming.queue_lag()
        {
            metrics::histogram!("converter_queue_lag_seconds").record(lag.as_secs_f64());
        }
        // Attached to the future, not entered across its awaits: a span
        // entered on a thread would wrap the log lines of whatever other
        // job that thread polls meanwhile.
        let span = tracing::info_span!("convert", job_id = ?message.job_id, video_fid = ?message.video_fid, request_id = ?request_id, attempt = incoming.attempt);
        self.decide(&message, &request_id, incoming.last_attempt)
            .instrument(span)
            .await
    }

    async fn decide(
        &self,
        message: &VideoRequest,
        request_id: &str,
        last_attempt: bool,
    ) -> Disposition {
        match self.handle(message, request_id).await {
            Ok(outcome) => {
                tracing::info!(?outcome, "video handled");
                count("ok");
                Disposition::Ack
            }
            // A message that does not match its job changes no job.
            Err(Error::Mismatch(reason)) => {
                tracing::warn!(%reason, "message refused: it does not match the job record");
                count("invalid");
                Disposition::DeadLetter(format!("refused: {reason}"))
            }
            // Stopped by the time limit: failed for good, and dead-lettered
            // so an operator can replay it with a larger limit.
            Err(err @ Error::Transcode(TranscodeError::TimedOut { .. })) => {
                tracing::warn!(error = %err, "conversion stopped by its time limit");
                count("timed_out");
                let reason = err.to_string();
                match self.fail_job(message, &reason).await {
                    Ok(()) => Disposition::DeadLetter(reason),
                    Err(record) => Disposition::Retry(record.to_string()),
                }
            }
            Err(err) if err.is_permanent() => {
                tracing::warn!(error = %err, "conversion failed permanently");
                count("failed");
                // Not media at all: the upload is worth nothing to anyone,
                // and it must not fill its owner's storage.
                if matches!(err, Error::Transcode(TranscodeError::Unreadable(_))) {
                    self.remove_input(message).await;
                }
                match self.fail_job(message, &err.to_string()).await {
                    Ok(()) => Disposition::Ack,
                    // The failure must be recorded; try again later.
                    Err(record) => Disposition::Retry(record.to_string()),
                }
            }
            Err(err) if last_attempt => {
                count("gave_up");
                let reason = format!("the conversion kept failing: {err}");
                if let Err(record) = self.fail_job(message, &reason).await {
                    tracing::error!(error = %record, "could not record the failure on the job");
                }
                Disposition::DeadLetter(reason)
            }
            Err(err) => {
                count("retried");
                Disposition::Retry(err.to_string())
            }
        }
    }

    pub async fn handle(&self, message: &VideoRequest, request_id: &str) -> Result<Outcome, Error> {
        let job_id = common::gridfs::parse_fid(&message.job_id).ok_or_else(|| {
            Error::BadMessage(format!("job_id {:?} is not an id", message.job_id))
        })?;
        if common::gridfs::parse_fid(&message.video_fid).is_none() {
            return Err(Error::BadMessage(format!(
                "video_fid {:?} is not an id",
                message.video_fid
            )));
        }
        // The job record, not the message, says what to convert for whom.
        let Some(job) = self.mongo.jobs.get(job_id).await? else {
            if self.mongo.jobs.was_withdrawn(job_id).await? {
                return Ok(Outcome::Withdrawn);
            }
            return Err(Error::Mismatch("no such job (unknown)".into()));
        };
        if let Some(what) = job.mismatch(&message.video_fid, &message.username, None) {
            return Err(Error::Mismatch(what.into()));
        }
        self.handle_job(job, request_id).await
    }

    /// Converts the job as `seen` in its record, which may have moved on
    /// since: a killed attempt's last write can land after the read (its
    /// redelivery then finds the job done only when it tries to start).
    pub async fn handle_job(&self, seen: Job, request_id: &str) -> Result<Outcome, Error> {
        let consumed = std::time::Instant::now();
        let job_id = seen.id;
        let video_fid = seen.video_fid;
        let mut job = seen;
        loop {
            match job.state {
                JobState::Done => return self.finish_redelivered(&job, request_id).await,
                JobState::Failed => {
                    return Err(Error::Mismatch(
                        "the job has failed; only a retry queues it again".into(),
                    ));
                }
                JobState::Queued | JobState::Converting => {}
            }
            if self.mongo.jobs.mark_converting(job_id).await? {
                break;
            }
            // Only done, failed or deleted refuse the start; which one
            // decides whether the owner is still owed the `mp3` message.
            job = self.mongo.jobs.get(job_id).await?.ok_or_else(|| {
                Error::Mismatch("the job was deleted before its conversion started".into())
            })?;
            if matches!(job.state, JobState::Queued | JobState::Converting) {
                return Err(Error::Mismatch(
                    "the job changed while its conversion started".into(),
                ));
            }
        }
        let message = &job.video_message();
        let options = message.options.clone();
        // With the span's job_id: which replica took which job.
        tracing::info!("conversion started");
        self.emit(message, JobState::Converting, None, None).await;

        let videos = common::gridfs::bucket(&self.mongo.videos);
        let Some(stored) = common::gridfs::find(&videos, video_fid).await? else {
            return Err(Error::VideoMissing);
        };
        let workdir = match &self.temp_dir {
            Some(dir) => tempfile::Builder::new()
                .prefix("convert-")
                .tempdir_in(dir)?,
            None => tempfile::Builder::new().prefix("convert-").tempdir()?,
        };
        let output = workdir.path().join("output.mp3");
        // The demuxer reads the video in place, fetching only the chunks
        // its reads touch: nothing is spooled to disk.
        let fetched = Arc::new(FetchStats::default());
        let reader = GridFsReader::new(
            tokio::runtime::Handle::current(),
            &self.mongo.videos,
            &stored,
            Arc::clone(&fetched),
        );

        let stem = file_stem(&message.filename).to_owned();
        let started = std::time::Instant::now();
        // FFmpeg reports progress at most once a second; the job and the
        // live events follow from here without blocking the conversion.
        let (progress_tx, progress_rx) = tokio::sync::mpsc::channel::<f64>(4);
        let reporter = self.report_progress(job_id, message, progress_rx);
        let conversion = {
            let (output, title, name) = (output.clone(), stem.clone(), message.filename.clone());
            let limit = self.time_limit;
            let span = tracing::Span::current();
            // The conversion enforces its own time limit on this thread
            // (a blocking thread cannot be killed from outside).
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                let open = move || -> std::io::Result<Box<dyn transcode::ReadSeek>> {
                    Ok(Box::new(reader.reopen()))
                };
                transcode::convert_source_within(
                    transcode::Source::Stream {
                        open: &open,
                        name: &name,
                    },
                    &output,
                    &options,
                    &title,
                    Some(limit),
                    &mut |p| {
                        // A full channel only drops an intermediate figure.
                        let _ = progress_tx.try_send(p);
                    },
                )
            })
        };
        let (report, ()) = tokio::join!(conversion, reporter);
        // Deleted while it converted: its video went with it (the read in
        // place then fails), and there is nobody to tell.
        let failed = fetched.failure().is_some()
            || fetched.damage().is_some()
            || !matches!(report, Ok(Ok(_)));
        if failed && self.mongo.jobs.get(job_id).await?.is_none() {
            metrics::counter!("converter_discarded_total").increment(1);
            return Ok(Outcome::Discarded);
        }
        // A fetch that failed makes the conversion's outcome meaningless
        // (short or unreadable input): another attempt may well succeed.
        if let Some(reason) = fetched.failure() {
            return Err(Error::Fetch(reason));
        }
        if let Some(damage) = fetched.damage() {
            return Err(Error::VideoDamaged(damage));
        }
        let report = report??;
        let fetched_bytes = fetched.bytes.load(Ordering::Relaxed);
        metrics::counter!("converter_fetched_bytes_total").increment(fetched_bytes);
        metrics::counter!("converter_video_bytes_total").increment(stored.length);
        metrics::counter!("converter_audio_seconds_total")
            .increment(report.duration_s.round() as u64);
        let conversion = started.elapsed();
        let elapsed = conversion.as_secs_f64();
        if elapsed > 0.0 {
            metrics::histogram!("converter_realtime_factor").record(report.duration_s / elapsed);
        }

        // Noted on the job before the first chunk: whatever this attempt
        // leaves if it is killed or overtaken (a redelivery after a
        // partition converts the same job at the same time) is found and
        // removed by the attempt that finishes.
        let mp3s = common::gridfs::bucket(&self.mongo.mp3s);
        let storing = std::time::Instant::now();
        let mp3_fid = ObjectId::new();
        if !self.mongo.jobs.add_mp3_attempt(job_id, mp3_fid).await? {
            metrics::counter!("converter_discarded_total").increment(1);
            return Ok(Outcome::Discarded);
        }
        common::gridfs::upload_file_as(
            &mp3s,
            mp3_fid,
            &output,
            &contract::names::mp3_name(&message.filename),
            doc! {
                "owner": &message.username,
                "job_id": job_id,
                "video_fid": video_fid,
                "duration_s": report.duration_s,
                "bitrate": i64::from(report.bitrate_kbps) * 1000,
                "codec": "mp3",
                "filename": &message.filename,
            },
        )
        .await?;
        drop(workdir);
        // What a job read and where its time went: `conversion_ms` is
        // fetching + converting + verifying (scripts/bench-system and
        // scripts/bench-converter read these).
        let fetch = std::time::Duration::from_micros(fetched.fetch_micros.load(Ordering::Relaxed));
        tracing::info!(
            fetched_bytes,
            video_bytes = stored.length,
            round_trips = fetched.round_trips.load(Ordering::Relaxed),
            first_packet_ms = report
                .timings
                .first_packet
                .map(|at| at.duration_since(consumed).as_secs_f64() * 1000.0),
            fetch_ms = fetch.as_millis(),
            convert_ms = conversion
                .saturating_sub(fetch)
                .saturating_sub(report.timings.verify)
                .as_millis(),
            verify_ms = report.timings.verify.as_millis(),
            conversion_ms = conversion.as_millis(),
            store_ms = storing.elapsed().as_millis(),
            audio_s = report.duration_s,
            "timings"
        );

        match self
            .mongo
            .jobs
            .mark_done(job_id, mp3_fid, report.duration_s)
            .await
        {
            Ok(Some(done)) => self.remove_other_attempts(&done).await,
            // Deleted while it converted, or finished by another attempt:
            // this MP3 belongs to nobody, and nobody is told.
            Ok(None) => {
                common::gridfs::delete(&mp3s, mp3_fid).await?;
                metrics::counter!("converter_discarded_total").increment(1);
                return Ok(Outcome::Discarded);
            }
            // The write may have happened all the same (a lost reply), so
            // the MP3 stays: noted as an attempt, it is removed by whichever
            // attempt finishes if the job does not name it.
            Err(err) => return Err(err.into()),
        }
        self.announce(message, mp3_fid, report.duration_s, request_id)
            .await?;
        self.mongo.jobs.mark_published(job_id).await?;
        self.emit(message, JobState::Done, None, Some(mp3_fid))
            .await;
        Ok(Outcome::Converted {
            mp3_fid,
            duration_s: report.duration_s,
        })
    }

    /// Removes the MP3s of a done job's other attempts (killed, or
    /// overtaken by the one it names); best effort: the next redelivery or
    /// `scripts/audit` finds what is left.
    async fn remove_other_attempts(&self, job: &Job) {
        let Some(kept) = job.mp3_fid else { return };
        let others: Vec<ObjectId> = job
            .mp3_attempts
            .iter()
            .copied()
            .filter(|fid| *fid != kept)
            .collect();
        if others.is_empty() {
            return;
        }
        let mp3s = common::gridfs::bucket(&self.mongo.mp3s);
        let mut removed = Vec::new();
        for fid in others {
            match common::gridfs::delete(&mp3s, fid).await {
                Ok(()) => removed.push(fid),
                Err(err) => {
                    tracing::warn!(error = %err, mp3_fid = %fid, "could not remove an earlier attempt's MP3")
                }
            }
        }
        tracing::info!(
            removed = removed.len(),
            "removed what earlier attempts stored"
        );
        if let Err(err) = self.mongo.jobs.forget_mp3_attempts(job.id, &removed).await {
            tracing::warn!(error = %err, "could not forget the removed attempts");
        }
    }

    /// A job that is already done is never converted again; its `mp3`
    /// message is published only if it never went out.
    async fn finish_redelivered(&self, job: &Job, request_id: &str) -> Result<Outcome, Error> {
        self.remove_other_attempts(job).await;
        if job.published_at.is_none()
            && let Some(mp3_fid) = job.mp3_fid
        {
            self.announce(
                &job.video_message(),
                mp3_fid,
                job.duration_s.unwrap_or_default(),
                request_id,
            )
            .await?;
            self.mongo.jobs.mark_published(job.id).await?;
        }
        Ok(Outcome::AlreadyDone)
    }

    async fn announce(
        &self,
        message: &VideoRequest,
        mp3_fid: ObjectId,
        duration_s: f64,
        request_id: &str,
    ) -> Result<(), Error> {
        let done = message.converted(mp3_fid.to_hex(), Some(duration_s));
        self.publisher
            .publish(
                &self.mp3_queue,
                &done.to_vec(),
                common::amqp::request_id_headers(request_id),
            )
            .await?;
        Ok(())
    }

    /// Removes a job's uploaded file that is not media, noting first on the
    /// job that no retry can help it. Best effort: what is left is found by
    /// `scripts/audit` as a failed job's video.
    async fn remove_input(&self, message: &VideoRequest) {
        let (Some(job_id), Some(video_fid)) = (
            common::gridfs::parse_fid(&message.job_id),
            common::gridfs::parse_fid(&message.video_fid),
        ) else {
            return;
        };
        let removed = async {
            self.mongo.jobs.mark_input_removed(job_id).await?;
            common::gridfs::delete(&common::gridfs::bucket(&self.mongo.videos), video_fid).await
        }
        .await;
        match removed {
            Ok(()) => tracing::info!(%video_fid, "removed an upload that is not media"),
            Err(err) => {
                tracing::warn!(error = %err, %video_fid, "could not remove an upload that is not media")
            }
        }
    }

    /// Fails the message's job, as recorded (a message for no job fails none).
    async fn fail_job(&self, message: &VideoRequest, reason: &str) -> Result<(), Error> {
        let Some(job_id) = common::gridfs::parse_fid(&message.job_id) else {
            return Ok(());
        };
        let Some(job) = self.mongo.jobs.get(job_id).await? else {
            return Ok(());
        };
        self.mongo.jobs.mark_failed(job_id, reason).await?;
        // The failure email depends on this event, so it must go out.
        let event = job_event(&job.video_message(), JobState::Failed, Some(reason), None);
        self.publisher
            .publish_event(&self.events_exchange, &event.routing_key(), &event.to_vec())
            .await?;
        Ok(())
    }

    /// Records progress on the job and publishes it as `job.converting`
    /// events until the conversion drops its sender.
    async fn report_progress(
        &self,
        job_id: ObjectId,
        message: &VideoRequest,
        mut updates: tokio::sync::mpsc::Receiver<f64>,
    ) {
        while let Some(progress) = updates.recv().await {
            if let Err(err) = self.mongo.jobs.set_progress(job_id, progress).await {
                tracing::warn!(error = %err, "could not record progress");
            }
            let mut event = job_event(message, JobState::Converting, None, None);
            event.progress = progress;
            if let Err(err) = self
                .publisher
                .publish_event(&self.events_exchange, &event.routing_key(), &event.to_vec())
                .await
            {
                tracing::warn!(error = %err, "could not publish progress");
            }
        }
    }

    /// Announces a state change; the job document stays the source of
    /// truth, so a lost progress event is logged, not retried.
    async fn emit(
        &self,
        message: &VideoRequest,
        state: JobState,
        error: Option<&str>,
        mp3_fid: Option<ObjectId>,
    ) {
        let event = job_event(message, state, error, mp3_fid);
        if let Err(err) = self
            .publisher
            .publish_event(&self.events_exchange, &event.routing_key(), &event.to_vec())
            .await
        {
            tracing::warn!(error = %err, %state, "could not publish a job event");
        }
    }
}

fn file_stem(name: &str) -> &str {
    Path::new(name)
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("audio")
}

fn job_event(
    message: &VideoRequest,
    state: JobState,
    error: Option<&str>,
    mp3_fid: Option<ObjectId>,
) -> JobEvent {
    JobEvent {
        error: error.map(str::to_owned),
        mp3_fid: mp3_fid.map(|id| id.to_hex()),
        ..JobEvent::of(message, state)
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("converter_conversions_total", "outcome" => outcome).increment(1);
}

//! Messages nobody should believe: an `mp3` message or a `job.failed` event
//! that does not match its job record mails nobody, marks nothing, and goes
//! to the dead-letter queue at once with the reason.

use std::time::Duration;

use common::jobs::{Job, JobState};
use common::testing::smtp::MailSink;
use contract::{JobEvent, Mp3Result};
use mongodb::bson::oid::ObjectId;

use crate::harness::Harness;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_ready_messages_mail_nobody_and_are_dead_lettered() {
    let (sink, port) = MailSink::start().await;
    let harness = Harness::start(port, 60_000).await;
    let theirs = harness.insert_job("theirs.mp4").await;
    let converting = harness
        .insert(Job {
            state: JobState::Converting,
            ..Job::queued(
                ObjectId::new(),
                "ana@example.com",
                "busy.mp4",
                ObjectId::new(),
            )
        })
        .await;

    let forgeries = [
        (
            "their job to my address",
            Mp3Result {
                username: "mallory@example.com".into(),
                ..harness.ready_message(theirs).await
            },
            "the message's user is not the job's owner",
        ),
        (
            "their job with another MP3",
            Mp3Result {
                mp3_fid: ObjectId::new().to_hex(),
                ..harness.ready_message(theirs).await
            },
            "the message's MP3 is not the job's",
        ),
        (
            "an unknown job",
            Mp3Result {
                job_id: ObjectId::new().to_hex(),
                ..harness.ready_message(theirs).await
            },
            "no such job",
        ),
        (
            "a job still converting (no MP3 yet)",
            Mp3Result {
                mp3_fid: ObjectId::new().to_hex(),
                ..harness.ready_message(converting).await
            },
            "the message's MP3 is not the job's",
        ),
    ];
    for (what, message, reason) in forgeries {
        harness.publish_ready(&message).await;
        // At once: the retry base is a minute, so a retried message would
        // not be here within the wait.
        let (_, dead) = harness.next_dead_letter(WAIT).await;
        assert!(dead.contains(reason), "{what}: dead-lettered with {dead:?}");
    }

    // The real one still goes out, once, to the owner.
    harness
        .publish_ready(&harness.ready_message(theirs).await)
        .await;
    let mail = sink.wait_for("theirs.mp4", WAIT).await;
    assert!(
        mail.recipients.iter().any(|r| r == "ana@example.com"),
        "{:?}",
        mail.recipients
    );
    assert_eq!(sink.count().await, 1);
    assert!(harness.job(converting).await.notified_at.is_none());
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_failure_events_mail_nobody() {
    let (sink, port) = MailSink::start().await;
    let harness = Harness::start(port, 60_000).await;
    let done = harness.insert_job("fine.mp4").await;
    let failed = harness.insert_job("broken.mp4").await;

    // A failure for a job that is done, and a real failure sent to another
    // address: neither is mailed.
    harness
        .publish_event(&JobEvent {
            job_id: done.to_hex(),
            state: contract::JobState::Failed,
            username: "ana@example.com".into(),
            filename: "fine.mp4".into(),
            progress: 0.0,
            error: Some("it was all a lie".into()),
            mp3_fid: None,
        })
        .await;
    harness
        .mongo
        .jobs
        .mark_failed(failed, "the file has no audio track")
        .await
        .expect("fail");
    harness
        .publish_event(&JobEvent {
            job_id: failed.to_hex(),
            state: contract::JobState::Failed,
            username: "mallory@example.com".into(),
            filename: "broken.mp4".into(),
            progress: 0.0,
            error: Some("whatever".into()),
            mp3_fid: None,
        })
        .await;
    // Then the genuine event for the failed job: mailed to its owner, with
    // the reason recorded on the job (not the event's).
    harness
        .publish_failed(failed, "broken.mp4", "the file has no audio track")
        .await;
    let mail = sink.wait_for("broken.mp4", WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(sink.count().await, 1, "only the genuine failure is mailed");
    assert!(
        mail.recipients.iter().any(|r| r == "ana@example.com"),
        "{:?}",
        mail.recipients
    );
    assert!(mail.data.contains("no audio track"), "{}", mail.data);
    assert!(harness.job(done).await.failure_notified_at.is_none());
    harness.stop().await;
}

/// A ready message for a job its owner deleted since is no forgery: no
/// mail, and nothing dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_message_for_a_deleted_job_mails_nobody_and_is_dropped() {
    let (sink, port) = MailSink::start().await;
    let harness = Harness::start(port, 60_000).await;
    let deleted = harness.insert_job("deleted.mp4").await;
    let message = harness.ready_message(deleted).await;
    harness.mongo.jobs.delete(deleted).await.expect("delete");
    let kept = harness.insert_job("kept.mp4").await;

    harness.publish_ready(&message).await;
    harness
        .publish_ready(&harness.ready_message(kept).await)
        .await;
    sink.wait_for("kept.mp4", WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.count().await, 1, "mailed about a deleted job");
    harness.assert_no_dead_letter().await;
    harness.stop().await;
}

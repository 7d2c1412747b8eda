//! What users receive: the "ready" and "failed" mails, once each.

use std::time::Duration;

use common::jobs::{Job, JobState};
use common::testing::smtp::MailSink;
use mongodb::bson::oid::ObjectId;

use crate::harness::Harness;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_mail_has_recipient_subject_both_parts_link_and_id() {
    let (sink, port) = MailSink::start().await;
    let harness = Harness::start(port, 200).await;
    let job = harness.insert_job("Grüße aus Köln.mp4").await;
    let message = harness.ready_message(job).await;
    let fid = message.mp3_fid.clone();

    harness.publish_ready(&message).await;
    let mail = sink.wait_for(&fid, WAIT).await;

    let text = mail.text();
    assert_eq!(mail.recipients, vec!["ana@example.com".to_owned()]);
    let subject = text
        .lines()
        .find(|l| l.starts_with("Subject: "))
        .expect("subject");
    assert!(
        subject.is_ascii() && subject.contains("=?utf-8?"),
        "RFC 2047 subject: {subject}"
    );
    assert!(text.contains("multipart/alternative"), "{text}");
    assert!(text.contains("Content-Type: text/plain"), "{text}");
    assert!(text.contains("Content-Type: text/html"), "{text}");
    assert!(text.contains(&format!("MP3 id: {fid}")), "{text}");
    assert!(
        text.contains(&format!("http://gateway.test/download?fid={fid}")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "http://gateway.test/api/v1/jobs/{}/mp3",
            job.to_hex()
        )),
        "{text}"
    );
    assert!(
        text.contains("Grüße aus Köln.mp4"),
        "the body names the file: {text}"
    );
    assert!(text.contains("Duration: 1:01"), "{text}");
    harness.wait_for_job(job, |j| j.notified_at.is_some()).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_job_event_produces_the_failure_mail_with_the_reason() {
    let (sink, port) = MailSink::start().await;
    let harness = Harness::start(port, 200).await;
    let job = harness.insert_job("silent.mp4").await;

    harness
        .publish_failed(job, "silent.mp4", "the file has no audio track")
        .await;
    let mail = sink.wait_for("We could not convert silent.mp4", WAIT).await;

    assert!(
        mail.text().contains("Reason: the file has no audio track"),
        "{}",
        mail.text()
    );
    // The job's id, for the support case and for scripts/audit.
    assert!(
        mail.text().contains(&format!("Job: {}", job.to_hex())),
        "{}",
        mail.text()
    );
    harness
        .wait_for_job(job, |j| j.failure_notified_at.is_some())
        .await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_message_for_a_notified_job_sends_nothing_twice() {
    let (sink, port) = MailSink::start().await;
    let harness = Harness::start(port, 200).await;
    let job = harness.insert_job("twice.mp4").await;
    let message = harness.ready_message(job).await;

    harness.publish_ready(&message).await;
    sink.wait_for("twice.mp4", WAIT).await;
    // The redelivery this guards against comes after the handler finished
    // (its ack was lost), so wait until the send has been recorded.
    harness.wait_for_job(job, |j| j.notified_at.is_some()).await;
    harness.publish_ready(&message).await;
    // A marker message behind the duplicate: once it is mailed, the
    // duplicate has been handled too (one consumer, in order).
    let marker = harness.insert_job("marker.mp4").await;
    harness
        .publish_ready(&harness.ready_message(marker).await)
        .await;
    sink.wait_for("marker.mp4", WAIT).await;

    let twice = sink
        .all()
        .await
        .iter()
        .filter(|m| m.text().contains("twice.mp4"))
        .count();
    assert_eq!(twice, 1);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_turned_off_sends_nothing_and_acks() {
    let (sink, port) = MailSink::start().await;
    let harness = Harness::start(port, 200).await;
    // The preference is on the job (the gateway copies it there), and the
    // message says the same.
    let quiet = harness
        .insert(Job {
            state: JobState::Done,
            mp3_fid: Some(ObjectId::new()),
            notify_email: false,
            ..Job::queued(
                ObjectId::new(),
                "ana@example.com",
                "quiet.mp4",
                ObjectId::new(),
            )
        })
        .await;
    let message = harness.ready_message(quiet).await;
    assert!(!message.notify_email);

    harness.publish_ready(&message).await;
    let marker = harness.insert_job("marker.mp4").await;
    harness
        .publish_ready(&harness.ready_message(marker).await)
        .await;
    sink.wait_for("marker.mp4", WAIT).await;

    assert!(sink.find("quiet.mp4").await.is_none());
    assert_eq!(sink.count().await, 1);
    assert!(harness.job(quiet).await.notified_at.is_none());
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deliveries_of_one_message_at_the_same_time_send_one_mail() {
    let (sink, port) = MailSink::start().await;
    let harness = Harness::start(port, 200).await;
    let job = harness.insert_job("at-once.mp4").await;
    let message = harness.ready_message(job).await;

    // Both in flight together (the consumer handles several at once).
    tokio::join!(
        harness.publish_ready(&message),
        harness.publish_ready(&message)
    );
    sink.wait_for("at-once.mp4", WAIT).await;
    harness.wait_for_job(job, |j| j.notified_at.is_some()).await;
    // The loser is retried after the delay, sees the recorded send and
    // stops; a marker behind it proves the queue moved on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let marker = harness.insert_job("after.mp4").await;
    harness
        .publish_ready(&harness.ready_message(marker).await)
        .await;
    sink.wait_for("after.mp4", WAIT).await;

    let sent = sink
        .all()
        .await
        .iter()
        .filter(|m| m.text().contains("at-once.mp4"))
        .count();
    assert_eq!(sent, 1);
    harness.stop().await;
}

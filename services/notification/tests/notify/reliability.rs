//! SMTP outages, refusals and bad messages: retried or dead-lettered, never
//! lost, and the consumer keeps going.

use std::time::Duration;

use common::testing::smtp::MailSink;

use crate::harness::{Harness, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_at_first_delivers_exactly_once_after_it_comes_back() {
    let port = free_port();
    let harness = Harness::start(port, 300).await;
    let job = harness.insert_job("patience.mp4").await;

    harness
        .publish_ready(&harness.ready_message(job).await)
        .await;
    // Attempts at about 0 s, 0.3 s and 0.9 s find nothing listening.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        harness.job(job).await.notified_at.is_none(),
        "nothing could be sent yet"
    );
    let (sink, _) = MailSink::start_with(port, None).await;
    sink.wait_for("patience.mp4", Duration::from_secs(20)).await;
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(sink.count().await, 1, "delivered exactly once");
    harness.wait_for_job(job, |j| j.notified_at.is_some()).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_550_answer_is_dead_lettered_at_once_and_the_consumer_keeps_going() {
    let (sink, port) = MailSink::start_rejecting("550 5.1.1 no such user").await;
    let harness = Harness::start(port, 200).await;
    let first = harness.insert_job("first.mp4").await;
    let second = harness.insert_job("second.mp4").await;

    harness
        .publish_ready(&harness.ready_message(first).await)
        .await;
    let (body, reason) = harness.next_dead_letter(Duration::from_secs(20)).await;
    harness
        .publish_ready(&harness.ready_message(second).await)
        .await;
    let (next_body, _) = harness.next_dead_letter(Duration::from_secs(20)).await;

    assert!(String::from_utf8_lossy(&body).contains(&first.to_hex()));
    assert!(
        reason.contains("550") || reason.to_lowercase().contains("permanent"),
        "{reason}"
    );
    assert!(String::from_utf8_lossy(&next_body).contains(&second.to_hex()));
    assert_eq!(sink.recipient_attempts(), 2, "one attempt each, no retries");
    assert_eq!(sink.count().await, 0);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_dead_lettered_and_the_consumer_keeps_going() {
    let (sink, port) = MailSink::start().await;
    let harness = Harness::start(port, 200).await;

    harness.publish_raw(b"{not json").await;
    let (body, reason) = harness.next_dead_letter(Duration::from_secs(20)).await;
    let job = harness.insert_job("after.mp4").await;
    harness
        .publish_ready(&harness.ready_message(job).await)
        .await;
    sink.wait_for("after.mp4", Duration::from_secs(20)).await;

    assert_eq!(body, b"{not json");
    assert!(reason.contains("invalid"), "{reason}");
    harness.stop().await;
}

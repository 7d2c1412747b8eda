//! Transient failures are retried through delay queues; a failure that
//! never goes away ends in `video.dlq` with the job failed.

use std::time::Duration;

use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;

use common::jobs::JobState;

use crate::harness::{FlakyProxy, World, amqp_url, make_audio, mongodb_uri, start_converter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_unreachable_for_one_attempt_then_the_retry_succeeds() {
    let world = World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let video = make_audio(dir.path(), "patient.m4a", 2);
    let proxy = FlakyProxy::start(true).await;
    let converter =
        start_converter(world.converter_args(&proxy.uri(), &["--retry-base-ms", "1000"])).await;

    let job = world.submit(&video).await;
    // The first attempt cannot reach MongoDB and is parked in the 1 s delay queue.
    let parked = common::amqp::delay_queue(&world.video_queue(), Duration::from_millis(1000));
    assert!(
        world.queue_appears(&parked, Duration::from_secs(20)).await,
        "the first attempt was never retried"
    );
    proxy.set_down(false);
    let done = world
        .wait_for_job(job, Duration::from_secs(60), |j| j.state == JobState::Done)
        .await;

    assert!(done.mp3_fid.is_some());
    assert_eq!(world.mp3s_for(job).await, 1);
    converter.stop().await;
    world.clean_up(&[1000, 2000, 4000, 8000]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_that_persists_is_dead_lettered_after_five_attempts_and_fails_the_job() {
    let world = World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let video = make_audio(dir.path(), "doomed.m4a", 1);
    // Spooling the video fails every time: a transient (disk) error.
    let missing = dir.path().join("no-such-dir");
    let missing = missing.to_str().expect("utf-8");
    let converter = start_converter(world.converter_args(
        &mongodb_uri(),
        &["--retry-base-ms", "100", "--temp-dir", missing],
    ))
    .await;

    let job = world.submit(&video).await;
    let failed = world
        .wait_for_job(job, Duration::from_secs(30), |j| {
            j.state == JobState::Failed
        })
        .await;
    let conn = common::amqp::connect(&amqp_url(), "dlq-reader")
        .await
        .expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    let dlq = common::amqp::dead_letter_queue(&world.video_queue());
    let mut dead = None;
    for _ in 0..100 {
        dead = channel
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic_get");
        if dead.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let dead = dead.expect("the message reached the dead-letter queue");
    let headers = dead
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    assert!(
        matches!(
            headers.inner().get(common::amqp::ATTEMPT_HEADER),
            Some(AMQPValue::LongUInt(5))
        ),
        "{headers:?}"
    );
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("kept failing")),
        "{:?}",
        failed.error
    );
    assert_eq!(world.mp3s_for(job).await, 0);
    converter.stop().await;
    world.clean_up(&[100, 200, 400, 800]).await;
}

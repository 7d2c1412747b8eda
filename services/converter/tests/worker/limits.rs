//! Operations: a conversion over its hard time limit is stopped, fails its
//! job and goes to `video.dlq` while the worker goes on; `/metrics` reports
//! the queue lag (publish to consumption) and timed-out conversions.

use std::time::Duration;

use common::jobs::JobState;

use crate::harness::{World, leftovers, make_audio, mongodb_uri, start_converter};

/// The value of a Prometheus sample line such as `name{labels} 3`.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|series| series == name)
        })
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversion_over_its_time_limit_is_stopped_failed_and_dead_lettered() {
    let world = World::new().await;
    let inputs = tempfile::tempdir().expect("tempdir");
    let spool = tempfile::tempdir().expect("converter temp dir");
    let spool_str = spool.path().to_str().expect("utf-8").to_owned();
    // Five minutes of audio with 0.3 s to convert them.
    let long = make_audio(inputs.path(), "long.m4a", 300);
    let converter = start_converter(world.converter_args(
        &mongodb_uri(),
        &[
            "--temp-dir",
            spool_str.as_str(),
            "--time-limit-factor",
            "0",
            "--time-limit-min-s",
            "0.3",
        ],
    ))
    .await;

    for attempt in ["first", "second"] {
        let job = world.submit(&long).await;
        let failed = world
            .wait_for_job(job, Duration::from_secs(60), |j| {
                j.state == JobState::Failed
            })
            .await;
        let dead = world.dead_lettered(Duration::from_secs(10)).await;

        assert_eq!(
            failed.error.as_deref(),
            Some("the conversion exceeded its time limit of 0.3 s"),
            "{attempt}"
        );
        assert_eq!(
            dead.as_deref(),
            Some("the conversion exceeded its time limit of 0.3 s"),
            "{attempt}: the message is in video.dlq"
        );
        assert_eq!(world.mp3s_for(job).await, 0);
        let left = leftovers(spool.path());
        assert!(left.is_empty(), "{attempt}: left behind {left:?}");
    }
    let (status, body) = converter.get("/healthz").await;
    let (_, metrics) = converter.get("/metrics").await;

    assert!(status.contains("200") && body == "ok", "{status} {body}");
    let timed_out = sample(
        &metrics,
        "converter_conversions_total{outcome=\"timed_out\"}",
    );
    assert!(timed_out.is_some_and(|n| n >= 2.0), "{metrics}");
    converter.stop().await;
    world.clean_up(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_lag_appears_on_metrics_after_a_conversion() {
    let world = World::new().await;
    let inputs = tempfile::tempdir().expect("tempdir");
    let video = make_audio(inputs.path(), "waiting.m4a", 1);
    // The message waits in the queue before any converter is there.
    let job = world.submit(&video).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let converter = start_converter(world.converter_args(&mongodb_uri(), &[])).await;

    world
        .wait_for_job(job, Duration::from_secs(60), |j| j.state == JobState::Done)
        .await;
    let (status, metrics) = converter.get("/metrics").await;

    assert!(status.contains("200"), "{status}");
    assert!(
        metrics.contains("# TYPE converter_queue_lag_seconds histogram"),
        "{metrics}"
    );
    let count = sample(&metrics, "converter_queue_lag_seconds_count");
    let sum = sample(&metrics, "converter_queue_lag_seconds_sum");
    assert!(count.is_some_and(|n| n >= 1.0), "{metrics}");
    // This message alone waited at least 1.5 s.
    assert!(sum.is_some_and(|s| s >= 1.5), "{metrics}");
    converter.stop().await;
    world.clean_up(&[]).await;
}

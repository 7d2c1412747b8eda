//! A converter killed with SIGKILL in the middle of a conversion: the broker
//! redelivers the message, the next worker finishes the job once, and
//! exactly one MP3 exists.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::jobs::JobState;

use crate::harness::{World, make_audio, mongodb_uri};

fn spawn_converter(world: &World) -> Child {
    let args = world.converter_args(&mongodb_uri(), &[]);
    Command::new(env!("CARGO_BIN_EXE_converter"))
        .args(&args[1..])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the converter binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_conversion_redelivers_and_the_job_completes_once() {
    let world = World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Long enough that the kill lands while FFmpeg is still encoding.
    let video = make_audio(dir.path(), "long.m4a", 900);
    let mut first = spawn_converter(&world);

    let job = world.submit(&video).await;
    world
        .wait_for_job(job, Duration::from_secs(60), |j| {
            j.state == JobState::Converting
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let interrupted = world.mongo.jobs.get(job).await.expect("read").expect("job");
    let mut second = spawn_converter(&world);
    let done = world
        .wait_for_job(job, Duration::from_secs(120), |j| j.state == JobState::Done)
        .await;
    second.kill().expect("stop");
    second.wait().expect("reaped");

    assert_eq!(
        interrupted.state,
        JobState::Converting,
        "the kill landed mid-conversion"
    );
    assert_eq!(world.mp3s_for(job).await, 1, "exactly one MP3");
    assert!(
        done.duration_s.is_some_and(|d| (d - 900.0).abs() < 1.0),
        "{:?}",
        done.duration_s
    );
    world.clean_up(&[]).await;
}

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

/// A converter killed after it stored part of an MP3 leaves chunks under
/// the job's id; the next attempt replaces them: one MP3, a whole one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_killed_attempt_stored_is_replaced_not_duplicated() {
    use mongodb::bson::doc;
    let world = crate::harness::World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let job = world
        .store(
            &crate::harness::make_audio(dir.path(), "again.m4a", 2),
            "ana@example.com",
            serde_json::json!({}),
        )
        .await;
    // The half-written MP3 of a dead attempt: chunks, and no file document.
    let chunks = world
        .mongo
        .mp3s
        .collection::<mongodb::bson::Document>("fs.chunks");
    for n in 0..3 {
        chunks
            .insert_one(doc! { "files_id": job.id, "n": n, "data": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: vec![0u8; 1024] } })
            .await
            .expect("chunk");
    }
    let converter =
        crate::harness::start_converter(world.converter_args(&crate::harness::mongodb_uri(), &[]))
            .await;

    world.publish(&job.video_message()).await;
    let done = world
        .wait_for_job(job.id, std::time::Duration::from_secs(60), |j| {
            j.state == common::jobs::JobState::Done
        })
        .await;

    assert_eq!(
        done.mp3_fid,
        Some(job.id),
        "the MP3 is stored under the job's id"
    );
    assert_eq!(world.mp3s_for(job.id).await, 1);
    let path = dir.path().join("out.mp3");
    world.download_mp3(job.id, &path).await;
    let probe = crate::harness::ffprobe(&path);
    assert_eq!(probe["streams"][0]["codec_name"], "mp3", "{probe}");
    converter.stop().await;
    world.clean_up(&[]).await;
}

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

/// A converter killed while it stored its MP3 leaves chunks under an id it
/// noted on the job; the attempt that finishes removes them: one MP3, a
/// whole one, and no chunk without a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_killed_attempt_stored_is_removed_by_the_one_that_finishes() {
    use mongodb::bson::{Binary, Document, doc, oid::ObjectId, spec::BinarySubtype};
    let world = crate::harness::World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let job = world
        .store(
            &crate::harness::make_audio(dir.path(), "again.m4a", 2),
            "ana@example.com",
            serde_json::json!({}),
        )
        .await;
    // The dead attempt: converting, its MP3's id noted, three chunks and
    // no file document.
    let dead = ObjectId::new();
    assert!(
        world
            .mongo
            .jobs
            .mark_converting(job.id)
            .await
            .expect("mark")
    );
    assert!(
        world
            .mongo
            .jobs
            .add_mp3_attempt(job.id, dead)
            .await
            .expect("note")
    );
    let chunks = world.mongo.mp3s.collection::<Document>("fs.chunks");
    for n in 0..3 {
        let data = Binary {
            subtype: BinarySubtype::Generic,
            bytes: vec![0u8; 1024],
        };
        chunks
            .insert_one(doc! { "files_id": dead, "n": n, "data": data })
            .await
            .expect("chunk");
    }
    let converter =
        crate::harness::start_converter(world.converter_args(&crate::harness::mongodb_uri(), &[]))
            .await;

    world.publish(&job.video_message()).await;
    // Done, then the other attempts are cleaned up.
    let done = world
        .wait_for_job(job.id, std::time::Duration::from_secs(60), |j| {
            j.state == common::jobs::JobState::Done && j.mp3_attempts.len() == 1
        })
        .await;

    let mp3 = done.mp3_fid.expect("mp3_fid");
    assert_ne!(mp3, dead);
    assert_eq!(
        done.mp3_attempts,
        vec![mp3],
        "the dead attempt is forgotten"
    );
    assert_eq!(
        chunks
            .count_documents(doc! { "files_id": dead })
            .await
            .expect("count"),
        0,
        "the dead attempt's chunks stayed"
    );
    assert_eq!(world.mp3s_for(job.id).await, 1);
    let path = dir.path().join("out.mp3");
    world.download_mp3(mp3, &path).await;
    let probe = crate::harness::ffprobe(&path);
    assert_eq!(probe["streams"][0]["codec_name"], "mp3", "{probe}");
    converter.stop().await;
    world.clean_up(&[]).await;
}

/// Two attempts at once (a partition's redelivery): the one that finished
/// second found the job done and removed its own MP3; if it died first, a
/// redelivery of the done job removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_done_job_removes_an_overtaken_attempts_mp3() {
    use mongodb::bson::doc;
    let world = crate::harness::World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let audio = crate::harness::make_audio(dir.path(), "twice.m4a", 2);
    let job = world
        .store(&audio, "ana@example.com", serde_json::json!({}))
        .await;
    let mp3s = common::gridfs::bucket(&world.mongo.mp3s);
    let (winner, loser) = (
        mongodb::bson::oid::ObjectId::new(),
        mongodb::bson::oid::ObjectId::new(),
    );
    assert!(
        world
            .mongo
            .jobs
            .mark_converting(job.id)
            .await
            .expect("mark")
    );
    for fid in [winner, loser] {
        assert!(
            world
                .mongo
                .jobs
                .add_mp3_attempt(job.id, fid)
                .await
                .expect("note")
        );
        common::gridfs::upload_file_as(&mp3s, fid, &audio, "twice.mp3", doc! { "job_id": job.id })
            .await
            .expect("store");
    }
    assert!(
        world
            .mongo
            .jobs
            .mark_done(job.id, winner, 2.0)
            .await
            .expect("done")
            .is_some()
    );
    world
        .mongo
        .jobs
        .mark_published(job.id)
        .await
        .expect("published");
    let converter =
        crate::harness::start_converter(world.converter_args(&crate::harness::mongodb_uri(), &[]))
            .await;

    world.publish(&job.video_message()).await;
    let cleaned = world
        .wait_for_job(job.id, std::time::Duration::from_secs(30), |j| {
            j.mp3_attempts.len() == 1
        })
        .await;

    assert_eq!(cleaned.mp3_attempts, vec![winner]);
    assert_eq!(cleaned.mp3_fid, Some(winner));
    assert!(
        common::gridfs::find(&mp3s, loser)
            .await
            .expect("find")
            .is_none()
    );
    assert!(
        common::gridfs::find(&mp3s, winner)
            .await
            .expect("find")
            .is_some()
    );
    converter.stop().await;
    world.clean_up(&[]).await;
}

/// A killed converter's last write (the job done) can land after its
/// redelivery read the job, still converting: the redelivery finds the job
/// done only when it tries to start, and must still announce the MP3 the
/// killed one never did, not drop the message as a mismatch (a soak of
/// `scripts/chaos converter-kills` lost one mail in 1,000 jobs that way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_done_between_the_read_and_the_start_is_still_announced() {
    use mongodb::bson::doc;
    let world = crate::harness::World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let audio = crate::harness::make_audio(dir.path(), "late.m4a", 1);
    let job = world
        .store(&audio, "ana@example.com", serde_json::json!({}))
        .await;
    let jobs = &world.mongo.jobs;
    assert!(jobs.mark_converting(job.id).await.expect("mark"));
    // What the redelivery read: the killed attempt still converting.
    let seen = jobs.get(job.id).await.expect("get").expect("job");
    // Then the killed attempt's write lands: done, never announced.
    let mp3_fid = mongodb::bson::oid::ObjectId::new();
    assert!(jobs.add_mp3_attempt(job.id, mp3_fid).await.expect("note"));
    let mp3s = common::gridfs::bucket(&world.mongo.mp3s);
    common::gridfs::upload_file_as(
        &mp3s,
        mp3_fid,
        &audio,
        "late.mp3",
        doc! { "job_id": job.id },
    )
    .await
    .expect("store");
    assert!(
        jobs.mark_done(job.id, mp3_fid, 1.0)
            .await
            .expect("done")
            .is_some()
    );

    let mp3_queue = format!("{}.mp3", world.prefix);
    let events = format!("{}.events", world.prefix);
    let worker = converter::worker::Worker {
        mongo: world.mongo.clone(),
        publisher: std::sync::Arc::new(
            common::amqp::Publisher::connect(
                &crate::harness::amqp_url(),
                "converter-test",
                &[&mp3_queue],
                &[&events],
            )
            .await
            .expect("broker"),
        ),
        mp3_queue: mp3_queue.clone(),
        events_exchange: events.clone(),
        temp_dir: None,
        time_limit: Default::default(),
    };
    let outcome = worker
        .handle_job(seen, "late-write")
        .await
        .expect("handled");

    assert_eq!(outcome, converter::worker::Outcome::AlreadyDone);
    let announced = world
        .take(&mp3_queue, std::time::Duration::from_secs(10))
        .await
        .expect("the mp3 message went out");
    let converted: serde_json::Value = serde_json::from_slice(&announced.data).expect("json");
    assert_eq!(converted["mp3_fid"], mp3_fid.to_hex());
    assert_eq!(converted["video_fid"], job.video_fid.to_hex());
    let after = jobs.get(job.id).await.expect("get").expect("job");
    assert!(after.published_at.is_some(), "recorded as announced");
    world.clean_up(&[]).await;
}

/// A scale-down: the converter gets SIGTERM mid-conversion and its drain
/// (SHUTDOWN_GRACE_SECS) runs out. It gives the job back unfinished; the
/// next converter does it once, from the start: nothing lost, one MP3, and
/// two conversions in all (the given-back one and the one that finishes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_drain_gives_the_job_back_and_it_is_converted_once_more() {
    let world = World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let video = make_audio(dir.path(), "scaled down.m4a", 900);
    let first = crate::harness::spawn_binary(
        &world.converter_args(&mongodb_uri(), &["--shutdown-grace-secs", "1"]),
    );

    let job = world.submit(&video).await;
    world
        .wait_for_job(job, Duration::from_secs(60), |j| {
            j.state == JobState::Converting
        })
        .await;
    let stopped = std::time::Instant::now();
    let first_logs = crate::harness::stop_binary(first).await;
    let drained_in = stopped.elapsed();
    let interrupted = world.mongo.jobs.get(job).await.expect("read").expect("job");
    let second = crate::harness::spawn_binary(&world.converter_args(&mongodb_uri(), &[]));
    let done = world
        .wait_for_job(job, Duration::from_secs(120), |j| j.state == JobState::Done)
        .await;
    let second_logs = crate::harness::stop_binary(second).await;

    assert_eq!(
        interrupted.state,
        JobState::Converting,
        "stopped mid-conversion"
    );
    assert!(
        drained_in < Duration::from_secs(15),
        "a 1 s drain took {drained_in:?}"
    );
    let started = |logs: &str| {
        logs.lines()
            .filter(|line| line.contains("conversion started") && line.contains(&job.to_hex()))
            .count()
    };
    assert_eq!(
        (started(&first_logs), started(&second_logs)),
        (1, 1),
        "converted once more, no more"
    );
    assert_eq!(world.mp3s_for(job).await, 1, "exactly one MP3");
    assert!(done.duration_s.is_some_and(|d| (d - 900.0).abs() < 1.0));
    world.clean_up(&[]).await;
}

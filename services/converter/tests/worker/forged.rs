//! Messages nobody should believe: anyone who can publish to `video` (a
//! compromised pod, a leaked credential) must not be able to convert someone
//! else's video, touch someone else's job, or make an MP3 that no job owns.
//! Each goes to the dead-letter queue at once, with a reason, and changes
//! nothing.

use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId};

use common::jobs::JobState;
use contract::VideoRequest;

use crate::harness::{World, make_audio, mongodb_uri, start_converter};

/// Every MP3 stored in this world.
async fn mp3_count(world: &World) -> u64 {
    world
        .mongo
        .mp3s
        .collection::<mongodb::bson::Document>("fs.files")
        .count_documents(doc! {})
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_video_messages_are_dead_lettered_and_change_no_job() {
    let world = World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mine = world
        .store(
            &make_audio(dir.path(), "mine.m4a", 1),
            "mallory@example.com",
            serde_json::json!({}),
        )
        .await;
    let theirs = world
        .store(
            &make_audio(dir.path(), "theirs.m4a", 1),
            "victim@example.com",
            serde_json::json!({}),
        )
        .await;
    world
        .mongo
        .jobs
        .mark_failed(mine.id, "an earlier failure")
        .await
        .expect("fail my job");
    let converter = start_converter(world.converter_args(&mongodb_uri(), &[])).await;

    let forgeries = [
        (
            "their video for my failed job",
            VideoRequest {
                video_fid: theirs.video_fid.to_hex(),
                ..mine.video_message()
            },
            "the message's video is not the job's",
        ),
        (
            "an unknown job in any name",
            VideoRequest {
                job_id: ObjectId::new().to_hex(),
                username: "whoever@example.com".into(),
                ..theirs.video_message()
            },
            "no such job",
        ),
        (
            "my video for their job",
            VideoRequest {
                video_fid: mine.video_fid.to_hex(),
                username: "mallory@example.com".into(),
                ..theirs.video_message()
            },
            "the message's video is not the job's",
        ),
        (
            "their job in my name",
            VideoRequest {
                username: "mallory@example.com".into(),
                ..theirs.video_message()
            },
            "the message's user is not the job's owner",
        ),
        (
            "my own failed job without a retry",
            mine.video_message(),
            "the job has failed",
        ),
    ];
    for (what, message, reason) in forgeries {
        world.publish(&message).await;
        let dead = world
            .dead_lettered(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{what}: not dead-lettered"));
        assert!(dead.contains(reason), "{what}: dead-lettered with {dead:?}");
    }

    // Nothing changed: no MP3 anywhere, both jobs as they were.
    assert_eq!(mp3_count(&world).await, 0);
    let mine_now = world
        .mongo
        .jobs
        .get(mine.id)
        .await
        .expect("get")
        .expect("mine");
    assert_eq!(mine_now.state, JobState::Failed);
    assert_eq!(mine_now.mp3_fid, None);
    let theirs_now = world
        .mongo
        .jobs
        .get(theirs.id)
        .await
        .expect("get")
        .expect("theirs");
    assert_eq!(theirs_now.state, JobState::Queued);
    assert_eq!(theirs_now.updated_at, theirs.updated_at);
    // Counted as invalid (the recorder is shared by the tests of this
    // binary, so at least these five).
    let (_, metrics) = converter.get("/metrics").await;
    let invalid: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix(r#"converter_conversions_total{outcome="invalid"} "#))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(invalid >= 5.0, "{metrics}");
    converter.stop().await;
    world.clean_up(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_record_not_the_message_says_owner_file_name_and_options() {
    let world = World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let job = world
        .store(
            &make_audio(dir.path(), "recorded.m4a", 1),
            "ana@example.com",
            serde_json::json!({"channels": "mono"}),
        )
        .await;
    let converter = start_converter(world.converter_args(&mongodb_uri(), &[])).await;

    // The same job and video, but a file name and options of the sender's choosing.
    world
        .publish(&VideoRequest {
            filename: "forged.m4a".into(),
            options: contract::Options::from_json(&serde_json::json!({"channels": "stereo"}))
                .expect("valid options"),
            ..job.video_message()
        })
        .await;
    let done = world
        .wait_for_job(job.id, Duration::from_secs(60), |j| {
            j.state == JobState::Done
        })
        .await;

    let mp3 = world
        .mongo
        .mp3s
        .collection::<mongodb::bson::Document>("fs.files")
        .find_one(doc! { "metadata.job_id": job.id })
        .await
        .expect("find")
        .expect("the MP3");
    assert_eq!(mp3.get_str("filename").expect("name"), "recorded.mp3");
    let metadata = mp3.get_document("metadata").expect("metadata");
    assert_eq!(metadata.get_str("owner").expect("owner"), "ana@example.com");
    let path = dir.path().join("out.mp3");
    world.download_mp3(done.mp3_fid.expect("mp3"), &path).await;
    let probe = crate::harness::ffprobe(&path);
    assert_eq!(probe["streams"][0]["channels"], 1, "the job's options");
    converter.stop().await;
    world.clean_up(&[]).await;
}

/// A message for a job that was removed (its upload undone after the
/// broker went down before confirming the publish, or the job deleted while
/// queued) is no forgery: it is dropped, not dead-lettered, so a broker
/// restart leaves nothing for an operator to look at. A job that never was
/// is still dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_a_withdrawn_job_is_dropped_not_dead_lettered() {
    let world = World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let job = world
        .store(
            &make_audio(dir.path(), "undone.m4a", 1),
            "ana@example.com",
            serde_json::json!({}),
        )
        .await;
    world.mongo.jobs.delete(job.id).await.expect("withdraw");
    assert!(world.mongo.jobs.was_withdrawn(job.id).await.expect("read"));
    let converter = start_converter(world.converter_args(&mongodb_uri(), &[])).await;

    world.publish(&job.video_message()).await;
    let never = VideoRequest {
        job_id: ObjectId::new().to_hex(),
        ..job.video_message()
    };
    world.publish(&never).await;
    let dead = world
        .dead_lettered(Duration::from_secs(30))
        .await
        .expect("the unknown job's message dead-lettered");
    assert!(dead.contains("no such job (unknown)"), "{dead}");
    assert_eq!(
        world.dead_lettered(Duration::from_secs(3)).await,
        None,
        "the withdrawn job's message was dead-lettered too"
    );
    assert_eq!(mp3_count(&world).await, 0);
    converter.stop().await;
    world.clean_up(&[]).await;
}

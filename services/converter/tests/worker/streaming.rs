//! The video is read in place from GridFS: only the chunks the demuxer's
//! reads touch are fetched, nothing is spooled, and a fetch cut off
//! mid-stream is a transient failure that the next attempt overcomes.

use std::time::Duration;

use common::jobs::JobState;

use crate::harness::{
    FlakyProxy, World, ffmpeg, ffprobe, leftovers, make_audio, mongodb_uri, spawn_binary,
    start_converter, stop_binary,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mp4_is_read_in_place_and_most_of_its_picture_never_leaves_mongodb() {
    let world = World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = tempfile::tempdir().expect("converter temp dir");
    // A camera-like MP4: 720p H.264 at about 10 Mbit/s and AAC, the two
    // written in runs of one second (fragments), as cameras and phones
    // interleave them. (FFmpeg's own muxer interleaves frame by frame,
    // which puts audio into every GridFS chunk.)
    let video = dir.path().join("camera.mp4");
    ffmpeg(
        "-f lavfi -i testsrc2=s=1280x720:r=25:d=20 -f lavfi -i sine=frequency=440:sample_rate=44100:d=20 \
         -c:v libx264 -preset ultrafast -qp 12 -g 25 -c:a aac -b:a 128k -shortest \
         -movflags +frag_keyframe -frag_duration 1000000",
        &[video.to_str().expect("utf-8")],
    );
    let size = std::fs::metadata(&video).expect("size").len();
    // The binary itself, for its own log of this job.
    let mut args = world.converter_args(&mongodb_uri(), &[]);
    args.extend([
        "--temp-dir".to_owned(),
        spool.path().to_str().expect("utf-8").to_owned(),
    ]);
    let child = spawn_binary(&args);
    let job = world.submit(&video).await;
    let done = world
        .wait_for_job(job, Duration::from_secs(60), |j| j.state == JobState::Done)
        .await;
    let logs = stop_binary(child).await;

    let timings: serde_json::Value = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["message"] == "timings")
        .unwrap_or_else(|| panic!("no timings line: {logs}"));
    let number = |field: &str| {
        let value = &timings[field];
        value
            .as_u64()
            .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
            .unwrap_or_else(|| panic!("{field} in {timings}"))
    };
    assert_eq!(number("video_bytes"), size, "{timings}");
    let fetched = number("fetched_bytes");
    // Most of it never leaves MongoDB (measured: 27%, the index scan, the
    // first second, and one chunk per fragment).
    assert!(
        fetched > 0 && fetched * 2 < size,
        "fetched {fetched} of {size} bytes: {timings}"
    );
    let mp3 = dir.path().join("camera.mp3");
    world.download_mp3(done.mp3_fid.expect("mp3"), &mp3).await;
    let probe = ffprobe(&mp3);
    let seconds: f64 = probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("duration");
    assert!((seconds - 20.0).abs() < 0.2, "{probe}");
    assert!(
        leftovers(spool.path()).is_empty(),
        "nothing stays in the temp dir"
    );
    world.clean_up(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_cut_off_mid_stream_is_retried_and_the_job_completes_once() {
    let world = World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Twenty minutes of audio: read in windows of chunks over seconds.
    let video = make_audio(dir.path(), "long.m4a", 1200);
    let proxy = FlakyProxy::start(false).await;
    let converter =
        start_converter(world.converter_args(&proxy.uri(), &["--retry-base-ms", "1000"])).await;

    let job = world.submit(&video).await;
    world
        .wait_for_job(job, Duration::from_secs(60), |j| {
            j.state == JobState::Converting && j.progress > 0.0
        })
        .await;
    // MongoDB goes away mid-stream for longer than the driver waits for a
    // server (5 s), so the fetch in flight fails.
    proxy.set_down(true);
    proxy.cut();
    let parked = common::amqp::delay_queue(&world.video_queue(), Duration::from_millis(1000));
    assert!(
        world.queue_appears(&parked, Duration::from_secs(40)).await,
        "the cut attempt was not retried"
    );
    proxy.set_down(false);
    let done = world
        .wait_for_job(job, Duration::from_secs(120), |j| j.state == JobState::Done)
        .await;

    assert_eq!(world.mp3s_for(job).await, 1);
    assert!(
        done.duration_s.is_some_and(|d| (d - 1200.0).abs() < 0.5),
        "{done:?}"
    );
    converter.stop().await;
    world.clean_up(&[1000, 2000, 4000, 8000]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_video_missing_a_chunk_fails_for_good_without_retries() {
    use mongodb::bson::{Document, doc};
    let world = World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let video = make_audio(dir.path(), "holed.m4a", 120);
    let converter =
        start_converter(world.converter_args(&mongodb_uri(), &["--retry-base-ms", "200"])).await;
    let job = world
        .store(&video, "ana@example.com", serde_json::json!({}))
        .await;
    // A chunk in the middle is gone: the stored file itself is broken.
    world
        .mongo
        .videos
        .collection::<Document>("fs.chunks")
        .delete_one(doc! { "files_id": job.video_fid, "n": 2 })
        .await
        .expect("delete a chunk");

    world.publish(&job.video_message()).await;
    let failed = world
        .wait_for_job(job.id, Duration::from_secs(60), |j| {
            j.state == JobState::Failed
        })
        .await;

    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("chunk 2")),
        "{failed:?}"
    );
    let parked = common::amqp::delay_queue(&world.video_queue(), Duration::from_millis(200));
    assert!(
        !world.queue_exists(&parked).await,
        "a broken file was retried"
    );
    assert_eq!(world.mp3s_for(job.id).await, 0);
    converter.stop().await;
    world.clean_up(&[]).await;
}

//! The corpus through the whole worker: every kind of upload the issue
//! lists, made in the test by the FFmpeg CLI, goes through GridFS, the
//! `video` queue and the converter. Valid inputs become MP3s that decode to
//! the right length, rate, channels and tags; invalid ones fail their job
//! with the expected reason while the worker stays healthy, and nothing is
//! ever left in the converter's temp dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use common::jobs::{Job, JobState};

use crate::harness::{World, ffmpeg, ffprobe, leftovers, mongodb_uri, start_converter};

/// Small video frames: the converter never decodes them, so their size only
/// costs the test's own encoding time.
const VIDEO: &str = "-f lavfi -i testsrc=size=160x120:rate=10";

/// A valid upload and what its MP3 must look like.
struct Case {
    file: &'static str,
    /// FFmpeg CLI arguments that write `file` (the path is appended).
    make: String,
    options: Value,
    seconds: f64,
    rate: u32,
    channels: u16,
    /// The expected title tag (the source's, else the file's stem).
    title: &'static str,
    artist: Option<&'static str>,
}

fn sine(hz: u32, rate: u32, seconds: f64) -> String {
    format!("-f lavfi -i sine=frequency={hz}:sample_rate={rate}:duration={seconds}")
}

fn video_and_audio(seconds: f64, rate: u32, codecs: &str) -> String {
    format!(
        "{VIDEO}:duration={seconds} {} {codecs} -ac 2 -shortest",
        sine(440, rate, seconds)
    )
}

fn valid_cases() -> Vec<Case> {
    let case = |file, make: String, seconds, rate, channels| Case {
        file,
        make,
        options: json!({}),
        seconds,
        rate,
        channels,
        title: Path::new(file)
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or_default(),
        artist: None,
    };
    vec![
        Case {
            title: "Sunset",
            artist: Some("Ana"),
            ..case(
                "h264-aac.mp4",
                video_and_audio(
                    3.0,
                    44_100,
                    "-c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac \
                     -metadata title=Sunset -metadata artist=Ana",
                ),
                3.0,
                44_100,
                2,
            )
        },
        case(
            "vp9-opus.mkv",
            video_and_audio(
                3.0,
                48_000,
                "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -c:a libopus",
            ),
            3.0,
            48_000,
            2,
        ),
        case(
            "vp8-vorbis.webm",
            video_and_audio(
                3.0,
                44_100,
                "-c:v libvpx -deadline realtime -cpu-used 8 -c:a libvorbis",
            ),
            3.0,
            44_100,
            2,
        ),
        // MP3 audio: copied as it is (the fast path).
        Case {
            title: "Camcorder",
            ..case(
                "mpeg4-mp3.avi",
                video_and_audio(
                    3.0,
                    44_100,
                    "-c:v mpeg4 -c:a libmp3lame -q:a 4 -metadata title=Camcorder",
                ),
                3.0,
                44_100,
                2,
            )
        },
        // PCM in QuickTime, converted to what the job asks for.
        Case {
            options: json!({"sample_rate": 22050, "channels": "mono"}),
            ..case(
                "pcm.mov",
                video_and_audio(3.0, 48_000, "-c:v mpeg4 -c:a pcm_s16le"),
                3.0,
                22_050,
                1,
            )
        },
        case(
            "flv1-aac.flv",
            video_and_audio(3.0, 44_100, "-c:v flv -c:a aac"),
            3.0,
            44_100,
            2,
        ),
        case(
            "mpeg2-ac3.ts",
            video_and_audio(3.0, 48_000, "-c:v mpeg2video -c:a ac3 -f mpegts"),
            3.0,
            48_000,
            2,
        ),
        case(
            "wmv2-wma.wmv",
            video_and_audio(3.0, 44_100, "-c:v wmv2 -c:a wmav2"),
            3.0,
            44_100,
            2,
        ),
        // 5.1 is downmixed to stereo.
        case(
            "surround.mkv",
            format!("{} -ac 6 -c:a aac", sine(440, 48_000, 3.0)),
            3.0,
            48_000,
            2,
        ),
        case(
            "mono-8k.wav",
            format!("{} -ac 1 -c:a pcm_s16le", sine(300, 8_000, 3.0)),
            3.0,
            8_000,
            1,
        ),
        case(
            "half-second.mp4",
            video_and_audio(
                0.5,
                44_100,
                "-c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac",
            ),
            0.5,
            44_100,
            2,
        ),
        // Ten minutes, audio only so that making it stays quick.
        case(
            "ten-minutes.ogg",
            format!("{} -ac 1 -c:a libvorbis -q:a 0", sine(440, 22_050, 600.0)),
            600.0,
            22_050,
            1,
        ),
        // Track 0 is 2 s of mono 44.1 kHz, track 1 is 4 s of stereo 48 kHz:
        // the option picks the second.
        Case {
            options: json!({"audio_track": 1}),
            ..case(
                "two-tracks.mkv",
                format!(
                    "{} {} -map 0 -map 1 -c:a aac -ac:a:1 2",
                    sine(440, 44_100, 2.0),
                    sine(660, 48_000, 4.0)
                ),
                4.0,
                48_000,
                2,
            )
        },
    ]
}

/// Decodes the MP3 with the FFmpeg CLI (errors are fatal) and counts its
/// samples: the length a gapless player plays.
fn decoded_seconds(mp3: &Path, rate: u32) -> f64 {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(mp3)
        .args(["-ac", "1", "-f", "s16le", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        output.status.success(),
        "{} does not decode: {}",
        mp3.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.stdout.len() / 2) as f64 / f64::from(rate)
}

/// MD5 of the audio packets as stored (no decoding), to prove a stream copy.
fn packets_md5(path: &Path) -> String {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:a", "-c", "copy", "-f", "md5", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn within_tolerance(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= (expected * 0.01).max(0.1)
}

async fn finished(world: &World, job: mongodb::bson::oid::ObjectId) -> Job {
    world
        .wait_for_job(job, Duration::from_secs(180), |j| {
            matches!(j.state, JobState::Done | JobState::Failed)
        })
        .await
}

fn make(dir: &Path, case: &Case) -> PathBuf {
    let path = dir.join(case.file);
    ffmpeg(&case.make, &[path.to_str().expect("utf-8 path")]);
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_valid_input_becomes_a_correct_mp3() {
    let world = World::new().await;
    let inputs = tempfile::tempdir().expect("tempdir");
    let spool = tempfile::tempdir().expect("converter temp dir");
    let spool_str = spool.path().to_str().expect("utf-8").to_owned();
    let converter =
        start_converter(world.converter_args(&mongodb_uri(), &["--temp-dir", spool_str.as_str()]))
            .await;

    let cases = valid_cases();
    let mut jobs = Vec::new();
    for case in &cases {
        let input = make(inputs.path(), case);
        jobs.push(world.submit_with(&input, case.options.clone()).await);
    }

    let mut failures = Vec::new();
    for (case, job) in cases.iter().zip(jobs) {
        let job = finished(&world, job).await;
        let name = case.file;
        if job.state != JobState::Done {
            failures.push(format!("{name}: {:?}", job.error));
            continue;
        }
        let duration = job.duration_s.expect("duration on a done job");
        if !within_tolerance(duration, case.seconds) {
            failures.push(format!(
                "{name}: job says {duration} s, not {}",
                case.seconds
            ));
        }
        let mp3 = inputs.path().join(format!("{name}.mp3"));
        world.download_mp3(job.mp3_fid.expect("mp3 id"), &mp3).await;
        let decoded = decoded_seconds(&mp3, case.rate);
        if !within_tolerance(decoded, case.seconds) {
            failures.push(format!(
                "{name}: decodes to {decoded} s, not {}",
                case.seconds
            ));
        }
        let probe = ffprobe(&mp3);
        let stream = &probe["streams"][0];
        let found = (
            probe["format"]["format_name"].as_str().unwrap_or_default(),
            stream["codec_name"].as_str().unwrap_or_default(),
            stream["sample_rate"].as_str().unwrap_or_default(),
            stream["channels"].as_u64().unwrap_or_default(),
        );
        let wanted = (
            "mp3",
            "mp3",
            case.rate.to_string(),
            u64::from(case.channels),
        );
        if (found.0, found.1, found.2, found.3) != (wanted.0, wanted.1, wanted.2.as_str(), wanted.3)
        {
            failures.push(format!("{name}: {found:?} instead of {wanted:?}"));
        }
        let tags = &probe["format"]["tags"];
        if tags["title"] != case.title {
            failures.push(format!(
                "{name}: title {} not {:?}",
                tags["title"], case.title
            ));
        }
        if let Some(artist) = case.artist
            && tags["artist"] != artist
        {
            failures.push(format!("{name}: artist {} not {artist:?}", tags["artist"]));
        }
        if name.ends_with(".avi") && packets_md5(&mp3) != packets_md5(&inputs.path().join(name)) {
            failures.push(format!("{name}: the MP3 stream was not copied as it is"));
        }
    }
    let left = leftovers(spool.path());
    let (status, _) = converter.get("/healthz").await;

    assert!(failures.is_empty(), "{failures:#?}");
    assert!(left.is_empty(), "left in the temp dir: {left:?}");
    assert!(status.contains("200"), "{status}");
    converter.stop().await;
    world.clean_up(&[]).await;
}

/// An invalid upload and the reason its job must fail with.
struct Invalid {
    file: &'static str,
    reason: &'static str,
}

fn make_invalid(dir: &Path, file: &str) -> PathBuf {
    let path = dir.join(file);
    let path_str = path.to_str().expect("utf-8 path");
    match file {
        "silent.mp4" => ffmpeg(
            &format!("{VIDEO}:duration=2 -c:v libx264 -preset ultrafast -pix_fmt yuv420p"),
            &[path_str],
        ),
        "truncated.mp4" => {
            // Cut off before the index MP4 writes at its end, as an
            // interrupted upload is.
            let whole = dir.join("whole.mp4");
            ffmpeg(
                &video_and_audio(
                    4.0,
                    44_100,
                    "-c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac",
                ),
                &[whole.to_str().expect("utf-8")],
            );
            let bytes = std::fs::read(&whole).expect("read");
            std::fs::write(&path, &bytes[..bytes.len() * 6 / 10]).expect("write");
        }
        "noise.mp4" => {
            // A fixed xorshift sequence: the same bytes every run.
            let mut state = 0x2545_f491_4f6c_dd1d_u64;
            let bytes: Vec<u8> = (0..64 * 1024)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state.to_le_bytes()[0]
                })
                .collect();
            std::fs::write(&path, bytes).expect("write");
        }
        "empty.mp4" => std::fs::write(&path, b"").expect("write"),
        other => panic!("no recipe for {other}"),
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_inputs_fail_with_a_reason_and_leave_nothing_behind() {
    let world = World::new().await;
    let inputs = tempfile::tempdir().expect("tempdir");
    let spool = tempfile::tempdir().expect("converter temp dir");
    let spool_str = spool.path().to_str().expect("utf-8").to_owned();
    let converter =
        start_converter(world.converter_args(&mongodb_uri(), &["--temp-dir", spool_str.as_str()]))
            .await;
    let unreadable = "the file is not a video or audio file FFmpeg can read";
    let cases = [
        Invalid {
            file: "silent.mp4",
            reason: "the file has no audio track",
        },
        Invalid {
            file: "truncated.mp4",
            reason: unreadable,
        },
        Invalid {
            file: "noise.mp4",
            reason: unreadable,
        },
        Invalid {
            file: "empty.mp4",
            reason: unreadable,
        },
    ];

    for case in &cases {
        let input = make_invalid(inputs.path(), case.file);
        let job = world.submit(&input).await;
        let job = finished(&world, job).await;

        assert_eq!(job.state, JobState::Failed, "{}: {job:?}", case.file);
        let error = job.error.unwrap_or_default();
        assert!(
            error.starts_with(case.reason),
            "{}: {error:?} should start with {:?}",
            case.file,
            case.reason
        );
        assert_eq!(job.mp3_fid, None);
        let left = leftovers(spool.path());
        assert!(left.is_empty(), "{}: left behind {left:?}", case.file);
        let (status, body) = converter.get("/healthz").await;
        assert!(status.contains("200") && body == "ok", "{status} {body}");
    }

    // The worker goes on converting.
    let fine = crate::harness::make_audio(inputs.path(), "after.m4a", 1);
    let job = world.submit(&fine).await;
    let job = finished(&world, job).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert!(leftovers(spool.path()).is_empty());
    converter.stop().await;
    world.clean_up(&[]).await;
}

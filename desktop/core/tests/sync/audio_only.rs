//! Only the sound travels: a folder of real videos gives the same MP3s
//! (the same decoded sound, the same length) whether the app uploads each
//! video's audio or the whole file, and each job says what was sent and
//! what it came from.

use std::path::{Path, PathBuf};
use std::process::Command;

use desktop_core::store::{Item, Stage};

use crate::harness::{Desktop, Stack};

/// The real sample videos with audio (`scripts/fetch-media`).
fn real_videos() -> Vec<PathBuf> {
    let dir = common::testing::media_dir();
    [
        "filetype__sample.mp4",
        "puremagic__test.avi",
        "puremagic__test.flv",
        "puremagic__test.mp4",
        "puremagic__test.mpg",
        "puremagic__test.wmv",
    ]
    .iter()
    .map(|name| dir.join(name))
    .collect()
}

/// An MP3 decoded to 16-bit mono samples at its own rate.
fn pcm(mp3: &Path) -> Vec<i16> {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(mp3)
        .args(["-ac", "1", "-f", "s16le", "-"])
        .output()
        .expect("ffmpeg decodes");
    assert!(output.status.success(), "decoding {}", mp3.display());
    output
        .stdout
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect()
}

async fn job(stack: &Stack, id: &str) -> serde_json::Value {
    let body: serde_json::Value = crate::harness::http()
        .get(format!("{}/api/v1/jobs/{id}", stack.gateway))
        .bearer_auth(&stack.token)
        .send()
        .await
        .expect("job")
        .json()
        .await
        .expect("job json");
    body["job"].clone()
}

async fn convert_all(desktop: &Desktop, videos: &[PathBuf]) -> Vec<Item> {
    for video in videos {
        let name = video.file_name().expect("name");
        std::fs::copy(video, desktop.watch_dir().join(name)).expect("copy in");
    }
    let mut done = Vec::new();
    for video in videos {
        let name = video.file_name().expect("name").to_string_lossy();
        done.push(desktop.wait_for(&name, Stage::Done).await);
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audio_alone_gives_the_mp3s_the_whole_videos_give() {
    let stack = Stack::start().await;
    let videos = real_videos();
    let audio = Desktop::start(&stack.gateway, &stack.token).await;
    let audio_items = convert_all(&audio, &videos).await;
    let dirs = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dirs.path().join("watch")).expect("watch dir");
    let whole = Desktop::start_in(dirs, &stack.gateway, &stack.token, |settings| {
        settings.upload_audio_only = false;
    })
    .await;
    let whole_items = convert_all(&whole, &videos).await;

    for (sent, full) in audio_items.iter().zip(&whole_items) {
        let name = &sent.name;
        // What the app sent is what the server received and stored.
        let sent_job = job(&stack, sent.job_id.as_deref().expect("job")).await;
        let full_job = job(&stack, full.job_id.as_deref().expect("job")).await;
        let uploaded = sent.upload_bytes.expect("upload bytes");
        assert_eq!(sent_job["size_bytes"], uploaded, "{name}: {sent_job}");
        assert!(uploaded < sent.size, "{name}: {uploaded} of {}", sent.size);
        assert_eq!(sent_job["source"]["size_bytes"], sent.size, "{name}");
        assert_eq!(sent_job["source"]["sha256"], sent.sha256.as_str(), "{name}");
        assert_eq!(sent_job["filename"], name.as_str(), "the original name");
        assert_eq!(full.upload_bytes, Some(full.size), "{name}");
        assert_eq!(full_job["size_bytes"], full.size, "{name}");
        assert!(full_job.get("source").is_none(), "{name}: {full_job}");

        let (a, b) = (
            pcm(sent.mp3_path.as_deref().expect("mp3")),
            pcm(full.mp3_path.as_deref().expect("mp3")),
        );
        // Named after the video, as ever (`name (2).mp3` when taken: the
        // samples share a stem).
        let stem = Path::new(name).file_stem().expect("stem").to_string_lossy();
        let mp3_name = sent.mp3_path.as_deref().and_then(Path::file_name);
        let mp3_name = mp3_name.expect("mp3 name").to_string_lossy();
        assert!(mp3_name.starts_with(&*stem), "{name}: {mp3_name}");
        let longer = a.len().max(b.len()) as f64;
        assert!(
            (a.len() as f64 - b.len() as f64).abs() <= longer * 0.01,
            "{name}: {} vs {} samples",
            a.len(),
            b.len()
        );
        // The same source PCM through the same encoder: at most rounding.
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (i32::from(*x) - i32::from(*y)).abs())
            .max()
            .unwrap_or(0);
        assert!(worst <= 64, "{name}: samples differ by up to {worst}");
    }
    // Nothing is left of the extracted audio.
    let scratch = audio.dirs.path().join("state/extracting");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    audio.stop().await;
    whole.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_without_audio_is_sent_whole_and_fails_on_the_server_as_before() {
    let stack = Stack::start().await;
    let desktop = Desktop::start(&stack.gateway, &stack.token).await;
    let dir = common::testing::media_dir();
    std::fs::copy(
        dir.join("filetype__sample.mov"),
        desktop.watch_dir().join("silent.mov"),
    )
    .expect("copy in");
    let failed = desktop.wait_for("silent.mov", Stage::Failed).await;
    assert_eq!(failed.upload_bytes, Some(failed.size), "sent whole");
    let reason = failed.error.unwrap_or_default();
    assert!(reason.contains("no sound"), "{reason}");
    assert!(
        failed
            .detail
            .is_some_and(|detail| detail.contains("no audio")),
        "the server's words kept as the detail"
    );
    desktop.stop().await;
    stack.stop().await;
}

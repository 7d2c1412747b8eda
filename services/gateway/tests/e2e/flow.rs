//! The classic flow: log in, upload, receive the email, download the MP3.

use std::time::Duration;

use crate::helpers::{
    AuthDb, TestStack, assert_decodes_as_mp3, audio_duration, make_video, media_dir,
    mp3_id_from_mail,
};

const CONVERSION_TIMEOUT: Duration = Duration::from_secs(90);

async fn classic_flow(db: AuthDb) {
    // Arrange
    let stack = TestStack::start(db).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let video = make_video(dir.path(), "tone clip.mp4", 4, true);
    stack.add_user("alice@example.com", "correct horse").await;

    // Act
    let token = stack.token("alice@example.com", "correct horse").await;
    let upload = stack.upload(&token, &[&video]).await;
    assert_eq!(upload.status(), 200);
    let job_id = upload.headers()["x-job-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(upload.headers().contains_key("x-video-fid"));
    assert_eq!(upload.text().await.expect("body"), "success!");
    let mail = stack
        .mail
        .wait_for("tone clip.mp4", CONVERSION_TIMEOUT)
        .await;
    let text = mail.text();
    let fid = mp3_id_from_mail(&text);
    let download = stack.download(&token, &fid).await;

    // Assert
    assert_eq!(mail.recipients, vec!["alice@example.com".to_owned()]);
    assert!(
        text.contains("Subject: Your MP3 is ready: tone clip.mp4"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Download: {}/download?fid={fid}", stack.gateway)),
        "mail has the download URL:\n{text}"
    );
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "audio/mpeg");
    let disposition = download.headers()["content-disposition"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(disposition.contains("tone clip.mp3"), "{disposition}");
    let mp3 = dir.path().join("out.mp3");
    std::fs::write(&mp3, download.bytes().await.expect("mp3 bytes")).expect("write mp3");
    assert_decodes_as_mp3(&mp3);
    let (source, converted) = (audio_duration(&video), audio_duration(&mp3));
    assert!(
        (converted - source).abs() <= source * 0.02,
        "duration {converted} s vs source audio {source} s"
    );
    let job = stack.wait_for_job(&job_id, CONVERSION_TIMEOUT).await;
    assert_eq!(job.mp3_fid.map(|f| f.to_hex()), Some(fid));
    assert!(
        job.notified_at.is_some(),
        "the job records that the mail went out"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classic_flow_with_sqlite_auth() {
    classic_flow(AuthDb::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classic_flow_with_postgres_auth() {
    classic_flow(AuthDb::Postgres).await;
}

/// Real sample videos from public packages' test suites: every one with an
/// audio track becomes a decodable MP3 of the same length; the ones without
/// audio fail with a clear reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_sample_videos_convert_or_fail_clearly() {
    let media = media_dir();
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("sam@example.com", "sample-pass").await;
    let token = stack.token("sam@example.com", "sample-pass").await;
    let with_audio = [
        "puremagic__test.avi",
        "puremagic__test.flv",
        "puremagic__test.mp4",
        "puremagic__test.mpg",
        "puremagic__test.wmv",
        "filetype__sample.mp4",
    ];
    let without_audio = ["puremagic__test.mkv", "filetype__sample.mov"];
    let mut jobs = Vec::new();
    for name in with_audio.iter().chain(&without_audio) {
        let response = stack.upload(&token, &[&media.join(name)]).await;
        assert_eq!(response.status(), 200, "upload of {name}");
        jobs.push((
            *name,
            response.headers()["x-job-id"]
                .to_str()
                .expect("ascii")
                .to_owned(),
        ));
    }
    let out = tempfile::tempdir().expect("tempdir");
    for (name, job_id) in &jobs {
        let job = stack.wait_for_job(job_id, CONVERSION_TIMEOUT).await;
        if without_audio.contains(name) {
            assert_eq!(job.state, common::jobs::JobState::Failed, "{name}");
            assert_eq!(
                job.error.as_deref(),
                Some("the file has no audio track"),
                "{name}"
            );
            continue;
        }
        assert_eq!(
            job.state,
            common::jobs::JobState::Done,
            "{name}: {:?}",
            job.error
        );
        let fid = job.mp3_fid.expect("mp3 id").to_hex();
        let response = stack.download(&token, &fid).await;
        assert_eq!(response.status(), 200, "{name}");
        let mp3 = out.path().join(format!("{name}.mp3"));
        std::fs::write(&mp3, response.bytes().await.expect("bytes")).expect("write");
        assert_decodes_as_mp3(&mp3);
        let (source, converted) = (audio_duration(&media.join(name)), audio_duration(&mp3));
        // Within 2%, or one MP3 frame (at most 1152 samples, 0.072 s at
        // 16 kHz) for clips too short for 2% to cover it.
        let tolerance = (source * 0.02).max(0.072);
        assert!(
            (converted - source).abs() <= tolerance,
            "{name}: {converted} s vs {source} s"
        );
    }
    stack.stop().await;
}

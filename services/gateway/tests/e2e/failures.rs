//! Bad input and refused access: the original system's strings and codes,
//! and a worker that survives a video it cannot convert.

use std::time::Duration;

use common::jobs::JobState;

use crate::helpers::{AuthDb, TestStack, make_video};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_and_token_failures_use_the_classic_strings() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("bob@example.com", "right-password").await;

    let wrong = stack.login("bob@example.com", "wrong-password").await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.text().await.expect("body"), "invalid credentials");

    let unknown = stack.login("nobody@example.com", "right-password").await;
    assert_eq!(unknown.status(), 401);
    assert_eq!(unknown.text().await.expect("body"), "invalid credentials");

    let none = stack
        .http
        .post(format!("{}/login", stack.gateway))
        .send()
        .await
        .expect("request");
    assert_eq!(none.status(), 401);
    assert_eq!(none.text().await.expect("body"), "missing credentials");

    let dir = tempfile::tempdir().expect("tempdir");
    let video = make_video(dir.path(), "v.mp4", 1, true);
    let forged = stack.upload("not-a-jwt", &[&video]).await;
    assert_eq!(forged.status(), 403);
    assert_eq!(forged.text().await.expect("body"), "not authorized");

    let anonymous = stack
        .http
        .post(format!("{}/upload", stack.gateway))
        .multipart(reqwest::multipart::Form::new().text("x", "y"))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.text().await.expect("body"), "missing credentials");
    assert_eq!(
        stack.stored_files(&stack.mongo.videos).await,
        0,
        "nothing stored"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_need_exactly_one_file_and_leave_nothing_otherwise() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("carol@example.com", "pass-word-1").await;
    let token = stack.token("carol@example.com", "pass-word-1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let video = make_video(dir.path(), "a.mp4", 1, true);

    let zero = stack.upload(&token, &[]).await;
    assert_eq!(zero.status(), 400);
    assert_eq!(zero.text().await.expect("body"), "exactly 1 file required");

    let two = stack.upload(&token, &[&video, &video]).await;
    assert_eq!(two.status(), 400);
    assert_eq!(two.text().await.expect("body"), "exactly 1 file required");

    assert_eq!(
        stack.stored_files(&stack.mongo.videos).await,
        0,
        "no orphaned video"
    );
    assert_eq!(stack.mail.count().await, 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn video_without_audio_fails_its_job_and_the_worker_keeps_going() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("dan@example.com", "pass-word-2").await;
    let token = stack.token("dan@example.com", "pass-word-2").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let silent = make_video(dir.path(), "silent.mp4", 1, false);
    let good = make_video(dir.path(), "good.mp4", 1, true);

    let first = stack.upload(&token, &[&silent]).await;
    assert_eq!(first.status(), 200);
    let silent_job = first.headers()["x-job-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let second = stack.upload(&token, &[&good]).await;
    assert_eq!(second.status(), 200);
    let good_job = second.headers()["x-job-id"]
        .to_str()
        .expect("ascii")
        .to_owned();

    let failed = stack
        .wait_for_job(&silent_job, Duration::from_secs(60))
        .await;
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.error.as_deref(), Some("the file has no audio track"));
    assert!(failed.mp3_fid.is_none());
    let done = stack.wait_for_job(&good_job, Duration::from_secs(60)).await;
    assert_eq!(done.state, JobState::Done, "{:?}", done.error);
    stack
        .mail
        .wait_for("Your MP3 is ready: good.mp4", Duration::from_secs(30))
        .await;
    let failure = stack
        .mail
        .wait_for("We could not convert silent.mp4", Duration::from_secs(30))
        .await;
    assert!(
        failure
            .text()
            .contains("Reason: the file has no audio track")
    );
    assert!(
        stack
            .mail
            .find("Your MP3 is ready: silent.mp4")
            .await
            .is_none(),
        "no ready-mail for a failed job"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn downloads_are_only_for_the_owner() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("erin@example.com", "erin-password").await;
    stack.add_user("frank@example.com", "frank-password").await;
    let erin = stack.token("erin@example.com", "erin-password").await;
    let frank = stack.token("frank@example.com", "frank-password").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let video = make_video(dir.path(), "mine.mp4", 1, true);
    let upload = stack.upload(&erin, &[&video]).await;
    let job_id = upload.headers()["x-job-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let job = stack.wait_for_job(&job_id, Duration::from_secs(60)).await;
    let fid = job.mp3_fid.expect("converted").to_hex();

    let stranger = stack.download(&frank, &fid).await;
    assert_eq!(stranger.status(), 404);
    let owner = stack.download(&erin, &fid).await;
    assert_eq!(owner.status(), 200);
    let missing = stack.download(&erin, "").await;
    assert_eq!(missing.status(), 400);
    assert_eq!(missing.text().await.expect("body"), "fid is required");
    let malformed = stack.download(&erin, "../../etc/passwd").await;
    assert_eq!(malformed.status(), 404);
    let unknown = stack.download(&erin, "0123456789abcdef01234567").await;
    assert_eq!(unknown.status(), 404);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn email_turned_off_through_the_gateway_sends_no_mail() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("gina@example.com", "gina-password").await;
    let token = stack.token("gina@example.com", "gina-password").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let quiet = make_video(dir.path(), "quiet.mp4", 1, true);
    // Other content than `quiet.mp4`: the same bytes would be answered
    // with the quiet job (deduplication) and never mailed.
    let loud = make_video(dir.path(), "loud.mp4", 2, true);
    let set_email = |on: bool| {
        stack
            .http
            .put(format!("{}/api/v1/me/preferences", stack.gateway))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "email_notifications": on }))
            .send()
    };

    let off = set_email(false).await.expect("request");
    assert!(off.status().is_success(), "{}", off.status());
    let upload = stack.upload(&token, &[&quiet]).await;
    let quiet_job = upload.headers()["x-job-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let job = stack
        .wait_for_job(&quiet_job, Duration::from_secs(60))
        .await;
    let on = set_email(true).await.expect("request");
    assert!(on.status().is_success());
    let upload = stack.upload(&token, &[&loud]).await;
    assert_eq!(upload.status(), 200);
    stack
        .mail
        .wait_for("loud.mp4", Duration::from_secs(60))
        .await;

    assert_eq!(job.state, JobState::Done);
    assert!(!job.notify_email, "the preference is copied into the job");
    assert!(
        stack.mail.find("quiet.mp4").await.is_none(),
        "no mail while email is off"
    );
    stack.stop().await;
}

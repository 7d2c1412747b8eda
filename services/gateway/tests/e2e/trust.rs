//! What the gateway must not believe or leave behind: job events that name
//! the wrong user, and a job deleted while it converts.

use std::time::Duration;

use serde_json::Value;

use common::messages::JobEvent;

use crate::helpers::{AuthDb, TestStack};

/// A job of `token`'s user from `POST /api/v1/jobs`; returns its id.
async fn new_job(stack: &TestStack, token: &str, name: &str, bytes: Vec<u8>) -> String {
    let response = stack
        .upload_bytes("/api/v1/jobs", &format!("Bearer {token}"), name, bytes)
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("json");
    body["job"]["id"].as_str().expect("job id").to_owned()
}

async fn job_state(stack: &TestStack, token: &str, id: &str) -> (u16, Value) {
    let response = stack
        .http
        .get(format!("{}/api/v1/jobs/{id}", stack.gateway))
        .bearer_auth(token)
        .send()
        .await
        .expect("get job");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_naming_me_with_someone_elses_job_shows_me_nothing() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("alice@example.com", "alice-password").await;
    stack.add_user("bob@example.com", "bob-password").await;
    let alice = stack.token("alice@example.com", "alice-password").await;
    let bob = stack.token("bob@example.com", "bob-password").await;
    let sample =
        std::fs::read(crate::helpers::media_dir().join("puremagic__test.mp4")).expect("sample");
    let bobs = new_job(&stack, &bob, "bobs-secret.mp4", sample.clone()).await;
    stack.wait_for_job(&bobs, Duration::from_secs(90)).await;
    let mut stream = stack.events(&alice, None).await;

    // A forged event: Bob's job, addressed to Alice.
    let forger = common::amqp::Publisher::connect(
        &common::testing::amqp_url(),
        "forger",
        &[],
        &[&stack.events_exchange()],
    )
    .await
    .expect("broker");
    let forged = JobEvent {
        job_id: bobs.clone(),
        state: "done".into(),
        username: "alice@example.com".into(),
        filename: "bobs-secret.mp4".into(),
        progress: 1.0,
        error: None,
        mp3_fid: None,
        notify_email: true,
    };
    forger
        .publish_event(
            &stack.events_exchange(),
            &forged.routing_key(),
            &forged.to_vec(),
        )
        .await
        .expect("publish");
    // Then a job of Alice's own, which her stream must show.
    let mut with_suffix = sample;
    with_suffix.extend_from_slice(b"alice");
    let hers = new_job(&stack, &alice, "alices.mp4", with_suffix).await;

    let mut seen = Vec::new();
    while let Some((_, job)) = stream.next_job(Duration::from_secs(20)).await {
        let id = job["id"].as_str().unwrap_or_default().to_owned();
        let done = id == hers && job["state"] == "done";
        seen.push(id);
        if done {
            break;
        }
    }
    assert!(
        seen.contains(&hers),
        "Alice's stream missed her own job: {seen:?}"
    );
    assert!(!seen.contains(&bobs), "Bob's job reached Alice's stream");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_deleted_while_it_converts_leaves_no_mp3_and_no_mail() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("dora@example.com", "dora-password").await;
    let token = stack.token("dora@example.com", "dora-password").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let long = dir.path().join("long-talk.m4a");
    // Twenty minutes of audio: a few seconds of conversion.
    common::testing::ffmpeg(
        "-f lavfi -i sine=frequency=300:sample_rate=44100:duration=1200 -c:a aac -b:a 32k",
        &[long.to_str().expect("utf-8")],
    );
    let id = new_job(
        &stack,
        &token,
        "long-talk.m4a",
        std::fs::read(&long).expect("read"),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, job) = job_state(&stack, &token, &id).await;
        if job["job"]["state"] == "converting" {
            break;
        }
        assert_ne!(
            job["job"]["state"], "done",
            "converted before it could be deleted"
        );
        assert!(tokio::time::Instant::now() < deadline, "never converting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let discarded_before = stack.converter_counter("converter_discarded_total").await;

    // Act
    let deleted = stack
        .http
        .delete(format!("{}/api/v1/jobs/{id}", stack.gateway))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 204);

    // Assert: the conversion ends, its MP3 is thrown away, nothing is told.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while stack.converter_counter("converter_discarded_total").await <= discarded_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the conversion never ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(job_state(&stack, &token, &id).await.0, 404);
    assert_eq!(
        stack.stored_files(&stack.mongo.mp3s).await,
        0,
        "an MP3 stayed"
    );
    assert_eq!(
        stack.stored_files(&stack.mongo.videos).await,
        0,
        "the video stayed"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stack.mail.count().await,
        0,
        "a mail went out for a deleted job"
    );
    stack.stop().await;
}

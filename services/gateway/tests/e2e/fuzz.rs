//! Property: whatever bytes or JSON anyone sends (to the `video` and `mp3`
//! queues, to the JSON routes), every service stays up, answers, and no
//! job changes. The inputs are random from a seed that the test prints
//! (`FUZZ_SEED` repeats a run).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::{AuthDb, TestStack, media_dir};

/// Field names the real messages and bodies use, so random JSON hits
/// real code paths, not only "unknown field".
const NAMES: [&str; 14] = [
    "video_fid",
    "mp3_fid",
    "username",
    "job_id",
    "filename",
    "options",
    "notify_email",
    "duration_s",
    "email",
    "password",
    "email_notifications",
    "quality",
    "bitrate_kbps",
    "state",
];

fn random_value(rng: &mut StdRng, depth: u32, known: &[String]) -> Value {
    match rng.gen_range(0..if depth > 2 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.r#gen()),
        2 => json!(rng.gen_range(-1_000_000_000_i64..1_000_000_000)),
        3 => json!(rng.r#gen::<f64>() * 1e12),
        4 => Value::String(known[rng.gen_range(0..known.len())].clone()),
        5 => {
            let len = rng.gen_range(0..40);
            Value::String(
                (0..len)
                    .map(|_| char::from_u32(rng.gen_range(0..0x3000)).unwrap_or('?'))
                    .collect(),
            )
        }
        6 => Value::Array(
            (0..rng.gen_range(0..4))
                .map(|_| random_value(rng, depth + 1, known))
                .collect(),
        ),
        _ => random_object(rng, depth + 1, known),
    }
}

fn random_object(rng: &mut StdRng, depth: u32, known: &[String]) -> Value {
    let mut object = serde_json::Map::new();
    for _ in 0..rng.gen_range(0..9) {
        let name = if rng.gen_bool(0.8) {
            NAMES[rng.gen_range(0..NAMES.len())].to_owned()
        } else {
            format!("x{}", rng.gen_range(0..100))
        };
        object.insert(name, random_value(rng, depth, known));
    }
    Value::Object(object)
}

fn random_body(rng: &mut StdRng, known: &[String]) -> Vec<u8> {
    match rng.gen_range(0..4) {
        0 => (0..rng.gen_range(0..512))
            .map(|_| rng.r#gen::<u8>())
            .collect(),
        1 => {
            // Valid JSON, cut somewhere.
            let text = random_object(rng, 0, known).to_string();
            let cut = rng.gen_range(0..=text.len());
            text.as_bytes()[..cut].to_vec()
        }
        _ => random_object(rng, 0, known).to_string().into_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_messages_and_bodies_change_nothing_and_crash_nothing() {
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("FUZZ_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("kim@example.com", "kim-password").await;
    let token = stack.token("kim@example.com", "kim-password").await;
    let sample = std::fs::read(media_dir().join("puremagic__test.mp4")).expect("sample");
    let created = stack
        .upload_bytes(
            "/api/v1/jobs",
            &format!("Bearer {token}"),
            "kept.mp4",
            sample,
        )
        .await;
    assert_eq!(created.status(), 202);
    let created: Value = created.json().await.expect("json");
    let id = created["job"]["id"].as_str().expect("id").to_owned();
    // Settled: the notification's own write (notified_at) must not land
    // after this snapshot and pass for the fuzz's doing.
    let before = stack
        .wait_for_settled_job(&id, Duration::from_secs(90))
        .await;
    let mails_before = stack.mail.count().await;
    // Real ids and names, so the garbage sometimes names the real job.
    let known: Vec<String> = vec![
        id.clone(),
        before.video_fid.to_hex(),
        before.mp3_fid.map(|fid| fid.to_hex()).unwrap_or_default(),
        "kim@example.com".into(),
        "mallory@example.com".into(),
        "kept.mp4".into(),
        "V0".into(),
        "cbr".into(),
    ];

    let publisher = common::amqp::Publisher::connect(
        &common::testing::amqp_url(),
        "fuzzer",
        &[&stack.queue("video"), &stack.queue("mp3")],
        &[],
    )
    .await
    .expect("broker");
    for _ in 0..150 {
        for queue in ["video", "mp3"] {
            let body = random_body(&mut rng, &known);
            publisher
                .publish(
                    &stack.queue(queue),
                    &body,
                    lapin::types::FieldTable::default(),
                )
                .await
                .expect("publish");
        }
    }
    let routes = [
        "/api/v1/login",
        "/api/v1/register",
        "/api/v1/me/preferences",
    ];
    for _ in 0..150 {
        let path = routes[rng.gen_range(0..routes.len())];
        let body = random_body(&mut rng, &known);
        let method = if path.ends_with("preferences") {
            reqwest::Method::PUT
        } else {
            reqwest::Method::POST
        };
        let response = stack
            .http
            .request(method, format!("{}{path}", stack.gateway))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        assert!(status < 500, "{path} answered {status}");
        let _: Value = response
            .json()
            .await
            .unwrap_or_else(|_| panic!("{path}: a non-JSON error"));
        // Random options (read first) on an upload of text: refused either
        // way, as bad options (400) or as not media (415).
        if rng.gen_bool(0.2) {
            let options = random_object(&mut rng, 1, &known).to_string();
            let form = reqwest::multipart::Form::new()
                .text("options", options)
                .part(
                    "file",
                    reqwest::multipart::Part::bytes(b"just some text, no video\n".to_vec())
                        .file_name("junk.mp4"),
                );
            let response = stack
                .http
                .post(format!("{}/api/v1/jobs", stack.gateway))
                .bearer_auth(&token)
                .multipart(form)
                .send()
                .await
                .expect("upload");
            let status = response.status().as_u16();
            assert!(
                matches!(status, 400 | 415),
                "junk upload: {status} (seed {seed})"
            );
        }
    }

    // Let the workers chew through it all.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for url in [
        format!("{}/healthz", stack.gateway_ops),
        format!("{}/healthz", stack.converter),
    ] {
        let status = stack.http.get(&url).send().await.expect("alive").status();
        assert_eq!(status, 200, "{url}");
    }
    let after = stack.wait_for_job(&id, Duration::from_secs(5)).await;
    assert_eq!(
        after.updated_at, before.updated_at,
        "the job changed (seed {seed})"
    );
    assert_eq!(after.state, before.state);
    assert_eq!(after.mp3_fid, before.mp3_fid);
    assert_eq!(
        stack.mail.count().await,
        mails_before,
        "a mail went out (seed {seed})"
    );
    assert_eq!(
        stack.jobs_of("kim@example.com").await,
        1,
        "a job appeared (seed {seed})"
    );
    // And the system still works.
    let mut fresh = std::fs::read(media_dir().join("filetype__sample.mp4")).expect("sample");
    fresh.extend_from_slice(b"after the storm");
    let response = stack
        .upload_bytes(
            "/api/v1/jobs",
            &format!("Bearer {token}"),
            "after.mp4",
            fresh,
        )
        .await;
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.expect("json");
    stack
        .wait_for_job(
            job["job"]["id"].as_str().expect("id"),
            Duration::from_secs(90),
        )
        .await;
    drop(publisher);
    stack.stop().await;
}

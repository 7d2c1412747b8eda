//! What the gateway must not believe or leave behind: job events that name
//! the wrong user, and a job deleted while it converts.

use std::time::Duration;

use serde_json::Value;

use contract::JobEvent;

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
        state: contract::JobState::Done,
        username: "alice@example.com".into(),
        filename: "bobs-secret.mp4".into(),
        progress: 1.0,
        error: None,
        mp3_fid: None,
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

/// Sends `request` on a new connection and returns what comes back within
/// `within` (the status line first), or what came before the peer closed.
async fn raw(stack: &TestStack, request: &[u8], within: Duration) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", stack.gateway_port()))
        .await
        .expect("connect");
    socket.write_all(request).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(within, socket.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_cannot_pick_its_own_rate_limit_key() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    // Auth allows 5 failed logins a minute for one email from one client
    // address; every attempt claims to come from somewhere else.
    for n in 0..5 {
        let response = stack
            .http
            .post(format!("{}/login", stack.gateway))
            .basic_auth("victim@example.com", Some("wrong"))
            .header("x-forwarded-for", format!("203.0.113.{n}, 127.0.0.1"))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), 401, "attempt {n}");
    }
    let classic = stack
        .http
        .post(format!("{}/login", stack.gateway))
        .basic_auth("victim@example.com", Some("wrong"))
        .header("x-forwarded-for", "198.51.100.200")
        .send()
        .await
        .expect("login");
    let json = stack
        .http
        .post(format!("{}/api/v1/login", stack.gateway))
        .header("x-forwarded-for", "198.51.100.201")
        .json(&serde_json::json!({"email": "victim@example.com", "password": "wrong"}))
        .send()
        .await
        .expect("login");

    // Both the classic and the JSON login are limited, and say when to retry.
    for response in [classic, json] {
        assert_eq!(response.status(), 429);
        let retry = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok());
        assert!(
            retry.is_some_and(|secs| secs.parse::<u64>().is_ok_and(|s| s >= 1)),
            "Retry-After: {retry:?}"
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_part_of_an_upload_is_bounded() {
    let stack = TestStack::start_with(
        AuthDb::Sqlite,
        crate::helpers::StackOptions {
            gateway_flags: [
                "--upload-idle-secs",
                "1",
                "--upload-rate-window-secs",
                "2",
                "--upload-min-rate",
                "50000",
            ]
            .map(str::to_owned)
            .to_vec(),
            ..Default::default()
        },
    )
    .await;
    stack.add_user("erin@example.com", "erin-password").await;
    let token = stack.token("erin@example.com", "erin-password").await;
    let sample =
        std::fs::read(crate::helpers::media_dir().join("puremagic__test.mp4")).expect("sample");
    let multipart = |parts: &[(String, Vec<u8>)]| {
        let mut body = Vec::new();
        for (headers, data) in parts {
            body.extend_from_slice(format!("--B0und\r\n{headers}\r\n\r\n").as_bytes());
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--B0und--\r\n");
        body
    };
    let post = |body: Vec<u8>| {
        stack
            .http
            .post(format!("{}/api/v1/jobs", stack.gateway))
            .bearer_auth(&token)
            .header("content-type", "multipart/form-data; boundary=B0und")
            .body(body)
            .send()
    };
    let file = r#"Content-Disposition: form-data; name="file"; filename="a.mp4""#.to_owned();

    // A part header of 64 KiB.
    let padded = format!("{file}\r\nX-Padding: {}", "p".repeat(64 * 1024));
    let response = post(multipart(&[(padded, sample.clone())]))
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    let text = response.text().await.expect("body");
    assert!(text.contains("part's headers exceed"), "{text}");

    // Twenty parts.
    let many: Vec<(String, Vec<u8>)> = (0..20)
        .map(|n| {
            (
                format!(r#"Content-Disposition: form-data; name="x{n}""#),
                b"1".to_vec(),
            )
        })
        .chain([(file.clone(), sample.clone())])
        .collect();
    let response = post(multipart(&many)).await.expect("send");
    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .expect("body")
            .contains("more than 16 parts")
    );

    // An empty file.
    let response = post(multipart(&[(file.clone(), Vec::new())]))
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .expect("body")
            .contains("the file is empty")
    );

    // Ten gigabytes announced: refused before a byte of body.
    let bearer = format!("Bearer {token}");
    let huge = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: {bearer}\r\nContent-Type: multipart/form-data; boundary=B0und\r\nContent-Length: 10737418240\r\n\r\n"
    );
    let answer = raw(&stack, huge.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A body that stops after its first bytes, and one that trickles.
    let start = format!("--B0und\r\n{file}\r\n\r\n");
    let stalled = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: {bearer}\r\nContent-Type: multipart/form-data; boundary=B0und\r\nContent-Length: 100000\r\n\r\n{start}"
    );
    let mut stalled = stalled.into_bytes();
    stalled.extend_from_slice(&sample[..64]);
    let answer = raw(&stack, &stalled, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "stalled: {answer}");
    let trickle = async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", stack.gateway_port()))
            .await
            .expect("connect");
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: {bearer}\r\nContent-Type: multipart/form-data; boundary=B0und\r\nContent-Length: 10000000\r\n\r\n{start}"
        );
        socket.write_all(head.as_bytes()).await.expect("send");
        socket.write_all(&sample[..64]).await.expect("send");
        let mut answer = vec![0u8; 64];
        for _ in 0..100 {
            // 1 KiB every 100 ms: 10 KiB/s, under the 50 000 B/s asked for.
            if socket.write_all(&[0u8; 1024]).await.is_err() {
                break;
            }
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(100), socket.read(&mut answer)).await
                && n > 0
            {
                return String::from_utf8_lossy(&answer[..n]).into_owned();
            }
        }
        String::new()
    };
    let answer = trickle.await;
    assert!(answer.starts_with("HTTP/1.1 408"), "trickle: {answer}");

    // None of it left anything behind.
    stack.wait_until_videos_empty(Duration::from_secs(10)).await;
    assert_eq!(stack.jobs_of("erin@example.com").await, 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_json_body_is_413_every_time_and_harms_no_later_request() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("finn@example.com", "finn-password").await;
    let big =
        serde_json::json!({"email": "finn@example.com", "password": "x".repeat(2 * 1024 * 1024)});
    for path in [
        "/api/v1/login",
        "/api/v1/register",
        "/api/v1/login",
        "/api/v1/register",
        "/api/v1/login",
    ] {
        let response = stack
            .http
            .post(format!("{}{path}", stack.gateway))
            .json(&big)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 413, "{path}");
        let body: Value = response.json().await.expect("a JSON error");
        assert_eq!(body["error"]["code"], "too_large");
    }
    let ok = stack
        .http
        .post(format!("{}/api/v1/login", stack.gateway))
        .json(&serde_json::json!({"email": "finn@example.com", "password": "finn-password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(ok.status(), 200);
    stack.stop().await;
}

/// Uploads in GridFS with leases as gateways leave them, for the sweeper.
struct Leased {
    stack: TestStack,
    uploads: mongodb::Collection<mongodb::bson::Document>,
    bucket: mongodb::gridfs::GridFsBucket,
    part: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Leased {
    async fn start() -> Leased {
        let stack = TestStack::start(AuthDb::Sqlite).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("part.bin");
        std::fs::write(&part, vec![7u8; 300 * 1024]).expect("write");
        Leased {
            uploads: stack.mongo.videos.collection("uploads"),
            bucket: common::gridfs::bucket(&stack.mongo.videos),
            stack,
            part,
            _dir: dir,
        }
    }

    /// A stored upload (file and chunks).
    async fn stored(&self, name: &str) -> mongodb::bson::oid::ObjectId {
        common::gridfs::upload_file(&self.bucket, &self.part, name, mongodb::bson::doc! {})
            .await
            .expect("store")
    }

    /// Sets a lease's last renewal two minutes back (inserting it if need be).
    async fn last_renewed_long_ago(&self, fid: mongodb::bson::oid::ObjectId) {
        use mongodb::bson::{DateTime, doc};
        let long_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 120_000);
        self.uploads
            .update_one(
                doc! { "_id": fid },
                doc! { "$set": { "renewed_at": long_ago } },
            )
            .upsert(true)
            .await
            .expect("age the lease");
    }

    async fn exists(&self, fid: mongodb::bson::oid::ObjectId) -> bool {
        common::gridfs::find(&self.bucket, fid)
            .await
            .expect("find")
            .is_some()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_gateways_upload_is_swept_a_live_ones_is_not() {
    use mongodb::bson::{DateTime, doc, oid::ObjectId};
    let scene = Leased::start().await;
    // A gateway killed mid-upload: its chunks and file, a lease it no longer renews.
    let dead = scene.stored("dead.mp4").await;
    scene.last_renewed_long_ago(dead).await;
    // A live upload: renewed just now.
    let live = scene.stored("live.mp4").await;
    scene
        .uploads
        .insert_one(doc! { "_id": live, "renewed_at": DateTime::now() })
        .await
        .expect("lease");
    // A finished upload whose gateway died before giving the lease back.
    let finished = scene.stored("done.mp4").await;
    scene
        .stack
        .mongo
        .jobs
        .insert(&common::jobs::Job::queued(
            ObjectId::new(),
            "x@example.com",
            "done.mp4",
            finished,
        ))
        .await
        .expect("job");
    scene.last_renewed_long_ago(finished).await;

    gateway::leases::Leases::new(&scene.stack.mongo)
        .sweep()
        .await;

    assert!(!scene.exists(dead).await, "the dead upload stayed");
    let chunks = scene
        .stack
        .mongo
        .videos
        .collection::<mongodb::bson::Document>("fs.chunks")
        .count_documents(doc! { "files_id": dead })
        .await
        .expect("count");
    assert_eq!(chunks, 0, "its chunks stayed");
    assert!(scene.exists(live).await, "a live upload was removed");
    assert!(scene.exists(finished).await, "a job's video was removed");
    let left: Vec<ObjectId> = scene
        .uploads
        .distinct("_id", doc! {})
        .await
        .expect("leases")
        .into_iter()
        .filter_map(|id| id.as_object_id())
        .collect();
    assert_eq!(left, vec![live], "only the live lease is left");
    scene.stack.stop().await;
}

/// A gateway that stalled past the lease's expiry (a frozen process, a
/// long pause) finds its lease taken over by a sweeper: its upload is not
/// recorded as a job that names a removed video.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_swept_while_its_holder_stalled_is_known_lost_to_it() {
    let scene = Leased::start().await;
    let fid = scene.stored("stalled.mp4").await;
    let lease = gateway::leases::Leases::new(&scene.stack.mongo)
        .take(fid, "ana@example.com")
        .await;
    assert!(lease.still_held().await.expect("renew"), "held while alive");
    // Its gateway stalls: no renewal for two minutes.
    scene.last_renewed_long_ago(fid).await;

    gateway::leases::Leases::new(&scene.stack.mongo)
        .sweep()
        .await;

    assert!(!scene.exists(fid).await, "the stalled upload was swept");
    assert!(
        !lease.still_held().await.expect("renew"),
        "the stalled holder must learn its lease is gone"
    );
    scene.stack.stop().await;
}

/// MongoDB did not answer when the upload took its lease: the lease is
/// recorded as soon as it answers again, and an upload left to a sweeper
/// is never left where no sweeper can find it (the broker-restart chaos
/// scenario once left such a video behind for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_that_could_not_be_recorded_is_recorded_later_never_lost() {
    use common::testing::proxy::{TcpProxy, authority_of};
    use mongodb::bson::doc;
    let scene = Leased::start().await;
    let database = TcpProxy::start(&authority_of(&common::testing::mongodb_uri(), 27017)).await;
    database.set_down(true);
    let mongo = common::config::MongoConfig {
        mongodb_uri: common::testing::mongodb_uri_through(&database),
        videos_db: scene.stack.mongo.videos.name().to_owned(),
        mp3s_db: scene.stack.mongo.mp3s.name().to_owned(),
    }
    .connect()
    .await
    .expect("client");
    let leases = gateway::leases::Leases::new(&mongo);
    let recorded = |fid| {
        let uploads = scene.uploads.clone();
        async move {
            uploads
                .count_documents(doc! { "_id": fid })
                .await
                .expect("count")
        }
    };

    let first = scene.stored("unrecorded.mp4").await;
    let lease = leases.take(first, "ana@example.com").await;
    assert_eq!(recorded(first).await, 0, "MongoDB was down");
    database.set_down(false);
    assert!(
        lease.still_held().await.expect("renew"),
        "held, once recorded"
    );
    assert_eq!(recorded(first).await, 1);
    drop(lease);

    database.set_down(true);
    let second = scene.stored("left.mp4").await;
    let lease = leases.take(second, "ana@example.com").await;
    database.set_down(false);
    lease.leave_to_sweeper();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while recorded(second).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "an upload left to a sweeper has no lease a sweeper can find"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    scene.stack.stop().await;
}

//! Issue 25's findings through the gateway, one regression test each: no
//! mail to an address nobody confirmed, account controls that reach every
//! token, quotas, capped retries and streams, and the small ones (racing
//! duplicates, an oversized track index, `source` as sent, hidden
//! characters in names, request ids).

use std::time::Duration;

use futures::StreamExt;
use mongodb::bson::{DateTime, doc, oid::ObjectId};
use serde_json::{Value, json};

use crate::helpers::{AuthDb, StackOptions, TestStack, make_video, media_dir};

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn api(
    stack: &TestStack,
    method: reqwest::Method,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = stack
        .http
        .request(method, format!("{}/api/v1{path}", stack.gateway))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request")
}

/// A stack whose tokens the gateway checks locally (Ed25519), as deployed.
async fn ed25519_stack(gateway_flags: &[&str]) -> TestStack {
    TestStack::start_with(
        AuthDb::Sqlite,
        StackOptions {
            ed25519_pem: Some(auth_service::token::generate_ed25519_pem().expect("key")),
            gateway_flags: gateway_flags.iter().map(|f| (*f).to_owned()).collect(),
            ..StackOptions::default()
        },
    )
    .await
}

/// `POST /api/v1/jobs/{job}/retry`.
async fn retry(stack: &TestStack, token: &str, job: &str) -> reqwest::Response {
    api(
        stack,
        reqwest::Method::POST,
        token,
        &format!("/jobs/{job}/retry"),
        None,
    )
    .await
}

async fn api_token(stack: &TestStack, email: &str, password: &str) -> String {
    let response = stack
        .http
        .post(format!("{}/api/v1/login", stack.gateway))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 200, "login of {email}");
    response.json::<Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// The phishing relay: a registered, unconfirmed address gets no mail about
/// an upload (named like a phishing lure); once confirmed through the
/// mailed link, it does, with the name shortened and defused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_mailed_to_an_address_until_its_owner_confirms_it() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    let registered = stack
        .http
        .post(format!("{}/api/v1/register", stack.gateway))
        .json(&json!({"email": "ceo@victim-corp.example", "password": "long enough"}))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), 201);
    let token = api_token(&stack, "ceo@victim-corp.example", "long enough").await;
    let lure = "URGENT - payroll account locked. Verify within 24h at https://victim-corp-payroll.example/verify.mp4";
    let video = std::fs::read(media_dir().join("puremagic__test.mp4")).expect("sample");

    let upload = stack
        .upload_bytes("/upload", &format!("Bearer {token}"), lure, video.clone())
        .await;
    assert_eq!(upload.status(), 200);
    let job = upload.headers()["x-job-id"]
        .to_str()
        .expect("id")
        .to_owned();
    stack.wait_for_job(&job, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mails = stack.mail.all().await;
    assert_eq!(mails.len(), 1, "only the confirmation link: {mails:?}");
    let confirmation = mails[0].text();
    assert!(!confirmation.contains("payroll"), "{confirmation}");
    let link = confirmation
        .split_whitespace()
        .find(|word| word.contains("/account/confirm?token="))
        .expect("a confirmation link");
    let token_value = link.split_once("token=").expect("token").1.to_owned();
    // Opening the link changes nothing; pressing its button confirms.
    let page = stack
        .http
        .get(format!(
            "{}/account/confirm?token={token_value}",
            stack.gateway
        ))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let me = api(&stack, reqwest::Method::GET, &token, "/me", None).await;
    assert_eq!(json_of(me).await.1["email_confirmed"], false);
    let confirmed = stack
        .http
        .post(format!("{}/account/confirm", stack.gateway))
        .form(&[("token", token_value.as_str())])
        .send()
        .await
        .expect("confirm");
    assert_eq!(confirmed.status(), 200);

    let mut again = video;
    again.extend_from_slice(b"another upload");
    let upload = stack
        .upload_bytes("/upload", &format!("Bearer {token}"), lure, again)
        .await;
    assert_eq!(upload.status(), 200);
    let mail = stack
        .mail
        .wait_for("MP3 id:", Duration::from_secs(60))
        .await;
    let text = mail.text();
    let subject = text
        .lines()
        .find(|line| line.starts_with("Subject:"))
        .expect("subject")
        .to_owned();
    assert!(
        !subject.contains("https") && !subject.contains("victim-corp-payroll"),
        "{subject}"
    );
    assert!(
        !text.contains("https://victim-corp-payroll.example"),
        "a clickable lure: {text}"
    );
    assert!(
        text.contains("hxxps[://]victim-corp-payroll[.]example"),
        "{text}"
    );
    stack.stop().await;
}

/// Sign out everywhere: a token the gateway checks locally stops working
/// on it within seconds, without the gateway asking auth per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signing_out_everywhere_reaches_the_gateway_within_seconds() {
    let stack = ed25519_stack(&[]).await;
    stack.add_user("sam@example.com", "correct horse").await;
    let laptop = api_token(&stack, "sam@example.com", "correct horse").await;
    let phone = api_token(&stack, "sam@example.com", "correct horse").await;
    assert_eq!(
        api(&stack, reqwest::Method::GET, &laptop, "/jobs", None)
            .await
            .status(),
        200
    );

    // A live event stream opened with the old token ends too.
    let stream = stack
        .http
        .get(format!("{}/api/v1/events", stack.gateway))
        .bearer_auth(&laptop)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let mut stream = stream.bytes_stream();

    let out = api(
        &stack,
        reqwest::Method::POST,
        &phone,
        "/me/sign-out-everywhere",
        None,
    )
    .await;
    assert_eq!(out.status(), 204);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = api(&stack, reqwest::Method::GET, &laptop, "/jobs", None)
            .await
            .status();
        if status == 403 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old token still works: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream outlived its revoked token");
    let fresh = api_token(&stack, "sam@example.com", "correct horse").await;
    assert_eq!(
        api(&stack, reqwest::Method::GET, &fresh, "/jobs", None)
            .await
            .status(),
        200
    );
    stack.stop().await;
}

/// Deleting an account takes its jobs, videos and MP3s with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_account_leaves_nothing_behind() {
    let stack = ed25519_stack(&[]).await;
    stack.add_user("dee@example.com", "correct horse").await;
    let token = api_token(&stack, "dee@example.com", "correct horse").await;
    let dir = tempfile::tempdir().expect("tempdir");
    for (n, seconds) in [1, 2].into_iter().enumerate() {
        let video = make_video(dir.path(), &format!("mine{n}.mp4"), seconds, true);
        let job = stack.created(&token, &video, None).await;
        stack
            .wait_for_job(job["id"].as_str().expect("id"), Duration::from_secs(60))
            .await;
    }

    let wrong = api(
        &stack,
        reqwest::Method::DELETE,
        &token,
        "/me",
        Some(json!({"password": "nope"})),
    )
    .await;
    assert_eq!(wrong.status(), 403);
    assert_eq!(
        stack.jobs_of("dee@example.com").await,
        2,
        "a wrong password deletes nothing"
    );
    let deleted = api(
        &stack,
        reqwest::Method::DELETE,
        &token,
        "/me",
        Some(json!({"password": "correct horse"})),
    )
    .await;
    assert_eq!(deleted.status(), 204);

    assert_eq!(stack.jobs_of("dee@example.com").await, 0);
    for db in [&stack.mongo.videos, &stack.mongo.mp3s] {
        let files = db
            .collection::<mongodb::bson::Document>("fs.files")
            .count_documents(doc! { "metadata.owner": "dee@example.com" })
            .await
            .expect("count");
        assert_eq!(files, 0, "{}", db.name());
    }
    assert_eq!(
        stack
            .login("dee@example.com", "correct horse")
            .await
            .status(),
        401
    );
    stack.stop().await;
}

/// Quotas: jobs per hour (429 with Retry-After), jobs in flight (429),
/// storage (507 when full, 413 past what is left), all shown at /me.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_account_has_quotas() {
    let stack = ed25519_stack(&[
        "--quota-jobs-per-hour",
        "2",
        "--quota-jobs-in-flight",
        "3",
        "--quota-stored-bytes",
        "200000",
    ])
    .await;
    stack.add_user("q@example.com", "correct horse").await;
    let token = api_token(&stack, "q@example.com", "correct horse").await;
    let sample = std::fs::read(media_dir().join("puremagic__test.mp4")).expect("sample");
    let upload = async |n: u8| {
        let mut bytes = sample.clone();
        bytes.push(n);
        upload_named(&stack, &token, &format!("q{n}.mp4"), bytes).await
    };
    for n in 0..2 {
        assert_eq!(upload(n).await.status(), 202);
    }

    let per_hour = upload(2).await;
    assert_eq!(per_hour.status(), 429);
    let retry: u64 = per_hour.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    assert!(retry > 3000 && retry <= 3600, "{retry}");
    let (_, body) = json_of(per_hour).await;
    assert_eq!(body["error"]["code"], "quota");

    let (status, me) = json_of(api(&stack, reqwest::Method::GET, &token, "/me", None).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        me["quotas"]["jobs_per_hour"],
        json!({"used": 2, "limit": 2})
    );
    assert_eq!(me["quotas"]["jobs_in_flight"]["limit"], 3);
    let stored = me["quotas"]["stored_bytes"]["used"].as_u64().expect("used");
    assert!(stored >= 2 * sample.len() as u64, "{me}");

    // Jobs from an hour ago no longer count; three waiting ones do.
    let jobs = stack
        .mongo
        .videos
        .collection::<mongodb::bson::Document>("jobs");
    let long_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 7_200_000);
    jobs.update_many(
        doc! { "owner": "q@example.com" },
        doc! { "$set": { "created_at": long_ago } },
    )
    .await
    .expect("age the jobs");
    for _ in 0..3 {
        jobs.insert_one(doc! { "_id": ObjectId::new(), "owner": "q@example.com", "state": "queued", "created_at": long_ago })
            .await
            .expect("waiting job");
    }
    let (status, body) = json_of(upload(3).await).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("quota")),
        "{body}"
    );
    jobs.delete_many(
        doc! { "owner": "q@example.com", "state": "queued", "video_fid": { "$exists": false } },
    )
    .await
    .expect("clear");

    // Storage: 200,000 bytes, most of it used; a bigger file is refused.
    let mut big = sample.clone();
    big.resize(200_000, 0);
    let (status, body) = json_of(upload_named(&stack, &token, "big.mp4", big).await).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("over_storage_quota")),
        "{body}"
    );
    stack.stop().await;
}

async fn upload_named(
    stack: &TestStack,
    token: &str,
    name: &str,
    bytes: Vec<u8>,
) -> reqwest::Response {
    stack
        .upload_bytes("/api/v1/jobs", &format!("Bearer {token}"), name, bytes)
        .await
}

/// Random bytes are refused before anything is stored; a file that looks
/// like media but is not is removed as soon as the converter finds out,
/// and a retry of it is refused; retries are capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_is_not_media_is_not_kept_and_retries_are_capped() {
    let stack = ed25519_stack(&["--max-retries-per-job", "2"]).await;
    stack.add_user("r@example.com", "correct horse").await;
    let token = api_token(&stack, "r@example.com", "correct horse").await;

    let random: Vec<u8> = (0..4096u32)
        .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (status, _) = json_of(upload_named(&stack, &token, "noise.mp4", random).await).await;
    assert_eq!(status, 415);
    let elf = [b"\x7fELF\x02\x01\x01".as_slice(), &[0u8; 500]].concat();
    assert_eq!(
        upload_named(&stack, &token, "a.mp4", elf).await.status(),
        415
    );
    let seven = [b"7z\xbc\xaf\x27\x1c\0\x04".as_slice(), &[1u8; 500]].concat();
    assert_eq!(
        upload_named(&stack, &token, "a.mp4", seven).await.status(),
        415
    );

    // Starts like an MP4, is not one.
    let fake = [b"\0\0\0\x18ftypisom\0\0\x02\0isom".as_slice(), &[7u8; 5000]].concat();
    let (status, body) = json_of(upload_named(&stack, &token, "fake.mp4", fake).await).await;
    assert_eq!(status, 202, "{body}");
    let job = body["job"]["id"].as_str().expect("id").to_owned();
    let failed = stack.wait_for_job(&job, Duration::from_secs(60)).await;
    assert_eq!(failed.state, common::jobs::JobState::Failed);
    assert!(failed.input_removed);
    assert!(
        common::gridfs::find(
            &common::gridfs::bucket(&stack.mongo.videos),
            failed.video_fid
        )
        .await
        .expect("find")
        .is_none(),
        "the input stays in GridFS"
    );
    let (status, body) = json_of(retry(&stack, &token, &job).await).await;
    assert_eq!(status, 409, "{body}");

    // A file without sound fails for good: two retries, not three.
    let dir = tempfile::tempdir().expect("tempdir");
    let silent = make_video(dir.path(), "silent.mp4", 1, false);
    let job = stack.created(&token, &silent, None).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    stack.wait_for_job(&job, Duration::from_secs(60)).await;
    for _ in 0..2 {
        let retried = retry(&stack, &token, &job).await;
        assert_eq!(retried.status(), 202);
        stack.wait_for_job(&job, Duration::from_secs(60)).await;
    }
    let (status, body) = json_of(retry(&stack, &token, &job).await).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("2 times")),
        "{body}"
    );
    stack.stop().await;
}

/// Live events: a few streams per account, not a thousand.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_account_holds_a_few_live_streams_not_a_thousand() {
    let stack = ed25519_stack(&["--max-streams-per-user", "3"]).await;
    stack.add_user("s@example.com", "correct horse").await;
    let token = api_token(&stack, "s@example.com", "correct horse").await;
    let open = || {
        stack
            .http
            .get(format!("{}/api/v1/events", stack.gateway))
            .bearer_auth(&token)
            .send()
    };
    let mut streams = Vec::new();
    for _ in 0..3 {
        let stream = open().await.expect("stream");
        assert_eq!(stream.status(), 200);
        streams.push(stream);
    }
    let refused = open().await.expect("stream");
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));

    drop(streams.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = open().await.expect("stream");
        if again.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a closed stream never freed its place"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.stop().await;
}

/// Twenty uploads at once (the finding had 150 in flight) fill an
/// account's in-flight quota exactly: never past it, and never all
/// stepping back from each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_uploads_stay_within_the_in_flight_quota() {
    // No converter: every accepted job stays in flight.
    let stack = TestStack::start_with(
        AuthDb::Sqlite,
        StackOptions {
            ed25519_pem: Some(auth_service::token::generate_ed25519_pem().expect("key")),
            gateway_flags: vec!["--quota-jobs-in-flight".into(), "3".into()],
            without_converter: true,
            ..StackOptions::default()
        },
    )
    .await;
    stack.add_user("r@example.com", "correct horse").await;
    let token = api_token(&stack, "r@example.com", "correct horse").await;
    let sample = std::fs::read(media_dir().join("puremagic__test.mp4")).expect("sample");

    let names: Vec<String> = (0..20).map(|n| format!("r{n}.mp4")).collect();
    let answers = futures::future::join_all(names.iter().zip(0u8..).map(|(name, n)| {
        let mut bytes = sample.clone();
        bytes.push(n);
        upload_named(&stack, &token, name, bytes)
    }))
    .await;

    let mut accepted = 0;
    for answer in answers {
        let (status, body) = json_of(answer).await;
        match status {
            202 => accepted += 1,
            429 => assert_eq!(body["error"]["code"], "quota", "{body}"),
            _ => panic!("{status} {body}"),
        }
    }
    let jobs = stack.jobs_of("r@example.com").await;
    assert_eq!(jobs, accepted, "answers and jobs agree");
    assert_eq!(jobs, 3, "jobs in flight with a quota of 3");
    stack.stop().await;
}

/// Eight identical uploads at once make one job, whatever the race.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_duplicates_make_one_job() {
    let stack = ed25519_stack(&[]).await;
    stack.add_user("d@example.com", "correct horse").await;
    let token = api_token(&stack, "d@example.com", "correct horse").await;
    let sample = std::fs::read(media_dir().join("puremagic__test.mp4")).expect("sample");

    let answers = futures::future::join_all(
        (0..8).map(|_| upload_named(&stack, &token, "same.mp4", sample.clone())),
    )
    .await;

    let mut ids = std::collections::BTreeSet::new();
    for answer in answers {
        let (status, body) = json_of(answer).await;
        assert!(status == 202 || status == 200, "{status} {body}");
        ids.insert(body["job"]["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(stack.jobs_of("d@example.com").await, 1);
    stack.stop().await;
}

/// The small ones: an oversized track index, `source` as sent, duplicate
/// parts and keys, unknown fields, hidden characters in names, request ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_a_client_sends_is_checked_and_cleaned() {
    let stack = ed25519_stack(&[]).await;
    stack.add_user("c@example.com", "correct horse").await;
    let token = api_token(&stack, "c@example.com", "correct horse").await;
    let sample = std::fs::read(media_dir().join("puremagic__test.mp4")).expect("sample");
    let send = |parts: Vec<(&'static str, Vec<u8>, Option<&'static str>)>| {
        let mut form = reqwest::multipart::Form::new();
        for (name, bytes, file) in parts {
            let part = reqwest::multipart::Part::bytes(bytes);
            form = form.part(
                name,
                match file {
                    Some(file) => part.file_name(file),
                    None => part,
                },
            );
        }
        stack
            .http
            .post(format!("{}/api/v1/jobs", stack.gateway))
            .bearer_auth(&token)
            .multipart(form)
            .send()
    };
    let file = || ("file", sample.clone(), Some("clip.mp4"));
    let sha = "ab".repeat(32);
    for (what, parts) in [
        (
            "an audio_track past i64",
            vec![
                (
                    "options",
                    br#"{"audio_track": 9223372036854775808}"#.to_vec(),
                    None,
                ),
                file(),
            ],
        ),
        (
            "a source smaller than the file",
            vec![
                (
                    "source",
                    format!(r#"{{"size_bytes": 0, "sha256": "{sha}"}}"#).into_bytes(),
                    None,
                ),
                file(),
            ],
        ),
        (
            "a source of 8 EiB",
            vec![
                (
                    "source",
                    format!(r#"{{"size_bytes": 9223372036854775807, "sha256": "{sha}"}}"#)
                        .into_bytes(),
                    None,
                ),
                file(),
            ],
        ),
        (
            "two source parts",
            vec![
                (
                    "source",
                    format!(r#"{{"size_bytes": 99999999, "sha256": "{sha}"}}"#).into_bytes(),
                    None,
                ),
                (
                    "source",
                    format!(r#"{{"size_bytes": 99999999, "sha256": "{sha}"}}"#).into_bytes(),
                    None,
                ),
                file(),
            ],
        ),
        (
            "a key named twice",
            vec![
                (
                    "options",
                    br#"{"quality": "V0", "quality": "V9"}"#.to_vec(),
                    None,
                ),
                file(),
            ],
        ),
        (
            "an unknown form field",
            vec![("colour", b"blue".to_vec(), None), file()],
        ),
    ] {
        let (status, body) = json_of(send(parts).await.expect("send")).await;
        assert_eq!(status, 400, "{what}: {body}");
    }

    // Hidden characters never reach a name.
    let (status, body) = json_of(
        upload_named(
            &stack,
            &token,
            "\u{202E}4pm.exe\u{2028}.mp4",
            sample.clone(),
        )
        .await,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let name = body["job"]["filename"].as_str().expect("name");
    assert_eq!(name, "4pm.exe.mp4");

    // A request id comes back only in a plain, bounded form.
    for forged in [
        "a".repeat(30_000),
        "a b c=d level=ERROR msg=forged".to_owned(),
    ] {
        let response = stack
            .http
            .get(format!("{}/api/v1/jobs", stack.gateway))
            .bearer_auth(&token)
            .header("x-request-id", &forged)
            .send()
            .await
            .expect("request");
        let echoed = response.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert_ne!(echoed, forged);
        assert!(echoed.len() <= 64, "{echoed}");
    }
    let plain = stack
        .http
        .get(format!("{}/api/v1/jobs", stack.gateway))
        .bearer_auth(&token)
        .header("x-request-id", "req-42.a_b:c")
        .send()
        .await
        .expect("request");
    assert_eq!(plain.headers()["x-request-id"], "req-42.a_b:c");
    stack.stop().await;
}

//! The contract to the letter: conditional downloads, authorization
//! schemes, options that mean what they say, header sizes.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{AuthDb, TestStack, media_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn downloads_honour_if_none_match_if_match_and_if_range() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("gina@example.com", "gina-password").await;
    let token = stack.token("gina@example.com", "gina-password").await;
    let job = stack
        .created(&token, &media_dir().join("filetype__sample.mp4"), None)
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    stack.wait_for_job(&id, Duration::from_secs(90)).await;
    let url = format!("{}/api/v1/jobs/{id}/mp3", stack.gateway);
    let get = |headers: &[(&str, &str)]| {
        let mut request = stack.http.get(&url).bearer_auth(&token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let full = get(&[]).await.expect("get");
    assert_eq!(full.status(), 200);
    let etag = full.headers()["etag"].to_str().expect("etag").to_owned();
    let length = full.bytes().await.expect("body").len();

    let cached = get(&[("if-none-match", &etag)]).await.expect("get");
    assert_eq!(cached.status(), 304);
    assert_eq!(cached.headers()["etag"], etag.as_str());
    assert!(cached.bytes().await.expect("body").is_empty());
    let weak = format!("W/{etag}");
    assert_eq!(
        get(&[("if-none-match", &weak)])
            .await
            .expect("get")
            .status(),
        304
    );
    assert_eq!(
        get(&[("if-none-match", "\"other\"")])
            .await
            .expect("get")
            .status(),
        200
    );

    assert_eq!(
        get(&[("if-match", "\"other\"")])
            .await
            .expect("get")
            .status(),
        412
    );
    assert_eq!(
        get(&[("if-match", &etag)]).await.expect("get").status(),
        200
    );

    let same = get(&[("range", "bytes=0-9"), ("if-range", &etag)])
        .await
        .expect("get");
    assert_eq!(same.status(), 206);
    let changed = get(&[("range", "bytes=0-9"), ("if-range", "\"other\"")])
        .await
        .expect("get");
    assert_eq!(
        changed.status(),
        200,
        "a stale If-Range gets the whole file"
    );
    assert_eq!(changed.bytes().await.expect("body").len(), length);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn authorization_schemes_are_read_the_same_everywhere() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("hal@example.com", "hal-password").await;
    // `basic` in any case on the classic login.
    let lower = stack
        .http
        .post(format!("{}/login", stack.gateway))
        .header(
            "authorization",
            format!(
                "basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    "hal@example.com:hal-password"
                )
            ),
        )
        .send()
        .await
        .expect("login");
    assert_eq!(lower.status(), 200);
    let token = lower.text().await.expect("token");
    // The JSON API: Bearer in any case, nothing else.
    for (scheme, wanted) in [
        ("Bearer", 200),
        ("bearer", 200),
        ("BEARER", 200),
        ("Basic", 401),
        ("Token", 401),
    ] {
        for path in ["/api/v1/jobs", "/api/v1/me"] {
            let response = stack
                .http
                .get(format!("{}{path}", stack.gateway))
                .header("authorization", format!("{scheme} {token}"))
                .send()
                .await
                .expect("get");
            assert_eq!(response.status(), wanted, "{scheme} on {path}");
        }
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn options_mean_what_they_say() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("ivy@example.com", "ivy-password").await;
    let token = stack.token("ivy@example.com", "ivy-password").await;
    let video = media_dir().join("puremagic__test.mp4");

    // A bit rate LAME would round is refused, naming the real ones.
    let odd = stack
        .create_job(
            &token,
            &video,
            Some(r#"{"quality":"cbr","bitrate_kbps":129}"#),
        )
        .await;
    assert_eq!(odd.status(), 400);
    let body: Value = odd.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("128, 160"),
        "{body}"
    );

    // "v0" and "V0" are the same options: one job, recorded as "V0".
    let first = stack
        .created(
            &token,
            &video,
            Some(r#"{"quality":"v0","sample_rate":"keep"}"#),
        )
        .await;
    assert_eq!(first["options"], serde_json::json!({"quality": "V0"}));
    let again = stack
        .create_job(&token, &video, Some(r#"{"quality":"V0"}"#))
        .await;
    assert_eq!(again.status(), 200, "deduplicated");
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["job"]["id"], first["id"]);
    assert_eq!(again["deduplicated"], true);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_huge_file_name_makes_a_small_content_disposition() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("jo@example.com", "jo-password").await;
    let token = stack.token("jo@example.com", "jo-password").await;
    let name = format!("{}.mp4", "ü".repeat(5000));
    let bytes = std::fs::read(media_dir().join("puremagic__test.mp4")).expect("sample");
    let response = stack
        .upload_bytes("/api/v1/jobs", &format!("Bearer {token}"), &name, bytes)
        .await;
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.expect("json");
    let id = job["job"]["id"].as_str().expect("id").to_owned();
    stack.wait_for_job(&id, Duration::from_secs(90)).await;
    let mp3 = stack
        .http
        .get(format!("{}/api/v1/jobs/{id}/mp3", stack.gateway))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(mp3.status(), 200);
    let disposition = mp3.headers()["content-disposition"].len();
    assert!(
        disposition < 2048,
        "Content-Disposition of {disposition} bytes"
    );
    stack.stop().await;
}

//! Local token verification: with auth signing Ed25519 tokens, the gateway
//! checks them against auth's published key set, so uploads and downloads
//! keep working while auth is down, and tokens signed by anyone else fail.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use common::jobs::JobState;

use crate::helpers::{AuthDb, StackOptions, TestStack, make_video};

const CONVERSION_TIMEOUT: Duration = Duration::from_secs(90);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A token for `email` signed with `key` (EdDSA), expiring at `exp`.
fn ed25519_token(pem: &str, kid: Option<&str>, email: &str, exp: u64) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_owned);
    let claims = serde_json::json!({
        "username": email, "admin": true, "sub": "1", "iat": now(), "exp": exp,
    });
    let key = EncodingKey::from_ed_pem(pem.as_bytes()).expect("ed25519 key");
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ed25519_tokens_are_verified_locally_even_while_auth_is_down() {
    // Arrange: auth signs with a key the test knows.
    let pem = auth_service::token::generate_ed25519_pem().expect("key");
    let mut stack = TestStack::start_with(
        AuthDb::Sqlite,
        StackOptions {
            ed25519_pem: Some(pem.clone()),
            ..StackOptions::default()
        },
    )
    .await;
    stack.add_user("erin@example.com", "erin-password").await;
    let token = stack.token("erin@example.com", "erin-password").await;
    let jwks: serde_json::Value = stack
        .http
        .get(format!("{}/.well-known/jwks.json", stack.auth))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let kid = jwks["keys"][0]["kid"].as_str().expect("kid").to_owned();
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
    let dir = tempfile::tempdir().expect("tempdir");
    let video = make_video(dir.path(), "offline.mp4", 2, true);
    let bytes = std::fs::read(&video).expect("video");

    // Act: auth goes away; only the cached key set can vouch for tokens.
    stack.stop_auth().await;
    // Any scheme word before the token, as the original accepted.
    let upload = stack
        .upload_bytes("/upload", &format!("JWT {token}"), "offline.mp4", bytes)
        .await;

    // Assert
    assert_eq!(upload.status(), 200);
    let job_id = upload.headers()["x-job-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(upload.text().await.expect("body"), "success!");
    let job = stack.wait_for_job(&job_id, CONVERSION_TIMEOUT).await;
    assert_eq!(job.state, JobState::Done, "{:?}", job.error);
    let mp3_fid = job.mp3_fid.expect("mp3 fid").to_hex();
    let download = stack.download(&token, &mp3_fid).await;
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "audio/mpeg");

    // A token the gateway signs itself with auth's own key is accepted too
    // (no `/validate` involved), and expired ones are not.
    let own = ed25519_token(&pem, Some(&kid), "erin@example.com", now() + 600);
    assert_eq!(stack.download(&own, &mp3_fid).await.status(), 200);
    let expired = ed25519_token(&pem, Some(&kid), "erin@example.com", now() - 120);
    let refused = stack.download(&expired, &mp3_fid).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.text().await.expect("body"), "not authorized");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_signed_by_another_key_are_refused() {
    let mut stack = TestStack::start_with(
        AuthDb::Sqlite,
        StackOptions {
            ed25519_pem: Some(auth_service::token::generate_ed25519_pem().expect("key")),
            ..StackOptions::default()
        },
    )
    .await;
    stack.add_user("frank@example.com", "frank-password").await;
    let token = stack.token("frank@example.com", "frank-password").await;
    let kid = jsonwebtoken::decode_header(&token)
        .expect("header")
        .kid
        .expect("kid");
    let other = auth_service::token::generate_ed25519_pem().expect("key");
    let exp = now() + 600;
    let forged = [
        // Claims the real key id, signed with another key.
        ed25519_token(&other, Some(&kid), "frank@example.com", exp),
        // No key id at all.
        ed25519_token(&other, None, "frank@example.com", exp),
        // A key id auth never published (forces a key-set refetch).
        ed25519_token(&other, Some("someone-else"), "frank@example.com", exp),
        // HS256 with the public key id: one algorithm only.
        {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(kid.clone());
            let claims = serde_json::json!({"username": "frank@example.com", "exp": exp});
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(kid.as_bytes()))
                .expect("sign")
        },
    ];

    for token in &forged {
        let response = stack
            .upload_bytes("/upload", &format!("Bearer {token}"), "x.mp4", vec![0; 64])
            .await;
        assert_eq!(response.status(), 403, "{token}");
        assert_eq!(response.text().await.expect("body"), "not authorized");
        let json = stack
            .upload_bytes(
                "/api/v1/jobs",
                &format!("Bearer {token}"),
                "x.mp4",
                vec![0; 64],
            )
            .await;
        assert_eq!(json.status(), 403);
        let body: serde_json::Value = json.json().await.expect("json");
        assert_eq!(body["error"]["code"], "not_authorized");
    }
    let missing = stack
        .http
        .get(format!("{}/download?fid=0", stack.gateway))
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.text().await.expect("body"), "missing credentials");
    // A scheme word without a token is no credentials, as auth has it.
    let scheme_only = stack
        .http
        .get(format!("{}/download?fid=0", stack.gateway))
        .header("authorization", "Bearer ")
        .send()
        .await
        .expect("request");
    assert_eq!(scheme_only.status(), 401);
    assert_eq!(
        scheme_only.text().await.expect("body"),
        "missing credentials"
    );
    // Stopping auth changes nothing for forged tokens.
    stack.stop_auth().await;
    let response = stack
        .upload_bytes(
            "/upload",
            &format!("Bearer {}", forged[0]),
            "x.mp4",
            vec![0; 64],
        )
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        stack.stored_files(&stack.mongo.videos).await,
        0,
        "nothing stored"
    );
    stack.stop().await;
}

/// An upload asks auth nothing: tokens are checked with auth's published
/// key, and the email preference is the one the gateway last saw pass
/// through it. With auth gone, a user who turned email off still gets a
/// job that sends none (asking auth would have failed, and failing means
/// "send email").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_asks_auth_nothing_not_even_the_email_preference() {
    let pem = auth_service::token::generate_ed25519_pem().expect("key");
    let mut stack = TestStack::start_with(
        AuthDb::Sqlite,
        StackOptions {
            ed25519_pem: Some(pem),
            ..StackOptions::default()
        },
    )
    .await;
    stack.add_user("fay@example.com", "fay-password").await;
    let token = stack.token("fay@example.com", "fay-password").await;
    let off = stack
        .http
        .put(format!("{}/api/v1/me/preferences", stack.gateway))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "email_notifications": false }))
        .send()
        .await
        .expect("preferences");
    assert_eq!(off.status(), 200);
    // The first upload loads auth's key set, while auth is there.
    let dir = tempfile::tempdir().expect("tempdir");
    let first = make_video(dir.path(), "first.mp4", 1, true);
    assert_eq!(stack.upload(&token, &[&first]).await.status(), 200);

    stack.stop_auth().await;
    let second = make_video(dir.path(), "second.mp4", 2, true);
    let upload = stack.upload(&token, &[&second]).await;

    assert_eq!(upload.status(), 200);
    let job_id = upload.headers()["x-job-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let id = mongodb::bson::oid::ObjectId::parse_str(&job_id).expect("id");
    let job = stack.mongo.jobs.get(id).await.expect("read").expect("job");
    assert!(!job.notify_email, "the preference the gateway saw: off");
    stack.stop().await;
}

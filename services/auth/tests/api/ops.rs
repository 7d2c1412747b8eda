//! The operations endpoints, the published key, and the limits around the
//! HTTP server: body and header sizes, graceful shutdown.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{Backend, assert_text, spawn_app};

backend_tests!(
    health_and_readiness_answer,
    logins_are_counted_and_timed_in_the_metrics,
    the_jwks_publishes_the_signing_key_with_its_kid,
    an_oversized_body_is_refused,
    oversized_headers_are_refused,
    shutdown_lets_an_in_flight_request_finish,
);

async fn health_and_readiness_answer(backend: Backend) {
    let app = spawn_app(backend).await;

    assert_text(app.get("/healthz").await, 200, "ok").await;
    assert_text(app.get("/readyz").await, 200, "ready").await;
}

async fn logins_are_counted_and_timed_in_the_metrics(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "pw", false).await;
    app.login_token("alice@example.com", "pw").await;
    let _ = app.post_login("alice@example.com", "wrong").await;

    let metrics = app.get("/metrics").await.text().await.expect("body");

    for series in [
        r#"auth_logins_total{outcome="ok"}"#,
        r#"auth_logins_total{outcome="failed"}"#,
        r#"auth_login_duration_seconds_count{outcome="ok"}"#,
        r#"auth_login_duration_seconds_sum{outcome="failed"}"#,
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
}

async fn the_jwks_publishes_the_signing_key_with_its_kid(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "pw", false).await;
    let token = app.login_token("alice@example.com", "pw").await;

    let response = app.get("/.well-known/jwks.json").await;

    assert_eq!(response.status(), 200);
    assert!(
        response.headers()[reqwest::header::CACHE_CONTROL]
            .to_str()
            .expect("ascii")
            .contains("max-age")
    );
    let jwks: serde_json::Value = response.json().await.expect("JSON");
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    let jwk = &keys[0];
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["alg"], "EdDSA");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["x"], app.public_key_x());
    assert!(jwk.get("d").is_none(), "the private key is never published");
    // The token names this key, and verifies with the JWK alone (what a
    // gateway does).
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), jwk["kid"].as_str());
    let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).expect("a JWK");
    let key = jsonwebtoken::DecodingKey::from_jwk(&parsed).expect("decoding key");
    jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &key,
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA),
    )
    .expect("verifies with the published key");
}

async fn an_oversized_body_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app
        .client
        .post(app.url("/login"))
        .basic_auth("alice@example.com", Some("pw"))
        .body(vec![b'x'; 65 * 1024])
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.status(), 413);
}

async fn oversized_headers_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app
        .client
        .post(app.url("/validate"))
        .header("authorization", format!("Bearer {}", "a".repeat(32 * 1024)))
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.status(), 431);
    // The server is still there for others.
    assert_text(app.get("/healthz").await, 200, "ok").await;
}

async fn shutdown_lets_an_in_flight_request_finish(backend: Backend) {
    // Arrange: a JSON login whose headers have arrived but whose body has
    // not, so the request is in the handler when shutdown begins.
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "correct horse", false)
        .await;
    let body = r#"{"email":"alice@example.com","password":"correct horse"}"#;
    let port = app.address.rsplit(':').next().expect("port").to_owned();
    let mut stream = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head sent");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act
    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(body.as_bytes()).await.expect("body sent");

    // Assert: the answer is complete, then the server is gone.
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"token\""), "{response}");
    let _db = tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("stopped in time")
        .expect("joined");
    assert!(
        TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .is_err(),
        "no longer listening"
    );
}

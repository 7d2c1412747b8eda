//! Failed-login and registration limits: they kick in, say when to retry,
//! and reset; only failures count; the client address is the TCP peer
//! unless a trusted proxy names it.
//!
//! Apps here use a small allowance and a short window so the tests are
//! quick: 2 failures per 4 s, i.e. a burst of 2 then one every 2 s.

use std::time::Duration;

use crate::helpers::{Backend, Signing, assert_api_error, spawn_app_with};

const FAST_LIMITS: &[&str] = &[
    "--login-failure-limit",
    "2",
    "--registration-limit",
    "2",
    "--rate-limit-window-secs",
    "4",
];

backend_tests!(
    failed_logins_per_email_are_limited_then_reset,
    the_json_login_is_limited_with_a_json_429,
    successful_logins_do_not_count,
    failed_logins_per_client_address_are_limited_across_emails,
    a_client_cannot_escape_the_limit_by_claiming_another_address,
    registrations_per_client_address_are_limited,
    a_trusted_peer_naming_no_client_is_limited_as_itself,
);

/// The `Retry-After` of a 429, in seconds.
fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()[reqwest::header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds")
}

async fn failed_logins_per_email_are_limited_then_reset(backend: Backend) {
    // Arrange
    let app = spawn_app_with(backend, Signing::Ed25519, FAST_LIMITS).await;
    app.add_user("alice@example.com", "correct horse", false)
        .await;
    // Each attempt from a client of its own, so only the per-email limit
    // is at work.
    for n in 0..2 {
        assert_eq!(
            app.post_login_for(&format!("198.51.100.{n}"), "alice@example.com", "wrong")
                .await
                .status(),
            401
        );
    }

    // Act: the next attempt, even with the right password, is refused
    // before the password is looked at.
    let limited = app
        .post_login_for("198.51.100.2", "ALICE@example.com", "correct horse")
        .await;

    // Assert
    assert_eq!(limited.status(), 429);
    let wait = retry_after(&limited);
    assert!((1..=4).contains(&wait), "Retry-After {wait}");
    assert_eq!(
        limited.text().await.expect("body"),
        "too many attempts, retry later"
    );
    // Another email is not affected.
    assert_eq!(
        app.post_login_for("198.51.100.3", "bob@example.com", "wrong")
            .await
            .status(),
        401
    );

    // After Retry-After, one more attempt goes through...
    tokio::time::sleep(Duration::from_secs(wait)).await;
    app.login_token("alice@example.com", "correct horse").await;
    // ...and after a whole quiet window the full allowance is back.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for n in 4..6 {
        assert_eq!(
            app.post_login_for(&format!("198.51.100.{n}"), "alice@example.com", "wrong")
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        app.post_login_for("198.51.100.6", "alice@example.com", "wrong")
            .await
            .status(),
        429
    );
}

/// A trusted proxy (the gateway) that names no client still has a client:
/// its own address is the key, so failures across emails are limited.
async fn a_trusted_peer_naming_no_client_is_limited_as_itself(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Ed25519, FAST_LIMITS).await;
    for email in ["a@example.com", "b@example.com"] {
        assert_eq!(app.post_login(email, "guess").await.status(), 401);
    }
    assert_eq!(app.post_login("c@example.com", "guess").await.status(), 429);
    for n in 0..2 {
        let response = app
            .register(&format!("user{n}@example.com"), "long enough")
            .await;
        assert_eq!(response.status(), 201);
    }
    let limited = app.register("user9@example.com", "long enough").await;
    assert_eq!(limited.status(), 429);
}

async fn the_json_login_is_limited_with_a_json_429(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Ed25519, FAST_LIMITS).await;
    for _ in 0..2 {
        assert_eq!(
            app.api_login("nobody@example.com", "wrong").await.status(),
            401
        );
    }

    // The classic and JSON logins share the allowance.
    assert_eq!(
        app.post_login("nobody@example.com", "wrong").await.status(),
        429
    );
    let retry = assert_api_error(
        app.api_login("nobody@example.com", "wrong").await,
        429,
        "rate_limited",
    )
    .await;
    assert!(
        retry.is_some_and(|secs| (1..=4).contains(&secs)),
        "{retry:?}"
    );
}

async fn successful_logins_do_not_count(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Ed25519, FAST_LIMITS).await;
    app.add_user("alice@example.com", "correct horse", false)
        .await;

    for _ in 0..5 {
        app.login_token("alice@example.com", "correct horse").await;
        assert_eq!(
            app.post_login_for("198.51.100.7", "alice@example.com", "correct horse")
                .await
                .status(),
            200
        );
    }
    // The failure allowance is still whole.
    assert_eq!(
        app.post_login("alice@example.com", "wrong").await.status(),
        401
    );
    assert_eq!(
        app.post_login("alice@example.com", "wrong").await.status(),
        401
    );
    assert_eq!(
        app.post_login("alice@example.com", "wrong").await.status(),
        429
    );
}

async fn failed_logins_per_client_address_are_limited_across_emails(backend: Backend) {
    // The test client connects from 127.0.0.1, a trusted proxy by default:
    // it forwards for clients named in X-Forwarded-For, like the gateway.
    let app = spawn_app_with(backend, Signing::Ed25519, FAST_LIMITS).await;
    app.add_user("victim@example.com", "correct horse", false)
        .await;

    for email in ["a@example.com", "b@example.com"] {
        assert_eq!(
            app.post_login_for("198.51.100.7", email, "guess")
                .await
                .status(),
            401
        );
    }

    // That client is now limited whatever email it tries...
    let limited = app
        .post_login_for("198.51.100.7", "victim@example.com", "correct horse")
        .await;
    assert_eq!(limited.status(), 429);
    // ...other clients are not...
    assert_eq!(
        app.post_login_for("203.0.113.9", "victim@example.com", "correct horse")
            .await
            .status(),
        200
    );
    // ...and neither is the proxy's own traffic that names no client.
    app.login_token("victim@example.com", "correct horse").await;
}

async fn a_client_cannot_escape_the_limit_by_claiming_another_address(backend: Backend) {
    // Nothing trusted: the TCP peer is the client, whatever it claims.
    let mut flags = FAST_LIMITS.to_vec();
    flags.extend(["--trusted-proxies", "192.0.2.1"]);
    let app = spawn_app_with(backend, Signing::Ed25519, &flags).await;

    for (n, email) in ["a@example.com", "b@example.com"].iter().enumerate() {
        let claimed = format!("198.51.100.{n}");
        assert_eq!(
            app.post_login_for(&claimed, email, "guess").await.status(),
            401
        );
    }

    let response = app
        .post_login_for("198.51.100.99", "c@example.com", "guess")
        .await;
    assert_eq!(response.status(), 429);
}

async fn registrations_per_client_address_are_limited(backend: Backend) {
    let mut flags = FAST_LIMITS.to_vec();
    flags.extend(["--trusted-proxies", "192.0.2.1"]);
    let app = spawn_app_with(backend, Signing::Ed25519, &flags).await;

    for n in 0..2 {
        let response = app
            .register(&format!("user{n}@example.com"), "long enough")
            .await;
        assert_eq!(response.status(), 201);
    }

    let retry = assert_api_error(
        app.register("user9@example.com", "long enough").await,
        429,
        "rate_limited",
    )
    .await;
    assert!(retry.is_some());
}

//! Failed-login and registration limits: they slow a guesser, say when to
//! retry, and reset; only failures count; they never lock out an account's
//! owner on a device it signed in from before, nor the other people behind
//! an address; the client address is the TCP peer unless a trusted proxy
//! names it.
//!
//! Apps here use a small allowance: 2 failures per email at one address,
//! 20 per address across emails, 8 per email across addresses; per 4 s
//! where a test waits for the allowance to come back, per 10 minutes where
//! it makes many attempts in a row.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Backend, Signing, assert_api_error, spawn_app_with};

const FAST_LIMITS: &[&str] = &[
    "--login-failure-limit",
    "2",
    "--registration-limit",
    "2",
    "--rate-limit-window-secs",
    "4",
    // The test client is the gateway: it names each client.
    "--trusted-proxies",
    "127.0.0.1",
];

/// The same allowance over ten minutes: for tests whose many failures take
/// longer than the fast window needs to give a cell back.
const STEADY_LIMITS: &[&str] = &[
    "--login-failure-limit",
    "2",
    "--registration-limit",
    "2",
    "--rate-limit-window-secs",
    "600",
    "--trusted-proxies",
    "127.0.0.1",
];

backend_tests!(
    one_email_at_one_address_is_slowed_then_let_through,
    the_json_login_is_limited_with_a_json_429,
    successful_logins_do_not_count,
    made_up_emails_from_an_address_never_stop_real_users_behind_it,
    a_distributed_guess_never_stops_the_owner_on_a_known_device,
    spraying_many_emails_from_one_address_is_slowed,
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

/// `POST /api/v1/login` as the gateway forwards it for `client`, with a
/// device token or not.
async fn api_login_for(
    app: &crate::helpers::TestApp,
    client: &str,
    email: &str,
    password: &str,
    device: Option<&str>,
) -> reqwest::Response {
    let mut body = json!({"email": email, "password": password});
    if let Some(device) = device {
        body["device_token"] = Value::from(device);
    }
    reqwest::Client::new()
        .post(format!("{}/api/v1/login", app.address))
        .header("x-forwarded-for", client)
        .json(&body)
        .send()
        .await
        .expect("request sent")
}

async fn one_email_at_one_address_is_slowed_then_let_through(backend: Backend) {
    // Arrange
    let app = spawn_app_with(backend, Signing::Ed25519, FAST_LIMITS).await;
    app.add_user("alice@example.com", "correct horse", false)
        .await;
    for _ in 0..2 {
        assert_eq!(
            app.post_login_for("198.51.100.1", "alice@example.com", "wrong")
                .await
                .status(),
            401
        );
    }

    // Act: the next attempt from there, even with the right password, is
    // refused before the password is looked at.
    let limited = app
        .post_login_for("198.51.100.1", "ALICE@example.com", "correct horse")
        .await;

    // Assert
    assert_eq!(limited.status(), 429);
    let wait = retry_after(&limited);
    assert!((1..=4).contains(&wait), "Retry-After {wait}");
    assert_eq!(
        limited.text().await.expect("body"),
        "too many attempts, retry later"
    );
    // The same account from elsewhere, and other accounts from there, go on.
    assert_eq!(
        app.post_login_for("198.51.100.2", "alice@example.com", "correct horse")
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_login_for("198.51.100.1", "bob@example.com", "wrong")
            .await
            .status(),
        401
    );
    // After Retry-After, one more attempt goes through.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        app.post_login_for("198.51.100.1", "alice@example.com", "correct horse")
            .await
            .status(),
        200
    );
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
    }
    // The failure allowance is still whole.
    for _ in 0..2 {
        assert_eq!(
            app.post_login("alice@example.com", "wrong").await.status(),
            401
        );
    }
    assert_eq!(
        app.post_login("alice@example.com", "wrong").await.status(),
        429
    );
}

/// Issue 25's finding: five logins with made-up emails from one address,
/// then the right passwords of four real users from that address, all got
/// 429. Behind a shared NAT one person locked everyone out.
async fn made_up_emails_from_an_address_never_stop_real_users_behind_it(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Ed25519, FAST_LIMITS).await;
    for n in 0..4 {
        app.add_user(&format!("real{n}@example.com"), "correct horse", false)
            .await;
    }
    for n in 0..5 {
        assert_eq!(
            app.post_login_for("198.51.100.7", &format!("made-up-{n}@example.com"), "guess")
                .await
                .status(),
            401
        );
    }

    for n in 0..4 {
        assert_eq!(
            app.post_login_for(
                "198.51.100.7",
                &format!("real{n}@example.com"),
                "correct horse"
            )
            .await
            .status(),
            200,
            "real{n} behind the same address"
        );
    }
}

/// Issue 25's finding: five wrong passwords for one email from five
/// addresses locked its owner out everywhere. Now a guess spread over
/// addresses needs four times the allowance before it slows anyone, and
/// then never the owner on a device it signed in from before.
async fn a_distributed_guess_never_stops_the_owner_on_a_known_device(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Ed25519, STEADY_LIMITS).await;
    app.add_user("owner@example.com", "correct horse", false)
        .await;
    let signed_in: Value = api_login_for(
        &app,
        "203.0.113.1",
        "owner@example.com",
        "correct horse",
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    let device = signed_in["device_token"]
        .as_str()
        .expect("a device token")
        .to_owned();

    for n in 0..5 {
        assert_eq!(
            app.post_login_for(&format!("198.51.100.{n}"), "owner@example.com", "guess")
                .await
                .status(),
            401
        );
    }
    // Five failures from five addresses: the owner is not held back at all.
    assert_eq!(
        api_login_for(
            &app,
            "203.0.113.2",
            "owner@example.com",
            "correct horse",
            None
        )
        .await
        .status(),
        200
    );
    for n in 5..8 {
        assert_eq!(
            app.post_login_for(&format!("198.51.100.{n}"), "owner@example.com", "guess")
                .await
                .status(),
            401
        );
    }
    // Eight: a new device waits (no lockout: one more try per window/8)...
    let slowed = api_login_for(
        &app,
        "203.0.113.3",
        "owner@example.com",
        "correct horse",
        None,
    )
    .await;
    assert_eq!(slowed.status(), 429);
    assert!(retry_after(&slowed) <= 600 / 8);
    // ...the owner's known device does not.
    assert_eq!(
        api_login_for(
            &app,
            "203.0.113.3",
            "owner@example.com",
            "correct horse",
            Some(&device)
        )
        .await
        .status(),
        200
    );
    // A device token of another account is no pass.
    assert_eq!(
        api_login_for(
            &app,
            "198.51.100.99",
            "owner@example.com",
            "guess",
            Some("d1.1.AAAA")
        )
        .await
        .status(),
        429
    );
}

async fn spraying_many_emails_from_one_address_is_slowed(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Ed25519, STEADY_LIMITS).await;
    for n in 0..20 {
        assert_eq!(
            app.post_login_for("198.51.100.7", &format!("{n}@example.com"), "guess")
                .await
                .status(),
            401
        );
    }
    let limited = app
        .post_login_for("198.51.100.7", "another@example.com", "guess")
        .await;
    assert_eq!(limited.status(), 429);
    // Other clients are not.
    assert_eq!(
        app.post_login_for("203.0.113.9", "another@example.com", "guess")
            .await
            .status(),
        401
    );
}

async fn a_client_cannot_escape_the_limit_by_claiming_another_address(backend: Backend) {
    // Nothing trusted: the TCP peer is the client, whatever it claims.
    let flags = [&FAST_LIMITS[..6], &["--trusted-proxies", "192.0.2.1"]].concat();
    let app = spawn_app_with(backend, Signing::Ed25519, &flags).await;

    for n in 0..2 {
        let claimed = format!("198.51.100.{n}");
        assert_eq!(
            app.post_login_for(&claimed, "a@example.com", "guess")
                .await
                .status(),
            401
        );
    }

    let response = app
        .post_login_for("198.51.100.99", "a@example.com", "guess")
        .await;
    assert_eq!(response.status(), 429);
}

async fn registrations_per_client_address_are_limited(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Ed25519, FAST_LIMITS).await;

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

/// A trusted proxy (the gateway) that names no client still has a client:
/// its own address is the key.
async fn a_trusted_peer_naming_no_client_is_limited_as_itself(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Ed25519, FAST_LIMITS).await;
    for _ in 0..2 {
        assert_eq!(app.post_login("a@example.com", "guess").await.status(), 401);
    }
    assert_eq!(app.post_login("a@example.com", "guess").await.status(), 429);
}

//! The controls an account's owner has (issue 25): confirming the address
//! through a mailed link before anything else is mailed to it, changing the
//! password, signing out everywhere, resetting a forgotten password through
//! the confirmed address, deleting the account; and a disabled account's
//! tokens stopping at once.

use std::time::Duration;

use serde_json::{Value, json};

use common::testing::smtp::MailSink;

use crate::helpers::{Backend, Signing, TestApp, assert_api_error, spawn_app_with};

backend_tests!(
    a_new_account_is_unconfirmed_until_its_mailed_link_is_used_once,
    the_link_is_mailed_again_at_most_once_a_minute,
    a_password_change_needs_the_current_one_and_ends_every_other_token,
    a_token_cannot_guess_the_password_faster_than_the_sign_in_form,
    signing_out_everywhere_ends_every_token_and_the_gateways_learn_it,
    a_forgotten_password_is_reset_only_through_a_confirmed_address,
    a_deleted_account_leaves_no_way_in,
    a_disabled_account_loses_its_tokens_at_once,
);

/// An app that mails through `sink`.
async fn app_with_mail(backend: Backend, signing: Signing) -> (TestApp, MailSink) {
    let (sink, port) = MailSink::start().await;
    let smtp = format!("smtp://127.0.0.1:{port}");
    let app = spawn_app_with(
        backend,
        signing,
        &["--smtp-url", &smtp, "--public-url", "https://mp3.example"],
    )
    .await;
    (app, sink)
}

/// The link token in the mail to `email` about `what` ("confirm", "reset").
async fn mailed_token(sink: &MailSink, email: &str, what: &str) -> String {
    let mail = sink.wait_for(email, Duration::from_secs(10)).await;
    let text = mail.text();
    let start = text
        .find(&format!("https://mp3.example/account/{what}?token="))
        .unwrap_or_else(|| panic!("no {what} link in {text}"));
    text[start..]
        .split_once("token=")
        .map(|(_, rest)| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .expect("token")
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request sent")
}

async fn api_token(app: &TestApp, email: &str, password: &str) -> String {
    let response = app.api_login(email, password).await;
    assert_eq!(response.status(), 200, "login of {email}");
    response.json::<Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

async fn a_new_account_is_unconfirmed_until_its_mailed_link_is_used_once(backend: Backend) {
    let (app, sink) = app_with_mail(backend, Signing::Ed25519).await;

    let registered = app.register("new@example.com", "long enough").await;
    assert_eq!(registered.status(), 201);
    let registered: Value = registered.json().await.expect("json");
    assert_eq!(registered["email_confirmed"], false);
    assert_eq!(registered["confirmation_sent"], true);
    let token = mailed_token(&sink, "new@example.com", "confirm").await;
    let mail = sink.all().await.pop().expect("mail");
    assert_eq!(mail.recipients, vec!["new@example.com".to_owned()]);
    // Fixed words: nothing the registrant typed but the address it went to.
    assert!(
        mail.text()
            .contains("Subject: Confirm your address for MP3 Converter")
    );

    let confirmed = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/confirm",
        None,
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!(confirmed.status(), 200);
    assert_eq!(
        confirmed.json::<Value>().await.expect("json")["email_confirmed"],
        true
    );
    let again = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/confirm",
        None,
        Some(json!({"token": token})),
    )
    .await;
    assert_api_error(again, 404, "invalid_link").await;
    let forged = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/confirm",
        None,
        Some(json!({"token": "forged"})),
    )
    .await;
    assert_api_error(forged, 404, "invalid_link").await;
    let session = api_token(&app, "new@example.com", "long enough").await;
    assert_eq!(
        app.me(&session).await.json::<Value>().await.expect("json")["email_confirmed"],
        true
    );
}

async fn the_link_is_mailed_again_at_most_once_a_minute(backend: Backend) {
    let (app, sink) = app_with_mail(backend, Signing::Ed25519).await;
    assert_eq!(
        app.register("again@example.com", "long enough")
            .await
            .status(),
        201
    );
    let _ = mailed_token(&sink, "again@example.com", "confirm").await;
    let session = api_token(&app, "again@example.com", "long enough").await;

    let resent = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/me/confirmation",
        Some(&session),
        None,
    )
    .await;

    let retry = assert_api_error(resent, 429, "rate_limited").await;
    assert!(retry.is_some_and(|secs| secs <= 60), "{retry:?}");
    assert_eq!(sink.count().await, 1, "no second mail within the minute");
}

async fn a_password_change_needs_the_current_one_and_ends_every_other_token(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Ed25519, &[]).await;
    app.add_user("pat@example.com", "first password", false)
        .await;
    let old = api_token(&app, "pat@example.com", "first password").await;
    let elsewhere = api_token(&app, "pat@example.com", "first password").await;

    let wrong = send(
        &app,
        reqwest::Method::PUT,
        "/api/v1/me/password",
        Some(&old),
        Some(json!({"current_password": "not it", "new_password": "second password"})),
    )
    .await;
    assert_api_error(wrong, 403, "wrong_password").await;
    let changed = send(
        &app,
        reqwest::Method::PUT,
        "/api/v1/me/password",
        Some(&old),
        Some(json!({"current_password": "first password", "new_password": "second password"})),
    )
    .await;
    assert_eq!(changed.status(), 200);
    let fresh = changed.json::<Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned();

    assert_eq!(app.me(&fresh).await.status(), 200);
    for stale in [&old, &elsewhere] {
        assert_eq!(app.me(stale).await.status(), 403);
        assert_eq!(app.validate_token(stale).await.status(), 403);
    }
    assert_eq!(
        app.api_login("pat@example.com", "first password")
            .await
            .status(),
        401
    );
    api_token(&app, "pat@example.com", "second password").await;
}

/// A stolen token is not a password oracle: wrong current passwords (to
/// change the password or delete the account) count as failed sign-ins.
async fn a_token_cannot_guess_the_password_faster_than_the_sign_in_form(backend: Backend) {
    let app = spawn_app_with(
        backend,
        Signing::Ed25519,
        &[
            "--login-failure-limit",
            "2",
            "--rate-limit-window-secs",
            "600",
        ],
    )
    .await;
    app.add_user("tom@example.com", "the password", false).await;
    let token = api_token(&app, "tom@example.com", "the password").await;
    let change = |current: &str| {
        send(
            &app,
            reqwest::Method::PUT,
            "/api/v1/me/password",
            Some(&token),
            Some(json!({"current_password": current, "new_password": "another password"})),
        )
    };
    for guess in ["guess one", "guess two"] {
        assert_api_error(change(guess).await, 403, "wrong_password").await;
    }
    let retry = assert_api_error(change("guess three").await, 429, "rate_limited").await;
    assert!(retry.is_some_and(|secs| secs > 0), "{retry:?}");
    let deletion = send(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/me",
        Some(&token),
        Some(json!({"password": "guess four"})),
    )
    .await;
    assert_api_error(deletion, 429, "rate_limited").await;
    assert_eq!(
        app.me(&token).await.status(),
        200,
        "the account is untouched"
    );
}

async fn signing_out_everywhere_ends_every_token_and_the_gateways_learn_it(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Ed25519, &[]).await;
    app.add_user("sam@example.com", "correct horse", false)
        .await;
    let laptop = api_token(&app, "sam@example.com", "correct horse").await;
    let phone = api_token(&app, "sam@example.com", "correct horse").await;
    let before: Value = app
        .get("/internal/token-revocations?since_ms=0")
        .await
        .json()
        .await
        .expect("json");
    let since = before["now_ms"].as_i64().expect("now_ms");

    let out = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/me/sign-out-everywhere",
        Some(&phone),
        None,
    )
    .await;

    assert_eq!(out.status(), 204);
    for token in [&laptop, &phone] {
        assert_eq!(app.me(token).await.status(), 403);
        assert_eq!(app.validate_token(token).await.status(), 403);
    }
    let feed: Value = app
        .get(&format!("/internal/token-revocations?since_ms={since}"))
        .await
        .json()
        .await
        .expect("json");
    let revoked = &feed["revocations"][0];
    assert_eq!(revoked["version"], 1, "{feed}");
    // A new sign-in works, at the new version.
    let again = api_token(&app, "sam@example.com", "correct horse").await;
    assert_eq!(app.me(&again).await.status(), 200);
    assert_eq!(app.decode(&again)["ver"], 1);
}

async fn a_forgotten_password_is_reset_only_through_a_confirmed_address(backend: Backend) {
    let (app, sink) = app_with_mail(backend, Signing::Ed25519).await;
    // Unconfirmed: asking for a reset mails nothing (and says the same).
    assert_eq!(
        app.register("unproven@example.com", "long enough")
            .await
            .status(),
        201
    );
    let _ = mailed_token(&sink, "unproven@example.com", "confirm").await;
    let asked = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/password-reset",
        None,
        Some(json!({"email": "unproven@example.com"})),
    )
    .await;
    assert_eq!(asked.status(), 202);
    let nobody = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/password-reset",
        None,
        Some(json!({"email": "nobody@example.com"})),
    )
    .await;
    assert_eq!(nobody.status(), 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.count().await, 1, "only the confirmation mail");

    // Confirmed (an operator's account): the link comes, works once.
    app.add_user("kim@example.com", "old password", false).await;
    let old_session = api_token(&app, "kim@example.com", "old password").await;
    let asked = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/password-reset",
        None,
        Some(json!({"email": "KIM@example.com"})),
    )
    .await;
    assert_eq!(asked.status(), 202);
    let token = mailed_token(&sink, "kim@example.com", "reset").await;
    let done = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/password-reset/complete",
        None,
        Some(json!({"token": token, "new_password": "new password"})),
    )
    .await;
    assert_eq!(done.status(), 204);
    let replayed = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/password-reset/complete",
        None,
        Some(json!({"token": token, "new_password": "third password"})),
    )
    .await;
    assert_api_error(replayed, 404, "invalid_link").await;

    assert_eq!(
        app.me(&old_session).await.status(),
        403,
        "the reset signs out everywhere"
    );
    assert_eq!(
        app.api_login("kim@example.com", "old password")
            .await
            .status(),
        401
    );
    api_token(&app, "kim@example.com", "new password").await;
}

async fn a_deleted_account_leaves_no_way_in(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Hs256, &[]).await;
    app.add_user("dee@example.com", "correct horse", false)
        .await;
    let session = api_token(&app, "dee@example.com", "correct horse").await;

    let wrong = send(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/me",
        Some(&session),
        Some(json!({"password": "nope"})),
    )
    .await;
    assert_api_error(wrong, 403, "wrong_password").await;
    assert_eq!(
        app.me(&session).await.status(),
        200,
        "a wrong password deletes nothing"
    );
    let deleted = send(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/me",
        Some(&session),
        Some(json!({"password": "correct horse"})),
    )
    .await;
    assert_eq!(deleted.status(), 200);

    assert_eq!(app.me(&session).await.status(), 403);
    assert_eq!(app.validate_token(&session).await.status(), 403);
    assert_eq!(
        app.api_login("dee@example.com", "correct horse")
            .await
            .status(),
        401
    );
    // The address can be registered afresh.
    assert_eq!(
        app.register("dee@example.com", "another one")
            .await
            .status(),
        201
    );
}

async fn a_disabled_account_loses_its_tokens_at_once(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Hs256, &[]).await;
    app.add_user("ex@example.com", "correct horse", false).await;
    let session = app.login_token("ex@example.com", "correct horse").await;
    assert_eq!(app.validate_token(&session).await.status(), 200);

    let store = auth_service::store::UserStore::connect(&app.db.url)
        .await
        .expect("store");
    store
        .set_disabled("ex@example.com", true)
        .await
        .expect("disabled");
    store.close().await;

    assert_eq!(app.validate_token(&session).await.status(), 403);
    assert_eq!(app.me(&session).await.status(), 403);
}

//! The JSON API: `/api/v1/login`, `/api/v1/register`, `/api/v1/me` and
//! `/api/v1/me/preferences`, with `{"error": {"code", "message"}}` errors.

use serde_json::{Value, json};
use sqlx::Row as _;

use crate::helpers::{Backend, JWT_TTL, Signing, assert_api_error, spawn_app, spawn_app_with};

backend_tests!(
    json_login_returns_a_token_and_its_expiry,
    json_login_refusals_are_json_errors,
    malformed_json_bodies_are_json_errors,
    register_creates_an_ordinary_user_who_can_log_in,
    register_refuses_a_taken_email_in_any_case,
    register_refuses_invalid_emails,
    register_refuses_passwords_under_eight_characters,
    register_can_be_disabled,
    registration_says_whether_it_is_open,
    me_returns_the_profile_from_the_database,
    me_needs_a_valid_bearer_token,
    me_refuses_a_user_disabled_after_login,
    preferences_are_stored_with_the_user,
    unknown_api_paths_are_json_404s,
);

async fn json_login_returns_a_token_and_its_expiry(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "correct horse", false)
        .await;

    let response = app.api_login("Alice@Example.com", "correct horse").await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[reqwest::header::CACHE_CONTROL],
        "no-store"
    );
    let body: Value = response.json().await.expect("JSON");
    let claims = app.decode(body["token"].as_str().expect("token"));
    assert_eq!(claims["username"], "alice@example.com");
    assert_eq!(claims["admin"], false);
    assert_eq!(
        claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"),
        JWT_TTL
    );
    // expires_at is the token's exp, as RFC 3339 UTC.
    let expires_at = body["expires_at"].as_str().expect("expires_at");
    let parsed =
        time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
    assert_eq!(
        u64::try_from(parsed.unix_timestamp()).expect("positive"),
        claims["exp"].as_u64().expect("exp")
    );
    assert!(expires_at.ends_with('Z'), "{expires_at}");
}

async fn json_login_refusals_are_json_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "correct horse", false)
        .await;
    app.add_user("off@example.com", "correct horse", false)
        .await;
    app.db
        .execute("UPDATE users SET disabled = TRUE WHERE email = 'off@example.com'")
        .await;

    for (email, password) in [
        ("alice@example.com", "wrong horse"),
        ("nobody@example.com", "correct horse"),
        ("off@example.com", "correct horse"),
        ("' OR 1=1 --", "' OR '1'='1"),
    ] {
        assert_api_error(
            app.api_login(email, password).await,
            401,
            "invalid_credentials",
        )
        .await;
    }
}

async fn malformed_json_bodies_are_json_errors(backend: Backend) {
    let app = spawn_app(backend).await;

    // Not JSON.
    let response = app
        .client
        .post(app.url("/api/v1/login"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_api_error(response, 400, "bad_request").await;
    // No JSON content type.
    let response = app
        .client
        .post(app.url("/api/v1/login"))
        .body(r#"{"email":"a@b.c","password":"x"}"#)
        .send()
        .await
        .expect("sent");
    assert_api_error(response, 415, "bad_request").await;
    // Missing or unexpected fields, wrong types.
    for body in [
        json!({"email": "a@b.c"}),
        json!({"email": "a@b.c", "password": "12345678", "admin": true}),
        json!({"email": 1, "password": "12345678"}),
    ] {
        assert_api_error(
            app.post_json("/api/v1/register", &body).await,
            422,
            "bad_request",
        )
        .await;
    }
    // Too big.
    let huge = json!({"email": "a@b.c", "password": "x".repeat(64 * 1024)});
    assert_api_error(
        app.post_json("/api/v1/login", &huge).await,
        413,
        "bad_request",
    )
    .await;
}

async fn register_creates_an_ordinary_user_who_can_log_in(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app.register("New.User@Example.com", "long enough").await;

    assert_eq!(response.status(), 201);
    let profile: Value = response.json().await.expect("JSON");
    assert_eq!(profile["email"], "new.user@example.com");
    assert_eq!(profile["admin"], false);
    assert_eq!(profile["email_notifications"], true);
    assert!(profile["created_at"].is_string());
    let token = app.login_token("new.user@example.com", "long enough").await;
    assert_eq!(app.decode(&token)["admin"], false);
    let hash: String = app
        .db
        .fetch_one("SELECT password_hash FROM users WHERE email = 'new.user@example.com'")
        .await
        .get("password_hash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
}

async fn register_refuses_a_taken_email_in_any_case(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(
        app.register("alice@example.com", "first password")
            .await
            .status(),
        201
    );

    for email in [
        "alice@example.com",
        "ALICE@Example.COM",
        " alice@example.com ",
    ] {
        assert_api_error(
            app.register(email, "second password").await,
            409,
            "email_taken",
        )
        .await;
    }
    // The first registration is untouched.
    app.login_token("alice@example.com", "first password").await;
}

async fn register_refuses_invalid_emails(backend: Backend) {
    let app = spawn_app(backend).await;

    for email in [
        "",
        "not-an-email",
        "a@b",
        "two@@example.com",
        "sp ace@example.com",
        "' OR 1=1 --@example.com",
        "alice@example.com'; DROP TABLE users; --",
    ] {
        assert_api_error(
            app.register(email, "long enough").await,
            400,
            "invalid_email",
        )
        .await;
    }
    let row = app.db.fetch_one("SELECT COUNT(*) AS n FROM users").await;
    assert_eq!(row.get::<i64, _>("n"), 0);
}

async fn register_refuses_passwords_under_eight_characters(backend: Backend) {
    let app = spawn_app(backend).await;

    // Seven characters, even when they take more than eight bytes.
    for password in ["", "1234567", "ääääääà"] {
        assert_api_error(
            app.register("alice@example.com", password).await,
            400,
            "invalid_password",
        )
        .await;
    }
    // Eight characters, some of them multi-byte.
    assert_eq!(
        app.register("alice@example.com", "pässwö🔑d")
            .await
            .status(),
        201
    );
    app.login_token("alice@example.com", "pässwö🔑d").await;
}

async fn register_can_be_disabled(backend: Backend) {
    let app = spawn_app_with(
        backend,
        Signing::Ed25519,
        &["--allow-registration", "false"],
    )
    .await;

    assert_api_error(
        app.register("alice@example.com", "long enough").await,
        403,
        "registration_disabled",
    )
    .await;
    let row = app.db.fetch_one("SELECT COUNT(*) AS n FROM users").await;
    assert_eq!(row.get::<i64, _>("n"), 0);
}

async fn registration_says_whether_it_is_open(backend: Backend) {
    for (flag, enabled) in [("true", true), ("false", false)] {
        let app = spawn_app_with(backend, Signing::Ed25519, &["--allow-registration", flag]).await;
        let response = app.get("/api/v1/register").await;
        assert_eq!(response.status(), 200, "{flag}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body, json!({ "enabled": enabled }), "{flag}");
        app.stop().await;
    }
}

async fn me_returns_the_profile_from_the_database(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("admin@example.com", "correct horse", true)
        .await;
    let token = app.login_token("admin@example.com", "correct horse").await;

    let response = app.me(&token).await;

    assert_eq!(response.status(), 200);
    let profile: Value = response.json().await.expect("JSON");
    assert_eq!(profile["email"], "admin@example.com");
    assert_eq!(profile["admin"], true);
    assert_eq!(profile["email_notifications"], true);
    // An operator's `user add` vouches for the address.
    assert_eq!(profile["email_confirmed"], true);
    let created_at = profile["created_at"].as_str().expect("created_at");
    time::OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    let keys: Vec<&String> = profile.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 5, "exactly the documented fields: {profile}");
}

async fn me_needs_a_valid_bearer_token(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app.get("/api/v1/me").await;
    assert_api_error(response, 401, "missing_credentials").await;
    assert_api_error(app.me("garbage").await, 403, "not_authorized").await;
    let forged = app.sign(&crate::helpers::claims(crate::helpers::now() - 3_600));
    assert_api_error(app.me(&forged).await, 403, "not_authorized").await;
}

async fn me_refuses_a_user_disabled_after_login(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "correct horse", false)
        .await;
    let token = app.login_token("alice@example.com", "correct horse").await;

    app.db
        .execute("UPDATE users SET disabled = TRUE WHERE email = 'alice@example.com'")
        .await;

    assert_api_error(app.me(&token).await, 403, "not_authorized").await;
}

async fn preferences_are_stored_with_the_user(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "correct horse", false)
        .await;
    let token = app.login_token("alice@example.com", "correct horse").await;

    let response = app
        .put_preferences(&token, &json!({"email_notifications": false}))
        .await;

    assert_eq!(response.status(), 200);
    let profile: Value = response.json().await.expect("JSON");
    assert_eq!(profile["email_notifications"], false);
    let again: Value = app.me(&token).await.json().await.expect("JSON");
    assert_eq!(again["email_notifications"], false);
    let row = app
        .db
        .fetch_one(
            "SELECT COUNT(*) AS n FROM users \
             WHERE email = 'alice@example.com' AND email_notifications = FALSE",
        )
        .await;
    assert_eq!(row.get::<i64, _>("n"), 1);
    // And back on.
    let response = app
        .put_preferences(&token, &json!({"email_notifications": true}))
        .await;
    let profile: Value = response.json().await.expect("JSON");
    assert_eq!(profile["email_notifications"], true);

    // Refusals.
    for body in [json!({}), json!({"email_notifications": "yes"})] {
        assert_api_error(app.put_preferences(&token, &body).await, 422, "bad_request").await;
    }
    assert_api_error(
        app.put_preferences("garbage", &json!({"email_notifications": false}))
            .await,
        403,
        "not_authorized",
    )
    .await;
}

async fn unknown_api_paths_are_json_404s(backend: Backend) {
    let app = spawn_app(backend).await;

    assert_api_error(app.get("/api/v1/nothing-here").await, 404, "not_found").await;
}

//! `POST /login`: HTTP Basic credentials in, a token (or a 401) out.

use sqlx::Row as _;

use crate::helpers::{Backend, JWT_TTL, assert_text, spawn_app};

backend_tests!(
    login_returns_a_token_with_the_users_claims,
    only_admins_get_the_admin_claim,
    a_wrong_password_is_invalid_credentials,
    an_unknown_email_is_invalid_credentials,
    no_or_malformed_authorization_is_missing_credentials,
    a_disabled_user_cannot_log_in,
    the_email_is_case_insensitive,
    an_injection_shaped_email_is_just_invalid_credentials,
    an_injection_shaped_password_is_just_invalid_credentials,
    a_unicode_password_works,
);

async fn login_returns_a_token_with_the_users_claims(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "correct horse", false)
        .await;
    let stored_id: i64 = app
        .db
        .fetch_one("SELECT id FROM users WHERE email = 'alice@example.com'")
        .await
        .get("id");

    // Act
    let before = crate::helpers::now();
    let response = app.post_login("alice@example.com", "correct horse").await;

    // Assert
    assert_eq!(response.status(), 200);
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(
        response.headers()[reqwest::header::CACHE_CONTROL],
        "no-store"
    );
    let claims = app.decode(&response.text().await.expect("body"));
    assert_eq!(claims["username"], "alice@example.com");
    assert_eq!(claims["admin"], false);
    assert_eq!(claims["sub"], stored_id.to_string());
    let iat = claims["iat"].as_u64().expect("iat");
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(iat >= before && iat <= crate::helpers::now(), "iat {iat}");
    assert_eq!(exp - iat, JWT_TTL);
}

async fn only_admins_get_the_admin_claim(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("admin@example.com", "pw-admin", true).await;
    app.add_user("user@example.com", "pw-user", false).await;

    let admin = app.decode(&app.login_token("admin@example.com", "pw-admin").await);
    let user = app.decode(&app.login_token("user@example.com", "pw-user").await);

    assert_eq!(admin["admin"], true);
    assert_eq!(user["admin"], false);
}

async fn a_wrong_password_is_invalid_credentials(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "correct horse", false)
        .await;

    let response = app.post_login("alice@example.com", "wrong horse").await;

    assert_text(response, 401, "invalid credentials").await;
}

async fn an_unknown_email_is_invalid_credentials(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "correct horse", false)
        .await;

    let response = app.post_login("nobody@example.com", "correct horse").await;

    assert_text(response, 401, "invalid credentials").await;
}

async fn no_or_malformed_authorization_is_missing_credentials(backend: Backend) {
    let app = spawn_app(backend).await;

    for authorization in [
        None,
        Some("Basic"),
        Some("Basic %%%"),
        Some("Bearer abc"),
        Some("Basic bm9jb2xvbg=="),
    ] {
        let response = app.post_login_with(authorization).await;
        assert_eq!(response.status(), 401, "{authorization:?}");
        assert_eq!(
            response.text().await.expect("body"),
            "missing credentials",
            "{authorization:?}"
        );
    }
}

async fn a_disabled_user_cannot_log_in(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "correct horse", false)
        .await;
    app.db
        .execute("UPDATE users SET disabled = TRUE WHERE email = 'alice@example.com'")
        .await;

    let response = app.post_login("alice@example.com", "correct horse").await;

    assert_text(response, 401, "invalid credentials").await;
}

async fn the_email_is_case_insensitive(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("Carol@Example.COM", "pw", false).await;

    let token = app.login_token("cAROL@example.com", "pw").await;

    assert_eq!(app.decode(&token)["username"], "carol@example.com");
    let stored: String = app
        .db
        .fetch_one("SELECT email FROM users")
        .await
        .get("email");
    assert_eq!(stored, "carol@example.com");
}

async fn an_injection_shaped_email_is_just_invalid_credentials(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "correct horse", false)
        .await;

    for email in ["' OR 1=1 --", "alice@example.com' --", "\" OR \"\"=\""] {
        let response = app.post_login(email, "anything").await;
        assert_eq!(response.status(), 401, "{email}");
        assert_eq!(
            response.text().await.expect("body"),
            "invalid credentials",
            "{email}"
        );
    }
    // The table is intact.
    app.login_token("alice@example.com", "correct horse").await;
}

async fn an_injection_shaped_password_is_just_invalid_credentials(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "correct horse", false)
        .await;

    for password in ["' OR '1'='1", "x' OR 1=1; --", "\\'; DROP TABLE users; --"] {
        let response = app.post_login("alice@example.com", password).await;
        assert_eq!(response.status(), 401, "{password}");
        assert_eq!(
            response.text().await.expect("body"),
            "invalid credentials",
            "{password}"
        );
    }
    app.login_token("alice@example.com", "correct horse").await;
}

async fn a_unicode_password_works(backend: Backend) {
    let app = spawn_app(backend).await;
    let password = "pässwörd 🔑 密码 contraseña";
    app.add_user("émile@exemple.fr", password, false).await;

    let token = app.login_token("ÉMILE@exemple.fr", password).await;

    assert_eq!(app.decode(&token)["username"], "émile@exemple.fr");
    let response = app.post_login("émile@exemple.fr", "passwort 🔑").await;
    assert_text(response, 401, "invalid credentials").await;
}

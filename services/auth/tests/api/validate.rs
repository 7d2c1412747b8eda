//! `POST /validate`: a token in the `Authorization` header (after any scheme
//! word), its claims out, or 401 / 403.

use serde_json::json;

use crate::helpers::{Backend, JWT_SECRET, assert_text, now, sign, spawn_app, unsigned};

backend_tests!(
    a_valid_token_returns_its_claims,
    no_authorization_is_missing_credentials,
    a_header_without_a_space_is_missing_credentials,
    garbage_is_not_authorized,
    an_expired_token_is_not_authorized,
    an_alg_none_token_is_not_authorized,
    a_token_signed_with_another_secret_is_not_authorized,
);

fn claims(exp: u64) -> serde_json::Value {
    json!({"username": "alice@example.com", "admin": true, "iat": now() - 10, "exp": exp, "sub": "1"})
}

async fn a_valid_token_returns_its_claims(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "pw", true).await;
    let token = app.login_token("alice@example.com", "pw").await;

    for scheme in ["Bearer", "JWT"] {
        let response = app.post_validate(Some(&format!("{scheme} {token}"))).await;

        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.expect("JSON claims");
        assert_eq!(body["username"], "alice@example.com");
        assert_eq!(body["admin"], true);
        assert!(body["sub"].is_string());
        assert!(body["iat"].is_u64() && body["exp"].is_u64());
    }
}

async fn no_authorization_is_missing_credentials(backend: Backend) {
    let app = spawn_app(backend).await;

    assert_text(app.post_validate(None).await, 401, "missing credentials").await;
    assert_text(
        app.post_validate(Some("")).await,
        401,
        "missing credentials",
    )
    .await;
}

async fn a_header_without_a_space_is_missing_credentials(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = sign(&claims(now() + 600), JWT_SECRET);

    assert_text(
        app.post_validate(Some(&token)).await,
        401,
        "missing credentials",
    )
    .await;
    assert_text(
        app.post_validate(Some("Bearer")).await,
        401,
        "missing credentials",
    )
    .await;
}

async fn garbage_is_not_authorized(backend: Backend) {
    let app = spawn_app(backend).await;

    for token in ["garbage", "a.b.c", "Bearer x", "🙂"] {
        let response = app.post_validate(Some(&format!("Bearer {token}"))).await;
        assert_eq!(response.status(), 403, "{token}");
        assert_eq!(response.text().await.expect("body"), "not authorized");
    }
}

async fn an_expired_token_is_not_authorized(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = sign(&claims(now() - 3_600), JWT_SECRET);

    let response = app.post_validate(Some(&format!("Bearer {token}"))).await;

    assert_text(response, 403, "not authorized").await;
}

async fn an_alg_none_token_is_not_authorized(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = unsigned(&claims(now() + 600));

    let response = app.post_validate(Some(&format!("Bearer {token}"))).await;

    assert_text(response, 403, "not authorized").await;
}

async fn a_token_signed_with_another_secret_is_not_authorized(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = sign(&claims(now() + 600), "not-the-secret");

    let response = app.post_validate(Some(&format!("Bearer {token}"))).await;

    assert_text(response, 403, "not authorized").await;
}

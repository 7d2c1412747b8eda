//! HS256 with `JWT_SECRET`: the original deployment's tokens, still
//! supported, with the same refusals.

use crate::helpers::{
    Backend, JWT_SECRET, Signing, assert_text, claims, now, sign_hs256,
    sign_with_another_ed25519_key, spawn_app_with, unsigned,
};

backend_tests!(
    hs256_tokens_carry_the_claims_and_a_kid,
    hs256_deployments_publish_no_key,
    tokens_of_the_original_system_without_kid_are_accepted,
    hs256_deployments_refuse_other_algorithms_and_secrets,
);

async fn hs256_tokens_carry_the_claims_and_a_kid(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Hs256, &[]).await;
    app.add_user("alice@example.com", "correct horse", true)
        .await;

    let token = app.login_token("alice@example.com", "correct horse").await;

    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
    let kid = header.kid.expect("kid");
    assert!(!kid.contains(JWT_SECRET), "{kid}");
    let claims = app.decode(&token);
    assert_eq!(claims["username"], "alice@example.com");
    assert_eq!(claims["admin"], true);
    let response = app.validate_token(&token).await;
    assert_eq!(response.status(), 200);
}

async fn hs256_deployments_publish_no_key(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Hs256, &[]).await;

    let response = app.get("/.well-known/jwks.json").await;

    assert_eq!(response.status(), 200);
    let jwks: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(jwks, serde_json::json!({"keys": []}));
}

async fn tokens_of_the_original_system_without_kid_are_accepted(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Hs256, &[]).await;
    // What the original service issued: HS256, the shared secret, no kid.
    let token = sign_hs256(&claims(now() + 600), JWT_SECRET.as_bytes());

    let response = app.validate_token(&token).await;

    assert_eq!(response.status(), 200);
}

async fn hs256_deployments_refuse_other_algorithms_and_secrets(backend: Backend) {
    let app = spawn_app_with(backend, Signing::Hs256, &[]).await;

    for token in [
        unsigned(&claims(now() + 600)),
        sign_with_another_ed25519_key(&claims(now() + 600), None),
        sign_hs256(&claims(now() + 600), b"another-secret-another-secret-00"),
        sign_hs256(&claims(now() - 3_600), JWT_SECRET.as_bytes()),
    ] {
        assert_text(app.validate_token(&token).await, 403, "not authorized").await;
    }
}

//! `POST /validate`: a token in the `Authorization` header (after any scheme
//! word), its claims out, or 401 / 403. Every way of forging or stretching
//! a token is a 403.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::helpers::{
    Backend, assert_text, claims, now, sign_hs256, sign_with_another_ed25519_key, spawn_app,
    unsigned,
};

backend_tests!(
    a_valid_token_returns_its_claims,
    no_authorization_is_missing_credentials,
    a_header_without_a_space_is_missing_credentials,
    garbage_is_not_authorized,
    an_expired_token_is_not_authorized,
    expiry_has_at_most_thirty_seconds_of_leeway,
    an_alg_none_token_is_not_authorized,
    an_hs256_token_forged_with_the_public_key_is_not_authorized,
    a_token_signed_with_another_key_is_not_authorized,
    a_tampered_token_is_not_authorized,
    a_token_missing_claims_is_not_authorized,
);

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
    let token = app.sign(&claims(now() + 600));

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

    for token in [
        "garbage",
        "a.b.c",
        "Bearer x",
        "🙂",
        "..",
        "eyJhbGciOiJFZERTQSJ9.e30.",
        &"A".repeat(8000),
    ] {
        let response = app.post_validate(Some(&format!("Bearer {token}"))).await;
        assert_eq!(response.status(), 403, "{token}");
        assert_eq!(response.text().await.expect("body"), "not authorized");
    }
}

async fn an_expired_token_is_not_authorized(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.sign(&claims(now() - 3_600));

    assert_text(app.validate_token(&token).await, 403, "not authorized").await;
}

async fn expiry_has_at_most_thirty_seconds_of_leeway(backend: Backend) {
    let app = spawn_app(backend).await;

    // Expired 10 s ago: within the clock-skew allowance.
    let just_expired = app.sign(&claims(now() - 10));
    assert_eq!(app.validate_token(&just_expired).await.status(), 200);
    // Expired 40 s ago: past it.
    let expired = app.sign(&claims(now() - 40));
    assert_text(app.validate_token(&expired).await, 403, "not authorized").await;
}

async fn an_alg_none_token_is_not_authorized(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = unsigned(&claims(now() + 600));

    assert_text(app.validate_token(&token).await, 403, "not authorized").await;
}

async fn an_hs256_token_forged_with_the_public_key_is_not_authorized(backend: Backend) {
    let app = spawn_app(backend).await;
    let jwks: serde_json::Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .expect("JWKS");
    let x = jwks["keys"][0]["x"]
        .as_str()
        .expect("public key")
        .to_owned();
    let raw = URL_SAFE_NO_PAD.decode(&x).expect("base64url");

    // Whatever form of the public key a naive verifier would use as the
    // HMAC secret: raw bytes, the JWK text, the JWKS document.
    for secret in [
        raw.clone(),
        x.clone().into_bytes(),
        jwks.to_string().into_bytes(),
    ] {
        let forged = sign_hs256(&claims(now() + 600), &secret);
        assert_text(app.validate_token(&forged).await, 403, "not authorized").await;
    }
    // The same with the app's kid in the header.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(app.kid().to_owned());
    let forged = jsonwebtoken::encode(
        &header,
        &claims(now() + 600),
        &jsonwebtoken::EncodingKey::from_secret(&raw),
    )
    .expect("encode");
    assert_text(app.validate_token(&forged).await, 403, "not authorized").await;
}

async fn a_token_signed_with_another_key_is_not_authorized(backend: Backend) {
    let app = spawn_app(backend).await;

    for kid in [None, Some(app.kid()), Some("another-key")] {
        let token = sign_with_another_ed25519_key(&claims(now() + 600), kid);
        assert_text(app.validate_token(&token).await, 403, "not authorized").await;
    }
    let token = sign_hs256(&claims(now() + 600), b"not-the-secret");
    assert_text(app.validate_token(&token).await, 403, "not authorized").await;
}

async fn a_tampered_token_is_not_authorized(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("bob@example.com", "pw", false).await;
    let token = app.login_token("bob@example.com", "pw").await;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();

    // Promote ourselves to admin, keeping the original signature.
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).expect("payload"))
            .expect("JSON payload");
    payload["admin"] = json!(true);
    parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
    let promoted = parts.join(".");
    assert_text(app.validate_token(&promoted).await, 403, "not authorized").await;

    // Cut off the signature.
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    assert_text(app.validate_token(&unsigned).await, 403, "not authorized").await;
}

async fn a_token_missing_claims_is_not_authorized(backend: Backend) {
    let app = spawn_app(backend).await;

    let no_exp = app.sign(&json!({"username": "a@b.c", "admin": false, "iat": now(), "sub": "1"}));
    let no_username =
        app.sign(&json!({"admin": false, "iat": now(), "exp": now() + 600, "sub": "1"}));
    for token in [no_exp, no_username] {
        assert_text(app.validate_token(&token).await, 403, "not authorized").await;
    }
}

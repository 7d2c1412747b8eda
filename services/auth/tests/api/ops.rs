//! The operations endpoints and the limits around the API.

use crate::helpers::{Backend, assert_text, spawn_app};

backend_tests!(
    health_and_readiness_answer,
    logins_are_counted_in_the_metrics,
    an_oversized_body_is_refused,
);

async fn health_and_readiness_answer(backend: Backend) {
    let app = spawn_app(backend).await;

    assert_text(app.get("/healthz").await, 200, "ok").await;
    assert_text(app.get("/readyz").await, 200, "ready").await;
}

async fn logins_are_counted_in_the_metrics(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "pw", false).await;
    app.login_token("alice@example.com", "pw").await;
    let _ = app.post_login("alice@example.com", "wrong").await;

    let metrics = app.get("/metrics").await.text().await.expect("body");

    assert!(
        metrics.contains(r#"auth_logins_total{outcome="ok"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"auth_logins_total{outcome="failed"}"#),
        "{metrics}"
    );
}

async fn an_oversized_body_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app
        .client
        .post(format!("{}/login", app.address))
        .basic_auth("alice@example.com", Some("pw"))
        .body(vec![b'x'; 65 * 1024])
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.status(), 413);
}

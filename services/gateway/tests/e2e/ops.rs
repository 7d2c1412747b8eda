//! The operations endpoints live on their own port: an Ingress in front of
//! the public one exposes the API and nothing about the deployment.

use crate::helpers::{AuthDb, StackOptions, TestStack};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_public_port_serves_no_operations_endpoint_the_ops_port_serves_them_all() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    for path in ["/metrics", "/healthz", "/readyz"] {
        let public = stack
            .http
            .get(format!("{}{path}", stack.gateway))
            .send()
            .await
            .expect("public");
        assert_eq!(public.status(), 404, "{path} on the public port");
        let ops = stack
            .http
            .get(format!("{}{path}", stack.gateway_ops))
            .send()
            .await
            .expect("ops");
        assert_eq!(ops.status(), 200, "{path} on the ops port");
    }
    let metrics = stack
        .http
        .get(format!("{}/metrics", stack.gateway_ops))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(metrics.contains("gateway_http_requests_total"), "{metrics}");
    stack.stop().await;
}

/// Auth down takes sign-in away, not the gateway: downloads, job lists and
/// live events go on (tokens are checked with the keys already fetched),
/// so the gateway stays in its Service.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_auth_outage_leaves_the_gateway_ready() {
    let mut stack = TestStack::start_with(
        AuthDb::Sqlite,
        StackOptions {
            ed25519_pem: Some(auth_service::token::generate_ed25519_pem().expect("key")),
            ..StackOptions::default()
        },
    )
    .await;
    stack.add_user("ora@example.com", "ora-password").await;
    let token = stack.token("ora@example.com", "ora-password").await;
    stack.stop_auth().await;

    let ready = stack
        .http
        .get(format!("{}/readyz", stack.gateway_ops))
        .send()
        .await
        .expect("readyz");
    let jobs = stack
        .http
        .get(format!("{}/api/v1/jobs", stack.gateway))
        .bearer_auth(&token)
        .send()
        .await
        .expect("jobs");
    let login = stack.login("ora@example.com", "ora-password").await;

    assert_eq!(ready.status(), 200, "{:?}", ready.text().await);
    assert_eq!(jobs.status(), 200, "a signed-in user's jobs need no auth");
    assert_eq!(login.status(), 503, "sign-in needs auth and says so");
    stack.stop().await;
}

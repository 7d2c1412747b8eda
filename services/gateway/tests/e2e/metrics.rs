//! The gateway's Prometheus metrics: requests by route and status, upload
//! bytes and uploads in flight.

use crate::helpers::{AuthDb, TestStack, media_dir};

/// The value of the sample whose line starts with `series` (name and
/// labels as rendered), if present.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_requests_by_route_and_status_and_upload_bytes() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("kate@example.com", "kate-password").await;
    let token = stack.token("kate@example.com", "kate-password").await;
    let video = std::fs::read(media_dir().join("puremagic__test.flv")).expect("sample");
    let size = video.len() as f64;

    let upload = stack
        .upload_bytes("/upload", &format!("Bearer {token}"), "m.flv", video)
        .await;
    assert_eq!(upload.status(), 200);
    let job_id = upload.headers()["x-job-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let missing = stack
        .http
        .get(format!("{}/api/v1/jobs/{job_id}", stack.gateway))
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), 401);
    let metrics = stack
        .http
        .get(format!("{}/metrics", stack.gateway_ops))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");

    // The recorder is process-wide and other tests upload too: at least ours.
    let uploads = sample(
        &metrics,
        r#"gateway_http_requests_total{route="/upload",status="200"}"#,
    );
    assert!(uploads.is_some_and(|n| n >= 1.0), "{metrics}");
    let logins = sample(
        &metrics,
        r#"gateway_http_requests_total{route="/login",status="200"}"#,
    );
    assert!(logins.is_some_and(|n| n >= 1.0), "{metrics}");
    // Routes are labelled with their pattern, never the raw path.
    let by_pattern = sample(
        &metrics,
        r#"gateway_http_requests_total{route="/api/v1/jobs/{id}",status="401"}"#,
    );
    assert!(by_pattern.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(!metrics.contains(&job_id), "{metrics}");
    let bytes = sample(&metrics, "gateway_upload_bytes_total");
    assert!(bytes.is_some_and(|n| n >= size), "{metrics}");
    // Ours is over; `a_client_that_aborts_mid_upload...` checks that a
    // running upload is counted.
    let in_flight = sample(&metrics, "gateway_uploads_in_flight");
    assert!(in_flight.is_some_and(|n| n >= 0.0), "{metrics}");
    stack.stop().await;
}

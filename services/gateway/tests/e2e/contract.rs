//! The JSON API's contract as clients see it: the served OpenAPI document
//! covers every `/api/v1` route the README's "JSON API" section lists
//! (the project's contract with its clients) and only routes that exist,
//! and unknown paths and wrong methods under `/api/v1` are JSON
//! errors while the classic routes keep their plain answers.

use reqwest::Method;

use crate::helpers::{AuthDb, TestStack};

/// Every `/api/v1` route of the README's contract, and whether it needs a
/// token.
const CONTRACT_ROUTES: [(&str, &str, bool); 11] = [
    ("post", "/api/v1/login", false),
    ("post", "/api/v1/register", false),
    ("post", "/api/v1/jobs", true),
    ("get", "/api/v1/jobs", true),
    ("get", "/api/v1/jobs/{id}", true),
    ("delete", "/api/v1/jobs/{id}", true),
    ("post", "/api/v1/jobs/{id}/retry", true),
    ("get", "/api/v1/jobs/{id}/mp3", true),
    ("get", "/api/v1/events", true),
    ("get", "/api/v1/me", true),
    ("put", "/api/v1/me/preferences", true),
];

/// The JSON error of a response, checking its shape on the way.
async fn json_error(response: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = response.status().as_u16();
    let allow = response
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, allow, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_openapi_document_covers_every_design_route() {
    let stack = TestStack::start(AuthDb::Sqlite).await;

    let response = stack
        .http
        .get(format!("{}/api/v1/openapi.json", stack.gateway))
        .send()
        .await
        .expect("openapi request");

    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("content type")
            .starts_with("application/json")
    );
    let doc: serde_json::Value = response.json().await.expect("the document is JSON");
    let version = doc["openapi"].as_str().expect("openapi field");
    assert!(version.starts_with("3."), "openapi {version}");
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http", "{bearer}");
    assert_eq!(bearer["scheme"], "bearer", "{bearer}");
    for (method, path, needs_token) in CONTRACT_ROUTES {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty()),
            "{method} {path} has no responses"
        );
        let security = operation["security"].to_string();
        assert_eq!(
            security.contains("bearer"),
            needs_token,
            "{method} {path} security: {security}"
        );
    }
    // Request and response bodies have schemas.
    let job = &doc["components"]["schemas"]["Job"]["properties"];
    for field in [
        "id",
        "filename",
        "state",
        "progress",
        "video_fid",
        "mp3_fid",
        "error",
        "created_at",
        "updated_at",
        "options",
        "duration_s",
        "size_bytes",
    ] {
        assert!(job[field].is_object(), "Job.{field} missing: {job}");
    }
    let create = &doc["paths"]["/api/v1/jobs"]["post"];
    assert!(create["requestBody"]["content"]["multipart/form-data"].is_object());
    assert!(
        create["responses"]["202"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .is_some_and(|r| r.ends_with("/JobEnvelope"))
    );
    assert!(
        doc["paths"]["/api/v1/me/preferences"]["put"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"]
            .as_str()
            .is_some_and(|r| r.ends_with("/Preferences"))
    );
    // Every documented operation is routed: no 404 or 405 from the router.
    let some_id = mongodb::bson::oid::ObjectId::new().to_hex();
    for (path, operations) in doc["paths"].as_object().expect("paths") {
        for method in operations.as_object().expect("operations").keys() {
            let url = format!("{}{}", stack.gateway, path.replace("{id}", &some_id));
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let response = stack
                .http
                .request(method.clone(), &url)
                .send()
                .await
                .expect("request");
            assert!(
                ![404, 405].contains(&response.status().as_u16()),
                "{method} {path}: {}",
                response.status()
            );
        }
    }
    // Beyond the listed routes: whether registration is open, passed through from
    // auth (which registers by default), so clients can hide the link.
    let registration: serde_json::Value = stack
        .http
        .get(format!("{}/api/v1/register", stack.gateway))
        .send()
        .await
        .expect("registration request")
        .json()
        .await
        .expect("json");
    assert_eq!(registration, serde_json::json!({ "enabled": true }));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_api_paths_and_wrong_methods_are_json_errors() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    let url = |path: &str| format!("{}{path}", stack.gateway);

    // Unknown paths under /api/v1: 404 {"error": {"code": "not_found"}}.
    for path in [
        "/api/v1",
        "/api/v1/",
        "/api/v1/nope",
        "/api/v1/jobs/0123456789abcdef01234567/extra",
    ] {
        let response = stack.http.get(url(path)).send().await.expect("request");
        let (status, _, body) = json_error(response).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }

    // Wrong methods on /api/v1 routes: 405 with Allow and a JSON body.
    for (method, path, allowed) in [
        (Method::PATCH, "/api/v1/jobs", "POST"),
        (
            Method::PUT,
            "/api/v1/jobs/0123456789abcdef01234567",
            "DELETE",
        ),
        (Method::GET, "/api/v1/login", "POST"),
        (Method::DELETE, "/api/v1/events", "GET"),
        (Method::POST, "/api/v1/me/preferences", "PUT"),
        (Method::POST, "/api/v1/openapi.json", "GET"),
    ] {
        let response = stack
            .http
            .request(method.clone(), url(path))
            .send()
            .await
            .expect("request");
        let (status, allow, body) = json_error(response).await;
        assert_eq!(status, 405, "{method} {path}");
        assert_eq!(
            body["error"]["code"], "method_not_allowed",
            "{method} {path}"
        );
        assert!(allow.contains(allowed), "{method} {path}: Allow {allow}");
    }

    // The classic routes and paths outside the API keep axum's plain answers.
    for (method, path, status) in [
        (Method::GET, "/nope", 404),
        (Method::GET, "/api/v10", 404),
        (Method::GET, "/upload", 405),
        (Method::POST, "/download", 405),
        (Method::GET, "/login", 405),
    ] {
        let response = stack
            .http
            .request(method.clone(), url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        assert!(
            response.headers().get("content-type").is_none(),
            "{method} {path}"
        );
        assert!(response.text().await.expect("body").is_empty());
    }
    stack.stop().await;
}

//! The real binary as deployed: configured through the environment, JSON
//! logs at debug level, stopped with SIGTERM. Secrets (passwords, the
//! signing key, the database password, tokens) never reach the logs.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::Command;

use crate::helpers::{Backend, TestDatabase};

backend_tests!(secrets_stay_out_of_json_logs_and_sigterm_stops_cleanly);

const USER_PASSWORD: &str = "user-hunter2-password";
const WRONG_PASSWORD: &str = "wrong-hunter2-password";
const REGISTERED_PASSWORD: &str = "registered-hunter2-password";
const ADMIN_PASSWORD: &str = "admin-hunter2-password";
const DB_PASSWORD: &str = "db-hunter2-password";

async fn secrets_stay_out_of_json_logs_and_sigterm_stops_cleanly(backend: Backend) {
    // Arrange: the database URL carries a password where the server
    // ignores it (PostgreSQL trusts local connections).
    let db = TestDatabase::create(backend).await;
    let database_url = match backend {
        Backend::Postgres => db
            .url
            .replacen("postgres@", &format!("postgres:{DB_PASSWORD}@"), 1),
        _ => db.url.clone(),
    };
    auth_service::add_user(&db.url, "user@example.com", USER_PASSWORD, false)
        .await
        .expect("user added");
    let key = auth_service::token::generate_ed25519_pem().expect("key");
    let key_body = key.lines().nth(1).expect("PEM body").to_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_auth-service"))
        .env_clear()
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", &database_url)
        .env("JWT_PRIVATE_KEY", &key)
        .env("ADMIN_EMAIL", "admin@example.com")
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut logs = Vec::new();
    let address = loop {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line))
            .await
            .expect("started in time")
            .expect("stdout read");
        assert!(read > 0, "exited before listening: {logs:#?}");
        logs.push(line.clone());
        let event: Value = serde_json::from_str(&line).expect("a JSON log line");
        if event["message"] == "auth service listening" {
            break event["address"].as_str().expect("address").to_owned();
        }
    };
    let base = format!("http://{address}");
    let client = reqwest::Client::new();

    // Act: the things that touch secrets.
    let token = client
        .post(format!("{base}/login"))
        .basic_auth("user@example.com", Some(USER_PASSWORD))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("token");
    let refused = client
        .post(format!("{base}/login"))
        .basic_auth("user@example.com", Some(WRONG_PASSWORD))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 401);
    let registered = client
        .post(format!("{base}/api/v1/register"))
        .json(&json!({"email": "new@example.com", "password": REGISTERED_PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(registered.status(), 201);
    let admin = client
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"email": "admin@example.com", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(admin.status(), 200);
    let validated = client
        .post(format!("{base}/validate"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(validated.status(), 200);
    let forged = client
        .post(format!("{base}/validate"))
        .bearer_auth(format!("{token}x"))
        .send()
        .await
        .expect("sent");
    assert_eq!(forged.status(), 403);

    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stopped in time")
        .expect("exit status");

    // Assert
    assert!(status.success(), "exit status {status}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).await.expect("stdout");
    logs.extend(rest.lines().map(str::to_owned));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .await
        .expect("stderr");
    for line in logs.iter().filter(|line| !line.trim().is_empty()) {
        let _: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
    let everything = format!("{}\n{stderr}", logs.join("\n"));
    assert!(everything.contains("auth service stopped"), "{everything}");
    for secret in [
        USER_PASSWORD,
        WRONG_PASSWORD,
        REGISTERED_PASSWORD,
        ADMIN_PASSWORD,
        DB_PASSWORD,
        key_body.as_str(),
        token.as_str(),
    ] {
        assert!(
            !everything.contains(secret),
            "`{secret}` logged:\n{everything}"
        );
    }
}

/// The binary with its default (human-readable) logs, as `scripts/up`
/// runs it: what a client sends cannot forge a log line or an escape
/// sequence in them.
#[tokio::test]
async fn user_text_cannot_forge_log_lines() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_auth-service"))
        .env_clear()
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", &db.url)
        .env("JWT_SECRET", "a-secret-for-this-test-only-please")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut logs = String::new();
    let address = loop {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line))
            .await
            .expect("started in time")
            .expect("stdout read");
        assert!(read > 0, "exited before listening: {logs}");
        logs.push_str(&line);
        if let Some(at) = line.find("address=") {
            break line[at + "address=".len()..]
                .split_whitespace()
                .next()
                .expect("address")
                .to_owned();
        }
    };

    let forged_email = "evil@example.com\nFORGED ERROR auth: admin logged in\u{1b}[31m";
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let response = client
            .post(format!("http://{address}/api/v1/login"))
            .json(&json!({"email": forged_email, "password": "wrong"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 401);
        let response = client
            .post(format!("http://{address}/login"))
            .basic_auth(forged_email, Some("wrong"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 401);
    }
    let pid = child.id().expect("pid").to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stopped in time")
        .expect("exit status");
    stdout.read_to_string(&mut logs).await.expect("stdout");

    assert!(logs.contains("login refused"), "{logs}");
    assert!(
        !logs.lines().any(|line| line.starts_with("FORGED")),
        "a forged line:\n{logs}"
    );
    assert!(
        !logs.contains('\u{1b}'),
        "an escape sequence reached the log:\n{logs}"
    );
}

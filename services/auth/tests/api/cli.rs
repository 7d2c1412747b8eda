//! The `auth-service user add` command, run as the real binary.

use std::process::Output;

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use crate::helpers::{Backend, TestDatabase, decode, spawn_app_on};

/// Runs `auth-service --database-url URL user add ARGS...` with `stdin`.
async fn user_add(database_url: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_auth-service"))
        .args(["--database-url", database_url, "user", "add"])
        .args(args)
        // The test environment must not pick the key or database.
        .env_remove("DATABASE_URL")
        .env_remove("JWT_SECRET")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("password written");
    drop(input);
    child.wait_with_output().await.expect("binary finishes")
}

#[tokio::test]
async fn user_add_reads_the_password_from_stdin_and_the_user_can_log_in() {
    // Arrange
    let db = TestDatabase::create(Backend::Sqlite).await;

    // Act
    let output = user_add(
        &db.url,
        &["Root@Example.com", "--admin"],
        "tøp sécret\nnot this\n",
    )
    .await;

    // Assert
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let app = spawn_app_on(db).await;
    let claims = decode(&app.login_token("root@example.com", "tøp sécret").await);
    assert_eq!(claims["admin"], true);
}

#[tokio::test]
async fn user_add_refuses_a_taken_email() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let first = user_add(&db.url, &["alice@example.com"], "one\n").await;
    assert!(first.status.success());

    let second = user_add(&db.url, &["ALICE@example.com"], "two\n").await;

    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("already registered"), "stderr: {stderr}");
}

#[tokio::test]
async fn user_add_refuses_an_empty_password() {
    let db = TestDatabase::create(Backend::Sqlite).await;

    let output = user_add(&db.url, &["alice@example.com"], "\n").await;

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("password is empty"), "stderr: {stderr}");
}

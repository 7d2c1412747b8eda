//! The operator commands (`auth-service user add|set-admin|disable|enable`,
//! `auth-service key generate`), run as the real binary.

use std::process::Output;

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use crate::helpers::{Backend, TestDatabase, spawn_app_on};

backend_tests!(
    user_add_reads_the_password_from_stdin_and_the_user_can_log_in,
    user_add_refuses_a_taken_email,
    user_add_refuses_a_short_password_or_a_bad_email,
    set_admin_grants_and_revokes_the_admin_claim,
    disable_and_enable_control_logging_in,
    commands_on_an_unknown_user_fail,
);

/// Runs `auth-service ARGS...` with `stdin`, the test database and nothing
/// from the test environment.
async fn auth_service(database_url: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_auth-service"))
        .args(["--database-url", database_url])
        .args(args)
        // The test environment must not pick the key or database.
        .env_remove("DATABASE_URL")
        .env_remove("JWT_SECRET")
        .env_remove("JWT_PRIVATE_KEY")
        .env_remove("JWT_PRIVATE_KEY_FILE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("stdin written");
    drop(input);
    child.wait_with_output().await.expect("binary finishes")
}

async fn user_add(database_url: &str, args: &[&str], stdin: &str) -> Output {
    let mut all = vec!["user", "add"];
    all.extend_from_slice(args);
    auth_service(database_url, &all, stdin).await
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn user_add_reads_the_password_from_stdin_and_the_user_can_log_in(backend: Backend) {
    // Arrange
    let db = TestDatabase::create(backend).await;

    // Act
    let output = user_add(
        &db.url,
        &["Root@Example.com", "--admin"],
        "tøp sécret\nnot this\n",
    )
    .await;

    // Assert
    assert_success(&output);
    let app = spawn_app_on(db).await;
    let claims = app.decode(&app.login_token("root@example.com", "tøp sécret").await);
    assert_eq!(claims["admin"], true);
}

async fn user_add_refuses_a_taken_email(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let first = user_add(&db.url, &["alice@example.com"], "first password\n").await;
    assert_success(&first);

    let second = user_add(&db.url, &["ALICE@example.com"], "second password\n").await;

    assert!(!second.status.success());
    assert!(
        stderr(&second).contains("already registered"),
        "{}",
        stderr(&second)
    );
}

async fn user_add_refuses_a_short_password_or_a_bad_email(backend: Backend) {
    let db = TestDatabase::create(backend).await;

    let empty = user_add(&db.url, &["alice@example.com"], "\n").await;
    assert!(!empty.status.success());
    assert!(
        stderr(&empty).contains("password is empty"),
        "{}",
        stderr(&empty)
    );

    let short = user_add(&db.url, &["alice@example.com"], "1234567\n").await;
    assert!(!short.status.success());
    assert!(
        stderr(&short).contains("8 to 1024 characters"),
        "{}",
        stderr(&short)
    );

    let bad = user_add(&db.url, &["not an email"], "long enough\n").await;
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("not a valid email"),
        "{}",
        stderr(&bad)
    );
}

async fn set_admin_grants_and_revokes_the_admin_claim(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    assert_success(&user_add(&db.url, &["alice@example.com"], "long enough\n").await);
    let url = db.url.clone();
    let app = spawn_app_on(db).await;
    let before = app.decode(&app.login_token("alice@example.com", "long enough").await);
    assert_eq!(before["admin"], false);

    let granted = auth_service(&url, &["user", "set-admin", "Alice@example.com"], "").await;

    assert_success(&granted);
    assert!(String::from_utf8_lossy(&granted.stdout).contains("is now an administrator"));
    let after = app.decode(&app.login_token("alice@example.com", "long enough").await);
    assert_eq!(after["admin"], true);

    let revoked = auth_service(
        &url,
        &["user", "set-admin", "alice@example.com", "--revoke"],
        "",
    )
    .await;
    assert_success(&revoked);
    let again = app.decode(&app.login_token("alice@example.com", "long enough").await);
    assert_eq!(again["admin"], false);
}

async fn disable_and_enable_control_logging_in(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    assert_success(&user_add(&db.url, &["alice@example.com"], "long enough\n").await);
    let url = db.url.clone();
    let app = spawn_app_on(db).await;

    assert_success(&auth_service(&url, &["user", "disable", "alice@example.com"], "").await);

    let response = app.post_login("alice@example.com", "long enough").await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.text().await.expect("body"), "invalid credentials");

    assert_success(&auth_service(&url, &["user", "enable", "alice@example.com"], "").await);
    app.login_token("alice@example.com", "long enough").await;
}

async fn commands_on_an_unknown_user_fail(backend: Backend) {
    let db = TestDatabase::create(backend).await;

    for command in ["set-admin", "disable", "enable"] {
        let output = auth_service(&db.url, &["user", command, "nobody@example.com"], "").await;
        assert!(!output.status.success(), "{command}");
        assert!(
            stderr(&output).contains("no such user"),
            "{command}: {}",
            stderr(&output)
        );
    }
}

#[tokio::test]
async fn key_generate_prints_a_key_the_service_signs_with() {
    // Arrange
    let output = Command::new(env!("CARGO_BIN_EXE_auth-service"))
        .args(["key", "generate"])
        .env_remove("DATABASE_URL")
        .output()
        .await
        .expect("binary runs");
    assert_success(&output);
    let pem = String::from_utf8(output.stdout).expect("utf-8");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&key_file, &pem).expect("written");

    // Act: serve with it.
    let db = TestDatabase::create(Backend::Sqlite).await;
    let config = crate::helpers::test_config(
        &db.url,
        &["--jwt-private-key-file", &key_file.display().to_string()],
    );
    let app = auth_service::App::build(config).await.expect("builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(common::testing::cancelled_by(stopped)));

    // Assert: the published key is the generated key's public half.
    let jwks: serde_json::Value = reqwest::get(format!("{address}/.well-known/jwks.json"))
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    let expected = auth_service::token::TokenKeys::ed25519_from_pem(&pem, 60).expect("loads");
    assert_eq!(&jwks, expected.jwks());
    let _ = stop.send(());
    server.await.expect("joined").expect("ran");
}

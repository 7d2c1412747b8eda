//! Users as stored: how passwords are kept, what `add_user` refuses, and
//! the `ADMIN_EMAIL` bootstrap.

use sqlx::Row as _;

use crate::helpers::{Backend, Signing, TestDatabase, spawn_app, start};

backend_tests!(
    the_stored_hash_is_argon2id,
    a_duplicate_email_is_refused_in_any_case,
    flags_are_stored_as_given,
    the_admin_is_bootstrapped_from_the_configuration,
    bootstrapping_promotes_an_existing_user_and_keeps_its_password,
    a_short_admin_password_stops_start_up,
);

const ADMIN: &[&str] = &[
    "--admin-email",
    "Root@Example.com",
    "--admin-password",
    "bootstrap password",
];

async fn the_admin_is_bootstrapped_from_the_configuration(backend: Backend) {
    // Arrange
    let db = TestDatabase::create(backend).await;

    // Act
    let app = start(db, Signing::Ed25519, ADMIN).await;

    // Assert
    let token = app
        .login_token("root@example.com", "bootstrap password")
        .await;
    assert_eq!(app.decode(&token)["admin"], true);

    // Starting again with the same configuration changes nothing.
    let db = app.stop().await;
    let app = start(db, Signing::Ed25519, ADMIN).await;
    let row = app.db.fetch_one("SELECT COUNT(*) AS n FROM users").await;
    assert_eq!(row.get::<i64, _>("n"), 1);
    app.login_token("root@example.com", "bootstrap password")
        .await;
}

async fn bootstrapping_promotes_an_existing_user_and_keeps_its_password(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    auth_service::add_user(&db.url, "root@example.com", "own password", false)
        .await
        .expect("user added");

    let app = start(db, Signing::Ed25519, ADMIN).await;

    let token = app.login_token("root@example.com", "own password").await;
    assert_eq!(app.decode(&token)["admin"], true);
    assert_eq!(
        app.post_login("root@example.com", "bootstrap password")
            .await
            .status(),
        401
    );
}

async fn a_short_admin_password_stops_start_up(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let config = crate::helpers::test_config(
        &db.url,
        &[
            "--admin-email",
            "root@example.com",
            "--admin-password",
            "pw-1",
        ],
    );

    let err = auth_service::App::build(config)
        .await
        .err()
        .expect("start-up refused");

    let message = format!("{err:#}");
    assert!(message.contains("ADMIN_PASSWORD"), "{message}");
    assert!(!message.contains("pw-1"), "{message}");
}

async fn the_stored_hash_is_argon2id(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "correct horse", false)
        .await;

    let hash: String = app
        .db
        .fetch_one("SELECT password_hash FROM users WHERE email = 'alice@example.com'")
        .await
        .get("password_hash");

    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("correct horse"));
}

async fn a_duplicate_email_is_refused_in_any_case(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("alice@example.com", "first", false).await;

    for email in ["alice@example.com", "ALICE@example.com"] {
        let err = auth_service::add_user(&app.db.url, email, "second", true)
            .await
            .expect_err("duplicate refused");
        assert!(
            matches!(err.downcast_ref(), Some(auth_service::Error::EmailTaken)),
            "{err:#}"
        );
    }
    // The first user is untouched.
    app.login_token("alice@example.com", "first").await;
}

async fn flags_are_stored_as_given(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("admin@example.com", "pw", true).await;

    // Booleans are native on PostgreSQL and 0/1 elsewhere: compare in SQL
    // so the check reads the same on every backend.
    let row = app
        .db
        .fetch_one(
            "SELECT COUNT(*) AS n FROM users \
             WHERE email = 'admin@example.com' AND is_admin = TRUE AND disabled = FALSE",
        )
        .await;
    assert_eq!(row.get::<i64, _>("n"), 1);
}

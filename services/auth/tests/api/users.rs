//! Users as stored: how passwords are kept and what `add_user` refuses.

use sqlx::Row as _;

use crate::helpers::{Backend, spawn_app};

backend_tests!(
    the_stored_hash_is_argon2id,
    a_duplicate_email_is_refused_in_any_case,
    flags_are_stored_as_given,
);

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

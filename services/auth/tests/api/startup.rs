//! Start-up before the database: on a cluster auth may start first. It
//! waits (`DATABASE_WAIT_SECS`) instead of exiting, and gives up in time.

use std::time::{Duration, Instant};

use auth_service::App;

use crate::helpers::{Backend, TestDatabase, test_config};

/// The test database's URL with its port swapped for `port`.
fn through_port(url: &str, port: u16) -> String {
    let (server, database) = url.rsplit_once('/').expect("url with a database");
    let (host, _) = server.rsplit_once(':').expect("url with a port");
    format!("{host}:{port}/{database}")
}

/// Starts forwarding `port` to PostgreSQL after `delay`.
fn forward_later(port: u16, delay: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the late port");
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
}

#[tokio::test]
async fn a_database_that_comes_up_late_is_waited_for() {
    // Arrange: nothing answers on the database's port for the first 2 s.
    let db = TestDatabase::create(Backend::Postgres).await;
    let port = common::testing::free_port();
    forward_later(port, Duration::from_secs(2));
    let url = through_port(&db.url, port);

    // Act
    let started = Instant::now();
    let app = App::build(test_config(
        &url,
        &["--jwt-secret", "a-secret-for-this-test"],
    ))
    .await
    .expect("waits for the database, then builds");

    // Assert: it waited, and the schema is there (migrations ran).
    assert!(started.elapsed() >= Duration::from_secs(2));
    let tables = db
        .fetch_one("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'users'")
        .await;
    use sqlx::Row as _;
    assert_eq!(tables.try_get::<i64, _>("n").expect("count"), 1);
    drop(app);
}

#[tokio::test]
async fn a_database_that_never_answers_fails_start_up_after_the_wait() {
    let db = TestDatabase::create(Backend::Postgres).await;
    let url = through_port(&db.url, common::testing::free_port());

    let started = Instant::now();
    let result = App::build(test_config(
        &url,
        &[
            "--jwt-secret",
            "a-secret-for-this-test",
            "--database-wait-secs",
            "2",
        ],
    ))
    .await;

    let waited = started.elapsed();
    let err = result.err().expect("no database, no app");
    assert!(
        format!("{err:#}").contains("opening the user database"),
        "{err:#}"
    );
    assert!(
        waited >= Duration::from_millis(1500),
        "gave up at once: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(20),
        "waited far past the limit: {waited:?}"
    );
}

//! Test support shared by the services' test suites (feature `test-support`):
//! real servers that run inside the test process, and where the real
//! broker and database of the machine are.

pub mod proxy;
pub mod smtp;

use tokio::sync::oneshot;

/// The broker the tests use: `AMQP_URL`, else the local stack's
/// administrator (scripts/up and scripts/test make it, its password in
/// `var/secrets/`), else `guest` on the local RabbitMQ.
pub fn amqp_url() -> String {
    if let Ok(url) = std::env::var("AMQP_URL") {
        return url;
    }
    match local_secret("rabbitmq-admin") {
        Some(password) => format!("amqp://mp3c-admin:{password}@127.0.0.1:5672/%2f"),
        None => "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
    }
}

/// The MongoDB the tests use: `MONGODB_URI`, else the local stack's, with
/// its root login when scripts/up or scripts/test made one.
pub fn mongodb_uri() -> String {
    if let Ok(uri) = std::env::var("MONGODB_URI") {
        return uri;
    }
    match local_secret("mongodb-root") {
        Some(password) => format!("mongodb://mp3c:{password}@127.0.0.1:27017/?authSource=admin"),
        None => "mongodb://127.0.0.1:27017".into(),
    }
}

/// A credential of the local stack, from the clone's `var/secrets/`: the
/// same ones scripts/test exports, for `cargo test` run by hand.
fn local_secret(name: &str) -> Option<String> {
    let clone = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(clone.join("var/secrets").join(name)).ok()?;
    Some(text.trim().to_owned()).filter(|s| !s.is_empty())
}

/// The local MongoDB reached through `proxy`, with the same login.
pub fn mongodb_uri_through(proxy: &proxy::TcpProxy) -> String {
    let uri = proxy.url_for(&mongodb_uri());
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}directConnection=true")
}

/// Removes what a test's services declared and stored under `prefix`: the
/// queues `<prefix>.video`, `.mp3` and `.job-failed` with their dead-letter
/// and delay queues (for the retry delays the services use by default),
/// `extra_queues` (delay queues of a test's own retry policy), and the
/// MongoDB databases `<prefix>_videos` and `<prefix>_mp3s`. Quorum queues
/// left behind cost the broker memory on every later run. Best effort, over
/// one connection.
pub async fn clean_up(prefix: &str, extra_queues: &[String]) {
    // Best effort, and bounded: a broker or database that stopped answering
    // must not hold the test (it fails on its own assertions, or passes).
    if tokio::time::timeout(CLEAN_UP_WITHIN, clean_up_unbounded(prefix, extra_queues))
        .await
        .is_err()
    {
        tracing::warn!(prefix, "test clean-up unfinished after {CLEAN_UP_WITHIN:?}");
    }
}

/// How long [`clean_up`] may take.
pub const CLEAN_UP_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

async fn clean_up_unbounded(prefix: &str, extra_queues: &[String]) {
    let mut queues = extra_queues.to_vec();
    for name in ["video", "mp3", "job-failed"] {
        let queue = format!("{prefix}.{name}");
        queues.push(crate::amqp::dead_letter_queue(&queue));
        for base_ms in [2_000, 30_000] {
            let policy = crate::amqp::RetryPolicy {
                max_attempts: 8,
                base_delay: std::time::Duration::from_millis(base_ms),
            };
            for attempt in 1..8 {
                queues.push(crate::amqp::delay_queue(
                    &queue,
                    policy.delay_after(attempt),
                ));
            }
        }
        queues.push(queue);
    }
    if let Some(Ok(conn)) = slow_step(
        prefix,
        "connecting to the broker",
        crate::amqp::connect(&amqp_url(), "test clean-up"),
    )
    .await
    {
        if let Some(Ok(channel)) =
            slow_step(prefix, "opening a channel", conn.create_channel()).await
        {
            // Deleting a queue that does not exist succeeds.
            for queue in queues {
                let what = format!("deleting queue {queue}");
                let deleting = channel
                    .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default());
                if slow_step(prefix, &what, deleting).await.is_none() {
                    break;
                }
            }
            // And the events exchange, as deleting a missing one succeeds.
            let exchange = format!("{prefix}.events");
            let deleting = channel.exchange_delete(
                exchange.as_str().into(),
                lapin::options::ExchangeDeleteOptions::default(),
            );
            slow_step(prefix, &format!("deleting exchange {exchange}"), deleting).await;
        }
        crate::amqp::close_quietly(&conn, "done").await;
    }
    if let Ok(client) = mongodb::Client::with_uri_str(mongodb_uri()).await {
        for db in ["videos", "mp3s"] {
            let name = format!("{prefix}_{db}");
            let what = format!("dropping database {name}");
            let database = client.database(&name);
            slow_step(prefix, &what, database.drop().into_future()).await;
        }
    }
}

/// One step of the clean-up, given up (and named in the log) after 10 s:
/// a server that stops answering shows which call it left unanswered.
async fn slow_step<T>(
    prefix: &str,
    what: &str,
    step: impl std::future::Future<Output = T>,
) -> Option<T> {
    let limit = std::time::Duration::from_secs(10);
    let done = tokio::time::timeout(limit, step).await.ok();
    if done.is_none() {
        tracing::warn!(prefix, "test clean-up: no answer within {limit:?} {what}");
    }
    done
}

/// Runs the `ffmpeg` CLI (quiet, overwriting) with `args` split on
/// whitespace and then `tail` as is (paths with spaces); panics on failure.
/// Tests make their inputs and check their outputs with the real tools.
pub fn ffmpeg(args: &str, tail: &[&str]) {
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y"])
        .args(args.split_whitespace())
        .args(tail)
        .status()
        .expect("ffmpeg CLI runs");
    assert!(status.success(), "ffmpeg {args} {tail:?} failed");
}

/// `ffprobe` of a file as JSON (format and streams); panics on failure.
pub fn ffprobe(path: &std::path::Path) -> serde_json::Value {
    let output = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(output.status.success(), "ffprobe {} failed", path.display());
    serde_json::from_slice(&output.stdout).expect("ffprobe prints JSON")
}

/// The folder of sample videos `scripts/fetch-media` downloads
/// (`TEST_MEDIA_DIR`, else `media/` at the top of the repository).
pub fn media_dir() -> std::path::PathBuf {
    let dir = std::env::var("TEST_MEDIA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../media"));
    assert!(
        dir.join(".complete").exists(),
        "sample media missing in {}: run scripts/fetch-media (scripts/test does)",
        dir.display()
    );
    dir
}

/// Every sample video in [`media_dir`], sorted by name.
pub fn media_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(media_dir())
        .expect("media dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            !path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// A port nothing listens on yet (bound and released): a server that is
/// down, or one to start later.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free local port")
        .port()
}

/// `work`, or a panic that names what the test waited for once `limit`
/// has passed: a test that waits on something that never comes fails
/// within a minute, saying what it was, instead of hanging the suite.
pub async fn within<T>(
    what: &str,
    limit: std::time::Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, work).await {
        Ok(done) => done,
        Err(_) => panic!("waited {limit:?} for {what}, in vain"),
    }
}

/// A shutdown signal for a service run in a test, and the sender that
/// fires it (dropping the sender fires it too).
pub fn stopper() -> (oneshot::Sender<()>, crate::shutdown::CancellationToken) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, cancelled_by(rx))
}

/// A token cancelled when `stop` fires or its sender is dropped (a test's
/// stop handle, gone with the test).
pub fn cancelled_by(stop: oneshot::Receiver<()>) -> crate::shutdown::CancellationToken {
    let token = crate::shutdown::CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let _ = stop.await;
        cancel.cancel();
    });
    token
}

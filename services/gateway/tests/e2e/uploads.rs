//! Uploads that must leave nothing behind: not media (415), too large (413),
//! abandoned by the client mid-body, and refused because the broker is
//! unreachable (503).

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::helpers::{AuthDb, CuttableProxy, StackOptions, TestStack, media_dir};

/// A PNG signature and the start of its header chunk.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x06\0\0\0";

impl TestStack {
    /// Asserts that GridFS `videos` holds no file and no chunk, and `owner` no job.
    pub(crate) async fn assert_nothing_stored(&self, owner: &str) {
        assert_eq!(
            self.stored_files(&self.mongo.videos).await,
            0,
            "no video file"
        );
        assert_eq!(self.stored_chunks(&self.mongo.videos).await, 0, "no chunk");
        assert_eq!(self.jobs_of(owner).await, 0, "no job");
    }

    /// Polls until GridFS `videos` is empty (cleanup may run in the
    /// background), failing after `timeout`.
    pub(crate) async fn wait_until_videos_empty(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let files = self.stored_files(&self.mongo.videos).await;
            let chunks = self.stored_chunks(&self.mongo.videos).await;
            if files == 0 && chunks == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{files} files and {chunks} chunks left in videos"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_that_are_not_media_get_415_and_real_videos_pass() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("gina@example.com", "gina-password").await;
    let token = stack.token("gina@example.com", "gina-password").await;
    let bearer = format!("Bearer {token}");
    let text = b"just some notes, certainly not a video\n".repeat(200_000);
    let mut png = PNG.to_vec();
    png.extend(std::iter::repeat_n(0x5a, 4096));

    let classic_text = stack
        .upload_bytes("/upload", &bearer, "notes.mp4", text.clone())
        .await;
    assert_eq!(classic_text.status(), 415);
    assert_eq!(
        classic_text.text().await.expect("body"),
        "unsupported media type: text"
    );
    let classic_png = stack
        .upload_bytes("/upload", &bearer, "picture.mp4", png.clone())
        .await;
    assert_eq!(classic_png.status(), 415);
    assert_eq!(
        classic_png.text().await.expect("body"),
        "unsupported media type: PNG image"
    );
    for (name, bytes) in [("notes.txt", text), ("picture.png", png)] {
        let json = stack
            .upload_bytes("/api/v1/jobs", &bearer, name, bytes)
            .await;
        assert_eq!(json.status(), 415, "{name}");
        let body: serde_json::Value = json.json().await.expect("json");
        assert_eq!(body["error"]["code"], "unsupported_media_type", "{name}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("unsupported media type: ")),
            "{body}"
        );
    }
    stack.assert_nothing_stored("gina@example.com").await;

    // Every sample video passes the sniffing, and one goes all the way in.
    let media = media_dir();
    for entry in std::fs::read_dir(&media).expect("media dir") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read sample");
        if bytes.is_empty() {
            continue; // the `.complete` marker
        }
        let prefix = &bytes[..bytes.len().min(gateway::sniff::SNIFF_LEN)];
        assert_eq!(
            gateway::sniff::not_media(prefix),
            None,
            "{}",
            path.display()
        );
    }
    let video = std::fs::read(media.join("puremagic__test.mkv")).expect("sample");
    let accepted = stack
        .upload_bytes("/upload", &bearer, "test.mkv", video)
        .await;
    assert_eq!(accepted.status(), 200);
    assert_eq!(accepted.text().await.expect("body"), "success!");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_over_the_limit_get_413_and_leave_no_chunks() {
    let stack = TestStack::start_with(
        AuthDb::Sqlite,
        StackOptions {
            max_upload_bytes: 300_000,
            ..StackOptions::default()
        },
    )
    .await;
    stack.add_user("hank@example.com", "hank-password").await;
    let bearer = format!(
        "Bearer {}",
        stack.token("hank@example.com", "hank-password").await
    );
    // 1 MB: several GridFS chunks (255 KiB each) would be written before the limit.
    let video = std::fs::read(media_dir().join("filetype__sample.mov")).expect("sample");
    assert!(video.len() > 300_000);

    let classic = stack
        .upload_bytes("/upload", &bearer, "big.mov", video.clone())
        .await;
    assert_eq!(classic.status(), 413);
    assert_eq!(
        classic.text().await.expect("body"),
        "file too large: the limit is 300000 bytes"
    );
    let json = stack
        .upload_bytes("/api/v1/jobs", &bearer, "big.mov", video)
        .await;
    assert_eq!(json.status(), 413);
    let body: serde_json::Value = json.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_large");

    stack.wait_until_videos_empty(Duration::from_secs(10)).await;
    stack.assert_nothing_stored("hank@example.com").await;
    // Under the limit is fine.
    let small = std::fs::read(media_dir().join("filetype__sample.mp4")).expect("sample");
    assert!(small.len() < 300_000);
    let accepted = stack
        .upload_bytes("/upload", &bearer, "small.mp4", small)
        .await;
    assert_eq!(accepted.status(), 200);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_aborts_mid_upload_leaves_no_file_and_no_job() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("iris@example.com", "iris-password").await;
    let token = stack.token("iris@example.com", "iris-password").await;
    let video = std::fs::read(media_dir().join("filetype__sample.mov")).expect("sample");
    let boundary = "----e2e-abort-boundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.mov\"\r\n\
         Content-Type: video/quicktime\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let length = head.len() + video.len() + tail.len();
    let port = stack
        .gateway
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("gateway port");

    // Act: send the headers and 600 kB of the 1 MB file, then hang up.
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n\r\n{head}"
    );
    socket
        .write_all(request.as_bytes())
        .await
        .expect("send head");
    socket
        .write_all(&video[..600_000])
        .await
        .expect("send part");
    socket.flush().await.expect("flush");
    // The gateway has started storing: chunks appear before the file document.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stack.stored_chunks(&stack.mongo.videos).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload never reached GridFS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = stack
        .http
        .get(format!("{}/metrics", stack.gateway_ops))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let in_flight = crate::metrics::sample(&metrics, "gateway_uploads_in_flight");
    assert!(in_flight.is_some_and(|n| n >= 1.0), "{metrics}");
    drop(socket);

    // Assert
    stack.wait_until_videos_empty(Duration::from_secs(10)).await;
    stack.assert_nothing_stored("iris@example.com").await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_broker_means_503_and_no_orphan() {
    let (proxy, stack) = CuttableProxy::with_stack().await;
    stack.add_user("jack@example.com", "jack-password").await;
    let bearer = format!(
        "Bearer {}",
        stack.token("jack@example.com", "jack-password").await
    );
    let video = std::fs::read(media_dir().join("puremagic__test.mp4")).expect("sample");

    // Act: the broker connection is cut and cannot be re-established.
    proxy.set_down(true);
    let classic = stack
        .upload_bytes("/upload", &bearer, "lost.mp4", video.clone())
        .await;
    let json = stack
        .upload_bytes("/api/v1/jobs", &bearer, "lost.mp4", video.clone())
        .await;

    // Assert
    assert_eq!(classic.status(), 503);
    assert_eq!(
        classic.text().await.expect("body"),
        "service unavailable: message broker"
    );
    assert_eq!(json.status(), 503);
    let body: serde_json::Value = json.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable");
    stack.assert_nothing_stored("jack@example.com").await;

    // The gateway reconnects by itself once the broker is back.
    proxy.set_down(false);
    let again = stack
        .upload_bytes("/upload", &bearer, "found.mp4", video)
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(stack.jobs_of("jack@example.com").await, 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_that_never_confirms_means_503_in_bounded_time_and_no_orphan() {
    let (proxy, stack) = CuttableProxy::with_stack().await;
    stack.add_user("kate@example.com", "kate-password").await;
    let bearer = format!(
        "Bearer {}",
        stack.token("kate@example.com", "kate-password").await
    );
    let video = std::fs::read(media_dir().join("puremagic__test.mp4")).expect("sample");

    // Act: the connection stays open but nothing comes back, as from a
    // broker that blocks publishers when its disk or memory runs low.
    proxy.stall();
    let started = std::time::Instant::now();
    let stalled = stack
        .upload_bytes("/upload", &bearer, "stalled.mp4", video.clone())
        .await;
    let waited = started.elapsed();

    // Assert: a 503 once the confirm wait is over, not a hang; and nothing
    // left behind.
    assert_eq!(stalled.status(), 503);
    assert_eq!(
        stalled.text().await.expect("body"),
        "service unavailable: message broker"
    );
    assert!(
        waited >= common::amqp::CONFIRM_TIMEOUT,
        "answered before the confirm wait: {waited:?}"
    );
    stack.assert_nothing_stored("kate@example.com").await;

    // Once the link works again, the next upload goes through on a new
    // connection.
    proxy.set_down(false);
    let again = stack
        .upload_bytes("/upload", &bearer, "flowing.mp4", video)
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(stack.jobs_of("kate@example.com").await, 1);
    stack.stop().await;
}

/// On a cluster the gateway may start before the broker: it must come up
/// "not ready" instead of exiting, and serve uploads once the broker answers.
#[tokio::test]
async fn a_gateway_started_before_the_broker_becomes_ready_when_it_answers() {
    // Arrange: the gateway's only way to the broker is down at start-up.
    let proxy = CuttableProxy::start().await;
    proxy.set_down(true);
    let stack = proxy.stack_through().await;
    let readyz = format!("{}/readyz", stack.gateway_ops);
    let not_ready = stack.http.get(&readyz).send().await.expect("readyz");
    assert_eq!(not_ready.status(), 503);
    let body = not_ready.text().await.expect("body");
    assert!(
        body.contains("RabbitMQ"),
        "the probe names what is missing: {body}"
    );

    // Act: the broker becomes reachable.
    proxy.set_down(false);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = stack
            .http
            .get(&readyz)
            .send()
            .await
            .expect("readyz")
            .status();
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Assert: uploads go through without a restart.
    stack.add_user("lena@example.com", "lena-password").await;
    let bearer = format!(
        "Bearer {}",
        stack.token("lena@example.com", "lena-password").await
    );
    let video = std::fs::read(media_dir().join("puremagic__test.mp4")).expect("sample");
    let upload = stack
        .upload_bytes("/upload", &bearer, "late-broker.mp4", video)
        .await;
    assert_eq!(upload.status(), 200);
    assert_eq!(stack.jobs_of("lena@example.com").await, 1);
    stack.stop().await;
}

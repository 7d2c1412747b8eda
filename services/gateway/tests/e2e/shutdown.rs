//! Bounded graceful shutdown: once the signal fires the gateway refuses new
//! connections, an upload already streaming finishes if it does so within
//! `SHUTDOWN_GRACE_SECS`, and one that is still streaming after it is cut
//! and leaves no file and no job.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::Digest;
use tokio::sync::mpsc;

use crate::helpers::{AuthDb, StackOptions, TestStack, media_dir};

const BOUNDARY: &str = "----e2e-shutdown-boundary";

/// An upload whose body the test feeds piece by piece.
struct SlowUpload {
    /// The rest of the file, sent on demand.
    pieces: Vec<Bytes>,
    body: mpsc::Sender<Result<Bytes, std::io::Error>>,
    response: tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
}

impl SlowUpload {
    /// Starts `POST /upload` of `video` and sends its first `first` bytes.
    async fn start(stack: &TestStack, token: &str, video: &[u8], first: usize) -> SlowUpload {
        let head = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.mov\"\r\n\
             Content-Type: video/quicktime\r\n\r\n"
        );
        let tail = format!("\r\n--{BOUNDARY}--\r\n");
        let (body, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|piece| (piece, rx))
        });
        let request = stack
            .http
            .post(format!("{}/upload", stack.gateway))
            .bearer_auth(token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(reqwest::Body::wrap_stream(stream))
            .send();
        let response = tokio::spawn(request);
        body.send(Ok(Bytes::from(head))).await.expect("send head");
        body.send(Ok(Bytes::copy_from_slice(&video[..first])))
            .await
            .expect("send start");
        let mut pieces: Vec<Bytes> = video[first..]
            .chunks(64 * 1024)
            .map(Bytes::copy_from_slice)
            .collect();
        pieces.push(Bytes::from(tail));
        SlowUpload {
            pieces,
            body,
            response,
        }
    }

    /// Sends the rest, a piece every `pause`.
    async fn finish(&mut self, pause: Duration) {
        for piece in self.pieces.drain(..) {
            tokio::time::sleep(pause).await;
            if self.body.send(Ok(piece)).await.is_err() {
                return;
            }
        }
    }
}

impl TestStack {
    /// Waits until the gateway has started writing chunks to GridFS.
    async fn wait_for_chunks(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.stored_chunks(&self.mongo.videos).await == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the upload never reached GridFS"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until connecting to the gateway is refused.
    async fn wait_until_refusing(&self) {
        let port = self.gateway_port();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the gateway still accepts connections after the shutdown signal"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_in_flight_at_shutdown_finishes_within_the_grace() {
    let mut stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("kate@example.com", "kate-password").await;
    let token = stack.token("kate@example.com", "kate-password").await;
    let video = std::fs::read(media_dir().join("filetype__sample.mov")).expect("sample");
    let mut upload = SlowUpload::start(&stack, &token, &video, 400_000).await;
    stack.wait_for_chunks().await;

    // Act: shut down mid-upload, then send the rest over about 2 s.
    let gateway = stack.signal_gateway_shutdown();
    stack.wait_until_refusing().await;
    upload.finish(Duration::from_millis(200)).await;

    // Assert: the upload went all the way through, then the gateway stopped.
    let response = upload.response.await.expect("join").expect("response");
    assert_eq!(response.status(), 200);
    let job_id = response.headers()["x-job-id"]
        .to_str()
        .expect("job id")
        .to_owned();
    assert_eq!(response.text().await.expect("body"), "success!");
    let stopped = tokio::time::timeout(Duration::from_secs(20), gateway)
        .await
        .expect("the gateway stops once the upload is done")
        .expect("join");
    assert!(stopped.is_ok(), "{stopped:?}");
    assert_eq!(stack.jobs_of("kate@example.com").await, 1);
    assert_eq!(stack.stored_files(&stack.mongo.videos).await, 1);
    // Stored whole: the job records the full size and the content's hash.
    let job = stack
        .jobs
        .get(mongodb::bson::oid::ObjectId::parse_str(&job_id).expect("id"))
        .await
        .expect("read job")
        .expect("job");
    assert_eq!(job.size_bytes, video.len() as i64);
    let sha256: String = sha2::Sha256::digest(&video)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(job.sha256, sha256);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_still_running_when_the_grace_ends_is_cut_and_leaves_nothing() {
    let mut stack = TestStack::start_with(
        AuthDb::Sqlite,
        StackOptions {
            shutdown_grace_secs: Some(1),
            ..StackOptions::default()
        },
    )
    .await;
    stack.add_user("liam@example.com", "liam-password").await;
    let token = stack.token("liam@example.com", "liam-password").await;
    let video = std::fs::read(media_dir().join("filetype__sample.mov")).expect("sample");
    let upload = SlowUpload::start(&stack, &token, &video, 400_000).await;
    stack.wait_for_chunks().await;

    // Act: shut down while the rest of the body never comes.
    let signalled = Instant::now();
    let gateway = stack.signal_gateway_shutdown();
    stack.wait_until_refusing().await;
    let stopped = tokio::time::timeout(Duration::from_secs(15), gateway)
        .await
        .expect("the gateway stops at the end of the grace")
        .expect("join");
    let took = signalled.elapsed();

    // Assert: cut after about the grace (plus the clean-up), not after the
    // upload; the client got no success; nothing is left behind.
    assert!(stopped.is_ok(), "{stopped:?}");
    assert!(took >= Duration::from_secs(1), "stopped after {took:?}");
    assert!(took < Duration::from_secs(12), "stopped after {took:?}");
    // Either the connection was closed under it, or an error came back.
    if let Ok(response) = upload.response.await.expect("join") {
        assert_ne!(response.status(), 200);
    }
    drop(upload.body);
    stack.wait_until_videos_empty(Duration::from_secs(10)).await;
    stack.assert_nothing_stored("liam@example.com").await;
    stack.stop().await;
}

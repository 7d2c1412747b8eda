//! Starts the whole system in this process: auth, gateway, converter and
//! notification, each built through its real `App::build` on port 0, against
//! the real RabbitMQ, the MongoDB-compatible server, SQLite or PostgreSQL,
//! and an SMTP server inside the test. Every stack gets its own queue and
//! database names so tests run in parallel.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use mongodb::bson::oid::ObjectId;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use common::jobs::{Job, JobState, JobStore};

use common::testing::smtp::MailSink;

/// Which SQL backend auth uses.
#[derive(Debug, Clone, Copy)]
pub enum AuthDb {
    Sqlite,
    Postgres,
}

use common::testing::stopper;
pub use common::testing::{amqp_url, mongodb_uri};

fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// How a stack differs from the default one.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Auth signs with this Ed25519 private key (PEM) and publishes it in
    /// its JWKS; `None` means HS256 with a shared secret (empty JWKS).
    pub ed25519_pem: Option<String>,
    /// The gateway's `MAX_UPLOAD_BYTES`.
    pub max_upload_bytes: u64,
    /// The gateway's broker URL, when it should not be the real one (a proxy).
    pub gateway_amqp_url: Option<String>,
    /// The gateway's SSE keep-alive interval in milliseconds (default 15 s).
    pub sse_keep_alive_ms: Option<u64>,
    /// The gateway's `SHUTDOWN_GRACE_SECS` (default 30).
    pub shutdown_grace_secs: Option<u64>,
    /// More gateway flags (upload pace limits, ...).
    pub gateway_flags: Vec<String>,
    /// No converter: every job stays queued (for limits on jobs in flight).
    pub without_converter: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            ed25519_pem: None,
            max_upload_bytes: 20_000_000,
            gateway_amqp_url: None,
            sse_keep_alive_ms: None,
            shutdown_grace_secs: None,
            gateway_flags: Vec::new(),
            without_converter: false,
        }
    }
}

/// A running system plus what the tests need to look inside it.
pub struct TestStack {
    pub gateway: String,
    /// Base URL of the gateway's operations port (`/healthz`, `/readyz`,
    /// `/metrics`).
    pub gateway_ops: String,
    /// Base URL of the converter's operations port (`/metrics`).
    pub converter: String,
    /// Base URL of the auth service.
    pub auth: String,
    pub http: reqwest::Client,
    pub mail: MailSink,
    pub jobs: JobStore,
    pub mongo: common::config::MongoStores,
    auth_db_url: String,
    prefix: String,
    postgres_db: Option<String>,
    _workdir: tempfile::TempDir,
    /// Auth runs apart from the rest so a test can stop it early.
    auth_service: Option<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
    /// So does the gateway (its shutdown is under test).
    gateway_service: Option<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl TestStack {
    pub async fn start(db: AuthDb) -> TestStack {
        Self::start_with(db, StackOptions::default()).await
    }

    pub async fn start_with(db: AuthDb, options: StackOptions) -> TestStack {
        common::telemetry::init();
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let workdir = tempfile::tempdir().expect("tempdir");
        let (auth_db_url, postgres_db) = match db {
            AuthDb::Sqlite => (
                format!(
                    "sqlite://{}?mode=rwc",
                    workdir.path().join("auth.db").display()
                ),
                None,
            ),
            AuthDb::Postgres => {
                let admin = postgres_admin_url();
                let pool = sqlx_pg(&admin).await;
                sqlx::query(&format!("CREATE DATABASE {prefix}"))
                    .execute(&pool)
                    .await
                    .expect("create test database");
                pool.close().await;
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                (format!("{base}/{prefix}"), Some(prefix.clone()))
            }
        };
        let video_queue = format!("{prefix}.video");
        let mp3_queue = format!("{prefix}.mp3");
        let videos_db = format!("{prefix}_videos");
        let mp3s_db = format!("{prefix}_mp3s");
        let (mail, smtp_port) = MailSink::start().await;
        let mut stops = Vec::new();
        let mut tasks = Vec::new();

        let mut auth_args = vec![
            "auth-service".to_owned(),
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--database-url".to_owned(),
            auth_db_url.clone(),
            // The gateway in front names each client.
            "--trusted-proxies".to_owned(),
            "127.0.0.1".to_owned(),
            // Confirmation and reset links go to the same mail sink.
            "--smtp-url".to_owned(),
            format!("smtp://127.0.0.1:{smtp_port}"),
        ];
        match &options.ed25519_pem {
            Some(pem) => auth_args.extend(["--jwt-private-key".to_owned(), pem.clone()]),
            None => auth_args.extend([
                "--jwt-secret".to_owned(),
                "e2e-test-secret-that-is-long-enough-for-hs256".to_owned(),
            ]),
        }
        let auth = auth_service::App::build(
            auth_service::Config::try_parse_from(auth_args).expect("auth config"),
        )
        .await
        .expect("auth starts");
        let auth_url = format!("http://127.0.0.1:{}", auth.port());
        let (auth_stop, signal) = stopper();
        let auth_task = tokio::spawn(auth.run(signal));

        let shared = [
            "--amqp-url".to_owned(),
            amqp_url(),
            "--video-queue".to_owned(),
            video_queue,
            "--mp3-queue".to_owned(),
            mp3_queue,
            "--events-exchange".to_owned(),
            format!("{prefix}.events"),
            "--mongodb-uri".to_owned(),
            mongodb_uri(),
            "--videos-db".to_owned(),
            videos_db,
            "--mp3s-db".to_owned(),
            mp3s_db,
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        let args = |name: &str, extra: &[&str]| -> Vec<String> {
            std::iter::once(name.to_owned())
                .chain(shared.iter().cloned())
                .chain(extra.iter().map(|s| (*s).to_owned()))
                .collect()
        };

        let max_upload_bytes = options.max_upload_bytes.to_string();
        let mut gateway_args = args(
            "gateway",
            &[
                "--auth-url",
                &auth_url,
                "--max-upload-bytes",
                &max_upload_bytes,
                "--ops-listen",
                "127.0.0.1:0",
            ],
        );
        if let Some(ms) = options.sse_keep_alive_ms {
            gateway_args.extend(["--sse-keep-alive-ms".to_owned(), ms.to_string()]);
        }
        if let Some(secs) = options.shutdown_grace_secs {
            gateway_args.extend(["--shutdown-grace-secs".to_owned(), secs.to_string()]);
        }
        gateway_args.extend(options.gateway_flags.iter().cloned());
        if let Some(url) = &options.gateway_amqp_url
            && let Some(at) = gateway_args.iter().position(|arg| arg == "--amqp-url")
        {
            gateway_args[at + 1] = url.clone();
        }
        let gateway_config = gateway::Config::try_parse_from(gateway_args).expect("gateway config");
        let mongo = gateway_config.mongo.connect().await.expect("mongo");
        let gateway_app = gateway::App::build(gateway_config)
            .await
            .expect("gateway starts");
        let gateway_url = format!("http://127.0.0.1:{}", gateway_app.port());
        let gateway_ops = format!("http://127.0.0.1:{}", gateway_app.ops_port());
        let (gateway_stop, signal) = stopper();
        let gateway_task = tokio::spawn(gateway_app.run(signal));

        let mut converter_url = String::new();
        if !options.without_converter {
            let converter_app = converter::App::build(
                converter::Config::try_parse_from(args("converter", &["--concurrency", "2"]))
                    .expect("converter config"),
            )
            .await
            .expect("converter starts");
            converter_url = format!("http://127.0.0.1:{}", converter_app.port());
            let (stop, signal) = stopper();
            stops.push(stop);
            tasks.push(tokio::spawn(converter_app.run(signal)));
        }

        let smtp_url = format!("smtp://127.0.0.1:{smtp_port}");
        let notification_app = notification::App::build(
            notification::Config::try_parse_from(args(
                "notification",
                &[
                    "--smtp-url",
                    &smtp_url,
                    "--public-url",
                    &gateway_url,
                    "--failed-events-queue",
                    &format!("{prefix}.job-failed"),
                ],
            ))
            .expect("notification config"),
        )
        .await
        .expect("notification starts");
        let (stop, signal) = stopper();
        stops.push(stop);
        tasks.push(tokio::spawn(notification_app.run(signal)));

        TestStack {
            gateway: gateway_url,
            gateway_ops,
            converter: converter_url,
            auth: auth_url,
            auth_service: Some((auth_stop, auth_task)),
            gateway_service: Some((gateway_stop, gateway_task)),
            http: reqwest::Client::new(),
            mail,
            jobs: mongo.jobs.clone(),
            mongo,
            auth_db_url,
            prefix,
            postgres_db,
            _workdir: workdir,
            stops,
            tasks,
        }
    }

    /// Creates a user directly in auth's database (as `auth-service user add` does).
    pub async fn add_user(&self, email: &str, password: &str) {
        auth_service::add_user(&self.auth_db_url, email, password, false)
            .await
            .expect("add user");
    }

    /// Creates an admin directly in auth's database.
    pub async fn add_admin(&self, email: &str, password: &str) {
        auth_service::add_user(&self.auth_db_url, email, password, true)
            .await
            .expect("add admin");
    }

    /// `POST /login` with HTTP Basic credentials.
    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/login", self.gateway))
            .basic_auth(email, Some(password))
            .send()
            .await
            .expect("login request")
    }

    /// Logs in and returns the token, failing the test otherwise.
    pub async fn token(&self, email: &str, password: &str) -> String {
        let response = self.login(email, password).await;
        assert_eq!(response.status(), 200, "login of {email} failed");
        response.text().await.expect("token body")
    }

    /// `POST /upload` with the given files as multipart parts named `file`.
    pub async fn upload(&self, token: &str, files: &[&Path]) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new();
        for path in files {
            let bytes = std::fs::read(path).expect("read test video");
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            form = form.part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name(name),
            );
        }
        self.http
            .post(format!("{}/upload", self.gateway))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .expect("upload request")
    }

    /// `POST` of one multipart part named `file` holding `bytes` to `path`
    /// (`/upload` or `/api/v1/jobs`) with the given `Authorization` value.
    pub async fn upload_bytes(
        &self,
        path: &str,
        authorization: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> reqwest::Response {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()),
        );
        self.http
            .post(format!("{}{path}", self.gateway))
            .header("authorization", authorization)
            .multipart(form)
            .send()
            .await
            .expect("upload request")
    }

    /// `GET /download?fid=`.
    pub async fn download(&self, token: &str, fid: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/download", self.gateway))
            .query(&[("fid", fid)])
            .bearer_auth(token)
            .send()
            .await
            .expect("download request")
    }

    /// Waits until the job is done or failed.
    pub async fn wait_for_job(&self, job_id: &str, timeout: Duration) -> Job {
        let id = ObjectId::parse_str(job_id).expect("job id");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(job) = self.jobs.get(id).await.expect("read job")
                && matches!(job.state, JobState::Done | JobState::Failed)
            {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job_id} did not finish in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the job is done, its `mp3` message confirmed and its
    /// owner mailed: nothing is still to write to its record.
    pub async fn wait_for_settled_job(&self, job_id: &str, timeout: Duration) -> Job {
        let id = ObjectId::parse_str(job_id).expect("job id");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(job) = self.jobs.get(id).await.expect("read job")
                && job.state == JobState::Done
                && job.published_at.is_some()
                && (job.notified_at.is_some() || !job.notify_email)
            {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job_id} did not settle (done, announced, mailed) in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Number of files in a GridFS database's `fs.files`.
    pub async fn stored_files(&self, db: &mongodb::Database) -> u64 {
        db.collection::<mongodb::bson::Document>("fs.files")
            .count_documents(mongodb::bson::doc! {})
            .await
            .expect("count files")
    }

    /// Stops the auth service (the rest keeps running).
    pub async fn stop_auth(&mut self) {
        if let Some((stop, task)) = self.auth_service.take() {
            let _ = stop.send(());
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                other => panic!("auth did not stop cleanly: {other:?}"),
            }
        }
    }

    /// Sends the gateway its shutdown signal; the returned handle ends
    /// with `App::run`'s result.
    pub fn signal_gateway_shutdown(&mut self) -> JoinHandle<anyhow::Result<()>> {
        let (stop, task) = self.gateway_service.take().expect("gateway still running");
        let _ = stop.send(());
        task
    }

    /// The gateway's port.
    /// This stack's queue names (`video`, `mp3`) as the services use them.
    pub fn queue(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// The topic exchange this stack's job events travel on.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// A counter from the converter's `/metrics` (0 when absent).
    pub async fn converter_counter(&self, series: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.converter))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn gateway_port(&self) -> u16 {
        self.gateway
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("gateway port")
    }

    /// Number of chunks in a GridFS database's `fs.chunks`.
    pub async fn stored_chunks(&self, db: &mongodb::Database) -> u64 {
        db.collection::<mongodb::bson::Document>("fs.chunks")
            .count_documents(mongodb::bson::doc! {})
            .await
            .expect("count chunks")
    }

    /// Number of jobs `owner` has.
    pub async fn jobs_of(&self, owner: &str) -> usize {
        self.jobs
            .list(Some(owner), None, 0, 1000)
            .await
            .expect("list jobs")
            .len()
    }

    /// Stops every service and removes the test's queues and databases.
    pub async fn stop(mut self) {
        self.stop_auth().await;
        if let Some((stop, task)) = self.gateway_service.take() {
            self.stops.push(stop);
            self.tasks.push(task);
        }
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                other => panic!("a service did not stop cleanly: {other:?}"),
            }
        }
        common::testing::clean_up(&self.prefix, &[]).await;
        if let Some(db) = &self.postgres_db {
            let pool = sqlx_pg(&postgres_admin_url()).await;
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&pool)
                .await;
        }
    }
}

async fn sqlx_pg(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("connect to PostgreSQL (is it running? scripts/test starts it)")
}

pub use common::testing::media_dir;

/// Makes a test video with FFmpeg's lavfi sources: `seconds` of a test
/// picture (H.264) with a 440 Hz tone (AAC), or no audio at all.
pub fn make_video(dir: &Path, name: &str, seconds: u32, with_audio: bool) -> PathBuf {
    let path = dir.join(name);
    let duration = seconds.to_string();
    let mut args = vec!["-y", "-v", "error", "-f", "lavfi", "-i"];
    let video = format!("testsrc=size=320x240:rate=25:duration={duration}");
    let audio = format!("sine=frequency=440:sample_rate=44100:duration={duration}");
    args.push(&video);
    if with_audio {
        args.extend(["-f", "lavfi", "-i", &audio, "-c:a", "aac"]);
    }
    args.extend(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-shortest"]);
    let out = path.to_string_lossy().into_owned();
    args.push(&out);
    let status = Command::new("ffmpeg")
        .args(&args)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg could not make {name}");
    path
}

/// Seconds of audio in a file's first audio stream, measured by decoding
/// it (container headers can be off: the FLV sample claims 1.0 s and
/// carries 1.07 s; MP3 headers count LAME's padding). The audio is decoded
/// to 8 kHz mono 16-bit, so every 16 000 bytes are one second.
pub fn audio_duration(path: &Path) -> f64 {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-map", "0:a:0", "-ac", "1", "-ar", "8000", "-f", "s16le", "-",
        ])
        .output()
        .expect("run ffmpeg");
    assert!(
        output.status.success(),
        "cannot decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout.len() as f64 / 16_000.0
}

/// Asserts that `path` is an MP3 FFmpeg decodes without a single error.
pub fn assert_decodes_as_mp3(path: &Path) {
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=format_name:stream=codec_name",
            "-of",
            "default=nw=1:nk=1",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(text.lines().any(|l| l == "mp3"), "not an MP3: {text}");
    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        decode.status.success() && decode.stderr.is_empty(),
        "decoding errors: {}",
        String::from_utf8_lossy(&decode.stderr)
    );
}

/// The MP3 id from a "your MP3 is ready" mail.
pub fn mp3_id_from_mail(data: &str) -> String {
    data.lines()
        .find_map(|l| l.strip_prefix("MP3 id: "))
        .map(|id| id.trim().to_owned())
        .unwrap_or_else(|| panic!("no MP3 id in mail:\n{data}"))
}

/// A TCP proxy to RabbitMQ that can be cut, brought down or stalled
/// (`common::testing::proxy::TcpProxy`), with stacks whose gateway reaches
/// the broker through it.
pub struct CuttableProxy(pub common::testing::proxy::TcpProxy);

impl std::ops::Deref for CuttableProxy {
    type Target = common::testing::proxy::TcpProxy;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl CuttableProxy {
    pub async fn start() -> CuttableProxy {
        CuttableProxy(common::testing::proxy::TcpProxy::to_broker_of(&amqp_url()).await)
    }

    /// A stack whose gateway reaches RabbitMQ through a new proxy (the
    /// converter and notification services connect directly).
    pub async fn with_stack() -> (CuttableProxy, TestStack) {
        let proxy = CuttableProxy::start().await;
        let stack = proxy.stack_through().await;
        (proxy, stack)
    }

    /// A stack whose gateway reaches RabbitMQ through this proxy, in
    /// whatever state the proxy is now.
    pub async fn stack_through(&self) -> TestStack {
        TestStack::start_with(
            AuthDb::Sqlite,
            StackOptions {
                gateway_amqp_url: Some(self.url()),
                ..StackOptions::default()
            },
        )
        .await
    }

    /// The broker URL through this proxy (same credentials and vhost).
    pub fn url(&self) -> String {
        self.0.url_for(&amqp_url())
    }
}

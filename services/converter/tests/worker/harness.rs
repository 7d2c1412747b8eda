//! Per-test names, a queued job with its video in GridFS, publishing, an
//! in-process converter with its operations port, the FFmpeg CLI for test
//! inputs, and a TCP proxy that can make MongoDB unreachable on demand.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use lapin::options::BasicGetOptions;
use lapin::types::FieldTable;
use mongodb::bson::{doc, oid::ObjectId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use common::amqp::Publisher;
use common::config::MongoStores;
use common::jobs::Job;
use contract::VideoRequest;

pub use common::testing::{amqp_url, ffmpeg, ffprobe, mongodb_uri};

/// Names and handles of one test's world.
pub struct World {
    pub prefix: String,
    pub mongo: MongoStores,
    pub publisher: Publisher,
}

impl World {
    pub async fn new() -> World {
        common::telemetry::init();
        let prefix = format!("c{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mongo = common::config::MongoConfig {
            mongodb_uri: mongodb_uri(),
            videos_db: format!("{prefix}_videos"),
            mp3s_db: format!("{prefix}_mp3s"),
        }
        .connect()
        .await
        .expect("mongo");
        let publisher = Publisher::connect(
            &amqp_url(),
            "converter-test",
            &[&format!("{prefix}.video")],
            &[],
        )
        .await
        .expect("broker");
        World {
            prefix,
            mongo,
            publisher,
        }
    }

    pub fn video_queue(&self) -> String {
        format!("{}.video", self.prefix)
    }

    /// Converter flags for this world, pointed at `mongodb_uri`.
    pub fn converter_args(&self, mongodb_uri: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "converter",
            "--listen",
            "127.0.0.1:0",
            "--concurrency",
            "1",
            "--amqp-url",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend([
            amqp_url(),
            "--video-queue".into(),
            self.video_queue(),
            "--mp3-queue".into(),
            format!("{}.mp3", self.prefix),
            "--events-exchange".into(),
            format!("{}.events", self.prefix),
            "--mongodb-uri".into(),
            mongodb_uri.to_owned(),
            "--videos-db".into(),
            format!("{}_videos", self.prefix),
            "--mp3s-db".into(),
            format!("{}_mp3s", self.prefix),
        ]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// Stores `video` in GridFS, records a queued job for it and publishes
    /// its `video` message, as the gateway does. Returns the job id.
    pub async fn submit(&self, video: &Path) -> ObjectId {
        self.submit_with(video, serde_json::json!({})).await
    }

    /// [`World::submit`] with job options.
    pub async fn submit_with(&self, video: &Path, options: serde_json::Value) -> ObjectId {
        let job = self.store(video, "ana@example.com", options).await;
        self.publish(&job.video_message()).await;
        job.id
    }

    /// Stores `video` in GridFS and records a queued job for it, owned by
    /// `owner`, without publishing anything.
    pub async fn store(&self, video: &Path, owner: &str, options: serde_json::Value) -> Job {
        let name = video
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let bucket = common::gridfs::bucket(&self.mongo.videos);
        let video_fid = common::gridfs::upload_file(&bucket, video, &name, doc! { "owner": owner })
            .await
            .expect("store video");
        // The options live on the job, as the gateway records them.
        let job = Job {
            notify_email: false,
            options: contract::Options::from_json(&options).expect("valid options"),
            ..Job::queued(ObjectId::new(), owner, &name, video_fid)
        };
        self.mongo.jobs.insert(&job).await.expect("insert job");
        job
    }

    /// Publishes a `video` message, whatever it says.
    pub async fn publish(&self, message: &VideoRequest) {
        self.publisher
            .publish(
                &self.video_queue(),
                &message.to_vec(),
                FieldTable::default(),
            )
            .await
            .expect("publish");
    }

    /// Waits until the job satisfies `done`.
    pub async fn wait_for_job(
        &self,
        id: ObjectId,
        timeout: Duration,
        done: impl Fn(&Job) -> bool,
    ) -> Job {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.mongo.jobs.get(id).await.expect("read").expect("job");
            if done(&job) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} stuck: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// MP3 files stored for `job`.
    pub async fn mp3s_for(&self, job: ObjectId) -> u64 {
        self.mongo
            .mp3s
            .collection::<mongodb::bson::Document>("fs.files")
            .count_documents(doc! { "metadata.job_id": job })
            .await
            .expect("count")
    }

    /// Downloads the job's MP3 from GridFS into `path`.
    pub async fn download_mp3(&self, mp3_fid: ObjectId, path: &Path) {
        let bucket = common::gridfs::bucket(&self.mongo.mp3s);
        common::gridfs::download_to_file(&bucket, mp3_fid, path)
            .await
            .expect("download the MP3");
    }

    /// Takes one message off this world's `video.dlq`, waiting up to
    /// `timeout` for it; returns its failure reason header.
    pub async fn dead_lettered(&self, timeout: Duration) -> Option<String> {
        let dlq = common::amqp::dead_letter_queue(&self.video_queue());
        let message = self.take(&dlq, timeout).await?;
        Some(common::amqp::header_text(
            message.properties.headers().as_ref(),
            common::amqp::REASON_HEADER,
        ))
    }

    /// Takes one message off `queue`, waiting up to `timeout` for it.
    pub async fn take(&self, queue: &str, timeout: Duration) -> Option<lapin::message::Delivery> {
        let conn = common::amqp::connect(&amqp_url(), "queue-reader")
            .await
            .expect("connect");
        let mut channel = conn.create_channel().await.expect("channel");
        let deadline = tokio::time::Instant::now() + timeout;
        let mut taken = None;
        while tokio::time::Instant::now() < deadline {
            // The queue exists once the converter consumes; until then a
            // get closes the channel, and the next try takes a new one.
            if !channel.status().connected() {
                channel = conn.create_channel().await.expect("channel");
            }
            let got = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await;
            if let Ok(Some(message)) = got {
                taken = Some(message.delivery);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = conn.close(200, "done".into()).await;
        taken
    }

    /// True once a queue exists on the broker.
    pub async fn queue_exists(&self, name: &str) -> bool {
        let Ok(conn) = common::amqp::connect(&amqp_url(), "probe").await else {
            return false;
        };
        let Ok(channel) = conn.create_channel().await else {
            return false;
        };
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let exists = channel
            .queue_declare(name.into(), passive, FieldTable::default())
            .await
            .is_ok();
        let _ = conn.close(200, "probe done".into()).await;
        exists
    }

    /// Whether the queue appears within `timeout` (a retry parks its
    /// message in a delay queue that is declared on first use).
    pub async fn queue_appears(&self, name: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.queue_exists(name).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.queue_exists(name).await
    }

    /// Removes the test's queues and databases.
    pub async fn clean_up(&self, delays_ms: &[u64]) {
        let video = self.video_queue();
        let delays: Vec<String> = delays_ms
            .iter()
            .map(|ms| common::amqp::delay_queue(&video, Duration::from_millis(*ms)))
            .collect();
        common::testing::clean_up(&self.prefix, &delays).await;
    }
}

/// A test video: `seconds` of a tone (AAC in MP4), made by the FFmpeg CLI.
pub fn make_audio(dir: &Path, name: &str, seconds: u32) -> PathBuf {
    let path = dir.join(name);
    ffmpeg(
        &format!(
            "-f lavfi -i sine=frequency=440:sample_rate=44100:duration={seconds} -c:a aac -b:a 64k"
        ),
        &[path.to_str().expect("utf-8 path")],
    );
    path
}

/// A TCP proxy to MongoDB that can be cut or brought down
/// (`common::testing::proxy::TcpProxy`).
pub struct FlakyProxy(common::testing::proxy::TcpProxy);

impl std::ops::Deref for FlakyProxy {
    type Target = common::testing::proxy::TcpProxy;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl FlakyProxy {
    pub async fn start(down: bool) -> FlakyProxy {
        let proxy = common::testing::proxy::TcpProxy::start(&common::testing::proxy::authority_of(
            &mongodb_uri(),
            27017,
        ))
        .await;
        proxy.set_down(down);
        FlakyProxy(proxy)
    }

    pub fn uri(&self) -> String {
        common::testing::mongodb_uri_through(&self.0)
    }
}

/// A converter running in this process.
pub struct Running {
    /// Its operations port (/healthz, /metrics).
    pub port: u16,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Builds and starts a converter from command-line `args`.
pub async fn start_converter(args: Vec<String>) -> Running {
    let app = converter::App::build(converter::Config::try_parse_from(args).expect("config"))
        .await
        .expect("converter starts");
    let port = app.port();
    let (stop, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run(common::testing::cancelled_by(signal)));
    Running { port, stop, task }
}

impl Running {
    /// A plain HTTP/1.0 GET on the operations port: (status line, body).
    pub async fn get(&self, path: &str) -> (String, String) {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to the operations port");
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read the response");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.lines().next().unwrap_or_default().to_owned();
        (status, body.to_owned())
    }

    /// Stops consuming and waits for the converter to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("join").expect("clean stop");
    }
}

/// Whatever is left in a directory.
pub fn leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read the temp dir")
        .map(|entry| entry.expect("entry").path())
        .collect()
}

/// The converter binary, logging JSON to a pipe, for tests that read its
/// log lines.
pub fn spawn_binary(args: &[String]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_converter"))
        .args(&args[1..])
        .env_clear()
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("AMQP_URL", amqp_url())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("converter starts")
}

/// Stops a [`spawn_binary`] converter with SIGTERM and returns its log.
pub async fn stop_binary(mut child: tokio::process::Child) -> String {
    use tokio::io::AsyncReadExt as _;
    let pid = child.id().expect("pid").to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    tokio::time::timeout(Duration::from_secs(90), child.wait())
        .await
        .expect("stopped in time")
        .expect("status");
    let mut logs = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut logs)
        .await
        .expect("read");
    logs
}

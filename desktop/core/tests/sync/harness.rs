//! A server stack (auth, gateway, converter) and a desktop engine with its
//! own temporary folders, plus helpers to make videos and wait for results.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use common::testing::{amqp_url, mongodb_uri, stopper, within};
use desktop_core::Engine;
use desktop_core::api::ApiClient;
use desktop_core::settings::{ExistingFiles, Settings};
use desktop_core::store::{Item, Stage, Store};

pub const WAIT: Duration = Duration::from_secs(90);
/// The most any one step of the harness (a start, a stop, an HTTP call)
/// may take before the test fails, saying what it waited for.
pub const STEP: Duration = Duration::from_secs(60);

/// An HTTP client whose every call ends within a step.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(STEP / 2)
        .build()
        .expect("HTTP client")
}

pub struct Stack {
    pub gateway: String,
    pub token: String,
    /// The test user's sign-in (its address is not confirmed: no SMTP).
    pub email: String,
    pub password: String,
    /// Names this test's queues and databases.
    prefix: String,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    _workdir: tempfile::TempDir,
}

impl Stack {
    pub async fn start() -> Stack {
        within("the server stack to start", STEP, Self::start_unbounded()).await
    }

    async fn start_unbounded() -> Stack {
        common::telemetry::init();
        let prefix = format!("d{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let workdir = tempfile::tempdir().expect("tempdir");
        let auth_db = format!(
            "sqlite://{}?mode=rwc",
            workdir.path().join("auth.db").display()
        );
        let auth = auth_service::App::build(
            auth_service::Config::try_parse_from([
                "auth-service",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &auth_db,
                "--jwt-secret",
                "desktop-test-secret-that-is-long-enough-for-hs256",
                "--trusted-proxies",
                "127.0.0.1",
            ])
            .expect("auth config"),
        )
        .await
        .expect("auth starts");
        let auth_url = format!("http://127.0.0.1:{}", auth.port());
        let mut stops = Vec::new();
        let mut tasks = Vec::new();
        let (stop, signal) = stopper();
        stops.push(stop);
        tasks.push(tokio::spawn(auth.run(signal)));

        let shared: Vec<String> = [
            "--amqp-url",
            &amqp_url(),
            "--video-queue",
            &format!("{prefix}.video"),
            "--mp3-queue",
            &format!("{prefix}.mp3"),
            "--events-exchange",
            &format!("{prefix}.events"),
            "--mongodb-uri",
            &mongodb_uri(),
            "--videos-db",
            &format!("{prefix}_videos"),
            "--mp3s-db",
            &format!("{prefix}_mp3s"),
            "--listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let args = |name: &str, extra: &[&str]| -> Vec<String> {
            std::iter::once(name.to_owned())
                .chain(shared.iter().cloned())
                .chain(extra.iter().map(|s| (*s).to_owned()))
                .collect()
        };
        let gateway = gateway::App::build(
            gateway::Config::try_parse_from(args(
                "gateway",
                &[
                    "--auth-url",
                    &auth_url,
                    "--sse-keep-alive-ms",
                    "1000",
                    "--ops-listen",
                    "127.0.0.1:0",
                ],
            ))
            .expect("gateway config"),
        )
        .await
        .expect("gateway starts");
        let gateway_url = format!("http://127.0.0.1:{}", gateway.port());
        let (stop, signal) = stopper();
        stops.push(stop);
        tasks.push(tokio::spawn(gateway.run(signal)));

        let converter = converter::App::build(
            converter::Config::try_parse_from(args("converter", &["--concurrency", "2"]))
                .expect("converter config"),
        )
        .await
        .expect("converter starts");
        let (stop, signal) = stopper();
        stops.push(stop);
        tasks.push(tokio::spawn(converter.run(signal)));

        let email = format!("{prefix}@example.com");
        let password = "desktop-password".to_owned();
        let api = ApiClient::new(&gateway_url, None).expect("client");
        api.register(&email, &password).await.expect("register");
        let token = api.login(&email, &password).await.expect("login").token;
        Stack {
            gateway: gateway_url,
            token,
            email,
            password,
            prefix,
            stops,
            tasks,
            _workdir: workdir,
        }
    }

    /// How many jobs the server holds for the test user.
    pub async fn job_count(&self) -> usize {
        let body: serde_json::Value = http()
            .get(format!("{}/api/v1/jobs", self.gateway))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("list jobs")
            .json()
            .await
            .expect("jobs json");
        body["jobs"].as_array().map(Vec::len).unwrap_or(0)
    }

    /// Stops the services (each gets 20 s to finish, then is cut off) and
    /// removes what the test stored; all of it within a step.
    pub async fn stop(self) {
        within(
            "the server stack to stop and clean up",
            STEP,
            self.stop_unbounded(),
        )
        .await;
    }

    async fn stop_unbounded(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for mut task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(20), &mut task)
                .await
                .is_err()
            {
                // Still running: stop it for good, or it would declare its
                // queues again after the clean-up below.
                task.abort();
                let _ = task.await;
            }
        }
        common::testing::clean_up(&self.prefix, &[]).await;
    }
}

/// A desktop engine with its own watch, output and state folders.
pub struct Desktop {
    pub engine: Engine,
    pub dirs: tempfile::TempDir,
}

impl Desktop {
    pub fn watch_dir(&self) -> PathBuf {
        self.dirs.path().join("watch")
    }

    pub fn out_dir(&self) -> PathBuf {
        self.dirs.path().join("out")
    }

    /// Starts an engine in fresh folders, signed in with `token`.
    pub async fn start(server: &str, token: &str) -> Desktop {
        let dirs = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dirs.path().join("watch")).expect("watch dir");
        Desktop::start_in(dirs, server, token, |_| {}).await
    }

    /// Starts an engine in `dirs` (kept from an earlier engine to restart it).
    pub async fn start_in(
        dirs: tempfile::TempDir,
        server: &str,
        token: &str,
        tweak: impl FnOnce(&mut Settings),
    ) -> Desktop {
        let mut settings = Settings {
            server_url: server.to_owned(),
            watch_dir: Some(dirs.path().join("watch")),
            out_dir: Some(dirs.path().join("out")),
            settle_ms: 1000,
            rescan_secs: 2,
            existing_files: Some(ExistingFiles::ConvertAll),
            notifications: false,
            ..Settings::default()
        };
        tweak(&mut settings);
        let store = within(
            "the local state to open",
            STEP,
            Store::open(&dirs.path().join("state/queue.db")),
        )
        .await
        .expect("store");
        let engine = Engine::start(
            store,
            settings,
            None,
            ApiClient::new(server, Some(token.to_owned())).expect("client"),
        );
        Desktop { engine, dirs }
    }

    /// Stops the engine and hands back its folders.
    pub async fn stop(self) -> tempfile::TempDir {
        within("the desktop engine to stop", STEP, self.engine.stop()).await;
        self.dirs
    }

    pub async fn items(&self) -> Vec<Item> {
        within("the engine's item list", STEP, self.engine.items())
            .await
            .expect("items")
    }

    /// Waits until an item named `name` reaches `stage`.
    pub async fn wait_for(&self, name: &str, stage: Stage) -> Item {
        let deadline = Instant::now() + WAIT;
        loop {
            let items = self.items().await;
            if let Some(item) = items.iter().find(|i| i.name == name) {
                if item.stage == stage {
                    return item.clone();
                }
                if item.stage == Stage::Failed && stage != Stage::Failed {
                    panic!("{name} failed: {:?}", item.error);
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name} never reached {stage:?}: {items:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Makes a small video with a sine tone (`seconds` long) using the FFmpeg
/// command line, written elsewhere and moved in (so it appears complete).
pub fn make_video(dir: &Path, name: &str, seconds: f64, audio: bool) -> PathBuf {
    let scratch = tempfile::tempdir().expect("scratch");
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("mp4");
    let temp = scratch.path().join(format!("video.{ext}"));
    let duration = seconds.to_string();
    let mut command = Command::new("ffmpeg");
    command.args(["-v", "error", "-y", "-f", "lavfi", "-i"]);
    command.arg(format!("testsrc=size=160x120:rate=10:duration={duration}"));
    if audio {
        command.args(["-f", "lavfi", "-i"]);
        command.arg(format!(
            "sine=frequency=440:sample_rate=44100:duration={duration}"
        ));
    }
    command.args(["-c:v", "mpeg4"]);
    if audio {
        command.args(["-c:a", "aac", "-shortest"]);
    }
    command.arg(&temp);
    let status = command.status().expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg failed making {name}");
    let target = dir.join(name);
    std::fs::copy(&temp, &target).expect("move the video in");
    target
}

/// Duration of a media file in seconds, by ffprobe.
pub fn duration_of(path: &Path) -> f64 {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no duration for {}", path.display()))
}

/// Every file under `dir`, relative names, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

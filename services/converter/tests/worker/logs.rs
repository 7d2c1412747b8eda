//! The binary's JSON logs, with conversions running side by side: every
//! line names one job only (spans of other jobs never wrap it).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;

use common::jobs::JobState;

use crate::harness::{World, amqp_url, make_audio, mongodb_uri};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_log_line_names_one_job() {
    let world = World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = world.converter_args(&mongodb_uri(), &[]);
    // Four at once, not the harness's one.
    let at = args
        .iter()
        .position(|arg| arg == "--concurrency")
        .expect("flag");
    args[at + 1] = "4".into();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_converter"))
        .args(&args[1..])
        .env_clear()
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("AMQP_URL", amqp_url())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("converter starts");
    let mut jobs = Vec::new();
    for n in 0..8 {
        jobs.push(
            world
                .submit(&make_audio(dir.path(), &format!("side-{n}.m4a"), 3))
                .await,
        );
    }
    for job in &jobs {
        world
            .wait_for_job(*job, Duration::from_secs(120), |j| {
                j.state == JobState::Done
            })
            .await;
    }
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

    let mut per_job_lines = 0;
    for line in logs.lines().filter(|line| !line.trim().is_empty()) {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        let ids: std::collections::BTreeSet<String> = event["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|span| span["job_id"].as_str().map(str::to_owned))
            .collect();
        assert!(ids.len() <= 1, "one line, several jobs {ids:?}: {line}");
        per_job_lines += usize::from(ids.len() == 1);
    }
    assert!(per_job_lines >= 16, "too few job lines to tell:\n{logs}");
    world.clean_up(&[]).await;
}

//! The binary's JSON logs, with conversions running side by side: every
//! line names one job only (spans of other jobs never wrap it).

use std::time::Duration;

use common::jobs::JobState;

use crate::harness::{World, make_audio, mongodb_uri, spawn_binary, stop_binary};

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
    let child = spawn_binary(&args);
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
    let logs = stop_binary(child).await;

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

//! Restarts and outages lose nothing and duplicate nothing.

use std::time::Duration;

use desktop_core::EngineEvent;
use desktop_core::store::Stage;
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Desktop, Stack, duration_of, files_in, make_video};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_killed_mid_upload_resumes_after_a_restart_with_one_job() {
    let stack = Stack::start().await;
    let desktop = Desktop::start(&stack.gateway, &stack.token).await;
    let mut events = desktop.engine.subscribe();
    make_video(&desktop.watch_dir(), "interrupted.mp4", 20.0, true);

    // Cut the engine as soon as the upload starts.
    loop {
        match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
            Ok(Ok(EngineEvent::Item { item })) if item.stage == Stage::Uploading => break,
            Ok(Ok(_)) => {}
            other => panic!("no upload started: {other:?}"),
        }
    }
    let dirs = desktop.stop().await;

    let desktop = Desktop::start_in(dirs, &stack.gateway, &stack.token, |_| {}).await;
    let item = desktop.wait_for("interrupted.mp4", Stage::Done).await;
    assert!((duration_of(&item.mp3_path.expect("mp3")) - 20.0).abs() < 0.25);
    assert_eq!(stack.job_count().await, 1);
    assert_eq!(files_in(&desktop.out_dir()), vec!["interrupted.mp3"]);
    desktop.stop().await;
    stack.stop().await;
}

/// Forwards connections from a port to the gateway once started.
async fn forward(listener: TcpListener, gateway: String) {
    let target = gateway.trim_start_matches("http://").to_owned();
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_wait_while_the_server_is_down_and_go_when_it_is_back() {
    let stack = Stack::start().await;
    // A port nobody listens on yet: the server is "down".
    let port = common::testing::free_port();
    let server = format!("http://127.0.0.1:{port}");
    let desktop = Desktop::start(&server, &stack.token).await;
    make_video(&desktop.watch_dir(), "offline.mp4", 1.0, true);

    tokio::time::sleep(Duration::from_secs(6)).await;
    let items = desktop.items().await;
    assert_eq!(items.len(), 1, "the file is queued locally");
    assert_eq!(items[0].stage, Stage::Pending);
    assert!(!desktop.engine.is_online());
    assert_eq!(stack.job_count().await, 0);

    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind");
    let proxy = tokio::spawn(forward(listener, stack.gateway.clone()));
    desktop.wait_for("offline.mp4", Stage::Done).await;
    assert!(desktop.engine.is_online());
    assert_eq!(stack.job_count().await, 1);
    proxy.abort();
    desktop.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_signs_out_and_keeps_the_queue_until_the_next_sign_in() {
    let stack = Stack::start().await;
    let desktop = Desktop::start(&stack.gateway, "expired-or-revoked-token").await;
    make_video(&desktop.watch_dir(), "kept.mp4", 1.0, true);

    // The state, not the event: the live-events request may be refused (and
    // `SignedOut` sent) before this test could subscribe.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while desktop.engine.is_signed_in() {
        assert!(std::time::Instant::now() < deadline, "never signed out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Taken, and kept waiting while signed out: nothing reaches the server.
    desktop.wait_for("kept.mp4", Stage::Pending).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let items = desktop.items().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].stage, Stage::Pending);
    assert_eq!(stack.job_count().await, 0);

    desktop.engine.set_token(Some(stack.token.clone())).await;
    desktop.wait_for("kept.mp4", Stage::Done).await;
    assert_eq!(files_in(&desktop.out_dir()), vec!["kept.mp3"]);
    desktop.stop().await;
    stack.stop().await;
}

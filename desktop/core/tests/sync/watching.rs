//! Videos dropped into the watched folder come back as MP3s, once each.

use std::io::Write;
use std::time::Duration;

use desktop_core::EngineEvent;
use desktop_core::store::Stage;

use crate::harness::{Desktop, STEP, Stack, duration_of, files_in, make_video};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_dropped_into_the_folder_comes_back_as_an_mp3_of_the_same_length() {
    let stack = Stack::start().await;
    let desktop = Desktop::start(&stack.gateway, &stack.token).await;

    make_video(&desktop.watch_dir(), "holiday clip.mp4", 3.0, true);
    let item = desktop.wait_for("holiday clip.mp4", Stage::Done).await;

    let mp3 = item.mp3_path.expect("mp3 path");
    assert_eq!(mp3, desktop.out_dir().join("holiday clip.mp3"));
    let seconds = duration_of(&mp3);
    assert!((seconds - 3.0).abs() < 0.15, "duration {seconds}");
    // No partial download is left next to it.
    assert_eq!(files_in(&desktop.out_dir()), vec!["holiday clip.mp3"]);
    desktop.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_still_being_written_is_not_taken_before_it_is_finished() {
    let stack = Stack::start().await;
    let dirs = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dirs.path().join("watch")).expect("watch dir");
    // The default settle time (3 s), longer than the pauses between writes.
    let desktop = Desktop::start_in(dirs, &stack.gateway, &stack.token, |settings| {
        settings.settle_ms = 3000;
    })
    .await;
    let scratch = tempfile::tempdir().expect("scratch");
    let source = make_video(scratch.path(), "slow.mp4", 2.0, true);
    let bytes = std::fs::read(&source).expect("read video");

    // Written in ten pieces over ten seconds, like a slow download.
    let target = desktop.watch_dir().join("slow.mp4");
    let mut file = std::fs::File::create(&target).expect("create");
    let pieces: Vec<&[u8]> = bytes.chunks(bytes.len().div_ceil(10)).collect();
    let mut events = desktop.engine.subscribe();
    for piece in pieces {
        file.write_all(piece).expect("write");
        file.flush().expect("flush");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            desktop.items().await.is_empty(),
            "taken while still being written"
        );
    }
    drop(file);
    desktop.wait_for("slow.mp4", Stage::Done).await;
    // Nothing was queued while the file grew.
    while let Ok(event) = events.try_recv() {
        if let EngineEvent::Item { item } = event {
            assert_eq!(item.size, bytes.len() as u64, "a partial file was taken");
        }
    }
    assert_eq!(stack.job_count().await, 1);
    desktop.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_and_copied_videos_are_not_uploaded_again() {
    let stack = Stack::start().await;
    let desktop = Desktop::start(&stack.gateway, &stack.token).await;
    let original = make_video(&desktop.watch_dir(), "first.mp4", 1.0, true);
    desktop.wait_for("first.mp4", Stage::Done).await;

    std::fs::copy(&original, desktop.watch_dir().join("copy of first.mp4")).expect("copy");
    std::fs::rename(&original, desktop.watch_dir().join("renamed.mp4")).expect("rename");
    // A new video after them: once it is done, the two were looked at.
    make_video(&desktop.watch_dir(), "second.mp4", 1.5, true);
    desktop.wait_for("second.mp4", Stage::Done).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let items = desktop.items().await;
    let converted: Vec<&str> = items
        .iter()
        .filter(|i| i.stage != Stage::Duplicate)
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(converted, vec!["second.mp4", "first.mp4"]);
    // The copy and the renamed file are listed, each saying which MP3
    // they are: never ignored without a word.
    let mut copies: Vec<(&str, Option<&str>)> = items
        .iter()
        .filter(|i| i.stage == Stage::Duplicate)
        .map(|i| (i.name.as_str(), i.note.as_deref()))
        .collect();
    copies.sort();
    assert_eq!(
        copies,
        vec![
            ("copy of first.mp4", Some("Already converted as first.mp3")),
            ("renamed.mp4", Some("Already converted as first.mp3")),
        ]
    );
    assert_eq!(stack.job_count().await, 2);
    assert_eq!(
        files_in(&desktop.out_dir()),
        vec!["first.mp3", "second.mp3"]
    );
    desktop.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_spaces_unicode_and_dots_stay_inside_the_output_folder() {
    let stack = Stack::start().await;
    let desktop = Desktop::start(&stack.gateway, &stack.token).await;
    // Every video differs in length: the same content would be taken once.
    make_video(&desktop.watch_dir(), "Grüße aus Köln – 東京.mp4", 1.0, true);
    // A backslash is an ordinary character in Linux names, and a path
    // separator for whoever reads the name elsewhere.
    make_video(&desktop.watch_dir(), "up\\..\\..\\escape.mp4", 1.1, true);
    // The same stem twice: the second gets a number.
    make_video(&desktop.watch_dir(), "twin.mkv", 1.2, true);
    make_video(&desktop.watch_dir(), "twin.mp4", 1.4, true);
    // Dropped files (the window's drop zone) go the same way.
    let scratch = tempfile::tempdir().expect("scratch");
    let dropped = make_video(scratch.path(), "dropped file.mov", 1.6, true);
    desktop.engine.queue_paths(vec![dropped]).await;

    for name in [
        "Grüße aus Köln – 東京.mp4",
        "up\\..\\..\\escape.mp4",
        "twin.mkv",
        "twin.mp4",
        "dropped file.mov",
    ] {
        let item = desktop.wait_for(name, Stage::Done).await;
        let mp3 = item.mp3_path.expect("mp3 path");
        assert_eq!(mp3.parent(), Some(desktop.out_dir().as_path()), "{name}");
    }
    assert_eq!(
        files_in(&desktop.out_dir()),
        vec![
            "Grüße aus Köln – 東京.mp3",
            "dropped file.mp3",
            "escape.mp3",
            "twin (2).mp3",
            "twin.mp3",
        ]
    );
    assert!(
        files_in(desktop.dirs.path())
            .iter()
            .all(|n| !n.ends_with(".mp3"))
    );
    desktop.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_the_server_cannot_convert_shows_failed_with_its_reason() {
    let stack = Stack::start().await;
    let desktop = Desktop::start(&stack.gateway, &stack.token).await;
    make_video(&desktop.watch_dir(), "silent.mp4", 1.0, false);
    std::fs::write(
        desktop.watch_dir().join("notes.mp4"),
        "these are meeting notes, not a video\n".repeat(50),
    )
    .expect("write");

    // Said in words, the server's text kept as the detail; a retry cannot
    // help either, so none is offered.
    let silent = desktop.wait_for("silent.mp4", Stage::Failed).await;
    assert_eq!(
        silent.error.as_deref(),
        Some("This video has no sound to turn into an MP3.")
    );
    assert_eq!(
        silent.detail.as_deref(),
        Some("the file has no audio track")
    );
    let notes = desktop.wait_for("notes.mp4", Stage::Failed).await;
    let reason = notes.error.expect("reason");
    assert_eq!(
        reason,
        "This file is not a video or audio file the server can convert."
    );
    assert!(!notes.retryable);
    assert!(
        notes
            .detail
            .is_some_and(|detail| detail.contains("unsupported media type")),
    );
    assert!(files_in(&desktop.out_dir()).is_empty());
    desktop.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_video_is_moved_away_only_after_its_mp3_arrived_when_asked() {
    let stack = Stack::start().await;
    let dirs = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dirs.path().join("watch")).expect("watch dir");
    let done_dir = dirs.path().join("converted videos");
    let target = done_dir.clone();
    let desktop = Desktop::start_in(dirs, &stack.gateway, &stack.token, move |settings| {
        settings.after_done = desktop_core::settings::AfterDone::MoveTo(target);
    })
    .await;
    let video = make_video(&desktop.watch_dir(), "tidy.mp4", 1.0, true);

    let item = desktop.wait_for("tidy.mp4", Stage::Done).await;
    assert!(item.mp3_path.expect("mp3").exists());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while video.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!video.exists(), "the video is still in the watched folder");
    assert!(done_dir.join("tidy.mp4").exists());
    let noted = desktop.wait_for("tidy.mp4", Stage::Done).await.note;
    assert!(
        noted
            .as_deref()
            .is_some_and(|note| note.starts_with("Video moved to")),
        "{noted:?}"
    );
    // Moving it away is not a new file, and nothing comes back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(desktop.items().await.len(), 1);
    desktop.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn videos_already_in_the_folder_are_asked_about_once_and_only_new_ones_go_when_told() {
    let stack = Stack::start().await;
    let dirs = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dirs.path().join("watch")).expect("watch dir");
    make_video(&dirs.path().join("watch"), "old.mp4", 1.0, true);
    let desktop = Desktop::start_in(dirs, &stack.gateway, &stack.token, |settings| {
        settings.existing_files = None;
    })
    .await;
    let mut events = desktop.engine.subscribe();
    let mut next_question = async || loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Ok(EngineEvent::AskExisting { count })) => return count,
            Ok(Ok(_)) => {}
            other => panic!("never asked: {other:?}"),
        }
    };

    assert_eq!(next_question().await, 1);
    // A video arriving while the question is open is new, not "existing":
    // the question (asked again on the next scan) still counts one file.
    make_video(&desktop.watch_dir(), "new.mp4", 1.5, true);
    assert_eq!(next_question().await, 1);
    assert!(desktop.items().await.is_empty(), "taken before the answer");
    common::testing::within(
        "the answer to the question",
        STEP,
        desktop
            .engine
            .choose_existing(desktop_core::settings::ExistingFiles::OnlyNew),
    )
    .await
    .expect("answer");
    desktop.wait_for("new.mp4", Stage::Done).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let names: Vec<String> = desktop.items().await.into_iter().map(|i| i.name).collect();
    assert_eq!(names, vec!["new.mp4"]);
    assert_eq!(stack.job_count().await, 1);
    desktop.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_mp3_download_resumes_from_where_it_stopped() {
    let stack = Stack::start().await;
    let desktop = Desktop::start(&stack.gateway, &stack.token).await;
    make_video(&desktop.watch_dir(), "resume.mp4", 4.0, true);
    let item = desktop.wait_for("resume.mp4", Stage::Done).await;
    let whole = std::fs::read(item.mp3_path.expect("mp3")).expect("read mp3");
    let job = item.job_id.expect("job");

    // Half a file left by an interrupted download: the rest comes by Range.
    let part = desktop.dirs.path().join("again.mp3.part");
    std::fs::write(&part, &whole[..whole.len() / 2]).expect("write half");
    let api = desktop.engine.api().await;
    let seen_from = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let first = seen_from.clone();
    let total = common::testing::within(
        "the resumed download",
        STEP,
        api.download_mp3(&job, &part, move |got, _| {
            first.fetch_min(got, std::sync::atomic::Ordering::Relaxed);
        }),
    )
    .await
    .expect("resumed download");
    assert_eq!(total, whole.len() as u64);
    assert_eq!(std::fs::read(&part).expect("read part"), whole);
    // The first progress report already counted the half we had.
    assert!(seen_from.load(std::sync::atomic::Ordering::Relaxed) > (whole.len() / 2) as u64);
    desktop.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_of_a_video_replaces_its_mp3_and_the_old_one_goes_to_the_trash() {
    let stack = Stack::start().await;
    let desktop = Desktop::start(&stack.gateway, &stack.token).await;
    let scratch = tempfile::tempdir().expect("scratch");
    let first = make_video(scratch.path(), "talk.mp4", 1.0, true);
    std::fs::copy(&first, desktop.watch_dir().join("talk.mp4")).expect("copy in");
    let old = desktop.wait_for("talk.mp4", Stage::Done).await;
    let mp3 = old.mp3_path.clone().expect("mp3");

    // A longer version under the same name.
    let second = make_video(scratch.path(), "talk.mp4", 2.0, true);
    std::fs::copy(&second, desktop.watch_dir().join("talk.mp4")).expect("copy in");
    let deadline = std::time::Instant::now() + crate::harness::WAIT;
    let new = loop {
        let items = desktop.items().await;
        if let Some(new) = items
            .iter()
            .find(|i| i.name == "talk.mp4" && i.id != old.id && i.stage == Stage::Done)
        {
            break new.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{items:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        new.mp3_path.as_deref(),
        Some(mp3.as_path()),
        "the same name"
    );
    assert_eq!(files_in(&desktop.out_dir()), vec!["talk.mp3"]);
    assert!((duration_of(&mp3) - 2.0).abs() < 0.15);
    assert_eq!(
        new.note.as_deref(),
        Some("Replaced the MP3 of the earlier version")
    );
    let earlier = desktop
        .items()
        .await
        .into_iter()
        .find(|i| i.id == old.id)
        .expect("the earlier row");
    assert!(
        earlier
            .note
            .is_some_and(|note| note.starts_with("Replaced by a newer version")),
    );
    // The first MP3 is in the Trash (taken out again: it is the machine
    // user's Trash).
    let trashed: Vec<_> = trash::os_limited::list()
        .expect("the Trash")
        .into_iter()
        .filter(|item| item.original_path() == mp3)
        .collect();
    assert_eq!(trashed.len(), 1, "the earlier MP3 is not in the Trash");
    trash::os_limited::purge_all(trashed).expect("emptied");
    desktop.stop().await;
    stack.stop().await;
}

//! The queue's rules, on a real SQLite file.

use super::*;

#[tokio::test]
async fn the_same_content_is_queued_once_and_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("state.db");
    let store = Store::open(&db).await.expect("open");
    let item = new(&store, "/v/a.mp4", "abc").await;
    assert_eq!(item.stage, Stage::Pending);
    assert_eq!(item.name, "a.mp4");
    let Added::Copy(copy) = store
        .add(Path::new("/v/renamed.mp4"), "abc", 10)
        .await
        .expect("add")
    else {
        panic!("a copy is not queued again");
    };
    assert_eq!(copy.stage, Stage::Duplicate);
    assert_eq!(
        copy.note.as_deref(),
        Some("Same video as a.mp4, already taken")
    );
    store
        .set_stage(item.id, Stage::Uploading, 0.5)
        .await
        .expect("stage");
    store.set_job(item.id, "job1").await.expect("job");
    store.close().await;

    let store = Store::open(&db).await.expect("reopen");
    let again = store.by_job("job1").await.expect("get").expect("kept");
    // An upload cut by a crash starts over.
    assert_eq!(again.stage, Stage::Pending);
    assert_eq!(again.progress, 0.0);
}

#[tokio::test]
async fn failures_keep_their_reason_and_other_stages_clear_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("s.db")).await.expect("open");
    let item = new(&store, "/v/a.mp4", "h").await;
    store
        .fail(
            item.id,
            &crate::plain::job_failure("the file has no audio track"),
            false,
        )
        .await
        .expect("fail");
    let failed = store.get(item.id).await.expect("get").expect("item");
    assert_eq!(failed.stage, Stage::Failed);
    assert!(!failed.retryable);
    assert_eq!(
        failed.error.as_deref(),
        Some("This video has no sound to turn into an MP3.")
    );
    assert_eq!(
        failed.detail.as_deref(),
        Some("the file has no audio track")
    );
    store
        .set_stage(item.id, Stage::Pending, 0.0)
        .await
        .expect("retry");
    assert_eq!(
        store.get(item.id).await.expect("get").expect("item").error,
        None
    );
}

async fn new(store: &Store, path: &str, sha256: &str) -> Item {
    match store.add(Path::new(path), sha256, 1).await.expect("add") {
        Added::New(item) => item,
        other => panic!("{path} not new: {other:?}"),
    }
}

#[tokio::test]
async fn a_copy_of_converted_content_says_which_mp3_and_converts_again_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("s.db")).await.expect("open");
    let first = new(&store, "/v/bunny.mp4", "h").await;
    store
        .set_mp3_path(first.id, Path::new("/out/bunny.mp3"))
        .await
        .expect("mp3");
    store
        .set_stage(first.id, Stage::Done, 1.0)
        .await
        .expect("done");

    let Added::Copy(copy) = store
        .add(Path::new("/v/bunny copy.mp4"), "h", 1)
        .await
        .expect("add")
    else {
        panic!("not a copy");
    };
    assert_eq!(copy.note.as_deref(), Some("Already converted as bunny.mp3"));
    // Seen again (a rescan): no second row.
    assert_eq!(
        store
            .add(Path::new("/v/bunny copy.mp4"), "h", 1)
            .await
            .expect("add"),
        Added::Known
    );
    // The file copied over itself is listed too.
    assert!(matches!(
        store
            .add(Path::new("/v/bunny.mp4"), "h", 1)
            .await
            .expect("add"),
        Added::Copy(_)
    ));

    store.convert_again(copy.id).await.expect("again");
    let queued = store.get(copy.id).await.expect("get").expect("item");
    assert_eq!((queued.stage, queued.note), (Stage::Pending, None));
    assert_eq!(
        store.in_stage(Stage::Pending).await.expect("pending").len(),
        1
    );
}

#[tokio::test]
async fn a_new_version_finds_the_earlier_mp3_and_a_removed_row_stays_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("s.db")).await.expect("open");
    let path = Path::new("/v/talk.mp4");
    let old = new(&store, "/v/talk.mp4", "v1").await;
    store
        .set_mp3_path(old.id, Path::new("/out/talk.mp3"))
        .await
        .expect("mp3");
    store
        .set_stage(old.id, Stage::Done, 1.0)
        .await
        .expect("done");
    let next = new(&store, "/v/talk.mp4", "v2").await;
    let earlier = store
        .earlier_version(path, next.id)
        .await
        .expect("query")
        .expect("the first version");
    assert_eq!(earlier.id, old.id);
    assert_eq!(
        store.earlier_version(path, old.id).await.expect("query"),
        None
    );

    store.mark_seen(path, 1, 1, Some("v2")).await.expect("seen");
    store.remove(next.id).await.expect("remove");
    assert_eq!(
        store.seen(path, 1, 1).await.expect("seen").as_deref(),
        Some("v2"),
        "a removed row's file stays known"
    );
}

#[tokio::test]
async fn seen_files_are_recognised_by_path_size_and_mtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("s.db")).await.expect("open");
    let path = Path::new("/v/a.mp4");
    store.mark_seen(path, 5, 7, Some("h")).await.expect("mark");
    assert_eq!(
        store.seen(path, 5, 7).await.expect("seen").as_deref(),
        Some("h")
    );
    assert_eq!(store.seen(path, 6, 7).await.expect("seen"), None);
    store.mark_seen(path, 6, 8, None).await.expect("mark");
    assert_eq!(
        store.seen(path, 6, 8).await.expect("seen").as_deref(),
        Some("")
    );
}

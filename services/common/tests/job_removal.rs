//! `JobStore::delete` and `take` leave a removed job's id behind as
//! withdrawn, for the messages that may still name it (a publish whose
//! confirmation was lost, a job deleted while queued); a job that never
//! was is not withdrawn.

use common::jobs::{Job, JobStore};
use mongodb::bson::oid::ObjectId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_job_is_remembered_as_withdrawn() {
    let client = mongodb::Client::with_uri_str(common::testing::mongodb_uri())
        .await
        .expect("client");
    let db = client.database(&format!("removal_{}", ObjectId::new().to_hex()));
    let store = JobStore::new(&db);
    store.ensure_indexes().await.expect("indexes");
    let (deleted, taken) = (ObjectId::new(), ObjectId::new());
    for id in [deleted, taken] {
        store
            .insert(&Job::queued(
                id,
                "a@example.com",
                "clip.mp4",
                ObjectId::new(),
            ))
            .await
            .expect("insert");
        assert!(!store.was_withdrawn(id).await.expect("read"));
    }

    store.delete(deleted).await.expect("delete");
    assert!(store.take(taken).await.expect("take").is_some());

    for id in [deleted, taken] {
        assert!(
            store.get(id).await.expect("read").is_none(),
            "the job stayed"
        );
        assert!(store.was_withdrawn(id).await.expect("read"));
    }
    assert!(!store.was_withdrawn(ObjectId::new()).await.expect("read"));
    db.drop().await.expect("drop");
}

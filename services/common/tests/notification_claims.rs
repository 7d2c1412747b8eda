//! `JobStore::claim_notification` against the real MongoDB-compatible
//! server: one claimant at a time, released on failure, void once sent,
//! taken over when its holder died.

use std::time::Duration;

use common::jobs::{Job, JobStore, Notification};
use mongodb::bson::oid::ObjectId;

async fn store() -> JobStore {
    let uri = std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into());
    let client = mongodb::Client::with_uri_str(uri).await.expect("client");
    let db = client.database(&format!("claims_{}", ObjectId::new().to_hex()));
    JobStore::new(&db)
}

async fn job(store: &JobStore) -> ObjectId {
    let id = ObjectId::new();
    store
        .insert(&Job::queued(
            id,
            "a@example.com",
            "clip.mp4",
            ObjectId::new(),
        ))
        .await
        .expect("insert");
    id
}

const LEASE: Duration = Duration::from_secs(300);

#[tokio::test]
async fn only_one_of_two_simultaneous_claims_wins() {
    let store = store().await;
    let id = job(&store).await;
    let (a, b) = tokio::join!(
        store.claim_notification(id, Notification::Ready, LEASE),
        store.claim_notification(id, Notification::Ready, LEASE),
    );
    let wins = [a.expect("claim"), b.expect("claim")];
    assert_eq!(wins.iter().filter(|won| **won).count(), 1, "{wins:?}");
    // The failure email is a separate claim.
    assert!(
        store
            .claim_notification(id, Notification::Failed, LEASE)
            .await
            .expect("claim")
    );
}

#[tokio::test]
async fn a_released_claim_can_be_taken_again_and_a_sent_email_never() {
    let store = store().await;
    let id = job(&store).await;
    assert!(
        store
            .claim_notification(id, Notification::Ready, LEASE)
            .await
            .expect("claim")
    );
    store
        .release_notification(id, Notification::Ready)
        .await
        .expect("release");
    assert!(
        store
            .claim_notification(id, Notification::Ready, LEASE)
            .await
            .expect("claim")
    );
    store.mark_notified(id).await.expect("sent");
    store
        .release_notification(id, Notification::Ready)
        .await
        .expect("release");
    assert!(
        !store
            .claim_notification(id, Notification::Ready, LEASE)
            .await
            .expect("claim")
    );
}

#[tokio::test]
async fn a_claim_older_than_its_lease_is_taken_over() {
    let store = store().await;
    let id = job(&store).await;
    let short = Duration::from_millis(200);
    assert!(
        store
            .claim_notification(id, Notification::Ready, short)
            .await
            .expect("claim")
    );
    assert!(
        !store
            .claim_notification(id, Notification::Ready, short)
            .await
            .expect("claim")
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        store
            .claim_notification(id, Notification::Ready, short)
            .await
            .expect("claim")
    );
}

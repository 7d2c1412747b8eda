//! `JobStore::claim_notification` against the real MongoDB-compatible
//! server: one holder at a time, released only by its holder, renewed while
//! it lives, void once sent, taken over once its lease lapsed.

use std::time::Duration;

use common::jobs::{Claim, Job, JobStore, Notification};
use mongodb::bson::oid::ObjectId;

async fn store() -> JobStore {
    let client = mongodb::Client::with_uri_str(common::testing::mongodb_uri())
        .await
        .expect("client");
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

async fn claim(store: &JobStore, id: ObjectId, holder: ObjectId, lease: Duration) -> Claim {
    store
        .claim_notification(id, Notification::Ready, holder, lease)
        .await
        .expect("claim")
}

#[tokio::test]
async fn only_one_of_two_simultaneous_claims_wins_and_the_other_learns_until_when() {
    let store = store().await;
    let id = job(&store).await;
    let (a, b) = tokio::join!(
        store.claim_notification(id, Notification::Ready, ObjectId::new(), LEASE),
        store.claim_notification(id, Notification::Ready, ObjectId::new(), LEASE),
    );
    let outcomes = [a.expect("claim"), b.expect("claim")];
    assert_eq!(
        outcomes.iter().filter(|c| **c == Claim::Taken).count(),
        1,
        "{outcomes:?}"
    );
    let until = outcomes
        .iter()
        .find_map(|c| match c {
            Claim::HeldUntil(until) => Some(*until),
            _ => None,
        })
        .expect("the loser is told until when");
    let left = until.timestamp_millis() - mongodb::bson::DateTime::now().timestamp_millis();
    assert!(left > 290_000 && left <= 300_000, "{left} ms left");
    // The failure email is a separate claim.
    assert_eq!(
        store
            .claim_notification(id, Notification::Failed, ObjectId::new(), LEASE)
            .await
            .expect("claim"),
        Claim::Taken
    );
}

#[tokio::test]
async fn a_released_claim_can_be_taken_again_and_a_sent_email_never() {
    let store = store().await;
    let id = job(&store).await;
    let first = ObjectId::new();
    assert_eq!(claim(&store, id, first, LEASE).await, Claim::Taken);
    store
        .release_notification(id, Notification::Ready, first)
        .await
        .expect("release");
    let second = ObjectId::new();
    assert_eq!(claim(&store, id, second, LEASE).await, Claim::Taken);
    store
        .mark_notified(id, Notification::Ready)
        .await
        .expect("sent");
    let job = store.get(id).await.expect("get").expect("job");
    assert!(job.notified_at.is_some());
    // Sent is sent: no later delivery may claim it, released or not.
    store
        .release_notification(id, Notification::Ready, second)
        .await
        .expect("release");
    assert_eq!(claim(&store, id, ObjectId::new(), LEASE).await, Claim::Sent);
}

#[tokio::test]
async fn only_the_holder_releases_or_renews_a_claim() {
    let store = store().await;
    let id = job(&store).await;
    let holder = ObjectId::new();
    assert_eq!(claim(&store, id, holder, LEASE).await, Claim::Taken);
    // A delivery whose claim lapsed and was taken over cannot end the new one.
    let stranger = ObjectId::new();
    store
        .release_notification(id, Notification::Ready, stranger)
        .await
        .expect("release");
    assert!(
        !store
            .renew_notification(id, Notification::Ready, stranger, LEASE)
            .await
            .expect("renew")
    );
    assert!(matches!(
        claim(&store, id, ObjectId::new(), LEASE).await,
        Claim::HeldUntil(_)
    ));
    assert!(
        store
            .renew_notification(id, Notification::Ready, holder, LEASE)
            .await
            .expect("renew")
    );
}

#[tokio::test]
async fn a_claim_whose_lease_lapsed_is_taken_over_unless_renewed() {
    let store = store().await;
    let id = job(&store).await;
    let short = Duration::from_millis(300);
    let holder = ObjectId::new();
    assert_eq!(claim(&store, id, holder, short).await, Claim::Taken);
    // Renewed while alive: still held after more than one lease.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            store
                .renew_notification(id, Notification::Ready, holder, short)
                .await
                .expect("renew")
        );
    }
    assert!(matches!(
        claim(&store, id, ObjectId::new(), short).await,
        Claim::HeldUntil(_)
    ));
    // Its holder died: after the lease it is anyone's.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heir = ObjectId::new();
    assert_eq!(claim(&store, id, heir, short).await, Claim::Taken);
    assert!(
        !store
            .renew_notification(id, Notification::Ready, holder, short)
            .await
            .expect("renew"),
        "the dead holder's renewal must not steal it back"
    );
}

#[tokio::test]
async fn a_deleted_job_cannot_be_claimed() {
    let store = store().await;
    let id = job(&store).await;
    store.delete(id).await.expect("delete");
    assert_eq!(claim(&store, id, ObjectId::new(), LEASE).await, Claim::Gone);
}

#[tokio::test]
async fn a_retry_of_a_failed_job_ends_its_failure_claim_and_counts() {
    let store = store().await;
    let id = job(&store).await;
    store.mark_converting(id).await.expect("converting");
    store.mark_failed(id, "broken").await.expect("failed");
    let holder = ObjectId::new();
    assert_eq!(
        store
            .claim_notification(id, Notification::Failed, holder, LEASE)
            .await
            .expect("claim"),
        Claim::Taken
    );
    store
        .mark_notified(id, Notification::Failed)
        .await
        .expect("sent");
    assert!(store.requeue_failed(id, 3).await.expect("retry"));
    let job = store.get(id).await.expect("get").expect("job");
    assert_eq!(job.retries, 1);
    assert!(job.failure_notified_at.is_none());
    // The next failure gets its own mail.
    store.mark_converting(id).await.expect("converting");
    store.mark_failed(id, "broken again").await.expect("failed");
    assert_eq!(
        store
            .claim_notification(id, Notification::Failed, ObjectId::new(), LEASE)
            .await
            .expect("claim"),
        Claim::Taken
    );
}

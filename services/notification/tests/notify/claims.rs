//! The claim on a job's email never outlives its holder's chance to send: a
//! delivery cut off between the claim and the send gives it back, a holder
//! that died blocks the mail only until its lease lapses, and a delivery
//! that finds another one sending waits without using up its attempts.

use std::time::{Duration, Instant};

use mongodb::bson::{doc, oid::ObjectId};

use common::jobs::Notification;
use common::testing::proxy::TcpProxy;
use common::testing::smtp::MailSink;

use crate::harness::{Harness, Options, amqp_url};

/// The raw `notify_claim` of a job, if one is held.
async fn claim_of(harness: &Harness, job: ObjectId) -> Option<mongodb::bson::Document> {
    harness
        .mongo
        .videos
        .collection::<mongodb::bson::Document>("jobs")
        .find_one(doc! { "_id": job })
        .await
        .expect("read job")
        .expect("job")
        .get_document("notify_claim")
        .ok()
        .cloned()
}

async fn wait_until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The regression of `scripts/chaos broker-restart`: the broker connection
/// breaks while a delivery holds the claim and waits on an SMTP server that
/// hangs. The delivery is stopped; its send runs on to the SMTP timeout
/// (5 s here) and fails, which gives the claim back, so the redelivered
/// message, which waited meanwhile without using its attempts, sends the
/// mail once, instead of finding "another delivery is sending" until the
/// retries run out and dead-lettering it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_cut_off_between_claim_and_send_gives_its_claim_back() {
    let (sink, port) = MailSink::start().await;
    let broker = TcpProxy::to_broker_of(&amqp_url()).await;
    let harness = Harness::start_with(Options {
        service_amqp_url: broker.url_for(&amqp_url()),
        // Longer than the retries' whole horizon (8 attempts over about
        // 5 s): a held claim must cost waits, not attempts.
        claim_lease_ms: 6_000,
        ..Options::new(port, 20)
    })
    .await;
    let job = harness.insert_job("interrupted.mp4").await;
    sink.stall_next(1);

    harness
        .publish_ready(&harness.ready_message(job).await)
        .await;
    wait_until("the claim taken", Duration::from_secs(10), async || {
        claim_of(&harness, job).await.is_some() && sink.sessions() == 1
    })
    .await;
    // The broker goes away under the delivery, which waits on SMTP.
    broker.cut();

    sink.wait_for("interrupted.mp4", Duration::from_secs(20))
        .await;
    harness.wait_for_job(job, |j| j.notified_at.is_some()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.count().await, 1, "one mail");
    assert!(claim_of(&harness, job).await.is_none(), "the claim ended");
    harness.assert_no_dead_letter().await;
    harness.stop().await;
}

/// The broker connection breaks while the SMTP server already has the mail
/// and has not confirmed it yet. The stopped delivery's send goes on: the
/// confirmation comes, the mail is recorded, and the redelivered message
/// finds it sent. One mail, not two (the copy `scripts/chaos
/// broker-restart` once found, when the stopped delivery gave its claim
/// back before it knew the mail had gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_stopped_while_the_server_has_the_mail_sends_it_once() {
    let (sink, port) = MailSink::start().await;
    let broker = TcpProxy::to_broker_of(&amqp_url()).await;
    let harness = Harness::start_with(Options {
        service_amqp_url: broker.url_for(&amqp_url()),
        claim_lease_ms: 3_000,
        ..Options::new(port, 20)
    })
    .await;
    let job = harness.insert_job("confirmed late.mp4").await;
    sink.confirm_late_next(1, Duration::from_secs(2));

    harness
        .publish_ready(&harness.ready_message(job).await)
        .await;
    sink.wait_for("confirmed late.mp4", Duration::from_secs(10))
        .await;
    // The mail is on the server, its "250" two seconds away: the broker
    // goes, and the consumer stops the delivery.
    broker.cut();

    harness.wait_for_job(job, |j| j.notified_at.is_some()).await;
    // Long enough for a redelivery to send a copy: it waits one renewal
    // period (1 s) at most before it looks again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sink.count().await, 1, "one mail");
    assert!(claim_of(&harness, job).await.is_none(), "the claim ended");
    harness.assert_no_dead_letter().await;
    harness.stop().await;
}

/// A notification process killed while holding a claim cannot give it
/// back. Its job's mail is sent once the claim's lease lapses: the other
/// deliveries wait for it without counting attempts, even when the lease
/// is longer than every retry together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_left_by_a_dead_holder_delays_the_mail_until_its_lease_lapses_and_no_more() {
    let (sink, port) = MailSink::start().await;
    let lease = Duration::from_secs(4);
    let harness = Harness::start_with(Options {
        claim_lease_ms: 4_000,
        // 8 attempts 10 ms apart and doubling: under 3 s in all.
        ..Options::new(port, 10)
    })
    .await;
    let job = harness.insert_job("orphaned claim.mp4").await;
    // What a SIGKILLed holder leaves: its claim, for one lease.
    let dead_holder = ObjectId::new();
    assert_eq!(
        harness
            .mongo
            .jobs
            .claim_notification(job, Notification::Ready, dead_holder, lease)
            .await
            .expect("claim"),
        common::jobs::Claim::Taken
    );
    let started = Instant::now();

    harness
        .publish_ready(&harness.ready_message(job).await)
        .await;
    sink.wait_for("orphaned claim.mp4", Duration::from_secs(20))
        .await;
    let took = started.elapsed();

    assert!(
        took >= lease - Duration::from_millis(500),
        "sent after {took:?}, under a live claim"
    );
    harness.wait_for_job(job, |j| j.notified_at.is_some()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.count().await, 1, "one mail");
    harness.assert_no_dead_letter().await;
    harness.stop().await;
}

/// The SMTP server takes the mail and the connection drops before its
/// "250": the service cannot know the mail went, and sends it again. That
/// is the promise: at least once, never lost, and every copy with the same
/// Message-ID so that the receiving side can drop the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_whose_confirmation_was_lost_is_sent_again_with_the_same_message_id() {
    let (sink, port) = MailSink::start().await;
    let harness = Harness::start(port, 100).await;
    let job = harness.insert_job("unconfirmed.mp4").await;
    sink.drop_after_data_next(1);

    harness
        .publish_ready(&harness.ready_message(job).await)
        .await;
    wait_until("two copies", Duration::from_secs(20), async || {
        sink.count().await >= 2
    })
    .await;
    harness.wait_for_job(job, |j| j.notified_at.is_some()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mails = sink.all().await;
    assert_eq!(
        mails.len(),
        2,
        "the lost confirmation costs one copy, no more"
    );
    let ids: Vec<String> = mails
        .iter()
        .map(|mail| header(&mail.data, "Message-ID").expect("a Message-ID"))
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], format!("<ready.{job}@mp3converter.local>"));
    harness.assert_no_dead_letter().await;
    harness.stop().await;
}

/// A failure mail is told apart from an earlier one of the same job (after
/// a retry) by its Message-ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_of_a_retried_job_has_its_own_message_id() {
    let (sink, port) = MailSink::start().await;
    let harness = Harness::start(port, 100).await;
    let job = harness.insert_job("flaky.mp4").await;
    harness
        .publish_failed(job, "flaky.mp4", "the file has no audio track")
        .await;
    let first = sink.wait_for("flaky.mp4", Duration::from_secs(20)).await;
    harness
        .wait_for_job(job, |j| j.failure_notified_at.is_some())
        .await;
    assert!(
        harness
            .mongo
            .jobs
            .requeue_failed(job, 3)
            .await
            .expect("retry")
    );
    harness
        .publish_failed(job, "flaky.mp4", "the file has no audio track")
        .await;
    wait_until(
        "the second failure mail",
        Duration::from_secs(20),
        async || sink.count().await >= 2,
    )
    .await;

    let second = sink.all().await.pop().expect("mail");
    assert_eq!(
        header(&first.data, "Message-ID").as_deref(),
        Some(format!("<failed.0.{job}@mp3converter.local>").as_str())
    );
    assert_eq!(
        header(&second.data, "Message-ID").as_deref(),
        Some(format!("<failed.1.{job}@mp3converter.local>").as_str())
    );
    harness.stop().await;
}

/// Every way out of a delivery that did not send gives the claim back: here
/// a permanent failure after the claim (an address the mail cannot be
/// built for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_fails_after_its_claim_gives_it_back() {
    let (_sink, port) = MailSink::start().await;
    let harness = Harness::start(port, 100).await;
    let job = harness
        .insert(common::jobs::Job {
            state: common::jobs::JobState::Done,
            mp3_fid: Some(ObjectId::new()),
            ..common::jobs::Job::queued(ObjectId::new(), "not an address", "x.mp4", ObjectId::new())
        })
        .await;

    harness
        .publish_ready(&harness.ready_message(job).await)
        .await;
    let (_, reason) = harness.next_dead_letter(Duration::from_secs(20)).await;

    assert!(reason.contains("invalid email address"), "{reason}");
    wait_until("the claim given back", Duration::from_secs(5), async || {
        claim_of(&harness, job).await.is_none()
    })
    .await;
    harness.stop().await;
}

/// The value of a header in a raw message.
fn header(raw: &str, name: &str) -> Option<String> {
    raw.lines()
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
}

/// The claim's own rules, without a service around it: dropped (an error
/// returned, or the delivery's task cancelled) it is released; renewed, it
/// outlives its lease; sent, it is recorded and never taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_claim_ends_on_every_exit_and_lives_while_its_holder_does() {
    use notification::claim::{Held, Lease};
    let client = mongodb::Client::with_uri_str(common::testing::mongodb_uri())
        .await
        .expect("client");
    let db = client.database(&format!("held_{}", ObjectId::new().to_hex()));
    let store = common::jobs::JobStore::new(&db);
    let job = ObjectId::new();
    store
        .insert(&common::jobs::Job::queued(
            job,
            "a@example.com",
            "x.mp4",
            ObjectId::new(),
        ))
        .await
        .expect("insert");
    let lease = Lease(Duration::from_millis(600));
    let taken = async || {
        Held::take(&store, job, Notification::Ready, lease)
            .await
            .expect("take")
    };
    let free = async || {
        store
            .claim_notification(job, Notification::Ready, ObjectId::new(), Duration::ZERO)
            .await
            .expect("probe")
            == common::jobs::Claim::Taken
    };

    // Dropped: released in the background at once.
    drop(taken().await.expect("held"));
    wait_until(
        "released after a drop",
        Duration::from_secs(5),
        async || free().await,
    )
    .await;

    // Held by a delivery whose task is cancelled mid-way.
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let (store2, lease2) = (store.clone(), lease);
    let delivery = tokio::spawn(async move {
        let claim = Held::take(&store2, job, Notification::Ready, lease2)
            .await
            .expect("take")
            .expect("held");
        let _ = held_tx.send(());
        std::future::pending::<()>().await;
        drop(claim);
    });
    held_rx.await.expect("claimed");
    // Renewed while alive: still held after two leases.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(matches!(
        Held::take(&store, job, Notification::Ready, lease).await,
        Err(notification::error::Error::InFlight { .. })
    ));
    delivery.abort();
    wait_until(
        "released after a cancel",
        Duration::from_secs(5),
        async || free().await,
    )
    .await;

    // Sent: recorded, and no later delivery gets it.
    taken().await.expect("held").sent().await;
    assert!(taken().await.is_none());
    assert!(
        store
            .get(job)
            .await
            .expect("get")
            .expect("job")
            .notified_at
            .is_some()
    );
    let _ = db.drop().await;
}

/// A mail dead-lettered while its job still owes it (here: no SMTP server
/// for longer than every retry) is sent by `notification
/// replay-dead-letters` once the server is back, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_mail_is_sent_by_the_replay_command() {
    let port = common::testing::free_port();
    let harness = Harness::start(port, 10).await;
    let job = harness.insert_job("replayed.mp4").await;
    harness
        .publish_ready(&harness.ready_message(job).await)
        .await;
    wait_until("dead-lettered", Duration::from_secs(20), async || {
        harness.dead_letter_count().await == 1
    })
    .await;
    let (sink, _) = MailSink::start_with(port, None).await;

    notification::run_command(
        notification::config::Command::ReplayDeadLetters,
        &harness.config,
    )
    .await
    .expect("replay");
    sink.wait_for("replayed.mp4", Duration::from_secs(20)).await;
    harness.wait_for_job(job, |j| j.notified_at.is_some()).await;

    assert_eq!(harness.dead_letter_count().await, 0);
    // Replaying again finds nothing and sends nothing more.
    notification::run_command(
        notification::config::Command::ReplayDeadLetters,
        &harness.config,
    )
    .await
    .expect("replay");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.count().await, 1);
    harness.stop().await;
}

//! The AMQP plumbing against the real broker.

use std::time::UNIX_EPOCH;

use lapin::types::{AMQPValue, FieldTable};

use super::*;

/// Production brokers are reached over TLS (`amqps://`): a TLS
/// handshake is attempted (and fails against a plain-text listener).
#[tokio::test]
async fn amqps_urls_speak_tls() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hello = tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let (mut socket, _) = listener.accept().await.expect("a connection");
        let mut first = [0u8; 3];
        socket.read_exact(&mut first).await.expect("first bytes");
        first
    });
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let _ = tokio::time::timeout(Duration::from_secs(5), connect(&url, "tls-test")).await;
    // 0x16 0x03: a TLS handshake record; plain AMQP would send "AMQ".
    let first = hello.await.expect("listener task");
    assert_eq!(&first[..2], &[0x16, 0x03], "sent {first:?}");
}

/// A partitioned peer is noticed in about 20 s, not two minutes: the
/// broker agrees to the services' 10 s heartbeat; a URL's own wins.
#[tokio::test]
async fn connections_heartbeat_every_10_s_unless_the_url_says_otherwise() {
    let url = crate::testing::amqp_url();
    let conn = connect(&url, "heartbeat-test").await.expect("connect");
    assert_eq!(conn.configuration().heartbeat(), HEARTBEAT_SECS);
    conn.close(200, "done".into()).await.expect("close");

    let sep = if url.contains('?') { '&' } else { '?' };
    let own = format!("{url}{sep}heartbeat=30");
    let conn = connect(&own, "heartbeat-test").await.expect("connect");
    assert_eq!(conn.configuration().heartbeat(), 30);
    conn.close(200, "done".into()).await.expect("close");
}

#[tokio::test]
async fn a_malformed_url_fails_at_once_an_absent_broker_does_not() {
    let malformed = Publisher::connect("amqp://user@host:notaport/%2f", "test", &[], &[]).await;
    assert!(matches!(malformed, Err(Error::InvalidUrl(_))));

    // Bound and released: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let absent = Publisher::connect(&url, "test", &[], &[])
        .await
        .expect("a broker that is not up yet is no start-up error");
    assert!(!absent.is_connected().await);
}

#[test]
fn delays_double_from_the_base() {
    let policy = RetryPolicy {
        max_attempts: 8,
        base_delay: Duration::from_secs(30),
    };
    let delays: Vec<u64> = (1..8).map(|a| policy.delay_after(a).as_secs()).collect();
    assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920]);
}

#[test]
fn publish_time_comes_from_the_ms_header_else_the_timestamp_property() {
    let mut headers = FieldTable::default();
    assert_eq!(published_at(&headers, None), None);
    assert_eq!(
        published_at(&headers, Some(1_700_000_000)),
        Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );
    headers.insert(
        PUBLISHED_MS_HEADER.into(),
        AMQPValue::LongLongInt(1_700_000_000_250),
    );
    assert_eq!(
        published_at(&headers, Some(1_700_000_000)),
        Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_250))
    );
}

#[test]
fn attempt_header_is_read_in_any_integer_width_and_defaults_to_one() {
    let mut headers = FieldTable::default();
    assert_eq!(attempt_of(&headers), 1);
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(3));
    assert_eq!(attempt_of(&headers), 3);
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::ShortUInt(5));
    assert_eq!(attempt_of(&headers), 5);
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongInt(-2));
    assert_eq!(attempt_of(&headers), 1);
}

#[test]
fn failure_headers_keep_the_others() {
    let mut headers = FieldTable::default();
    headers.insert("x-request-id".into(), AMQPValue::LongString("abc".into()));
    let out = with_failure(&headers, 2, "smtp down");
    assert_eq!(attempt_of(&out), 2);
    assert!(out.inner().contains_key("x-request-id"));
    assert!(
        matches!(out.inner().get(REASON_HEADER), Some(AMQPValue::LongString(r)) if r.to_string() == "smtp down")
    );
}

/// A consumer on a fresh queue with one attempt in all (any counted failure
/// dead-letters) and 50 ms waits, the queue's name, and a publisher.
async fn one_attempt_consumer<H, Fut>(
    handler: H,
) -> (
    String,
    ConsumerSettings,
    crate::shutdown::CancellationToken,
    tokio::task::JoinHandle<()>,
    Publisher,
)
where
    H: Fn(Incoming) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Disposition> + Send + 'static,
{
    let queue = format!("wait-{}", uuid::Uuid::new_v4().simple());
    let settings = ConsumerSettings {
        url: crate::testing::amqp_url(),
        queue: queue.clone(),
        name: "wait-test".into(),
        concurrency: 1,
        grace: Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts: 1,
            base_delay: Duration::from_millis(50),
        },
        wait: Duration::from_millis(50),
        bind: None,
    };
    let shutdown = crate::shutdown::CancellationToken::new();
    let consumer = tokio::spawn(consume(settings.clone(), handler, shutdown.clone()));
    let publisher = Publisher::connect(&settings.url, "wait-test", &[&queue], &[])
        .await
        .expect("publisher");
    (queue, settings, shutdown, consumer, publisher)
}

/// Stops the consumer; returns what the dead-letter queue held (body and
/// reason) and removes the test's queues.
async fn finish(
    settings: &ConsumerSettings,
    shutdown: crate::shutdown::CancellationToken,
    consumer: tokio::task::JoinHandle<()>,
) -> Vec<String> {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), consumer)
        .await
        .expect("the consumer stops")
        .expect("consumer task");
    let conn = connect(&settings.url, "wait-test").await.expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    let dlq = dead_letter_queue(&settings.queue);
    let mut reasons = Vec::new();
    while let Some(message) = channel
        .basic_get(
            dlq.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic_get")
    {
        reasons.push(header_text(
            message.delivery.properties.headers().as_ref(),
            REASON_HEADER,
        ));
    }
    for name in [
        settings.queue.clone(),
        dlq,
        delay_queue(&settings.queue, settings.wait),
    ] {
        let _ = channel
            .queue_delete(
                name.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
    }
    let _ = conn.close(200, "done".into()).await;
    reasons
}

/// A message the broker does not take at once (here: returned, as its
/// queue does not exist yet; a quorum queue another connection is still
/// declaring nacks the same way) is published again and arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_broker_did_not_take_is_published_again() {
    let queue = format!("late-{}", uuid::Uuid::new_v4().simple());
    let url = crate::testing::amqp_url();
    let publisher = Publisher::connect(&url, "late-test", &[], &[])
        .await
        .expect("publisher");
    let declarer = {
        let (url, queue) = (url.clone(), queue.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let conn = super::connect(&url, "late-test").await.expect("connect");
            let channel = conn.create_channel().await.expect("channel");
            super::topology::declare_queue(&channel, &queue)
                .await
                .expect("declare");
            conn
        })
    };
    publisher
        .publish(&queue, b"{}", FieldTable::default())
        .await
        .expect("published again once the queue exists");
    let conn = declarer.await.expect("declared");
    let channel = conn.create_channel().await.expect("channel");
    let count = super::topology::message_count(&channel, &queue)
        .await
        .expect("count");
    assert_eq!(count, 1, "exactly one copy arrived");
    let _ = channel
        .queue_delete(
            queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await;
    let _ = conn.close(200, "done".into()).await;
}

/// A delivery told to wait (another one holds the work) comes back with
/// its attempts untouched and is never dead-lettered for waiting, even on
/// its last attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_another_delivery_is_no_failed_attempt() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let (queue, settings, shutdown, consumer, publisher) =
        one_attempt_consumer(move |incoming: Incoming| {
            let record = record.clone();
            async move {
                let mut seen = record.lock().expect("seen");
                seen.push((
                    incoming.attempt,
                    incoming.last_attempt,
                    waits_of(&incoming.headers),
                ));
                if seen.len() < 4 {
                    Disposition::Wait("someone else holds it".into())
                } else {
                    Disposition::Ack
                }
            }
        })
        .await;
    publisher
        .publish(&queue, b"{}", FieldTable::default())
        .await
        .expect("publish");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.lock().expect("seen").len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            seen.lock().expect("seen")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = finish(&settings, shutdown, consumer).await;

    assert_eq!(
        *seen.lock().expect("seen"),
        [(1, true, 0), (1, true, 1), (1, true, 2), (1, true, 3)]
    );
    assert!(dead.is_empty(), "{dead:?}");
}

/// Nothing waits for ever: after MAX_WAITS waits in a row a wait counts as
/// a failed attempt (here the last one: dead-lettered, with the reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_waits_in_a_row_count_as_a_failed_attempt() {
    let (queue, settings, shutdown, consumer, publisher) =
        one_attempt_consumer(|_| async { Disposition::Wait("someone else holds it".into()) }).await;
    let mut headers = FieldTable::default();
    headers.insert(WAITS_HEADER.into(), AMQPValue::LongUInt(MAX_WAITS));
    publisher
        .publish(&queue, b"{}", headers)
        .await
        .expect("publish");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let conn = connect(&settings.url, "wait-test").await.expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    loop {
        let waiting = message_count(&channel, &dead_letter_queue(&queue))
            .await
            .expect("dead-letter queue");
        if waiting > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = conn.close(200, "done".into()).await;
    let dead = finish(&settings, shutdown, consumer).await;

    assert_eq!(dead.len(), 1);
    assert!(dead[0].contains("waits in a row"), "{dead:?}");
}

/// A consumer whose every permit is held by running work still notices
/// its connection die, and takes messages again at once: found by
/// `scripts/chaos partition`, where a converter cut off mid-conversion
/// came back only when that conversion ended (never within the 90 s the
/// scenario waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_noticed_while_every_permit_is_busy() {
    let proxy = crate::testing::proxy::TcpProxy::to_broker_of(&crate::testing::amqp_url()).await;
    let queue = format!("lost-{}", uuid::Uuid::new_v4().simple());
    let settings = ConsumerSettings {
        url: proxy.url_for(&crate::testing::amqp_url()),
        queue: queue.clone(),
        name: "lost-test".into(),
        concurrency: 1,
        grace: Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(50),
        },
        wait: Duration::from_millis(50),
        bind: None,
    };
    let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (hold, record) = (held.clone(), seen.clone());
    let shutdown = crate::shutdown::CancellationToken::new();
    let consumer = tokio::spawn(consume(
        settings.clone(),
        move |incoming: Incoming| {
            let (hold, record) = (hold.clone(), record.clone());
            async move {
                let body = String::from_utf8_lossy(&incoming.body).into_owned();
                record.lock().expect("seen").push(body.clone());
                // The first delivery of "long" is a conversion that does
                // not end while this test runs.
                if body == "long" && !hold.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                Disposition::Ack
            }
        },
        shutdown.clone(),
    ));
    // Published straight to the broker: only the consumer's connection
    // goes through the proxy.
    let publisher = Publisher::connect(&crate::testing::amqp_url(), "lost-test", &[&queue], &[])
        .await
        .expect("publisher");
    let wait_for = |what: &'static str, done: fn(&[String]) -> bool| {
        let seen = seen.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while !done(&seen.lock().expect("seen")) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{what}: handled {:?}",
                    seen.lock().expect("seen")
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    publisher
        .publish(&queue, b"long", FieldTable::default())
        .await
        .expect("publish");
    wait_for("the long job started", |seen| !seen.is_empty()).await;

    proxy.cut();
    publisher
        .publish(&queue, b"next", FieldTable::default())
        .await
        .expect("publish");
    wait_for(
        "the next message handled while the long one still runs",
        |seen| seen.iter().any(|body| body == "next"),
    )
    .await;
    let dead = finish(&settings, shutdown, consumer).await;
    assert!(dead.is_empty(), "{dead:?}");
    // The long job's message came back to the queue and was taken again.
    assert_eq!(
        seen.lock()
            .expect("seen")
            .iter()
            .filter(|body| *body == "long")
            .count(),
        2,
        "{:?}",
        seen.lock().expect("seen")
    );
}

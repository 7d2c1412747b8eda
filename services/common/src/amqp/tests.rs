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

//! The consume loop with retry and dead-lettering: manual acks, a prefetch,
//! a message that fails transiently republished to a delay queue with its
//! attempt counted, the last attempt (or a permanent failure) dead-lettered
//! with its reason, and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use tokio::sync::Semaphore;

use crate::error::Result;

use crate::shutdown::CancellationToken;

use super::publisher::publish_on;
use super::topology::{
    dead_letter_queue, declare_delay_queue, declare_queue, declare_topic_exchange, delay_queue,
};
use super::{connect, open_with_backoff};

/// What to do with a delivery once its handler is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done (or skipped on purpose): remove it from the queue.
    Ack,
    /// A transient failure: try again after the policy's delay, or send it
    /// to the dead-letter queue when this was the last attempt.
    Retry(String),
    /// A permanent failure: straight to the dead-letter queue, with the reason.
    DeadLetter(String),
    /// Not this delivery's turn (another one holds the work): back after
    /// [`ConsumerSettings::wait`], with its attempts untouched, never to the
    /// dead-letter queue for it. After [`MAX_WAITS`] waits in a row it
    /// counts as a [`Disposition::Retry`], so nothing waits for ever.
    Wait(String),
}

/// How many times in a row one message may [`Disposition::Wait`] before its
/// waits count as failed attempts.
pub const MAX_WAITS: u32 = 360;

/// Header that counts attempts (1 for the first delivery).
pub const ATTEMPT_HEADER: &str = "x-attempt";
/// Header that counts a message's waits in a row ([`Disposition::Wait`]).
pub const WAITS_HEADER: &str = "x-waits";
/// Header that says why a message was retried or dead-lettered.
pub const REASON_HEADER: &str = "x-failure-reason";
/// Header with the publish time in milliseconds since the Unix epoch: the
/// AMQP `timestamp` property (also set) only counts whole seconds, too
/// coarse for a queue lag on an idle queue.
pub const PUBLISHED_MS_HEADER: &str = "x-published-ms";

/// How often and how late failed messages are tried again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; then the dead-letter queue.
    pub max_attempts: u32,
    /// Delay after the first failed attempt; it doubles each time.
    pub base_delay: Duration,
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        self.base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
    }
}

/// A text header of a message (request id, failure reason), empty when
/// absent or not text.
pub fn header_text(headers: Option<&FieldTable>, name: &str) -> String {
    match headers.and_then(|headers| headers.inner().get(name)) {
        Some(AMQPValue::LongString(value)) => value.to_string(),
        Some(AMQPValue::ShortString(value)) => value.to_string(),
        _ => String::new(),
    }
}

/// A received message handed to a handler.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub body: Vec<u8>,
    pub headers: FieldTable,
    /// 1 for the first attempt, counted through retries.
    pub attempt: u32,
    /// True when a [`Disposition::Retry`] would dead-letter instead, so the
    /// handler can record the failure for good.
    pub last_attempt: bool,
    /// When this delivery was (last) published, from [`PUBLISHED_MS_HEADER`]
    /// or else the AMQP `timestamp` property; `None` when the publisher set
    /// neither. For a retried message, the time it went to its delay queue.
    pub published_at: Option<SystemTime>,
}

impl Incoming {
    /// A text header (request id and the like), empty when absent.
    pub fn header_text(&self, name: &str) -> String {
        header_text(Some(&self.headers), name)
    }

    /// How long the message waited between publish and now (zero if the
    /// clocks disagree); `None` when its publish time is unknown.
    pub fn queue_lag(&self) -> Option<Duration> {
        let published = self.published_at?;
        Some(
            SystemTime::now()
                .duration_since(published)
                .unwrap_or_default(),
        )
    }
}

pub(super) fn published_at(headers: &FieldTable, timestamp: Option<u64>) -> Option<SystemTime> {
    let ms = match headers.inner().get(PUBLISHED_MS_HEADER) {
        Some(AMQPValue::LongLongInt(ms)) => u64::try_from(*ms).ok(),
        Some(AMQPValue::Timestamp(ms)) => Some(*ms),
        _ => None,
    };
    match (ms, timestamp) {
        (Some(ms), _) => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        (None, Some(seconds)) => Some(UNIX_EPOCH + Duration::from_secs(seconds)),
        (None, None) => None,
    }
}

pub(super) fn attempt_of(headers: &FieldTable) -> u32 {
    let attempt = match headers.inner().get(ATTEMPT_HEADER) {
        Some(AMQPValue::LongUInt(n)) => i64::from(*n),
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::ShortUInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortInt(n)) => i64::from(*n),
        _ => 1,
    };
    u32::try_from(attempt.max(1)).unwrap_or(u32::MAX)
}

/// Settings for [`consume`].
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub url: String,
    pub queue: String,
    /// Connection name shown by the broker.
    pub name: String,
    /// How many messages are handled at once (and the prefetch).
    pub concurrency: u16,
    /// How long running handlers may take to finish after shutdown.
    pub grace: Duration,
    /// Retries through delay queues, then `<queue>.dlq`.
    pub retry: RetryPolicy,
    /// How long a message that must [`Disposition::Wait`] waits before its
    /// next delivery.
    pub wait: Duration,
    /// Binds the queue to a topic exchange with this routing key (event
    /// subscriptions such as `job.failed`).
    pub bind: Option<(String, String)>,
}

/// Consumes `settings.queue` until `shutdown` resolves, running up to
/// `concurrency` handlers at once. A message is acked only after its handler
/// returns [`Disposition::Ack`]. The connection is re-established with
/// backoff when the broker goes away. On shutdown, consumption stops, running
/// handlers get `grace` to finish, and whatever was not acked is requeued by
/// the broker when the channel closes.
pub async fn consume<H, Fut>(settings: ConsumerSettings, handler: H, shutdown: CancellationToken)
where
    H: Fn(Incoming) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Disposition> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(usize::from(settings.concurrency.max(1))));
    // Each of the queue's series exists from the start, at 0: the alerts and
    // the dashboard read them before the first wait, retry or dead letter.
    for series in [
        "amqp_messages_waited_total",
        "amqp_messages_retried_total",
        "amqp_messages_dead_lettered_total",
    ] {
        metrics::counter!(series, "queue" => settings.queue.clone()).increment(0);
    }
    loop {
        let Some((conn, channel, mut consumer)) =
            open_with_backoff(&settings.queue, || open_consumer(&settings), &shutdown).await
        else {
            return;
        };
        tracing::info!(queue = %settings.queue, "consuming");
        let mut running = tokio::task::JoinSet::new();
        let stopping = loop {
            // Every wait also watches the connection: with every permit
            // held by running work, nothing else would notice it die, and
            // the consumer would come back only when that work ended.
            let permit = tokio::select! {
                () = shutdown.cancelled() => break true,
                () = lost(&conn, &channel) => break false,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break true,
                },
            };
            let next = tokio::select! {
                () = shutdown.cancelled() => break true,
                () = lost(&conn, &channel) => break false,
                next = consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "consumer failed; reconnecting");
                    break false;
                }
                None => {
                    tracing::warn!("consumer cancelled by the broker; reconnecting");
                    break false;
                }
            };
            let handler = handler.clone();
            let (channel, settings) = (channel.clone(), settings.clone());
            running.spawn(async move {
                let headers = delivery.properties.headers().clone().unwrap_or_default();
                let attempt = attempt_of(&headers);
                let published_at = published_at(&headers, *delivery.properties.timestamp());
                let incoming = Incoming {
                    body: delivery.data.clone(),
                    headers,
                    attempt,
                    last_attempt: attempt >= settings.retry.max_attempts,
                    published_at,
                };
                let outcome = handler(incoming.clone()).await;
                settle(&channel, &settings, &delivery, &incoming, outcome).await;
                drop(permit);
            });
            // Reap finished handlers so the set does not grow.
            while running.try_join_next().is_some() {}
        };
        if stopping {
            // Stop the flow of new messages, then let running work finish.
            let _ = tokio::time::timeout(
                super::CLOSE_TIMEOUT,
                channel.basic_cancel(
                    consumer.tag(),
                    lapin::options::BasicCancelOptions::default(),
                ),
            )
            .await;
            let drained = tokio::time::timeout(settings.grace, async {
                while running.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!("grace period over; unfinished messages go back to the queue");
            }
            super::close_quietly(&conn, "shutting down").await;
            return;
        }
        running.abort_all();
        super::close_quietly(&conn, "reconnecting").await;
    }
}

/// How often a waiting consumer looks at its connection.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// Returns once the connection or the channel is no longer open (a missed
/// heartbeat, a closed socket, a channel the broker closed): the running
/// handlers can no longer settle their messages, which the broker gives to
/// another consumer, so they are stopped and the consumer reconnects.
async fn lost(conn: &Connection, channel: &Channel) {
    while conn.status().connected() && channel.status().connected() {
        tokio::time::sleep(LIVENESS_CHECK).await;
    }
    tracing::warn!("connection to the broker lost; reconnecting");
}

/// Acks, or moves the message to its delay queue or dead-letter queue
/// (confirmed) and then acks. If that move fails, the message is requeued:
/// never lost.
pub(super) async fn settle(
    channel: &Channel,
    settings: &ConsumerSettings,
    delivery: &lapin::message::Delivery,
    incoming: &Incoming,
    outcome: Disposition,
) {
    let outcome = match outcome {
        Disposition::Wait(reason) if waits_of(&incoming.headers) >= MAX_WAITS => {
            Disposition::Retry(format!("{reason} ({MAX_WAITS} waits in a row)"))
        }
        other => other,
    };
    let moved = match outcome {
        Disposition::Ack => Ok(()),
        Disposition::Wait(reason) => {
            let waits = waits_of(&incoming.headers) + 1;
            tracing::info!(queue = %settings.queue, attempt = incoming.attempt, waits, wait = ?settings.wait, %reason, "waiting for another delivery");
            metrics::counter!("amqp_messages_waited_total", "queue" => settings.queue.clone())
                .increment(1);
            let mut headers = with_failure(&incoming.headers, incoming.attempt, &reason);
            headers.insert(WAITS_HEADER.into(), AMQPValue::LongUInt(waits));
            delay(channel, settings, &incoming.body, settings.wait, headers).await
        }
        Disposition::Retry(reason) if !incoming.last_attempt => {
            let delay_for = settings.retry.delay_after(incoming.attempt);
            tracing::info!(queue = %settings.queue, attempt = incoming.attempt, retry_in = ?delay_for, %reason, "retrying later");
            metrics::counter!("amqp_messages_retried_total", "queue" => settings.queue.clone())
                .increment(1);
            let mut headers = with_failure(&incoming.headers, incoming.attempt + 1, &reason);
            headers.insert(WAITS_HEADER.into(), AMQPValue::LongUInt(0));
            delay(channel, settings, &incoming.body, delay_for, headers).await
        }
        Disposition::Retry(reason) | Disposition::DeadLetter(reason) => {
            tracing::warn!(queue = %settings.queue, attempt = incoming.attempt, %reason, "dead-lettering");
            metrics::counter!("amqp_messages_dead_lettered_total", "queue" => settings.queue.clone()).increment(1);
            let headers = with_failure(&incoming.headers, incoming.attempt, &reason);
            publish_on(
                channel,
                "",
                &dead_letter_queue(&settings.queue),
                &incoming.body,
                headers,
                true,
            )
            .await
        }
    };
    let settled = match moved {
        Ok(()) => delivery.ack(BasicAckOptions::default()).await,
        Err(err) => {
            tracing::warn!(error = %err, "could not move a failed message; requeueing it");
            // Do not spin on a message that fails at once.
            tokio::time::sleep(Duration::from_secs(1)).await;
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
        }
    };
    if let Err(err) = settled {
        tracing::warn!(error = %err, "could not settle a delivery; the broker will redeliver it");
    }
}

/// Puts a message in the delay queue that hands it back to the consumer's
/// queue after `wait` (confirmed).
async fn delay(
    channel: &Channel,
    settings: &ConsumerSettings,
    body: &[u8],
    wait: Duration,
    headers: FieldTable,
) -> Result<()> {
    let target = delay_queue(&settings.queue, wait);
    declare_delay_queue(channel, &target, &settings.queue, wait).await?;
    publish_on(channel, "", &target, body, headers, true).await
}

/// How many times in a row the message has waited.
pub(super) fn waits_of(headers: &FieldTable) -> u32 {
    match headers.inner().get(WAITS_HEADER) {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

pub(super) fn with_failure(headers: &FieldTable, attempt: u32, reason: &str) -> FieldTable {
    let mut headers = headers.clone();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(attempt));
    let reason: String = reason.chars().take(1000).collect();
    headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
    headers
}

pub(super) async fn open_consumer(
    settings: &ConsumerSettings,
) -> Result<(Connection, Channel, lapin::Consumer)> {
    let conn = connect(&settings.url, &settings.name).await?;
    let channel = conn.create_channel().await?;
    // Confirms for the retry and dead-letter publishes made on this channel.
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    declare_queue(&channel, &settings.queue).await?;
    declare_queue(&channel, &dead_letter_queue(&settings.queue)).await?;
    if let Some((exchange, routing_key)) = &settings.bind {
        declare_topic_exchange(&channel, exchange).await?;
        channel
            .queue_bind(
                settings.queue.as_str().into(),
                exchange.as_str().into(),
                routing_key.as_str().into(),
                lapin::options::QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    channel
        .basic_qos(settings.concurrency.max(1), BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            settings.queue.as_str().into(),
            settings.name.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((conn, channel, consumer))
}

//! RabbitMQ plumbing: durable queue declaration, a publisher that waits for
//! broker confirms and reconnects by itself, and a consume loop with manual
//! acks, a prefetch and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::{Mutex, Semaphore};

use crate::error::{Error, Result};

/// Opens a connection named after the service (visible in the management UI).
pub async fn connect(url: &str, name: &str) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.to_owned().into());
    let uri = with_heartbeat(url)?;
    bounded("the connection", OPEN_TIMEOUT, async {
        Ok(Connection::connect_uri(uri, props).await?)
    })
    .await
}

/// The heartbeat the services ask for unless the URL names one
/// (`?heartbeat=N`). RabbitMQ's default of 60 s means a link cut without a
/// FIN (a partition, a dead node) goes unnoticed for two minutes on both
/// sides: messages stay with a consumer that cannot ack them, and a
/// reconnected consumer waits on a dead socket. At 10 s both sides give up
/// after about 20 s, the broker redelivers, and the service reconnects.
pub const HEARTBEAT_SECS: u16 = 10;

/// The parsed URL, with [`HEARTBEAT_SECS`] unless it sets its own.
pub fn with_heartbeat(url: &str) -> Result<lapin::uri::AMQPUri> {
    let mut uri: lapin::uri::AMQPUri = url.parse().map_err(Error::InvalidUrl)?;
    uri.query.heartbeat.get_or_insert(HEARTBEAT_SECS);
    Ok(uri)
}

/// How long opening a connection (TCP and the AMQP handshake) or setting up
/// a channel may take. A link that silently drops packets would otherwise
/// hold the caller forever: heartbeats only start once the connection is up.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// `work`, or [`Error::Unresponsive`] when the broker has not answered
/// `what` within `after`.
async fn bounded<T>(
    what: &'static str,
    after: Duration,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(after, work)
        .await
        .map_err(|_| Error::Unresponsive { what, after })?
}

/// Declares a durable topic exchange (job events, routing key `job.<state>`).
pub async fn declare_topic_exchange(channel: &Channel, name: &str) -> Result<()> {
    channel
        .exchange_declare(
            name.into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Declares a durable quorum queue; every service declares the queues it
/// uses, so start-up order does not matter.
pub async fn declare_queue(channel: &Channel, name: &str) -> Result<()> {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    declare_durable(channel, name, args).await
}

async fn declare_durable(channel: &Channel, name: &str, args: FieldTable) -> Result<()> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    Ok(())
}

/// Publishes persistent JSON messages to queues and waits until the broker
/// has confirmed each one. Reconnects on the next publish after the broker
/// went away, so a broker restart does not need a service restart.
pub struct Publisher {
    url: String,
    name: String,
    queues: Vec<String>,
    /// Topic exchanges (job events) declared on every (re)connect.
    exchanges: Vec<String>,
    channel: Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    /// Checks the URL and connects. A malformed URL is an error at start-up;
    /// a broker that does not answer yet is not: on a cluster the services
    /// and the broker start in any order, so the publisher connects again on
    /// first use (and `/readyz` says "not ready" until it has).
    pub async fn connect(
        url: &str,
        name: &str,
        queues: &[&str],
        exchanges: &[&str],
    ) -> Result<Self> {
        with_heartbeat(url)?;
        let publisher = Self {
            url: url.to_owned(),
            name: name.to_owned(),
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            exchanges: exchanges.iter().map(|e| (*e).to_owned()).collect(),
            channel: Mutex::new(None),
        };
        if let Err(err) = publisher.channel().await {
            tracing::warn!(error = %err, "RabbitMQ does not answer yet; connecting again on first use");
        }
        Ok(publisher)
    }

    async fn channel(&self) -> Result<Channel> {
        let mut guard = self.channel.lock().await;
        if let Some((conn, channel)) = guard.as_ref()
            && conn.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let conn = connect(&self.url, &self.name).await?;
        let channel = bounded("the channel set-up", OPEN_TIMEOUT, async {
            let channel = conn.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            for queue in &self.queues {
                declare_queue(&channel, queue).await?;
            }
            for exchange in &self.exchanges {
                declare_topic_exchange(&channel, exchange).await?;
            }
            Ok(channel)
        })
        .await?;
        *guard = Some((conn, channel.clone()));
        Ok(channel)
    }

    /// True when the broker connection is up (for `/readyz`).
    pub async fn is_connected(&self) -> bool {
        self.channel().await.is_ok()
    }

    /// Sends `body` to `queue` (default exchange) and returns once the broker
    /// has taken responsibility for it. `headers` travel with the message
    /// (request id, attempt count).
    pub async fn publish(&self, queue: &str, body: &[u8], headers: FieldTable) -> Result<()> {
        self.send("", queue, body, headers, true).await
    }

    /// Publishes an event to a topic exchange (confirmed). Events nobody
    /// listens for are fine, so the message is not `mandatory`.
    pub async fn publish_event(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
    ) -> Result<()> {
        self.send(exchange, routing_key, body, FieldTable::default(), false)
            .await
    }

    /// Publishes on the shared channel. After a confirm that never came, the
    /// next publish starts on a new connection: a silently dead link (a
    /// dropped network path) heals that way, and a blocked broker costs
    /// nothing more.
    async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers: FieldTable,
        mandatory: bool,
    ) -> Result<()> {
        let channel = self.channel().await?;
        let published = publish_on(&channel, exchange, routing_key, body, headers, mandatory).await;
        if matches!(published, Err(Error::Unresponsive { .. }))
            && let Some((conn, _)) = self.channel.lock().await.take()
        {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    conn.close(200, "publish not confirmed".into()),
                )
                .await;
            });
        }
        published
    }
}

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
}

/// Header that counts attempts (1 for the first delivery).
pub const ATTEMPT_HEADER: &str = "x-attempt";
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

/// The dead-letter queue of `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// The delay queue that holds messages of `queue` for `delay`, then hands
/// them back to `queue` (per-queue TTL + dead-lettering to the default
/// exchange). One queue per delay keeps every message's wait exact.
pub fn delay_queue(queue: &str, delay: Duration) -> String {
    format!("{queue}.delay.{}ms", delay.as_millis())
}

/// A received message handed to a handler.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub body: Vec<u8>,
    pub headers: FieldTable,
    pub redelivered: bool,
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
        match self.headers.inner().get(name) {
            Some(AMQPValue::LongString(value)) => value.to_string(),
            Some(AMQPValue::ShortString(value)) => value.to_string(),
            _ => String::new(),
        }
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

fn published_at(headers: &FieldTable, timestamp: Option<u64>) -> Option<SystemTime> {
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

fn attempt_of(headers: &FieldTable) -> u32 {
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
pub async fn consume<H, Fut>(
    settings: ConsumerSettings,
    handler: H,
    shutdown: impl Future<Output = ()> + Send,
) where
    H: Fn(Incoming) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Disposition> + Send + 'static,
{
    tokio::pin!(shutdown);
    let permits = Arc::new(Semaphore::new(usize::from(settings.concurrency.max(1))));
    loop {
        let Some((conn, channel, mut consumer)) =
            open_with_backoff(&settings.queue, || open_consumer(&settings), &mut shutdown).await
        else {
            return;
        };
        tracing::info!(queue = %settings.queue, "consuming");
        let mut running = tokio::task::JoinSet::new();
        let stopping = loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break true,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break true,
                },
            };
            let next = tokio::select! {
                _ = &mut shutdown => break true,
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
                    redelivered: delivery.redelivered,
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
            let _ = channel
                .basic_cancel(
                    consumer.tag(),
                    lapin::options::BasicCancelOptions::default(),
                )
                .await;
            let drained = tokio::time::timeout(settings.grace, async {
                while running.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!("grace period over; unfinished messages go back to the queue");
            }
            let _ = conn.close(200, "shutting down".into()).await;
            return;
        }
        running.abort_all();
        let _ = conn.close(200, "reconnecting".into()).await;
    }
}

/// Acks, or moves the message to its delay queue or dead-letter queue
/// (confirmed) and then acks. If that move fails, the message is requeued:
/// never lost.
async fn settle(
    channel: &Channel,
    settings: &ConsumerSettings,
    delivery: &lapin::message::Delivery,
    incoming: &Incoming,
    outcome: Disposition,
) {
    let moved = match outcome {
        Disposition::Ack => Ok(()),
        Disposition::Retry(reason) if !incoming.last_attempt => {
            let delay = settings.retry.delay_after(incoming.attempt);
            tracing::info!(queue = %settings.queue, attempt = incoming.attempt, retry_in = ?delay, %reason, "retrying later");
            metrics::counter!("amqp_messages_retried_total", "queue" => settings.queue.clone())
                .increment(1);
            let target = delay_queue(&settings.queue, delay);
            match declare_delay_queue(channel, &target, &settings.queue, delay).await {
                Ok(()) => {
                    let headers = with_failure(&incoming.headers, incoming.attempt + 1, &reason);
                    publish_on(channel, "", &target, &incoming.body, headers, true).await
                }
                Err(err) => Err(err),
            }
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

fn with_failure(headers: &FieldTable, attempt: u32, reason: &str) -> FieldTable {
    let mut headers = headers.clone();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(attempt));
    let reason: String = reason.chars().take(1000).collect();
    headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
    headers
}

/// Declares the delay queue `name`: messages wait `delay` in it, then
/// return to `target`. RabbitMQ lets only a user who may read the queue
/// (and write to the default exchange) declare one.
pub async fn declare_delay_queue(
    channel: &Channel,
    name: &str,
    target: &str,
    delay: Duration,
) -> Result<()> {
    let mut args = FieldTable::default();
    let ttl = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
    args.insert("x-message-ttl".into(), AMQPValue::LongUInt(ttl));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(target.into()),
    );
    declare_durable(channel, name, args).await
}

/// How long a publish waits for the broker's confirm. A broker short of disk
/// or memory blocks publishers without closing their connection, and a dead
/// network path looks the same: without a bound an upload would hang.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// Publishes persistently on a channel in confirm mode and waits for the ack
/// (at most [`CONFIRM_TIMEOUT`]). Stamps the publish time (the `timestamp`
/// property in seconds and [`PUBLISHED_MS_HEADER`]) so consumers can measure
/// their queue lag.
async fn publish_on(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    mut headers: FieldTable,
    mandatory: bool,
) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    headers.insert(
        PUBLISHED_MS_HEADER.into(),
        AMQPValue::LongLongInt(i64::try_from(now.as_millis()).unwrap_or(i64::MAX)),
    );
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_timestamp(now.as_secs())
        .with_headers(headers);
    let publish = async {
        Ok::<_, Error>(
            channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    properties,
                )
                .await?
                .await?,
        )
    };
    let confirm = bounded("the publish", CONFIRM_TIMEOUT, publish).await?;
    match confirm {
        // A returned (unroutable) message is acked but went nowhere.
        Confirmation::Ack(None) => Ok(()),
        _ => Err(Error::NotConfirmed),
    }
}

/// Opens a broker session with `open`, retrying with backoff (200 ms,
/// doubling up to 10 s) until it works; `None` when `shutdown` comes first.
async fn open_with_backoff<T, F, Fut>(
    what: &str,
    open: F,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = tokio::select! {
            _ = &mut *shutdown => return None,
            session = open() => session,
        };
        match session {
            Ok(parts) => return Some(parts),
            Err(err) => {
                tracing::warn!(error = %err, what, retry_in = ?backoff, "cannot reach the broker; retrying");
                tokio::select! {
                    _ = &mut *shutdown => return None,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn open_consumer(
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

/// Settings for [`subscribe`].
#[derive(Debug, Clone)]
pub struct SubscriptionSettings {
    pub url: String,
    /// Connection name shown by the broker.
    pub name: String,
    /// The topic exchange to follow (declared if missing).
    pub exchange: String,
    /// Routing-key pattern, e.g. `job.#`.
    pub binding: String,
}

/// Follows a topic exchange through an exclusive, auto-delete, server-named
/// queue (one per subscriber, gone with its connection) until `shutdown`
/// resolves, handing every message body to `handler`. Messages are
/// auto-acked: a subscriber sees what happens while it is connected, which
/// suits live notifications whose truth lives elsewhere. When the broker
/// goes away, it subscribes again with backoff; `connected` tells whether a
/// subscription is in place right now.
pub async fn subscribe<H>(
    settings: SubscriptionSettings,
    mut handler: H,
    connected: tokio::sync::watch::Sender<bool>,
    shutdown: impl Future<Output = ()> + Send,
) where
    H: FnMut(Vec<u8>) + Send,
{
    tokio::pin!(shutdown);
    loop {
        let Some((conn, mut consumer)) = open_with_backoff(
            &settings.exchange,
            || open_subscription(&settings),
            &mut shutdown,
        )
        .await
        else {
            return;
        };
        tracing::info!(exchange = %settings.exchange, binding = %settings.binding, "subscribed");
        connected.send_replace(true);
        let stopping = loop {
            let next = tokio::select! {
                _ = &mut shutdown => break true,
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => handler(delivery.data),
                Some(Err(err)) => {
                    tracing::warn!(error = %err, exchange = %settings.exchange, "subscription failed; subscribing again");
                    break false;
                }
                None => {
                    tracing::warn!(exchange = %settings.exchange, "subscription cancelled by the broker; subscribing again");
                    break false;
                }
            }
        };
        connected.send_replace(false);
        let _ = conn.close(200, "unsubscribing".into()).await;
        if stopping {
            return;
        }
    }
}

async fn open_subscription(
    settings: &SubscriptionSettings,
) -> Result<(Connection, lapin::Consumer)> {
    let conn = connect(&settings.url, &settings.name).await?;
    let channel = conn.create_channel().await?;
    declare_topic_exchange(&channel, &settings.exchange).await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.name().clone(),
            settings.exchange.as_str().into(),
            settings.binding.as_str().into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            settings.name.as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((conn, consumer))
}

#[cfg(test)]
mod tests {
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
}

//! A publisher that waits for the broker's confirm of every message and
//! reconnects by itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Mutex;

use crate::error::{Error, Result};

use super::consumer::PUBLISHED_MS_HEADER;
use super::topology::{declare_queue, declare_topic_exchange};
use super::{OPEN_TIMEOUT, bounded, connect, with_heartbeat};

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
        // A nack (or a mandatory message returned) means the broker did
        // not take the message: it is published again, a few times. A
        // quorum queue declared by another connection at the same moment
        // answers its declare before it can take messages, and a queue
        // electing its leader (a broker restart) rejects for a moment.
        let mut again = 0;
        let published = loop {
            let channel = self.channel().await?;
            let published = publish_on(
                &channel,
                exchange,
                routing_key,
                body,
                headers.clone(),
                mandatory,
            )
            .await;
            if !matches!(published, Err(Error::NotConfirmed)) || again == NOT_TAKEN_RETRIES {
                break published;
            }
            again += 1;
            tracing::info!(
                routing_key,
                again,
                "the broker did not take the message; publishing it again"
            );
            tokio::time::sleep(Duration::from_millis(100 << again)).await;
        };
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

/// How long a publish waits for the broker's confirm. A broker short of disk
/// or memory blocks publishers without closing their connection, and a dead
/// network path looks the same: without a bound an upload would hang.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// How many times a message the broker did not take (nack, or returned as
/// unroutable) is published again, after 0.2, 0.4 and 0.8 s.
const NOT_TAKEN_RETRIES: u32 = 3;

/// Publishes persistently on a channel in confirm mode and waits for the ack
/// (at most [`CONFIRM_TIMEOUT`]). Stamps the publish time (the `timestamp`
/// property in seconds and [`PUBLISHED_MS_HEADER`]) so consumers can measure
/// their queue lag.
pub(super) async fn publish_on(
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

/// The header that carries a request's id from the HTTP request that
/// queued a job through every message about it (in logs as `request_id`).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Message headers carrying `request_id`; none when it is empty.
pub fn request_id_headers(request_id: &str) -> FieldTable {
    let mut headers = FieldTable::default();
    if !request_id.is_empty() {
        headers.insert(
            REQUEST_ID_HEADER.into(),
            AMQPValue::LongString(request_id.into()),
        );
    }
    headers
}

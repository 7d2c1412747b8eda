//! RabbitMQ plumbing: durable queue declaration, a publisher that waits for
//! broker confirms and reconnects by itself, and a consume loop with manual
//! acks, a prefetch and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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
    Ok(Connection::connect(url, props).await?)
}

/// Declares a durable quorum queue; every service declares the queues it
/// uses, so start-up order does not matter.
pub async fn declare_queue(channel: &Channel, name: &str) -> Result<()> {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
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
    channel: Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    /// Connects now so a wrong URL is reported at start-up.
    pub async fn connect(url: &str, name: &str, queues: &[&str]) -> Result<Self> {
        let publisher = Self {
            url: url.to_owned(),
            name: name.to_owned(),
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            channel: Mutex::new(None),
        };
        publisher.channel().await?;
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
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        for queue in &self.queues {
            declare_queue(&channel, queue).await?;
        }
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
        let channel = self.channel().await?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(headers);
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await?
            .await?;
        match confirm {
            // A returned (unroutable) message is acked but went nowhere.
            Confirmation::Ack(None) => Ok(()),
            _ => Err(Error::NotConfirmed),
        }
    }
}

/// What to do with a delivery once its handler is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Done (or permanently failed and recorded): remove it from the queue.
    Ack,
    /// A transient failure: put it back for another attempt.
    Requeue,
}

/// A received message handed to a handler.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub body: Vec<u8>,
    pub headers: FieldTable,
    pub redelivered: bool,
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
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = tokio::select! {
            _ = &mut shutdown => return,
            session = open_consumer(&settings) => session,
        };
        let (conn, channel, mut consumer) = match session {
            Ok(parts) => {
                backoff = Duration::from_millis(200);
                parts
            }
            Err(err) => {
                tracing::warn!(error = %err, queue = %settings.queue, retry_in = ?backoff, "cannot consume; retrying");
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
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
            running.spawn(async move {
                let incoming = Incoming {
                    body: delivery.data.clone(),
                    headers: delivery.properties.headers().clone().unwrap_or_default(),
                    redelivered: delivery.redelivered,
                };
                let outcome = handler(incoming).await;
                let settled = match outcome {
                    Disposition::Ack => delivery.ack(BasicAckOptions::default()).await,
                    Disposition::Requeue => {
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

async fn open_consumer(
    settings: &ConsumerSettings,
) -> Result<(Connection, Channel, lapin::Consumer)> {
    let conn = connect(&settings.url, &settings.name).await?;
    let channel = conn.create_channel().await?;
    declare_queue(&channel, &settings.queue).await?;
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

/// Deletes a queue (tests use per-test queues and clean up after themselves).
pub async fn delete_queue(url: &str, queue: &str) -> Result<()> {
    let conn = connect(url, "cleanup").await?;
    let channel = conn.create_channel().await?;
    channel
        .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

//! What the services declare on the broker: durable quorum queues, topic
//! exchanges, and the delay and dead-letter queues retries go through.

use std::time::Duration;

use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};

use crate::error::Result;

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

pub(super) async fn declare_durable(channel: &Channel, name: &str, args: FieldTable) -> Result<()> {
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

/// How many messages wait in `queue` (ready ones; not those delivered and
/// unacknowledged). An error when it does not exist, which also closes the
/// channel, as the broker does for a passive declare of a missing queue.
pub async fn message_count(channel: &Channel, queue: &str) -> Result<u32> {
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(declared.message_count())
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

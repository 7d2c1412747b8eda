//! Subscriptions to a topic exchange (the gateway's live events, failure
//! emails): an exclusive queue per subscriber, re-opened after a broker loss.

use futures::StreamExt;
use lapin::Connection;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use crate::error::Result;

use crate::shutdown::CancellationToken;

use super::topology::declare_topic_exchange;
use super::{connect, open_with_backoff};

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
    shutdown: CancellationToken,
) where
    H: FnMut(Vec<u8>) + Send,
{
    loop {
        let Some((conn, mut consumer)) = open_with_backoff(
            &settings.exchange,
            || open_subscription(&settings),
            &shutdown,
        )
        .await
        else {
            return;
        };
        tracing::info!(exchange = %settings.exchange, binding = %settings.binding, "subscribed");
        connected.send_replace(true);
        let stopping = loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => break true,
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
        super::close_quietly(&conn, "unsubscribing").await;
        if stopping {
            return;
        }
    }
}

pub(super) async fn open_subscription(
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

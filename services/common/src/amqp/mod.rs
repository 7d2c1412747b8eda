//! RabbitMQ plumbing, by responsibility: [`topology`] (queues and
//! exchanges), [`publisher`] (confirmed publishing), [`consumer`] (the
//! consume loop with retry and dead-lettering), [`replay`] (dead letters
//! back to work) and [`subscription`] (topic subscriptions); here, connecting with a heartbeat and bounded set-up.

mod consumer;
mod publisher;
mod replay;
mod subscription;
mod topology;

pub use consumer::*;
pub use publisher::*;
pub use replay::*;
pub use subscription::*;
pub use topology::*;

use std::future::Future;
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

use crate::error::{Error, Result};
use crate::shutdown::CancellationToken;

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

/// How long closing a connection may take: a broker that does not answer
/// the close (it is gone, or the link is) must not hold a service's
/// shutdown or reconnect; the socket goes with the connection anyway.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Closes `conn` politely, giving up after [`CLOSE_TIMEOUT`].
pub async fn close_quietly(conn: &Connection, reason: &str) {
    let closing = conn.close(200, reason.to_owned().into());
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        tracing::debug!(reason, "the broker did not answer the close in time");
    }
}

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

/// Opens a broker session with `open`, retrying with backoff (200 ms,
/// doubling up to 10 s) until it works; `None` when `shutdown` comes first.
async fn open_with_backoff<T, F, Fut>(
    what: &str,
    open: F,
    shutdown: &CancellationToken,
) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = tokio::select! {
            () = shutdown.cancelled() => return None,
            session = open() => session,
        };
        match session {
            Ok(parts) => return Some(parts),
            Err(err) => {
                tracing::warn!(error = %err, what, retry_in = ?backoff, "cannot reach the broker; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests;

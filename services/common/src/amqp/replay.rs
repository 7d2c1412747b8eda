//! Putting dead-lettered messages back in their queue, for an operator who
//! fixed what made them fail (a mail server that refused everything for an
//! hour, a bug). The consumer checks each one again as if it were new, so a
//! replayed message whose work is done or void is simply acked.

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};

use crate::error::Result;

use super::connect;
use super::consumer::{ATTEMPT_HEADER, REASON_HEADER, WAITS_HEADER};
use super::publisher::publish_on;
use super::topology::{dead_letter_queue, message_count};

/// Header counting how often a message was replayed from its dead-letter
/// queue.
pub const REPLAYS_HEADER: &str = "x-replays";

/// Moves every message waiting in `queue`'s dead-letter queue back to
/// `queue` with a fresh attempt count (confirmed before each is removed
/// from the dead-letter queue: none is lost, one may be doubled if the
/// connection breaks in between, which the consumers tolerate). Messages
/// dead-lettered while this runs wait for the next replay. Returns how many
/// were moved.
pub async fn replay_dead_letters(url: &str, name: &str, queue: &str) -> Result<u64> {
    let conn = connect(url, name).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let dlq = dead_letter_queue(queue);
    // Only what is there now: a message that fails again at once must not
    // keep this loop going.
    let waiting = message_count(&channel, &dlq).await?;
    let mut moved: u64 = 0;
    while moved < u64::from(waiting) {
        let Some(message) = channel
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let delivery = &message.delivery;
        let headers = replayed(delivery.properties.headers().as_ref());
        match publish_on(&channel, "", queue, &delivery.data, headers, true).await {
            Ok(()) => {
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Err(err) => {
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await?;
                return Err(err);
            }
        }
        moved += 1;
    }
    super::close_quietly(&conn, "replayed").await;
    Ok(moved)
}

/// The headers of a replayed message: its attempts and waits start over,
/// its last failure is kept for whoever reads the logs, and it counts the
/// replay.
fn replayed(headers: Option<&FieldTable>) -> FieldTable {
    let mut out = headers.cloned().unwrap_or_default();
    let replays = match out.inner().get(REPLAYS_HEADER) {
        Some(AMQPValue::LongUInt(n)) => *n,
        _ => 0,
    };
    let reason = super::header_text(Some(&out), REASON_HEADER);
    let mut fresh = FieldTable::default();
    for (key, value) in out.inner() {
        if ![ATTEMPT_HEADER, WAITS_HEADER, REASON_HEADER, REPLAYS_HEADER].contains(&key.as_str()) {
            fresh.insert(key.clone(), value.clone());
        }
    }
    out = fresh;
    out.insert(REPLAYS_HEADER.into(), AMQPValue::LongUInt(replays + 1));
    if !reason.is_empty() {
        out.insert(
            "x-replayed-after".into(),
            AMQPValue::LongString(reason.into()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_message_starts_its_attempts_over_and_counts_the_replay() {
        let mut headers = FieldTable::default();
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(8));
        headers.insert(WAITS_HEADER.into(), AMQPValue::LongUInt(3));
        headers.insert(
            REASON_HEADER.into(),
            AMQPValue::LongString("smtp down".into()),
        );
        headers.insert("x-request-id".into(), AMQPValue::LongString("abc".into()));

        let once = replayed(Some(&headers));
        let twice = replayed(Some(&once));

        assert_eq!(super::super::consumer::attempt_of(&once), 1);
        assert!(!once.inner().contains_key(WAITS_HEADER));
        assert!(once.inner().contains_key("x-request-id"));
        assert_eq!(
            super::super::header_text(Some(&once), "x-replayed-after"),
            "smtp down"
        );
        assert!(matches!(
            twice.inner().get(REPLAYS_HEADER),
            Some(AMQPValue::LongUInt(2))
        ));
    }
}

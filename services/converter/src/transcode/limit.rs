//! The hard time limit of one conversion, enforced from the blocking
//! conversion thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::TranscodeError;

/// `12`, `0.5`: seconds for a message, without a useless `.0`.
pub(super) fn seconds_text(seconds: f64) -> String {
    let rounded = (seconds * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        format!("{rounded:.1}")
    }
}

/// A hard limit on how long one conversion may take: `min` plus `factor`
/// times the length of the input. The length is the source's duration, or
/// the position the decoder has reached if that is further (a file whose
/// header lies about its length is judged by the audio it holds). Until the
/// duration is known (opening and probing the file) only `min` applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeLimit {
    /// Seconds of conversion allowed per second of input.
    pub factor: f64,
    /// Allowed whatever the input's length.
    pub min: Duration,
}

impl Default for TimeLimit {
    /// Twice realtime plus a minute: the CLI converts at 100x realtime or
    /// more, so only a wedged or pathological input ever gets near it.
    fn default() -> Self {
        TimeLimit {
            factor: 2.0,
            min: Duration::from_secs(60),
        }
    }
}

/// Enforces a [`TimeLimit`] from the blocking conversion thread: checked
/// before every packet read, and polled by FFmpeg's I/O layer through the
/// input's interrupt callback, so even a stalled open or read stops.
pub(super) struct Watchdog {
    started: Instant,
    limit: Option<TimeLimit>,
    /// Seconds of input the allowance covers, as `f64` bits (non-negative
    /// floats order like their bits, so `fetch_max` keeps the largest).
    media_s: AtomicU64,
}

impl Watchdog {
    pub(super) fn new(limit: Option<TimeLimit>) -> Arc<Self> {
        Arc::new(Watchdog {
            started: Instant::now(),
            limit,
            media_s: AtomicU64::new(0f64.to_bits()),
        })
    }

    /// The input is known to last at least `seconds`.
    pub(super) fn cover(&self, seconds: f64) {
        if seconds.is_finite() && seconds > 0.0 {
            self.media_s.fetch_max(seconds.to_bits(), Ordering::Relaxed);
        }
    }

    /// Seconds the conversion may take, as far as we know the input now.
    pub(super) fn allowance_s(&self) -> Option<f64> {
        let media_s = f64::from_bits(self.media_s.load(Ordering::Relaxed));
        self.limit
            .map(|limit| limit.min.as_secs_f64() + limit.factor * media_s)
    }

    pub(super) fn expired(&self) -> bool {
        self.allowance_s()
            .is_some_and(|allowed| self.started.elapsed().as_secs_f64() > allowed)
    }

    pub(super) fn timed_out(&self) -> TranscodeError {
        TranscodeError::TimedOut {
            limit_s: self.allowance_s().unwrap_or_default(),
        }
    }

    pub(super) fn check(&self) -> Result<(), TranscodeError> {
        if self.expired() {
            Err(self.timed_out())
        } else {
            Ok(())
        }
    }
}

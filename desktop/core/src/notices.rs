//! Desktop notifications: one per finished MP3, folded into one summary when
//! several finish within a few seconds, one per failure with its reason.
//! Sent over D-Bus with notify-rust; without a notification service they
//! are simply unavailable, never an error for the app.

use std::time::{Duration, Instant};

use serde::Serialize;

/// One notification to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    pub title: String,
    pub body: String,
}

/// Holds finished files back for `window` after the last one, so a burst
/// becomes one summary.
#[derive(Debug)]
pub struct Batcher {
    window: Duration,
    finished: Vec<String>,
    last: Option<Instant>,
}

/// The most file names a summary lists.
const LISTED: usize = 5;

impl Batcher {
    pub fn new(window: Duration) -> Batcher {
        Batcher {
            window,
            finished: Vec::new(),
            last: None,
        }
    }

    pub fn finished(&mut self, now: Instant, mp3_name: &str) {
        self.finished.push(mp3_name.to_owned());
        self.last = Some(now);
    }

    /// A failure is shown at once.
    pub fn failed(file: &str, reason: &str) -> Notice {
        Notice {
            title: format!("Could not convert {file}"),
            body: reason.to_owned(),
        }
    }

    /// The summary, once the burst is over.
    pub fn due(&mut self, now: Instant) -> Option<Notice> {
        let last = self.last?;
        if now.duration_since(last) < self.window {
            return None;
        }
        self.last = None;
        let names = std::mem::take(&mut self.finished);
        Some(match names.as_slice() {
            [] => return None,
            [one] => Notice {
                title: "MP3 ready".into(),
                body: one.clone(),
            },
            many => {
                let mut body = many
                    .iter()
                    .take(LISTED)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n");
                if many.len() > LISTED {
                    body.push_str(&format!("\nand {} more", many.len() - LISTED));
                }
                Notice {
                    title: format!("{} MP3s ready", many.len()),
                    body,
                }
            }
        })
    }
}

/// Shows `notice` on the desktop. Returns false when no notification
/// service answers (no D-Bus session, no daemon).
pub async fn show(notice: &Notice) -> bool {
    let notice = notice.clone();
    let shown = tokio::task::spawn_blocking(move || {
        notify_rust::Notification::new()
            .appname("MP3 Converter")
            .summary(&notice.title)
            .body(&notice.body)
            .icon("audio-x-generic")
            .show()
            .map(drop)
    })
    .await;
    match shown {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "desktop notifications unavailable");
            false
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_finished_file_is_one_notice_after_the_window() {
        let t = Instant::now();
        let mut batcher = Batcher::new(Duration::from_secs(2));
        batcher.finished(t, "a.mp3");
        assert_eq!(batcher.due(t + Duration::from_secs(1)), None);
        assert_eq!(
            batcher.due(t + Duration::from_secs(2)),
            Some(Notice {
                title: "MP3 ready".into(),
                body: "a.mp3".into()
            })
        );
        assert_eq!(batcher.due(t + Duration::from_secs(9)), None);
    }

    #[test]
    fn a_burst_becomes_one_summary() {
        let t = Instant::now();
        let mut batcher = Batcher::new(Duration::from_secs(2));
        for n in 0..7 {
            batcher.finished(t + Duration::from_millis(500 * n), &format!("{n}.mp3"));
        }
        assert_eq!(batcher.due(t + Duration::from_secs(4)), None);
        let notice = batcher.due(t + Duration::from_secs(5)).expect("summary");
        assert_eq!(notice.title, "7 MP3s ready");
        assert!(notice.body.starts_with("0.mp3\n1.mp3"));
        assert!(notice.body.ends_with("and 2 more"));
    }

    #[test]
    fn failures_carry_the_reason() {
        let notice = Batcher::failed("clip.mp4", "the file has no audio track");
        assert_eq!(notice.title, "Could not convert clip.mp4");
        assert_eq!(notice.body, "the file has no audio track");
    }
}

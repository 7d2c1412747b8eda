//! The app's state in one glance, for the tray: which icon it shows and the
//! counts its tooltip (and, on Linux, where tray icons have no tooltip, the
//! first line of its menu) gives.

use crate::store::{Item, Stage};

/// Which picture the tray icon shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrayState {
    Idle,
    Working,
    /// Signed out, or the newest file failed: the user has something to do.
    Attention,
}

/// What the tray says about the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub state: TrayState,
    pub in_progress: usize,
    pub done: usize,
    pub failed: usize,
    signed_in: bool,
    paused: bool,
}

impl Summary {
    /// `items` newest first, as the store lists them.
    pub fn of(items: &[Item], signed_in: bool, paused: bool) -> Summary {
        let count = |wanted: fn(Stage) -> bool| items.iter().filter(|i| wanted(i.stage)).count();
        let in_progress =
            count(|stage| !matches!(stage, Stage::Done | Stage::Failed | Stage::Duplicate));
        let newest_failed = items.first().is_some_and(|i| i.stage == Stage::Failed);
        let state = if !signed_in || newest_failed {
            TrayState::Attention
        } else if in_progress > 0 {
            TrayState::Working
        } else {
            TrayState::Idle
        };
        Summary {
            state,
            in_progress,
            done: count(|stage| stage == Stage::Done),
            failed: count(|stage| stage == Stage::Failed),
            signed_in,
            paused,
        }
    }

    /// One line, e.g. "Working: 2 in progress, 5 done, 1 failed".
    pub fn line(&self) -> String {
        let headline = if !self.signed_in {
            "Signed out"
        } else if self.state == TrayState::Attention {
            "Needs attention"
        } else if self.paused {
            "Paused"
        } else if self.state == TrayState::Working {
            "Working"
        } else {
            "Idle"
        };
        let mut counts = Vec::new();
        if self.in_progress > 0 {
            counts.push(format!("{} in progress", self.in_progress));
        }
        if self.done > 0 {
            counts.push(format!("{} done", self.done));
        }
        if self.failed > 0 {
            counts.push(format!("{} failed", self.failed));
        }
        if counts.is_empty() {
            format!("{headline}: no files yet")
        } else {
            format!("{headline}: {}", counts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn item(id: i64, stage: Stage) -> Item {
        Item {
            id,
            sha256: format!("{id:064x}"),
            path: PathBuf::from(format!("/videos/{id}.mp4")),
            name: format!("{id}.mp4"),
            size: 1,
            upload_bytes: None,
            stage,
            progress: 0.0,
            job_id: None,
            mp3_path: None,
            error: None,
            note: None,
            retryable: true,
            detail: None,
            updated_at: id,
        }
    }

    #[test]
    fn nothing_yet_is_idle() {
        let summary = Summary::of(&[], true, false);
        assert_eq!(summary.state, TrayState::Idle);
        assert_eq!(summary.line(), "Idle: no files yet");
    }

    #[test]
    fn every_unfinished_stage_counts_as_in_progress() {
        let items = [
            item(7, Stage::Downloading),
            item(6, Stage::Converting),
            item(5, Stage::Queued),
            item(4, Stage::Uploading),
            item(3, Stage::Pending),
            item(2, Stage::Failed),
            item(1, Stage::Done),
        ];
        let summary = Summary::of(&items, true, false);
        assert_eq!(summary.state, TrayState::Working);
        assert_eq!(
            (summary.in_progress, summary.done, summary.failed),
            (5, 1, 1)
        );
        assert_eq!(summary.line(), "Working: 5 in progress, 1 done, 1 failed");
    }

    #[test]
    fn the_newest_file_failing_needs_attention_until_another_follows() {
        let failed_last = [item(2, Stage::Failed), item(1, Stage::Done)];
        let summary = Summary::of(&failed_last, true, false);
        assert_eq!(summary.state, TrayState::Attention);
        assert_eq!(summary.line(), "Needs attention: 1 done, 1 failed");

        let then_done = [item(3, Stage::Done), item(2, Stage::Failed)];
        assert_eq!(Summary::of(&then_done, true, false).state, TrayState::Idle);
    }

    #[test]
    fn signed_out_needs_attention_and_paused_says_so() {
        let items = [item(1, Stage::Pending)];
        let signed_out = Summary::of(&items, false, false);
        assert_eq!(signed_out.state, TrayState::Attention);
        assert_eq!(signed_out.line(), "Signed out: 1 in progress");

        let paused = Summary::of(&[item(1, Stage::Done)], true, true);
        assert_eq!(paused.state, TrayState::Idle);
        assert_eq!(paused.line(), "Paused: 1 done");
    }
}

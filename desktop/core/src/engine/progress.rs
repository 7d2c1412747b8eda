//! A transfer's progress, shown as it goes: the transfer records how far it
//! is from its own callback (any thread, no locks) and a small task sends
//! the item with that progress to the window every [`PROGRESS_EVERY`], only
//! when it changed, so a fast transfer does not flood the event channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::task::JoinHandle;

use super::{EngineEvent, PROGRESS_EVERY, Shared};
use crate::store::{Item, Stage};

/// Progress is kept in thousandths: fine enough for a bar, and an atomic.
const SCALE: u64 = 1000;

/// Reports one transfer's progress until dropped.
pub(super) struct ProgressReporter {
    permille: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl ProgressReporter {
    /// Starts reporting `item` in `stage` (uploading or downloading).
    pub(super) fn start(shared: &Arc<Shared>, item: &Item, stage: Stage) -> ProgressReporter {
        let permille = Arc::new(AtomicU64::new(0));
        let (shared, item, seen) = (shared.clone(), item.clone(), permille.clone());
        let task = tokio::spawn(async move {
            let mut last = u64::MAX;
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let now = seen.load(Ordering::Relaxed);
                if now == last {
                    continue;
                }
                last = now;
                let mut update = item.clone();
                update.stage = stage;
                update.progress = now as f64 / SCALE as f64;
                let _ = shared.events.send(EngineEvent::Item { item: update });
            }
        });
        ProgressReporter { permille, task }
    }

    /// A callback for the transfer: `(done, total)` in bytes. An unknown
    /// (zero) total leaves the progress where it was.
    pub(super) fn recorder(&self) -> impl Fn(u64, u64) + Send + Sync + 'static {
        let permille = self.permille.clone();
        move |done, total| {
            if let Some(fraction) = done.saturating_mul(SCALE).checked_div(total) {
                permille.store(fraction.min(SCALE), Ordering::Relaxed);
            }
        }
    }
}

impl Drop for ProgressReporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

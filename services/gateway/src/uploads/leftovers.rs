//! What an upload cut off half-way leaves behind is removed, and uploads in
//! flight are counted, however they end.

use mongodb::bson::oid::ObjectId;

use crate::state::AppState;

/// Removes a video whose upload was dropped half-way (the client went away,
/// or the shutdown grace ran out), unless disarmed first. The removal runs
/// on the gateway's background tracker, which shutdown waits for.
pub(super) struct Leftovers {
    state: Option<AppState>,
    fid: ObjectId,
    /// Given back once the clean-up is done (or handed over by `disarm`).
    lease: Option<crate::leases::Lease>,
}

impl Leftovers {
    pub(super) fn arm(state: &AppState, fid: ObjectId, lease: crate::leases::Lease) -> Self {
        Leftovers {
            state: Some(state.clone()),
            fid,
            lease: Some(lease),
        }
    }

    /// The upload ended on its own terms: it cleaned up or hands over (with
    /// the lease).
    pub(super) fn disarm(mut self) -> Option<crate::leases::Lease> {
        self.state = None;
        self.lease.take()
    }
}

/// A chunk write cut off by the drop may still reach the server after the
/// first sweep: the second one catches it.
pub(super) const SECOND_SWEEP: std::time::Duration = std::time::Duration::from_millis(500);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        // No runtime means the process is going down; nothing can run.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (fid, lease) = (self.fid, self.lease.take());
        state.background.clone().spawn(async move {
            let bucket = state.videos_bucket();
            let first = common::gridfs::delete(&bucket, fid).await;
            tokio::time::sleep(SECOND_SWEEP).await;
            let second = common::gridfs::delete(&bucket, fid).await;
            match first.and(second) {
                Ok(()) => {
                    tracing::info!(video_fid = %fid, "removed the video of a dropped upload");
                    drop(lease);
                }
                Err(err) => {
                    tracing::error!(video_fid = %fid, error = %err, "could not remove the video of a dropped upload; its lease leaves it to a sweeper");
                    if let Some(lease) = lease {
                        lease.leave_to_sweeper();
                    }
                }
            }
        });
    }
}

/// Counts an upload in `gateway_uploads_in_flight` while it is alive,
/// however it ends (also when the client goes away and the request is dropped).
pub(super) struct InFlight;

impl InFlight {
    pub(super) fn start() -> Self {
        metrics::gauge!("gateway_uploads_in_flight").increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("gateway_uploads_in_flight").decrement(1.0);
    }
}

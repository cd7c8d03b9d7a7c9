//! Work the host runs beside its answers, which a stop waits for before
//! Postgres goes: client connections (and the requests on them), a guest's
//! run after its answer (work a Worker would hand to `waitUntil`), the cron
//! scheduler and its ticks.
//!
//! A stop first says so ([`Tasks::stopping`]: connections finish their
//! request in flight and close, the scheduler claims no more ticks), then
//! waits for the work to end, for at most the grace period; what is left
//! then is cut (its future dropped: a connection's socket closed, a guest's
//! store with it) so that nothing runs against a Postgres being stopped.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stopping: CancellationToken,
    cut: CancellationToken,
}

impl Tasks {
    /// Runs `work` on the runtime; a stop waits for it, and cuts it once
    /// the grace period is over.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let cut = self.cut.clone();
        self.tracker.spawn(async move {
            cut.run_until_cancelled(work).await;
        });
    }

    /// Resolves once the host begins to stop.
    pub fn stopping(&self) -> WaitForCancellationFutureOwned {
        self.stopping.clone().cancelled_owned()
    }

    /// Whether the host has begun to stop.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Says the host is stopping and waits for the work to end, at most
    /// `grace`; then cuts what is left and waits for that. Whether the
    /// work ended by itself.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.stopping.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            return true;
        }
        self.cut.cancel();
        self.tracker.wait().await;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_waits_for_work_then_cuts_what_outlives_the_grace_period() {
        let tasks = Tasks::default();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = done_tx.send(());
        });
        let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
        let stopping = tasks.stopping();
        tasks.spawn(async move {
            // Ends only when cut: its sender is dropped with it.
            std::future::pending::<()>().await;
            drop(held_tx);
        });
        assert!(!tasks.stop(Duration::from_millis(300)).await);
        assert!(done_rx.await.is_ok(), "the short work ran to its end");
        assert!(held_rx.await.is_err(), "the endless work was cut");
        stopping.await;

        let quick = Tasks::default();
        quick.spawn(async {});
        assert!(quick.stop(Duration::from_secs(5)).await);
    }
}

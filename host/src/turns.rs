//! Blocking work run in turns: at most so many at once, the rest waiting.
//!
//! Some of the host's work is a core's for tens of milliseconds or more,
//! on tokio's blocking pool (512 threads): an argon2 hash (and its 19 MiB),
//! a component's compile (seconds, and hundreds of MiB). Unbounded, a burst
//! of signups or of deploys ran hundreds at once, gigabytes, with the rest
//! of the host's blocking work (file I/O, name lookups) queued behind them.
//! Each kind has its turns, as many as the machine has cores; a piece of
//! work keeps its turn until it ends, even when whoever asked has gone.

use std::sync::Arc;

/// Turns for one kind of blocking work.
#[derive(Clone)]
pub struct Turns(Arc<tokio::sync::Semaphore>);

impl Turns {
    pub fn new(at_once: usize) -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(at_once.max(1))))
    }

    /// As many turns as the machine has cores.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
    }

    /// `work` on the blocking pool, in its turn.
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> anyhow::Result<R> {
        let turn = self.0.clone().acquire_owned().await?;
        Ok(tokio::task::spawn_blocking(move || {
            let _turn = turn;
            work()
        })
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_runs_in_turns_even_when_its_callers_leave() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let turns = Turns::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let work = || {
            let (running, most, done) = (running.clone(), most.clone(), done.clone());
            move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(30));
                running.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            }
        };
        // Two callers give up once their work has started: their turns
        // are still taken until it ends.
        for _ in 0..2 {
            let started = turns.run(work());
            let _ = tokio::time::timeout(std::time::Duration::from_millis(5), started).await;
        }
        let all: Vec<_> = (0..6)
            .map(|_| {
                tokio::spawn({
                    let turns = turns.clone();
                    let work = work();
                    async move { turns.run(work).await.unwrap() }
                })
            })
            .collect();
        for one in all {
            one.await.unwrap();
        }
        assert_eq!(done.load(Ordering::SeqCst), 8);
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }
}

//! Cron triggers: the host calls a function on its schedule.
//!
//! Every half second each host claims the triggers that are due
//! (`FOR UPDATE SKIP LOCKED`) and moves their `next_run` to the schedule's
//! next time after now, by the database's clock as the claim is, in the
//! same transaction, so a tick runs once however many hosts share the
//! database, and ticks missed while no host ran are skipped, not run late
//! one after another. The function gets
//! `POST /fn/<name><path>` with `x-zatabase-trigger: cron` and
//! `x-zatabase-schedule`, anonymously; its status is kept as `last_status`.
//!
//! A host runs at most `MAX_RUNNING` ticks at once, and a trigger's tick
//! only once its last one on this host has ended: each tick holds an
//! instance of the host's for as long as its function takes, and no rate
//! limit counts ticks. A host claims no more than it has room for, and no
//! trigger whose tick it still runs: what it leaves stays due, for another
//! host or for its own next claim. A claim that fills its batch is
//! followed by another at once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use sqlx::Row;

use super::Lookup;
use super::cron::Schedule;
use crate::api::functions::{SCHEDULE_HEADER, TRIGGER_HEADER};
use crate::server::{AppState, RequestId};

const EVERY: Duration = Duration::from_millis(500);
const BATCH: usize = 32;
const MAX_RUNNING: usize = 64;

/// The triggers whose tick is running on this host.
#[derive(Clone, Default)]
struct Running(Arc<Mutex<HashSet<String>>>);

/// A trigger's tick running, until dropped.
struct Ticking {
    running: Running,
    trigger: String,
}

impl Running {
    /// How many more ticks may start, and the triggers whose tick runs.
    fn room(&self) -> (usize, Vec<String>) {
        let running = self.0.lock().expect("running triggers poisoned");
        (
            MAX_RUNNING.saturating_sub(running.len()),
            running.iter().cloned().collect(),
        )
    }

    fn begin(&self, trigger: &str) -> Option<Ticking> {
        let mut running = self.0.lock().expect("running triggers poisoned");
        if running.len() >= MAX_RUNNING || !running.insert(trigger.to_owned()) {
            return None;
        }
        Some(Ticking {
            running: self.clone(),
            trigger: trigger.to_owned(),
        })
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        self.running
            .0
            .lock()
            .expect("running triggers poisoned")
            .remove(&self.trigger);
    }
}

/// A claimed tick.
struct Due {
    trigger: String,
    schedule: String,
    path: String,
    function: Lookup,
}

/// Claims and runs due triggers until the host begins to stop.
pub async fn run(state: AppState) {
    let running = Running::default();
    let mut stopping = std::pin::pin!(state.tasks.stopping());
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            // A tick claimed now could be cut before it runs, and lost.
            () = &mut stopping => return,
        }
        loop {
            let (room, busy) = running.room();
            let limit = room.min(BATCH);
            if limit == 0 {
                break;
            }
            let due = match claim(&state, limit, &busy).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "claiming due function triggers");
                    break;
                }
            };
            let full = due.len() == limit;
            for due in due {
                // Claimed within the room left and past the triggers that
                // run: never refused.
                let Some(ticking) = running.begin(&due.trigger) else {
                    tracing::warn!(trigger = due.trigger, "a claimed tick found no room");
                    continue;
                };
                state.tasks.spawn({
                    let state = state.clone();
                    async move {
                        fire(state, due).await;
                        drop(ticking);
                    }
                });
            }
            if !full {
                break;
            }
        }
    }
}

/// Claims up to `limit` due triggers, none of `busy`.
async fn claim(state: &AppState, limit: usize, busy: &[String]) -> Result<Vec<Due>, sqlx::Error> {
    let mut tx = state.db.platform_pool().begin().await?;
    let rows = sqlx::query(
        "SELECT t.id::text AS id, t.schedule, t.path, f.id::text AS function_id,
           f.project_id::text AS project_id, f.environment,
           floor(extract(epoch FROM now()))::int8 AS now
         FROM zatabase.function_triggers t JOIN zatabase.functions f ON f.id = t.function_id
         WHERE t.next_run <= now() AND NOT (t.id = ANY($2::uuid[]))
         ORDER BY t.next_run LIMIT $1
         FOR UPDATE OF t SKIP LOCKED",
    )
    .bind(i64::try_from(limit).unwrap_or(BATCH as i64))
    .bind(busy)
    .fetch_all(&mut *tx)
    .await?;
    let mut due = Vec::with_capacity(rows.len());
    for row in rows {
        let trigger: String = row.try_get("id")?;
        let schedule: String = row.try_get("schedule")?;
        // The next time after the database's clock, the one that said the
        // tick is due: after this host's, a host behind it would leave
        // `next_run` where it is (the tick claimed again), one ahead of it
        // would skip ticks. A schedule that no longer parses or never fires
        // again is parked.
        let now: i64 = row.try_get("now")?;
        let next = schedule
            .parse::<Schedule>()
            .ok()
            .and_then(|s| s.next_after(now));
        sqlx::query(
            "UPDATE zatabase.function_triggers SET last_run = now(),
               next_run = coalesce(to_timestamp($2::float8), 'infinity')
             WHERE id = $1::uuid",
        )
        .bind(&trigger)
        .bind(next.map(|n| n as f64))
        .execute(&mut *tx)
        .await?;
        due.push(Due {
            trigger,
            schedule,
            path: row.try_get("path")?,
            function: Lookup::Id {
                project_id: row.try_get("project_id")?,
                environment: row.try_get("environment")?,
                id: row.try_get("function_id")?,
            },
        });
    }
    tx.commit().await?;
    Ok(due)
}

async fn fire(state: AppState, due: Due) {
    let function = match state.functions.resolve(&due.function).await {
        Ok(Some(function)) => function,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                trigger = due.trigger,
                "loading a triggered function"
            );
            // Not run: said so, not the last run's status left standing.
            record(&state, &due.trigger, 503).await;
            return;
        }
    };
    let request_id: Arc<str> = Arc::from(format!(
        "{}{}",
        crate::server::CRON_REQUEST_ID_PREFIX,
        uuid::Uuid::new_v4()
    ));
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("/fn/{}{}", function.name, due.path))
        .header(http::header::HOST, "localhost")
        .header(TRIGGER_HEADER, "cron")
        .header(SCHEDULE_HEADER, due.schedule.as_str())
        .body(Body::empty());
    let status = match request {
        Ok(mut request) => {
            request.extensions_mut().insert(RequestId(request_id));
            let path_info = due.path.split('?').next().unwrap_or("/");
            let response =
                crate::api::functions::run(&state, None, &function, path_info, request).await;
            let mut status = response.status().as_u16();
            // Let a streamed body finish, so the function runs to its end;
            // no one reads it, so each piece is dropped as it comes. One
            // that fails after its head (a trap, the timeout) failed the
            // tick, as the function's metrics count it.
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    status = 500;
                    break;
                }
            }
            status
        }
        // Stored before the API checked paths as it does now: recorded as
        // the client error it is, every tick, rather than run.
        Err(error) => {
            tracing::warn!(%error, trigger = due.trigger, "a trigger's request is not valid HTTP");
            400
        }
    };
    record(&state, &due.trigger, status).await;
}

/// Keeps `status` as the trigger's `last_status`.
async fn record(state: &AppState, trigger: &str, status: u16) {
    let recorded =
        sqlx::query("UPDATE zatabase.function_triggers SET last_status = $2 WHERE id = $1::uuid")
            .bind(trigger)
            .bind(i16::try_from(status).unwrap_or(i16::MAX))
            .execute(state.db.platform_pool())
            .await;
    if let Err(error) = recorded {
        tracing::warn!(%error, "recording a trigger's status");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_ticks_once_at_a_time_and_a_host_a_bounded_number() {
        let running = Running::default();
        let first = running.begin("a").unwrap();
        assert!(running.begin("a").is_none(), "its last tick still runs");
        drop(first);
        let all: Vec<_> = (0..MAX_RUNNING)
            .map(|i| running.begin(&i.to_string()).unwrap())
            .collect();
        assert!(running.begin("b").is_none(), "the host runs enough");
        assert_eq!(running.room().0, 0, "no room to claim in");
        drop(all);
        let ticking = running.begin("b");
        assert!(ticking.is_some());
        let (room, busy) = running.room();
        assert_eq!((room, busy), (MAX_RUNNING - 1, vec!["b".to_owned()]));
    }
}

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
//! A host runs at most `MAX_RUNNING` ticks at once, at most
//! `MAX_RUNNING_PER_PROJECT` of them one project's, and a trigger's tick
//! only once its last one on this host has ended: each tick holds an
//! instance of the host's for as long as its function takes, and no rate
//! limit counts ticks, so one project's every-second schedules on slow
//! functions would otherwise keep every other project's ticks waiting. A
//! host claims no more than it has room for, and no trigger whose tick it
//! still runs: what it leaves stays due, for another host or for its own
//! next claim. A claim that fills its batch is followed by another at once.

use std::collections::HashMap;
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
const MAX_RUNNING_PER_PROJECT: usize = 16;

/// The triggers whose tick is running on this host, each with its project.
#[derive(Clone, Default)]
struct Running(Arc<Mutex<HashMap<String, String>>>);

/// A trigger's tick running, until dropped.
struct Ticking {
    running: Running,
    trigger: String,
}

/// What a host may claim now.
struct Room {
    /// How many more ticks may start.
    left: usize,
    /// The triggers whose tick runs.
    busy: Vec<String>,
    /// The projects with ticks running, and how many each.
    projects: Vec<String>,
    counts: Vec<i64>,
}

impl Running {
    fn room(&self) -> Room {
        let running = self.0.lock().expect("running triggers poisoned");
        let mut per_project: HashMap<&str, i64> = HashMap::new();
        for project in running.values() {
            *per_project.entry(project).or_default() += 1;
        }
        let (projects, counts) = per_project
            .into_iter()
            .map(|(project, n)| (project.to_owned(), n))
            .unzip();
        Room {
            left: MAX_RUNNING.saturating_sub(running.len()),
            busy: running.keys().cloned().collect(),
            projects,
            counts,
        }
    }

    fn begin(&self, trigger: &str, project: &str) -> Option<Ticking> {
        let mut running = self.0.lock().expect("running triggers poisoned");
        let projects = running.values().filter(|p| *p == project).count();
        if running.len() >= MAX_RUNNING
            || projects >= MAX_RUNNING_PER_PROJECT
            || running.contains_key(trigger)
        {
            return None;
        }
        running.insert(trigger.to_owned(), project.to_owned());
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
    project: String,
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
        // A host asked to stop while claiming claims no more.
        while !state.tasks.is_stopping() {
            let room = running.room();
            let limit = room.left.min(BATCH);
            if limit == 0 {
                break;
            }
            let due = match claim(&state, limit, &room).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "claiming due function triggers");
                    break;
                }
            };
            let full = due.len() == limit;
            for due in due {
                // Claimed within the room left, each project's too, and past
                // the triggers that run: never refused.
                let Some(ticking) = running.begin(&due.trigger, &due.project) else {
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

/// Claims up to `limit` due triggers, none of the busy ones, and of each
/// project no more than its room.
async fn claim(state: &AppState, limit: usize, room: &Room) -> Result<Vec<Due>, sqlx::Error> {
    let mut tx = state.db.platform_pool().begin().await?;
    // Each due trigger ranked within its project, oldest first, beside the
    // project's room; the rows within their project's room locked, oldest
    // first. A row another host holds is skipped, and its project's next
    // one is not taken in its place: the host takes it at its next claim.
    let rows = sqlx::query(
        "WITH running (project_id, n) AS (
           SELECT * FROM unnest($3::uuid[], $4::int8[])
         ), due AS (
           SELECT t.id, row_number() OVER (PARTITION BY f.project_id ORDER BY t.next_run, t.id) AS nth,
             $5::int8 - coalesce(r.n, 0) AS room
           FROM zatabase.function_triggers t JOIN zatabase.functions f ON f.id = t.function_id
             LEFT JOIN running r ON r.project_id = f.project_id
           WHERE t.next_run <= now() AND NOT (t.id = ANY($2::uuid[]))
         )
         SELECT t.id::text AS id, t.schedule, t.path, f.id::text AS function_id,
           f.project_id::text AS project_id, f.environment,
           floor(extract(epoch FROM now()))::int8 AS now
         FROM zatabase.function_triggers t JOIN zatabase.functions f ON f.id = t.function_id
           JOIN due d ON d.id = t.id
         WHERE d.nth <= d.room AND t.next_run <= now()
         ORDER BY t.next_run LIMIT $1
         FOR UPDATE OF t SKIP LOCKED",
    )
    .bind(i64::try_from(limit).unwrap_or(BATCH as i64))
    .bind(&room.busy)
    .bind(&room.projects)
    .bind(&room.counts)
    .bind(MAX_RUNNING_PER_PROJECT as i64)
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
        let project: String = row.try_get("project_id")?;
        due.push(Due {
            trigger,
            project: project.clone(),
            schedule,
            path: row.try_get("path")?,
            function: Lookup::Id {
                project_id: project,
                environment: row.try_get("environment")?,
                id: row.try_get("function_id")?,
            },
        });
    }
    tx.commit().await?;
    Ok(due)
}

async fn fire(state: AppState, due: Due) {
    // A trigger deleted since its claim (the delete waited for the claim's
    // lock, then answered) is not run once more.
    let exists = sqlx::query("SELECT 1 FROM zatabase.function_triggers WHERE id = $1::uuid")
        .bind(&due.trigger)
        .fetch_optional(state.db.platform_pool())
        .await;
    match exists {
        Ok(Some(_)) => {}
        Ok(None) => return,
        // Run: the claim found it a moment ago.
        Err(error) => tracing::warn!(%error, trigger = due.trigger, "checking a claimed trigger"),
    }
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
        let first = running.begin("a", "p").unwrap();
        assert!(
            running.begin("a", "p").is_none(),
            "its last tick still runs"
        );
        drop(first);
        let all: Vec<_> = (0..MAX_RUNNING)
            .map(|i| {
                let project = (i % (MAX_RUNNING / MAX_RUNNING_PER_PROJECT)).to_string();
                running.begin(&i.to_string(), &project).unwrap()
            })
            .collect();
        assert!(running.begin("b", "q").is_none(), "the host runs enough");
        assert_eq!(running.room().left, 0, "no room to claim in");
        drop(all);
        let ticking = running.begin("b", "q");
        assert!(ticking.is_some());
        let room = running.room();
        assert_eq!(room.left, MAX_RUNNING - 1);
        assert_eq!(room.busy, vec!["b".to_owned()]);
        assert_eq!(
            (room.projects, room.counts),
            (vec!["q".to_owned()], vec![1])
        );
    }

    #[test]
    fn one_project_takes_only_its_share_of_the_ticks() {
        let running = Running::default();
        let theirs: Vec<_> = (0..MAX_RUNNING_PER_PROJECT)
            .map(|i| running.begin(&format!("a{i}"), "busy").unwrap())
            .collect();
        assert!(running.begin("one more", "busy").is_none());
        let others = running.begin("b", "quiet");
        assert!(others.is_some(), "another project's tick still runs");
        assert_eq!(
            running.room().left,
            MAX_RUNNING - MAX_RUNNING_PER_PROJECT - 1
        );
        drop(theirs);
        assert!(running.begin("one more", "busy").is_some());
    }
}

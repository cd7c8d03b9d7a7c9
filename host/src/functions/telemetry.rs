//! What users' functions did, for `/v1/functions/:id/logs` and `/metrics`:
//! each invocation (status, duration, cold or not) and each line a
//! function logged (stdout, stderr, `zatabase:platform/log`).
//!
//! Requests only push onto an in-memory batch; a background task writes
//! the batch every quarter second in one statement per table, so a function
//! call never waits on a write. Invocations are stored one row per function
//! per batch, as arrays (migration 0010): a row per call cost Postgres more
//! than the call itself, in bursts that took a core from the requests. The
//! writer has a connection of its own, whose server process runs at the
//! lowest CPU priority on the embedded Postgres ([`Db::background_connection`]):
//! the writes (Postgres compresses the arrays) wait for idle CPU rather
//! than delay requests. A host keeps at most `MAX_PENDING_BYTES` of
//! unwritten lines (Postgres away, a function logging without pause), each
//! function at most `MAX_PENDING_BYTES_PER_FUNCTION` of them (one flooding
//! function does not crowd out the others' lines), and drops the rest,
//! counting them in its log. Rows older than seven days are pruned, and a
//! function keeps its newest `KEPT_LINES_PER_FUNCTION` lines.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sqlx::PgConnection;

use crate::caps::zatabase::platform::log::Level;
use crate::db::Db;

const FLUSH_EVERY: Duration = Duration::from_millis(250);
const PRUNE_EVERY: Duration = Duration::from_secs(600);
const MAX_PENDING_BYTES: usize = 8 << 20;
const MAX_PENDING_BYTES_PER_FUNCTION: usize = 1 << 20;
const KEPT_LINES_PER_FUNCTION: i64 = 100_000;
const MAX_PENDING_INVOCATIONS: usize = 100_000;

#[derive(Default)]
struct Pending {
    /// Each function's calls since the last write, kept as the columns
    /// they are written as, so writing does no regrouping.
    invocations: HashMap<String, Calls>,
    invocation_count: usize,
    logs: Vec<Line>,
    log_bytes: usize,
    /// Each function's share of `log_bytes`.
    function_log_bytes: HashMap<String, usize>,
    dropped: u64,
}

/// One function's calls in a batch, in the order they were answered.
struct Calls {
    /// When the first was answered.
    at: SystemTime,
    statuses: Vec<i16>,
    durations_us: Vec<i64>,
    cold: Vec<bool>,
}

struct Line {
    function_id: String,
    request_id: String,
    level: &'static str,
    message: String,
    at: SystemTime,
}

#[derive(Default)]
pub struct Telemetry {
    pending: Mutex<Pending>,
}

impl Telemetry {
    /// A line the function `function_id` logged while serving `request_id`.
    pub fn log(&self, function_id: &str, request_id: &str, level: Level, message: &str) {
        // What the line holds in memory, not only its text: empty lines
        // logged without pause must reach the bound too.
        let size =
            std::mem::size_of::<Line>() + function_id.len() + request_id.len() + message.len();
        let mut pending = self.pending.lock().expect("telemetry poisoned");
        let share = pending
            .function_log_bytes
            .get(function_id)
            .copied()
            .unwrap_or(0);
        if pending.log_bytes + size > MAX_PENDING_BYTES
            || share + size > MAX_PENDING_BYTES_PER_FUNCTION
        {
            pending.dropped += 1;
            return;
        }
        pending.log_bytes += size;
        match pending.function_log_bytes.get_mut(function_id) {
            Some(share) => *share += size,
            None => {
                pending
                    .function_log_bytes
                    .insert(function_id.to_owned(), size);
            }
        }
        pending.logs.push(Line {
            function_id: function_id.to_owned(),
            request_id: request_id.to_owned(),
            level: match level {
                Level::Trace => "trace",
                Level::Debug => "debug",
                Level::Info => "info",
                Level::Warn => "warn",
                Level::Error => "error",
            },
            message: message.to_owned(),
            at: SystemTime::now(),
        });
    }

    /// The lines pending, as (request id, message): for tests.
    #[cfg(test)]
    pub fn pending_lines(&self) -> Vec<(String, String)> {
        let pending = self.pending.lock().expect("telemetry poisoned");
        pending
            .logs
            .iter()
            .map(|l| (l.request_id.clone(), l.message.clone()))
            .collect()
    }

    /// One call of the function `function_id`, answered with `status`.
    pub fn invocation(&self, function_id: &str, status: u16, duration: Duration, cold: bool) {
        let mut pending = self.pending.lock().expect("telemetry poisoned");
        if pending.invocation_count >= MAX_PENDING_INVOCATIONS {
            pending.dropped += 1;
            return;
        }
        pending.invocation_count += 1;
        let calls = match pending.invocations.get_mut(function_id) {
            Some(calls) => calls,
            None => pending
                .invocations
                .entry(function_id.to_owned())
                .or_insert_with(|| Calls {
                    at: SystemTime::now(),
                    statuses: Vec::new(),
                    durations_us: Vec::new(),
                    cold: Vec::new(),
                }),
        };
        calls
            .statuses
            .push(i16::try_from(status).unwrap_or(i16::MAX));
        calls
            .durations_us
            .push(i64::try_from(duration.as_micros()).unwrap_or(i64::MAX));
        calls.cold.push(cold);
    }

    /// Writes what is pending, on a [`Db::background_connection`]; until
    /// the process ends.
    pub async fn run(&self, db: Arc<Db>) {
        let mut last_prune = std::time::Instant::now();
        let mut connection: Option<PgConnection> = None;
        // Functions that logged since the last prune: those whose lines
        // may be past their count.
        let mut logged: std::collections::HashSet<String> = std::collections::HashSet::new();
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            let conn = match &mut connection {
                Some(conn) => conn,
                None => match db.background_connection().await {
                    Ok(conn) => connection.insert(conn),
                    Err(error) => {
                        // What is pending waits (up to its bounds) for the next try.
                        tracing::warn!(%error, "connecting the telemetry writer");
                        continue;
                    }
                },
            };
            let (mut written, functions) = self.flush_logged(conn).await;
            logged.extend(functions);
            if written && last_prune.elapsed() > PRUNE_EVERY {
                last_prune = std::time::Instant::now();
                for table in ["function_invocation_batches", "function_logs"] {
                    let prune = format!(
                        "DELETE FROM zatabase.{table} WHERE at < now() - interval '7 days'"
                    );
                    if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(prune))
                        .execute(&mut *conn)
                        .await
                    {
                        tracing::warn!(%error, table, "pruning function telemetry");
                        written = false;
                    }
                }
                for function_id in logged.drain() {
                    // Past the newest KEPT_LINES_PER_FUNCTION, by the
                    // function's own index.
                    let pruned = sqlx::query(
                        "DELETE FROM zatabase.function_logs
                         WHERE function_id = $1::uuid AND (at, id) <= (
                           SELECT at, id FROM zatabase.function_logs
                           WHERE function_id = $1::uuid
                           ORDER BY at DESC, id DESC OFFSET $2 LIMIT 1)",
                    )
                    .bind(&function_id)
                    .bind(KEPT_LINES_PER_FUNCTION)
                    .execute(&mut *conn)
                    .await;
                    if let Err(error) = pruned {
                        tracing::warn!(%error, "pruning a function's oldest lines");
                        written = false;
                        break;
                    }
                }
            }
            if !written {
                // Perhaps the connection broke: a new one next time.
                connection = None;
            }
        }
    }

    /// Writes what is pending now (also at shut-down); whether it all went.
    /// A batch that fails is dropped and said so: telemetry never holds up
    /// requests.
    pub async fn flush(&self, conn: &mut PgConnection) -> bool {
        self.flush_logged(conn).await.0
    }

    /// [`Telemetry::flush`], and which functions' lines were written.
    async fn flush_logged(&self, conn: &mut PgConnection) -> (bool, Vec<String>) {
        let mut ok = true;
        let Pending {
            invocations,
            invocation_count,
            logs,
            function_log_bytes,
            dropped,
            ..
        } = std::mem::take(&mut *self.pending.lock().expect("telemetry poisoned"));
        if dropped > 0 {
            tracing::warn!(dropped, "function telemetry dropped (too much pending)");
        }
        if !invocations.is_empty() {
            let batches = Batches::of(&invocations);
            // Each function's calls are a slice of the flat arrays: Postgres
            // copies slices, it never handles a call on its own.
            let written = sqlx::query(
                "INSERT INTO zatabase.function_invocation_batches
                   (function_id, at, statuses, durations_us, cold)
                 SELECT b.function_id, to_timestamp(b.at),
                   ($5::int2[])[b.first:b.last], ($6::int8[])[b.first:b.last],
                   ($7::bool[])[b.first:b.last]
                 FROM unnest($1::uuid[], $2::float8[], $3::int4[], $4::int4[])
                   AS b (function_id, at, first, last)
                 WHERE EXISTS (SELECT 1 FROM zatabase.functions f WHERE f.id = b.function_id)",
            )
            .bind(&batches.functions)
            .bind(&batches.at)
            .bind(&batches.first)
            .bind(&batches.last)
            .bind(&batches.statuses)
            .bind(&batches.durations_us)
            .bind(&batches.cold)
            .execute(&mut *conn)
            .await;
            if let Err(error) = written {
                tracing::warn!(%error, count = invocation_count, "writing function invocations");
                ok = false;
            }
        }
        if !logs.is_empty() {
            let written = sqlx::query(
                "INSERT INTO zatabase.function_logs (function_id, request_id, level, message, at)
                 SELECT u.function_id, u.request_id, u.level, u.message, to_timestamp(u.at)
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::float8[])
                   WITH ORDINALITY AS u (function_id, request_id, level, message, at, n)
                 WHERE EXISTS (SELECT 1 FROM zatabase.functions f WHERE f.id = u.function_id)
                 ORDER BY n",
            )
            .bind(
                logs.iter()
                    .map(|l| l.function_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                logs.iter()
                    .map(|l| l.request_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(logs.iter().map(|l| l.level).collect::<Vec<_>>())
            .bind(
                logs.iter()
                    .map(|l| l.message.replace('\0', ""))
                    .collect::<Vec<_>>(),
            )
            .bind(logs.iter().map(|l| timestamp(l.at)).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await;
            if let Err(error) = written {
                tracing::warn!(%error, count = logs.len(), "writing function logs");
                ok = false;
            }
        }
        (ok, function_log_bytes.into_keys().collect())
    }
}

/// The status recorded for a call whose client went away before the body
/// was all sent (nginx's "client closed request").
pub const CLIENT_CLOSED: u16 = 499;

/// One call of a function, as it is answered.
pub struct Call<'a> {
    pub function_id: &'a str,
    pub status: u16,
    pub started: std::time::Instant,
    pub cold: bool,
    /// A `HEAD` request: no body is sent, whatever the function wrote.
    pub head: bool,
}

impl Telemetry {
    /// Records `call` when `body`, its response's, has been sent whole: its
    /// duration is to the body's end, and a body that fails midway (the
    /// function trapped or ran out of time after its head went out) is a
    /// 500, one the client stopped reading a [`CLIENT_CLOSED`]. A body
    /// already whole is recorded at once.
    pub fn record_when_sent(
        self: &Arc<Self>,
        call: Call<'_>,
        body: axum::body::Body,
    ) -> axum::body::Body {
        use http_body::Body as _;
        // No body goes out after a HEAD, a 204 or a 304: hyper drops it
        // unread, which is no client closing early.
        let no_body = call.head || matches!(call.status, 204 | 304);
        if no_body || body.is_end_stream() || body.size_hint().exact().is_some() {
            self.invocation(
                call.function_id,
                call.status,
                call.started.elapsed(),
                call.cold,
            );
            return body;
        }
        axum::body::Body::new(Recorded {
            inner: body,
            call: Some(Ongoing {
                telemetry: self.clone(),
                function_id: call.function_id.to_owned(),
                status: call.status,
                started: call.started,
                cold: call.cold,
            }),
        })
    }
}

/// A call whose body is still being sent.
struct Ongoing {
    telemetry: Arc<Telemetry>,
    function_id: String,
    status: u16,
    started: std::time::Instant,
    cold: bool,
}

impl Ongoing {
    fn record(&self, status: u16) {
        self.telemetry
            .invocation(&self.function_id, status, self.started.elapsed(), self.cold);
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when it ends.
    struct Recorded {
        #[pin]
        inner: axum::body::Body,
        call: Option<Ongoing>,
    }

    impl PinnedDrop for Recorded {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.record(CLIENT_CLOSED);
            }
        }
    }
}

impl http_body::Body for Recorded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => {
                if let Some(call) = this.call.take() {
                    call.record(call.status);
                }
            }
            std::task::Poll::Ready(Some(Err(_))) => {
                if let Some(call) = this.call.take() {
                    call.record(500);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Pending invocations as one batch row per function: the calls in flat
/// arrays, function after function, and each function's slice of them
/// (1-based, inclusive, as Postgres slices).
#[derive(Default)]
struct Batches<'a> {
    functions: Vec<&'a str>,
    /// When each function's first call in the batch was answered.
    at: Vec<f64>,
    first: Vec<i32>,
    last: Vec<i32>,
    statuses: Vec<i16>,
    durations_us: Vec<i64>,
    cold: Vec<bool>,
}

impl<'a> Batches<'a> {
    fn of(invocations: &'a HashMap<String, Calls>) -> Self {
        let mut batches = Batches::default();
        for (function, calls) in invocations {
            let first = batches.statuses.len() + 1;
            batches.functions.push(function);
            batches.at.push(timestamp(calls.at));
            batches.statuses.extend_from_slice(&calls.statuses);
            batches.durations_us.extend_from_slice(&calls.durations_us);
            batches.cold.extend_from_slice(&calls.cold);
            // At most MAX_PENDING_INVOCATIONS calls: the offsets fit.
            batches.first.push(i32::try_from(first).unwrap_or(i32::MAX));
            batches
                .last
                .push(i32::try_from(batches.statuses.len()).unwrap_or(i32::MAX));
        }
        batches
    }
}

/// Seconds since the epoch, for `to_timestamp` (sqlx binds it without a
/// date-time crate).
fn timestamp(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_lines_count_against_the_pending_bound() {
        let telemetry = Telemetry::default();
        let lines = MAX_PENDING_BYTES / 16;
        for _ in 0..lines {
            telemetry.log(
                "0b7e8f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
                "req",
                Level::Info,
                "",
            );
        }
        let pending = telemetry.pending.lock().unwrap();
        assert!(
            pending.logs.len() < lines,
            "{} lines kept",
            pending.logs.len()
        );
        assert_eq!(pending.dropped as usize, lines - pending.logs.len());
        assert!(pending.log_bytes <= MAX_PENDING_BYTES);
    }

    #[test]
    fn a_flooding_function_leaves_room_for_the_others_lines() {
        let telemetry = Telemetry::default();
        let line = "x".repeat(1000);
        for _ in 0..(MAX_PENDING_BYTES / 1000) {
            telemetry.log("flood", "req", Level::Info, &line);
        }
        telemetry.log("quiet", "req", Level::Info, "still heard");
        let pending = telemetry.pending.lock().unwrap();
        assert!(pending.function_log_bytes["flood"] <= MAX_PENDING_BYTES_PER_FUNCTION);
        assert!(pending.dropped > 0);
        assert_eq!(pending.logs.last().unwrap().message, "still heard");
    }

    #[test]
    fn each_function_gets_its_own_slice_of_the_calls_in_order() {
        let telemetry = Telemetry::default();
        for (function, status, duration_us) in [("a", 200, 10), ("b", 500, 200), ("a", 404, 30)] {
            telemetry.invocation(
                function,
                status,
                Duration::from_micros(duration_us),
                duration_us > 100,
            );
        }
        let pending = std::mem::take(&mut *telemetry.pending.lock().unwrap());
        assert_eq!(pending.invocation_count, 3);
        let batches = Batches::of(&pending.invocations);
        assert_eq!(batches.statuses.len(), 3);
        type Row<'a> = (&'a str, Vec<i16>, Vec<i64>, Vec<bool>);
        let mut rows: Vec<Row> = (0..batches.functions.len())
            .map(|i| {
                let range = batches.first[i] as usize - 1..batches.last[i] as usize;
                (
                    batches.functions[i],
                    batches.statuses[range.clone()].to_vec(),
                    batches.durations_us[range.clone()].to_vec(),
                    batches.cold[range].to_vec(),
                )
            })
            .collect();
        rows.sort_by(|x, y| x.0.cmp(y.0));
        assert_eq!(
            rows,
            [
                ("a", vec![200, 404], vec![10, 30], vec![false, false]),
                ("b", vec![500], vec![200], vec![true]),
            ]
        );
    }
}

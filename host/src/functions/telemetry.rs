//! What users' functions did, for `/v1/functions/:id/logs` and `/metrics`:
//! each invocation (status, duration, cold or not) and each line a
//! function logged (stdout, stderr, `zatabase:platform/log`).
//!
//! Requests only push onto an in-memory batch; a background task writes
//! the batch every quarter second in one statement per table, so a function
//! call never waits on a write. Invocations are counted into one row per
//! function per minute (migration 0017): counts by status, and durations
//! as a histogram of buckets 2^(1/16) wide ([`duration_bucket`]), which each
//! write adds to. A row per call cost Postgres more than the call itself,
//! and the metrics then had every call of their window to read and sort;
//! a minute's row is as small for a busy function as for a quiet one. The
//! writer has a connection of its own, whose server process runs at the
//! lowest CPU priority on the embedded Postgres ([`Db::background_connection`]):
//! the writes wait for idle CPU rather than delay requests. A host keeps at most `MAX_PENDING_BYTES` of
//! unwritten lines (Postgres away, a function logging without pause), each
//! function at most `MAX_PENDING_BYTES_PER_FUNCTION` of them (one flooding
//! function does not crowd out the others' lines), and drops the rest,
//! counting them in its log. Rows older than seven days are pruned, and a
//! function keeps its newest `functions.log_lines_kept` lines: its oldest
//! go once it has logged a tenth of that again (a flooding function is
//! pruned as it floods, not on a clock), and at the ten-minute sweep.

use std::collections::{BTreeMap, HashMap};
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
/// Function-minutes with calls not yet written.
const MAX_PENDING_MINUTES: usize = 10_000;
/// Duration buckets per doubling: each is 2^(1/16), about 4.4 %, wide.
const BUCKETS_PER_DOUBLING: f64 = 16.0;

#[derive(Default)]
struct Pending {
    /// Each function's calls since the last write, by the minute they
    /// were answered in (almost always one).
    invocations: HashMap<String, Vec<Minute>>,
    minute_count: usize,
    logs: Vec<Line>,
    log_bytes: usize,
    /// Each function's share of `log_bytes`.
    function_log_bytes: HashMap<String, usize>,
    dropped: u64,
}

/// One function's calls answered in one minute, counted as
/// `zatabase.function_invocation_minutes` stores them.
#[derive(Debug, PartialEq)]
struct Minute {
    /// Its start, in seconds since the epoch.
    minute: i64,
    invocations: i64,
    errors: i64,
    cold_starts: i64,
    min_us: i64,
    max_us: i64,
    /// Calls by status.
    statuses: BTreeMap<i16, i64>,
    /// Calls by [`duration_bucket`].
    buckets: BTreeMap<i16, i64>,
}

impl Minute {
    fn new(minute: i64) -> Self {
        Minute {
            minute,
            invocations: 0,
            errors: 0,
            cold_starts: 0,
            min_us: i64::MAX,
            max_us: 0,
            statuses: BTreeMap::new(),
            buckets: BTreeMap::new(),
        }
    }

    fn count(&mut self, status: i16, duration_us: i64, cold: bool) {
        self.invocations += 1;
        self.errors += i64::from(status >= 500);
        self.cold_starts += i64::from(cold);
        self.min_us = self.min_us.min(duration_us);
        self.max_us = self.max_us.max(duration_us);
        *self.statuses.entry(status).or_default() += 1;
        *self
            .buckets
            .entry(duration_bucket(duration_us))
            .or_default() += 1;
    }
}

/// The histogram bucket of a call that took `duration_us`:
/// `floor(16 * log2(duration_us))`, a duration under 1 µs counting as 1.
/// Migration 0017 and the metrics query (guests/functions) use the same
/// rule; a bucket's durations are all within 2.2 % of its geometric middle,
/// [`bucket_middle_us`].
fn duration_bucket(duration_us: i64) -> i16 {
    // At most 16 * 63 = 1008 for any i64: the cast cannot clip.
    (BUCKETS_PER_DOUBLING * (duration_us.max(1) as f64).log2()).floor() as i16
}

/// The geometric middle of a bucket, in µs: what the metrics report for a
/// percentile that falls in it.
#[cfg(test)]
fn bucket_middle_us(bucket: i16) -> f64 {
    2f64.powf((f64::from(bucket) + 0.5) / BUCKETS_PER_DOUBLING)
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
        self.invocation_at(function_id, status, duration, cold, SystemTime::now());
    }

    fn invocation_at(
        &self,
        function_id: &str,
        status: u16,
        duration: Duration,
        cold: bool,
        at: SystemTime,
    ) {
        let minute = i64::try_from(timestamp(at) as u64 / 60 * 60).unwrap_or(0);
        let status = i16::try_from(status).unwrap_or(i16::MAX);
        let duration_us = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
        let mut pending = self.pending.lock().expect("telemetry poisoned");
        let pending = &mut *pending;
        let minutes = match pending.invocations.get_mut(function_id) {
            Some(minutes) => minutes,
            None if pending.minute_count >= MAX_PENDING_MINUTES => {
                pending.dropped += 1;
                return;
            }
            None => pending
                .invocations
                .entry(function_id.to_owned())
                .or_default(),
        };
        let counted = match minutes.iter_mut().find(|m| m.minute == minute) {
            Some(counted) => counted,
            None if pending.minute_count >= MAX_PENDING_MINUTES => {
                pending.dropped += 1;
                return;
            }
            None => {
                pending.minute_count += 1;
                minutes.push(Minute::new(minute));
                minutes.last_mut().expect("just pushed")
            }
        };
        counted.count(status, duration_us, cold);
    }

    /// Writes what is pending, on a [`Db::background_connection`]; until
    /// the process ends.
    pub async fn run(&self, db: Arc<Db>, kept_lines: u32) {
        let mut last_prune = std::time::Instant::now();
        let mut connection: Option<PgConnection> = None;
        // Functions that logged since their last prune, and how many lines:
        // those whose lines may be past their count.
        let mut logged: HashMap<String, u32> = HashMap::new();
        let prune_past = (kept_lines / 10).max(1);
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
            let (mut written, lines) = self.flush_logged(conn).await;
            for (function_id, count) in lines {
                let logged = logged.entry(function_id).or_default();
                *logged = logged.saturating_add(count);
            }
            let sweep = written && last_prune.elapsed() > PRUNE_EVERY;
            if sweep {
                last_prune = std::time::Instant::now();
                for (table, at) in [
                    ("function_invocation_minutes", "minute"),
                    ("function_logs", "at"),
                ] {
                    let prune = format!(
                        "DELETE FROM zatabase.{table} WHERE {at} < now() - interval '7 days'"
                    );
                    if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(prune))
                        .execute(&mut *conn)
                        .await
                    {
                        tracing::warn!(%error, table, "pruning function telemetry");
                        written = false;
                    }
                }
            }
            if written {
                let due: Vec<String> = logged
                    .iter()
                    .filter(|&(_, &count)| sweep || count >= prune_past)
                    .map(|(function_id, _)| function_id.clone())
                    .collect();
                for function_id in due {
                    // Past its newest `kept_lines`, by the function's own
                    // index.
                    let pruned = sqlx::query(
                        "DELETE FROM zatabase.function_logs
                         WHERE function_id = $1::uuid AND (at, id) <= (
                           SELECT at, id FROM zatabase.function_logs
                           WHERE function_id = $1::uuid
                           ORDER BY at DESC, id DESC OFFSET $2 LIMIT 1)",
                    )
                    .bind(&function_id)
                    .bind(i64::from(kept_lines))
                    .execute(&mut *conn)
                    .await;
                    if let Err(error) = pruned {
                        // The rest stay counted, for the next time.
                        tracing::warn!(%error, "pruning a function's oldest lines");
                        written = false;
                        break;
                    }
                    logged.remove(&function_id);
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
    /// Also the lines written, by function.
    async fn flush_logged(&self, conn: &mut PgConnection) -> (bool, HashMap<String, u32>) {
        let mut ok = true;
        let Pending {
            invocations,
            minute_count,
            logs,
            dropped,
            ..
        } = std::mem::take(&mut *self.pending.lock().expect("telemetry poisoned"));
        if dropped > 0 {
            tracing::warn!(dropped, "function telemetry dropped (too much pending)");
        }
        if !invocations.is_empty() {
            let rows = MinuteRows::of(&invocations);
            // Each row's statuses and buckets are slices of flat arrays;
            // a minute already stored (another write, another host) is
            // added to. Rows go in (function, minute) order, so two hosts
            // adding to the same rows lock them in the same order.
            let written = sqlx::query(
                "INSERT INTO zatabase.function_invocation_minutes AS m
                   (function_id, minute, invocations, errors, cold_starts, min_us, max_us,
                    statuses, status_counts, buckets, bucket_counts)
                 SELECT r.function_id, to_timestamp(r.minute), r.invocations, r.errors,
                   r.cold_starts, r.min_us, r.max_us,
                   ($8::int2[])[r.s_first:r.s_last], ($9::int8[])[r.s_first:r.s_last],
                   ($12::int2[])[r.b_first:r.b_last], ($13::int8[])[r.b_first:r.b_last]
                 FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::int8[],
                             $6::int8[], $7::int8[], $10::int4[], $11::int4[],
                             $14::int4[], $15::int4[]) WITH ORDINALITY
                   AS r (function_id, minute, invocations, errors, cold_starts, min_us, max_us,
                         s_first, s_last, b_first, b_last, n)
                 WHERE EXISTS (SELECT 1 FROM zatabase.functions f WHERE f.id = r.function_id)
                 ORDER BY r.n
                 ON CONFLICT (function_id, minute) DO UPDATE SET
                   invocations = m.invocations + excluded.invocations,
                   errors = m.errors + excluded.errors,
                   cold_starts = m.cold_starts + excluded.cold_starts,
                   min_us = least(m.min_us, excluded.min_us),
                   max_us = greatest(m.max_us, excluded.max_us),
                   (statuses, status_counts) = (
                     SELECT array_agg(k ORDER BY k), array_agg(n ORDER BY k)
                     FROM (SELECT k, sum(n)::int8 AS n
                           FROM unnest(m.statuses || excluded.statuses,
                                       m.status_counts || excluded.status_counts) AS u (k, n)
                           GROUP BY k) s),
                   (buckets, bucket_counts) = (
                     SELECT array_agg(k ORDER BY k), array_agg(n ORDER BY k)
                     FROM (SELECT k, sum(n)::int8 AS n
                           FROM unnest(m.buckets || excluded.buckets,
                                       m.bucket_counts || excluded.bucket_counts) AS u (k, n)
                           GROUP BY k) b)",
            )
            .bind(&rows.functions)
            .bind(&rows.minute)
            .bind(&rows.invocations)
            .bind(&rows.errors)
            .bind(&rows.cold_starts)
            .bind(&rows.min_us)
            .bind(&rows.max_us)
            .bind(&rows.statuses)
            .bind(&rows.status_counts)
            .bind(&rows.s_first)
            .bind(&rows.s_last)
            .bind(&rows.buckets)
            .bind(&rows.bucket_counts)
            .bind(&rows.b_first)
            .bind(&rows.b_last)
            .execute(&mut *conn)
            .await;
            if let Err(error) = written {
                tracing::warn!(%error, minutes = minute_count, "writing function invocations");
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
        // Counted whether or not they went: a prune too many costs little.
        let mut lines = HashMap::new();
        for line in &logs {
            *lines.entry(line.function_id.clone()).or_default() += 1;
        }
        (ok, lines)
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

/// Pending minutes as the rows they are written as: a column each, and
/// each row's statuses and buckets as slices (1-based, inclusive, as
/// Postgres slices) of flat arrays.
#[derive(Default)]
struct MinuteRows<'a> {
    functions: Vec<&'a str>,
    minute: Vec<i64>,
    invocations: Vec<i64>,
    errors: Vec<i64>,
    cold_starts: Vec<i64>,
    min_us: Vec<i64>,
    max_us: Vec<i64>,
    statuses: Vec<i16>,
    status_counts: Vec<i64>,
    s_first: Vec<i32>,
    s_last: Vec<i32>,
    buckets: Vec<i16>,
    bucket_counts: Vec<i64>,
    b_first: Vec<i32>,
    b_last: Vec<i32>,
}

impl<'a> MinuteRows<'a> {
    fn of(invocations: &'a HashMap<String, Vec<Minute>>) -> Self {
        // At most MAX_PENDING_MINUTES rows of at most 1,009 buckets and
        // 65,536 statuses each: the offsets fit.
        let offset = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let mut rows = MinuteRows::default();
        let mut functions: Vec<_> = invocations.iter().collect();
        functions.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (function, minutes) in functions {
            let mut minutes: Vec<&Minute> = minutes.iter().collect();
            minutes.sort_unstable_by_key(|m| m.minute);
            for m in minutes {
                rows.functions.push(function);
                rows.minute.push(m.minute);
                rows.invocations.push(m.invocations);
                rows.errors.push(m.errors);
                rows.cold_starts.push(m.cold_starts);
                rows.min_us.push(m.min_us);
                rows.max_us.push(m.max_us);
                rows.s_first.push(offset(rows.statuses.len() + 1));
                rows.statuses.extend(m.statuses.keys());
                rows.status_counts.extend(m.statuses.values());
                rows.s_last.push(offset(rows.statuses.len()));
                rows.b_first.push(offset(rows.buckets.len() + 1));
                rows.buckets.extend(m.buckets.keys());
                rows.bucket_counts.extend(m.buckets.values());
                rows.b_last.push(offset(rows.buckets.len()));
            }
        }
        rows
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
    fn calls_are_counted_by_function_and_minute() {
        let telemetry = Telemetry::default();
        let minute = SystemTime::UNIX_EPOCH + Duration::from_secs(60 * 29_000_000);
        let next = minute + Duration::from_secs(60);
        for (function, status, duration_us, at) in [
            ("a", 200, 10, minute),
            ("b", 500, 200, minute + Duration::from_secs(59)),
            ("a", 404, 30, minute + Duration::from_millis(59_999)),
            ("a", 200, 11, minute),
            ("a", 200, 1000, next),
        ] {
            telemetry.invocation_at(
                function,
                status,
                Duration::from_micros(duration_us),
                duration_us > 100,
                at,
            );
        }
        let pending = std::mem::take(&mut *telemetry.pending.lock().unwrap());
        assert_eq!(pending.minute_count, 3);
        let start = 60 * 29_000_000;
        let a = &pending.invocations["a"];
        assert_eq!(
            a[0],
            Minute {
                minute: start,
                invocations: 3,
                errors: 0,
                cold_starts: 0,
                min_us: 10,
                max_us: 30,
                statuses: BTreeMap::from([(200, 2), (404, 1)]),
                // 16 log2(10) = 53.2, 16 log2(11) = 55.4, 16 log2(30) = 78.5
                buckets: BTreeMap::from([(53, 1), (55, 1), (78, 1)]),
            }
        );
        assert_eq!(a[1].minute, start + 60);
        assert_eq!(a[1].cold_starts, 1);
        assert_eq!(pending.invocations["b"][0].errors, 1);

        let rows = MinuteRows::of(&pending.invocations);
        assert_eq!(rows.functions.len(), 3);
        type Row<'a> = (&'a str, i64, Vec<i16>, Vec<i64>, Vec<i16>);
        let found: Vec<Row> = (0..3)
            .map(|i| {
                let s = rows.s_first[i] as usize - 1..rows.s_last[i] as usize;
                let b = rows.b_first[i] as usize - 1..rows.b_last[i] as usize;
                (
                    rows.functions[i],
                    rows.minute[i],
                    rows.statuses[s.clone()].to_vec(),
                    rows.status_counts[s].to_vec(),
                    rows.buckets[b].to_vec(),
                )
            })
            .collect();
        // In (function, minute) order: hosts lock shared rows alike.
        assert_eq!(
            found,
            [
                ("a", start, vec![200, 404], vec![2, 1], vec![53, 55, 78]),
                ("a", start + 60, vec![200], vec![1], vec![159]),
                ("b", start, vec![500], vec![1], vec![122]),
            ]
        );
    }

    #[test]
    fn a_bucket_holds_durations_within_its_stated_error() {
        let mut last = duration_bucket(0);
        assert_eq!(last, 0);
        assert_eq!(duration_bucket(1), 0);
        assert_eq!(duration_bucket(i64::MAX), 1008);
        for us in (1..2_000_000).chain([3_600_000_000, 1 << 40, (1 << 40) + 1]) {
            let bucket = duration_bucket(us);
            assert!(bucket >= last, "{us}");
            last = bucket;
            let middle = bucket_middle_us(bucket);
            let error = (middle - us as f64).abs() / us as f64;
            assert!(
                error < 0.022,
                "{us} µs in bucket {bucket}: {middle} µs, off by {error}"
            );
        }
        // Powers of two start their bucket.
        assert_eq!(duration_bucket(1024), 160);
        assert_eq!(duration_bucket(1023), 159);
    }

    #[test]
    fn pending_minutes_are_bounded() {
        let telemetry = Telemetry::default();
        let at = SystemTime::now();
        for i in 0..MAX_PENDING_MINUTES + 5 {
            telemetry.invocation_at(&format!("f{i}"), 200, Duration::from_micros(5), false, at);
        }
        // The functions already pending are still counted.
        telemetry.invocation_at("f0", 200, Duration::from_micros(5), false, at);
        let pending = telemetry.pending.lock().unwrap();
        assert_eq!(pending.minute_count, MAX_PENDING_MINUTES);
        assert_eq!(pending.dropped, 5);
        let f0: i64 = pending.invocations["f0"]
            .iter()
            .map(|m| m.invocations)
            .sum();
        assert_eq!(f0, 2);
    }
}

//! Prometheus metrics: requests by route group and status, latency
//! histograms, component instantiations, database pool gauges.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::db::Db;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    group: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// The statuses a route group's counters are kept at hand for (a status
/// outside them, which `http` allows up to 999, is looked up).
const FIRST_STATUS: u16 = 100;
const LAST_STATUS: u16 = 599;

/// One route group's request series: its latency histogram, and its
/// counter per status once that status has been answered (so the
/// exposition lists the statuses seen, as the family alone would).
pub struct GroupSeries {
    name: Arc<str>,
    latency: Histogram,
    requests: Family<RequestLabels, Counter>,
    by_status: Box<[OnceLock<Counter>]>,
}

impl GroupSeries {
    fn new(
        requests: &Family<RequestLabels, Counter>,
        latency: &HistogramFamily<GroupLabels>,
        group: &str,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: Arc::from(group),
            latency: latency
                .get_or_create(&GroupLabels {
                    group: group.to_owned(),
                })
                .clone(),
            requests: requests.clone(),
            by_status: (FIRST_STATUS..=LAST_STATUS)
                .map(|_| OnceLock::new())
                .collect(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counts and times one request.
    pub fn observe(&self, status: u16, elapsed: Duration) {
        let create = || {
            self.requests
                .get_or_create(&RequestLabels {
                    group: self.name.to_string(),
                    status,
                })
                .clone()
        };
        match self
            .by_status
            .get(usize::from(status.wrapping_sub(FIRST_STATUS)))
        {
            Some(counter) => counter.get_or_init(create).inc(),
            None => create().inc(),
        };
        self.latency.observe(elapsed.as_secs_f64());
    }
}

/// The host's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<GroupLabels>,
    instantiations: HistogramFamily<ComponentLabels>,
    pool_connections: Family<PoolLabels, Gauge>,
    notifications: Family<ChannelLabels, Counter>,
    /// Requests no route group answered (the host's own routes, refusals
    /// at the edge).
    host: Arc<GroupSeries>,
    /// Calls of users' functions, all of them (`fn`): one series shared by
    /// every resolved function rather than one each.
    functions: Arc<GroupSeries>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
    state: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("zatabase");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route group and status",
            requests.clone(),
        );
        let latency = HistogramFamily::<GroupLabels>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (to the response head), by route group",
            latency.clone(),
        );
        let instantiations = HistogramFamily::<ComponentLabels>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "component_instantiation_seconds",
            "Time to instantiate a component for one request; the count is the number of instantiations",
            instantiations.clone(),
        );
        let pool_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database connections held by the host, by pool and state",
            pool_connections.clone(),
        );
        let notifications = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "platform_notifications",
            "Notifications of changed platform state (ended sessions, changed grants or functions) this host received, by channel",
            notifications.clone(),
        );
        for channel in [
            crate::db::notify::SESSION_ENDED,
            crate::db::notify::ACCESS_CHANGED,
            crate::db::notify::FUNCTION_CHANGED,
        ] {
            drop(notifications.get_or_create(&ChannelLabels { channel }));
        }
        let host = GroupSeries::new(&requests, &latency, "host");
        let functions = GroupSeries::new(&requests, &latency, "fn");
        Self {
            registry,
            requests,
            latency,
            instantiations,
            pool_connections,
            notifications,
            host,
            functions,
        }
    }

    /// The request series of the route group `group`, to keep and record
    /// into without a lookup per request.
    pub fn group(&self, group: &str) -> Arc<GroupSeries> {
        GroupSeries::new(&self.requests, &self.latency, group)
    }

    /// The series of requests no route group answered.
    pub fn host(&self) -> &Arc<GroupSeries> {
        &self.host
    }

    /// The series of users' function calls.
    pub fn functions(&self) -> &Arc<GroupSeries> {
        &self.functions
    }

    /// The instantiation-time histogram of one component, to keep and
    /// observe without a lookup per request.
    pub fn instantiations(&self, component: &str) -> Histogram {
        self.instantiations
            .get_or_create(&ComponentLabels {
                component: component.to_owned(),
            })
            .clone()
    }

    /// The counter of notifications received on the platform channel
    /// `channel` (its public name).
    pub fn notifications(&self, channel: &'static str) -> Counter {
        self.notifications
            .get_or_create(&ChannelLabels { channel })
            .clone()
    }

    /// The text exposition, with pool gauges read now.
    pub fn render(&self, db: Option<&Arc<Db>>) -> String {
        if let Some(db) = db {
            let stats = db.stats();
            let set = |pool, state, value: i64| {
                self.pool_connections
                    .get_or_create(&PoolLabels { pool, state })
                    .set(value);
            };
            set("platform", "open", i64::from(stats.platform_size));
            set("platform", "idle", stats.platform_idle as i64);
            set("tenant", "open", i64::from(stats.tenant_size));
            set("tenant", "pools", stats.tenant_pools as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Metrics;

    #[test]
    fn a_groups_series_counts_every_status_it_answers() {
        let metrics = Metrics::new();
        let sql = metrics.group("sql");
        sql.observe(200, Duration::from_millis(1));
        metrics.group("sql").observe(200, Duration::from_millis(1));
        sql.observe(999, Duration::from_millis(1));
        metrics.host().observe(404, Duration::from_millis(1));
        metrics.functions().observe(200, Duration::from_millis(1));
        let text = metrics.render(None);
        for line in [
            r#"zatabase_http_requests_total{group="sql",status="200"} 2"#,
            r#"zatabase_http_requests_total{group="sql",status="999"} 1"#,
            r#"zatabase_http_requests_total{group="host",status="404"} 1"#,
            r#"zatabase_http_requests_total{group="fn",status="200"} 1"#,
            r#"zatabase_http_request_duration_seconds_count{group="sql"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains(r#"group="sql",status="404""#), "{text}");
    }
}

//! Prometheus metrics: requests by route group and status, latency
//! histograms, component instantiations, database pool gauges.

use std::sync::Arc;
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
struct ComponentLabels {
    component: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// The host's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<GroupLabels>,
    instantiations: HistogramFamily<ComponentLabels>,
    pool_connections: Family<PoolLabels, Gauge>,
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
        Self {
            registry,
            requests,
            latency,
            instantiations,
            pool_connections,
        }
    }

    pub fn observe_request(&self, group: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                group: group.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&GroupLabels {
                group: group.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
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

//! `GET /metrics`: Prometheus text, through `prometheus-client`.
//!
//! - `ledger_decisions_total{command, outcome}`: every command a front end
//!   decided (`accepted`, `duplicate`, `denied` (recorded quota or token
//!   denial), `rejected` (nothing recorded), `unavailable`), and
//!   `ledger_malformed_requests_total` for what never parsed;
//! - `ledger_decision_seconds`: from arrival to answer;
//! - `ledger_log_batch_messages`: the engine's appended batches by size
//!   (group commit at work);
//! - `ledger_projector_lag_events`: log events the views do not include yet;
//! - `ledger_log_reachable`: 1 when the log answered the scrape's head read;
//! - `ledger_webhook_deliveries_total{endpoint, outcome}`: delivery attempts
//!   by outcome (`delivered`, `retrying`, `failed`), and
//!   `ledger_webhook_oldest_undelivered_seconds{endpoint}`: the age of the
//!   oldest notification this instance took up for the endpoint and has
//!   not delivered.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::health::Health;
use crate::engine::{EngineStats, Reply, BATCH_SIZE_BUCKETS};

type Labels = Vec<(&'static str, &'static str)>;

/// The service's metrics. Cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    deliveries: Arc<crate::notify::deliver::DeliveryStats>,
    decisions: Family<Labels, Counter>,
    malformed: Counter,
    latency: Histogram,
    lag: Gauge,
    reachable: Gauge,
}

impl Metrics {
    pub fn new(engine: Arc<EngineStats>) -> Metrics {
        let mut registry = Registry::with_prefix("ledger");
        let decisions = Family::<Labels, Counter>::default();
        registry.register("decisions", "Commands decided, by command and outcome", decisions.clone());
        let malformed = Counter::default();
        registry.register(
            "malformed_requests",
            "Requests or batch items that did not parse",
            malformed.clone(),
        );
        // 100 us to ~6.5 s.
        let latency = Histogram::new(exponential_buckets(0.0001, 2.0, 17));
        registry.register_with_unit(
            "decision",
            "Time from a command's arrival to its answer",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        let lag = Gauge::default();
        registry.register("projector_lag_events", "Log events the views do not include yet", lag.clone());
        let reachable = Gauge::default();
        registry.register(
            "log_reachable",
            "1 when the log answered the last scrape, else 0",
            reachable.clone(),
        );
        registry.register_collector(Box::new(BatchSizes(engine)));
        let deliveries = Arc::new(crate::notify::deliver::DeliveryStats::default());
        registry.register_collector(Box::new(Deliveries(deliveries.clone())));
        Metrics { registry, deliveries, decisions, malformed, latency, lag, reachable }
    }

    /// What webhook deliveries report into.
    pub fn deliveries(&self) -> Arc<crate::notify::deliver::DeliveryStats> {
        self.deliveries.clone()
    }

    /// Counts a decided command and its latency.
    pub fn decided(&self, command: &'static str, reply: &Reply, took: Duration) {
        let outcome = match reply {
            Reply::Ok { duplicate: false, .. } => "accepted",
            Reply::Ok { duplicate: true, .. } => "duplicate",
            Reply::Rejected { seq: Some(_), .. } => "denied",
            Reply::Rejected { seq: None, .. } => "rejected",
            Reply::Failed { .. } => "unavailable",
        };
        self.decisions.get_or_create(&vec![("command", command), ("outcome", outcome)]).inc();
        self.latency.observe(took.as_secs_f64());
    }

    /// Counts a request (or batch item) that did not parse.
    pub fn malformed(&self) {
        self.malformed.inc();
    }

    /// The exposition text, with the health figures of this scrape.
    pub fn render(&self, health: &Health) -> String {
        self.lag.set(health.lag_events().min(i64::MAX as u64) as i64);
        self.reachable.set(i64::from(health.log_head.is_some()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// The engine's batch sizes, read from its counters at scrape time.
#[derive(Debug)]
struct BatchSizes(Arc<EngineStats>);

impl Collector for BatchSizes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let get = |c: &AtomicU64| EngineStats::get(c);
        let buckets: Vec<(f64, u64)> = (0..BATCH_SIZE_BUCKETS)
            .map(|i| {
                let upper = if i + 1 == BATCH_SIZE_BUCKETS { f64::MAX } else { (1u64 << i) as f64 };
                (upper, get(&self.0.batch_sizes[i]))
            })
            .collect();
        let histogram =
            ConstHistogram { sum: get(&self.0.messages) as f64, count: get(&self.0.batches), buckets };
        let metric = encoder.encode_descriptor(
            "log_batch_messages",
            "Messages per batch the engine appended to the log",
            None,
            histogram.metric_type(),
        )?;
        histogram.encode(metric)
    }
}

/// Webhook deliveries, read from their counters at scrape time.
#[derive(Debug)]
struct Deliveries(Arc<crate::notify::deliver::DeliveryStats>);

impl Collector for Deliveries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let outcomes = self.0.outcomes();
        let mut family = encoder.encode_descriptor(
            "webhook_deliveries",
            "Webhook delivery attempts, by endpoint and outcome",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (endpoint, outcome, n) in &outcomes {
            let labels = [("endpoint", endpoint.as_str()), ("outcome", *outcome)];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        let oldest = self.0.oldest_undelivered(chrono::Utc::now().timestamp_micros());
        let mut family = encoder.encode_descriptor(
            "webhook_oldest_undelivered",
            "Age of the oldest notification taken up for an endpoint and not delivered yet",
            Some(&prometheus_client::registry::Unit::Seconds),
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (endpoint, seconds) in &oldest {
            ConstGauge::new(*seconds).encode(family.encode_family(&[("endpoint", endpoint.as_str())])?)?;
        }
        Ok(())
    }
}

struct ConstHistogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            self.count,
            &self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

//! Prometheus metrics at `GET /metrics` (OpenMetrics text). Labels are route templates, methods
//! and status codes only: bounded in number and free of personal data.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

/// The limit's name only (`credential`, `route:export`, `source`): never a key, an
/// integration or an address.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

/// A notification clock's name and how near its deadline is: bounded, no personal data.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadlineLabels {
    clock: &'static str,
    state: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms … ~8 s in 16 doubling buckets.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    rate_limited: Family<LimitLabels, Counter>,
    enumeration_suspected: Counter,
    backup: BackupMetrics,
    incident_alerts: Family<DeadlineLabels, Counter>,
    clocks_overdue: Gauge,
    clocks_approaching: Gauge,
    vendor_reviews_due: Gauge,
}

/// The last successful backup and failures, for alerting on a schedule that stopped working.
#[derive(Clone, Debug, Default)]
struct BackupMetrics {
    last_success: Gauge,
    duration_ms: Gauge,
    size_bytes: Gauge,
    failures: Counter,
    drill_rto_ms: Gauge,
    drill_failures: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Methods as static labels; anything unusual is folded into `OTHER` to bound cardinality.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What callback processing skipped, read at each scrape from the domain's counters.
#[derive(Debug)]
struct CallbackCollector(Arc<herald_domain::messages::CallbackStats>);

impl prometheus_client::collector::Collector for CallbackCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use std::sync::atomic::Ordering::Relaxed;
        for (name, help, value) in [
            (
                "callback_reports_unusable_number",
                "Provider reports skipped because the sender's number is not a valid phone number",
                self.0.unusable_numbers.load(Relaxed),
            ),
            (
                "callback_reports_foreign_number",
                "Provider reports ignored because they are for a business number Herald is not configured for",
                self.0.foreign_numbers.load(Relaxed),
            ),
            (
                "callbacks_dead_lettered",
                "Stored provider callbacks set aside after failing processing too often",
                self.0.dead_lettered.load(Relaxed),
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// Metrics with the callback processor's counters (`/metrics` of `herald serve`).
    pub fn with_callbacks(stats: Arc<herald_domain::messages::CallbackStats>) -> Self {
        Self::build(Some(stats))
    }

    pub fn new() -> Self {
        Self::build(None)
    }

    fn build(callbacks: Option<Arc<herald_domain::messages::CallbackStats>>) -> Self {
        let mut registry = Registry::with_prefix("herald");
        if let Some(stats) = callbacks {
            registry.register_collector(Box::new(CallbackCollector(stats)));
        }
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by method and route template",
            latency.clone(),
        );
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests answered 429 by a rate limit, by the limit's name",
            rate_limited.clone(),
        );
        let enumeration_suspected = Counter::default();
        registry.register(
            "enumeration_suspected",
            "Times one credential looked up more distinct numbers than limits.enumeration allows",
            enumeration_suspected.clone(),
        );
        let backup = BackupMetrics::default();
        registry.register(
            "backup_last_success_timestamp_seconds",
            "When the last backup was written (Unix time)",
            backup.last_success.clone(),
        );
        registry.register(
            "backup_last_duration_milliseconds",
            "How long the last successful backup took",
            backup.duration_ms.clone(),
        );
        registry.register(
            "backup_last_size_bytes",
            "The size of the last backup's encrypted payload",
            backup.size_bytes.clone(),
        );
        registry.register(
            "backup_failures",
            "Backups that failed",
            backup.failures.clone(),
        );
        registry.register(
            "backup_drill_rto_milliseconds",
            "How long the last restore drill took to restore and check a backup",
            backup.drill_rto_ms.clone(),
        );
        registry.register(
            "backup_drill_failures",
            "Restore drills that failed",
            backup.drill_failures.clone(),
        );
        let incident_alerts = Family::<DeadlineLabels, Counter>::default();
        registry.register(
            "incident_deadline_alerts",
            "Breach-notification deadlines reported as approaching (24 hours) or missed, by clock",
            incident_alerts.clone(),
        );
        let clocks_overdue = Gauge::default();
        registry.register(
            "incident_clocks_overdue",
            "Notification clocks of open incidents past their deadline, at the last check",
            clocks_overdue.clone(),
        );
        let clocks_approaching = Gauge::default();
        registry.register(
            "incident_clocks_approaching",
            "Notification clocks of open incidents within 24 hours of their deadline, at the last check",
            clocks_approaching.clone(),
        );
        let vendor_reviews_due = Gauge::default();
        registry.register(
            "vendor_reviews_due",
            "Approved vendors whose review falls due within 30 days (review them before they stop carrying messages)",
            vendor_reviews_due.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            latency,
            rate_limited,
            enumeration_suspected,
            backup,
            incident_alerts,
            clocks_overdue,
            clocks_approaching,
            vendor_reviews_due,
        }
    }

    pub fn backup_succeeded(&self, at_unix: i64, duration_ms: u64, bytes: u64) {
        self.backup.last_success.set(at_unix);
        self.backup
            .duration_ms
            .set(i64::try_from(duration_ms).unwrap_or(i64::MAX));
        self.backup
            .size_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn backup_failed(&self) {
        self.backup.failures.inc();
    }

    pub fn drill_finished(&self, ok: bool, rto_ms: u64) {
        if ok {
            self.backup
                .drill_rto_ms
                .set(i64::try_from(rto_ms).unwrap_or(i64::MAX));
        } else {
            self.backup.drill_failures.inc();
        }
    }

    pub fn incident_alert(&self, clock: &'static str, state: &'static str) {
        self.incident_alerts
            .get_or_create(&DeadlineLabels { clock, state })
            .inc();
    }

    pub fn incident_clocks(&self, approaching: u64, overdue: u64) {
        self.clocks_approaching
            .set(i64::try_from(approaching).unwrap_or(i64::MAX));
        self.clocks_overdue
            .set(i64::try_from(overdue).unwrap_or(i64::MAX));
    }

    pub fn vendor_reviews_due(&self, count: usize) {
        self.vendor_reviews_due
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    pub fn enumeration_suspected(&self) {
        self.enumeration_suspected.inc();
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method,
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_times_requests_by_route() {
        let metrics = Metrics::new();
        metrics.observe_request("GET", "/healthz", 200, Duration::from_millis(2));
        metrics.observe_request("GET", "/healthz", 200, Duration::from_millis(3));
        metrics.observe_request("BREW", "unmatched", 404, Duration::from_millis(1));
        let text = metrics.render();
        assert!(
            text.contains(
                r#"herald_http_requests_total{method="GET",route="/healthz",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"method="OTHER",route="unmatched",status="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("herald_http_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}

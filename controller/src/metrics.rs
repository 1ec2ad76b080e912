//! Prometheus metrics of the whole process (text format at `/metrics`): API requests and their
//! latency, reconciles per kind (count, errors, duration), work queue depth, and Docker API calls
//! and container listings per host. Served in the Prometheus text format 0.0.4, or in OpenMetrics
//! when the scraper asks for it.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, …
    pub verb: String,
    /// Plural resource (or `discovery`, `openapi`).
    pub resource: String,
    /// HTTP status code.
    pub code: String,
}

/// Labels of a latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// Verb.
    pub verb: String,
    /// Plural resource.
    pub resource: String,
}

/// Labels per controller kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `Stack`, `Lease`, `Host`.
    pub kind: String,
}

/// Labels per Docker host.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabels {
    /// Host name.
    pub host: String,
}

/// Every metric berth exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// API requests by verb, resource and code.
    pub requests: Family<RequestLabels, Counter>,
    /// API request latency by verb and resource (watches excluded).
    pub request_seconds: Family<VerbLabels, Histogram>,
    /// Reconciles by kind.
    pub reconciles: Family<KindLabels, Counter>,
    /// Failed reconciles by kind.
    pub reconcile_errors: Family<KindLabels, Counter>,
    /// Reconcile duration by kind.
    pub reconcile_seconds: Family<KindLabels, Histogram>,
    /// Objects waiting for or in reconciliation, by kind.
    pub queue_depth: Family<KindLabels, Gauge>,
    /// Docker API calls by host.
    pub docker_calls: Family<HostLabels, Counter>,
    /// Container listings by host (shared snapshots of the host's berth objects).
    pub docker_listings: Family<HostLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds =
            Family::<VerbLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let reconciles = Family::<KindLabels, Counter>::default();
        let reconcile_errors = Family::<KindLabels, Counter>::default();
        let reconcile_seconds =
            Family::<KindLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let queue_depth = Family::<KindLabels, Gauge>::default();
        let docker_calls = Family::<HostLabels, Counter>::default();
        let docker_listings = Family::<HostLabels, Counter>::default();
        registry.register("apiserver_requests", "API requests by verb, resource and code", requests.clone());
        registry.register("apiserver_request_duration_seconds", "API request latency", request_seconds.clone());
        registry.register("reconciles", "Reconciles by kind", reconciles.clone());
        registry.register("reconcile_errors", "Failed reconciles by kind", reconcile_errors.clone());
        registry.register("reconcile_duration_seconds", "Reconcile duration by kind", reconcile_seconds.clone());
        registry.register("queue_depth", "Objects queued for reconciliation by kind", queue_depth.clone());
        registry.register("docker_api_calls", "Docker API calls by host", docker_calls.clone());
        registry.register(
            "docker_listings",
            "Container listings by host (each a snapshot shared by every Stack and Lease on the host)",
            docker_listings.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            request_seconds,
            reconciles,
            reconcile_errors,
            reconcile_seconds,
            queue_depth,
            docker_calls,
            docker_listings,
        }
    }

    /// Every metric in the OpenMetrics text format (what `prometheus_client` writes).
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }

    /// Every metric in the Prometheus text format 0.0.4 (`text/plain; version=0.0.4`), which
    /// every Prometheus-compatible scraper reads.
    pub fn render(&self) -> String {
        openmetrics_to_prometheus_text(&self.render_openmetrics())
    }

    /// Runs one reconcile of `kind`: counted when it starts, timed, and counted as an error when
    /// it fails.
    pub async fn observe_reconcile<T, E>(
        &self,
        kind: &str,
        reconcile: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let labels = KindLabels { kind: kind.into() };
        self.reconciles.get_or_create(&labels).inc();
        let started = std::time::Instant::now();
        let result = reconcile.await;
        self.reconcile_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.reconcile_errors.get_or_create(&labels).inc();
        }
        result
    }

    /// Records one API request.
    pub fn observe_request(&self, verb: &str, resource: &str, code: u16, seconds: Option<f64>) {
        self.requests
            .get_or_create(&RequestLabels { verb: verb.into(), resource: resource.into(), code: code.to_string() })
            .inc();
        if let Some(s) = seconds {
            self.request_seconds.get_or_create(&VerbLabels { verb: verb.into(), resource: resource.into() }).observe(s);
        }
    }
}

/// Rewrites `prometheus_client`'s OpenMetrics text into the Prometheus text format 0.0.4. The
/// sample lines are the same in both for the metric types berth uses (counters, gauges,
/// histograms, no exemplars); what differs is the metadata: OpenMetrics names a counter family
/// without its `_total` suffix, has `# UNIT` lines and ends with `# EOF`.
pub fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                if !tail.is_empty() {
                    out.push(' ');
                    out.push_str(tail);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counter_families_by_their_samples_and_has_no_eof() {
        let m = Metrics::new();
        m.observe_request("list", "stacks", 200, Some(0.002));
        m.queue_depth.get_or_create(&KindLabels { kind: "Stack".into() }).set(3);
        let open = m.render_openmetrics();
        assert!(open.trim_end().ends_with("# EOF"), "{open}");
        let text = m.render();
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.contains("# TYPE berth_apiserver_requests_total counter\n"), "{text}");
        assert!(
            text.contains("# HELP berth_apiserver_requests_total API requests by verb, resource and code"),
            "{text}"
        );
        assert!(text.contains("# TYPE berth_queue_depth gauge\n"), "{text}");
        assert!(text.contains("# TYPE berth_apiserver_request_duration_seconds histogram\n"), "{text}");
        assert!(text.contains("berth_queue_depth{kind=\"Stack\"} 3\n"), "{text}");
    }
}

//! Prometheus metrics of the coordinator itself (`GET /metrics`), with `prometheus-client`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use kiln_proto::protocol::JobState;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// The coordinator's own counters and gauges.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    jobs: Family<StateLabel, Gauge>,
    workers_connected: Gauge,
    /// Metric points stored from workers.
    pub metric_points: Counter,
    /// Jobs accepted by `POST /api/jobs`.
    pub jobs_submitted: Counter,
}

impl Default for Telemetry {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kiln");
        let jobs = Family::<StateLabel, Gauge>::default();
        let workers_connected = Gauge::default();
        let metric_points = Counter::default();
        let jobs_submitted = Counter::default();
        registry.register("jobs", "Jobs by state", jobs.clone());
        registry.register(
            "workers_connected",
            "Workers with an open socket",
            workers_connected.clone(),
        );
        registry.register(
            "metric_points_ingested",
            "Metric points stored from workers",
            metric_points.clone(),
        );
        registry.register(
            "jobs_submitted",
            "Jobs accepted by POST /api/jobs",
            jobs_submitted.clone(),
        );
        Telemetry {
            registry,
            jobs,
            workers_connected,
            metric_points,
            jobs_submitted,
        }
    }
}

impl Telemetry {
    /// The text exposition, after setting the gauges to the given current values.
    pub fn render(&self, jobs_by_state: &[(JobState, u64)], workers_connected: usize) -> String {
        for (state, n) in jobs_by_state {
            self.jobs
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        self.workers_connected
            .set(i64::try_from(workers_connected).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

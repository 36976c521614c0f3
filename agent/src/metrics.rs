//! Prometheus metrics of the agent, on a registry of its own so tests can run several agents in
//! one process. Labels never carry tokens, keys or configuration contents.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// `configurations{state}` label of a configuration the agent rejected.
pub const STATE_REJECTED: &str = "Rejected";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering metric: {0}")]
    Register(#[from] prometheus::Error),
}

pub struct Metrics {
    registry: Registry,
    /// Polls by result: `ok` (complete listing), `not_modified`, `partial`, `error`.
    pub polls: IntCounterVec,
    /// Data-plane request latency by operation (`list`, `status`, `heartbeat`) and result.
    pub request_duration: HistogramVec,
    /// Unix time of the last complete, successful sync.
    pub last_successful_sync: Gauge,
    /// Configurations by compliance state, plus `Rejected`.
    pub configurations: IntGaugeVec,
    /// Reports by kind (`status`, `heartbeat`) and result (`sent`, `failed`).
    pub reports: IntCounterVec,
    /// Writes to the cluster by action (`apply`, `delete`) and result.
    pub writes: IntCounterVec,
    states: Mutex<BTreeMap<String, i64>>,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let polls = IntCounterVec::new(
            Opts::new(
                "fluxconfig_agent_polls_total",
                "Listings of desired configurations by result.",
            ),
            &["result"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "fluxconfig_agent_request_duration_seconds",
                "Latency of data-plane requests (long polls include their wait).",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
            &["operation", "result"],
        )?;
        let last_successful_sync = Gauge::new(
            "fluxconfig_agent_last_successful_sync_timestamp_seconds",
            "Unix time of the last complete, successful sync with the data plane.",
        )?;
        let configurations = IntGaugeVec::new(
            Opts::new(
                "fluxconfig_agent_configurations",
                "Configurations by compliance state (Rejected: failed the agent's validation).",
            ),
            &["state"],
        )?;
        let reports = IntCounterVec::new(
            Opts::new(
                "fluxconfig_agent_reports_total",
                "Status reports and heartbeats sent to the data plane, by result.",
            ),
            &["kind", "result"],
        )?;
        let writes = IntCounterVec::new(
            Opts::new(
                "fluxconfig_agent_cluster_writes_total",
                "FluxConfig writes to the cluster by action and result.",
            ),
            &["action", "result"],
        )?;
        registry.register(Box::new(polls.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(last_successful_sync.clone()))?;
        registry.register(Box::new(configurations.clone()))?;
        registry.register(Box::new(reports.clone()))?;
        registry.register(Box::new(writes.clone()))?;
        for r in ["ok", "not_modified", "partial", "error"] {
            polls.with_label_values(&[r]).inc_by(0);
        }
        for k in ["status", "heartbeat"] {
            for r in ["sent", "failed"] {
                reports.with_label_values(&[k, r]).inc_by(0);
            }
        }
        let m = Metrics {
            registry,
            polls,
            request_duration,
            last_successful_sync,
            configurations,
            reports,
            writes,
            states: Mutex::new(BTreeMap::new()),
        };
        m.set_states(&BTreeMap::new());
        Ok(m)
    }

    /// Replaces the per-state counts; states not given drop to zero.
    pub fn set_states(&self, counts: &BTreeMap<String, usize>) {
        let Ok(mut states) = self.states.lock() else {
            return;
        };
        for s in fluxconfig_api::ComplianceState::ALL {
            states.entry(s.as_str().to_string()).or_insert(0);
        }
        states.entry(STATE_REJECTED.to_string()).or_insert(0);
        for (state, value) in states.iter_mut() {
            *value = counts.get(state).copied().unwrap_or(0) as i64;
        }
        for (state, count) in counts {
            states.insert(state.clone(), *count as i64);
        }
        for (state, value) in states.iter() {
            self.configurations.with_label_values(&[state]).set(*value);
        }
    }

    pub fn poll(&self, result: &str) {
        self.polls.with_label_values(&[result]).inc();
    }

    pub fn report(&self, kind: &str, ok: bool) {
        let result = if ok { "sent" } else { "failed" };
        self.reports.with_label_values(&[kind, result]).inc();
    }

    pub fn write(&self, action: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.writes.with_label_values(&[action, result]).inc();
    }

    pub fn observe(&self, operation: &str, ok: bool, seconds: f64) {
        let result = if ok { "ok" } else { "error" };
        self.request_duration
            .with_label_values(&[operation, result])
            .observe(seconds);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_replaced() {
        let m = Metrics::new().expect("metrics");
        let mut c = BTreeMap::new();
        c.insert("Compliant".to_string(), 2);
        c.insert(STATE_REJECTED.to_string(), 1);
        m.set_states(&c);
        let text = m.render();
        assert!(text.contains("fluxconfig_agent_configurations{state=\"Compliant\"} 2"));
        assert!(text.contains("fluxconfig_agent_configurations{state=\"Rejected\"} 1"));
        assert!(text.contains("fluxconfig_agent_configurations{state=\"Pending\"} 0"));
        m.set_states(&BTreeMap::new());
        let text = m.render();
        assert!(text.contains("fluxconfig_agent_configurations{state=\"Compliant\"} 0"));
        assert!(text.contains("fluxconfig_agent_polls_total{result=\"error\"} 0"));
        assert!(text.contains("fluxconfig_agent_last_successful_sync_timestamp_seconds 0"));
    }
}

//! Prometheus metrics of the controller, on a registry of its own so tests can run several
//! controllers in one process.

use std::collections::HashMap;
use std::sync::Mutex;

use fluxconfig_api::ComplianceState;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering metric: {0}")]
    Register(#[from] prometheus::Error),
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    pub errors: IntCounterVec,
    pub configurations: IntGaugeVec,
    pub watch_restarts: IntCounterVec,
    pub api_writes: IntCounterVec,
    pub leader: IntGauge,
    /// Last compliance state per configuration, so the gauge moves between states exactly.
    states: Mutex<HashMap<String, ComplianceState>>,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "fluxconfig_controller_reconciles_total",
                "Reconciliations of FluxConfigs by result.",
            ),
            &["result"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "fluxconfig_controller_reconcile_duration_seconds",
                "Duration of one FluxConfig reconciliation.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["result"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "fluxconfig_controller_errors_total",
                "Reconciliation errors by kind.",
            ),
            &["kind"],
        )?;
        let configurations = IntGaugeVec::new(
            Opts::new(
                "fluxconfig_controller_configurations",
                "FluxConfigs by compliance state.",
            ),
            &["compliance_state"],
        )?;
        let watch_restarts = IntCounterVec::new(
            Opts::new(
                "fluxconfig_controller_watch_restarts_total",
                "Watch streams that failed and were restarted, by resource.",
            ),
            &["resource"],
        )?;
        let api_writes = IntCounterVec::new(
            Opts::new(
                "fluxconfig_controller_api_writes_total",
                "Writes to the Kubernetes API by verb and resource.",
            ),
            &["verb", "resource"],
        )?;
        let leader = IntGauge::new(
            "fluxconfig_controller_leader",
            "1 while this replica holds the leader lease.",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(configurations.clone()))?;
        registry.register(Box::new(watch_restarts.clone()))?;
        registry.register(Box::new(api_writes.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        for state in ComplianceState::ALL {
            configurations.with_label_values(&[state.as_str()]).set(0);
        }
        Ok(Metrics {
            registry,
            reconciles,
            reconcile_duration,
            errors,
            configurations,
            watch_restarts,
            api_writes,
            leader,
            states: Mutex::new(HashMap::new()),
        })
    }

    /// Records the current compliance of a configuration (`None` once it is gone).
    pub fn set_compliance(&self, key: &str, state: Option<ComplianceState>) {
        let Ok(mut states) = self.states.lock() else {
            return;
        };
        let previous = match state {
            Some(s) => states.insert(key.to_string(), s),
            None => states.remove(key),
        };
        if previous == state {
            return;
        }
        if let Some(p) = previous {
            self.configurations.with_label_values(&[p.as_str()]).dec();
        }
        if let Some(s) = state {
            self.configurations.with_label_values(&[s.as_str()]).inc();
        }
    }

    pub fn write(&self, verb: &str, resource: &str) {
        self.api_writes.with_label_values(&[verb, resource]).inc();
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
    fn compliance_gauge_moves_between_states() {
        let m = Metrics::new().expect("metrics");
        let g = |s: ComplianceState| m.configurations.with_label_values(&[s.as_str()]).get();
        m.set_compliance("ns/a", Some(ComplianceState::Pending));
        m.set_compliance("ns/b", Some(ComplianceState::Pending));
        assert_eq!(g(ComplianceState::Pending), 2);
        m.set_compliance("ns/a", Some(ComplianceState::Compliant));
        m.set_compliance("ns/a", Some(ComplianceState::Compliant));
        assert_eq!(g(ComplianceState::Pending), 1);
        assert_eq!(g(ComplianceState::Compliant), 1);
        m.set_compliance("ns/a", None);
        assert_eq!(g(ComplianceState::Compliant), 0);
        let text = m.render();
        assert!(
            text.contains("fluxconfig_controller_configurations{compliance_state=\"Pending\"} 1")
        );
        assert!(text.contains(
            "fluxconfig_controller_configurations{compliance_state=\"Non-Compliant\"} 0"
        ));
    }
}

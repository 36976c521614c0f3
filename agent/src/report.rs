//! Status reporting to the data plane.
//!
//! The reporter watches the agent's `FluxConfig`s (label `app.kubernetes.io/managed-by:
//! fluxconfig-agent`) and PUTs a configuration's status when it changes: the first change starts
//! a short debounce window ([`crate::config::AgentConfig::report_debounce`], 200 ms by default)
//! and later changes inside it are coalesced into the same report, so a change is reported
//! within a second (plus the request). A failed report is retried with its own backoff (1 s,
//! doubling, at most 30 s, or longer if `Retry-After` says so).
//!
//! Configurations the agent rejected (see [`crate::sync`]) are reported from the run loop's
//! rejection set instead of from a `FluxConfig`: provisioningState `Failed`, the field-named
//! errors as errorMessage, complianceState `Unknown`. A rejection overrides the status of a
//! `FluxConfig` of the same name that is still in the cluster from an earlier, valid version.
//!
//! Every report interval all known configurations are reported again (a lost report heals) and
//! a heartbeat with the last successful sync and the counts by compliance state is sent.
//! Statuses are keyed by configuration name, as the data plane's status path is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use fluxconfig_api::dataplane::AgentHeartbeat;
use fluxconfig_api::{ComplianceState, FluxConfig, FluxConfigStatus};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::apply::owned_selector;
use crate::client::{ClientError, DataPlaneClient};
use crate::http::Health;
use crate::metrics::{Metrics, STATE_REJECTED};
use crate::run::stopped;

const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Reports sent at the same time.
const CONCURRENCY: usize = 8;

/// Rejected configurations by name, with the status to report for each.
pub type RejectedSet = BTreeMap<String, FluxConfigStatus>;

#[derive(Default, Debug)]
struct Entry {
    watched: Option<FluxConfigStatus>,
    rejected: Option<FluxConfigStatus>,
    last_sent: Option<FluxConfigStatus>,
    due: Option<Instant>,
    in_flight: bool,
    failures: u32,
}

impl Entry {
    fn effective(&self) -> Option<&FluxConfigStatus> {
        self.rejected.as_ref().or(self.watched.as_ref())
    }
}

/// Equality that ignores the write time, which changes with every write.
fn same(a: Option<&FluxConfigStatus>, b: Option<&FluxConfigStatus>) -> bool {
    let strip = |s: &FluxConfigStatus| FluxConfigStatus {
        status_updated_at: None,
        ..s.clone()
    };
    a.map(strip) == b.map(strip)
}

/// The reporter's bookkeeping, free of I/O so the debounce and retry rules can be tested.
#[derive(Debug)]
pub struct ReportState {
    debounce: Duration,
    entries: BTreeMap<String, Entry>,
    /// Names seen since the watch (re)started listing; `None` outside of a re-list.
    relisting: Option<BTreeSet<String>>,
}

impl ReportState {
    pub fn new(debounce: Duration) -> Self {
        ReportState {
            debounce,
            entries: BTreeMap::new(),
            relisting: None,
        }
    }

    fn touch(&mut self, name: &str, now: Instant) {
        let debounce = self.debounce;
        let Some(e) = self.entries.get_mut(name) else {
            return;
        };
        if e.watched.is_none() && e.rejected.is_none() {
            self.entries.remove(name);
            return;
        }
        if !same(e.effective(), e.last_sent.as_ref()) && e.due.is_none() && !e.in_flight {
            e.due = Some(now + debounce);
        }
    }

    /// A `FluxConfig` was created or changed. One without any status yet has nothing to report.
    pub fn on_apply(&mut self, name: &str, status: Option<FluxConfigStatus>, now: Instant) {
        if let Some(seen) = self.relisting.as_mut() {
            seen.insert(name.to_string());
        }
        let status = status.filter(|s| *s != FluxConfigStatus::default());
        let e = self.entries.entry(name.to_string()).or_default();
        e.watched = status;
        self.touch(name, now);
    }

    pub fn on_delete(&mut self, name: &str, now: Instant) {
        if let Some(e) = self.entries.get_mut(name) {
            e.watched = None;
        }
        self.touch(name, now);
    }

    pub fn on_relist_start(&mut self) {
        self.relisting = Some(BTreeSet::new());
    }

    /// The watch finished listing: what it did not list is gone.
    pub fn on_relist_done(&mut self, now: Instant) {
        let Some(seen) = self.relisting.take() else {
            return;
        };
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(n, e)| e.watched.is_some() && !seen.contains(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            self.on_delete(&n, now);
        }
    }

    /// Replaces the set of rejected configurations.
    pub fn set_rejected(&mut self, rejected: &RejectedSet, now: Instant) {
        let names: BTreeSet<String> = self
            .entries
            .keys()
            .cloned()
            .chain(rejected.keys().cloned())
            .collect();
        for name in names {
            let e = self.entries.entry(name.clone()).or_default();
            let new = rejected.get(&name).cloned();
            if !same(e.rejected.as_ref(), new.as_ref()) {
                e.rejected = new;
            }
            self.touch(&name, now);
        }
    }

    /// Schedules every known configuration for a report now (the periodic full report).
    pub fn schedule_all(&mut self, now: Instant) {
        for e in self.entries.values_mut() {
            if e.effective().is_some() && !e.in_flight {
                e.due = Some(e.due.map_or(now, |d| d.min(now)));
            }
        }
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.entries.values().filter_map(|e| e.due).min()
    }

    /// Takes at most `limit` of the reports that are due, marking them in flight; the rest stay
    /// due.
    pub fn take_due(&mut self, now: Instant, limit: usize) -> Vec<(String, FluxConfigStatus)> {
        let mut out = Vec::new();
        for (name, e) in self.entries.iter_mut() {
            if out.len() >= limit {
                break;
            }
            if e.due.is_some_and(|d| d <= now) {
                e.due = None;
                if let Some(s) = e.effective().cloned() {
                    e.in_flight = true;
                    out.push((name.clone(), s));
                }
            }
        }
        out
    }

    /// Records the outcome of a report taken by [`Self::take_due`].
    pub fn on_result(
        &mut self,
        name: &str,
        sent: FluxConfigStatus,
        result: Result<(), Option<Duration>>,
        now: Instant,
    ) {
        let Some(e) = self.entries.get_mut(name) else {
            return;
        };
        e.in_flight = false;
        match result {
            Ok(()) => {
                e.failures = 0;
                e.last_sent = Some(sent);
            }
            Err(retry_after) => {
                e.failures = e.failures.saturating_add(1);
                let backoff = RETRY_MIN
                    .saturating_mul(1u32 << e.failures.min(6).saturating_sub(1))
                    .min(RETRY_MAX);
                let wait = retry_after.map_or(backoff, |r| r.max(backoff));
                e.due = Some(now + wait);
                return;
            }
        }
        self.touch(name, now);
    }

    /// Counts by state for the metric (`Rejected` for rejections) and for the heartbeat
    /// (compliance state only).
    pub fn counts(&self) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
        let mut metric = BTreeMap::new();
        let mut heartbeat = BTreeMap::new();
        for e in self.entries.values() {
            let Some(s) = e.effective() else { continue };
            let compliance = s.compliance_state.unwrap_or(ComplianceState::Unknown);
            *heartbeat
                .entry(compliance.as_str().to_string())
                .or_default() += 1;
            let state = if e.rejected.is_some() {
                STATE_REJECTED.to_string()
            } else {
                compliance.as_str().to_string()
            };
            *metric.entry(state).or_default() += 1;
        }
        (metric, heartbeat)
    }

    pub fn configuration_count(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.effective().is_some())
            .count()
    }
}

pub struct ReporterConfig {
    pub debounce: Duration,
    pub interval: Duration,
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Runs the reporter until `shutdown` becomes true. `rejected` carries the run loop's current
/// rejection set; `last_sync` the time of its last complete, successful sync.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    kube: Client,
    dataplane: DataPlaneClient,
    metrics: Arc<Metrics>,
    health: Health,
    config: ReporterConfig,
    mut rejected: watch::Receiver<RejectedSet>,
    last_sync: watch::Receiver<Option<String>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<FluxConfig> = Api::all(kube);
    let events = watcher(api, watcher::Config::default().labels(&owned_selector()))
        .default_backoff()
        .map_err(|e| e.to_string());
    let mut events = std::pin::pin!(events);
    let mut state = ReportState::new(config.debounce);
    let mut synced = false;
    let mut full = tokio::time::interval(config.interval);
    full.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rejected_open = true;
    // Reports run beside the loop rather than inside it: with a slow data plane a round can take
    // longer than the watch takes to deliver the next status, and a report must carry the status
    // of the moment it is sent, not the one from before the round started.
    let mut sending = FuturesUnordered::new();

    loop {
        let next_due = state.next_due().filter(|_| sending.len() < CONCURRENCY);
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            ev = events.next() => match ev {
                Some(Ok(ev)) => {
                    let now = Instant::now();
                    match ev {
                        watcher::Event::Init => state.on_relist_start(),
                        watcher::Event::InitApply(fc) | watcher::Event::Apply(fc) => {
                            state.on_apply(&fc.name_any(), fc.status.clone(), now);
                        }
                        watcher::Event::Delete(fc) => state.on_delete(&fc.name_any(), now),
                        watcher::Event::InitDone => {
                            state.on_relist_done(now);
                            if !synced {
                                synced = true;
                                health.set_watch_synced();
                            }
                        }
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "FluxConfig watch failed; retrying"),
                None => break,
            },
            changed = rejected.changed(), if rejected_open => {
                if changed.is_err() {
                    rejected_open = false;
                } else {
                    let set = rejected.borrow_and_update().clone();
                    state.set_rejected(&set, Instant::now());
                }
            }
            _ = sleep_until_opt(next_due) => {
                let room = CONCURRENCY.saturating_sub(sending.len());
                for (name, status) in state.take_due(Instant::now(), room) {
                    sending.push(send(&dataplane, &metrics, name, status));
                }
            }
            Some((name, status, outcome)) = sending.next(), if !sending.is_empty() => {
                state.on_result(&name, status, outcome, Instant::now());
            }
            _ = full.tick() => {
                if synced {
                    state.schedule_all(Instant::now());
                    heartbeat(&dataplane, &metrics, &state, &last_sync).await;
                }
            }
        }
        let (metric_counts, _) = state.counts();
        metrics.set_states(&metric_counts);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends one report; the outcome is what [`ReportState::on_result`] takes.
async fn send(
    dataplane: &DataPlaneClient,
    metrics: &Metrics,
    name: String,
    mut status: FluxConfigStatus,
) -> (String, FluxConfigStatus, Result<(), Option<Duration>>) {
    if status.status_updated_at.is_none() {
        status.status_updated_at = Some(now_rfc3339());
    }
    let started = std::time::Instant::now();
    let result = dataplane.put_status(&name, &status).await;
    metrics.observe("status", result.is_ok(), started.elapsed().as_secs_f64());
    metrics.report("status", result.is_ok());
    let outcome = match result {
        Ok(()) => {
            tracing::debug!(configuration = %name, "reported status");
            Ok(())
        }
        // The data plane no longer has the configuration: it is being deleted here too, and a
        // retry would only meet the same answer until its FluxConfig is gone.
        Err(ClientError::Http { status: 404, .. }) => {
            tracing::debug!(configuration = %name, "the data plane no longer has this configuration; not reporting it");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(configuration = %name, error = %e, "reporting status failed; will retry");
            Err(e.retry_after())
        }
    };
    (name, status, outcome)
}

async fn heartbeat(
    dataplane: &DataPlaneClient,
    metrics: &Metrics,
    state: &ReportState,
    last_sync: &watch::Receiver<Option<String>>,
) {
    let (_, compliance) = state.counts();
    let hb = AgentHeartbeat {
        agent_version: crate::version().to_string(),
        last_successful_sync: last_sync.borrow().clone(),
        configuration_count: state.configuration_count(),
        compliance,
    };
    let started = std::time::Instant::now();
    let result = dataplane.put_heartbeat(&hb).await;
    metrics.observe("heartbeat", result.is_ok(), started.elapsed().as_secs_f64());
    metrics.report("heartbeat", result.is_ok());
    if let Err(e) = result {
        tracing::warn!(error = %e, "sending heartbeat failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxconfig_api::ProvisioningState;

    fn status(c: ComplianceState) -> FluxConfigStatus {
        FluxConfigStatus {
            compliance_state: Some(c),
            provisioning_state: Some(ProvisioningState::Succeeded),
            ..FluxConfigStatus::default()
        }
    }

    const D: Duration = Duration::from_millis(200);

    #[test]
    fn changes_are_debounced_and_coalesced() {
        let t0 = Instant::now();
        let mut s = ReportState::new(D);
        s.on_apply("a", None, t0);
        assert_eq!(s.next_due(), None, "no status yet: nothing to report");
        s.on_apply("a", Some(status(ComplianceState::Pending)), t0);
        assert_eq!(s.next_due(), Some(t0 + D));
        // A second change inside the window does not push the report out.
        s.on_apply(
            "a",
            Some(status(ComplianceState::Compliant)),
            t0 + Duration::from_millis(150),
        );
        assert_eq!(s.next_due(), Some(t0 + D));
        assert!(s
            .take_due(t0 + Duration::from_millis(100), usize::MAX)
            .is_empty());
        let due = s.take_due(t0 + D, usize::MAX);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1.compliance_state, Some(ComplianceState::Compliant));
        s.on_result("a", due[0].1.clone(), Ok(()), t0 + D);
        assert_eq!(s.next_due(), None);
        // The same status again (only the write time differs) is not re-reported.
        let mut again = status(ComplianceState::Compliant);
        again.status_updated_at = Some("later".into());
        s.on_apply("a", Some(again), t0 + D);
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn change_during_flight_is_reported_after() {
        let t0 = Instant::now();
        let mut s = ReportState::new(D);
        s.on_apply("a", Some(status(ComplianceState::Pending)), t0);
        let due = s.take_due(t0 + D, usize::MAX);
        s.on_apply("a", Some(status(ComplianceState::Compliant)), t0 + D);
        assert_eq!(s.next_due(), None, "in flight");
        s.on_result("a", due[0].1.clone(), Ok(()), t0 + D * 2);
        assert_eq!(s.next_due(), Some(t0 + D * 3));
    }

    #[test]
    fn taking_is_bounded_and_the_rest_stay_due() {
        let t0 = Instant::now();
        let mut s = ReportState::new(D);
        for n in ["a", "b", "c"] {
            s.on_apply(n, Some(status(ComplianceState::Pending)), t0);
        }
        assert_eq!(s.take_due(t0 + D, 2).len(), 2);
        assert_eq!(s.next_due(), Some(t0 + D), "the third is still due");
        let rest = s.take_due(t0 + D, 2);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].0, "c");
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn failures_retry_with_backoff_and_retry_after() {
        let t0 = Instant::now();
        let mut s = ReportState::new(D);
        s.on_apply("a", Some(status(ComplianceState::Pending)), t0);
        let due = s.take_due(t0 + D, usize::MAX);
        s.on_result("a", due[0].1.clone(), Err(None), t0 + D);
        assert_eq!(s.next_due(), Some(t0 + D + RETRY_MIN));
        let due = s.take_due(t0 + D + RETRY_MIN, usize::MAX);
        s.on_result("a", due[0].1.clone(), Err(Some(Duration::from_secs(9))), t0);
        assert_eq!(s.next_due(), Some(t0 + Duration::from_secs(9)));
    }

    #[test]
    fn rejections_override_and_release() {
        let t0 = Instant::now();
        let mut s = ReportState::new(D);
        s.on_apply("a", Some(status(ComplianceState::Compliant)), t0);
        let due = s.take_due(t0 + D, usize::MAX);
        s.on_result("a", due[0].1.clone(), Ok(()), t0 + D);

        let failed = FluxConfigStatus {
            provisioning_state: Some(ProvisioningState::Failed),
            compliance_state: Some(ComplianceState::Unknown),
            error_message: Some("invalid configuration: spec.x: bad".into()),
            ..FluxConfigStatus::default()
        };
        let mut rejected = RejectedSet::new();
        rejected.insert("a".into(), failed.clone());
        rejected.insert("b".into(), failed.clone());
        s.set_rejected(&rejected, t0);
        let mut due = s.take_due(t0 + D, usize::MAX);
        due.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(due.len(), 2);
        assert!(due.iter().all(|(_, st)| *st == failed));
        for (n, st) in due {
            s.on_result(&n, st, Ok(()), t0 + D);
        }
        let (metric, heartbeat) = s.counts();
        assert_eq!(metric.get(STATE_REJECTED), Some(&2));
        assert_eq!(heartbeat.get("Unknown"), Some(&2));

        // Same rejection again: nothing new. Rejection lifted: the FluxConfig's status returns.
        s.set_rejected(&rejected, t0 + D);
        assert_eq!(s.next_due(), None);
        s.set_rejected(&RejectedSet::new(), t0 + D);
        let due = s.take_due(t0 + D * 2, usize::MAX);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, "a");
        assert_eq!(due[0].1.compliance_state, Some(ComplianceState::Compliant));
        assert_eq!(s.configuration_count(), 1);
    }

    #[test]
    fn relist_removes_what_is_gone_and_full_report_schedules_all() {
        let t0 = Instant::now();
        let mut s = ReportState::new(D);
        s.on_apply("a", Some(status(ComplianceState::Compliant)), t0);
        s.on_apply("b", Some(status(ComplianceState::Compliant)), t0);
        for (n, st) in s.take_due(t0 + D, usize::MAX) {
            s.on_result(&n, st, Ok(()), t0 + D);
        }
        s.on_relist_start();
        s.on_apply("a", Some(status(ComplianceState::Compliant)), t0 + D);
        s.on_relist_done(t0 + D);
        assert_eq!(s.configuration_count(), 1);
        s.schedule_all(t0 + D);
        let due = s.take_due(t0 + D, usize::MAX);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, "a");
    }
}

//! `fluxconfig-agent run`: the poll loop, the reporter and the HTTP endpoints wired together.
//!
//! One iteration: list (long-polling with the last ETag) → on 200, list the agent's own
//! `FluxConfig`s → [`crate::sync::plan`] → apply, delete → hand rejections to the reporter.
//!
//! Scheduling and safety:
//! - Any failure (transport, HTTP status, body too large or malformed, listing the cluster)
//!   changes nothing in the cluster and is retried after a `backon` exponential backoff with
//!   jitter (1 s doubling up to `max_backoff`, 30 s by default); a non-retryable failure (e.g.
//!   401) waits the full `max_backoff`; a `Retry-After` longer than the backoff wins.
//! - A partial listing applies what it carries but deletes nothing, keeps no ETag and is retried
//!   like a failure. The ETag is kept only after a complete listing was applied without error,
//!   so anything that failed is tried again with the next full listing.
//! - With an ETag and long polling the next request follows at once (at most one a second; the
//!   server holds it until something changes); otherwise polls start `poll_interval` apart. Every [`FULL_RESYNC_AFTER`] the ETag is dropped
//!   so a full listing repairs drift in the cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use fluxconfig_api::FluxConfig;
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::apply::Applier;
use crate::client::{is_path_safe, ClientError, DataPlaneClient, ListOutcome};
use crate::config::AgentConfig;
use crate::http::{self, Health};
use crate::metrics::{Metrics, MetricsError};
use crate::report::{self, RejectedSet, ReporterConfig};
use crate::sync::{self, ConfigKey};
use crate::token::TokenProvider;

/// Longest time the agent trusts an ETag before asking for a full listing again.
pub const FULL_RESYNC_AFTER: Duration = Duration::from_secs(600);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Shortest time between two listings when long polling: short enough that a burst of changes
/// reaches the cluster well within a second, long enough that a data plane answering 200 to
/// every long poll costs at most five listings a second.
const MIN_GAP_AFTER_CHANGE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("serving metrics on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("setting up the data-plane client: {0}")]
    Client(#[from] ClientError),
}

/// What one iteration achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    NotModified,
    /// Complete listing, everything written.
    Synced,
    /// Partial listing, or some write failed: retry soon with a full listing.
    Incomplete,
}

#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error(transparent)]
    DataPlane(#[from] ClientError),
    #[error("listing the agent's FluxConfigs: {0}")]
    Cluster(kube::Error),
}

/// Runs until `shutdown` becomes true.
pub async fn run(
    client: Client,
    config: AgentConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::new()?);
    let health = Health::default();
    let listener = http::bind(config.metrics_addr)
        .await
        .map_err(|source| Error::Http {
            addr: config.metrics_addr,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(config.metrics_addr);
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    let mut http_shutdown = shutdown.clone();
    // Everything runs inside this future rather than in spawned tasks, so dropping or aborting
    // it (a killed agent task, a test) stops the metrics server and the reporter too instead of
    // leaving them running detached.
    let server = http::serve(listener, metrics.clone(), health.clone(), async move {
        let _ = http_shutdown.wait_for(|s| *s).await;
    });

    let token = Arc::new(TokenProvider::new(config.token.clone()));
    let dataplane = DataPlaneClient::new(&config, token)?;
    if let Some(proxy) = &config.proxy {
        tracing::info!(%proxy, "data-plane requests go through the configured proxy");
    }
    let (rejected_tx, rejected_rx) = watch::channel(RejectedSet::new());
    let (sync_tx, sync_rx) = watch::channel(None::<String>);
    let reporter = report::run(
        client.clone(),
        dataplane.clone(),
        metrics.clone(),
        health.clone(),
        ReporterConfig {
            debounce: config.report_debounce,
            interval: config.report_interval,
        },
        rejected_rx,
        sync_rx,
        shutdown.clone(),
    );

    let mut poller = Poller {
        applier: Applier::new(client, metrics.clone()),
        dataplane,
        metrics,
        health,
        config,
        etag: None,
        etag_since: Instant::now(),
        rejected_tx,
        sync_tx,
    };
    let ((), (), served) = tokio::join!(poller.run(shutdown), reporter, server);
    if let Err(e) = served {
        tracing::warn!(error = %e, "the metrics server stopped with an error");
    }
    Ok(())
}

struct Poller {
    applier: Applier,
    dataplane: DataPlaneClient,
    metrics: Arc<Metrics>,
    health: Health,
    config: AgentConfig,
    etag: Option<String>,
    etag_since: Instant,
    rejected_tx: watch::Sender<RejectedSet>,
    sync_tx: watch::Sender<Option<String>>,
}

fn backoff(max: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(MIN_BACKOFF.min(max))
        .with_max_delay(max)
        .without_max_times()
        .build()
        // backon adds its jitter after capping, which could double the longest wait; the cap is
        // what operators configure and what "catches up within one backoff cap" relies on.
        .map(move |d| d.min(max))
}

impl Poller {
    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) {
        let max = self.config.max_backoff.max(Duration::from_millis(10));
        let mut delays = backoff(max);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let started = Instant::now();
            let result = tokio::select! {
                r = self.poll_once() => r,
                _ = stopped(&mut shutdown) => return,
            };
            let wait = match result {
                Ok(Outcome::NotModified) => {
                    delays = backoff(max);
                    self.until(started + self.config.poll_interval)
                }
                Ok(Outcome::Synced) => {
                    delays = backoff(max);
                    if self.etag.is_some() && self.config.long_poll.is_some() {
                        // The server holds the next request until something changes; the gap
                        // only guards against one that answers 200 every time.
                        self.until(started + MIN_GAP_AFTER_CHANGE)
                    } else {
                        self.until(started + self.config.poll_interval)
                    }
                }
                Ok(Outcome::Incomplete) => delays.next().unwrap_or(max),
                Err(e) => {
                    let retryable = matches!(&e, PollError::Cluster(_))
                        || matches!(&e, PollError::DataPlane(c) if c.is_retryable());
                    let retry_after = match &e {
                        PollError::DataPlane(c) => c.retry_after(),
                        PollError::Cluster(_) => None,
                    };
                    let next = if retryable { delays.next() } else { None };
                    let wait = failure_delay(retryable, retry_after, next, max);
                    if retryable {
                        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "sync failed; nothing in the cluster was changed");
                    } else {
                        tracing::error!(error = %e, retry_in_ms = wait.as_millis() as u64, "sync failed; nothing in the cluster was changed");
                    }
                    wait
                }
            };
            if wait > Duration::ZERO {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped(&mut shutdown) => return,
                }
            }
        }
    }

    fn mark_synced(&self) {
        let now = k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let _ = self.sync_tx.send_replace(Some(now));
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.metrics.last_successful_sync.set(unix);
    }

    fn until(&self, at: Instant) -> Duration {
        at.saturating_duration_since(Instant::now())
    }

    async fn poll_once(&mut self) -> Result<Outcome, PollError> {
        if self.etag.is_some() && self.etag_since.elapsed() >= FULL_RESYNC_AFTER {
            self.etag = None;
        }
        let started = std::time::Instant::now();
        let listed = self
            .dataplane
            .list(self.etag.as_deref(), self.config.long_poll)
            .await;
        self.metrics
            .observe("list", listed.is_ok(), started.elapsed().as_secs_f64());
        let (list, etag) = match listed {
            Ok(ListOutcome::NotModified) => {
                // A 304 is only possible with an ETag, which is kept only after a complete
                // listing was fully applied: the cluster is still in sync.
                self.metrics.poll("not_modified");
                self.health.set_listed();
                self.mark_synced();
                return Ok(Outcome::NotModified);
            }
            Ok(ListOutcome::Listing { list, etag }) => (list, etag),
            Err(e) => {
                self.metrics.poll("error");
                return Err(e.into());
            }
        };
        self.health.set_listed();
        let complete = list.is_complete();
        self.metrics.poll(if complete { "ok" } else { "partial" });

        let owned = match self.applier.owned().await {
            Ok(o) => o,
            Err(e) => {
                // Without knowing what exists nothing is written; keep the ETag unset so the
                // next poll returns the full listing again.
                self.etag = None;
                return Err(PollError::Cluster(e));
            }
        };
        let existing: BTreeMap<ConfigKey, &FluxConfig> = owned
            .iter()
            .map(|fc| {
                (
                    ConfigKey::new(fc.namespace().unwrap_or_default(), fc.name_any()),
                    fc,
                )
            })
            .collect();
        let keys: Vec<ConfigKey> = existing.keys().cloned().collect();
        let plan = sync::plan(&list, &keys);

        let mut all_ok = true;
        for d in &plan.apply {
            if let Err(e) = self.applier.apply(d, existing.get(&d.key).copied()).await {
                all_ok = false;
                tracing::error!(configuration = %d.key, error = %e, "writing configuration failed");
            }
        }
        let now = k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let mut rejected = if complete {
            RejectedSet::new()
        } else {
            // A partial listing says nothing about the items it left out.
            let mut keep = self.rejected_tx.borrow().clone();
            for d in &plan.apply {
                keep.remove(&d.key.name);
            }
            keep
        };
        for r in &plan.rejected {
            match r.name.as_deref() {
                Some(name) if is_path_safe(name) => {
                    tracing::warn!(configuration = %name, error = %r.errors, "configuration rejected");
                    rejected.insert(name.to_string(), r.status(&now));
                }
                Some(name) => {
                    tracing::warn!(configuration = ?name, error = %r.errors, "configuration rejected; its name cannot be reported");
                }
                None => {
                    tracing::warn!(error = %r.errors, "listing item rejected; it has no name to report under");
                }
            }
        }
        self.rejected_tx.send_if_modified(|current| {
            let changed = !same_rejections(current, &rejected);
            if changed {
                *current = rejected;
            }
            changed
        });

        if let Some(reason) = plan.deletions_skipped {
            if !owned.is_empty() {
                tracing::info!(reason, "not deleting anything after this listing");
            }
        }
        for key in &plan.delete {
            let terminating = existing
                .get(key)
                .is_some_and(|fc| fc.metadata.deletion_timestamp.is_some());
            if terminating {
                // Already being deleted (the controller's finalizer is cleaning up).
                continue;
            }
            if let Err(e) = self.applier.delete(key).await {
                all_ok = false;
                tracing::error!(configuration = %key, error = %e, "deleting configuration failed");
            }
        }

        if complete && all_ok {
            self.etag = etag;
            self.etag_since = Instant::now();
            self.mark_synced();
            Ok(Outcome::Synced)
        } else {
            self.etag = None;
            if !complete {
                tracing::warn!(
                    received = list.value.len(),
                    count = list.count,
                    "the data plane sent a partial listing; retrying"
                );
            }
            Ok(Outcome::Incomplete)
        }
    }
}

/// How long to wait after a failed poll: the next backoff step when the failure is likely
/// transient, the longest backoff when it is not, and never less than `Retry-After`.
fn failure_delay(
    retryable: bool,
    retry_after: Option<Duration>,
    next_backoff: Option<Duration>,
    max: Duration,
) -> Duration {
    let base = if retryable {
        next_backoff.unwrap_or(max)
    } else {
        max
    };
    retry_after.map_or(base, |r| r.max(base))
}

/// Resolves once `shutdown` is true (or its sender is gone); holds no borrow across awaits, so
/// the futures that select on it stay `Send`.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Equality of rejection sets ignoring report times, so an unchanged rejection is not
/// re-announced on every poll.
fn same_rejections(a: &RejectedSet, b: &RejectedSet) -> bool {
    a.len() == b.len()
        && a.iter().zip(b.iter()).all(|((na, sa), (nb, sb))| {
            na == nb
                && sa.error_message == sb.error_message
                && sa.provisioning_state == sb.provisioning_state
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxconfig_api::FluxConfigStatus;

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(30);
        let delays: Vec<Duration> = backoff(max).take(12).collect();
        assert_eq!(delays.len(), 12, "never runs out");
        assert!(delays[0] >= MIN_BACKOFF);
        // Jitter never pushes a delay past the cap.
        assert!(delays.iter().all(|d| *d <= max), "{delays:?}");
        assert_eq!(delays[11], max, "{delays:?}");
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let max = Duration::from_secs(30);
        let s = Duration::from_secs;
        assert_eq!(failure_delay(true, None, Some(s(2)), max), s(2));
        assert_eq!(failure_delay(true, Some(s(10)), Some(s(2)), max), s(10));
        assert_eq!(failure_delay(true, Some(s(1)), Some(s(2)), max), s(2));
        assert_eq!(failure_delay(false, None, None, max), max);
        assert_eq!(failure_delay(false, Some(s(120)), None, max), s(120));
    }

    #[test]
    fn rejection_sets_compare_without_times() {
        let status = |at: &str, msg: &str| FluxConfigStatus {
            provisioning_state: Some(fluxconfig_api::ProvisioningState::Failed),
            error_message: Some(msg.to_string()),
            status_updated_at: Some(at.to_string()),
            ..FluxConfigStatus::default()
        };
        let mut a = RejectedSet::new();
        a.insert("x".into(), status("t1", "m"));
        let mut b = RejectedSet::new();
        b.insert("x".into(), status("t2", "m"));
        assert!(same_rejections(&a, &b));
        b.insert("x".into(), status("t2", "other"));
        assert!(!same_rejections(&a, &b));
    }
}

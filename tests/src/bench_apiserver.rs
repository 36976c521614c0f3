//! Latency / scale benchmark of the Kubernetes API server emulator.
//!
//! Starts an in-process emulator, opens `watches` concurrent kube-rs watches on one
//! namespace, then creates `objects` ConfigMaps (16 requests in flight) and measures:
//! - request latency of every create (p50 / p99 / max),
//! - for every watch, whether it received the ADDED event of every object, and the lag
//!   between a create being sent and each watch receiving its event (p50 / p99 / max),
//! - how long after the last write the slowest watch caught up (drain time).
//!
//! `testbed bench-apiserver` runs it with 10,000 objects and 100 watches.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

use crate::apiserver::{self, Config};

const NAMESPACE: &str = "bench";
const IN_FLIGHT: usize = 16;
/// How long the watches may take to catch up after the last write.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

/// The outcome of one benchmark run.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub objects: usize,
    pub watches: usize,
    /// Create requests that succeeded.
    pub created: usize,
    /// Wall time of the write phase.
    pub write_elapsed: Duration,
    pub latency_p50: Duration,
    pub latency_p99: Duration,
    pub latency_max: Duration,
    /// `objects * watches`.
    pub events_expected: usize,
    /// Distinct (watch, object) ADDED events received.
    pub events_received: usize,
    /// Watches that received every object's event.
    pub watches_complete: usize,
    /// Watch streams that had to be re-opened (ended or failed mid-run).
    pub watch_reconnects: usize,
    pub lag_p50: Duration,
    pub lag_p99: Duration,
    pub lag_max: Duration,
    /// From the last create response until the slowest watch had every event
    /// (or until the deadline when some never did).
    pub drain: Duration,
    /// Every watch received every event and no request failed.
    pub kept_up: bool,
    /// First few errors seen (requests or watches).
    pub errors: Vec<String>,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "apiserver bench: {} objects, {} watches",
            self.objects, self.watches
        )?;
        writeln!(
            f,
            "  creates: {}/{} in {:.2?} ({:.0}/s); latency p50 {:.2?} p99 {:.2?} max {:.2?}",
            self.created,
            self.objects,
            self.write_elapsed,
            self.created as f64 / self.write_elapsed.as_secs_f64().max(1e-9),
            self.latency_p50,
            self.latency_p99,
            self.latency_max
        )?;
        writeln!(
            f,
            "  watch events: {}/{} received; {}/{} watches complete; {} reconnects",
            self.events_received,
            self.events_expected,
            self.watches_complete,
            self.watches,
            self.watch_reconnects
        )?;
        writeln!(
            f,
            "  watch lag: p50 {:.2?} p99 {:.2?} max {:.2?}; drain after last write {:.2?}",
            self.lag_p50, self.lag_p99, self.lag_max, self.drain
        )?;
        write!(f, "  kept up: {}", if self.kept_up { "yes" } else { "NO" })?;
        for e in &self.errors {
            write!(f, "\n  error: {e}")?;
        }
        Ok(())
    }
}

struct WatchResult {
    received: usize,
    lags_us: Vec<u64>,
    reconnects: usize,
    finished_at: Option<Instant>,
    error: Option<String>,
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_micros(sorted[idx.min(sorted.len() - 1)])
}

fn object_index(name: &str) -> Option<usize> {
    name.strip_prefix("obj-")?.parse().ok()
}

#[allow(clippy::too_many_arguments)]
async fn run_watch(
    api: Api<ConfigMap>,
    start_rv: String,
    objects: usize,
    sent: Arc<Vec<OnceLock<Instant>>>,
    ready: Arc<AtomicUsize>,
    ready_notify: Arc<tokio::sync::Notify>,
    deadline: Arc<OnceLock<Instant>>,
) -> WatchResult {
    let mut seen = vec![false; objects];
    let mut result = WatchResult {
        received: 0,
        lags_us: Vec::with_capacity(objects),
        reconnects: 0,
        finished_at: None,
        error: None,
    };
    let mut rv = start_rv;
    let mut first = true;
    loop {
        let stream = match api.watch(&WatchParams::default().timeout(290), &rv).await {
            Ok(s) => s,
            Err(e) => {
                if first {
                    ready.fetch_add(1, Ordering::SeqCst);
                    ready_notify.notify_one();
                    first = false;
                }
                result.error = Some(format!("watch start: {e}"));
                if deadline.get().is_some_and(|d| Instant::now() > *d) {
                    return result;
                }
                result.reconnects += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if first {
            ready.fetch_add(1, Ordering::SeqCst);
            ready_notify.notify_one();
            first = false;
        }
        let mut stream = stream.boxed();
        loop {
            let next = match deadline.get() {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, stream.next()).await {
                        Ok(n) => n,
                        Err(_) => return result,
                    }
                }
                // Writes still running: the deadline is not set yet; poll it periodically.
                None => match tokio::time::timeout(Duration::from_millis(500), stream.next()).await
                {
                    Ok(n) => n,
                    Err(_) => continue,
                },
            };
            match next {
                Some(Ok(WatchEvent::Added(cm))) => {
                    if let Some(v) = cm.metadata.resource_version.clone() {
                        rv = v;
                    }
                    let Some(i) = cm.metadata.name.as_deref().and_then(object_index) else {
                        continue;
                    };
                    if i < objects && !seen[i] {
                        seen[i] = true;
                        result.received += 1;
                        let now = Instant::now();
                        if let Some(t) = sent[i].get() {
                            result
                                .lags_us
                                .push(now.saturating_duration_since(*t).as_micros() as u64);
                        }
                        if result.received == objects {
                            result.finished_at = Some(now);
                            return result;
                        }
                    }
                }
                Some(Ok(WatchEvent::Modified(o))) | Some(Ok(WatchEvent::Deleted(o))) => {
                    if let Some(v) = o.metadata.resource_version {
                        rv = v;
                    }
                }
                Some(Ok(WatchEvent::Bookmark(b))) => rv = b.metadata.resource_version,
                Some(Ok(WatchEvent::Error(st))) => {
                    result.error = Some(format!("watch ERROR event {}: {}", st.code, st.message));
                    if st.code == 410 {
                        // Events were lost for good; this watch cannot complete.
                        return result;
                    }
                    break;
                }
                Some(Err(e)) => {
                    result.error = Some(format!("watch stream: {e}"));
                    break;
                }
                None => break,
            }
        }
        result.reconnects += 1;
    }
}

/// Runs the benchmark against a fresh in-process emulator and prints the report.
pub async fn run_apiserver_bench(objects: usize, watches: usize) -> BenchReport {
    let mut report = BenchReport {
        objects,
        watches,
        created: 0,
        write_elapsed: Duration::ZERO,
        latency_p50: Duration::ZERO,
        latency_p99: Duration::ZERO,
        latency_max: Duration::ZERO,
        events_expected: objects * watches,
        events_received: 0,
        watches_complete: 0,
        watch_reconnects: 0,
        lag_p50: Duration::ZERO,
        lag_p99: Duration::ZERO,
        lag_max: Duration::ZERO,
        drain: Duration::ZERO,
        kept_up: false,
        errors: Vec::new(),
    };
    let config = Config {
        // Keep every event of the run replayable so a reconnecting watch can catch up.
        watch_history: (objects + 1_000).max(Config::default().watch_history),
        ..Config::default()
    };
    let server = match apiserver::start(config).await {
        Ok(s) => s,
        Err(e) => {
            report.errors.push(format!("start emulator: {e}"));
            println!("{report}");
            return report;
        }
    };
    let client = match server.client().await {
        Ok(c) => c,
        Err(e) => {
            report.errors.push(format!("client: {e}"));
            println!("{report}");
            server.shutdown().await;
            return report;
        }
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))
            .expect("namespace object");
    if let Err(e) = namespaces.create(&PostParams::default(), &ns).await {
        report.errors.push(format!("create namespace: {e}"));
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let start_rv = match api.list(&ListParams::default().limit(1)).await {
        Ok(l) => l.metadata.resource_version.unwrap_or_default(),
        Err(e) => {
            report.errors.push(format!("initial list: {e}"));
            String::from("0")
        }
    };

    let sent: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..objects).map(|_| OnceLock::new()).collect());
    let ready = Arc::new(AtomicUsize::new(0));
    let ready_notify = Arc::new(tokio::sync::Notify::new());
    let deadline: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let handles: Vec<_> = (0..watches)
        .map(|_| {
            tokio::spawn(run_watch(
                api.clone(),
                start_rv.clone(),
                objects,
                sent.clone(),
                ready.clone(),
                ready_notify.clone(),
                deadline.clone(),
            ))
        })
        .collect();
    // Writes start only once every watch is open.
    let open_deadline = Instant::now() + Duration::from_secs(60);
    while ready.load(Ordering::SeqCst) < watches && Instant::now() < open_deadline {
        let _ = tokio::time::timeout(Duration::from_millis(100), ready_notify.notified()).await;
    }

    let write_start = Instant::now();
    let results: Vec<Result<Duration, String>> = futures::stream::iter(0..objects)
        .map(|i| {
            let api = api.clone();
            let sent = sent.clone();
            async move {
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("obj-{i}"), "labels": {"bench": "yes"}},
                    "data": {"index": i.to_string()},
                }))
                .expect("configmap");
                let t = Instant::now();
                let _ = sent[i].set(t);
                api.create(&PostParams::default(), &cm)
                    .await
                    .map(|_| t.elapsed())
                    .map_err(|e| format!("create obj-{i}: {e}"))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let last_write = Instant::now();
    report.write_elapsed = last_write - write_start;
    let _ = deadline.set(last_write + DRAIN_DEADLINE);

    let mut latencies: Vec<u64> = Vec::with_capacity(objects);
    for r in results {
        match r {
            Ok(d) => latencies.push(d.as_micros() as u64),
            Err(e) => {
                if report.errors.len() < 5 {
                    report.errors.push(e);
                }
            }
        }
    }
    report.created = latencies.len();
    latencies.sort_unstable();
    report.latency_p50 = percentile(&latencies, 0.50);
    report.latency_p99 = percentile(&latencies, 0.99);
    report.latency_max = Duration::from_micros(latencies.last().copied().unwrap_or(0));

    let mut lags: Vec<u64> = Vec::with_capacity(objects * watches);
    let mut slowest = last_write;
    let mut all_finished = true;
    let results: Vec<WatchResult> =
        futures::future::try_join_all(handles)
            .await
            .unwrap_or_else(|e| {
                report.errors.push(format!("watch task: {e}"));
                Vec::new()
            });
    for r in &results {
        report.events_received += r.received;
        report.watch_reconnects += r.reconnects;
        lags.extend_from_slice(&r.lags_us);
        if r.received == objects {
            report.watches_complete += 1;
        }
        match r.finished_at {
            Some(t) => slowest = slowest.max(t),
            None => all_finished = false,
        }
        if let Some(e) = &r.error {
            if report.errors.len() < 10 {
                report.errors.push(e.clone());
            }
        }
    }
    report.drain = if all_finished && !results.is_empty() {
        slowest.saturating_duration_since(last_write)
    } else {
        Instant::now().saturating_duration_since(last_write)
    };
    lags.sort_unstable();
    report.lag_p50 = percentile(&lags, 0.50);
    report.lag_p99 = percentile(&lags, 0.99);
    report.lag_max = Duration::from_micros(lags.last().copied().unwrap_or(0));
    report.kept_up = report.created == objects
        && report.watches_complete == watches
        && report.events_received == report.events_expected;
    println!("{report}");
    server.shutdown().await;
    report
}

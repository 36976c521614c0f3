//! `testbed bench`: the system's figures in one run, against the in-process API emulator, Flux
//! simulator and data plane, with the agent and controller as separate processes.
//!
//! Measured, in this order:
//! - the yardstick: one emulator GET round trip over loopback TLS from the bench process, the
//!   floor any controller or agent API call sits on;
//! - idle RSS of both binaries;
//! - propagation latency (`az … create` PUT to the data plane → FluxConfig exists) and
//!   compliance latency (a Flux Kustomization turns failed → the data plane holds Non-Compliant);
//! - the bytes of an unchanged (304) listing;
//! - controller convergence: FluxConfigs created directly in the API (the agent is bypassed, so
//!   this measures the controller), each 1 GitRepository + 2 Kustomizations, until every one is
//!   Compliant; API requests of the system under test per configuration;
//! - RSS at the largest scale, then API writes over a window in which nothing changes.
//!
//! Requests of the bench itself and of the Flux simulator carry the emulator's client tag, so
//! the counts are the agent's and the controller's alone.

pub mod procs;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use fluxconfig_api::dataplane::{ClusterRef, ClusterType, API_VERSION};
use fluxconfig_api::{ComplianceState, FluxConfig};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;

use crate::apiserver::{self, ApiServer};
use crate::azcli::{self, FluxArgs};
use crate::dataplane::{self, Dataplane, DataplaneConfig};
use crate::{fixtures, fluxsim};

pub use procs::Binaries;

const TOKEN: &str = "bench-cluster-token-0123456789abcdef";
const NS_PROP: &str = "bench-prop";
const NS_SCALE: &str = "bench";
const RESOURCE_GROUP: &str = "bench-rg";
const CLUSTER_NAME: &str = "bench-cluster";
const BUILD_HINT: &str =
    "cargo build --release -p fluxconfig-agent -p fluxconfig-controller -p fluxconfig-testbed";
/// Separates the generated part of BENCHMARKS.md from hand-written analysis, which is kept.
const NOTES_MARKER: &str =
    "<!-- Hand-written notes below this line are kept by `testbed bench`. -->";
const EMPTY_KUSTOMIZATION: &str =
    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\n";

/// Least time between two propagation samples' creates; see the agent's listing guard.
const CREATE_PACING: Duration = Duration::from_millis(1100);
const GOAL_IDLE_KIB: u64 = 15 * 1024;
const GOAL_LOADED_KIB: u64 = 100 * 1024;
const GOAL_304_BYTES: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{} not found; build the binaries first: {BUILD_HINT}", path.display())]
    MissingBinary { path: PathBuf },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("API emulator: {0}")]
    Apiserver(#[from] apiserver::Error),
    #[error("data plane: {0}")]
    Dataplane(#[from] dataplane::Error),
    #[error("Flux simulator: {0}")]
    FluxSim(#[from] fluxsim::Error),
    #[error("fixture repository: {0}")]
    Fixture(#[from] fixtures::Error),
    #[error("az: {0}")]
    Az(#[from] azcli::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Setup(String),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Cumulative configuration counts, ascending: each step adds configurations up to it.
    pub scales: Vec<usize>,
    /// Propagation and compliance samples.
    pub samples: usize,
    /// The no-change window.
    pub steady: Duration,
    /// Per scale step; a step that does not converge in time is reported as such.
    pub converge_timeout: Duration,
    /// `None`: agent and controller as tasks of this process (no RSS figures).
    pub binaries: Option<Binaries>,
    /// Where to write the Markdown report.
    pub output: Option<PathBuf>,
    /// The command line, for the report.
    pub command: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    pub samples: usize,
    pub failures: usize,
    pub p50: Duration,
    pub p99: Duration,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Convergence {
    /// Configurations in the cluster at the end of the step.
    pub total: usize,
    /// Configurations this step created.
    pub added: usize,
    /// First create sent → last one Compliant (or the timeout).
    pub elapsed: Duration,
    pub compliant: usize,
    pub converged: bool,
    /// Requests (and writes) of agent + controller during the step, 2 s of settling included.
    pub requests: u64,
    pub writes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Steady {
    pub window: Duration,
    pub requests: u64,
    pub writes: u64,
    /// Writes of the bench and the Flux simulator, to show the cluster was quiet.
    pub other_writes: u64,
    pub dataplane_listings: u64,
    pub dataplane_not_modified: u64,
    pub dataplane_status_reports: u64,
    pub dataplane_heartbeats: u64,
}

impl Steady {
    pub fn writes_per_minute(&self) -> f64 {
        self.writes as f64 * 60.0 / self.window.as_secs_f64().max(1e-9)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rss {
    pub agent_kib: u64,
    pub controller_kib: u64,
}

#[derive(Clone, Debug, Default)]
pub struct BenchReport {
    pub machine: String,
    pub command: String,
    pub started_at: String,
    pub in_process: bool,
    /// Directory of the agent and controller binaries when run as processes.
    pub binaries_dir: Option<String>,
    pub yardstick_p50: Option<Duration>,
    pub propagation: Option<Latency>,
    pub compliance: Option<Latency>,
    pub bytes_per_304: Option<u64>,
    pub convergence: Vec<Convergence>,
    pub steady: Option<Steady>,
    pub rss_idle: Option<Rss>,
    pub rss_loaded: Option<(usize, Rss)>,
    /// The same processes again at the end of the steady window: the largest scale at rest.
    pub rss_settled: Option<Rss>,
    pub total: Duration,
    /// What went wrong or was left out, in words.
    pub notes: Vec<String>,
}

#[derive(Parser)]
struct Az {
    #[command(flatten)]
    flux: FluxArgs,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

fn percentiles(mut v: Vec<Duration>, failures: usize) -> Latency {
    v.sort_unstable();
    let at = |p: f64| {
        if v.is_empty() {
            Duration::ZERO
        } else {
            v[(((v.len() - 1) as f64) * p).round() as usize]
        }
    };
    Latency {
        samples: v.len(),
        failures,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn cluster() -> ClusterRef {
    ClusterRef {
        subscription_id: azcli::DEFAULT_SUBSCRIPTION.to_string(),
        resource_group: RESOURCE_GROUP.into(),
        cluster_type: ClusterType::ConnectedClusters,
        cluster_name: CLUSTER_NAME.into(),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| format!("{:.1} GiB RAM", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown RAM".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| std::env::consts::OS.to_string());
    format!("{cpu}, {cores} cores available, {mem}, {kernel}")
}

/// Everything the phases share.
struct Bench {
    server: ApiServer,
    tagged: kube::Client,
    dataplane: Dataplane,
    sim: fluxsim::Simulator,
    repo_url: String,
    ca_file: PathBuf,
}

impl Bench {
    async fn az(&self, args: &[&str]) -> Result<Option<serde_json::Value>, BenchError> {
        let ca = self.ca_file.to_string_lossy().into_owned();
        let mut argv: Vec<&str> = vec!["testbed"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&[
            "--dataplane",
            self.dataplane.url(),
            "--token",
            TOKEN,
            "--ca-file",
            &ca,
            "-g",
            RESOURCE_GROUP,
            "-c",
            CLUSTER_NAME,
            "-t",
            "connectedClusters",
        ]);
        let az = Az::try_parse_from(argv).map_err(|e| BenchError::Setup(e.to_string()))?;
        Ok(azcli::execute(az.flux).await?)
    }

    fn dataplane_compliance(&self, name: &str) -> Option<ComplianceState> {
        self.dataplane
            .status(&cluster(), name)
            .and_then(|s| s.compliance_state)
    }

    /// Median of `n` sequential GETs of one small object.
    async fn yardstick(&self, n: usize) -> Result<Duration, BenchError> {
        let api: Api<Namespace> = Api::all(self.tagged.clone());
        // The first request pays for the TLS handshake and connection set-up.
        api.get("default").await?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            api.get("default").await?;
            v.push(t.elapsed());
        }
        Ok(percentiles(v, 0).p50)
    }

    async fn propagation_and_compliance(
        &self,
        samples: usize,
        notes: &mut Vec<String>,
    ) -> Result<(Latency, Latency), BenchError> {
        let fcs: Api<FluxConfig> = Api::namespaced(self.tagged.clone(), NS_PROP);
        let names: Vec<String> = (0..samples).map(|i| format!("prop-{i:03}")).collect();
        let mut lat = Vec::new();
        let mut failures = 0;
        let mut last_create: Option<Instant> = None;
        for name in &names {
            // After a listing with changes the agent waits up to 1 s before its next long poll
            // (its guard against a data plane that always answers 200); creates closer together
            // would measure that guard instead of the path.
            if let Some(t) = last_create {
                tokio::time::sleep(CREATE_PACING.saturating_sub(t.elapsed())).await;
            }
            let t0 = Instant::now();
            last_create = Some(t0);
            self.az(&[
                "create",
                "-n",
                name,
                "--namespace",
                NS_PROP,
                "--scope",
                "cluster",
                "-u",
                &self.repo_url,
                "--branch",
                "main",
                "--kustomization",
                "name=a",
                "path=./bench/a",
                "--kustomization",
                "name=b",
                "path=./bench/b",
            ])
            .await?;
            let deadline = t0 + Duration::from_secs(30);
            loop {
                if fcs.get_opt(name).await?.is_some() {
                    lat.push(t0.elapsed());
                    break;
                }
                if Instant::now() > deadline {
                    failures += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let propagation = percentiles(lat, failures);
        if failures > 0 {
            notes.push(format!(
                "propagation: {failures} of {samples} configurations never reached the cluster within 30 s"
            ));
        }

        // Compliance needs a Compliant starting point.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !names
            .iter()
            .all(|n| self.dataplane_compliance(n) == Some(ComplianceState::Compliant))
        {
            if Instant::now() > deadline {
                notes.push(
                    "compliance: not every sample configuration was reported Compliant within 60 s"
                        .into(),
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut lat = Vec::new();
        let mut failures = 0;
        for name in &names {
            let ks = format!("{name}-a");
            let t0 = Instant::now();
            self.sim.fail(
                "Kustomization",
                NS_PROP,
                &ks,
                "BenchFailure",
                "injected by testbed bench",
            );
            let deadline = t0 + Duration::from_secs(30);
            loop {
                if self.dataplane_compliance(name) == Some(ComplianceState::NonCompliant) {
                    lat.push(t0.elapsed());
                    break;
                }
                if Instant::now() > deadline {
                    failures += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            self.sim.recover("Kustomization", NS_PROP, &ks);
        }
        if failures > 0 {
            notes.push(format!(
                "compliance: {failures} of {samples} status changes never reached the data plane within 30 s"
            ));
        }
        Ok((propagation, percentiles(lat, failures)))
    }

    /// Bytes of a 304 answer to a conditional listing, as HTTP/1.1 puts them on the wire
    /// (status line, headers, body; TLS framing excluded).
    async fn bytes_per_304(&self) -> Result<u64, BenchError> {
        let client =
            dataplane::client::Client::new(self.dataplane.url(), TOKEN, self.dataplane.ca_pem())
                .map_err(|e| BenchError::Setup(format!("data-plane client: {e}")))?;
        let path = format!(
            "{}?api-version={API_VERSION}",
            cluster().configurations_path()
        );
        let first = client
            .get(&path)
            .await
            .map_err(|e| BenchError::Setup(format!("listing: {e}")))?;
        let etag = first
            .header("etag")
            .ok_or_else(|| BenchError::Setup("the listing carries no ETag".into()))?
            .to_string();
        let second = client
            .send(
                hyper::Method::GET,
                &path,
                &[("if-none-match", etag.as_str())],
                None,
            )
            .await
            .map_err(|e| BenchError::Setup(format!("conditional listing: {e}")))?;
        if second.status != hyper::StatusCode::NOT_MODIFIED {
            return Err(BenchError::Setup(format!(
                "an unchanged listing answered {} instead of 304",
                second.status
            )));
        }
        let status_line = "HTTP/1.1 304 Not Modified\r\n".len();
        let headers: usize = second
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
            .sum();
        Ok((status_line + headers + 2 + second.body.len()) as u64)
    }
}

fn scale_config(name: &str, url: &str) -> Result<FluxConfig, BenchError> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "clusterconfig.azure.com/v1beta1",
        "kind": "FluxConfig",
        "metadata": {"name": name, "namespace": NS_SCALE},
        "spec": {
            "scope": "cluster",
            "namespace": NS_SCALE,
            "sourceKind": "GitRepository",
            "gitRepository": {
                "url": url,
                "syncIntervalInSeconds": 600,
                "timeoutInSeconds": 600,
                "repositoryRef": {"branch": "main"},
            },
            "kustomizations": {
                "a": {"path": "./bench/a", "syncIntervalInSeconds": 600},
                "b": {"path": "./bench/b", "syncIntervalInSeconds": 600},
            },
        },
    }))
    .map_err(|e| BenchError::Setup(format!("FluxConfig {name}: {e}")))
}

/// Keeps the number of Compliant FluxConfigs in [`NS_SCALE`] current, from a watch (listing
/// 10,000 objects every poll would load the machine under test).
fn track_compliant(
    client: kube::Client,
) -> (
    tokio::sync::watch::Receiver<usize>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::watch::channel(0usize);
    let api: Api<FluxConfig> = Api::namespaced(client, NS_SCALE);
    let task = tokio::spawn(async move {
        let mut state: HashMap<String, bool> = HashMap::new();
        let mut count = 0usize;
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let (name, now) = match ev {
                Ok(watcher::Event::Apply(fc)) | Ok(watcher::Event::InitApply(fc)) => {
                    let compliant = fc.status.as_ref().and_then(|s| s.compliance_state)
                        == Some(ComplianceState::Compliant);
                    (fc.metadata.name.unwrap_or_default(), compliant)
                }
                Ok(watcher::Event::Delete(fc)) => (fc.metadata.name.unwrap_or_default(), false),
                Ok(watcher::Event::Init) | Ok(watcher::Event::InitDone) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "bench watcher");
                    continue;
                }
            };
            // Kept incrementally: recounting 10,000 entries per event would load the machine.
            let was = state.insert(name, now).unwrap_or(false);
            match (was, now) {
                (false, true) => count += 1,
                (true, false) => count -= 1,
                _ => {}
            }
            let _ = tx.send(count);
        }
    });
    (rx, task)
}

async fn converge(
    bench: &Bench,
    from: usize,
    to: usize,
    timeout: Duration,
    compliant: &mut tokio::sync::watch::Receiver<usize>,
    running: &mut procs::Running,
) -> Result<Convergence, BenchError> {
    let api: Api<FluxConfig> = Api::namespaced(bench.tagged.clone(), NS_SCALE);
    let before = bench.server.request_stats();
    let t0 = Instant::now();
    let url = bench.repo_url.clone();
    let results: Vec<Result<(), BenchError>> = futures::stream::iter(from..to)
        .map(|i| {
            let api = api.clone();
            let url = url.clone();
            async move {
                let fc = scale_config(&format!("c-{i:05}"), &url)?;
                api.create(&PostParams::default(), &fc).await?;
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(e);
    }
    let deadline = t0 + timeout;
    let mut converged = false;
    let mut last_check = Instant::now();
    loop {
        if *compliant.borrow_and_update() >= to {
            converged = true;
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), compliant.changed()).await;
        if last_check.elapsed() > Duration::from_secs(5) {
            running.check_alive()?;
            last_check = Instant::now();
            // Progress on stderr: a long step should not look like a hang.
            eprintln!(
                "  convergence to {to}: {} Compliant after {:.0} s",
                *compliant.borrow(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = t0.elapsed();
    let count = *compliant.borrow();
    // Status writes that trail the last Compliant belong to the convergence too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = bench.server.request_stats();
    Ok(Convergence {
        total: to,
        added: to - from,
        elapsed,
        compliant: count,
        converged,
        requests: after.untagged - before.untagged,
        writes: after.untagged_writes - before.untagged_writes,
    })
}

async fn create_namespace(client: &kube::Client, name: &str) -> Result<(), BenchError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
        .map_err(|e| BenchError::Setup(format!("namespace {name}: {e}")))?;
    api.create(&PostParams::default(), &ns).await?;
    Ok(())
}

/// Runs every phase and, when asked, writes the Markdown report.
pub async fn run_bench(opts: BenchOptions) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    let mut report = BenchReport {
        machine: machine(),
        command: opts.command.clone(),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        in_process: opts.binaries.is_none(),
        binaries_dir: opts
            .binaries
            .as_ref()
            .and_then(|b| b.controller.parent().map(|d| d.display().to_string())),
        ..BenchReport::default()
    };
    let dir = tempfile::tempdir().map_err(io("creating a temporary directory"))?;
    let log_dir = dir.path().join("logs");
    std::fs::create_dir_all(&log_dir).map_err(io("creating the log directory"))?;

    let largest = opts.scales.iter().copied().max().unwrap_or(0);
    let server = apiserver::start(apiserver::Config {
        // Room for a watch that falls behind during the largest step to resume, not relist.
        watch_history: (largest * 8).max(apiserver::Config::default().watch_history),
        ..apiserver::Config::default()
    })
    .await?;
    let tagged = server.tagged_client("bench").await?;
    fluxsim::install_flux_crds(&tagged).await?;
    fluxsim::install_fluxconfig_crd(&tagged).await?;
    create_namespace(&tagged, NS_PROP).await?;
    create_namespace(&tagged, NS_SCALE).await?;

    let repo = fixtures::tutorial_repo(&dir.path().join("repo"))?;
    // Empty kustomizations: the figures are the controller's, not the simulator's applying.
    fixtures::commit_change(
        &repo.path,
        "bench/a/kustomization.yaml",
        EMPTY_KUSTOMIZATION,
    )?;
    fixtures::commit_change(
        &repo.path,
        "bench/b/kustomization.yaml",
        EMPTY_KUSTOMIZATION,
    )?;
    let sim = fluxsim::start(
        tagged.clone(),
        fluxsim::SimConfig {
            // Flux's own speed is not under test; a 200 ms dwell per object would dominate.
            step_delay: Duration::ZERO,
            git_url_map: repo.url_map(),
            max_concurrent: 32,
            ..fluxsim::SimConfig::default()
        },
    )
    .await?;

    let dataplane = dataplane::start(DataplaneConfig::new(
        "127.0.0.1:0"
            .parse()
            .map_err(|_| BenchError::Setup("loopback address".into()))?,
        dir.path().join("dataplane-state.json"),
        TOKEN,
    ))
    .await?;
    let ca_file = dir.path().join("dataplane-ca.crt");
    let ca = dataplane
        .ca_pem()
        .ok_or_else(|| BenchError::Setup("the data plane serves no TLS".into()))?;
    std::fs::write(&ca_file, ca).map_err(io("writing the data-plane CA"))?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).map_err(io("writing the token file"))?;
    let kubeconfig = dir.path().join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .map_err(io("writing the kubeconfig"))?;

    let bench = Bench {
        tagged: tagged.clone(),
        dataplane,
        sim,
        repo_url: repo.url.clone(),
        ca_file: ca_file.clone(),
        server,
    };
    report.yardstick_p50 = Some(bench.yardstick(200).await?);

    let untagged = bench.server.client().await?;
    let cluster = cluster();
    let mut running = procs::start(
        procs::Target {
            kubeconfig: &kubeconfig,
            client: untagged,
            dataplane_url: bench.dataplane.url(),
            ca_file: &ca_file,
            token: TOKEN,
            token_file: &token_file,
            cluster: &cluster,
            log_dir: &log_dir,
        },
        opts.binaries.as_ref(),
    )
    .await?;
    let result = phases(&opts, &bench, &mut running, &mut report).await;
    running.stop().await;
    bench.sim.shutdown().await;
    bench.dataplane.shutdown().await;
    bench.server.shutdown().await;
    result?;
    report.total = started.elapsed();
    if let Some(path) = &opts.output {
        write_markdown(path, &report)?;
    }
    Ok(report)
}

async fn phases(
    opts: &BenchOptions,
    bench: &Bench,
    running: &mut procs::Running,
    report: &mut BenchReport,
) -> Result<(), BenchError> {
    // The agent is up once it has listed once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while bench.dataplane.stats().listings == 0 {
        running.check_alive()?;
        if Instant::now() > deadline {
            return Err(BenchError::Setup(
                "the agent did not list the data plane within 30 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let start-up allocations (first listing, informer caches) settle before calling it idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    report.rss_idle = running.rss_kib().map(|(a, c)| Rss {
        agent_kib: a,
        controller_kib: c,
    });

    let (p, c) = bench
        .propagation_and_compliance(opts.samples, &mut report.notes)
        .await?;
    report.propagation = Some(p);
    report.compliance = Some(c);
    report.bytes_per_304 = Some(bench.bytes_per_304().await?);

    let (mut compliant, tracker) = track_compliant(bench.tagged.clone());
    let mut from = 0;
    for &to in &opts.scales {
        if to <= from {
            continue;
        }
        let step = converge(
            bench,
            from,
            to,
            opts.converge_timeout,
            &mut compliant,
            running,
        )
        .await;
        let step = match step {
            Ok(s) => s,
            Err(e) => {
                tracker.abort();
                return Err(e);
            }
        };
        if !step.converged {
            report.notes.push(format!(
                "convergence to {to}: only {} of {to} Compliant after {:.0} s (the step's time limit)",
                step.compliant,
                step.elapsed.as_secs_f64()
            ));
        }
        report.convergence.push(step);
        from = to;
    }
    tracker.abort();
    if let Some((a, c)) = running.rss_kib() {
        report.rss_loaded = Some((
            from,
            Rss {
                agent_kib: a,
                controller_kib: c,
            },
        ));
    }

    let before = bench.server.request_stats();
    let dp_before = bench.dataplane.stats();
    tokio::time::sleep(opts.steady).await;
    running.check_alive()?;
    let after = bench.server.request_stats();
    let dp_after = bench.dataplane.stats();
    report.rss_settled = running.rss_kib().map(|(a, c)| Rss {
        agent_kib: a,
        controller_kib: c,
    });
    report.steady = Some(Steady {
        window: opts.steady,
        requests: after.untagged - before.untagged,
        writes: after.untagged_writes - before.untagged_writes,
        other_writes: after.tagged_writes - before.tagged_writes,
        dataplane_listings: dp_after.listings - dp_before.listings,
        dataplane_not_modified: dp_after.not_modified - dp_before.not_modified,
        dataplane_status_reports: dp_after.status_reports - dp_before.status_reports,
        dataplane_heartbeats: dp_after.heartbeats - dp_before.heartbeats,
    });
    Ok(())
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

impl BenchReport {
    /// The figures as Markdown: run details, then one table row per measure.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let y = self.yardstick_p50;
        let ratio = |d: Duration| match y {
            Some(y) if !y.is_zero() => {
                format!(" ({:.0}× yardstick)", d.as_secs_f64() / y.as_secs_f64())
            }
            _ => String::new(),
        };
        let _ = writeln!(s, "# Benchmarks\n");
        let _ = writeln!(
            s,
            "Generated by `testbed bench`; re-run to refresh the table.\n"
        );
        let _ = writeln!(s, "- Command: `{}`", self.command);
        let _ = writeln!(s, "- Machine: {}", self.machine);
        let _ = writeln!(s, "- Started: {}", self.started_at);
        let _ = writeln!(s, "- Run time: {:.0} s", self.total.as_secs_f64());
        let _ = match &self.binaries_dir {
            Some(dir) => writeln!(
                s,
                "- Agent and controller: the binaries in `{dir}` as child processes; API emulator, data plane and Flux simulator in the bench process"
            ),
            None => writeln!(
                s,
                "- Agent and controller: tasks of the bench process (no RSS figures)"
            ),
        };
        let _ = writeln!(s);
        let _ = writeln!(s, "| Measure | Goal | Result | Verdict |");
        let _ = writeln!(s, "|---|---|---|---|");
        match y {
            Some(y) => {
                let _ = writeln!(
                    s,
                    "| Yardstick: one emulator GET round trip (loopback TLS, kube-rs), p50 | — | {} | — |",
                    ms(y)
                );
            }
            None => {
                let _ = writeln!(s, "| Yardstick | — | not measured | — |");
            }
        }
        let lat_row = |s: &mut String, what: &str, l: Option<Latency>| {
            let _ = match l {
                Some(l) => writeln!(
                    s,
                    "| {what}, p50 / p99 ({} samples{}) | — | {}{} / {}{} | — |",
                    l.samples,
                    if l.failures > 0 {
                        format!(", {} timed out", l.failures)
                    } else {
                        String::new()
                    },
                    ms(l.p50),
                    ratio(l.p50),
                    ms(l.p99),
                    ratio(l.p99)
                ),
                None => writeln!(s, "| {what} | — | not measured | — |"),
            };
        };
        lat_row(
            &mut s,
            "Propagation: data-plane write (`az … create`) → FluxConfig written",
            self.propagation,
        );
        lat_row(
            &mut s,
            "Compliance: Flux status change → data plane has it",
            self.compliance,
        );
        for c in &self.convergence {
            let added = c.added.max(1) as f64;
            let _ = writeln!(
                s,
                "| Controller convergence to {} configurations (+{} created, 1 GitRepository + 2 Kustomizations each) | — | {:.1} s{}, {:.1} API requests ({:.1} writes) per configuration | {} |",
                c.total,
                c.added,
                c.elapsed.as_secs_f64(),
                if c.converged {
                    String::new()
                } else {
                    format!(" (not converged: {}/{} Compliant)", c.compliant, c.total)
                },
                c.requests as f64 / added,
                c.writes as f64 / added,
                if c.converged { "all Compliant" } else { "**not converged**" }
            );
        }
        match self.steady {
            Some(st) => {
                let w = st.writes_per_minute();
                let _ = writeln!(
                    s,
                    "| API writes per minute, steady state ({:.0} s window, agent + controller) | 0 | {w:.1} ({} writes, {} requests in the window) | {} |",
                    st.window.as_secs_f64(),
                    st.writes,
                    st.requests,
                    verdict(st.writes == 0)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "| API writes per minute, steady state | 0 | not measured | — |"
                );
            }
        }
        match self.bytes_per_304 {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "| Data-plane bytes per unchanged poll (304 response, HTTP/1.1 before TLS) | 304 < 1 KiB | {b} B | {} |",
                    verdict(b < GOAL_304_BYTES)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "| Data-plane bytes per unchanged poll | 304 < 1 KiB | not measured | — |"
                );
            }
        }
        match self.rss_idle {
            Some(r) => {
                for (who, kib) in [("agent", r.agent_kib), ("controller", r.controller_kib)] {
                    let _ = writeln!(
                        s,
                        "| RSS of the {who}, idle | < 15 MiB | {} | {} |",
                        mib(kib),
                        verdict(kib < GOAL_IDLE_KIB)
                    );
                }
            }
            None => {
                let _ = writeln!(
                    s,
                    "| RSS, idle | < 15 MiB | not measured (in-process run) | — |"
                );
            }
        }
        match self.rss_loaded {
            Some((n, r)) => {
                let settled = self.rss_settled;
                for (who, kib, rest) in [
                    ("agent", r.agent_kib, settled.map(|r| r.agent_kib)),
                    (
                        "controller",
                        r.controller_kib,
                        settled.map(|r| r.controller_kib),
                    ),
                ] {
                    let _ = writeln!(
                        s,
                        "| RSS of the {who} at {n} configurations: end of the step / after the steady window | < 100 MiB at 10k | {} / {} | {} |",
                        mib(kib),
                        rest.map_or_else(|| "not measured".to_string(), mib),
                        verdict(kib.max(rest.unwrap_or(0)) < GOAL_LOADED_KIB)
                    );
                }
            }
            None => {
                let _ = writeln!(
                    s,
                    "| RSS at 10k configurations | < 100 MiB | not measured | — |"
                );
            }
        }
        if let Some(st) = self.steady {
            let _ = writeln!(
                s,
                "\nIn the steady window the data plane saw {} listings ({} answered 304), {} status reports and {} heartbeats; the bench and the Flux simulator wrote {} times.",
                st.dataplane_listings,
                st.dataplane_not_modified,
                st.dataplane_status_reports,
                st.dataplane_heartbeats,
                st.other_writes
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\nProblems seen in this run:\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }
}

/// Writes the report, keeping whatever follows [`NOTES_MARKER`] in an existing file.
pub fn write_markdown(path: &Path, report: &BenchReport) -> Result<(), BenchError> {
    let kept = std::fs::read_to_string(path)
        .ok()
        .and_then(|old| {
            old.split_once(NOTES_MARKER)
                .map(|(_, notes)| notes.to_string())
        })
        .unwrap_or_else(|| "\n\n## Notes\n\n(none yet)\n".to_string());
    let text = format!("{}\n{NOTES_MARKER}{kept}", report.markdown());
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.markdown())
    }
}

/// `testbed bench` flags.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Configuration counts for the convergence steps (cumulative, ascending).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub scales: Vec<usize>,
    /// Propagation and compliance samples.
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
    /// Length of the no-change window, in seconds.
    #[arg(long, default_value_t = 60)]
    pub steady_secs: u64,
    /// Time limit of each convergence step, in seconds.
    #[arg(long, default_value_t = 300)]
    pub converge_timeout_secs: u64,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub output: PathBuf,
    /// Run agent and controller as tasks of this process (no RSS figures, no binaries needed).
    #[arg(long)]
    pub in_process: bool,
}

/// `testbed bench`: locates the binaries, runs, prints the table and writes the file.
pub async fn run_cli(args: BenchArgs) -> Result<(), BenchError> {
    let binaries = if args.in_process {
        None
    } else {
        Some(Binaries::beside_current_exe()?)
    };
    let opts = BenchOptions {
        scales: args.scales,
        samples: args.samples.max(1),
        steady: Duration::from_secs(args.steady_secs),
        converge_timeout: Duration::from_secs(args.converge_timeout_secs),
        binaries,
        output: Some(args.output.clone()),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    eprintln!("testbed bench: running (about 5 minutes at the default scales)…");
    let report = run_bench(opts).await?;
    println!("{}", report.markdown());
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

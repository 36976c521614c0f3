//! Propagation benchmark of the whole system, in one process (API emulator, Flux simulator,
//! controller, TLS data plane, agent), as a user sees it through `testbed flux`:
//! - (a) `testbed flux create` sent → the `FluxConfig` present in the cluster (the create call
//!   itself included);
//! - (b) a Flux status change (the simulator fails, then recovers, a configuration's
//!   GitRepository) → `testbed flux show` reporting the new complianceState.
//!
//! Samples are taken one at a time, so each measures an idle system's latency rather than a
//! queue. Creates are paced [`CREATE_PACING`] apart: after a listing with changes the agent
//! waits up to 1 s before its next long poll (its guard against a data plane that answers 200
//! every time), so back-to-back creates would measure that guard, up to 1 s each, instead of the
//! path. (b) is timed from the simulator being told to fail or recover, so it includes the
//! simulator's own reaction. The goal is p99 < 1 s for each; the report prints p50/p99/max and
//! whether it was met.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use fluxconfig_agent::config::AgentConfig;
use fluxconfig_agent::token::TokenSource;
use fluxconfig_api::dataplane::{ClusterRef, ClusterType};
use fluxconfig_api::FluxConfig;
use fluxconfig_controller::run::RunConfig;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::watch;

use crate::{apiserver, azcli, dataplane, fixtures, fluxsim};

const NAMESPACE: &str = "bench";
const RESOURCE_GROUP: &str = "flux-demo-rg";
const CLUSTER: &str = "flux-demo-arc";
/// Longest wait for one sample before it counts as an error.
const SAMPLE_DEADLINE: Duration = Duration::from_secs(30);
/// How often the cluster and `show` are looked at while a sample runs; bounds the resolution.
const POLL: Duration = Duration::from_millis(10);
pub const GOAL_P99: Duration = Duration::from_secs(1);
/// Least time between two creates: longer than the agent's gap between listings with changes.
pub const CREATE_PACING: Duration = Duration::from_millis(1100);

/// Latency samples of one path.
#[derive(Clone, Debug, Default)]
pub struct Latency {
    pub samples: Vec<Duration>,
}

impl Latency {
    /// Nearest-rank percentile, `p` in 0..=1; `None` without samples.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let mut sorted = self.samples.clone();
        sorted.sort();
        if sorted.is_empty() {
            return None;
        }
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted.get(rank - 1).copied()
    }

    pub fn p50(&self) -> Option<Duration> {
        self.percentile(0.50)
    }

    pub fn p99(&self) -> Option<Duration> {
        self.percentile(0.99)
    }

    pub fn max(&self) -> Option<Duration> {
        self.samples.iter().max().copied()
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Option<Duration>| {
            d.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
                .unwrap_or_else(|| "-".into())
        };
        let goal = match self.p99() {
            Some(p) if p < GOAL_P99 => "met",
            Some(_) => "MISSED",
            None => "no data",
        };
        write!(
            f,
            "n={} p50={} p99={} max={} (goal p99 < 1 s: {goal})",
            self.samples.len(),
            ms(self.p50()),
            ms(self.p99()),
            ms(self.max())
        )
    }
}

/// The outcome of one run.
#[derive(Clone, Debug, Default)]
pub struct PropagationReport {
    /// (a) `flux create` → FluxConfig present.
    pub create_to_present: Latency,
    /// (b) Flux status change → `show` reports the new complianceState.
    pub status_to_show: Latency,
    /// Setup failures and samples that did not complete.
    pub errors: Vec<String>,
}

impl fmt::Display for PropagationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "flux create -> FluxConfig present:        {}",
            self.create_to_present
        )?;
        write!(
            f,
            "Flux status change -> show reports it:  {}",
            self.status_to_show
        )?;
        for e in &self.errors {
            write!(f, "\nerror: {e}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("API emulator: {0}")]
    ApiServer(#[from] apiserver::Error),
    #[error("Flux simulator: {0}")]
    FluxSim(#[from] fluxsim::Error),
    #[error("data plane: {0}")]
    Dataplane(#[from] dataplane::Error),
    #[error("{0}")]
    Other(String),
}

#[derive(Parser)]
struct AzCli {
    #[command(flatten)]
    flux: azcli::FluxArgs,
}

struct System {
    server: apiserver::ApiServer,
    client: Client,
    sim: fluxsim::Simulator,
    plane: dataplane::Dataplane,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    repo: fixtures::TutorialRepo,
    ca_file: std::path::PathBuf,
    token: String,
    _dir: tempfile::TempDir,
}

impl System {
    async fn start() -> Result<System, SetupError> {
        let other = |what: &str, e: &dyn fmt::Display| SetupError::Other(format!("{what}: {e}"));
        let dir = tempfile::tempdir().map_err(|e| other("tempdir", &e))?;
        let server = apiserver::start(apiserver::Config::default()).await?;
        let client = server.client().await?;
        fluxsim::install_flux_crds(&client).await?;
        install_fluxconfig_crd(&client).await?;
        let repo = fixtures::tutorial_repo(&dir.path().join("repo"))
            .map_err(|e| other("fixture repository", &e))?;
        let mut sim_config = fluxsim::SimConfig::default();
        sim_config
            .git_url_map
            .insert(repo.url.clone(), repo.path.clone());
        let sim = fluxsim::start(client.clone(), sim_config).await?;

        let token = uuid::Uuid::new_v4().to_string();
        let plane = dataplane::start(dataplane::DataplaneConfig::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            dir.path().join("dataplane-state.json"),
            token.clone(),
        ))
        .await?;
        let ca_file = dir.path().join("dataplane-ca.crt");
        std::fs::write(&ca_file, plane.ca_pem().unwrap_or_default())
            .map_err(|e| other("CA file", &e))?;

        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let (c, rx) = (client.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let config = RunConfig {
                metrics_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                lease: None,
                concurrency: 4,
                identity: "bench-controller".into(),
            };
            match fluxconfig_controller::metrics::Metrics::new() {
                Ok(m) => {
                    if let Err(e) =
                        fluxconfig_controller::run::run(c, config, Arc::new(m), rx).await
                    {
                        eprintln!("controller stopped: {e}");
                    }
                }
                Err(e) => eprintln!("controller metrics: {e}"),
            }
        }));
        let url = plane
            .url()
            .parse()
            .map_err(|e| other("data-plane URL", &e))?;
        let mut agent = AgentConfig::new(url, cluster(), TokenSource::Static(token.clone()));
        agent.ca_file = Some(ca_file.clone());
        agent.metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        // The deployed defaults: reports are event-driven, so their interval does not matter.
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = fluxconfig_agent::run::run(c, agent, stop_rx).await {
                eprintln!("agent stopped: {e}");
            }
        }));
        Ok(System {
            server,
            client,
            sim,
            plane,
            stop,
            tasks,
            repo,
            ca_file,
            token,
            _dir: dir,
        })
    }

    async fn az(&self, args: &[&str]) -> Result<Option<Value>, String> {
        let mut argv: Vec<String> = vec!["testbed".into()];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv.extend([
            "--dataplane".to_string(),
            self.plane.url().to_string(),
            "--token".to_string(),
            self.token.clone(),
            "--ca-file".to_string(),
            self.ca_file.display().to_string(),
            "-g".to_string(),
            RESOURCE_GROUP.to_string(),
            "-c".to_string(),
            CLUSTER.to_string(),
            "-t".to_string(),
            "connectedClusters".to_string(),
        ]);
        let cli = AzCli::try_parse_from(argv).map_err(|e| e.to_string())?;
        azcli::execute(cli.flux).await.map_err(|e| e.to_string())
    }

    async fn compliance(&self, name: &str) -> Option<String> {
        self.az(&["show", "-n", name])
            .await
            .ok()
            .flatten()
            .and_then(|v| v["complianceState"].as_str().map(str::to_string))
    }

    /// Polls `show` until the complianceState satisfies `want`; the time since `since`.
    async fn until_shown(
        &self,
        name: &str,
        since: Instant,
        want: impl Fn(&str) -> bool,
    ) -> Result<Duration, String> {
        loop {
            let state = self.compliance(name).await;
            if state.as_deref().is_some_and(&want) {
                return Ok(since.elapsed());
            }
            if since.elapsed() > SAMPLE_DEADLINE {
                return Err(format!(
                    "{name}: show still says {state:?} after {SAMPLE_DEADLINE:?}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
        self.sim.shutdown().await;
        self.plane.shutdown().await;
        self.server.shutdown().await;
    }
}

fn cluster() -> ClusterRef {
    ClusterRef {
        subscription_id: azcli::DEFAULT_SUBSCRIPTION.to_string(),
        resource_group: RESOURCE_GROUP.into(),
        cluster_type: ClusterType::ConnectedClusters,
        cluster_name: CLUSTER.into(),
    }
}

async fn install_fluxconfig_crd(client: &Client) -> Result<(), SetupError> {
    let err = |e: &dyn fmt::Display| SetupError::Other(format!("FluxConfig CRD: {e}"));
    let yaml = fluxconfig_api::crdgen::fluxconfig_crd_yaml().map_err(|e| err(&e))?;
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&yaml).map_err(|e| err(&e))?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.create(&PostParams::default(), &crd)
        .await
        .map_err(|e| err(&e))?;
    let deadline = Instant::now() + SAMPLE_DEADLINE;
    loop {
        let established = api
            .get("fluxconfigs.clusterconfig.azure.com")
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|s| s.conditions)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(err(&"not Established"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the benchmark with `samples` samples of each path and prints the report.
pub async fn run_propagation_bench(samples: usize) -> PropagationReport {
    let mut report = PropagationReport::default();
    let system = match System::start().await {
        Ok(s) => s,
        Err(e) => {
            report.errors.push(format!("setup: {e}"));
            println!("{report}");
            return report;
        }
    };
    measure(&system, samples, &mut report).await;
    system.shutdown().await;
    println!("{report}");
    report
}

async fn measure(system: &System, samples: usize, report: &mut PropagationReport) {
    let configs: Api<FluxConfig> = Api::namespaced(system.client.clone(), NAMESPACE);
    // (a) one configuration per sample, each created once the previous one has arrived.
    let mut names = Vec::new();
    let mut previous: Option<Instant> = None;
    for i in 0..samples {
        let name = format!("bench-{i:03}");
        if let Some(at) = previous {
            // Workload pacing (see the module docs), not synchronisation.
            tokio::time::sleep((at + CREATE_PACING).saturating_duration_since(Instant::now()))
                .await;
        }
        let started = Instant::now();
        previous = Some(started);
        let created = system
            .az(&[
                "create",
                "-n",
                &name,
                "--namespace",
                NAMESPACE,
                "-u",
                &system.repo.url,
                "--branch",
                "main",
            ])
            .await;
        if let Err(e) = created {
            report.errors.push(format!("flux create {name}: {e}"));
            continue;
        }
        loop {
            if matches!(configs.get_opt(&name).await, Ok(Some(_))) {
                report.create_to_present.samples.push(started.elapsed());
                names.push(name);
                break;
            }
            if started.elapsed() > SAMPLE_DEADLINE {
                report
                    .errors
                    .push(format!("{name}: no FluxConfig after {SAMPLE_DEADLINE:?}"));
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    // (b) even samples fail a configuration's GitRepository, odd ones recover it; each
    // measures until `show` reports the new complianceState.
    if names.is_empty() {
        return;
    }
    for k in 0..samples {
        let name = &names[(k / 2) % names.len()];
        let sample = if k % 2 == 0 {
            if let Err(e) = system
                .until_shown(name, Instant::now(), |s| s == "Compliant")
                .await
            {
                report.errors.push(format!("before the change: {e}"));
                continue;
            }
            system.sim.fail(
                "GitRepository",
                NAMESPACE,
                name,
                "GitOperationFailed",
                "injected by the propagation benchmark",
            );
            system
                .until_shown(name, Instant::now(), |s| s != "Compliant")
                .await
        } else {
            system.sim.recover("GitRepository", NAMESPACE, name);
            system
                .until_shown(name, Instant::now(), |s| s == "Compliant")
                .await
        };
        match sample {
            Ok(d) => report.status_to_show.samples.push(d),
            Err(e) => report.errors.push(e),
        }
    }
    for name in &names {
        system.sim.recover("GitRepository", NAMESPACE, name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latency {
            samples: (1..=100).rev().map(Duration::from_millis).collect(),
        };
        assert_eq!(l.p50(), Some(Duration::from_millis(50)));
        assert_eq!(l.p99(), Some(Duration::from_millis(99)));
        assert_eq!(l.max(), Some(Duration::from_millis(100)));
        assert_eq!(Latency::default().p99(), None);
        assert!(Latency::default().to_string().contains("no data"));
    }
}

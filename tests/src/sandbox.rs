//! `testbed up`: the whole system on one machine — API emulator, Azure data plane, Flux
//! simulator, fluxconfig-controller and fluxconfig-agent — with the Azure tutorial configuration
//! created through the data plane, so a newcomer sees it work end to end in one command.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxconfig_agent::config::AgentConfig;
use fluxconfig_agent::token::TokenSource;
use fluxconfig_api::dataplane::{ClusterRef, ClusterType};
use fluxconfig_controller::metrics::Metrics;
use fluxconfig_controller::run::RunConfig;
use kube::Client;
use serde_json::Value;
use tokio::sync::watch;

use crate::{apiserver, azcli, dataplane, fixtures, fluxsim};

const RESOURCE_GROUP: &str = "flux-demo-rg";
const CLUSTER: &str = "flux-demo-arc";

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Exit 0 once the tutorial configuration is Compliant (non-zero with the reason if it is
    /// not within --timeout-secs) instead of running until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// Where to keep the kubeconfig, the data plane's state and CA, and the fixture repository
    /// (default: a new temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How long the tutorial configuration may take to become Compliant.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("work directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("API emulator: {0}")]
    ApiServer(#[from] apiserver::Error),
    #[error("Flux simulator: {0}")]
    FluxSim(#[from] fluxsim::Error),
    #[error("fixture repository: {0}")]
    Fixture(String),
    #[error("data plane: {0}")]
    Dataplane(#[from] dataplane::Error),
    #[error("creating the tutorial configuration: {0}")]
    Create(#[from] azcli::Error),
    #[error("{0}")]
    Usage(String),
    #[error("agent configuration: {0}")]
    Agent(String),
    #[error("the tutorial configuration did not become Compliant within {secs} s: {last}")]
    NotCompliant { secs: u64, last: String },
    #[error("installing signal handler: {0}")]
    Signal(std::io::Error),
}

/// Runs the sandbox; with `once`, returns after the tutorial configuration became Compliant.
pub async fn up(args: UpArgs) -> Result<(), Error> {
    let _temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            let t = tempfile::tempdir().map_err(|source| Error::Dir {
                path: std::env::temp_dir(),
                source,
            })?;
            let p = t.path().to_path_buf();
            _temp = t;
            p
        }
    };
    std::fs::create_dir_all(&dir).map_err(|source| Error::Dir {
        path: dir.clone(),
        source,
    })?;

    let server = apiserver::start(apiserver::Config::default()).await?;
    let kubeconfig = dir.join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .map_err(|source| Error::Dir {
            path: kubeconfig.clone(),
            source,
        })?;
    let client = server.client().await?;
    say(&format!("Kubernetes API emulator on {}", server.url()));
    fluxsim::install_flux_crds(&client).await?;
    fluxsim::install_fluxconfig_crd(&client).await?;

    let repo_dir = dir.join("gitops-flux2-kustomize-helm-mt");
    // The fixture is deterministic, so recreating it on a reused --dir gives the same commit.
    if repo_dir.exists() {
        std::fs::remove_dir_all(&repo_dir).map_err(|source| Error::Dir {
            path: repo_dir.clone(),
            source,
        })?;
    }
    let repo = fixtures::tutorial_repo(&repo_dir).map_err(|e| Error::Fixture(e.to_string()))?;
    let mut sim_config = fluxsim::SimConfig::default();
    sim_config
        .git_url_map
        .insert(repo.url.clone(), repo.path.clone());
    let sim = fluxsim::start(client.clone(), sim_config).await?;
    say(&format!(
        "Flux simulator serving {} from {}",
        repo.url,
        repo.path.display()
    ));

    let token = uuid::Uuid::new_v4().to_string();
    let plane = dataplane::start(dataplane::DataplaneConfig::new(
        "127.0.0.1:0"
            .parse()
            .map_err(|_| Error::Agent("address".into()))?,
        dir.join("dataplane-state.json"),
        token.clone(),
    ))
    .await?;
    let ca_file = dir.join("dataplane-ca.crt");
    std::fs::write(&ca_file, plane.ca_pem().unwrap_or_default()).map_err(|source| Error::Dir {
        path: ca_file.clone(),
        source,
    })?;
    say(&format!(
        "Azure data plane (TLS, own CA) on {}",
        plane.url()
    ));

    let (stop_tx, stop) = watch::channel(false);
    let controller = tokio::spawn(run_controller(client.clone(), stop.clone()));
    let agent = tokio::spawn(run_agent(
        client.clone(),
        plane.url().to_string(),
        token.clone(),
        ca_file.clone(),
        stop.clone(),
    ));
    say("fluxconfig-controller and fluxconfig-agent running");

    let az = Az {
        url: plane.url().to_string(),
        token,
        ca_file,
    };
    say("az k8s-configuration flux create -g flux-demo-rg -c flux-demo-arc -t connectedClusters -n cluster-config --namespace cluster-config --scope cluster -u https://github.com/Azure/gitops-flux2-kustomize-helm-mt --branch main --kustomization name=infra path=./infrastructure prune=true --kustomization name=apps path=./apps/staging prune=true dependsOn=[\"infra\"]");
    az.run(&[
        "create",
        "-n",
        "cluster-config",
        "--namespace",
        "cluster-config",
        "--scope",
        "cluster",
        "-u",
        &repo.url,
        "--branch",
        "main",
        "--kustomization",
        "name=infra",
        "path=./infrastructure",
        "prune=true",
        "--kustomization",
        "name=apps",
        "path=./apps/staging",
        "prune=true",
        "dependsOn=[\"infra\"]",
    ])
    .await?;

    let outcome = follow_until_compliant(&az, Duration::from_secs(args.timeout_secs)).await;
    if outcome.is_ok() {
        say(&format!(
            "Use kubectl from another shell:\n  KUBECONFIG={} kubectl get fluxconfigs,gitrepositories,kustomizations,helmreleases -A",
            kubeconfig.display()
        ));
        if !args.once {
            say("Running; Ctrl-C stops everything.");
            wait_for_signal().await?;
        }
    }

    say("Stopping");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(15), controller).await;
    let _ = tokio::time::timeout(Duration::from_secs(15), agent).await;
    sim.shutdown().await;
    plane.shutdown().await;
    server.shutdown().await;
    outcome
}

fn say(line: &str) {
    println!("{line}");
}

/// Polls `show` and prints each change of compliance, as the tutorial's `az … show` would.
async fn follow_until_compliant(az: &Az, timeout: Duration) -> Result<(), Error> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let shown = az
            .run(&["show", "-n", "cluster-config"])
            .await
            .ok()
            .flatten();
        let state = shown
            .as_ref()
            .and_then(|v| v["complianceState"].as_str())
            .unwrap_or("Unknown")
            .to_string();
        let provisioning = shown
            .as_ref()
            .and_then(|v| v["provisioningState"].as_str())
            .unwrap_or("Unknown")
            .to_string();
        let line = format!("complianceState: {state}  provisioningState: {provisioning}");
        if line != last {
            say(&line);
            last = line;
        }
        if state == "Compliant" {
            if let Some(v) = shown {
                print_statuses(&v);
            }
            return Ok(());
        }
        if started.elapsed() > timeout {
            let detail = shown
                .as_ref()
                .and_then(|v| v["errorMessage"].as_str())
                .map(|m| format!("{last}; {m}"))
                .unwrap_or(last);
            return Err(Error::NotCompliant {
                secs: timeout.as_secs(),
                last: detail,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn print_statuses(shown: &Value) {
    say(&format!(
        "sourceSyncedCommitId: {}",
        shown["sourceSyncedCommitId"].as_str().unwrap_or("")
    ));
    say(&format!(
        "{:<16} {:<16} {:<24} COMPLIANCE",
        "KIND", "NAMESPACE", "NAME"
    ));
    for s in shown["statuses"].as_array().into_iter().flatten() {
        say(&format!(
            "{:<16} {:<16} {:<24} {}",
            s["kind"].as_str().unwrap_or(""),
            s["namespace"].as_str().unwrap_or(""),
            s["name"].as_str().unwrap_or(""),
            s["complianceState"].as_str().unwrap_or("")
        ));
    }
}

struct Az {
    url: String,
    token: String,
    ca_file: PathBuf,
}

#[derive(clap::Parser)]
struct AzCli {
    #[command(flatten)]
    flux: azcli::FluxArgs,
}

impl Az {
    async fn run(&self, args: &[&str]) -> Result<Option<Value>, Error> {
        use clap::Parser;
        let mut argv: Vec<String> = vec!["testbed".into()];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv.extend([
            "--dataplane".to_string(),
            self.url.clone(),
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
        let cli = AzCli::try_parse_from(argv).map_err(|e| Error::Usage(e.to_string()))?;
        Ok(azcli::execute(cli.flux).await?)
    }
}

async fn run_controller(client: Client, stop: watch::Receiver<bool>) {
    let config = RunConfig {
        metrics_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        lease: None,
        concurrency: 4,
        identity: "sandbox-controller".into(),
    };
    match Metrics::new() {
        Ok(metrics) => {
            if let Err(e) =
                fluxconfig_controller::run::run(client, config, Arc::new(metrics), stop).await
            {
                eprintln!("controller stopped: {e}");
            }
        }
        Err(e) => eprintln!("controller metrics: {e}"),
    }
}

async fn run_agent(
    client: Client,
    url: String,
    token: String,
    ca_file: PathBuf,
    stop: watch::Receiver<bool>,
) {
    let Ok(url) = url.parse() else {
        eprintln!("agent: bad data-plane URL {url}");
        return;
    };
    let cluster = ClusterRef {
        subscription_id: azcli::DEFAULT_SUBSCRIPTION.to_string(),
        resource_group: RESOURCE_GROUP.into(),
        cluster_type: ClusterType::ConnectedClusters,
        cluster_name: CLUSTER.into(),
    };
    let mut config = AgentConfig::new(url, cluster, TokenSource::Static(token));
    config.ca_file = Some(ca_file);
    config.metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    if let Err(e) = fluxconfig_agent::run::run(client, config, stop).await {
        eprintln!("agent stopped: {e}");
    }
}

async fn wait_for_signal() -> Result<(), Error> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::Signal)?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(Error::Signal),
        _ = term.recv() => Ok(()),
    }
}

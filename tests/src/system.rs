//! The whole system in one process: API emulator, Flux simulator, Azure data plane on TLS with
//! its own CA, and the controller and the agent as tasks that can be stopped, aborted and
//! started again. The sandbox (`testbed up`) and the end-to-end, scraping and fault suites all
//! start it from here, so they exercise the same wiring.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fluxconfig_agent::config::AgentConfig;
use fluxconfig_agent::token::TokenSource;
use fluxconfig_api::dataplane::{ClusterRef, ClusterType};
use fluxconfig_controller::metrics::Metrics;
use fluxconfig_controller::run::RunConfig;
use kube::Client;
use serde_json::Value;
use tokio::sync::watch;

use crate::apiserver::{self, ApiServer};
use crate::dataplane::{self, Dataplane, DataplaneConfig};
use crate::{azcli, fixtures, fluxsim};

/// The resource group and cluster of the Azure tutorial, which the sandbox and tests use.
pub const RESOURCE_GROUP: &str = "flux-demo-rg";
pub const CLUSTER: &str = "flux-demo-arc";

/// How long a graceful stop may take before it counts as hung.
const STOP_LIMIT: Duration = Duration::from_secs(30);

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
    Fixture(#[from] fixtures::Error),
    #[error("data plane: {0}")]
    Dataplane(#[from] dataplane::Error),
    #[error("the data plane serves plain HTTP; it has no CA")]
    NoDataplaneCa,
    #[error("data-plane URL {0}: not a URL")]
    DataplaneUrl(String),
    #[error("az arguments: {0}")]
    AzUsage(String),
    #[error(transparent)]
    Az(#[from] azcli::Error),
}

/// What to start.
pub struct Options {
    /// Where the kubeconfig, the data plane's state and CA and the fixture repository go;
    /// `None` makes a temporary directory that lives as long as the [`System`].
    pub dir: Option<PathBuf>,
    pub apiserver: apiserver::Config,
    /// `None` runs no Flux simulator: Flux objects are written but never become ready. The
    /// fixture repository's URL is added to the simulator's git map.
    pub flux: Option<fluxsim::SimConfig>,
    /// The bearer token the data plane accepts.
    pub token: String,
    pub cluster: ClusterRef,
    pub dataplane_faults: dataplane::FaultConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dir: None,
            apiserver: apiserver::Config::default(),
            flux: Some(fluxsim::SimConfig::default()),
            token: "s3cr3t-cluster-token-for-tests".into(),
            cluster: tutorial_cluster(),
            dataplane_faults: dataplane::FaultConfig::default(),
        }
    }
}

/// The tutorial's cluster: `-g flux-demo-rg -c flux-demo-arc -t connectedClusters`.
pub fn tutorial_cluster() -> ClusterRef {
    ClusterRef {
        subscription_id: azcli::DEFAULT_SUBSCRIPTION.to_string(),
        resource_group: RESOURCE_GROUP.into(),
        cluster_type: ClusterType::ConnectedClusters,
        cluster_name: CLUSTER.into(),
    }
}

/// Everything but the controller and the agent, which [`System::start_controller`] and
/// [`System::start_agent`] start (as often as a test likes).
pub struct System {
    pub server: ApiServer,
    pub client: Client,
    pub dataplane: Dataplane,
    pub sim: Option<fluxsim::Simulator>,
    pub repo: fixtures::TutorialRepo,
    pub dir: PathBuf,
    pub token: String,
    pub cluster: ClusterRef,
    _temp: Option<tempfile::TempDir>,
}

impl System {
    pub async fn start(options: Options) -> Result<System, Error> {
        let (dir, temp) = match options.dir {
            Some(d) => (d, None),
            None => {
                let t = tempfile::tempdir().map_err(|source| Error::Dir {
                    path: std::env::temp_dir(),
                    source,
                })?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&dir).map_err(|source| Error::Dir {
            path: dir.clone(),
            source,
        })?;

        let server = apiserver::start(options.apiserver).await?;
        let client = server.client().await?;
        fluxsim::install_flux_crds(&client).await?;
        fluxsim::install_fluxconfig_crd(&client).await?;

        let repo_dir = dir.join("gitops-flux2-kustomize-helm-mt");
        // The fixture is deterministic, so recreating it in a reused directory gives the same
        // commit.
        if repo_dir.exists() {
            std::fs::remove_dir_all(&repo_dir).map_err(|source| Error::Dir {
                path: repo_dir.clone(),
                source,
            })?;
        }
        let repo = fixtures::tutorial_repo(&repo_dir)?;
        let sim = match options.flux {
            Some(mut sim_config) => {
                sim_config
                    .git_url_map
                    .insert(repo.url.clone(), repo.path.clone());
                Some(fluxsim::start(client.clone(), sim_config).await?)
            }
            None => None,
        };

        let mut config = dataplane_config(&dir, SocketAddr::from(([127, 0, 0, 1], 0)));
        config.token = options.token.clone();
        config.faults = options.dataplane_faults;
        let dataplane = dataplane::start(config).await?;
        let system = System {
            server,
            client,
            dataplane,
            sim,
            repo,
            dir,
            token: options.token,
            cluster: options.cluster,
            _temp: temp,
        };
        let ca_file = system.ca_file();
        let ca = system.dataplane.ca_pem().ok_or(Error::NoDataplaneCa)?;
        std::fs::write(&ca_file, ca).map_err(|source| Error::Dir {
            path: ca_file,
            source,
        })?;
        Ok(system)
    }

    /// The data plane's CA certificate, for the agent's `--ca-file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("dataplane-ca.crt")
    }

    /// A kubeconfig of the emulator (written on every call; it does not change).
    pub fn kubeconfig(&self) -> Result<PathBuf, Error> {
        let path = self.dir.join("kubeconfig");
        self.server
            .write_kubeconfig(&path)
            .map_err(|source| Error::Dir {
                path: path.clone(),
                source,
            })?;
        Ok(path)
    }

    /// The controller as deployed, but with metrics on an ephemeral port and no leader
    /// election.
    pub fn controller_config(&self) -> RunConfig {
        RunConfig {
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lease: None,
            concurrency: 4,
            identity: "controller".into(),
        }
    }

    /// An agent of this system's cluster, trusting the data plane's CA, with a static token
    /// and metrics on an ephemeral port; everything else at its defaults.
    pub fn agent_config(&self) -> Result<AgentConfig, Error> {
        let url = self
            .dataplane
            .url()
            .parse()
            .map_err(|_| Error::DataplaneUrl(self.dataplane.url().to_string()))?;
        let mut agent = AgentConfig::new(
            url,
            self.cluster.clone(),
            TokenSource::Static(self.token.clone()),
        );
        agent.ca_file = Some(self.ca_file());
        agent.metrics_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Ok(agent)
    }

    pub fn start_controller(&self, config: RunConfig) -> Component {
        let client = self.client.clone();
        Component::spawn(move |stop| async move {
            let metrics = Metrics::new().map_err(|e| format!("controller metrics: {e}"))?;
            fluxconfig_controller::run::run(client, config, Arc::new(metrics), stop)
                .await
                .map_err(|e| format!("controller: {e}"))
        })
    }

    pub fn start_agent(&self, config: AgentConfig) -> Component {
        let client = self.client.clone();
        Component::spawn(move |stop| async move {
            fluxconfig_agent::run::run(client, config, stop)
                .await
                .map_err(|e| format!("agent: {e}"))
        })
    }

    /// `testbed flux <args…>` (the `az k8s-configuration flux` look-alike) against this
    /// system's data plane and cluster.
    pub async fn az(&self, args: &[&str]) -> Result<Option<Value>, Error> {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Az {
            #[command(flatten)]
            flux: azcli::FluxArgs,
        }
        let mut argv: Vec<String> = vec!["testbed".into()];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv.extend([
            "--dataplane".to_string(),
            self.dataplane.url().to_string(),
            "--token".to_string(),
            self.token.clone(),
            "--ca-file".to_string(),
            self.ca_file().display().to_string(),
            "--subscription".to_string(),
            self.cluster.subscription_id.clone(),
            "-g".to_string(),
            self.cluster.resource_group.clone(),
            "-c".to_string(),
            self.cluster.cluster_name.clone(),
            "-t".to_string(),
            self.cluster.cluster_type.as_str().to_string(),
        ]);
        let az = Az::try_parse_from(argv).map_err(|e| Error::AzUsage(e.to_string()))?;
        Ok(azcli::execute(az.flux).await?)
    }

    /// The Azure tutorial's `az k8s-configuration flux create`, pointed at the fixture
    /// repository: configuration `cluster-config`, cluster scope, kustomizations `infra` and
    /// `apps` (which depends on `infra`).
    pub async fn create_tutorial(&self) -> Result<Option<Value>, Error> {
        self.az(&[
            "create",
            "-n",
            "cluster-config",
            "--namespace",
            "cluster-config",
            "--scope",
            "cluster",
            "-u",
            &self.repo.url,
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
        .await
    }

    /// Stops the data plane and serves the same state on the same port with the same CA,
    /// accepting only `token` from then on.
    pub async fn restart_dataplane(&mut self, token: &str) -> Result<(), Error> {
        let addr = self.dataplane.addr();
        let mut placeholder = dataplane_config(&self.dir, SocketAddr::from(([127, 0, 0, 1], 0)));
        placeholder.token = token.to_string();
        let placeholder = dataplane::start(placeholder).await?;
        let old = std::mem::replace(&mut self.dataplane, placeholder);
        old.shutdown().await;
        // The old port may linger in the kernel for a moment after the listener closed.
        let started = tokio::time::Instant::now();
        let fresh = loop {
            let mut config = dataplane_config(&self.dir, addr);
            config.token = token.to_string();
            match dataplane::start(config).await {
                Ok(d) => break d,
                Err(e) if started.elapsed() > STOP_LIMIT => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let placeholder = std::mem::replace(&mut self.dataplane, fresh);
        placeholder.shutdown().await;
        self.token = token.to_string();
        Ok(())
    }

    pub async fn shutdown(self) {
        if let Some(sim) = self.sim {
            sim.shutdown().await;
        }
        self.dataplane.shutdown().await;
        self.server.shutdown().await;
    }
}

/// The system with one controller and one agent running.
pub struct Running {
    pub system: System,
    pub controller: Component,
    pub agent: Component,
}

impl Running {
    /// Starts the system, then the controller and the agent with their default configurations
    /// as changed by `controller` and `agent`.
    pub async fn start(
        options: Options,
        controller: impl FnOnce(&mut RunConfig),
        agent: impl FnOnce(&mut AgentConfig),
    ) -> Result<Running, Error> {
        let system = System::start(options).await?;
        let mut controller_config = system.controller_config();
        controller(&mut controller_config);
        let mut agent_config = system.agent_config()?;
        agent(&mut agent_config);
        Ok(Running {
            controller: system.start_controller(controller_config),
            agent: system.start_agent(agent_config),
            system,
        })
    }

    /// Stops the agent, then the controller, gracefully, then the rest; the error names the
    /// component that did not stop cleanly.
    pub async fn shutdown(self) -> Result<(), String> {
        let agent = self.agent.shutdown().await;
        let controller = self.controller.shutdown().await;
        self.system.shutdown().await;
        agent.map_err(|e| format!("agent: {e}"))?;
        controller.map_err(|e| format!("controller: {e}"))
    }
}

impl std::ops::Deref for Running {
    type Target = System;
    fn deref(&self) -> &System {
        &self.system
    }
}

/// The data plane keeps its CA key under the work directory, so a restarted one is trusted by
/// the same CA file.
fn dataplane_config(dir: &Path, listen: SocketAddr) -> DataplaneConfig {
    let mut config = DataplaneConfig::new(listen, dir.join("dataplane-state.json"), "");
    config.tls_dir = Some(dir.join("dataplane-tls"));
    config
}

/// The controller or the agent, running as a task of this process.
pub struct Component {
    task: tokio::task::JoinHandle<Result<(), String>>,
    stop: watch::Sender<bool>,
}

impl Component {
    fn spawn<F, Fut>(run: F) -> Component
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(run(rx));
        Component { task, stop }
    }

    /// Whether the component has ended (by itself, on an error, or after a stop).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Drops the component's whole future at its next await point: no graceful step runs,
    /// as with SIGKILL, as far as the API server and the data plane can tell.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// A graceful stop, as on SIGTERM. The error says why the component ended, if not cleanly.
    pub async fn shutdown(self) -> Result<(), String> {
        let _ = self.stop.send(true);
        match tokio::time::timeout(STOP_LIMIT, self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(format!("task failed: {e}")),
            Err(_) => Err(format!("did not stop within {STOP_LIMIT:?}")),
        }
    }
}

//! The whole system in one process (API emulator, Flux simulator, controller, TLS data plane,
//! agent) for the agent's acceptance tests, after `system_e2e.rs`'s harness, plus what those
//! tests need on top: agents started and stopped at will, a data plane restartable on the same
//! port, metrics scraping, cluster snapshots and a tinyproxy forward proxy.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use fluxconfig_agent::config::AgentConfig;
use fluxconfig_agent::token::TokenSource;
use fluxconfig_api::dataplane::{ClusterRef, ClusterType};
use fluxconfig_api::FluxConfig;
use fluxconfig_controller::metrics::Metrics;
use fluxconfig_controller::run::RunConfig;
use fluxconfig_testbed::apiserver::{self, ApiServer};
use fluxconfig_testbed::azcli::{self, FluxArgs};
use fluxconfig_testbed::dataplane::{self, Dataplane, DataplaneConfig};
use fluxconfig_testbed::{fixtures, fluxsim};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use serde_json::Value;
use tokio::sync::watch;

pub const DEADLINE: Duration = Duration::from_secs(45);
pub const TOKEN: &str = "s3cr3t-cluster-token-for-tests";

#[derive(Parser)]
struct Az {
    #[command(flatten)]
    flux: FluxArgs,
}

/// An agent running as a task of the test process.
pub struct Agent {
    pub task: tokio::task::JoinHandle<()>,
    pub stop: watch::Sender<bool>,
    pub metrics_addr: SocketAddr,
}

impl Agent {
    /// Graceful stop, as on SIGTERM.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(DEADLINE, self.task).await;
    }

    pub async fn metrics(&self) -> Option<String> {
        scrape(self.metrics_addr).await
    }

    /// `fluxconfig_agent_polls_total{result="…"}`, 0 when not exported yet.
    pub async fn polls(&self, result: &str) -> f64 {
        let text = self.metrics().await.unwrap_or_default();
        metric(&text, "fluxconfig_agent_polls_total", &[("result", result)]).unwrap_or(0.0)
    }
}

pub struct System {
    pub server: ApiServer,
    pub client: Client,
    pub dataplane: Dataplane,
    pub sim: fluxsim::Simulator,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub repo: fixtures::TutorialRepo,
    pub dir: tempfile::TempDir,
    /// The token management calls (`az`) and the data plane use.
    pub token: String,
}

impl System {
    /// Everything but the agent; start one with [`System::start_agent`].
    pub async fn start() -> System {
        let server = apiserver::start(apiserver::Config::default())
            .await
            .expect("emulator");
        let client = server.client().await.expect("client");
        fluxsim::install_flux_crds(&client)
            .await
            .expect("flux CRDs");
        install_fluxconfig_crd(&client).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = fixtures::tutorial_repo(&dir.path().join("repo")).expect("fixture");
        let mut sim_config = fluxsim::SimConfig::default();
        sim_config
            .git_url_map
            .insert(repo.url.clone(), repo.path.clone());
        let sim = fluxsim::start(client.clone(), sim_config)
            .await
            .expect("simulator");

        let dataplane = start_dataplane(dir.path(), "127.0.0.1:0".parse().expect("addr"), TOKEN)
            .await
            .expect("data plane");
        std::fs::write(
            dir.path().join("dataplane-ca.crt"),
            dataplane.ca_pem().expect("TLS data plane"),
        )
        .expect("CA file");

        let (stop, stop_rx) = watch::channel(false);
        let controller = RunConfig {
            metrics_addr: "127.0.0.1:0".parse().expect("addr"),
            lease: None,
            concurrency: 4,
            identity: "controller".into(),
        };
        let c = client.clone();
        let tasks = vec![tokio::spawn(async move {
            let metrics = std::sync::Arc::new(Metrics::new().expect("metrics"));
            fluxconfig_controller::run::run(c, controller, metrics, stop_rx)
                .await
                .expect("controller");
        })];

        System {
            server,
            client,
            dataplane,
            sim,
            stop,
            tasks,
            repo,
            dir,
            token: TOKEN.to_string(),
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("dataplane-ca.crt")
    }

    /// The agent configuration of `system_e2e.rs` with a fixed metrics port (so tests can
    /// scrape it) and a short backoff cap.
    pub fn agent_config(&self) -> AgentConfig {
        let mut agent = AgentConfig::new(
            self.dataplane.url().parse().expect("url"),
            cluster(),
            TokenSource::Static(self.token.clone()),
        );
        agent.ca_file = Some(self.ca_file());
        agent.metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        agent.long_poll = Some(Duration::from_secs(10));
        agent.report_interval = Duration::from_secs(5);
        agent.max_backoff = Duration::from_secs(2);
        agent
    }

    /// Starts an agent and waits until its metrics endpoint answers.
    pub async fn start_agent(&self, config: AgentConfig) -> Agent {
        let (stop, rx) = watch::channel(false);
        let metrics_addr = config.metrics_addr;
        let client = self.client.clone();
        let task = tokio::spawn(async move {
            fluxconfig_agent::run::run(client, config, rx)
                .await
                .expect("agent");
        });
        eventually("agent metrics served", || async {
            scrape(metrics_addr).await.is_some()
        })
        .await;
        Agent {
            task,
            stop,
            metrics_addr,
        }
    }

    /// Stops the data plane and serves the same state on the same port, with the same CA,
    /// accepting only `token` from now on.
    pub async fn restart_dataplane(&mut self, token: &str) {
        let addr = self.dataplane.addr();
        let placeholder =
            start_dataplane(self.dir.path(), "127.0.0.1:0".parse().expect("addr"), token)
                .await
                .expect("placeholder data plane");
        let old = std::mem::replace(&mut self.dataplane, placeholder);
        old.shutdown().await;
        // The placeholder shares the state file; replace it by one on the old port.
        let started = tokio::time::Instant::now();
        let fresh = loop {
            match start_dataplane(self.dir.path(), addr, token).await {
                Ok(d) => break d,
                Err(e) => assert!(started.elapsed() < DEADLINE, "rebinding {addr}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let placeholder = std::mem::replace(&mut self.dataplane, fresh);
        placeholder.shutdown().await;
        self.token = token.to_string();
    }

    /// `testbed flux <args…>` against this system's data plane.
    pub async fn az(&self, args: &[&str]) -> Result<Option<Value>, azcli::Error> {
        let ca = self.ca_file();
        let mut argv: Vec<String> = vec!["testbed".into()];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv.extend(
            [
                "--dataplane",
                self.dataplane.url(),
                "--token",
                &self.token,
                "--ca-file",
                ca.to_str().expect("path"),
                "-g",
                "flux-demo-rg",
                "-c",
                "flux-demo-arc",
                "-t",
                "connectedClusters",
            ]
            .iter()
            .map(|a| a.to_string()),
        );
        let az = Az::try_parse_from(argv).expect("az arguments");
        azcli::execute(az.flux).await
    }

    pub async fn show(&self, name: &str) -> Option<Value> {
        self.az(&["show", "-n", name]).await.ok().flatten()
    }

    /// A small git configuration of the fixture repository (one kustomization).
    pub async fn create_simple(&self, name: &str, namespace: &str) {
        self.az(&[
            "create",
            "-n",
            name,
            "--namespace",
            namespace,
            "-u",
            &self.repo.url,
            "--branch",
            "main",
            "--kustomization",
            "name=infra",
            "path=./infrastructure",
        ])
        .await
        .unwrap_or_else(|e| panic!("flux create {name}: {e}"));
    }

    pub async fn flux_configs(&self) -> Vec<FluxConfig> {
        let api: Api<FluxConfig> = Api::all(self.client.clone());
        api.list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// What the agent controls of each FluxConfig: identity, generation and spec (status is the
    /// controller's, so it is left out).
    pub async fn snapshot(&self) -> BTreeMap<String, (String, Option<i64>, Value)> {
        let api: Api<FluxConfig> = Api::all(self.client.clone());
        let list = api
            .list(&Default::default())
            .await
            .expect("list FluxConfigs");
        list.items
            .iter()
            .map(|fc| {
                (
                    format!("{}/{}", fc.namespace().unwrap_or_default(), fc.name_any()),
                    (
                        fc.uid().unwrap_or_default(),
                        fc.metadata.generation,
                        serde_json::to_value(&fc.spec).expect("spec"),
                    ),
                )
            })
            .collect()
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(DEADLINE, t).await;
        }
        self.sim.shutdown().await;
        self.dataplane.shutdown().await;
        self.server.shutdown().await;
    }
}

async fn start_dataplane(
    dir: &Path,
    listen: SocketAddr,
    token: &str,
) -> Result<Dataplane, dataplane::Error> {
    let mut config = DataplaneConfig::new(listen, dir.join("dataplane-state.json"), token);
    // Keeps the CA key, so a restarted data plane is trusted by the same CA file.
    config.tls_dir = Some(dir.join("dataplane-tls"));
    dataplane::start(config).await
}

pub fn cluster() -> ClusterRef {
    ClusterRef {
        subscription_id: azcli::DEFAULT_SUBSCRIPTION.to_string(),
        resource_group: "flux-demo-rg".into(),
        cluster_type: ClusterType::ConnectedClusters,
        cluster_name: "flux-demo-arc".into(),
    }
}

/// A port that was free a moment ago (binding port 0 and letting it go).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// GET /metrics without any proxy; `None` when nothing answers.
pub async fn scrape(addr: SocketAddr) -> Option<String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()
}

/// The value of one sample of the Prometheus text format.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            (n == name && all)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .reduce(|a, b| a + b)
}

async fn install_fluxconfig_crd(client: &Client) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(fluxconfig_api::crdgen::CRD_PATH);
    let text = std::fs::read_to_string(path).expect("CRD file");
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("CRD YAML");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    eventually("FluxConfig CRD established", || async {
        api.get("fluxconfigs.clusterconfig.azure.com")
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|s| s.conditions)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
    })
    .await;
}

pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, DEADLINE, check).await;
}

/// Polls `check` until it holds; fails the test after `limit`. Returns the time it took.
pub async fn within<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// tinyproxy from Debian's package, in the foreground, with a config of the test's own.
pub struct Tinyproxy {
    child: Option<std::process::Child>,
    pub port: u16,
    pub log: PathBuf,
    conf: PathBuf,
}

pub const TINYPROXY: &str = "/usr/bin/tinyproxy";

impl Tinyproxy {
    /// Listens on `port` (0: a free one), lets CONNECT through to `connect_port` only, and
    /// wants `user:pass` Basic credentials.
    pub async fn start(dir: &Path, port: u16, connect_port: u16, user: &str, pass: &str) -> Self {
        let port = if port == 0 { free_port() } else { port };
        let log = dir.join("tinyproxy.log");
        let conf = dir.join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\n\
                 ConnectPort {connect_port}\nBasicAuth {user} {pass}\n\
                 LogFile \"{}\"\nLogLevel Info\nMaxClients 50\n",
                log.display()
            ),
        )
        .expect("tinyproxy config");
        let mut proxy = Tinyproxy {
            child: None,
            port,
            log,
            conf,
        };
        proxy.restart().await;
        proxy
    }

    /// (Re)starts it on the same port and waits until it accepts connections.
    pub async fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new(TINYPROXY)
            .arg("-d")
            .arg("-c")
            .arg(&self.conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tinyproxy");
        self.child = Some(child);
        let port = self.port;
        eventually("tinyproxy accepts connections", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

//! The whole system in one process (API emulator, Flux simulator, controller, TLS data plane,
//! agent) for the agent's acceptance tests, after `system_e2e.rs`'s harness, plus what those
//! tests need on top: agents started and stopped at will, a data plane restartable on the same
//! port, metrics scraping, cluster snapshots and a tinyproxy forward proxy.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fluxconfig_agent::config::AgentConfig;
use fluxconfig_api::dataplane::ClusterRef;
use fluxconfig_api::FluxConfig;
use fluxconfig_testbed::system::{self, Component, Options};
use kube::{Api, ResourceExt};
use serde_json::Value;

pub const DEADLINE: Duration = Duration::from_secs(45);
pub const TOKEN: &str = "s3cr3t-cluster-token-for-tests";

/// An agent running as a task of the test process, metrics on a known port.
pub struct Agent {
    component: Component,
    pub metrics_addr: SocketAddr,
}

impl Agent {
    /// Graceful stop, as on SIGTERM.
    pub async fn shutdown(self) {
        self.component
            .shutdown()
            .await
            .expect("agent stops cleanly");
    }

    /// No graceful step, as on SIGKILL.
    pub async fn kill(self) {
        self.component.kill().await;
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

/// The shared system with the controller running; agents come and go.
pub struct System {
    system: system::System,
    controller: Component,
}

impl Deref for System {
    type Target = system::System;
    fn deref(&self) -> &system::System {
        &self.system
    }
}

impl DerefMut for System {
    fn deref_mut(&mut self) -> &mut system::System {
        &mut self.system
    }
}

impl System {
    /// Everything but the agent; start one with [`System::start_agent`].
    pub async fn start() -> System {
        let system = system::System::start(Options {
            token: TOKEN.into(),
            ..Options::default()
        })
        .await
        .expect("system");
        let controller = system.start_controller(system.controller_config());
        System { system, controller }
    }

    /// The agent configuration of `system_e2e.rs` with a fixed metrics port (so tests can
    /// scrape it) and a short backoff cap.
    pub fn agent_config(&self) -> AgentConfig {
        let mut agent = self.system.agent_config().expect("agent config");
        agent.metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        agent.long_poll = Some(Duration::from_secs(10));
        agent.report_interval = Duration::from_secs(5);
        agent.max_backoff = Duration::from_secs(2);
        agent
    }

    /// Starts an agent and waits until its metrics endpoint answers.
    pub async fn start_agent(&self, config: AgentConfig) -> Agent {
        let metrics_addr = config.metrics_addr;
        let component = self.system.start_agent(config);
        eventually("agent metrics served", || async {
            scrape(metrics_addr).await.is_some()
        })
        .await;
        Agent {
            component,
            metrics_addr,
        }
    }

    /// Stops the data plane and serves the same state on the same port, with the same CA,
    /// accepting only `token` from now on.
    pub async fn restart_dataplane(&mut self, token: &str) {
        self.system
            .restart_dataplane(token)
            .await
            .expect("data plane restarts");
    }

    /// `testbed flux <args…>` against this system's data plane.
    pub async fn az(&self, args: &[&str]) -> Result<Option<Value>, system::Error> {
        self.system.az(args).await
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
        self.controller
            .shutdown()
            .await
            .expect("controller stops cleanly");
        self.system.shutdown().await;
    }
}

pub fn cluster() -> ClusterRef {
    system::tutorial_cluster()
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

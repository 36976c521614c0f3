//! The system under test: `fluxconfig-controller` and `fluxconfig-agent`, either as real child
//! processes (so their resident memory is theirs alone) or as tasks of the bench process (the
//! smoke test, where the release binaries may not exist).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fluxconfig_agent::config::AgentConfig;
use fluxconfig_agent::token::TokenSource;
use fluxconfig_api::dataplane::ClusterRef;
use fluxconfig_controller::metrics::Metrics;
use fluxconfig_controller::run::RunConfig;
use tokio::sync::watch;

use super::BenchError;

/// Where the two binaries are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub agent: PathBuf,
    pub controller: PathBuf,
}

impl Binaries {
    /// The binaries next to the running executable, as `cargo build` lays them out.
    pub fn beside_current_exe() -> Result<Binaries, BenchError> {
        let exe = std::env::current_exe().map_err(|source| BenchError::Io {
            what: "locating the current executable".into(),
            source,
        })?;
        let dir = exe.parent().unwrap_or_else(|| Path::new("."));
        let found = Binaries {
            agent: dir.join("fluxconfig-agent"),
            controller: dir.join("fluxconfig-controller"),
        };
        for path in [&found.agent, &found.controller] {
            if !path.is_file() {
                return Err(BenchError::MissingBinary { path: path.clone() });
            }
        }
        Ok(found)
    }
}

/// Everything needed to start the agent and the controller.
pub struct Target<'a> {
    pub kubeconfig: &'a Path,
    /// For the in-process variant, which cannot read a kubeconfig file's `KUBECONFIG` env.
    pub client: kube::Client,
    pub dataplane_url: &'a str,
    pub ca_file: &'a Path,
    pub token: &'a str,
    pub token_file: &'a Path,
    pub cluster: &'a ClusterRef,
    pub log_dir: &'a Path,
}

enum Kind {
    Processes {
        agent: Box<tokio::process::Child>,
        controller: Box<tokio::process::Child>,
    },
    InProcess {
        stop: watch::Sender<bool>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    },
}

pub struct Running {
    kind: Kind,
    pub agent_metrics: SocketAddr,
    pub controller_metrics: SocketAddr,
}

fn free_port() -> Result<SocketAddr, BenchError> {
    // The port is released before the child binds it; a race with another process picking
    // the same ephemeral port in that window is unlikely enough for a benchmark.
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| BenchError::Io {
        what: "picking a free port".into(),
        source,
    })?;
    l.local_addr().map_err(|source| BenchError::Io {
        what: "picking a free port".into(),
        source,
    })
}

fn log_file(dir: &Path, name: &str) -> Result<std::fs::File, BenchError> {
    let path = dir.join(name);
    std::fs::File::create(&path).map_err(|source| BenchError::Io {
        what: format!("creating {}", path.display()),
        source,
    })
}

pub async fn start(target: Target<'_>, binaries: Option<&Binaries>) -> Result<Running, BenchError> {
    let agent_metrics = free_port()?;
    let controller_metrics = free_port()?;
    let kind = match binaries {
        Some(b) => {
            let spawn = |cmd: &mut tokio::process::Command, what: &Path| {
                cmd.spawn().map_err(|source| BenchError::Io {
                    what: format!("starting {}", what.display()),
                    source,
                })
            };
            let controller = spawn(
                tokio::process::Command::new(&b.controller)
                    .args([
                        "run",
                        "--metrics-addr",
                        &controller_metrics.to_string(),
                        "--no-leader-election",
                    ])
                    .env("KUBECONFIG", target.kubeconfig)
                    .stdin(Stdio::null())
                    .stdout(log_file(target.log_dir, "controller.log")?)
                    .stderr(log_file(target.log_dir, "controller.err")?)
                    .kill_on_drop(true),
                &b.controller,
            )?;
            let agent = spawn(
                tokio::process::Command::new(&b.agent)
                    .arg("run")
                    .arg("--dataplane-url")
                    .arg(target.dataplane_url)
                    .arg("--subscription-id")
                    .arg(&target.cluster.subscription_id)
                    .arg("--resource-group")
                    .arg(&target.cluster.resource_group)
                    .arg("--cluster-type")
                    .arg(target.cluster.cluster_type.as_str())
                    .arg("--cluster-name")
                    .arg(&target.cluster.cluster_name)
                    .arg("--token-file")
                    .arg(target.token_file)
                    .arg("--ca-file")
                    .arg(target.ca_file)
                    .arg("--metrics-addr")
                    .arg(agent_metrics.to_string())
                    .env("KUBECONFIG", target.kubeconfig)
                    .stdin(Stdio::null())
                    .stdout(log_file(target.log_dir, "agent.log")?)
                    .stderr(log_file(target.log_dir, "agent.err")?)
                    .kill_on_drop(true),
                &b.agent,
            )?;
            Kind::Processes {
                agent: Box::new(agent),
                controller: Box::new(controller),
            }
        }
        None => {
            let (stop, stop_rx) = watch::channel(false);
            let mut tasks = Vec::new();
            let run = RunConfig {
                metrics_addr: controller_metrics,
                lease: None,
                concurrency: 8,
                identity: "controller".into(),
            };
            let (c, rx) = (target.client.clone(), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                let metrics = match Metrics::new() {
                    Ok(m) => std::sync::Arc::new(m),
                    Err(e) => {
                        tracing::error!(error = %e, "controller metrics");
                        return;
                    }
                };
                if let Err(e) = fluxconfig_controller::run::run(c, run, metrics, rx).await {
                    tracing::error!(error = %e, "in-process controller");
                }
            }));
            let url = target.dataplane_url.parse().map_err(|_| {
                BenchError::Setup(format!("data-plane URL {}", target.dataplane_url))
            })?;
            let mut agent = AgentConfig::new(
                url,
                target.cluster.clone(),
                TokenSource::Static(target.token.to_string()),
            );
            agent.ca_file = Some(target.ca_file.to_path_buf());
            agent.metrics_addr = agent_metrics;
            let c = target.client.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = fluxconfig_agent::run::run(c, agent, stop_rx).await {
                    tracing::error!(error = %e, "in-process agent");
                }
            }));
            Kind::InProcess { stop, tasks }
        }
    };
    let running = Running {
        kind,
        agent_metrics,
        controller_metrics,
    };
    for addr in [agent_metrics, controller_metrics] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                return Err(BenchError::Setup(format!(
                    "nothing listens on {addr} after 30s; see the logs in {}",
                    target.log_dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(running)
}

/// VmRSS of a process in KiB.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Running {
    /// (agent, controller) resident set sizes in KiB; `None` when running in-process.
    pub fn rss_kib(&self) -> Option<(u64, u64)> {
        match &self.kind {
            Kind::Processes { agent, controller } => {
                Some((vm_rss_kib(agent.id()?)?, vm_rss_kib(controller.id()?)?))
            }
            Kind::InProcess { .. } => None,
        }
    }

    /// A child that exited is a failed run, not a slow one.
    pub fn check_alive(&mut self) -> Result<(), BenchError> {
        if let Kind::Processes { agent, controller } = &mut self.kind {
            for (name, child) in [("agent", agent), ("controller", controller)] {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(BenchError::Setup(format!("the {name} exited: {status}")));
                }
            }
        }
        Ok(())
    }

    pub async fn stop(self) {
        match self.kind {
            Kind::Processes {
                mut agent,
                mut controller,
            } => {
                let _ = agent.kill().await;
                let _ = controller.kill().await;
            }
            Kind::InProcess { stop, tasks } => {
                let _ = stop.send(true);
                for t in tasks {
                    let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
                }
            }
        }
    }
}

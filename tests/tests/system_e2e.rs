//! The whole data path in one process tree: `testbed flux create` → data plane → agent →
//! FluxConfig → controller → Flux (simulated) → controller status → agent report → `testbed
//! flux show`, on the API emulator, with the data plane on TLS with its own CA.

use std::time::Duration;

use clap::Parser;
use fluxconfig_agent::config::AgentConfig;
use fluxconfig_agent::token::TokenSource;
use fluxconfig_api::dataplane::{ClusterRef, ClusterType};
use fluxconfig_api::flux::{GitRepository, HelmRelease, Kustomization};
use fluxconfig_api::FluxConfig;
use fluxconfig_controller::metrics::Metrics;
use fluxconfig_controller::run::RunConfig;
use fluxconfig_testbed::apiserver::{self, ApiServer};
use fluxconfig_testbed::azcli::{self, FluxArgs};
use fluxconfig_testbed::dataplane::{self, Dataplane, DataplaneConfig};
use fluxconfig_testbed::{fixtures, fluxsim};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(45);
const TOKEN: &str = "s3cr3t-cluster-token-for-tests";

#[derive(Parser)]
struct Az {
    #[command(flatten)]
    flux: FluxArgs,
}

struct System {
    server: ApiServer,
    client: Client,
    dataplane: Dataplane,
    sim: fluxsim::Simulator,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    repo: fixtures::TutorialRepo,
    dir: tempfile::TempDir,
}

impl System {
    async fn start() -> System {
        let server = apiserver::start(apiserver::Config::default())
            .await
            .expect("emulator");
        let client = server.client().await.expect("client");
        fluxsim::install_flux_crds(&client)
            .await
            .expect("flux CRDs");
        fluxsim::install_fluxconfig_crd(&client)
            .await
            .expect("FluxConfig CRD");
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = fixtures::tutorial_repo(&dir.path().join("repo")).expect("fixture");
        let mut sim_config = fluxsim::SimConfig::default();
        sim_config
            .git_url_map
            .insert(repo.url.clone(), repo.path.clone());
        let sim = fluxsim::start(client.clone(), sim_config)
            .await
            .expect("simulator");

        let dataplane = dataplane::start(DataplaneConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            dir.path().join("dataplane-state.json"),
            TOKEN,
        ))
        .await
        .expect("data plane");
        let ca_file = dir.path().join("dataplane-ca.crt");
        std::fs::write(&ca_file, dataplane.ca_pem().expect("TLS data plane")).expect("CA file");

        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let controller = RunConfig {
            metrics_addr: "127.0.0.1:0".parse().expect("addr"),
            lease: None,
            concurrency: 4,
            identity: "controller".into(),
        };
        let (c, rx) = (client.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let metrics = std::sync::Arc::new(Metrics::new().expect("metrics"));
            fluxconfig_controller::run::run(c, controller, metrics, rx)
                .await
                .expect("controller");
        }));

        let mut agent = AgentConfig::new(
            dataplane.url().parse().expect("url"),
            cluster(),
            TokenSource::Static(TOKEN.into()),
        );
        agent.ca_file = Some(ca_file);
        agent.metrics_addr = "127.0.0.1:0".parse().expect("addr");
        agent.long_poll = Some(Duration::from_secs(10));
        agent.report_interval = Duration::from_secs(5);
        let (c, rx) = (client.clone(), stop_rx);
        tasks.push(tokio::spawn(async move {
            fluxconfig_agent::run::run(c, agent, rx)
                .await
                .expect("agent");
        }));

        System {
            server,
            client,
            dataplane,
            sim,
            stop,
            tasks,
            repo,
            dir,
        }
    }

    /// `testbed flux <args…>` against this system's data plane.
    async fn az(&self, args: &[&str]) -> Result<Option<Value>, azcli::Error> {
        let ca = self.dir.path().join("dataplane-ca.crt");
        let mut argv: Vec<String> = vec!["testbed".into()];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv.extend(
            [
                "--dataplane",
                self.dataplane.url(),
                "--token",
                TOKEN,
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

    async fn show(&self, name: &str) -> Option<Value> {
        self.az(&["show", "-n", name]).await.ok().flatten()
    }

    async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(DEADLINE, t).await;
        }
        self.sim.shutdown().await;
        self.dataplane.shutdown().await;
        self.server.shutdown().await;
    }
}

fn cluster() -> ClusterRef {
    ClusterRef {
        subscription_id: azcli::DEFAULT_SUBSCRIPTION.to_string(),
        resource_group: "flux-demo-rg".into(),
        cluster_type: ClusterType::ConnectedClusters,
        cluster_name: "flux-demo-arc".into(),
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Azure tutorial's command line.
fn tutorial_create(url: &str) -> Vec<String> {
    [
        "create",
        "-n",
        "cluster-config",
        "--namespace",
        "cluster-config",
        "--scope",
        "cluster",
        "-u",
        url,
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tutorial_through_the_data_plane_reports_compliant_and_delete_removes_everything() {
    let system = System::start().await;
    let args = tutorial_create(&system.repo.url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    system.az(&args).await.expect("flux create");

    eventually("show reports Compliant", || async {
        system
            .show("cluster-config")
            .await
            .is_some_and(|v| v["complianceState"] == "Compliant")
    })
    .await;
    let shown = system.show("cluster-config").await.expect("show");
    assert_eq!(shown["provisioningState"], "Succeeded", "{shown:#}");
    assert_eq!(
        shown["sourceSyncedCommitId"],
        format!("main@sha1:{}", system.repo.commit),
        "{shown:#}"
    );
    let statuses: Vec<(String, String)> = shown["statuses"]
        .as_array()
        .expect("statuses")
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap_or_default().to_string(),
                s["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (kind, name) in [
        ("GitRepository", "cluster-config"),
        ("Kustomization", "cluster-config-infra"),
        ("Kustomization", "cluster-config-apps"),
        ("HelmRelease", "nginx"),
        ("HelmRelease", "redis"),
        ("HelmRelease", "podinfo"),
    ] {
        assert!(
            statuses.contains(&(kind.to_string(), name.to_string())),
            "{kind} {name} missing from {statuses:?}"
        );
    }

    system
        .az(&["delete", "-n", "cluster-config", "--yes"])
        .await
        .expect("flux delete");
    let configs: Api<FluxConfig> = Api::all(system.client.clone());
    eventually("FluxConfig gone", || async {
        configs
            .list(&Default::default())
            .await
            .is_ok_and(|l| l.items.is_empty())
    })
    .await;
    let git: Api<GitRepository> = Api::all(system.client.clone());
    let ks: Api<Kustomization> = Api::all(system.client.clone());
    let hr: Api<HelmRelease> = Api::all(system.client.clone());
    eventually("every generated object gone", || async {
        let g = git.list(&Default::default()).await.map(|l| l.items.len());
        let k = ks.list(&Default::default()).await.map(|l| l.items.len());
        let h = hr.list(&Default::default()).await.map(|l| l.items.len());
        matches!((g, k, h), (Ok(0), Ok(0), Ok(0)))
    })
    .await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_configuration_fails_alone_with_a_clear_error() {
    let system = System::start().await;
    let args = tutorial_create(&system.repo.url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    system.az(&args).await.expect("flux create");
    // A dependency on a kustomization that does not exist.
    system
        .az(&[
            "create",
            "-n",
            "broken",
            "--namespace",
            "cluster-config",
            "-u",
            &system.repo.url,
            "--branch",
            "main",
            "--kustomization",
            "name=apps",
            "path=./apps/staging",
            "dependsOn=[\"infr\"]",
        ])
        .await
        .expect("flux create broken");

    eventually("broken reported Failed", || async {
        system
            .show("broken")
            .await
            .is_some_and(|v| v["provisioningState"] == "Failed")
    })
    .await;
    let broken = system.show("broken").await.expect("show");
    let message = broken["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("dependsOn[0]") && message.contains("infr"),
        "clear, field-named error: {broken:#}"
    );
    eventually("the good one is Compliant", || async {
        system
            .show("cluster-config")
            .await
            .is_some_and(|v| v["complianceState"] == "Compliant")
    })
    .await;
    system.shutdown().await;
}

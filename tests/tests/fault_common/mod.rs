//! Harness of the fault suites: the whole system in one process (API emulator, optional Flux
//! simulator, TLS data plane) with the controller and the agent as tasks a test can stop,
//! abort and restart on their own, configurations managed straight through the data plane's
//! management API (fast enough for a thousand), and a check of the cluster's exact state.

#![allow(dead_code)]

pub mod process;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

use fluxconfig_agent::config::AgentConfig;
use fluxconfig_api::dataplane::{ClusterRef, ClusterType, API_VERSION};
use fluxconfig_api::flux::{GitRepository, Kustomization};
use fluxconfig_api::validation::kustomization_object_name;
use fluxconfig_api::{ComplianceState, FluxConfig, FluxConfigStatus};
use fluxconfig_testbed::azcli;
use fluxconfig_testbed::dataplane::{self, client};
use fluxconfig_testbed::system::{Options, System};
use fluxconfig_testbed::{fixtures, fluxsim};
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use serde_json::{json, Value};

pub const TOKEN: &str = "s3cr3t-cluster-token-for-fault-tests";
pub const NAMESPACE: &str = "default";

/// The controller or the agent as a task: `kill` drops its whole future at the next await
/// point, which is what SIGKILL does to the process as far as the API server can tell.
pub use fluxconfig_testbed::system::Component;

/// The shared whole-system harness (`fluxconfig_testbed::system`) with the fault suites'
/// cluster and token, a management client of the data plane, and checks of the exact state.
pub struct Bed {
    system: System,
    pub dp: client::Client,
    _dir: tempfile::TempDir,
}

impl Deref for Bed {
    type Target = System;
    fn deref(&self) -> &System {
        &self.system
    }
}

impl Bed {
    /// `with_sim`: run the Flux simulator, needed for compliance to be reported.
    pub async fn start(with_sim: bool) -> Bed {
        Bed::start_seeded(with_sim, |_| Vec::new()).await
    }

    /// [`Self::start`] with the data plane already holding the configurations `seed` returns
    /// (given the fixture repository's URL), written into its state file before it starts:
    /// storing a thousand through the management API one by one takes half a minute.
    pub async fn start_seeded(
        with_sim: bool,
        seed: impl FnOnce(&str) -> Vec<(String, Value)>,
    ) -> Bed {
        init_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let seeded = seed(fixtures::TUTORIAL_URL);
        if !seeded.is_empty() {
            let state_file = dir.path().join("dataplane-state.json");
            let (mut store, _) = dataplane::state::Store::load(&state_file).expect("state");
            for (name, properties) in seeded {
                let properties = properties.as_object().cloned().expect("properties object");
                store.put_configuration(&cluster(), &name, properties, None);
            }
            let snapshot = store.snapshot().expect("snapshot");
            dataplane::state::write_atomically(&state_file, &snapshot.bytes).expect("state file");
        }
        let system = System::start(Options {
            dir: Some(dir.path().to_path_buf()),
            flux: with_sim.then(fluxsim::SimConfig::default),
            token: TOKEN.into(),
            cluster: cluster(),
            ..Options::default()
        })
        .await
        .expect("system");
        assert_eq!(system.repo.url, fixtures::TUTORIAL_URL, "seeded URL");
        let dp = system.dataplane.client().expect("data plane client");
        Bed {
            system,
            dp,
            _dir: dir,
        }
    }

    /// A kubeconfig of the emulator, written once under the bed's directory.
    pub fn kubeconfig(&self) -> PathBuf {
        let path = self.dir.as_path().join("kubeconfig");
        if !path.exists() {
            self.server.write_kubeconfig(&path).expect("kubeconfig");
        }
        path
    }

    /// The bed's token file (written with the data plane's token on first use).
    pub fn token_file(&self) -> PathBuf {
        let token = self.dir.as_path().join("token");
        if !token.exists() {
            std::fs::write(&token, TOKEN).expect("token file");
        }
        token
    }

    /// A `fluxconfig-agent run` command against this bed (data-plane CA, 10 s long polls),
    /// reading its token from `token_file`.
    pub fn agent_command(
        &self,
        token_file: &std::path::Path,
        metrics_addr: &str,
    ) -> std::process::Command {
        let mut args = process::agent_args(
            self.dataplane.url(),
            token_file,
            Some(&self.dir.as_path().join("dataplane-ca.crt")),
            metrics_addr,
        );
        args.extend(["--long-poll-secs", "10", "--report-interval-secs", "60"].map(String::from));
        process::command("fluxconfig-agent", &args, &self.kubeconfig())
    }

    /// The real `fluxconfig-agent` binary against this bed, metrics on an ephemeral port.
    pub fn spawn_agent(&self) -> process::Proc {
        let log = self
            .dir
            .join(format!("fluxconfig-agent-{}.log", fastrand::u32(..)));
        process::Proc::start_logging_to(log, self.agent_command(&self.token_file(), "127.0.0.1:0"))
    }

    /// The real `fluxconfig-controller` binary against this bed, without leader election.
    pub fn spawn_controller(&self) -> process::Proc {
        process::Proc::start(
            self.dir.as_path(),
            "fluxconfig-controller",
            &process::controller_args("127.0.0.1:0"),
            &self.kubeconfig(),
        )
    }

    pub fn start_controller(&self) -> Component {
        self.system
            .start_controller(self.system.controller_config())
    }

    /// The agent with short long polls, report interval and backoff cap, so the suites move
    /// quickly.
    pub fn agent_config(&self) -> AgentConfig {
        let mut agent = self.system.agent_config().expect("agent config");
        agent.long_poll = Some(Duration::from_secs(10));
        agent.report_interval = Duration::from_secs(2);
        agent.max_backoff = Duration::from_secs(2);
        agent
    }

    pub fn start_agent(&self, config: AgentConfig) -> Component {
        self.system.start_agent(config)
    }

    /// Stores a configuration (management PUT of `properties` as given).
    pub async fn put(&self, name: &str, properties: Value) {
        let path = format!(
            "{}?api-version={API_VERSION}",
            cluster().management_path(Some(name))
        );
        let body = json!({ "properties": properties });
        let mut last = String::new();
        for _ in 0..20 {
            match self.dp.put_json(&path, &body).await {
                Ok(r) if r.status.is_success() => return,
                Ok(r) => last = format!("{}: {}", r.status, String::from_utf8_lossy(&r.body)),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("PUT {name}: {last}");
    }

    pub async fn put_simple(&self, name: &str) {
        self.put(name, simple_properties(&self.repo.url)).await;
    }

    pub async fn delete(&self, name: &str) {
        let path = format!(
            "{}?api-version={API_VERSION}",
            cluster().management_path(Some(name))
        );
        let r = self.dp.delete(&path).await.expect("DELETE");
        assert!(
            r.status.is_success() || r.status.as_u16() == 404,
            "DELETE {name}: {}",
            r.status
        );
    }

    /// The status the agent last reported for `name`.
    pub fn status(&self, name: &str) -> Option<FluxConfigStatus> {
        self.dataplane.status(&cluster(), name)
    }

    /// [`Self::cluster_state`] through an API that may be injecting faults: the observer is
    /// not under test, so its reads are retried (a bounded number of times).
    pub async fn observed_state(&self) -> ClusterState {
        let mut last = None;
        for _ in 0..50 {
            match self.cluster_state().await {
                Ok(state) => return state,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("reading the cluster state kept failing: {last:?}");
    }

    /// Snapshot of what the agent and controller made of the desired state.
    pub async fn cluster_state(&self) -> Result<ClusterState, kube::Error> {
        let configs: Api<FluxConfig> = Api::all(self.client.clone());
        let git: Api<GitRepository> = Api::all(self.client.clone());
        let ks: Api<Kustomization> = Api::all(self.client.clone());
        let mut state = ClusterState::default();
        for fc in configs.list(&Default::default()).await?.items {
            let name = fc.name_any();
            let path = serde_json::to_value(&fc.spec)
                .ok()
                .and_then(|v| {
                    v["kustomizations"]["infra"]["path"]
                        .as_str()
                        .map(String::from)
                })
                .unwrap_or_default();
            state.config_paths.insert(name.clone(), path);
            let previous = state.configs.insert(
                name.clone(),
                (
                    fc.uid().unwrap_or_default(),
                    fc.resource_version().unwrap_or_default(),
                    fc.metadata.deletion_timestamp.is_some(),
                ),
            );
            if previous.is_some() {
                state.duplicates.push(format!("FluxConfig {name}"));
            }
        }
        for g in git.list(&Default::default()).await?.items {
            let name = g.name_any();
            if state
                .git
                .insert(name.clone(), owners(g.owner_references()))
                .is_some()
            {
                state.duplicates.push(format!("GitRepository {name}"));
            }
        }
        for k in ks.list(&Default::default()).await?.items {
            let name = k.name_any();
            let path = serde_json::to_value(&k.spec)
                .ok()
                .and_then(|v| v["path"].as_str().map(String::from))
                .unwrap_or_default();
            state.ks_paths.insert(name.clone(), path);
            if state
                .kustomizations
                .insert(name.clone(), owners(k.owner_references()))
                .is_some()
            {
                state.duplicates.push(format!("Kustomization {name}"));
            }
        }
        Ok(state)
    }

    /// Waits until the cluster holds exactly the translation of `desired`; fails with the last
    /// difference seen. Returns the time it took.
    pub async fn await_exact(&self, desired: &BTreeSet<String>, limit: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        loop {
            let last = match self.cluster_state().await {
                Ok(s) => s.mismatch(desired),
                Err(e) => Some(format!("listing: {e}")),
            };
            let Some(why) = last else {
                return started.elapsed();
            };
            assert!(
                started.elapsed() < limit,
                "not the exact desired state after {limit:?}: {why}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the cluster holds exactly the translation of `desired` (configuration →
    /// kustomization path); fails with the last difference seen, after calling `on_timeout`
    /// for diagnostics. Polls less often the longer a listing takes, so the observer takes at most a fifth of
    /// the API server's time from the system it watches. Returns the time it took.
    pub async fn await_exact_paths(
        &self,
        desired: &BTreeMap<String, String>,
        limit: Duration,
        mut on_timeout: impl FnMut() -> String,
    ) -> Duration {
        let started = tokio::time::Instant::now();
        loop {
            let listed = tokio::time::Instant::now();
            let last = match self.cluster_state().await {
                Ok(s) => s.mismatch_paths(desired),
                Err(e) => Some(format!("listing: {e}")),
            };
            let Some(why) = last else {
                return started.elapsed();
            };
            assert!(
                started.elapsed() < limit,
                "not the exact desired state after {limit:?}: {why}\n{}",
                on_timeout()
            );
            let pause = (listed.elapsed() * 4).max(Duration::from_millis(200));
            tokio::time::sleep(pause).await;
        }
    }

    /// What the agent controls of each FluxConfig: uid, generation and spec (status is the
    /// controller's and changes all the time).
    pub async fn spec_snapshot(&self) -> BTreeMap<String, (String, Option<i64>, Value)> {
        let api: Api<FluxConfig> = Api::all(self.client.clone());
        let list = api
            .list(&Default::default())
            .await
            .expect("list FluxConfigs");
        list.items
            .iter()
            .map(|fc| {
                (
                    fc.name_any(),
                    (
                        fc.uid().unwrap_or_default(),
                        fc.metadata.generation,
                        serde_json::to_value(&fc.spec).expect("spec"),
                    ),
                )
            })
            .collect()
    }

    /// Waits until the agent reported every one of `names` Compliant; fails with the status of
    /// the first one that is not.
    pub async fn await_compliant(&self, names: &BTreeSet<String>, limit: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        loop {
            let laggard = names.iter().find(|n| {
                self.status(n)
                    .is_none_or(|s| s.compliance_state != Some(ComplianceState::Compliant))
            });
            let Some(name) = laggard else {
                return started.elapsed();
            };
            if started.elapsed() >= limit {
                let fc: Api<FluxConfig> = Api::namespaced(self.client.clone(), NAMESPACE);
                let cluster = fc
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .map(|f| serde_json::to_string(&f.status).unwrap_or_default());
                panic!(
                    "{name} not Compliant after {limit:?}: reported {:?}; FluxConfig status {cluster:?}",
                    self.status(name)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether the agent reported every one of `names` Compliant.
    pub fn all_compliant<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> bool {
        names.into_iter().all(|n| {
            self.status(n)
                .is_some_and(|s| s.compliance_state == Some(ComplianceState::Compliant))
        })
    }

    pub async fn shutdown(self) {
        self.system.shutdown().await;
    }

    /// Removes what a run left behind directly through the API, finalizers included, so the
    /// next run starts from an empty cluster (components must be stopped).
    pub async fn wipe_cluster(&self) {
        let configs: Api<FluxConfig> = Api::namespaced(self.client.clone(), NAMESPACE);
        for fc in configs.list(&Default::default()).await.expect("list").items {
            let name = fc.name_any();
            let _ = configs
                .patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await;
            let _ = configs.delete(&name, &DeleteParams::default()).await;
        }
        let git: Api<GitRepository> = Api::namespaced(self.client.clone(), NAMESPACE);
        let ks: Api<Kustomization> = Api::namespaced(self.client.clone(), NAMESPACE);
        let _ = git
            .delete_collection(&DeleteParams::default(), &Default::default())
            .await;
        let _ = ks
            .delete_collection(&DeleteParams::default(), &Default::default())
            .await;
        within("cluster wiped", Duration::from_secs(60), || async {
            self.cluster_state().await.is_ok_and(|s| s.is_empty())
        })
        .await;
    }
}

fn owners(refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]) -> Vec<String> {
    refs.iter()
        .filter(|o| o.kind == "FluxConfig")
        .map(|o| o.uid.clone())
        .collect()
}

/// FluxConfigs by name (uid, resourceVersion, being deleted) and the Flux objects by name with
/// the uids of their FluxConfig owners.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    pub configs: BTreeMap<String, (String, String, bool)>,
    pub git: BTreeMap<String, Vec<String>>,
    pub kustomizations: BTreeMap<String, Vec<String>>,
    /// `kustomizations.infra.path` of each FluxConfig's spec.
    pub config_paths: BTreeMap<String, String>,
    /// `spec.path` of each Kustomization.
    pub ks_paths: BTreeMap<String, String>,
    /// Objects whose name appeared twice (in different namespaces).
    pub duplicates: Vec<String>,
}

impl ClusterState {
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty() && self.git.is_empty() && self.kustomizations.is_empty()
    }

    /// Why this is not exactly the translation of `desired` (simple configurations), if it is
    /// not: missing or extra FluxConfigs, missing, duplicate or orphaned Flux objects.
    pub fn mismatch(&self, desired: &BTreeSet<String>) -> Option<String> {
        if !self.duplicates.is_empty() {
            return Some(format!("duplicates: {:?}", self.duplicates));
        }
        let configs: BTreeSet<String> = self.configs.keys().cloned().collect();
        if &configs != desired {
            let missing: Vec<_> = desired.difference(&configs).take(5).collect();
            let extra: Vec<_> = configs.difference(desired).take(5).collect();
            return Some(format!(
                "FluxConfigs differ: {} desired, {} present; missing {missing:?}, extra {extra:?}",
                desired.len(),
                configs.len()
            ));
        }
        if let Some((name, _)) = self.configs.iter().find(|(_, (_, _, deleting))| *deleting) {
            return Some(format!("FluxConfig {name} is being deleted"));
        }
        let want_git: BTreeSet<String> = desired.iter().cloned().collect();
        let want_ks: BTreeSet<String> = desired
            .iter()
            .map(|n| kustomization_object_name(n, "infra"))
            .collect();
        for (kind, want, have) in [
            ("GitRepository", &want_git, &self.git),
            ("Kustomization", &want_ks, &self.kustomizations),
        ] {
            let names: BTreeSet<String> = have.keys().cloned().collect();
            if &names != want {
                let missing: Vec<_> = want.difference(&names).take(5).collect();
                let extra: Vec<_> = names.difference(want).take(5).collect();
                return Some(format!(
                    "{kind}s differ: missing {missing:?}, extra {extra:?}"
                ));
            }
        }
        for (kind, objects, owner_of) in [
            ("GitRepository", &self.git, None),
            ("Kustomization", &self.kustomizations, Some("-infra")),
        ] {
            for (name, owners) in objects {
                let config = match owner_of {
                    Some(suffix) => name.strip_suffix(suffix).unwrap_or(name),
                    None => name,
                };
                let uid = self.configs.get(config).map(|(uid, _, _)| uid);
                if owners.len() != 1 || uid != owners.first() {
                    return Some(format!(
                        "{kind} {name} is orphaned: owners {owners:?}, FluxConfig uid {uid:?}"
                    ));
                }
            }
        }
        None
    }
}

impl ClusterState {
    /// [`Self::mismatch`], and each FluxConfig and its Kustomization carry the desired
    /// kustomization path (`desired`: configuration → path).
    pub fn mismatch_paths(&self, desired: &BTreeMap<String, String>) -> Option<String> {
        let names: BTreeSet<String> = desired.keys().cloned().collect();
        if let Some(why) = self.mismatch(&names) {
            return Some(why);
        }
        for (name, want) in desired {
            let spec = self.config_paths.get(name);
            let ks_name = kustomization_object_name(name, "infra");
            let flux = self.ks_paths.get(&ks_name);
            if spec != Some(want) || flux != Some(want) {
                return Some(format!(
                    "{name}: path {want:?} desired, FluxConfig has {spec:?}, Kustomization {ks_name} has {flux:?}"
                ));
            }
        }
        None
    }
}

pub fn simple_properties(url: &str) -> Value {
    json!({
        "scope": "cluster",
        "namespace": NAMESPACE,
        "sourceKind": "GitRepository",
        "gitRepository": {
            "url": url,
            "repositoryRef": {"branch": "main"},
            "syncIntervalInSeconds": 600
        },
        "kustomizations": {"infra": {
            "path": "./infrastructure",
            "prune": true,
            "retryIntervalInSeconds": 2
        }}
    })
}

pub fn cluster() -> ClusterRef {
    ClusterRef {
        subscription_id: azcli::DEFAULT_SUBSCRIPTION.to_string(),
        resource_group: "fault-rg".into(),
        cluster_type: ClusterType::ConnectedClusters,
        cluster_name: "fault-arc".into(),
    }
}

/// Logs of the components under test when `RUST_LOG` asks for them.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

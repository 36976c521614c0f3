//! End to end: the API emulator, the Flux simulator and the real controller, driven through the
//! Azure tutorial configuration (issue: fluxconfig-controller acceptance).

use std::collections::BTreeMap;
use std::time::Duration;

use fluxconfig_api::flux::{GitRepository, HelmRelease, Kustomization};
use fluxconfig_api::{ComplianceState, FluxConfig, ProvisioningState};
use std::sync::Arc;

use fluxconfig_controller::leader::LeaseConfig;
use fluxconfig_controller::metrics::Metrics;
use fluxconfig_controller::run::{run, RunConfig};
use fluxconfig_testbed::apiserver::{self, ApiServer};
use fluxconfig_testbed::{fixtures, fluxsim};
use futures::StreamExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(30);

struct Cluster {
    server: ApiServer,
    client: Client,
    sim: Option<fluxsim::Simulator>,
    controllers: Vec<(watch::Sender<bool>, JoinHandle<()>, Arc<Metrics>)>,
    repo: fixtures::TutorialRepo,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
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
        let repo = fixtures::tutorial_repo(dir.path()).expect("fixture repository");
        let mut sim_config = fluxsim::SimConfig::default();
        sim_config
            .git_url_map
            .insert(repo.url.clone(), repo.path.clone());
        let sim = fluxsim::start(client.clone(), sim_config)
            .await
            .expect("simulator");
        let mut cluster = Cluster {
            server,
            client,
            sim: Some(sim),
            controllers: Vec::new(),
            repo,
            _dir: dir,
        };
        cluster.start_controller(None);
        cluster
    }

    fn start_controller(&mut self, lease: Option<LeaseConfig>) -> usize {
        let (tx, rx) = watch::channel(false);
        let config = RunConfig {
            metrics_addr: "127.0.0.1:0".parse().expect("addr"),
            lease,
            concurrency: 4,
            identity: format!("controller-{}", self.controllers.len()),
        };
        let client = self.client.clone();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let m = metrics.clone();
        let handle = tokio::spawn(async move {
            run(client, config, m, rx).await.expect("controller run");
        });
        self.controllers.push((tx, handle, metrics));
        self.controllers.len() - 1
    }

    async fn stop_controller(&mut self, index: usize) {
        let (tx, handle, _) = &mut self.controllers[index];
        let _ = tx.send(true);
        tokio::time::timeout(DEADLINE, handle)
            .await
            .expect("controller stops")
            .expect("controller task");
    }

    /// A hard kill: the task is aborted mid-flight, as SIGKILL would.
    fn kill_controller(&mut self, index: usize) {
        self.controllers[index].1.abort();
    }

    async fn shutdown(mut self) {
        for i in 0..self.controllers.len() {
            if !self.controllers[i].1.is_finished() {
                self.stop_controller(i).await;
            }
        }
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
        self.server.shutdown().await;
    }

    fn configs(&self, ns: &str) -> Api<FluxConfig> {
        Api::namespaced(self.client.clone(), ns)
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tutorial(url: &str) -> serde_json::Value {
    json!({
        "apiVersion": "clusterconfig.azure.com/v1beta1",
        "kind": "FluxConfig",
        "metadata": {"name": "cluster-config", "namespace": "cluster-config"},
        "spec": {
            "scope": "cluster",
            "namespace": "cluster-config",
            "sourceKind": "GitRepository",
            "gitRepository": {"url": url, "repositoryRef": {"branch": "main"}},
            "kustomizations": {
                "infra": {"path": "./infrastructure", "prune": true},
                "apps": {"path": "./apps/staging", "prune": true, "dependsOn": ["infra"]}
            }
        }
    })
}

/// Applies a FluxConfig the way the agent does (server-side apply).
async fn apply_config(cluster: &Cluster, ns: &str, body: &serde_json::Value) {
    let name = body["metadata"]["name"].as_str().expect("name");
    ensure_namespace(&cluster.client, ns).await;
    cluster
        .configs(ns)
        .patch(
            name,
            &PatchParams::apply("fluxconfig-agent").force(),
            &Patch::Apply(body),
        )
        .await
        .expect("apply FluxConfig");
}

async fn ensure_namespace(client: &Client, ns: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    api.patch(
        ns,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&body),
    )
    .await
    .expect("namespace");
}

async fn wait_for_state(api: &Api<FluxConfig>, name: &str, state: ComplianceState) -> FluxConfig {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let current = api.get_opt(name).await.ok().flatten();
        let reached = current
            .as_ref()
            .and_then(|c| c.status.as_ref())
            .and_then(|s| s.compliance_state)
            == Some(state);
        if reached {
            return current.expect("FluxConfig");
        }
        if tokio::time::Instant::now() >= deadline {
            let status = current.and_then(|c| c.status);
            panic!(
                "timed out waiting for {name} {state}; last status:\n{}",
                serde_json::to_string_pretty(&status).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tutorial_goes_pending_then_compliant_with_every_object_reported() {
    let cluster = Cluster::start().await;
    let api = cluster.configs("cluster-config");

    // Record every compliance state the FluxConfig passes through.
    let states = tokio::spawn({
        let api = api.clone();
        async move {
            let mut seen: Vec<(ComplianceState, Option<String>)> = Vec::new();
            let stream = watcher(
                api,
                watcher::Config::default().fields("metadata.name=cluster-config"),
            );
            futures::pin_mut!(stream);
            let deadline = tokio::time::sleep(DEADLINE);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    ev = stream.next() => match ev {
                        Some(Ok(watcher::Event::Apply(c))) | Some(Ok(watcher::Event::InitApply(c))) => {
                            let message = c.status.as_ref().and_then(|s| s.error_message.clone());
                            if let Some(s) = c.status.and_then(|s| s.compliance_state) {
                                if seen.last().map(|(l, _)| l) != Some(&s) {
                                    seen.push((s, message));
                                }
                                if s == ComplianceState::Compliant {
                                    break;
                                }
                            }
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            }
            seen
        }
    });

    apply_config(&cluster, "cluster-config", &tutorial(&cluster.repo.url)).await;
    let config = wait_for_state(&api, "cluster-config", ComplianceState::Compliant).await;
    let seen = states.await.expect("watch task");
    assert_eq!(
        seen.first().map(|(s, _)| *s),
        Some(ComplianceState::Pending),
        "states: {seen:?}"
    );
    assert_eq!(
        seen.last().map(|(s, _)| *s),
        Some(ComplianceState::Compliant),
        "states: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|(s, _)| *s != ComplianceState::NonCompliant),
        "a healthy configuration never reads Non-Compliant on its way: {seen:?}"
    );

    let status = config.status.expect("status");
    assert_eq!(
        status.provisioning_state,
        Some(ProvisioningState::Succeeded)
    );
    assert_eq!(
        status.source_synced_commit_id.as_deref(),
        Some(format!("main@sha1:{}", cluster.repo.commit).as_str())
    );
    let listed: Vec<(String, String)> = status
        .statuses
        .iter()
        .map(|s| (s.kind.clone(), s.name.clone()))
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
            listed.contains(&(kind.to_string(), name.to_string())),
            "{kind} {name} missing from statuses {listed:?}"
        );
    }
    assert!(status
        .statuses
        .iter()
        .all(|s| s.compliance_state == ComplianceState::Compliant));
    let podinfo = status
        .statuses
        .iter()
        .find(|s| s.name == "podinfo")
        .expect("podinfo status");
    assert_eq!(
        podinfo.applied_by.as_ref().map(|a| a.name.as_str()),
        Some("cluster-config-apps")
    );

    // apps waited for infra: it became Ready no earlier than infra did.
    let ks: Api<Kustomization> = Api::namespaced(cluster.client.clone(), "cluster-config");
    let ready_at = |k: Kustomization| {
        k.status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.last_transition_time.0)
            .expect("Ready condition")
    };
    let infra = ready_at(ks.get("cluster-config-infra").await.expect("infra"));
    let apps = ready_at(ks.get("cluster-config-apps").await.expect("apps"));
    assert!(apps >= infra, "apps ready at {apps}, infra at {infra}");
    let apps_spec = ks.get("cluster-config-apps").await.expect("apps").spec;
    assert_eq!(apps_spec.depends_on[0].name, "cluster-config-infra");

    // Every generated object is owned by the FluxConfig.
    let git: Api<GitRepository> = Api::namespaced(cluster.client.clone(), "cluster-config");
    let source = git.get("cluster-config").await.expect("source");
    let owner = &source.owner_references()[0];
    assert_eq!(owner.kind, "FluxConfig");
    assert_eq!(
        Some(owner.uid.clone()),
        api.get("cluster-config").await.expect("cfg").metadata.uid
    );

    // kubectl sees the tutorial's objects.
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    cluster
        .server
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig");
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "fluxconfigs,gitrepositories,kustomizations", "-A"])
        .output()
        .await
        .expect("kubectl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "fluxconfig.clusterconfig.azure.com/cluster-config",
        "gitrepository.source.toolkit.fluxcd.io/cluster-config",
        "kustomization.kustomize.toolkit.fluxcd.io/cluster-config-infra",
        "kustomization.kustomize.toolkit.fluxcd.io/cluster-config-apps",
        "SCOPE",
        "PROVISION",
        "Succeeded",
    ] {
        assert!(
            text.contains(needle),
            "kubectl output lacks {needle}:\n{text}"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_failure_is_non_compliant_and_recovers() {
    let cluster = Cluster::start().await;
    let api = cluster.configs("cluster-config");
    apply_config(&cluster, "cluster-config", &tutorial(&cluster.repo.url)).await;
    wait_for_state(&api, "cluster-config", ComplianceState::Compliant).await;

    let sim = cluster.sim.as_ref().expect("simulator");
    sim.fail(
        "GitRepository",
        "cluster-config",
        "cluster-config",
        "GitOperationFailed",
        "failed to checkout and determine revision: authentication required",
    );
    let config = wait_for_state(&api, "cluster-config", ComplianceState::NonCompliant).await;
    let status = config.status.expect("status");
    let failing = status
        .statuses
        .iter()
        .find(|s| s.kind == "GitRepository")
        .expect("source status");
    assert_eq!(failing.compliance_state, ComplianceState::NonCompliant);
    let message = status.error_message.unwrap_or_default();
    assert!(
        message.contains("GitRepository") && message.contains("cluster-config"),
        "message names the failing object: {message}"
    );

    sim.recover("GitRepository", "cluster-config", "cluster-config");
    wait_for_state(&api, "cluster-config", ComplianceState::Compliant).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suspend_resume_remove_kustomization_and_delete() {
    let cluster = Cluster::start().await;
    let api = cluster.configs("cluster-config");
    let mut body = tutorial(&cluster.repo.url);
    apply_config(&cluster, "cluster-config", &body).await;
    wait_for_state(&api, "cluster-config", ComplianceState::Compliant).await;

    body["spec"]["suspend"] = json!(true);
    apply_config(&cluster, "cluster-config", &body).await;
    wait_for_state(&api, "cluster-config", ComplianceState::Suspended).await;
    let ks: Api<Kustomization> = Api::namespaced(cluster.client.clone(), "cluster-config");
    assert_eq!(
        ks.get("cluster-config-apps")
            .await
            .expect("apps")
            .spec
            .suspend,
        Some(true)
    );

    body["spec"]["suspend"] = json!(false);
    apply_config(&cluster, "cluster-config", &body).await;
    wait_for_state(&api, "cluster-config", ComplianceState::Compliant).await;

    // Removing a kustomization deletes its Kustomization (and Flux prunes what it applied).
    body["spec"]["kustomizations"]
        .as_object_mut()
        .expect("map")
        .remove("apps");
    apply_config(&cluster, "cluster-config", &body).await;
    let live = api.get("cluster-config").await.expect("cfg");
    assert_eq!(
        live.spec.kustomizations.keys().collect::<Vec<_>>(),
        ["infra"],
        "server-side apply drops the kustomization no longer applied; managedFields: {}",
        serde_json::to_string(&live.metadata.managed_fields).unwrap_or_default()
    );
    eventually("cluster-config-apps deleted", || async {
        ks.get_opt("cluster-config-apps")
            .await
            .ok()
            .flatten()
            .is_none()
    })
    .await;
    let hr: Api<HelmRelease> = Api::namespaced(cluster.client.clone(), "podinfo");
    eventually("podinfo pruned", || async {
        hr.get_opt("podinfo").await.ok().flatten().is_none()
    })
    .await;
    wait_for_state(&api, "cluster-config", ComplianceState::Compliant).await;

    // Deleting the configuration removes every generated object, then the FluxConfig.
    api.delete("cluster-config", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("FluxConfig gone", || async {
        api.get_opt("cluster-config").await.ok().flatten().is_none()
    })
    .await;
    let git: Api<GitRepository> = Api::namespaced(cluster.client.clone(), "cluster-config");
    assert!(git.get_opt("cluster-config").await.expect("get").is_none());
    assert!(ks
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .is_empty());
    let all_hr: Api<HelmRelease> = Api::all(cluster.client.clone());
    assert!(
        all_hr
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "HelmReleases orphaned"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_configuration_fails_alone() {
    let cluster = Cluster::start().await;
    let api = cluster.configs("cluster-config");
    apply_config(&cluster, "cluster-config", &tutorial(&cluster.repo.url)).await;
    let mut bad = tutorial(&cluster.repo.url);
    bad["metadata"]["name"] = json!("broken");
    bad["spec"]["kustomizations"]["apps"]["dependsOn"] = json!(["nope"]);
    apply_config(&cluster, "cluster-config", &bad).await;

    eventually("broken fails", || async {
        api.get_opt("broken")
            .await
            .ok()
            .flatten()
            .and_then(|c| c.status)
            .is_some_and(|s| s.provisioning_state == Some(ProvisioningState::Failed))
    })
    .await;
    let broken = api
        .get("broken")
        .await
        .expect("broken")
        .status
        .expect("status");
    let message = broken.error_message.unwrap_or_default();
    assert!(
        message.contains("spec.kustomizations.apps.dependsOn[0]"),
        "field-named error: {message}"
    );
    wait_for_state(&api, "cluster-config", ComplianceState::Compliant).await;
    let git: Api<GitRepository> = Api::namespaced(cluster.client.clone(), "cluster-config");
    assert!(
        git.get_opt("broken").await.expect("get").is_none(),
        "nothing applied for it"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controller_killed_mid_way_converges_after_restart() {
    let mut cluster = Cluster::start().await;
    let api = cluster.configs("cluster-config");
    apply_config(&cluster, "cluster-config", &tutorial(&cluster.repo.url)).await;
    let ks: Api<Kustomization> = Api::namespaced(cluster.client.clone(), "cluster-config");
    eventually("some Kustomization created", || async {
        !ks.list(&Default::default())
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(true)
    })
    .await;
    cluster.kill_controller(0);
    cluster.start_controller(None);
    wait_for_state(&api, "cluster-config", ComplianceState::Compliant).await;
    let names: Vec<String> = ks
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|k| k.name_any())
        .collect();
    assert_eq!(names.len(), 2, "no duplicates: {names:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_scope_confines_the_configuration() {
    let cluster = Cluster::start().await;
    let api = cluster.configs("team-a");
    let mut body = tutorial(&cluster.repo.url);
    body["metadata"] = json!({"name": "team-config", "namespace": "team-a"});
    body["spec"]["scope"] = json!("namespace");
    body["spec"]["namespace"] = json!("team-a");
    body["spec"]["kustomizations"] = json!({"apps": {"path": "./apps/staging", "prune": true}});
    apply_config(&cluster, "team-a", &body).await;
    eventually("team-config provisioned", || async {
        api.get_opt("team-config")
            .await
            .ok()
            .flatten()
            .and_then(|c| c.status)
            .is_some_and(|s| s.provisioning_state == Some(ProvisioningState::Succeeded))
    })
    .await;
    let ks: Api<Kustomization> = Api::namespaced(cluster.client.clone(), "team-a");
    let apps = ks.get("team-config-apps").await.expect("kustomization");
    assert_eq!(apps.spec.target_namespace.as_deref(), Some("team-a"));
    assert_eq!(
        apps.spec.service_account_name.as_deref(),
        Some("team-config-applier")
    );
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(cluster.client.clone(), "team-a");
    assert!(sa
        .get_opt("team-config-applier")
        .await
        .expect("get")
        .is_some());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_leader_writes_and_a_standby_takes_over() {
    let mut cluster = Cluster::start().await;
    // Replace the unelected controller with two elected replicas.
    cluster.stop_controller(0).await;
    ensure_namespace(&cluster.client, "flux-system").await;
    let lease = |id: &str| {
        let mut l = LeaseConfig::new("fluxconfig-controller-leader", "flux-system", id);
        l.lease_duration = Duration::from_secs(3);
        l.renew_deadline = Duration::from_secs(2);
        l.retry_period = Duration::from_millis(500);
        l
    };
    let first = cluster.start_controller(Some(lease("replica-a")));
    cluster.start_controller(Some(lease("replica-b")));
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(cluster.client.clone(), "flux-system");
    let holder = || async {
        leases
            .get_opt("fluxconfig-controller-leader")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    };
    eventually("a leader", || async { holder().await.is_some() }).await;
    let leader = holder().await.expect("holder");

    let api = cluster.configs("cluster-config");
    apply_config(&cluster, "cluster-config", &tutorial(&cluster.repo.url)).await;
    wait_for_state(&api, "cluster-config", ComplianceState::Compliant).await;
    // The standby has not written anything; the leader has.
    let writes = |i: usize| -> u64 {
        let m = &cluster.controllers[i].2;
        m.api_writes
            .with_label_values(&["apply", "gitrepositories"])
            .get()
    };
    let leader_index = if leader == "replica-a" {
        first
    } else {
        first + 1
    };
    let standby_index = if leader_index == first {
        first + 1
    } else {
        first
    };
    assert!(writes(leader_index) > 0, "the leader applied the source");
    assert_eq!(writes(standby_index), 0, "the standby wrote");
    let git: Api<GitRepository> = Api::namespaced(cluster.client.clone(), "cluster-config");
    let managers: BTreeMap<String, usize> = git
        .get("cluster-config")
        .await
        .expect("source")
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.manager.clone())
        .fold(BTreeMap::new(), |mut acc, m| {
            *acc.entry(m).or_default() += 1;
            acc
        });
    assert_eq!(
        managers.get("fluxconfig-controller"),
        Some(&1),
        "{managers:?}"
    );

    // Kill the leader; the standby takes over within 15 s and keeps reconciling.
    let started = tokio::time::Instant::now();
    cluster.kill_controller(leader_index);
    eventually("new leader", || async {
        holder().await.is_some_and(|h| h != leader)
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(15));
    let mut body = tutorial(&cluster.repo.url);
    body["spec"]["suspend"] = json!(true);
    apply_config(&cluster, "cluster-config", &body).await;
    wait_for_state(&api, "cluster-config", ComplianceState::Suspended).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn annotated_helm_release_is_pointed_at_the_managed_git_repository() {
    let cluster = Cluster::start().await;
    let api = cluster.configs("cluster-config");
    apply_config(&cluster, "cluster-config", &tutorial(&cluster.repo.url)).await;
    wait_for_state(&api, "cluster-config", ComplianceState::Compliant).await;

    // As if the repository's release carried the annotation.
    let hr: Api<HelmRelease> = Api::namespaced(cluster.client.clone(), "cluster-config");
    let annotate = json!({"metadata": {"annotations": {
        "clusterconfig.azure.com/use-managed-source": "true"}}});
    hr.patch("podinfo", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .expect("annotate");
    eventually("podinfo chart source repointed", || async {
        hr.get("podinfo")
            .await
            .ok()
            .and_then(|h| h.spec.chart)
            .is_some_and(|c| {
                let r = c.spec.source_ref;
                r.kind == "GitRepository"
                    && r.name == "cluster-config"
                    && r.namespace.as_deref() == Some("cluster-config")
            })
    })
    .await;
    // A release without the annotation keeps its own source.
    let nginx = hr.get("nginx").await.expect("nginx");
    assert_ne!(
        nginx.spec.chart.expect("chart").spec.source_ref.kind,
        "GitRepository"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_and_events_tell_what_happened() {
    let cluster = Cluster::start().await;
    let api = cluster.configs("cluster-config");
    apply_config(&cluster, "cluster-config", &tutorial(&cluster.repo.url)).await;
    let mut bad = tutorial(&cluster.repo.url);
    bad["metadata"]["name"] = json!("broken");
    bad["spec"]["gitRepository"]["url"] = json!("git@github.com:org/repo");
    apply_config(&cluster, "cluster-config", &bad).await;
    wait_for_state(&api, "cluster-config", ComplianceState::Compliant).await;

    let metrics = &cluster.controllers[0].2;
    eventually("metrics count the configurations", || async {
        metrics
            .configurations
            .with_label_values(&["Compliant"])
            .get()
            == 1
    })
    .await;
    assert!(metrics.reconciles.with_label_values(&["success"]).get() > 0);
    assert!(metrics.errors.with_label_values(&["validation"]).get() > 0);
    let text = metrics.render();
    assert!(
        text.contains("fluxconfig_controller_reconcile_duration_seconds_bucket"),
        "{text}"
    );

    // The rejected configuration is explained by a Warning Event on it.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(cluster.client.clone(), "cluster-config");
    eventually("ValidationFailed event", || async {
        events.list(&Default::default()).await.is_ok_and(|l| {
            l.items.iter().any(|e| {
                e.reason.as_deref() == Some("ValidationFailed")
                    && e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("spec.gitRepository.url"))
            })
        })
    })
    .await;
    cluster.shutdown().await;
}

/// Every API write a controller has counted, whatever the verb and resource.
fn controller_writes(metrics: &Metrics) -> u64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("fluxconfig_controller_api_writes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_controller_writes_nothing_for_objects_in_place_and_repairs_drift() {
    let mut cluster = Cluster::start().await;
    let api = cluster.configs("cluster-config");
    apply_config(&cluster, "cluster-config", &tutorial(&cluster.repo.url)).await;
    wait_for_state(&api, "cluster-config", ComplianceState::Compliant).await;
    assert!(controller_writes(&cluster.controllers[0].2) > 0);
    cluster.stop_controller(0).await;

    let second = cluster.start_controller(None);
    let metrics = cluster.controllers[second].2.clone();
    eventually("the restarted controller reconciled", || async {
        metrics.reconciles.with_label_values(&["success"]).get() > 0
    })
    .await;
    assert_eq!(
        controller_writes(&metrics),
        0,
        "a restart finds the source, Kustomizations and status in place: {}",
        metrics.render()
    );

    // Someone else edits a field the controller owns: it is put back.
    let ks: Api<Kustomization> = Api::namespaced(cluster.client.clone(), "cluster-config");
    ks.patch(
        "cluster-config-apps",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"path": "./drifted"}})),
    )
    .await
    .expect("edit");
    eventually("the drifted path restored", || async {
        ks.get("cluster-config-apps")
            .await
            .is_ok_and(|k| k.spec.path.as_deref() == Some("./apps/staging"))
    })
    .await;
    assert!(controller_writes(&metrics) > 0);
    cluster.shutdown().await;
}

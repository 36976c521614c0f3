//! The Flux simulator against the in-process API emulator: every status it writes goes through
//! the emulator's validation against the real Flux CRD schemas, so a status Flux's CRDs would
//! reject fails these tests.

use std::future::Future;
use std::time::{Duration, Instant};

use fluxconfig_api::flux::FLUX_FINALIZER;
use fluxconfig_api::ComplianceState;
use fluxconfig_testbed::apiserver::{self, ApiServer};
use fluxconfig_testbed::fixtures::{self, TutorialRepo};
use fluxconfig_testbed::fluxsim::{self, FluxKind, SimConfig, Simulator};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use tempfile::TempDir;

const DEADLINE: Duration = Duration::from_secs(30);
const NS: &str = "cluster-config";

struct Env {
    server: ApiServer,
    client: Client,
    sim: Simulator,
    repo: TutorialRepo,
    _dir: TempDir,
}

impl Env {
    async fn start() -> Env {
        Env::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut SimConfig)) -> Env {
        let server = apiserver::start(apiserver::Config::default())
            .await
            .expect("start the API emulator");
        let client = server.client().await.expect("client");
        fluxsim::install_flux_crds(&client)
            .await
            .expect("install the Flux CRDs");
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = fixtures::tutorial_repo(&dir.path().join("tutorial")).expect("fixture repo");
        let mut config = SimConfig {
            step_delay: Duration::from_millis(100),
            git_url_map: repo.url_map(),
            dependency_requeue: Duration::from_secs(1),
            ..SimConfig::default()
        };
        tweak(&mut config);
        let sim = fluxsim::start(client.clone(), config)
            .await
            .expect("start the simulator");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
            )
            .await
            .expect("create namespace");
        Env {
            server,
            client,
            sim,
            repo,
            _dir: dir,
        }
    }

    fn api(&self, kind: FluxKind) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), NS, &kind.api_resource())
    }

    async fn create(&self, kind: FluxKind, name: &str, spec: Value) {
        let obj = json!({
            "apiVersion": format!("{}/{}", kind.group(), kind.version()),
            "kind": kind.kind(),
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        });
        self.api(kind)
            .create(
                &PostParams::default(),
                &serde_json::from_value(obj).unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("create {} {name}: {e}", kind.kind()));
    }

    async fn get(&self, kind: FluxKind, name: &str) -> Option<DynamicObject> {
        self.api(kind).get_opt(name).await.expect("get")
    }

    async fn patch(&self, kind: FluxKind, name: &str, patch: Value) {
        self.api(kind)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("patch {} {name}: {e}", kind.kind()));
    }

    /// Waits until the object's condition `type_` has `status` (and `reason`, if given).
    async fn wait_condition(
        &self,
        kind: FluxKind,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> DynamicObject {
        let what = format!("{} {name} {type_}={status} {reason:?}", kind.kind());
        eventually(&what, || async {
            let obj = self.get(kind, name).await?;
            let c = condition(&obj, type_)?;
            let ok = c["status"] == status && reason.is_none_or(|r| c["reason"] == r);
            ok.then_some(obj)
        })
        .await
    }

    async fn git_repository(&self, name: &str, reference: Value) {
        self.create(
            FluxKind::GitRepository,
            name,
            json!({"url": self.repo.url, "interval": "10m0s", "ref": reference, "timeout": "60s"}),
        )
        .await;
    }

    async fn kustomization(&self, name: &str, path: &str, extra: Value) {
        let mut spec = json!({
            "sourceRef": {"kind": "GitRepository", "name": "tutorial"},
            "path": path,
            "interval": "10m0s",
            "prune": true,
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        self.create(FluxKind::Kustomization, name, spec).await;
    }

    /// Also checks that the simulator met no unexpected error: every status it wrote was
    /// accepted by the emulator's schema validation.
    async fn shutdown(self) {
        let errors = self.sim.errors();
        assert!(errors.is_empty(), "simulator errors: {errors:#?}");
        self.sim.shutdown().await;
        self.server.shutdown().await;
    }
}

/// Polls `check` until it yields a value or the deadline passes.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn condition(obj: &DynamicObject, type_: &str) -> Option<Value> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

fn status(obj: &DynamicObject) -> &Value {
    &obj.data["status"]
}

fn inventory_ids(obj: &DynamicObject) -> Vec<(String, String)> {
    status(obj)["inventory"]["entries"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|x| {
                    (
                        x["id"].as_str().unwrap_or_default().to_string(),
                        x["v"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn git_repository_of_the_fixture_becomes_ready_at_its_commit() {
    let env = Env::start().await;
    env.git_repository("tutorial", json!({"branch": "main"}))
        .await;

    // The Pending phase is observable before Ready.
    env.wait_condition(
        FluxKind::GitRepository,
        "tutorial",
        "Reconciling",
        "True",
        Some("Progressing"),
    )
    .await;
    let repo = env
        .wait_condition(
            FluxKind::GitRepository,
            "tutorial",
            "Ready",
            "True",
            Some("Succeeded"),
        )
        .await;
    let st = status(&repo);
    assert_eq!(st["artifact"]["revision"], env.repo.revision());
    assert_eq!(env.repo.commit.len(), 40);
    let digest = st["artifact"]["digest"].as_str().unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 7 + 64,
        "{digest}"
    );
    for field in ["lastUpdateTime", "path", "url"] {
        assert!(st["artifact"][field].is_string(), "artifact.{field}: {st}");
    }
    assert_eq!(st["observedGeneration"], repo.metadata.generation.unwrap());
    assert!(repo.finalizers().iter().any(|f| f == FLUX_FINALIZER));
    assert!(condition(&repo, "Reconciling").is_none());
    assert_eq!(
        condition(&repo, "ArtifactInStorage").unwrap()["status"],
        "True"
    );

    // The branch moves; `reconcile.fluxcd.io/requestedAt` makes it picked up now.
    let new_commit =
        fixtures::commit_change(&env.repo.path, "apps/staging/extra.txt", "x\n").expect("commit");
    env.patch(
        FluxKind::GitRepository,
        "tutorial",
        json!({"metadata": {"annotations": {fluxsim::REQUESTED_AT_ANNOTATION: "2026-01-01T00:00:00Z"}}}),
    )
    .await;
    let want = format!("main@sha1:{new_commit}");
    eventually("the new revision", || async {
        let repo = env.get(FluxKind::GitRepository, "tutorial").await?;
        let st = status(&repo);
        (st["artifact"]["revision"] == want.as_str()
            && st["lastHandledReconcileAt"] == "2026-01-01T00:00:00Z")
            .then_some(())
    })
    .await;

    // Tags and commits resolve too.
    fixtures::tag(&env.repo.path, "v1.2.0").expect("tag");
    env.git_repository("by-semver", json!({"semver": ">=1.0.0 <2.0.0"}))
        .await;
    env.git_repository("by-commit", json!({"commit": env.repo.commit}))
        .await;
    let tagged = env
        .wait_condition(FluxKind::GitRepository, "by-semver", "Ready", "True", None)
        .await;
    assert_eq!(
        status(&tagged)["artifact"]["revision"],
        format!("v1.2.0@sha1:{new_commit}")
    );
    let pinned = env
        .wait_condition(FluxKind::GitRepository, "by-commit", "Ready", "True", None)
        .await;
    assert_eq!(
        status(&pinned)["artifact"]["revision"],
        format!("sha1:{}", env.repo.commit)
    );
    env.shutdown().await;
}

#[tokio::test]
async fn unknown_branch_fails_and_unreachable_urls_get_synthetic_revisions() {
    let env = Env::start().await;
    env.git_repository("missing", json!({"branch": "nope"}))
        .await;
    let failed = env
        .wait_condition(
            FluxKind::GitRepository,
            "missing",
            "Ready",
            "False",
            Some("GitOperationFailed"),
        )
        .await;
    let message = condition(&failed, "Ready").unwrap()["message"].clone();
    assert!(
        message.as_str().unwrap().contains("refs/heads/nope"),
        "{message}"
    );
    assert_eq!(
        condition(&failed, "Reconciling").unwrap()["reason"],
        "ProgressingWithRetry"
    );

    env.create(
        FluxKind::GitRepository,
        "elsewhere",
        json!({"url": "https://example.com/org/repo", "interval": "1m", "ref": {"branch": "dev"}}),
    )
    .await;
    let ready = env
        .wait_condition(FluxKind::GitRepository, "elsewhere", "Ready", "True", None)
        .await;
    let revision = status(&ready)["artifact"]["revision"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        revision.starts_with("dev@sha1:") && revision.len() == 9 + 40,
        "{revision}"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn kustomizations_wait_for_dependencies_then_apply_and_inventory_helm_releases() {
    let env = Env::start().await;
    env.git_repository("tutorial", json!({"branch": "main"}))
        .await;
    env.kustomization(
        "apps",
        "./apps/staging",
        json!({"dependsOn": [{"name": "infra"}], "wait": true, "timeout": "1m"}),
    )
    .await;
    let waiting = env
        .wait_condition(
            FluxKind::Kustomization,
            "apps",
            "Ready",
            "False",
            Some("DependencyNotReady"),
        )
        .await;
    assert_eq!(
        condition(&waiting, "Ready").unwrap()["message"],
        format!("dependency '{NS}/infra' is not ready")
    );

    env.kustomization(
        "infra",
        "./infrastructure",
        json!({"wait": true, "timeout": "1m"}),
    )
    .await;
    let infra = env
        .wait_condition(
            FluxKind::Kustomization,
            "infra",
            "Ready",
            "True",
            Some("ReconciliationSucceeded"),
        )
        .await;
    let revision = env.repo.revision();
    assert_eq!(
        condition(&infra, "Ready").unwrap()["message"],
        format!("Applied revision: {revision}")
    );
    assert_eq!(status(&infra)["lastAppliedRevision"], revision.as_str());
    assert_eq!(status(&infra)["lastAttemptedRevision"], revision.as_str());
    let ids = inventory_ids(&infra);
    for want in [
        (
            format!("{NS}_nginx_helm.toolkit.fluxcd.io_HelmRelease"),
            "v2",
        ),
        (
            format!("{NS}_redis_helm.toolkit.fluxcd.io_HelmRelease"),
            "v2",
        ),
        (
            format!("{NS}_bitnami_source.toolkit.fluxcd.io_HelmRepository"),
            "v1",
        ),
        ("_nginx__Namespace".to_string(), "v1"),
        ("_redis__Namespace".to_string(), "v1"),
    ] {
        assert!(
            ids.contains(&(want.0.clone(), want.1.to_string())),
            "{want:?} not in {ids:?}"
        );
    }

    // With wait: true, the Kustomization is only Ready once its releases are.
    for name in ["nginx", "redis"] {
        let hr = env
            .get(FluxKind::HelmRelease, name)
            .await
            .expect("release applied");
        assert_eq!(condition(&hr, "Ready").unwrap()["status"], "True", "{name}");
        assert_eq!(
            condition(&hr, "Ready").unwrap()["reason"],
            "InstallSucceeded"
        );
        let st = status(&hr);
        assert_eq!(st["history"][0]["version"], 1);
        assert_eq!(st["history"][0]["status"], "deployed");
        assert_eq!(st["helmChart"], format!("{NS}/{NS}-{name}"));
        assert_eq!(st["observedGeneration"], hr.metadata.generation.unwrap());
        assert_eq!(
            hr.labels()
                .get("kustomize.toolkit.fluxcd.io/name")
                .map(String::as_str),
            Some("infra")
        );
    }
    let nginx = env.get(FluxKind::HelmRelease, "nginx").await.unwrap();
    assert_eq!(status(&nginx)["history"][0]["chartName"], "ingress-nginx");
    assert_eq!(status(&nginx)["history"][0]["chartVersion"], "4.10.1");
    assert_eq!(status(&nginx)["history"][0]["namespace"], "nginx");

    let apps = env
        .wait_condition(
            FluxKind::Kustomization,
            "apps",
            "Ready",
            "True",
            Some("ReconciliationSucceeded"),
        )
        .await;
    assert!(inventory_ids(&apps).contains(&(
        format!("{NS}_podinfo_helm.toolkit.fluxcd.io_HelmRelease"),
        "v2".to_string()
    )));
    env.wait_condition(
        FluxKind::HelmRelease,
        "podinfo",
        "Ready",
        "True",
        Some("InstallSucceeded"),
    )
    .await;

    // A new spec upgrades the release.
    env.patch(
        FluxKind::HelmRelease,
        "podinfo",
        json!({"spec": {"values": {"replicaCount": 2}}}),
    )
    .await;
    let upgraded = env
        .wait_condition(
            FluxKind::HelmRelease,
            "podinfo",
            "Ready",
            "True",
            Some("UpgradeSucceeded"),
        )
        .await;
    let history = status(&upgraded)["history"].as_array().unwrap().clone();
    assert_eq!(history[0]["version"], 2);
    assert_eq!(history[1]["status"], "superseded");
    env.shutdown().await;
}

#[tokio::test]
async fn failures_are_injected_and_recovered() {
    let env = Env::start().await;
    env.git_repository("tutorial", json!({"branch": "main"}))
        .await;
    env.kustomization("infra", "./infrastructure", json!({}))
        .await;
    env.wait_condition(FluxKind::HelmRelease, "redis", "Ready", "True", None)
        .await;

    env.sim.fail(
        "HelmRelease",
        NS,
        "redis",
        "InstallFailed",
        "chart pull failed",
    );
    let failed = env
        .wait_condition(
            FluxKind::HelmRelease,
            "redis",
            "Ready",
            "False",
            Some("InstallFailed"),
        )
        .await;
    assert_eq!(
        condition(&failed, "Ready").unwrap()["message"],
        "chart pull failed"
    );
    assert_eq!(status(&failed)["failures"], 1);
    assert_eq!(condition(&failed, "Released").unwrap()["status"], "False");

    env.sim.recover("HelmRelease", NS, "redis");
    let recovered = env
        .wait_condition(FluxKind::HelmRelease, "redis", "Ready", "True", None)
        .await;
    assert_eq!(
        status(&recovered)["failures"],
        1,
        "counters survive a recovery"
    );

    // The annotation does the same for simulators in another process.
    env.patch(
        FluxKind::Kustomization,
        "infra",
        json!({"metadata": {"annotations": {fluxsim::FAIL_ANNOTATION: "BuildFailed: kustomize build failed"}}}),
    )
    .await;
    let failed = env
        .wait_condition(
            FluxKind::Kustomization,
            "infra",
            "Ready",
            "False",
            Some("BuildFailed"),
        )
        .await;
    assert_eq!(
        condition(&failed, "Ready").unwrap()["message"],
        "kustomize build failed"
    );
    env.patch(
        FluxKind::Kustomization,
        "infra",
        json!({"metadata": {"annotations": {fluxsim::FAIL_ANNOTATION: null}}}),
    )
    .await;
    env.wait_condition(
        FluxKind::Kustomization,
        "infra",
        "Ready",
        "True",
        Some("ReconciliationSucceeded"),
    )
    .await;

    env.sim.fail(
        "GitRepository",
        NS,
        "tutorial",
        "GitOperationFailed",
        "auth failed",
    );
    env.wait_condition(
        FluxKind::GitRepository,
        "tutorial",
        "Ready",
        "False",
        Some("GitOperationFailed"),
    )
    .await;
    env.sim.recover("GitRepository", NS, "tutorial");
    env.wait_condition(
        FluxKind::GitRepository,
        "tutorial",
        "Ready",
        "True",
        Some("Succeeded"),
    )
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn deleting_a_pruning_kustomization_removes_its_inventory_first() {
    let env = Env::start().await;
    env.git_repository("tutorial", json!({"branch": "main"}))
        .await;
    env.kustomization("infra", "./infrastructure", json!({}))
        .await;
    env.wait_condition(FluxKind::Kustomization, "infra", "Ready", "True", None)
        .await;
    let ks = env.get(FluxKind::Kustomization, "infra").await.unwrap();
    assert!(ks.finalizers().iter().any(|f| f == FLUX_FINALIZER));

    // Dropping a file from the source prunes what it held.
    let commit = fixtures::commit_change(
        &env.repo.path,
        "infrastructure/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - sources\n  - nginx\n",
    )
    .expect("commit");
    env.patch(
        FluxKind::GitRepository,
        "tutorial",
        json!({"metadata": {"annotations": {fluxsim::REQUESTED_AT_ANNOTATION: "now"}}}),
    )
    .await;
    let want = format!("main@sha1:{commit}");
    eventually("redis pruned", || async {
        let ks = env.get(FluxKind::Kustomization, "infra").await?;
        let applied = status(&ks)["lastAppliedRevision"] == want.as_str();
        let gone = env.get(FluxKind::HelmRelease, "redis").await.is_none();
        (applied && gone).then_some(())
    })
    .await;

    env.api(FluxKind::Kustomization)
        .delete("infra", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("inventory and Kustomization gone", || async {
        let nginx = env.get(FluxKind::HelmRelease, "nginx").await;
        let bitnami = env.get(FluxKind::HelmRepository, "bitnami").await;
        let ks = env.get(FluxKind::Kustomization, "infra").await;
        (nginx.is_none() && bitnami.is_none() && ks.is_none()).then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn suspended_kustomizations_are_left_alone() {
    let env = Env::start().await;
    env.git_repository("tutorial", json!({"branch": "main"}))
        .await;
    env.kustomization("frozen", "./apps/staging", json!({}))
        .await;
    env.kustomization("live", "./apps/staging", json!({"prune": false}))
        .await;
    env.wait_condition(FluxKind::Kustomization, "frozen", "Ready", "True", None)
        .await;
    env.wait_condition(FluxKind::Kustomization, "live", "Ready", "True", None)
        .await;
    env.patch(
        FluxKind::Kustomization,
        "frozen",
        json!({"spec": {"suspend": true}}),
    )
    .await;
    let before = env.get(FluxKind::Kustomization, "frozen").await.unwrap();

    let commit =
        fixtures::commit_change(&env.repo.path, "apps/staging/note.txt", "n\n").expect("commit");
    env.patch(
        FluxKind::GitRepository,
        "tutorial",
        json!({"metadata": {"annotations": {fluxsim::REQUESTED_AT_ANNOTATION: "later"}}}),
    )
    .await;
    // Once the live one applied the new revision, the suspended one has had every chance to.
    let want = format!("main@sha1:{commit}");
    eventually("live applies the new revision", || async {
        let ks = env.get(FluxKind::Kustomization, "live").await?;
        (status(&ks)["lastAppliedRevision"] == want.as_str()).then_some(())
    })
    .await;
    let after = env.get(FluxKind::Kustomization, "frozen").await.unwrap();
    let (b, a) = (status(&before), status(&after));
    for field in [
        "lastAppliedRevision",
        "lastAttemptedRevision",
        "inventory",
        "conditions",
    ] {
        assert_eq!(
            a[field], b[field],
            "{field} of a suspended Kustomization is untouched"
        );
    }
    assert_ne!(a["lastAppliedRevision"], want.as_str());
    // Like Flux's status finalisation, a Ready object's new generation counts as observed.
    assert_eq!(a["observedGeneration"], after.metadata.generation.unwrap());
    env.shutdown().await;
}

#[tokio::test]
async fn the_emulator_really_validates_flux_statuses() {
    let env = Env::start().await;
    env.git_repository("tutorial", json!({"branch": "main"}))
        .await;
    env.wait_condition(FluxKind::GitRepository, "tutorial", "Ready", "True", None)
        .await;
    // A condition without lastTransitionTime and with a reason Flux's pattern forbids.
    let bad = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "not a reason!", "message": ""}
    ]}});
    let err = env
        .api(FluxKind::GitRepository)
        .patch_status("tutorial", &PatchParams::default(), &Patch::Merge(&bad))
        .await
        .expect_err("the Flux CRD schema rejects this status");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422),
        "{err}"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn helm_releases_with_a_git_chart_become_ready_with_their_source() {
    let env = Env::start().await;
    fixtures::commit_change(
        &env.repo.path,
        "charts/demo/Chart.yaml",
        "apiVersion: v2\nname: demo\nversion: 0.3.0\n",
    )
    .expect("commit");
    env.create(
        FluxKind::HelmRelease,
        "demo",
        json!({
            "interval": "5m",
            "chart": {"spec": {
                "chart": "./charts/demo",
                "sourceRef": {"kind": "GitRepository", "name": "tutorial"},
            }},
        }),
    )
    .await;
    let waiting = env
        .wait_condition(
            FluxKind::HelmRelease,
            "demo",
            "Ready",
            "False",
            Some("HelmChartNotReady"),
        )
        .await;
    assert_eq!(
        condition(&waiting, "Ready").unwrap()["message"],
        format!("HelmChart '{NS}/{NS}-demo' is not ready")
    );
    assert_eq!(status(&waiting)["helmChart"], format!("{NS}/{NS}-demo"));
    assert!(status(&waiting)["history"]
        .as_array()
        .is_none_or(|h| h.is_empty()));

    env.git_repository("tutorial", json!({"branch": "main"}))
        .await;
    let hr = env
        .wait_condition(
            FluxKind::HelmRelease,
            "demo",
            "Ready",
            "True",
            Some("InstallSucceeded"),
        )
        .await;
    let st = status(&hr);
    assert_eq!(st["history"][0]["chartName"], "demo");
    assert_eq!(st["history"][0]["chartVersion"], "0.3.0");
    assert_eq!(st["helmChart"], format!("{NS}/{NS}-demo"));
    assert_eq!(condition(&hr, "Released").unwrap()["status"], "True");
    env.shutdown().await;
}

/// A `git daemon` on loopback, stopped when dropped.
struct GitDaemon {
    child: std::process::Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &std::path::Path) -> GitDaemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn git daemon");
        GitDaemon { child, port }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sources_served_by_git_daemon_are_fetched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = fixtures::tutorial_repo(&dir.path().join("served")).expect("fixture");
    let daemon = GitDaemon::start(dir.path());
    let remote = format!("git://127.0.0.1:{}/served", daemon.port);
    eventually("git daemon serving", || async {
        let remote = remote.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("git")
                .args(["ls-remote", &remote])
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .output()
                .ok()
                .filter(|o| o.status.success())
        })
        .await
        .ok()
        .flatten()
    })
    .await;

    let served_url = "https://git.example.com/served";
    let env = Env::start_with(|c| {
        c.git_url_map
            .insert(served_url.to_string(), remote.clone().into());
    })
    .await;
    env.create(
        FluxKind::GitRepository,
        "tutorial",
        json!({"url": served_url, "interval": "10m", "ref": {"branch": "main"}}),
    )
    .await;
    let ready = env
        .wait_condition(FluxKind::GitRepository, "tutorial", "Ready", "True", None)
        .await;
    assert_eq!(status(&ready)["artifact"]["revision"], repo.revision());
    env.kustomization("apps", "./apps/staging", json!({})).await;
    let apps = env
        .wait_condition(FluxKind::Kustomization, "apps", "Ready", "True", None)
        .await;
    assert!(inventory_ids(&apps).contains(&(
        format!("{NS}_podinfo_helm.toolkit.fluxcd.io_HelmRelease"),
        "v2".to_string()
    )));
    env.shutdown().await;
    drop(daemon);
}

#[tokio::test]
async fn sources_follow_their_branch_every_interval() {
    let env = Env::start().await;
    env.create(
        FluxKind::GitRepository,
        "tutorial",
        json!({"url": env.repo.url, "interval": "1s", "ref": {"branch": "main"}}),
    )
    .await;
    env.wait_condition(FluxKind::GitRepository, "tutorial", "Ready", "True", None)
        .await;
    // No annotation, no spec change: only the interval brings the new commit in.
    let commit =
        fixtures::commit_change(&env.repo.path, "apps/staging/later.txt", "l\n").expect("commit");
    let want = format!("main@sha1:{commit}");
    eventually("the interval picks up the new commit", || async {
        let repo = env.get(FluxKind::GitRepository, "tutorial").await?;
        (status(&repo)["artifact"]["revision"] == want.as_str()).then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn missing_paths_and_broken_manifests_fail_like_flux() {
    let env = Env::start().await;
    env.git_repository("tutorial", json!({"branch": "main"}))
        .await;
    env.kustomization("nowhere", "./does/not/exist", json!({}))
        .await;
    // ArtifactFailed also means "no artifact yet" at first; wait for the path verdict.
    eventually("path not found", || async {
        let ks = env.get(FluxKind::Kustomization, "nowhere").await?;
        let ready = condition(&ks, "Ready")?;
        let message = ready["message"].as_str().unwrap_or_default();
        (ready["status"] == "False"
            && ready["reason"] == "ArtifactFailed"
            && message.starts_with("kustomization path not found"))
        .then_some(())
    })
    .await;

    let commit = fixtures::commit_change(
        &env.repo.path,
        "broken/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - missing.yaml\n",
    )
    .expect("commit");
    env.patch(
        FluxKind::GitRepository,
        "tutorial",
        json!({"metadata": {"annotations": {fluxsim::REQUESTED_AT_ANNOTATION: "broken"}}}),
    )
    .await;
    env.kustomization("broken", "./broken", json!({})).await;
    let failed = env
        .wait_condition(
            FluxKind::Kustomization,
            "broken",
            "Ready",
            "False",
            Some("BuildFailed"),
        )
        .await;
    assert_eq!(
        status(&failed)["lastAttemptedRevision"],
        format!("main@sha1:{commit}")
    );
    assert!(status(&failed)["lastAppliedRevision"].is_null());
    assert_eq!(
        condition(&failed, "Reconciling").unwrap()["reason"],
        "ProgressingWithRetry"
    );
    env.shutdown().await;
}

#[test]
fn the_tutorial_fixture_has_the_same_commit_everywhere() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let first = fixtures::tutorial_repo(a.path()).expect("fixture");
    let second = fixtures::tutorial_repo(&b.path().join("nested")).expect("fixture");
    assert_eq!(first.commit, second.commit);
    assert!(first.commit.chars().all(|c| c.is_ascii_hexdigit()) && first.commit.len() == 40);
    assert_eq!(first.url, fixtures::TUTORIAL_URL);
    // Moving the branch is deterministic too.
    let c1 = fixtures::commit_change(a.path(), "apps/staging/x.yaml", "a: 1\n").expect("commit");
    let c2 =
        fixtures::commit_change(&second.path, "apps/staging/x.yaml", "a: 1\n").expect("commit");
    assert_eq!(c1, c2);
}

fn typed<T: serde::de::DeserializeOwned>(o: DynamicObject) -> T {
    serde_json::from_value(serde_json::to_value(o).unwrap()).unwrap()
}

/// What the fluxconfig controller would conclude from the Flux objects right now.
async fn roll_up(env: &Env, source: &str, kustomizations: &[&str]) -> ComplianceState {
    use fluxconfig_controller::compliance::{self, Observed};
    let mut observed = Vec::new();
    match env.get(FluxKind::GitRepository, source).await {
        Some(o) => observed.push(Observed::from_git_repository(&typed(o))),
        None => observed.push(Observed::missing("GitRepository", source, NS)),
    }
    for name in kustomizations {
        let Some(o) = env.get(FluxKind::Kustomization, name).await else {
            observed.push(Observed::missing("Kustomization", *name, NS));
            continue;
        };
        let ks: fluxconfig_api::flux::Kustomization = typed(o);
        observed.push(Observed::from_kustomization(&ks));
        for (ns, hr) in compliance::helm_releases_in_inventory(&ks) {
            let api: Api<DynamicObject> = Api::namespaced_with(
                env.client.clone(),
                &ns,
                &FluxKind::HelmRelease.api_resource(),
            );
            if let Some(o) = api.get_opt(&hr).await.expect("get") {
                observed.push(Observed::from_helm_release(
                    &typed(o),
                    compliance::applied_by(&ks),
                ));
            }
        }
    }
    compliance::roll_up(false, &observed).state
}

#[tokio::test]
async fn the_controllers_compliance_reads_the_simulated_statuses_like_fluxs() {
    let env = Env::start().await;
    env.git_repository("tutorial", json!({"branch": "main"}))
        .await;
    env.kustomization(
        "apps",
        "./apps/staging",
        json!({"dependsOn": [{"name": "infra"}], "wait": true}),
    )
    .await;
    env.wait_condition(
        FluxKind::Kustomization,
        "apps",
        "Ready",
        "False",
        Some("DependencyNotReady"),
    )
    .await;
    // Waiting on a dependency is Pending, not a failure.
    assert_eq!(
        roll_up(&env, "tutorial", &["apps", "infra"]).await,
        ComplianceState::Pending
    );

    env.kustomization("infra", "./infrastructure", json!({"wait": true}))
        .await;
    eventually("Compliant", || async {
        (roll_up(&env, "tutorial", &["infra", "apps"]).await == ComplianceState::Compliant)
            .then_some(())
    })
    .await;

    env.sim
        .fail("HelmRelease", NS, "podinfo", "InstallFailed", "boom");
    eventually("Non-Compliant", || async {
        (roll_up(&env, "tutorial", &["infra", "apps"]).await == ComplianceState::NonCompliant)
            .then_some(())
    })
    .await;
    env.sim.recover("HelmRelease", NS, "podinfo");
    eventually("Compliant again", || async {
        (roll_up(&env, "tutorial", &["infra", "apps"]).await == ComplianceState::Compliant)
            .then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn a_simulator_started_before_the_crds_picks_them_up() {
    let server = apiserver::start(apiserver::Config::default())
        .await
        .expect("emulator");
    let client = server.client().await.expect("client");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = fixtures::tutorial_repo(dir.path()).expect("fixture");
    let sim = fluxsim::start(
        client.clone(),
        SimConfig {
            git_url_map: repo.url_map(),
            ..SimConfig::default()
        },
    )
    .await
    .expect("simulator");
    fluxsim::install_flux_crds(&client).await.expect("CRDs");
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &FluxKind::GitRepository.api_resource(),
    );
    let obj = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "late", "namespace": "default"},
        "spec": {"url": repo.url, "interval": "5m", "ref": {"branch": "main"}},
    });
    api.create(
        &PostParams::default(),
        &serde_json::from_value(obj).unwrap(),
    )
    .await
    .expect("create");
    let want = repo.revision();
    eventually("Ready after a late CRD install", || async {
        let o = api.get_opt("late").await.ok()??;
        (status(&o)["artifact"]["revision"] == want.as_str()).then_some(())
    })
    .await;
    assert!(sim.errors().is_empty(), "{:?}", sim.errors());
    sim.shutdown().await;
    server.shutdown().await;
}

//! The whole data path in one process tree: `testbed flux create` → data plane → agent →
//! FluxConfig → controller → Flux (simulated) → controller status → agent report → `testbed
//! flux show`, on the API emulator, with the data plane on TLS with its own CA.

use std::time::Duration;

use fluxconfig_api::flux::{GitRepository, HelmRelease, Kustomization};
use fluxconfig_api::FluxConfig;
use fluxconfig_testbed::system::{Options, Running, System};
use kube::Api;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(45);

async fn start() -> Running {
    Running::start(
        Options::default(),
        |_| {},
        |agent| {
            agent.long_poll = Some(Duration::from_secs(10));
            agent.report_interval = Duration::from_secs(5);
        },
    )
    .await
    .expect("system")
}

async fn show(system: &System, name: &str) -> Option<Value> {
    system.az(&["show", "-n", name]).await.ok().flatten()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tutorial_through_the_data_plane_reports_compliant_and_delete_removes_everything() {
    let system = start().await;
    system.create_tutorial().await.expect("flux create");

    eventually("show reports Compliant", || async {
        show(&system, "cluster-config")
            .await
            .is_some_and(|v| v["complianceState"] == "Compliant")
    })
    .await;
    let shown = show(&system, "cluster-config").await.expect("show");
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
    system.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_configuration_fails_alone_with_a_clear_error() {
    let system = start().await;
    system.create_tutorial().await.expect("flux create");
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
        show(&system, "broken")
            .await
            .is_some_and(|v| v["provisioningState"] == "Failed")
    })
    .await;
    let broken = show(&system, "broken").await.expect("show");
    let message = broken["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("dependsOn[0]") && message.contains("infr"),
        "clear, field-named error: {broken:#}"
    );
    eventually("the good one is Compliant", || async {
        show(&system, "cluster-config")
            .await
            .is_some_and(|v| v["complianceState"] == "Compliant")
    })
    .await;
    system.shutdown().await.expect("clean stop");
}

//! `testbed up`: the whole system on one machine — API emulator, Azure data plane, Flux
//! simulator, fluxconfig-controller and fluxconfig-agent — with the Azure tutorial configuration
//! created through the data plane, so a newcomer sees it work end to end in one command.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::system::{self, Options, Running, System};

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
    #[error(transparent)]
    System(#[from] system::Error),
    #[error("the tutorial configuration did not become Compliant within {secs} s: {last}")]
    NotCompliant { secs: u64, last: String },
    #[error("installing signal handler: {0}")]
    Signal(std::io::Error),
}

/// Runs the sandbox; with `once`, returns after the tutorial configuration became Compliant.
pub async fn up(args: UpArgs) -> Result<(), Error> {
    let system = Running::start(
        Options {
            dir: args.dir.clone(),
            token: uuid::Uuid::new_v4().to_string(),
            ..Options::default()
        },
        |controller| controller.identity = "sandbox-controller".into(),
        |_| {},
    )
    .await?;
    let kubeconfig = system.kubeconfig()?;
    say(&format!(
        "Kubernetes API emulator on {}",
        system.server.url()
    ));
    say(&format!(
        "Flux simulator serving {} from {}",
        system.repo.url,
        system.repo.path.display()
    ));
    say(&format!(
        "Azure data plane (TLS, own CA) on {}",
        system.dataplane.url()
    ));
    say("fluxconfig-controller and fluxconfig-agent running");

    say("az k8s-configuration flux create -g flux-demo-rg -c flux-demo-arc -t connectedClusters -n cluster-config --namespace cluster-config --scope cluster -u https://github.com/Azure/gitops-flux2-kustomize-helm-mt --branch main --kustomization name=infra path=./infrastructure prune=true --kustomization name=apps path=./apps/staging prune=true dependsOn=[\"infra\"]");
    system.create_tutorial().await?;

    let outcome = follow_until_compliant(&system, Duration::from_secs(args.timeout_secs)).await;
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
    if let Err(e) = system.shutdown().await {
        eprintln!("{e}");
    }
    outcome
}

fn say(line: &str) {
    println!("{line}");
}

/// Polls `show` and prints each change of compliance, as the tutorial's `az … show` would.
async fn follow_until_compliant(system: &System, timeout: Duration) -> Result<(), Error> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let shown = system
            .az(&["show", "-n", "cluster-config"])
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

async fn wait_for_signal() -> Result<(), Error> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::Signal)?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(Error::Signal),
        _ = term.recv() => Ok(()),
    }
}

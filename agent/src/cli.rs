//! `fluxconfig-agent run …` (flags in the crate docs).
//!
//! The command line lives in the library, not in `main.rs`: driving the async entry point from
//! the binary crate made the compiler instantiate the generic code under it (kube, serde, tokio)
//! a second time there. The three binaries took 127 s of CPU in a 672 s release build; now they
//! take under a second each.

use std::process::ExitCode;

use crate::config::{AgentConfig, RunArgs};
use crate::telemetry;
use clap::{Parser, Subcommand};

/// Pulls desired flux configurations from the Azure data plane and reports compliance.
#[derive(Parser)]
#[command(name = "fluxconfig-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent against the cluster (in-cluster config or KUBECONFIG).
    Run(Box<RunArgs>),
}

/// The command: parses the arguments and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_agent(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_agent(args: &RunArgs) -> Result<(), String> {
    telemetry::init(args.log_level);
    let config = AgentConfig::from_args(args).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        let kube_config = kube::Config::infer()
            .await
            .map_err(|e| format!("connecting to the cluster: {e}"))?;
        // Errors of the kube client name no address; this line lets an operator see which API
        // server an unreachable-cluster error is about.
        tracing::info!(api_server = %kube_config.cluster_url, "using the cluster's API server");
        let client = kube::Client::try_from(kube_config)
            .map_err(|e| format!("connecting to the cluster: {e}"))?;
        tracing::info!(
            dataplane = %config.dataplane_url,
            cluster = %config.cluster.path(),
            version = crate::version(),
            "starting"
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            termination_signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
            // Keep the sender alive: dropping it would also read as "stop", which is fine, but
            // holding it keeps the intent explicit.
            std::future::pending::<()>().await;
        });
        crate::run::run(client, config, stop_rx)
            .await
            .map_err(|e| e.to_string())
    })
}

async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

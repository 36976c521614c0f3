//! `testbed simulate-flux`: the simulator as a process, against whatever cluster the ambient
//! kubeconfig names (in practice an emulator started with `testbed apiserver`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{install_flux_crds, start, Error, SimConfig};

/// Options of `testbed simulate-flux`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateFluxArgs {
    /// Serve a source URL from a local git repository: URL=PATH (repeatable).
    #[arg(long = "git-map", value_name = "URL=PATH", value_parser = parse_git_map)]
    pub git_map: Vec<(String, PathBuf)>,
    /// Time between Reconciling and the outcome of each reconciliation, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub step_delay_ms: u64,
    /// Install the Flux CRDs first (from shared/reference/flux-crds).
    #[arg(long)]
    pub install_crds: bool,
}

pub fn parse_git_map(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((url, path)) if !url.is_empty() && !path.is_empty() => {
            Ok((url.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("expected URL=PATH, got '{s}'")),
    }
}

impl SimulateFluxArgs {
    pub fn config(&self) -> SimConfig {
        SimConfig {
            step_delay: Duration::from_millis(self.step_delay_ms),
            git_url_map: self.git_map.iter().cloned().collect::<BTreeMap<_, _>>(),
            ..SimConfig::default()
        }
    }
}

/// Runs the simulator with `kube::Client::try_default()` until SIGINT or SIGTERM.
pub async fn run_simulate_flux(args: SimulateFluxArgs) -> Result<(), Error> {
    let client = kube::Client::try_default().await?;
    if args.install_crds {
        install_flux_crds(&client).await?;
    }
    let sim = start(client, args.config()).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    tracing::info!("Flux simulator stopping");
    sim.shutdown().await;
    Ok(())
}

//! `fluxconfig-controller run | render -f FILE | crd`.
//!
//! The command line lives in the library, not in `main.rs`: driving the async entry point from
//! the binary crate made the compiler instantiate the generic code under it (kube, serde, tokio)
//! a second time there. The three binaries took 127 s of CPU in a 672 s release build; now they
//! take under a second each.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::leader::LeaseConfig;
use crate::run::{self, RunConfig};
use crate::telemetry::{self, LogLevel};
use clap::{Args, Parser, Subcommand};

/// Expands FluxConfig resources into Flux objects and reports their compliance.
#[derive(Parser)]
#[command(name = "fluxconfig-controller", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller against the cluster (in-cluster config or KUBECONFIG).
    Run(RunArgs),
    /// Print the Flux objects a FluxConfig manifest becomes, as a YAML stream.
    Render {
        /// FluxConfig manifest (YAML; `-` for standard input). Secrets in the same stream supply
        /// protected settings.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Print the FluxConfig CustomResourceDefinition.
    Crd,
}

#[derive(Args)]
struct RunArgs {
    /// `info` or `error`; RUST_LOG, when set, takes precedence.
    #[arg(
        long,
        value_enum,
        default_value = "info",
        env = "FLUXCONFIG_CONTROLLER_LOG_LEVEL"
    )]
    log_level: LogLevel,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(
        long,
        default_value = "0.0.0.0:8080",
        env = "FLUXCONFIG_CONTROLLER_METRICS_ADDR"
    )]
    metrics_addr: SocketAddr,
    /// Run without leader election (only safe with a single replica).
    #[arg(long)]
    no_leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "fluxconfig-controller-leader")]
    lease_name: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "flux-system")]
    lease_namespace: String,
    /// This replica's identity in the Lease (defaults to the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a silent leader keeps the lease.
    #[arg(long, default_value_t = 10)]
    lease_duration_secs: u64,
    /// FluxConfigs reconciled in parallel.
    #[arg(long, default_value_t = 8)]
    concurrency: u16,
}

/// The command: parses the arguments and runs it.
pub fn main() -> ExitCode {
    crate::memory::tune_allocator();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_controller(args),
        Command::Render { file } => render(&file),
        Command::Crd => fluxconfig_api::crdgen::fluxconfig_crd_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_controller(args: RunArgs) -> Result<(), String> {
    telemetry::init(args.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.spawn(crate::memory::release_free_memory_periodically(
        std::time::Duration::from_secs(10),
    ));
    runtime.block_on(async move {
        let kube_config = kube::Config::infer()
            .await
            .map_err(|e| format!("connecting to the cluster: {e}"))?;
        // Errors of the kube client name no address; this line lets an operator see which API
        // server an unreachable-cluster error is about.
        tracing::info!(api_server = %kube_config.cluster_url, "using the cluster's API server");
        let client = kube::Client::try_from(kube_config)
            .map_err(|e| format!("connecting to the cluster: {e}"))?;
        let identity = args
            .identity
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("fluxconfig-controller-{}", std::process::id()));
        let lease = (!args.no_leader_election).then(|| {
            let mut lease = LeaseConfig::new(&args.lease_name, &args.lease_namespace, &identity);
            lease.lease_duration = std::time::Duration::from_secs(args.lease_duration_secs.max(3));
            lease.renew_deadline = lease.lease_duration * 2 / 3;
            lease
        });
        let config = RunConfig {
            metrics_addr: args.metrics_addr,
            lease,
            concurrency: args.concurrency.max(1),
            identity,
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            run::termination_signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        });
        let metrics =
            std::sync::Arc::new(crate::metrics::Metrics::new().map_err(|e| e.to_string())?);
        run::run(client, config, metrics, stop_rx)
            .await
            .map_err(|e| e.to_string())
    })
}

fn render(file: &std::path::Path) -> Result<(), String> {
    let input = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("reading stdin: {e}"))?
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?
    };
    let yaml = crate::render::render(&input).map_err(|e| e.to_string())?;
    print!("{yaml}");
    Ok(())
}

//! The testbed command line: the Kubernetes API emulator, the Flux simulator, the Azure data
//! plane and its `az k8s-configuration flux` look-alike.
//!
//! The command line lives in the library, not in `main.rs`: driving the async entry point from
//! the binary crate made the compiler instantiate the generic code under it (kube, serde, tokio)
//! a second time there. The three binaries took 127 s of CPU in a 672 s release build; now they
//! take under a second each.

use std::path::PathBuf;
use std::time::Duration;

use crate::apiserver::{self, FaultConfig};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "testbed", about = "fluxconfig testbed tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve an emulated Kubernetes API until SIGINT/SIGTERM.
    Apiserver(ApiserverArgs),
    /// Benchmark the API emulator: request latency and watch fan-out.
    BenchApiserver(BenchArgs),
    /// Simulate the Flux controllers against the cluster in the current kubeconfig.
    SimulateFlux(crate::fluxsim::SimulateFluxArgs),
    /// Serve the Azure data plane (configurations, status reports) until SIGINT/SIGTERM.
    Dataplane(crate::dataplane::DataplaneArgs),
    /// `az k8s-configuration flux` against the testbed data plane.
    Flux(Box<crate::azcli::FluxArgs>),
    /// Run everything (emulator, data plane, Flux simulator, controller, agent) with the Azure
    /// tutorial configuration.
    Up(crate::sandbox::UpArgs),
    /// Measure the system (latencies, convergence at scale, steady-state traffic, RSS) and
    /// write BENCHMARKS.md.
    Bench(crate::bench::BenchArgs),
    /// Propagation latency, in-process: `flux create` → FluxConfig present, and Flux status
    /// change → `flux show` reporting it (p50/p99).
    BenchPropagation(PropagationArgs),
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Objects to create.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Concurrent watches.
    #[arg(long, default_value_t = 100)]
    watches: usize,
}

#[derive(clap::Args, Debug)]
struct PropagationArgs {
    /// Samples of each path.
    #[arg(long, default_value_t = 30)]
    samples: usize,
}

#[derive(clap::Args, Debug)]
struct ApiserverArgs {
    /// Address to listen on; port 0 picks a free port (the kubeconfig names it).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Where to write the kubeconfig once the server is ready.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    plain_http: bool,
    /// Inject errors: VERB=CODE:RATE (VERB may be `*`), repeatable.
    #[arg(long = "fault-error-rate", value_parser = FaultConfig::parse_error_rule)]
    fault_error_rate: Vec<apiserver::ErrorRule>,
    /// Added latency per request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    fault_latency_ms: u64,
    /// Close every watch after this many seconds.
    #[arg(long)]
    fault_watch_drop_secs: Option<u64>,
    /// Answer this fraction of requests with 429 Too Many Requests.
    #[arg(long)]
    fault_throttle_rate: Option<f64>,
    /// Retry-After seconds for throttled requests.
    #[arg(long, default_value_t = 1)]
    fault_retry_after_secs: u64,
    /// Retained watch events before 410 Expired.
    #[arg(long, default_value_t = 10_000)]
    watch_history: usize,
    /// Interval between watch bookmarks, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    bookmark_interval_ms: u64,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Server(#[from] apiserver::Error),
    #[error("writing kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("installing signal handler: {0}")]
    Signal(std::io::Error),
    #[error("the emulator fell behind")]
    FellBehind,
    #[error("{0} samples failed (listed above)")]
    Incomplete(usize),
    #[error(transparent)]
    FluxSim(#[from] crate::fluxsim::Error),
    #[error(transparent)]
    Dataplane(#[from] crate::dataplane::Error),
    #[error(transparent)]
    Flux(#[from] crate::azcli::Error),
    #[error(transparent)]
    Up(#[from] crate::sandbox::Error),
}

async fn run_apiserver(args: ApiserverArgs) -> Result<(), CliError> {
    let config = apiserver::Config {
        listen: args.listen,
        tls: !args.plain_http,
        faults: FaultConfig {
            error_rules: args.fault_error_rate,
            latency: Duration::from_millis(args.fault_latency_ms),
            watch_drop_every: args.fault_watch_drop_secs.map(Duration::from_secs),
            throttle: args
                .fault_throttle_rate
                .map(|r| (r, args.fault_retry_after_secs)),
        },
        watch_history: args.watch_history,
        bookmark_interval: Duration::from_millis(args.bookmark_interval_ms),
    };
    let server = apiserver::start(config).await?;
    server
        .write_kubeconfig(&args.kubeconfig)
        .map_err(|source| CliError::Kubeconfig {
            path: args.kubeconfig.clone(),
            source,
        })?;
    tracing::info!(url = %server.url(), kubeconfig = %args.kubeconfig.display(), "apiserver ready");
    println!("apiserver listening on {}", server.url());
    wait_for_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> Result<(), CliError> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(CliError::Signal)?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(CliError::Signal),
        _ = term.recv() => Ok(()),
    }
}

/// The `testbed` command.
#[tokio::main]
pub async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The sandbox prints its own story on stdout; its components' logs are for when asked.
    let default_level = match cli.command {
        Command::Up(_) | Command::Bench(_) | Command::BenchPropagation(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Apiserver(args) => run_apiserver(args).await,
        Command::SimulateFlux(args) => crate::fluxsim::run_simulate_flux(args)
            .await
            .map_err(CliError::from),
        Command::Dataplane(args) => crate::dataplane::run(args).await.map_err(CliError::from),
        Command::Flux(args) => crate::azcli::run(*args).await.map_err(CliError::from),
        Command::Up(args) => crate::sandbox::up(args).await.map_err(CliError::from),
        Command::Bench(args) => {
            if let Err(e) = crate::bench::run_cli(args).await {
                eprintln!("error: {e}");
                return std::process::ExitCode::FAILURE;
            }
            Ok(())
        }
        Command::BenchPropagation(args) => {
            let report = crate::bench_propagation::run_propagation_bench(args.samples).await;
            if report.errors.is_empty() {
                Ok(())
            } else {
                Err(CliError::Incomplete(report.errors.len()))
            }
        }
        Command::BenchApiserver(args) => {
            let report =
                crate::bench_apiserver::run_apiserver_bench(args.objects, args.watches).await;
            if report.kept_up {
                Ok(())
            } else {
                Err(CliError::FellBehind)
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

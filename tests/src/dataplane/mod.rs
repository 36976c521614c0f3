//! The testbed's stand-in for the regional Azure data plane: serves the protocol of
//! `fluxconfig_api::dataplane` (agent listing with ETag and long poll, status and heartbeat
//! reports, ARM-shaped management calls) over HTTPS, persists its state, and injects faults.
//! `docs/dataplane-api.md` describes the protocol.

pub mod client;
pub mod faults;
mod handlers;
mod http;
pub mod routes;
pub mod state;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fluxconfig_api::dataplane::ClusterRef;
use fluxconfig_api::FluxConfigStatus;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use faults::{FaultConfig, FaultHandle, Outage};
pub use handlers::parse_management_body;
pub use state::StoredHeartbeat;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("installing signal handler: {0}")]
    Signal(std::io::Error),
}

/// How to run a data plane.
#[derive(Clone)]
pub struct DataplaneConfig {
    /// Port 0 picks a free port; [`Dataplane::url`] names it.
    pub listen: SocketAddr,
    /// Loaded at start when present; rewritten atomically after every change.
    pub state_file: PathBuf,
    /// The bearer token every request must carry.
    pub token: String,
    /// Where `ca.crt` is written once the server is ready (and `ca.key` kept for restarts).
    pub tls_dir: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS.
    pub plain_http: bool,
    /// More names (or IPs) for the serving certificate, e.g. the address a pod uses to reach
    /// the host; localhost, 127.0.0.1, ::1 and the bound address are always in.
    pub tls_sans: Vec<String>,
    pub faults: FaultConfig,
}

impl DataplaneConfig {
    /// HTTPS with a generated CA, no faults.
    pub fn new(listen: SocketAddr, state_file: PathBuf, token: impl Into<String>) -> Self {
        DataplaneConfig {
            listen,
            state_file,
            token: token.into(),
            tls_dir: None,
            plain_http: false,
            tls_sans: Vec::new(),
            faults: FaultConfig::default(),
        }
    }
}

impl std::fmt::Debug for DataplaneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataplaneConfig")
            .field("listen", &self.listen)
            .field("state_file", &self.state_file)
            .field("token", &"<redacted>")
            .field("tls_dir", &self.tls_dir)
            .field("plain_http", &self.plain_http)
            .field("tls_sans", &self.tls_sans)
            .field("faults", &self.faults)
            .finish()
    }
}

/// Request counters, for tests that assert how the agent behaved.
#[derive(Debug, Default)]
pub struct Stats {
    pub listings: AtomicU64,
    pub not_modified: AtomicU64,
    pub status_reports: AtomicU64,
    pub heartbeats: AtomicU64,
    pub faults_injected: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub listings: u64,
    pub not_modified: u64,
    pub status_reports: u64,
    pub heartbeats: u64,
    pub faults_injected: u64,
}

pub(crate) struct Shared {
    store: Mutex<state::Store>,
    /// Sequence number of the snapshot last written; serialises writers.
    persisted: tokio::sync::Mutex<u64>,
    state_file: PathBuf,
    /// Bumped after every change to a listing; long polls wait on it.
    changes: watch::Sender<u64>,
    faults: FaultHandle,
    token_digest: [u8; 32],
    stats: Stats,
}

/// A running data plane.
pub struct Dataplane {
    url: String,
    token: String,
    addr: SocketAddr,
    ca_pem: Option<String>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts serving; returns once the socket is bound, the state loaded and `ca.crt` written.
pub async fn start(config: DataplaneConfig) -> Result<Dataplane, Error> {
    if let Some(parent) = config.state_file.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
    }
    let (store, fresh) = state::Store::load(&config.state_file)?;
    let shared = Arc::new(Shared {
        store: Mutex::new(store),
        persisted: tokio::sync::Mutex::new(0),
        state_file: config.state_file.clone(),
        changes: watch::Sender::new(0),
        faults: FaultHandle::new(config.faults.clone()),
        token_digest: handlers::token_digest(&config.token),
        stats: Stats::default(),
    });
    if fresh {
        // Make the epoch durable now, so ETags handed out before the first change stay valid.
        let snapshot = shared
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .snapshot()?;
        state::write_atomically(&config.state_file, &snapshot.bytes).map_err(|source| {
            state::StateError::Write {
                path: config.state_file.clone(),
                source,
            }
        })?;
    }

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: config.listen,
        source,
    })?;
    let (acceptor, ca_pem) = if config.plain_http {
        (None, None)
    } else {
        let tls = tls::generate(addr.ip(), config.tls_dir.as_deref(), &config.tls_sans)?;
        (
            Some(tokio_rustls::TlsAcceptor::from(tls.server_config)),
            Some(tls.ca_pem),
        )
    };
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let scheme = if config.plain_http { "http" } else { "https" };
    let url = format!("{scheme}://{host}:{}", addr.port());

    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(http::serve(
        listener,
        addr,
        acceptor,
        shared.clone(),
        shutdown_rx,
    ));
    if let Some(dir) = &config.tls_dir {
        // `url` first: whoever waits for `ca.crt` may read `url` right away.
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.clone(),
            source,
        })?;
        let mut files = vec![("url", url.clone())];
        files.extend(ca_pem.clone().map(|pem| ("ca.crt", pem)));
        for (name, content) in files {
            let path = dir.join(name);
            state::write_atomically(&path, content.as_bytes())
                .map_err(|source| Error::Write { path, source })?;
        }
    }
    tracing::info!(%url, state = %config.state_file.display(), "data plane ready");
    Ok(Dataplane {
        url,
        token: config.token.clone(),
        addr,
        ca_pem,
        shared,
        shutdown,
        task,
    })
}

impl Dataplane {
    /// Base URL, e.g. `https://127.0.0.1:43127`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA that signed the serving certificate; `None` for plain HTTP.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// A client of this data plane with its token and CA.
    pub fn client(&self) -> Result<client::Client, client::ClientError> {
        client::Client::new(&self.url, &self.token, self.ca_pem())
    }

    pub fn faults(&self) -> FaultHandle {
        self.shared.faults.clone()
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.shared.stats;
        StatsSnapshot {
            listings: s.listings.load(Ordering::Relaxed),
            not_modified: s.not_modified.load(Ordering::Relaxed),
            status_reports: s.status_reports.load(Ordering::Relaxed),
            heartbeats: s.heartbeats.load(Ordering::Relaxed),
            faults_injected: s.faults_injected.load(Ordering::Relaxed),
        }
    }

    /// The last heartbeat of a cluster's agent, with when it arrived.
    pub fn heartbeat(&self, cluster: &ClusterRef) -> Option<StoredHeartbeat> {
        self.lock().heartbeat(cluster)
    }

    /// The status the agent last reported for a configuration.
    pub fn status(&self, cluster: &ClusterRef, name: &str) -> Option<FluxConfigStatus> {
        self.lock().status(cluster, name)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, state::Store> {
        self.shared
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops accepting and drops open connections (and long polls).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// `testbed dataplane`: serve until SIGINT/SIGTERM.
#[derive(clap::Args, Clone)]
pub struct DataplaneArgs {
    /// Address to listen on; port 0 picks a free port (printed, and in DIR/url).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// State file, loaded at start and rewritten after every change.
    #[arg(long = "state")]
    pub state: PathBuf,
    /// Bearer token clients must present.
    #[arg(long, env = "TESTBED_DATAPLANE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Write ca.crt (and keep ca.key) here once ready.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long, conflicts_with = "tls_dir")]
    pub plain_http: bool,
    /// Extra host name or IP for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// Start in an outage: refuse connections, or answer 503.
    #[arg(long, value_enum)]
    pub fault_outage: Option<Outage>,
    /// End the starting outage after this many seconds.
    #[arg(long)]
    pub fault_outage_secs: Option<u64>,
    /// Retry-After seconds of 503 and 429 answers.
    #[arg(long, default_value_t = 1)]
    pub fault_retry_after_secs: u64,
    /// Added latency per agent request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub fault_latency_ms: u64,
    /// Fraction (0..=1) of agent requests answered with --fault-error-status.
    #[arg(long, default_value_t = 0.0)]
    pub fault_error_rate: f64,
    /// 5xx status for --fault-error-rate.
    #[arg(long, default_value_t = 500)]
    pub fault_error_status: u16,
    /// Fraction (0..=1) of agent requests answered 429.
    #[arg(long, default_value_t = 0.0)]
    pub fault_throttle_rate: f64,
    /// Withhold N configurations from every listing (partial listing: count > items).
    #[arg(long, default_value_t = 0)]
    pub fault_withhold_items: usize,
    /// Cut listing bodies in half (200 with JSON that does not parse).
    #[arg(long)]
    pub fault_truncate_body: bool,
}

impl std::fmt::Debug for DataplaneArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("DataplaneArgs")
            .field("listen", &self.listen)
            .field("state", &self.state)
            .field("tls_dir", &self.tls_dir)
            .field("plain_http", &self.plain_http)
            .finish_non_exhaustive()
    }
}

impl DataplaneArgs {
    pub fn config(&self) -> DataplaneConfig {
        DataplaneConfig {
            listen: self.listen,
            state_file: self.state.clone(),
            token: self.token.clone(),
            tls_dir: self.tls_dir.clone(),
            plain_http: self.plain_http,
            tls_sans: self.tls_san.clone(),
            faults: FaultConfig {
                outage: self.fault_outage,
                outage_seconds: self.fault_outage_secs,
                retry_after_secs: self.fault_retry_after_secs,
                latency_ms: self.fault_latency_ms,
                error_rate: self.fault_error_rate,
                error_status: self.fault_error_status,
                throttle_rate: self.fault_throttle_rate,
                withhold_items: self.fault_withhold_items,
                truncate_body: self.fault_truncate_body,
            },
        }
    }
}

async fn terminated() -> Result<(), Error> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(Error::Signal),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(Error::Signal)
    }
}

/// Entry point of `testbed dataplane`.
pub async fn run(args: DataplaneArgs) -> Result<(), Error> {
    let dp = start(args.config()).await?;
    println!("dataplane listening on {}", dp.url());
    if let (None, Some(pem)) = (&args.tls_dir, dp.ca_pem()) {
        // Without --tls-dir this is the only way to learn which CA to trust.
        print!("{pem}");
    }
    terminated().await?;
    dp.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DataplaneArgs,
    }

    #[test]
    fn flags_map_onto_the_config() {
        let cli = Cli::try_parse_from([
            "dataplane",
            "--listen",
            "127.0.0.1:8443",
            "--state",
            "/tmp/dp.json",
            "--token",
            "t",
            "--tls-dir",
            "/tmp/dp",
            "--fault-outage",
            "unavailable",
            "--fault-retry-after-secs",
            "9",
            "--fault-withhold-items",
            "2",
            "--fault-throttle-rate",
            "0.5",
        ])
        .unwrap();
        let c = cli.args.config();
        assert_eq!(c.listen.port(), 8443);
        assert!(!c.plain_http);
        assert_eq!(c.faults.outage, Some(Outage::Unavailable));
        assert_eq!(c.faults.retry_after_secs, 9);
        assert_eq!(c.faults.withhold_items, 2);
        assert_eq!(c.faults.throttle_rate, 0.5);
        assert!(!format!("{:?}", cli.args).contains("\"t\""));
        assert!(Cli::try_parse_from([
            "dataplane",
            "--state",
            "s",
            "--token",
            "t",
            "--plain-http",
            "--tls-dir",
            "d"
        ])
        .is_err());
    }
}

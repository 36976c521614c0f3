//! An in-process Kubernetes API server emulator that kubectl and kube-rs cannot tell from
//! the real one for the API surface fluxconfig uses.
//!
//! ```no_run
//! # async fn demo() -> Result<(), fluxconfig_testbed::apiserver::Error> {
//! use fluxconfig_testbed::apiserver::{self, Config};
//! let server = apiserver::start(Config::default()).await?;
//! server.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?; // for kubectl
//! let client = server.client().await?; // for kube-rs
//! server.faults().set_error_rate(Some("get"), 503, 0.1);
//! # drop(client);
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Layout: `http` (TLS, auth, routing, negotiation) → `ops` (verb semantics) → `store`
//! (objects, resourceVersion, watch history); `watch` streams, `gc` runs the garbage
//! collector / namespace / CRD-cleanup controllers, `crd` establishes CRDs, `builtin` and
//! `workloads` hold per-kind strategy, `discovery` and `openapi_builtin` the discovery and
//! OpenAPI documents, `protobuf` decodes kubectl's protobuf request bodies.

pub mod cel;
pub mod patch;
pub mod schema;
pub mod selector;
pub mod ssa;
pub mod table;

pub mod builtin;
pub mod crd;
pub mod discovery;
pub mod errors;
pub mod faults;
pub mod gc;
mod http;
pub mod kubeconfig;
pub mod openapi_builtin;
pub mod ops;
pub mod protobuf;
pub mod resources;
pub mod store;
pub mod tls;
pub mod watch;
pub mod workloads;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinHandle;

pub use errors::ApiError;
pub use faults::{ErrorRule, FaultConfig, FaultHandle};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("kube client: {0}")]
    Client(String),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub tls: bool,
    pub faults: FaultConfig,
    /// Retained watch events; watching from an older resourceVersion yields 410 Expired.
    pub watch_history: usize,
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK (real server: ~1 min).
    pub bookmark_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: true,
            faults: FaultConfig::default(),
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

/// State shared by the connection handlers and background controllers.
pub(crate) struct Shared {
    pub store: Mutex<store::Store>,
    pub faults: FaultHandle,
    pub token: String,
    pub gc_wake: Notify,
    pub bookmark_interval: Duration,
    pub url: String,
    pub requests: RequestCounters,
}

/// The header by which in-process helpers (benchmarks, the Flux simulator) mark their own
/// requests, so counts of the system under test leave them out.
pub const CLIENT_TAG_HEADER: &str = "x-testbed-client";

/// Requests served, split by whether the client tagged itself with [`CLIENT_TAG_HEADER`].
#[derive(Debug, Default)]
pub(crate) struct RequestCounters {
    untagged: std::sync::atomic::AtomicU64,
    untagged_writes: std::sync::atomic::AtomicU64,
    tagged: std::sync::atomic::AtomicU64,
    tagged_writes: std::sync::atomic::AtomicU64,
}

/// A snapshot of [`ApiServer::request_stats`]; a write is any request that is not a GET, HEAD
/// or OPTIONS (watches are GETs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestStats {
    pub untagged: u64,
    pub untagged_writes: u64,
    pub tagged: u64,
    pub tagged_writes: u64,
}

impl RequestCounters {
    pub fn record(&self, tagged: bool, write: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let (all, writes) = if tagged {
            (&self.tagged, &self.tagged_writes)
        } else {
            (&self.untagged, &self.untagged_writes)
        };
        all.fetch_add(1, Relaxed);
        if write {
            writes.fetch_add(1, Relaxed);
        }
    }
}

impl Shared {
    /// The store lock; a panic while holding it must not wedge every later request.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, store::Store> {
        match self.store.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

pub struct ApiServer {
    addr: SocketAddr,
    url: String,
    ca_pem: Option<String>,
    shared: Arc<Shared>,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn seed_namespaces(store: &mut store::Store) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": now,
                "labels": {"kubernetes.io/metadata.name": ns},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        store.put(ops::NAMESPACES_GR, obj);
    }
    // The apiserver maintains the `kubernetes` Service in `default` itself.
    let svc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": now,
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "clusterIP": "10.96.0.1",
            "clusterIPs": ["10.96.0.1"],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
            "sessionAffinity": "None",
            "type": "ClusterIP",
        },
        "status": {"loadBalancer": {}},
    });
    store.put("services", svc);
}

/// Binds, generates credentials, and starts serving; returns once the server accepts requests.
pub async fn start(config: Config) -> Result<ApiServer, Error> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let tls = if config.tls {
        Some(tls::generate(addr.ip())?)
    } else {
        None
    };
    let host = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let url = format!(
        "{}://{}",
        if tls.is_some() { "https" } else { "http" },
        host
    );
    let (tx, _) = broadcast::channel(config.watch_history.clamp(1024, 65_536));
    let mut st = store::Store::new(config.watch_history, tx);
    seed_namespaces(&mut st);
    let shared = Arc::new(Shared {
        store: Mutex::new(st),
        faults: FaultHandle::new(config.faults.clone()),
        token: format!("testbed-{}", uuid::Uuid::new_v4().simple()),
        gc_wake: Notify::new(),
        bookmark_interval: config.bookmark_interval,
        url: url.clone(),
        requests: RequestCounters::default(),
    });
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let acceptor = tls
        .as_ref()
        .map(|t| tokio_rustls::TlsAcceptor::from(t.server_config.clone()));
    let serve = tokio::spawn(http::serve(
        listener,
        acceptor,
        shared.clone(),
        shutdown_rx.clone(),
    ));
    let gc = tokio::spawn(run_controllers(shared.clone(), shutdown_rx));
    tracing::info!(%url, "kube-apiserver emulator serving");
    Ok(ApiServer {
        addr: host,
        url,
        ca_pem: tls.map(|t| t.ca_pem),
        shared,
        shutdown,
        tasks: vec![serve, gc],
    })
}

async fn run_controllers(shared: Arc<Shared>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shared.gc_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
        let started = std::time::Instant::now();
        // Settle cascades (owner -> dependents -> their dependents) within one wake-up.
        for _ in 0..16 {
            let changed = {
                let mut st = shared.lock();
                // New owner references only need their owners looked up; a full pass is for
                // deletions (and for references to owners that are already gone).
                if st.take_dangling_owners() {
                    st.gc_pending = true;
                }
                if !st.gc_pending {
                    break;
                }
                st.gc_pending = false;
                gc::pass(&mut st, chrono::Utc::now())
            };
            if !changed {
                break;
            }
            tokio::task::yield_now().await;
        }
        // A pass walks the whole store under its lock; with tens of thousands of objects and
        // many deletions back-to-back passes would starve requests. Resting twice as long as the pass took bounds the collector to a third of the lock
        // (small stores pass in microseconds and see no delay).
        let busy = started.elapsed();
        if busy > Duration::from_millis(1) {
            tokio::select! {
                _ = tokio::time::sleep(busy * 2) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl ApiServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The bearer token the server requires.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig::render(&self.url, self.ca_pem.as_deref(), &self.shared.token)
    }

    /// Writes the kubeconfig atomically (temporary file + rename).
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        kubeconfig::write_atomic(path, &self.kubeconfig_yaml())
    }

    pub async fn client(&self) -> Result<kube::Client, Error> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml())
            .map_err(|e| Error::Client(e.to_string()))?;
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Client(e.to_string()))?;
        kube::Client::try_from(cfg).map_err(|e| Error::Client(e.to_string()))
    }

    pub fn faults(&self) -> FaultHandle {
        self.shared.faults.clone()
    }

    /// Requests served so far.
    pub fn request_stats(&self) -> RequestStats {
        use std::sync::atomic::Ordering::Relaxed;
        let r = &self.shared.requests;
        RequestStats {
            untagged: r.untagged.load(Relaxed),
            untagged_writes: r.untagged_writes.load(Relaxed),
            tagged: r.tagged.load(Relaxed),
            tagged_writes: r.tagged_writes.load(Relaxed),
        }
    }

    /// A client whose requests carry [`CLIENT_TAG_HEADER`]: `tag`, counted apart from the
    /// system under test.
    pub async fn tagged_client(&self, tag: &str) -> Result<kube::Client, Error> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml())
            .map_err(|e| Error::Client(e.to_string()))?;
        let mut cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Client(e.to_string()))?;
        let value =
            hyper::header::HeaderValue::from_str(tag).map_err(|e| Error::Client(e.to_string()))?;
        cfg.headers.push((
            hyper::header::HeaderName::from_static(CLIENT_TAG_HEADER),
            value,
        ));
        kube::Client::try_from(cfg).map_err(|e| Error::Client(e.to_string()))
    }

    /// Forgets the retained watch history: watches from any older resourceVersion get 410.
    pub fn compact_history(&self) {
        self.shared.lock().compact();
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

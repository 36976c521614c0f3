//! A Flux simulator: plays source-controller, kustomize-controller and helm-controller against
//! any Kubernetes API (the testbed's emulator in practice) so the fluxconfig controller can be
//! exercised end to end without a cluster.
//!
//! It is driven by watches, serialises work per object like controller-runtime does, and writes
//! statuses shaped like real Flux's so that `controller::compliance` reads them exactly as it
//! would read the real thing. Git sources are resolved with the real `git` CLI when the URL can
//! be reached locally (directly or through [`SimConfig::git_url_map`]); anything else gets a
//! deterministic synthetic revision and an empty tree.
//!
//! Where it knowingly differs from Flux:
//! - nothing is rendered from Helm charts, and no HelmChart objects are created (the
//!   HelmRelease's `status.helmChart` names the one Flux would create); a release waits for its
//!   chart *source* instead;
//! - kustomize support is `resources:` (files, directories, `../`) and `namespace:` only — no
//!   patches, generators, components or remote bases; post-build substitution is done on the
//!   file text;
//! - health checks use the generic kstatus rules (observedGeneration, Stalled, Reconciling,
//!   Ready); built-in workload rules (Deployment rollouts...) are not modelled;
//! - Bucket, OCIRepository and HelmRepository artifacts are synthetic; their content is empty;
//! - service-account impersonation and RBAC are not enforced;
//! - periodic (interval) reconciliations that find nothing new write nothing, where Flux
//!   briefly marks the object Reconciling.

mod apply;
mod cli;
mod conditions;
mod crds;
mod duration;
pub(crate) mod git;
mod helm;
mod kustomize;
mod manifests;
mod object;
mod queue;
mod source;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use kube::ResourceExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use cli::{parse_git_map, run_simulate_flux, SimulateFluxArgs};
pub use crds::{install_crds_from, install_flux_crds, install_fluxconfig_crd, FLUX_CRDS_DIR};
pub use git::GitError;

/// Annotation that makes the simulator fail an object: `"<Reason>: <message>"`. Lets tests that
/// drive a simulator in another process inject failures.
pub const FAIL_ANNOTATION: &str = "testbed.fluxconfig.io/fail";
/// Flux's "reconcile now" annotation; its value is echoed in `status.lastHandledReconcileAt`.
pub const REQUESTED_AT_ANNOTATION: &str = "reconcile.fluxcd.io/requestedAt";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("git: {0}")]
    Git(#[from] GitError),
    #[error("reading Flux CRD {file}: {message}")]
    Crd { file: String, message: String },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("invalid object: {0}")]
    Invalid(String),
    #[error("serialising: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Time an object spends between `Reconciling=True` and its outcome, so that the Pending
    /// phase of a configuration can be observed.
    pub step_delay: Duration,
    /// Source URLs served from local git repositories, e.g. the tutorial's GitHub URL mapped to
    /// a fixture repository. Flux only admits http/https/ssh URLs, so this is how tests point
    /// a GitRepository at a local repository.
    pub git_url_map: BTreeMap<String, PathBuf>,
    /// How soon an object waiting on another one (dependsOn, a source without an artifact) is
    /// retried even without a watch event; Flux's `--requeue-dependency` (30s by default).
    pub dependency_requeue: Duration,
    /// How often a Kustomization re-checks the health of what it applied while waiting on it
    /// (events about simulated kinds wake it sooner).
    pub health_poll: Duration,
    /// Reconciliations running at once.
    pub max_concurrent: usize,
    /// Where remote git repositories are mirrored; a private temporary directory when `None`.
    pub cache_dir: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            step_delay: Duration::from_millis(200),
            git_url_map: BTreeMap::new(),
            dependency_requeue: Duration::from_secs(5),
            health_poll: Duration::from_secs(2),
            max_concurrent: 16,
            cache_dir: None,
        }
    }
}

/// The Flux kinds the simulator reconciles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FluxKind {
    GitRepository,
    Bucket,
    OCIRepository,
    HelmRepository,
    Kustomization,
    HelmRelease,
}

impl FluxKind {
    pub const ALL: [FluxKind; 6] = [
        FluxKind::GitRepository,
        FluxKind::Bucket,
        FluxKind::OCIRepository,
        FluxKind::HelmRepository,
        FluxKind::Kustomization,
        FluxKind::HelmRelease,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            FluxKind::GitRepository => "GitRepository",
            FluxKind::Bucket => "Bucket",
            FluxKind::OCIRepository => "OCIRepository",
            FluxKind::HelmRepository => "HelmRepository",
            FluxKind::Kustomization => "Kustomization",
            FluxKind::HelmRelease => "HelmRelease",
        }
    }

    pub fn group(self) -> &'static str {
        match self {
            FluxKind::Kustomization => fluxconfig_api::flux::KUSTOMIZE_GROUP,
            FluxKind::HelmRelease => fluxconfig_api::flux::HELM_GROUP,
            _ => fluxconfig_api::flux::SOURCE_GROUP,
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            FluxKind::HelmRelease => "v2",
            _ => "v1",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            FluxKind::GitRepository => "gitrepositories",
            FluxKind::Bucket => "buckets",
            FluxKind::OCIRepository => "ocirepositories",
            FluxKind::HelmRepository => "helmrepositories",
            FluxKind::Kustomization => "kustomizations",
            FluxKind::HelmRelease => "helmreleases",
        }
    }

    pub fn api_resource(self) -> kube::api::ApiResource {
        let gvk = kube::api::GroupVersionKind::gvk(self.group(), self.version(), self.kind());
        kube::api::ApiResource::from_gvk_with_plural(&gvk, self.plural())
    }

    /// Accepts the kind (any case) or its plural, as a test or a CLI user may write either.
    pub fn parse(s: &str) -> Option<FluxKind> {
        FluxKind::ALL
            .into_iter()
            .find(|k| k.kind().eq_ignore_ascii_case(s) || k.plural().eq_ignore_ascii_case(s))
    }

    fn is_source(self) -> bool {
        matches!(
            self,
            FluxKind::GitRepository
                | FluxKind::Bucket
                | FluxKind::OCIRepository
                | FluxKind::HelmRepository
        )
    }
}

/// One object the simulator reconciles.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: FluxKind,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(kind: FluxKind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Key {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind.kind(), self.namespace, self.name)
    }
}

/// A failure injected with [`Simulator::fail`] or [`FAIL_ANNOTATION`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Injected {
    pub reason: String,
    pub message: String,
}

impl Injected {
    /// Condition reasons must match Flux's CRD pattern or the API server rejects the status.
    fn new(reason: &str, message: &str) -> Self {
        let valid = regex::Regex::new(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
            .map(|re| re.is_match(reason))
            .unwrap_or(false);
        Injected {
            reason: if valid {
                reason.to_string()
            } else {
                "ReconciliationFailed".to_string()
            },
            message: message.to_string(),
        }
    }

    fn from_annotation(value: &str) -> Self {
        match value.split_once(':') {
            Some((reason, message)) => Injected::new(reason.trim(), message.trim()),
            None => Injected::new(value.trim(), value.trim()),
        }
    }
}

/// What the simulator remembers about an object between reconciliations (Flux keeps the same
/// in its controllers' memory or in the requeue schedule).
#[derive(Clone, Debug, Default)]
pub(crate) struct Memory {
    pub last_run: Option<Instant>,
    /// A Kustomization waiting for what it applied to become healthy.
    pub health: Option<kustomize::HealthWait>,
    /// The injected failure already counted in a HelmRelease's failure counters.
    pub counted_failure: Option<(i64, Injected)>,
    /// A Kustomization's last failed attempt (revision, generation, when): retried after
    /// `retryInterval`, not on every event.
    pub failed_attempt: Option<(String, i64, Instant)>,
}

pub(crate) struct Shared {
    pub client: kube::Client,
    pub config: SimConfig,
    pub resources: apply::Resources,
    pub git: Arc<git::Git>,
    queue: mpsc::UnboundedSender<queue::Msg>,
    failures: Mutex<HashMap<Key, Injected>>,
    /// dependent -> the objects whose changes must wake it.
    watching: Mutex<Watching>,
    memory: Mutex<HashMap<Key, Memory>>,
    errors: Mutex<Vec<String>>,
}

/// Unexpected errors kept for [`Simulator::errors`]; the oldest are dropped beyond this.
const MAX_ERRORS: usize = 100;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking reconciliation must not wedge the whole simulator.
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Shared {
    pub fn enqueue(&self, key: Key) {
        let _ = self.queue.send(queue::Msg::Enqueue(key));
    }

    /// An object changed: reconcile it and everything that waits on it.
    fn touched(&self, key: Key) {
        let dependents: Vec<Key> = lock(&self.watching)
            .dependents
            .get(&key)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default();
        self.enqueue(key);
        for k in dependents {
            self.enqueue(k);
        }
    }

    /// Records an unexpected reconciliation error (a status the API server rejected, ...).
    pub fn record_error(&self, key: &Key, error: &Error) {
        let mut errors = lock(&self.errors);
        if errors.len() >= MAX_ERRORS {
            errors.remove(0);
        }
        errors.push(format!("{key}: {error}"));
    }

    pub fn watch_deps(&self, dependent: &Key, deps: BTreeSet<Key>) {
        lock(&self.watching).set(dependent, deps);
    }

    pub fn forget(&self, key: &Key) {
        lock(&self.watching).set(key, BTreeSet::new());
        lock(&self.memory).remove(key);
    }

    pub fn memory(&self, key: &Key) -> Memory {
        lock(&self.memory).get(key).cloned().unwrap_or_default()
    }

    pub fn update_memory(&self, key: &Key, f: impl FnOnce(&mut Memory)) {
        f(lock(&self.memory).entry(key.clone()).or_default());
    }

    /// The failure in force for the object: one set through the API wins over the annotation.
    pub fn injected(&self, key: &Key, obj: &DynamicObject) -> Option<Injected> {
        if let Some(f) = lock(&self.failures).get(key) {
            return Some(f.clone());
        }
        obj.annotations()
            .get(FAIL_ANNOTATION)
            .filter(|v| !v.trim().is_empty())
            .map(|v| Injected::from_annotation(v))
    }
}

/// Which objects wait on which (a Kustomization on its source, ...), indexed both ways: every
/// watch event looks up the dependents of the object it is about, and a scan over all of them
/// made the simulator quadratic at tens of thousands of objects.
#[derive(Default)]
struct Watching {
    deps: HashMap<Key, BTreeSet<Key>>,
    dependents: HashMap<Key, BTreeSet<Key>>,
}

impl Watching {
    /// Replaces what `dependent` waits on (an empty set forgets it).
    fn set(&mut self, dependent: &Key, deps: BTreeSet<Key>) {
        if let Some(old) = self.deps.remove(dependent) {
            for d in old {
                if let Some(set) = self.dependents.get_mut(&d) {
                    set.remove(dependent);
                    if set.is_empty() {
                        self.dependents.remove(&d);
                    }
                }
            }
        }
        if deps.is_empty() {
            return;
        }
        for d in &deps {
            self.dependents
                .entry(d.clone())
                .or_default()
                .insert(dependent.clone());
        }
        self.deps.insert(dependent.clone(), deps);
    }
}

/// A running simulator; dropping it without [`Simulator::shutdown`] also stops it.
pub struct Simulator {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    _cache: Option<TempCache>,
}

/// The private mirror directory, removed with the simulator.
struct TempCache(PathBuf);

impl Drop for TempCache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts watching the Flux kinds and reconciling them. The Flux CRDs may be installed later:
/// the watches retry until they are served.
pub async fn start(client: kube::Client, config: SimConfig) -> Result<Simulator, Error> {
    let (cache_dir, temp) = match &config.cache_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = std::env::temp_dir().join(format!("fluxsim-{}", uuid::Uuid::new_v4()));
            (dir.clone(), Some(TempCache(dir)))
        }
    };
    std::fs::create_dir_all(&cache_dir)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        resources: apply::Resources::new(client.clone()),
        git: Arc::new(git::Git::new(config.git_url_map.clone(), cache_dir)),
        client,
        config,
        queue: tx,
        failures: Mutex::new(HashMap::new()),
        watching: Mutex::new(Watching::default()),
        memory: Mutex::new(HashMap::new()),
        errors: Mutex::new(Vec::new()),
    });
    let mut tasks = vec![tokio::spawn(queue::run(shared.clone(), rx))];
    for kind in FluxKind::ALL {
        tasks.push(tokio::spawn(watch(shared.clone(), kind)));
    }
    tracing::info!("Flux simulator started");
    Ok(Simulator {
        shared,
        tasks,
        _cache: temp,
    })
}

async fn watch(shared: Arc<Shared>, kind: FluxKind) {
    let api: Api<DynamicObject> = Api::all_with(shared.client.clone(), &kind.api_resource());
    let mut events = kube::runtime::utils::StreamBackoff::new(
        watcher(api, watcher::Config::default()),
        WatchBackoff::default(),
    )
    .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj))
            | Ok(watcher::Event::Delete(obj)) => {
                let key = Key::new(kind, obj.namespace().unwrap_or_default(), obj.name_any());
                shared.touched(key);
            }
            Ok(_) => {}
            // Typically "the CRD is not installed yet"; the backoff paces the retries.
            Err(e) => tracing::debug!(kind = kind.kind(), error = %e, "Flux simulator watch"),
        }
    }
}

/// Watch retry pacing. kube's default backs off up to 30s, which would leave a simulator started
/// before the Flux CRDs blind for that long; the API server here is local, so retry briskly.
#[derive(Debug)]
struct WatchBackoff {
    next: Duration,
}

const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(100);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: WATCH_BACKOFF_MIN,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (current * 2).min(WATCH_BACKOFF_MAX);
        Some(current)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_BACKOFF_MIN;
    }
}

impl Simulator {
    /// Makes the object fail with `reason`/`message` until [`Simulator::recover`].
    pub fn fail(&self, kind: &str, namespace: &str, name: &str, reason: &str, message: &str) {
        let Some(kind) = FluxKind::parse(kind) else {
            tracing::warn!(kind, "Flux simulator: cannot fail an unknown kind");
            return;
        };
        let key = Key::new(kind, namespace, name);
        lock(&self.shared.failures).insert(key.clone(), Injected::new(reason, message));
        self.shared.touched(key);
    }

    pub fn recover(&self, kind: &str, namespace: &str, name: &str) {
        let Some(kind) = FluxKind::parse(kind) else {
            return;
        };
        let key = Key::new(kind, namespace, name);
        lock(&self.shared.failures).remove(&key);
        self.shared.touched(key);
    }

    /// Asks for a reconciliation now, like `flux reconcile` without touching the object.
    pub fn poke(&self, kind: &str, namespace: &str, name: &str) {
        if let Some(kind) = FluxKind::parse(kind) {
            self.shared.touched(Key::new(kind, namespace, name));
        }
    }

    /// Unexpected errors so far (conflicts excluded: they are routine and retried). Tests assert
    /// this is empty, which proves every status write was accepted by the API server.
    pub fn errors(&self) -> Vec<String> {
        lock(&self.shared.errors).clone()
    }

    pub async fn shutdown(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

//! The FluxConfig reconciler: applies the translated Flux objects, prunes what the configuration
//! no longer asks for, rolls the Flux statuses up into the FluxConfig status, and holds a
//! finalizer so deleting a configuration removes everything it created (after Flux has pruned).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluxconfig_api::flux::{Bucket, GitRepository, HelmRelease, Kustomization, OCIRepository};
use fluxconfig_api::fluxconfig::{FluxConfigStatus, ObjectReference};
use fluxconfig_api::protected::ProtectedSettings;
use fluxconfig_api::validation::{FieldError, ValidationErrors};
use fluxconfig_api::{labels, ComplianceState, FluxConfig, ProvisioningState};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::Instrument;

use crate::compliance::{self, Observed};
use crate::managed_source;
use crate::metrics::Metrics;
use crate::translate::{self, FluxObjects, Source, TranslateError};

/// Field manager of every write the controller makes.
pub const MANAGER: &str = "fluxconfig-controller";

/// How long an unchanged desired object is trusted to still be in place before it is applied
/// again; drift of Flux objects is caught sooner through their watches.
const REAPPLY_AFTER: Duration = Duration::from_secs(600);

/// How long a reconcile waits for the caches of Flux objects to hold their first list.
const CACHE_SYNC_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("FluxConfig has no {0}")]
    MissingMetadata(&'static str),
    #[error("reading protected settings Secret {namespace}/{name}: {source}")]
    ProtectedSettings {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("applying {kind} {namespace}/{name}: {source}")]
    Apply {
        kind: String,
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("deleting {kind} {namespace}/{name}: {source}")]
    Delete {
        kind: String,
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("writing status: {0}")]
    Status(kube::Error),
    #[error("updating finalizers: {0}")]
    Finalizer(kube::Error),
    #[error("listing {kind}: {source}")]
    List { kind: String, source: kube::Error },
    #[error("serializing {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("the controller is stopping before its caches synced")]
    CacheClosed,
    #[error("the {0} cache has not synced yet (is its CRD installed?)")]
    CacheNotSynced(&'static str),
}

impl Error {
    /// Label for the errors metric.
    pub fn metric_kind(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "metadata",
            Error::ProtectedSettings { .. } => "protected_settings",
            Error::Apply { .. } => "apply",
            Error::Delete { .. } => "delete",
            Error::Status(_) => "status",
            Error::Finalizer(_) => "finalizer",
            Error::List { .. } => "list",
            Error::Serialize(_) => "serialize",
            Error::CacheClosed | Error::CacheNotSynced(_) => "cache",
        }
    }
}

/// Caches of the Flux objects, fed by the controller's watches.
#[derive(Clone)]
pub struct Stores {
    pub git: Store<GitRepository>,
    pub bucket: Store<Bucket>,
    pub oci: Store<OCIRepository>,
    pub kustomizations: Store<Kustomization>,
    pub helm_releases: Store<HelmRelease>,
    /// Which cache has yet to hold its first full list; `None` once all do. Published by
    /// [`Stores::sync`].
    pub unsynced: watch::Receiver<Option<&'static str>>,
}

impl Stores {
    /// Publishes on `unsynced` as each cache holds its first full list. The one waiter per
    /// cache: kube's readiness signal wakes only the last task to wait on it, so reconciles
    /// that waited on it directly sat out the full time limit (seen after restarts).
    pub async fn sync(&self, unsynced: watch::Sender<Option<&'static str>>) {
        async fn ready<K>(
            store: &Store<K>,
            kind: &'static str,
            unsynced: &watch::Sender<Option<&'static str>>,
        ) -> bool
        where
            K: Resource<DynamicType = ()> + Clone + 'static,
        {
            unsynced.send_replace(Some(kind));
            store.wait_until_ready().await.is_ok()
        }
        let synced = ready(&self.git, "GitRepository", &unsynced).await
            && ready(&self.bucket, "Bucket", &unsynced).await
            && ready(&self.oci, "OCIRepository", &unsynced).await
            && ready(&self.kustomizations, "Kustomization", &unsynced).await
            && ready(&self.helm_releases, "HelmRelease", &unsynced).await;
        if synced {
            unsynced.send_replace(None);
        }
    }

    /// Resolves once every cache holds its first full list. Before that a missing object may
    /// only be not yet listed: reconciling then would re-apply what is in place and roll up a
    /// status from half the objects (both visible after every restart). A cache that does not
    /// sync in time (its CRD missing, say) fails the reconcile with an error naming it.
    async fn wait_until_synced(&self) -> Result<(), Error> {
        let mut unsynced = self.unsynced.clone();
        let synced = async move { unsynced.wait_for(Option::is_none).await.map(|_| ()) };
        match tokio::time::timeout(CACHE_SYNC_LIMIT, synced).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::CacheClosed),
            Err(_) => Err(Error::CacheNotSynced(
                self.unsynced.borrow().unwrap_or("Flux object"),
            )),
        }
    }
}

pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub stores: Stores,
    /// Digest and time of the last apply of each unwatched object, to keep steady state free
    /// of writes.
    applied: Mutex<HashMap<String, (String, Instant)>>,
    /// Namespaces known to exist, so each is checked once.
    namespaces: Mutex<BTreeSet<String>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, recorder: Recorder, stores: Stores) -> Self {
        Context {
            client,
            metrics,
            recorder,
            stores,
            applied: Mutex::new(HashMap::new()),
            namespaces: Mutex::new(BTreeSet::new()),
        }
    }
}

pub async fn reconcile(config: Arc<FluxConfig>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let name = config
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let namespace = config
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let span = tracing::info_span!("reconcile", namespace = %namespace, name = %name);
    let result = async {
        ctx.stores.wait_until_synced().await?;
        if config.metadata.deletion_timestamp.is_some() {
            cleanup(&config, &name, &namespace, &ctx).await
        } else {
            apply(&config, &name, &namespace, &ctx).await
        }
    }
    .instrument(span)
    .await;
    let label = match &result {
        Ok(_) => "success",
        Err(_) => "error",
    };
    ctx.metrics.reconciles.with_label_values(&[label]).inc();
    ctx.metrics
        .reconcile_duration
        .with_label_values(&[label])
        .observe(started.elapsed().as_secs_f64());
    result
}

pub fn error_policy(config: Arc<FluxConfig>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .errors
        .with_label_values(&[error.metric_kind()])
        .inc();
    tracing::error!(
        namespace = %config.namespace().unwrap_or_default(),
        name = %config.name_any(),
        error = %error,
        "reconcile failed"
    );
    Action::requeue(Duration::from_secs(5))
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

async fn apply(
    config: &FluxConfig,
    name: &str,
    namespace: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    let api: Api<FluxConfig> = Api::namespaced(ctx.client.clone(), namespace);
    if !config.finalizers().iter().any(|f| f == labels::FINALIZER) {
        add_finalizer(&api, config, ctx).await?;
    }

    let protected = match read_protected_settings(config, namespace, ctx).await {
        Ok(p) => p,
        Err(ProtectedError::Missing(field)) => {
            let errors = ValidationErrors(vec![field]);
            return reject(config, name, namespace, &errors.to_string(), ctx).await;
        }
        Err(ProtectedError::Api(e)) => return Err(e),
    };

    let objects = match translate::translate(config, &protected) {
        Ok(o) => o,
        Err(e @ TranslateError::Invalid(_)) | Err(e @ TranslateError::Base64 { .. }) => {
            return reject(config, name, namespace, &e.to_string(), ctx).await;
        }
    };

    ensure_namespace(namespace, ctx).await?;
    apply_objects(&objects, ctx).await?;
    prune_stale(config, name, namespace, &objects, ctx).await?;
    if objects.source.kind() == "GitRepository" {
        managed_source::point_helm_releases_at_source(name, namespace, &objects, ctx).await?;
    }

    let rollup = roll_up(config, name, namespace, &objects, ctx);
    let state = rollup.compliance_state;
    write_status(config, namespace, rollup, ctx).await?;
    ctx.metrics.set_compliance(&key(namespace, name), state);
    // Watches report Flux's progress; the short requeue only matters for an object Flux never
    // picks up, whose Pending must turn into Unknown once the grace period is over.
    if state == Some(ComplianceState::Pending) {
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    Ok(Action::requeue(REAPPLY_AFTER))
}

/// A configuration that cannot be applied: report it on the status and as an Event, touch
/// nothing else, and wait for the user to change it.
async fn reject(
    config: &FluxConfig,
    name: &str,
    namespace: &str,
    message: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    ctx.metrics.errors.with_label_values(&["validation"]).inc();
    tracing::error!(namespace = %namespace, name = %name, error = %message, "configuration rejected");
    // Carried over whole, so the per-object statuses the cache leaves out are read back.
    let previous = full_status(config, namespace, ctx).await?;
    let status = FluxConfigStatus {
        provisioning_state: Some(ProvisioningState::Failed),
        error_message: Some(message.to_string()),
        observed_generation: config.metadata.generation,
        compliance_state: previous.compliance_state.or(Some(ComplianceState::Unknown)),
        repository_public_key: None,
        ..previous.clone()
    };
    if status_differs(&previous, &status) {
        publish(ctx, config, EventType::Warning, "ValidationFailed", message).await;
    }
    write_status(config, namespace, status.clone(), ctx).await?;
    ctx.metrics
        .set_compliance(&key(namespace, name), status.compliance_state);
    Ok(Action::await_change())
}

async fn publish(ctx: &Context, config: &FluxConfig, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note.chars().take(1024).collect()),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &config.object_ref(&())).await {
        tracing::error!(error = %e, "publishing event");
    }
}

async fn add_finalizer(
    api: &Api<FluxConfig>,
    config: &FluxConfig,
    ctx: &Context,
) -> Result<(), Error> {
    let mut finalizers = config.finalizers().to_vec();
    finalizers.push(labels::FINALIZER.to_string());
    set_finalizers(api, config, finalizers).await?;
    ctx.metrics.write("patch", "fluxconfigs");
    Ok(())
}

/// Merge patch of the finalizer list with the resourceVersion it was computed from, so a
/// concurrent change is a 409 (retried) instead of a lost finalizer.
async fn set_finalizers(
    api: &Api<FluxConfig>,
    config: &FluxConfig,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": config.metadata.resource_version,
        }
    });
    match api
        .patch(
            &config.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::Finalizer(e)),
    }
}

enum ProtectedError {
    Missing(FieldError),
    Api(Error),
}

async fn read_protected_settings(
    config: &FluxConfig,
    namespace: &str,
    ctx: &Context,
) -> Result<ProtectedSettings, ProtectedError> {
    let Some(secret_name) = &config.spec.protected_settings_secret_ref else {
        return Ok(ProtectedSettings::new());
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = secrets
        .get_opt(secret_name)
        .await
        .map_err(|source| {
            ProtectedError::Api(Error::ProtectedSettings {
                namespace: namespace.to_string(),
                name: secret_name.clone(),
                source,
            })
        })?
        .ok_or_else(|| {
            ProtectedError::Missing(FieldError {
                field: "spec.protectedSettingsSecretRef".to_string(),
                message: format!("Secret {namespace}/{secret_name} not found"),
            })
        })?;
    let mut settings = ProtectedSettings::new();
    for (k, v) in secret.data.unwrap_or_default() {
        match String::from_utf8(v.0) {
            Ok(text) => {
                settings.insert(k, text);
            }
            Err(_) => {
                return Err(ProtectedError::Missing(FieldError {
                    field: "spec.protectedSettingsSecretRef".to_string(),
                    message: format!(
                        "Secret {namespace}/{secret_name} key {k:?} is not UTF-8 text"
                    ),
                }))
            }
        }
    }
    Ok(settings)
}

/// The configuration's namespace normally exists (the FluxConfig lives in it), but Azure
/// creates it when missing, so check once per namespace.
async fn ensure_namespace(namespace: &str, ctx: &Context) -> Result<(), Error> {
    let known = ctx
        .namespaces
        .lock()
        .map(|n| n.contains(namespace))
        .unwrap_or(false);
    if known {
        return Ok(());
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let to_err = |source| Error::Apply {
        kind: "Namespace".to_string(),
        namespace: String::new(),
        name: namespace.to_string(),
        source,
    };
    if api.get_opt(namespace).await.map_err(to_err)?.is_none() {
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(namespace.to_string()),
                ..Default::default()
            },
            ..Namespace::default()
        };
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => ctx.metrics.write("create", "namespaces"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(to_err(e)),
        }
    }
    if let Ok(mut n) = ctx.namespaces.lock() {
        n.insert(namespace.to_string());
    }
    Ok(())
}

async fn apply_objects(objects: &FluxObjects, ctx: &Context) -> Result<(), Error> {
    for s in &objects.secrets {
        apply_one(s, ctx, None::<&Store<Secret>>).await?;
    }
    if let Some(sa) = &objects.service_account {
        apply_one(sa, ctx, None::<&Store<ServiceAccount>>).await?;
    }
    if let Some(rb) = &objects.role_binding {
        apply_one(rb, ctx, None::<&Store<RoleBinding>>).await?;
    }
    match &objects.source {
        Source::Git(o) => apply_one(o, ctx, Some(&ctx.stores.git)).await?,
        Source::Bucket(o) => apply_one(o, ctx, Some(&ctx.stores.bucket)).await?,
        Source::Oci(o) => apply_one(o, ctx, Some(&ctx.stores.oci)).await?,
    }
    for k in &objects.kustomizations {
        apply_one(k, ctx, Some(&ctx.stores.kustomizations)).await?;
    }
    Ok(())
}

/// Server-side applies one object unless it is already in place. A watched kind (sources and
/// Kustomizations) carries the digest of its desired state as an annotation, so it is in place
/// when the cache shows every desired field, digest included, on the live object: this catches
/// drift and survives restarts. Unwatched kinds (generated Secrets and applier objects, a few
/// per configuration at most) are trusted for REAPPLY_AFTER after this process applied them.
async fn apply_one<K>(obj: &K, ctx: &Context, store: Option<&Store<K>>) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let namespace = obj.meta().namespace.clone().unwrap_or_default();
    let kind = K::kind(&()).into_owned();
    let mut desired = serde_json::to_value(obj)?;
    let cache_key = format!("{kind}/{namespace}/{name}");
    let digest = applied_digest(&desired);

    let in_place = match store {
        Some(store) => {
            stamp_applied_digest(&mut desired, &digest);
            match store.get(&ObjectRef::new(&name).within(&namespace)) {
                Some(live) => contains(&as_applied(live.as_ref())?, &desired),
                None => false,
            }
        }
        None => ctx
            .applied
            .lock()
            .ok()
            .and_then(|a| a.get(&cache_key).cloned())
            .is_some_and(|(d, at)| d == digest && at.elapsed() < REAPPLY_AFTER),
    };
    if in_place {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: kind.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    })?;
    ctx.metrics.write("apply", &K::plural(&()));
    if store.is_none() {
        if let Ok(mut a) = ctx.applied.lock() {
            a.insert(cache_key, (digest, Instant::now()));
        }
    }
    Ok(())
}

/// Key under which the controller's caches keep a Flux object's applied digest among its
/// labels, a map the object has anyway, rather than in an annotations map of its own: at
/// 10,000 configurations that second map was ~15 MiB of the controller's memory. Not a valid
/// label key (it has spaces), so it never comes from the API server, only from
/// [`compact_cached_metadata`].
pub const CACHED_APPLIED_DIGEST: &str = "fluxconfig-controller cached applied digest";

/// Shrinks the metadata of a source or Kustomization before it enters the cache: the applied
/// digest moves into the labels (see [`CACHED_APPLIED_DIGEST`]), the other annotations go.
pub fn compact_cached_metadata(meta: &mut kube::api::ObjectMeta) {
    let digest = meta
        .annotations
        .take()
        .and_then(|mut a| a.remove(labels::APPLIED_DIGEST));
    if let Some(digest) = digest {
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(CACHED_APPLIED_DIGEST.to_string(), digest);
    }
}

/// A cached object as the API server holds it (the applied digest back among the
/// annotations), to compare with what would be applied.
fn as_applied<K: Serialize>(live: &K) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(live)?;
    let digest = value
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
        .and_then(|l| l.remove(CACHED_APPLIED_DIGEST));
    if let Some(Value::String(digest)) = digest {
        stamp_applied_digest(&mut value, &digest);
    }
    Ok(value)
}

/// A stable digest of a desired object (serde_json writes maps in a fixed order), short enough
/// for an annotation and the same across restarts and versions of the controller.
pub fn applied_digest(desired: &Value) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(desired.to_string().as_bytes())[..12])
}

/// Adds the [`labels::APPLIED_DIGEST`] annotation (`digest` of the object without it).
pub fn stamp_applied_digest(desired: &mut Value, digest: &str) {
    if let Some(meta) = desired.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta.entry("annotations").or_insert(Value::Null);
        if !annotations.is_object() {
            *annotations = Value::Object(Default::default());
        }
        if let Some(a) = annotations.as_object_mut() {
            a.insert(
                labels::APPLIED_DIGEST.to_string(),
                Value::String(digest.to_string()),
            );
        }
    }
}

/// Whether `live` already carries every field of `desired` with the same value (lists
/// compared whole, as our applied lists are atomic or fully ours).
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => contains(lv, dv),
            None => dv.is_null(),
        }),
        (l, d) => l == d,
    }
}

/// Deletes what the configuration no longer asks for: Kustomizations of removed
/// kustomizations, a source of a kind no longer used, and (after a spec change) generated
/// Secrets and applier objects that are no longer part of the translation.
async fn prune_stale(
    config: &FluxConfig,
    name: &str,
    namespace: &str,
    objects: &FluxObjects,
    ctx: &Context,
) -> Result<(), Error> {
    // The source is named after the configuration, so a source of another kind is one lookup.
    let kind = objects.source.kind();
    if kind != "GitRepository" {
        delete_named(&ctx.stores.git, ctx, name, namespace).await?;
    }
    if kind != "Bucket" {
        delete_named(&ctx.stores.bucket, ctx, name, namespace).await?;
    }
    if kind != "OCIRepository" {
        delete_named(&ctx.stores.oci, ctx, name, namespace).await?;
    }

    // What the configuration asks for changes only with its spec (observedGeneration is
    // written after a successful apply, so a crash in between still finds it changed). Finding
    // the Kustomizations it no longer asks for walks the whole cache and the unwatched Secrets
    // and applier objects cost API calls, so both happen only then: at tens of thousands of
    // Kustomizations a walk on every status event made reconciling quadratic.
    let spec_changed =
        config.status.as_ref().and_then(|s| s.observed_generation) != config.metadata.generation;
    if spec_changed {
        let desired_ks: BTreeSet<String> = objects
            .kustomizations
            .iter()
            .filter_map(|k| k.metadata.name.clone())
            .collect();
        for ks in owned_by(&ctx.stores.kustomizations, name, namespace) {
            let ks_name = ks.name_any();
            if !desired_ks.contains(&ks_name) && ks.metadata.deletion_timestamp.is_none() {
                tracing::info!(namespace = %namespace, name = %name, kustomization = %ks_name, "deleting removed kustomization");
                delete::<Kustomization>(ctx, namespace, &ks_name).await?;
            }
        }
        let keep: BTreeSet<String> = objects
            .secrets
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        delete_generated_secrets(ctx, name, namespace, &keep).await?;
        if objects.service_account.is_none() {
            let applier = translate::applier_name(name);
            delete_if_labelled::<ServiceAccount>(ctx, namespace, &applier, name).await?;
            delete_if_labelled::<RoleBinding>(ctx, namespace, &applier, name).await?;
        }
    }
    Ok(())
}

/// Deletes the Secrets generated for a configuration (found by its labels; they are not
/// watched) except those in `keep`.
async fn delete_generated_secrets(
    ctx: &Context,
    name: &str,
    namespace: &str,
    keep: &BTreeSet<String>,
) -> Result<(), Error> {
    let selector = format!(
        "{}={},{}={}",
        labels::CONFIG_NAME,
        name,
        labels::CONFIG_NAMESPACE,
        namespace
    );
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let list = secrets
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::List {
            kind: "Secret".to_string(),
            source,
        })?;
    for s in list.items {
        let n = s.metadata.name.unwrap_or_default();
        if !keep.contains(&n) {
            delete::<Secret>(ctx, namespace, &n).await?;
        }
    }
    Ok(())
}

async fn delete_if_labelled<K>(
    ctx: &Context,
    namespace: &str,
    object: &str,
    config: &str,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let live = api
        .get_metadata_opt(object)
        .await
        .map_err(|source| Error::List {
            kind: K::kind(&()).into_owned(),
            source,
        })?;
    let ours = live.is_some_and(|o| {
        o.metadata
            .labels
            .unwrap_or_default()
            .get(labels::CONFIG_NAME)
            == Some(&config.to_string())
    });
    if ours {
        delete::<K>(ctx, namespace, object).await?;
    }
    Ok(())
}

async fn delete<K>(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {
            ctx.metrics.write("delete", &K::plural(&()));
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete {
            kind: K::kind(&()).into_owned(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        }),
    }
}

/// Objects in the cache that carry the configuration's labels.
fn owned_by<K>(store: &Store<K>, name: &str, namespace: &str) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    // Everything the controller creates is named `<config>` or `<config>-<...>`
    // (`translate`); testing the name first rejects almost every object of a large cache
    // without the label lookups, which made this walk most of the controller's CPU at 10,000
    // configurations.
    let named_for = |n: &str| {
        n.strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
    };
    store.state_filter(|o| {
        let labels = o.meta().labels.as_ref();
        o.meta().name.as_deref().is_some_and(named_for)
            && o.meta().namespace.as_deref() == Some(namespace)
            && labels
                .and_then(|l| l.get(labels::CONFIG_NAME))
                .map(String::as_str)
                == Some(name)
            && labels
                .and_then(|l| l.get(labels::CONFIG_NAMESPACE))
                .map(String::as_str)
                == Some(namespace)
    })
}

fn roll_up(
    config: &FluxConfig,
    name: &str,
    namespace: &str,
    objects: &FluxObjects,
    ctx: &Context,
) -> FluxConfigStatus {
    let mut observed = vec![match &objects.source {
        Source::Git(_) => ctx
            .stores
            .git
            .get(&ObjectRef::new(name).within(namespace))
            .map(|o| aged(Observed::from_git_repository(&o), o.meta()))
            .unwrap_or_else(|| Observed::missing("GitRepository", name, namespace)),
        Source::Bucket(_) => ctx
            .stores
            .bucket
            .get(&ObjectRef::new(name).within(namespace))
            .map(|o| aged(Observed::from_bucket(&o), o.meta()))
            .unwrap_or_else(|| Observed::missing("Bucket", name, namespace)),
        Source::Oci(_) => ctx
            .stores
            .oci
            .get(&ObjectRef::new(name).within(namespace))
            .map(|o| aged(Observed::from_oci_repository(&o), o.meta()))
            .unwrap_or_else(|| Observed::missing("OCIRepository", name, namespace)),
    }];
    let mut helm = Vec::new();
    for k in &objects.kustomizations {
        let ks_name = k.metadata.name.clone().unwrap_or_default();
        match ctx
            .stores
            .kustomizations
            .get(&ObjectRef::new(&ks_name).within(namespace))
        {
            Some(live) => {
                observed.push(aged(Observed::from_kustomization(&live), live.meta()));
                let applied_by = ObjectReference {
                    name: ks_name.clone(),
                    namespace: namespace.to_string(),
                };
                for (hr_ns, hr_name) in compliance::helm_releases_in_inventory(&live) {
                    helm.push(
                        match ctx
                            .stores
                            .helm_releases
                            .get(&ObjectRef::new(&hr_name).within(&hr_ns))
                        {
                            Some(hr) => aged(
                                Observed::from_helm_release(&hr, applied_by.clone()),
                                hr.meta(),
                            ),
                            None => Observed {
                                applied_by: Some(applied_by.clone()),
                                ..Observed::missing("HelmRelease", &hr_name, &hr_ns)
                            },
                        },
                    );
                }
            }
            None => observed.push(Observed::missing("Kustomization", &ks_name, namespace)),
        }
    }
    observed.extend(helm);
    let rollup = compliance::roll_up(config.spec.suspended(), &observed);
    let previous = config.status.clone().unwrap_or_default();
    FluxConfigStatus {
        compliance_state: Some(rollup.state),
        statuses: rollup.statuses,
        source_synced_commit_id: rollup.source_synced_commit_id,
        source_updated_at: rollup.source_updated_at,
        status_updated_at: previous.status_updated_at.clone(),
        repository_public_key: None,
        provisioning_state: Some(ProvisioningState::Succeeded),
        error_message: rollup
            .message
            .filter(|_| rollup.state == ComplianceState::NonCompliant),
        observed_generation: config.metadata.generation,
    }
}

/// Adds the object's age, which tells a just-created object without status (Pending) from one
/// Flux never picked up (Unknown).
fn aged(mut observed: Observed, meta: &kube::api::ObjectMeta) -> Observed {
    observed.age_seconds = meta
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.duration_until(Timestamp::now()).as_secs());
    observed
}

/// Whether two statuses differ in what the controller owns: not the time of the last write,
/// and not `repositoryPublicKey`, which the agent owns (it generated the key).
fn status_differs(a: &FluxConfigStatus, b: &FluxConfigStatus) -> bool {
    owned_part(a) != owned_part(b)
}

/// The status with what the controller does not own cleared, as compared and digested.
fn owned_part(s: &FluxConfigStatus) -> FluxConfigStatus {
    FluxConfigStatus {
        status_updated_at: None,
        repository_public_key: None,
        ..s.clone()
    }
}

/// Annotation key under which the controller's cache keeps the digest of a FluxConfig's status
/// in place of its per-object statuses. Not a valid annotation key (it has spaces), so the API
/// server can never hand one in: it only ever comes from [`compact_cached_config`].
pub const CACHED_STATUS_DIGEST: &str = "fluxconfig-controller cached status digest";

fn status_digest(s: &FluxConfigStatus) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&owned_part(s))
        .unwrap_or_default()
        .hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Shrinks a FluxConfig before it enters the controller's cache: the per-object statuses
/// (most of a FluxConfig's size: every condition of every Flux object it rolled up) are only
/// compared against, never read, so the cache keeps a digest of the status instead. At 10,000
/// configurations this is the largest single saving of the controller's memory. Reject and
/// cleanup, which carry the statuses over, read the full status back from the API.
pub fn compact_cached_config(config: &mut FluxConfig) {
    config.metadata.managed_fields = None;
    if let Some(a) = config.metadata.annotations.as_mut() {
        a.remove(CACHED_STATUS_DIGEST);
    }
    let Some(status) = config.status.as_mut() else {
        return;
    };
    if status.statuses.is_empty() {
        return;
    }
    let digest = status_digest(status);
    status.statuses = Vec::new();
    config
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CACHED_STATUS_DIGEST.to_string(), digest);
}

/// Whether `status` differs from the configuration's current status in what the controller
/// owns, for a full object or one compacted by [`compact_cached_config`].
fn differs_from_current(config: &FluxConfig, status: &FluxConfigStatus) -> bool {
    match config
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CACHED_STATUS_DIGEST))
    {
        Some(digest) => status_digest(status) != *digest,
        None => status_differs(&config.status.clone().unwrap_or_default(), status),
    }
}

/// The configuration's whole status: the cached one, or read back from the API when the cache
/// left the per-object statuses out.
async fn full_status(
    config: &FluxConfig,
    namespace: &str,
    ctx: &Context,
) -> Result<FluxConfigStatus, Error> {
    let compacted = config
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CACHED_STATUS_DIGEST));
    if !compacted {
        return Ok(config.status.clone().unwrap_or_default());
    }
    let api: Api<FluxConfig> = Api::namespaced(ctx.client.clone(), namespace);
    match api.get_status(&config.name_any()).await {
        Ok(live) => Ok(live.status.unwrap_or_default()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(config.status.clone().unwrap_or_default()),
        Err(e) => Err(Error::Status(e)),
    }
}

/// Writes the status through the status subresource, only when it changed.
async fn write_status(
    config: &FluxConfig,
    namespace: &str,
    mut status: FluxConfigStatus,
    ctx: &Context,
) -> Result<(), Error> {
    if !differs_from_current(config, &status) {
        return Ok(());
    }
    status.status_updated_at = Some(Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    // Never claim the agent's field: an apply that includes it would take ownership.
    status.repository_public_key = None;
    let api: Api<FluxConfig> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "apiVersion": "clusterconfig.azure.com/v1beta1",
        "kind": "FluxConfig",
        "status": status,
    });
    api.patch_status(
        &config.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    ctx.metrics.write("apply", "fluxconfigs/status");
    Ok(())
}

/// Deletion: remove every generated object and release the FluxConfig only once Flux has let go
/// of them (its finalizers run the prune), so deleting a configuration removes what it applied.
async fn cleanup(
    config: &FluxConfig,
    name: &str,
    namespace: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    if !config.finalizers().iter().any(|f| f == labels::FINALIZER) {
        return Ok(Action::await_change());
    }
    let cached = config.status.as_ref().and_then(|s| s.provisioning_state);
    if cached != Some(ProvisioningState::Deleting) {
        let status = full_status(config, namespace, ctx).await?;
        let deleting = FluxConfigStatus {
            provisioning_state: Some(ProvisioningState::Deleting),
            repository_public_key: None,
            ..status
        };
        write_status(config, namespace, deleting, ctx).await?;
        // The write changed the resourceVersion the finalizer patch below is conditioned on;
        // its watch event brings the fresh object straight back.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    let mut remaining = 0;
    for ks in owned_by(&ctx.stores.kustomizations, name, namespace) {
        remaining += 1;
        if ks.metadata.deletion_timestamp.is_none() {
            delete::<Kustomization>(ctx, namespace, &ks.name_any()).await?;
        }
    }
    remaining += delete_all(&ctx.stores.git, ctx, name, namespace).await?;
    remaining += delete_all(&ctx.stores.bucket, ctx, name, namespace).await?;
    remaining += delete_all(&ctx.stores.oci, ctx, name, namespace).await?;
    if remaining > 0 {
        tracing::info!(namespace = %namespace, name = %name, remaining, "waiting for Flux to release objects");
        // Deletions of watched objects trigger the next reconcile; the requeue is a backstop.
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    // Secrets and applier objects carry owner references; the garbage collector removes them
    // with the FluxConfig. Delete them now anyway so nothing lingers if GC is slow.
    delete_generated_secrets(ctx, name, namespace, &BTreeSet::new()).await?;
    let applier = translate::applier_name(name);
    delete_if_labelled::<ServiceAccount>(ctx, namespace, &applier, name).await?;
    delete_if_labelled::<RoleBinding>(ctx, namespace, &applier, name).await?;

    remove_finalizer(config, namespace, ctx).await?;
    ctx.metrics.set_compliance(&key(namespace, name), None);
    if let Ok(mut a) = ctx.applied.lock() {
        let prefix = format!("/{namespace}/{name}");
        a.retain(|k, _| !k.contains(&prefix));
    }
    tracing::info!(namespace = %namespace, name = %name, "configuration deleted");
    Ok(Action::await_change())
}

/// Deletes the configuration's source of one kind (named after the configuration) if the cache
/// holds one carrying its labels; returns how many remain (0 or 1).
async fn delete_named<K>(
    store: &Store<K>,
    ctx: &Context,
    name: &str,
    namespace: &str,
) -> Result<usize, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let Some(o) = store.get(&ObjectRef::new(name).within(namespace)) else {
        return Ok(0);
    };
    if config_of(o.meta()) != Some(ObjectRef::new(name).within(namespace)) {
        return Ok(0);
    }
    if o.meta().deletion_timestamp.is_none() {
        delete::<K>(ctx, namespace, name).await?;
    }
    Ok(1)
}

/// Deletes the configuration's objects of one kind still in the cache; returns how many remain.
async fn delete_all<K>(
    store: &Store<K>,
    ctx: &Context,
    name: &str,
    namespace: &str,
) -> Result<usize, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let owned = owned_by(store, name, namespace);
    for o in &owned {
        if o.meta().deletion_timestamp.is_none() {
            delete::<K>(ctx, namespace, &o.name_any()).await?;
        }
    }
    Ok(owned.len())
}

async fn remove_finalizer(
    config: &FluxConfig,
    namespace: &str,
    ctx: &Context,
) -> Result<(), Error> {
    let finalizers: Vec<String> = config
        .finalizers()
        .iter()
        .filter(|f| *f != labels::FINALIZER)
        .cloned()
        .collect();
    let api: Api<FluxConfig> = Api::namespaced(ctx.client.clone(), namespace);
    set_finalizers(&api, config, finalizers).await?;
    ctx.metrics.write("patch", "fluxconfigs");
    Ok(())
}

/// Maps a HelmRelease to the FluxConfig whose Kustomization applied it: by the labels
/// kustomize-controller puts on what it applies, else by searching the inventories.
pub fn helm_release_owner(
    hr: &HelmRelease,
    kustomizations: &Store<Kustomization>,
) -> Option<ObjectRef<FluxConfig>> {
    let labels = hr.metadata.labels.clone().unwrap_or_default();
    let ks = match (
        labels.get("kustomize.toolkit.fluxcd.io/name"),
        labels.get("kustomize.toolkit.fluxcd.io/namespace"),
    ) {
        (Some(n), Some(ns)) => kustomizations.get(&ObjectRef::new(n).within(ns)),
        _ => {
            let id = format!(
                "{}_{}_helm.toolkit.fluxcd.io_HelmRelease",
                hr.metadata.namespace.clone().unwrap_or_default(),
                hr.name_any()
            );
            kustomizations.find(|k| {
                k.status
                    .as_ref()
                    .and_then(|s| s.inventory.as_ref())
                    .is_some_and(|inv| inv.entries.iter().any(|e| e.id == id))
            })
        }
    }?;
    config_of(ks.meta())
}

/// The FluxConfig a generated object belongs to, from its labels.
pub fn config_of(meta: &kube::api::ObjectMeta) -> Option<ObjectRef<FluxConfig>> {
    let labels: &BTreeMap<String, String> = meta.labels.as_ref()?;
    let name = labels.get(labels::CONFIG_NAME)?;
    let namespace = labels.get(labels::CONFIG_NAMESPACE)?;
    Some(ObjectRef::new(name).within(namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(mut desired: Value) -> Value {
        let digest = applied_digest(&desired);
        stamp_applied_digest(&mut desired, &digest);
        desired
    }

    #[test]
    fn an_object_as_applied_is_in_place_with_fields_the_server_added() {
        let desired = stamped(json!({
            "metadata": {"name": "c-apps", "labels": {"a": "b"}},
            "spec": {"path": "./apps", "prune": true}
        }));
        let mut live = desired.clone();
        live["metadata"]["generation"] = json!(3);
        live["spec"]["timeout"] = json!("5m");
        live["status"] = json!({"conditions": []});
        assert!(contains(&live, &desired));
    }

    #[test]
    fn a_field_no_longer_set_changes_the_digest_so_the_object_is_applied_again() {
        let before =
            stamped(json!({"metadata": {"name": "c"}, "spec": {"path": "./a", "force": true}}));
        let after = stamped(json!({"metadata": {"name": "c"}, "spec": {"path": "./a"}}));
        // Field by field the old object still holds everything the new one sets...
        let mut unstamped = after.clone();
        unstamped["metadata"]["annotations"] = json!({});
        assert!(contains(&before, &unstamped));
        // ...but not its digest.
        assert!(!contains(&before, &after));
    }

    #[test]
    fn a_compacted_cache_entry_still_compares_as_applied() {
        let desired = stamped(json!({
            "metadata": {"name": "c", "namespace": "n", "labels": {"a": "b"}},
            "spec": {"path": "./a"}
        }));
        let mut live: Kustomization = serde_json::from_value(json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {
                "name": "c", "namespace": "n", "labels": {"a": "b"},
                "annotations": {
                    labels::APPLIED_DIGEST: desired["metadata"]["annotations"][labels::APPLIED_DIGEST],
                    "kustomize.toolkit.fluxcd.io/reconcile": "enabled"
                }
            },
            "spec": {"path": "./a", "interval": "10m", "prune": true,
                     "sourceRef": {"kind": "GitRepository", "name": "c"}}
        }))
        .expect("kustomization");
        compact_cached_metadata(&mut live.metadata);
        assert_eq!(live.metadata.annotations, None);
        assert!(contains(&as_applied(&live).expect("value"), &desired));
        // Another digest is another desired state.
        live.metadata
            .labels
            .as_mut()
            .expect("labels")
            .insert(CACHED_APPLIED_DIGEST.to_string(), "0".repeat(24));
        assert!(!contains(&as_applied(&live).expect("value"), &desired));
    }

    #[test]
    fn drift_in_an_owned_field_is_not_in_place() {
        let desired = stamped(json!({"metadata": {"name": "c"}, "spec": {"path": "./a"}}));
        let mut live = desired.clone();
        live["spec"]["path"] = json!("./elsewhere");
        assert!(!contains(&live, &desired));
    }

    #[test]
    fn the_digest_is_stable_and_keeps_other_annotations() {
        let desired = json!({"metadata": {"name": "c", "annotations": {"x": "y"}}, "spec": {}});
        let a = stamped(desired.clone());
        assert_eq!(a, stamped(desired));
        assert_eq!(a["metadata"]["annotations"]["x"], "y");
        let digest = a["metadata"]["annotations"][labels::APPLIED_DIGEST]
            .as_str()
            .expect("digest");
        assert_eq!(digest.len(), 24);
        // Fixed across builds and restarts (SHA-256 of the compact JSON, as any other tool
        // computes it): a hash that changed would rewrite every object after an upgrade.
        assert_eq!(
            applied_digest(&json!({"metadata": {"name": "c"}})),
            "d9a3c84485fd70721fa58e29"
        );
    }
}

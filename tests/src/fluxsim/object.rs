//! Reading a Flux object and the metadata/status writes every Flux controller does.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fluxconfig_api::flux::FLUX_FINALIZER;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::{json, Map, Value};

use super::conditions::{self, status_patch};
use super::{duration, Error, Key, Shared, REQUESTED_AT_ANNOTATION};

pub fn api(shared: &Shared, key: &Key) -> Api<DynamicObject> {
    Api::namespaced_with(
        shared.client.clone(),
        &key.namespace,
        &key.kind.api_resource(),
    )
}

/// A fetched Flux object with the accessors the reconcilers need.
pub struct FluxObject {
    pub obj: DynamicObject,
    pub status: Map<String, Value>,
}

pub async fn get(shared: &Shared, key: &Key) -> Result<Option<FluxObject>, Error> {
    let obj = api(shared, key).get_opt(&key.name).await?;
    Ok(obj.map(|obj| {
        let status = conditions::status_map(obj.data.get("status"));
        FluxObject { obj, status }
    }))
}

impl FluxObject {
    pub fn spec(&self) -> &Value {
        &self.obj.data["spec"]
    }

    pub fn generation(&self) -> i64 {
        self.obj.metadata.generation.unwrap_or(0)
    }

    pub fn observed_generation(&self) -> i64 {
        self.status
            .get("observedGeneration")
            .and_then(Value::as_i64)
            .unwrap_or(-1)
    }

    pub fn deleting(&self) -> bool {
        self.obj.metadata.deletion_timestamp.is_some()
    }

    pub fn suspended(&self) -> bool {
        self.spec()["suspend"].as_bool().unwrap_or(false)
    }

    pub fn has_finalizer(&self) -> bool {
        self.obj.finalizers().iter().any(|f| f == FLUX_FINALIZER)
    }

    pub fn ready(&self) -> bool {
        conditions::has_status(&self.status, conditions::READY, "True")
    }

    /// Ready=True for the current spec: what Flux's dependsOn checks.
    pub fn ready_at_generation(&self) -> bool {
        self.ready() && self.observed_generation() == self.generation()
    }

    /// The `reconcile.fluxcd.io/requestedAt` value not handled yet, if any.
    pub fn new_request(&self) -> Option<String> {
        let requested = self.obj.annotations().get(REQUESTED_AT_ANNOTATION)?;
        let handled = self
            .status
            .get("lastHandledReconcileAt")
            .and_then(Value::as_str);
        (handled != Some(requested.as_str())).then(|| requested.clone())
    }

    pub fn requested_at(&self) -> Option<String> {
        self.obj.annotations().get(REQUESTED_AT_ANNOTATION).cloned()
    }

    pub fn duration_field(&self, field: &str) -> Option<Duration> {
        self.spec()[field].as_str().and_then(duration::parse)
    }

    /// `spec.interval`, never zero so a bad value cannot spin the simulator.
    pub fn interval(&self) -> Duration {
        self.duration_field("interval")
            .unwrap_or(Duration::from_secs(60))
            .max(Duration::from_secs(1))
    }

    pub fn artifact_revision(&self) -> Option<&str> {
        self.status.get("artifact")?.get("revision")?.as_str()
    }
}

/// The object's interval has passed since the simulator last reconciled it.
pub fn interval_elapsed(shared: &Shared, key: &Key, interval: Duration) -> bool {
    shared
        .memory(key)
        .last_run
        .is_none_or(|at| at.elapsed() >= interval)
}

/// Time left until the object's next periodic reconciliation.
pub fn until_interval(shared: &Shared, key: &Key, interval: Duration) -> Duration {
    match shared.memory(key).last_run {
        Some(at) => interval
            .saturating_sub(at.elapsed())
            .max(Duration::from_millis(10)),
        None => interval,
    }
}

pub fn mark_run(shared: &Shared, key: &Key) {
    shared.update_memory(key, |m| m.last_run = Some(Instant::now()));
}

fn finalizers(o: &FluxObject) -> Vec<String> {
    o.obj.finalizers().to_vec()
}

/// Conditional on the resourceVersion: another writer of the finalizer list makes this a 409
/// (retried) instead of silently dropping its finalizer.
async fn write_finalizers(
    shared: &Shared,
    key: &Key,
    o: &FluxObject,
    list: Vec<String>,
) -> Result<(), Error> {
    let patch = json!({
        "metadata": {
            "resourceVersion": o.obj.resource_version(),
            "finalizers": list,
        }
    });
    api(shared, key)
        .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

pub async fn add_finalizer(shared: &Shared, key: &Key, o: &FluxObject) -> Result<(), Error> {
    if o.has_finalizer() {
        return Ok(());
    }
    let mut list = finalizers(o);
    list.push(FLUX_FINALIZER.to_string());
    write_finalizers(shared, key, o, list).await
}

pub async fn remove_finalizer(shared: &Shared, key: &Key, o: &FluxObject) -> Result<(), Error> {
    shared.forget(key);
    if !o.has_finalizer() {
        return Ok(());
    }
    let list: Vec<String> = finalizers(o)
        .into_iter()
        .filter(|f| f != FLUX_FINALIZER)
        .collect();
    match write_finalizers(shared, key, o, list).await {
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 404 => Ok(()),
        other => other,
    }
}

/// Writes the status through the status subresource if it changed. Writes nothing otherwise,
/// so that an idle simulator generates no watch events (and no feedback loop).
pub async fn write_status(
    shared: &Shared,
    key: &Key,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> Result<(), Error> {
    let Some(patch) = status_patch(old, new) else {
        return Ok(());
    };
    match api(shared, key)
        .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile: nothing left to report on.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The key of an object referenced as `{kind, name, namespace?}` from an object in `namespace`.
pub fn reference(value: &Value, default_namespace: &str) -> Option<Key> {
    let kind = super::FluxKind::parse(value["kind"].as_str()?)?;
    let name = value["name"].as_str()?;
    let namespace = value["namespace"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or(default_namespace);
    Some(Key::new(kind, namespace, name))
}

/// `spec.dependsOn` references (Kustomization and HelmRelease share the shape).
pub fn depends_on(o: &FluxObject, kind: super::FluxKind, namespace: &str) -> Vec<Key> {
    o.spec()["dependsOn"]
        .as_array()
        .map(|deps| {
            deps.iter()
                .filter_map(|d| {
                    let name = d["name"].as_str()?;
                    let ns = d["namespace"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .unwrap_or(namespace);
                    Some(Key::new(kind, ns, name))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The first dependency that is not Ready at its latest generation, as Flux words it.
pub async fn unready_dependency(shared: &Shared, deps: &[Key]) -> Result<Option<String>, Error> {
    for dep in deps {
        let ready = get(shared, dep)
            .await?
            .is_some_and(|d| d.ready_at_generation());
        if !ready {
            return Ok(Some(format!(
                "dependency '{}/{}' is not ready",
                dep.namespace, dep.name
            )));
        }
    }
    Ok(None)
}

pub fn keys(deps: &[Key]) -> BTreeSet<Key> {
    deps.iter().cloned().collect()
}

/// Records how a reconciliation ended in `lastHandledReconcileAt` (Flux does so on success and
/// failure alike).
pub fn handled(o: &FluxObject, status: &mut Map<String, Value>) {
    if let Some(at) = o.requested_at() {
        status.insert("lastHandledReconcileAt".to_string(), json!(at));
    }
}

//! kustomize-controller: waits for the source artifact and the dependencies, builds `spec.path`
//! from the source's commit, server-side applies it, records the inventory, prunes what left
//! it, optionally waits for what it applied to become healthy, and garbage-collects on
//! deletion.

mod build;
mod health;

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::apply::ObjRef;
use super::conditions::{self as cond, READY};
use super::manifests::BuildError;
use super::object::{self, FluxObject};
use super::{duration, Error, FluxKind, Key, Shared};
use build::{apply_all, build};
pub(crate) use health::HealthWait;
use health::{check_health, flux_keys};

const RECONCILIATION_SUCCEEDED: &str = "ReconciliationSucceeded";
const RECONCILIATION_FAILED: &str = "ReconciliationFailed";
const BUILD_FAILED: &str = "BuildFailed";
const PRUNE_FAILED: &str = "PruneFailed";
const HEALTH_CHECK_FAILED: &str = "HealthCheckFailed";
const HEALTHY: &str = "Healthy";

pub(crate) async fn reconcile(shared: &Shared, key: &Key) -> Result<Option<Duration>, Error> {
    let Some(o) = object::get(shared, key).await? else {
        shared.forget(key);
        return Ok(None);
    };
    if o.deleting() {
        finalize(shared, key, &o).await?;
        return Ok(None);
    }
    object::add_finalizer(shared, key, &o).await?;
    if o.suspended() {
        let mut status = o.status.clone();
        cond::suspended(&mut status, o.generation());
        object::handled(&o, &mut status);
        object::write_status(shared, key, &o.status, &status).await?;
        return Ok(None);
    }
    let generation = o.generation();
    let interval = o.interval();
    let retry = o.duration_field("retryInterval").unwrap_or(interval);
    let timeout = o.duration_field("timeout").unwrap_or(interval);

    let source_key = object::reference(&o.spec()["sourceRef"], &key.namespace)
        .filter(|k| k.kind.is_source())
        .ok_or_else(|| Error::Invalid(format!("{key}: spec.sourceRef is not a Flux source")))?;
    let deps = object::depends_on(&o, FluxKind::Kustomization, &key.namespace);
    let mut watched = object::keys(&deps);
    watched.insert(source_key.clone());
    if let Some(wait) = shared.memory(key).health {
        watched.extend(flux_keys(&wait.objects));
    }
    shared.watch_deps(key, watched);

    if let Some(injected) = shared.injected(key, &o.obj) {
        return fail(
            shared,
            key,
            &o,
            &injected.reason,
            &injected.message,
            None,
            retry,
        )
        .await;
    }

    // Flux's order: the source and its artifact, then the dependencies.
    let Some(source) = object::get(shared, &source_key).await? else {
        let message = format!(
            "Source '{}/{}/{}' not found",
            source_key.kind.kind(),
            source_key.namespace,
            source_key.name
        );
        return fail(
            shared,
            key,
            &o,
            cond::ARTIFACT_FAILED,
            &message,
            None,
            retry,
        )
        .await;
    };
    let Some(revision) = source.artifact_revision().map(str::to_string) else {
        let message = format!(
            "Source artifact not found, retrying in {}",
            duration::render(shared.config.dependency_requeue)
        );
        let requeue = shared.config.dependency_requeue;
        return fail(
            shared,
            key,
            &o,
            cond::ARTIFACT_FAILED,
            &message,
            None,
            requeue,
        )
        .await;
    };
    if let Some(message) = object::unready_dependency(shared, &deps).await? {
        let requeue = shared.config.dependency_requeue;
        return fail(
            shared,
            key,
            &o,
            cond::DEPENDENCY_NOT_READY,
            &message,
            None,
            requeue,
        )
        .await;
    }

    let last_applied = o.status.get("lastAppliedRevision").and_then(Value::as_str);
    let due = generation != o.observed_generation()
        || last_applied != Some(revision.as_str())
        || o.new_request().is_some()
        || !o.ready();
    let waiting = shared
        .memory(key)
        .health
        .filter(|w| w.revision == revision && w.generation == generation);
    if let Some(wait) = waiting {
        if o.new_request().is_none() {
            return check_health(shared, key, &o, wait, interval, retry).await;
        }
    }
    // A failed attempt is retried after retryInterval (or for a new revision, spec or
    // request), not whenever an event comes by: our own status writes are events too.
    let failed_at = shared
        .memory(key)
        .failed_attempt
        .filter(|(r, g, _)| *r == revision && *g == generation)
        .map(|(_, _, at)| at);
    if let Some(at) = failed_at {
        if o.new_request().is_none() && at.elapsed() < retry {
            return Ok(Some(retry.saturating_sub(at.elapsed())));
        }
    }
    if !due && !object::interval_elapsed(shared, key, interval) {
        return Ok(Some(object::until_interval(shared, key, interval)));
    }

    // Periodic runs re-apply quietly (drift correction); a new revision or spec is announced.
    if due {
        let mut status = o.status.clone();
        let message = format!(
            "Fetching manifests for revision {revision} with a timeout of {}",
            duration::render(timeout)
        );
        cond::set(
            &mut status,
            cond::RECONCILING,
            "True",
            cond::PROGRESSING,
            &message,
            generation,
        );
        cond::set(
            &mut status,
            READY,
            "Unknown",
            cond::PROGRESSING,
            "Reconciliation in progress",
            generation,
        );
        object::write_status(shared, key, &o.status, &status).await?;
        tokio::time::sleep(shared.config.step_delay).await;
    }
    // Build what is stored now: the spec may have changed while we announced progress.
    let Some(o) = object::get(shared, key).await? else {
        return Ok(None);
    };
    let generation = o.generation();

    let objects = match build(shared, key, &o, source_key.kind, &source, &revision).await {
        Ok(objects) => objects,
        Err(BuildError::PathNotFound(p)) => {
            let message = format!("kustomization path not found: {p}");
            return fail(
                shared,
                key,
                &o,
                cond::ARTIFACT_FAILED,
                &message,
                Some(&revision),
                retry,
            )
            .await;
        }
        Err(e) => {
            return fail(
                shared,
                key,
                &o,
                BUILD_FAILED,
                &e.to_string(),
                Some(&revision),
                retry,
            )
            .await
        }
    };

    let applied = match apply_all(shared, key, &o, objects).await {
        Ok(applied) => applied,
        Err(message) => {
            return fail(
                shared,
                key,
                &o,
                RECONCILIATION_FAILED,
                &message,
                Some(&revision),
                retry,
            )
            .await
        }
    };

    let old: Vec<ObjRef> = inventory(&o.status);
    if o.spec()["prune"].as_bool().unwrap_or(false) {
        let stale: Vec<&ObjRef> = old
            .iter()
            .filter(|r| !applied.iter().any(|a| same_object(a, r)))
            .collect();
        for r in stale {
            if let Err(e) = shared.resources.prune(r, &key.namespace, &key.name).await {
                let message = format!("failed to delete {}: {e}", r.display());
                return fail(
                    shared,
                    key,
                    &o,
                    PRUNE_FAILED,
                    &message,
                    Some(&revision),
                    retry,
                )
                .await;
            }
        }
    }

    let mut status = o.status.clone();
    status.insert("inventory".to_string(), inventory_value(&applied));
    status.insert("lastAttemptedRevision".to_string(), json!(revision));

    let wait = o.spec()["wait"].as_bool().unwrap_or(false);
    if wait && !applied.is_empty() {
        let now = Instant::now();
        let hw = HealthWait {
            revision: revision.clone(),
            generation,
            started: now,
            deadline: now + timeout,
            objects: applied,
        };
        let message = format!(
            "Running health checks for revision {revision} with a timeout of {}",
            duration::render(timeout)
        );
        cond::set(
            &mut status,
            cond::RECONCILING,
            "True",
            cond::PROGRESSING,
            &message,
            generation,
        );
        if !cond::has_status(&status, READY, "True") || due {
            cond::set(
                &mut status,
                READY,
                "Unknown",
                cond::PROGRESSING,
                "Reconciliation in progress",
                generation,
            );
        }
        object::write_status(shared, key, &o.status, &status).await?;
        shared.update_memory(key, |m| m.health = Some(hw.clone()));
        let mut watched = object::keys(&deps);
        watched.insert(source_key.clone());
        watched.extend(flux_keys(&hw.objects));
        shared.watch_deps(key, watched);
        let Some(o) = object::get(shared, key).await? else {
            return Ok(None);
        };
        return check_health(shared, key, &o, hw, interval, retry).await;
    }
    succeed(shared, key, &o, status, &revision, None, interval).await
}

fn same_object(a: &ObjRef, b: &ObjRef) -> bool {
    a.group == b.group && a.kind == b.kind && a.namespace == b.namespace && a.name == b.name
}

fn inventory(status: &Map<String, Value>) -> Vec<ObjRef> {
    status
        .get("inventory")
        .and_then(|i| i.get("entries"))
        .and_then(Value::as_array)
        .map(|entries| entries.iter().filter_map(ObjRef::from_entry).collect())
        .unwrap_or_default()
}

fn inventory_value(objects: &[ObjRef]) -> Value {
    let entries: Vec<Value> = objects
        .iter()
        .map(|r| json!({"id": r.id(), "v": r.version}))
        .collect();
    json!({ "entries": entries })
}

async fn succeed(
    shared: &Shared,
    key: &Key,
    o: &FluxObject,
    mut status: Map<String, Value>,
    revision: &str,
    healthy: Option<String>,
    interval: Duration,
) -> Result<Option<Duration>, Error> {
    let generation = o.generation();
    if let Some(message) = healthy {
        cond::set(
            &mut status,
            HEALTHY,
            "True",
            "Succeeded",
            &message,
            generation,
        );
    }
    cond::succeeded(
        &mut status,
        RECONCILIATION_SUCCEEDED,
        &format!("Applied revision: {revision}"),
        generation,
    );
    status.insert("observedGeneration".to_string(), json!(generation));
    status.insert("lastAppliedRevision".to_string(), json!(revision));
    status.insert("lastAttemptedRevision".to_string(), json!(revision));
    object::handled(o, &mut status);
    object::write_status(shared, key, &o.status, &status).await?;
    object::mark_run(shared, key);
    shared.update_memory(key, |m| m.failed_attempt = None);
    Ok(Some(interval))
}

async fn fail(
    shared: &Shared,
    key: &Key,
    o: &FluxObject,
    reason: &str,
    message: &str,
    attempted: Option<&str>,
    requeue: Duration,
) -> Result<Option<Duration>, Error> {
    fail_from(
        shared,
        key,
        o,
        o.status.clone(),
        reason,
        message,
        attempted,
        requeue,
    )
    .await
}

/// Writes a failure on top of `status` (which may already carry edits); the patch is computed
/// against the stored object `o`.
#[allow(clippy::too_many_arguments)]
async fn fail_from(
    shared: &Shared,
    key: &Key,
    o: &FluxObject,
    mut status: Map<String, Value>,
    reason: &str,
    message: &str,
    attempted: Option<&str>,
    requeue: Duration,
) -> Result<Option<Duration>, Error> {
    cond::failed(&mut status, reason, message, o.generation());
    if let Some(revision) = attempted {
        status.insert("lastAttemptedRevision".to_string(), json!(revision));
        let attempt = (revision.to_string(), o.generation(), Instant::now());
        shared.update_memory(key, |m| m.failed_attempt = Some(attempt));
    }
    object::handled(o, &mut status);
    object::write_status(shared, key, &o.status, &status).await?;
    object::mark_run(shared, key);
    Ok(Some(requeue))
}

/// Deletion: garbage-collect the inventory when pruning (Flux skips it for a suspended
/// Kustomization), then let the object go.
async fn finalize(shared: &Shared, key: &Key, o: &FluxObject) -> Result<(), Error> {
    let prune = o.spec()["prune"].as_bool().unwrap_or(false);
    if prune && !o.suspended() && o.has_finalizer() {
        for r in inventory(&o.status).iter().rev() {
            shared.resources.prune(r, &key.namespace, &key.name).await?;
        }
    }
    object::remove_finalizer(shared, key, o).await
}

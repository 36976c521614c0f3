//! source-controller: GitRepository, Bucket, OCIRepository and HelmRepository get a finalizer,
//! `Reconciling`/`Ready=Unknown` while an artifact is built, then `Ready=True` with the
//! artifact (or `Ready=False` when the ref cannot be resolved).

use std::time::Duration;

use serde_json::{json, Map, Value};
use sha2::Digest as _;

use super::conditions::{self as cond, READY};
use super::object::{self, FluxObject};
use super::{Error, FluxKind, GitError, Key, Shared};

const SUCCEEDED: &str = "Succeeded";
const ARTIFACT_IN_STORAGE: &str = "ArtifactInStorage";
const FETCH_FAILED: &str = "FetchFailed";
const GIT_OPERATION_FAILED: &str = "GitOperationFailed";
/// Where source-controller serves artifacts from, inside the cluster.
const STORAGE_HOST: &str = "source-controller.flux-system.svc.cluster.local.";

pub(crate) async fn reconcile(shared: &Shared, key: &Key) -> Result<Option<Duration>, Error> {
    let Some(o) = object::get(shared, key).await? else {
        shared.forget(key);
        return Ok(None);
    };
    if o.deleting() {
        object::remove_finalizer(shared, key, &o).await?;
        return Ok(None);
    }
    object::add_finalizer(shared, key, &o).await?;
    if o.suspended() {
        let mut status = o.status.clone();
        object::handled(&o, &mut status);
        object::write_status(shared, key, &o.status, &status).await?;
        return Ok(None);
    }
    let generation = o.generation();
    let interval = o.interval();

    if let Some(injected) = shared.injected(key, &o.obj) {
        let mut status = o.status.clone();
        cond::failed(&mut status, &injected.reason, &injected.message, generation);
        cond::retrying(&mut status, &injected.message, generation);
        cond::set(
            &mut status,
            FETCH_FAILED,
            "True",
            &injected.reason,
            &injected.message,
            generation,
        );
        object::handled(&o, &mut status);
        object::write_status(shared, key, &o.status, &status).await?;
        object::mark_run(shared, key);
        return Ok(Some(interval));
    }

    let fresh = o.generation() != o.observed_generation()
        || o.new_request().is_some()
        || !o.ready()
        || o.artifact_revision().is_none();
    if !fresh && !object::interval_elapsed(shared, key, interval) {
        return Ok(Some(object::until_interval(shared, key, interval)));
    }

    let revision = match resolve(shared, key.kind, &o).await {
        Ok(revision) => revision,
        Err(GitError::Ref(message)) => {
            let mut status = o.status.clone();
            cond::failed(&mut status, GIT_OPERATION_FAILED, &message, generation);
            cond::retrying(&mut status, &message, generation);
            cond::set(
                &mut status,
                FETCH_FAILED,
                "True",
                GIT_OPERATION_FAILED,
                &message,
                generation,
            );
            object::handled(&o, &mut status);
            object::write_status(shared, key, &o.status, &status).await?;
            object::mark_run(shared, key);
            return Ok(Some(interval));
        }
        Err(e) => return Err(e.into()),
    };

    let changed = o.artifact_revision() != revision.as_deref();
    if fresh || changed {
        let message = match &revision {
            Some(r) if changed => format!("building artifact: new upstream revision '{r}'"),
            _ if o.generation() != o.observed_generation() => format!(
                "processing object: new generation {} -> {generation}",
                o.observed_generation().max(0)
            ),
            _ => "reconciliation in progress".to_string(),
        };
        let mut status = o.status.clone();
        cond::set(
            &mut status,
            cond::RECONCILING,
            "True",
            cond::PROGRESSING,
            &message,
            generation,
        );
        if !o.ready() || changed {
            cond::set(
                &mut status,
                READY,
                "Unknown",
                cond::PROGRESSING,
                &message,
                generation,
            );
        }
        object::write_status(shared, key, &o.status, &status).await?;
        tokio::time::sleep(shared.config.step_delay).await;
        // Start from what is stored now so the next write does not undo another writer's.
        let Some(current) = object::get(shared, key).await? else {
            return Ok(None);
        };
        return finish(shared, key, &current, generation, revision, interval).await;
    }
    finish(shared, key, &o, generation, revision, interval).await
}

async fn finish(
    shared: &Shared,
    key: &Key,
    o: &FluxObject,
    generation: i64,
    revision: Option<String>,
    interval: Duration,
) -> Result<Option<Duration>, Error> {
    let mut status = o.status.clone();
    let message = match &revision {
        Some(r) => {
            let unchanged = o.artifact_revision() == Some(r.as_str());
            let artifact = artifact(
                key,
                r,
                unchanged.then(|| o.status.get("artifact")).flatten(),
            );
            if key.kind != FluxKind::GitRepository {
                status.insert("url".to_string(), artifact["url"].clone());
            }
            status.insert("artifact".to_string(), artifact);
            let m = format!("stored artifact for revision '{r}'");
            cond::set(
                &mut status,
                ARTIFACT_IN_STORAGE,
                "True",
                SUCCEEDED,
                &m,
                generation,
            );
            m
        }
        // An OCI HelmRepository has no artifact: source-controller only vouches for it.
        None => "Helm repository is ready".to_string(),
    };
    cond::succeeded(&mut status, SUCCEEDED, &message, generation);
    cond::remove(&mut status, FETCH_FAILED);
    status.insert("observedGeneration".to_string(), json!(generation));
    object::handled(o, &mut status);
    object::write_status(shared, key, &o.status, &status).await?;
    object::mark_run(shared, key);
    Ok(Some(interval))
}

/// The revision the source currently has upstream; `None` for sources without an artifact.
async fn resolve(
    shared: &Shared,
    kind: FluxKind,
    o: &FluxObject,
) -> Result<Option<String>, GitError> {
    let spec = o.spec();
    match kind {
        FluxKind::GitRepository => {
            let url = spec["url"].as_str().unwrap_or_default().to_string();
            let reference = spec.get("ref").cloned().unwrap_or(Value::Null);
            let resolved = run_git(shared, move |git| git.resolve(&url, &reference)).await?;
            Ok(Some(resolved.revision))
        }
        FluxKind::Bucket => {
            // Flux's Bucket revision is the digest of the object index.
            let seed = format!(
                "{}/{}/{}",
                spec["endpoint"].as_str().unwrap_or_default(),
                spec["bucketName"].as_str().unwrap_or_default(),
                spec["prefix"].as_str().unwrap_or_default()
            );
            Ok(Some(format!("sha256:{}", sha256_hex(&seed))))
        }
        FluxKind::OCIRepository => {
            let url = spec["url"].as_str().unwrap_or_default();
            let reference = &spec["ref"];
            let digest = sha256_hex(&format!("{url}#{reference}"));
            let revision = if let Some(d) = reference["digest"].as_str() {
                d.to_string()
            } else {
                let tag = reference["semver"]
                    .as_str()
                    .or(reference["tag"].as_str())
                    .unwrap_or("latest");
                format!("{tag}@sha256:{digest}")
            };
            Ok(Some(revision))
        }
        _ => {
            if spec["type"].as_str() == Some("oci") {
                return Ok(None);
            }
            let url = spec["url"].as_str().unwrap_or_default();
            Ok(Some(format!("sha256:{}", sha256_hex(url))))
        }
    }
}

pub(crate) async fn run_git<T: Send + 'static>(
    shared: &Shared,
    f: impl FnOnce(&super::git::Git) -> Result<T, GitError> + Send + 'static,
) -> Result<T, GitError> {
    let git = shared.git.clone();
    tokio::task::spawn_blocking(move || f(&git))
        .await
        .map_err(|e| GitError::Join(e.to_string()))?
}

pub(crate) fn sha256_hex(data: &str) -> String {
    hex::encode(sha2::Sha256::digest(data.as_bytes()))
}

/// The artifact source-controller would store; the previous one is kept (with its
/// `lastUpdateTime`) when the revision did not change.
fn artifact(key: &Key, revision: &str, previous: Option<&Value>) -> Value {
    if let Some(previous) = previous {
        return previous.clone();
    }
    let digest = sha256_hex(&format!("{key}@{revision}"));
    let file = match key.kind {
        FluxKind::HelmRepository => format!("index-{}.yaml", &digest[..16]),
        _ => format!("{}.tar.gz", &digest[..16]),
    };
    let path = format!(
        "{}/{}/{}/{file}",
        key.kind.kind().to_ascii_lowercase(),
        key.namespace,
        key.name
    );
    let mut artifact = Map::new();
    artifact.insert("revision".into(), json!(revision));
    artifact.insert("digest".into(), json!(format!("sha256:{digest}")));
    artifact.insert("lastUpdateTime".into(), json!(cond::now()));
    artifact.insert("path".into(), json!(path));
    artifact.insert("url".into(), json!(format!("http://{STORAGE_HOST}/{path}")));
    artifact.insert("size".into(), json!(1024));
    Value::Object(artifact)
}

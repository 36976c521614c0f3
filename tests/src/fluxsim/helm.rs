//! helm-controller: a HelmRelease whose chart source is Ready gets "installed" (then
//! "upgraded" on every new spec or chart revision), with a release history, the HelmChart
//! reference and failure counters shaped like helm-controller v2's. Nothing is rendered: the
//! chart's objects are not created.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::conditions as cond;
use super::object::{self, FluxObject};
use super::source::{run_git, sha256_hex};
use super::{duration, Error, FluxKind, Injected, Key, Shared};

const RELEASED: &str = "Released";
const INSTALL_SUCCEEDED: &str = "InstallSucceeded";
const UPGRADE_SUCCEEDED: &str = "UpgradeSucceeded";
const INSTALL_FAILED: &str = "InstallFailed";
const UPGRADE_FAILED: &str = "UpgradeFailed";
const RETRIES_EXCEEDED: &str = "RetriesExceeded";
const HELM_CHART_NOT_READY: &str = "HelmChartNotReady";
/// helm-controller keeps this many release snapshots in the status.
const MAX_HISTORY: usize = 5;

/// The chart a release uses, as helm-controller learns it from the HelmChart artifact.
struct Chart {
    name: String,
    version: String,
    /// `status.helmChart` (`<source namespace>/<release namespace>-<release name>`); only
    /// releases with a chart template get a HelmChart.
    helm_chart: Option<String>,
    source: Key,
}

pub(crate) async fn reconcile(shared: &Shared, key: &Key) -> Result<Option<Duration>, Error> {
    let Some(o) = object::get(shared, key).await? else {
        shared.forget(key);
        return Ok(None);
    };
    if o.deleting() {
        // Uninstalling has nothing to remove: the simulator renders no chart objects.
        object::remove_finalizer(shared, key, &o).await?;
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
    let chart = chart(key, &o)?;
    let deps = object::depends_on(&o, FluxKind::HelmRelease, &key.namespace);
    let mut watched = object::keys(&deps);
    watched.insert(chart.source.clone());
    shared.watch_deps(key, watched);

    if let Some(message) = object::unready_dependency(shared, &deps).await? {
        let requeue = shared.config.dependency_requeue;
        write_failed(
            shared,
            key,
            &o,
            o.status.clone(),
            cond::DEPENDENCY_NOT_READY,
            &message,
        )
        .await?;
        return Ok(Some(requeue));
    }
    let source = object::get(shared, &chart.source).await?;
    let source_ready = source.as_ref().is_some_and(|s| s.ready());
    if !source_ready {
        // helm-controller names its HelmChart in the status before the chart is usable, and
        // reports the wait as a failure of its own (not as DependencyNotReady).
        let mut status = o.status.clone();
        let message = match &chart.helm_chart {
            Some(helm_chart) => {
                status.insert("helmChart".into(), json!(helm_chart));
                format!("HelmChart '{helm_chart}' is not ready")
            }
            None => format!(
                "{} '{}/{}' is not ready",
                chart.source.kind.kind(),
                chart.source.namespace,
                chart.source.name
            ),
        };
        let reason = if source.is_none() && chart.helm_chart.is_none() {
            cond::ARTIFACT_FAILED
        } else {
            HELM_CHART_NOT_READY
        };
        write_failed(shared, key, &o, status, reason, &message).await?;
        return Ok(Some(shared.config.dependency_requeue));
    }
    let chart_version = match &source {
        Some(s) => chart_version(shared, &o, &chart, s).await,
        None => chart.version.clone(),
    };

    if let Some(injected) = shared.injected(key, &o.obj) {
        return fail(shared, key, &o, &chart, &chart_version, &injected).await;
    }

    let attempted = o
        .status
        .get("lastAttemptedRevision")
        .and_then(Value::as_str);
    let due = generation != o.observed_generation()
        || o.new_request().is_some()
        || !o.ready()
        || attempted != Some(chart_version.as_str());
    if !due {
        // Periodic runs find nothing drifted: helm-controller leaves the status alone.
        object::mark_run(shared, key);
        return Ok(Some(interval));
    }

    let install = deployed(&o.status).is_none();
    let action = if install { "install" } else { "upgrade" };
    let timeout = o
        .duration_field("timeout")
        .unwrap_or(Duration::from_secs(300));
    let mut status = o.status.clone();
    let message = format!(
        "Running '{action}' action with timeout of {}",
        duration::render(timeout)
    );
    cond::progressing(&mut status, &message, generation);
    object::write_status(shared, key, &o.status, &status).await?;
    tokio::time::sleep(shared.config.step_delay).await;
    let Some(o) = object::get(shared, key).await? else {
        return Ok(None);
    };
    release(shared, key, &o, &chart, &chart_version, generation).await?;
    Ok(Some(interval))
}

fn chart(key: &Key, o: &FluxObject) -> Result<Chart, Error> {
    let spec = o.spec();
    if let Some(template) = spec["chart"]["spec"].as_object() {
        let source = object::reference(&template["sourceRef"], &key.namespace)
            .ok_or_else(|| Error::Invalid(format!("{key}: spec.chart.spec.sourceRef")))?;
        let name = template["chart"].as_str().unwrap_or_default().to_string();
        let requested = template["version"].as_str().unwrap_or("*");
        return Ok(Chart {
            helm_chart: Some(format!(
                "{}/{}-{}",
                source.namespace, key.namespace, key.name
            )),
            name: name.rsplit('/').next().unwrap_or(&name).to_string(),
            version: version_for(requested),
            source,
        });
    }
    let source = object::reference(&spec["chartRef"], &key.namespace)
        .ok_or_else(|| Error::Invalid(format!("{key}: neither spec.chart nor spec.chartRef")))?;
    Ok(Chart {
        name: source.name.clone(),
        version: "1.0.0".to_string(),
        helm_chart: None,
        source,
    })
}

/// A repository chart's version: the requested one when exact, else a stand-in the range is
/// likely to admit (no index is fetched).
fn version_for(requested: &str) -> String {
    let trimmed = requested.trim().trim_start_matches('v');
    if semver::Version::parse(trimmed).is_ok() {
        return trimmed.to_string();
    }
    let Ok(re) = regex::Regex::new(r"\d+\.\d+\.\d+") else {
        return "1.0.0".to_string();
    };
    re.find(requested)
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "1.0.0".to_string())
}

/// Charts from git or OCI sources carry the version of their `Chart.yaml` at the source
/// revision; repository charts the requested one.
async fn chart_version(
    shared: &Shared,
    o: &FluxObject,
    chart: &Chart,
    source: &FluxObject,
) -> String {
    if chart.source.kind != FluxKind::GitRepository {
        return chart.version.clone();
    }
    let Some(revision) = source.artifact_revision().map(str::to_string) else {
        return chart.version.clone();
    };
    let url = source.spec()["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let commit = revision
        .rsplit("sha1:")
        .next()
        .unwrap_or_default()
        .to_string();
    let path = o.spec()["chart"]["spec"]["chart"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("./")
        .trim_end_matches('/')
        .to_string();
    let text = run_git(shared, move |git| {
        let Some(snapshot) = git.snapshot(&url, &commit)? else {
            return Ok(None);
        };
        let file = format!("{path}/Chart.yaml");
        if !snapshot.is_file(&file) {
            return Ok(None);
        }
        snapshot.read(&file).map(Some)
    })
    .await;
    let version = text
        .ok()
        .flatten()
        .and_then(|t| serde_saphyr::from_str::<Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string));
    version.unwrap_or_else(|| chart.version.clone())
}

/// The latest deployed snapshot, if any.
fn deployed(status: &Map<String, Value>) -> Option<&Value> {
    status
        .get("history")?
        .as_array()?
        .iter()
        .find(|h| h["status"] == "deployed")
}

fn release_identity(key: &Key, o: &FluxObject) -> (String, String) {
    let spec = o.spec();
    let target = spec["targetNamespace"].as_str().filter(|s| !s.is_empty());
    let name = spec["releaseName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| match target {
            Some(t) => format!("{t}-{}", key.name),
            None => key.name.clone(),
        });
    let namespace = target.unwrap_or(&key.namespace).to_string();
    (name, namespace)
}

async fn release(
    shared: &Shared,
    key: &Key,
    o: &FluxObject,
    chart: &Chart,
    chart_version: &str,
    generation: i64,
) -> Result<(), Error> {
    let mut status = o.status.clone();
    let install = deployed(&status).is_none();
    let (name, namespace) = release_identity(key, o);
    let mut history: Vec<Value> = status
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let version = history
        .iter()
        .filter_map(|h| h["version"].as_i64())
        .max()
        .unwrap_or(0)
        + 1;
    let now = cond::now();
    let first_deployed = history
        .last()
        .and_then(|h| h["firstDeployed"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| now.clone());
    for h in &mut history {
        if h["status"] == "deployed" {
            h["status"] = json!("superseded");
        }
    }
    let config_digest = format!("sha256:{}", sha256_hex(&o.spec()["values"].to_string()));
    let digest = format!(
        "sha256:{}",
        sha256_hex(&format!(
            "{name}/{namespace}/{version}/{}/{chart_version}/{config_digest}",
            chart.name
        ))
    );
    history.insert(
        0,
        json!({
            "name": name,
            "namespace": namespace,
            "version": version,
            "status": "deployed",
            "chartName": chart.name,
            "chartVersion": chart_version,
            "appVersion": chart_version,
            "configDigest": config_digest,
            "digest": digest,
            "firstDeployed": first_deployed,
            "lastDeployed": now,
        }),
    );
    history.truncate(MAX_HISTORY);
    status.insert("history".into(), Value::Array(history));

    // A new spec starts the failure counting afresh (helm-controller clears them when the
    // release configuration changes).
    let last_gen = status
        .get("lastAttemptedGeneration")
        .and_then(Value::as_i64);
    if last_gen.is_some_and(|g| g != generation) {
        for f in ["failures", "installFailures", "upgradeFailures"] {
            status.remove(f);
        }
    }
    let (reason, verb) = if install {
        (INSTALL_SUCCEEDED, "install")
    } else {
        (UPGRADE_SUCCEEDED, "upgrade")
    };
    let message = format!(
        "Helm {verb} succeeded for release {namespace}/{name}.v{version} with chart {}@{chart_version}",
        chart.name
    );
    cond::set(&mut status, RELEASED, "True", reason, &message, generation);
    cond::succeeded(&mut status, reason, &message, generation);
    common_status(
        &mut status,
        o,
        chart,
        chart_version,
        generation,
        verb,
        &config_digest,
    );
    status.insert("observedGeneration".into(), json!(generation));
    status.insert("lastReleaseRevision".into(), json!(version));
    object::handled(o, &mut status);
    object::write_status(shared, key, &o.status, &status).await?;
    shared.update_memory(key, |m| m.counted_failure = None);
    object::mark_run(shared, key);
    Ok(())
}

fn common_status(
    status: &mut Map<String, Value>,
    o: &FluxObject,
    chart: &Chart,
    chart_version: &str,
    generation: i64,
    action: &str,
    config_digest: &str,
) {
    if let Some(helm_chart) = &chart.helm_chart {
        status.insert("helmChart".into(), json!(helm_chart));
    }
    // Helm keeps its release records here: storageNamespace, else the target namespace.
    let namespace = o.spec()["storageNamespace"]
        .as_str()
        .or(o.spec()["targetNamespace"].as_str())
        .filter(|s| !s.is_empty())
        .or(o.obj.metadata.namespace.as_deref())
        .unwrap_or_default()
        .to_string();
    if !namespace.is_empty() {
        status.insert("storageNamespace".into(), json!(namespace));
    }
    status.insert("lastAttemptedRevision".into(), json!(chart_version));
    status.insert("lastAttemptedGeneration".into(), json!(generation));
    status.insert("lastAttemptedReleaseAction".into(), json!(action));
    status.insert("lastAttemptedConfigDigest".into(), json!(config_digest));
}

/// An injected failure: the install (or upgrade) fails; each distinct failure counts once,
/// and a release out of remediation retries stalls.
async fn fail(
    shared: &Shared,
    key: &Key,
    o: &FluxObject,
    chart: &Chart,
    chart_version: &str,
    injected: &Injected,
) -> Result<Option<Duration>, Error> {
    let generation = o.generation();
    let mut status = o.status.clone();
    let install = deployed(&status).is_none();
    let (action, counter, released_reason) = if install {
        ("install", "installFailures", INSTALL_FAILED)
    } else {
        ("upgrade", "upgradeFailures", UPGRADE_FAILED)
    };
    let counted = shared
        .memory(key)
        .counted_failure
        .is_some_and(|(g, f)| g == generation && f == *injected);
    if !counted {
        for field in ["failures", counter] {
            let n = status.get(field).and_then(Value::as_i64).unwrap_or(0) + 1;
            status.insert(field.into(), json!(n));
        }
        shared.update_memory(key, |m| {
            m.counted_failure = Some((generation, injected.clone()))
        });
    }
    let config_digest = format!("sha256:{}", sha256_hex(&o.spec()["values"].to_string()));
    common_status(
        &mut status,
        o,
        chart,
        chart_version,
        generation,
        action,
        &config_digest,
    );
    cond::set(
        &mut status,
        RELEASED,
        "False",
        released_reason,
        &injected.message,
        generation,
    );
    cond::failed(&mut status, &injected.reason, &injected.message, generation);
    cond::retrying(&mut status, &injected.message, generation);
    let retries = o.spec()[action]["remediation"]["retries"]
        .as_i64()
        .unwrap_or(0);
    let attempts = status.get(counter).and_then(Value::as_i64).unwrap_or(0);
    if retries >= 0 && attempts > retries {
        let message = format!("Failed to {action} after {attempts} attempt(s)");
        cond::set(
            &mut status,
            cond::STALLED,
            "True",
            RETRIES_EXCEEDED,
            &message,
            generation,
        );
        cond::remove(&mut status, cond::RECONCILING);
    }
    object::handled(o, &mut status);
    object::write_status(shared, key, &o.status, &status).await?;
    object::mark_run(shared, key);
    Ok(Some(o.interval()))
}

async fn write_failed(
    shared: &Shared,
    key: &Key,
    o: &FluxObject,
    mut status: Map<String, Value>,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    cond::failed(&mut status, reason, message, o.generation());
    cond::retrying(&mut status, message, o.generation());
    object::handled(o, &mut status);
    object::write_status(shared, key, &o.status, &status).await
}

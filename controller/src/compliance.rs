//! Compliance: turns what the controller observed of the Flux objects of one `FluxConfig` (its
//! source, its Kustomizations, and the HelmReleases those applied) into Azure's per-object and
//! overall `complianceState`. Pure: callers fetch the objects, this module only decides.
//!
//! The rules are documented for users in `docs/compliance.md`; keep the two in step.

use fluxconfig_api::flux::{Bucket, GitRepository, HelmRelease, Kustomization, OCIRepository};
use fluxconfig_api::fluxconfig::{
    ComplianceState, HelmReleaseProperties, ObjectReference, ObjectStatus, StatusCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};

pub const KIND_GIT_REPOSITORY: &str = "GitRepository";
pub const KIND_BUCKET: &str = "Bucket";
pub const KIND_OCI_REPOSITORY: &str = "OCIRepository";
pub const KIND_KUSTOMIZATION: &str = "Kustomization";
pub const KIND_HELM_RELEASE: &str = "HelmRelease";

const HELM_GROUP: &str = fluxconfig_api::flux::HELM_GROUP;

const READY: &str = "Ready";
const RECONCILING: &str = "Reconciling";
const STALLED: &str = "Stalled";
/// Flux's reason for "waiting on another object": not a failure of this object, and the object it
/// waits on carries its own state, so the roll-up still surfaces a real failure.
const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
/// helm-controller's reason while the release's HelmChart has no artifact yet: right after a
/// release is applied this is the normal wait for the chart to be fetched, not a failure. A chart
/// that never arrives stays Pending (with this reason in the message) rather than flapping.
const HELM_CHART_NOT_READY: &str = "HelmChartNotReady";

/// What the controller observed of one Flux object (or that it is missing).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    /// false: expected (source/kustomization) but not found (yet).
    pub exists: bool,
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    pub conditions: Vec<Condition>,
    pub suspended: bool,
    pub deleting: bool,
    pub applied_by: Option<ObjectReference>,
    pub helm: Option<HelmReleaseProperties>,
    pub artifact_revision: Option<String>,
    pub artifact_updated_at: Option<String>,
    /// Seconds since the object was created, when the caller knows the time; keeps this module
    /// free of clocks.
    pub age_seconds: Option<i64>,
}

/// How long a freshly created object may go without any status before it counts as Unknown
/// rather than Pending: Flux picks objects up within seconds, so silence past this means no Flux
/// controller is looking at it.
pub const NO_STATUS_GRACE_SECONDS: i64 = 120;

impl Observed {
    pub fn missing(
        kind: impl Into<String>,
        name: impl Into<String>,
        namespace: impl Into<String>,
    ) -> Self {
        Observed {
            kind: kind.into(),
            name: name.into(),
            namespace: namespace.into(),
            exists: false,
            ..Observed::default()
        }
    }

    pub fn from_git_repository(o: &GitRepository) -> Self {
        let status = o.status.as_ref();
        Observed::from_source(
            KIND_GIT_REPOSITORY,
            &o.metadata,
            o.spec.suspend,
            status.and_then(|s| s.observed_generation),
            status.map(|s| s.conditions.as_slice()),
            status.and_then(|s| s.artifact.as_ref()),
        )
    }

    pub fn from_bucket(o: &Bucket) -> Self {
        let status = o.status.as_ref();
        Observed::from_source(
            KIND_BUCKET,
            &o.metadata,
            o.spec.suspend,
            status.and_then(|s| s.observed_generation),
            status.map(|s| s.conditions.as_slice()),
            status.and_then(|s| s.artifact.as_ref()),
        )
    }

    pub fn from_oci_repository(o: &OCIRepository) -> Self {
        let status = o.status.as_ref();
        Observed::from_source(
            KIND_OCI_REPOSITORY,
            &o.metadata,
            o.spec.suspend,
            status.and_then(|s| s.observed_generation),
            status.map(|s| s.conditions.as_slice()),
            status.and_then(|s| s.artifact.as_ref()),
        )
    }

    pub fn from_kustomization(o: &Kustomization) -> Self {
        let status = o.status.as_ref();
        Observed::from_meta(
            KIND_KUSTOMIZATION,
            &o.metadata,
            o.spec.suspend,
            status.and_then(|s| s.observed_generation),
            status.map(|s| s.conditions.as_slice()),
        )
    }

    /// `applied_by` is the Kustomization whose inventory lists the release.
    pub fn from_helm_release(o: &HelmRelease, applied_by: ObjectReference) -> Self {
        let status = o.status.as_ref();
        let mut observed = Observed::from_meta(
            KIND_HELM_RELEASE,
            &o.metadata,
            o.spec.suspend,
            status.and_then(|s| s.observed_generation),
            status.map(|s| s.conditions.as_slice()),
        );
        // Azure always reports helmReleaseProperties for a release, even before the first
        // install, so the properties are present with whatever is known.
        let helm = HelmReleaseProperties {
            // helm-controller keeps the history latest first.
            last_revision_applied: status
                .and_then(|s| s.history.first())
                .and_then(|h| h.version),
            helm_chart_ref: status
                .and_then(|s| s.helm_chart.as_deref())
                .and_then(|chart| parse_helm_chart_ref(chart, &observed.namespace)),
            failure_count: status.and_then(|s| s.failures),
            install_failure_count: status.and_then(|s| s.install_failures),
            upgrade_failure_count: status.and_then(|s| s.upgrade_failures),
        };
        observed.helm = Some(helm);
        observed.applied_by = Some(applied_by);
        observed
    }

    fn from_source(
        kind: &str,
        meta: &ObjectMeta,
        suspend: Option<bool>,
        observed_generation: Option<i64>,
        conditions: Option<&[Condition]>,
        artifact: Option<&fluxconfig_api::flux::Artifact>,
    ) -> Self {
        let mut observed =
            Observed::from_meta(kind, meta, suspend, observed_generation, conditions);
        observed.artifact_revision = artifact.map(|a| a.revision.clone());
        observed.artifact_updated_at = artifact.and_then(|a| a.last_update_time.clone());
        observed
    }

    fn from_meta(
        kind: &str,
        meta: &ObjectMeta,
        suspend: Option<bool>,
        observed_generation: Option<i64>,
        conditions: Option<&[Condition]>,
    ) -> Self {
        Observed {
            kind: kind.to_string(),
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            exists: true,
            generation: meta.generation,
            observed_generation,
            conditions: conditions.map(<[Condition]>::to_vec).unwrap_or_default(),
            suspended: suspend.unwrap_or(false),
            deleting: meta.deletion_timestamp.is_some(),
            ..Observed::default()
        }
    }
}

/// `status.helmChart` is `<namespace>/<name>`; a bare name is taken to live beside the release,
/// which is where helm-controller puts the chart when the source is in the release's namespace.
fn parse_helm_chart_ref(chart: &str, release_namespace: &str) -> Option<ObjectReference> {
    let (namespace, name) = match chart.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (release_namespace, chart),
    };
    if name.is_empty() {
        return None;
    }
    Some(ObjectReference {
        name: name.to_string(),
        namespace: namespace.to_string(),
    })
}

/// The reference a HelmRelease found in `ks`'s inventory reports as `appliedBy`.
pub fn applied_by(ks: &Kustomization) -> ObjectReference {
    ObjectReference {
        name: ks.metadata.name.clone().unwrap_or_default(),
        namespace: ks.metadata.namespace.clone().unwrap_or_default(),
    }
}

/// HelmReleases listed in a Kustomization's inventory
/// (`<ns>_<name>_helm.toolkit.fluxcd.io_HelmRelease`), as (namespace, name), in inventory order
/// without duplicates. Entries without a namespace are skipped: HelmRelease is namespaced, so such
/// an id cannot name one.
pub fn helm_releases_in_inventory(ks: &Kustomization) -> Vec<(String, String)> {
    let Some(inventory) = ks.status.as_ref().and_then(|s| s.inventory.as_ref()) else {
        return Vec::new();
    };
    let mut releases: Vec<(String, String)> = Vec::new();
    for entry in &inventory.entries {
        let Some(id) = entry.parse_id() else {
            continue;
        };
        if id.kind != KIND_HELM_RELEASE || id.group != HELM_GROUP || id.namespace.is_empty() {
            continue;
        }
        let key = (id.namespace, id.name);
        if !releases.contains(&key) {
            releases.push(key);
        }
    }
    releases
}

/// An object's state together with the sentence that explains it, so the roll-up message and the
/// state can never disagree.
struct Assessment {
    state: ComplianceState,
    detail: String,
}

impl Assessment {
    fn new(state: ComplianceState, detail: impl Into<String>) -> Self {
        Assessment {
            state,
            detail: detail.into(),
        }
    }
}

fn condition<'a>(o: &'a Observed, type_: &str) -> Option<&'a Condition> {
    o.conditions.iter().find(|c| c.type_ == type_)
}

/// The condition was written for an older spec than the one the object now has. Flux stamps each
/// condition with the generation it was computed for; conditions without the stamp are trusted.
fn condition_is_stale(c: &Condition, generation: Option<i64>) -> bool {
    matches!((c.observed_generation, generation), (Some(seen), Some(current)) if seen < current)
}

/// Flux bumps `status.observedGeneration` only when a reconciliation succeeds (or stalls), so this
/// is what tells a fresh `Ready=True` from one left over from the previous spec.
fn success_is_stale(o: &Observed, ready: &Condition) -> bool {
    let Some(current) = o.generation else {
        return condition_is_stale(ready, None);
    };
    match o.observed_generation {
        Some(seen) if seen >= current => condition_is_stale(ready, o.generation),
        _ => true,
    }
}

/// The condition's message, or its reason when Flux left the message empty.
fn describe(c: &Condition) -> String {
    if !c.message.trim().is_empty() {
        c.message.trim().to_string()
    } else if !c.reason.is_empty() {
        c.reason.clone()
    } else {
        format!("{}={}", c.type_, c.status)
    }
}

fn assess(o: &Observed) -> Assessment {
    use ComplianceState::{Compliant, NonCompliant, Pending, Suspended, Unknown};

    // The controller creates expected objects itself, so "not there" means "being created".
    if !o.exists {
        return Assessment::new(Pending, "not created yet");
    }
    // The controller recreates or drops a deleted object next; either way it is in flux.
    if o.deleting {
        return Assessment::new(Pending, "being deleted");
    }
    // Flux leaves the last conditions on a suspended object; they describe the past, not now.
    if o.suspended {
        return Assessment::new(Suspended, "reconciliation is suspended");
    }

    let no_status_yet = o.conditions.is_empty() && o.observed_generation.is_none_or(|g| g < 0);
    if no_status_yet {
        // Right after creation this is the normal wait for Flux to pick the object up. Flux writes
        // a Reconciling condition as soon as it does, so silence beyond the grace period means no
        // Flux controller is looking at it.
        if o.age_seconds
            .is_some_and(|age| age < NO_STATUS_GRACE_SECONDS)
        {
            return Assessment::new(Pending, "waiting for Flux to pick it up");
        }
        return Assessment::new(Unknown, "no status reported by Flux yet");
    }

    let ready = condition(o, READY);
    let stalled = condition(o, STALLED);
    let reconciling = condition(o, RECONCILING);

    if let Some(stalled) = stalled.filter(|c| c.status == "True") {
        if condition_is_stale(stalled, o.generation) {
            return Assessment::new(Pending, stale_detail(o));
        }
        return Assessment::new(NonCompliant, describe(stalled));
    }

    if let Some(ready) = ready.filter(|c| c.status == "False") {
        if ready.reason == DEPENDENCY_NOT_READY || ready.reason == HELM_CHART_NOT_READY {
            return Assessment::new(Pending, describe(ready));
        }
        if condition_is_stale(ready, o.generation) {
            return Assessment::new(Pending, stale_detail(o));
        }
        // Deliberately checked before Reconciling: Flux keeps Reconciling=True
        // (ProgressingWithRetry) on a failing object between retries, and does not bump
        // status.observedGeneration on failure, so either would otherwise hide the failure.
        return Assessment::new(NonCompliant, describe(ready));
    }

    if let Some(reconciling) = reconciling.filter(|c| c.status == "True") {
        return Assessment::new(Pending, describe(reconciling));
    }

    match ready {
        Some(ready) if ready.status == "True" => {
            if success_is_stale(o, ready) {
                Assessment::new(Pending, stale_detail(o))
            } else {
                Assessment::new(Compliant, describe(ready))
            }
        }
        // Ready=Unknown is how Flux says "reconciliation in progress".
        Some(ready) if ready.status == "Unknown" => Assessment::new(Pending, describe(ready)),
        Some(ready) => Assessment::new(
            Unknown,
            format!("unrecognised Ready status {:?}", ready.status),
        ),
        None => Assessment::new(Unknown, "no Ready condition"),
    }
}

fn stale_detail(o: &Observed) -> String {
    match (o.generation, o.observed_generation) {
        (Some(current), Some(seen)) if seen >= 0 => {
            format!("generation {current} not reconciled yet (last reconciled: {seen})")
        }
        (Some(current), _) => format!("generation {current} not reconciled yet"),
        (None, _) => "latest changes not reconciled yet".to_string(),
    }
}

/// kustomize-controller's reason when it cannot fetch the source artifact.
const ARTIFACT_FAILED: &str = "ArtifactFailed";

/// A Kustomization that could not get its source artifact is waiting, not failing, while the
/// source is not ready yet or when it failed before the source's current artifact existed (Flux
/// retries it): the source's own state carries any real failure, as with DependencyNotReady.
/// Without this a fresh configuration flaps to Non-Compliant before Flux fetched it once.
fn assess_in_context(
    o: &Observed,
    source_ready: bool,
    artifact_at: Option<k8s_openapi::jiff::Timestamp>,
) -> Assessment {
    let assessment = assess(o);
    if o.kind != KIND_KUSTOMIZATION || assessment.state != ComplianceState::NonCompliant {
        return assessment;
    }
    let failed_fetch =
        condition(o, READY).filter(|c| c.status == "False" && c.reason == ARTIFACT_FAILED);
    let waiting = failed_fetch.is_some_and(|c| {
        !source_ready || artifact_at.is_some_and(|at| c.last_transition_time.0 <= at)
    });
    if waiting {
        return Assessment::new(ComplianceState::Pending, "waiting for the source artifact");
    }
    assessment
}

pub fn object_state(o: &Observed) -> ComplianceState {
    assess(o).state
}

pub fn object_status(o: &Observed) -> ObjectStatus {
    ObjectStatus {
        name: o.name.clone(),
        namespace: o.namespace.clone(),
        kind: o.kind.clone(),
        compliance_state: object_state(o),
        applied_by: o.applied_by.clone(),
        status_conditions: o.conditions.iter().map(status_condition).collect(),
        helm_release_properties: o.helm.clone(),
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn status_condition(c: &Condition) -> StatusCondition {
    StatusCondition {
        type_: c.type_.clone(),
        status: c.status.clone(),
        reason: non_empty(&c.reason),
        message: non_empty(&c.message),
        last_transition_time: rfc3339(&c.last_transition_time),
    }
}

/// Same rendering the API server uses for `metav1.Time`, so the copy reads like the original.
fn rfc3339(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Option<String> {
    k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", t.0).ok()
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rollup {
    pub state: ComplianceState,
    pub message: Option<String>,
    pub statuses: Vec<ObjectStatus>,
    pub source_synced_commit_id: Option<String>,
    pub source_updated_at: Option<String>,
}

/// Report order: the source, then Kustomizations, then HelmReleases.
fn kind_rank(kind: &str) -> u8 {
    match kind {
        KIND_KUSTOMIZATION => 1,
        KIND_HELM_RELEASE => 2,
        _ => 0,
    }
}

fn is_source_kind(kind: &str) -> bool {
    matches!(
        kind,
        KIND_GIT_REPOSITORY | KIND_BUCKET | KIND_OCI_REPOSITORY
    )
}

/// Which state wins the roll-up: lower is worse.
fn severity(state: ComplianceState) -> u8 {
    match state {
        ComplianceState::NonCompliant => 0,
        ComplianceState::Pending => 1,
        ComplianceState::Unknown => 2,
        ComplianceState::Suspended => 3,
        ComplianceState::Compliant => 4,
    }
}

/// `objects`: the source first, then Kustomizations, then HelmReleases (the order is normalised
/// here; an object listed twice is reported once). `config_suspended`: FluxConfig spec.suspend.
pub fn roll_up(config_suspended: bool, objects: &[Observed]) -> Rollup {
    let mut ordered: Vec<&Observed> = objects.iter().collect();
    // Stable, so of two entries for the same object the caller's first one is kept below.
    ordered.sort_by(|a, b| {
        (kind_rank(&a.kind), &a.kind, &a.namespace, &a.name).cmp(&(
            kind_rank(&b.kind),
            &b.kind,
            &b.namespace,
            &b.name,
        ))
    });
    ordered.dedup_by(|b, a| a.kind == b.kind && a.namespace == b.namespace && a.name == b.name);

    let source = ordered.iter().find(|o| is_source_kind(&o.kind));
    let source_ready = source.is_some_and(|s| assess(s).state == ComplianceState::Compliant);
    let artifact_at = source
        .and_then(|s| s.artifact_updated_at.as_deref())
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    let assessed: Vec<(&Observed, Assessment)> = ordered
        .iter()
        .map(|o| (*o, assess_in_context(o, source_ready, artifact_at)))
        .collect();

    let source_synced_commit_id = source.and_then(|s| s.artifact_revision.clone());
    let source_updated_at = source.and_then(|s| s.artifact_updated_at.clone());

    let (state, message) = if config_suspended {
        (
            ComplianceState::Suspended,
            Some("the configuration is suspended".to_string()),
        )
    } else if assessed.is_empty() {
        // Only before the controller has expanded the configuration at all.
        (
            ComplianceState::Pending,
            Some("no Flux objects observed yet".to_string()),
        )
    } else {
        overall(&assessed)
    };

    Rollup {
        state,
        message,
        statuses: assessed
            .iter()
            .map(|(o, a)| ObjectStatus {
                compliance_state: a.state,
                ..object_status(o)
            })
            .collect(),
        source_synced_commit_id,
        source_updated_at,
    }
}

fn overall(assessed: &[(&Observed, Assessment)]) -> (ComplianceState, Option<String>) {
    let state = assessed
        .iter()
        .map(|(_, a)| a.state)
        .min_by_key(|s| severity(*s))
        .unwrap_or(ComplianceState::Pending);
    if state == ComplianceState::Compliant {
        return (state, None);
    }
    let mut culprits = assessed.iter().filter(|(_, a)| a.state == state);
    let message = culprits.next().map(|(o, a)| {
        let others = culprits.count();
        let mut message = format!("{} {}: {}", o.kind, o.name, a.detail);
        if others > 0 {
            message.push_str(&format!(" (and {others} more)"));
        }
        message
    });
    (state, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;
    use ComplianceState::{Compliant, NonCompliant, Pending, Suspended, Unknown};

    const TS: &str = "2026-11-25T20:00:00Z";

    fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: Time(TS.parse().unwrap()),
            observed_generation: None,
        }
    }

    fn at(mut c: Condition, generation: i64) -> Condition {
        c.observed_generation = Some(generation);
        c
    }

    fn ready_true() -> Condition {
        cond(
            READY,
            "True",
            "ReconciliationSucceeded",
            "Applied revision: main@sha1:abc",
        )
    }

    /// An existing object at generation 1 that Flux reconciled at generation 1.
    fn obs(kind: &str, name: &str, conditions: Vec<Condition>) -> Observed {
        Observed {
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: "cluster-config".to_string(),
            exists: true,
            generation: Some(1),
            observed_generation: Some(1),
            conditions,
            ..Observed::default()
        }
    }

    fn ks(name: &str, conditions: Vec<Condition>) -> Observed {
        obs(KIND_KUSTOMIZATION, name, conditions)
    }

    #[test]
    fn object_states_table() {
        let stale_ready = Observed {
            generation: Some(2),
            ..ks("a", vec![at(ready_true(), 1)])
        };
        let ready_without_observed_generation = Observed {
            observed_generation: None,
            ..ks("a", vec![ready_true()])
        };
        let never_reconciled = Observed {
            observed_generation: Some(-1),
            ..ks("a", vec![])
        };
        let new_and_failing = Observed {
            observed_generation: Some(-1),
            ..ks(
                "a",
                vec![
                    at(cond(READY, "False", "ArtifactFailed", "auth failed"), 1),
                    at(
                        cond(RECONCILING, "True", "ProgressingWithRetry", "auth failed"),
                        1,
                    ),
                ],
            )
        };
        let failure_for_old_spec = Observed {
            generation: Some(3),
            ..ks("a", vec![at(cond(READY, "False", "BuildFailed", "x"), 2)])
        };
        let stalled_for_old_spec = Observed {
            generation: Some(3),
            ..ks("a", vec![at(cond(STALLED, "True", "InvalidPath", "x"), 2)])
        };
        let suspended_and_failing = Observed {
            suspended: true,
            ..ks("a", vec![cond(READY, "False", "BuildFailed", "x")])
        };
        let deleting_and_ready = Observed {
            deleting: true,
            ..ks("a", vec![ready_true()])
        };
        let no_generation_but_ready = Observed {
            generation: None,
            observed_generation: None,
            ..ks("a", vec![ready_true()])
        };

        let cases: Vec<(&str, Observed, ComplianceState)> = vec![
            (
                "missing",
                Observed::missing(KIND_KUSTOMIZATION, "a", "ns"),
                Pending,
            ),
            (
                "exists, no status at all",
                Observed {
                    observed_generation: None,
                    ..ks("a", vec![])
                },
                Unknown,
            ),
            (
                "observedGeneration -1, no conditions",
                never_reconciled,
                Unknown,
            ),
            (
                "reconciling, Ready=Unknown Progressing",
                ks(
                    "a",
                    vec![
                        cond(
                            READY,
                            "Unknown",
                            "Progressing",
                            "Reconciliation in progress",
                        ),
                        cond(RECONCILING, "True", "Progressing", "Fetching manifests"),
                    ],
                ),
                Pending,
            ),
            (
                "Ready=Unknown alone",
                ks("a", vec![cond(READY, "Unknown", "Progressing", "")]),
                Pending,
            ),
            (
                "Ready=True while Reconciling=True",
                ks(
                    "a",
                    vec![
                        ready_true(),
                        cond(RECONCILING, "True", "Progressing", "Applying"),
                    ],
                ),
                Pending,
            ),
            (
                "DependencyNotReady",
                ks(
                    "a",
                    vec![cond(READY, "False", DEPENDENCY_NOT_READY, "dep not ready")],
                ),
                Pending,
            ),
            (
                "exists, no status, just created",
                Observed {
                    age_seconds: Some(3),
                    observed_generation: None,
                    ..ks("a", vec![])
                },
                Pending,
            ),
            (
                "exists, no status, past the grace period",
                Observed {
                    age_seconds: Some(NO_STATUS_GRACE_SECONDS + 1),
                    observed_generation: None,
                    ..ks("a", vec![])
                },
                Unknown,
            ),
            (
                "HelmChartNotReady",
                ks(
                    "a",
                    vec![cond(
                        READY,
                        "False",
                        HELM_CHART_NOT_READY,
                        "HelmChart 'a/a-b' is not ready",
                    )],
                ),
                Pending,
            ),
            (
                "Ready=True at latest generation",
                ks("a", vec![ready_true()]),
                Compliant,
            ),
            (
                "Ready=True, older generation observed",
                stale_ready,
                Pending,
            ),
            (
                "Ready=True, observedGeneration absent",
                ready_without_observed_generation,
                Pending,
            ),
            (
                "Ready=True, no generation known",
                no_generation_but_ready,
                Compliant,
            ),
            (
                "Ready=False BuildFailed",
                ks(
                    "a",
                    vec![cond(
                        READY,
                        "False",
                        "BuildFailed",
                        "kustomize build failed",
                    )],
                ),
                NonCompliant,
            ),
            (
                "Ready=False while retrying",
                ks(
                    "a",
                    vec![
                        cond(READY, "False", "HealthCheckFailed", "timeout"),
                        cond(RECONCILING, "True", "ProgressingWithRetry", "timeout"),
                    ],
                ),
                NonCompliant,
            ),
            (
                "new object failing its first reconciliation",
                new_and_failing,
                NonCompliant,
            ),
            (
                "Ready=False for an older spec",
                failure_for_old_spec,
                Pending,
            ),
            (
                "Stalled",
                ks(
                    "a",
                    vec![
                        cond(STALLED, "True", "RetriesExceeded", "gave up"),
                        cond(READY, "Unknown", "Progressing", ""),
                    ],
                ),
                NonCompliant,
            ),
            ("Stalled for an older spec", stalled_for_old_spec, Pending),
            (
                "Stalled=False is not a failure",
                ks("a", vec![cond(STALLED, "False", "", ""), ready_true()]),
                Compliant,
            ),
            (
                "suspended wins over failure",
                suspended_and_failing,
                Suspended,
            ),
            ("being deleted", deleting_and_ready, Pending),
            (
                "conditions but no Ready",
                ks(
                    "a",
                    vec![cond("ArtifactInStorage", "True", "Succeeded", "")],
                ),
                Unknown,
            ),
            (
                "bogus Ready status",
                ks("a", vec![cond(READY, "Maybe", "", "")]),
                Unknown,
            ),
        ];
        for (what, observed, want) in cases {
            assert_eq!(object_state(&observed), want, "{what}");
        }
    }

    #[test]
    fn config_suspended_beats_everything() {
        let r = roll_up(
            true,
            &[
                obs(
                    KIND_GIT_REPOSITORY,
                    "c",
                    vec![cond(READY, "False", "GitOperationFailed", "x")],
                ),
                Observed::missing(KIND_KUSTOMIZATION, "c-a", "cluster-config"),
            ],
        );
        assert_eq!(r.state, Suspended);
        assert_eq!(r.message.as_deref(), Some("the configuration is suspended"));
    }

    #[test]
    fn kustomization_waiting_for_an_unready_source_is_pending() {
        let waiting = ks(
            "cluster-config-infra",
            vec![cond(
                READY,
                "False",
                ARTIFACT_FAILED,
                "Source artifact not found, retrying in 30s",
            )],
        );
        let source_pending = Observed {
            observed_generation: None,
            age_seconds: Some(1),
            ..obs(KIND_GIT_REPOSITORY, "cluster-config", vec![])
        };
        let r = roll_up(false, &[source_pending, waiting.clone()]);
        assert_eq!(r.state, Pending);
        assert!(
            r.statuses.iter().all(|s| s.compliance_state == Pending),
            "{:?}",
            r.statuses
        );

        // A fetch that failed before the source's current artifact existed is retried.
        let mut source_ready = obs(KIND_GIT_REPOSITORY, "cluster-config", vec![ready_true()]);
        let failed_at = waiting.conditions[0].last_transition_time.0;
        source_ready.artifact_updated_at = Some(
            failed_at
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1))
                .expect("time")
                .to_string(),
        );
        let r = roll_up(false, &[source_ready.clone(), waiting.clone()]);
        assert_eq!(r.state, Pending);

        // Failing after the artifact was there is a real failure.
        source_ready.artifact_updated_at = Some(
            failed_at
                .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(1))
                .expect("time")
                .to_string(),
        );
        let r = roll_up(false, &[source_ready, waiting]);
        assert_eq!(r.state, NonCompliant);
    }

    #[test]
    fn non_compliant_beats_pending() {
        let r = roll_up(
            false,
            &[
                obs(KIND_GIT_REPOSITORY, "c", vec![ready_true()]),
                ks(
                    "c-a",
                    vec![cond(READY, "False", DEPENDENCY_NOT_READY, "waiting")],
                ),
                ks(
                    "c-b",
                    vec![cond(
                        READY,
                        "False",
                        "BuildFailed",
                        "kustomization.yaml not found",
                    )],
                ),
            ],
        );
        assert_eq!(r.state, NonCompliant);
        assert_eq!(
            r.message.as_deref(),
            Some("Kustomization c-b: kustomization.yaml not found")
        );
    }

    #[test]
    fn pending_beats_unknown_and_names_the_dependency() {
        let r = roll_up(
            false,
            &[
                obs(KIND_GIT_REPOSITORY, "cluster-config", vec![ready_true()]),
                ks(
                    "cluster-config-apps",
                    vec![cond(
                        READY,
                        "False",
                        DEPENDENCY_NOT_READY,
                        "dependency 'cluster-config/cluster-config-infra' is not ready",
                    )],
                ),
                Observed {
                    observed_generation: None,
                    ..ks("cluster-config-infra", vec![])
                },
            ],
        );
        assert_eq!(r.state, Pending);
        assert_eq!(
            r.message.as_deref(),
            Some(
                "Kustomization cluster-config-apps: dependency \
                 'cluster-config/cluster-config-infra' is not ready"
            )
        );
    }

    #[test]
    fn unknown_beats_suspended_object_and_compliant() {
        let r = roll_up(
            false,
            &[
                obs(KIND_GIT_REPOSITORY, "c", vec![ready_true()]),
                Observed {
                    suspended: true,
                    ..ks("c-a", vec![ready_true()])
                },
                Observed {
                    observed_generation: None,
                    ..ks("c-b", vec![])
                },
            ],
        );
        assert_eq!(r.state, Unknown);
        assert_eq!(
            r.message.as_deref(),
            Some("Kustomization c-b: no status reported by Flux yet")
        );
    }

    #[test]
    fn suspended_object_under_active_config_is_reported() {
        let r = roll_up(
            false,
            &[
                obs(KIND_GIT_REPOSITORY, "c", vec![ready_true()]),
                Observed {
                    suspended: true,
                    ..obs(KIND_HELM_RELEASE, "redis", vec![ready_true()])
                },
            ],
        );
        assert_eq!(r.state, Suspended);
        assert_eq!(
            r.message.as_deref(),
            Some("HelmRelease redis: reconciliation is suspended")
        );
    }

    #[test]
    fn all_compliant_reports_source_revision() {
        let mut source = obs(KIND_GIT_REPOSITORY, "c", vec![ready_true()]);
        source.artifact_revision = Some(format!("main@sha1:{}", "a".repeat(40)));
        source.artifact_updated_at = Some(TS.to_string());
        let r = roll_up(false, &[source, ks("c-a", vec![ready_true()])]);
        assert_eq!(r.state, Compliant);
        assert_eq!(r.message, None);
        assert_eq!(
            r.source_synced_commit_id,
            Some(format!("main@sha1:{}", "a".repeat(40)))
        );
        assert_eq!(r.source_updated_at.as_deref(), Some(TS));
        assert!(r.statuses.iter().all(|s| s.compliance_state == Compliant));
    }

    #[test]
    fn empty_is_pending() {
        let r = roll_up(false, &[]);
        assert_eq!(r.state, Pending);
        assert!(r.statuses.is_empty());
        assert_eq!(r.source_synced_commit_id, None);
    }

    #[test]
    fn missing_source_right_after_create_is_pending() {
        let r = roll_up(
            false,
            &[
                Observed::missing(KIND_GIT_REPOSITORY, "c", "cluster-config"),
                Observed::missing(KIND_KUSTOMIZATION, "c-a", "cluster-config"),
            ],
        );
        assert_eq!(r.state, Pending);
        assert_eq!(
            r.message.as_deref(),
            Some("GitRepository c: not created yet (and 1 more)")
        );
        assert!(r.statuses.iter().all(|s| s.compliance_state == Pending));
    }

    #[test]
    fn stale_message_names_generations() {
        let r = roll_up(
            false,
            &[
                obs(KIND_GIT_REPOSITORY, "c", vec![ready_true()]),
                Observed {
                    generation: Some(4),
                    observed_generation: Some(3),
                    ..ks("c-a", vec![ready_true()])
                },
            ],
        );
        assert_eq!(
            r.message.as_deref(),
            Some("Kustomization c-a: generation 4 not reconciled yet (last reconciled: 3)")
        );
    }

    #[test]
    fn empty_condition_message_falls_back_to_reason() {
        let r = roll_up(
            false,
            &[obs(
                KIND_OCI_REPOSITORY,
                "c",
                vec![cond(READY, "False", "OCIPullFailed", " ")],
            )],
        );
        assert_eq!(r.message.as_deref(), Some("OCIRepository c: OCIPullFailed"));
    }

    #[test]
    fn statuses_are_ordered_and_deduplicated() {
        let hr = |ns: &str, name: &str| Observed {
            namespace: ns.to_string(),
            ..obs(KIND_HELM_RELEASE, name, vec![ready_true()])
        };
        let mut first_redis = hr("b", "redis");
        first_redis.applied_by = Some(ObjectReference {
            name: "c-a".into(),
            namespace: "cluster-config".into(),
        });
        let r = roll_up(
            false,
            &[
                hr("b", "zeta"),
                ks("c-z", vec![ready_true()]),
                first_redis,
                hr("a", "zeta"),
                obs(KIND_GIT_REPOSITORY, "c", vec![ready_true()]),
                ks("c-a", vec![ready_true()]),
                hr("b", "redis"),
            ],
        );
        let order: Vec<(String, String, String)> = r
            .statuses
            .iter()
            .map(|s| (s.kind.clone(), s.namespace.clone(), s.name.clone()))
            .collect();
        let want = [
            (KIND_GIT_REPOSITORY, "cluster-config", "c"),
            (KIND_KUSTOMIZATION, "cluster-config", "c-a"),
            (KIND_KUSTOMIZATION, "cluster-config", "c-z"),
            (KIND_HELM_RELEASE, "a", "zeta"),
            (KIND_HELM_RELEASE, "b", "redis"),
            (KIND_HELM_RELEASE, "b", "zeta"),
        ]
        .map(|(k, ns, n)| (k.to_string(), ns.to_string(), n.to_string()));
        assert_eq!(order, want);
        assert_eq!(
            r.statuses[4].applied_by.as_ref().map(|a| a.name.as_str()),
            Some("c-a"),
            "the caller's first entry for a duplicate wins"
        );
    }

    #[test]
    fn object_status_copies_conditions() {
        let o = obs(
            KIND_KUSTOMIZATION,
            "c-a",
            vec![ready_true(), cond(RECONCILING, "False", "", "")],
        );
        let s = object_status(&o);
        assert_eq!(s.name, "c-a");
        assert_eq!(s.namespace, "cluster-config");
        assert_eq!(s.kind, KIND_KUSTOMIZATION);
        assert_eq!(s.compliance_state, Compliant);
        assert_eq!(
            s.status_conditions,
            vec![
                StatusCondition {
                    type_: READY.into(),
                    status: "True".into(),
                    reason: Some("ReconciliationSucceeded".into()),
                    message: Some("Applied revision: main@sha1:abc".into()),
                    last_transition_time: Some(TS.into()),
                },
                StatusCondition {
                    type_: RECONCILING.into(),
                    status: "False".into(),
                    reason: None,
                    message: None,
                    last_transition_time: Some(TS.into()),
                },
            ]
        );
        // Azure's wire shape: the state is spelled with its hyphen.
        let failing = obs(
            KIND_KUSTOMIZATION,
            "c-b",
            vec![cond(READY, "False", "BuildFailed", "x")],
        );
        let wire = serde_json::to_value(object_status(&failing)).unwrap();
        assert_eq!(wire["complianceState"], "Non-Compliant");
    }

    fn meta(name: &str) -> serde_json::Value {
        json!({
            "name": name,
            "namespace": "cluster-config",
            "generation": 3,
        })
    }

    fn source_status() -> serde_json::Value {
        json!({
            "observedGeneration": 3,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Succeeded",
                 "message": "stored artifact", "lastTransitionTime": TS, "observedGeneration": 3}
            ],
            "artifact": {
                "revision": "main@sha1:0123456789abcdef0123456789abcdef01234567",
                "lastUpdateTime": "2026-11-25T19:59:00Z",
                "digest": "sha256:00"
            }
        })
    }

    #[test]
    fn from_git_repository_reads_status_and_artifact() {
        let o: GitRepository = serde_json::from_value(json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": meta("cluster-config"),
            "spec": {"url": "https://github.com/x/y", "interval": "10m0s"},
            "status": source_status(),
        }))
        .unwrap();
        let seen = Observed::from_git_repository(&o);
        assert_eq!(seen.kind, KIND_GIT_REPOSITORY);
        assert_eq!(seen.name, "cluster-config");
        assert_eq!(seen.namespace, "cluster-config");
        assert!(seen.exists);
        assert!(!seen.suspended);
        assert!(!seen.deleting);
        assert_eq!(seen.generation, Some(3));
        assert_eq!(seen.observed_generation, Some(3));
        assert_eq!(seen.conditions.len(), 1);
        assert_eq!(seen.conditions[0].observed_generation, Some(3));
        assert_eq!(
            seen.artifact_revision.as_deref(),
            Some("main@sha1:0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(
            seen.artifact_updated_at.as_deref(),
            Some("2026-11-25T19:59:00Z")
        );
        assert_eq!(object_state(&seen), Compliant);
    }

    #[test]
    fn from_bucket_and_oci_repository_flags() {
        let mut m = meta("cluster-config");
        m["deletionTimestamp"] = json!(TS);
        let b: Bucket = serde_json::from_value(json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "Bucket",
            "metadata": m,
            "spec": {"bucketName": "b", "endpoint": "s3.example.com", "interval": "1m"},
            "status": source_status(),
        }))
        .unwrap();
        let seen = Observed::from_bucket(&b);
        assert_eq!(seen.kind, KIND_BUCKET);
        assert!(seen.deleting);
        assert_eq!(object_state(&seen), Pending);

        let oci: OCIRepository = serde_json::from_value(json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "OCIRepository",
            "metadata": meta("cluster-config"),
            "spec": {"url": "oci://ghcr.io/x/y", "interval": "1m", "suspend": true},
        }))
        .unwrap();
        let seen = Observed::from_oci_repository(&oci);
        assert_eq!(seen.kind, KIND_OCI_REPOSITORY);
        assert!(seen.suspended);
        assert_eq!(seen.observed_generation, None);
        assert!(seen.conditions.is_empty());
        assert_eq!(seen.artifact_revision, None);
        assert_eq!(object_state(&seen), Suspended);
    }

    fn kustomization(inventory: serde_json::Value) -> Kustomization {
        serde_json::from_value(json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": meta("cluster-config-apps"),
            "spec": {
                "sourceRef": {"kind": "GitRepository", "name": "cluster-config"},
                "interval": "10m",
                "prune": true,
            },
            "status": {
                "observedGeneration": 2,
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "DependencyNotReady",
                     "message": "dependency 'cluster-config/cluster-config-infra' is not ready",
                     "lastTransitionTime": TS, "observedGeneration": 3}
                ],
                "inventory": inventory,
            }
        }))
        .unwrap()
    }

    #[test]
    fn from_kustomization_reads_status() {
        let k = kustomization(json!({"entries": []}));
        let seen = Observed::from_kustomization(&k);
        assert_eq!(seen.kind, KIND_KUSTOMIZATION);
        assert_eq!(seen.name, "cluster-config-apps");
        assert_eq!(seen.generation, Some(3));
        assert_eq!(seen.observed_generation, Some(2));
        assert_eq!(seen.conditions[0].reason, DEPENDENCY_NOT_READY);
        assert_eq!(seen.applied_by, None);
        assert_eq!(seen.helm, None);
        assert_eq!(object_state(&seen), Pending);
        assert_eq!(
            applied_by(&k),
            ObjectReference {
                name: "cluster-config-apps".into(),
                namespace: "cluster-config".into()
            }
        );
    }

    #[test]
    fn inventory_lists_only_helm_releases() {
        let k = kustomization(json!({"entries": [
            {"id": "_apps__Namespace", "v": "v1"},
            {"id": "_admin_rbac.authorization.k8s.io_ClusterRole", "v": "v1"},
            {"id": "apps_redis_helm.toolkit.fluxcd.io_HelmRelease", "v": "v2"},
            {"id": "apps_podinfo_apps_Deployment", "v": "v1"},
            {"id": "apps_redis_source.toolkit.fluxcd.io_HelmRepository", "v": "v1"},
            {"id": "apps_fake_example.com_HelmRelease", "v": "v1"},
            {"id": "_orphan_helm.toolkit.fluxcd.io_HelmRelease", "v": "v2"},
            {"id": "not-an-id", "v": "v1"},
            {"id": "monitoring_kube-prometheus-stack_helm.toolkit.fluxcd.io_HelmRelease", "v": "v2"},
            {"id": "apps_redis_helm.toolkit.fluxcd.io_HelmRelease", "v": "v2beta2"},
        ]}));
        assert_eq!(
            helm_releases_in_inventory(&k),
            vec![
                ("apps".to_string(), "redis".to_string()),
                (
                    "monitoring".to_string(),
                    "kube-prometheus-stack".to_string()
                ),
            ]
        );
    }

    #[test]
    fn inventory_absent_is_empty() {
        let mut k = kustomization(json!(null));
        assert!(helm_releases_in_inventory(&k).is_empty());
        k.status = None;
        assert!(helm_releases_in_inventory(&k).is_empty());
    }

    fn helm_release(status: serde_json::Value) -> HelmRelease {
        serde_json::from_value(json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": "redis", "namespace": "apps", "generation": 1},
            "spec": {"interval": "5m"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn from_helm_release_reads_helm_properties() {
        let hr = helm_release(json!({
            "observedGeneration": 1,
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "UpgradeFailed",
                 "message": "Helm upgrade failed: timed out", "lastTransitionTime": TS},
                {"type": "Released", "status": "False", "reason": "UpgradeFailed",
                 "message": "Helm upgrade failed: timed out", "lastTransitionTime": TS}
            ],
            "history": [
                {"version": 4, "chartName": "redis", "chartVersion": "18.1.0", "status": "failed"},
                {"version": 3, "chartName": "redis", "chartVersion": "18.0.0", "status": "superseded"}
            ],
            "failures": 5,
            "installFailures": 1,
            "upgradeFailures": 4,
            "helmChart": "flux-system/apps-redis",
        }));
        let by = ObjectReference {
            name: "cluster-config-apps".into(),
            namespace: "cluster-config".into(),
        };
        let seen = Observed::from_helm_release(&hr, by.clone());
        assert_eq!(seen.kind, KIND_HELM_RELEASE);
        assert_eq!(
            (seen.namespace.as_str(), seen.name.as_str()),
            ("apps", "redis")
        );
        assert_eq!(seen.applied_by.as_ref(), Some(&by));
        assert_eq!(
            seen.helm,
            Some(HelmReleaseProperties {
                last_revision_applied: Some(4),
                helm_chart_ref: Some(ObjectReference {
                    name: "apps-redis".into(),
                    namespace: "flux-system".into()
                }),
                failure_count: Some(5),
                install_failure_count: Some(1),
                upgrade_failure_count: Some(4),
            })
        );
        let status = object_status(&seen);
        assert_eq!(status.compliance_state, NonCompliant);
        assert_eq!(status.applied_by, Some(by));
        assert_eq!(status.helm_release_properties, seen.helm);
        assert_eq!(status.status_conditions.len(), 2);
    }

    #[test]
    fn helm_release_without_status_still_has_properties() {
        let hr = helm_release(json!(null));
        let seen = Observed::from_helm_release(&hr, ObjectReference::default());
        assert_eq!(seen.helm, Some(HelmReleaseProperties::default()));
        assert_eq!(object_state(&seen), Unknown);
    }

    #[test]
    fn helm_chart_ref_parsing() {
        assert_eq!(
            parse_helm_chart_ref("apps-redis", "apps"),
            Some(ObjectReference {
                name: "apps-redis".into(),
                namespace: "apps".into()
            })
        );
        assert_eq!(
            parse_helm_chart_ref("flux-system/apps-redis", "apps").map(|r| r.namespace),
            Some("flux-system".to_string())
        );
        assert_eq!(parse_helm_chart_ref("flux-system/", "apps"), None);
    }
}

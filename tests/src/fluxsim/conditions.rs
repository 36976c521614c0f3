//! Status conditions as Flux writes them (`metav1.Condition` with every required field), kept
//! as JSON so that whatever else Flux-shaped tools put in a status survives our writes.

use serde_json::{json, Map, Value};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

pub const PROGRESSING: &str = "Progressing";
pub const PROGRESSING_WITH_RETRY: &str = "ProgressingWithRetry";
pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
pub const ARTIFACT_FAILED: &str = "ArtifactFailed";

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The status of a fetched object as a JSON map (empty when it has none).
pub fn status_map(status: Option<&Value>) -> Map<String, Value> {
    status
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Takes the conditions out of the status for editing; [`put`] puts them back.
fn take(status: &mut Map<String, Value>) -> Vec<Value> {
    match status.remove("conditions") {
        Some(Value::Array(list)) => list,
        _ => Vec::new(),
    }
}

fn put(status: &mut Map<String, Value>, mut conditions: Vec<Value>) {
    sort(&mut conditions);
    status.insert("conditions".to_string(), Value::Array(conditions));
}

pub fn get<'a>(status: &'a Map<String, Value>, type_: &str) -> Option<&'a Value> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

pub fn has_status(status: &Map<String, Value>, type_: &str, value: &str) -> bool {
    get(status, type_).is_some_and(|c| c["status"] == value)
}

/// Sets a condition; like Flux, `lastTransitionTime` only moves when the status flips.
pub fn set(
    status: &mut Map<String, Value>,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    generation: i64,
) {
    let mut conditions = take(status);
    let previous = conditions.iter().position(|c| c["type"] == type_);
    let transition = previous
        .and_then(|i| {
            let c = &conditions[i];
            (c["status"] == value)
                .then(|| c["lastTransitionTime"].as_str().map(str::to_string))
                .flatten()
        })
        .unwrap_or_else(now);
    let mut condition = json!({
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    });
    // The CRDs require a non-negative observedGeneration on conditions.
    if generation >= 0 {
        condition["observedGeneration"] = json!(generation);
    }
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
    put(status, conditions);
}

pub fn remove(status: &mut Map<String, Value>, type_: &str) {
    let mut conditions = take(status);
    conditions.retain(|c| c["type"] != type_);
    put(status, conditions);
}

/// Flux lists the summary conditions first (Ready, then the kstatus "abnormal" ones).
fn sort(conditions: &mut [Value]) {
    let rank = |c: &Value| match c["type"].as_str() {
        Some(READY) => 0,
        Some(RECONCILING) => 1,
        Some(STALLED) => 2,
        _ => 3,
    };
    conditions.sort_by_key(rank);
}

/// The reconciliation is under way: Reconciling=True and, unless the object is already Ready,
/// Ready=Unknown, both with `Progressing`.
pub fn progressing(status: &mut Map<String, Value>, message: &str, generation: i64) {
    set(
        status,
        RECONCILING,
        "True",
        PROGRESSING,
        message,
        generation,
    );
    set(status, READY, "Unknown", PROGRESSING, message, generation);
}

/// A failed attempt: Ready=False; a Reconciling condition left from the attempt stays, with
/// `ProgressingWithRetry`, as Flux's status finalisation does.
pub fn failed(status: &mut Map<String, Value>, reason: &str, message: &str, generation: i64) {
    set(status, READY, "False", reason, message, generation);
    if let Some(previous) = get(status, RECONCILING).cloned() {
        let kept = previous["message"].as_str().unwrap_or(message).to_string();
        set(
            status,
            RECONCILING,
            "True",
            PROGRESSING_WITH_RETRY,
            &kept,
            generation,
        );
    }
    remove(status, STALLED);
}

/// Controllers that mark every attempt as Reconciling (source-controller, helm-controller)
/// show a failed one as still reconciling, with retries.
pub fn retrying(status: &mut Map<String, Value>, message: &str, generation: i64) {
    set(
        status,
        RECONCILING,
        "True",
        PROGRESSING_WITH_RETRY,
        message,
        generation,
    );
}

/// What Flux's status finalisation does for a suspended object: record the handled request
/// and, when the object is Ready, mark its generation observed.
pub fn suspended(status: &mut Map<String, Value>, generation: i64) {
    if has_status(status, READY, "True") {
        remove(status, RECONCILING);
        status.insert("observedGeneration".to_string(), json!(generation));
    }
}

/// The outcome of a successful reconciliation: Ready=True, the transient conditions gone.
pub fn succeeded(status: &mut Map<String, Value>, reason: &str, message: &str, generation: i64) {
    set(status, READY, "True", reason, message, generation);
    remove(status, RECONCILING);
    remove(status, STALLED);
}

/// A merge patch that turns `old` into `new` at the top level of the status (keys that
/// disappeared are nulled, everything else is replaced wholesale).
pub fn status_patch(old: &Map<String, Value>, new: &Map<String, Value>) -> Option<Value> {
    if old == new {
        return None;
    }
    let mut patch = new.clone();
    for k in old.keys() {
        if !new.contains_key(k) {
            patch.insert(k.clone(), Value::Null);
        }
    }
    Some(json!({ "status": patch }))
}

//! Server-side apply and managed-fields tracking, following the semantics of
//! structured-merge-diff as the kube-apiserver uses it:
//!
//! * A field set is a set of *member* paths; a path is a list of encoded
//!   elements (`f:name`, `k:{"name":"a"}`, `v:"x"`). Scalars, atomic lists and
//!   atomic maps are members; granular maps are not (only their children);
//!   items of set/map lists are members and their children are tracked too.
//! * Managers are keyed by (manager, operation, subresource) for Apply and
//!   additionally by apiVersion for Update, as `BuildManagerIdentifier` does.
//! * Apply: merge the config into live, replace the applier's set, prune what
//!   the applier stopped applying unless someone else owns it, then detect
//!   conflicts on changed fields owned by others.
//! * Update: changed fields move to the updater; removed fields leave all
//!   managers; managers owning nothing disappear.
//!
//! Status handling assumes every kind with a `status` has the status
//! subresource (true of Flux CRDs and the built-ins emulated): on the main
//! resource `.status` is neither applied nor owned; on `/status` only
//! `.status` is.
//!
//! Also emulated: `kubectl` (and only that manager name) taking over fields
//! from a client-side apply without conflicts when they still hold their
//! last-applied values, keeping that annotation in sync, attributing fields of
//! untracked objects to `before-first-apply`, and keeping old timestamps on
//! no-op writes.
//!
//! Update entries are capped at 10: the oldest merge into `ancient-changes`.
//!
//! Not emulated: version conversion of managed fields recorded at other apiVersions (paths
//! are used as-is, which is exact while versions share a schema).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::apiserver::schema::{ListType, TypeInfo};

type Path = Vec<String>;
type FieldSet = BTreeSet<Path>;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Metadata fields the apiserver never records ownership of.
const STRIPPED_META: &[&str] = &[
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The manager's name, e.g. `kubectl-client-side-apply`.
    pub manager: String,
    /// The conflicting field, e.g. `.spec.replicas` or
    /// `.spec.containers[name="app"].image`.
    pub field: String,
    /// The manager as the server prints it: `"kubectl"`,
    /// `"flux" using v1`, `"ctrl" with subresource "status" using v1`.
    pub manager_display: String,
}

impl Conflict {
    /// The `message` of the `FieldManagerConflict` status cause.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager_display)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change (the server answers 409).
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The applied configuration is malformed (the server answers 400/422).
    #[error("{0}")]
    Invalid(String),
}

const TYPED_PATCH_ERROR: &str = "failed to create typed patch object";

impl ApplyError {
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The HTTP status the real server answers with: 409 for conflicts; a
    /// configuration that does not fit the type (duplicate or missing list
    /// keys) surfaces as a plain 500 (`Error from server: failed to create
    /// typed patch object ...`, reason empty); anything else is a 400.
    pub fn status_code(&self) -> u16 {
        match self {
            ApplyError::Conflicts(_) => 409,
            ApplyError::Invalid(m) if m.starts_with(TYPED_PATCH_ERROR) => 500,
            ApplyError::Invalid(_) => 400,
        }
    }
}

fn conflicts_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager_display, c.field
        );
    }
    let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in conflicts {
        by_manager
            .entry(c.manager_display.as_str())
            .or_default()
            .push(c.field.as_str());
    }
    let mut lines = Vec::new();
    for (m, fields) in by_manager {
        lines.push(format!("conflicts with {m}:"));
        for f in fields {
            lines.push(format!("- {f}"));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

pub struct ApplyRequest<'a> {
    pub live: Option<&'a Value>,
    pub applied: &'a Value,
    pub manager: &'a str,
    pub force: bool,
    pub api_version: &'a str,
    pub types: &'a TypeInfo,
    /// RFC 3339 timestamp recorded in the applier's entry.
    pub now: &'a str,
    pub subresource: Option<&'a str>,
}

// ---------------------------------------------------------------------------
// Managers
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: String,
    time: Option<String>,
    set: FieldSet,
}

impl Entry {
    fn key(&self) -> (String, String, String, String) {
        let version = if self.operation == "Apply" {
            String::new()
        } else {
            self.api_version.clone()
        };
        (
            self.manager.clone(),
            self.operation.clone(),
            version,
            self.subresource.clone(),
        )
    }

    fn display(&self) -> String {
        let mut s = go_quote(&self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {}", go_quote(&self.subresource));
        }
        if self.operation == "Update" {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), set_to_fields_v1(&self.set));
        if !self.subresource.is_empty() {
            m.insert(
                "subresource".into(),
                Value::String(self.subresource.clone()),
            );
        }
        Value::Object(m)
    }
}

fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

type Key = (String, String, String, String);

fn decode_entries(list: Option<&Value>) -> BTreeMap<Key, Entry> {
    let mut out = BTreeMap::new();
    let Some(Value::Array(items)) = list else {
        return out;
    };
    for it in items {
        let s = |k: &str| it.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let e = Entry {
            manager: s("manager"),
            operation: s("operation"),
            api_version: s("apiVersion"),
            subresource: s("subresource"),
            time: it.get("time").and_then(Value::as_str).map(str::to_string),
            set: fields_v1_to_set(it.get("fieldsV1").unwrap_or(&Value::Null)),
        };
        out.insert(e.key(), e);
    }
    out
}

fn time_seconds(t: &Option<String>) -> i64 {
    t.as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|d| d.timestamp())
        .unwrap_or(0)
}

/// Writes the entries in the apiserver's order: operation, time, manager,
/// apiVersion, subresource.
fn encode_entries(entries: BTreeMap<Key, Entry>, obj: &mut Value) {
    let mut list: Vec<Entry> = entries
        .into_values()
        .filter(|e| !e.set.is_empty())
        .collect();
    list.sort_by(|p, q| {
        p.operation
            .cmp(&q.operation)
            .then(time_seconds(&p.time).cmp(&time_seconds(&q.time)))
            .then(p.manager.cmp(&q.manager))
            .then(p.api_version.cmp(&q.api_version))
            .then(p.subresource.cmp(&q.subresource))
    });
    let json: Vec<Value> = list.iter().map(Entry::to_json).collect();
    if let Value::Object(o) = obj {
        let meta = o
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = meta {
            if json.is_empty() {
                m.remove("managedFields");
            } else {
                m.insert("managedFields".into(), Value::Array(json));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Field sets
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A scalar, atomic list or atomic map: compared by value.
    Scalar,
    /// An item of a set or map list: identified by its key, never "modified".
    Item,
    /// A granular map or associative list. Not part of an applied set, but
    /// an Update that makes one appear owns it (the `.` markers on e.g.
    /// `f:labels` in `kubectl create` entries), and one disappearing is a
    /// removal.
    Container,
}

#[derive(Clone, Debug, PartialEq)]
struct Leaf {
    value: Value,
    kind: Kind,
}

/// The value of key field `k` of a list-map element, falling back to the
/// key's schema default so that `{port: 80}` and `{port: 80, protocol: TCP}`
/// are the same element.
fn key_value<'v>(item: &'v Value, k: &str, list: &'v TypeInfo) -> Option<&'v Value> {
    item.get(k)
        .filter(|v| !v.is_null())
        .or_else(|| list.key_default(k))
}

/// `list` is the type of the list itself (it carries keys and key defaults).
fn key_element(item: &Value, list: &TypeInfo) -> String {
    let keys = list.list_keys().unwrap_or(&[]);
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    let parts: Vec<String> = sorted
        .iter()
        .filter_map(|k| key_value(item, k, list).map(|v| format!("{}:{}", go_quote(k), v)))
        .collect();
    format!("k:{{{}}}", parts.join(","))
}

/// The path element of an item of a set or map list.
fn item_element(item: &Value, list: &TypeInfo) -> String {
    match list.list_type() {
        ListType::Map(_) => key_element(item, list),
        _ => format!("v:{item}"),
    }
}

fn collect(v: &Value, t: &TypeInfo, path: &mut Path, out: &mut BTreeMap<Path, Leaf>) {
    let mut put = |path: &Path, value: Value, kind: Kind| {
        // A map-list item is recorded as an Item before its own map is walked.
        out.entry(path.clone()).or_insert(Leaf { value, kind });
    };
    match v {
        Value::Object(m) if !t.is_atomic_map() => {
            // The object itself and metadata are never tracked (metadata is
            // in the apiserver's strip set).
            let untracked = path.is_empty() || path.as_slice() == ["f:metadata"];
            if !untracked {
                put(path, Value::Null, Kind::Container);
            }
            for (k, child) in m {
                if path.is_empty() && (k == "apiVersion" || k == "kind") {
                    continue;
                }
                if path.len() == 1 && path[0] == "f:metadata" && STRIPPED_META.contains(&k.as_str())
                {
                    continue;
                }
                path.push(format!("f:{k}"));
                collect(child, t.child(k), path, out);
                path.pop();
            }
        }
        Value::Array(items) => match t.list_type() {
            ListType::Atomic => put(path, v.clone(), Kind::Scalar),
            ListType::Set => {
                put(path, Value::Null, Kind::Container);
                for it in items {
                    path.push(format!("v:{it}"));
                    out.insert(
                        path.clone(),
                        Leaf {
                            value: it.clone(),
                            kind: Kind::Item,
                        },
                    );
                    path.pop();
                }
            }
            ListType::Map(_) => {
                put(path, Value::Null, Kind::Container);
                for it in items {
                    path.push(key_element(it, t));
                    out.insert(
                        path.clone(),
                        Leaf {
                            value: Value::Null,
                            kind: Kind::Item,
                        },
                    );
                    collect(it, t.elem(), path, out);
                    path.pop();
                }
            }
        },
        _ => put(path, v.clone(), Kind::Scalar),
    }
}

/// Every tracked node of `v`, including containers.
fn nodes(v: &Value, t: &TypeInfo) -> BTreeMap<Path, Leaf> {
    let mut out = BTreeMap::new();
    collect(v, t, &mut Vec::new(), &mut out);
    out
}

/// The set an Apply of `v` owns (`ToFieldSet`): no containers.
fn applied_set(v: &Value, t: &TypeInfo) -> FieldSet {
    nodes(v, t)
        .into_iter()
        .filter(|(_, l)| l.kind != Kind::Container)
        .map(|(p, _)| p)
        .collect()
}

fn set_to_fields_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<String, Node>,
    }
    fn render(n: &Node) -> Value {
        let mut m = Map::new();
        if n.member && !n.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, c) in &n.children {
            m.insert(k.clone(), render(c));
        }
        Value::Object(m)
    }
    let mut root = Node::default();
    for p in set {
        let mut cur = &mut root;
        for e in p {
            cur = cur.children.entry(e.clone()).or_default();
        }
        cur.member = true;
    }
    render(&root)
}

fn fields_v1_to_set(v: &Value) -> FieldSet {
    fn walk(v: &Value, path: &mut Path, out: &mut FieldSet) {
        let Value::Object(m) = v else { return };
        for (k, child) in m {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            path.push(k.clone());
            match child {
                Value::Object(cm) if cm.is_empty() => {
                    out.insert(path.clone());
                }
                _ => walk(child, path, out),
            }
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// The FieldsV1 set of every field of `obj` (as an Apply of `obj` would own).
pub fn fields_v1(obj: &Value, types: &TypeInfo) -> Value {
    set_to_fields_v1(&applied_set(obj, types))
}

/// `.spec.containers[name="a"].image`, as fieldpath.Path prints.
fn path_string(p: &[String]) -> String {
    let mut s = String::new();
    for e in p {
        if let Some(f) = e.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = e.strip_prefix("k:") {
            let parsed: Value = serde_json::from_str(k).unwrap_or(Value::Null);
            let parts: Vec<String> = parsed
                .as_object()
                .map(|m| {
                    let mut keys: Vec<&String> = m.keys().collect();
                    keys.sort();
                    keys.iter()
                        .map(|name| format!("{name}={}", m[name.as_str()]))
                        .collect()
                })
                .unwrap_or_default();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = e.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = e.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        }
    }
    s
}

/// Whether a path is excluded from tracking for this subresource (the
/// server's reset fields).
fn ignored(p: &Path, subresource: Option<&str>) -> bool {
    let is_status = p.first().map(String::as_str) == Some("f:status");
    match subresource {
        None => is_status,
        Some("status") => !is_status,
        Some(_) => false,
    }
}

struct Comparison {
    changed: FieldSet,
    removed: FieldSet,
}

fn compare(old: &Value, new: &Value, types: &TypeInfo, subresource: Option<&str>) -> Comparison {
    let a = nodes(old, types);
    let b = nodes(new, types);
    let mut changed = FieldSet::new();
    let mut removed = FieldSet::new();
    for (p, lb) in &b {
        match a.get(p) {
            None => {
                changed.insert(p.clone());
            }
            Some(la)
                if (la.kind != lb.kind)
                    || (la.kind == Kind::Scalar && !json_equal(&la.value, &lb.value)) =>
            {
                changed.insert(p.clone());
            }
            _ => {}
        }
    }
    for p in a.keys() {
        if !b.contains_key(p) {
            removed.insert(p.clone());
        }
    }
    changed.retain(|p| !ignored(p, subresource));
    removed.retain(|p| !ignored(p, subresource));
    Comparison { changed, removed }
}

fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn type_at<'t>(types: &'t TypeInfo, path: &[String]) -> &'t TypeInfo {
    let mut t = types;
    for e in path {
        t = match e.strip_prefix("f:") {
            Some(f) => t.child(f),
            None => t.elem(),
        };
    }
    t
}

/// `EnsureNamedFieldsAreMembers`: struct fields on the way to a member
/// count as members, so pruning can remove a whole emptied struct field.
fn ensure_named(set: &FieldSet, types: &TypeInfo) -> FieldSet {
    let mut out = set.clone();
    for p in set {
        for i in 1..p.len() {
            if !p[i - 1].starts_with("f:") {
                continue;
            }
            let parent = type_at(types, &p[..i - 1]);
            if parent.is_named_field(&p[i - 1][2..]) {
                out.insert(p[..i].to_vec());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Merge (apply)
// ---------------------------------------------------------------------------

fn merge(live: &Value, cfg: &Value, t: &TypeInfo) -> Value {
    match (live, cfg) {
        (Value::Object(l), Value::Object(c)) if !t.is_atomic_map() => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    // A null in an apply configuration unsets the field.
                    out.remove(k);
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, cv, t.child(k)),
                    None => strip_nulls(cv),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => match t.list_type() {
            ListType::Atomic => cfg.clone(),
            ListType::Set => Value::Array(merge_list(l, c, |v| v.to_string(), |_, r| r.clone())),
            ListType::Map(_) => {
                let elem = t.elem();
                Value::Array(merge_list(
                    l,
                    c,
                    |v| key_element(v, t),
                    |lv, rv| merge(lv, rv, elem),
                ))
            }
        },
        _ => strip_nulls(cfg),
    }
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Merges associative lists as structured-merge-diff does: items only in
/// live keep their relative position, shared and new items follow the
/// configuration's order.
fn merge_list(
    lhs: &[Value],
    rhs: &[Value],
    id: impl Fn(&Value) -> String,
    merge_item: impl Fn(&Value, &Value) -> Value,
) -> Vec<Value> {
    let lid: Vec<String> = lhs.iter().map(&id).collect();
    let rid: Vec<String> = rhs.iter().map(&id).collect();
    let lhs_by_id: BTreeMap<&String, &Value> = lid.iter().zip(lhs).collect();
    let rhs_ids: BTreeSet<&String> = rid.iter().collect();
    let mut shared: std::collections::VecDeque<&String> =
        rid.iter().filter(|r| lhs_by_id.contains_key(r)).collect();
    let mut next_shared = shared.pop_front();
    let mut merged: BTreeSet<&String> = BTreeSet::new();
    let mut out = Vec::new();
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() {
            if lid[li] == rid[ri] {
                merged.insert(&lid[li]);
                out.push(merge_item(&lhs[li], &rhs[ri]));
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            if rhs_ids.contains(&lid[li]) && next_shared.is_some_and(|n| *n != lid[li]) {
                li += 1;
                continue;
            }
        }
        if li < lhs.len() {
            if !rhs_ids.contains(&lid[li]) {
                out.push(lhs[li].clone());
                li += 1;
                continue;
            } else if merged.contains(&lid[li]) {
                li += 1;
                continue;
            }
        }
        if ri < rhs.len() {
            let pe = &rid[ri];
            merged.insert(pe);
            out.push(match lhs_by_id.get(pe) {
                Some(lv) => merge_item(lv, &rhs[ri]),
                None => merge_item(&Value::Null, &rhs[ri]),
            });
            ri += 1;
            if next_shared.is_some_and(|n| n == pe) {
                next_shared = shared.pop_front();
            }
        }
    }
    out
}

/// Removes from `v` every path in `remove` (whole subtrees).
fn remove_paths(v: &mut Value, types: &TypeInfo, path: &mut Path, remove: &FieldSet) {
    match v {
        Value::Object(m) if !types.is_atomic_map() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                path.push(format!("f:{k}"));
                if remove.contains(path) {
                    m.remove(&k);
                } else if let Some(child) = m.get_mut(&k) {
                    remove_paths(child, types.child(&k), path, remove);
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            let list_type = types.list_type();
            if *list_type == ListType::Atomic {
                return;
            }
            let elem = types.elem();
            let mut kept = Vec::new();
            for mut it in std::mem::take(items) {
                path.push(item_element(&it, types));
                if !remove.contains(path) {
                    remove_paths(&mut it, elem, path, remove);
                    kept.push(it);
                }
                path.pop();
            }
            *items = kept;
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Apply
// ---------------------------------------------------------------------------

fn validate_lists(v: &Value, t: &TypeInfo, path: &mut Path) -> Result<(), ApplyError> {
    match v {
        Value::Object(m) if !t.is_atomic_map() => {
            for (k, c) in m {
                path.push(format!("f:{k}"));
                validate_lists(c, t.child(k), path)?;
                path.pop();
            }
        }
        Value::Array(items) => match t.list_type() {
            ListType::Atomic => {}
            ListType::Set => {
                let mut seen = BTreeSet::new();
                for it in items {
                    if it.is_object() || it.is_array() {
                        return Err(ApplyError::Invalid(format!(
                            "{}: expected scalar elements in a set, got {it}",
                            path_string(path)
                        )));
                    }
                    if !seen.insert(it.to_string()) {
                        return Err(ApplyError::Invalid(format!(
                            "{}: duplicate entries for key [={it}]",
                            path_string(path)
                        )));
                    }
                }
            }
            ListType::Map(keys) => {
                let mut seen = BTreeSet::new();
                for (i, it) in items.iter().enumerate() {
                    if !it.is_object() {
                        return Err(ApplyError::Invalid(format!(
                            "{}: element {i}: expected map, got {it}",
                            path_string(path)
                        )));
                    }
                    for k in keys {
                        if key_value(it, k, t).is_none() {
                            return Err(ApplyError::Invalid(format!(
                                "{}: element {i}: associative list with keys has an element that omits key field {} (and doesn't have default value)",
                                path_string(path),
                                go_quote(k)
                            )));
                        }
                    }
                    let pe = key_element(it, t);
                    path.push(pe.clone());
                    if !seen.insert(pe) {
                        let msg = format!(
                            "{}: duplicate entries for key {}",
                            path_string(&path[..path.len() - 1]),
                            path_string(&path[path.len() - 1..])
                        );
                        return Err(ApplyError::Invalid(msg));
                    }
                    validate_lists(it, t.elem(), path)?;
                    path.pop();
                }
            }
        },
        _ => {}
    }
    Ok(())
}

/// Restricts an applied configuration to what the endpoint may change.
fn scope_config(applied: &Value, subresource: Option<&str>) -> Value {
    let mut cfg = applied.clone();
    if let Value::Object(m) = &mut cfg {
        match subresource {
            None => {
                m.remove("status");
            }
            Some("status") => {
                let meta = m.get("metadata").cloned().unwrap_or(Value::Null);
                let mut id = Map::new();
                for k in ["name", "namespace"] {
                    if let Some(v) = meta.get(k) {
                        id.insert(k.to_string(), v.clone());
                    }
                }
                m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "status"));
                m.insert("metadata".into(), Value::Object(id));
            }
            Some(_) => {}
        }
    }
    cfg
}

fn without_managed_fields(v: &Value) -> Value {
    let mut out = v.clone();
    if let Some(Value::Object(m)) = out.get_mut("metadata") {
        m.remove("managedFields");
    }
    out
}

/// Returns the merged object with metadata.managedFields updated. The server
/// then strips/keeps status per subresource rules, validates, bumps
/// generation etc.
pub fn apply(req: ApplyRequest) -> Result<Value, ApplyError> {
    let ApplyRequest {
        live,
        applied,
        manager,
        force,
        api_version,
        types,
        now,
        subresource,
    } = req;
    if !applied.is_object() {
        return Err(ApplyError::Invalid(
            "the applied configuration must be an object".into(),
        ));
    }
    let mf = applied.get("metadata").and_then(|m| m.get("managedFields"));
    if mf.is_some_and(|v| !v.is_null() && v != &Value::Array(Vec::new())) {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".into(),
        ));
    }
    validate_lists(applied, types, &mut Vec::new()).map_err(|e| {
        let meta = |k: &str| {
            applied
                .get("metadata")
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.to_string()),
        };
        let kind = applied.get("kind").and_then(Value::as_str).unwrap_or("");
        ApplyError::Invalid(format!(
            "{TYPED_PATCH_ERROR} ({}/{}; {group}/{version}, Kind={kind}): {}",
            meta("namespace"),
            meta("name"),
            e.message()
        ))
    })?;

    let sub = subresource.unwrap_or("").to_string();
    let live_clean = live
        .map(without_managed_fields)
        .unwrap_or_else(|| Value::Object(Map::new()));
    let mut managers = decode_entries(
        live.and_then(|l| l.get("metadata"))
            .and_then(|m| m.get("managedFields")),
    );
    if managers.is_empty() {
        if let Some(l) = live {
            // Objects that predate field tracking get their existing fields
            // attributed to a synthetic manager, so the first apply can conflict.
            let set: FieldSet = nodes(&live_clean, types)
                .into_keys()
                .filter(|p| !ignored(p, subresource))
                .collect();
            let e = Entry {
                manager: BEFORE_FIRST_APPLY.into(),
                operation: "Update".into(),
                api_version: l
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or(api_version)
                    .to_string(),
                subresource: sub.clone(),
                time: Some(now.to_string()),
                set,
            };
            if !e.set.is_empty() {
                managers.insert(e.key(), e);
            }
        }
    }

    let cfg = scope_config(applied, subresource);
    let mut merged = merge(&live_clean, &cfg, types);

    let new_set: FieldSet = applied_set(&cfg, types)
        .into_iter()
        .filter(|p| !ignored(p, subresource))
        .collect();
    let me = Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version: api_version.to_string(),
        subresource: sub,
        time: Some(now.to_string()),
        set: new_set,
    };
    let my_key = me.key();
    let last_set = managers
        .get(&my_key)
        .map(|e| e.set.clone())
        .unwrap_or_default();
    managers.insert(my_key.clone(), me);

    // Prune what the applier stopped applying, unless someone still owns it.
    if !last_set.is_empty() {
        let mut owned = FieldSet::new();
        for e in managers.values() {
            owned.extend(e.set.iter().cloned());
        }
        let owned = ensure_named(&owned, types);
        let mut remove: FieldSet = ensure_named(&last_set, types)
            .difference(&owned)
            .cloned()
            .collect();
        remove.remove(&vec!["f:metadata".to_string()]);
        remove_paths(&mut merged, types, &mut Vec::new(), &remove);
    }

    let cmp = compare(&live_clean, &merged, types, subresource);
    let mut conflicts: Vec<(Path, Conflict)> = Vec::new();
    for (k, e) in &managers {
        if *k == my_key {
            continue;
        }
        for p in e.set.intersection(&cmp.changed) {
            conflicts.push((
                p.clone(),
                Conflict {
                    manager: e.manager.clone(),
                    field: path_string(p),
                    manager_display: e.display(),
                },
            ));
        }
    }
    let mut force = force;
    if !force && !conflicts.is_empty() {
        // `kubectl apply --server-side` takes over fields that still hold
        // their client-side last-applied values without conflicts.
        let allowed = if manager == "kubectl" {
            live.and_then(|l| allowed_from_last_applied(l, types))
        } else {
            None
        };
        let mut remaining: Vec<Conflict> = conflicts
            .iter()
            .filter(|(p, _)| !allowed.as_ref().is_some_and(|a| a.contains(p)))
            .map(|(_, c)| c.clone())
            .collect();
        if !remaining.is_empty() {
            remaining.sort_by(|a, b| {
                a.manager_display
                    .cmp(&b.manager_display)
                    .then(a.field.cmp(&b.field))
            });
            return Err(ApplyError::Conflicts(remaining));
        }
        force = true;
    }
    for (k, e) in managers.iter_mut() {
        if *k == my_key {
            continue;
        }
        if force {
            e.set.retain(|p| !cmp.changed.contains(p));
        }
        for p in &cmp.removed {
            e.set.remove(p);
        }
    }

    if manager == "kubectl" {
        sync_last_applied(&mut merged, applied);
    }
    encode_entries(managers, &mut merged);
    if let Some(l) = live {
        keep_timestamps_of_noop(l, &mut merged);
    }
    Ok(merged)
}

/// The apiserver's IgnoreManagedFieldsTimestampsTransformer: when neither
/// the object nor the ownership changed, the old managedFields (with their
/// old times) are kept, so a no-op apply or update does not bump the
/// resourceVersion and wake every watcher.
fn keep_timestamps_of_noop(old: &Value, new: &mut Value) {
    if without_managed_fields(old) != without_managed_fields(new) {
        return;
    }
    let strip = |v: &Value| -> BTreeMap<Key, (String, FieldSet)> {
        decode_entries(v.get("metadata").and_then(|m| m.get("managedFields")))
            .into_iter()
            .map(|(k, e)| (k, (e.api_version, e.set)))
            .collect()
    };
    if strip(old) != strip(new) {
        return;
    }
    let old_mf = old
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .cloned();
    if let Some(Value::Object(m)) = new.get_mut("metadata") {
        match old_mf {
            Some(mf) => {
                m.insert("managedFields".into(), mf);
            }
            None => {
                m.remove("managedFields");
            }
        }
    }
}

/// `kubectl` server-side applies keep an existing client-side
/// last-applied annotation in sync, as the apiserver's lastAppliedUpdater does.
fn sync_last_applied(obj: &mut Value, applied: &Value) {
    let has = obj
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(LAST_APPLIED))
        .is_some();
    if !has {
        return;
    }
    let mut cfg = applied.clone();
    if let Some(Value::Object(a)) = cfg
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
    {
        a.remove(LAST_APPLIED);
    }
    let text = serde_json::to_string(&cfg).unwrap_or_default();
    if let Some(Value::Object(a)) = obj
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
    {
        a.insert(LAST_APPLIED.into(), Value::String(text));
    }
}

/// Fields of the last-applied-configuration annotation whose values still
/// match the live object (the apiserver's lastAppliedManager).
fn allowed_from_last_applied(live: &Value, types: &TypeInfo) -> Option<FieldSet> {
    let text = live
        .get("metadata")?
        .get("annotations")?
        .get(LAST_APPLIED)?
        .as_str()?;
    if text.is_empty() {
        return None;
    }
    let last: Value = serde_json::from_str(text).ok()?;
    let live_nodes = nodes(&without_managed_fields(live), types);
    let last_nodes = nodes(&last, types);
    let modified: FieldSet = last_nodes
        .iter()
        .filter(|(p, l)| {
            live_nodes.get(*p).is_some_and(|lv| {
                l.kind != lv.kind || (l.kind == Kind::Scalar && !json_equal(&l.value, &lv.value))
            })
        })
        .map(|(p, _)| p.clone())
        .collect();
    Some(
        applied_set(&last, types)
            .difference(&modified)
            .cloned()
            .collect(),
    )
}

/// For create/update/patch (non-apply) operations: compute the new
/// managedFields of `new` given `old` (None for create): fields that changed
/// are moved to `manager` with operation Update; returns `new` with
/// managedFields set.
pub fn record_update(
    old: Option<&Value>,
    new: Value,
    manager: &str,
    api_version: &str,
    types: &TypeInfo,
    now: &str,
    subresource: Option<&str>,
) -> Value {
    let live_entries = || {
        decode_entries(
            old.and_then(|o| o.get("metadata"))
                .and_then(|m| m.get("managedFields")),
        )
    };
    let incoming = new.get("metadata").and_then(|m| m.get("managedFields"));
    // Clients may set managedFields directly on the main resource; `[{}]`
    // resets them; an absent or empty list keeps the live ones.
    let mut managers = if subresource.is_some() {
        live_entries()
    } else {
        match incoming {
            Some(Value::Array(a)) if a.len() == 1 && a[0] == Value::Object(Map::new()) => {
                BTreeMap::new()
            }
            Some(Value::Array(a)) if !a.is_empty() => decode_entries(incoming),
            _ => live_entries(),
        }
    };

    let old_clean = old
        .map(without_managed_fields)
        .unwrap_or_else(|| Value::Object(Map::new()));
    let mut out = without_managed_fields(&new);
    let cmp = compare(&old_clean, &out, types, subresource);

    let me = Entry {
        manager: manager.to_string(),
        operation: "Update".into(),
        api_version: api_version.to_string(),
        subresource: subresource.unwrap_or("").to_string(),
        time: Some(now.to_string()),
        set: FieldSet::new(),
    };
    let my_key = me.key();
    for e in managers.values_mut() {
        e.set
            .retain(|p| !cmp.changed.contains(p) && !cmp.removed.contains(p));
    }
    if !cmp.changed.is_empty() {
        let entry = managers.entry(my_key).or_insert(me);
        entry.set.extend(cmp.changed.iter().cloned());
        entry.time = Some(now.to_string());
        entry.api_version = api_version.to_string();
    }
    managers.retain(|_, e| !e.set.is_empty());
    cap_update_managers(&mut managers);
    encode_entries(managers, &mut out);
    if let Some(o) = old {
        keep_timestamps_of_noop(o, &mut out);
    }
    out
}

const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";

/// The apiserver's capManagersManager: beyond 10 Update entries, the oldest
/// are merged into an `ancient-changes` entry per apiVersion.
fn cap_update_managers(managers: &mut BTreeMap<Key, Entry>) {
    let mut updaters: Vec<Key> = managers
        .iter()
        .filter(|(_, e)| e.operation == "Update")
        .map(|(k, _)| k.clone())
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort_by(|a, b| {
        let ta = managers.get(a).map(|e| time_seconds(&e.time)).unwrap_or(0);
        let tb = managers.get(b).map(|e| time_seconds(&e.time)).unwrap_or(0);
        ta.cmp(&tb).then(a.cmp(b))
    });
    let mut first_of_version: BTreeMap<String, Key> = BTreeMap::new();
    let mut length = updaters.len();
    for key in updaters {
        if length <= MAX_UPDATE_MANAGERS {
            break;
        }
        let Some(entry) = managers.get(&key).cloned() else {
            continue;
        };
        let version = entry.api_version.clone();
        let bucket_key: Key = (
            ANCIENT_CHANGES.to_string(),
            "Update".to_string(),
            version.clone(),
            String::new(),
        );
        let Some(first) = first_of_version.get(&version).cloned() else {
            first_of_version.insert(version, key);
            continue;
        };
        if key == bucket_key {
            continue;
        }
        if !managers.contains_key(&bucket_key) {
            if let Some(f) = managers.remove(&first) {
                managers.insert(
                    bucket_key.clone(),
                    Entry {
                        manager: ANCIENT_CHANGES.to_string(),
                        subresource: String::new(),
                        ..f
                    },
                );
                length -= 1;
            }
        }
        managers.remove(&key);
        length -= 1;
        if let Some(b) = managers.get_mut(&bucket_key) {
            b.set.extend(entry.set);
            b.time = entry.time;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-01T00:01:00Z";

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "c", "namespace": "ns"}, "data": data})
    }

    fn cm_types() -> TypeInfo {
        TypeInfo::builtin("v1", "ConfigMap")
    }

    fn do_apply(
        live: Option<&Value>,
        applied: &Value,
        manager: &str,
        force: bool,
        types: &TypeInfo,
    ) -> Result<Value, ApplyError> {
        apply(ApplyRequest {
            live,
            applied,
            manager,
            force,
            api_version: "v1",
            types,
            now: T1,
            subresource: None,
        })
    }

    fn entries(obj: &Value) -> Vec<Value> {
        obj["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
        obj["metadata"]["managedFields"]
            .as_array()?
            .iter()
            .find(|e| e["manager"] == manager)
    }

    #[test]
    fn apply_creates_with_apply_entry() {
        let t = cm_types();
        let cfg = cm(json!({"a": "1"}));
        let out = do_apply(None, &cfg, "flux", false, &t).unwrap();
        assert_eq!(out["data"], json!({"a": "1"}));
        assert_eq!(
            entries(&out),
            vec![
                json!({"manager": "flux", "operation": "Apply", "apiVersion": "v1",
                "time": T1, "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}})
            ]
        );
    }

    #[test]
    fn identity_fields_never_owned() {
        let t = cm_types();
        let mut cfg = cm(json!({}));
        cfg["metadata"]["uid"] = json!("u");
        cfg["metadata"]["resourceVersion"] = json!("5");
        cfg["metadata"]["generation"] = json!(1);
        cfg["metadata"]["creationTimestamp"] = json!(T0);
        cfg["metadata"]["labels"] = json!({"x": "y"});
        let fv = fields_v1(&cfg, &t);
        assert_eq!(fv, json!({"f:metadata": {"f:labels": {"f:x": {}}}}));
        // Nothing but identity: the applier's entry disappears.
        let out = do_apply(None, &cm(json!({})), "m", false, &t).unwrap();
        assert!(out["metadata"].get("managedFields").is_none(), "{out}");
    }

    #[test]
    fn stopping_to_apply_a_field_removes_it() {
        let t = cm_types();
        let live = do_apply(None, &cm(json!({"a": "1", "b": "2"})), "m", false, &t).unwrap();
        let out = do_apply(Some(&live), &cm(json!({"a": "1"})), "m", false, &t).unwrap();
        assert_eq!(out["data"], json!({"a": "1"}));
        assert_eq!(
            entry(&out, "m").unwrap()["fieldsV1"],
            json!({"f:data": {"f:a": {}}})
        );
        // Stop applying data entirely: the field goes too, not just its keys.
        let mut bare = cm(Value::Null);
        bare.as_object_mut().unwrap().remove("data");
        let out = do_apply(Some(&out), &bare, "m", false, &t).unwrap();
        assert!(out.get("data").is_none(), "{out}");
        assert!(out["metadata"].get("managedFields").is_none(), "{out}");
        assert_eq!(out["metadata"]["name"], "c");
    }

    #[test]
    fn removed_field_kept_when_another_manager_owns_it() {
        let t = cm_types();
        let live = do_apply(None, &cm(json!({"a": "1", "b": "2"})), "m1", false, &t).unwrap();
        let live = do_apply(Some(&live), &cm(json!({"b": "2"})), "m2", false, &t).unwrap();
        let b_owners: Vec<String> = entries(&live)
            .iter()
            .filter(|e| e["fieldsV1"]["f:data"].get("f:b").is_some())
            .map(|e| e["manager"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(b_owners, vec!["m1", "m2"]);
        let out = do_apply(Some(&live), &cm(json!({"a": "1"})), "m1", false, &t).unwrap();
        assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
        assert_eq!(
            entry(&out, "m1").unwrap()["fieldsV1"],
            json!({"f:data": {"f:a": {}}})
        );
        assert_eq!(
            entry(&out, "m2").unwrap()["fieldsV1"],
            json!({"f:data": {"f:b": {}}})
        );
    }

    #[test]
    fn two_appliers_different_values_conflict() {
        let t = cm_types();
        let live = do_apply(None, &cm(json!({"a": "1"})), "m1", false, &t).unwrap();
        let err = do_apply(Some(&live), &cm(json!({"a": "2"})), "m2", false, &t).unwrap_err();
        let ApplyError::Conflicts(c) = &err else {
            panic!("{err}")
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].manager, "m1");
        assert_eq!(c[0].field, ".data.a");
        assert_eq!(c[0].cause_message(), "conflict with \"m1\"");
        assert_eq!(err.status_code(), 409);
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"m1\": .data.a"
        );
    }

    #[test]
    fn force_moves_ownership() {
        let t = cm_types();
        let live = do_apply(None, &cm(json!({"a": "1", "b": "1"})), "m1", false, &t).unwrap();
        let out = do_apply(Some(&live), &cm(json!({"a": "2"})), "m2", true, &t).unwrap();
        assert_eq!(out["data"], json!({"a": "2", "b": "1"}));
        assert_eq!(
            entry(&out, "m1").unwrap()["fieldsV1"],
            json!({"f:data": {"f:b": {}}})
        );
        assert_eq!(
            entry(&out, "m2").unwrap()["fieldsV1"],
            json!({"f:data": {"f:a": {}}})
        );
        // m1 reapplies a=1 without force: now m2 owns it, conflict.
        let err = do_apply(
            Some(&out),
            &cm(json!({"a": "1", "b": "1"})),
            "m1",
            false,
            &t,
        )
        .unwrap_err();
        assert!(matches!(err, ApplyError::Conflicts(ref c) if c[0].manager == "m2"));
    }

    #[test]
    fn same_value_is_shared_ownership() {
        let t = cm_types();
        let live = do_apply(None, &cm(json!({"a": "1"})), "m1", false, &t).unwrap();
        let out = do_apply(Some(&live), &cm(json!({"a": "1"})), "m2", false, &t).unwrap();
        assert_eq!(
            entry(&out, "m1").unwrap()["fieldsV1"],
            json!({"f:data": {"f:a": {}}})
        );
        assert_eq!(
            entry(&out, "m2").unwrap()["fieldsV1"],
            json!({"f:data": {"f:a": {}}})
        );
    }

    #[test]
    fn update_manager_fields_conflict_with_apply() {
        let t = TypeInfo::builtin("apps/v1", "Deployment");
        let d = |r: i64| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "ns"}, "spec": {"replicas": r}})
        };
        let created = record_update(
            None,
            d(1),
            "kubectl-client-side-apply",
            "apps/v1",
            &t,
            T0,
            None,
        );
        let e = entry(&created, "kubectl-client-side-apply").unwrap();
        assert_eq!(e["operation"], "Update");
        assert_eq!(
            e["fieldsV1"],
            json!({"f:spec": {".": {}, "f:replicas": {}}})
        );
        let err = apply(ApplyRequest {
            live: Some(&created),
            applied: &d(3),
            manager: "kubectl",
            force: false,
            api_version: "apps/v1",
            types: &t,
            now: T1,
            subresource: None,
        })
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
    }

    #[test]
    fn multiple_conflicts_message() {
        let t = cm_types();
        let live = record_update(
            None,
            cm(json!({"a": "1", "b": "1"})),
            "edit",
            "v1",
            &t,
            T0,
            None,
        );
        let live = do_apply(Some(&live), &cm(json!({"c": "1"})), "other", false, &t).unwrap();
        let live = do_apply(Some(&live), &cm(json!({"d": "1"})), "other2", false, &t).unwrap();
        let live = record_update(
            Some(&live),
            {
                let mut n = live.clone();
                n["data"]["c"] = json!("1");
                n
            },
            "x",
            "v1",
            &t,
            T0,
            None,
        );
        let err = do_apply(
            Some(&live),
            &cm(json!({"a": "2", "b": "2", "c": "2"})),
            "m",
            false,
            &t,
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 3 conflicts: conflicts with \"edit\" using v1:\n- .data.a\n- .data.b\nconflicts with \"other\":\n- .data.c"
        );
    }

    #[test]
    fn status_subresource_apply_touches_only_status() {
        let t = TypeInfo::builtin("v1", "Namespace");
        let live = do_apply(
            None,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "labels": {"a": "b"}},
                    "status": {"phase": "Ignored"}}),
            "m",
            false,
            &t,
        )
        .unwrap();
        assert!(
            live.get("status").is_none(),
            "status not applied on main resource"
        );
        let cfg = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "n", "labels": {"a": "CHANGED"}},
            "spec": {"finalizers": ["x"]},
            "status": {"phase": "Active", "conditions": [{"type": "A", "status": "True"}]}});
        let out = apply(ApplyRequest {
            live: Some(&live),
            applied: &cfg,
            manager: "ctrl",
            force: false,
            api_version: "v1",
            types: &t,
            now: T1,
            subresource: Some("status"),
        })
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a": "b"}));
        assert!(out.get("spec").is_none());
        assert_eq!(out["status"]["phase"], "Active");
        let e = entry(&out, "ctrl").unwrap();
        assert_eq!(e["subresource"], "status");
        assert_eq!(
            e["fieldsV1"],
            json!({"f:status": {"f:phase": {}, "f:conditions": {"k:{\"type\":\"A\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
        );
        assert!(entry(&out, "m").unwrap().get("subresource").is_none());
    }

    #[test]
    fn list_map_key_defaults_identify_elements() {
        let t = TypeInfo::builtin("v1", "Service");
        let svc = |ports: Value| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "ns"},
                "spec": {"ports": ports}})
        };
        // No protocol: accepted, keyed by the default, protocol itself not owned.
        let out = do_apply(
            None,
            &svc(json!([{"port": 80, "targetPort": 8080}])),
            "m",
            false,
            &t,
        )
        .unwrap();
        let fv = &entry(&out, "m").unwrap()["fieldsV1"];
        assert_eq!(
            fv["f:spec"]["f:ports"],
            json!({"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}, "f:targetPort": {}}})
        );
        // The live object after defaulting carries protocol: TCP; re-applying
        // without it is the same element, not a second one.
        let mut live = out.clone();
        live["spec"]["ports"][0]["protocol"] = json!("TCP");
        let out = do_apply(
            Some(&live),
            &svc(json!([{"port": 80, "targetPort": 9090}])),
            "m",
            false,
            &t,
        )
        .unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP", "targetPort": 9090}])
        );
        // Explicit TCP and omitted protocol collide as duplicates.
        let err = do_apply(
            None,
            &svc(json!([{"port": 80}, {"port": 80, "protocol": "TCP"}])),
            "m",
            false,
            &t,
        )
        .unwrap_err();
        assert!(
            err.message().contains("duplicate entries for key"),
            "{}",
            err.message()
        );
        // A key without a default is still required.
        let err = do_apply(None, &svc(json!([{"protocol": "UDP"}])), "m", false, &t).unwrap_err();
        assert!(
            err.message()
                .contains("omits key field \"port\" (and doesn't have default value)"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn list_semantics_by_type() {
        let t = TypeInfo::builtin("apps/v1", "Deployment");
        let dep = |containers: Value, finalizers: Value, tol: Value| {
            json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "ns", "finalizers": finalizers},
            "spec": {"template": {"spec": {"containers": containers, "tolerations": tol}}}})
        };
        let live = do_apply(
            None,
            &dep(
                json!([{"name": "a", "image": "a:1"}]),
                json!(["f1"]),
                json!([{"key": "k1"}]),
            ),
            "m1",
            false,
            &t,
        )
        .unwrap();
        let fv = &entry(&live, "m1").unwrap()["fieldsV1"];
        assert_eq!(fv["f:metadata"], json!({"f:finalizers": {"v:\"f1\"": {}}}));
        assert_eq!(
            fv["f:spec"]["f:template"]["f:spec"],
            json!({"f:containers": {"k:{\"name\":\"a\"}": {".": {}, "f:image": {}, "f:name": {}}},
                   "f:tolerations": {}})
        );
        let out = do_apply(
            Some(&live),
            &dep(
                json!([{"name": "b", "image": "b:1"}]),
                json!(["f2"]),
                json!([{"key": "k2"}]),
            ),
            "m2",
            false,
            &t,
        )
        .unwrap_err();
        // Atomic tolerations owned by m1 conflict as one field.
        let ApplyError::Conflicts(c) = out else {
            panic!()
        };
        assert_eq!(
            c.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(),
            vec![".spec.template.spec.tolerations"]
        );
        let out = do_apply(
            Some(&live),
            &dep(
                json!([{"name": "b", "image": "b:1"}]),
                json!(["f2"]),
                json!([{"key": "k2"}]),
            ),
            "m2",
            true,
            &t,
        )
        .unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}])
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["f1", "f2"]));
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "k2"}])
        );
        let fv1 = &entry(&out, "m1").unwrap()["fieldsV1"];
        assert!(fv1["f:spec"]["f:template"]["f:spec"]
            .get("f:tolerations")
            .is_none());
    }

    #[test]
    fn conflict_path_for_keyed_item_and_set() {
        let t = TypeInfo::builtin("apps/v1", "Deployment");
        let dep = |img: &str| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [{"name": "app", "image": img}]}}}})
        };
        let live = do_apply(None, &dep("a:1"), "m1", false, &t).unwrap();
        let err = do_apply(Some(&live), &dep("a:2"), "m2", false, &t).unwrap_err();
        let ApplyError::Conflicts(c) = err else {
            panic!()
        };
        assert_eq!(
            c[0].field,
            ".spec.template.spec.containers[name=\"app\"].image"
        );
        let p: Path = vec!["f:metadata".into(), "f:finalizers".into(), "v:\"x\"".into()];
        assert_eq!(path_string(&p), ".metadata.finalizers[=\"x\"]");
    }

    #[test]
    fn map_list_item_removed_when_no_longer_applied() {
        let t = TypeInfo::builtin("v1", "ConfigMap");
        let obj = |owners: Value| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "ownerReferences": owners}})
        };
        let o1 = json!({"apiVersion": "v1", "kind": "K", "name": "a", "uid": "1"});
        let o2 = json!({"apiVersion": "v1", "kind": "K", "name": "b", "uid": "2"});
        let live = do_apply(None, &obj(json!([o1.clone(), o2.clone()])), "m", false, &t).unwrap();
        let out = do_apply(Some(&live), &obj(json!([o2.clone()])), "m", false, &t).unwrap();
        assert_eq!(out["metadata"]["ownerReferences"], json!([o2]));
        let fv = &entry(&out, "m").unwrap()["fieldsV1"];
        assert!(fv["f:metadata"]["f:ownerReferences"]
            .get("k:{\"uid\":\"2\"}")
            .is_some());
        assert!(fv["f:metadata"]["f:ownerReferences"]
            .get("k:{\"uid\":\"1\"}")
            .is_none());
    }

    #[test]
    fn atomic_and_granular_maps() {
        let t = TypeInfo::builtin("apps/v1", "Deployment");
        let dep = |sel: Value| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {"selector": sel}})
        };
        let live = do_apply(
            None,
            &dep(json!({"matchLabels": {"a": "1"}})),
            "m1",
            false,
            &t,
        )
        .unwrap();
        assert_eq!(
            entry(&live, "m1").unwrap()["fieldsV1"],
            json!({"f:spec": {"f:selector": {}}})
        );
        // Atomic: a second applier adding a key replaces the whole map (conflict).
        let err = do_apply(
            Some(&live),
            &dep(json!({"matchLabels": {"b": "2"}})),
            "m2",
            false,
            &t,
        )
        .unwrap_err();
        assert!(matches!(err, ApplyError::Conflicts(ref c) if c[0].field == ".spec.selector"));
        // Granular labels: a second applier adds a key without conflict.
        let t = cm_types();
        let lab = |l: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": l}});
        let live = do_apply(None, &lab(json!({"a": "1"})), "m1", false, &t).unwrap();
        let out = do_apply(Some(&live), &lab(json!({"b": "2"})), "m2", false, &t).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
    }

    #[test]
    fn entries_are_per_manager_operation_subresource() {
        let t = cm_types();
        let live = do_apply(None, &cm(json!({"a": "1"})), "m", false, &t).unwrap();
        let mut next = live.clone();
        next["data"]["b"] = json!("2");
        let out = record_update(Some(&live), next, "m", "v1", &t, T1, None);
        let es = entries(&out);
        assert_eq!(es.len(), 2);
        assert_eq!(es[0]["operation"], "Apply");
        assert_eq!(es[1]["operation"], "Update");
        assert_eq!(es[1]["fieldsV1"], json!({"f:data": {"f:b": {}}}));
        assert_eq!(es[1]["time"], T1);
    }

    #[test]
    fn update_moves_changed_fields_and_drops_removed() {
        let t = cm_types();
        let live = do_apply(None, &cm(json!({"a": "1", "b": "1"})), "applier", false, &t).unwrap();
        let mut next = live.clone();
        next["data"] = json!({"a": "9"});
        let out = record_update(Some(&live), next, "editor", "v1", &t, T1, None);
        assert!(entry(&out, "applier").is_none());
        assert_eq!(
            entry(&out, "editor").unwrap()["fieldsV1"],
            json!({"f:data": {"f:a": {}}})
        );
    }

    #[test]
    fn noop_update_keeps_entries_and_time() {
        let t = cm_types();
        let created = record_update(None, cm(json!({"a": "1"})), "c", "v1", &t, T0, None);
        let out = record_update(Some(&created), created.clone(), "other", "v1", &t, T1, None);
        let es = entries(&out);
        assert_eq!(es.len(), 1);
        assert_eq!(es[0]["manager"], "c");
        assert_eq!(es[0]["time"], T0);
    }

    #[test]
    fn update_status_subresource_records_subresource_and_only_status() {
        let t = TypeInfo::builtin("v1", "Namespace");
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}, "spec": {"finalizers": ["kubernetes"]}});
        let created = record_update(None, ns.clone(), "create", "v1", &t, T0, None);
        let mut next = created.clone();
        next["status"] = json!({"phase": "Active"});
        let out = record_update(Some(&created), next, "ctrl", "v1", &t, T1, Some("status"));
        let e = entry(&out, "ctrl").unwrap();
        assert_eq!(e["subresource"], "status");
        assert_eq!(e["fieldsV1"], json!({"f:status": {".": {}, "f:phase": {}}}));
        // A main-resource update changing status does not own it.
        let mut next = created.clone();
        next["status"] = json!({"phase": "X"});
        let out = record_update(Some(&created), next, "main", "v1", &t, T1, None);
        assert!(entry(&out, "main").is_none());
    }

    #[test]
    fn client_supplied_managed_fields_and_reset() {
        let t = cm_types();
        let created = record_update(None, cm(json!({"a": "1"})), "c", "v1", &t, T0, None);
        let mut reset = created.clone();
        reset["metadata"]["managedFields"] = json!([{}]);
        let out = record_update(Some(&created), reset, "u", "v1", &t, T1, None);
        assert!(out["metadata"].get("managedFields").is_none(), "{out}");
        let mut custom = created.clone();
        custom["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Update", "apiVersion": "v1",
            "time": T0, "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}]);
        let out = record_update(Some(&created), custom, "u", "v1", &t, T1, None);
        assert_eq!(entries(&out).len(), 1);
        assert_eq!(entries(&out)[0]["manager"], "x");
    }

    #[test]
    fn apply_rejects_managed_fields_and_bad_lists() {
        let t = cm_types();
        let mut cfg = cm(json!({}));
        cfg["metadata"]["managedFields"] = json!([{"manager": "x"}]);
        let err = do_apply(None, &cfg, "m", false, &t).unwrap_err();
        assert_eq!(err.message(), "metadata.managedFields must be nil");
        assert_eq!(err.status_code(), 400);
        let mut cfg = cm(json!({}));
        cfg["metadata"]["ownerReferences"] = json!([{"name": "x"}]);
        let err = do_apply(None, &cfg, "m", false, &t).unwrap_err();
        assert_eq!(
            err.message(),
            "failed to create typed patch object (ns/c; /v1, Kind=ConfigMap): .metadata.ownerReferences: element 0: associative list with keys has an element that omits key field \"uid\" (and doesn't have default value)"
        );
        assert_eq!(err.status_code(), 500);
        let mut cfg = cm(json!({}));
        cfg["metadata"]["ownerReferences"] = json!([{"uid": "1"}, {"uid": "1"}]);
        let err = do_apply(None, &cfg, "m", false, &t).unwrap_err();
        assert_eq!(
            err.message(),
            "failed to create typed patch object (ns/c; /v1, Kind=ConfigMap): .metadata.ownerReferences: duplicate entries for key [uid=\"1\"]"
        );
    }

    #[test]
    fn before_first_apply_for_untracked_objects() {
        let t = cm_types();
        let live = cm(json!({"a": "1"}));
        let err = do_apply(Some(&live), &cm(json!({"a": "2"})), "m", false, &t).unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"before-first-apply\" using v1: .data.a"
        );
    }

    #[test]
    fn noop_apply_keeps_old_timestamps() {
        let t = cm_types();
        let live = apply(ApplyRequest {
            live: None,
            applied: &cm(json!({"a": "1"})),
            manager: "m",
            force: false,
            api_version: "v1",
            types: &t,
            now: T0,
            subresource: None,
        })
        .unwrap();
        let again = do_apply(Some(&live), &cm(json!({"a": "1"})), "m", false, &t).unwrap();
        assert_eq!(again, live, "a no-op apply must not change the object");
        assert_eq!(entries(&again)[0]["time"], T0);
        // A changing apply records the new time.
        let changed = do_apply(Some(&live), &cm(json!({"a": "2"})), "m", false, &t).unwrap();
        assert_eq!(entries(&changed)[0]["time"], T1);
        // An apply that only changes ownership (a second co-owner) is not a no-op.
        let shared = do_apply(Some(&live), &cm(json!({"a": "1"})), "m2", false, &t).unwrap();
        assert_eq!(entries(&shared).len(), 2);
    }

    #[test]
    fn kubectl_upgrade_from_client_side_apply_without_conflicts() {
        let t = cm_types();
        let cfg = cm(json!({"a": "1", "b": "1"}));
        let mut csa = cfg.clone();
        csa["metadata"]["annotations"] =
            json!({LAST_APPLIED: serde_json::to_string(&cfg).unwrap()});
        let live = record_update(None, csa, "kubectl-client-side-apply", "v1", &t, T0, None);
        // Same values as last applied: kubectl takes over without conflicts.
        let out = do_apply(
            Some(&live),
            &cm(json!({"a": "1", "b": "2"})),
            "kubectl",
            false,
            &t,
        )
        .unwrap();
        assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
        let csa_entry = entry(&out, "kubectl-client-side-apply").unwrap();
        assert!(
            csa_entry["fieldsV1"]["f:data"].get("f:b").is_none(),
            "{csa_entry}"
        );
        // Other managers do not get this leniency.
        let err = do_apply(Some(&live), &cm(json!({"b": "2"})), "helm", false, &t).unwrap_err();
        assert!(matches!(err, ApplyError::Conflicts(_)));
        // A field edited after the client-side apply still conflicts.
        let mut edited = live.clone();
        edited["data"]["b"] = json!("9");
        let edited = record_update(Some(&live), edited, "kubectl-edit", "v1", &t, T0, None);
        let err = do_apply(
            Some(&edited),
            &cm(json!({"a": "1", "b": "2"})),
            "kubectl",
            false,
            &t,
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1: .data.b"
        );
    }

    #[test]
    fn apply_time_and_ordering() {
        let t = cm_types();
        let live = record_update(None, cm(json!({"a": "1"})), "zz-create", "v1", &t, T0, None);
        let out = do_apply(Some(&live), &cm(json!({"b": "1"})), "aa", false, &t).unwrap();
        let es = entries(&out);
        assert_eq!(es[0]["manager"], "aa");
        assert_eq!(es[0]["time"], T1);
        assert_eq!(es[1]["manager"], "zz-create");
        assert_eq!(es[1]["time"], T0);
    }

    #[test]
    fn fields_v1_round_trip_and_dot_markers() {
        let t = TypeInfo::builtin("apps/v1", "Deployment");
        let obj = json!({"metadata": {"labels": {"a": "b"}},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}}});
        let fv = fields_v1(&obj, &t);
        assert_eq!(
            fv,
            json!({"f:metadata": {"f:labels": {"f:a": {}}},
                   "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
                       ".": {}, "f:name": {},
                       "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:protocol": {}}}}}}}}})
        );
        let set = fields_v1_to_set(&fv);
        assert_eq!(set_to_fields_v1(&set), fv);
    }

    #[test]
    fn kubectl_apply_syncs_last_applied_annotation() {
        let t = cm_types();
        let mut live = record_update(
            None,
            cm(json!({"a": "1"})),
            "kubectl-client-side-apply",
            "v1",
            &t,
            T0,
            None,
        );
        live["metadata"]["annotations"] = json!({LAST_APPLIED: "{}"});
        let cfg = cm(json!({"a": "1"}));
        let out = do_apply(Some(&live), &cfg, "kubectl", false, &t).unwrap();
        let text = out["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap();
        let parsed: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parsed, cfg);
    }

    #[test]
    fn merge_list_order_follows_config_for_shared_items() {
        let l = vec![json!("a"), json!("x"), json!("b")];
        let r = vec![json!("b"), json!("a"), json!("c")];
        let out = merge_list(&l, &r, |v| v.to_string(), |_, r| r.clone());
        assert_eq!(out, vec![json!("x"), json!("b"), json!("a"), json!("c")]);
        let out = merge_list(
            &[json!(1), json!(2)],
            &[json!(2), json!(3)],
            |v| v.to_string(),
            |_, r| r.clone(),
        );
        assert_eq!(out, vec![json!(1), json!(2), json!(3)]);
    }

    fn gitrepo_types() -> TypeInfo {
        let path = format!(
            "{}/../../shared/reference/flux-crds/source.toolkit.fluxcd.io_gitrepositories.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        TypeInfo::from_schema(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    }

    fn gitrepo(interval: &str) -> Value {
        json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
               "metadata": {"name": "podinfo", "namespace": "flux-system"},
               "spec": {"url": "https://github.com/stefanprodan/podinfo", "interval": interval}})
    }

    fn apply_as(
        live: Option<&Value>,
        cfg: &Value,
        manager: &str,
        force: bool,
        t: &TypeInfo,
        sub: Option<&str>,
    ) -> Result<Value, ApplyError> {
        apply(ApplyRequest {
            live,
            applied: cfg,
            manager,
            force,
            api_version: "source.toolkit.fluxcd.io/v1",
            types: t,
            now: T1,
            subresource: sub,
        })
    }

    #[test]
    fn flux_controller_flow_on_gitrepository() {
        let t = gitrepo_types();
        let live = apply_as(
            None,
            &gitrepo("1m"),
            "kustomize-controller",
            false,
            &t,
            None,
        )
        .unwrap();
        // The source controller writes status through /status with Update.
        let mut next = live.clone();
        next["status"] = json!({"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": "True", "reason": "Succeeded", "message": "ok",
             "lastTransitionTime": T1}]});
        let live = record_update(
            Some(&live),
            next,
            "source-controller",
            "source.toolkit.fluxcd.io/v1",
            &t,
            T1,
            Some("status"),
        );
        let sc = entry(&live, "source-controller").unwrap();
        assert_eq!(sc["subresource"], "status");
        // Flux conditions have no list-type in the CRD, so they are atomic;
        // status itself appeared with this update, hence its `.` marker.
        assert_eq!(
            sc["fieldsV1"],
            json!({"f:status": {".": {}, "f:conditions": {}, "f:observedGeneration": {}}})
        );
        // Re-applying the same spec is a no-op without conflicts and keeps status.
        let again = apply_as(
            Some(&live),
            &gitrepo("1m"),
            "kustomize-controller",
            false,
            &t,
            None,
        )
        .unwrap();
        assert_eq!(again["status"], live["status"]);
        assert_eq!(entries(&again).len(), 2);
        // kubectl edit changes the interval: the next apply conflicts unless forced.
        let mut edited = again.clone();
        edited["spec"]["interval"] = json!("5m");
        let edited = record_update(
            Some(&again),
            edited,
            "kubectl-edit",
            "source.toolkit.fluxcd.io/v1",
            &t,
            T1,
            None,
        );
        let err = apply_as(
            Some(&edited),
            &gitrepo("1m"),
            "kustomize-controller",
            false,
            &t,
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using source.toolkit.fluxcd.io/v1: .spec.interval"
        );
        let forced = apply_as(
            Some(&edited),
            &gitrepo("1m"),
            "kustomize-controller",
            true,
            &t,
            None,
        )
        .unwrap();
        assert_eq!(forced["spec"]["interval"], "1m");
        assert!(
            entry(&forced, "kubectl-edit").is_none(),
            "kubectl-edit owned only the interval"
        );
        // A status apply by another manager over the atomic conditions conflicts.
        let st = json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "podinfo", "namespace": "flux-system"},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        let err = apply_as(Some(&forced), &st, "other", false, &t, Some("status")).unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"source-controller\" with subresource \"status\" using source.toolkit.fluxcd.io/v1: .status.conditions"
        );
    }

    #[test]
    fn map_list_from_schema_granular_item_ownership() {
        let schema = json!({"type": "object", "properties": {"status": {"type": "object", "properties": {
            "conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                "items": {"type": "object", "properties": {"type": {"type": "string"}, "status": {"type": "string"}}}}}}}});
        let t = TypeInfo::from_schema(&schema);
        let obj = |conds: Value| json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"}, "status": {"conditions": conds}});
        let live = apply_as(None, &obj(json!([])), "creator", false, &t, None).unwrap();
        let live = apply_as(
            Some(&live),
            &obj(json!([{"type": "A", "status": "True"}])),
            "a",
            false,
            &t,
            Some("status"),
        )
        .unwrap();
        let live = apply_as(
            Some(&live),
            &obj(json!([{"type": "B", "status": "True"}])),
            "b",
            false,
            &t,
            Some("status"),
        )
        .unwrap();
        assert_eq!(
            live["status"]["conditions"],
            json!([{"type": "A", "status": "True"}, {"type": "B", "status": "True"}])
        );
        // Manager b stops applying B: only B goes; A (owned by a) stays.
        let out = apply_as(Some(&live), &obj(json!([])), "b", false, &t, Some("status")).unwrap();
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "A", "status": "True"}])
        );
        assert!(entry(&out, "b").is_none());
        // b changing A's status conflicts with a.
        let err = apply_as(
            Some(&live),
            &obj(json!([{"type": "A", "status": "False"}])),
            "b",
            false,
            &t,
            Some("status"),
        )
        .unwrap_err();
        let ApplyError::Conflicts(c) = err else {
            panic!()
        };
        assert_eq!(c[0].field, ".status.conditions[type=\"A\"].status");
        assert_eq!(
            c[0].cause_message(),
            "conflict with \"a\" with subresource \"status\""
        );
    }

    #[test]
    fn update_then_apply_same_value_is_shared_and_survives_applier_removal() {
        let t = cm_types();
        let created = record_update(
            None,
            cm(json!({"a": "1"})),
            "kubectl-create",
            "v1",
            &t,
            T0,
            None,
        );
        let live = do_apply(
            Some(&created),
            &cm(json!({"a": "1", "b": "2"})),
            "m",
            false,
            &t,
        )
        .unwrap();
        assert_eq!(
            entry(&live, "kubectl-create").unwrap()["fieldsV1"],
            json!({"f:data": {".": {}, "f:a": {}}})
        );
        assert_eq!(
            entry(&live, "m").unwrap()["fieldsV1"],
            json!({"f:data": {"f:a": {}, "f:b": {}}})
        );
        // m stops applying a: kubectl-create still owns it, so it stays.
        let out = do_apply(Some(&live), &cm(json!({"b": "2"})), "m", false, &t).unwrap();
        assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
    }

    #[test]
    fn same_manager_different_subresources_are_separate_entries() {
        let t = TypeInfo::builtin("v1", "Namespace");
        let ns = |phase: &str| {
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "n", "labels": {"x": "1"}}, "status": {"phase": phase}})
        };
        let live = do_apply(None, &ns("A"), "m", false, &t).unwrap();
        let live = apply(ApplyRequest {
            live: Some(&live),
            applied: &ns("B"),
            manager: "m",
            force: false,
            api_version: "v1",
            types: &t,
            now: T1,
            subresource: Some("status"),
        })
        .unwrap();
        let es = entries(&live);
        assert_eq!(es.len(), 2);
        assert_eq!(
            es[0]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:x": {}}}})
        );
        assert_eq!(es[1]["fieldsV1"], json!({"f:status": {"f:phase": {}}}));
        assert_eq!(es[1]["subresource"], "status");
        // The main-resource apply dropping labels does not touch the status entry.
        let mut bare = ns("ignored");
        bare["metadata"].as_object_mut().unwrap().remove("labels");
        let out = do_apply(Some(&live), &bare, "m", false, &t).unwrap();
        assert!(out["metadata"].get("labels").is_none(), "{out}");
        assert_eq!(out["status"]["phase"], "B");
        assert_eq!(entries(&out).len(), 1);
    }

    #[test]
    fn forced_apply_over_update_manager_plural_conflicts() {
        let t = cm_types();
        let created = record_update(
            None,
            cm(json!({"a": "1", "b": "1"})),
            "editor",
            "v1",
            &t,
            T0,
            None,
        );
        let err = do_apply(
            Some(&created),
            &cm(json!({"a": "2", "b": "2"})),
            "m",
            false,
            &t,
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 2 conflicts: conflicts with \"editor\" using v1:\n- .data.a\n- .data.b"
        );
        let out = do_apply(
            Some(&created),
            &cm(json!({"a": "2", "b": "2"})),
            "m",
            true,
            &t,
        )
        .unwrap();
        // The editor keeps only the data map it created (its `.` marker).
        assert_eq!(
            entry(&out, "editor").unwrap()["fieldsV1"],
            json!({"f:data": {}})
        );
        assert_eq!(
            entry(&out, "m").unwrap()["fieldsV1"],
            json!({"f:data": {"f:a": {}, "f:b": {}}})
        );
    }

    #[test]
    fn prune_named_fields_vs_map_keys() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "s": {"type": "object", "properties": {"a": {"type": "object", "properties": {"x": {"type": "string"}, "y": {"type": "string"}}}}},
            "m": {"type": "object", "additionalProperties": {"type": "object", "properties": {"x": {"type": "string"}}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        }}}});
        let t = TypeInfo::from_schema(&schema);
        let obj = |spec: Value| json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"}, "spec": spec});
        let live = do_apply(
            None,
            &obj(json!({
                "s": {"a": {"x": "1"}},
                "m": {"k1": {"x": "1"}, "k2": {"x": "2"}},
                "free": {"f1": {"g": "1"}, "f2": "2"},
            })),
            "m",
            false,
            &t,
        )
        .unwrap();
        let out = do_apply(
            Some(&live),
            &obj(json!({
                "m": {"k2": {"x": "2"}},
                "free": {"f2": "2"},
            })),
            "m",
            false,
            &t,
        )
        .unwrap();
        // A named struct field nobody owns any more disappears entirely...
        assert!(out["spec"].get("s").is_none(), "{out}");
        // ...but map keys are not named fields: their emptied values stay.
        assert_eq!(out["spec"]["m"], json!({"k1": {}, "k2": {"x": "2"}}));
        assert_eq!(out["spec"]["free"], json!({"f1": {}, "f2": "2"}));
    }

    #[test]
    fn update_managers_are_capped_into_ancient_changes() {
        let t = cm_types();
        let mut live = record_update(
            None,
            cm(json!({"k0": "v"})),
            "m00",
            "v1",
            &t,
            "2026-01-01T00:00:00Z",
            None,
        );
        for i in 1..12 {
            let mut next = live.clone();
            next["data"][format!("k{i}")] = json!("v");
            let now = format!("2026-01-01T00:{i:02}:00Z");
            live = record_update(Some(&live), next, &format!("m{i:02}"), "v1", &t, &now, None);
        }
        let es = entries(&live);
        assert_eq!(es.len(), 10, "{es:?}");
        let ancient = entry(&live, "ancient-changes").unwrap();
        assert_eq!(
            ancient["fieldsV1"],
            json!({"f:data": {".": {}, "f:k0": {}, "f:k1": {}, "f:k2": {}}})
        );
        assert_eq!(ancient["time"], "2026-01-01T00:02:00Z");
        assert!(entry(&live, "m00").is_none());
        assert!(entry(&live, "m02").is_none());
        assert!(entry(&live, "m03").is_some());
    }
}

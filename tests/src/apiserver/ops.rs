//! Verb semantics on the store: the generic registry's create/update/patch/delete/list logic
//! (admission, validation, generation, managedFields, optimistic concurrency, finalizers).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::apiserver::errors::{qualified_resource, ApiError, ApiResult};
use crate::apiserver::resources::{gr_key, ResourceDef};
use crate::apiserver::schema::{self, FieldError};
use crate::apiserver::selector::{FieldSelector, LabelSelector};
use crate::apiserver::store::{meta_str, set_meta, EventType, Key, Store};
use crate::apiserver::{builtin, crd, patch, ssa};

pub const NAMESPACES_GR: &str = "namespaces";
pub const ORPHAN_FINALIZER: &str = "orphan";
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Query parameters (last value wins, as Go's `url.Values.Get` takes the first; these never repeat).
#[derive(Clone, Debug, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut m = HashMap::new();
        if let Some(q) = q {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                m.entry(k.into_owned()).or_insert_with(|| v.into_owned());
            }
        }
        Query(m)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.0.get(k).map(String::as_str), Some("true") | Some("1"))
    }

    pub fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

/// Everything a verb needs to know about the request besides the body.
pub struct Req<'a> {
    pub def: Arc<ResourceDef>,
    pub ns: String,
    pub name: String,
    pub sub: Option<String>,
    pub query: &'a Query,
    pub manager: String,
    pub now: DateTime<Utc>,
}

impl Req<'_> {
    fn now_str(&self) -> String {
        self.now.to_rfc3339_opts(SecondsFormat::Secs, true)
    }
}

#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub body: Value,
    pub warnings: Vec<String>,
    /// The request changed stored state (the garbage collector should look).
    pub wrote: bool,
}

impl Reply {
    fn ok(code: u16, body: Value) -> Reply {
        Reply {
            code,
            body,
            warnings: Vec::new(),
            wrote: false,
        }
    }
}

/// Shapes a stored object for a reader of `def`'s version.
pub fn present(def: &ResourceDef, obj: &Value) -> Value {
    if def.is_events_v1() {
        return builtin::core_event_to_v1(obj);
    }
    let mut o = obj.clone();
    // Custom resources are defaulted when read from storage too, so schema defaults added
    // after an object was written still show (and are what patches apply to).
    if let Some(schema) = &def.schema {
        schema::apply_defaults(schema, &mut o);
    }
    if let Some(m) = o.as_object_mut() {
        m.insert("apiVersion".into(), json!(def.api_version()));
        m.insert("kind".into(), json!(def.kind));
    }
    o
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(obj: &mut Value, f: &[String]) {
    set_meta(
        obj,
        "finalizers",
        if f.is_empty() { Value::Null } else { json!(f) },
    );
}

fn without(obj: &Value, keys: &[&str]) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        for k in keys {
            m.remove(*k);
        }
    }
    o
}

/// Equality that ignores what a no-op write would still touch.
fn same_ignoring_bookkeeping(a: &Value, b: &Value) -> bool {
    fn scrub(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
                for e in mf.iter_mut() {
                    if let Some(e) = e.as_object_mut() {
                        e.remove("time");
                    }
                }
            }
        }
        v
    }
    scrub(a) == scrub(b)
}

pub fn check_namespace_for_create(
    store: &Store,
    def: &ResourceDef,
    ns: &str,
    name: &str,
) -> ApiResult<()> {
    if !def.namespaced {
        return Ok(());
    }
    let Some(nso) = store.get(NAMESPACES_GR, "", ns) else {
        return Err(ApiError::not_found("", "namespaces", ns));
    };
    let terminating = nso.pointer("/metadata/deletionTimestamp").is_some()
        || nso.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
    if terminating {
        let why = format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        );
        let mut e = ApiError::forbidden(&def.group, &def.plural, name, &why);
        if let Some(Value::Object(d)) = &mut e.details {
            d.insert(
                "causes".into(),
                json!([{"reason": "NamespaceTerminating", "message": why, "field": "metadata.namespace"}]),
            );
        }
        return Err(e);
    }
    Ok(())
}

/// 400 when the body names another type than the URL.
fn check_type(def: &ResourceDef, obj: &mut Value, fill: bool) -> ApiResult<()> {
    let Some(m) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the object provided is unrecognized (must be of type Object)",
        ));
    };
    let want = def.api_version();
    match m.get("apiVersion").and_then(Value::as_str) {
        Some(av) if av == want => {}
        Some(av) if !av.is_empty() => {
            return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want})"
        )))
        }
        _ if fill => {
            m.insert("apiVersion".into(), json!(want));
        }
        _ => {
            return Err(ApiError::bad_request(
                "Object 'apiVersion' is missing in the request body",
            ))
        }
    }
    match m.get("kind").and_then(Value::as_str) {
        Some(k) if k == def.kind => {}
        Some(k) if !k.is_empty() => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )))
        }
        _ if fill => {
            m.insert("kind".into(), json!(def.kind));
        }
        _ => {
            return Err(ApiError::bad_request(
                "Object 'Kind' is missing in the request body",
            ))
        }
    }
    if !m.get("metadata").is_some_and(Value::is_object) {
        if m.get("metadata").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        m.insert("metadata".into(), json!({}));
    }
    Ok(())
}

fn check_namespace_matches(req: &Req, obj: &mut Value) -> ApiResult<()> {
    if !req.def.namespaced {
        set_meta(obj, "namespace", Value::Null);
        return Ok(());
    }
    let ns = meta_str(obj, "namespace");
    if !ns.is_empty() && ns != req.ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    set_meta(obj, "namespace", json!(req.ns));
    Ok(())
}

fn random_suffix() -> String {
    // Same alphabet as apimachinery's utilrand.String (no vowels, no confusable digits).
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHA[fastrand::usize(..ALPHA.len())] as char)
        .collect()
}

pub fn get(store: &Store, req: &Req) -> ApiResult<Reply> {
    let def = &req.def;
    match store.get(&def.gr(), &req.ns, &req.name) {
        Some(o) => Ok(Reply::ok(200, present(def, &o))),
        None => Err(ApiError::not_found(&def.group, &def.plural, &req.name)),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    start: String,
}

pub struct ListResult {
    pub items: Vec<Arc<Value>>,
    pub rv: u64,
    pub cont: Option<String>,
    pub remaining: Option<u64>,
}

pub fn parse_selectors(def: &ResourceDef, q: &Query) -> ApiResult<(LabelSelector, FieldSelector)> {
    let ls = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fs = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    for f in fs.fields() {
        if !def.supports_field(&f) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {f}"
            )));
        }
    }
    Ok((ls, fs))
}

/// The objects of a group-resource as they were at `rv`, rebuilt by undoing retained events.
fn snapshot_at(store: &Store, gr: &str, rv: u64) -> ApiResult<BTreeMap<Key, Arc<Value>>> {
    let mut m: BTreeMap<Key, Arc<Value>> = store.list(gr, None, None).into_iter().collect();
    if rv >= store.rv {
        return Ok(m);
    }
    let events = store.events_since(rv).ok_or_else(|| {
        ApiError::expired(format!(
            "too old resource version: {rv} ({})",
            store.compacted_rv + 1
        ))
    })?;
    for ev in events.iter().rev().filter(|e| e.gr == gr) {
        let key = (
            ev.namespace.clone(),
            meta_str(&ev.object, "name").to_string(),
        );
        match (ev.kind, &ev.prev) {
            (EventType::Removed, _) => {}
            (EventType::Added, _) => {
                m.remove(&key);
            }
            (_, Some(p)) => {
                m.insert(key, p.clone());
            }
            (_, None) => {}
        }
    }
    Ok(m)
}

fn too_large_rv(rv: u64, current: u64) -> ApiError {
    ApiError::new(
        504,
        "Timeout",
        format!("Too large resource version: {rv}, current: {current}"),
    )
    .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}))
}

pub fn list(store: &Store, req: &Req) -> ApiResult<ListResult> {
    let def = &req.def;
    let q = req.query;
    let (ls, fs) = parse_selectors(def, q)?;
    let gr = def.gr();
    let limit: usize = match q.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?
            .max(0) as usize,
        None => 0,
    };
    let rv_param = q.get("resourceVersion");
    let rv_match = q.get("resourceVersionMatch");
    let (snapshot_rv, start_after) = if let Some(c) = q.get("continue") {
        if rv_param.is_some_and(|r| r != "0") {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let tok: ContinueToken = base64::engine::general_purpose::STANDARD
            .decode(c.as_bytes())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
        if tok.rv < store.compacted_rv {
            return Err(ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."));
        }
        let (ns, name) = tok.start.split_once('/').unwrap_or(("", &tok.start));
        (tok.rv, Some((ns.to_string(), name.to_string())))
    } else {
        match (rv_param, rv_match) {
            (None, Some(_)) => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ))
            }
            (None, None) => (store.rv, None),
            (Some("0"), _) => (store.rv, None),
            (Some(r), m) => {
                let rv: u64 = r
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resource version: {r}")))?;
                if rv > store.rv {
                    return Err(too_large_rv(rv, store.rv));
                }
                match m {
                    Some("Exact") => (rv, None),
                    Some("NotOlderThan") | None => (store.rv, None),
                    Some(other) => {
                        return Err(ApiError::bad_request(format!(
                            "unsupported resourceVersionMatch value: {other}"
                        )))
                    }
                }
            }
        }
    };
    // The watch cache serves resourceVersion=0 and ignores limit.
    let limit = if rv_param == Some("0") && q.get("continue").is_none() {
        0
    } else {
        limit
    };
    let ns_filter = if def.namespaced && !req.ns.is_empty() {
        Some(req.ns.as_str())
    } else {
        None
    };
    let candidates: Vec<(Key, Arc<Value>)> = if snapshot_rv < store.rv {
        snapshot_at(store, &gr, snapshot_rv)?.into_iter().collect()
    } else {
        store.list(&gr, None, None)
    };
    let mut items = Vec::new();
    let mut last_key: Option<Key> = None;
    let mut more = false;
    let mut remaining: u64 = 0;
    let no_selector = ls.is_empty() && fs.is_empty();
    for (k, o) in candidates {
        if let Some(n) = ns_filter {
            if k.0 != n {
                continue;
            }
        }
        if let Some(a) = &start_after {
            if &k <= a {
                continue;
            }
        }
        let selected = if def.is_events_v1() {
            let view = present(def, &o);
            ls.matches(&view) && fs.matches(&view)
        } else {
            ls.matches(&o) && fs.matches(&o)
        };
        if !selected {
            continue;
        }
        if limit > 0 && items.len() >= limit {
            more = true;
            remaining += 1;
            if !no_selector {
                break;
            }
            continue;
        }
        last_key = Some(k);
        items.push(o);
    }
    let cont = match (more, last_key) {
        (true, Some(k)) => {
            let tok = ContinueToken {
                v: "meta.k8s.io/v1".into(),
                rv: snapshot_rv,
                start: format!("{}/{}", k.0, k.1),
            };
            serde_json::to_vec(&tok)
                .ok()
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
        }
        _ => None,
    };
    Ok(ListResult {
        items,
        rv: snapshot_rv,
        cont,
        remaining: if more && no_selector {
            Some(remaining)
        } else {
            None
        },
    })
}

pub fn create(store: &mut Store, req: &Req, mut obj: Value) -> ApiResult<Reply> {
    let def = req.def.clone();
    check_type(&def, &mut obj, false)?;
    check_namespace_matches(req, &mut obj)?;
    if meta_str(&obj, "name").is_empty() {
        let gen = meta_str(&obj, "generateName").to_string();
        if !gen.is_empty() {
            set_meta(&mut obj, "name", json!(format!("{gen}{}", random_suffix())));
        }
    }
    let name = meta_str(&obj, "name").to_string();
    check_namespace_for_create(store, &def, &req.ns, &name)?;
    check_crd_not_terminating(store, &def)?;
    write(store, req, None, obj, false)
}

pub fn update(store: &mut Store, req: &Req, mut obj: Value) -> ApiResult<Reply> {
    let def = req.def.clone();
    check_type(&def, &mut obj, false)?;
    check_namespace_matches(req, &mut obj)?;
    let body_name = meta_str(&obj, "name").to_string();
    if body_name != req.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            req.name
        )));
    }
    let Some(old) = store.get(&def.gr(), &req.ns, &req.name) else {
        return Err(ApiError::not_found(&def.group, &def.plural, &req.name));
    };
    let rv = meta_str(&obj, "resourceVersion");
    if rv.is_empty() {
        if def.custom {
            // The generic registry names the resource (not the kind) here and prints the
            // uint64 zero with %#v.
            return Err(ApiError::invalid(
                &def.group,
                &def.plural,
                &req.name,
                &[FieldError {
                    field: "metadata.resourceVersion".into(),
                    reason: schema::CauseType::Invalid,
                    message: "Invalid value: 0x0: must be specified for an update".into(),
                }],
            ));
        }
    } else if rv != meta_str(&old, "resourceVersion") {
        return Err(ApiError::stale(&def.group, &def.plural, &req.name));
    }
    check_uid(&def, &old, &obj)?;
    write(store, req, Some(old), obj, false)
}

/// A uid in the written object acts as a precondition, as in the generic registry.
fn check_uid(def: &ResourceDef, old: &Value, new: &Value) -> ApiResult<()> {
    let uid = meta_str(new, "uid");
    let actual = meta_str(old, "uid");
    if !uid.is_empty() && uid != actual {
        return Err(ApiError::conflict(
            &def.group,
            &def.plural,
            meta_str(old, "name"),
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
            ),
        ));
    }
    Ok(())
}

fn parse_body(bytes: &[u8], yaml: bool) -> ApiResult<Value> {
    if yaml {
        let s = std::str::from_utf8(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        serde_saphyr::from_str::<Value>(s)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
    }
}

pub fn patch(store: &mut Store, req: &Req, content_type: &str, body: &[u8]) -> ApiResult<Reply> {
    let def = req.def.clone();
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let old = store.get(&def.gr(), &req.ns, &req.name);
    if old.is_none() && req.sub.is_some() {
        return Err(ApiError::not_found(&def.group, &def.plural, &req.name));
    }
    match ct.as_str() {
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
            if ct.ends_with("cbor") {
                return Err(ApiError::unsupported_patch_type(!def.custom));
            }
            if req.query.get("fieldManager").is_none() {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "PatchOptions",
                    "",
                    &[FieldError::required(
                        "fieldManager",
                        "is required for apply patch",
                    )],
                ));
            }
            let mut applied = parse_body(body, true)?;
            check_type(&def, &mut applied, false)?;
            check_namespace_matches(req, &mut applied)?;
            let name = meta_str(&applied, "name").to_string();
            if name.is_empty() {
                set_meta(&mut applied, "name", json!(req.name));
            } else if name != req.name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({name}) does not match the name on the URL ({})",
                    req.name
                )));
            }
            if old.is_none() {
                check_namespace_for_create(store, &def, &req.ns, &req.name)?;
                check_crd_not_terminating(store, &def)?;
            }
            if let Some(o) = &old {
                let rv = meta_str(&applied, "resourceVersion");
                if !rv.is_empty() && rv != meta_str(o, "resourceVersion") {
                    return Err(ApiError::stale(&def.group, &def.plural, &req.name));
                }
            }
            // Fields another endpoint owns are reset before apply, as ResetFieldsStrategy does.
            if def.status_subresource {
                if req.sub.as_deref() == Some("status") {
                    if let Some(m) = applied.as_object_mut() {
                        m.retain(|k, _| {
                            matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")
                        });
                    }
                } else if let Some(m) = applied.as_object_mut() {
                    m.remove("status");
                }
            }
            let now = req.now_str();
            let merged = ssa::apply(ssa::ApplyRequest {
                live: old.as_deref(),
                applied: &applied,
                manager: &req.manager,
                force: req.query.flag("force"),
                api_version: &def.api_version(),
                types: &def.types,
                now: &now,
                subresource: req.sub.as_deref(),
            })
            .map_err(|e| match &e {
                ssa::ApplyError::Conflicts(cs) => {
                    let causes: Vec<Value> = cs
                        .iter()
                        .map(|c| json!({"reason": "FieldManagerConflict", "message": c.cause_message(), "field": c.field}))
                        .collect();
                    ApiError::new(409, "Conflict", e.message()).with_details(json!({
                        "name": req.name, "group": def.group, "kind": def.plural, "causes": causes
                    }))
                }
                ssa::ApplyError::Invalid(m) => match e.status_code() {
                    // A configuration that does not fit the type is a bare 500 upstream.
                    500 => ApiError::new(500, "", m.clone()),
                    _ => ApiError::bad_request(m.clone()),
                },
            })?;
            write(store, req, old, merged, true)
        }
        "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json" => {
            if req.query.0.contains_key("force") {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "PatchOptions",
                    "",
                    &[FieldError::forbidden(
                        "force",
                        "may not be specified for non-apply patch",
                    )],
                ));
            }
            let Some(old) = old else {
                return Err(ApiError::not_found(&def.group, &def.plural, &req.name));
            };
            let p = parse_body(body, false)?;
            let current = present(&def, &old);
            let result = match ct.as_str() {
                "application/json-patch+json" => patch::json_patch(&current, &p),
                "application/merge-patch+json" => patch::merge_patch(&current, &p),
                _ => {
                    if def.custom {
                        return Err(ApiError::unsupported_patch_type(!def.custom));
                    }
                    patch::strategic_merge_patch(&current, &p, &def.types)
                }
            };
            let mut new = result.map_err(|e| match e {
                patch::PatchError::BadRequest(m) => ApiError::bad_request(m),
                patch::PatchError::Unprocessable(m) => ApiError::new(422, "Invalid", m),
            })?;
            check_type(&def, &mut new, false)?;
            if meta_str(&new, "name") != req.name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({})",
                    meta_str(&new, "name"),
                    req.name
                )));
            }
            check_namespace_matches(req, &mut new)?;
            let rv = meta_str(&new, "resourceVersion");
            if !rv.is_empty() && rv != meta_str(&old, "resourceVersion") {
                return Err(ApiError::stale(&def.group, &def.plural, &req.name));
            }
            check_uid(&def, &old, &new)?;
            write(store, req, Some(old), new, false)
        }
        _ => Err(ApiError::unsupported_patch_type(!def.custom)),
    }
}

fn unknown_field_reply(req: &Req, unknown: &[String]) -> ApiResult<Vec<String>> {
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{}\"", f.trim_start_matches('.')))
        .collect();
    match req.query.get("fieldValidation").unwrap_or("Warn") {
        "Strict" => Err(ApiError::bad_request(format!(
            "{k} in version \"{v}\" cannot be handled as a {k}: strict decoding error: {}",
            fields.join(", "),
            k = req.def.kind,
            v = req.def.version
        ))),
        "Ignore" => Ok(Vec::new()),
        _ => Ok(fields),
    }
}

/// The shared tail of create/update/patch/apply: strategy, validation, bookkeeping, storage.
fn write(
    store: &mut Store,
    req: &Req,
    old: Option<Arc<Value>>,
    mut obj: Value,
    managed_done: bool,
) -> ApiResult<Reply> {
    let def = req.def.clone();
    let now = req.now_str();
    let gr = def.gr();
    let name = meta_str(&obj, "name").to_string();
    let create_with_rv =
        old.is_none() && !managed_done && !meta_str(&obj, "resourceVersion").is_empty();
    let mut warnings = Vec::new();
    if !def.custom {
        if let Some(e) = builtin::decode_errors(&def, &obj) {
            return Err(ApiError::bad_request(format!(
                "{k} in version \"{v}\" cannot be handled as a {k}: {e}",
                k = def.kind,
                v = def.version
            )));
        }
        let unknown = builtin::prune_unknown(&def, &mut obj);
        if !unknown.is_empty() {
            warnings.extend(unknown_field_reply(req, &unknown)?);
        }
    }
    if def.is_events_v1() {
        if old.is_none() {
            let errs = builtin::validate_event_v1(&obj);
            if !errs.is_empty() {
                return Err(ApiError::invalid(&def.group, &def.kind, &name, &errs));
            }
        }
        obj = builtin::v1_event_to_core(&obj);
    }

    match (&old, req.sub.as_deref()) {
        (None, _) => {
            // PrepareForCreate of every kind with a status subresource resets status.
            if def.status_subresource {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        (Some(o), None) => {
            if def.status_subresource {
                match o.get("status") {
                    Some(s) => obj["status"] = s.clone(),
                    None => {
                        if let Some(m) = obj.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
        }
        (Some(o), Some(_)) => {
            let status = obj.get("status").cloned();
            let managed = obj.pointer("/metadata/managedFields").cloned();
            let mut base = present(&def, o);
            match status {
                Some(s) => base["status"] = s,
                None => {
                    if let Some(m) = base.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            set_meta(&mut base, "managedFields", managed.unwrap_or(Value::Null));
            obj = base;
        }
    }

    builtin::prepare(&def, old.as_deref(), &mut obj)?;

    let mut errs = Vec::new();
    if let Some(schema) = &def.schema {
        let unknown = schema::prune(schema, &mut obj);
        if !unknown.is_empty() {
            warnings.extend(unknown_field_reply(req, &unknown)?);
        }
        schema::apply_defaults(schema, &mut obj);
        errs.extend(schema::validate(schema, &obj));
    }
    let mut meta_errs = schema::validate_object_meta(&obj, def.namespaced);
    meta_errs.extend(errs);
    let mut errs = meta_errs;
    errs.extend(builtin::validate(&def, old.as_deref(), &obj));
    if let Some(o) = &old {
        if o.pointer("/metadata/deletionTimestamp").is_some() {
            let before = finalizers(o);
            if finalizers(&obj).iter().any(|f| !before.contains(f)) {
                errs.push(FieldError::forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                ));
            }
        }
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(&def.group, &def.kind, &name, &errs));
    }

    // System-owned metadata.
    match &old {
        None => {
            set_meta(&mut obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
            set_meta(&mut obj, "creationTimestamp", json!(now));
            set_meta(&mut obj, "deletionTimestamp", Value::Null);
            set_meta(&mut obj, "deletionGracePeriodSeconds", Value::Null);
            set_meta(
                &mut obj,
                "generation",
                if def.has_generation {
                    json!(1)
                } else {
                    Value::Null
                },
            );
        }
        Some(o) => {
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                let v = o.get("metadata").and_then(|m| m.get(f)).cloned();
                set_meta(&mut obj, f, v.unwrap_or(Value::Null));
            }
            if def.has_generation {
                let ignore: &[&str] = if def.status_subresource {
                    &["metadata", "status", "apiVersion", "kind"]
                } else {
                    &["metadata", "apiVersion", "kind"]
                };
                if without(o, ignore) != without(&obj, ignore) {
                    let g = o
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    set_meta(&mut obj, "generation", json!(g + 1));
                }
            }
        }
    }
    set_meta(&mut obj, "selfLink", Value::Null);
    if let Some(o) = &old {
        set_meta(
            &mut obj,
            "resourceVersion",
            json!(meta_str(o, "resourceVersion")),
        );
    } else {
        set_meta(&mut obj, "resourceVersion", Value::Null);
    }

    if !managed_done {
        obj = ssa::record_update(
            old.as_deref(),
            obj,
            &req.manager,
            &def.api_version(),
            &def.types,
            &now,
            req.sub.as_deref(),
        );
    }

    if let Some(o) = &old {
        if same_ignoring_bookkeeping(
            &without(o, &["apiVersion", "kind"]),
            &without(&obj, &["apiVersion", "kind"]),
        ) {
            let mut r = Reply::ok(200, present(&def, o));
            r.warnings = warnings;
            return Ok(r);
        }
    }
    // Validation precedes the storage-level checks, as in the real registry; etcd3's Create
    // refuses a resourceVersion with a plain error, which surfaces as a 500.
    if create_with_rv && !req.query.dry_run() {
        return Err(ApiError::new(
            500,
            "InternalError",
            "resourceVersion should not be set on objects to be created",
        ));
    }
    if old.is_none() && store.get(&gr, &req.ns, &name).is_some() {
        return Err(ApiError::already_exists(&def.group, &def.plural, &name));
    }
    let code = if old.is_some() { 200 } else { 201 };
    if req.query.dry_run() {
        let mut r = Reply::ok(code, obj);
        r.warnings = warnings;
        return Ok(r);
    }
    let ns = req.ns.clone();
    let stored_ns = if def.namespaced { ns } else { String::new() };
    let deleting = old.is_some()
        && obj.pointer("/metadata/deletionTimestamp").is_some()
        && finalizers(&obj).is_empty()
        && !is_namespace_pending(&def, &obj);
    let body = if deleting {
        let gone = store
            .remove(&gr, &stored_ns, &name, Some(obj.clone()))
            .map(|o| (*o).clone())
            .unwrap_or(obj);
        after_delete(store, &def, &gone);
        present(&def, &gone)
    } else {
        let stored = store.put(&gr, obj);
        after_write(store, &def, &stored, &now);
        present(&def, &stored)
    };
    Ok(Reply {
        code,
        body,
        warnings,
        wrote: true,
    })
}

fn is_namespace_pending(def: &ResourceDef, obj: &Value) -> bool {
    def.gr() == NAMESPACES_GR
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
}

fn after_write(store: &mut Store, def: &ResourceDef, obj: &Value, now: &str) {
    if def.gr() == crd::CRD_GR {
        crd::reconcile(store, meta_str(obj, "name"), now);
    }
}

fn after_delete(store: &mut Store, def: &ResourceDef, obj: &Value) {
    if def.gr() == crd::CRD_GR {
        let group = obj
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or("");
        let plural = obj
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or("");
        store.registry.remove_gr(group, plural);
        store.drop_gr(&gr_key(group, plural));
    }
}

/// DeleteOptions from the body and/or query (the query wins for fields it carries).
#[derive(Debug, Default, Clone)]
pub struct DeleteOpts {
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOpts {
    pub fn from_request(q: &Query, body: &[u8]) -> ApiResult<DeleteOpts> {
        let mut o = DeleteOpts::default();
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
            o.propagation = v
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string);
            if o.propagation.is_none() {
                match v.get("orphanDependents").and_then(Value::as_bool) {
                    Some(true) => o.propagation = Some("Orphan".into()),
                    Some(false) => o.propagation = Some("Background".into()),
                    None => {}
                }
            }
            o.precondition_uid = v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string);
            o.precondition_rv = v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            o.dry_run = v
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == "All"));
        }
        if let Some(p) = q.get("propagationPolicy") {
            o.propagation = Some(p.to_string());
        }
        if let Some(orphan) = q.get("orphanDependents") {
            if o.propagation.is_none() {
                o.propagation = Some(
                    if orphan == "true" {
                        "Orphan"
                    } else {
                        "Background"
                    }
                    .into(),
                );
            }
        }
        if q.dry_run() {
            o.dry_run = true;
        }
        if let Some(p) = &o.propagation {
            if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "DeleteOptions",
                    "",
                    &[FieldError::not_supported(
                        "propagationPolicy",
                        &json!(p),
                        &[
                            "Foreground".into(),
                            "Background".into(),
                            "Orphan".into(),
                            "nil".into(),
                        ],
                    )],
                ));
            }
        }
        Ok(o)
    }
}

pub fn delete(store: &mut Store, req: &Req, opts: &DeleteOpts) -> ApiResult<Reply> {
    let def = req.def.clone();
    let gr = def.gr();
    let Some(old) = store.get(&gr, &req.ns, &req.name) else {
        return Err(ApiError::not_found(&def.group, &def.plural, &req.name));
    };
    if let Some(uid) = &opts.precondition_uid {
        let actual = meta_str(&old, "uid");
        if uid != actual {
            return Err(ApiError::conflict(
                &def.group,
                &def.plural,
                &req.name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = &opts.precondition_rv {
        let actual = meta_str(&old, "resourceVersion");
        if rv != actual {
            return Err(ApiError::conflict(
                &def.group,
                &def.plural,
                &req.name,
                &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in meta: {actual}"),
            ));
        }
    }
    if gr == NAMESPACES_GR && matches!(req.name.as_str(), "default" | "kube-system" | "kube-public")
    {
        return Err(ApiError::forbidden(
            "",
            "namespaces",
            &req.name,
            "this namespace may not be deleted",
        ));
    }
    let now = req.now_str();
    let mut obj = (*old).clone();
    let mut fins = finalizers(&obj);
    let already = obj.pointer("/metadata/deletionTimestamp").is_some();
    match opts.propagation.as_deref() {
        Some("Orphan") if !fins.iter().any(|f| f == ORPHAN_FINALIZER) => {
            fins.retain(|f| f != FOREGROUND_FINALIZER);
            fins.push(ORPHAN_FINALIZER.into());
        }
        Some("Foreground") if !fins.iter().any(|f| f == FOREGROUND_FINALIZER) => {
            fins.retain(|f| f != ORPHAN_FINALIZER);
            fins.push(FOREGROUND_FINALIZER.into());
        }
        _ => {}
    }
    let is_ns = gr == NAMESPACES_GR;
    if fins.is_empty() && !is_ns {
        if opts.dry_run {
            return Ok(Reply::ok(200, delete_body(&def, &obj)));
        }
        let gone = store
            .remove(&gr, &req.ns, &req.name, None)
            .map(|o| (*o).clone())
            .unwrap_or(obj);
        after_delete(store, &def, &gone);
        let mut r = Reply::ok(200, delete_body(&def, &gone));
        r.wrote = true;
        return Ok(r);
    }
    set_finalizers(&mut obj, &fins);
    if !already {
        set_meta(&mut obj, "deletionTimestamp", json!(now));
        set_meta(&mut obj, "deletionGracePeriodSeconds", json!(0));
        if def.has_generation {
            let g = obj
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            set_meta(&mut obj, "generation", json!(g + 1));
        }
    }
    if is_ns {
        obj["status"]["phase"] = json!("Terminating");
    }
    if opts.dry_run {
        return Ok(Reply::ok(200, present(&def, &obj)));
    }
    if obj == *old {
        return Ok(Reply::ok(200, present(&def, &obj)));
    }
    let stored = store.put(&gr, obj);
    after_write(store, &def, &stored, &now);
    let mut r = Reply::ok(200, present(&def, &stored));
    r.wrote = true;
    Ok(r)
}

/// CRs return the deleted object; built-ins a Success Status naming it.
fn delete_body(def: &ResourceDef, obj: &Value) -> Value {
    if def.custom {
        return present(def, obj);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": meta_str(obj, "name"),
            "group": def.group,
            "kind": def.plural,
            "uid": meta_str(obj, "uid"),
        }
    })
}

pub fn delete_collection(store: &mut Store, req: &Req, opts: &DeleteOpts) -> ApiResult<Reply> {
    let def = req.def.clone();
    let listed = list(store, req)?;
    let mut items = Vec::new();
    let mut wrote = false;
    for o in listed.items {
        let r = Req {
            def: def.clone(),
            ns: meta_str(&o, "namespace").to_string(),
            name: meta_str(&o, "name").to_string(),
            sub: None,
            query: req.query,
            manager: req.manager.clone(),
            now: req.now,
        };
        match delete(store, &r, opts) {
            Ok(rep) => {
                wrote |= rep.wrote;
                items.push(present(&def, &o));
            }
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let mut r = Reply::ok(
        200,
        json!({
            "kind": def.list_kind,
            "apiVersion": def.api_version(),
            "metadata": {"resourceVersion": store.rv.to_string()},
            "items": items,
        }),
    );
    r.wrote = wrote;
    Ok(r)
}

/// Applies a finalizer/ownerReference change on behalf of a controller (GC, namespace
/// controller), deleting the object when the last finalizer goes.
pub fn controller_update(store: &mut Store, gr: &str, obj: Value, manager: &str, now: &str) {
    let ns = meta_str(&obj, "namespace").to_string();
    let name = meta_str(&obj, "name").to_string();
    let Some(old) = store.get(gr, &ns, &name) else {
        return;
    };
    let def = store.registry.preferred(
        &gr.split_once('.')
            .map(|(_, g)| g.to_string())
            .unwrap_or_default(),
        gr.split('.').next().unwrap_or(gr),
    );
    let obj = match &def {
        Some(d) => ssa::record_update(
            Some(&old),
            obj,
            manager,
            &d.api_version(),
            &d.types,
            now,
            None,
        ),
        None => obj,
    };
    if obj == *old {
        return;
    }
    let done = obj.pointer("/metadata/deletionTimestamp").is_some()
        && finalizers(&obj).is_empty()
        && !(gr == NAMESPACES_GR
            && obj
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()));
    if done {
        if let Some(gone) = store.remove(gr, &ns, &name, Some(obj)) {
            if let Some(d) = def {
                after_delete(store, &d, &gone);
            }
        }
    } else {
        let stored = store.put(gr, obj);
        if let Some(d) = def {
            after_write(store, &d, &stored, now);
        }
    }
}

/// Deletes on behalf of a controller with the given propagation policy; NotFound is fine.
pub fn controller_delete(
    store: &mut Store,
    def: Arc<ResourceDef>,
    ns: &str,
    name: &str,
    policy: &str,
    now: DateTime<Utc>,
) {
    let q = Query::default();
    let req = Req {
        def,
        ns: ns.to_string(),
        name: name.to_string(),
        sub: None,
        query: &q,
        manager: "kube-controller-manager".into(),
        now,
    };
    let opts = DeleteOpts {
        propagation: Some(policy.to_string()),
        ..Default::default()
    };
    if let Err(e) = delete(store, &req, &opts) {
        if e.code != 404 {
            tracing::debug!(error = %e, resource = %qualified_resource(&req.def.group, &req.def.plural), "controller delete failed");
        }
    }
}

fn format_selector(obj: &Value) -> String {
    let mut parts: Vec<String> = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    parts.join(",")
}

/// The `autoscaling/v1` Scale view of a Deployment.
pub fn to_scale(obj: &Value) -> Value {
    let meta = |k: &str| {
        obj.pointer(&format!("/metadata/{k}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta("name"),
            "namespace": meta("namespace"),
            "uid": meta("uid"),
            "resourceVersion": meta("resourceVersion"),
            "creationTimestamp": meta("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": format_selector(obj),
        },
    })
}

/// GET/PUT/PATCH of `deployments/{name}/scale`: reads and writes `spec.replicas` only.
pub fn scale(
    store: &mut Store,
    req: &Req,
    verb: &str,
    content_type: &str,
    body: &[u8],
) -> ApiResult<Reply> {
    let def = req.def.clone();
    let Some(old) = store.get(&def.gr(), &req.ns, &req.name) else {
        return Err(ApiError::not_found(&def.group, &def.plural, &req.name));
    };
    let current = to_scale(&old);
    let wanted = match verb {
        "get" => return Ok(Reply::ok(200, current)),
        "update" => {
            let v: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the object provided is unrecognized: {e}"))
            })?;
            let rv = v
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !rv.is_empty() && rv != meta_str(&old, "resourceVersion") {
                return Err(ApiError::stale(&def.group, &def.plural, &req.name));
            }
            v
        }
        _ => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let ct = content_type.split(';').next().unwrap_or("").trim();
            let r = match ct {
                "application/json-patch+json" => patch::json_patch(&current, &p),
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    patch::merge_patch(&current, &p)
                }
                _ => return Err(ApiError::unsupported_patch_type(!def.custom)),
            };
            r.map_err(|e| match e {
                patch::PatchError::BadRequest(m) => ApiError::bad_request(m),
                patch::PatchError::Unprocessable(m) => ApiError::new(422, "Invalid", m),
            })?
        }
    };
    let replicas = wanted
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            &req.name,
            &[FieldError::invalid(
                "spec.replicas",
                &json!(replicas),
                "must be greater than or equal to 0",
            )],
        ));
    }
    let mut new = present(&def, &old);
    new["spec"]["replicas"] = json!(replicas);
    let main = Req {
        def: def.clone(),
        ns: req.ns.clone(),
        name: req.name.clone(),
        sub: None,
        query: req.query,
        manager: req.manager.clone(),
        now: req.now,
    };
    let mut reply = write(store, &main, Some(old), new, false)?;
    reply.body = to_scale(&reply.body);
    Ok(reply)
}

/// Custom resources cannot be created while their CRD is being deleted.
fn check_crd_not_terminating(store: &Store, def: &ResourceDef) -> ApiResult<()> {
    if !def.custom {
        return Ok(());
    }
    let terminating = store
        .get(crd::CRD_GR, "", &def.gr())
        .is_some_and(|c| c.pointer("/metadata/deletionTimestamp").is_some());
    if terminating {
        return Err(ApiError::method_not_allowed(
            "create not allowed while custom resource definition is terminating",
        ));
    }
    Ok(())
}

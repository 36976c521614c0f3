//! Type-specific strategy for the emulated built-in kinds (defaults, normalisation, validation).

use base64::Engine;
use serde_json::{json, Value};

use crate::apiserver::errors::{ApiError, ApiResult};
use crate::apiserver::resources::ResourceDef;
use crate::apiserver::schema::FieldError;
use crate::apiserver::store::meta_str;
use crate::apiserver::workloads;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn config_key_ok(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
        && k != "."
        && k != ".."
}

fn key_errors(obj: &Value, field: &str, errs: &mut Vec<FieldError>) {
    if let Some(m) = obj.get(field).and_then(Value::as_object) {
        for k in m.keys() {
            if !config_key_ok(k) {
                errs.push(FieldError::invalid(
                    &format!("{field}[{k}]"),
                    &json!(k),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
        }
    }
}

/// Normalises a request object before validation (what decoding + PrepareForCreate/Update do).
pub fn prepare(def: &ResourceDef, old: Option<&Value>, obj: &mut Value) -> ApiResult<()> {
    if def.custom {
        return Ok(());
    }
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Secret") => prepare_secret(def, obj),
        ("", "Namespace") => {
            let name = meta_str(obj, "name").to_string();
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                let labels = m
                    .entry("labels")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(l) = labels.as_object_mut() {
                    l.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
            }
            match old {
                None => {
                    obj["spec"] = json!({"finalizers": ["kubernetes"]});
                    obj["status"] = json!({"phase": "Active"});
                }
                Some(o) => {
                    // spec.finalizers only changes through the finalize subresource.
                    obj["spec"] = o.get("spec").cloned().unwrap_or_else(|| json!({}));
                }
            }
            Ok(())
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            crate::apiserver::crd::prepare(old, obj);
            Ok(())
        }
        ("", "Service") => {
            workloads::prepare_service(old, obj);
            Ok(())
        }
        ("apps", "Deployment") => {
            workloads::prepare_deployment(obj);
            Ok(())
        }
        _ => Ok(()),
    }
}

fn prepare_secret(def: &ResourceDef, obj: &mut Value) -> ApiResult<()> {
    let cannot = |e: String| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            def.kind, def.version, def.kind
        ))
    };
    if let Some(data) = obj.get("data").and_then(Value::as_object) {
        for v in data.values() {
            match v {
                Value::String(s) => {
                    B64.decode(s.as_bytes())
                        .map_err(|e| cannot(format!("illegal base64 data: {e}")))?;
                }
                Value::Null => {}
                _ => return Err(cannot("data values must be base64-encoded strings".into())),
            }
        }
    }
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
        if !obj.get("data").is_some_and(Value::is_object) {
            obj["data"] = json!({});
        }
        for (k, v) in sd {
            let s = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            obj["data"][k] = Value::String(B64.encode(s.as_bytes()));
        }
    }
    if obj
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        obj["type"] = json!("Opaque");
    }
    Ok(())
}

/// Type-specific validation beyond ObjectMeta.
pub fn validate(def: &ResourceDef, old: Option<&Value>, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if def.custom {
        return errs;
    }
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Secret") => validate_secret(old, obj, &mut errs),
        ("", "ConfigMap") => {
            key_errors(obj, "data", &mut errs);
            key_errors(obj, "binaryData", &mut errs);
            if let (Some(d), Some(b)) = (
                obj.get("data").and_then(Value::as_object),
                obj.get("binaryData").and_then(Value::as_object),
            ) {
                for k in d.keys().filter(|k| b.contains_key(*k)) {
                    errs.push(FieldError::invalid(
                        &format!("data[{k}]"),
                        &json!(k),
                        "duplicate of key present in binaryData",
                    ));
                }
            }
            immutable_data(old, obj, &["data", "binaryData"], &mut errs);
        }
        ("coordination.k8s.io", "Lease") => {
            if let Some(n) = obj
                .pointer("/spec/leaseDurationSeconds")
                .and_then(Value::as_i64)
            {
                if n <= 0 {
                    errs.push(FieldError::invalid(
                        "spec.leaseDurationSeconds",
                        &json!(n),
                        "must be greater than 0",
                    ));
                }
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            errs.extend(crate::apiserver::crd::validate(old, obj));
        }
        ("", "Service") => workloads::validate_service(obj, &mut errs),
        ("apps", "Deployment") => workloads::validate_deployment(old, obj, &mut errs),
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            workloads::validate_binding(false, old, obj, &mut errs)
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            workloads::validate_binding(true, old, obj, &mut errs)
        }
        ("rbac.authorization.k8s.io", "Role") => workloads::validate_role(false, obj, &mut errs),
        ("rbac.authorization.k8s.io", "ClusterRole") => {
            workloads::validate_role(true, obj, &mut errs)
        }
        _ => {}
    }
    errs
}

fn immutable_data(old: Option<&Value>, obj: &Value, fields: &[&str], errs: &mut Vec<FieldError>) {
    let Some(old) = old else { return };
    if old.get("immutable") == Some(&Value::Bool(true)) {
        let changed = fields.iter().any(|f| old.get(*f) != obj.get(*f));
        if changed {
            errs.push(FieldError::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
        if obj.get("immutable") != Some(&Value::Bool(true)) {
            errs.push(FieldError::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

fn validate_secret(old: Option<&Value>, obj: &Value, errs: &mut Vec<FieldError>) {
    key_errors(obj, "data", errs);
    let ty = obj.get("type").and_then(Value::as_str).unwrap_or("Opaque");
    let has = |k: &str| obj.get("data").and_then(|d| d.get(k)).is_some();
    let data_field = |k: &str| format!("data[{k}]");
    match ty {
        "kubernetes.io/service-account-token" => {
            let ann = obj
                .pointer("/metadata/annotations")
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if ann.is_empty() {
                errs.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson" => {
            let key = if ty == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            match obj
                .get("data")
                .and_then(|d| d.get(key))
                .and_then(Value::as_str)
            {
                None => errs.push(FieldError::required(&data_field(key), "")),
                Some(b) => {
                    let ok = B64
                        .decode(b.as_bytes())
                        .ok()
                        .and_then(|raw| {
                            serde_json::from_slice::<serde_json::Map<String, Value>>(&raw).ok()
                        })
                        .is_some();
                    if !ok {
                        errs.push(FieldError::invalid(
                            &data_field(key),
                            &json!("<secret contents redacted>"),
                            "invalid character looking for beginning of value",
                        ));
                    }
                }
            }
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(FieldError::required(&data_field("username"), ""));
            errs.push(FieldError::required(&data_field("password"), ""));
        }
        "kubernetes.io/ssh-auth" => {
            let empty = obj
                .get("data")
                .and_then(|d| d.get("ssh-privatekey"))
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if empty {
                errs.push(FieldError::required(&data_field("ssh-privatekey"), ""));
            }
        }
        "kubernetes.io/tls" => {
            if !has("tls.crt") {
                errs.push(FieldError::required(&data_field("tls.crt"), ""));
            }
            if !has("tls.key") {
                errs.push(FieldError::required(&data_field("tls.key"), ""));
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        let old_ty = old.get("type").and_then(Value::as_str).unwrap_or("Opaque");
        if old_ty != ty {
            errs.push(FieldError::invalid(
                "type",
                &json!(ty),
                "field is immutable",
            ));
        }
    }
    immutable_data(old, obj, &["data"], errs);
    let total: usize = obj
        .get("data")
        .and_then(Value::as_object)
        .map(|m| {
            m.values()
                .filter_map(Value::as_str)
                .map(|s| s.len() * 3 / 4)
                .sum()
        })
        .unwrap_or(0);
    if total > 1024 * 1024 {
        errs.push(FieldError::too_long("data", 1024 * 1024));
    }
}

/// (core/v1 field, events.k8s.io/v1 field) pairs that differ only in name.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("related", "related"),
    ("message", "note"),
    ("reason", "reason"),
    ("type", "type"),
    ("action", "action"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("reportingComponent", "reportingController"),
    ("reportingInstance", "reportingInstance"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn convert_event(obj: &Value, from_core: bool, api_version: &str) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    if let Some(m) = obj.get("metadata") {
        out.insert("metadata".into(), m.clone());
    }
    for (core, v1) in EVENT_FIELDS {
        let (src, dst) = if from_core { (core, v1) } else { (v1, core) };
        if let Some(v) = obj.get(*src) {
            if !v.is_null() {
                out.insert(dst.to_string(), v.clone());
            }
        }
    }
    Value::Object(out)
}

pub fn core_event_to_v1(obj: &Value) -> Value {
    convert_event(obj, true, "events.k8s.io/v1")
}

pub fn v1_event_to_core(obj: &Value) -> Value {
    convert_event(obj, false, "v1")
}

/// The create-time rules events.k8s.io/v1 adds on top of core Events.
pub fn validate_event_v1(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
    if s("eventTime").is_empty() {
        errs.push(FieldError::required("eventTime", ""));
    }
    match s("type") {
        "Normal" | "Warning" => {}
        t => errs.push(FieldError::invalid(
            "type",
            &json!(t),
            &format!("has invalid value: {t}"),
        )),
    }
    for (field, max) in [
        ("reportingController", 253),
        ("reportingInstance", 128),
        ("action", 128),
        ("reason", 128),
    ] {
        let v = s(field);
        if v.is_empty() {
            errs.push(FieldError::required(field, ""));
        } else if v.len() > max {
            errs.push(FieldError::too_long(field, max));
        }
    }
    if s("note").len() > 1024 {
        errs.push(FieldError::too_long("note", 1024));
    }
    errs
}

const META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Known top-level fields, and the known children of some of them.
type KnownFields = (
    &'static [&'static str],
    &'static [(&'static str, &'static [&'static str])],
);

/// Top-level fields of the emulated built-in kinds, plus the known children of the
/// structured ones (`None` = not checked further).
fn known_fields(def: &ResourceDef) -> Option<KnownFields> {
    const NONE: &[(&str, &[&str])] = &[];
    let f: (
        &'static [&'static str],
        &'static [(&'static str, &'static [&'static str])],
    ) = match (def.group.as_str(), def.kind.as_str()) {
        ("", "Namespace") => (
            &["spec", "status"],
            &[
                ("spec", &["finalizers"]),
                ("status", &["phase", "conditions"]),
            ],
        ),
        ("", "ConfigMap") => (&["data", "binaryData", "immutable"], NONE),
        ("", "Secret") => (&["data", "stringData", "type", "immutable"], NONE),
        ("", "ServiceAccount") => (
            &[
                "secrets",
                "imagePullSecrets",
                "automountServiceAccountToken",
            ],
            NONE,
        ),
        ("", "Event") => (
            &[
                "involvedObject",
                "reason",
                "message",
                "source",
                "firstTimestamp",
                "lastTimestamp",
                "count",
                "type",
                "eventTime",
                "series",
                "action",
                "related",
                "reportingComponent",
                "reportingInstance",
            ],
            NONE,
        ),
        ("events.k8s.io", "Event") => (
            &[
                "eventTime",
                "series",
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
                "regarding",
                "related",
                "note",
                "type",
                "deprecatedSource",
                "deprecatedFirstTimestamp",
                "deprecatedLastTimestamp",
                "deprecatedCount",
            ],
            NONE,
        ),
        ("coordination.k8s.io", "Lease") => (
            &["spec"],
            &[(
                "spec",
                &[
                    "holderIdentity",
                    "leaseDurationSeconds",
                    "acquireTime",
                    "renewTime",
                    "leaseTransitions",
                    "strategy",
                    "preferredHolder",
                ],
            )],
        ),
        ("", "Service") | ("apps", "Deployment") => (&["spec", "status"], NONE),
        ("rbac.authorization.k8s.io", "Role") => (&["rules"], NONE),
        ("rbac.authorization.k8s.io", "ClusterRole") => (&["rules", "aggregationRule"], NONE),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            (&["subjects", "roleRef"], NONE)
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => (
            &["spec", "status"],
            &[(
                "spec",
                &[
                    "group",
                    "names",
                    "scope",
                    "versions",
                    "conversion",
                    "preserveUnknownFields",
                ],
            )],
        ),
        _ => return None,
    };
    Some(f)
}

/// Drops fields a typed decoder would not know and returns their paths, as the real server's
/// strict decoding reports them.
pub fn prune_unknown(def: &ResourceDef, obj: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    let Some((top, nested)) = known_fields(def) else {
        return unknown;
    };
    let Some(m) = obj.as_object_mut() else {
        return unknown;
    };
    m.retain(|k, _| {
        let ok =
            matches!(k.as_str(), "apiVersion" | "kind" | "metadata") || top.contains(&k.as_str());
        if !ok {
            unknown.push(k.clone());
        }
        ok
    });
    if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| {
            let ok = META_FIELDS.contains(&k.as_str());
            if !ok {
                unknown.push(format!("metadata.{k}"));
            }
            ok
        });
    }
    for (field, children) in nested {
        if let Some(sub) = m.get_mut(*field).and_then(Value::as_object_mut) {
            sub.retain(|k, _| {
                let ok = children.contains(&k.as_str());
                if !ok {
                    unknown.push(format!("{field}.{k}"));
                }
                ok
            });
        }
    }
    unknown.sort();
    unknown
}

/// Type errors a typed JSON decoder reports (400 "cannot be handled as a ...").
pub fn decode_errors(def: &ResourceDef, obj: &Value) -> Option<String> {
    let micro_times: &[&str] = match (def.group.as_str(), def.kind.as_str()) {
        ("coordination.k8s.io", "Lease") => &["/spec/acquireTime", "/spec/renewTime"],
        ("", "Event") | ("events.k8s.io", "Event") => &["/eventTime", "/series/lastObservedTime"],
        _ => &[],
    };
    for ptr in micro_times {
        if let Some(Value::String(t)) = obj.pointer(ptr) {
            if let Some(e) = micro_time_error(t) {
                return Some(e);
            }
        }
    }
    let string_maps: &[&str] = match (def.group.as_str(), def.kind.as_str()) {
        ("", "ConfigMap") => &["data", "binaryData"],
        ("", "Secret") => &["stringData"],
        _ => &[],
    };
    for f in string_maps {
        match obj.get(*f) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                if let Some((_, v)) = m.iter().find(|(_, v)| !v.is_string()) {
                    return Some(format!(
                        "json: cannot unmarshal {} into Go struct field {}.{f} of type string",
                        go_json_type(v),
                        def.kind
                    ));
                }
            }
            Some(v) => {
                return Some(format!(
                "json: cannot unmarshal {} into Go struct field {}.{f} of type map[string]string",
                go_json_type(v),
                def.kind
            ))
            }
        }
    }
    for f in ["labels", "annotations"] {
        if let Some(Value::Object(m)) = obj.pointer(&format!("/metadata/{f}")) {
            if let Some((_, v)) = m.iter().find(|(_, v)| !v.is_string() && !v.is_null()) {
                return Some(format!(
                    "json: cannot unmarshal {} into Go struct field ObjectMeta.metadata.{f} of type string",
                    go_json_type(v)
                ));
            }
        }
    }
    None
}

fn go_json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// metav1.MicroTime only decodes RFC 3339 with exactly six fractional digits.
fn micro_time_error(t: &str) -> Option<String> {
    const LAYOUT: &str = "2006-01-02T15:04:05.000000Z07:00";
    let b = t.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    let date_ok = b.len() >= 19
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !date_ok {
        return Some(format!(
            "parsing time \"{t}\" as \"{LAYOUT}\": cannot parse \"{t}\" as \"2006\""
        ));
    }
    let rest = &t[19..];
    let frac_ok = rest.len() >= 7 && rest.starts_with('.') && digits(20..26);
    if !frac_ok {
        return Some(format!(
            "parsing time \"{t}\" as \"{LAYOUT}\": cannot parse \"{rest}\" as \".000000\""
        ));
    }
    let zone = &rest[7..];
    let zone_ok = zone == "Z"
        || (zone.len() == 6
            && (zone.starts_with('+') || zone.starts_with('-'))
            && zone.as_bytes()[3] == b':');
    if !zone_ok {
        return Some(format!(
            "parsing time \"{t}\" as \"{LAYOUT}\": cannot parse \"{zone}\" as \"Z07:00\""
        ));
    }
    None
}

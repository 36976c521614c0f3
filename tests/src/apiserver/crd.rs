//! CustomResourceDefinition strategy and the "controllers" that establish, serve and clean up
//! custom resources.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::apiserver::resources::{ResourceDef, ALL_VERBS};
use crate::apiserver::schema::{FieldError, TypeInfo};
use crate::apiserver::ssa;
use crate::apiserver::store::{meta_str, Store};
use crate::apiserver::table::Column;

pub const CRD_GR: &str = "customresourcedefinitions.apiextensions.k8s.io";
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// Defaulting of `apiextensions.k8s.io/v1` plus PrepareForCreate/Update.
pub fn prepare(old: Option<&Value>, obj: &mut Value) {
    let kind = s(obj, "/spec/names/kind").to_string();
    if let Some(names) = obj
        .pointer_mut("/spec/names")
        .and_then(Value::as_object_mut)
    {
        if names
            .get("singular")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            names.insert("singular".into(), json!(kind.to_lowercase()));
        }
        if names
            .get("listKind")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
            && !kind.is_empty()
        {
            names.insert("listKind".into(), json!(format!("{kind}List")));
        }
    }
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("conversion")
            .or_insert_with(|| json!({"strategy": "None"}));
    }
    if old.is_none() {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
        let mut fins: Vec<Value> = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !fins.iter().any(|f| f == CLEANUP_FINALIZER) {
            fins.push(json!(CLEANUP_FINALIZER));
        }
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("finalizers".into(), Value::Array(fins));
        }
    }
}

pub fn validate(old: Option<&Value>, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let group = s(obj, "/spec/group");
    let plural = s(obj, "/spec/names/plural");
    let kind = s(obj, "/spec/names/kind");
    let name = meta_str(obj, "name");
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else if !group.contains('.') {
        errs.push(FieldError::invalid(
            "spec.group",
            &json!(group),
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    }
    if kind.is_empty() {
        errs.push(FieldError::required("spec.names.kind", ""));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    match s(obj, "/spec/scope") {
        "Namespaced" | "Cluster" => {}
        "" => errs.push(FieldError::required("spec.scope", "")),
        other => errs.push(FieldError::not_supported(
            "spec.scope",
            &json!(other),
            &["Cluster".to_string(), "Namespaced".to_string()],
        )),
    }
    let versions = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::invalid(
            "spec.versions",
            &json!([]),
            "must have exactly one version marked as storage version",
        ));
    } else {
        let storage = versions
            .iter()
            .filter(|v| v.get("storage") == Some(&Value::Bool(true)))
            .count();
        if storage != 1 {
            errs.push(FieldError::invalid(
                "spec.versions",
                &Value::Array(versions.clone()),
                "must have exactly one version marked as storage version",
            ));
        }
        for (i, v) in versions.iter().enumerate() {
            if v.pointer("/schema/openAPIV3Schema").is_none() {
                errs.push(FieldError::required(
                    &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                    "schemas are required",
                ));
            }
        }
    }
    if let Some(old) = old {
        let old_scope = s(old, "/spec/scope");
        if !old_scope.is_empty() && old_scope != s(obj, "/spec/scope") {
            errs.push(FieldError::invalid(
                "spec.scope",
                &json!(s(obj, "/spec/scope")),
                "field is immutable",
            ));
        }
    }
    errs
}

/// The ResourceDefs a CRD serves (one per served version).
pub fn defs(crd: &Value) -> Vec<ResourceDef> {
    let group = s(crd, "/spec/group").to_string();
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let strs = |k: &str| -> Vec<String> {
        names
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let kind = s(&names, "/kind").to_string();
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    versions
        .iter()
        .filter(|v| v.get("served") == Some(&Value::Bool(true)))
        .map(|v| {
            let schema = v.pointer("/schema/openAPIV3Schema").cloned();
            // With none declared, the table builder serves the default Age column itself.
            let columns: Vec<Column> = v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .map(|cols| {
                    cols.iter()
                        .filter_map(Column::from_crd_printer_column)
                        .collect()
                })
                .unwrap_or_default();
            ResourceDef {
                group: group.clone(),
                version: s(v, "/name").to_string(),
                plural: s(&names, "/plural").to_string(),
                singular: match s(&names, "/singular") {
                    "" => kind.to_lowercase(),
                    x => x.to_string(),
                },
                kind: kind.clone(),
                list_kind: match s(&names, "/listKind") {
                    "" => format!("{kind}List"),
                    x => x.to_string(),
                },
                namespaced: s(crd, "/spec/scope") == "Namespaced",
                short_names: strs("shortNames"),
                categories: strs("categories"),
                verbs: ALL_VERBS.iter().map(|v| v.to_string()).collect(),
                status_subresource: v.pointer("/subresources/status").is_some(),
                types: schema
                    .as_ref()
                    .map(TypeInfo::from_schema)
                    .unwrap_or_default(),
                schema,
                columns,
                custom: true,
                selectable_fields: v
                    .get("selectableFields")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                            .map(|p| p.trim_start_matches('.').to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
                has_generation: true,
            }
        })
        .collect()
}

fn condition(ty: &str, status: &str, reason: &str, message: &str, now: &str, old: &Value) -> Value {
    let prev = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
        });
    let since = match prev {
        Some(p) if p.get("status").and_then(Value::as_str) == Some(status) => p
            .get("lastTransitionTime")
            .cloned()
            .unwrap_or_else(|| json!(now)),
        _ => json!(now),
    };
    json!({"type": ty, "status": status, "lastTransitionTime": since, "reason": reason, "message": message})
}

/// Names another CRD already serves in this group, which makes ours not acceptable.
fn name_conflict(store: &Store, crd: &Value) -> Option<String> {
    let me = meta_str(crd, "name");
    let group = s(crd, "/spec/group");
    let names = |c: &Value| -> Vec<String> {
        let mut v = vec![
            s(c, "/spec/names/plural").to_string(),
            s(c, "/spec/names/singular").to_string(),
        ];
        if let Some(a) = c
            .pointer("/spec/names/shortNames")
            .and_then(Value::as_array)
        {
            v.extend(a.iter().filter_map(Value::as_str).map(str::to_string));
        }
        v.retain(|x| !x.is_empty());
        v
    };
    let mine = names(crd);
    for (_, other) in store.list(CRD_GR, None, None) {
        if meta_str(&other, "name") == me || s(&other, "/spec/group") != group {
            continue;
        }
        let theirs = names(&other);
        if let Some(n) = mine.iter().find(|n| theirs.contains(n)) {
            return Some(format!("\"{n}\" is already in use"));
        }
        if s(&other, "/spec/names/kind") == s(crd, "/spec/names/kind") {
            return Some(format!(
                "\"{}\" is already in use",
                s(crd, "/spec/names/kind")
            ));
        }
    }
    None
}

/// Brings a CRD's served resources and status in line with its spec, like the
/// establishing/naming controllers; writes the status as a separate update (MODIFIED event).
pub fn reconcile(store: &mut Store, crd_name: &str, now: &str) {
    let Some(crd) = store.get(CRD_GR, "", crd_name) else {
        return;
    };
    let group = s(&crd, "/spec/group").to_string();
    let plural = s(&crd, "/spec/names/plural").to_string();
    let terminating = crd.pointer("/metadata/deletionTimestamp").is_some();
    let conflict = name_conflict(store, &crd);
    let mut conditions = Vec::new();
    if let Some(c) = &conflict {
        conditions.push(condition(
            "NamesAccepted",
            "False",
            "NameConflict",
            c,
            now,
            &crd,
        ));
        conditions.push(condition(
            "Established",
            "False",
            "NotAccepted",
            "not all names are accepted",
            now,
            &crd,
        ));
    } else {
        if !terminating {
            store.registry.remove_gr(&group, &plural);
            for d in defs(&crd) {
                store.registry.add(Arc::new(d));
            }
        }
        conditions.push(condition(
            "NamesAccepted",
            "True",
            "NoConflicts",
            "no conflicts found",
            now,
            &crd,
        ));
        conditions.push(condition(
            "Established",
            "True",
            "InitialNamesAccepted",
            "the initial names have been accepted",
            now,
            &crd,
        ));
    }
    if terminating {
        conditions.push(condition(
            "Terminating",
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
            now,
            &crd,
        ));
    }
    let mut stored: Vec<Value> = crd
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(sv) = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .find(|v| v.get("storage") == Some(&Value::Bool(true)))
        })
        .and_then(|v| v.get("name"))
    {
        if !stored.contains(sv) {
            stored.push(sv.clone());
        }
    }
    let mut accepted = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    if conflict.is_some() {
        accepted = crd
            .pointer("/status/acceptedNames")
            .cloned()
            .unwrap_or(json!({"plural": "", "kind": ""}));
    }
    let status = json!({
        "conditions": conditions,
        "acceptedNames": accepted,
        "storedVersions": stored,
    });
    if crd.get("status") == Some(&status) {
        return;
    }
    let mut new = (*crd).clone();
    new["status"] = status;
    let types = TypeInfo::builtin("apiextensions.k8s.io/v1", "CustomResourceDefinition");
    let new = ssa::record_update(
        Some(&crd),
        new,
        "kube-apiserver",
        "apiextensions.k8s.io/v1",
        &types,
        now,
        Some("status"),
    );
    store.put(CRD_GR, new);
}

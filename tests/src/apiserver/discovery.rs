//! Legacy (unaggregated) discovery documents and the minimal OpenAPI v3 that kubectl's
//! field-validation probe needs.

use serde_json::{json, Value};

use crate::apiserver::openapi_builtin;
use crate::apiserver::resources::{Registry, ResourceDef};

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        "goVersion": "go1.23.3",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn api_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

fn group_doc(reg: &Registry, group: &str) -> Value {
    let versions: Vec<Value> = reg
        .versions(group)
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(json!({}));
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

pub fn api_group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg.groups().iter().map(|g| group_doc(reg, g)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(reg: &Registry, group: &str) -> Option<Value> {
    if reg.versions(group).is_empty() {
        return None;
    }
    let mut g = group_doc(reg, group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

fn resource_entries(d: &ResourceDef) -> Vec<Value> {
    let mut main = json!({
        "name": d.plural,
        "singularName": d.singular,
        "namespaced": d.namespaced,
        "kind": d.kind,
        "verbs": d.verbs,
    });
    if !d.short_names.is_empty() {
        main["shortNames"] = json!(d.short_names);
    }
    if !d.categories.is_empty() {
        main["categories"] = json!(d.categories);
    }
    let mut out = vec![main];
    if d.status_subresource {
        out.push(json!({
            "name": format!("{}/status", d.plural),
            "singularName": "",
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    if d.kind == "Deployment" && d.group == "apps" {
        out.push(json!({
            "name": format!("{}/scale", d.plural),
            "singularName": "",
            "namespaced": true,
            "group": "autoscaling",
            "version": "v1",
            "kind": "Scale",
            "verbs": ["get", "patch", "update"],
        }));
    }
    if d.kind == "Namespace" && d.group.is_empty() {
        out.push(json!({
            "name": "namespaces/finalize",
            "singularName": "",
            "namespaced": false,
            "kind": "Namespace",
            "verbs": ["update"],
        }));
    }
    out
}

pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    if !reg.has_group_version(group, version) {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let resources: Vec<Value> = reg
        .resources(group, version)
        .iter()
        .flat_map(|d| resource_entries(d))
        .collect();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per group-version.
pub fn openapi_v3_root(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs = vec![(String::new(), "v1".to_string())];
    for g in reg.groups() {
        for v in reg.versions(&g) {
            gvs.push((g.clone(), v));
        }
    }
    for (g, v) in gvs {
        let p = gv_path(&g, &v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={:016X}", reg.generation)}),
        );
    }
    json!({"paths": paths})
}

/// A per-group-version OpenAPI v3 document. It carries the PATCH operations with their GVK and
/// the `fieldValidation` parameter (so kubectl delegates validation to the server) and the CRD
/// schemas; it deliberately advertises no strategic-merge request body, so kubectl's
/// client-side apply falls back to its compiled-in type information as it would for
/// anything it cannot resolve.
pub fn openapi_v3_gv(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    if !reg.has_group_version(group, version) {
        return None;
    }
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for d in reg.resources(group, version) {
        let item = if d.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
        } else {
            format!("{prefix}/{}/{{name}}", d.plural)
        };
        let gvk = json!({"group": d.group, "version": d.version, "kind": d.kind});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
            {"name": "force", "in": "query", "schema": {"type": "boolean"}},
        ]);
        paths.insert(
            item,
            json!({
                "patch": {
                    "operationId": format!("patch{}", d.kind),
                    "parameters": params,
                    "responses": {"200": {"description": "OK"}},
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                },
                "put": {
                    "operationId": format!("replace{}", d.kind),
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "OK"}},
                    "x-kubernetes-action": "put",
                    "x-kubernetes-group-version-kind": gvk,
                },
            }),
        );
        let mut schema = d
            .schema
            .clone()
            .or_else(|| openapi_builtin::schema(&d.group, &d.kind))
            .unwrap_or_else(|| json!({"type": "object"}));
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        let rev_group: String = match (d.custom, d.group.as_str()) {
            (false, "") => "io.k8s.api.core".into(),
            (false, g) => format!("io.k8s.api.{}", g.split('.').next().unwrap_or(g)),
            (true, g) => g.split('.').rev().collect::<Vec<_>>().join("."),
        };
        if !d.custom {
            schemas
                .entry(openapi_builtin::OBJECT_META.to_string())
                .or_insert_with(openapi_builtin::object_meta);
        }
        schemas.insert(format!("{rev_group}.{}.{}", d.version, d.kind), schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

fn aggregated_resource(d: &ResourceDef) -> Value {
    let kind = json!({"group": d.group, "version": d.version, "kind": d.kind});
    let mut r = json!({
        "resource": d.plural,
        "responseKind": kind,
        "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": d.singular,
        "verbs": d.verbs,
    });
    if !d.short_names.is_empty() {
        r["shortNames"] = json!(d.short_names);
    }
    if !d.categories.is_empty() {
        r["categories"] = json!(d.categories);
    }
    let mut subs = Vec::new();
    if d.status_subresource {
        subs.push(json!({"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]}));
    }
    if d.kind == "Deployment" && d.group == "apps" {
        subs.push(json!({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]}));
    }
    if d.kind == "Namespace" && d.group.is_empty() {
        subs.push(json!({"subresource": "finalize", "responseKind": kind, "verbs": ["update"]}));
    }
    if !subs.is_empty() {
        r["subresources"] = Value::Array(subs);
    }
    r
}

fn aggregated_group(reg: &Registry, group: &str) -> Value {
    let versions: Vec<Value> = reg
        .versions(group)
        .iter()
        .map(|v| {
            let resources: Vec<Value> = reg
                .resources(group, v)
                .iter()
                .map(|d| aggregated_resource(d))
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let mut meta = json!({"creationTimestamp": null});
    if !group.is_empty() {
        meta["name"] = json!(group);
    }
    json!({"metadata": meta, "versions": versions})
}

/// `APIGroupDiscoveryList` (aggregated discovery) for `/api` (core) or `/apis` (named groups).
pub fn aggregated(reg: &Registry, core: bool, api_version: &str) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group(reg, "")]
    } else {
        reg.groups()
            .iter()
            .map(|g| aggregated_group(reg, g))
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": items,
    })
}

/// Which aggregated discovery version the Accept header asks for, if any (first match wins).
pub fn wants_aggregated(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let params: Vec<(&str, &str)> = part
            .split(';')
            .skip(1)
            .filter_map(|p| p.trim().split_once('='))
            .collect();
        let get = |k: &str| params.iter().find(|(a, _)| *a == k).map(|(_, b)| *b);
        if get("as") == Some("APIGroupDiscoveryList") && get("g") == Some("apidiscovery.k8s.io") {
            match get("v") {
                Some("v2") => return Some("v2"),
                Some("v2beta1") => return Some("v2beta1"),
                _ => {}
            }
        }
        if part.split(';').next().map(str::trim) == Some("application/json") && get("as").is_none()
        {
            return None;
        }
    }
    None
}

/// Protobuf encoding helpers for the gnostic OpenAPI v2 document.
fn pb_len(field: u32, payload: &[u8], out: &mut Vec<u8>) {
    let varint = |mut v: u64, out: &mut Vec<u8>| loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    };
    varint(u64::from(field) << 3 | 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

fn pb_msg(fields: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (f, p) in fields {
        pb_len(*f, p, &mut out);
    }
    out
}

/// `(path, gvk)` of every PATCH operation that takes `fieldValidation`.
fn patch_paths(reg: &Registry) -> Vec<(String, ResourceDef)> {
    let mut out = Vec::new();
    let mut gvs = vec![(String::new(), "v1".to_string())];
    for g in reg.groups() {
        for v in reg.versions(&g) {
            gvs.push((g.clone(), v));
        }
    }
    for (g, v) in gvs {
        let prefix = if g.is_empty() {
            format!("/api/{v}")
        } else {
            format!("/apis/{g}/{v}")
        };
        for d in reg.resources(&g, &v) {
            let path = if d.namespaced {
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
            } else {
                format!("{prefix}/{}/{{name}}", d.plural)
            };
            out.push((path, (*d).clone()));
        }
    }
    out
}

/// `/openapi/v2` as kubectl's query-parameter verifier reads it: PATCH operations with their
/// GVK and the `fieldValidation` parameter (no definitions, so no client-side schema checks).
pub fn openapi_v2_protobuf(reg: &Registry) -> Vec<u8> {
    let mut paths = Vec::new();
    for (path, d) in patch_paths(reg) {
        let query = pb_msg(&[
            (2, b"query".to_vec()),
            (4, b"fieldValidation".to_vec()),
            (6, b"string".to_vec()),
        ]);
        let param = pb_msg(&[(1, pb_msg(&[(2, pb_msg(&[(3, query)]))]))]);
        let gvk = format!(
            "group: \"{}\"\nkind: {}\nversion: {}\n",
            d.group, d.kind, d.version
        );
        let ext = pb_msg(&[
            (1, b"x-kubernetes-group-version-kind".to_vec()),
            (2, pb_msg(&[(2, gvk.into_bytes())])),
        ]);
        let op = pb_msg(&[
            (5, format!("patch{}", d.kind).into_bytes()),
            (8, param),
            (13, ext),
        ]);
        let item = pb_msg(&[(8, op)]);
        paths.push((2, pb_msg(&[(1, path.into_bytes()), (2, item)])));
    }
    pb_msg(&[
        (1, b"2.0".to_vec()),
        (
            2,
            pb_msg(&[(1, b"Kubernetes".to_vec()), (2, b"v1.32.0".to_vec())]),
        ),
        (8, pb_msg(&paths)),
    ])
}

/// The same document in JSON, for clients that ask for it.
pub fn openapi_v2_json(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (path, d) in patch_paths(reg) {
        paths.insert(
            path,
            json!({"patch": {
                "operationId": format!("patch{}", d.kind),
                "parameters": [{"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true}],
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": d.group, "kind": d.kind, "version": d.version},
            }}),
        );
    }
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths, "definitions": {}})
}

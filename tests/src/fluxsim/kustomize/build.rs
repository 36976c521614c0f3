//! kustomize-controller's build and apply: post-build variables, the manifests of `spec.path`
//! at the source's commit, and server-side apply in Flux's order.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::super::apply::{self, ObjRef};
use super::super::manifests::{BuildError, Builder};
use super::super::object::FluxObject;
use super::super::{FluxKind, Key, Shared};
use super::same_object;

/// postBuild variables: inline ones override those from ConfigMaps/Secrets, as in Flux.
async fn variables(
    shared: &Shared,
    key: &Key,
    o: &FluxObject,
) -> Result<Option<BTreeMap<String, String>>, BuildError> {
    let post_build = &o.spec()["postBuild"];
    if post_build.is_null() {
        return Ok(None);
    }
    let mut vars = BTreeMap::new();
    for from in post_build["substituteFrom"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let kind = from["kind"].as_str().unwrap_or_default();
        let name = from["name"].as_str().unwrap_or_default();
        let optional = from["optional"].as_bool().unwrap_or(false);
        let data = match kind {
            "ConfigMap" => {
                let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                    kube::Api::namespaced(shared.client.clone(), &key.namespace);
                api.get_opt(name)
                    .await
                    .map_err(|e| BuildError::Build(e.to_string()))?
                    .map(|cm| cm.data.unwrap_or_default())
            }
            "Secret" => {
                let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                    kube::Api::namespaced(shared.client.clone(), &key.namespace);
                api.get_opt(name)
                    .await
                    .map_err(|e| BuildError::Build(e.to_string()))?
                    .map(|s| {
                        s.data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                            .collect()
                    })
            }
            other => {
                return Err(BuildError::Build(format!(
                    "substituteFrom kind '{other}' is not supported"
                )))
            }
        };
        match data {
            Some(d) => vars.extend(d),
            None if optional => {}
            None => {
                return Err(BuildError::Build(format!(
                    "substitute from '{kind}/{name}' error: {kind} \"{name}\" not found"
                )))
            }
        }
    }
    if let Some(inline) = post_build["substitute"].as_object() {
        for (k, v) in inline {
            vars.insert(
                k.clone(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            );
        }
    }
    Ok(Some(vars))
}

pub(super) async fn build(
    shared: &Shared,
    key: &Key,
    o: &FluxObject,
    source_kind: FluxKind,
    source: &FluxObject,
    revision: &str,
) -> Result<Vec<Value>, BuildError> {
    let path = o.spec()["path"].as_str().unwrap_or("./").to_string();
    let vars = variables(shared, key, o).await?.unwrap_or_default();
    // Only git sources resolved from a reachable repository have content we can read; the
    // others (synthetic revisions, buckets, OCI) are an empty tree.
    if source_kind != FluxKind::GitRepository || !revision.contains("sha1:") {
        return Ok(Vec::new());
    }
    let url = source.spec()["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let commit = revision
        .rsplit("sha1:")
        .next()
        .unwrap_or_default()
        .to_string();
    let git = shared.git.clone();
    tokio::task::spawn_blocking(move || {
        if git.locate(&url) == super::super::git::Location::Unreachable {
            return Ok(Vec::new());
        }
        match git.snapshot(&url, &commit)? {
            Some(snapshot) => Builder::new(&snapshot, &vars).build(&path),
            None => Ok(Vec::new()),
        }
    })
    .await
    .map_err(|e| BuildError::Build(format!("build task failed: {e}")))?
}

/// Applies in Flux's order (CRDs and Namespaces first), returning the inventory.
pub(super) async fn apply_all(
    shared: &Shared,
    key: &Key,
    o: &FluxObject,
    mut objects: Vec<Value>,
) -> Result<Vec<ObjRef>, String> {
    let target_ns = o.spec()["targetNamespace"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let rank = |v: &Value| match v["kind"].as_str() {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        _ => 2,
    };
    objects.sort_by_key(rank);
    let mut applied: Vec<ObjRef> = Vec::new();
    for mut obj in objects {
        let (group, version) =
            apply::split_api_version(obj["apiVersion"].as_str().unwrap_or_default());
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if kind.is_empty() || version.is_empty() || name.is_empty() {
            return Err(format!(
                "an object lacks apiVersion, kind or metadata.name: {}",
                truncate(&obj.to_string())
            ));
        }
        let (_, namespaced) = shared
            .resources
            .resolve(&group, &version, &kind)
            .await
            .map_err(|e| format!("{kind}/{name} dry-run failed: no matches for kind \"{kind}\" in version \"{group}/{version}\": {e}"))?;
        if namespaced {
            let own = obj["metadata"]["namespace"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            let ns = target_ns
                .clone()
                .or(own)
                .unwrap_or_else(|| key.namespace.clone());
            obj["metadata"]["namespace"] = json!(ns);
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let labels = &mut obj["metadata"]["labels"];
        if !labels.is_object() {
            *labels = json!({});
        }
        labels[apply::NAME_LABEL] = json!(key.name);
        labels[apply::NAMESPACE_LABEL] = json!(key.namespace);
        let r = shared.resources.apply(&obj).await.map_err(|e| {
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
            let what = if ns.is_empty() {
                format!("{kind}/{name}")
            } else {
                format!("{kind}/{ns}/{name}")
            };
            format!("{what} apply failed: {e}")
        })?;
        if !applied.iter().any(|a| same_object(a, &r)) {
            applied.push(r);
        }
    }
    Ok(applied)
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

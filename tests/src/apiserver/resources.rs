//! The set of served resources: the built-in kinds plus whatever established CRDs add.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::apiserver::schema::TypeInfo;
use crate::apiserver::table::{self, Column};

pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One resource as served under one group/version.
#[derive(Clone, Debug)]
pub struct ResourceDef {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<String>,
    pub status_subresource: bool,
    /// `openAPIV3Schema` of a custom resource version; built-ins are not schema-validated here.
    pub schema: Option<Value>,
    pub columns: Vec<Column>,
    pub types: TypeInfo,
    /// Served from a CRD (unstructured semantics: 415 for strategic merge, no unconditional update).
    pub custom: bool,
    /// Field selectors supported beyond metadata.name/metadata.namespace.
    pub selectable_fields: Vec<String>,
    /// Whether writes bump `metadata.generation` (CRs and CRDs do; ConfigMaps etc. do not).
    pub has_generation: bool,
}

impl ResourceDef {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Storage key shared by every version of the resource. events.k8s.io Events are the
    /// core Events seen through another schema, as in the real server.
    pub fn gr(&self) -> String {
        if self.is_events_v1() {
            return "events".to_string();
        }
        gr_key(&self.group, &self.plural)
    }

    pub fn is_events_v1(&self) -> bool {
        self.group == "events.k8s.io" && self.plural == "events"
    }

    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name"
            || field == "metadata.namespace"
            || self.selectable_fields.iter().any(|f| f == field)
    }
}

pub fn gr_key(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// Orders versions as Kubernetes does: GA before beta before alpha, higher numbers first,
/// non-conforming names last alphabetically.
pub fn version_priority(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u32, u32, u32)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let major: u32 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((3, major, 0));
        }
        let (level, num) = if let Some(n) = tail.strip_prefix("beta") {
            (2, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (1, n)
        } else {
            return None;
        };
        let minor: u32 = num.parse().ok()?;
        Some((level, major, minor))
    }
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => y.0.cmp(&x.0).then(y.1.cmp(&x.1)).then(y.2.cmp(&x.2)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short_names: &[&str],
    status: bool,
) -> ResourceDef {
    let api_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut verbs: Vec<String> = ALL_VERBS.iter().map(|v| v.to_string()).collect();
    if kind == "Namespace" {
        verbs.retain(|v| v != "deletecollection");
    }
    ResourceDef {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: match kind {
            "CustomResourceDefinition" => vec!["api-extensions".into()],
            "Service" | "Deployment" => vec!["all".into()],
            _ => Vec::new(),
        },
        verbs,
        status_subresource: status,
        schema: None,
        columns: table::builtin_columns(kind),
        types: TypeInfo::builtin(&api_version, kind),
        custom: false,
        selectable_fields: match kind {
            "Secret" => vec!["type".into()],
            "Namespace" => vec!["status.phase".into()],
            "Event" if group.is_empty() => [
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            "Event" => [
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "reason",
                "reportingController",
                "type",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            _ => Vec::new(),
        },
        has_generation: matches!(kind, "CustomResourceDefinition" | "Deployment"),
    }
}

pub fn builtins() -> Vec<ResourceDef> {
    vec![
        builtin("", "v1", "namespaces", "Namespace", false, &["ns"], true),
        builtin("", "v1", "configmaps", "ConfigMap", true, &["cm"], false),
        builtin("", "v1", "events", "Event", true, &["ev"], false),
        builtin("", "v1", "secrets", "Secret", true, &[], false),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
        ),
        builtin("", "v1", "services", "Service", true, &["svc"], true),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            false,
        ),
    ]
}

/// Everything currently served, indexed for routing and discovery.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    /// group -> version -> plural -> def. BTreeMaps keep discovery output stable.
    by_gv: BTreeMap<String, BTreeMap<String, BTreeMap<String, Arc<ResourceDef>>>>,
    /// Group order for `/apis` (built-in groups first, then CRD groups in creation order).
    group_order: Vec<String>,
    /// Bumped on every change so discovery/OpenAPI consumers can see a new hash.
    pub generation: u64,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut r = Registry::default();
        for d in builtins() {
            r.add(Arc::new(d));
        }
        r
    }

    pub fn add(&mut self, def: Arc<ResourceDef>) {
        if !def.group.is_empty() && !self.group_order.contains(&def.group) {
            self.group_order.push(def.group.clone());
        }
        self.by_gv
            .entry(def.group.clone())
            .or_default()
            .entry(def.version.clone())
            .or_default()
            .insert(def.plural.clone(), def);
        self.generation += 1;
    }

    /// Removes every version of a group-resource.
    pub fn remove_gr(&mut self, group: &str, plural: &str) {
        if let Some(versions) = self.by_gv.get_mut(group) {
            for res in versions.values_mut() {
                res.remove(plural);
            }
            versions.retain(|_, r| !r.is_empty());
            if versions.is_empty() {
                self.by_gv.remove(group);
                self.group_order.retain(|g| g != group);
            }
        }
        self.generation += 1;
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.by_gv.get(group)?.get(version)?.get(plural).cloned()
    }

    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.by_gv
            .get(group)
            .is_some_and(|v| v.contains_key(version))
    }

    /// Versions of a group, preferred first.
    pub fn versions(&self, group: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .by_gv
            .get(group)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| version_priority(a, b));
        v
    }

    pub fn resources(&self, group: &str, version: &str) -> Vec<Arc<ResourceDef>> {
        self.by_gv
            .get(group)
            .and_then(|m| m.get(version))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Named groups in discovery order.
    pub fn groups(&self) -> Vec<String> {
        self.group_order.clone()
    }

    /// One def per group-resource (the preferred version), for GC and namespace cleanup.
    pub fn all_resources(&self) -> Vec<Arc<ResourceDef>> {
        let mut out: BTreeMap<String, Arc<ResourceDef>> = BTreeMap::new();
        for (group, versions) in &self.by_gv {
            for v in self.versions(group) {
                if let Some(m) = versions.get(&v) {
                    for d in m.values() {
                        out.entry(d.gr()).or_insert_with(|| d.clone());
                    }
                }
            }
        }
        out.into_values().collect()
    }

    /// The preferred def of a group-resource.
    pub fn preferred(&self, group: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.versions(group)
            .iter()
            .find_map(|v| self.get(group, v, plural))
    }

    /// Resolves an ownerReference/involvedObject style `apiVersion` + `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceDef>> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.by_gv
            .get(group)?
            .get(version)?
            .values()
            .find(|d| d.kind == kind)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v = vec!["v1beta1", "v1alpha1", "v2", "v1", "foo", "v1beta2", "v10"];
        v.sort_by(|a, b| version_priority(a, b));
        assert_eq!(
            v,
            vec!["v10", "v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]
        );
    }
}

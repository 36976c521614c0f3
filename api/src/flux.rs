//! The subset of Flux's APIs the controller writes and reads (source-controller v1,
//! kustomize-controller v1, helm-controller v2).
//!
//! Only fields we set or read are modelled; the upstream CRDs in `shared/reference/flux-crds/` are
//! the authority and every object we generate is validated against them in tests.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

pub const SOURCE_GROUP: &str = "source.toolkit.fluxcd.io";
pub const KUSTOMIZE_GROUP: &str = "kustomize.toolkit.fluxcd.io";
pub const HELM_GROUP: &str = "helm.toolkit.fluxcd.io";

/// Finalizer every Flux controller puts on the objects it reconciles.
pub const FLUX_FINALIZER: &str = "finalizers.fluxcd.io";

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalObjectReference {
    pub name: String,
}

/// Status fields shared by the Flux sources.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    pub artifact: Option<Artifact>,
    pub url: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    pub revision: String,
    pub digest: Option<String>,
    pub last_update_time: Option<String>,
    pub path: Option<String>,
    pub url: Option<String>,
}

#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "GitRepository",
    namespaced,
    status = "SourceStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositorySpec {
    pub url: String,
    #[serde(rename = "ref")]
    pub reference: Option<GitRepositoryRef>,
    pub interval: String,
    pub timeout: Option<String>,
    pub secret_ref: Option<LocalObjectReference>,
    pub provider: Option<String>,
    pub suspend: Option<bool>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct GitRepositoryRef {
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub semver: Option<String>,
    pub commit: Option<String>,
}

#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "Bucket",
    namespaced,
    status = "SourceStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct BucketSpec {
    pub provider: Option<String>,
    pub bucket_name: String,
    pub endpoint: String,
    pub insecure: Option<bool>,
    pub interval: String,
    pub timeout: Option<String>,
    pub secret_ref: Option<LocalObjectReference>,
    pub suspend: Option<bool>,
}

#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "OCIRepository",
    plural = "ocirepositories",
    namespaced,
    status = "SourceStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct OCIRepositorySpec {
    pub url: String,
    #[serde(rename = "ref")]
    pub reference: Option<OciRepositoryRef>,
    pub layer_selector: Option<OciLayerSelector>,
    pub verify: Option<OciVerification>,
    pub provider: Option<String>,
    pub insecure: Option<bool>,
    pub service_account_name: Option<String>,
    pub secret_ref: Option<LocalObjectReference>,
    pub cert_secret_ref: Option<LocalObjectReference>,
    pub interval: String,
    pub timeout: Option<String>,
    pub suspend: Option<bool>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct OciRepositoryRef {
    pub tag: Option<String>,
    pub semver: Option<String>,
    pub digest: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OciLayerSelector {
    pub media_type: Option<String>,
    pub operation: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OciVerification {
    pub provider: String,
    pub secret_ref: Option<LocalObjectReference>,
    #[serde(
        rename = "matchOIDCIdentity",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub match_oidc_identity: Vec<OidcIdentityMatch>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct OidcIdentityMatch {
    pub issuer: String,
    pub subject: String,
}

#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kustomize.toolkit.fluxcd.io",
    version = "v1",
    kind = "Kustomization",
    namespaced,
    status = "KustomizationStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationSpec {
    pub source_ref: CrossNamespaceSourceReference,
    pub path: Option<String>,
    pub interval: String,
    pub retry_interval: Option<String>,
    pub timeout: Option<String>,
    pub prune: bool,
    pub force: Option<bool>,
    pub wait: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependencyReference>,
    pub post_build: Option<PostBuild>,
    pub target_namespace: Option<String>,
    pub service_account_name: Option<String>,
    pub suspend: Option<bool>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CrossNamespaceSourceReference {
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DependencyReference {
    pub name: String,
    pub namespace: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PostBuild {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub substitute: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substitute_from: Vec<SubstituteReference>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SubstituteReference {
    pub kind: String,
    pub name: String,
    pub optional: Option<bool>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationStatus {
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    pub last_applied_revision: Option<String>,
    pub last_attempted_revision: Option<String>,
    pub inventory: Option<ResourceInventory>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceInventory {
    #[serde(default)]
    pub entries: Vec<ResourceRef>,
}

/// One inventory entry: `id` is `<namespace>_<name>_<group>_<kind>`, `v` the version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceRef {
    pub id: String,
    pub v: String,
}

/// An inventory id split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventoryId {
    pub namespace: String,
    pub name: String,
    pub group: String,
    pub kind: String,
}

impl ResourceRef {
    /// Parses `<namespace>_<name>_<group>_<kind>`. Kubernetes names cannot contain `_`, so the
    /// split is unambiguous; cluster-scoped objects have an empty namespace.
    pub fn parse_id(&self) -> Option<InventoryId> {
        let mut parts = self.id.splitn(4, '_');
        let namespace = parts.next()?.to_string();
        let name = parts.next()?.to_string();
        let group = parts.next()?.to_string();
        let kind = parts.next()?.to_string();
        if name.is_empty() || kind.is_empty() {
            return None;
        }
        Some(InventoryId {
            namespace,
            name,
            group,
            kind,
        })
    }
}

#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "helm.toolkit.fluxcd.io",
    version = "v2",
    kind = "HelmRelease",
    namespaced,
    status = "HelmReleaseStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseSpec {
    pub chart: Option<HelmChartTemplate>,
    pub interval: String,
    pub release_name: Option<String>,
    pub target_namespace: Option<String>,
    pub suspend: Option<bool>,
    pub values: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct HelmChartTemplate {
    pub spec: HelmChartTemplateSpec,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartTemplateSpec {
    pub chart: String,
    pub version: Option<String>,
    pub source_ref: CrossNamespaceObjectReference,
    pub interval: Option<String>,
    pub reconcile_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CrossNamespaceObjectReference {
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseStatus {
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    pub last_attempted_revision: Option<String>,
    #[serde(default)]
    pub history: Vec<HelmReleaseSnapshot>,
    pub failures: Option<i64>,
    pub install_failures: Option<i64>,
    pub upgrade_failures: Option<i64>,
    /// `<namespace>/<name>` of the HelmChart built for this release.
    pub helm_chart: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseSnapshot {
    pub version: Option<i64>,
    pub chart_name: Option<String>,
    pub chart_version: Option<String>,
    pub status: Option<String>,
}

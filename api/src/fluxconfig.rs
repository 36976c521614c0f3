//! The `FluxConfig` custom resource: the contract between the agent (which writes the spec from the
//! Azure data plane) and the controller (which expands it into Flux objects and writes the status).
//!
//! Property names follow the Azure `fluxConfigurations` resource verbatim so that a configuration
//! read from the data plane maps onto the resource without renaming. Secret values (the Azure
//! "configurationProtectedSettings") never appear here: they live in the Secret named by
//! `protectedSettingsSecretRef`, under the keys in [`crate::protected`].

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

pub const GROUP: &str = "clusterconfig.azure.com";
pub const VERSION: &str = "v1beta1";

/// Desired state of one flux configuration, as declared in Azure.
#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "clusterconfig.azure.com",
    version = "v1beta1",
    kind = "FluxConfig",
    plural = "fluxconfigs",
    singular = "fluxconfig",
    shortname = "fc",
    category = "all",
    namespaced,
    status = "FluxConfigStatus",
    printcolumn = r#"{"name":"Scope","type":"string","jsonPath":".spec.scope"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.gitRepository.url"}"#,
    printcolumn = r#"{"name":"Provision","type":"string","jsonPath":".status.provisioningState"}"#,
    printcolumn = r#"{"name":"Compliance","type":"string","jsonPath":".status.complianceState"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct FluxConfigSpec {
    /// `cluster` (default) or `namespace`; immutable after creation.
    pub scope: Option<Scope>,
    /// Namespace of the configuration and of the Flux objects it becomes (default `default`).
    pub namespace: Option<String>,
    /// Which source block is used (default `GitRepository`).
    pub source_kind: Option<SourceKind>,
    /// Suspends the source and every kustomization.
    pub suspend: Option<bool>,
    // The source blocks and kustomizations are boxed: inline, every FluxConfig held all four
    // source kinds' fields (a 1.5 KiB struct) and each kustomization map node eleven 152-byte
    // slots, which at 10,000 configurations was ~20 MiB of the controller's cache.
    pub git_repository: Option<Box<GitRepositoryDefinition>>,
    pub bucket: Option<Box<BucketDefinition>>,
    pub azure_blob: Option<Box<AzureBlobDefinition>>,
    pub oci_repository: Option<Box<OciRepositoryDefinition>>,
    /// Kustomizations keyed by name; each becomes the Flux Kustomization `<config>-<name>`.
    // Atomic: with server-side apply a granular map of objects keeps a removed kustomization
    // behind as an empty `{}` entry (map keys are not pruned like struct fields), which would
    // read as a new kustomization at the repository root.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-map-type" = "atomic"))]
    pub kustomizations: Kustomizations,
    pub wait_for_reconciliation: Option<bool>,
    /// ISO 8601 duration, e.g. `PT10M`.
    pub reconciliation_wait_duration: Option<String>,
    /// Name of a Secret in the configuration's namespace holding the protected settings.
    pub protected_settings_secret_ref: Option<String>,
}

/// A configuration's kustomizations by name.
pub type Kustomizations = BTreeMap<String, Box<KustomizationDefinition>>;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    Cluster,
    Namespace,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Cluster => "cluster",
            Scope::Namespace => "namespace",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SourceKind {
    #[default]
    GitRepository,
    Bucket,
    AzureBlob,
    #[serde(rename = "OCIRepository")]
    OciRepository,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::GitRepository => "GitRepository",
            SourceKind::Bucket => "Bucket",
            SourceKind::AzureBlob => "AzureBlob",
            SourceKind::OciRepository => "OCIRepository",
        }
    }

    /// The spec property holding this kind's source block.
    pub fn property(self) -> &'static str {
        match self {
            SourceKind::GitRepository => "gitRepository",
            SourceKind::Bucket => "bucket",
            SourceKind::AzureBlob => "azureBlob",
            SourceKind::OciRepository => "ociRepository",
        }
    }
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositoryDefinition {
    pub url: Option<String>,
    pub timeout_in_seconds: Option<i64>,
    pub sync_interval_in_seconds: Option<i64>,
    pub repository_ref: Option<RepositoryRefDefinition>,
    /// Base64-encoded known_hosts content.
    pub ssh_known_hosts: Option<String>,
    pub https_user: Option<String>,
    /// Base64-encoded PEM CA certificate.
    #[serde(rename = "httpsCACert")]
    pub https_ca_cert: Option<String>,
    /// Name of an existing Secret in the namespace holding every auth key Flux needs.
    pub local_auth_ref: Option<String>,
    /// `Azure` (workload identity to Azure DevOps) or `Generic` (default).
    pub provider: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryRefDefinition {
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub semver: Option<String>,
    pub commit: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketDefinition {
    /// Endpoint URL of the S3-compatible service.
    pub url: Option<String>,
    pub bucket_name: Option<String>,
    /// Plain HTTP to the endpoint.
    pub insecure: Option<bool>,
    pub timeout_in_seconds: Option<i64>,
    pub sync_interval_in_seconds: Option<i64>,
    pub access_key: Option<String>,
    pub local_auth_ref: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureBlobDefinition {
    /// Storage account endpoint, e.g. `https://account.blob.core.windows.net`.
    pub url: Option<String>,
    pub container_name: Option<String>,
    pub timeout_in_seconds: Option<i64>,
    pub sync_interval_in_seconds: Option<i64>,
    /// Non-secret half of a service principal; its secret or certificate is a protected setting.
    pub service_principal: Option<ServicePrincipalDefinition>,
    pub managed_identity: Option<ManagedIdentityDefinition>,
    pub local_auth_ref: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipalDefinition {
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
    pub client_certificate_send_chain: Option<bool>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedIdentityDefinition {
    pub client_id: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OciRepositoryDefinition {
    /// `oci://` URL of the artifact repository.
    pub url: Option<String>,
    pub timeout_in_seconds: Option<i64>,
    pub sync_interval_in_seconds: Option<i64>,
    pub repository_ref: Option<OciRepositoryRefDefinition>,
    pub layer_selector: Option<LayerSelectorDefinition>,
    pub verify: Option<VerifyDefinition>,
    pub insecure: Option<bool>,
    pub use_workload_identity: Option<bool>,
    pub service_account_name: Option<String>,
    /// Base64 PEM CA for the registry; the client certificate and key are protected settings.
    pub tls_config: Option<TlsConfigDefinition>,
    pub local_auth_ref: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OciRepositoryRefDefinition {
    pub tag: Option<String>,
    pub semver: Option<String>,
    pub digest: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LayerSelectorDefinition {
    pub media_type: Option<String>,
    /// `extract` or `copy`.
    pub operation: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyDefinition {
    /// `cosign` (default) or `notation`.
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_oidc_identity: Vec<MatchOidcIdentityDefinition>,
    /// Public keys by name (base64 PEM); public, so they may live in the spec.
    // Atomic, so a key dropped from Azure is dropped here too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-map-type" = "atomic"))]
    pub verification_config: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchOidcIdentityDefinition {
    pub issuer: String,
    pub subject: String,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfigDefinition {
    pub ca_certificate: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationDefinition {
    /// Path in the source artifact (default: its root).
    pub path: Option<String>,
    /// Names of other kustomizations of the same configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    pub timeout_in_seconds: Option<i64>,
    pub sync_interval_in_seconds: Option<i64>,
    pub retry_interval_in_seconds: Option<i64>,
    pub prune: Option<bool>,
    pub force: Option<bool>,
    pub wait: Option<bool>,
    pub post_build: Option<PostBuildDefinition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostBuildDefinition {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub substitute: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substitute_from: Vec<SubstituteReferenceDefinition>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubstituteReferenceDefinition {
    /// `ConfigMap` or `Secret`.
    pub kind: String,
    pub name: String,
    pub optional: Option<bool>,
}

/// Observed state, written by the controller through the status subresource and reported by the
/// agent to Azure.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FluxConfigStatus {
    pub compliance_state: Option<ComplianceState>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<ObjectStatus>,
    pub source_synced_commit_id: Option<String>,
    pub source_updated_at: Option<String>,
    pub status_updated_at: Option<String>,
    pub repository_public_key: Option<String>,
    pub provisioning_state: Option<ProvisioningState>,
    pub error_message: Option<String>,
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ComplianceState {
    Compliant,
    #[serde(rename = "Non-Compliant")]
    NonCompliant,
    Pending,
    Suspended,
    #[default]
    Unknown,
}

impl ComplianceState {
    pub const ALL: [ComplianceState; 5] = [
        ComplianceState::Compliant,
        ComplianceState::NonCompliant,
        ComplianceState::Pending,
        ComplianceState::Suspended,
        ComplianceState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ComplianceState::Compliant => "Compliant",
            ComplianceState::NonCompliant => "Non-Compliant",
            ComplianceState::Pending => "Pending",
            ComplianceState::Suspended => "Suspended",
            ComplianceState::Unknown => "Unknown",
        }
    }
}

impl std::fmt::Display for ComplianceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ProvisioningState {
    Succeeded,
    Failed,
    Canceled,
    Creating,
    Updating,
    Deleting,
}

impl ProvisioningState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProvisioningState::Succeeded => "Succeeded",
            ProvisioningState::Failed => "Failed",
            ProvisioningState::Canceled => "Canceled",
            ProvisioningState::Creating => "Creating",
            ProvisioningState::Updating => "Updating",
            ProvisioningState::Deleting => "Deleting",
        }
    }
}

/// Status of one Flux object that belongs to the configuration (Azure's ObjectStatusDefinition).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    pub name: String,
    pub namespace: String,
    pub kind: String,
    pub compliance_state: ComplianceState,
    pub applied_by: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_conditions: Vec<StatusCondition>,
    pub helm_release_properties: Option<HelmReleaseProperties>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub name: String,
    pub namespace: String,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition_time: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseProperties {
    pub last_revision_applied: Option<i64>,
    pub helm_chart_ref: Option<ObjectReference>,
    pub failure_count: Option<i64>,
    pub install_failure_count: Option<i64>,
    pub upgrade_failure_count: Option<i64>,
}

impl FluxConfigSpec {
    pub fn scope(&self) -> Scope {
        self.scope.unwrap_or_default()
    }

    pub fn source_kind(&self) -> SourceKind {
        self.source_kind.unwrap_or_default()
    }

    pub fn suspended(&self) -> bool {
        self.suspend.unwrap_or(false)
    }
}

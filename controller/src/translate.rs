//! Which Flux objects a `FluxConfig` becomes: a pure function of the configuration and its
//! protected settings, so every rule here is tested without a cluster.
//!
//! Layout (as Azure's extension lays it out): the source is named after the configuration, each
//! kustomization `k` becomes the Kustomization `<config>-<k>`, all in the configuration's
//! namespace; credentials go into Secrets the source references.

use std::collections::BTreeMap;

use fluxconfig_api::flux::{
    Bucket, BucketSpec, CrossNamespaceSourceReference, DependencyReference, GitRepository,
    GitRepositoryRef, GitRepositorySpec, Kustomization, KustomizationSpec, LocalObjectReference,
    OCIRepository, OCIRepositorySpec, OciLayerSelector, OciRepositoryRef, OciVerification,
    OidcIdentityMatch, PostBuild, SubstituteReference,
};
use fluxconfig_api::fluxconfig::{
    AzureBlobDefinition, BucketDefinition, GitRepositoryDefinition, KustomizationDefinition,
    Kustomizations, OciRepositoryDefinition,
};
use fluxconfig_api::protected::{self, ProtectedSettings};
use fluxconfig_api::validation::{self, kustomization_object_name, ValidationErrors};
use fluxconfig_api::{labels, FluxConfig, Scope, SourceKind};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use kube::Resource;

use crate::duration::{go_duration, go_duration_minutes};

/// Azure's defaults for the interval and timeout properties (seconds).
pub const DEFAULT_SYNC_INTERVAL: u64 = 600;
pub const DEFAULT_TIMEOUT: u64 = 600;

/// Service account (and RoleBinding) Flux impersonates for a namespace-scoped configuration, so it
/// can only change objects in its own namespace. One per configuration: a shared account would be
/// owned by several configurations and vanish with the first one deleted.
pub fn applier_name(config: &str) -> String {
    format!("{config}-applier")
}

#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    #[error("{field}: not valid base64")]
    Base64 { field: String },
}

/// The source of a configuration, one of Flux's source kinds.
#[derive(Clone, Debug)]
pub enum Source {
    Git(GitRepository),
    Bucket(Bucket),
    Oci(OCIRepository),
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Git(_) => "GitRepository",
            Source::Bucket(_) => "Bucket",
            Source::Oci(_) => "OCIRepository",
        }
    }

    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            Source::Git(o) => serde_json::to_value(o),
            Source::Bucket(o) => serde_json::to_value(o),
            Source::Oci(o) => serde_json::to_value(o),
        }
    }
}

/// Everything one configuration becomes in the cluster.
#[derive(Clone, Debug)]
pub struct FluxObjects {
    /// Credentials and keys the source references, generated from the protected settings.
    pub secrets: Vec<Secret>,
    /// Namespace-scoped configurations only: the applier account and its namespace-bound rights.
    pub service_account: Option<ServiceAccount>,
    pub role_binding: Option<RoleBinding>,
    pub source: Source,
    pub kustomizations: Vec<Kustomization>,
}

impl FluxObjects {
    /// All objects in the order they should be applied (referenced objects first).
    pub fn to_values(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        let mut out = Vec::new();
        for s in &self.secrets {
            out.push(serde_json::to_value(s)?);
        }
        if let Some(sa) = &self.service_account {
            out.push(serde_json::to_value(sa)?);
        }
        if let Some(rb) = &self.role_binding {
            out.push(serde_json::to_value(rb)?);
        }
        out.push(self.source.to_value()?);
        for k in &self.kustomizations {
            out.push(serde_json::to_value(k)?);
        }
        Ok(out)
    }
}

/// Translates a valid configuration; an invalid one yields every field-named validation error.
pub fn translate(
    config: &FluxConfig,
    protected: &ProtectedSettings,
) -> Result<FluxObjects, TranslateError> {
    validation::validate(config, protected)?;
    let ctx = Context::new(config);
    let spec = &config.spec;

    let mut secrets = Vec::new();
    let source = match spec.source_kind() {
        SourceKind::GitRepository => {
            let def = spec.git_repository.clone().unwrap_or_default();
            Source::Git(ctx.git_repository(&def, protected, &mut secrets)?)
        }
        SourceKind::Bucket => {
            let def = spec.bucket.clone().unwrap_or_default();
            Source::Bucket(ctx.bucket(&def, protected, &mut secrets))
        }
        SourceKind::AzureBlob => {
            let def = spec.azure_blob.clone().unwrap_or_default();
            Source::Bucket(ctx.azure_blob(&def, protected, &mut secrets))
        }
        SourceKind::OciRepository => {
            let def = spec.oci_repository.clone().unwrap_or_default();
            Source::Oci(ctx.oci_repository(&def, protected, &mut secrets)?)
        }
    };

    let kustomizations = dependency_order(&spec.kustomizations)
        .into_iter()
        .map(|(name, def)| ctx.kustomization(name, def, source.kind()))
        .collect();

    let (service_account, role_binding) = match spec.scope() {
        Scope::Cluster => (None, None),
        Scope::Namespace => {
            let (sa, rb) = ctx.namespace_applier();
            (Some(sa), Some(rb))
        }
    };

    Ok(FluxObjects {
        secrets,
        service_account,
        role_binding,
        source,
        kustomizations,
    })
}

/// Name of the Secret holding a source's credentials.
pub fn auth_secret_name(config: &str) -> String {
    format!("{config}-auth")
}

/// Name of the Secret holding an OCI source's TLS client certificate and CA.
pub fn tls_secret_name(config: &str) -> String {
    format!("{config}-tls")
}

/// Name of the Secret holding an OCI source's verification public keys.
pub fn verify_secret_name(config: &str) -> String {
    format!("{config}-verify")
}

struct Context<'a> {
    config: &'a FluxConfig,
    name: String,
    namespace: String,
    suspend: Option<bool>,
}

impl<'a> Context<'a> {
    fn new(config: &'a FluxConfig) -> Self {
        let name = config.metadata.name.clone().unwrap_or_default();
        let namespace = config.metadata.namespace.clone().unwrap_or_default();
        // Leave `suspend` out unless set, so an unsuspended configuration's objects read as Flux's
        // own defaults and server-side apply does not own a field it never needed.
        let suspend = config.spec.suspended().then_some(true);
        Context {
            config,
            name,
            namespace,
            suspend,
        }
    }

    fn meta(&self, name: &str, component: &str) -> ObjectMeta {
        let mut labels = BTreeMap::new();
        labels.insert(labels::CONFIG_NAME.to_string(), self.name.clone());
        labels.insert(labels::CONFIG_NAMESPACE.to_string(), self.namespace.clone());
        labels.insert(labels::COMPONENT.to_string(), component.to_string());
        labels.insert(
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        );
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references: self.owner_reference().map(|o| vec![o]),
            ..ObjectMeta::default()
        }
    }

    /// Only a stored FluxConfig (one with a uid) can own objects; `render` works on manifests.
    fn owner_reference(&self) -> Option<OwnerReference> {
        let uid = self.config.metadata.uid.clone()?;
        Some(OwnerReference {
            api_version: FluxConfig::api_version(&()).into_owned(),
            kind: FluxConfig::kind(&()).into_owned(),
            name: self.name.clone(),
            uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        })
    }

    fn secret(&self, name: &str, component: &str, data: BTreeMap<String, Vec<u8>>) -> Secret {
        Secret {
            metadata: self.meta(name, component),
            type_: Some("Opaque".to_string()),
            data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
            ..Secret::default()
        }
    }

    fn git_repository(
        &self,
        def: &GitRepositoryDefinition,
        protected: &ProtectedSettings,
        secrets: &mut Vec<Secret>,
    ) -> Result<GitRepository, TranslateError> {
        let reference = def.repository_ref.as_ref().map(|r| GitRepositoryRef {
            branch: r.branch.clone(),
            tag: r.tag.clone(),
            semver: r.semver.clone(),
            commit: r.commit.clone(),
        });

        let mut data = BTreeMap::new();
        if let Some(key) = protected.get(protected::SSH_PRIVATE_KEY) {
            data.insert("identity".to_string(), key.clone().into_bytes());
        }
        if let Some(hosts) = &def.ssh_known_hosts {
            data.insert(
                "known_hosts".to_string(),
                decode_base64(hosts, "spec.gitRepository.sshKnownHosts")?,
            );
        } else if data.contains_key("identity") && is_github(def.url.as_deref()) {
            // Flux refuses SSH without known_hosts; like Azure's extension, GitHub needs none
            // from the user.
            data.insert(
                "known_hosts".to_string(),
                GITHUB_KNOWN_HOSTS.as_bytes().to_vec(),
            );
        }
        if let Some(user) = &def.https_user {
            data.insert("username".to_string(), user.clone().into_bytes());
        }
        if let Some(key) = protected.get(protected::HTTPS_KEY) {
            data.insert("password".to_string(), key.clone().into_bytes());
        }
        if let Some(ca) = &def.https_ca_cert {
            data.insert(
                "ca.crt".to_string(),
                decode_base64(ca, "spec.gitRepository.httpsCACert")?,
            );
        }
        let secret_ref = self.credentials(def.local_auth_ref.as_deref(), data, secrets);

        let provider = match def.provider.as_deref() {
            Some(p) if p.eq_ignore_ascii_case("azure") => Some("azure".to_string()),
            _ => None,
        };
        let mut obj = GitRepository::new(
            &self.name,
            GitRepositorySpec {
                url: def.url.clone().unwrap_or_default(),
                reference,
                interval: interval(def.sync_interval_in_seconds),
                timeout: Some(source_timeout(def.timeout_in_seconds)),
                secret_ref,
                provider,
                suspend: self.suspend,
            },
        );
        obj.metadata = self.meta(&self.name, "source");
        Ok(obj)
    }

    fn bucket(
        &self,
        def: &BucketDefinition,
        protected: &ProtectedSettings,
        secrets: &mut Vec<Secret>,
    ) -> Bucket {
        let url = def.url.clone().unwrap_or_default();
        let plain_http = url.starts_with("http://");
        let mut data = BTreeMap::new();
        if let Some(access) = &def.access_key {
            data.insert("accesskey".to_string(), access.clone().into_bytes());
        }
        if let Some(secret) = protected.get(protected::BUCKET_SECRET_KEY) {
            data.insert("secretkey".to_string(), secret.clone().into_bytes());
        }
        let secret_ref = self.credentials(def.local_auth_ref.as_deref(), data, secrets);
        let mut obj = Bucket::new(
            &self.name,
            BucketSpec {
                provider: Some("generic".to_string()),
                bucket_name: def.bucket_name.clone().unwrap_or_default(),
                // Flux's generic provider wants host[:port]; the scheme becomes `insecure`.
                endpoint: strip_scheme(&url),
                insecure: (def.insecure.unwrap_or(false) || plain_http).then_some(true),
                interval: interval(def.sync_interval_in_seconds),
                timeout: Some(source_timeout(def.timeout_in_seconds)),
                secret_ref,
                suspend: self.suspend,
            },
        );
        obj.metadata = self.meta(&self.name, "source");
        obj
    }

    /// Azure Blob containers are Flux Buckets with the `azure` provider.
    fn azure_blob(
        &self,
        def: &AzureBlobDefinition,
        protected: &ProtectedSettings,
        secrets: &mut Vec<Secret>,
    ) -> Bucket {
        let mut data = BTreeMap::new();
        if let Some(sp) = &def.service_principal {
            if let Some(id) = &sp.client_id {
                data.insert("clientId".to_string(), id.clone().into_bytes());
            }
            if let Some(tenant) = &sp.tenant_id {
                data.insert("tenantId".to_string(), tenant.clone().into_bytes());
            }
            if let Some(chain) = sp.client_certificate_send_chain {
                data.insert(
                    "clientCertificateSendChain".to_string(),
                    chain.to_string().into_bytes(),
                );
            }
        }
        if let Some(mi) = &def.managed_identity {
            if let Some(id) = &mi.client_id {
                data.insert("clientId".to_string(), id.clone().into_bytes());
            }
        }
        for (setting, key) in [
            (protected::CLIENT_SECRET, "clientSecret"),
            (protected::CLIENT_CERTIFICATE, "clientCertificate"),
            (
                protected::CLIENT_CERTIFICATE_PASSWORD,
                "clientCertificatePassword",
            ),
            (protected::ACCOUNT_KEY, "accountKey"),
            (protected::SAS_TOKEN, "sasKey"),
        ] {
            if let Some(v) = protected.get(setting) {
                data.insert(key.to_string(), v.clone().into_bytes());
            }
        }
        let secret_ref = self.credentials(def.local_auth_ref.as_deref(), data, secrets);
        let mut obj = Bucket::new(
            &self.name,
            BucketSpec {
                provider: Some("azure".to_string()),
                bucket_name: def.container_name.clone().unwrap_or_default(),
                endpoint: def.url.clone().unwrap_or_default(),
                insecure: None,
                interval: interval(def.sync_interval_in_seconds),
                timeout: Some(source_timeout(def.timeout_in_seconds)),
                secret_ref,
                suspend: self.suspend,
            },
        );
        obj.metadata = self.meta(&self.name, "source");
        obj
    }

    fn oci_repository(
        &self,
        def: &OciRepositoryDefinition,
        protected: &ProtectedSettings,
        secrets: &mut Vec<Secret>,
    ) -> Result<OCIRepository, TranslateError> {
        let mut tls = BTreeMap::new();
        if let Some(cert) = protected.get(protected::TLS_CLIENT_CERTIFICATE) {
            tls.insert("tls.crt".to_string(), cert.clone().into_bytes());
        }
        if let Some(key) = protected.get(protected::TLS_PRIVATE_KEY) {
            tls.insert("tls.key".to_string(), key.clone().into_bytes());
        }
        if let Some(ca) = def
            .tls_config
            .as_ref()
            .and_then(|t| t.ca_certificate.as_ref())
        {
            tls.insert(
                "ca.crt".to_string(),
                decode_base64(ca, "spec.ociRepository.tlsConfig.caCertificate")?,
            );
        }
        let cert_secret_ref = if tls.is_empty() {
            None
        } else {
            let name = tls_secret_name(&self.name);
            secrets.push(self.secret(&name, "tls", tls));
            Some(LocalObjectReference { name })
        };

        let verify = match &def.verify {
            None => None,
            Some(v) => {
                let mut keys = BTreeMap::new();
                for (name, key) in &v.verification_config {
                    let field = format!("spec.ociRepository.verify.verificationConfig.{name}");
                    keys.insert(format!("{name}.pub"), decode_base64(key, &field)?);
                }
                let secret_ref = if keys.is_empty() {
                    None
                } else {
                    let name = verify_secret_name(&self.name);
                    secrets.push(self.secret(&name, "verify", keys));
                    Some(LocalObjectReference { name })
                };
                Some(OciVerification {
                    provider: v.provider.clone().unwrap_or_else(|| "cosign".to_string()),
                    secret_ref,
                    match_oidc_identity: v
                        .match_oidc_identity
                        .iter()
                        .map(|m| OidcIdentityMatch {
                            issuer: m.issuer.clone(),
                            subject: m.subject.clone(),
                        })
                        .collect(),
                })
            }
        };

        let mut obj = OCIRepository::new(
            &self.name,
            OCIRepositorySpec {
                url: def.url.clone().unwrap_or_default(),
                reference: def.repository_ref.as_ref().map(|r| OciRepositoryRef {
                    tag: r.tag.clone(),
                    semver: r.semver.clone(),
                    digest: r.digest.clone(),
                }),
                layer_selector: def.layer_selector.as_ref().map(|l| OciLayerSelector {
                    media_type: l.media_type.clone(),
                    operation: l.operation.clone(),
                }),
                verify,
                provider: def
                    .use_workload_identity
                    .unwrap_or(false)
                    .then(|| "azure".to_string()),
                insecure: def.insecure.filter(|i| *i),
                service_account_name: def.service_account_name.clone(),
                secret_ref: def
                    .local_auth_ref
                    .clone()
                    .map(|name| LocalObjectReference { name }),
                cert_secret_ref,
                interval: interval(def.sync_interval_in_seconds),
                timeout: Some(source_timeout(def.timeout_in_seconds)),
                suspend: self.suspend,
            },
        );
        obj.metadata = self.meta(&self.name, "source");
        Ok(obj)
    }

    /// The user's own Secret wins; otherwise a generated one when there is anything to put in it.
    fn credentials(
        &self,
        local_auth_ref: Option<&str>,
        data: BTreeMap<String, Vec<u8>>,
        secrets: &mut Vec<Secret>,
    ) -> Option<LocalObjectReference> {
        if let Some(name) = local_auth_ref {
            return Some(LocalObjectReference {
                name: name.to_string(),
            });
        }
        if data.is_empty() {
            return None;
        }
        let name = auth_secret_name(&self.name);
        secrets.push(self.secret(&name, "auth", data));
        Some(LocalObjectReference { name })
    }

    fn kustomization(
        &self,
        key: &str,
        def: &KustomizationDefinition,
        source_kind: &str,
    ) -> Kustomization {
        let name = kustomization_object_name(&self.name, key);
        let sync = seconds(def.sync_interval_in_seconds, DEFAULT_SYNC_INTERVAL);
        let namespaced = self.config.spec.scope() == Scope::Namespace;
        let mut obj = Kustomization::new(
            &name,
            KustomizationSpec {
                source_ref: CrossNamespaceSourceReference {
                    api_version: None,
                    kind: source_kind.to_string(),
                    name: self.name.clone(),
                    namespace: None,
                },
                path: def.path.clone(),
                interval: go_duration(sync),
                retry_interval: Some(go_duration(seconds(def.retry_interval_in_seconds, sync))),
                timeout: Some(go_duration(seconds(
                    def.timeout_in_seconds,
                    DEFAULT_TIMEOUT,
                ))),
                prune: def.prune.unwrap_or(false),
                force: Some(def.force.unwrap_or(false)),
                wait: Some(def.wait.unwrap_or(true)),
                depends_on: def
                    .depends_on
                    .iter()
                    .map(|d| DependencyReference {
                        name: kustomization_object_name(&self.name, d),
                        namespace: None,
                    })
                    .collect(),
                post_build: def.post_build.as_ref().map(|p| PostBuild {
                    substitute: p.substitute.clone(),
                    substitute_from: p
                        .substitute_from
                        .iter()
                        .map(|s| SubstituteReference {
                            kind: s.kind.clone(),
                            name: s.name.clone(),
                            optional: s.optional,
                        })
                        .collect(),
                }),
                target_namespace: namespaced.then(|| self.namespace.clone()),
                service_account_name: namespaced.then(|| applier_name(&self.name)),
                suspend: self.suspend,
            },
        );
        let mut meta = self.meta(&name, "kustomization");
        if let Some(labels) = meta.labels.as_mut() {
            labels.insert(labels::KUSTOMIZATION.to_string(), key.to_string());
        }
        obj.metadata = meta;
        obj
    }

    /// Kustomize-controller impersonates this account for namespace-scoped configurations; the
    /// RoleBinding (not a ClusterRoleBinding) confines `cluster-admin` to the namespace.
    fn namespace_applier(&self) -> (ServiceAccount, RoleBinding) {
        let name = applier_name(&self.name);
        let sa = ServiceAccount {
            metadata: self.meta(&name, "applier"),
            ..ServiceAccount::default()
        };
        let rb = RoleBinding {
            metadata: self.meta(&name, "applier"),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_string(),
                kind: "ClusterRole".to_string(),
                name: "cluster-admin".to_string(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_string(),
                name,
                namespace: Some(self.namespace.clone()),
                api_group: None,
            }]),
        };
        (sa, rb)
    }
}

/// GitHub's published SSH host keys (docs.github.com, "GitHub's SSH key fingerprints").
pub const GITHUB_KNOWN_HOSTS: &str = "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl
github.com ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg=
github.com ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQCj7ndNxQowgcQnjshcLrqPEiiphnt+VTTvDP6mHBL9j1aNUkY4Ue1gvwnGLVlOhGeYrnZaMgRK6+PKCUXaDbC7qtbW8gIkhL7aGCsOr/C56SJMy/BCZfxd1nWzAOxSDPgVsmerOBYfNqltV9/hWCqBywINIR+5dIg6JTJ72pcEpEjcYgXkE2YEFXV1JHnsKgbLWNlhScqb2UmyRkQyytRLtL+38TGxkxCflmO+5Z8CSSNY7GidjMIZ7Q4zMjA2n1nGrlTDkzwDCsw+wqFPGQA179cnfGWOWRVruj16z6XyvxvjJwbz0wQZ75XK5tKSb7FNyeIEs4TT4jk+S4dhPeAUC5y+bDYirYgM4GC7uEnztnZyaVWQ7B381AK4Qdrwt51ZqExKbQpTUNn+EjqoTwvqNj4kqx5QUCI0ThS/YkOxJCXmPUWZbhjpCg56i+2aB6CmK2JGhn57K5mj0MNdBXA4/WnwH6XoPWJzK5Nyu2zB3nAZp+S5hpQs+p1vN1/wsjk=
";

fn is_github(url: Option<&str>) -> bool {
    let Some(rest) = url.and_then(|u| u.strip_prefix("ssh://")) else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = host.split(':').next().unwrap_or_default();
    host.eq_ignore_ascii_case("github.com")
}

/// Kustomizations with their dependencies first (ties by name), so a rendered stream and the
/// apply order read top-down like the dependency graph. Validation has ruled out cycles; should
/// one slip through, the remaining entries are appended by name rather than lost.
fn dependency_order(all: &Kustomizations) -> Vec<(&String, &KustomizationDefinition)> {
    let mut ordered: Vec<(&String, &KustomizationDefinition)> = Vec::with_capacity(all.len());
    let mut placed = std::collections::BTreeSet::new();
    while ordered.len() < all.len() {
        let ready: Vec<_> = all
            .iter()
            .filter(|(name, def)| {
                !placed.contains(name.as_str())
                    && def
                        .depends_on
                        .iter()
                        .all(|d| placed.contains(d.as_str()) || !all.contains_key(d))
            })
            .collect();
        if ready.is_empty() {
            ordered.extend(
                all.iter()
                    .filter(|(n, _)| !placed.contains(n.as_str()))
                    .map(|(n, def)| (n, def.as_ref())),
            );
            break;
        }
        for (name, def) in ready {
            placed.insert(name.as_str());
            ordered.push((name, def));
        }
    }
    ordered
}

/// Validation guarantees positive values; the clamp keeps a bypassed check from wrapping.
fn seconds(value: Option<i64>, default: u64) -> u64 {
    value.map_or(default, |v| u64::try_from(v).unwrap_or(default))
}

fn interval(sync: Option<i64>) -> String {
    go_duration(seconds(sync, DEFAULT_SYNC_INTERVAL))
}

fn source_timeout(timeout: Option<i64>) -> String {
    go_duration_minutes(seconds(timeout, DEFAULT_TIMEOUT))
}

fn strip_scheme(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.trim_end_matches('/').to_string()
}

/// The decoder validation uses: whatever it accepted must translate.
fn decode_base64(value: &str, field: &str) -> Result<Vec<u8>, TranslateError> {
    validation::decode_base64(value).ok_or_else(|| TranslateError::Base64 {
        field: field.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn config(spec: Value) -> FluxConfig {
        serde_json::from_value(json!({
            "apiVersion": "clusterconfig.azure.com/v1beta1",
            "kind": "FluxConfig",
            "metadata": {"name": "cluster-config", "namespace": "cluster-config", "uid": "uid-1"},
            "spec": spec,
        }))
        .expect("fixture")
    }

    fn tutorial() -> Value {
        json!({
            "scope": "cluster",
            "gitRepository": {"url": "https://github.com/Azure/gitops-flux2-kustomize-helm-mt",
                              "repositoryRef": {"branch": "main"}},
            "kustomizations": {"infra": {"path": "./infrastructure", "prune": true},
                               "apps": {"path": "./apps/staging", "prune": true, "dependsOn": ["infra"]}}
        })
    }

    fn settings(pairs: &[(&str, &str)]) -> ProtectedSettings {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn git(objects: &FluxObjects) -> &GitRepository {
        match &objects.source {
            Source::Git(g) => g,
            other => panic!("expected GitRepository, got {}", other.kind()),
        }
    }

    fn bucket(objects: &FluxObjects) -> &Bucket {
        match &objects.source {
            Source::Bucket(b) => b,
            other => panic!("expected Bucket, got {}", other.kind()),
        }
    }

    #[test]
    fn tutorial_names_defaults_and_dependencies() {
        let objects = translate(&config(tutorial()), &settings(&[])).expect("valid");
        let g = git(&objects);
        assert_eq!(g.metadata.name.as_deref(), Some("cluster-config"));
        assert_eq!(g.metadata.namespace.as_deref(), Some("cluster-config"));
        assert_eq!(g.spec.interval, "10m0s");
        assert_eq!(g.spec.timeout.as_deref(), Some("10m0s"));
        assert_eq!(g.spec.secret_ref, None);
        assert_eq!(g.spec.suspend, None);
        let names: Vec<_> = objects
            .kustomizations
            .iter()
            .map(|k| k.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["cluster-config-infra", "cluster-config-apps"]);
        let apps = &objects.kustomizations[1].spec;
        assert_eq!(apps.depends_on[0].name, "cluster-config-infra");
        assert_eq!(apps.interval, "10m0s");
        assert_eq!(apps.retry_interval.as_deref(), Some("10m0s"));
        assert_eq!(apps.timeout.as_deref(), Some("10m0s"));
        assert_eq!(apps.wait, Some(true));
        assert_eq!(apps.force, Some(false));
        assert!(apps.prune);
        assert_eq!(apps.target_namespace, None);
        assert_eq!(apps.service_account_name, None);
        assert!(objects.secrets.is_empty() && objects.service_account.is_none());
    }

    #[test]
    fn every_object_is_labelled_and_owned_by_its_configuration() {
        let objects = translate(&config(tutorial()), &settings(&[])).expect("valid");
        for v in objects.to_values().expect("json") {
            let labels = &v["metadata"]["labels"];
            assert_eq!(labels[labels::CONFIG_NAME], "cluster-config", "{v}");
            assert_eq!(labels[labels::CONFIG_NAMESPACE], "cluster-config");
            assert_eq!(labels[labels::MANAGED_BY], labels::MANAGED_BY_VALUE);
            let owner = &v["metadata"]["ownerReferences"][0];
            assert_eq!(owner["kind"], "FluxConfig");
            assert_eq!(owner["apiVersion"], "clusterconfig.azure.com/v1beta1");
            assert_eq!(owner["uid"], "uid-1");
            assert_eq!(owner["controller"], true);
        }
        assert_eq!(
            objects.kustomizations[0]
                .metadata
                .labels
                .as_ref()
                .expect("labels")[labels::KUSTOMIZATION],
            "infra"
        );
    }

    #[test]
    fn retry_interval_defaults_to_the_sync_interval() {
        let mut spec = tutorial();
        spec["kustomizations"]["infra"]["syncIntervalInSeconds"] = json!(90);
        spec["kustomizations"]["apps"]["retryIntervalInSeconds"] = json!(30);
        let objects = translate(&config(spec), &settings(&[])).expect("valid");
        let (infra, apps) = (
            &objects.kustomizations[0].spec,
            &objects.kustomizations[1].spec,
        );
        assert_eq!(infra.interval, "1m30s");
        assert_eq!(infra.retry_interval.as_deref(), Some("1m30s"));
        assert_eq!(apps.retry_interval.as_deref(), Some("30s"));
    }

    #[test]
    fn suspend_reaches_source_and_every_kustomization() {
        let mut spec = tutorial();
        spec["suspend"] = json!(true);
        let objects = translate(&config(spec), &settings(&[])).expect("valid");
        assert_eq!(git(&objects).spec.suspend, Some(true));
        assert!(objects
            .kustomizations
            .iter()
            .all(|k| k.spec.suspend == Some(true)));
    }

    #[test]
    fn namespace_scope_confines_kustomizations_to_the_namespace() {
        let mut spec = tutorial();
        spec["scope"] = json!("namespace");
        let objects = translate(&config(spec), &settings(&[])).expect("valid");
        for k in &objects.kustomizations {
            assert_eq!(k.spec.target_namespace.as_deref(), Some("cluster-config"));
            assert_eq!(
                k.spec.service_account_name.as_deref(),
                Some("cluster-config-applier")
            );
        }
        let sa = objects.service_account.as_ref().expect("applier account");
        assert_eq!(sa.metadata.name.as_deref(), Some("cluster-config-applier"));
        let rb = objects.role_binding.as_ref().expect("binding");
        // A RoleBinding, not a ClusterRoleBinding: the rights stop at the namespace.
        assert_eq!(rb.metadata.namespace.as_deref(), Some("cluster-config"));
        assert_eq!(rb.role_ref.name, "cluster-admin");
        let subject = &rb.subjects.as_ref().expect("subjects")[0];
        assert_eq!(subject.name, "cluster-config-applier");
        assert_eq!(subject.namespace.as_deref(), Some("cluster-config"));
    }

    #[test]
    fn ssh_credentials_use_flux_keys() {
        let spec = json!({
            "gitRepository": {"url": "ssh://git@github.com/org/repo", "repositoryRef": {"branch": "main"},
                              "sshKnownHosts": "Z2l0aHViLmNvbSBzc2gtZWQyNTUxOSBBQUFB"},
            "kustomizations": {"k": {}}
        });
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        let objects =
            translate(&config(spec), &settings(&[("sshPrivateKey", key)])).expect("valid");
        let secret = &objects.secrets[0];
        assert_eq!(secret.metadata.name.as_deref(), Some("cluster-config-auth"));
        let data = secret.data.as_ref().expect("data");
        assert_eq!(data["identity"].0, key.as_bytes());
        assert_eq!(data["known_hosts"].0, b"github.com ssh-ed25519 AAAA");
        assert!(!data.contains_key("password"));
        assert_eq!(
            git(&objects)
                .spec
                .secret_ref
                .as_ref()
                .map(|r| r.name.as_str()),
            Some("cluster-config-auth")
        );
    }

    #[test]
    fn ssh_to_github_without_known_hosts_gets_githubs_keys() {
        let spec = json!({
            "gitRepository": {"url": "ssh://git@github.com/org/repo", "repositoryRef": {"branch": "main"}},
            "kustomizations": {"k": {}}
        });
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        let objects =
            translate(&config(spec), &settings(&[("sshPrivateKey", key)])).expect("valid");
        let data = objects.secrets[0].data.as_ref().expect("data");
        assert_eq!(data["known_hosts"].0, GITHUB_KNOWN_HOSTS.as_bytes());
        assert!(is_github(Some("ssh://git@GitHub.com:22/org/repo")));
        assert!(!is_github(Some(
            "ssh://git@github.com.evil.example/org/repo"
        )));
        assert!(!is_github(Some("https://github.com/org/repo")));
    }

    #[test]
    fn local_auth_ref_is_referenced_instead_of_a_generated_secret() {
        let spec = json!({
            "gitRepository": {"url": "https://h/r", "repositoryRef": {"branch": "main"},
                              "localAuthRef": "mine"},
            "kustomizations": {"k": {}}
        });
        let objects = translate(&config(spec), &settings(&[])).expect("valid");
        assert!(objects.secrets.is_empty());
        assert_eq!(
            git(&objects)
                .spec
                .secret_ref
                .as_ref()
                .map(|r| r.name.as_str()),
            Some("mine")
        );
        assert_eq!(git(&objects).spec.provider, None);
    }

    #[test]
    fn azure_provider_selects_workload_identity() {
        let spec = json!({
            "gitRepository": {"url": "https://dev.azure.com/org/p/_git/r",
                              "repositoryRef": {"branch": "main"}, "provider": "Azure"},
            "kustomizations": {"k": {}}
        });
        let objects = translate(&config(spec), &settings(&[])).expect("valid");
        assert_eq!(git(&objects).spec.provider.as_deref(), Some("azure"));
        assert_eq!(git(&objects).spec.secret_ref, None);
    }

    #[test]
    fn bucket_endpoint_drops_the_scheme_and_plain_http_is_insecure() {
        let spec = json!({
            "sourceKind": "Bucket",
            "bucket": {"url": "http://minio.local:9000/", "bucketName": "bkt", "accessKey": "ak", "insecure": true},
            "kustomizations": {"k": {}}
        });
        let objects =
            translate(&config(spec), &settings(&[("bucketSecretKey", "sk")])).expect("valid");
        let b = bucket(&objects);
        assert_eq!(b.spec.endpoint, "minio.local:9000");
        assert_eq!(b.spec.insecure, Some(true));
        assert_eq!(b.spec.provider.as_deref(), Some("generic"));
        let data = objects.secrets[0].data.as_ref().expect("data");
        assert_eq!(data["accesskey"].0, b"ak");
        assert_eq!(data["secretkey"].0, b"sk");
        assert_eq!(objects.kustomizations[0].spec.source_ref.kind, "Bucket");
    }

    #[test]
    fn azure_blob_is_a_bucket_with_the_azure_provider() {
        let spec = json!({
            "sourceKind": "AzureBlob",
            "azureBlob": {"url": "https://acct.blob.core.windows.net", "containerName": "flux",
                          "timeoutInSeconds": 3600},
            "kustomizations": {"k": {}}
        });
        let objects =
            translate(&config(spec), &settings(&[("sasToken", "sv=2020&sig=x")])).expect("valid");
        let b = bucket(&objects);
        assert_eq!(b.spec.provider.as_deref(), Some("azure"));
        assert_eq!(b.spec.endpoint, "https://acct.blob.core.windows.net");
        assert_eq!(b.spec.bucket_name, "flux");
        // Flux's source timeout pattern has no hour unit.
        assert_eq!(b.spec.timeout.as_deref(), Some("60m0s"));
        let data = objects.secrets[0].data.as_ref().expect("data");
        assert_eq!(data["sasKey"].0, b"sv=2020&sig=x");
    }

    #[test]
    fn invalid_configuration_is_not_translated() {
        let mut spec = tutorial();
        spec["kustomizations"]["apps"]["dependsOn"] = json!(["nope"]);
        let err = translate(&config(spec), &settings(&[])).expect_err("invalid");
        assert!(
            err.to_string()
                .contains("spec.kustomizations.apps.dependsOn[0]"),
            "{err}"
        );
    }

    /// Found by the `fluxconfig_spec` fuzz target: validation decodes base64 leniently (wrapped,
    /// unpadded, URL-safe), translation used to decode strictly and failed a valid configuration.
    #[test]
    fn base64_that_validates_translates() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";
        // The fuzzer's input: a URL-safe '-' where standard base64 has '+'.
        let url_safe = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJzekNDQVZtZ0F-SUJBZ0lVCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K";
        let spec = json!({
            "sourceKind": "OCIRepository",
            "ociRepository": {"url": "oci://ghcr.io/org/manifests", "repositoryRef": {"tag": "v1"},
                              "tlsConfig": {"caCertificate": url_safe}},
            "kustomizations": {"apps": {"path": "./deploy"}}
        });
        let objects = translate(&config(spec), &settings(&[])).expect("valid");
        let ca = &objects.secrets[0].data.as_ref().expect("data")["ca.crt"].0;
        assert!(ca.starts_with(b"-----BEGIN CERTIFICATE-----"));

        let standard = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJzekNDQVZtZ0F3SUJBZ0lVCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K";
        let wrapped = format!(
            "{}\n{}",
            &standard[..40],
            standard[40..].trim_end_matches('=')
        );
        let mut spec = tutorial();
        spec["gitRepository"]["httpsCACert"] = json!(wrapped);
        let objects = translate(&config(spec), &settings(&[])).expect("valid");
        let data = objects.secrets[0].data.as_ref().expect("data");
        assert_eq!(data["ca.crt"].0, pem.as_bytes());
    }
}

//! Turns `create`/`update` flags into fluxConfigurations `properties` and protected settings,
//! the way `az k8s-configuration flux` does (secrets base64-encoded, key files read and
//! encoded, durations in seconds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use fluxconfig_api::protected;
use fluxconfig_api::{Scope, SourceKind};
use serde_json::{json, Map, Value};

use crate::azcli::kustomization::{parse_duration, parse_kustomization, FlagError};
use crate::azcli::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    Git,
    Bucket,
    Azblob,
    Oci,
}

impl KindArg {
    pub fn source_kind(self) -> SourceKind {
        match self {
            KindArg::Git => SourceKind::GitRepository,
            KindArg::Bucket => SourceKind::Bucket,
            KindArg::Azblob => SourceKind::AzureBlob,
            KindArg::Oci => SourceKind::OciRepository,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeArg {
    Cluster,
    Namespace,
}

impl ScopeArg {
    fn scope(self) -> Scope {
        match self {
            ScopeArg::Cluster => Scope::Cluster,
            ScopeArg::Namespace => Scope::Namespace,
        }
    }
}

/// The configuration flags shared by `create` and `update` (az's names).
#[derive(clap::Args, Clone, Default)]
pub struct ConfigArgs {
    /// Namespace of the configuration (create: default `default`).
    #[arg(long)]
    pub namespace: Option<String>,
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
    /// Source kind (default git).
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Source URL (git repository, bucket endpoint, storage account, or oci:// repository).
    #[arg(short = 'u', long)]
    pub url: Option<String>,
    #[arg(long)]
    pub branch: Option<String>,
    /// Git or OCI tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Git or OCI semver range.
    #[arg(long)]
    pub semver: Option<String>,
    #[arg(long)]
    pub commit: Option<String>,
    /// OCI digest.
    #[arg(long)]
    pub digest: Option<String>,
    #[command(flatten)]
    pub kustomization: KustomizationFlags,
    /// Base64-encoded SSH private key.
    #[arg(long)]
    pub ssh_private_key: Option<String>,
    #[arg(long, conflicts_with = "ssh_private_key")]
    pub ssh_private_key_file: Option<PathBuf>,
    /// Base64-encoded known_hosts.
    #[arg(long)]
    pub known_hosts: Option<String>,
    #[arg(long, conflicts_with = "known_hosts")]
    pub known_hosts_file: Option<PathBuf>,
    #[arg(long)]
    pub https_user: Option<String>,
    /// HTTPS password or token (plain; sent base64-encoded as a protected setting).
    #[arg(long)]
    pub https_key: Option<String>,
    /// Base64-encoded PEM CA of the git server.
    #[arg(long)]
    pub https_ca_cert: Option<String>,
    #[arg(long, conflicts_with = "https_ca_cert")]
    pub https_ca_cert_file: Option<PathBuf>,
    /// Name of an existing Secret with the source's credentials.
    #[arg(long, visible_alias = "local-ref")]
    pub local_auth_ref: Option<String>,
    /// Git provider: generic or azure (workload identity to Azure DevOps).
    #[arg(long)]
    pub provider: Option<String>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub suspend: Option<bool>,
    /// Source sync interval, e.g. 10m.
    #[arg(long, visible_alias = "sync-interval")]
    pub interval: Option<String>,
    /// Source timeout, e.g. 10m.
    #[arg(long)]
    pub timeout: Option<String>,
    #[arg(long)]
    pub bucket_name: Option<String>,
    #[arg(long)]
    pub access_key: Option<String>,
    /// Bucket secret key (plain; sent base64-encoded).
    #[arg(long)]
    pub secret_key: Option<String>,
    /// Bucket or OCI over plain HTTP.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub insecure: Option<bool>,
    #[arg(long)]
    pub container_name: Option<String>,
    /// Storage account key (plain; sent base64-encoded).
    #[arg(long)]
    pub account_key: Option<String>,
    /// Storage SAS token (plain; sent base64-encoded).
    #[arg(long)]
    pub sas_token: Option<String>,
    #[arg(long)]
    pub sp_client_id: Option<String>,
    /// Service principal secret (plain; sent base64-encoded).
    #[arg(long)]
    pub sp_client_secret: Option<String>,
    /// Base64-encoded service principal certificate.
    #[arg(long)]
    pub sp_client_cert: Option<String>,
    #[arg(long)]
    pub sp_client_cert_password: Option<String>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub sp_client_cert_send_chain: Option<bool>,
    #[arg(long)]
    pub tenant_id: Option<String>,
    #[arg(long)]
    pub mi_client_id: Option<String>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub use_workload_identity: Option<bool>,
    #[arg(long)]
    pub service_account_name: Option<String>,
    /// Base64-encoded PEM CA of the OCI registry.
    #[arg(long)]
    pub tls_ca_certificate: Option<String>,
    /// Base64-encoded PEM client certificate for the OCI registry.
    #[arg(long)]
    pub tls_client_certificate: Option<String>,
    /// Base64-encoded PEM client key for the OCI registry.
    #[arg(long)]
    pub tls_private_key: Option<String>,
    #[arg(long)]
    pub layer_selector_media_type: Option<String>,
    /// extract or copy.
    #[arg(long)]
    pub layer_selector_operation: Option<String>,
}

/// Every `--kustomization` occurrence, each with its own words: az's `nargs='+'` flag, which
/// clap's derive cannot group by occurrence, hence the hand-written `Args`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KustomizationFlags(pub Vec<Vec<String>>);

const KUSTOMIZATION_ID: &str = "kustomization";

impl clap::FromArgMatches for KustomizationFlags {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let groups = matches
            .get_occurrences::<String>(KUSTOMIZATION_ID)
            .map(|occ| occ.map(|words| words.cloned().collect()).collect())
            .unwrap_or_default();
        Ok(KustomizationFlags(groups))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for KustomizationFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.arg(
            clap::Arg::new(KUSTOMIZATION_ID)
                .long("kustomization")
                .num_args(1..)
                .action(clap::ArgAction::Append)
                .value_name("KEY=VALUE")
                .help(
                    "name=NAME [path=…] [prune=true] [dependsOn=[\"a\"]] [sync_interval=10m] \
                     [retry_interval=…] [timeout=…] [force=…] [wait=…] [postBuild={JSON}]; repeatable",
                ),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl std::fmt::Debug for ConfigArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only what cannot be a secret.
        f.debug_struct("ConfigArgs")
            .field("namespace", &self.namespace)
            .field("scope", &self.scope)
            .field("kind", &self.kind)
            .field("branch", &self.branch)
            .field("tag", &self.tag)
            .field("semver", &self.semver)
            .field("commit", &self.commit)
            .field("kustomization", &self.kustomization)
            .finish_non_exhaustive()
    }
}

fn b64(s: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        map.insert(key.to_string(), v);
    }
}

fn s(v: &Option<String>) -> Option<Value> {
    v.as_ref().map(|x| Value::String(x.clone()))
}

fn b(v: Option<bool>) -> Option<Value> {
    v.map(Value::Bool)
}

/// What the flags ask to change: properties to merge, and protected settings (`None` when no
/// secret flag was given, so an update keeps the stored ones).
pub struct Built {
    pub properties: Map<String, Value>,
    pub protected: Option<BTreeMap<String, String>>,
    pub kind: SourceKind,
}

impl ConfigArgs {
    /// Flags that belong to one source kind only: (flag, given, kinds it applies to).
    fn kind_specific(&self) -> Vec<(&'static str, bool, &'static [KindArg])> {
        use KindArg::*;
        vec![
            ("--branch", self.branch.is_some(), &[Git]),
            ("--commit", self.commit.is_some(), &[Git]),
            ("--tag", self.tag.is_some(), &[Git, Oci]),
            ("--semver", self.semver.is_some(), &[Git, Oci]),
            ("--digest", self.digest.is_some(), &[Oci]),
            (
                "--ssh-private-key",
                self.ssh_private_key.is_some() || self.ssh_private_key_file.is_some(),
                &[Git],
            ),
            (
                "--known-hosts",
                self.known_hosts.is_some() || self.known_hosts_file.is_some(),
                &[Git],
            ),
            ("--https-user", self.https_user.is_some(), &[Git]),
            ("--https-key", self.https_key.is_some(), &[Git]),
            (
                "--https-ca-cert",
                self.https_ca_cert.is_some() || self.https_ca_cert_file.is_some(),
                &[Git],
            ),
            ("--provider", self.provider.is_some(), &[Git]),
            ("--bucket-name", self.bucket_name.is_some(), &[Bucket]),
            ("--access-key", self.access_key.is_some(), &[Bucket]),
            ("--secret-key", self.secret_key.is_some(), &[Bucket]),
            ("--insecure", self.insecure.is_some(), &[Bucket, Oci]),
            ("--container-name", self.container_name.is_some(), &[Azblob]),
            ("--account-key", self.account_key.is_some(), &[Azblob]),
            ("--sas-token", self.sas_token.is_some(), &[Azblob]),
            ("--sp-client-id", self.sp_client_id.is_some(), &[Azblob]),
            (
                "--sp-client-secret",
                self.sp_client_secret.is_some(),
                &[Azblob],
            ),
            ("--sp-client-cert", self.sp_client_cert.is_some(), &[Azblob]),
            (
                "--sp-client-cert-password",
                self.sp_client_cert_password.is_some(),
                &[Azblob],
            ),
            (
                "--sp-client-cert-send-chain",
                self.sp_client_cert_send_chain.is_some(),
                &[Azblob],
            ),
            ("--tenant-id", self.tenant_id.is_some(), &[Azblob]),
            ("--mi-client-id", self.mi_client_id.is_some(), &[Azblob]),
            (
                "--use-workload-identity",
                self.use_workload_identity.is_some(),
                &[Oci],
            ),
            (
                "--service-account-name",
                self.service_account_name.is_some(),
                &[Oci],
            ),
            (
                "--tls-ca-certificate",
                self.tls_ca_certificate.is_some(),
                &[Oci],
            ),
            (
                "--tls-client-certificate",
                self.tls_client_certificate.is_some(),
                &[Oci],
            ),
            ("--tls-private-key", self.tls_private_key.is_some(), &[Oci]),
            (
                "--layer-selector-media-type",
                self.layer_selector_media_type.is_some(),
                &[Oci],
            ),
            (
                "--layer-selector-operation",
                self.layer_selector_operation.is_some(),
                &[Oci],
            ),
        ]
    }

    /// `current_kind` is the stored configuration's kind on update (used when `--kind` is absent).
    pub fn build(&self, current_kind: Option<SourceKind>) -> Result<Built, Error> {
        let kind = match (self.kind, current_kind) {
            (Some(k), _) => k,
            (None, Some(SourceKind::Bucket)) => KindArg::Bucket,
            (None, Some(SourceKind::AzureBlob)) => KindArg::Azblob,
            (None, Some(SourceKind::OciRepository)) => KindArg::Oci,
            (None, _) => KindArg::Git,
        };
        for (flag, given, kinds) in self.kind_specific() {
            if given && !kinds.contains(&kind) {
                let names: Vec<String> = kinds
                    .iter()
                    .map(|k| format!("{k:?}").to_ascii_lowercase())
                    .collect();
                return Err(FlagError::new(
                    flag,
                    format!("applies to --kind {} only", names.join(" or ")),
                )
                .into());
            }
        }

        let mut props = Map::new();
        put(&mut props, "namespace", s(&self.namespace));
        put(
            &mut props,
            "scope",
            self.scope.map(|x| json!(x.scope().as_str())),
        );
        put(&mut props, "suspend", b(self.suspend));
        if self.kind.is_some() {
            props.insert("sourceKind".into(), json!(kind.source_kind().as_str()));
        }

        let mut source = Map::new();
        put(&mut source, "url", s(&self.url));
        if let Some(v) = &self.interval {
            source.insert(
                "syncIntervalInSeconds".into(),
                json!(parse_duration("--interval", v)?),
            );
        }
        if let Some(v) = &self.timeout {
            source.insert(
                "timeoutInSeconds".into(),
                json!(parse_duration("--timeout", v)?),
            );
        }
        put(&mut source, "localAuthRef", s(&self.local_auth_ref));

        let mut secrets = BTreeMap::new();
        let mut secret = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                secrets.insert(key.to_string(), v);
            }
        };
        match kind {
            KindArg::Git => {
                let mut r = Map::new();
                put(&mut r, "branch", s(&self.branch));
                put(&mut r, "tag", s(&self.tag));
                put(&mut r, "semver", s(&self.semver));
                put(&mut r, "commit", s(&self.commit));
                if !r.is_empty() {
                    source.insert("repositoryRef".into(), Value::Object(r));
                }
                let known_hosts = match &self.known_hosts_file {
                    Some(p) => Some(b64(read_file(p)?)),
                    None => self.known_hosts.clone(),
                };
                put(&mut source, "sshKnownHosts", known_hosts.map(Value::String));
                put(&mut source, "httpsUser", s(&self.https_user));
                let ca = match &self.https_ca_cert_file {
                    Some(p) => Some(b64(read_file(p)?)),
                    None => self.https_ca_cert.clone(),
                };
                put(&mut source, "httpsCACert", ca.map(Value::String));
                put(&mut source, "provider", s(&self.provider));
                let key = match &self.ssh_private_key_file {
                    Some(p) => Some(b64(read_file(p)?)),
                    None => self.ssh_private_key.clone(),
                };
                secret(protected::SSH_PRIVATE_KEY, key);
                secret(protected::HTTPS_KEY, self.https_key.as_ref().map(b64));
            }
            KindArg::Bucket => {
                put(&mut source, "bucketName", s(&self.bucket_name));
                put(&mut source, "insecure", b(self.insecure));
                put(&mut source, "accessKey", s(&self.access_key));
                secret(
                    protected::BUCKET_SECRET_KEY,
                    self.secret_key.as_ref().map(b64),
                );
            }
            KindArg::Azblob => {
                put(&mut source, "containerName", s(&self.container_name));
                let mut sp = Map::new();
                put(&mut sp, "clientId", s(&self.sp_client_id));
                put(&mut sp, "tenantId", s(&self.tenant_id));
                put(
                    &mut sp,
                    "clientCertificateSendChain",
                    b(self.sp_client_cert_send_chain),
                );
                if !sp.is_empty() {
                    source.insert("servicePrincipal".into(), Value::Object(sp));
                }
                if let Some(id) = &self.mi_client_id {
                    source.insert("managedIdentity".into(), json!({ "clientId": id }));
                }
                secret(protected::ACCOUNT_KEY, self.account_key.as_ref().map(b64));
                secret(protected::SAS_TOKEN, self.sas_token.as_ref().map(b64));
                secret(
                    protected::CLIENT_SECRET,
                    self.sp_client_secret.as_ref().map(b64),
                );
                secret(protected::CLIENT_CERTIFICATE, self.sp_client_cert.clone());
                secret(
                    protected::CLIENT_CERTIFICATE_PASSWORD,
                    self.sp_client_cert_password.as_ref().map(b64),
                );
            }
            KindArg::Oci => {
                let mut r = Map::new();
                put(&mut r, "tag", s(&self.tag));
                put(&mut r, "semver", s(&self.semver));
                put(&mut r, "digest", s(&self.digest));
                if !r.is_empty() {
                    source.insert("repositoryRef".into(), Value::Object(r));
                }
                put(&mut source, "insecure", b(self.insecure));
                put(
                    &mut source,
                    "useWorkloadIdentity",
                    b(self.use_workload_identity),
                );
                put(
                    &mut source,
                    "serviceAccountName",
                    s(&self.service_account_name),
                );
                if let Some(ca) = &self.tls_ca_certificate {
                    source.insert("tlsConfig".into(), json!({ "caCertificate": ca }));
                }
                let mut layer = Map::new();
                put(&mut layer, "mediaType", s(&self.layer_selector_media_type));
                put(&mut layer, "operation", s(&self.layer_selector_operation));
                if !layer.is_empty() {
                    source.insert("layerSelector".into(), Value::Object(layer));
                }
                secret(
                    protected::TLS_CLIENT_CERTIFICATE,
                    self.tls_client_certificate.clone(),
                );
                secret(protected::TLS_PRIVATE_KEY, self.tls_private_key.clone());
            }
        }
        if !source.is_empty() {
            props.insert(kind.source_kind().property().into(), Value::Object(source));
        }

        if !self.kustomization.0.is_empty() {
            let mut ks = Map::new();
            for words in &self.kustomization.0 {
                let (name, def) = parse_kustomization(words)?;
                if ks.contains_key(&name) {
                    return Err(FlagError::new(
                        "--kustomization name",
                        format!("kustomization '{name}' is given more than once"),
                    )
                    .into());
                }
                let value = serde_json::to_value(def).map_err(Error::Encode)?;
                ks.insert(name, value);
            }
            props.insert("kustomizations".into(), Value::Object(ks));
        }

        Ok(Built {
            properties: props,
            protected: (!secrets.is_empty()).then_some(secrets),
            kind: kind.source_kind(),
        })
    }
}

/// Merges `patch` into `base`: objects merge key by key, except those whose whole value a flag
/// sets at once (a new git ref replaces the old one rather than adding a second ref; the
/// kustomizations given replace the old set, as in az).
pub fn merge(base: &mut Map<String, Value>, patch: Map<String, Value>) {
    const REPLACED: [&str; 2] = ["repositoryRef", "kustomizations"];
    for (key, value) in patch {
        match (base.get_mut(&key), value) {
            (Some(Value::Object(b)), Value::Object(p)) if !REPLACED.contains(&key.as_str()) => {
                merge(b, p)
            }
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git() -> ConfigArgs {
        ConfigArgs {
            url: Some("https://github.com/Azure/gitops-flux2-kustomize-helm-mt".into()),
            branch: Some("main".into()),
            ..Default::default()
        }
    }

    #[test]
    fn git_with_secrets() {
        let args = ConfigArgs {
            https_user: Some("me".into()),
            https_key: Some("pat".into()),
            interval: Some("10m".into()),
            kustomization: KustomizationFlags(vec![vec![
                "name=infra".into(),
                "path=./infrastructure".into(),
            ]]),
            ..git()
        };
        let built = args.build(None).unwrap();
        let p = Value::Object(built.properties);
        assert_eq!(p["gitRepository"]["repositoryRef"]["branch"], "main");
        assert_eq!(p["gitRepository"]["syncIntervalInSeconds"], 600);
        assert_eq!(p["kustomizations"]["infra"]["path"], "./infrastructure");
        assert!(p.get("sourceKind").is_none());
        let protected = built.protected.unwrap();
        assert_eq!(protected["httpsKey"], b64("pat"));
        assert!(!p.to_string().contains(&b64("pat")));
    }

    #[test]
    fn flags_of_another_kind_are_rejected() {
        let args = ConfigArgs {
            bucket_name: Some("b".into()),
            ..git()
        };
        let Err(Error::Flag(e)) = args.build(None) else {
            panic!("expected a flag error");
        };
        assert_eq!(e.field, "--bucket-name");
        let oci = ConfigArgs {
            kind: Some(KindArg::Oci),
            tag: Some("v1".into()),
            url: Some("oci://ghcr.io/x/y".into()),
            ..Default::default()
        };
        let p = Value::Object(oci.build(None).unwrap().properties);
        assert_eq!(p["ociRepository"]["repositoryRef"]["tag"], "v1");
        assert_eq!(p["sourceKind"], "OCIRepository");
    }

    #[test]
    fn update_keeps_the_stored_kind() {
        let args = ConfigArgs {
            bucket_name: Some("b2".into()),
            ..Default::default()
        };
        let p = args.build(Some(SourceKind::Bucket)).unwrap().properties;
        assert_eq!(p["bucket"]["bucketName"], "b2");
    }

    #[test]
    fn duplicate_kustomizations_are_rejected() {
        let args = ConfigArgs {
            kustomization: KustomizationFlags(vec![vec!["name=a".into()], vec!["name=a".into()]]),
            ..git()
        };
        assert!(matches!(args.build(None), Err(Error::Flag(_))));
    }

    #[test]
    fn merge_replaces_refs_and_kustomizations() {
        let mut base = match json!({
            "gitRepository": {"url": "u", "repositoryRef": {"branch": "main"}},
            "kustomizations": {"a": {}, "b": {}}
        }) {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let patch = match json!({
            "gitRepository": {"repositoryRef": {"tag": "v1"}},
            "kustomizations": {"c": {}}
        }) {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        merge(&mut base, patch);
        let v = Value::Object(base);
        assert_eq!(v["gitRepository"]["url"], "u");
        assert_eq!(v["gitRepository"]["repositoryRef"], json!({"tag": "v1"}));
        assert_eq!(v["kustomizations"], json!({"c": {}}));
    }
}

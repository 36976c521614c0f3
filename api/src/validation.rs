//! Pure validation of a flux configuration: every reason a configuration cannot be turned into
//! working Flux objects, each reported against the field the user has to change.
//!
//! Both the agent (before it writes a `FluxConfig` read from the data plane) and the controller
//! (before it translates one) call this, so a configuration is judged the same way on both sides
//! and the messages can be shown to Azure users as they are. No I/O happens here.
//!
//! Field names use Azure's property names (`spec.gitRepository.url`), protected settings are named
//! `configurationProtectedSettings.<key>`. Messages never contain a protected-setting value, and
//! never echo a URL that carries credentials.
//!
//! Choices where Azure's own behaviour is not documented:
//! - intervals (`syncIntervalInSeconds`, `retryIntervalInSeconds`) must lie in 1 s ..= 30 days,
//!   `timeoutInSeconds` in 1 s ..= 1 day;
//! - `reconciliationWaitDuration` must be a positive ISO 8601 duration (days, hours, minutes,
//!   seconds; no years or months) of at most PT60M;
//! - an empty string counts as "not set" for optional properties and protected settings, as the
//!   Azure CLI treats them;
//! - kustomization names must be DNS-1123 labels (the Azure CLI also accepts dots, but a label
//!   keeps `<config>-<kustomization>` usable as a label value and object name everywhere);
//! - git `provider: Azure` needs an https URL and no other credentials (workload identity replaces
//!   them); the host is not restricted, so Azure DevOps Server installations keep working.
//! - protected settings that belong to another source kind are ignored, like unknown keys.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;

use crate::fluxconfig::{
    AzureBlobDefinition, BucketDefinition, GitRepositoryDefinition, KustomizationDefinition,
    Kustomizations, OciRepositoryDefinition, PostBuildDefinition, RepositoryRefDefinition,
    VerifyDefinition,
};
use crate::protected::{self, ProtectedSettings};
use crate::{FluxConfig, FluxConfigSpec, SourceKind};

/// Longest Kubernetes object name (and label value) this module lets through.
pub const MAX_OBJECT_NAME: usize = 63;
/// Shortest sync, retry or timeout interval, in seconds.
pub const MIN_INTERVAL_SECONDS: i64 = 1;
/// Longest sync or retry interval: 30 days.
pub const MAX_INTERVAL_SECONDS: i64 = 30 * 24 * 60 * 60;
/// Longest timeout: 1 day.
pub const MAX_TIMEOUT_SECONDS: i64 = 24 * 60 * 60;
/// Longest `reconciliationWaitDuration`: PT60M.
pub const MAX_RECONCILIATION_WAIT_SECONDS: f64 = 60.0 * 60.0;

const PROTECTED_PREFIX: &str = "configurationProtectedSettings";

/// One reason a configuration cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending property, e.g. `spec.kustomizations.apps.dependsOn[0]`.
    pub field: String,
    /// What is wrong and what is allowed, fit to show to a user.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every reason a configuration cannot be applied, in a deterministic order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {}", join_errors(.0))]
pub struct ValidationErrors(pub Vec<FieldError>);

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ValidationErrors {
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    /// The errors reported against exactly `field`.
    pub fn for_field<'a>(&'a self, field: &'a str) -> impl Iterator<Item = &'a FieldError> + 'a {
        self.0.iter().filter(move |e| e.field == field)
    }
}

/// Name of the Flux Kustomization for kustomization `kustomization` of configuration `config`.
pub fn kustomization_object_name(config: &str, kustomization: &str) -> String {
    format!("{config}-{kustomization}")
}

/// Validates a configuration named `name` in `namespace` (the FluxConfig's metadata) with its spec
/// and decoded protected settings.
pub fn validate_spec(
    name: &str,
    namespace: &str,
    spec: &FluxConfigSpec,
    protected: &ProtectedSettings,
) -> Result<(), ValidationErrors> {
    check(Some(name), Some(namespace), spec, protected)
}

/// Validates a `FluxConfig`, reading its name and namespace from the metadata.
pub fn validate(
    config: &FluxConfig,
    protected: &ProtectedSettings,
) -> Result<(), ValidationErrors> {
    check(
        config.metadata.name.as_deref(),
        config.metadata.namespace.as_deref(),
        &config.spec,
        protected,
    )
}

/// Deserialises a spec (Azure `properties` shape), turning type errors and unknown enum values into
/// a field-named error instead of a bare serde message.
pub fn parse_spec(value: &serde_json::Value) -> Result<FluxConfigSpec, ValidationErrors> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let base = if path.is_empty() || path == "." {
            "spec".to_string()
        } else {
            format!("spec.{path}")
        };
        let (field, message) = describe_serde_error(base, &err.into_inner().to_string());
        ValidationErrors(vec![FieldError::new(field, message)])
    })
}

/// [`parse_spec`] followed by [`validate_spec`].
pub fn validate_raw(
    name: &str,
    namespace: &str,
    value: &serde_json::Value,
    protected: &ProtectedSettings,
) -> Result<FluxConfigSpec, ValidationErrors> {
    let spec = parse_spec(value)?;
    validate_spec(name, namespace, &spec, protected)?;
    Ok(spec)
}

fn describe_serde_error(field: String, raw: &str) -> (String, String) {
    // Backticks delimit the offending value and the expected alternatives in serde's messages.
    let quoted: Vec<&str> = raw.split('`').skip(1).step_by(2).collect();
    if raw.starts_with("unknown variant") {
        if let Some((value, allowed)) = quoted.split_first() {
            let allowed = if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            };
            return (
                field,
                format!("\"{value}\" is not a valid value; allowed values: {allowed}"),
            );
        }
    }
    if raw.starts_with("missing field") {
        if let Some(name) = quoted.first() {
            return (format!("{field}.{name}"), "is required".to_string());
        }
    }
    if let Some(rest) = raw.strip_prefix("invalid type: ") {
        if let Some((got, expected)) = rest.split_once(", expected ") {
            return (
                field,
                format!(
                    "has the wrong type: expected {expected}, got {}",
                    got.replace('`', "")
                ),
            );
        }
    }
    (field, raw.replace('`', "\""))
}

#[derive(Default)]
struct Collector(Vec<FieldError>);

impl Collector {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}

fn check(
    name: Option<&str>,
    namespace: Option<&str>,
    spec: &FluxConfigSpec,
    protected: &ProtectedSettings,
) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();

    match name {
        Some(n) => check_label(&mut c, "metadata.name", "configuration name", n),
        None => c.err(
            "metadata.name",
            "is required: the configuration has no name",
        ),
    }
    match namespace {
        Some(ns) => check_label(&mut c, "metadata.namespace", "namespace", ns),
        None => c.err(
            "metadata.namespace",
            "is required: the configuration has no namespace",
        ),
    }
    if let Some(spec_ns) = non_empty(&spec.namespace) {
        match namespace {
            Some(ns) if ns != spec_ns => c.err(
                "spec.namespace",
                format!(
                    "\"{spec_ns}\" differs from the configuration's namespace \"{ns}\"; \
                     the configuration and its Flux objects live in the same namespace"
                ),
            ),
            Some(_) => {}
            None => check_label(&mut c, "spec.namespace", "namespace", spec_ns),
        }
    }

    check_source(&mut c, spec, protected);
    check_kustomizations(&mut c, name, &spec.kustomizations);

    if let Some(wait) = non_empty(&spec.reconciliation_wait_duration) {
        check_wait_duration(&mut c, wait);
    }
    if let Some(secret) = non_empty(&spec.protected_settings_secret_ref) {
        check_subdomain(
            &mut c,
            "spec.protectedSettingsSecretRef",
            "Secret name",
            secret,
        );
    }
    c.finish()
}

// ---------------------------------------------------------------------------------------------
// Names

fn dns_label_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("must not be empty".to_string());
    }
    if value.len() > MAX_OBJECT_NAME {
        return Some(format!(
            "is {} characters long; at most {MAX_OBJECT_NAME} are allowed",
            value.len()
        ));
    }
    if let Some(ch) = value
        .chars()
        .find(|ch| !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || *ch == '-'))
    {
        return Some(format!(
            "contains {ch:?}; only lowercase letters (a-z), digits (0-9) and '-' are allowed"
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Some("must start and end with a lowercase letter or digit".to_string());
    }
    None
}

fn check_label(c: &mut Collector, field: &str, what: &str, value: &str) {
    if let Some(problem) = dns_label_problem(value) {
        c.err(
            field,
            format!("{what} \"{value}\" is not a valid DNS-1123 label: {problem}"),
        );
    }
}

fn dns_subdomain_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("must not be empty".to_string());
    }
    if value.len() > 253 {
        return Some(format!(
            "is {} characters long; at most 253 are allowed",
            value.len()
        ));
    }
    if let Some(ch) = value
        .chars()
        .find(|ch| !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || *ch == '-' || *ch == '.'))
    {
        return Some(format!(
            "contains {ch:?}; only lowercase letters (a-z), digits (0-9), '-' and '.' are allowed"
        ));
    }
    let bad_part = value
        .split('.')
        .any(|part| part.is_empty() || part.starts_with('-') || part.ends_with('-'));
    if bad_part {
        return Some(
            "each '.'-separated part must start and end with a lowercase letter or digit"
                .to_string(),
        );
    }
    None
}

fn check_subdomain(c: &mut Collector, field: &str, what: &str, value: &str) {
    if let Some(problem) = dns_subdomain_problem(value) {
        c.err(
            field,
            format!("{what} \"{value}\" is not a valid DNS-1123 subdomain: {problem}"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

fn secret<'a>(protected: &'a ProtectedSettings, key: &str) -> Option<&'a str> {
    protected
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn protected_field(key: &str) -> String {
    format!("{PROTECTED_PREFIX}.{key}")
}

fn check_seconds(c: &mut Collector, field: String, value: Option<i64>, max: i64, max_label: &str) {
    let Some(v) = value else { return };
    if v < MIN_INTERVAL_SECONDS {
        c.err(
            field,
            format!("must be at least {MIN_INTERVAL_SECONDS} second, got {v}"),
        );
    } else if v > max {
        c.err(
            field,
            format!("must be at most {max} seconds ({max_label}), got {v}"),
        );
    }
}

fn check_source_intervals(
    c: &mut Collector,
    base: &str,
    timeout: Option<i64>,
    sync_interval: Option<i64>,
) {
    check_seconds(
        c,
        format!("{base}.timeoutInSeconds"),
        timeout,
        MAX_TIMEOUT_SECONDS,
        "1 day",
    );
    check_seconds(
        c,
        format!("{base}.syncIntervalInSeconds"),
        sync_interval,
        MAX_INTERVAL_SECONDS,
        "30 days",
    );
}

/// Lenient base64: Azure users paste wrapped or unpadded output of various tools. Public so the
/// controller decodes exactly what validation let through (a stricter decoder there failed
/// translation of valid configurations; found by the `fluxconfig_spec` fuzz target).
pub fn decode_base64(value: &str) -> Option<Vec<u8>> {
    use base64::engine::{
        general_purpose, DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig,
    };
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let compact: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    LENIENT
        .decode(compact.as_bytes())
        .or_else(|_| general_purpose::URL_SAFE_NO_PAD.decode(compact.trim_end_matches('=')))
        .ok()
}

fn decode_base64_text(value: &str) -> Result<String, &'static str> {
    let bytes = decode_base64(value).ok_or("is not valid base64")?;
    String::from_utf8(bytes).map_err(|_| "does not decode (base64) to UTF-8 text")
}

fn pem_certificate_problem(text: &str) -> Option<&'static str> {
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Some("does not contain a PEM certificate (-----BEGIN CERTIFICATE-----)");
    }
    if !text.contains("-----END CERTIFICATE-----") {
        return Some("contains a truncated PEM certificate (no -----END CERTIFICATE-----)");
    }
    None
}

fn check_base64_certificate(c: &mut Collector, field: String, value: &str) {
    match decode_base64_text(value) {
        Err(problem) => c.err(
            field,
            format!("{problem}: expected a base64-encoded PEM CA certificate"),
        ),
        Ok(text) => {
            if let Some(problem) = pem_certificate_problem(&text) {
                c.err(field, format!("{problem} after base64 decoding"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// URLs

struct Url<'a> {
    scheme: &'a str,
    path: &'a str,
    query: Option<&'a str>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum UrlUse {
    Git,
    Bucket,
    AzureBlob,
    Oci,
}

impl UrlUse {
    fn schemes(self) -> &'static [&'static str] {
        match self {
            UrlUse::Git => &["http", "https", "ssh"],
            UrlUse::Bucket => &["http", "https"],
            UrlUse::AzureBlob => &["https"],
            UrlUse::Oci => &["oci"],
        }
    }

    fn example(self) -> &'static str {
        match self {
            UrlUse::Git => "https://github.com/org/repo or ssh://git@github.com/org/repo",
            UrlUse::Bucket => "https://s3.amazonaws.com",
            UrlUse::AzureBlob => "https://account.blob.core.windows.net",
            UrlUse::Oci => "oci://ghcr.io/org/manifests",
        }
    }

    fn credential_hint(self) -> &'static str {
        match self {
            UrlUse::Git => {
                "put the user name in httpsUser and the password or token in the protected \
                 setting httpsKey"
            }
            UrlUse::Bucket => {
                "put the access key in accessKey and the secret key in the protected setting \
                 bucketSecretKey"
            }
            UrlUse::AzureBlob => {
                "authenticate with servicePrincipal, accountKey, sasToken, managedIdentity or \
                 localAuthRef"
            }
            UrlUse::Oci => "put registry credentials in the Secret named by localAuthRef",
        }
    }
}

/// `git@github.com:org/repo` → `ssh://git@github.com/org/repo`.
fn scp_to_ssh(url: &str) -> Option<String> {
    let (left, path) = url.split_once(':')?;
    let (user, host) = left.split_once('@')?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    let user_ok = !user.is_empty() && !user.contains('/');
    if !host_ok || !user_ok || path.is_empty() || path.starts_with("//") {
        return None;
    }
    Some(format!(
        "ssh://{user}@{host}/{}",
        path.trim_start_matches('/')
    ))
}

fn check_url<'a>(
    c: &mut Collector,
    field: &str,
    url: Option<&'a str>,
    use_: UrlUse,
) -> Option<Url<'a>> {
    let Some(url) = url.filter(|u| !u.trim().is_empty()) else {
        c.err(field, format!("is required, e.g. {}", use_.example()));
        return None;
    };
    if url.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        c.err(field, "must not contain spaces or control characters");
        return None;
    }
    let allowed = use_
        .schemes()
        .iter()
        .map(|s| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(", ");
    let Some((scheme, after)) = url.split_once("://") else {
        match scp_to_ssh(url) {
            Some(ssh) if use_ == UrlUse::Git => c.err(
                field,
                format!(
                    "scp-style address \"{url}\" is not supported; use the equivalent \
                     ssh:// URL \"{ssh}\""
                ),
            ),
            _ => c.err(
                field,
                format!("must start with {allowed}, e.g. {}", use_.example()),
            ),
        }
        return None;
    };
    if !use_.schemes().contains(&scheme) {
        let lower = scheme.to_ascii_lowercase();
        if use_.schemes().contains(&lower.as_str()) {
            c.err(
                field,
                format!("the scheme must be lowercase: use {lower}:// (allowed: {allowed})"),
            );
        } else if scheme.contains(['@', ':', '/']) {
            c.err(field, format!("must start with {allowed}"));
        } else {
            c.err(
                field,
                format!("scheme \"{scheme}://\" is not supported; use {allowed}"),
            );
        }
        return None;
    }
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    if let Some(userinfo) = userinfo {
        if scheme == "ssh" {
            if userinfo.contains(':') {
                c.err(
                    field,
                    "must not contain a password; authenticate with the protected setting \
                     sshPrivateKey",
                );
            }
        } else {
            c.err(
                field,
                format!(
                    "must not contain credentials (user:password@host); {}",
                    use_.credential_hint()
                ),
            );
        }
    }
    if host.is_empty() || host.starts_with(':') {
        c.err(field, format!("has no host, e.g. {}", use_.example()));
    }
    let rest = rest.split('#').next().unwrap_or_default();
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    Some(Url {
        scheme,
        path,
        query,
    })
}

// ---------------------------------------------------------------------------------------------
// Sources

fn check_source(c: &mut Collector, spec: &FluxConfigSpec, protected: &ProtectedSettings) {
    let kind = spec.source_kind();
    let blocks = [
        (SourceKind::GitRepository, spec.git_repository.is_some()),
        (SourceKind::Bucket, spec.bucket.is_some()),
        (SourceKind::AzureBlob, spec.azure_blob.is_some()),
        (SourceKind::OciRepository, spec.oci_repository.is_some()),
    ];
    for (other, present) in blocks {
        if other != kind && present {
            c.err(
                format!("spec.{}", other.property()),
                format!(
                    "conflicts with spec.sourceKind \"{}\": only spec.{} may be set (remove \
                     spec.{} or set sourceKind to \"{}\")",
                    kind.as_str(),
                    kind.property(),
                    other.property(),
                    other.as_str()
                ),
            );
        }
    }
    let missing = |c: &mut Collector| {
        let defaulted = if spec.source_kind.is_none() {
            " (sourceKind defaults to GitRepository)"
        } else {
            ""
        };
        c.err(
            format!("spec.{}", kind.property()),
            format!(
                "is required when sourceKind is \"{}\"{defaulted}",
                kind.as_str()
            ),
        );
    };
    match kind {
        SourceKind::GitRepository => match &spec.git_repository {
            Some(git) => check_git(c, git, protected),
            None => missing(c),
        },
        SourceKind::Bucket => match &spec.bucket {
            Some(bucket) => check_bucket(c, bucket, protected),
            None => missing(c),
        },
        SourceKind::AzureBlob => match &spec.azure_blob {
            Some(blob) => check_azure_blob(c, blob, protected),
            None => missing(c),
        },
        SourceKind::OciRepository => match &spec.oci_repository {
            Some(oci) => check_oci(c, oci, protected),
            None => missing(c),
        },
    }
}

fn list_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn check_git(c: &mut Collector, git: &GitRepositoryDefinition, protected: &ProtectedSettings) {
    const BASE: &str = "spec.gitRepository";
    let url = check_url(c, "spec.gitRepository.url", git.url.as_deref(), UrlUse::Git);
    let scheme = url.as_ref().map(|u| u.scheme);
    let is_http = matches!(scheme, Some("http" | "https"));
    let is_ssh = scheme == Some("ssh");

    check_git_ref(c, git.repository_ref.as_ref());
    check_source_intervals(
        c,
        BASE,
        git.timeout_in_seconds,
        git.sync_interval_in_seconds,
    );

    let ssh_key = secret(protected, protected::SSH_PRIVATE_KEY);
    let https_key = secret(protected, protected::HTTPS_KEY);
    let https_user = non_empty(&git.https_user);
    let known_hosts = non_empty(&git.ssh_known_hosts);
    let ca_cert = non_empty(&git.https_ca_cert);
    let local_auth = non_empty(&git.local_auth_ref);

    if is_http {
        if ssh_key.is_some() {
            c.err(
                protected_field(protected::SSH_PRIVATE_KEY),
                "cannot be used with an http(s) URL: use an ssh:// URL, or authenticate with \
                 httpsUser and httpsKey",
            );
        }
        if known_hosts.is_some() {
            c.err(
                format!("{BASE}.sshKnownHosts"),
                "cannot be used with an http(s) URL: known hosts only apply to ssh:// URLs",
            );
        }
    }
    if is_ssh {
        if https_user.is_some() {
            c.err(
                format!("{BASE}.httpsUser"),
                "cannot be used with an ssh:// URL: use an https:// URL, or authenticate with \
                 the protected setting sshPrivateKey",
            );
        }
        if https_key.is_some() {
            c.err(
                protected_field(protected::HTTPS_KEY),
                "cannot be used with an ssh:// URL: use an https:// URL, or authenticate with \
                 the protected setting sshPrivateKey",
            );
        }
    }
    if ca_cert.is_some() && scheme.is_some() && scheme != Some("https") {
        c.err(
            format!("{BASE}.httpsCACert"),
            "can only be used with an https:// URL",
        );
    }

    if let Some(local) = local_auth {
        check_subdomain(c, &format!("{BASE}.localAuthRef"), "Secret name", local);
        let mut with = Vec::new();
        if https_user.is_some() {
            with.push("spec.gitRepository.httpsUser");
        }
        if https_key.is_some() {
            with.push("configurationProtectedSettings.httpsKey");
        }
        if ssh_key.is_some() {
            with.push("configurationProtectedSettings.sshPrivateKey");
        }
        if !with.is_empty() {
            c.err(
                format!("{BASE}.localAuthRef"),
                format!(
                    "conflicts with {}: the Secret named by localAuthRef must hold all the \
                     credentials; remove one or the other",
                    list_and(&with)
                ),
            );
        }
    } else if !is_ssh {
        // An ssh URL already got its own error for https credentials above.
        if https_user.is_some() && https_key.is_none() {
            c.err(
                format!("{BASE}.httpsUser"),
                "requires the protected setting httpsKey (the password or personal access token)",
            );
        }
        if https_key.is_some() && https_user.is_none() {
            c.err(
                protected_field(protected::HTTPS_KEY),
                "requires spec.gitRepository.httpsUser (the user name)",
            );
        }
    }

    if let Some(key) = ssh_key {
        if let Some(problem) = private_key_problem(key) {
            c.err(protected_field(protected::SSH_PRIVATE_KEY), problem);
        }
    }
    if let Some(hosts) = known_hosts {
        if let Some(problem) = known_hosts_problem(hosts) {
            c.err(format!("{BASE}.sshKnownHosts"), problem);
        }
    }
    if let Some(ca) = ca_cert {
        check_base64_certificate(c, format!("{BASE}.httpsCACert"), ca);
    }

    if let Some(provider) = non_empty(&git.provider) {
        let field = format!("{BASE}.provider");
        match provider {
            "Azure" => {
                if scheme.is_some() && scheme != Some("https") {
                    c.err(
                        field.clone(),
                        "provider \"Azure\" (workload identity to Azure DevOps) requires an \
                         https:// URL",
                    );
                }
                let mut with = Vec::new();
                if https_user.is_some() {
                    with.push("spec.gitRepository.httpsUser");
                }
                if https_key.is_some() {
                    with.push("configurationProtectedSettings.httpsKey");
                }
                if ssh_key.is_some() {
                    with.push("configurationProtectedSettings.sshPrivateKey");
                }
                if local_auth.is_some() {
                    with.push("spec.gitRepository.localAuthRef");
                }
                if !with.is_empty() {
                    c.err(
                        field,
                        format!(
                            "provider \"Azure\" authenticates with workload identity and \
                             conflicts with {}; remove them or use provider \"Generic\"",
                            list_and(&with)
                        ),
                    );
                }
            }
            "Generic" => {}
            other if other.eq_ignore_ascii_case("azure") => c.err(
                field,
                "must be spelled \"Azure\" (allowed values: Azure, Generic)",
            ),
            other if other.eq_ignore_ascii_case("generic") => c.err(
                field,
                "must be spelled \"Generic\" (allowed values: Azure, Generic)",
            ),
            other => c.err(
                field,
                format!("\"{other}\" is not supported; allowed values: Azure, Generic"),
            ),
        }
    }
}

fn check_git_ref(c: &mut Collector, reference: Option<&RepositoryRefDefinition>) {
    const FIELD: &str = "spec.gitRepository.repositoryRef";
    const ONE_OF: &str = "set exactly one of branch, tag, semver or commit";
    let Some(r) = reference else {
        c.err(FIELD, format!("is required: {ONE_OF}"));
        return;
    };
    let set: Vec<(&str, &str)> = [
        ("branch", &r.branch),
        ("tag", &r.tag),
        ("semver", &r.semver),
        ("commit", &r.commit),
    ]
    .into_iter()
    .filter_map(|(name, value)| non_empty(value).map(|v| (name, v)))
    .collect();
    match set.len() {
        0 => c.err(FIELD, format!("is empty: {ONE_OF}")),
        1 => {}
        _ => {
            let names: Vec<&str> = set.iter().map(|(n, _)| *n).collect();
            c.err(
                FIELD,
                format!("{} are mutually exclusive: {ONE_OF}", list_and(&names)),
            );
        }
    }
    for (name, value) in set {
        let field = format!("{FIELD}.{name}");
        let problem = match name {
            "branch" => git_ref_name_problem(value, "refs/heads/"),
            "tag" => git_ref_name_problem(value, "refs/tags/"),
            "semver" => semver_problem(value),
            _ => commit_problem(value),
        };
        if let Some(problem) = problem {
            c.err(field, problem);
        }
    }
}

/// A light version of `git check-ref-format`, enough to catch typos that can never match a ref.
fn git_ref_name_problem(value: &str, full_prefix: &str) -> Option<String> {
    if value
        .chars()
        .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        return Some(format!(
            "\"{}\" must not contain spaces or control characters",
            value.escape_debug()
        ));
    }
    if value.starts_with(full_prefix) {
        return Some(format!(
            "\"{value}\" must be given without the \"{full_prefix}\" prefix"
        ));
    }
    if let Some(ch) = value
        .chars()
        .find(|ch| matches!(ch, '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Some(format!(
            "\"{value}\" is not a valid git ref name: it contains {ch:?}"
        ));
    }
    if value.contains("..")
        || value.contains("//")
        || value.contains("@{")
        || value.starts_with(['-', '/', '.'])
        || value.ends_with(['/', '.'])
        || value.ends_with(".lock")
        || value == "@"
    {
        return Some(format!("\"{value}\" is not a valid git ref name"));
    }
    None
}

fn semver_problem(value: &str) -> Option<String> {
    let allowed = |ch: char| {
        ch.is_ascii_alphanumeric()
            || matches!(
                ch,
                '.' | '-' | '+' | '*' | '^' | '~' | '<' | '>' | '=' | '!' | ',' | '|' | ' '
            )
    };
    let has_version = value
        .chars()
        .any(|ch| ch.is_ascii_digit() || matches!(ch, '*' | 'x' | 'X'));
    if value.trim().is_empty() || !value.chars().all(allowed) || !has_version {
        return Some(format!(
            "\"{}\" is not a semver range; examples: \">=1.0.0 <2.0.0\", \"~1.2\", \"1.x\"",
            value.escape_debug()
        ));
    }
    None
}

fn commit_problem(value: &str) -> Option<String> {
    let hex = value.chars().all(|ch| ch.is_ascii_hexdigit());
    if hex && (value.len() == 40 || value.len() == 64) {
        return None;
    }
    Some(format!(
        "\"{}\" is not a full commit SHA: expected 40 (SHA-1) or 64 (SHA-256) hexadecimal \
         characters, got {}",
        value.escape_debug(),
        value.chars().count()
    ))
}

/// Never quotes the key: only says what shape was expected.
fn private_key_problem(key: &str) -> Option<&'static str> {
    let text = key.trim();
    if text.starts_with("ssh-")
        || text.starts_with("ecdsa-")
        || text.starts_with("sk-")
        || text.contains("PUBLIC KEY-----")
    {
        return Some(
            "is a public key; provide the private key (-----BEGIN OPENSSH PRIVATE KEY----- or \
             a PEM RSA/EC private key)",
        );
    }
    let first_line = text.lines().next().unwrap_or_default().trim();
    if !(first_line.starts_with("-----BEGIN ") && first_line.ends_with("PRIVATE KEY-----")) {
        let double_encoded =
            decode_base64(text).is_some_and(|bytes| bytes.starts_with(b"-----BEGIN "));
        if double_encoded {
            return Some(
                "is base64-encoded twice: encode the private key file with base64 exactly once",
            );
        }
        return Some(
            "is not a PEM or OpenSSH private key: expected text beginning with \
             -----BEGIN OPENSSH PRIVATE KEY----- or -----BEGIN RSA/EC PRIVATE KEY-----",
        );
    }
    if !text.contains("-----END ") {
        return Some("is truncated: the -----END ... PRIVATE KEY----- line is missing");
    }
    if first_line.contains("ENCRYPTED") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Some(
            "is protected by a passphrase, which is not supported: provide an unencrypted key",
        );
    }
    None
}

fn known_hosts_problem(value: &str) -> Option<String> {
    let text = match decode_base64_text(value) {
        Ok(text) => text,
        Err(problem) => {
            return Some(format!(
                "{problem}: expected the base64-encoded content of a known_hosts file"
            ))
        }
    };
    let mut entries = 0;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| *f == "@cert-authority" || *f == "@revoked")
        {
            fields.remove(0);
        }
        let key_type_ok = fields.get(1).is_some_and(|t| {
            t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-")
        });
        let key_ok = fields.get(2).is_some_and(|k| decode_base64(k).is_some());
        if !key_type_ok || !key_ok {
            return Some(format!(
                "line {} is not a known_hosts entry; expected \"<hosts> <key-type> \
                 <base64-key>\", e.g. \"github.com ssh-ed25519 AAAA...\"",
                index + 1
            ));
        }
        entries += 1;
    }
    if entries == 0 {
        return Some("contains no known_hosts entries after base64 decoding".to_string());
    }
    None
}

fn check_bucket(c: &mut Collector, bucket: &BucketDefinition, protected: &ProtectedSettings) {
    const BASE: &str = "spec.bucket";
    let url = check_url(c, "spec.bucket.url", bucket.url.as_deref(), UrlUse::Bucket);
    if let Some(url) = &url {
        if url.scheme == "http" && bucket.insecure != Some(true) {
            c.err(
                "spec.bucket.url",
                "uses plain http://: set spec.bucket.insecure to true to allow it, or use \
                 https://",
            );
        }
    }
    match non_empty(&bucket.bucket_name) {
        None => c.err(
            format!("{BASE}.bucketName"),
            "is required: the name of the bucket to fetch",
        ),
        Some(name) => {
            if let Some(problem) = bucket_name_problem(name) {
                c.err(
                    format!("{BASE}.bucketName"),
                    format!(
                        "\"{name}\" is not a valid bucket name: {problem} (3-63 lowercase \
                         letters, digits, '.' and '-', starting and ending with a letter or digit)"
                    ),
                );
            }
        }
    }
    check_source_intervals(
        c,
        BASE,
        bucket.timeout_in_seconds,
        bucket.sync_interval_in_seconds,
    );

    let access_key = non_empty(&bucket.access_key);
    let secret_key = secret(protected, protected::BUCKET_SECRET_KEY);
    if let Some(local) = non_empty(&bucket.local_auth_ref) {
        check_subdomain(c, &format!("{BASE}.localAuthRef"), "Secret name", local);
        let mut with = Vec::new();
        if access_key.is_some() {
            with.push("spec.bucket.accessKey");
        }
        if secret_key.is_some() {
            with.push("configurationProtectedSettings.bucketSecretKey");
        }
        if !with.is_empty() {
            c.err(
                format!("{BASE}.localAuthRef"),
                format!(
                    "conflicts with {}: the Secret named by localAuthRef must hold all the \
                     credentials; remove one or the other",
                    list_and(&with)
                ),
            );
        }
    } else {
        if access_key.is_some() && secret_key.is_none() {
            c.err(
                format!("{BASE}.accessKey"),
                "requires the protected setting bucketSecretKey",
            );
        }
        if secret_key.is_some() && access_key.is_none() {
            c.err(
                protected_field(protected::BUCKET_SECRET_KEY),
                "requires spec.bucket.accessKey",
            );
        }
    }
}

fn bucket_name_problem(name: &str) -> Option<&'static str> {
    if name.len() < 3 || name.len() > 63 {
        return Some("it must be 3 to 63 characters long");
    }
    if !name
        .chars()
        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '.' || ch == '-')
    {
        return Some("it contains characters other than lowercase letters, digits, '.' and '-'");
    }
    let edge_ok = |ch: Option<char>| ch.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Some("it must start and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Some("'.' must not be next to another '.' or a '-'");
    }
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() == 4 && parts.iter().all(|p| p.parse::<u8>().is_ok()) {
        return Some("it must not look like an IP address");
    }
    None
}

fn container_name_problem(name: &str) -> Option<&'static str> {
    if matches!(name, "$root" | "$web" | "$logs") {
        return None;
    }
    if name.len() < 3 || name.len() > 63 {
        return Some("it must be 3 to 63 characters long");
    }
    if !name
        .chars()
        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
    {
        return Some("it contains characters other than lowercase letters, digits and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Some("every '-' must sit between letters or digits");
    }
    None
}

fn check_azure_blob(c: &mut Collector, blob: &AzureBlobDefinition, protected: &ProtectedSettings) {
    const BASE: &str = "spec.azureBlob";
    let url = check_url(
        c,
        "spec.azureBlob.url",
        blob.url.as_deref(),
        UrlUse::AzureBlob,
    );
    if let Some(query) = url.as_ref().and_then(|u| u.query) {
        if query.split('&').any(|kv| kv.starts_with("sig=")) {
            c.err(
                "spec.azureBlob.url",
                "must not contain a SAS token: put it in the protected setting sasToken",
            );
        }
    }
    match non_empty(&blob.container_name) {
        None => c.err(
            format!("{BASE}.containerName"),
            "is required: the name of the blob container to fetch",
        ),
        Some(name) => {
            if let Some(problem) = container_name_problem(name) {
                c.err(
                    format!("{BASE}.containerName"),
                    format!(
                        "\"{name}\" is not a valid container name: {problem} (3-63 lowercase \
                         letters, digits and '-', starting and ending with a letter or digit)"
                    ),
                );
            }
        }
    }
    check_source_intervals(
        c,
        BASE,
        blob.timeout_in_seconds,
        blob.sync_interval_in_seconds,
    );

    let client_secret = secret(protected, protected::CLIENT_SECRET);
    let client_cert = secret(protected, protected::CLIENT_CERTIFICATE);
    let client_cert_password = secret(protected, protected::CLIENT_CERTIFICATE_PASSWORD);
    let account_key = secret(protected, protected::ACCOUNT_KEY);
    let sas_token = secret(protected, protected::SAS_TOKEN);
    let local_auth = non_empty(&blob.local_auth_ref);

    let mut methods = Vec::new();
    if blob.service_principal.is_some() || client_secret.is_some() || client_cert.is_some() {
        methods.push("servicePrincipal");
    }
    if account_key.is_some() {
        methods.push("accountKey");
    }
    if sas_token.is_some() {
        methods.push("sasToken");
    }
    if blob.managed_identity.is_some() {
        methods.push("managedIdentity");
    }
    if local_auth.is_some() {
        methods.push("localAuthRef");
    }
    if methods.len() > 1 {
        c.err(
            BASE,
            format!(
                "{} are mutually exclusive: use at most one authentication method of \
                 servicePrincipal, accountKey, sasToken, managedIdentity or localAuthRef",
                list_and(&methods)
            ),
        );
    }

    match &blob.service_principal {
        Some(sp) => {
            let sp_base = format!("{BASE}.servicePrincipal");
            if non_empty(&sp.client_id).is_none() {
                c.err(
                    format!("{sp_base}.clientId"),
                    "is required for service principal authentication",
                );
            }
            if non_empty(&sp.tenant_id).is_none() {
                c.err(
                    format!("{sp_base}.tenantId"),
                    "is required for service principal authentication",
                );
            }
            match (client_secret, client_cert) {
                (None, None) => c.err(
                    sp_base,
                    "requires the protected setting clientSecret or clientCertificate",
                ),
                (Some(_), Some(_)) => c.err(
                    protected_field(protected::CLIENT_CERTIFICATE),
                    "conflicts with configurationProtectedSettings.clientSecret: a service \
                     principal authenticates with a client secret or a client certificate, \
                     not both",
                ),
                _ => {}
            }
        }
        None => {
            for (key, value) in [
                (protected::CLIENT_SECRET, client_secret),
                (protected::CLIENT_CERTIFICATE, client_cert),
            ] {
                if value.is_some() {
                    c.err(
                        protected_field(key),
                        "requires spec.azureBlob.servicePrincipal with clientId and tenantId",
                    );
                }
            }
        }
    }
    if client_cert_password.is_some() && client_cert.is_none() {
        c.err(
            protected_field(protected::CLIENT_CERTIFICATE_PASSWORD),
            "requires the protected setting clientCertificate",
        );
    }
    if let Some(cert) = client_cert {
        if !cert.contains("-----BEGIN ") {
            c.err(
                protected_field(protected::CLIENT_CERTIFICATE),
                "is not PEM: expected the certificate and private key in PEM format \
                 (-----BEGIN ...)",
            );
        }
    }
    if let Some(mi) = &blob.managed_identity {
        if mi.client_id.as_deref() == Some("") {
            c.err(
                format!("{BASE}.managedIdentity.clientId"),
                "must not be empty: give the client ID of the managed identity, or omit it",
            );
        }
    }
    if let Some(local) = local_auth {
        check_subdomain(c, &format!("{BASE}.localAuthRef"), "Secret name", local);
    }
}

fn check_oci(c: &mut Collector, oci: &OciRepositoryDefinition, protected: &ProtectedSettings) {
    const BASE: &str = "spec.ociRepository";
    let url = check_url(c, "spec.ociRepository.url", oci.url.as_deref(), UrlUse::Oci);
    if let Some(url) = &url {
        let last = url
            .path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        if url.path.trim_matches('/').is_empty() {
            c.err(
                "spec.ociRepository.url",
                "must name a repository, e.g. oci://ghcr.io/org/manifests",
            );
        } else if last.contains([':', '@']) {
            c.err(
                "spec.ociRepository.url",
                "must not contain a tag or digest: set spec.ociRepository.repositoryRef.tag or \
                 .digest instead",
            );
        }
    }
    check_source_intervals(
        c,
        BASE,
        oci.timeout_in_seconds,
        oci.sync_interval_in_seconds,
    );

    if let Some(r) = &oci.repository_ref {
        let ref_base = format!("{BASE}.repositoryRef");
        let set: Vec<(&str, &str)> = [
            ("tag", &r.tag),
            ("semver", &r.semver),
            ("digest", &r.digest),
        ]
        .into_iter()
        .filter_map(|(name, value)| non_empty(value).map(|v| (name, v)))
        .collect();
        if set.len() > 1 {
            let names: Vec<&str> = set.iter().map(|(n, _)| *n).collect();
            c.err(
                ref_base.clone(),
                format!(
                    "{} are mutually exclusive: set at most one of tag, semver or digest",
                    list_and(&names)
                ),
            );
        }
        for (name, value) in set {
            let problem = match name {
                "tag" => oci_tag_problem(value),
                "semver" => semver_problem(value),
                _ => oci_digest_problem(value),
            };
            if let Some(problem) = problem {
                c.err(format!("{ref_base}.{name}"), problem);
            }
        }
    }

    if let Some(operation) = oci
        .layer_selector
        .as_ref()
        .and_then(|l| non_empty(&l.operation))
    {
        if operation != "extract" && operation != "copy" {
            c.err(
                format!("{BASE}.layerSelector.operation"),
                format!("\"{operation}\" is not supported; allowed values: extract, copy"),
            );
        }
    }
    if let Some(verify) = &oci.verify {
        check_verify(c, verify);
    }
    if let Some(ca) = oci
        .tls_config
        .as_ref()
        .and_then(|t| non_empty(&t.ca_certificate))
    {
        check_base64_certificate(c, format!("{BASE}.tlsConfig.caCertificate"), ca);
    }
    let tls_cert = secret(protected, protected::TLS_CLIENT_CERTIFICATE);
    let tls_key = secret(protected, protected::TLS_PRIVATE_KEY);
    match (tls_cert, tls_key) {
        (Some(_), None) => c.err(
            protected_field(protected::TLS_CLIENT_CERTIFICATE),
            "requires the protected setting tlsPrivateKey",
        ),
        (None, Some(_)) => c.err(
            protected_field(protected::TLS_PRIVATE_KEY),
            "requires the protected setting tlsClientCertificate",
        ),
        _ => {}
    }
    if let Some(sa) = non_empty(&oci.service_account_name) {
        check_subdomain(
            c,
            &format!("{BASE}.serviceAccountName"),
            "service account name",
            sa,
        );
    }
    if let Some(local) = non_empty(&oci.local_auth_ref) {
        check_subdomain(c, &format!("{BASE}.localAuthRef"), "Secret name", local);
        if oci.use_workload_identity == Some(true) {
            c.err(
                format!("{BASE}.localAuthRef"),
                "conflicts with spec.ociRepository.useWorkloadIdentity: workload identity \
                 replaces the credentials of localAuthRef; remove one or the other",
            );
        }
    }
}

fn oci_tag_problem(tag: &str) -> Option<String> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && tag.len() <= 128 {
        return None;
    }
    Some(format!(
        "\"{}\" is not a valid OCI tag: up to 128 letters, digits, '_', '.' and '-', not \
         starting with '.' or '-'",
        tag.escape_debug()
    ))
}

fn oci_digest_problem(digest: &str) -> Option<String> {
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    };
    let ok = match digest.split_once(':') {
        Some(("sha256", hex)) => lower_hex(hex, 64),
        Some(("sha512", hex)) => lower_hex(hex, 128),
        _ => false,
    };
    if ok {
        return None;
    }
    Some(format!(
        "\"{}\" is not a valid digest: expected sha256:<64 lowercase hexadecimal characters>",
        digest.escape_debug()
    ))
}

fn check_verify(c: &mut Collector, verify: &VerifyDefinition) {
    const BASE: &str = "spec.ociRepository.verify";
    let provider = non_empty(&verify.provider).unwrap_or("cosign");
    if provider != "cosign" && provider != "notation" {
        c.err(
            format!("{BASE}.provider"),
            format!("\"{provider}\" is not supported; allowed values: cosign, notation"),
        );
    }
    if provider == "notation" && !verify.match_oidc_identity.is_empty() {
        c.err(
            format!("{BASE}.matchOidcIdentity"),
            "is only supported with provider cosign (keyless verification)",
        );
    }
    for (i, identity) in verify.match_oidc_identity.iter().enumerate() {
        for (name, pattern) in [("issuer", &identity.issuer), ("subject", &identity.subject)] {
            let field = format!("{BASE}.matchOidcIdentity[{i}].{name}");
            if pattern.is_empty() {
                c.err(field, "is required: a regular expression, e.g. ^https://token.actions.githubusercontent.com$");
            } else if regex::Regex::new(pattern).is_err() {
                c.err(field, "is not a valid regular expression");
            }
        }
    }
    for (name, value) in &verify.verification_config {
        let field = format!("{BASE}.verificationConfig.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        {
            c.err(
                field,
                "is not a valid key name: use letters, digits, '-', '_' and '.'",
            );
        } else if decode_base64(value).is_none() {
            c.err(
                field,
                "is not valid base64: expected a base64-encoded public key",
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kustomizations

fn check_kustomizations(c: &mut Collector, config: Option<&str>, kustomizations: &Kustomizations) {
    let defined: Vec<&str> = kustomizations
        .keys()
        .map(String::as_str)
        .filter(|k| !k.is_empty())
        .collect();
    for (name, kustomization) in kustomizations {
        if name.is_empty() {
            c.err(
                "spec.kustomizations",
                "a kustomization has an empty name; every kustomization needs a name (a DNS-1123 \
                 label, e.g. \"apps\")",
            );
            continue;
        }
        let base = format!("spec.kustomizations.{name}");
        check_label(c, &base, "kustomization name", name);
        if let Some(config) = config.filter(|n| !n.is_empty()) {
            let object = kustomization_object_name(config, name);
            if object.len() > MAX_OBJECT_NAME {
                c.err(
                    base.clone(),
                    format!(
                        "the Flux Kustomization name \"{object}\" (<configuration>-<kustomization>) \
                         is {} characters long; at most {MAX_OBJECT_NAME} are allowed because \
                         Flux labels every object it applies with the Kustomization name and label \
                         values are limited to {MAX_OBJECT_NAME} characters: shorten the \
                         configuration or kustomization name",
                        object.len()
                    ),
                );
            }
        }
        check_kustomization(c, &base, name, kustomization, &defined);
    }
    check_cycles(c, kustomizations);
}

fn check_kustomization(
    c: &mut Collector,
    base: &str,
    name: &str,
    k: &KustomizationDefinition,
    defined: &[&str],
) {
    if let Some(path) = k.path.as_deref() {
        if let Some(problem) = path_problem(path) {
            c.err(format!("{base}.path"), problem);
        }
    }

    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, dep) in k.depends_on.iter().enumerate() {
        let field = format!("{base}.dependsOn[{i}]");
        if dep.is_empty() {
            c.err(
                field,
                "must not be empty: name another kustomization of this configuration",
            );
        } else if dep == name {
            c.err(
                field,
                format!("kustomization \"{name}\" cannot depend on itself"),
            );
        } else if let Some(first) = seen.get(dep.as_str()) {
            c.err(
                field,
                format!("duplicate dependency on \"{dep}\" (already listed at dependsOn[{first}])"),
            );
        } else if !defined.contains(&dep.as_str()) {
            c.err(
                field,
                format!(
                    "kustomization \"{dep}\" is not defined in this configuration (defined: {})",
                    defined.join(", ")
                ),
            );
        }
        seen.entry(dep.as_str()).or_insert(i);
    }

    check_seconds(
        c,
        format!("{base}.timeoutInSeconds"),
        k.timeout_in_seconds,
        MAX_TIMEOUT_SECONDS,
        "1 day",
    );
    check_seconds(
        c,
        format!("{base}.syncIntervalInSeconds"),
        k.sync_interval_in_seconds,
        MAX_INTERVAL_SECONDS,
        "30 days",
    );
    check_seconds(
        c,
        format!("{base}.retryIntervalInSeconds"),
        k.retry_interval_in_seconds,
        MAX_INTERVAL_SECONDS,
        "30 days",
    );
    if let Some(post_build) = &k.post_build {
        check_post_build(c, &format!("{base}.postBuild"), post_build);
    }
}

fn path_problem(path: &str) -> Option<String> {
    if path.chars().any(char::is_control) {
        return Some("must not contain control characters (such as NUL or newline)".to_string());
    }
    if path.contains('\\') {
        return Some(format!(
            "\"{path}\" contains '\\'; use '/' to separate directories, e.g. ./apps/staging"
        ));
    }
    if path.starts_with('/') {
        return Some(format!(
            "\"{path}\" is absolute; give a path relative to the repository root, e.g. ./apps"
        ));
    }
    let mut depth: usize = 0;
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => {
                    return Some(format!(
                        "\"{path}\" leads outside the repository; '..' must not climb above the \
                         repository root"
                    ))
                }
            },
            _ => depth += 1,
        }
    }
    None
}

fn check_post_build(c: &mut Collector, base: &str, post_build: &PostBuildDefinition) {
    for key in post_build.substitute.keys() {
        let mut chars = key.chars();
        let valid = chars
            .next()
            .is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
            && chars.all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !valid {
            c.err(
                format!("{base}.substitute.{key}"),
                format!(
                    "\"{}\" is not a valid variable name: use letters, digits and '_', not \
                     starting with a digit (^[_a-zA-Z][_a-zA-Z0-9]*$)",
                    key.escape_debug()
                ),
            );
        }
    }
    for (i, reference) in post_build.substitute_from.iter().enumerate() {
        let field = format!("{base}.substituteFrom[{i}]");
        if reference.kind != "ConfigMap" && reference.kind != "Secret" {
            c.err(
                format!("{field}.kind"),
                format!(
                    "\"{}\" is not supported; allowed values: ConfigMap, Secret",
                    reference.kind.escape_debug()
                ),
            );
        }
        check_subdomain(c, &format!("{field}.name"), "object name", &reference.name);
    }
}

/// Reports each distinct dependency cycle once, starting at its alphabetically first member so the
/// report is stable.
fn check_cycles(c: &mut Collector, kustomizations: &Kustomizations) {
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, k) in kustomizations {
        let mut deps: Vec<&str> = Vec::new();
        for dep in &k.depends_on {
            let dep = dep.as_str();
            if dep != name && kustomizations.contains_key(dep) && !deps.contains(&dep) {
                deps.push(dep);
            }
        }
        edges.insert(name.as_str(), deps);
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }

    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        cycles: &mut BTreeSet<Vec<&'a str>>,
    ) {
        marks.insert(node, Mark::Visiting);
        stack.push(node);
        for &next in edges.get(node).map(Vec::as_slice).unwrap_or_default() {
            match marks.get(next) {
                Some(Mark::Visiting) => {
                    if let Some(start) = stack.iter().position(|n| *n == next) {
                        let mut cycle = stack[start..].to_vec();
                        if let Some(min) = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, n)| **n)
                            .map(|(i, _)| i)
                        {
                            cycle.rotate_left(min);
                        }
                        cycles.insert(cycle);
                    }
                }
                Some(Mark::Done) => {}
                None => visit(next, edges, marks, stack, cycles),
            }
        }
        stack.pop();
        marks.insert(node, Mark::Done);
    }

    let mut marks = BTreeMap::new();
    let mut cycles = BTreeSet::new();
    for &node in edges.keys() {
        if !marks.contains_key(node) {
            let mut stack = Vec::new();
            visit(node, &edges, &mut marks, &mut stack, &mut cycles);
        }
    }

    for cycle in cycles {
        let (Some(&first), Some(&second)) = (cycle.first(), cycle.get(1).or(cycle.first())) else {
            continue;
        };
        let index = kustomizations
            .get(first)
            .and_then(|k| k.depends_on.iter().position(|d| d == second))
            .unwrap_or(0);
        let mut path = cycle.clone();
        path.push(first);
        c.err(
            format!("spec.kustomizations.{first}.dependsOn[{index}]"),
            format!(
                "dependency cycle: {}; kustomizations must not depend on each other in a loop",
                path.join(" -> ")
            ),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// reconciliationWaitDuration

fn check_wait_duration(c: &mut Collector, value: &str) {
    const FIELD: &str = "spec.reconciliationWaitDuration";
    match parse_iso8601_seconds(value) {
        None => c.err(
            FIELD,
            format!(
                "\"{}\" is not an ISO 8601 duration; examples: PT10M, PT1H, PT30M30S",
                value.escape_debug()
            ),
        ),
        Some(seconds) if seconds <= 0.0 => c.err(FIELD, "must be greater than zero, e.g. PT10M"),
        Some(seconds) if seconds > MAX_RECONCILIATION_WAIT_SECONDS => c.err(
            FIELD,
            format!("\"{value}\" is longer than the maximum of PT60M (60 minutes)"),
        ),
        Some(_) => {}
    }
}

/// `P[nW|nD][T[nH][nM][n[.n]S]]`; years and months are rejected since their length is ambiguous.
fn parse_iso8601_seconds(value: &str) -> Option<f64> {
    let rest = value.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => {
            if t.is_empty() {
                return None;
            }
            (d, t)
        }
        None => (rest, ""),
    };
    if date.is_empty() && time.is_empty() {
        return None;
    }
    let date_units: &[(char, f64)] = &[('W', 7.0 * 86400.0), ('D', 86400.0)];
    let time_units: &[(char, f64)] = &[('H', 3600.0), ('M', 60.0), ('S', 1.0)];
    Some(sum_components(date, date_units, false)? + sum_components(time, time_units, true)?)
}

fn sum_components(mut text: &str, units: &[(char, f64)], fraction_last: bool) -> Option<f64> {
    let mut total = 0.0;
    let mut next_unit = 0;
    while !text.is_empty() {
        let end = text.find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))?;
        let (number, after) = text.split_at(end);
        let unit = after.chars().next()?;
        let position = units[next_unit..].iter().position(|(u, _)| *u == unit)? + next_unit;
        let is_last = position == units.len() - 1;
        if number.is_empty()
            || number.starts_with('.')
            || number.ends_with('.')
            || (number.contains('.') && !(fraction_last && is_last))
        {
            return None;
        }
        let amount: f64 = number.parse().ok()?;
        total += amount * units[position].1;
        next_unit = position + 1;
        text = &after[unit.len_utf8()..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const SSH_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\n\
        b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n\
        -----END OPENSSH PRIVATE KEY-----\n";
    const SECRET: &str = "s3cr3t-Value-that-must-never-leak";

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn known_hosts() -> String {
        b64("github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    }

    /// The spec's JSON name of `httpsCACert`, whatever the serde attributes make of it, so these
    /// tests follow fluxconfig.rs rather than restate it.
    fn ca_key() -> String {
        let git = crate::fluxconfig::GitRepositoryDefinition {
            https_ca_cert: Some(String::new()),
            ..Default::default()
        };
        let value = serde_json::to_value(git).unwrap();
        value.as_object().unwrap().keys().next().unwrap().clone()
    }

    fn ca_cert() -> String {
        b64("-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n")
    }

    /// The Azure GitOps tutorial configuration.
    fn tutorial() -> Value {
        json!({
            "scope": "cluster",
            "namespace": "cluster-config",
            "sourceKind": "GitRepository",
            "gitRepository": {
                "url": "https://github.com/Azure/gitops-flux2-kustomize-helm-mt",
                "repositoryRef": { "branch": "main" },
                "syncIntervalInSeconds": 600,
                "timeoutInSeconds": 600
            },
            "kustomizations": {
                "infra": { "path": "./infrastructure", "prune": true },
                "apps": { "path": "./apps/staging", "prune": true, "dependsOn": ["infra"] }
            }
        })
    }

    fn bucket() -> Value {
        json!({
            "sourceKind": "Bucket",
            "bucket": {
                "url": "https://s3.amazonaws.com",
                "bucketName": "my-manifests",
                "accessKey": "AKIAEXAMPLE"
            },
            "kustomizations": { "apps": { "path": "./apps" } }
        })
    }

    fn azure_blob() -> Value {
        json!({
            "sourceKind": "AzureBlob",
            "azureBlob": {
                "url": "https://account.blob.core.windows.net",
                "containerName": "manifests",
                "servicePrincipal": { "clientId": "00000000-0000-0000-0000-000000000001",
                                      "tenantId": "00000000-0000-0000-0000-000000000002" }
            },
            "kustomizations": { "apps": {} }
        })
    }

    fn oci() -> Value {
        json!({
            "sourceKind": "OCIRepository",
            "ociRepository": {
                "url": "oci://ghcr.io/org/manifests",
                "repositoryRef": { "tag": "v1.2.3" },
                "layerSelector": { "mediaType": "application/vnd.cncf.flux.content.v1.tar+gzip",
                                   "operation": "extract" },
                "verify": { "provider": "cosign",
                            "matchOidcIdentity": [{ "issuer": "^https://token.actions.githubusercontent.com$",
                                                     "subject": "^https://github.com/org/.*$" }] },
                "tlsConfig": { "caCertificate": ca_cert() }
            },
            "kustomizations": { "apps": { "path": "./deploy" } }
        })
    }

    fn protected(pairs: &[(&str, &str)]) -> ProtectedSettings {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn run(
        name: &str,
        namespace: &str,
        spec: &Value,
        p: &ProtectedSettings,
    ) -> Result<(), ValidationErrors> {
        let spec = parse_spec(spec)?;
        validate_spec(name, namespace, &spec, p)
    }

    fn set(v: &mut Value, pointer: &str, new: Value) {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target = if parent.is_empty() {
            &mut *v
        } else {
            v.pointer_mut(parent).unwrap()
        };
        target.as_object_mut().unwrap().insert(key.to_string(), new);
    }

    fn remove(v: &mut Value, pointer: &str) {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        v.pointer_mut(parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(key)
            .unwrap();
    }

    #[test]
    fn valid_configurations_pass() {
        let none = protected(&[]);
        let cases: Vec<(&str, Value, ProtectedSettings)> = vec![
            ("tutorial", tutorial(), none.clone()),
            (
                "bucket",
                bucket(),
                protected(&[("bucketSecretKey", SECRET)]),
            ),
            (
                "azure blob",
                azure_blob(),
                protected(&[("clientSecret", SECRET)]),
            ),
            ("oci", oci(), none.clone()),
            (
                "ssh git",
                {
                    let mut v = tutorial();
                    set(
                        &mut v,
                        "/gitRepository/url",
                        json!("ssh://git@github.com/org/repo"),
                    );
                    set(&mut v, "/gitRepository/sshKnownHosts", json!(known_hosts()));
                    v
                },
                protected(&[("sshPrivateKey", SSH_KEY), ("unknownKey", "ignored")]),
            ),
            (
                "https git with auth, source only, extras",
                {
                    let mut v = json!({
                    "gitRepository": {
                        "url": "https://dev.azure.com/org/project/_git/repo",
                        "repositoryRef": { "commit": "4f1bdad3a2e1c2b7d0e9f8a7b6c5d4e3f2a1b0c9" },
                        "httpsUser": "git",
                        "provider": "Generic"
                    },
                    "reconciliationWaitDuration": "PT1H",
                    "protectedSettingsSecretRef": "cluster-config-protected"
                    });
                    set(
                        &mut v,
                        &format!("/gitRepository/{}", ca_key()),
                        json!(ca_cert()),
                    );
                    v
                },
                protected(&[("httpsKey", SECRET)]),
            ),
            (
                "kustomization details",
                {
                    let mut v = tutorial();
                    set(
                        &mut v,
                        "/kustomizations/apps/path",
                        json!("./a/../apps/staging/"),
                    );
                    set(
                        &mut v,
                        "/kustomizations/apps/retryIntervalInSeconds",
                        json!(60),
                    );
                    set(
                        &mut v,
                        "/kustomizations/apps/postBuild",
                        json!({
                            "substitute": { "cluster_env": "prod", "_REGION": "westeurope" },
                            "substituteFrom": [{ "kind": "ConfigMap", "name": "cluster-vars" },
                                               { "kind": "Secret", "name": "cluster.secrets", "optional": true }]
                        }),
                    );
                    set(&mut v, "/reconciliationWaitDuration", json!("PT1H0M"));
                    v
                },
                none.clone(),
            ),
            (
                "git semver and bucket over http with insecure",
                {
                    let mut v = tutorial();
                    set(
                        &mut v,
                        "/gitRepository/repositoryRef",
                        json!({ "semver": ">=1.0.0 <2.0.0" }),
                    );
                    v
                },
                none.clone(),
            ),
            (
                "insecure http bucket, localAuthRef",
                json!({
                    "sourceKind": "Bucket",
                    "bucket": { "url": "http://minio.minio:9000", "bucketName": "flux", "insecure": true,
                                "localAuthRef": "minio-credentials" }
                }),
                none.clone(),
            ),
            (
                "azure blob sas token, oci digest",
                json!({
                    "sourceKind": "AzureBlob",
                    "azureBlob": { "url": "https://account.blob.core.windows.net", "containerName": "$web" }
                }),
                protected(&[("sasToken", SECRET)]),
            ),
            (
                "oci digest",
                {
                    let mut v = oci();
                    set(
                        &mut v,
                        "/ociRepository/repositoryRef",
                        json!({ "digest": format!("sha256:{}", "a".repeat(64)) }),
                    );
                    v
                },
                none.clone(),
            ),
        ];
        for (label, spec, p) in cases {
            assert_eq!(
                run("cluster-config", "cluster-config", &spec, &p),
                Ok(()),
                "{label}"
            );
        }
    }

    #[test]
    fn validate_reads_metadata() {
        let spec = parse_spec(&tutorial()).unwrap();
        let mut config = FluxConfig::new("cluster-config", spec);
        config.metadata.namespace = Some("cluster-config".to_string());
        assert_eq!(validate(&config, &protected(&[])), Ok(()));

        config.metadata.namespace = None;
        config.metadata.name = None;
        let err = validate(&config, &protected(&[])).unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["metadata.name", "metadata.namespace"]);
    }

    type Patch = fn(&mut Value, &mut ProtectedSettings);

    struct Case {
        label: &'static str,
        name: &'static str,
        base: fn() -> Value,
        patch: Patch,
        field: &'static str,
        fragment: &'static str,
    }

    fn cases() -> Vec<Case> {
        fn case(
            label: &'static str,
            base: fn() -> Value,
            patch: Patch,
            field: &'static str,
            fragment: &'static str,
        ) -> Case {
            Case {
                label,
                name: "cluster-config",
                base,
                patch,
                field,
                fragment,
            }
        }
        vec![
            Case { name: "Cluster_Config", ..case("config name uppercase", tutorial, |_, _| {}, "metadata.name", "only lowercase letters") },
            Case { name: "-config", ..case("config name leading hyphen", tutorial, |_, _| {}, "metadata.name", "must start and end") },
            case("spec namespace differs", tutorial, |v, _| set(v, "/namespace", json!("other")),
                "spec.namespace", "differs from the configuration's namespace \"cluster-config\""),
            case("kustomization name invalid", tutorial, |v, _| {
                    set(v, "/kustomizations/Apps_1", json!({}));
                }, "spec.kustomizations.Apps_1", "not a valid DNS-1123 label"),
            case("kustomization empty name", tutorial, |v, _| set(v, "/kustomizations/", json!({})),
                "spec.kustomizations", "empty name"),
            Case { name: "a-very-long-configuration-name-for-the-cluster-gitops-abcd", ..case(
                "object name too long", tutorial, |_, _| {}, "spec.kustomizations.infra",
                "label values are limited to 63 characters") },
            case("source block missing", tutorial, |v, _| remove(v, "/gitRepository"),
                "spec.gitRepository", "is required when sourceKind is \"GitRepository\""),
            case("source block conflict", tutorial, |v, _| set(v, "/bucket", json!({ "url": "https://s3" })),
                "spec.bucket", "conflicts with spec.sourceKind \"GitRepository\""),
            case("git url missing", tutorial, |v, _| remove(v, "/gitRepository/url"),
                "spec.gitRepository.url", "is required"),
            case("git url scheme", tutorial, |v, _| set(v, "/gitRepository/url", json!("ftp://example.com/repo")),
                "spec.gitRepository.url", "scheme \"ftp://\" is not supported; use http://, https://, ssh://"),
            case("git scp url", tutorial, |v, _| set(v, "/gitRepository/url", json!("git@github.com:org/repo.git")),
                "spec.gitRepository.url", "use the equivalent ssh:// URL \"ssh://git@github.com/org/repo.git\""),
            case("git url with credentials", tutorial, |v, _| set(v, "/gitRepository/url", json!("https://user:pass@github.com/org/repo")),
                "spec.gitRepository.url", "put the user name in httpsUser"),
            case("repositoryRef missing", tutorial, |v, _| remove(v, "/gitRepository/repositoryRef"),
                "spec.gitRepository.repositoryRef", "set exactly one of branch, tag, semver or commit"),
            case("repositoryRef empty", tutorial, |v, _| set(v, "/gitRepository/repositoryRef", json!({})),
                "spec.gitRepository.repositoryRef", "is empty"),
            case("repositoryRef conflict", tutorial, |v, _| set(v, "/gitRepository/repositoryRef/tag", json!("v1")),
                "spec.gitRepository.repositoryRef", "branch and tag are mutually exclusive"),
            case("commit not a sha", tutorial, |v, _| set(v, "/gitRepository/repositoryRef", json!({ "commit": "4f1bdad" })),
                "spec.gitRepository.repositoryRef.commit", "got 7"),
            case("semver invalid", tutorial, |v, _| set(v, "/gitRepository/repositoryRef", json!({ "semver": "latest" })),
                "spec.gitRepository.repositoryRef.semver", "is not a semver range"),
            case("branch with refs prefix", tutorial, |v, _| set(v, "/gitRepository/repositoryRef/branch", json!("refs/heads/main")),
                "spec.gitRepository.repositoryRef.branch", "without the \"refs/heads/\" prefix"),
            case("path escapes", tutorial, |v, _| set(v, "/kustomizations/apps/path", json!("./a/../../b")),
                "spec.kustomizations.apps.path", "leads outside the repository"),
            case("path absolute", tutorial, |v, _| set(v, "/kustomizations/apps/path", json!("/apps")),
                "spec.kustomizations.apps.path", "is absolute"),
            case("path backslash", tutorial, |v, _| set(v, "/kustomizations/apps/path", json!(".\\apps")),
                "spec.kustomizations.apps.path", "use '/'"),
            case("path NUL", tutorial, |v, _| set(v, "/kustomizations/apps/path", json!("./apps\u{0}")),
                "spec.kustomizations.apps.path", "NUL"),
            case("dependsOn unknown", tutorial, |v, _| set(v, "/kustomizations/apps/dependsOn", json!(["infr"])),
                "spec.kustomizations.apps.dependsOn[0]", "kustomization \"infr\" is not defined in this configuration (defined: apps, infra)"),
            case("dependsOn self", tutorial, |v, _| set(v, "/kustomizations/apps/dependsOn", json!(["apps"])),
                "spec.kustomizations.apps.dependsOn[0]", "cannot depend on itself"),
            case("dependsOn duplicate", tutorial, |v, _| set(v, "/kustomizations/apps/dependsOn", json!(["infra", "infra"])),
                "spec.kustomizations.apps.dependsOn[1]", "already listed at dependsOn[0]"),
            case("dependsOn cycle", tutorial, |v, _| set(v, "/kustomizations/infra/dependsOn", json!(["apps"])),
                "spec.kustomizations.apps.dependsOn[0]", "dependency cycle: apps -> infra -> apps"),
            case("sync interval zero", tutorial, |v, _| set(v, "/gitRepository/syncIntervalInSeconds", json!(0)),
                "spec.gitRepository.syncIntervalInSeconds", "at least 1 second"),
            case("timeout too long", tutorial, |v, _| set(v, "/kustomizations/infra/timeoutInSeconds", json!(86401)),
                "spec.kustomizations.infra.timeoutInSeconds", "at most 86400 seconds (1 day)"),
            case("retry interval too long", tutorial, |v, _| set(v, "/kustomizations/infra/retryIntervalInSeconds", json!(MAX_INTERVAL_SECONDS + 1)),
                "spec.kustomizations.infra.retryIntervalInSeconds", "30 days"),
            case("wait duration too long", tutorial, |v, _| set(v, "/reconciliationWaitDuration", json!("PT61M")),
                "spec.reconciliationWaitDuration", "maximum of PT60M"),
            case("wait duration not iso", tutorial, |v, _| set(v, "/reconciliationWaitDuration", json!("10m")),
                "spec.reconciliationWaitDuration", "not an ISO 8601 duration"),
            case("substitute key", tutorial, |v, _| set(v, "/kustomizations/apps/postBuild", json!({ "substitute": { "1bad-key": "x" } })),
                "spec.kustomizations.apps.postBuild.substitute.1bad-key", "not a valid variable name"),
            case("substituteFrom kind", tutorial, |v, _| set(v, "/kustomizations/apps/postBuild", json!({ "substituteFrom": [{ "kind": "Deployment", "name": "vars" }] })),
                "spec.kustomizations.apps.postBuild.substituteFrom[0].kind", "allowed values: ConfigMap, Secret"),
            case("substituteFrom name", tutorial, |v, _| set(v, "/kustomizations/apps/postBuild", json!({ "substituteFrom": [{ "kind": "Secret", "name": "Vars" }] })),
                "spec.kustomizations.apps.postBuild.substituteFrom[0].name", "DNS-1123 subdomain"),
            case("ssh key with https url", tutorial, |_, p| { p.insert("sshPrivateKey".into(), SSH_KEY.into()); },
                "configurationProtectedSettings.sshPrivateKey", "cannot be used with an http(s) URL"),
            case("https key with ssh url", tutorial, |v, p| {
                    set(v, "/gitRepository/url", json!("ssh://git@github.com/org/repo"));
                    p.insert("httpsKey".into(), SECRET.into());
                }, "configurationProtectedSettings.httpsKey", "cannot be used with an ssh:// URL"),
            case("https user without key", tutorial, |v, _| set(v, "/gitRepository/httpsUser", json!("me")),
                "spec.gitRepository.httpsUser", "requires the protected setting httpsKey"),
            case("https key without user", tutorial, |_, p| { p.insert("httpsKey".into(), SECRET.into()); },
                "configurationProtectedSettings.httpsKey", "requires spec.gitRepository.httpsUser"),
            case("known hosts not base64", tutorial, |v, _| {
                    set(v, "/gitRepository/url", json!("ssh://git@github.com/org/repo"));
                    set(v, "/gitRepository/sshKnownHosts", json!("not base64!"));
                }, "spec.gitRepository.sshKnownHosts", "is not valid base64"),
            case("known hosts bad line", tutorial, |v, _| {
                    set(v, "/gitRepository/url", json!("ssh://git@github.com/org/repo"));
                    set(v, "/gitRepository/sshKnownHosts", json!(b64("# comment\ngithub.com\n")));
                }, "spec.gitRepository.sshKnownHosts", "line 2 is not a known_hosts entry"),
            case("ca cert not pem", tutorial, |v, _| set(v, &format!("/gitRepository/{}", ca_key()), json!(b64("hello"))),
                "spec.gitRepository.httpsCACert", "does not contain a PEM certificate"),
            case("localAuthRef with credentials", tutorial, |v, p| {
                    set(v, "/gitRepository/localAuthRef", json!("git-auth"));
                    p.insert("httpsKey".into(), SECRET.into());
                }, "spec.gitRepository.localAuthRef", "conflicts with configurationProtectedSettings.httpsKey"),
            case("ssh key not a key", tutorial, |v, p| {
                    set(v, "/gitRepository/url", json!("ssh://git@github.com/org/repo"));
                    p.insert("sshPrivateKey".into(), SECRET.into());
                }, "configurationProtectedSettings.sshPrivateKey", "is not a PEM or OpenSSH private key"),
            case("ssh public key given", tutorial, |v, p| {
                    set(v, "/gitRepository/url", json!("ssh://git@github.com/org/repo"));
                    p.insert("sshPrivateKey".into(), "ssh-ed25519 AAAAC3Nza user@host".into());
                }, "configurationProtectedSettings.sshPrivateKey", "is a public key"),
            case("provider unknown", tutorial, |v, _| set(v, "/gitRepository/provider", json!("GitHub")),
                "spec.gitRepository.provider", "allowed values: Azure, Generic"),
            case("provider case", tutorial, |v, _| set(v, "/gitRepository/provider", json!("azure")),
                "spec.gitRepository.provider", "must be spelled \"Azure\""),
            case("provider azure with ssh", tutorial, |v, _| {
                    set(v, "/gitRepository/url", json!("ssh://git@ssh.dev.azure.com/v3/org/project/repo"));
                    set(v, "/gitRepository/provider", json!("Azure"));
                }, "spec.gitRepository.provider", "requires an https:// URL"),
            case("bucket http without insecure", bucket, |v, p| {
                    set(v, "/bucket/url", json!("http://minio:9000"));
                    p.insert("bucketSecretKey".into(), SECRET.into());
                }, "spec.bucket.url", "set spec.bucket.insecure to true"),
            case("bucket name missing", bucket, |v, p| {
                    remove(v, "/bucket/bucketName");
                    p.insert("bucketSecretKey".into(), SECRET.into());
                }, "spec.bucket.bucketName", "is required"),
            case("bucket name invalid", bucket, |v, p| {
                    set(v, "/bucket/bucketName", json!("My_Bucket"));
                    p.insert("bucketSecretKey".into(), SECRET.into());
                }, "spec.bucket.bucketName", "is not a valid bucket name"),
            case("bucket access key without secret", bucket, |_, _| {},
                "spec.bucket.accessKey", "requires the protected setting bucketSecretKey"),
            case("bucket secret without access key", bucket, |v, p| {
                    remove(v, "/bucket/accessKey");
                    p.insert("bucketSecretKey".into(), SECRET.into());
                }, "configurationProtectedSettings.bucketSecretKey", "requires spec.bucket.accessKey"),
            case("blob http url", azure_blob, |v, p| {
                    set(v, "/azureBlob/url", json!("http://account.blob.core.windows.net"));
                    p.insert("clientSecret".into(), SECRET.into());
                }, "spec.azureBlob.url", "use https://"),
            case("blob container invalid", azure_blob, |v, p| {
                    set(v, "/azureBlob/containerName", json!("ab"));
                    p.insert("clientSecret".into(), SECRET.into());
                }, "spec.azureBlob.containerName", "3 to 63 characters"),
            case("blob two auth methods", azure_blob, |_, p| {
                    p.insert("clientSecret".into(), SECRET.into());
                    p.insert("accountKey".into(), SECRET.into());
                }, "spec.azureBlob", "servicePrincipal and accountKey are mutually exclusive"),
            case("blob sp without tenant", azure_blob, |v, p| {
                    remove(v, "/azureBlob/servicePrincipal/tenantId");
                    p.insert("clientSecret".into(), SECRET.into());
                }, "spec.azureBlob.servicePrincipal.tenantId", "is required"),
            case("blob sp without secret", azure_blob, |_, _| {},
                "spec.azureBlob.servicePrincipal", "requires the protected setting clientSecret or clientCertificate"),
            case("oci url scheme", oci, |v, _| set(v, "/ociRepository/url", json!("https://ghcr.io/org/manifests")),
                "spec.ociRepository.url", "use oci://"),
            case("oci url with tag", oci, |v, _| set(v, "/ociRepository/url", json!("oci://ghcr.io/org/manifests:v1")),
                "spec.ociRepository.url", "must not contain a tag or digest"),
            case("oci ref conflict", oci, |v, _| set(v, "/ociRepository/repositoryRef/semver", json!("1.x")),
                "spec.ociRepository.repositoryRef", "tag and semver are mutually exclusive"),
            case("oci digest invalid", oci, |v, _| set(v, "/ociRepository/repositoryRef", json!({ "digest": "sha256:abc" })),
                "spec.ociRepository.repositoryRef.digest", "sha256:<64 lowercase hexadecimal"),
            case("oci layer operation", oci, |v, _| set(v, "/ociRepository/layerSelector/operation", json!("unpack")),
                "spec.ociRepository.layerSelector.operation", "allowed values: extract, copy"),
            case("oci verify provider", oci, |v, _| set(v, "/ociRepository/verify", json!({ "provider": "gpg" })),
                "spec.ociRepository.verify.provider", "allowed values: cosign, notation"),
            case("oci oidc regex", oci, |v, _| set(v, "/ociRepository/verify/matchOidcIdentity", json!([{ "issuer": "(", "subject": ".*" }])),
                "spec.ociRepository.verify.matchOidcIdentity[0].issuer", "not a valid regular expression"),
            case("protected settings secret ref", tutorial, |v, _| set(v, "/protectedSettingsSecretRef", json!("Bad Name")),
                "spec.protectedSettingsSecretRef", "DNS-1123 subdomain"),
        ]
    }

    #[test]
    fn each_invalid_case_reports_exactly_its_field() {
        let cases = cases();
        assert!(cases.len() >= 30);
        for case in cases {
            let mut spec = (case.base)();
            let mut p = ProtectedSettings::new();
            (case.patch)(&mut spec, &mut p);
            let err = run(case.name, "cluster-config", &spec, &p).expect_err(case.label);
            assert_eq!(
                err.0.len(),
                1,
                "{}: expected one error, got {err}",
                case.label
            );
            let e = &err.0[0];
            assert_eq!(e.field, case.field, "{}: {err}", case.label);
            assert!(
                e.message.contains(case.fragment),
                "{}: message {:?} lacks {:?}",
                case.label,
                e.message,
                case.fragment
            );
            assert!(
                !err.to_string().contains(SECRET),
                "{}: secret leaked: {err}",
                case.label
            );
        }
    }

    #[test]
    fn all_errors_are_reported_in_order() {
        let mut spec = tutorial();
        remove(&mut spec, "/gitRepository/url");
        set(&mut spec, "/kustomizations/apps/dependsOn", json!(["nope"]));
        set(&mut spec, "/reconciliationWaitDuration", json!("PT0S"));
        let err = run("cluster-config", "cluster-config", &spec, &protected(&[])).unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.gitRepository.url",
                "spec.kustomizations.apps.dependsOn[0]",
                "spec.reconciliationWaitDuration"
            ]
        );
        let text = err.to_string();
        assert!(
            text.starts_with("invalid configuration: spec.gitRepository.url: is required"),
            "{text}"
        );
        assert_eq!(text.matches("; spec.").count(), 2, "{text}");
    }

    #[test]
    fn longer_cycle_is_reported_once_from_its_first_member() {
        let spec = json!({
            "gitRepository": { "url": "https://github.com/org/repo", "repositoryRef": { "branch": "main" } },
            "kustomizations": {
                "c": { "dependsOn": ["a"] },
                "a": { "dependsOn": ["b"] },
                "b": { "dependsOn": ["c"] },
                "d": { "dependsOn": ["a"] }
            }
        });
        let err = run("cfg", "ns", &spec, &protected(&[])).unwrap_err();
        assert_eq!(
            err.0,
            [FieldError::new(
                "spec.kustomizations.a.dependsOn[0]",
                "dependency cycle: a -> b -> c -> a; kustomizations must not depend on each other in a loop"
            )]
        );
    }

    #[test]
    fn parse_spec_names_the_field_and_allowed_values() {
        let mut spec = tutorial();
        set(&mut spec, "/sourceKind", json!("Helm"));
        let err = parse_spec(&spec).unwrap_err();
        assert_eq!(
            err.0,
            [FieldError::new(
                "spec.sourceKind",
                "\"Helm\" is not a valid value; allowed values: GitRepository, Bucket, AzureBlob, OCIRepository"
            )]
        );

        let mut spec = tutorial();
        set(&mut spec, "/kustomizations/apps/dependsOn", json!([5]));
        let err = parse_spec(&spec).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].field, "spec.kustomizations.apps.dependsOn[0]");
        assert!(err.0[0].message.contains("expected a string"), "{err}");

        let mut spec = tutorial();
        set(
            &mut spec,
            "/kustomizations/apps/postBuild",
            json!({ "substituteFrom": [{ "name": "x" }] }),
        );
        let err = parse_spec(&spec).unwrap_err();
        assert_eq!(
            err.0[0].field,
            "spec.kustomizations.apps.postBuild.substituteFrom[0].kind"
        );
        assert_eq!(err.0[0].message, "is required");

        let err = validate_raw(
            "cluster-config",
            "cluster-config",
            &json!({ "scope": "tenant" }),
            &protected(&[]),
        )
        .unwrap_err();
        assert_eq!(err.0[0].field, "spec.scope");
        assert!(
            err.0[0]
                .message
                .contains("allowed values: cluster, namespace"),
            "{err}"
        );
    }

    #[test]
    fn no_secret_value_appears_in_any_message() {
        let mut spec = tutorial();
        set(
            &mut spec,
            "/gitRepository/url",
            json!(format!("https://user:{SECRET}@github.com/org/repo")),
        );
        let p = protected(&[
            ("sshPrivateKey", SECRET),
            ("httpsKey", SECRET),
            ("bucketSecretKey", SECRET),
        ]);
        let err = run("cluster-config", "cluster-config", &spec, &p).unwrap_err();
        assert!(err.0.len() >= 3, "{err}");
        assert!(!err.to_string().contains(SECRET), "{err}");
    }

    #[test]
    fn kustomization_object_name_joins_with_hyphen() {
        assert_eq!(
            kustomization_object_name("cluster-config", "infra"),
            "cluster-config-infra"
        );
        let long = "a".repeat(MAX_OBJECT_NAME - 2);
        let spec = json!({
            "gitRepository": { "url": "https://github.com/org/repo", "repositoryRef": { "branch": "main" } },
            "kustomizations": { "b": {} }
        });
        assert_eq!(run(&long, "ns", &spec, &protected(&[])), Ok(()));
        let too_long = "a".repeat(MAX_OBJECT_NAME - 1);
        let err = run(&too_long, "ns", &spec, &protected(&[])).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].field, "spec.kustomizations.b");
    }

    #[test]
    fn iso8601_durations() {
        assert_eq!(parse_iso8601_seconds("PT10M"), Some(600.0));
        assert_eq!(parse_iso8601_seconds("PT1H30M"), Some(5400.0));
        assert_eq!(parse_iso8601_seconds("PT1.5S"), Some(1.5));
        assert_eq!(parse_iso8601_seconds("P1D"), Some(86400.0));
        for bad in [
            "", "P", "PT", "10M", "PT10", "PT10M1H", "P1M", "PT1.5M", "PTM", "pt10m",
        ] {
            assert_eq!(parse_iso8601_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn path_normalisation() {
        assert_eq!(path_problem("./a/../b"), None);
        assert_eq!(path_problem(""), None);
        assert_eq!(path_problem("./"), None);
        assert!(path_problem("./a/../../b").is_some());
        assert!(path_problem("..").is_some());
    }
}

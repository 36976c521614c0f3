//! The pure half of a sync: given a listing from the data plane and the `FluxConfig`s the agent
//! owns, decide what to apply, what to reject and what to delete. No I/O.
//!
//! Rules (safety first: an outage or a bad answer must never remove anything):
//! - Deletions happen only for a complete listing (`count == value.len()`); the caller passes
//!   only listings that came with 200 and parsed. An item without a usable `name` also stops
//!   every deletion, because the agent cannot tell which existing configuration it stands for.
//! - An item that fails to parse or validate is rejected with field-named errors and not
//!   applied; an existing `FluxConfig` of the same name stays exactly as it is (it is neither
//!   updated nor deleted).
//! - Names must be unique in a listing (the status path is keyed by name alone); every item of a
//!   duplicated name is rejected.
//! - Two configurations of one namespace whose `<config>-<kustomization>` names coincide (`a`
//!   with `b-c`, `a-b` with `c`) are both rejected, naming the kustomization and the other
//!   configuration.
//! - The configuration lives in `properties.namespace` (default `default`). An owned
//!   `FluxConfig` with a listed name but in another namespace than a valid item asks for is
//!   deleted as part of that move.
//! - `configurationProtectedSettings` values are base64 (as in Azure); they are decoded here and
//!   never end up in the spec. `protectedSettingsSecretRef` from the data plane is ignored: the
//!   agent points it at the Secret it writes.
//! - A git source with an `ssh://` URL, no `sshPrivateKey`, no `localAuthRef` and no
//!   `provider: Azure` wants a generated key ([`Desired::wants_generated_key`]).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use fluxconfig_api::dataplane::{ConfigurationList, PROTECTED_SETTINGS};
use fluxconfig_api::protected::{self, ProtectedSettings};
use fluxconfig_api::validation::{
    kustomization_object_name, parse_spec, validate_spec, FieldError, ValidationErrors,
};
use fluxconfig_api::SourceKind;
use fluxconfig_api::{ComplianceState, FluxConfigSpec, FluxConfigStatus, ProvisioningState};
use serde_json::Value;

/// Largest configuration (its `properties` as JSON) the agent writes. The API server refuses
/// objects over about 1.5 MiB (etcd's limit), and a refused write would be retried on every
/// sync instead of being reported as the configuration's error.
pub const MAX_PROPERTIES_BYTES: usize = 1024 * 1024;

/// Namespace and name of one `FluxConfig`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigKey {
    pub namespace: String,
    pub name: String,
}

impl ConfigKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ConfigKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Decoded protected settings; `Debug` shows the keys only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Protected(pub ProtectedSettings);

impl std::fmt::Debug for Protected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A configuration that passed validation and is to be written.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub key: ConfigKey,
    /// The spec without protected settings and without `protectedSettingsSecretRef`.
    pub spec: FluxConfigSpec,
    pub protected: Protected,
    pub wants_generated_key: bool,
}

/// A configuration that cannot be applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    /// `None` when the item has no usable name (it cannot be reported then).
    pub name: Option<String>,
    pub errors: ValidationErrors,
}

impl Rejected {
    fn new(name: Option<String>, errors: Vec<FieldError>) -> Self {
        Rejected {
            name,
            errors: ValidationErrors(errors),
        }
    }

    /// What is reported for it: provisioning failed with the field-named errors. Compliance is
    /// `Unknown` because nothing of it was applied, so there is nothing whose state is known.
    pub fn status(&self, now: &str) -> FluxConfigStatus {
        FluxConfigStatus {
            compliance_state: Some(ComplianceState::Unknown),
            provisioning_state: Some(ProvisioningState::Failed),
            error_message: Some(self.errors.to_string()),
            status_updated_at: Some(now.to_string()),
            ..FluxConfigStatus::default()
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub apply: Vec<Desired>,
    pub rejected: Vec<Rejected>,
    pub delete: Vec<ConfigKey>,
    /// Why deletions were not considered, if they were not.
    pub deletions_skipped: Option<&'static str>,
}

/// Decides what a listing asks for. `owned` are the `FluxConfig`s that carry the agent's
/// managed-by label.
pub fn plan(list: &ConfigurationList, owned: &[ConfigKey]) -> Plan {
    let mut results: Vec<Result<Desired, Rejected>> = list.value.iter().map(parse_item).collect();

    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for r in &results {
        if let Some(n) = item_name(r) {
            *names.entry(n.to_string()).or_default() += 1;
        }
    }
    for r in results.iter_mut() {
        let Some(name) = item_name(r).map(str::to_string) else {
            continue;
        };
        let n = names.get(&name).copied().unwrap_or(0);
        if n > 1 {
            *r = Err(Rejected::new(
                Some(name),
                vec![FieldError::new(
                    "name",
                    format!("appears {n} times in the listing; configuration names must be unique"),
                )],
            ));
        }
    }

    reject_shared_kustomizations(&mut results);

    let mut plan = Plan::default();
    for r in results {
        match r {
            Ok(d) => plan.apply.push(d),
            Err(r) => plan.rejected.push(r),
        }
    }

    plan.deletions_skipped = if !list.is_complete() {
        Some("the listing is partial")
    } else if plan.rejected.iter().any(|r| r.name.is_none()) {
        Some("an item of the listing has no usable name")
    } else {
        None
    };
    if plan.deletions_skipped.is_none() {
        let wanted: BTreeMap<&str, &ConfigKey> = plan
            .apply
            .iter()
            .map(|d| (d.key.name.as_str(), &d.key))
            .collect();
        let listed: BTreeSet<&str> = names.keys().map(String::as_str).collect();
        for key in owned {
            let delete = match wanted.get(key.name.as_str()) {
                // Moved to another namespace: the old one goes.
                Some(w) => *w != key,
                // Listed but rejected: left as it is.
                None => !listed.contains(key.name.as_str()),
            };
            if delete {
                plan.delete.push(key.clone());
            }
        }
        plan.delete.sort();
        plan.delete.dedup();
    }
    plan
}

/// `<config>-<kustomization>` can name the same Kustomization for two configurations of one
/// namespace (`a` with `b-c`, `a-b` with `c`). Both would claim the object, so neither is
/// applied; whichever is in the cluster already stays as it is.
fn reject_shared_kustomizations(results: &mut [Result<Desired, Rejected>]) {
    let mut claims: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for d in results.iter().flatten() {
        for k in d.spec.kustomizations.keys() {
            claims
                .entry((
                    d.key.namespace.clone(),
                    kustomization_object_name(&d.key.name, k),
                ))
                .or_default()
                .insert(d.key.name.clone());
        }
    }
    for r in results.iter_mut() {
        let Ok(d) = r else { continue };
        let errors: Vec<FieldError> = d
            .spec
            .kustomizations
            .keys()
            .filter_map(|k| {
                let object = kustomization_object_name(&d.key.name, k);
                let others: Vec<&str> = claims
                    .get(&(d.key.namespace.clone(), object.clone()))?
                    .iter()
                    .map(String::as_str)
                    .filter(|n| *n != d.key.name)
                    .collect();
                (!others.is_empty()).then(|| {
                    FieldError::new(
                        format!("spec.kustomizations.{k}"),
                        format!(
                            "would be the Kustomization {}/{object}, which configuration {} \
                             also makes; rename one of the kustomizations",
                            d.key.namespace,
                            others.join(", ")
                        ),
                    )
                })
            })
            .collect();
        if !errors.is_empty() {
            *r = Err(Rejected::new(Some(d.key.name.clone()), errors));
        }
    }
}

fn item_name(r: &Result<Desired, Rejected>) -> Option<&str> {
    match r {
        Ok(d) => Some(&d.key.name),
        Err(r) => r.name.as_deref(),
    }
}

fn parse_item(item: &Value) -> Result<Desired, Rejected> {
    let name = match item.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        _ => {
            return Err(Rejected::new(
                None,
                vec![FieldError::new("name", "is required: the item has no name")],
            ))
        }
    };
    let reject = |errors: Vec<FieldError>| Rejected::new(Some(name.clone()), errors);
    let mut properties = match item.get("properties") {
        Some(Value::Object(p)) => p.clone(),
        _ => {
            return Err(reject(vec![FieldError::new(
                "properties",
                "is required and must be an object",
            )]))
        }
    };
    if let Some(error) = oversized(&properties) {
        return Err(reject(vec![error]));
    }
    let mut errors = Vec::new();
    let protected = match properties.remove(PROTECTED_SETTINGS) {
        None | Some(Value::Null) => ProtectedSettings::new(),
        Some(raw) => decode_protected(&raw, &mut errors),
    };
    properties.remove("protectedSettingsSecretRef");
    let spec = match parse_spec(&Value::Object(properties)) {
        Ok(spec) => spec,
        Err(e) => {
            errors.extend(e.0);
            return Err(reject(errors));
        }
    };
    let namespace = spec
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_string();
    if let Err(e) = validate_spec(&name, &namespace, &spec, &protected) {
        errors.extend(e.0);
    }
    if !errors.is_empty() {
        return Err(reject(errors));
    }
    let wants_generated_key = wants_generated_key(&spec, &protected);
    Ok(Desired {
        key: ConfigKey::new(namespace, name),
        spec,
        protected: Protected(protected),
        wants_generated_key,
    })
}

/// An error naming the largest value when the properties are too large to be written.
fn oversized(properties: &serde_json::Map<String, Value>) -> Option<FieldError> {
    fn largest(v: &Value, path: String, best: &mut (usize, String)) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    largest(v, format!("{path}.{k}"), best);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    largest(v, format!("{path}[{i}]"), best);
                }
            }
            leaf => {
                let size = leaf.to_string().len();
                if size > best.0 {
                    *best = (size, path);
                }
            }
        }
    }
    let size = serde_json::to_vec(properties).map_or(usize::MAX, |b| b.len());
    if size <= MAX_PROPERTIES_BYTES {
        return None;
    }
    let mut best = (0, String::new());
    for (k, v) in properties {
        largest(v, k.clone(), &mut best);
    }
    let field = if best.1.is_empty() {
        "properties".to_string()
    } else if best.1.starts_with(PROTECTED_SETTINGS) {
        best.1
    } else {
        format!("spec.{}", best.1)
    };
    Some(FieldError::new(
        field,
        format!(
            "the configuration is {size} bytes, over the limit of {MAX_PROPERTIES_BYTES}; \
             this value alone is {} bytes",
            best.0
        ),
    ))
}

/// Never echoes a value: only which key is wrong and how.
fn decode_protected(raw: &Value, errors: &mut Vec<FieldError>) -> ProtectedSettings {
    let mut out = ProtectedSettings::new();
    let Value::Object(map) = raw else {
        errors.push(FieldError::new(
            PROTECTED_SETTINGS,
            "must be an object of base64-encoded strings",
        ));
        return out;
    };
    for (key, value) in map {
        let field = format!("{PROTECTED_SETTINGS}.{key}");
        if !is_secret_key(key) {
            errors.push(FieldError::new(
                field,
                "is not a usable key name: use letters, digits, '-', '_' and '.' only",
            ));
            continue;
        }
        let Value::String(encoded) = value else {
            errors.push(FieldError::new(field, "must be a base64-encoded string"));
            continue;
        };
        match decode_base64(encoded) {
            None => errors.push(FieldError::new(field, "is not valid base64")),
            Some(bytes) => match String::from_utf8(bytes) {
                Ok(text) => {
                    out.insert(key.clone(), text);
                }
                Err(_) => errors.push(FieldError::new(
                    field,
                    "is not UTF-8 text once base64-decoded",
                )),
            },
        }
    }
    out
}

/// Kubernetes Secret data keys: `[-._a-zA-Z0-9]+`, at most 253 characters.
fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Standard alphabet, padded or not, line breaks allowed (wrapped `base64` output).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&compact))
        .ok()
}

fn non_empty(s: Option<&str>) -> bool {
    s.is_some_and(|s| !s.trim().is_empty())
}

fn wants_generated_key(spec: &FluxConfigSpec, protected: &ProtectedSettings) -> bool {
    if spec.source_kind() != SourceKind::GitRepository {
        return false;
    }
    let Some(git) = &spec.git_repository else {
        return false;
    };
    let ssh = git
        .url
        .as_deref()
        .is_some_and(|u| u.trim().to_ascii_lowercase().starts_with("ssh://"));
    ssh && !non_empty(
        protected
            .get(protected::SSH_PRIVATE_KEY)
            .map(String::as_str),
    ) && !non_empty(git.local_auth_ref.as_deref())
        && !git
            .provider
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("azure"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn item(name: &str, namespace: &str) -> Value {
        json!({
            "name": name,
            "properties": {
                "namespace": namespace,
                "scope": "cluster",
                "sourceKind": "GitRepository",
                "gitRepository": {
                    "url": "https://github.com/Azure/gitops-flux2-kustomize-helm-mt",
                    "repositoryRef": {"branch": "main"},
                },
                "kustomizations": {"infra": {"path": "./infrastructure"}},
            }
        })
    }

    fn list(items: Vec<Value>) -> ConfigurationList {
        let count = items.len();
        ConfigurationList {
            value: items,
            count,
        }
    }

    fn owned(keys: &[(&str, &str)]) -> Vec<ConfigKey> {
        keys.iter().map(|(ns, n)| ConfigKey::new(*ns, *n)).collect()
    }

    #[test]
    fn complete_listing_applies_and_deletes() {
        let p = plan(
            &list(vec![item("a", "flux"), item("b", "default")]),
            &owned(&[("flux", "a"), ("flux", "gone")]),
        );
        let applied: Vec<String> = p.apply.iter().map(|d| d.key.to_string()).collect();
        assert_eq!(applied, ["flux/a", "default/b"]);
        assert_eq!(p.delete, owned(&[("flux", "gone")]));
        assert!(p.rejected.is_empty());
        assert_eq!(p.deletions_skipped, None);
    }

    #[test]
    fn partial_listing_never_deletes() {
        let mut l = list(vec![item("a", "flux")]);
        l.count = 2;
        let p = plan(&l, &owned(&[("flux", "gone")]));
        assert_eq!(p.apply.len(), 1);
        assert!(p.delete.is_empty());
        assert_eq!(p.deletions_skipped, Some("the listing is partial"));
        // An empty but "complete" listing of zero does delete; one claiming more does not.
        let p = plan(
            &ConfigurationList {
                value: vec![],
                count: 1,
            },
            &owned(&[("flux", "x")]),
        );
        assert!(p.delete.is_empty());
        let p = plan(&list(vec![]), &owned(&[("flux", "x")]));
        assert_eq!(p.delete, owned(&[("flux", "x")]));
    }

    #[test]
    fn oversized_item_is_rejected_naming_its_largest_value() {
        let mut big = item("big", "flux");
        big["properties"]["kustomizations"]["infra"]["path"] =
            json!(format!("./{}", "a".repeat(MAX_PROPERTIES_BYTES)));
        let p = plan(&list(vec![item("good", "flux"), big]), &[]);
        assert_eq!(p.apply.len(), 1);
        let message = p.rejected[0].errors.to_string();
        assert!(
            message.contains("spec.kustomizations.infra.path") && !message.contains("aaaa"),
            "{message}"
        );
    }

    #[test]
    fn malformed_item_is_rejected_alone_and_kept() {
        let mut bad = item("bad", "flux");
        bad["properties"]["gitRepository"]["url"] = json!("ftp://example.com/repo");
        let mut bad_type = item("typed", "flux");
        bad_type["properties"]["suspend"] = json!("yes");
        let p = plan(
            &list(vec![item("good", "flux"), bad, bad_type]),
            &owned(&[("flux", "bad"), ("flux", "typed"), ("flux", "old")]),
        );
        assert_eq!(p.apply.len(), 1);
        assert_eq!(p.apply[0].key.name, "good");
        assert_eq!(p.rejected.len(), 2);
        let r = &p.rejected[0];
        assert_eq!(r.name.as_deref(), Some("bad"));
        assert_eq!(r.errors.0[0].field, "spec.gitRepository.url");
        assert_eq!(p.rejected[1].errors.0[0].field, "spec.suspend");
        // Rejected configurations keep their FluxConfig; only the unlisted one goes.
        assert_eq!(p.delete, owned(&[("flux", "old")]));
        let status = r.status("2026-01-01T00:00:00Z");
        assert_eq!(status.provisioning_state, Some(ProvisioningState::Failed));
        assert_eq!(status.compliance_state, Some(ComplianceState::Unknown));
        assert!(status
            .error_message
            .unwrap_or_default()
            .contains("spec.gitRepository.url"));
    }

    #[test]
    fn unnamed_item_stops_deletions() {
        let p = plan(
            &list(vec![item("a", "flux"), json!({"properties": {}})]),
            &owned(&[("flux", "gone")]),
        );
        assert_eq!(p.apply.len(), 1);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].name, None);
        assert!(p.delete.is_empty());
        assert!(p.deletions_skipped.is_some());
    }

    #[test]
    fn duplicates_are_all_rejected() {
        let p = plan(
            &list(vec![
                item("a", "flux"),
                item("a", "other"),
                item("b", "flux"),
            ]),
            &owned(&[("flux", "a")]),
        );
        assert_eq!(p.apply.len(), 1);
        assert_eq!(p.rejected.len(), 2);
        assert!(p.rejected.iter().all(|r| r.errors.0[0].field == "name"));
        assert!(p.delete.is_empty());
    }

    #[test]
    fn configurations_that_would_share_a_kustomization_are_both_rejected() {
        let with_kustomization = |name: &str, namespace: &str, k: &str| {
            let mut i = item(name, namespace);
            i["properties"]["kustomizations"] = json!({ k: {"path": "./apps"} });
            i
        };
        let p = plan(
            &list(vec![
                with_kustomization("a", "flux", "b-c"),
                with_kustomization("a-b", "flux", "c"),
                // The same names in another namespace make other objects.
                with_kustomization("x", "flux", "y-z"),
                with_kustomization("x-y", "other", "z"),
            ]),
            &owned(&[("flux", "a")]),
        );
        let applied: Vec<&str> = p.apply.iter().map(|d| d.key.name.as_str()).collect();
        assert_eq!(applied, ["x", "x-y"]);
        assert_eq!(p.rejected.len(), 2);
        let a = p.rejected.iter().find(|r| r.name.as_deref() == Some("a"));
        let error = &a.expect("a rejected").errors.0[0];
        assert_eq!(error.field, "spec.kustomizations.b-c");
        assert!(error.message.contains("flux/a-b-c") && error.message.contains("a-b"));
        assert!(
            p.delete.is_empty(),
            "a rejected configuration stays as it is"
        );
    }

    #[test]
    fn moved_namespace_deletes_the_old_one() {
        let p = plan(&list(vec![item("a", "new")]), &owned(&[("old", "a")]));
        assert_eq!(p.delete, owned(&[("old", "a")]));
    }

    #[test]
    fn protected_settings_are_decoded_and_never_echoed() {
        let mut i = item("a", "flux");
        i["properties"]["gitRepository"]["httpsUser"] = json!("git");
        i["properties"][PROTECTED_SETTINGS] = json!({"httpsKey": b64("pat-value-123")});
        i["properties"]["protectedSettingsSecretRef"] = json!("elsewhere");
        let p = plan(&list(vec![i]), &[]);
        let d = &p.apply[0];
        assert_eq!(d.protected.0["httpsKey"], "pat-value-123");
        assert_eq!(d.spec.protected_settings_secret_ref, None);
        assert!(!format!("{d:?}").contains("pat-value-123"));

        let mut i = item("a", "flux");
        i["properties"][PROTECTED_SETTINGS] = json!({"httpsKey": "!!not-base64-secret!!"});
        let p = plan(&list(vec![i]), &[]);
        let msg = p.rejected[0].errors.to_string();
        assert!(
            msg.contains("configurationProtectedSettings.httpsKey"),
            "{msg}"
        );
        assert!(!msg.contains("not-base64-secret"));

        let mut i = item("a", "flux");
        i["properties"][PROTECTED_SETTINGS] = json!({"bad key/x": b64("v")});
        let p = plan(&list(vec![i]), &[]);
        assert_eq!(
            p.rejected[0].errors.0[0].field,
            "configurationProtectedSettings.bad key/x"
        );
    }

    #[test]
    fn ssh_without_key_wants_a_generated_one() {
        let mut i = item("a", "flux");
        i["properties"]["gitRepository"]["url"] = json!("ssh://git@github.com/org/repo");
        let p = plan(&list(vec![i.clone()]), &[]);
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        assert!(p.apply[0].wants_generated_key);

        i["properties"]["gitRepository"]["localAuthRef"] = json!("my-secret");
        let p = plan(&list(vec![i]), &[]);
        assert!(!p.apply[0].wants_generated_key);

        let p = plan(&list(vec![item("https", "flux")]), &[]);
        assert!(!p.apply[0].wants_generated_key);
    }
}

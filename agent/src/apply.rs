//! Writes what [`crate::sync`] decided: `FluxConfig`s and their protected-settings Secrets by
//! server-side apply (field manager `fluxconfig-agent`, forced), deletions, generated SSH keys.
//!
//! Layout per configuration `<name>` in `<namespace>`:
//! - `FluxConfig <name>`, labelled `app.kubernetes.io/managed-by: fluxconfig-agent` (that label
//!   is how the agent finds what it owns), with `spec.protectedSettingsSecretRef` naming the
//!   Secret when there are protected settings, and the annotation
//!   `clusterconfig.azure.com/protected-settings-hash` (SHA-256 of the settings) so that a change
//!   of only protected values still changes the `FluxConfig` the controller watches. The hash is
//!   domain-separated by namespace/name; it is not a secret, but a low-entropy password could be
//!   guessed from it by someone who can read FluxConfigs and not Secrets.
//! - `Secret <name>-protected-settings` (Opaque): the decoded protected values under their Azure
//!   names, an ownerReference to the `FluxConfig` (garbage collection), and the labels
//!   `app.kubernetes.io/managed-by: fluxconfig-agent` and
//!   `clusterconfig.azure.com/protected-settings-for: <name>`. It deliberately does NOT carry
//!   `clusterconfig.azure.com/name`/`namespace`: the controller prunes Secrets with those labels
//!   that are not part of its own translation.
//! - A generated SSH key is stored as `sshPrivateKey` in that Secret, which is then annotated
//!   `clusterconfig.azure.com/generated-ssh-key: "true"`; later listings without a key reuse it.
//!   Its public half goes to `status.repositoryPublicKey` (status subresource, same manager);
//!   when the user supplies a key later, the agent's status field is released again.
//!
//! The Secret is written before the `FluxConfig` so the controller never sees a reference to a
//! Secret that does not exist yet; for a new configuration the ownerReference is added by a
//! second apply once the `FluxConfig`'s uid is known.
//!
//! Unchanged configurations are not re-applied on every poll: the applier remembers a digest of
//! what it last wrote and skips while the cluster still holds that spec, re-applying at least
//! every [`REAPPLY_AFTER`] to repair drift.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use fluxconfig_api::fluxconfig::{GROUP, VERSION};
use fluxconfig_api::protected::{self, ProtectedSettings};
use fluxconfig_api::{FluxConfig, FluxConfigSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;
use crate::sshkey::{self, SshKeyError};
use crate::sync::{ConfigKey, Desired};

pub const FIELD_MANAGER: &str = "fluxconfig-agent";
pub const MANAGED_BY: &str = fluxconfig_api::labels::MANAGED_BY;
pub const MANAGED_BY_VALUE: &str = "fluxconfig-agent";
pub const PROTECTED_HASH_ANNOTATION: &str = "clusterconfig.azure.com/protected-settings-hash";
pub const GENERATED_KEY_ANNOTATION: &str = "clusterconfig.azure.com/generated-ssh-key";
pub const PROTECTED_FOR_LABEL: &str = "clusterconfig.azure.com/protected-settings-for";
pub const REAPPLY_AFTER: Duration = Duration::from_secs(600);

/// Label selector of the `FluxConfig`s (and Secrets) the agent owns.
pub fn owned_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE}")
}

pub fn secret_name(config: &str) -> String {
    format!("{config}-protected-settings")
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{action} {kind} {key}: {source}")]
    Kube {
        action: &'static str,
        kind: &'static str,
        key: ConfigKey,
        source: kube::Error,
    },
    #[error("{key}: {source}")]
    SshKey { key: ConfigKey, source: SshKeyError },
}

/// SHA-256 (hex) of the decoded protected settings, domain-separated by the configuration.
pub fn settings_hash(key: &ConfigKey, settings: &ProtectedSettings) -> String {
    let mut h = Sha256::new();
    h.update(b"fluxconfig-agent/protected-settings/v1\0");
    h.update(key.namespace.as_bytes());
    h.update(b"\0");
    h.update(key.name.as_bytes());
    h.update(b"\0");
    // BTreeMap: a stable order, so equal settings give equal hashes.
    for (k, v) in settings {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The spec the agent writes: the listing's spec pointing at the Secret when there is one.
pub fn effective_spec(d: &Desired, has_secret: bool) -> FluxConfigSpec {
    let mut spec = d.spec.clone();
    spec.protected_settings_secret_ref = has_secret.then(|| secret_name(&d.key.name));
    spec
}

/// The server-side-apply body of a `FluxConfig`.
pub fn fluxconfig_manifest(key: &ConfigKey, spec: &FluxConfigSpec, hash: Option<&str>) -> Value {
    let mut metadata = json!({
        "name": key.name,
        "namespace": key.namespace,
        "labels": { MANAGED_BY: MANAGED_BY_VALUE },
    });
    if let Some(h) = hash {
        metadata["annotations"] = json!({ PROTECTED_HASH_ANNOTATION: h });
    }
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "FluxConfig",
        "metadata": metadata,
        "spec": spec,
    })
}

/// The server-side-apply body of the protected-settings Secret.
pub fn secret_manifest(
    key: &ConfigKey,
    settings: &ProtectedSettings,
    owner_uid: Option<&str>,
    generated_key: bool,
) -> Value {
    let data: BTreeMap<&str, String> = settings
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                base64::engine::general_purpose::STANDARD.encode(v),
            )
        })
        .collect();
    let mut metadata = json!({
        "name": secret_name(&key.name),
        "namespace": key.namespace,
        "labels": {
            MANAGED_BY: MANAGED_BY_VALUE,
            PROTECTED_FOR_LABEL: key.name,
        },
    });
    if generated_key {
        metadata["annotations"] = json!({ GENERATED_KEY_ANNOTATION: "true" });
    }
    if let Some(uid) = owner_uid {
        metadata["ownerReferences"] = json!([{
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "FluxConfig",
            "name": key.name,
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": false,
        }]);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata,
        "data": data,
    })
}

/// The status-subresource apply body that sets (or, with `None`, releases) the agent's
/// `repositoryPublicKey`.
pub fn public_key_status(key: &ConfigKey, public_key: Option<&str>) -> Value {
    let status = match public_key {
        Some(pk) => json!({ "repositoryPublicKey": pk }),
        None => json!({}),
    };
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "FluxConfig",
        "metadata": { "name": key.name, "namespace": key.namespace },
        "status": status,
    })
}

/// A generated key found in an existing Secret, if it is one the agent made and still parses.
pub fn stored_generated_key(secret: &Secret) -> Option<(String, String)> {
    let marked = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(GENERATED_KEY_ANNOTATION))
        .is_some_and(|v| v == "true");
    if !marked {
        return None;
    }
    let bytes = secret.data.as_ref()?.get(protected::SSH_PRIVATE_KEY)?;
    let private = String::from_utf8(bytes.0.clone()).ok()?;
    let public = sshkey::public_from_private(&private).ok()?;
    Some((private, public))
}

struct Applied {
    digest: String,
    spec: FluxConfigSpec,
    at: Instant,
}

pub struct Applier {
    client: Client,
    metrics: Arc<Metrics>,
    applied: Mutex<HashMap<ConfigKey, Applied>>,
    namespaces: Mutex<BTreeSet<String>>,
}

impl Applier {
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Self {
        Applier {
            client,
            metrics,
            applied: Mutex::new(HashMap::new()),
            namespaces: Mutex::new(BTreeSet::new()),
        }
    }

    /// The `FluxConfig`s carrying the agent's label, in every namespace.
    pub async fn owned(&self) -> Result<Vec<FluxConfig>, kube::Error> {
        let api: Api<FluxConfig> = Api::all(self.client.clone());
        let list = api
            .list(&kube::api::ListParams::default().labels(&owned_selector()))
            .await?;
        Ok(list.items)
    }

    fn kube_err(
        action: &'static str,
        kind: &'static str,
        key: &ConfigKey,
    ) -> impl FnOnce(kube::Error) -> ApplyError {
        let key = key.clone();
        move |source| ApplyError::Kube {
            action,
            kind,
            key,
            source,
        }
    }

    /// Writes one configuration. `existing` is its current `FluxConfig`, if any.
    pub async fn apply(
        &self,
        desired: &Desired,
        existing: Option<&FluxConfig>,
    ) -> Result<(), ApplyError> {
        let result = self.apply_inner(desired, existing).await;
        // A skipped write is not a write.
        if result.as_ref().map_or(true, |wrote| *wrote) {
            self.metrics.write("apply", result.is_ok());
        }
        let result = result.map(|_| ());
        if result.is_err() {
            if let Ok(mut a) = self.applied.lock() {
                a.remove(&desired.key);
            }
            // The namespace may be what went missing.
            if let Ok(mut n) = self.namespaces.lock() {
                n.remove(&desired.key.namespace);
            }
        }
        result
    }

    /// Whether it wrote anything (`false`: the cluster already held it).
    async fn apply_inner(
        &self,
        d: &Desired,
        existing: Option<&FluxConfig>,
    ) -> Result<bool, ApplyError> {
        let key = &d.key;
        let digest = desired_digest(d);
        if self.unchanged(d, &digest, existing) {
            return Ok(false);
        }
        self.ensure_namespace(key).await?;

        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &key.namespace);
        let configs: Api<FluxConfig> = Api::namespaced(self.client.clone(), &key.namespace);
        let mut settings = d.protected.0.clone();
        let mut public_key = None;
        if d.wants_generated_key {
            let stored = secrets
                .get_opt(&secret_name(&key.name))
                .await
                .map_err(Self::kube_err("reading", "Secret", key))?
                .as_ref()
                .and_then(stored_generated_key);
            let (private, public) = match stored {
                Some(pair) => pair,
                None => {
                    let pair =
                        sshkey::generate(&format!("fluxconfig:{key}")).map_err(|source| {
                            ApplyError::SshKey {
                                key: key.clone(),
                                source,
                            }
                        })?;
                    tracing::info!(configuration = %key, "generated an SSH key pair for the git source");
                    (pair.private_openssh, pair.public_openssh)
                }
            };
            settings.insert(protected::SSH_PRIVATE_KEY.to_string(), private);
            public_key = Some(public);
        }
        let has_secret = !settings.is_empty();
        let spec = effective_spec(d, has_secret);
        let hash = has_secret.then(|| settings_hash(key, &settings));
        let ssa = PatchParams::apply(FIELD_MANAGER).force();

        let known_uid = existing.and_then(|e| e.metadata.uid.clone());
        if has_secret {
            let body = secret_manifest(key, &settings, known_uid.as_deref(), d.wants_generated_key);
            secrets
                .patch(&secret_name(&key.name), &ssa, &Patch::Apply(&body))
                .await
                .map_err(Self::kube_err("applying", "Secret", key))?;
        }
        let body = fluxconfig_manifest(key, &spec, hash.as_deref());
        let written = configs
            .patch(&key.name, &ssa, &Patch::Apply(&body))
            .await
            .map_err(Self::kube_err("applying", "FluxConfig", key))?;
        if has_secret && known_uid.is_none() {
            if let Some(uid) = written.metadata.uid.as_deref() {
                let body = secret_manifest(key, &settings, Some(uid), d.wants_generated_key);
                secrets
                    .patch(&secret_name(&key.name), &ssa, &Patch::Apply(&body))
                    .await
                    .map_err(Self::kube_err("applying", "Secret", key))?;
            }
        }
        let had_secret = existing
            .and_then(|e| e.spec.protected_settings_secret_ref.as_ref())
            .is_some();
        if !has_secret && had_secret {
            self.delete_secret(key).await?;
        }

        let current_pk = written
            .status
            .as_ref()
            .and_then(|s| s.repository_public_key.clone());
        if current_pk != public_key {
            let body = public_key_status(key, public_key.as_deref());
            configs
                .patch_status(&key.name, &ssa, &Patch::Apply(&body))
                .await
                .map_err(Self::kube_err(
                    "reporting the public key of",
                    "FluxConfig",
                    key,
                ))?;
        }

        tracing::info!(configuration = %key, "applied configuration");
        if let Ok(mut a) = self.applied.lock() {
            a.insert(
                key.clone(),
                Applied {
                    digest,
                    spec,
                    at: Instant::now(),
                },
            );
        }
        Ok(true)
    }

    /// Skips a write when the same configuration was applied recently and the cluster still
    /// holds the spec the agent wrote (nobody deleted or edited it since), or, with nothing
    /// remembered (a restarted agent), when the cluster already holds exactly what this write
    /// would make of a configuration without protected settings. A restart then costs reads,
    /// not a write per configuration. Configurations with a Secret are always written once
    /// after a restart: the Secret's content and owner cannot be told from the `FluxConfig`.
    fn unchanged(&self, d: &Desired, digest: &str, existing: Option<&FluxConfig>) -> bool {
        let Some(existing) = existing else {
            return false;
        };
        let Ok(mut applied) = self.applied.lock() else {
            return false;
        };
        if let Some(a) = applied.get(&d.key) {
            return a.digest == digest && a.at.elapsed() < REAPPLY_AFTER && a.spec == existing.spec;
        }
        if !already_applied(d, existing) {
            return false;
        }
        applied.insert(
            d.key.clone(),
            Applied {
                digest: digest.to_string(),
                spec: existing.spec.clone(),
                at: Instant::now(),
            },
        );
        true
    }

    async fn ensure_namespace(&self, key: &ConfigKey) -> Result<(), ApplyError> {
        let known = self
            .namespaces
            .lock()
            .map(|n| n.contains(&key.namespace))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let exists = api
            .get_opt(&key.namespace)
            .await
            .map_err(Self::kube_err("reading namespace of", "FluxConfig", key))?
            .is_some();
        if !exists {
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(key.namespace.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            match api.create(&PostParams::default(), &ns).await {
                Ok(_) => {
                    tracing::info!(namespace = %key.namespace, "created namespace");
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    return Err(Self::kube_err("creating namespace of", "FluxConfig", key)(
                        e,
                    ))
                }
            }
        }
        if let Ok(mut n) = self.namespaces.lock() {
            n.insert(key.namespace.clone());
        }
        Ok(())
    }

    async fn delete_secret(&self, key: &ConfigKey) -> Result<(), ApplyError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &key.namespace);
        let name = secret_name(&key.name);
        let ours = secrets
            .get_opt(&name)
            .await
            .map_err(Self::kube_err("reading", "Secret", key))?
            .is_some_and(|s| {
                s.labels().get(MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_VALUE)
            });
        if !ours {
            return Ok(());
        }
        match secrets.delete(&name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Self::kube_err("deleting", "Secret", key)(e)),
        }
    }

    /// Deletes a configuration the data plane no longer lists, and its Secret (garbage
    /// collection would too; deleting explicitly does not depend on it).
    pub async fn delete(&self, key: &ConfigKey) -> Result<(), ApplyError> {
        let configs: Api<FluxConfig> = Api::namespaced(self.client.clone(), &key.namespace);
        let result = match configs.delete(&key.name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Self::kube_err("deleting", "FluxConfig", key)(e)),
        };
        let result = match result {
            Ok(()) => self.delete_secret(key).await,
            Err(e) => Err(e),
        };
        self.metrics.write("delete", result.is_ok());
        if let Ok(mut a) = self.applied.lock() {
            a.remove(key);
        }
        if result.is_ok() {
            tracing::info!(configuration = %key, "deleted configuration no longer listed");
        }
        result
    }
}

/// Whether `existing` is what applying `d` would write, for a configuration that needs no
/// Secret: same spec, no protected-settings hash, no public key in the status.
fn already_applied(d: &Desired, existing: &FluxConfig) -> bool {
    let needs_secret = d.wants_generated_key || !d.protected.0.is_empty();
    let hash = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROTECTED_HASH_ANNOTATION));
    let public_key = existing
        .status
        .as_ref()
        .and_then(|s| s.repository_public_key.as_ref());
    !needs_secret
        && hash.is_none()
        && public_key.is_none()
        && existing.spec == effective_spec(d, false)
}

/// Digest of everything that decides what gets written, protected values included (hashed,
/// never stored).
fn desired_digest(d: &Desired) -> String {
    let spec = serde_json::to_string(&d.spec).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(spec.as_bytes());
    h.update(settings_hash(&d.key, &d.protected.0).as_bytes());
    h.update([u8::from(d.wants_generated_key)]);
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Protected;
    use k8s_openapi::ByteString;

    fn key() -> ConfigKey {
        ConfigKey::new("flux", "cluster-config")
    }

    fn settings(pairs: &[(&str, &str)]) -> ProtectedSettings {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn hash_changes_with_values_and_hides_them() {
        let a = settings_hash(&key(), &settings(&[("httpsKey", "one")]));
        let b = settings_hash(&key(), &settings(&[("httpsKey", "two")]));
        let c = settings_hash(
            &ConfigKey::new("other", "cluster-config"),
            &settings(&[("httpsKey", "one")]),
        );
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 64);
        assert_eq!(a, settings_hash(&key(), &settings(&[("httpsKey", "one")])));
        assert!(!a.contains("one"));
    }

    /// The `FluxConfig` a write of `d` leaves in the cluster, read back.
    fn written(d: &Desired) -> FluxConfig {
        let has_secret = !d.protected.0.is_empty();
        let hash = has_secret.then(|| settings_hash(&d.key, &d.protected.0));
        let body = fluxconfig_manifest(&d.key, &effective_spec(d, has_secret), hash.as_deref());
        serde_json::from_value(body).expect("FluxConfig")
    }

    #[test]
    fn a_restarted_agent_skips_only_what_the_cluster_already_holds() {
        let plain = Desired {
            key: key(),
            spec: FluxConfigSpec {
                namespace: Some("flux".into()),
                suspend: Some(false),
                ..FluxConfigSpec::default()
            },
            protected: Protected(ProtectedSettings::default()),
            wants_generated_key: false,
        };
        let existing = written(&plain);
        assert!(already_applied(&plain, &existing));

        let mut changed = plain.clone();
        changed.spec.suspend = Some(true);
        assert!(!already_applied(&changed, &existing), "spec changed");

        let mut with_secret = plain.clone();
        with_secret.protected = Protected(settings(&[("httpsKey", "pat")]));
        assert!(
            !already_applied(&with_secret, &written(&with_secret)),
            "a Secret's content cannot be told from the FluxConfig"
        );
        let mut generated = plain.clone();
        generated.wants_generated_key = true;
        assert!(!already_applied(&generated, &existing));

        let mut annotated = existing.clone();
        annotated.metadata.annotations =
            Some([(PROTECTED_HASH_ANNOTATION.to_string(), "old".to_string())].into());
        assert!(
            !already_applied(&plain, &annotated),
            "a stale Secret to release"
        );
    }

    #[test]
    fn fluxconfig_manifest_carries_label_ref_and_hash() {
        let d = Desired {
            key: key(),
            spec: FluxConfigSpec {
                namespace: Some("flux".into()),
                ..FluxConfigSpec::default()
            },
            protected: Protected(settings(&[("httpsKey", "pat")])),
            wants_generated_key: false,
        };
        let spec = effective_spec(&d, true);
        let m = fluxconfig_manifest(&d.key, &spec, Some("abc"));
        assert_eq!(m["apiVersion"], "clusterconfig.azure.com/v1beta1");
        assert_eq!(m["metadata"]["labels"][MANAGED_BY], MANAGED_BY_VALUE);
        assert_eq!(
            m["metadata"]["annotations"][PROTECTED_HASH_ANNOTATION],
            "abc"
        );
        assert_eq!(
            m["spec"]["protectedSettingsSecretRef"],
            "cluster-config-protected-settings"
        );
        assert!(m.get("status").is_none());
        assert!(!m.to_string().contains("pat\""));
        let m = fluxconfig_manifest(&d.key, &effective_spec(&d, false), None);
        assert!(m["metadata"].get("annotations").is_none());
        assert!(m["spec"].get("protectedSettingsSecretRef").is_none());
    }

    #[test]
    fn secret_manifest_encodes_values_and_owner() {
        let s = settings(&[("httpsKey", "pat-123"), ("sshPrivateKey", "k")]);
        let m = secret_manifest(&key(), &s, Some("uid-1"), true);
        assert_eq!(m["type"], "Opaque");
        assert_eq!(m["metadata"]["name"], "cluster-config-protected-settings");
        assert_eq!(m["data"]["httpsKey"], "cGF0LTEyMw==");
        assert_eq!(m["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(m["metadata"]["ownerReferences"][0]["kind"], "FluxConfig");
        assert_eq!(
            m["metadata"]["annotations"][GENERATED_KEY_ANNOTATION],
            "true"
        );
        assert_eq!(
            m["metadata"]["labels"][PROTECTED_FOR_LABEL],
            "cluster-config"
        );
        // The controller prunes Secrets labelled with the configuration's name; this one must not be.
        assert!(m["metadata"]["labels"]
            .get(fluxconfig_api::labels::CONFIG_NAME)
            .is_none());
        let m = secret_manifest(&key(), &s, None, false);
        assert!(m["metadata"].get("ownerReferences").is_none());
        assert!(m["metadata"].get("annotations").is_none());
        // The typed Secret reads it back.
        let secret: Secret = serde_json::from_value(m).expect("a Secret");
        assert_eq!(
            secret.data.expect("data")["httpsKey"],
            ByteString(b"pat-123".to_vec())
        );
    }

    #[test]
    fn generated_key_is_reused_only_when_marked() {
        let pair = sshkey::generate("c").expect("generate");
        let s = settings(&[("sshPrivateKey", &pair.private_openssh)]);
        let marked: Secret =
            serde_json::from_value(secret_manifest(&key(), &s, None, true)).expect("secret");
        assert_eq!(
            stored_generated_key(&marked),
            Some((pair.private_openssh.clone(), pair.public_openssh.clone()))
        );
        let unmarked: Secret =
            serde_json::from_value(secret_manifest(&key(), &s, None, false)).expect("secret");
        assert_eq!(stored_generated_key(&unmarked), None);
        let broken: Secret = serde_json::from_value(secret_manifest(
            &key(),
            &settings(&[("sshPrivateKey", "garbage")]),
            None,
            true,
        ))
        .expect("secret");
        assert_eq!(stored_generated_key(&broken), None);
    }

    #[test]
    fn public_key_status_sets_or_releases() {
        let m = public_key_status(&key(), Some("ssh-ed25519 AAAA x"));
        assert_eq!(m["status"]["repositoryPublicKey"], "ssh-ed25519 AAAA x");
        let m = public_key_status(&key(), None);
        assert_eq!(m["status"], json!({}));
    }
}

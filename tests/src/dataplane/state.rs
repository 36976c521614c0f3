//! What the data plane knows, and how it survives a restart.
//!
//! The whole state is one JSON document rewritten atomically after every change: the testbed
//! holds a handful of clusters, and a single file keeps "restart loses nothing" trivially true.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use fluxconfig_api::dataplane::{
    AgentHeartbeat, ClusterRef, DesiredConfiguration, FluxConfigurationResource, PROTECTED_SETTINGS,
};
use fluxconfig_api::{FluxConfigStatus, ProvisioningState};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const RESOURCE_TYPE: &str = "Microsoft.KubernetesConfiguration/fluxConfigurations";

/// Status properties ARM treats as read-only: dropped from management PUT bodies.
pub const READ_ONLY_PROPERTIES: [&str; 9] = [
    "complianceState",
    "statuses",
    "sourceSyncedCommitId",
    "sourceUpdatedAt",
    "statusUpdatedAt",
    "repositoryPublicKey",
    "provisioningState",
    "errorMessage",
    "observedGeneration",
];

const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not a data-plane state: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("writing state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding state: {0}")]
    Encode(#[from] serde_json::Error),
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct StoredConfiguration {
    /// Request properties without protected settings and without read-only status.
    pub properties: Map<String, Value>,
    #[serde(default)]
    pub protected_settings: BTreeMap<String, String>,
    pub status: Option<FluxConfigStatus>,
    /// The configuration changed after the agent last reported on it.
    #[serde(default)]
    pub status_stale: bool,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StoredHeartbeat {
    pub heartbeat: AgentHeartbeat,
    pub received_at: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    /// Revision of the last change to this cluster's desired configurations; the listing ETag.
    pub revision: u64,
    #[serde(default)]
    pub configurations: BTreeMap<String, StoredConfiguration>,
    pub heartbeat: Option<StoredHeartbeat>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
struct StateDocument {
    version: u32,
    /// Random per state file: an ETag from another (lost or replaced) state never matches.
    epoch: String,
    /// Global revision counter; only grows, also across restarts.
    revision: u64,
    #[serde(default)]
    clusters: BTreeMap<String, ClusterState>,
}

/// The in-memory state. Callers count each mutation ([`Store::changed`]) and persist a snapshot
/// taken after it.
#[derive(Debug)]
pub struct Store {
    doc: StateDocument,
    /// In-memory counter of mutations, so persistence can skip snapshots already superseded.
    seq: u64,
}

/// A serialized state to write, ordered by `seq`.
pub struct Snapshot {
    pub seq: u64,
    pub bytes: Vec<u8>,
}

/// ARM resource names are case-insensitive, so the agent and the CLI meet on one key however
/// each spells the cluster.
pub fn cluster_key(cluster: &ClusterRef) -> String {
    cluster.path().to_ascii_lowercase()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Store {
    /// Loads `path`, or starts empty (and writes the file) when it does not exist.
    pub fn load(path: &Path) -> Result<(Store, bool), StateError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let doc: StateDocument =
                    serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?;
                if doc.version != FORMAT_VERSION {
                    return Err(StateError::Corrupt {
                        path: path.to_path_buf(),
                        message: format!("unsupported version {}", doc.version),
                    });
                }
                Ok((Store { doc, seq: 0 }, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = StateDocument {
                    version: FORMAT_VERSION,
                    epoch: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
                    revision: 0,
                    clusters: BTreeMap::new(),
                };
                Ok((Store { doc, seq: 0 }, true))
            }
            Err(source) => Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Counts a mutation; the number orders it against the snapshots written.
    pub fn changed(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The state as it is now, covering every mutation counted so far.
    pub fn snapshot(&self) -> Result<Snapshot, StateError> {
        Ok(Snapshot {
            seq: self.seq,
            bytes: serde_json::to_vec_pretty(&self.doc)?,
        })
    }

    /// Strong ETag of a cluster's listing.
    pub fn etag(&self, cluster: &ClusterRef) -> String {
        let revision = self
            .doc
            .clusters
            .get(&cluster_key(cluster))
            .map_or(0, |c| c.revision);
        format!("\"{}-{}\"", self.doc.epoch, revision)
    }

    /// The agent's view: every configuration with its protected settings.
    pub fn desired(&self, cluster: &ClusterRef) -> Vec<Value> {
        let Some(state) = self.doc.clusters.get(&cluster_key(cluster)) else {
            return Vec::new();
        };
        state
            .configurations
            .iter()
            .filter_map(|(name, stored)| {
                let mut properties = stored.properties.clone();
                if !stored.protected_settings.is_empty() {
                    let protected: Map<String, Value> = stored
                        .protected_settings
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect();
                    properties.insert(PROTECTED_SETTINGS.to_string(), Value::Object(protected));
                }
                serde_json::to_value(DesiredConfiguration {
                    name: name.clone(),
                    id: Some(cluster.management_path(Some(name))),
                    properties: Value::Object(properties),
                })
                .ok()
            })
            .collect()
    }

    fn bump(&mut self, key: &str) -> &mut ClusterState {
        self.doc.revision += 1;
        let revision = self.doc.revision;
        let state = self.doc.clusters.entry(key.to_string()).or_default();
        state.revision = revision;
        state
    }

    /// Creates or replaces a configuration; `protected: None` keeps the stored secrets (they are
    /// write-only, so a client cannot send them back). Returns whether it was created.
    pub fn put_configuration(
        &mut self,
        cluster: &ClusterRef,
        name: &str,
        properties: Map<String, Value>,
        protected: Option<BTreeMap<String, String>>,
    ) -> bool {
        let state = self.bump(&cluster_key(cluster));
        let now = now();
        match state.configurations.get_mut(name) {
            Some(existing) => {
                existing.properties = properties;
                if let Some(p) = protected {
                    existing.protected_settings = p;
                }
                existing.status_stale = existing.status.is_some();
                existing.updated_at = now;
                false
            }
            None => {
                state.configurations.insert(
                    name.to_string(),
                    StoredConfiguration {
                        properties,
                        protected_settings: protected.unwrap_or_default(),
                        status: None,
                        status_stale: false,
                        created_at: now.clone(),
                        updated_at: now,
                    },
                );
                true
            }
        }
    }

    /// Removes a configuration and its status; whether it existed.
    pub fn delete_configuration(&mut self, cluster: &ClusterRef, name: &str) -> bool {
        let key = cluster_key(cluster);
        let exists = self
            .doc
            .clusters
            .get(&key)
            .is_some_and(|c| c.configurations.contains_key(name));
        if exists {
            self.bump(&key).configurations.remove(name);
        }
        exists
    }

    /// Stores the agent's report; false when the configuration does not exist.
    pub fn put_status(
        &mut self,
        cluster: &ClusterRef,
        name: &str,
        mut status: FluxConfigStatus,
    ) -> bool {
        let Some(stored) = self
            .doc
            .clusters
            .get_mut(&cluster_key(cluster))
            .and_then(|c| c.configurations.get_mut(name))
        else {
            return false;
        };
        if status.status_updated_at.is_none() {
            status.status_updated_at = Some(now());
        }
        stored.status = Some(status);
        stored.status_stale = false;
        true
    }

    pub fn put_heartbeat(&mut self, cluster: &ClusterRef, heartbeat: AgentHeartbeat) {
        // A heartbeat does not change the listing, so it must not move the ETag.
        let state = self.doc.clusters.entry(cluster_key(cluster)).or_default();
        state.heartbeat = Some(StoredHeartbeat {
            heartbeat,
            received_at: now(),
        });
    }

    pub fn heartbeat(&self, cluster: &ClusterRef) -> Option<StoredHeartbeat> {
        self.doc
            .clusters
            .get(&cluster_key(cluster))
            .and_then(|c| c.heartbeat.clone())
    }

    pub fn status(&self, cluster: &ClusterRef, name: &str) -> Option<FluxConfigStatus> {
        self.doc
            .clusters
            .get(&cluster_key(cluster))
            .and_then(|c| c.configurations.get(name))
            .and_then(|s| s.status.clone())
    }

    /// The management view of one configuration: never its protected settings.
    pub fn resource(&self, cluster: &ClusterRef, name: &str) -> Option<FluxConfigurationResource> {
        let stored = self
            .doc
            .clusters
            .get(&cluster_key(cluster))?
            .configurations
            .get(name)?;
        Some(render_resource(cluster, name, stored))
    }

    pub fn resources(&self, cluster: &ClusterRef) -> Vec<FluxConfigurationResource> {
        self.doc
            .clusters
            .get(&cluster_key(cluster))
            .map(|c| {
                c.configurations
                    .iter()
                    .map(|(name, stored)| render_resource(cluster, name, stored))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn render_resource(
    cluster: &ClusterRef,
    name: &str,
    stored: &StoredConfiguration,
) -> FluxConfigurationResource {
    let mut properties = stored.properties.clone();
    match &stored.status {
        Some(status) => {
            if let Ok(Value::Object(reported)) = serde_json::to_value(status) {
                properties.extend(reported);
            }
            if stored.status_stale && status.provisioning_state.is_some() {
                properties.insert(
                    "provisioningState".into(),
                    Value::String(ProvisioningState::Updating.as_str().into()),
                );
            }
        }
        None => {
            // What Azure shows between the PUT and the extension's first report.
            properties.insert(
                "provisioningState".into(),
                Value::String(ProvisioningState::Creating.as_str().into()),
            );
            properties.insert("complianceState".into(), Value::String("Pending".into()));
        }
    }
    properties.remove(PROTECTED_SETTINGS);
    FluxConfigurationResource {
        id: Some(cluster.management_path(Some(name))),
        name: Some(name.to_string()),
        type_: Some(RESOURCE_TYPE.to_string()),
        properties: Value::Object(properties),
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file: temp file in
/// the same directory, fsync, rename, fsync the directory. The file holds secrets: mode 0600.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{file_name}.tmp"));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(&dir) {
        // Not every filesystem lets a directory be synced; the rename is done either way.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxconfig_api::dataplane::ClusterType;

    fn cluster() -> ClusterRef {
        ClusterRef {
            subscription_id: "sub".into(),
            resource_group: "RG".into(),
            cluster_type: ClusterType::ManagedClusters,
            cluster_name: "aks".into(),
        }
    }

    fn props() -> Map<String, Value> {
        match serde_json::json!({"namespace": "default"}) {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn etag_moves_on_listing_changes_only() {
        let (mut s, _) = Store::load(Path::new("/nonexistent/x.json")).unwrap();
        let c = cluster();
        let e0 = s.etag(&c);
        assert!(s.put_configuration(&c, "a", props(), None));
        let e1 = s.etag(&c);
        assert_ne!(e0, e1);
        s.put_heartbeat(&c, AgentHeartbeat::default());
        assert!(s.put_status(&c, "a", FluxConfigStatus::default()));
        assert_eq!(s.etag(&c), e1);
        assert!(s.delete_configuration(&c, "a"));
        assert_ne!(s.etag(&c), e1);
        assert!(!s.delete_configuration(&c, "a"));
        assert!(!s.put_status(&c, "a", FluxConfigStatus::default()));
    }

    #[test]
    fn protected_settings_reach_the_agent_only() {
        let (mut s, _) = Store::load(Path::new("/nonexistent/x.json")).unwrap();
        let c = cluster();
        let secrets = BTreeMap::from([("sshPrivateKey".to_string(), "c2VjcmV0".to_string())]);
        s.put_configuration(&c, "a", props(), Some(secrets));
        let desired = s.desired(&c);
        assert_eq!(
            desired[0]["properties"][PROTECTED_SETTINGS]["sshPrivateKey"],
            "c2VjcmV0"
        );
        let shown = serde_json::to_string(&s.resources(&c)).unwrap();
        assert!(!shown.contains("c2VjcmV0"));
        // An update without secrets keeps them.
        s.put_configuration(&c, "a", props(), None);
        assert_eq!(
            s.desired(&c)[0]["properties"][PROTECTED_SETTINGS]["sshPrivateKey"],
            "c2VjcmV0"
        );
    }

    #[test]
    fn cluster_names_are_case_insensitive() {
        let (mut s, _) = Store::load(Path::new("/nonexistent/x.json")).unwrap();
        let c = cluster();
        let mut upper = cluster();
        upper.resource_group = "rg".into();
        s.put_configuration(&c, "a", props(), None);
        assert_eq!(s.desired(&upper).len(), 1);
    }
}

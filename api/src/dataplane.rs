//! The data-plane wire protocol between `fluxconfig-agent` and the regional Azure data plane
//! (`https://<region>.dp.kubernetesconfiguration.azure.com`), and the management calls the
//! testbed's `az k8s-configuration flux` look-alike makes. Azure's real protocol is not public;
//! this one is modelled on the `fluxConfigurations` ARM resource so the same property names flow
//! from Azure to the `FluxConfig` spec unchanged. `docs/dataplane-api.md` is the prose version.
//!
//! Paths (all take `?api-version=2024-11-01`, all need `Authorization: Bearer <token>`):
//! - `GET  {cluster}/fluxConfigurations` — the desired configurations of one cluster
//!   ([`ConfigurationList`]); `If-None-Match: <etag>` → 304 when unchanged; `waitSeconds=N`
//!   long-polls up to N seconds for a change before answering 304.
//! - `PUT  {cluster}/fluxConfigurations/{name}/status` — the agent reports one configuration's
//!   status ([`crate::FluxConfigStatus`]); 204.
//! - `PUT  {cluster}/agentHeartbeat` — [`AgentHeartbeat`]; 204.
//! - `PUT|GET|DELETE {cluster}/providers/Microsoft.KubernetesConfiguration/fluxConfigurations/{name}`
//!   and `GET …/fluxConfigurations` — management (what `az` does through ARM):
//!   [`FluxConfigurationResource`].
//!
//! where `{cluster}` is
//! `/subscriptions/{sub}/resourceGroups/{rg}/providers/{Microsoft.Kubernetes|Microsoft.ContainerService}/{connectedClusters|managedClusters}/{name}`.
//! Errors are [`ErrorResponse`] bodies; 429 and 503 carry `Retry-After` (seconds).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;

use crate::FluxConfigStatus;

pub const API_VERSION: &str = "2024-11-01";

/// Largest listing body the agent accepts; anything bigger is treated as a failed poll.
pub const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;
/// Largest request body the data plane accepts (a status report or a configuration).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Longest long-poll the data plane honours.
pub const MAX_WAIT_SECONDS: u64 = 60;

/// The property of a configuration that carries its write-only secrets (base64 values).
pub const PROTECTED_SETTINGS: &str = "configurationProtectedSettings";

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum ClusterType {
    ConnectedClusters,
    ManagedClusters,
}

impl ClusterType {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterType::ConnectedClusters => "connectedClusters",
            ClusterType::ManagedClusters => "managedClusters",
        }
    }

    /// The ARM resource provider of the cluster resource.
    pub fn provider(self) -> &'static str {
        match self {
            ClusterType::ConnectedClusters => "Microsoft.Kubernetes",
            ClusterType::ManagedClusters => "Microsoft.ContainerService",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "connectedClusters" => Some(ClusterType::ConnectedClusters),
            "managedClusters" => Some(ClusterType::ManagedClusters),
            _ => None,
        }
    }
}

/// Identifies one cluster in Azure.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterRef {
    pub subscription_id: String,
    pub resource_group: String,
    pub cluster_type: ClusterType,
    pub cluster_name: String,
}

impl ClusterRef {
    /// `/subscriptions/{sub}/resourceGroups/{rg}/providers/{rp}/{type}/{name}`
    pub fn path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{}/{}/{}",
            self.subscription_id,
            self.resource_group,
            self.cluster_type.provider(),
            self.cluster_type.as_str(),
            self.cluster_name
        )
    }

    /// The agent's listing of desired configurations.
    pub fn configurations_path(&self) -> String {
        format!("{}/fluxConfigurations", self.path())
    }

    /// Where the agent reports one configuration's status.
    pub fn status_path(&self, name: &str) -> String {
        format!("{}/fluxConfigurations/{name}/status", self.path())
    }

    pub fn heartbeat_path(&self) -> String {
        format!("{}/agentHeartbeat", self.path())
    }

    /// Management (ARM-shaped) path of one configuration, or of the collection with `None`.
    pub fn management_path(&self, name: Option<&str>) -> String {
        let base = format!(
            "{}/providers/Microsoft.KubernetesConfiguration/fluxConfigurations",
            self.path()
        );
        match name {
            Some(n) => format!("{base}/{n}"),
            None => base,
        }
    }
}

/// The answer to the agent's listing. Items stay raw JSON so one malformed configuration can be
/// reported on its own while the others proceed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ConfigurationList {
    pub value: Vec<Value>,
    /// Number of configurations the data plane meant to send; a listing whose `value` holds
    /// fewer is partial, and a partial listing never causes a deletion.
    pub count: usize,
}

impl ConfigurationList {
    pub fn is_complete(&self) -> bool {
        self.value.len() == self.count
    }
}

/// One desired configuration as the data plane sends it to the agent:
/// `{"name": "...", "properties": {<FluxConfig spec properties>, "configurationProtectedSettings": {...}}}`.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct DesiredConfiguration {
    pub name: String,
    pub id: Option<String>,
    /// The fluxConfigurations `properties`; decode with [`crate::validation::parse_spec`].
    pub properties: Value,
}

/// A configuration as management calls see it (ARM's shape): request properties plus the
/// read-only status the agent last reported. Protected settings are accepted on PUT and never
/// returned.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct FluxConfigurationResource {
    pub id: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub properties: Value,
}

/// `GET …/fluxConfigurations` on the management path.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct FluxConfigurationResourceList {
    pub value: Vec<FluxConfigurationResource>,
}

/// The agent's status report for one configuration: the FluxConfig status as the controller
/// wrote it (plus `repositoryPublicKey` from the agent).
pub type StatusReport = FluxConfigStatus;

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AgentHeartbeat {
    pub agent_version: String,
    /// RFC 3339 time of the last complete, successful listing.
    pub last_successful_sync: Option<String>,
    pub configuration_count: usize,
    /// Configurations by compliance state.
    #[serde(default)]
    pub compliance: BTreeMap<String, usize>,
}

/// ARM-style error body: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ErrorResponse {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorResponse {
            error: ErrorDetail {
                code: code.to_string(),
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_arm() {
        let c = ClusterRef {
            subscription_id: "sub".into(),
            resource_group: "rg".into(),
            cluster_type: ClusterType::ConnectedClusters,
            cluster_name: "arc".into(),
        };
        assert_eq!(
            c.configurations_path(),
            "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Kubernetes/connectedClusters/arc/fluxConfigurations"
        );
        assert_eq!(
            c.management_path(Some("cluster-config")),
            "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Kubernetes/connectedClusters/arc/providers/Microsoft.KubernetesConfiguration/fluxConfigurations/cluster-config"
        );
        assert!(c.status_path("x").ends_with("/fluxConfigurations/x/status"));
        assert_eq!(
            ClusterType::parse("managedClusters"),
            Some(ClusterType::ManagedClusters)
        );
        assert_eq!(
            ClusterType::ManagedClusters.provider(),
            "Microsoft.ContainerService"
        );
        assert_eq!(ClusterType::parse("other"), None);
    }

    #[test]
    fn partial_listing_is_detected() {
        let l = ConfigurationList {
            value: vec![serde_json::json!({"name": "a"})],
            count: 2,
        };
        assert!(!l.is_complete());
    }
}

//! fluxconfig-agent: pulls desired flux configurations from the Azure data plane, writes them as
//! `FluxConfig` resources (with their protected settings in Secrets) and reports their status
//! back.
//!
//! ```text
//! fluxconfig-agent run --dataplane-url URL | --region R
//!     --subscription-id ID --resource-group RG
//!     --cluster-type connectedClusters|managedClusters --cluster-name NAME
//!     --token-file FILE | --token T
//!     [--ca-file FILE] [--proxy-ca-file FILE] [--https-proxy URL] [--no-proxy LIST]
//!     [--poll-interval-secs 30] [--long-poll-secs 50]
//!     [--report-interval-secs 60] [--metrics-addr 0.0.0.0:8081] [--log-level info|error]
//! ```
//! Each flag also reads `FLUXCONFIG_AGENT_<FLAG>` (e.g. `FLUXCONFIG_AGENT_DATAPLANE_URL`,
//! `FLUXCONFIG_AGENT_TOKEN_FILE`); `--https-proxy`/`--no-proxy` read `HTTPS_PROXY`/`NO_PROXY`;
//! Kubernetes access from in-cluster config or `KUBECONFIG`. Tests run the agent in-process with
//! [`run::run`]`(client, config, shutdown)`.
//!
//! - [`config`]: flags and environment → [`config::AgentConfig`]
//! - [`token`]: the bearer token, re-read when its file changes
//! - [`client`]: the data-plane HTTP client
//! - [`sync`]: pure decisions: what to apply, reject, delete
//! - [`apply`]: server-side apply of FluxConfigs and Secrets, deletions
//! - [`sshkey`]: generated SSH deploy keys
//! - [`report`]: status reports and heartbeats
//! - [`run`]: the poll loop tying it together
//! - [`metrics`], [`http`], [`telemetry`]: observability

pub mod apply;
pub mod cli;
pub mod client;
pub mod config;
pub mod http;
pub mod metrics;
pub mod report;
pub mod run;
pub mod sshkey;
pub mod sync;
pub mod telemetry;
pub mod token;

/// The agent's user-agent and heartbeat version string.
pub fn version() -> &'static str {
    concat!("fluxconfig-agent/", env!("CARGO_PKG_VERSION"))
}

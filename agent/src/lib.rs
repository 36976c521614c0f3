//! fluxconfig-agent: pulls desired flux configurations from the Azure data plane, writes them as
//! `FluxConfig` resources and reports their compliance back. The data-plane loop arrives with
//! the agent issue; the crate exists now so the workspace has its final shape.

/// The agent's user-agent and heartbeat version string.
pub fn version() -> &'static str {
    concat!("fluxconfig-agent/", env!("CARGO_PKG_VERSION"))
}

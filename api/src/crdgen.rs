//! The `FluxConfig` CustomResourceDefinition as YAML, generated from the Rust types so the
//! committed `deploy/crds/` file can never drift from what the binaries read and write.

use kube::CustomResourceExt;

use crate::FluxConfig;

/// Errors rendering the CRD.
#[derive(Debug, thiserror::Error)]
pub enum CrdGenError {
    #[error("serializing the FluxConfig CRD to YAML: {0}")]
    Yaml(String),
}

/// Path of the generated CRD relative to the repository root.
pub const CRD_PATH: &str = "deploy/crds/clusterconfig.azure.com_fluxconfigs.yaml";

/// The CRD manifest exactly as committed under `deploy/crds/`.
pub fn fluxconfig_crd_yaml() -> Result<String, CrdGenError> {
    let crd = FluxConfig::crd();
    let body = serde_saphyr::to_string(&crd).map_err(|e| CrdGenError::Yaml(e.to_string()))?;
    Ok(format!(
        "# Generated from api/src/fluxconfig.rs by `fluxconfig-controller crd`; do not edit.\n---\n{body}"
    ))
}

//! Types shared by `fluxconfig-agent`, `fluxconfig-controller` and the testbed: the `FluxConfig`
//! custom resource, the Flux objects it becomes, and the protected-settings keys.

pub mod crdgen;
pub mod dataplane;
pub mod flux;
pub mod fluxconfig;
pub mod kustomization_flag;
pub mod labels;
pub mod protected;
pub mod validation;

pub use fluxconfig::{
    ComplianceState, FluxConfig, FluxConfigSpec, FluxConfigStatus, ProvisioningState, Scope,
    SourceKind,
};

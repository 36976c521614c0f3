//! The testbed: everything needed to run fluxconfig without a cluster or Azure — a Kubernetes
//! API emulator, a Flux simulator, the Azure data plane and its `az` look-alike, fixtures, and
//! the one-command sandbox.

pub mod apiserver;
pub mod azcli;
pub mod bench;
pub mod bench_apiserver;
pub mod bench_propagation;
pub mod cli;
pub mod dataplane;
pub mod fixtures;
pub mod fluxsim;
pub mod sandbox;
pub mod system;

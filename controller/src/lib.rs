//! fluxconfig-controller: expands each `FluxConfig` into Flux objects and rolls their status up
//! into compliance. Pure decisions (translation, compliance) live apart from cluster I/O.

pub mod cli;
pub mod compliance;
pub mod duration;
pub mod http;
pub mod leader;
pub mod managed_source;
pub mod memory;
pub mod metrics;
pub mod reconciler;
pub mod render;
pub mod run;
pub mod telemetry;
pub mod translate;

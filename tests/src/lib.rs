pub mod apiserver;
pub mod azcli;
pub mod bench_apiserver;
pub mod dataplane;
pub mod fixtures;
pub mod fluxsim;

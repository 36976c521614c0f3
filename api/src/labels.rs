//! Labels and annotations that tie generated objects to their configuration.

/// Name of the `FluxConfig` an object was generated from.
pub const CONFIG_NAME: &str = "clusterconfig.azure.com/name";
/// Namespace of the `FluxConfig` an object was generated from.
pub const CONFIG_NAMESPACE: &str = "clusterconfig.azure.com/namespace";
/// Which part of the configuration an object represents (`source`, `kustomization`, `auth`, ...).
pub const COMPONENT: &str = "clusterconfig.azure.com/component";
/// The kustomization name (map key) a Flux Kustomization was generated from.
pub const KUSTOMIZATION: &str = "clusterconfig.azure.com/kustomization";
/// `app.kubernetes.io/managed-by` value on everything the controller writes.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "fluxconfig-controller";
/// Annotation on a HelmRelease asking for its chart source to be the configuration's GitRepository.
pub const USE_MANAGED_SOURCE: &str = "clusterconfig.azure.com/use-managed-source";
/// Finalizer the controller holds on a `FluxConfig` until its Flux objects are gone.
pub const FINALIZER: &str = "clusterconfig.azure.com/finalizer";
/// Digest of the desired state the controller last applied to a Flux object. Kept on the
/// object, not in memory, so that a restarted controller finds its objects in place and writes
/// nothing, and a field it stopped setting (absent from the object it would apply, so invisible
/// to a field-by-field comparison) still changes what it compares.
pub const APPLIED_DIGEST: &str = "clusterconfig.azure.com/applied-digest";

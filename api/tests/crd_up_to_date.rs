//! The committed CRD must be exactly what the Rust types generate.

use std::path::PathBuf;

use fluxconfig_api::crdgen::{fluxconfig_crd_yaml, CRD_PATH};

/// The Helm chart carries its own copy (Helm installs CRDs from the chart's `crds/`).
const HELM_CRD_PATH: &str = "deploy/helm/fluxconfig/crds/clusterconfig.azure.com_fluxconfigs.yaml";

#[test]
fn committed_fluxconfig_crds_match_the_types() {
    let generated = fluxconfig_crd_yaml().expect("generate CRD");
    for relative in [CRD_PATH, HELM_CRD_PATH] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(relative);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        assert!(
            committed == generated,
            "{relative} is stale; regenerate it with\n  cargo run -p fluxconfig-controller -- crd > {relative}"
        );
    }
}

#[test]
fn crd_has_the_tutorial_printer_columns_and_status_subresource() {
    let crd: serde_json::Value =
        serde_saphyr::from_str(&fluxconfig_crd_yaml().expect("generate CRD")).expect("YAML");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1beta1");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["group"], "clusterconfig.azure.com");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["Scope", "URL", "Provision", "Compliance", "Age"]);
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for property in [
        "scope",
        "namespace",
        "sourceKind",
        "suspend",
        "gitRepository",
        "bucket",
        "azureBlob",
        "ociRepository",
        "kustomizations",
        "waitForReconciliation",
        "reconciliationWaitDuration",
        "protectedSettingsSecretRef",
    ] {
        assert!(spec[property].is_object(), "spec.{property} missing");
    }
    // Server-side apply must drop a removed kustomization entirely, not leave `{}` behind.
    assert_eq!(spec["kustomizations"]["x-kubernetes-map-type"], "atomic");
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    let compliance: Vec<&str> = status["complianceState"]["enum"]
        .as_array()
        .expect("complianceState enum")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        compliance,
        [
            "Compliant",
            "Non-Compliant",
            "Pending",
            "Suspended",
            "Unknown"
        ]
    );
}

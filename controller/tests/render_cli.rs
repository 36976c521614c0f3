//! `fluxconfig-controller render -f` as a user runs it.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn render(file: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fluxconfig-controller"))
        .args(["render", "-f"])
        .arg(file)
        .output()
        .expect("run fluxconfig-controller");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tutorial_configuration_renders_source_and_dependent_kustomizations() {
    let (ok, stdout, stderr) = render(&repo().join("deploy/examples/cluster-config.yaml"));
    assert!(ok, "render failed: {stderr}");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&stdout).expect("YAML stream");
    let summary: Vec<(String, String, String)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or_default().to_string(),
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let expect = |k: &str, n: &str| (k.to_string(), "cluster-config".to_string(), n.to_string());
    assert_eq!(
        summary,
        [
            expect("GitRepository", "cluster-config"),
            expect("Kustomization", "cluster-config-infra"),
            expect("Kustomization", "cluster-config-apps"),
        ]
    );
    let git = &docs[0];
    assert_eq!(git["apiVersion"], "source.toolkit.fluxcd.io/v1");
    assert_eq!(
        git["spec"]["url"],
        "https://github.com/Azure/gitops-flux2-kustomize-helm-mt"
    );
    assert_eq!(git["spec"]["ref"]["branch"], "main");
    assert_eq!(git["spec"]["interval"], "10m0s");
    let apps = &docs[2];
    assert_eq!(
        apps["spec"]["dependsOn"],
        serde_json::json!([{"name": "cluster-config-infra"}])
    );
    assert_eq!(apps["spec"]["path"], "./apps/staging");
    assert_eq!(apps["spec"]["prune"], true);
    assert_eq!(apps["spec"]["sourceRef"]["kind"], "GitRepository");
    assert_eq!(apps["spec"]["sourceRef"]["name"], "cluster-config");
    let infra = &docs[1];
    assert_eq!(infra["spec"]["path"], "./infrastructure");
    assert!(infra["spec"].get("dependsOn").is_none());
    // A manifest has no uid, so nothing can own the rendered objects yet.
    assert!(docs
        .iter()
        .all(|d| d["metadata"].get("ownerReferences").is_none()));
}

#[test]
fn invalid_configuration_names_the_field_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(repo().join("deploy/examples/cluster-config.yaml"))
        .expect("example")
        .replace("- infra", "- infr");
    std::fs::write(&file, text).expect("write");
    let (ok, stdout, stderr) = render(&file);
    assert!(!ok, "an unknown dependency must fail");
    assert!(stdout.is_empty(), "nothing rendered on error: {stdout}");
    assert!(
        stderr.contains("spec.kustomizations.apps.dependsOn[0]"),
        "error names the field: {stderr}"
    );
    assert!(stderr.contains("infr"), "{stderr}");
}

#[test]
fn unknown_source_kind_is_a_field_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(repo().join("deploy/examples/cluster-config.yaml"))
        .expect("example")
        .replace("sourceKind: GitRepository", "sourceKind: HelmRepository");
    std::fs::write(&file, text).expect("write");
    let (ok, _, stderr) = render(&file);
    assert!(!ok);
    assert!(stderr.contains("spec.sourceKind"), "{stderr}");
}

#[test]
fn protected_settings_come_from_a_secret_in_the_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("https.yaml");
    std::fs::write(
        &file,
        r#"
apiVersion: v1
kind: Secret
metadata: {name: cfg-protected, namespace: team-a}
stringData: {httpsKey: s3cr3t-pat}
---
apiVersion: clusterconfig.azure.com/v1beta1
kind: FluxConfig
metadata: {name: cfg, namespace: team-a}
spec:
  gitRepository:
    url: https://dev.azure.com/org/p/_git/r
    httpsUser: git
    repositoryRef: {branch: main}
  protectedSettingsSecretRef: cfg-protected
  kustomizations:
    app: {path: ./app}
"#,
    )
    .expect("write");
    let (ok, stdout, stderr) = render(&file);
    assert!(ok, "{stderr}");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&stdout).expect("YAML stream");
    let secret = docs
        .iter()
        .find(|d| d["kind"] == "Secret")
        .expect("credentials Secret");
    assert_eq!(secret["metadata"]["name"], "cfg-auth");
    assert_eq!(secret["data"]["username"], "Z2l0"); // base64("git")
    assert_eq!(secret["data"]["password"], "czNjcjN0LXBhdA=="); // base64("s3cr3t-pat")
    let git = docs
        .iter()
        .find(|d| d["kind"] == "GitRepository")
        .expect("source");
    assert_eq!(git["spec"]["secretRef"]["name"], "cfg-auth");
}

//! The README's first command: `testbed up` runs everything and reaches Compliant.

use std::process::Command;

#[test]
fn testbed_up_once_prints_the_tutorial_compliant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(["up", "--once", "--timeout-secs", "90", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run testbed up");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "testbed up failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("complianceState: Pending"), "{stdout}");
    assert!(stdout.contains("complianceState: Compliant"), "{stdout}");
    for object in [
        "cluster-config ",
        "cluster-config-infra",
        "cluster-config-apps",
        "nginx",
        "redis",
        "podinfo",
    ] {
        assert!(stdout.contains(object), "{object} missing:\n{stdout}");
    }
    assert!(
        stdout.contains("kubectl get fluxconfigs,gitrepositories,kustomizations,helmreleases -A"),
        "{stdout}"
    );
    // The kubeconfig it names works for kubectl while it runs; afterwards it must still exist.
    assert!(dir.path().join("kubeconfig").exists());
}

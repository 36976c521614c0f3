//! The real `fluxconfig-agent` binary, as a child process against the in-process system, must
//! never print the bearer token or a protected setting: not in its logs (stdout and stderr), not
//! on /metrics, not on the happy path and not on the error paths (a rejected configuration that
//! carries a secret, data-plane 500s, a source that cannot be fetched).

mod common_system;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common_system::{cluster, eventually, free_port, scrape, System};
use fluxconfig_api::ProvisioningState;

/// Builds the agent binary (a no-op when it is up to date) and returns its path, next to this
/// test's own binary in the target directory.
fn agent_binary() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args([
            "build",
            "-q",
            "-p",
            "fluxconfig-agent",
            "--bin",
            "fluxconfig-agent",
        ])
        .current_dir(&workspace);
    // What cargo sets for this test would reach build scripts (ring's reruns on
    // CARGO_MANIFEST_DIR) and rebuild half the dependency tree, twice: once here, once for
    // the next plain `cargo build`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        let set_by_cargo_for_tests = [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ]
        .contains(&name.as_str())
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_");
        if set_by_cargo_for_tests {
            cargo.env_remove(&name);
        }
    }
    let status = cargo.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p fluxconfig-agent failed");
    let exe = std::env::current_exe().expect("test binary");
    // target/debug/deps/agent_secrets-… → target/debug/fluxconfig-agent
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .join("fluxconfig-agent");
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}

/// Kills the child when the test fails half-way.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_token_or_protected_value_appears_in_any_agent_output() {
    let bin = agent_binary();
    let system = System::start().await;
    let dir = system.dir.clone();
    let kubeconfig = dir.join("kubeconfig");
    system
        .server
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig");
    let token_file = dir.join("token");
    std::fs::write(&token_file, &system.token).expect("token file");

    let https_key = "https-key-V4lue-9f3c2a71";
    let rejected_key = "rejected-S3cret-5be04d";
    let ssh_key = fluxconfig_agent::sshkey::generate("leak-test")
        .expect("ssh key")
        .private_openssh;
    system
        .az(&[
            "create",
            "-n",
            "https-cfg",
            "--namespace",
            "team-a",
            "-u",
            &system.repo.url,
            "--branch",
            "main",
            "--https-user",
            "git",
            "--https-key",
            https_key,
        ])
        .await
        .expect("create https-cfg");
    system
        .az(&[
            "create",
            "-n",
            "ssh-cfg",
            "--namespace",
            "team-a",
            "-u",
            "ssh://git@git.example.com/org/repo.git",
            "--branch",
            "main",
            "--ssh-private-key",
            &b64(&ssh_key),
        ])
        .await
        .expect("create ssh-cfg");
    // Rejected by the agent (a dependency on a kustomization that does not exist) while
    // carrying a secret: the rejection message must not echo it.
    system
        .az(&[
            "create",
            "-n",
            "broken",
            "--namespace",
            "team-a",
            "-u",
            &system.repo.url,
            "--branch",
            "main",
            "--https-user",
            "git",
            "--https-key",
            rejected_key,
            "--kustomization",
            "name=apps",
            "path=./apps/staging",
            "dependsOn=[\"infr\"]",
        ])
        .await
        .expect("create broken");

    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let stdout_path = dir.join("agent.stdout");
    let stderr_path = dir.join("agent.stderr");
    let mut command = Command::new(&bin);
    command
        .args([
            "run",
            "--dataplane-url",
            system.dataplane.url(),
            "--subscription-id",
            &cluster().subscription_id,
            "--resource-group",
            "flux-demo-rg",
            "--cluster-type",
            "connectedClusters",
            "--cluster-name",
            "flux-demo-arc",
            "--long-poll-secs",
            "5",
            "--report-interval-secs",
            "2",
            "--log-level",
            "info",
            "--metrics-addr",
            &metrics_addr,
        ])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--ca-file")
        .arg(system.ca_file())
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env_remove(var);
    }
    let mut child = Child(command.spawn().expect("start the agent"));

    eventually("all three configurations reported", || async {
        let dp = &system.dataplane;
        dp.status(&cluster(), "https-cfg").is_some()
            && dp.status(&cluster(), "ssh-cfg").is_some()
            && dp
                .status(&cluster(), "broken")
                .is_some_and(|s| s.provisioning_state == Some(ProvisioningState::Failed))
    })
    .await;

    // Data-plane 500s for a few polls, then healthy again.
    let faults = system.dataplane.faults();
    let injected = system.dataplane.stats().faults_injected;
    faults.set_error_rate(1.0, 500);
    let addr = metrics_addr.parse().expect("addr");
    eventually("listings failed with 500", || async {
        let text = scrape(addr).await.unwrap_or_default();
        let errors = common_system::metric(
            &text,
            "fluxconfig_agent_polls_total",
            &[("result", "error")],
        );
        system.dataplane.stats().faults_injected >= injected + 2 && errors.unwrap_or(0.0) >= 1.0
    })
    .await;
    faults.clear();
    let listings = system.dataplane.stats().listings;
    eventually("the agent lists again after the 500s", || async {
        system.dataplane.stats().listings > listings
    })
    .await;

    let metrics = scrape(addr).await.expect("agent /metrics");
    assert!(
        metrics.contains("fluxconfig_agent_polls_total"),
        "not the agent's metrics:\n{metrics}"
    );
    let _ = child.0.kill();
    let _ = child.0.wait();
    // Let the files settle; the child is gone, so this is only about reading them whole.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stdout = std::fs::read_to_string(&stdout_path).expect("stdout");
    let stderr = std::fs::read_to_string(&stderr_path).expect("stderr");
    let output = format!("{stdout}\n{stderr}");

    // The test only proves something if the error paths were really taken and logged.
    assert!(
        output.contains("broken") && output.contains("rejected"),
        "the rejection was not logged:\n{output}"
    );
    assert!(
        output.contains("sync failed") && output.contains("HTTP 500"),
        "the failed listings were not logged:\n{output}"
    );

    let mut secrets: Vec<(String, String)> = vec![
        ("token".into(), system.token.clone()),
        ("token (base64)".into(), b64(&system.token)),
        ("httpsKey".into(), https_key.into()),
        ("httpsKey (base64)".into(), b64(https_key)),
        ("rejected httpsKey".into(), rejected_key.into()),
        ("rejected httpsKey (base64)".into(), b64(rejected_key)),
    ];
    let ssh_b64 = b64(&ssh_key);
    secrets.push((
        "sshPrivateKey (base64, middle)".into(),
        ssh_b64[ssh_b64.len() / 2..ssh_b64.len() / 2 + 40].to_string(),
    ));
    for line in ssh_key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
    {
        secrets.push(("sshPrivateKey line".into(), line.to_string()));
    }
    for (what, value) in &secrets {
        for (place, text) in [
            ("stdout", &stdout),
            ("stderr", &stderr),
            ("/metrics", &metrics),
        ] {
            assert!(
                !text.contains(value.as_str()),
                "the {what} appears in the agent's {place}"
            );
        }
    }
    println!(
        "checked {} secret forms against {} bytes of agent output and {} bytes of metrics",
        secrets.len(),
        output.len(),
        metrics.len()
    );
    system.shutdown().await;
}

//! Bad environments, with the real binaries as child processes. What an operator expects:
//!
//! - A configuration error found at startup (a CA file that is missing or holds no
//!   certificate, a KUBECONFIG that does not exist) ends the process with a non-zero status and
//!   a message naming the file, so the pod crash-loops with the reason in its log.
//! - An outage at run time (data plane unreachable, API server unreachable) is retried: the
//!   process keeps running and `/healthz` keeps answering 200, so the liveness probe does not
//!   restart it over something a restart cannot fix; the log says what fails.
//! - The agent's token file counts as run time even at startup: it is written by another
//!   container into a shared volume and rotated, so it may be missing or empty for a while. The
//!   agent changes nothing in the cluster, logs the file's name and why, and keeps serving.

mod fault_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fault_common::within;
use fluxconfig_testbed::apiserver;

const STARTUP_LIMIT: Duration = Duration::from_secs(45);

/// `<target>/debug`, after building both binaries once per test process.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-q",
                "-p",
                "fluxconfig-agent",
                "-p",
                "fluxconfig-controller",
            ])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the binaries");
        let exe = std::env::current_exe().expect("current exe");
        // <target>/debug/deps/<test> → <target>/debug
        exe.parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf()
    })
}

struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(dir: &Path, bin: &str, args: &[String], kubeconfig: &Path) -> Proc {
        let log = dir.join(format!("{bin}-{}.log", fastrand::u32(..)));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin_dir().join(bin))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .env_remove("RUST_LOG")
            .env("NO_PROXY", "*")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn");
        Proc { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status if the process ends within `limit`.
    fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Asserts a startup failure: non-zero exit and every one of `words` in the output.
    fn assert_fails_naming(&mut self, case: &str, words: &[&str]) {
        let status = self
            .exited_within(STARTUP_LIMIT)
            .unwrap_or_else(|| panic!("{case}: still running; output:\n{}", self.output()));
        let out = self.output();
        assert!(!status.success(), "{case}: exited with success\n{out}");
        for w in words {
            assert!(
                out.contains(w),
                "{case}: output does not name {w:?}:\n{out}"
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status code of `GET /healthz`, `None` when nothing answers.
fn healthz(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// Keeps running and answering `/healthz` 200 for a few seconds while degraded, with every one
/// of `words` in its log.
async fn assert_degraded_but_serving(p: &mut Proc, port: u16, case: &str, words: &[&str]) {
    within(
        &format!("{case}: /healthz answers"),
        STARTUP_LIMIT,
        || async { healthz(port) == Some(200) },
    )
    .await;
    let started = Instant::now();
    loop {
        let out = p.output();
        if words.iter().all(|w| out.contains(w)) {
            break;
        }
        assert!(
            started.elapsed() < STARTUP_LIMIT,
            "{case}: the log does not name {words:?}:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still alive and healthy a while later (retrying, not exiting).
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(
            p.child.try_wait().expect("try_wait").is_none(),
            "{case}: exited:\n{}",
            p.output()
        );
        assert_eq!(healthz(port), Some(200), "{case}: /healthz");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    free_port()
}

fn agent_args(
    dataplane: &str,
    token_file: &Path,
    ca_file: Option<&Path>,
    port: u16,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--dataplane-url",
        dataplane,
        "--subscription-id",
        "00000000-0000-0000-0000-000000000000",
        "--resource-group",
        "rg",
        "--cluster-type",
        "connectedClusters",
        "--cluster-name",
        "c",
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
        "--token-file",
        token_file.to_str().expect("path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(ca) = ca_file {
        args.push("--ca-file".into());
        args.push(ca.to_str().expect("path").into());
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_startup_configuration_errors_exit_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = apiserver::start(apiserver::Config::default())
        .await
        .expect("emulator");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let dp = format!("https://127.0.0.1:{}", closed_port());
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken").expect("token");

    let bad_ca = dir.path().join("bad-ca.crt");
    std::fs::write(&bad_ca, "this is not a certificate").expect("bad CA");
    let mut p = Proc::start(
        dir.path(),
        "fluxconfig-agent",
        &agent_args(&dp, &token, Some(&bad_ca), free_port()),
        &kubeconfig,
    );
    p.assert_fails_naming("bad CA file", &[bad_ca.to_str().unwrap()]);

    let missing_ca = dir.path().join("no-such-ca.crt");
    let mut p = Proc::start(
        dir.path(),
        "fluxconfig-agent",
        &agent_args(&dp, &token, Some(&missing_ca), free_port()),
        &kubeconfig,
    );
    p.assert_fails_naming("missing CA file", &[missing_ca.to_str().unwrap()]);

    let no_kubeconfig = dir.path().join("no-such-kubeconfig");
    let mut p = Proc::start(
        dir.path(),
        "fluxconfig-agent",
        &agent_args(&dp, &token, None, free_port()),
        &no_kubeconfig,
    );
    p.assert_fails_naming("missing KUBECONFIG", &[no_kubeconfig.to_str().unwrap()]);

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_runtime_outages_keep_it_serving_health() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = apiserver::start(apiserver::Config::default())
        .await
        .expect("emulator");
    let client = server.client().await.expect("client");
    fluxconfig_testbed::fluxsim::install_fluxconfig_crd(&client)
        .await
        .expect("FluxConfig CRD");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken").expect("token");

    // Started together, checked one after the other: a missing token file, an empty one, and
    // a good one with the data plane down.
    let dp = format!("https://127.0.0.1:{}", closed_port());
    let missing = dir.path().join("no-such-token");
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "").expect("empty token");
    let mut running = Vec::new();
    for (case, file, words) in [
        (
            "token file missing",
            &missing,
            vec![missing.display().to_string()],
        ),
        (
            "token file empty",
            &empty,
            vec![empty.display().to_string(), "empty".to_string()],
        ),
        (
            "unreachable data plane",
            &token,
            vec![dp.trim_start_matches("https://").to_string()],
        ),
    ] {
        let port = free_port();
        let p = Proc::start(
            dir.path(),
            "fluxconfig-agent",
            &agent_args(&dp, file, None, port),
            &kubeconfig,
        );
        running.push((case, p, port, words));
    }
    for (case, p, port, words) in running.iter_mut() {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        assert_degraded_but_serving(p, *port, case, &words).await;
    }
    // The token file disappears while running (a volume being rotated badly).
    let (case, p, port, _) = &mut running[2];
    std::fs::remove_file(&token).expect("remove token");
    assert_degraded_but_serving(p, *port, case, &[&token.display().to_string()]).await;

    drop(running);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_bad_kubeconfig_exits_and_unreachable_api_keeps_serving_health() {
    let dir = tempfile::tempdir().expect("tempdir");
    let no_kubeconfig = dir.path().join("no-such-kubeconfig");
    let args = |port: u16| -> Vec<String> {
        [
            "run",
            "--no-leader-election",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut p = Proc::start(
        dir.path(),
        "fluxconfig-controller",
        &args(free_port()),
        &no_kubeconfig,
    );
    p.assert_fails_naming("missing KUBECONFIG", &[no_kubeconfig.to_str().unwrap()]);

    // A kubeconfig of an API server that has gone away.
    let server = apiserver::start(apiserver::Config::default())
        .await
        .expect("emulator");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let api = server.addr();
    server.shutdown().await;
    let port = free_port();
    let mut p = Proc::start(
        dir.path(),
        "fluxconfig-controller",
        &args(port),
        &kubeconfig,
    );
    assert_degraded_but_serving(
        &mut p,
        port,
        "unreachable API server",
        &[&api.to_string(), "Connect"],
    )
    .await;
}

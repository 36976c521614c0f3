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

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fault_common::process::{self, free_port, healthz, Proc};
use fault_common::{within, Bed, TOKEN};
use fluxconfig_testbed::apiserver;

const STARTUP_LIMIT: Duration = Duration::from_secs(45);

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
    process::agent_args(dataplane, token_file, ca_file, &format!("127.0.0.1:{port}"))
}

/// An API emulator, its kubeconfig and a token file, under `dir`.
async fn emulator_and_files(dir: &Path) -> (apiserver::ApiServer, PathBuf, PathBuf) {
    let server = apiserver::start(apiserver::Config::default())
        .await
        .expect("emulator");
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let token = dir.join("token");
    std::fs::write(&token, "t0ken").expect("token");
    (server, kubeconfig, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_startup_configuration_errors_exit_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, kubeconfig, token) = emulator_and_files(dir.path()).await;
    let dp = format!("https://127.0.0.1:{}", closed_port());

    let bad_ca = dir.path().join("bad-ca.crt");
    std::fs::write(&bad_ca, "this is not a certificate").expect("bad CA");
    let mut p = Proc::start(
        dir.path(),
        "fluxconfig-agent",
        &agent_args(&dp, &token, Some(&bad_ca), free_port()),
        &kubeconfig,
    );
    p.assert_fails_naming(STARTUP_LIMIT, "bad CA file", &[bad_ca.to_str().unwrap()]);

    let missing_ca = dir.path().join("no-such-ca.crt");
    let mut p = Proc::start(
        dir.path(),
        "fluxconfig-agent",
        &agent_args(&dp, &token, Some(&missing_ca), free_port()),
        &kubeconfig,
    );
    p.assert_fails_naming(
        STARTUP_LIMIT,
        "missing CA file",
        &[missing_ca.to_str().unwrap()],
    );

    let no_kubeconfig = dir.path().join("no-such-kubeconfig");
    let mut p = Proc::start(
        dir.path(),
        "fluxconfig-agent",
        &agent_args(&dp, &token, None, free_port()),
        &no_kubeconfig,
    );
    p.assert_fails_naming(
        STARTUP_LIMIT,
        "missing KUBECONFIG",
        &[no_kubeconfig.to_str().unwrap()],
    );

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_runtime_outages_keep_it_serving_health() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, kubeconfig, token) = emulator_and_files(dir.path()).await;
    let client = server.client().await.expect("client");
    fluxconfig_testbed::fluxsim::install_fluxconfig_crd(&client)
        .await
        .expect("FluxConfig CRD");

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
    p.assert_fails_naming(
        STARTUP_LIMIT,
        "missing KUBECONFIG",
        &[no_kubeconfig.to_str().unwrap()],
    );

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
    // SIGTERM still ends it, within the pod's default 30 s grace period (its caches never
    // synced, so it has no reconciles to wait for).
    p.sigterm();
    let status = p.exited_within(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM with the API server unreachable: {status:?}\n{}",
        p.tail(20)
    );
}

/// Both processes with stdout and stderr on `/dev/full`, as on a node whose disk holding the
/// container logs is full: every log line fails to be written. Logging must neither panic nor
/// stop the work: both keep serving `/healthz`, and the agent still writes FluxConfigs and the
/// controller still applies their Flux objects, for configurations added before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_for_logs_neither_stops_the_work_nor_health() {
    let bed = Bed::start(false).await;
    let mut desired: BTreeSet<String> = ["full-0".to_string()].into();
    bed.put_simple("full-0").await;
    let (agent_port, controller_port) = (free_port(), free_port());
    let full = PathBuf::from("/dev/full");
    let mut agent = Proc::start_logging_to(
        full.clone(),
        bed.agent_command(&bed.token_file(), &format!("127.0.0.1:{agent_port}")),
    );
    let mut controller = Proc::start_logging_to(
        full,
        process::command(
            "fluxconfig-controller",
            &process::controller_args(&format!("127.0.0.1:{controller_port}")),
            &bed.kubeconfig(),
        ),
    );
    for port in [agent_port, controller_port] {
        within("/healthz answers", STARTUP_LIMIT, || async {
            healthz(port) == Some(200)
        })
        .await;
    }
    bed.await_exact(&desired, STARTUP_LIMIT).await;
    // More work after thousands of failed log writes.
    for name in ["full-1", "full-2"] {
        bed.put_simple(name).await;
        desired.insert(name.to_string());
    }
    bed.delete("full-0").await;
    desired.remove("full-0");
    bed.await_exact(&desired, STARTUP_LIMIT).await;
    for (name, p, port) in [
        ("agent", &mut agent, agent_port),
        ("controller", &mut controller, controller_port),
    ] {
        assert!(
            p.is_running(),
            "the {name} exited with its log on a full disk"
        );
        assert_eq!(healthz(port), Some(200), "{name} /healthz");
    }
    drop((agent, controller));
    bed.shutdown().await;
}

/// The token path exists but cannot be read as a file: it is a directory, or its parent is a
/// regular file (tests run as root, so a mode of 000 would not stop the read). The agent names
/// the file and why in its log, changes nothing in the cluster, keeps serving `/healthz`, and
/// recovers once the file is good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_token_file_is_named_and_the_agent_recovers() {
    let bed = Bed::start(false).await;
    bed.put_simple("tok-0").await;
    let dir = bed.dir.as_path();
    let is_dir = dir.join("token-is-a-directory");
    std::fs::create_dir(&is_dir).expect("mkdir");
    let parent_file = dir.join("parent-is-a-file");
    std::fs::write(&parent_file, "not a directory").expect("file");
    let under_file = parent_file.join("token");
    let mut agents = Vec::new();
    for (case, path) in [
        ("token path is a directory", &is_dir),
        ("token path's parent is a file", &under_file),
    ] {
        let port = free_port();
        let log = dir.join(format!("agent-{port}.log"));
        let p = Proc::start_logging_to(log, bed.agent_command(path, &format!("127.0.0.1:{port}")));
        agents.push((case, p, port, path.display().to_string()));
    }
    for (case, p, port, path) in agents.iter_mut() {
        assert_degraded_but_serving(p, *port, case, &["reading token file", path]).await;
        assert_eq!(
            process::http_status(*port, "/readyz"),
            Some(503),
            "{case}: ready without a listing"
        );
    }
    let state = bed.observed_state().await;
    assert!(
        state.is_empty(),
        "an agent without a token changed the cluster: {state:?}"
    );

    // The files become good: each agent lists the data plane (ready) and writes the
    // configuration.
    std::fs::remove_dir(&is_dir).expect("rmdir");
    std::fs::write(&is_dir, TOKEN).expect("token");
    std::fs::remove_file(&parent_file).expect("rm");
    std::fs::create_dir(&parent_file).expect("mkdir");
    std::fs::write(&under_file, TOKEN).expect("token");
    // A token error waits the full backoff (30 s) before the next attempt.
    for (case, _, port, _) in &agents {
        within(
            &format!("{case}: ready after the token file was fixed"),
            Duration::from_secs(75),
            || async { process::http_status(*port, "/readyz") == Some(200) },
        )
        .await;
    }
    within("tok-0 written", Duration::from_secs(30), || async {
        bed.observed_state().await.configs.contains_key("tok-0")
    })
    .await;
    drop(agents);
    bed.shutdown().await;
}

/// The metrics/health port is taken by another process: both binaries exit non-zero with a
/// message naming the address (a pod with a clashing port crash-loops with the reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_port_taken_exits_naming_the_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, kubeconfig, token) = emulator_and_files(dir.path()).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();

    let dp = format!("https://127.0.0.1:{}", closed_port());
    let mut args = agent_args(&dp, &token, None, 0);
    let at = args
        .iter()
        .position(|a| a == "--metrics-addr")
        .expect("flag")
        + 1;
    args[at] = addr.clone();
    let mut p = Proc::start(dir.path(), "fluxconfig-agent", &args, &kubeconfig);
    p.assert_fails_naming(STARTUP_LIMIT, "agent: port taken", &[&addr, "in use"]);

    let mut p = Proc::start(
        dir.path(),
        "fluxconfig-controller",
        &process::controller_args(&addr),
        &kubeconfig,
    );
    p.assert_fails_naming(STARTUP_LIMIT, "controller: port taken", &[&addr, "in use"]);
    drop(taken);
    server.shutdown().await;
}

/// Settings a user gets wrong: a KUBECONFIG holding garbage, a data-plane URL that is plain
/// http to a remote host or no URL at all. Each ends the process at once, non-zero, with a
/// message naming the file or the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_kubeconfig_and_bad_dataplane_urls_exit_naming_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, kubeconfig, token) = emulator_and_files(dir.path()).await;
    let garbage = dir.path().join("garbage-kubeconfig");
    std::fs::write(&garbage, "{{{ this: is: not [ a kubeconfig").expect("garbage");
    let dp = format!("https://127.0.0.1:{}", closed_port());

    let mut p = Proc::start(
        dir.path(),
        "fluxconfig-agent",
        &agent_args(&dp, &token, None, free_port()),
        &garbage,
    );
    p.assert_fails_naming(STARTUP_LIMIT, "agent: garbage KUBECONFIG", &["kubeconfig"]);
    let mut p = Proc::start(
        dir.path(),
        "fluxconfig-controller",
        &process::controller_args(&format!("127.0.0.1:{}", free_port())),
        &garbage,
    );
    p.assert_fails_naming(
        STARTUP_LIMIT,
        "controller: garbage KUBECONFIG",
        &["kubeconfig"],
    );

    for (case, url, words) in [
        (
            "plain http to a remote host",
            "http://dp.example.com",
            &["--dataplane-url", "https", "http://dp.example.com"][..],
        ),
        (
            "not a URL",
            "westeurope.dp.kubernetesconfiguration",
            &["--dataplane-url", "westeurope.dp.kubernetesconfiguration"][..],
        ),
    ] {
        let mut p = Proc::start(
            dir.path(),
            "fluxconfig-agent",
            &agent_args(url, &token, None, free_port()),
            &kubeconfig,
        );
        p.assert_fails_naming(STARTUP_LIMIT, case, words);
    }
    server.shutdown().await;
}

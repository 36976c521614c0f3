//! The real `fluxconfig-agent` and `fluxconfig-controller` debug binaries as child processes:
//! built once per test process, logging into a file, killed (SIGKILL) and reaped on drop so no
//! child outlives its test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `<target>/debug`, after building both binaries once per test process.
pub fn bin_dir() -> &'static Path {
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

/// A command for `bin` with a clean environment for the tests: the given KUBECONFIG, no proxy
/// and no `RUST_LOG` inherited from the developer's shell.
pub fn command(bin: &str, args: &[String], kubeconfig: &Path) -> Command {
    let mut cmd = Command::new(bin_dir().join(bin));
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("RUST_LOG")
        .env("NO_PROXY", "*")
        .stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FLUXCONFIG_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

pub struct Proc {
    pub child: Child,
    /// Where stdout and stderr go (`/dev/full` for the disk-full case).
    pub log: PathBuf,
}

impl Proc {
    /// Starts `bin` with stdout and stderr in a fresh log file under `dir`.
    pub fn start(dir: &Path, bin: &str, args: &[String], kubeconfig: &Path) -> Proc {
        let log = dir.join(format!("{bin}-{}.log", fastrand::u32(..)));
        Proc::start_logging_to(log, command(bin, args, kubeconfig))
    }

    /// Starts `cmd` with stdout and stderr appended to `log` (created if missing).
    pub fn start_logging_to(log: PathBuf, mut cmd: Command) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = cmd
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn");
        Proc { child, log }
    }

    pub fn output(&self) -> String {
        if self.log.starts_with("/dev") {
            // /dev/full reads as endless zeros.
            return String::new();
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn tail(&self, lines: usize) -> String {
        let out = self.output();
        let all: Vec<&str> = out.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap.
    pub fn sigkill(mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("wait")
    }

    /// SIGTERM, as the kubelet sends on pod deletion.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM {}", self.child.id());
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// The exit status if the process ends within `limit`.
    pub fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Asserts a startup failure within `limit`: non-zero exit and every one of `words` in the
    /// output.
    pub fn assert_fails_naming(&mut self, limit: Duration, case: &str, words: &[&str]) {
        let status = self
            .exited_within(limit)
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

/// Status code of `GET <path>` on 127.0.0.1:`port`, `None` when nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace().nth(1)?.parse().ok()
}

pub fn healthz(port: u16) -> Option<u16> {
    http_status(port, "/healthz")
}

/// A port nothing listens on (bound and released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `fluxconfig-agent run` arguments for the fault cluster (see [`super::cluster`]).
pub fn agent_args(
    dataplane: &str,
    token_file: &Path,
    ca_file: Option<&Path>,
    metrics_addr: &str,
) -> Vec<String> {
    let cluster = super::cluster();
    let mut args = strings(&[
        "run",
        "--dataplane-url",
        dataplane,
        "--subscription-id",
        &cluster.subscription_id,
        "--resource-group",
        &cluster.resource_group,
        "--cluster-type",
        "connectedClusters",
        "--cluster-name",
        &cluster.cluster_name,
        "--metrics-addr",
        metrics_addr,
        "--token-file",
        token_file.to_str().expect("path"),
    ]);
    if let Some(ca) = ca_file {
        args.push("--ca-file".into());
        args.push(ca.to_str().expect("path").into());
    }
    args
}

/// `fluxconfig-controller run` arguments: a single replica, no election.
pub fn controller_args(metrics_addr: &str) -> Vec<String> {
    strings(&[
        "run",
        "--no-leader-election",
        "--metrics-addr",
        metrics_addr,
    ])
}

//! Shared helpers for the Kubernetes API server emulator conformance suites.
//!
//! Every test starts its own in-process emulator, writes a kubeconfig into a
//! private temporary directory and talks to it with the real `kubectl` binary
//! or with kube-rs. Nothing here ever touches the user's `~/.kube`.
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fluxconfig_testbed::apiserver::{self, ApiServer, Config};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{json, Value};
use tempfile::TempDir;

/// Directory holding the real Flux CRDs (shared/ lies beside the repository).
pub const FLUX_CRDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/reference/flux-crds/"
);

/// The YAML fixtures of this suite.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/apiserver/");

pub const GITREPO_CRD: &str = "gitrepositories.source.toolkit.fluxcd.io";

/// Generous deadline for anything that happens asynchronously in the emulator.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// One emulator plus a private kubeconfig / HOME for kubectl.
pub struct Env {
    pub server: ApiServer,
    pub dir: TempDir,
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
}

impl Env {
    pub async fn start() -> Env {
        Env::with_config(Config::default()).await
    }

    pub async fn with_config(mut config: Config) -> Env {
        config.listen = "127.0.0.1:0".parse().unwrap();
        let server = apiserver::start(config)
            .await
            .expect("start the API server emulator");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        server
            .write_kubeconfig(&kubeconfig)
            .expect("write kubeconfig");
        let client = server.client().await.expect("kube client");
        Env {
            server,
            dir,
            kubeconfig,
            client,
        }
    }

    /// Run `kubectl --kubeconfig <ours> ARGS` to completion.
    pub async fn kubectl(&self, args: &[&str]) -> KubectlOutput {
        self.kubectl_with(&self.kubeconfig, args, None).await
    }

    /// Run kubectl with `stdin` piped to it (use `-f -` in ARGS).
    pub async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> KubectlOutput {
        self.kubectl_with(&self.kubeconfig, args, Some(stdin)).await
    }

    /// Run kubectl against another kubeconfig (e.g. one with a wrong token).
    pub async fn kubectl_with(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> KubectlOutput {
        kubectl_at(self.dir.path(), kubeconfig, args, stdin).await
    }

    fn kubectl_command(&self, kubeconfig: &Path, args: &[&str]) -> Command {
        kubectl_command(self.dir.path(), kubeconfig, args)
    }

    /// Spawn a long-running kubectl (e.g. `get -w`) whose stdout lines arrive on a channel.
    pub fn kubectl_spawn(&self, args: &[&str]) -> KubectlStream {
        self.kubectl_spawn_inner(args, false)
    }

    /// Like `kubectl_spawn`, but stderr lines (e.g. `-v=6` request logs) arrive on the
    /// same channel, prefixed with `stderr: `.
    pub fn kubectl_spawn_with_stderr(&self, args: &[&str]) -> KubectlStream {
        self.kubectl_spawn_inner(args, true)
    }

    fn kubectl_spawn_inner(&self, args: &[&str], merge_stderr: bool) -> KubectlStream {
        let mut cmd = self.kubectl_command(&self.kubeconfig, args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn kubectl");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let out = child.stdout.take().unwrap();
        let out_tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                eprintln!("[kubectl] {line}");
                if out_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[kubectl stderr] {line}");
                if merge_stderr && tx.send(format!("stderr: {line}")).is_err() {
                    break;
                }
            }
        });
        KubectlStream { child, rx }
    }

    /// A kubeconfig identical to ours but with `token` as the bearer token
    /// (or with no credentials at all when `token` is None).
    pub fn kubeconfig_with_token(&self, token: Option<&str>) -> PathBuf {
        let mut cfg: Value =
            serde_saphyr::from_str(&self.server.kubeconfig_yaml()).expect("kubeconfig is YAML");
        for user in cfg["users"].as_array_mut().expect("users") {
            let auth = user["user"].as_object_mut().expect("user");
            auth.remove("token");
            auth.remove("tokenFile");
            if let Some(t) = token {
                auth.insert("token".into(), json!(t));
            }
        }
        let path = self
            .dir
            .path()
            .join(format!("kubeconfig-{}", token.unwrap_or("none")));
        std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
        path
    }

    /// A kube client that does not retry 429/503/504 (kube 5 retries them by default),
    /// so injected faults are seen as they are.
    pub async fn client_no_retry(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::from_yaml(&self.server.kubeconfig_yaml())
            .expect("kubeconfig");
        let mut cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("kube config");
        cfg.default_retry = false;
        kube::Client::try_from(cfg).expect("client")
    }

    /// A kube client built from a kubeconfig with the given token (None: anonymous).
    pub async fn client_with_token(&self, token: Option<&str>) -> kube::Client {
        let path = self.kubeconfig_with_token(token);
        let kc = kube::config::Kubeconfig::read_from(&path).expect("read kubeconfig");
        let mut cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("kube config");
        cfg.default_retry = false;
        kube::Client::try_from(cfg).expect("client")
    }

    pub async fn create_namespace(&self, name: &str) -> Namespace {
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .expect("create namespace")
    }

    /// Create every Flux CRD with kube-rs and wait until each is Established.
    pub async fn install_flux_crds(&self) {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let mut names = Vec::new();
        for path in flux_crd_files() {
            let crd = load_crd(&path);
            names.push(crd.metadata.name.clone().unwrap());
            api.create(&PostParams::default(), &crd)
                .await
                .unwrap_or_else(|e| panic!("create CRD {}: {e}", path.display()));
        }
        for name in names {
            self.wait_established(&name).await;
        }
    }

    /// Create one CRD from a YAML file and wait until it is Established.
    pub async fn install_crd(&self, path: &Path) -> CustomResourceDefinition {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let crd = load_crd(path);
        let created = api
            .create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
        self.wait_established(created.metadata.name.as_deref().unwrap())
            .await;
        created
    }

    pub async fn wait_established(&self, name: &str) {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        eventually(&format!("CRD {name} Established"), DEADLINE, || {
            let api = api.clone();
            async move {
                let crd = api.get(name).await.ok()?;
                let conds = crd.status?.conditions?;
                conds
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await
    }

    pub fn gitrepos(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &gitrepo_resource())
    }

    pub fn gitrepos_all(&self) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &gitrepo_resource())
    }

    /// A raw request through the kube client (so TLS and the token are ours).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> RawResponse {
        raw_request(&self.client, method, path, &[], content_type, body).await
    }
}

/// `kubectl --kubeconfig KUBECONFIG ARGS` with HOME (and so the discovery cache) in `home`.
pub fn kubectl_command(home: &Path, kubeconfig: &Path, args: &[&str]) -> Command {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    let mut cmd = Command::new(bin);
    cmd.env_remove("KUBECONFIG")
        .env("HOME", home)
        .env("KUBECACHEDIR", home.join("cache"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args);
    cmd
}

/// Run kubectl to completion (see `kubectl_command`), feeding it `stdin` if given.
pub async fn kubectl_at(
    home: &Path,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> KubectlOutput {
    let mut cmd = kubectl_command(home, kubeconfig, args);
    let stdin = stdin.map(str::to_owned);
    let shown = format!("kubectl {}", args.join(" "));
    tokio::task::spawn_blocking(move || {
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn kubectl (is it installed?)");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes())
                .expect("write kubectl stdin");
        }
        let out_pipe = child.stdout.take().unwrap();
        let err_pipe = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn(move || read_all(out_pipe));
        let err_reader = std::thread::spawn(move || read_all(err_pipe));
        let deadline = Instant::now() + Duration::from_secs(90);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait kubectl") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{shown} did not finish within 90s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = KubectlOutput {
            code: status.code().unwrap_or(-1),
            stdout: out_reader.join().unwrap(),
            stderr: err_reader.join().unwrap(),
            command: shown,
        };
        eprintln!(
            "$ {} -> {}\n{}{}",
            out.command, out.code, out.stdout, out.stderr
        );
        out
    })
    .await
    .expect("kubectl task")
}

pub fn gitrepo_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "GitRepository"),
        "gitrepositories",
    )
}

/// A GitRepository object as a user would write it.
pub fn gitrepo(name: &str, url: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": name},
        "spec": {"interval": "1m", "url": url, "ref": {"branch": "main"}},
    }))
    .unwrap()
}

pub fn flux_crd_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(FLUX_CRDS)
        .unwrap_or_else(|e| panic!("read {FLUX_CRDS}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no Flux CRDs in {FLUX_CRDS}");
    files
}

pub fn load_crd(path: &Path) -> CustomResourceDefinition {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.trim_start_matches("---\n");
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

pub fn gitrepo_crd_path() -> PathBuf {
    Path::new(FLUX_CRDS).join("source.toolkit.fluxcd.io_gitrepositories.yaml")
}

/// Poll `f` every 50 ms until it yields `Some`, panicking after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read_all(mut r: impl std::io::Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

#[derive(Debug)]
pub struct KubectlOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub command: String,
}

impl KubectlOutput {
    /// Assert success and return stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "`{}` failed:\nstdout: {}\nstderr: {}",
            self.command, self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Assert failure and return stderr.
    #[track_caller]
    pub fn err(&self) -> &str {
        assert_ne!(
            self.code, 0,
            "`{}` unexpectedly succeeded:\nstdout: {}",
            self.command, self.stdout
        );
        &self.stderr
    }

    /// Parse stdout as JSON (after asserting success).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok()).expect("kubectl printed JSON")
    }

    /// Parse stdout as a kubectl table: header + rows, cells split on 2+ spaces.
    #[track_caller]
    pub fn table(&self) -> Vec<Vec<String>> {
        let t = parse_table(self.ok());
        assert!(
            !t.is_empty(),
            "`{}` printed no table (stderr: {})",
            self.command,
            self.stderr
        );
        t
    }
}

pub fn parse_table(text: &str) -> Vec<Vec<String>> {
    let sep = regex::Regex::new(r"\s{2,}").unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            sep.split(l.trim_end())
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// Find the row whose first cells equal `prefix`.
pub fn row<'a>(table: &'a [Vec<String>], prefix: &[&str]) -> &'a Vec<String> {
    table
        .iter()
        .find(|r| r.len() >= prefix.len() && r.iter().zip(prefix).all(|(a, b)| a == b))
        .unwrap_or_else(|| panic!("no row starting with {prefix:?} in {table:#?}"))
}

/// A running `kubectl` whose stdout lines are streamed; killed on drop.
pub struct KubectlStream {
    child: Child,
    rx: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl KubectlStream {
    /// Next stdout line, or None if kubectl exited / nothing arrived in time.
    pub async fn next_line(&mut self, timeout: Duration) -> Option<String> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Read lines until one satisfies `pred`; panics on timeout. Returns the skipped lines too.
    pub async fn wait_for_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (String, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left).await {
                Some(line) if pred(&line) => return (line, skipped),
                Some(line) => skipped.push(line),
                None => {
                    panic!("no kubectl line matching {what} within {timeout:?}; saw {skipped:#?}")
                }
            }
        }
    }
}

impl KubectlStream {
    /// Wait (polling, up to `timeout`) for kubectl to exit; returns its exit code and
    /// every line it printed after those already read.
    pub async fn finish(mut self, timeout: Duration) -> (i32, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let code = loop {
            if let Some(status) = self.child.try_wait().expect("wait kubectl") {
                break status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                panic!("kubectl did not exit within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut rest = Vec::new();
        while let Some(line) = self.next_line(Duration::from_secs(5)).await {
            rest.push(line);
        }
        (code, rest)
    }
}

impl Drop for KubectlStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct RawResponse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub text: String,
}

impl RawResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text))
    }
}

pub async fn raw_request(
    client: &kube::Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content_type: Option<&str>,
    body: Option<&Value>,
) -> RawResponse {
    let mut req = hyper::Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let req = req.body(kube::client::Body::from(bytes)).unwrap();
    let resp = client.send(req).await.expect("raw request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect_bytes().await.expect("body");
    RawResponse {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Parse a resourceVersion the way clients must not (but the emulator's are numeric,
/// as etcd revisions are): used to check the global counter's ordering.
#[track_caller]
pub fn rv(v: Option<&String>) -> u64 {
    v.expect("resourceVersion set")
        .parse()
        .expect("numeric resourceVersion")
}

/// Unwrap a kube-rs API error, returning its Status.
#[track_caller]
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

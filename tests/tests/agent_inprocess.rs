//! The agent run in-process against the Kubernetes API emulator and a scripted data plane:
//! applying, rejecting, generated keys, status reporting, and that outages and partial listings
//! delete nothing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use base64::Engine;
use fluxconfig_agent::config::AgentConfig;
use fluxconfig_agent::token::TokenSource;
use fluxconfig_api::dataplane::{ClusterRef, ClusterType};
use fluxconfig_api::FluxConfig;
use fluxconfig_testbed::apiserver;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    Unavailable,
}

struct Dp {
    version: Mutex<u64>,
    body: Mutex<Value>,
    mode: Mutex<Mode>,
    polls: AtomicUsize,
    statuses: Mutex<Vec<(String, Value, Instant)>>,
    heartbeats: Mutex<Vec<Value>>,
    auth: Mutex<Vec<String>>,
}

type Shared = Arc<Dp>;

impl Dp {
    fn set_listing(&self, body: Value) {
        *self.body.lock().unwrap() = body;
        *self.version.lock().unwrap() += 1;
    }

    fn statuses_of(&self, name: &str) -> Vec<(Value, Instant)> {
        self.statuses
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, v, t)| (v.clone(), *t))
            .collect()
    }
}

async fn list(State(dp): State<Shared>, headers: HeaderMap) -> Response {
    dp.polls.fetch_add(1, Ordering::SeqCst);
    if let Some(a) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        dp.auth.lock().unwrap().push(a.to_string());
    }
    if *dp.mode.lock().unwrap() == Mode::Unavailable {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "0")],
            axum::Json(json!({"error": {"code": "Unavailable", "message": "down"}})),
        )
            .into_response();
    }
    let etag = format!("\"{}\"", *dp.version.lock().unwrap());
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let body = dp.body.lock().unwrap().clone();
    ([("etag", etag)], axum::Json(body)).into_response()
}

async fn status(
    State(dp): State<Shared>,
    Path(params): Path<HashMap<String, String>>,
    axum::Json(body): axum::Json<Value>,
) -> StatusCode {
    let name = params.get("name").cloned().unwrap_or_default();
    dp.statuses
        .lock()
        .unwrap()
        .push((name, body, Instant::now()));
    StatusCode::NO_CONTENT
}

async fn heartbeat(
    State(dp): State<Shared>,
    Query(_q): Query<HashMap<String, String>>,
    axum::Json(body): axum::Json<Value>,
) -> StatusCode {
    dp.heartbeats.lock().unwrap().push(body);
    StatusCode::NO_CONTENT
}

fn cluster() -> ClusterRef {
    ClusterRef {
        subscription_id: "sub".into(),
        resource_group: "rg".into(),
        cluster_type: ClusterType::ConnectedClusters,
        cluster_name: "arc".into(),
    }
}

async fn start_dataplane(dp: Shared) -> String {
    let c = cluster();
    let router = Router::new()
        .route(&c.configurations_path(), get(list))
        .route(
            &format!("{}/fluxConfigurations/{{name}}/status", c.path()),
            put(status),
        )
        .route(&c.heartbeat_path(), put(heartbeat))
        .with_state(dp);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn git_item(name: &str, url: &str) -> Value {
    json!({
        "name": name,
        "properties": {
            "namespace": "team-a",
            "scope": "cluster",
            "sourceKind": "GitRepository",
            "gitRepository": {"url": url, "repositoryRef": {"branch": "main"}},
            "kustomizations": {"infra": {"path": "./infrastructure"}},
        }
    })
}

fn listing(items: Vec<Value>) -> Value {
    let count = items.len();
    json!({"value": items, "count": count})
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_syncs_reports_and_never_deletes_on_failure() {
    let server = apiserver::start(apiserver::Config::default())
        .await
        .expect("emulator");
    let kube = server.client().await.expect("kube client");
    let crds: Api<CustomResourceDefinition> = Api::all(kube.clone());
    crds.create(&PostParams::default(), &FluxConfig::crd())
        .await
        .expect("install CRD");
    eventually("CRD established", || {
        let crds = crds.clone();
        async move {
            let crd = crds.get("fluxconfigs.clusterconfig.azure.com").await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;

    let dp: Shared = Arc::new(Dp {
        version: Mutex::new(1),
        body: Mutex::new(Value::Null),
        mode: Mutex::new(Mode::Normal),
        polls: AtomicUsize::new(0),
        statuses: Mutex::new(Vec::new()),
        heartbeats: Mutex::new(Vec::new()),
        auth: Mutex::new(Vec::new()),
    });
    let mut good = git_item("good", "https://github.com/org/repo");
    good["properties"]["gitRepository"]["httpsUser"] = json!("git");
    good["properties"]["configurationProtectedSettings"] =
        json!({"httpsKey": b64("pat-secret-value")});
    let ssh = git_item("sshcfg", "ssh://git@github.com/org/repo");
    let bad = git_item("bad", "ftp://example.com/repo");
    dp.set_listing(listing(vec![good.clone(), ssh.clone(), bad]));
    let base = start_dataplane(dp.clone()).await;

    let mut config = AgentConfig::new(
        base.parse().unwrap(),
        cluster(),
        TokenSource::Static("dp-token".into()),
    );
    config.poll_interval = Duration::from_millis(200);
    config.long_poll = None;
    config.report_interval = Duration::from_secs(1);
    config.max_backoff = Duration::from_millis(500);
    let metrics_port = free_port();
    config.metrics_addr = ([127, 0, 0, 1], metrics_port).into();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(fluxconfig_agent::run::run(kube.clone(), config, stop_rx));

    let configs: Api<FluxConfig> = Api::namespaced(kube.clone(), "team-a");
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), "team-a");

    // The valid configurations land, in a namespace the agent created.
    let fc = eventually("FluxConfig good", || {
        let configs = configs.clone();
        async move { configs.get_opt("good").await.ok().flatten() }
    })
    .await;
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    assert!(namespaces.get_opt("team-a").await.unwrap().is_some());
    assert_eq!(
        fc.spec.protected_settings_secret_ref.as_deref(),
        Some("good-protected-settings")
    );
    assert_eq!(
        fc.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "fluxconfig-agent"
    );
    let hash = fc.metadata.annotations.as_ref().unwrap()
        ["clusterconfig.azure.com/protected-settings-hash"]
        .clone();
    assert_eq!(hash.len(), 64);
    assert!(!serde_json::to_string(&fc)
        .unwrap()
        .contains("pat-secret-value"));
    let secret = eventually("Secret with owner", || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get_opt("good-protected-settings").await.ok()??;
            s.metadata.owner_references.as_ref()?.first()?;
            Some(s)
        }
    })
    .await;
    assert_eq!(
        secret.data.as_ref().unwrap()["httpsKey"].0,
        b"pat-secret-value".to_vec()
    );
    assert_eq!(
        secret.metadata.owner_references.as_ref().unwrap()[0].uid,
        fc.metadata.uid.clone().unwrap()
    );

    // The ssh configuration got a generated key, and its public half in the status.
    let public_key = eventually("repositoryPublicKey", || {
        let configs = configs.clone();
        async move {
            configs
                .get_opt("sshcfg")
                .await
                .ok()??
                .status?
                .repository_public_key
        }
    })
    .await;
    assert!(public_key.starts_with("ssh-ed25519 "), "{public_key}");
    let ssh_secret = secrets.get("sshcfg-protected-settings").await.unwrap();
    let private = String::from_utf8(ssh_secret.data.unwrap()["sshPrivateKey"].0.clone()).unwrap();
    assert_eq!(
        fluxconfig_agent::sshkey::public_from_private(&private).unwrap(),
        public_key
    );

    // The invalid one is reported Failed with the field-named error, and never written.
    let (failed, _) = eventually("Failed report for bad", || {
        let dp = dp.clone();
        async move { dp.statuses_of("bad").into_iter().next() }
    })
    .await;
    assert_eq!(failed["provisioningState"], "Failed");
    assert_eq!(failed["complianceState"], "Unknown");
    assert!(failed["errorMessage"]
        .as_str()
        .unwrap()
        .contains("spec.gitRepository.url"));
    assert!(configs.get_opt("bad").await.unwrap().is_none());

    // The controller writes a status; the agent reports it within a second.
    let controller = PatchParams::apply("fluxconfig-controller").force();
    for name in ["good", "sshcfg"] {
        configs
            .patch_status(
                name,
                &controller,
                &Patch::Apply(json!({
                    "apiVersion": "clusterconfig.azure.com/v1beta1",
                    "kind": "FluxConfig",
                    "status": {
                        "complianceState": "Compliant",
                        "provisioningState": "Succeeded",
                        "statusUpdatedAt": "2026-01-01T00:00:00Z",
                    },
                })),
            )
            .await
            .unwrap();
    }
    let written = Instant::now();
    let (reported, at) = eventually("Compliant report for good", || {
        let dp = dp.clone();
        async move {
            dp.statuses_of("good")
                .into_iter()
                .find(|(v, _)| v["complianceState"] == "Compliant")
        }
    })
    .await;
    assert!(
        at.duration_since(written) < Duration::from_millis(1500),
        "reported after {:?}",
        at.duration_since(written)
    );
    assert_eq!(reported["provisioningState"], "Succeeded");
    let (ssh_report, _) = eventually("Compliant report for sshcfg", || {
        let dp = dp.clone();
        async move {
            dp.statuses_of("sshcfg")
                .into_iter()
                .find(|(v, _)| v["complianceState"] == "Compliant")
        }
    })
    .await;
    // The controller's status write did not take the agent's field away.
    assert_eq!(ssh_report["repositoryPublicKey"], public_key.as_str());

    // A changed listing keeps the generated key.
    let mut ssh2 = ssh.clone();
    ssh2["properties"]["suspend"] = json!(true);
    dp.set_listing(listing(vec![good.clone(), ssh2]));
    eventually("sshcfg suspended", || {
        let configs = configs.clone();
        async move {
            configs
                .get_opt("sshcfg")
                .await
                .ok()??
                .spec
                .suspend
                .filter(|s| *s)
        }
    })
    .await;
    let fc = configs.get("sshcfg").await.unwrap();
    assert_eq!(
        fc.status.unwrap().repository_public_key.as_deref(),
        Some(public_key.as_str())
    );

    // A change of only a protected value reaches the Secret and changes the hash annotation.
    good["properties"]["configurationProtectedSettings"] = json!({"httpsKey": b64("pat-2")});
    dp.set_listing(listing(vec![good.clone(), ssh.clone()]));
    eventually("new httpsKey", || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get_opt("good-protected-settings").await.ok()??;
            (s.data?.get("httpsKey")?.0 == b"pat-2".to_vec()).then_some(())
        }
    })
    .await;
    // The Secret is written before the FluxConfig, so the annotation follows shortly after.
    eventually("hash annotation changed", || {
        let configs = configs.clone();
        let hash = hash.clone();
        async move {
            let fc = configs.get_opt("good").await.ok()??;
            let now = fc
                .metadata
                .annotations?
                .get("clusterconfig.azure.com/protected-settings-hash")?
                .clone();
            (now != hash).then_some(())
        }
    })
    .await;

    // The user supplies a key: the generated one is replaced and the public key withdrawn.
    let own = fluxconfig_agent::sshkey::generate("user").unwrap();
    let mut ssh3 = ssh.clone();
    ssh3["properties"]["configurationProtectedSettings"] =
        json!({"sshPrivateKey": b64(&own.private_openssh)});
    dp.set_listing(listing(vec![good.clone(), ssh3]));
    eventually("repositoryPublicKey withdrawn", || {
        let configs = configs.clone();
        async move {
            let fc = configs.get_opt("sshcfg").await.ok()??;
            let status = fc.status?;
            (status.repository_public_key.is_none() && status.compliance_state.is_some())
                .then_some(())
        }
    })
    .await;
    let ssh_secret = secrets.get("sshcfg-protected-settings").await.unwrap();
    assert!(!ssh_secret
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key("clusterconfig.azure.com/generated-ssh-key"));
    assert_eq!(
        ssh_secret.data.unwrap()["sshPrivateKey"].0,
        own.private_openssh.as_bytes().to_vec()
    );

    // Outage: the data plane is down while the listing would be empty. Nothing is deleted.
    *dp.mode.lock().unwrap() = Mode::Unavailable;
    dp.set_listing(listing(vec![]));
    let before = dp.polls.load(Ordering::SeqCst);
    eventually("polls during the outage", || {
        let dp = dp.clone();
        async move { (dp.polls.load(Ordering::SeqCst) >= before + 3).then_some(()) }
    })
    .await;
    assert!(configs.get_opt("good").await.unwrap().is_some());

    // Partial listing: nothing is deleted either.
    *dp.mode.lock().unwrap() = Mode::Normal;
    dp.set_listing(json!({"value": [], "count": 2}));
    let before = dp.polls.load(Ordering::SeqCst);
    eventually("polls of the partial listing", || {
        let dp = dp.clone();
        async move { (dp.polls.load(Ordering::SeqCst) >= before + 3).then_some(()) }
    })
    .await;
    assert!(configs.get_opt("good").await.unwrap().is_some());
    assert!(configs.get_opt("sshcfg").await.unwrap().is_some());

    // A complete listing without them removes both, and their Secrets.
    dp.set_listing(listing(vec![]));
    eventually("configurations deleted", || {
        let configs = configs.clone();
        async move {
            let good = configs.get_opt("good").await.ok()?;
            let ssh = configs.get_opt("sshcfg").await.ok()?;
            (good.is_none() && ssh.is_none()).then_some(())
        }
    })
    .await;
    eventually("secrets deleted", || {
        let secrets = secrets.clone();
        async move {
            let a = secrets.get_opt("good-protected-settings").await.ok()?;
            let b = secrets.get_opt("sshcfg-protected-settings").await.ok()?;
            (a.is_none() && b.is_none()).then_some(())
        }
    })
    .await;

    // Heartbeats flow, endpoints answer, the token went only into the header.
    eventually("a heartbeat", || {
        let dp = dp.clone();
        async move { dp.heartbeats.lock().unwrap().last().cloned() }
    })
    .await;
    assert!(dp
        .auth
        .lock()
        .unwrap()
        .iter()
        .all(|a| a == "Bearer dp-token"));
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("fluxconfig_agent_polls_total{result=\"partial\"}"));
    assert!(!metrics.contains("fluxconfig_agent_polls_total{result=\"partial\"} 0"));
    assert!(!metrics.contains("fluxconfig_agent_polls_total{result=\"error\"} 0"));
    assert!(!metrics.contains("dp-token"));
    let ready = reqwest::get(format!("http://127.0.0.1:{metrics_port}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK);

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("agent stops")
        .expect("join")
        .expect("agent ran cleanly");
    server.shutdown().await;
}

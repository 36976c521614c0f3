//! A real Prometheus (Debian's `/usr/bin/prometheus`) scrapes the controller and the agent
//! while they run the Azure tutorial against the testbed, and its HTTP API shows both targets up
//! and the key metrics at the values the scenario implies. `promtool check metrics` lints both
//! expositions.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fluxconfig_testbed::system::{Options, Running};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(40);
const TOKEN: &str = "s3cr3t-cluster-token-for-prometheus";

fn prometheus_bin() -> String {
    std::env::var("PROMETHEUS").unwrap_or_else(|_| "/usr/bin/prometheus".into())
}

fn promtool_bin() -> String {
    std::env::var("PROMTOOL").unwrap_or_else(|_| "/usr/bin/promtool".into())
}

/// A loopback address nobody listens on right now.
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for: {what} (last: {last})"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Prometheus server; killed when dropped, so a failing test leaves no process behind.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, controller: SocketAddr, agent: SocketAddr) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n\
                 \x20 - job_name: fluxconfig-controller\n    static_configs:\n      - targets: [\"{controller}\"]\n\
                 \x20 - job_name: fluxconfig-agent\n    static_configs:\n      - targets: [\"{agent}\"]\n"
            ),
        )
        .unwrap();
        let listen = free_addr();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", prometheus_bin()));
        Prometheus {
            child,
            url: format!("http://{listen}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/<path>` → the `data` member of a successful answer.
    async fn api(&self, http: &reqwest::Client, path: &str) -> Result<Value, String> {
        let resp = http
            .get(format!("{}/api/v1/{path}", self.url))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(body.to_string());
        }
        Ok(body["data"].clone())
    }

    /// An instant query's samples as (labels, value).
    async fn query(&self, http: &reqwest::Client, expr: &str) -> Result<Vec<(Value, f64)>, String> {
        let q: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        let data = self.api(http, &format!("query?query={q}")).await?;
        Ok(data["result"]
            .as_array()
            .ok_or_else(|| data.to_string())?
            .iter()
            .map(|s| {
                let v = s["value"][1]
                    .as_str()
                    .unwrap_or("NaN")
                    .parse()
                    .unwrap_or(f64::NAN);
                (s["metric"].clone(), v)
            })
            .collect())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `expr` yields exactly one sample for which `ok` holds, and returns its value.
async fn expect_sample(
    prom: &Prometheus,
    http: &reqwest::Client,
    expr: &str,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    eventually(expr, || async {
        let samples = prom.query(http, expr).await?;
        match samples.as_slice() {
            [(_, v)] if ok(*v) => Ok(*v),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// `promtool check metrics` on one exposition: exit 0 and nothing to say.
fn promtool_check(name: &str, exposition: &str) {
    let mut child = Command::new(promtool_bin())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", promtool_bin()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics on the {name} exposition ({}):\n{said}",
        out.status
    );
}

#[test]
fn promtool_reports_a_bad_exposition() {
    // Guards the lint assertion below: promtool must really complain about a counter without
    // the `_total` suffix, or a clean result would prove nothing.
    let result = std::panic::catch_unwind(|| {
        promtool_check(
            "bad",
            "# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n",
        )
    });
    assert!(
        result.is_err(),
        "promtool accepted a counter without _total"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_both_binaries_through_the_tutorial() {
    let controller_metrics = free_addr();
    let agent_metrics = free_addr();
    let system = Running::start(
        Options {
            token: TOKEN.into(),
            ..Options::default()
        },
        |controller| controller.metrics_addr = controller_metrics,
        |agent| {
            agent.metrics_addr = agent_metrics;
            agent.long_poll = Some(Duration::from_secs(10));
            agent.report_interval = Duration::from_secs(5);
        },
    )
    .await
    .expect("system");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let prom = Prometheus::start(&system.dir, controller_metrics, agent_metrics);
    system.create_tutorial().await.expect("flux create");
    eventually("show reports Compliant", || async {
        let shown = system.az(&["show", "-n", "cluster-config"]).await;
        match shown {
            Ok(Some(v)) if v["complianceState"] == "Compliant" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let log = prom.log();
    let targets = eventually("both targets up", || async {
        let data = prom
            .api(&http, "targets")
            .await
            .map_err(|e| format!("{e}\n{}", prom.log()))?;
        let active = data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let up: Vec<String> = active
            .iter()
            .filter(|t| t["health"] == "up")
            .map(|t| t["labels"]["job"].as_str().unwrap_or_default().to_string())
            .collect();
        if up.len() == 2 {
            Ok(active)
        } else {
            Err(format!("{active:?}"))
        }
    })
    .await;
    let mut jobs: Vec<&str> = targets
        .iter()
        .map(|t| t["labels"]["job"].as_str().unwrap())
        .collect();
    jobs.sort();
    assert_eq!(jobs, ["fluxconfig-agent", "fluxconfig-controller"], "{log}");
    for (t, addr) in [
        ("fluxconfig-controller", controller_metrics),
        ("fluxconfig-agent", agent_metrics),
    ] {
        let target = targets.iter().find(|x| x["labels"]["job"] == t).unwrap();
        assert_eq!(target["scrapeUrl"], format!("http://{addr}/metrics"));
        expect_sample(&prom, &http, &format!("up{{job=\"{t}\"}}"), |v| v == 1.0).await;
    }

    // The controller: one configuration, Compliant; it reconciled and leads (no election).
    expect_sample(
        &prom,
        &http,
        "fluxconfig_controller_configurations{compliance_state=\"Compliant\"}",
        |v| v == 1.0,
    )
    .await;
    expect_sample(
        &prom,
        &http,
        "sum(fluxconfig_controller_configurations{compliance_state!=\"Compliant\"})",
        |v| v == 0.0,
    )
    .await;
    expect_sample(
        &prom,
        &http,
        "fluxconfig_controller_reconciles_total{result=\"success\"}",
        |v| v > 0.0,
    )
    .await;
    expect_sample(&prom, &http, "fluxconfig_controller_leader", |v| v == 1.0).await;
    expect_sample(
        &prom,
        &http,
        "sum(fluxconfig_controller_api_writes_total)",
        |v| v > 0.0,
    )
    .await;

    // The agent: the same configuration, Compliant; it wrote it, reported it, and synced
    // recently enough that the documented "not syncing" alert stays quiet.
    expect_sample(
        &prom,
        &http,
        "fluxconfig_agent_configurations{state=\"Compliant\"}",
        |v| v == 1.0,
    )
    .await;
    expect_sample(
        &prom,
        &http,
        "sum(fluxconfig_agent_configurations{state!=\"Compliant\"})",
        |v| v == 0.0,
    )
    .await;
    expect_sample(
        &prom,
        &http,
        "fluxconfig_agent_reports_total{kind=\"status\",result=\"sent\"}",
        |v| v > 0.0,
    )
    .await;
    expect_sample(
        &prom,
        &http,
        "sum(fluxconfig_agent_reports_total{result=\"failed\"})",
        |v| v == 0.0,
    )
    .await;
    expect_sample(
        &prom,
        &http,
        "sum(fluxconfig_agent_cluster_writes_total{action=\"apply\",result=\"ok\"})",
        |v| v >= 1.0,
    )
    .await;
    expect_sample(
        &prom,
        &http,
        "sum(fluxconfig_agent_polls_total{result=~\"ok|not_modified\"})",
        |v| v > 0.0,
    )
    .await;
    expect_sample(
        &prom,
        &http,
        "time() - fluxconfig_agent_last_successful_sync_timestamp_seconds",
        |v| (0.0..60.0).contains(&v),
    )
    .await;
    let alert = prom
        .query(
            &http,
            "time() - fluxconfig_agent_last_successful_sync_timestamp_seconds > 600",
        )
        .await
        .unwrap();
    assert!(
        alert.is_empty(),
        "the not-syncing alert would fire: {alert:?}"
    );

    for (name, addr) in [("controller", controller_metrics), ("agent", agent_metrics)] {
        let text = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("# TYPE"), "{name}: {text}");
        promtool_check(name, &text);
    }

    drop(prom);
    system.shutdown().await.expect("clean stop");
}

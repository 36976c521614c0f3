//! The agent's acceptance criteria for a hostile network, against the whole in-process system
//! (API emulator, Flux simulator, controller, TLS data plane with its own CA):
//! - a data-plane outage changes nothing in the cluster, and the backlog arrives within one
//!   backoff cap once it is over;
//! - a token rotated on disk is used by the next request;
//! - an agent killed mid-sync leaves nothing behind, and a new one converges exactly;
//! - through a real forward proxy (Debian's tinyproxy, with Basic credentials) everything works,
//!   and with the proxy gone the agent backs off and recovers when it returns.

mod common_system;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common_system::{cluster, eventually, within, System, Tinyproxy, DEADLINE};
use fluxconfig_agent::config::ProxyUrl;
use fluxconfig_agent::token::TokenSource;
use fluxconfig_api::ProvisioningState;
use fluxconfig_testbed::dataplane::Outage;
use kube::ResourceExt;

/// Slack on top of the backoff cap for the listing, the writes and this test's polling, on a
/// shared two-core machine.
const MARGIN: Duration = Duration::from_secs(2);

/// Sum of `fluxconfig_agent_cluster_writes_total` over all labels: any write the agent made.
async fn writes(agent: &common_system::Agent) -> f64 {
    let text = agent.metrics().await.unwrap_or_default();
    common_system::metric(&text, "fluxconfig_agent_cluster_writes_total", &[]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_changes_nothing_and_the_backlog_arrives_within_one_backoff_cap() {
    let system = System::start().await;
    let mut config = system.agent_config();
    config.max_backoff = Duration::from_secs(3);
    let cap = config.max_backoff;
    let agent = system.start_agent(config).await;
    for name in ["keep", "drop", "change"] {
        system.create_simple(name, "team-a").await;
    }
    eventually("three FluxConfigs applied and reported", || async {
        system.flux_configs().await.len() == 3
            && ["keep", "drop", "change"]
                .iter()
                .all(|n| system.dataplane.status(&cluster(), n).is_some())
    })
    .await;
    let before = system.snapshot().await;
    let faults = system.dataplane.faults();

    // A refusing data plane also drops the listing the agent holds open, so no answer to a
    // request from before the outage can slip through.
    let errors = agent.polls("error").await;
    faults.set_outage(Some(Outage::Refuse));
    eventually("the agent's polls fail", || async {
        agent.polls("error").await > errors
    })
    .await;
    // 503s from here on, so the configuration can be changed while the agent is locked out.
    faults.set_outage(Some(Outage::Unavailable));
    let writes_before = writes(&agent).await;
    system.create_simple("new", "team-b").await;
    system
        .az(&["delete", "-n", "drop", "--yes"])
        .await
        .expect("flux delete");
    system
        .az(&[
            "update",
            "-n",
            "change",
            "--kustomization",
            "name=infra",
            "path=./infrastructure",
            "prune=true",
        ])
        .await
        .expect("flux update");

    let injected = system.dataplane.stats().faults_injected;
    within(
        "three more failed polls while nothing in the cluster changes",
        DEADLINE,
        || async {
            assert_eq!(
                system.snapshot().await,
                before,
                "the cluster changed during the outage"
            );
            assert_eq!(writes(&agent).await, writes_before, "the agent wrote");
            system.dataplane.stats().faults_injected >= injected + 3
        },
    )
    .await;

    faults.set_outage(None);
    let took = within(
        "the backlog arrives within one backoff cap",
        cap + MARGIN,
        || async {
            let configs = system.flux_configs().await;
            let live = |name: &str| {
                configs
                    .iter()
                    .find(|fc| fc.name_any() == name && fc.metadata.deletion_timestamp.is_none())
            };
            let changed = live("change").is_some_and(|fc| {
                fc.spec
                    .kustomizations
                    .get("infra")
                    .is_some_and(|k| k.prune == Some(true))
            });
            live("new").is_some_and(|fc| fc.namespace().as_deref() == Some("team-b"))
                && live("drop").is_none()
                && live("keep").is_some()
                && changed
        },
    )
    .await;
    println!("backlog applied {took:?} after the outage (cap {cap:?})");
    let after = system.snapshot().await;
    assert_eq!(
        after.get("team-a/keep"),
        before.get("team-a/keep"),
        "an unchanged configuration was rewritten"
    );
    agent.shutdown().await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_rotated_on_disk_is_used_by_the_next_request() {
    let mut system = System::start().await;
    let token_file = system.dir.join("token");
    std::fs::write(&token_file, format!("{}\n", system.token)).expect("token file");
    let mut config = system.agent_config();
    config.token = TokenSource::File(token_file.clone());
    let cap = config.max_backoff;
    let agent = system.start_agent(config).await;
    system.create_simple("before", "team-a").await;
    eventually("first configuration applied", || async {
        system.flux_configs().await.len() == 1
    })
    .await;

    // From now on only the new token is accepted; the agent still has the old one.
    let rotated = "rotated-token-2-0f9e8d7c6b5a";
    system.restart_dataplane(rotated).await;
    system.create_simple("after", "team-a").await;
    let errors = agent.polls("error").await;
    within(
        "two rejected polls with the old token",
        DEADLINE,
        || async {
            assert_eq!(
                system.flux_configs().await.len(),
                1,
                "a configuration arrived without the new token"
            );
            agent.polls("error").await >= errors + 2.0
        },
    )
    .await;
    let listings = system.dataplane.stats().listings;

    std::fs::write(&token_file, format!("{rotated}\n")).expect("rotate token");
    let took = within(
        "the configuration created after the rotation arrives",
        cap + MARGIN,
        || async {
            system
                .flux_configs()
                .await
                .iter()
                .any(|fc| fc.name_any() == "after")
        },
    )
    .await;
    println!("new token used {took:?} after the rewrite (cap {cap:?})");
    assert!(
        system.dataplane.stats().listings > listings,
        "the data plane served a listing to the new token"
    );
    eventually("the new configuration is reported", || async {
        system.dataplane.status(&cluster(), "after").is_some()
    })
    .await;
    agent.shutdown().await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_killed_mid_sync_leaves_nothing_running_and_a_restart_converges() {
    const COUNT: usize = 36;
    let system = System::start().await;
    let mut desired = BTreeMap::new();
    for i in 0..COUNT {
        let name = format!("cfg-{i:02}");
        let namespace = format!("team-{}", i % 4);
        system
            .az(&[
                "create",
                "-n",
                &name,
                "--namespace",
                &namespace,
                "-u",
                &system.repo.url,
                "--branch",
                "main",
            ])
            .await
            .unwrap_or_else(|e| panic!("flux create {name}: {e}"));
        desired.insert(name, namespace);
    }

    let first = system.start_agent(system.agent_config()).await;
    let seen = within("the first agent starts writing", DEADLINE, || async {
        !system.flux_configs().await.is_empty()
    })
    .await;
    let addr = first.metrics_addr;
    first.kill().await;
    let written = system.flux_configs().await.len();
    println!("aborted after {seen:?} with {written}/{COUNT} FluxConfigs written");
    // Everything of the agent lived in its task: its metrics server is gone with it.
    eventually("the killed agent's metrics server is gone", || async {
        common_system::scrape(addr).await.is_none()
    })
    .await;

    let second = system.start_agent(system.agent_config()).await;
    eventually("exactly the desired FluxConfigs, all reported", || async {
        let configs = system.flux_configs().await;
        let actual: BTreeMap<String, String> = configs
            .iter()
            .map(|fc| (fc.name_any(), fc.namespace().unwrap_or_default()))
            .collect();
        configs.len() == COUNT
            && actual == desired
            && desired.keys().all(|n| {
                system
                    .dataplane
                    .status(&cluster(), n)
                    .is_some_and(|s| s.provisioning_state == Some(ProvisioningState::Succeeded))
            })
    })
    .await;
    let configs = system.flux_configs().await;
    let names: BTreeSet<String> = configs.iter().map(|fc| fc.name_any()).collect();
    assert_eq!(names.len(), configs.len(), "duplicates: {names:?}");
    second.shutdown().await;

    // A restart over a converged cluster reads, and writes nothing.
    let third = system.start_agent(system.agent_config()).await;
    eventually("the restarted agent completed a sync", || async {
        let text = third.metrics().await.unwrap_or_default();
        common_system::metric(
            &text,
            "fluxconfig_agent_last_successful_sync_timestamp_seconds",
            &[],
        )
        .is_some_and(|t| t > 0.0)
    })
    .await;
    assert_eq!(
        writes(&third).await,
        0.0,
        "the restarted agent rewrote configurations"
    );
    third.shutdown().await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_tinyproxy_with_credentials_and_recovers_when_the_proxy_returns() {
    if !std::path::Path::new(common_system::TINYPROXY).exists() {
        panic!(
            "{} is not installed (apt-get install tinyproxy)",
            common_system::TINYPROXY
        );
    }
    let system = System::start().await;
    let dp_port = system.dataplane.addr().port();
    let proxy_dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = Tinyproxy::start(proxy_dir.path(), 0, dp_port, "agent", "pr0xy-pa55").await;

    let mut config = system.agent_config();
    config.proxy = Some(
        ProxyUrl::parse(&format!("http://agent:pr0xy-pa55@127.0.0.1:{}", proxy.port))
            .expect("proxy URL"),
    );
    let cap = config.max_backoff;
    let agent = system.start_agent(config).await;
    system.create_simple("via-proxy", "team-a").await;
    eventually("Compliant reported through the proxy", || async {
        system
            .show("via-proxy")
            .await
            .is_some_and(|v| v["complianceState"] == "Compliant")
    })
    .await;
    let log = proxy.log_text();
    assert!(
        log.contains(&format!("CONNECT 127.0.0.1:{dp_port}")),
        "no CONNECT to the data plane in tinyproxy's log:\n{log}"
    );

    let before = system.snapshot().await;
    let errors = agent.polls("error").await;
    proxy.stop();
    system.create_simple("while-down", "team-a").await;
    within("polls fail with the proxy down", DEADLINE, || async {
        assert_eq!(
            system.snapshot().await,
            before,
            "the cluster changed while the proxy was down"
        );
        agent.polls("error").await >= errors + 2.0
    })
    .await;

    proxy.restart().await;
    let took = within(
        "the configuration created meanwhile arrives",
        cap + MARGIN,
        || async {
            system
                .flux_configs()
                .await
                .iter()
                .any(|fc| fc.name_any() == "while-down")
        },
    )
    .await;
    println!("recovered {took:?} after the proxy returned (cap {cap:?})");
    eventually(
        "the new configuration is reported through the proxy",
        || async {
            system
                .show("while-down")
                .await
                .is_some_and(|v| v["complianceState"] == "Compliant")
        },
    )
    .await;
    agent.shutdown().await;
    drop(proxy);
    system.shutdown().await;
}

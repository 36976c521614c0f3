//! Data-plane outage: once the cluster has converged, the data plane goes down (503 with
//! `Retry-After`, then refused connections) while configurations are changed, deleted and
//! added behind it. During the outage no FluxConfig may be created, modified or deleted (uid,
//! generation and spec are watched for the whole window, and so are the Flux objects with
//! their owners and paths); once it is lifted the cluster converges on the new desired state.

mod fault_common;

use std::collections::BTreeSet;
use std::time::Duration;

use fault_common::{simple_properties, within, Bed};
use fluxconfig_testbed::dataplane::Outage;

/// How long the cluster is watched while the agent cannot reach the data plane.
const OUTAGE_WINDOW: Duration = Duration::from_secs(6);

/// The Flux objects: GitRepositories and Kustomizations by name with their owners, and each
/// Kustomization's path.
async fn flux_objects(bed: &Bed) -> impl PartialEq + std::fmt::Debug {
    let state = bed.observed_state().await;
    (state.git, state.kustomizations, state.ks_paths)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_changes_nothing_and_recovery_converges() {
    let bed = Bed::start(true).await;
    let controller = bed.start_controller();
    let agent = bed.start_agent(bed.agent_config());
    let mut desired: BTreeSet<String> = (0..8).map(|i| format!("out-{i}")).collect();
    for name in &desired {
        bed.put_simple(name).await;
    }
    bed.await_compliant(&desired, Duration::from_secs(90)).await;
    bed.await_exact(&desired, Duration::from_secs(30)).await;

    for (round, outage) in [Outage::Unavailable, Outage::Refuse]
        .into_iter()
        .enumerate()
    {
        let faults = bed.dataplane.faults();
        // Management calls still work during a 503 outage: change the desired state now, then
        // switch to the requested kind of outage for the observation window.
        // A long poll accepted before the outage would still be answered with the change:
        // refusing drops open connections, then every new request gets 503.
        faults.set_outage(Some(Outage::Refuse));
        let addr = bed.dataplane.addr();
        within("connections refused", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await;
        faults.set_outage(Some(Outage::Unavailable));
        let injected = bed.dataplane.stats().faults_injected;
        within(
            "the agent hits the outage",
            Duration::from_secs(30),
            || async { bed.dataplane.stats().faults_injected > injected },
        )
        .await;
        let frozen = bed.spec_snapshot().await;
        let frozen_flux = flux_objects(&bed).await;

        let changed = format!("out-{}", round);
        let mut props = simple_properties(&bed.repo.url);
        props["gitRepository"]["syncIntervalInSeconds"] = 300.into();
        bed.put(&changed, props).await;
        let removed = format!("out-{}", 4 + round);
        bed.delete(&removed).await;
        desired.remove(&removed);
        let added = format!("new-{round}");
        bed.put_simple(&added).await;
        desired.insert(added.clone());

        faults.set_outage(Some(outage));
        let started = tokio::time::Instant::now();
        while started.elapsed() < OUTAGE_WINDOW {
            let now = bed.spec_snapshot().await;
            assert_eq!(
                now, frozen,
                "{outage:?} outage: the cluster changed while the data plane was unreachable"
            );
            assert_eq!(
                flux_objects(&bed).await,
                frozen_flux,
                "{outage:?} outage: Flux objects changed while the data plane was unreachable"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        faults.set_outage(None);

        let took = bed.await_exact(&desired, Duration::from_secs(60)).await;
        within("the change is applied", Duration::from_secs(30), || async {
            bed.spec_snapshot()
                .await
                .get(&changed)
                .is_some_and(|(_, _, spec)| spec["gitRepository"]["syncIntervalInSeconds"] == 300)
        })
        .await;
        bed.await_compliant(&desired, Duration::from_secs(90)).await;
        let after = bed.spec_snapshot().await;
        for name in desired.iter().filter(|n| **n != changed && **n != added) {
            assert_eq!(
                after[name], frozen[name],
                "{name} was touched by the recovery"
            );
        }
        println!("{outage:?} outage: converged {took:?} after it was lifted");
    }

    agent.shutdown().await.expect("agent stops cleanly");
    controller
        .shutdown()
        .await
        .expect("controller stops cleanly");
    bed.shutdown().await;
}

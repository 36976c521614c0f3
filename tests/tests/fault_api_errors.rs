//! API error injection: with the emulator failing 5% of reads and writes with 500, 1% of
//! writes with 409 and dropping every watch every two seconds, `FAULT_CONFIGS` (default 50)
//! configurations created through the data plane all become Compliant, the cluster holds
//! exactly their FluxConfigs, GitRepositories and Kustomizations (no duplicate, every Flux
//! object owned by its living FluxConfig), and deleting half of them removes exactly their
//! objects and leaves the rest alone.

mod fault_common;

use std::collections::BTreeSet;
use std::time::Duration;

use fault_common::{env_usize, Bed};

const READS: [&str; 2] = ["get", "list"];
const WRITES: [&str; 4] = ["create", "update", "patch", "delete"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_configuration_converges_under_api_errors_and_watch_drops() {
    let n = env_usize("FAULT_CONFIGS", 50);
    let bed = Bed::start(true).await;
    let faults = bed.server.faults();
    for verb in READS.iter().chain(WRITES.iter()) {
        faults.set_error_rate(Some(verb), 500, 0.05);
    }
    for verb in WRITES {
        faults.set_error_rate(Some(verb), 409, 0.01);
    }
    faults.drop_watches_every(Some(Duration::from_secs(2)));

    let controller = bed.start_controller();
    let agent = bed.start_agent(bed.agent_config());
    let desired: BTreeSet<String> = (0..n).map(|i| format!("cfg-{i:04}")).collect();
    for name in &desired {
        bed.put_simple(name).await;
    }

    let took = bed
        .await_compliant(&desired, Duration::from_secs(180))
        .await;
    println!("{n} configurations Compliant under API faults in {took:?}");
    bed.await_exact(&desired, Duration::from_secs(60)).await;

    let before = bed.observed_state().await;
    let gone: BTreeSet<String> = desired.iter().step_by(2).cloned().collect();
    let kept: BTreeSet<String> = desired.difference(&gone).cloned().collect();
    for name in &gone {
        bed.delete(name).await;
    }
    let took = bed.await_exact(&kept, Duration::from_secs(120)).await;
    println!(
        "{} configurations removed under API faults in {took:?}",
        gone.len()
    );
    let after = bed.observed_state().await;
    for name in &kept {
        assert_eq!(
            before.configs[name].0, after.configs[name].0,
            "{name} was recreated"
        );
    }
    assert!(bed.all_compliant(&kept), "the kept ones stay Compliant");

    faults.clear();
    agent.shutdown().await.expect("agent stops cleanly");
    controller
        .shutdown()
        .await
        .expect("controller stops cleanly");
    bed.shutdown().await;
}

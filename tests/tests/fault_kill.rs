//! Crash consistency: `KILL_RUNS` (default 20) times, the desired state changes in the data
//! plane and, at a random moment of the sync that follows, the agent, the controller or both
//! are killed and started again; each time the cluster must end up with exactly the desired
//! FluxConfigs, each with exactly its GitRepository and Kustomization owned by it (no
//! duplicate, no orphan, nothing left half-deleted).
//!
//! Killing is aborting the component's task: `fluxconfig_agent::run::run` and
//! `fluxconfig_controller::run::run` keep all their work (watches, workers, HTTP servers)
//! inside their own future, so aborting it stops everything at the next await point with no
//! graceful step, which is what SIGKILL does to the process for the purpose of what reaches
//! the API server (kube writes are single requests; a request cut mid-way is either applied or
//! not).
//!
//! Run 0 syncs `KILL_CONFIGS` configurations from scratch; every later run deletes a quarter of
//! them and adds as many new ones. `KILL_CONFIGS` defaults to 50 to keep this file within
//! about three minutes on two cores in a debug build (measured: a run of 40 takes 3–8 s, a run
//! of 200 takes 20–26 s, so 1,000 is minutes per run); `KILL_CONFIGS=1000` is the full run of
//! the benchmark issue. `KILL_SEED` replays a run (the seed is printed).

mod fault_common;

use std::collections::BTreeSet;
use std::time::Duration;

use fault_common::{env_usize, Bed, Component};
use futures::StreamExt;

#[derive(Clone, Copy, Debug)]
enum Victim {
    Agent,
    Controller,
    Both,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_agent_or_controller_mid_sync_still_converges_exactly() {
    let runs = env_usize("KILL_RUNS", 20);
    let n = env_usize("KILL_CONFIGS", 50);
    let seed = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("fault_kill: KILL_SEED={seed} KILL_RUNS={runs} KILL_CONFIGS={n}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let limit = Duration::from_secs(60 + (n as u64) / 5);

    let bed = Bed::start(false).await;
    let mut controller = Some(bed.start_controller());
    let mut agent = Some(bed.start_agent(bed.agent_config()));
    let mut desired: BTreeSet<String> = BTreeSet::new();
    let mut next = 0usize;
    let started_all = tokio::time::Instant::now();

    for run in 0..runs {
        let run_started = tokio::time::Instant::now();
        let mut add = Vec::new();
        let mut remove = Vec::new();
        if run == 0 {
            add.extend((0..n).map(|i| format!("k-{i:05}")));
            next = n;
        } else {
            let quarter = (n / 4).max(1);
            let current: Vec<String> = desired.iter().cloned().collect();
            for _ in 0..quarter.min(current.len()) {
                let pick = current[rng.usize(..current.len())].clone();
                if !remove.contains(&pick) {
                    remove.push(pick);
                }
            }
            add.extend((next..next + quarter).map(|i| format!("k-{i:05}")));
            next += quarter;
        }
        for name in &remove {
            desired.remove(name);
        }
        desired.extend(add.iter().cloned());

        let victim = match rng.u8(0..3) {
            0 => Victim::Agent,
            1 => Victim::Controller,
            _ => Victim::Both,
        };
        let delay = Duration::from_millis(rng.u64(0..2_000));
        let down_for = Duration::from_millis(rng.u64(0..500));
        let changes = async {
            futures::stream::iter(remove.iter())
                .for_each_concurrent(8, |name| bed.delete(name))
                .await;
            futures::stream::iter(add.iter())
                .for_each_concurrent(8, |name| bed.put_simple(name))
                .await;
        };
        let kill = async {
            tokio::time::sleep(delay).await;
            let mut killed: Vec<Component> = Vec::new();
            if matches!(victim, Victim::Agent | Victim::Both) {
                killed.extend(agent.take());
            }
            if matches!(victim, Victim::Controller | Victim::Both) {
                killed.extend(controller.take());
            }
            for c in killed {
                c.kill().await;
            }
        };
        tokio::join!(changes, kill);
        tokio::time::sleep(down_for).await;
        if agent.is_none() {
            agent = Some(bed.start_agent(bed.agent_config()));
        }
        if controller.is_none() {
            controller = Some(bed.start_controller());
        }
        let took = bed.await_exact(&desired, limit).await;
        println!(
            "run {run:2}: -{} +{} killed {victim:?} after {delay:?}, down {down_for:?}; \
             exact after restart in {took:?} (run {:?})",
            remove.len(),
            add.len(),
            run_started.elapsed()
        );
    }
    println!(
        "fault_kill: {runs} runs of {n} configurations in {:?} (seed {seed})",
        started_all.elapsed()
    );

    if let Some(a) = agent {
        a.shutdown().await;
    }
    if let Some(c) = controller {
        c.shutdown().await;
    }
    bed.shutdown().await;
}

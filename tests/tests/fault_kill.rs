//! Crash consistency with real processes: the `fluxconfig-agent` and `fluxconfig-controller`
//! debug binaries run as child processes against the in-process API emulator and data plane,
//! and are killed with SIGKILL at random points of a sync of `KILL_CONFIGS` (default 1,000)
//! configurations. After every run the cluster must hold exactly the desired state: every
//! desired FluxConfig with the desired spec, exactly its GitRepository and Kustomization (with
//! the desired path), each owned by that FluxConfig; no duplicate, no orphan, nothing left
//! half-deleted.
//!
//! - Run 0 syncs the configurations from scratch (all stored in the data plane before either
//!   process starts) and kills `KILL_FIRST_RUN_KILLS` (default 3) times during that sync.
//! - Every later run changes a slice of `KILL_SLICE` configurations (default 5% of them: a
//!   third added, a third deleted, a third with a changed kustomization path) and kills once
//!   during the sync of that change. The desired state stays around `KILL_CONFIGS`.
//! - Kill points are random across the sync: the moment is when the API writes made since the
//!   run started reach a uniformly random fraction of the writes that sync is expected to make
//!   (`WRITES_PER_CONFIG`, `WRITES_PER_CHANGE`). A kill that finds the sync already over is
//!   reported as late. The victim is the agent, the controller or both, at random; each is restarted
//!   after a random 0–500 ms.
//!
//! `KILL_RUNS` (default 20) runs, so at least `KILL_RUNS + KILL_FIRST_RUN_KILLS - 1` kills.
//! `KILL_SEED` replays a run's choices (the seed is printed first).
//!
//! Cost: a restart costs reads, not writes. The agent skips configurations already in the
//! cluster, and the controller finds its objects in place by the applied-digest annotation once
//! its caches have synced, so a run costs time in proportion to the slice. Measured in the debug
//! build on an idle two-core machine: 20 runs at 1,000 configurations in 244 s (from scratch 29 s,
//! later runs 6–12 s each).

mod fault_common;

use std::collections::BTreeMap;
use std::time::Duration;

use fault_common::process::{bin_dir, Proc};
use fault_common::{env_usize, simple_properties, Bed};
use futures::StreamExt;
use tokio::time::Instant;

const PATHS: [&str; 2] = ["./infrastructure", "./apps"];

/// API writes a from-scratch sync makes per configuration before it is complete (agent apply,
/// finalizer, source, Kustomization, status, Event), a little low so that the random points
/// spread over the sync rather than past its end. Restarts add writes of their own, so the
/// later points of run 0 come a little earlier in the sync than their share.
const WRITES_PER_CONFIG: f64 = 5.0;
/// The same per changed configuration of a slice (adds, deletes, path changes).
const WRITES_PER_CHANGE: f64 = 4.0;
/// How long a sync may sit with no API write before a pending kill is taken as late.
const QUIET: Duration = Duration::from_secs(3);
/// How long a sync may take to make its first write before a pending kill is taken as late.
const SYNC_START_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
enum Victim {
    Agent,
    Controller,
    Both,
}

struct System<'a> {
    bed: &'a Bed,
    agent: Option<Proc>,
    controller: Option<Proc>,
    kills: usize,
    late: usize,
}

impl System<'_> {
    fn writes(&self) -> u64 {
        self.bed.server.request_stats().untagged_writes
    }

    /// SIGKILLs `victim` once the writes since `base` reach `at` (or the API has been quiet
    /// for [`QUIET`]), and restarts it after `down_for`. Returns a description.
    async fn kill_at(&mut self, base: u64, at: u64, victim: Victim, down_for: Duration) -> String {
        // The sync of a change starts when the agent's long poll returns with it, which may
        // take a moment; quiet counts only once it has started writing.
        let mut last = self.writes();
        let mut last_change = Instant::now();
        let waiting = Instant::now();
        let late = loop {
            let now = self.writes();
            if now - base >= at {
                break false;
            }
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if (now > base && last_change.elapsed() >= QUIET)
                || waiting.elapsed() >= SYNC_START_LIMIT
            {
                break true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let written = self.writes() - base;
        if matches!(victim, Victim::Agent | Victim::Both) {
            let status = self.agent.take().expect("agent running").sigkill();
            assert!(
                !status.success(),
                "the agent had exited on its own: {status}"
            );
        }
        if matches!(victim, Victim::Controller | Victim::Both) {
            let status = self
                .controller
                .take()
                .expect("controller running")
                .sigkill();
            assert!(
                !status.success(),
                "the controller had exited on its own: {status}"
            );
        }
        self.kills += 1;
        self.late += usize::from(late);
        tokio::time::sleep(down_for).await;
        self.restart();
        format!(
            "SIGKILL {victim:?} at write {written} (aim {at}){}, down {down_for:?}",
            if late {
                " LATE: sync was already quiet"
            } else {
                ""
            }
        )
    }

    fn restart(&mut self) {
        if self.agent.is_none() {
            self.agent = Some(self.bed.spawn_agent());
        }
        if self.controller.is_none() {
            self.controller = Some(self.bed.spawn_controller());
        }
    }

    /// Diagnostics for a failed wait: liveness and the end of each log.
    fn diagnostics(&mut self) -> String {
        let mut out = String::new();
        for (name, p) in [
            ("agent", &mut self.agent),
            ("controller", &mut self.controller),
        ] {
            if let Some(p) = p {
                let running = p.is_running();
                out.push_str(&format!(
                    "--- {name} (running: {running}), log {}:\n{}\n",
                    p.log.display(),
                    p.tail(20)
                ));
            }
        }
        out
    }
}

fn victim(rng: &mut fastrand::Rng) -> Victim {
    match rng.u8(0..3) {
        0 => Victim::Agent,
        1 => Victim::Controller,
        _ => Victim::Both,
    }
}

/// A uniformly random point of an expected `total` writes (at least one write in).
fn random_point(rng: &mut fastrand::Rng, total: f64) -> u64 {
    ((rng.f64() * total) as u64).max(1)
}

fn properties(url: &str, path: &str) -> serde_json::Value {
    let mut props = simple_properties(url);
    props["kustomizations"]["infra"]["path"] = path.into();
    props
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_agent_and_controller_mid_sync_still_converges_exactly() {
    let runs = env_usize("KILL_RUNS", 20).max(1);
    let n = env_usize("KILL_CONFIGS", 1000).max(1);
    let first_kills = env_usize("KILL_FIRST_RUN_KILLS", 3).max(1);
    let slice = env_usize("KILL_SLICE", (n * 5 / 100).max(3)).max(3);
    let seed = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!(
        "fault_kill: KILL_SEED={seed} KILL_RUNS={runs} KILL_CONFIGS={n} \
         KILL_FIRST_RUN_KILLS={first_kills} KILL_SLICE={slice}"
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    // Building the binaries is not part of what is measured.
    tokio::task::spawn_blocking(bin_dir).await.expect("build");
    // Run 0: everything stored in the data plane first, then both processes start from an
    // empty cluster.
    let mut desired: BTreeMap<String, String> = (0..n)
        .map(|i| (format!("k-{i:05}"), PATHS[0].to_string()))
        .collect();
    let mut next = n;
    let bed = Bed::start_seeded(false, |url| {
        desired
            .iter()
            .map(|(name, path)| (name.clone(), properties(url, path)))
            .collect()
    })
    .await;
    let started_all = Instant::now();

    let mut sys = System {
        bed: &bed,
        agent: None,
        controller: None,
        kills: 0,
        late: 0,
    };
    let limit_first = Duration::from_secs(240 + n as u64 / 2);
    let limit_later = Duration::from_secs(120 + n as u64 / 10);

    for run in 0..runs {
        let run_started = Instant::now();
        let base = sys.writes();
        let mut events = Vec::new();
        let changes;
        if run == 0 {
            sys.restart();
            let expected = n as f64 * WRITES_PER_CONFIG;
            let mut points: Vec<u64> = (0..first_kills)
                .map(|_| random_point(&mut rng, expected))
                .collect();
            points.sort_unstable();
            for at in points {
                let (v, down) = (victim(&mut rng), Duration::from_millis(rng.u64(0..500)));
                events.push(sys.kill_at(base, at, v, down).await);
            }
            changes = format!("+{n} from scratch");
        } else {
            // A slice: a third added, a third deleted, a third with the other path.
            let names: Vec<String> = desired.keys().cloned().collect();
            let mut picked = std::collections::BTreeSet::new();
            while picked.len() < (slice * 2 / 3).min(names.len()) {
                picked.insert(names[rng.usize(..names.len())].clone());
            }
            let picked: Vec<String> = picked.into_iter().collect();
            let (remove, modify) = picked.split_at(picked.len() / 2);
            let add: Vec<String> = (next..next + (slice - picked.len()))
                .map(|i| format!("k-{i:05}"))
                .collect();
            next += add.len();
            let mut puts = Vec::new();
            for name in modify {
                let path = if desired[name] == PATHS[0] {
                    PATHS[1]
                } else {
                    PATHS[0]
                };
                desired.insert(name.clone(), path.to_string());
                puts.push((name.clone(), path.to_string()));
            }
            for name in &add {
                desired.insert(name.clone(), PATHS[0].to_string());
                puts.push((name.clone(), PATHS[0].to_string()));
            }
            for name in remove {
                desired.remove(name);
            }
            let total = remove.len() + modify.len() + add.len();
            changes = format!("-{} ~{} +{}", remove.len(), modify.len(), add.len());
            let at = random_point(&mut rng, total as f64 * WRITES_PER_CHANGE);
            let (v, down) = (victim(&mut rng), Duration::from_millis(rng.u64(0..500)));
            // The change is stored first; the kill then lands during its sync.
            futures::stream::iter(remove.iter())
                .for_each_concurrent(8, |name| bed.delete(name))
                .await;
            futures::stream::iter(puts.iter())
                .for_each_concurrent(8, |(name, path)| {
                    bed.put(name, properties(&bed.repo.url, path))
                })
                .await;
            let event = sys.kill_at(base, at, v, down).await;
            events.push(event);
        }
        let limit = if run == 0 { limit_first } else { limit_later };
        let took = bed
            .await_exact_paths(&desired, limit, || sys.diagnostics())
            .await;
        let written = sys.writes() - base;
        println!(
            "run {run:2} ({changes}, {} desired): {}; exact {took:?} after the last restart, \
             {written} writes, run {:?}",
            desired.len(),
            events.join("; "),
            run_started.elapsed()
        );
    }
    assert!(sys.kills >= runs + first_kills - 1);
    println!(
        "fault_kill: {} SIGKILLs ({} late) in {runs} runs around {n} configurations in {:?} \
         (KILL_SEED={seed})",
        sys.kills,
        sys.late,
        started_all.elapsed()
    );
    drop(sys);
    bed.shutdown().await;
}

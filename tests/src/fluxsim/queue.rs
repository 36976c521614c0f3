//! The work queue: like controller-runtime's, an object is never reconciled twice at once, an
//! event during a reconciliation reruns it afterwards, and a reconciliation may ask to be run
//! again after a delay (Flux's interval / retry requeues).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{helm, kustomize, source, Error, FluxKind, Key, Shared};

pub(crate) enum Msg {
    Enqueue(Key),
}

/// Retry delay after an unexpected error (API conflicts, a flaky emulator...).
const ERROR_BACKOFF: Duration = Duration::from_millis(500);

pub(crate) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let permits = Arc::new(Semaphore::new(shared.config.max_concurrent.max(1)));
    // Owning the reconciliations here means aborting this task stops them too.
    let mut running_tasks: JoinSet<(Key, Option<Duration>)> = JoinSet::new();
    let mut running: HashSet<Key> = HashSet::new();
    let mut dirty: HashSet<Key> = HashSet::new();
    let mut scheduled = Schedule::default();

    loop {
        let next_due = scheduled.next_due();
        let sleep = async {
            match next_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            msg = rx.recv() => {
                let Some(Msg::Enqueue(key)) = msg else { return };
                if running.contains(&key) {
                    dirty.insert(key);
                } else {
                    spawn(&shared, &permits, &mut running_tasks, &mut running, key);
                }
            }
            Some(done) = running_tasks.join_next(), if !running_tasks.is_empty() => {
                let Ok((key, requeue)) = done else { continue };
                running.remove(&key);
                if dirty.remove(&key) {
                    spawn(&shared, &permits, &mut running_tasks, &mut running, key);
                } else if let Some(after) = requeue {
                    scheduled.insert(key, Instant::now() + after);
                } else {
                    scheduled.remove(&key);
                }
            }
            () = sleep => {
                for key in scheduled.take_due(Instant::now()) {
                    if running.contains(&key) {
                        dirty.insert(key);
                    } else {
                        spawn(&shared, &permits, &mut running_tasks, &mut running, key);
                    }
                }
            }
        }
    }
}

/// Requeues by key, with an index by due time: with tens of thousands of objects waiting
/// for their interval, finding the next one by scanning every entry on each queue event made
/// the simulator quadratic.
#[derive(Default)]
struct Schedule {
    at: HashMap<Key, Instant>,
    by_time: BTreeSet<(Instant, Key)>,
}

impl Schedule {
    fn next_due(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    fn insert(&mut self, key: Key, at: Instant) {
        if let Some(old) = self.at.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.at.remove(key) {
            self.by_time.remove(&(old, key.clone()));
        }
    }

    /// Removes and returns the keys due at `now`.
    fn take_due(&mut self, now: Instant) -> Vec<Key> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.by_time.pop_first() {
                self.at.remove(&key);
                due.push(key);
            }
        }
        due
    }
}

fn spawn(
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    tasks: &mut JoinSet<(Key, Option<Duration>)>,
    running: &mut HashSet<Key>,
    key: Key,
) {
    running.insert(key.clone());
    let shared = shared.clone();
    let permits = permits.clone();
    tasks.spawn(async move {
        let _permit = permits.acquire_owned().await.ok();
        let result = match key.kind {
            FluxKind::Kustomization => kustomize::reconcile(&shared, &key).await,
            FluxKind::HelmRelease => helm::reconcile(&shared, &key).await,
            _ => source::reconcile(&shared, &key).await,
        };
        let requeue = match result {
            Ok(requeue) => requeue,
            Err(e) => {
                log_error(&shared, &key, &e);
                Some(ERROR_BACKOFF)
            }
        };
        (key, requeue)
    });
}

fn log_error(shared: &Shared, key: &Key, e: &Error) {
    // Conflicts are routine (the object changed under us); the rerun sorts them out.
    match e {
        Error::Kube(kube::Error::Api(s)) if s.code == 409 => {
            tracing::debug!(%key, error = %e, "Flux simulator: conflict, retrying")
        }
        _ => {
            tracing::warn!(%key, error = %e, "Flux simulator: reconciliation failed");
            shared.record_error(key, e);
        }
    }
}

//! The work queue: like controller-runtime's, an object is never reconciled twice at once, an
//! event during a reconciliation reruns it afterwards, and a reconciliation may ask to be run
//! again after a delay (Flux's interval / retry requeues).

use std::collections::{HashMap, HashSet};
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
    let mut scheduled: HashMap<Key, Instant> = HashMap::new();

    loop {
        let next_due = scheduled.values().min().copied();
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
                let now = Instant::now();
                let due: Vec<Key> = scheduled
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in due {
                    scheduled.remove(&key);
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

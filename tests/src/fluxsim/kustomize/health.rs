//! kustomize-controller's health checks (`spec.wait`): after applying, the Kustomization stays
//! Reconciling until every object it applied is current by kstatus rules, fails early on a
//! stalled one, and gives up after `spec.timeout`.

use std::time::{Duration, Instant};

use super::super::apply::{self, Health, ObjRef};
use super::super::conditions as cond;
use super::super::object::FluxObject;
use super::super::{duration, Error, FluxKind, Key, Shared};
use super::{fail_from, succeed, HEALTHY, HEALTH_CHECK_FAILED};

/// A Kustomization that applied a revision and now waits for the objects to become healthy.
#[derive(Clone, Debug)]
pub(crate) struct HealthWait {
    pub revision: String,
    pub generation: i64,
    pub started: Instant,
    pub deadline: Instant,
    pub objects: Vec<ObjRef>,
}

/// Objects of simulated kinds wake the Kustomization when they change.
pub(super) fn flux_keys(objects: &[ObjRef]) -> Vec<Key> {
    objects
        .iter()
        .filter_map(|r| {
            let kind = FluxKind::parse(&r.kind)?;
            (kind.group() == r.group).then(|| Key::new(kind, &r.namespace, &r.name))
        })
        .collect()
}

pub(super) async fn check_health(
    shared: &Shared,
    key: &Key,
    o: &FluxObject,
    wait: HealthWait,
    interval: Duration,
    retry: Duration,
) -> Result<Option<Duration>, Error> {
    let mut pending: Vec<String> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for r in &wait.objects {
        let verdict = match shared.resources.get(r).await? {
            Some(obj) => apply::health(&obj),
            None => Health::InProgress,
        };
        match verdict {
            Health::Current => {}
            Health::InProgress => pending.push(format!("{} status: 'InProgress'", r.display())),
            Health::Failed(_) => failed.push(format!("{} status: 'Failed'", r.display())),
        }
    }
    let elapsed = duration::render(Duration::from_secs(wait.started.elapsed().as_secs()));
    if !failed.is_empty() || (!pending.is_empty() && Instant::now() >= wait.deadline) {
        shared.update_memory(key, |m| m.health = None);
        let message = if failed.is_empty() {
            format!(
                "health check failed after {elapsed}: timeout waiting for: [{}]",
                pending.join(", ")
            )
        } else {
            format!(
                "health check failed after {elapsed}: failed early due to stalled resources: [{}]",
                failed.join(", ")
            )
        };
        let mut status = o.status.clone();
        cond::set(
            &mut status,
            HEALTHY,
            "False",
            HEALTH_CHECK_FAILED,
            &message,
            o.generation(),
        );
        return fail_from(
            shared,
            key,
            o,
            status,
            HEALTH_CHECK_FAILED,
            &message,
            Some(&wait.revision),
            retry,
        )
        .await;
    }
    if !pending.is_empty() {
        let until_deadline = wait.deadline.saturating_duration_since(Instant::now());
        return Ok(Some(
            shared
                .config
                .health_poll
                .min(until_deadline)
                .max(Duration::from_millis(50)),
        ));
    }
    shared.update_memory(key, |m| m.health = None);
    let message = format!("Health check passed in {elapsed}");
    succeed(
        shared,
        key,
        o,
        o.status.clone(),
        &wait.revision,
        Some(message),
        interval,
    )
    .await
}

//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics: a lease is
//! taken over only after its record has stayed unchanged for a full lease duration *as observed
//! locally*, so clock skew between replicas cannot cause two leaders; writes use the Lease's
//! resourceVersion so two candidates cannot both win the same round.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a silent leader keeps the lease; failover takes at most this plus one retry.
    pub lease_duration: Duration,
    /// How often the leader renews and candidates retry.
    pub retry_period: Duration,
    /// A leader that could not renew for this long steps down (must be < lease_duration).
    pub renew_deadline: Duration,
}

impl LeaseConfig {
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        LeaseConfig {
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(7),
        }
    }
}

/// What a candidate last saw of the lease record, and when it saw it change.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
    transitions: Option<i32>,
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<(Record, Instant)>,
    last_renewed: Option<Instant>,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            last_renewed: None,
        }
    }

    /// One round: acquire, renew or observe. Returns whether this replica leads afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Instant::now();
        let lease = match self.api.get_opt(&self.config.name).await? {
            Some(lease) => lease,
            None => return self.create().await,
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = Record {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            transitions: spec.lease_transitions,
        };
        let changed = self.observed.as_ref().map(|(r, _)| r) != Some(&record);
        if changed {
            self.observed = Some((record.clone(), now));
        }
        let observed_at = self.observed.as_ref().map_or(now, |(_, at)| *at);
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);

        let mine = record.holder.as_deref() == Some(self.config.identity.as_str());
        let expired = record.holder.is_none() || now.duration_since(observed_at) >= duration;
        if !mine && !expired {
            return Ok(false);
        }
        let mut next = lease.clone();
        let stamp = MicroTime(Timestamp::now());
        let mut new_spec = spec.clone();
        if !mine {
            new_spec.holder_identity = Some(self.config.identity.clone());
            new_spec.acquire_time = Some(stamp.clone());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new_spec.renew_time = Some(stamp);
        new_spec.lease_duration_seconds = Some(secs(self.config.lease_duration));
        next.spec = Some(new_spec);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => {
                self.last_renewed = Some(now);
                Ok(true)
            }
            // Someone else wrote the lease first: they won this round.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn create(&mut self) -> Result<bool, kube::Error> {
        let stamp = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(secs(self.config.lease_duration)),
                acquire_time: Some(stamp.clone()),
                renew_time: Some(stamp),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => {
                self.last_renewed = Some(Instant::now());
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Hands the lease over at shutdown so a standby takes over at once instead of waiting for
    /// the lease to expire.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }

    /// Campaigns until `shutdown` flips, publishing leadership on `leading`. A leader that
    /// cannot renew within the renew deadline steps down before anyone could take over.
    pub async fn campaign(
        mut self,
        leading: watch::Sender<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let result = self.try_acquire_or_renew().await;
            let lead = match result {
                Ok(lead) => lead,
                Err(e) => {
                    tracing::error!(error = %e, lease = %self.config.name, "leader election round failed");
                    let within = self
                        .last_renewed
                        .is_some_and(|at| at.elapsed() < self.config.renew_deadline);
                    *leading.borrow() && within
                }
            };
            if lead != *leading.borrow() {
                if lead {
                    tracing::info!(identity = %self.config.identity, "became leader");
                } else {
                    tracing::info!(identity = %self.config.identity, "not leading");
                }
                let _ = leading.send(lead);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.retry_period) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        if *leading.borrow() {
            let _ = leading.send(false);
            if let Err(e) = self.release().await {
                tracing::error!(error = %e, "releasing the leader lease");
            }
        }
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

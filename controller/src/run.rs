//! `fluxconfig-controller run`: watches, leader election, the reconciler and the HTTP endpoints
//! wired together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fluxconfig_api::flux::{Bucket, GitRepository, HelmRelease, Kustomization, OCIRepository};
use fluxconfig_api::FluxConfig;
use futures::{FutureExt, StreamExt};
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::http::{self, Health};
use crate::leader::{LeaderElector, LeaseConfig};
use crate::metrics::{Metrics, MetricsError};

use crate::reconciler::{self, Context, Stores};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("serving metrics on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("a shared reflector could not be subscribed to")]
    Subscribe,
}

#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub metrics_addr: SocketAddr,
    /// `None` runs without leader election (a single replica).
    pub lease: Option<LeaseConfig>,
    /// FluxConfigs reconciled in parallel.
    pub concurrency: u16,
    /// Reported as the events' reporting instance.
    pub identity: String,
}

/// Runs until `shutdown` becomes true. The HTTP endpoints serve throughout; the reconciler runs
/// only while this replica leads (always, without leader election).
pub async fn run(
    client: Client,
    config: RunConfig,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let health = Health::default();
    let listener = http::bind(config.metrics_addr)
        .await
        .map_err(|source| RunError::Http {
            addr: config.metrics_addr,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(config.metrics_addr);
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    let mut http_shutdown = shutdown.clone();
    let server = http::serve(listener, metrics.clone(), health.clone(), async move {
        let _ = http_shutdown.wait_for(|s| *s).await;
    });

    let (leading_tx, leading) = watch::channel(config.lease.is_none());
    // Without election nobody publishes on the channel; keep a sender so it never reads as closed
    // (a closed channel would look like lost leadership).
    let _keep_leading_open = leading_tx.clone();
    let (campaign_stop_tx, campaign_stop) = watch::channel(false);
    let campaign = async {
        if let Some(lease) = config.lease.clone() {
            LeaderElector::new(client.clone(), lease)
                .campaign(leading_tx, campaign_stop)
                .await;
        }
    };
    // A standby is healthy and ready: it is exactly what it should be.
    health.set_ready(true);

    // One future, not spawned tasks: whatever ends this function (return or abort) ends the
    // campaign and the endpoints with it, as a process exit would.
    let reconcile = async {
        let result = lead_while_elected(&client, &config, &metrics, leading, shutdown).await;
        // Hand the lease over only after the controller has stopped writing.
        let _ = campaign_stop_tx.send(true);
        result
    };
    let (served, (), result) = tokio::join!(server, campaign, reconcile);
    if let Err(e) = served {
        tracing::error!(error = %e, "metrics endpoint failed");
    }
    result
}

/// Runs the controller each time this replica becomes leader, until shutdown.
async fn lead_while_elected(
    client: &Client,
    config: &RunConfig,
    metrics: &Arc<Metrics>,
    mut leading: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    loop {
        tokio::select! {
            _ = leading.wait_for(|l| *l) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        if *shutdown.borrow() {
            break;
        }
        metrics.leader.set(1);
        let mut lost = leading.clone();
        let mut stop = shutdown.clone();
        let stop_signal = async move {
            tokio::select! {
                _ = lost.wait_for(|l| !*l) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        };
        run_controller(client.clone(), metrics.clone(), config, stop_signal).await?;
        metrics.leader.set(0);
        if *shutdown.borrow() {
            break;
        }
        tracing::info!("lost leadership; standing by");
    }
    Ok(())
}

/// A shared reflector: its store, a subscription for the controller, and the future that
/// drives the watch (counting restarts). `on_delete` sees every deleted object: kube's shared
/// subscriptions carry only objects that still exist, so a deletion would otherwise wake no
/// owner.
fn shared<K>(
    client: &Client,
    metrics: &Arc<Metrics>,
    compact: fn(&mut K),
    on_delete: impl Fn(&K) + Send + 'static,
) -> Result<
    (
        Store<K>,
        ReflectHandle<K>,
        impl std::future::Future<Output = ()>,
    ),
    RunError,
>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store_shared::<K>(1024);
    let subscriber = writer.subscribe().ok_or(RunError::Subscribe)?;
    let resource = K::plural(&()).into_owned();
    let metrics = metrics.clone();
    let api: Api<K> = Api::all(client.clone());
    let drive = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        // What the controller never reads is dropped before caching: at tens of thousands of
        // objects the caches are most of its memory.
        .modify(compact)
        .reflect_shared(writer)
        .for_each(move |event| {
            match event {
                Ok(watcher::Event::Delete(o)) => on_delete(&o),
                Ok(_) => {}
                Err(e) => {
                    metrics.watch_restarts.with_label_values(&[&resource]).inc();
                    tracing::error!(resource = %resource, error = %e, "watch failed; restarting");
                }
            }
            futures::future::ready(())
        });
    Ok((store, subscriber, drive))
}

/// managedFields are most of a Flux object's size and the controller never reads them.
fn without_managed<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// The sources and Kustomizations the controller applies are compared with what it would apply
/// (name, namespace, labels, the applied digest, owner references, spec) and rolled up (status,
/// generation, creation and deletion time); the rest of their metadata is never read.
fn compact_applied<K: Resource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    reconciler::compact_cached_metadata(meta);
    meta.finalizers = None;
    meta.uid = None;
    meta.resource_version = None;
    meta.generate_name = None;
    meta.self_link = None;
}

type Wake = futures::channel::mpsc::UnboundedSender<ObjectRef<FluxConfig>>;

/// Wakes the FluxConfig `owner` names for a deleted object.
fn wake<K>(
    tx: &Wake,
    owner: impl Fn(&K) -> Option<ObjectRef<FluxConfig>> + Send + 'static,
) -> impl Fn(&K) + Send + 'static {
    let tx = tx.clone();
    move |o| {
        if let Some(config) = owner(o) {
            let _ = tx.unbounded_send(config);
        }
    }
}

/// The FluxConfig a generated object (source, Kustomization) belongs to.
fn generator<K: Resource>(o: &K) -> Option<ObjectRef<FluxConfig>> {
    reconciler::config_of(o.meta())
}

/// How long a stop waits for running reconciles; well inside Kubernetes' default 30 s
/// termination grace period.
const STOP_GRACE: Duration = Duration::from_secs(10);

async fn run_controller(
    client: Client,
    metrics: Arc<Metrics>,
    config: &RunConfig,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), RunError> {
    let stop = stop.shared();
    // Deleted Flux objects wake the FluxConfig they belong to (a deletion it waits for, or
    // drift to repair) through this channel.
    let (wakes, woken) = futures::channel::mpsc::unbounded::<ObjectRef<FluxConfig>>();
    let (cfg_store, cfg_sub, cfg_drive) =
        shared::<FluxConfig>(&client, &metrics, reconciler::compact_cached_config, |_| {})?;
    let (git, git_sub, git_drive) =
        shared::<GitRepository>(&client, &metrics, compact_applied, wake(&wakes, generator))?;
    let (bucket, bucket_sub, bucket_drive) =
        shared::<Bucket>(&client, &metrics, compact_applied, wake(&wakes, generator))?;
    let (oci, oci_sub, oci_drive) =
        shared::<OCIRepository>(&client, &metrics, compact_applied, wake(&wakes, generator))?;
    let (ks, ks_sub, ks_drive) =
        shared::<Kustomization>(&client, &metrics, compact_applied, wake(&wakes, generator))?;
    let ks_for_deleted = ks.clone();
    let (hr, hr_sub, hr_drive) = shared::<HelmRelease>(
        &client,
        &metrics,
        without_managed,
        wake(&wakes, move |hr| {
            reconciler::helm_release_owner(hr, &ks_for_deleted)
        }),
    )?;
    drop(wakes);

    let (unsynced_tx, unsynced) = watch::channel(Some("GitRepository"));
    let stores = Stores {
        git,
        bucket,
        oci,
        kustomizations: ks.clone(),
        helm_releases: hr,
        unsynced,
    };
    let sync = {
        let stores = stores.clone();
        async move { stores.sync(unsynced_tx).await }
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: reconciler::MANAGER.to_string(),
            instance: Some(config.identity.clone()),
        },
    );
    let ctx = Arc::new(Context::new(client, metrics, recorder, stores));

    let ks_for_mapper = ks.clone();
    let controller = Controller::for_shared_stream(cfg_sub, cfg_store)
        .owns_shared_stream(git_sub)
        .owns_shared_stream(bucket_sub)
        .owns_shared_stream(oci_sub)
        .owns_shared_stream(ks_sub)
        .watches_shared_stream(hr_sub, move |hr: Arc<HelmRelease>| {
            reconciler::helm_release_owner(&hr, &ks_for_mapper)
        })
        .reconcile_on(woken)
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(stop.clone())
        .run(reconciler::reconcile, reconciler::error_policy, ctx)
        .for_each(|_| futures::future::ready(()));

    // The watches end when the controller does: dropping their futures closes the streams.
    tokio::select! {
        _ = controller => {}
        _ = drive_all(vec![
            Box::pin(cfg_drive),
            Box::pin(git_drive),
            Box::pin(bucket_drive),
            Box::pin(oci_drive),
            Box::pin(ks_drive),
            Box::pin(hr_drive),
            Box::pin(sync),
        ]) => {}
        // The controller drains its running reconciles on stop, but only once its caches have
        // synced: with the API server unreachable it would never stop.
        _ = async {
            stop.await;
            tokio::time::sleep(STOP_GRACE).await;
        } => {
            tracing::warn!(grace = ?STOP_GRACE, "reconciles still running at the stop; exiting without them");
        }
    }
    Ok(())
}

async fn drive_all(drives: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>) {
    futures::future::join_all(drives).await;
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

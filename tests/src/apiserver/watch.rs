//! Watch streams: backlog from the retained history (or synthetic ADDED for current state),
//! then live events, bookmarks, timeouts, and forced disconnects.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::apiserver::errors::{ApiError, ApiResult};
use crate::apiserver::ops::{self, present, Query};
use crate::apiserver::resources::ResourceDef;
use crate::apiserver::selector::{FieldSelector, LabelSelector};
use crate::apiserver::store::{meta_str, EventType, Store, WatchEvent};
use crate::apiserver::table::{self};

/// Upper bound on one coalesced chunk of watch events.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// How a watcher wants objects rendered.
#[derive(Clone, Debug, PartialEq)]
pub enum Render {
    Object,
    Table { include_object: String },
    PartialMetadata,
}

pub struct Watcher {
    def: Arc<ResourceDef>,
    gr: String,
    api_version: String,
    ns: Option<String>,
    ls: LabelSelector,
    fs: FieldSelector,
    render: Render,
    bookmarks: bool,
    last_rv: u64,
    sent_columns: bool,
}

/// Frame sent before the live stream starts.
enum Pending {
    Event(&'static str, Arc<Value>),
    Error(ApiError),
    InitialEnd,
}

pub struct WatchStart {
    watcher: Watcher,
    pending: Vec<Pending>,
    rx: broadcast::Receiver<Arc<WatchEvent>>,
    timeout: Duration,
}

/// Prepares a watch under the store lock so nothing committed in between can be missed.
pub fn start(
    store: &Store,
    def: Arc<ResourceDef>,
    ns: &str,
    q: &Query,
    render: Render,
) -> ApiResult<WatchStart> {
    let (ls, fs) = ops::parse_selectors(&def, q)?;
    let ns = if def.namespaced && !ns.is_empty() {
        Some(ns.to_string())
    } else {
        None
    };
    let bookmarks = q.flag("allowWatchBookmarks");
    let send_initial = q.get("sendInitialEvents").map(|v| v == "true");
    let rv_param = q.get("resourceVersion");
    if send_initial.is_some() && q.get("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            &[crate::apiserver::schema::FieldError::forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for watch unless resourceVersionMatch is set to NotOlderThan",
            )],
        ));
    }
    if send_initial == Some(true) && !bookmarks {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            &[crate::apiserver::schema::FieldError::forbidden(
                "allowWatchBookmarks",
                "allowWatchBookmarks must be set to true when sendInitialEvents is set",
            )],
        ));
    }
    let timeout = match q.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t}")))?,
        ),
        // The real server picks a random duration within [minRequestTimeout, 2*minRequestTimeout).
        None => Duration::from_secs(1800 + fastrand::u64(..1800)),
    };
    let watcher = Watcher {
        gr: def.gr(),
        api_version: def.api_version(),
        def: def.clone(),
        ns,
        ls,
        fs,
        render,
        bookmarks,
        last_rv: store.rv,
        sent_columns: false,
    };
    let mut pending = Vec::new();
    let initial_state = match (send_initial, rv_param) {
        (Some(v), _) => v,
        (None, None) | (None, Some("0")) => true,
        (None, Some(_)) => false,
    };
    if initial_state {
        for (_, o) in store.list(&def.gr(), watcher.ns.as_deref(), None) {
            if watcher.selects(&o) {
                pending.push(Pending::Event("ADDED", o));
            }
        }
        if send_initial == Some(true) {
            pending.push(Pending::InitialEnd);
        }
    } else if let Some(r) = rv_param {
        let rv: u64 = r
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {r}")))?;
        match store.events_since(rv) {
            None => pending.push(Pending::Error(ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                store.compacted_rv + 1
            )))),
            Some(evs) => {
                for ev in evs {
                    if let Some((ty, obj)) = watcher.filter(&ev) {
                        pending.push(Pending::Event(ty, obj));
                    }
                }
            }
        }
    }
    Ok(WatchStart {
        watcher,
        pending,
        rx: store.subscribe(),
        timeout,
    })
}

impl Watcher {
    /// Selectors see the object in the watched version's shape.
    fn selects(&self, o: &Value) -> bool {
        if self.def.is_events_v1() {
            let view = present(&self.def, o);
            return self.ls.matches(&view) && self.fs.matches(&view);
        }
        self.ls.matches(o) && self.fs.matches(o)
    }

    /// The event this watcher sees for a committed change, if any (selector transitions
    /// become ADDED/DELETED, as in the watch cache).
    fn filter(&self, ev: &WatchEvent) -> Option<(&'static str, Arc<Value>)> {
        if ev.gr != self.gr {
            return None;
        }
        if let Some(ns) = &self.ns {
            if &ev.namespace != ns {
                return None;
            }
        }
        let matches = |o: &Value| self.selects(o);
        let cur = matches(&ev.object);
        match ev.kind {
            EventType::Added => cur.then(|| ("ADDED", ev.object.clone())),
            EventType::Deleted => {
                let prev = ev.prev.as_deref().is_some_and(matches);
                (cur || prev).then(|| ("DELETED", ev.object.clone()))
            }
            EventType::Modified => {
                let prev = ev.prev.as_deref().is_some_and(matches);
                match (prev, cur) {
                    (true, true) => Some(("MODIFIED", ev.object.clone())),
                    (false, true) => Some(("ADDED", ev.object.clone())),
                    (true, false) => Some(("DELETED", ev.object.clone())),
                    (false, false) => None,
                }
            }
            EventType::Removed => None,
        }
    }

    fn render_object(&mut self, obj: &Value) -> Value {
        match &self.render {
            Render::Object => present(&self.def, obj),
            Render::PartialMetadata => partial_metadata(obj),
            Render::Table { include_object } => {
                let rv = meta_str(obj, "resourceVersion").to_string();
                let mut t = table::build_table(
                    &self.def.kind,
                    &self.def.columns,
                    &[present(&self.def, obj)],
                    include_object,
                    json!({"resourceVersion": rv}),
                    chrono::Utc::now(),
                );
                if self.sent_columns {
                    t["columnDefinitions"] = json!([]);
                }
                self.sent_columns = true;
                t
            }
        }
    }

    fn line(&mut self, ty: &str, obj: &Value, cached: Option<Bytes>) -> Bytes {
        let body = match cached {
            Some(b) if self.render == Render::Object => b,
            _ => Bytes::from(serde_json::to_vec(&self.render_object(obj)).unwrap_or_default()),
        };
        let mut out = Vec::with_capacity(body.len() + 32);
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(ty.as_bytes());
        out.extend_from_slice(b"\",\"object\":");
        out.extend_from_slice(&body);
        out.extend_from_slice(b"}\n");
        Bytes::from(out)
    }

    fn bookmark(&self, initial_end: bool) -> Bytes {
        let mut meta =
            json!({"resourceVersion": self.last_rv.to_string(), "creationTimestamp": null});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let (av, kind) = match self.render {
            Render::PartialMetadata => (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadata".to_string(),
            ),
            _ => (self.def.api_version(), self.def.kind.clone()),
        };
        let ev = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": av, "metadata": meta}});
        let mut v = serde_json::to_vec(&ev).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }

    /// The stored JSON can be reused when the reader wants the stored version as-is.
    fn cached_json(&self, ev: &WatchEvent) -> Option<Bytes> {
        let av = ev.object.get("apiVersion").and_then(Value::as_str);
        (av == Some(self.api_version.as_str())
            && ev.object.get("kind").and_then(Value::as_str) == Some(self.def.kind.as_str()))
        .then(|| ev.object_json())
    }
}

pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

fn error_line(e: &ApiError) -> Bytes {
    let mut v =
        serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Runs a watch until the client goes away, the timeout elapses, or a disconnect is forced.
pub async fn run(
    start: WatchStart,
    tx: mpsc::Sender<Bytes>,
    bookmark_interval: Duration,
    drop_after: Option<Duration>,
    mut disconnect: tokio::sync::watch::Receiver<u64>,
) {
    let WatchStart {
        mut watcher,
        pending,
        mut rx,
        timeout,
    } = start;
    for p in pending {
        let line = match p {
            Pending::Event(ty, obj) => {
                let cached = None;
                watcher.line(ty, &obj, cached)
            }
            Pending::Error(e) => {
                let _ = tx.send(error_line(&e)).await;
                return;
            }
            Pending::InitialEnd => watcher.bookmark(true),
        };
        if tx.send(line).await.is_err() {
            return;
        }
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let drop_at = tokio::time::sleep(drop_after.unwrap_or(Duration::from_secs(86400 * 365)));
    tokio::pin!(drop_at);
    let mut ticker = tokio::time::interval(bookmark_interval.max(Duration::from_millis(10)));
    ticker.tick().await;
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(ev) => {
                    // Whatever is already queued goes out in one chunk: fewer TLS records
                    // and wakeups when writes come in bursts.
                    let mut batch = Vec::new();
                    let mut next = Some(ev);
                    let mut ended = false;
                    while let Some(ev) = next.take() {
                        if ev.kind == EventType::Removed && ev.gr == watcher.gr {
                            ended = true;
                            break;
                        }
                        watcher.last_rv = watcher.last_rv.max(ev.rv);
                        if let Some((ty, obj)) = watcher.filter(&ev) {
                            let cached = watcher.cached_json(&ev);
                            batch.extend_from_slice(&watcher.line(ty, &obj, cached));
                        }
                        if batch.len() < MAX_BATCH_BYTES {
                            match rx.try_recv() {
                                Ok(e) => next = Some(e),
                                Err(broadcast::error::TryRecvError::Empty) => {}
                                Err(_) => ended = true,
                            }
                        }
                    }
                    if !batch.is_empty() && tx.send(Bytes::from(batch)).await.is_err() {
                        return;
                    }
                    if ended {
                        return;
                    }
                }
                // A watcher that cannot keep up is closed, as the watch cache does; the
                // client re-watches from its last resourceVersion.
                Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick() => {
                if watcher.bookmarks && tx.send(watcher.bookmark(false)).await.is_err() {
                    return;
                }
            }
            _ = &mut deadline => return,
            _ = &mut drop_at => return,
            _ = disconnect.changed() => return,
            _ = tx.closed() => return,
        }
    }
}

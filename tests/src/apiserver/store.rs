//! The in-memory "etcd": objects per group-resource, one global resourceVersion counter, and a
//! bounded event history from which watches are served.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::apiserver::resources::Registry;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    /// The resource stopped being served (its CRD is gone); watches of it end.
    Removed,
}

impl EventType {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Removed => "REMOVED",
        }
    }
}

/// A committed change. `prev` lets selector-filtered watches turn a change that leaves or
/// enters the selection into DELETED/ADDED, as the real watch cache does.
#[derive(Debug)]
pub struct WatchEvent {
    pub rv: u64,
    pub kind: EventType,
    pub gr: String,
    pub namespace: String,
    pub object: Arc<Value>,
    pub prev: Option<Arc<Value>>,
    json: OnceLock<Bytes>,
}

impl WatchEvent {
    /// The stored object serialized once and shared by every watcher of its version.
    pub fn object_json(&self) -> Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&*self.object).unwrap_or_default()))
            .clone()
    }
}

pub type Key = (String, String);

pub struct Store {
    pub rv: u64,
    objects: HashMap<String, BTreeMap<Key, Arc<Value>>>,
    history: VecDeque<Arc<WatchEvent>>,
    history_cap: usize,
    /// Events at or below this resourceVersion are no longer retained.
    pub compacted_rv: u64,
    pub registry: Registry,
    tx: broadcast::Sender<Arc<WatchEvent>>,
    /// Something happened the garbage collector / namespace controller may need to act on;
    /// lets them skip full scans while nothing is being deleted or owned.
    pub gc_pending: bool,
    /// Objects written with new or changed owner references since the collector last looked:
    /// only these can have an owner that is already gone, so a write of an owned object costs
    /// the collector a lookup of its owners instead of a pass over the whole store.
    gc_suspects: Vec<(String, Key)>,
    /// uids of every stored object, for those owner lookups.
    uids: HashSet<String>,
    /// When each terminating namespace (by uid) was first seen by the namespace controller.
    pub ns_terminating_since: HashMap<String, std::time::Instant>,
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if !obj.is_object() {
        return;
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Default::default());
    }
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if value.is_null() {
            m.remove(field);
        } else {
            m.insert(field.to_string(), value);
        }
    }
}

impl Store {
    pub fn new(history_cap: usize, tx: broadcast::Sender<Arc<WatchEvent>>) -> Self {
        Store {
            rv: 1,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            compacted_rv: 0,
            registry: Registry::with_builtins(),
            tx,
            gc_pending: false,
            gc_suspects: Vec::new(),
            uids: HashSet::new(),
            ns_terminating_since: HashMap::new(),
        }
    }

    pub fn get(&self, gr: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(gr)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects of a group-resource in key order (namespace, then name), optionally in one
    /// namespace, starting strictly after `after`.
    pub fn list(&self, gr: &str, ns: Option<&str>, after: Option<&Key>) -> Vec<(Key, Arc<Value>)> {
        let Some(m) = self.objects.get(gr) else {
            return Vec::new();
        };
        let iter: Box<dyn Iterator<Item = (&Key, &Arc<Value>)>> = match (ns, after) {
            (_, Some(a)) => Box::new(m.range::<Key, _>((
                std::ops::Bound::Excluded(a.clone()),
                std::ops::Bound::Unbounded,
            ))),
            (Some(ns), None) => Box::new(m.range::<Key, _>((ns.to_string(), String::new())..)),
            (None, None) => Box::new(m.iter()),
        };
        iter.take_while(|(k, _)| ns.is_none_or(|n| k.0 == n))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn count(&self, gr: &str) -> usize {
        self.objects.get(gr).map_or(0, BTreeMap::len)
    }

    pub fn group_resources(&self) -> Vec<String> {
        self.objects.keys().cloned().collect()
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn emit(&mut self, ev: WatchEvent) {
        let ev = Arc::new(ev);
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
        // No receivers is fine; watchers subscribe under the same lock, so none can miss this.
        let _ = self.tx.send(ev);
    }

    /// Stores `obj` under a fresh resourceVersion and emits ADDED or MODIFIED.
    pub fn put(&mut self, gr: &str, mut obj: Value) -> Arc<Value> {
        let rv = self.next_rv();
        set_meta(&mut obj, "resourceVersion", Value::String(rv.to_string()));
        let ns = meta_str(&obj, "namespace").to_string();
        let name = meta_str(&obj, "name").to_string();
        if obj.pointer("/metadata/deletionTimestamp").is_some() {
            self.gc_pending = true;
        }
        let uid = meta_str(&obj, "uid");
        if !uid.is_empty() && !self.uids.contains(uid) {
            self.uids.insert(uid.to_string());
        }
        let obj = Arc::new(obj);
        let prev = self
            .objects
            .entry(gr.to_string())
            .or_default()
            .insert((ns.clone(), name.clone()), obj.clone());
        let owners = obj.pointer("/metadata/ownerReferences");
        if owners.is_some()
            && prev
                .as_ref()
                .is_none_or(|p| p.pointer("/metadata/ownerReferences") != owners)
        {
            self.gc_suspects.push((gr.to_string(), (ns.clone(), name)));
        }
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.emit(WatchEvent {
            rv,
            kind,
            gr: gr.to_string(),
            namespace: ns,
            object: obj.clone(),
            prev,
            json: OnceLock::new(),
        });
        obj
    }

    /// Removes an object; the DELETED event carries `last` (the final state) under a fresh
    /// resourceVersion, as etcd-backed deletes do.
    pub fn remove(
        &mut self,
        gr: &str,
        ns: &str,
        name: &str,
        last: Option<Value>,
    ) -> Option<Arc<Value>> {
        let prev = self
            .objects
            .get_mut(gr)?
            .remove(&(ns.to_string(), name.to_string()))?;
        let rv = self.next_rv();
        self.gc_pending = true;
        self.uids.remove(meta_str(&prev, "uid"));
        let mut obj = last.unwrap_or_else(|| (*prev).clone());
        set_meta(&mut obj, "resourceVersion", Value::String(rv.to_string()));
        let obj = Arc::new(obj);
        self.emit(WatchEvent {
            rv,
            kind: EventType::Deleted,
            gr: gr.to_string(),
            namespace: ns.to_string(),
            object: obj.clone(),
            prev: Some(prev),
            json: OnceLock::new(),
        });
        Some(obj)
    }

    /// Drops all objects of a group-resource without events (the CRD is gone; nobody can watch).
    pub fn drop_gr(&mut self, gr: &str) {
        if let Some(dropped) = self.objects.remove(gr) {
            for o in dropped.values() {
                self.uids.remove(meta_str(o, "uid"));
            }
        }
        // Not part of the replayable history: only open watches need to hear it.
        let _ = self.tx.send(Arc::new(WatchEvent {
            rv: self.rv,
            kind: EventType::Removed,
            gr: gr.to_string(),
            namespace: String::new(),
            object: Arc::new(Value::Null),
            prev: None,
            json: OnceLock::new(),
        }));
    }

    /// Events strictly after `rv`, or None when some of them are no longer retained.
    pub fn events_since(&self, rv: u64) -> Option<Vec<Arc<WatchEvent>>> {
        if rv < self.compacted_rv {
            return None;
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Some(self.history.range(start..).cloned().collect())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.tx.subscribe()
    }

    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_rv = self.rv;
    }

    /// Whether an object written with new owner references since the last call names an owner
    /// that does not exist (then the collector needs a full pass); forgets those objects.
    pub fn take_dangling_owners(&mut self) -> bool {
        let suspects = std::mem::take(&mut self.gc_suspects);
        suspects.iter().any(|(gr, (ns, name))| {
            self.get(gr, ns, name).is_some_and(|o| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter().any(|r| {
                            r.get("uid")
                                .and_then(Value::as_str)
                                .is_some_and(|u| !self.uids.contains(u))
                        })
                    })
            })
        })
    }

    /// Finds an object by uid (for owner lookups by the garbage collector).
    pub fn uid_set(&self) -> std::collections::HashSet<String> {
        let mut s = std::collections::HashSet::new();
        for m in self.objects.values() {
            for o in m.values() {
                s.insert(meta_str(o, "uid").to_string());
            }
        }
        s
    }
}

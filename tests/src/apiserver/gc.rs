//! The garbage collector, namespace controller and CRD cleanup controller, run as one
//! background pass woken after writes (asynchronous like the real controllers, but prompt).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::apiserver::crd::{CLEANUP_FINALIZER, CRD_GR};
use crate::apiserver::ops::{
    controller_delete, controller_update, FOREGROUND_FINALIZER, NAMESPACES_GR, ORPHAN_FINALIZER,
};
use crate::apiserver::resources::ResourceDef;
use crate::apiserver::store::{meta_str, Store};

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn owner_refs(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

fn without_finalizer(obj: &Value, f: &str) -> Value {
    let mut o = obj.clone();
    let rest: Vec<String> = finalizers(obj).into_iter().filter(|x| x != f).collect();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        if rest.is_empty() {
            m.remove("finalizers");
        } else {
            m.insert("finalizers".into(), json!(rest));
        }
    }
    o
}

fn with_owner_refs(obj: &Value, refs: Vec<Value>) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        if refs.is_empty() {
            m.remove("ownerReferences");
        } else {
            m.insert("ownerReferences".into(), Value::Array(refs));
        }
    }
    o
}

const NAMESPACE_CLEANUP_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

struct Item {
    def: Arc<ResourceDef>,
    obj: Arc<Value>,
}

/// One pass over the whole store; returns whether anything changed.
pub fn pass(store: &mut Store, now: DateTime<Utc>) -> bool {
    let now_s = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let before = store.rv;
    let defs = store.registry.all_resources();
    let mut items: Vec<Item> = Vec::new();
    for d in &defs {
        for (_, o) in store.list(&d.gr(), None, None) {
            items.push(Item {
                def: d.clone(),
                obj: o,
            });
        }
    }
    let uids: HashSet<String> = items
        .iter()
        .map(|i| meta_str(&i.obj, "uid").to_string())
        .collect();
    let mut dependents: HashMap<String, Vec<usize>> = HashMap::new();
    for (idx, i) in items.iter().enumerate() {
        for r in owner_refs(&i.obj) {
            if let Some(u) = r.get("uid").and_then(Value::as_str) {
                dependents.entry(u.to_string()).or_default().push(idx);
            }
        }
    }

    for i in &items {
        if !deleting(&i.obj) {
            continue;
        }
        let uid = meta_str(&i.obj, "uid").to_string();
        let fins = finalizers(&i.obj);
        let deps: Vec<&Item> = dependents
            .get(&uid)
            .map(|v| v.iter().map(|&x| &items[x]).collect())
            .unwrap_or_default();
        if fins.iter().any(|f| f == ORPHAN_FINALIZER) {
            for d in &deps {
                let refs: Vec<Value> = owner_refs(&d.obj)
                    .into_iter()
                    .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()))
                    .collect();
                controller_update(
                    store,
                    &d.def.gr(),
                    with_owner_refs(&d.obj, refs),
                    "generic-garbage-collector",
                    &now_s,
                );
            }
            controller_update(
                store,
                &i.def.gr(),
                without_finalizer(&i.obj, ORPHAN_FINALIZER),
                "generic-garbage-collector",
                &now_s,
            );
            continue;
        }
        if fins.iter().any(|f| f == FOREGROUND_FINALIZER) {
            let mut blocking = false;
            for d in &deps {
                let blocks = owner_refs(&d.obj).iter().any(|r| {
                    r.get("uid").and_then(Value::as_str) == Some(uid.as_str())
                        && r.get("blockOwnerDeletion") == Some(&Value::Bool(true))
                });
                blocking |= blocks;
                if !deleting(&d.obj) {
                    let has_own = dependents
                        .get(meta_str(&d.obj, "uid"))
                        .is_some_and(|v| !v.is_empty());
                    let policy = if has_own { "Foreground" } else { "Background" };
                    controller_delete(
                        store,
                        d.def.clone(),
                        meta_str(&d.obj, "namespace"),
                        meta_str(&d.obj, "name"),
                        policy,
                        now,
                    );
                }
            }
            if !blocking {
                controller_update(
                    store,
                    &i.def.gr(),
                    without_finalizer(&i.obj, FOREGROUND_FINALIZER),
                    "generic-garbage-collector",
                    &now_s,
                );
            }
        }
    }

    // Dependents whose owners are gone.
    for i in &items {
        let refs = owner_refs(&i.obj);
        if refs.is_empty() {
            continue;
        }
        let (alive, dead): (Vec<Value>, Vec<Value>) = refs.into_iter().partition(|r| {
            r.get("uid")
                .and_then(Value::as_str)
                .is_some_and(|u| uids.contains(u))
        });
        if dead.is_empty() {
            continue;
        }
        if alive.is_empty() {
            if !deleting(&i.obj) {
                controller_delete(
                    store,
                    i.def.clone(),
                    meta_str(&i.obj, "namespace"),
                    meta_str(&i.obj, "name"),
                    "Background",
                    now,
                );
            }
        } else {
            controller_update(
                store,
                &i.def.gr(),
                with_owner_refs(&i.obj, alive),
                "generic-garbage-collector",
                &now_s,
            );
        }
    }

    // Namespace controller: empty terminating namespaces, then release them.
    let mut waiting = false;
    for ns in items
        .iter()
        .filter(|i| i.def.gr() == NAMESPACES_GR && deleting(&i.obj))
    {
        let name = meta_str(&ns.obj, "name");
        // The real namespace controller takes a discovery round and a few seconds; clients
        // (kubectl delete -f with the namespace first) rely on contents outliving the call.
        let since = *store
            .ns_terminating_since
            .entry(meta_str(&ns.obj, "uid").to_string())
            .or_insert_with(std::time::Instant::now);
        if since.elapsed() < NAMESPACE_CLEANUP_DELAY {
            waiting = true;
            continue;
        }
        let mut remaining = 0usize;
        for i in items
            .iter()
            .filter(|i| i.def.namespaced && meta_str(&i.obj, "namespace") == name)
        {
            remaining += 1;
            if !deleting(&i.obj) {
                controller_delete(
                    store,
                    i.def.clone(),
                    name,
                    meta_str(&i.obj, "name"),
                    "Background",
                    now,
                );
            }
        }
        if remaining == 0 {
            let mut o = (*ns.obj).clone();
            o["spec"]["finalizers"] = json!([]);
            if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("finalizers");
            }
            controller_update(store, NAMESPACES_GR, o, "namespace-controller", &now_s);
        } else {
            let msg = format!("Some resources are remaining: {remaining} objects");
            let same = ns
                .obj
                .pointer("/status/conditions/0/message")
                .and_then(Value::as_str)
                == Some(msg.as_str());
            if same {
                continue;
            }
            let mut o = (*ns.obj).clone();
            o["status"]["conditions"] = json!([{
                "type": "NamespaceContentRemaining",
                "status": "True",
                "lastTransitionTime": now_s,
                "reason": "SomeResourcesRemain",
                "message": msg,
            }]);
            controller_update(store, NAMESPACES_GR, o, "namespace-controller", &now_s);
        }
    }

    // CRD cleanup: delete instances, then drop the cleanup finalizer.
    for c in items
        .iter()
        .filter(|i| i.def.gr() == CRD_GR && deleting(&i.obj))
    {
        if !finalizers(&c.obj).iter().any(|f| f == CLEANUP_FINALIZER) {
            continue;
        }
        let group = c
            .obj
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or("");
        let plural = c
            .obj
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut remaining = 0usize;
        if let Some(def) = store.registry.preferred(group, plural) {
            let instances = store.list(&def.gr(), None, None);
            remaining = instances.len();
            for (_, o) in instances {
                if !deleting(&o) {
                    controller_delete(
                        store,
                        def.clone(),
                        meta_str(&o, "namespace"),
                        meta_str(&o, "name"),
                        "Background",
                        now,
                    );
                }
            }
        }
        if remaining == 0 {
            controller_update(
                store,
                CRD_GR,
                without_finalizer(&c.obj, CLEANUP_FINALIZER),
                "apiextensions-apiserver",
                &now_s,
            );
        }
    }
    if waiting {
        store.gc_pending = true;
    }
    let live: HashSet<String> = items
        .iter()
        .filter(|i| i.def.gr() == NAMESPACES_GR)
        .map(|i| meta_str(&i.obj, "uid").to_string())
        .collect();
    store
        .ns_terminating_since
        .retain(|uid, _| live.contains(uid));
    store.rv != before
}

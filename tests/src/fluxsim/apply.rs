//! Server-side apply, garbage collection and health of arbitrary objects, for the
//! kustomize-controller part. Kinds are found through discovery (cached: a kind served once
//! stays served for the simulator's purposes; unknown kinds are looked up again each time,
//! since their CRD may be installed later).

use std::collections::HashMap;
use std::sync::Mutex;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::discovery::Scope;
use serde_json::Value;

use super::Error;

/// Field manager Flux's kustomize-controller applies with.
pub const FIELD_MANAGER: &str = "kustomize-controller";
pub const NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
pub const NAMESPACE_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";
const PRUNE_ANNOTATION: &str = "kustomize.toolkit.fluxcd.io/prune";

/// (group, version, kind)
type Gvk = (String, String, String);

pub struct Resources {
    client: kube::Client,
    /// The API resource of each kind seen, and whether it is namespaced.
    cache: Mutex<HashMap<Gvk, (ApiResource, bool)>>,
}

/// An object's identity as Flux's inventory records it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjRef {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjRef {
    /// `<namespace>_<name>_<group>_<kind>`
    pub fn id(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.namespace, self.name, self.group, self.kind
        )
    }

    pub fn from_entry(entry: &Value) -> Option<ObjRef> {
        let r: fluxconfig_api::flux::ResourceRef = serde_json::from_value(entry.clone()).ok()?;
        let id = r.parse_id()?;
        Some(ObjRef {
            group: id.group,
            version: r.v,
            kind: id.kind,
            namespace: id.namespace,
            name: id.name,
        })
    }

    /// How Flux names an object in messages: `Kind/namespace/name`.
    pub fn display(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.kind, self.name)
        } else {
            format!("{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

pub fn split_api_version(api_version: &str) -> (String, String) {
    match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.to_string()),
    }
}

impl Resources {
    pub fn new(client: kube::Client) -> Self {
        Resources {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The API resource of a kind and whether it is namespaced.
    pub async fn resolve(
        &self,
        group: &str,
        version: &str,
        kind: &str,
    ) -> Result<(ApiResource, bool), Error> {
        let k = (group.to_string(), version.to_string(), kind.to_string());
        if let Some(hit) = self.cached(&k) {
            return Ok(hit);
        }
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk).await?;
        let namespaced = caps.scope == Scope::Namespaced;
        match self.cache.lock() {
            Ok(mut c) => c.insert(k, (ar.clone(), namespaced)),
            Err(p) => p.into_inner().insert(k, (ar.clone(), namespaced)),
        };
        Ok((ar, namespaced))
    }

    fn cached(&self, k: &Gvk) -> Option<(ApiResource, bool)> {
        match self.cache.lock() {
            Ok(c) => c.get(k).cloned(),
            Err(p) => p.into_inner().get(k).cloned(),
        }
    }

    fn api(&self, ar: &ApiResource, namespace: &str) -> Api<DynamicObject> {
        if namespace.is_empty() {
            Api::all_with(self.client.clone(), ar)
        } else {
            Api::namespaced_with(self.client.clone(), namespace, ar)
        }
    }

    /// Server-side applies one object (forced, as kustomize-controller does) and returns what
    /// the inventory records for it.
    pub async fn apply(&self, obj: &Value) -> Result<ObjRef, Error> {
        let (group, version) = split_api_version(obj["apiVersion"].as_str().unwrap_or_default());
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let namespace = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (ar, _) = self.resolve(&group, &version, &kind).await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api(&ar, &namespace)
            .patch(&name, &params, &Patch::Apply(obj))
            .await?;
        Ok(ObjRef {
            group,
            version,
            kind,
            namespace,
            name,
        })
    }

    pub async fn get(&self, r: &ObjRef) -> Result<Option<DynamicObject>, Error> {
        let (ar, _) = self.resolve(&r.group, &r.version, &r.kind).await?;
        Ok(self.api(&ar, &r.namespace).get_opt(&r.name).await?)
    }

    /// Garbage-collects one object the way Flux does: only if it still carries the owning
    /// Kustomization's labels and has not opted out with `prune: disabled`.
    pub async fn prune(&self, r: &ObjRef, owner_ns: &str, owner: &str) -> Result<bool, Error> {
        let obj = match self.get(r).await {
            Ok(Some(obj)) => obj,
            Ok(None) => return Ok(false),
            // The kind is gone altogether (CRD deleted): nothing to delete.
            Err(Error::Kube(kube::Error::Api(s))) if s.code == 404 => return Ok(false),
            Err(e) => return Err(e),
        };
        let labels = obj.metadata.labels.clone().unwrap_or_default();
        let annotations = obj.metadata.annotations.clone().unwrap_or_default();
        let ours = labels.get(NAME_LABEL).map(String::as_str) == Some(owner)
            && labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(owner_ns);
        let disabled = annotations.get(PRUNE_ANNOTATION).map(String::as_str) == Some("disabled");
        if !ours || disabled {
            return Ok(false);
        }
        let (ar, _) = self.resolve(&r.group, &r.version, &r.kind).await?;
        match self
            .api(&ar, &r.namespace)
            .delete(&r.name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// kstatus's verdict on an object, as Flux's health checks use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Current,
    InProgress,
    Failed(String),
}

/// The generic kstatus rules (observedGeneration, then Stalled / Ready conditions); objects
/// without any status convention are current once they exist.
pub fn health(obj: &DynamicObject) -> Health {
    let status = obj.data.get("status");
    let generation = obj.metadata.generation;
    let observed = status
        .and_then(|s| s.get("observedGeneration"))
        .and_then(Value::as_i64);
    if let (Some(g), Some(o)) = (generation, observed) {
        if o < g {
            return Health::InProgress;
        }
    }
    let conditions = status
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let find = |t: &str| conditions.iter().find(|c| c["type"] == t);
    if let Some(stalled) = find("Stalled").filter(|c| c["status"] == "True") {
        return Health::Failed(stalled["message"].as_str().unwrap_or_default().to_string());
    }
    if find("Reconciling").is_some_and(|c| c["status"] == "True") {
        return Health::InProgress;
    }
    match find("Ready") {
        Some(c) if c["status"] == "True" => Health::Current,
        Some(_) => Health::InProgress,
        None => Health::Current,
    }
}

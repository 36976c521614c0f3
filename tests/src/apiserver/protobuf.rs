//! Decoding of the Kubernetes protobuf envelope for the built-in kinds kubectl's typed clients
//! send that way (`kubectl create namespace|secret|configmap|serviceaccount`). Responses are
//! always JSON, which clients accept because they list it in `Accept`.

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::apiserver::errors::{ApiError, ApiResult};

const MAGIC: &[u8] = b"k8s\x00";

#[derive(Clone, Copy)]
enum F {
    Str,
    Int,
    /// An optional (pointer) integer: present even when zero.
    IntP,
    IntOrStr,
    /// A plain (non-pointer, omitempty) bool: false is omitted from JSON.
    BoolOmit,
    Bool,
    Time,
    Msg(&'static [(u64, &'static str, F)]),
    RepStr,
    RepMsg(&'static [(u64, &'static str, F)]),
    MapStr,
    MapBytes,
}

type Schema = &'static [(u64, &'static str, F)];

const OWNER_REF: Schema = &[
    (1, "kind", F::Str),
    (3, "name", F::Str),
    (4, "uid", F::Str),
    (5, "apiVersion", F::Str),
    (6, "controller", F::Bool),
    (7, "blockOwnerDeletion", F::Bool),
];

const OBJECT_META: Schema = &[
    (1, "name", F::Str),
    (2, "generateName", F::Str),
    (3, "namespace", F::Str),
    (5, "uid", F::Str),
    (6, "resourceVersion", F::Str),
    (7, "generation", F::Int),
    (8, "creationTimestamp", F::Time),
    (9, "deletionTimestamp", F::Time),
    (10, "deletionGracePeriodSeconds", F::Int),
    (11, "labels", F::MapStr),
    (12, "annotations", F::MapStr),
    (13, "ownerReferences", F::RepMsg(OWNER_REF)),
    (14, "finalizers", F::RepStr),
];

const OBJECT_REF: Schema = &[
    (1, "kind", F::Str),
    (2, "namespace", F::Str),
    (3, "name", F::Str),
    (4, "uid", F::Str),
    (5, "apiVersion", F::Str),
    (6, "resourceVersion", F::Str),
    (7, "fieldPath", F::Str),
];

const LOCAL_REF: Schema = &[(1, "name", F::Str)];

const SUBJECT: Schema = &[
    (1, "kind", F::Str),
    (2, "apiGroup", F::Str),
    (3, "name", F::Str),
    (4, "namespace", F::Str),
];

const ROLE_REF: Schema = &[
    (1, "apiGroup", F::Str),
    (2, "kind", F::Str),
    (3, "name", F::Str),
];

const BINDING: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "subjects", F::RepMsg(SUBJECT)),
    (3, "roleRef", F::Msg(ROLE_REF)),
];

const POLICY_RULE: Schema = &[
    (1, "verbs", F::RepStr),
    (2, "apiGroups", F::RepStr),
    (3, "resources", F::RepStr),
    (4, "resourceNames", F::RepStr),
    (5, "nonResourceURLs", F::RepStr),
];

const ROLE: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "rules", F::RepMsg(POLICY_RULE)),
];

const SELECTOR_REQ: Schema = &[
    (1, "key", F::Str),
    (2, "operator", F::Str),
    (3, "values", F::RepStr),
];

const LABEL_SELECTOR: Schema = &[
    (1, "matchLabels", F::MapStr),
    (2, "matchExpressions", F::RepMsg(SELECTOR_REQ)),
];

const CONTAINER_PORT: Schema = &[
    (1, "name", F::Str),
    (2, "hostPort", F::Int),
    (3, "containerPort", F::Int),
    (4, "protocol", F::Str),
    (5, "hostIP", F::Str),
];

const ENV_VAR: Schema = &[(1, "name", F::Str), (2, "value", F::Str)];

const CONTAINER: Schema = &[
    (1, "name", F::Str),
    (2, "image", F::Str),
    (3, "command", F::RepStr),
    (4, "args", F::RepStr),
    (5, "workingDir", F::Str),
    (6, "ports", F::RepMsg(CONTAINER_PORT)),
    (7, "env", F::RepMsg(ENV_VAR)),
    (
        9,
        "volumeMounts",
        F::RepMsg(&[(1, "name", F::Str), (3, "mountPath", F::Str)]),
    ),
    (14, "imagePullPolicy", F::Str),
];

const POD_SPEC: Schema = &[
    (2, "containers", F::RepMsg(CONTAINER)),
    (3, "restartPolicy", F::Str),
    (4, "terminationGracePeriodSeconds", F::IntP),
    (6, "dnsPolicy", F::Str),
    (7, "nodeSelector", F::MapStr),
    (8, "serviceAccountName", F::Str),
    (20, "initContainers", F::RepMsg(CONTAINER)),
];

const POD_TEMPLATE: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(POD_SPEC)),
];

const DEPLOYMENT: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (
        2,
        "spec",
        F::Msg(&[
            (1, "replicas", F::IntP),
            (2, "selector", F::Msg(LABEL_SELECTOR)),
            (3, "template", F::Msg(POD_TEMPLATE)),
            (5, "minReadySeconds", F::Int),
            (6, "revisionHistoryLimit", F::IntP),
            (7, "paused", F::BoolOmit),
            (9, "progressDeadlineSeconds", F::IntP),
        ]),
    ),
];

const SERVICE_PORT: Schema = &[
    (1, "name", F::Str),
    (2, "protocol", F::Str),
    (3, "port", F::Int),
    (4, "targetPort", F::IntOrStr),
    (5, "nodePort", F::Int),
];

const SERVICE: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (
        2,
        "spec",
        F::Msg(&[
            (1, "ports", F::RepMsg(SERVICE_PORT)),
            (2, "selector", F::MapStr),
            (3, "clusterIP", F::Str),
            (4, "type", F::Str),
            (10, "externalName", F::Str),
        ]),
    ),
];

const NAMESPACE: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(&[(1, "finalizers", F::RepStr)])),
    (3, "status", F::Msg(&[(1, "phase", F::Str)])),
];

const SECRET: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "data", F::MapBytes),
    (3, "type", F::Str),
    (4, "stringData", F::MapStr),
    (5, "immutable", F::Bool),
];

const CONFIG_MAP: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "data", F::MapStr),
    (3, "binaryData", F::MapBytes),
    (4, "immutable", F::Bool),
];

const SERVICE_ACCOUNT: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "secrets", F::RepMsg(OBJECT_REF)),
    (3, "imagePullSecrets", F::RepMsg(LOCAL_REF)),
    (4, "automountServiceAccountToken", F::Bool),
];

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

fn malformed() -> ApiError {
    ApiError::bad_request("the body of the request was in an unknown format: malformed protobuf")
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> ApiResult<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i).ok_or_else(malformed)?;
            self.i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed())
    }

    fn bytes(&mut self) -> ApiResult<&'a [u8]> {
        let n = usize::try_from(self.varint()?).map_err(|_| malformed())?;
        let end = self.i.checked_add(n).ok_or_else(malformed)?;
        let s = self.b.get(self.i..end).ok_or_else(malformed)?;
        self.i = end;
        Ok(s)
    }

    /// Yields (field number, wire type, payload) for every field.
    fn fields(mut self) -> ApiResult<Vec<(u64, u64, Wire<'a>)>> {
        let mut out = Vec::new();
        while self.i < self.b.len() {
            let tag = self.varint()?;
            let (num, wt) = (tag >> 3, tag & 7);
            let w = match wt {
                0 => Wire::Varint(self.varint()?),
                1 => {
                    self.i += 8;
                    Wire::Skip
                }
                2 => Wire::Len(self.bytes()?),
                5 => {
                    self.i += 4;
                    Wire::Skip
                }
                _ => return Err(malformed()),
            };
            if self.i > self.b.len() {
                return Err(malformed());
            }
            out.push((num, wt, w));
        }
        Ok(out)
    }
}

enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Skip,
}

fn fields(b: &[u8]) -> ApiResult<Vec<(u64, u64, Wire<'_>)>> {
    Reader { b, i: 0 }.fields()
}

fn string(b: &[u8]) -> ApiResult<String> {
    String::from_utf8(b.to_vec()).map_err(|_| malformed())
}

fn map_entry(b: &[u8]) -> ApiResult<(String, Vec<u8>)> {
    let mut k = String::new();
    let mut v = Vec::new();
    for (n, _, w) in fields(b)? {
        if let Wire::Len(x) = w {
            match n {
                1 => k = string(x)?,
                2 => v = x.to_vec(),
                _ => {}
            }
        }
    }
    Ok((k, v))
}

fn message(b: &[u8], schema: Schema) -> ApiResult<Value> {
    let mut m = Map::new();
    for (n, _, w) in fields(b)? {
        let Some((_, name, kind)) = schema.iter().find(|(num, _, _)| *num == n) else {
            continue;
        };
        let name = name.to_string();
        match (kind, w) {
            // Go's JSON omits empty strings and zero numbers that gogo-protobuf always writes.
            (F::Str, Wire::Len(x)) => {
                if !x.is_empty() {
                    m.insert(name, json!(string(x)?));
                }
            }
            (F::Int, Wire::Varint(v)) => {
                if v != 0 {
                    m.insert(name, json!(v as i64));
                }
            }
            (F::IntP, Wire::Varint(v)) => {
                m.insert(name, json!(v as i64));
            }
            (F::IntOrStr, Wire::Len(x)) => {
                let mut ty = 0;
                let mut int = 0i64;
                let mut st = String::new();
                for (n, _, w) in fields(x)? {
                    match (n, w) {
                        (1, Wire::Varint(v)) => ty = v,
                        (2, Wire::Varint(v)) => int = v as i64,
                        (3, Wire::Len(b)) => st = string(b)?,
                        _ => {}
                    }
                }
                m.insert(name, if ty == 1 { json!(st) } else { json!(int) });
            }
            (F::BoolOmit, Wire::Varint(v)) => {
                if v != 0 {
                    m.insert(name, json!(true));
                }
            }
            (F::Bool, Wire::Varint(v)) => {
                m.insert(name, json!(v != 0));
            }
            (F::Time, Wire::Len(x)) => {
                let mut secs = 0i64;
                for (tn, _, tw) in fields(x)? {
                    if let (1, Wire::Varint(v)) = (tn, tw) {
                        secs = v as i64;
                    }
                }
                if let Some(t) = chrono::DateTime::from_timestamp(secs, 0).filter(|_| secs != 0) {
                    m.insert(
                        name,
                        json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    );
                }
            }
            (F::Msg(s), Wire::Len(x)) => {
                let v = message(x, s)?;
                if v.as_object().is_some_and(|o| !o.is_empty()) {
                    m.insert(name, v);
                }
            }
            (F::RepStr, Wire::Len(x)) => {
                let e = m.entry(name).or_insert_with(|| json!([]));
                if let Some(a) = e.as_array_mut() {
                    a.push(json!(string(x)?));
                }
            }
            (F::RepMsg(s), Wire::Len(x)) => {
                let v = message(x, s)?;
                let e = m.entry(name).or_insert_with(|| json!([]));
                if let Some(a) = e.as_array_mut() {
                    a.push(v);
                }
            }
            (F::MapStr, Wire::Len(x)) => {
                let (k, v) = map_entry(x)?;
                let e = m.entry(name).or_insert_with(|| json!({}));
                if let Some(o) = e.as_object_mut() {
                    o.insert(k, json!(string(&v)?));
                }
            }
            (F::MapBytes, Wire::Len(x)) => {
                let (k, v) = map_entry(x)?;
                let e = m.entry(name).or_insert_with(|| json!({}));
                if let Some(o) = e.as_object_mut() {
                    o.insert(
                        k,
                        json!(base64::engine::general_purpose::STANDARD.encode(v)),
                    );
                }
            }
            _ => return Err(malformed()),
        }
    }
    Ok(Value::Object(m))
}

pub fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim() == "application/vnd.kubernetes.protobuf")
}

/// Decodes a `runtime.Unknown`-wrapped object of a supported built-in kind into its JSON form.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let rest = body.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, _, w) in fields(rest)? {
        match (n, w) {
            (1, Wire::Len(tm)) => {
                for (tn, _, tw) in fields(tm)? {
                    match (tn, tw) {
                        (1, Wire::Len(x)) => api_version = string(x)?,
                        (2, Wire::Len(x)) => kind = string(x)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Len(x)) => raw = x,
            _ => {}
        }
    }
    let schema = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "Secret") => SECRET,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("v1", "Service") => SERVICE,
        ("apps/v1", "Deployment") => DEPLOYMENT,
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => BINDING,
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => ROLE,
        _ => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (protobuf {api_version}/{kind} is not supported by this server)"),
            ))
        }
    };
    let mut v = message(raw, schema)?;
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((num << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_secret() {
        let meta = [field(1, b"s1"), field(3, b"ns")].concat();
        let entry = [field(1, b"k"), field(2, b"v")].concat();
        let secret = [field(1, &meta), field(2, &entry), field(3, b"Opaque")].concat();
        let tm = [field(1, b"v1"), field(2, b"Secret")].concat();
        let mut body = MAGIC.to_vec();
        body.extend([field(1, &tm), field(2, &secret)].concat());
        let v = decode(&body).unwrap();
        assert_eq!(v["metadata"]["name"], "s1");
        assert_eq!(v["data"]["k"], "dg==");
        assert_eq!(v["kind"], "Secret");
    }
}

//! meta.k8s.io/v1 Table rendering (`Accept: application/json;as=Table`), as
//! `kubectl get` requests it.
//!
//! Cells follow the real server: built-in printers return human ages
//! ("5m") for AGE; custom-resource `date` columns are also converted to human
//! ages by the apiextensions table convertor; missing values are `null`
//! (kubectl prints `<none>`); the default convertor (kinds without a printer,
//! e.g. CustomResourceDefinition) prints NAME and CREATED AT (RFC 3339).

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

#[derive(Clone, Debug)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i32,
    /// A JSONPath for CRD columns; for built-in printers a `builtin:` marker
    /// naming the computed cell.
    pub json_path: String,
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATION_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

impl Column {
    /// An `additionalPrinterColumns` entry; None if name, type or jsonPath
    /// is missing (the server rejects such CRDs).
    pub fn from_crd_printer_column(v: &Value) -> Option<Column> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let json_path = s("jsonPath")?;
        let description = s("description")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| {
                format!("Custom resource definition column (in JSONPath format): {json_path}")
            });
        Some(Column {
            name: s("name")?,
            type_: s("type")?,
            format: s("format").unwrap_or_default(),
            description,
            priority: v
                .get("priority")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
            json_path,
        })
    }

    fn builtin(name: &str, type_: &str, description: &str, priority: i32, cell: &str) -> Column {
        Column {
            name: name.to_string(),
            type_: type_.to_string(),
            format: if cell == "name" {
                "name".into()
            } else {
                String::new()
            },
            description: description.to_string(),
            priority,
            json_path: format!("builtin:{cell}"),
        }
    }

    fn name_column() -> Column {
        Column::builtin("Name", "string", NAME_DESCRIPTION, 0, "name")
    }

    fn is_name_column(&self) -> bool {
        self.name == "Name" && self.format == "name"
    }
}

/// The columns a real server's printer produces for a built-in kind
/// (all of them, including `-o wide` ones with priority 1).
pub fn builtin_columns(kind: &str) -> Vec<Column> {
    let c = Column::builtin;
    let age = || c("Age", "string", CREATION_DESCRIPTION, 0, "age");
    match kind {
        "Namespace" => vec![
            Column::name_column(),
            c("Status", "string", "The status of the namespace", 0, "namespace-status"),
            age(),
        ],
        "Secret" => vec![
            Column::name_column(),
            c("Type", "string", "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types", 0, "secret-type"),
            c("Data", "string", "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4", 0, "secret-data"),
            age(),
        ],
        "ConfigMap" => vec![
            Column::name_column(),
            c("Data", "string", "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.", 0, "configmap-data"),
            age(),
        ],
        "ServiceAccount" => vec![
            Column::name_column(),
            c("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.", 0, "sa-secrets"),
            age(),
        ],
        "Lease" => vec![
            Column::name_column(),
            c("Holder", "string", "holderIdentity contains the identity of the holder of a current lease.", 0, "lease-holder"),
            age(),
        ],
        "Event" => vec![
            c("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded.", 0, "event-last-seen"),
            c("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future", 0, "event-type"),
            c("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.", 0, "event-reason"),
            c("Object", "string", "The object that this event is about.", 0, "event-object"),
            c("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].", 1, "event-subobject"),
            c("Source", "string", "The component reporting this event. Should be a short machine understandable string.", 1, "event-source"),
            c("Message", "string", "A human-readable description of the status of this operation.", 0, "event-message"),
            c("First Seen", "string", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)", 1, "event-first-seen"),
            c("Count", "string", "The number of times this event has occurred.", 1, "event-count"),
            Column { priority: 1, ..Column::name_column() },
        ],
        "Deployment" => vec![
            Column::name_column(),
            c("Ready", "string", "Number of the pod with ready state", 0, "deploy-ready"),
            c("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", 0, "deploy-updated"),
            c("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", 0, "deploy-available"),
            age(),
            c("Containers", "string", "Names of each container in the template.", 1, "template-containers"),
            c("Images", "string", "Images referenced by each container in the template.", 1, "template-images"),
            c("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.", 1, "label-selector"),
        ],
        "Service" => vec![
            Column::name_column(),
            c("Type", "string", "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer.", 0, "svc-type"),
            c("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly.", 0, "svc-cluster-ip"),
            c("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.", 0, "svc-external-ip"),
            c("Port(s)", "string", "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies", 0, "svc-ports"),
            age(),
            c("Selector", "string", "Route service traffic to pods with label keys and values matching this selector.", 1, "svc-selector"),
        ],
        "RoleBinding" | "ClusterRoleBinding" => {
            let (role_doc, noun) = if kind == "RoleBinding" {
                ("RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable.", "roleBinding")
            } else {
                ("RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable.", "clusterRoleBinding")
            };
            vec![
                Column::name_column(),
                c("Role", "string", role_doc, 0, "binding-role"),
                age(),
                c("Users", "string", &format!("Users in the {noun}"), 1, "binding-users"),
                c("Groups", "string", &format!("Groups in the {noun}"), 1, "binding-groups"),
                c("ServiceAccounts", "string", &format!("ServiceAccounts in the {noun}"), 1, "binding-sas"),
            ]
        }
        // Role/ClusterRole printers print exactly what the default table
        // convertor does: Name and the RFC 3339 creation time.
        // The default table convertor (CustomResourceDefinition and every
        // kind without a dedicated printer).
        _ => vec![
            Column::name_column(),
            Column {
                format: String::new(),
                ..c("Created At", "date", CREATION_DESCRIPTION, 0, "created-at")
            },
        ],
    }
}

/// `duration.HumanDuration` from apimachinery.
pub fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = d.num_minutes();
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = d.num_hours();
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn since(ts: Option<&str>, now: DateTime<Utc>) -> String {
    match ts.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => human_duration(now.signed_duration_since(t.with_timezone(&Utc))),
        None => "<unknown>".into(),
    }
}

fn str_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = obj;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

fn len_at(obj: &Value, key: &str) -> usize {
    match obj.get(key) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn builtin_cell(cell: &str, obj: &Value, now: DateTime<Utc>) -> Value {
    let s = |p: &[&str]| Value::String(str_at(obj, p).unwrap_or("").to_string());
    match cell {
        "name" => s(&["metadata", "name"]),
        "age" => Value::String(since(str_at(obj, &["metadata", "creationTimestamp"]), now)),
        "created-at" => match str_at(obj, &["metadata", "creationTimestamp"])
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        {
            Some(t) => Value::String(
                t.with_timezone(&Utc)
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string(),
            ),
            // A zero metav1.Time formats as Go's zero time.
            None => Value::String("0001-01-01T00:00:00Z".into()),
        },
        "namespace-status" => s(&["status", "phase"]),
        "secret-type" => s(&["type"]),
        "secret-data" => json!(len_at(obj, "data")),
        "configmap-data" => json!(len_at(obj, "data") + len_at(obj, "binaryData")),
        "sa-secrets" => json!(len_at(obj, "secrets")),
        "lease-holder" => match str_at(obj, &["spec", "holderIdentity"]) {
            Some(h) => Value::String(h.to_string()),
            None => Value::String("<unknown>".into()),
        },
        "event-last-seen" => Value::String(event_last_seen(obj, now)),
        "event-first-seen" => Value::String(event_first_seen(obj, now)),
        "event-type" => s(&["type"]),
        "event-reason" => s(&["reason"]),
        "event-object" => {
            let kind = str_at(obj, &["involvedObject", "kind"])
                .unwrap_or("")
                .to_lowercase();
            match str_at(obj, &["involvedObject", "name"]).filter(|n| !n.is_empty()) {
                Some(name) => Value::String(format!("{kind}/{name}")),
                None => Value::String(kind),
            }
        }
        "event-subobject" => s(&["involvedObject", "fieldPath"]),
        "event-source" => {
            let first_non_empty = |a: &[&str], b: &[&str]| {
                str_at(obj, a)
                    .filter(|c| !c.is_empty())
                    .or(str_at(obj, b))
                    .unwrap_or("")
                    .to_string()
            };
            let component = first_non_empty(&["source", "component"], &["reportingComponent"]);
            let host = first_non_empty(&["source", "host"], &["reportingInstance"]);
            if host.is_empty() {
                Value::String(component.to_string())
            } else {
                Value::String(format!("{component}, {host}"))
            }
        }
        "event-message" => {
            Value::String(str_at(obj, &["message"]).unwrap_or("").trim().to_string())
        }
        "event-count" => json!(event_count(obj)),
        // Up-to-date and Available are int64 cells under a "string" column.
        "deploy-ready" => Value::String(format!(
            "{}/{}",
            int_at(obj, &["status", "readyReplicas"]),
            int_at(obj, &["spec", "replicas"])
        )),
        "deploy-updated" => json!(int_at(obj, &["status", "updatedReplicas"])),
        "deploy-available" => json!(int_at(obj, &["status", "availableReplicas"])),
        "template-containers" => Value::String(template_containers(obj, "name")),
        "template-images" => Value::String(template_containers(obj, "image")),
        "label-selector" => Value::String(label_selector_string(obj.pointer("/spec/selector"))),
        "svc-type" => s(&["spec", "type"]),
        "svc-cluster-ip" => Value::String(service_cluster_ip(obj)),
        "svc-external-ip" => Value::String(service_external_ip(obj)),
        "svc-ports" => Value::String(service_ports(obj)),
        "svc-selector" => Value::String(format_labels(obj.pointer("/spec/selector"))),
        "binding-role" => Value::String(format!(
            "{}/{}",
            str_at(obj, &["roleRef", "kind"]).unwrap_or(""),
            str_at(obj, &["roleRef", "name"]).unwrap_or("")
        )),
        "binding-users" => Value::String(binding_subjects(obj, "User")),
        "binding-groups" => Value::String(binding_subjects(obj, "Group")),
        "binding-sas" => Value::String(binding_subjects(obj, "ServiceAccount")),
        _ => Value::Null,
    }
}

fn int_at(obj: &Value, path: &[&str]) -> i64 {
    let mut cur = obj;
    for p in path {
        match cur.get(*p) {
            Some(v) => cur = v,
            None => return 0,
        }
    }
    cur.as_i64().unwrap_or(0)
}

fn strs(list: Option<&Value>, key: &str) -> Vec<String> {
    list.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|it| {
                    it.get(key)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// layoutContainerCells: names and images of the pod template, comma-joined.
fn template_containers(obj: &Value, key: &str) -> String {
    strs(obj.pointer("/spec/template/spec/containers"), key).join(",")
}

/// `labels.FormatLabels`: sorted `k=v` pairs, `<none>` when empty.
fn format_labels(m: Option<&Value>) -> String {
    let mut pairs: Vec<String> = m
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        return "<none>".into();
    }
    pairs.sort();
    pairs.join(",")
}

/// `metav1.LabelSelectorAsSelector(sel).String()`: requirements sorted by
/// key; a nil or empty selector prints as the empty string.
fn label_selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|s| s.is_object()) else {
        return String::new();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let mut values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            values.sort();
            let text = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                _ => return "<invalid>".into(),
            };
            reqs.push((key.to_string(), text));
        }
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

fn service_cluster_ip(obj: &Value) -> String {
    obj.pointer("/spec/clusterIPs/0")
        .and_then(Value::as_str)
        .or_else(|| str_at(obj, &["spec", "clusterIP"]).filter(|s| !s.is_empty()))
        .unwrap_or("<none>")
        .to_string()
}

fn service_external_ip(obj: &Value) -> String {
    let external: Vec<String> = obj
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    match str_at(obj, &["spec", "type"]).unwrap_or("") {
        "ClusterIP" | "NodePort" if external.is_empty() => "<none>".into(),
        "ClusterIP" | "NodePort" => external.join(","),
        "LoadBalancer" => {
            // Server-side tables are printed wide: no truncation of long lists.
            let mut ips: Vec<String> = obj
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|i| {
                            i.get("ip")
                                .and_then(Value::as_str)
                                .filter(|s| !s.is_empty())
                                .or(i.get("hostname").and_then(Value::as_str))
                                .filter(|s| !s.is_empty())
                                .map(str::to_string)
                        })
                        .collect()
                })
                .unwrap_or_default();
            ips.extend(external);
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        "ExternalName" => str_at(obj, &["spec", "externalName"])
            .unwrap_or("")
            .to_string(),
        _ => "<unknown>".into(),
    }
}

/// makePortString: `port[:nodePort]/protocol`, comma-joined.
fn service_ports(obj: &Value) -> String {
    let pieces: Vec<String> = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) if np > 0 => format!("{port}:{np}/{proto}"),
                        _ => format!("{port}/{proto}"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if pieces.is_empty() {
        "<none>".into()
    } else {
        pieces.join(",")
    }
}

/// rbac.SubjectsStrings for one subject kind; service accounts print as
/// `namespace/name`.
fn binding_subjects(obj: &Value, kind: &str) -> String {
    let names: Vec<String> = obj
        .get("subjects")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|s| s.get("kind").and_then(Value::as_str) == Some(kind))
                .map(|s| {
                    let name = s.get("name").and_then(Value::as_str).unwrap_or("");
                    if kind == "ServiceAccount" {
                        let ns = s.get("namespace").and_then(Value::as_str).unwrap_or("");
                        format!("{ns}/{name}")
                    } else {
                        name.to_string()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    names.join(", ")
}

/// printEvent: last seen falls back to first seen, which falls back to
/// eventTime; a series overrides both last seen and count.
fn event_first_seen(obj: &Value, now: DateTime<Utc>) -> String {
    match str_at(obj, &["firstTimestamp"]) {
        Some(t) => since(Some(t), now),
        None => since(str_at(obj, &["eventTime"]), now),
    }
}

fn event_last_seen(obj: &Value, now: DateTime<Utc>) -> String {
    if let Some(t) = str_at(obj, &["series", "lastObservedTime"]) {
        return since(Some(t), now);
    }
    match str_at(obj, &["lastTimestamp"]) {
        Some(t) => since(Some(t), now),
        None => event_first_seen(obj, now),
    }
}

fn event_count(obj: &Value) -> i64 {
    if let Some(c) = obj.get("series").and_then(|s| s.get("count")) {
        return c.as_i64().unwrap_or(0);
    }
    match obj.get("count").and_then(Value::as_i64) {
        Some(c) if c != 0 => c,
        // Singleton events of the events.k8s.io API carry no count.
        _ => 1,
    }
}

/// How a value prints through Go's `fmt` (jsonpath text output).
fn go_print(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_print).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", go_print(&m[k.as_str()])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
        other => other.to_string(),
    }
}

/// The apiextensions table convertor's per-type cell conversion.
fn crd_cell(col: &Column, obj: &Value, now: DateTime<Utc>) -> Value {
    let results = eval_json_path(obj, &col.json_path);
    let Some(value) = results.into_iter().next() else {
        return Value::Null;
    };
    if value.is_null() {
        return Value::Null;
    }
    match col.type_.as_str() {
        "string" => Value::String(go_print(&value)),
        "integer" => match value.as_i64().or_else(|| value.as_f64().map(|f| f as i64)) {
            Some(i) => json!(i),
            None => Value::Null,
        },
        "number" => match value.as_f64() {
            Some(f) => json!(f),
            None => Value::Null,
        },
        "boolean" => match value {
            Value::Bool(b) => Value::Bool(b),
            _ => Value::Null,
        },
        "date" => match value.as_str() {
            Some(t) => match DateTime::parse_from_rfc3339(t) {
                Ok(ts) => Value::String(human_duration(
                    now.signed_duration_since(ts.with_timezone(&Utc)),
                )),
                Err(_) => Value::String("<invalid>".into()),
            },
            None => Value::Null,
        },
        _ => Value::Null,
    }
}

fn partial_object_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Builds a meta.k8s.io/v1 Table.
///
/// `columns` is either `builtin_columns(kind)` (which start with, or contain,
/// the Name column) or the CRD's printer columns via
/// `Column::from_crd_printer_column`, in which case "Name" is prepended and,
/// when the CRD has no printer columns at all, the default "Age" column is
/// used, as `serveDefaultColumnsIfEmpty` does. `include_object` is "None",
/// "Metadata" (the default) or "Object".
pub fn build_table(
    kind: &str,
    columns: &[Column],
    objects: &[Value],
    include_object: &str,
    list_meta: Value,
    now: DateTime<Utc>,
) -> Value {
    let is_builtin = columns.iter().any(|c| c.json_path.starts_with("builtin:"));
    let mut cols: Vec<Column> = Vec::new();
    if is_builtin {
        cols.extend(columns.iter().cloned());
    } else {
        cols.push(Column::name_column());
        if columns.is_empty() {
            cols.push(Column {
                name: "Age".into(),
                type_: "date".into(),
                format: String::new(),
                description: CREATION_DESCRIPTION.into(),
                priority: 0,
                json_path: ".metadata.creationTimestamp".into(),
            });
        } else {
            cols.extend(columns.iter().filter(|c| !c.is_name_column()).cloned());
        }
    }
    // `kind` only matters through the columns; kept for callers that log it.
    let _ = kind;

    let defs: Vec<Value> = cols
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = cols
                .iter()
                .map(|c| match c.json_path.strip_prefix("builtin:") {
                    Some(cell) => builtin_cell(cell, o, now),
                    None if c.is_name_column() => builtin_cell("name", o, now),
                    None => crd_cell(c, o, now),
                })
                .collect();
            let object = match include_object {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => partial_object_metadata(o),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    let metadata = match list_meta {
        Value::Object(m) => Value::Object(m),
        _ => Value::Object(Map::new()),
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

// ---------------------------------------------------------------------------
// JSONPath subset
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Wildcard,
    Index(i64),
    Filter {
        path: Vec<String>,
        op: Option<(bool, Value)>,
    },
}

fn parse_literal(s: &str) -> Value {
    let s = s.trim();
    if (s.starts_with('"') && s.ends_with('"') && s.len() >= 2)
        || (s.starts_with('\'') && s.ends_with('\'') && s.len() >= 2)
    {
        return Value::String(s[1..s.len() - 1].to_string());
    }
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

fn parse_filter(expr: &str) -> Option<Step> {
    let inner = expr.strip_prefix("?(")?.strip_suffix(')')?.trim();
    let (lhs, op) = if let Some((l, r)) = inner.split_once("==") {
        (l.trim(), Some((true, parse_literal(r))))
    } else if let Some((l, r)) = inner.split_once("!=") {
        (l.trim(), Some((false, parse_literal(r))))
    } else {
        (inner, None)
    };
    let rest = lhs.strip_prefix('@')?;
    let path: Vec<String> = rest
        .split('.')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    Some(Step::Filter { path, op })
}

fn parse_path(path: &str) -> Option<Vec<Step>> {
    let mut p = path.trim();
    if let Some(inner) = p.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
        p = inner.trim();
    }
    p = p.strip_prefix('$').unwrap_or(p);
    let chars: Vec<char> = p.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                match name.as_str() {
                    "" => {}
                    "*" => steps.push(Step::Wildcard),
                    _ => steps.push(Step::Field(name)),
                }
            }
            '[' => {
                // Find the matching ']' outside of quotes.
                let start = i + 1;
                let mut j = start;
                let mut quote: Option<char> = None;
                while j < chars.len() {
                    let c = chars[j];
                    match quote {
                        Some(q) if c == q => quote = None,
                        Some(_) => {}
                        None if c == '"' || c == '\'' => quote = Some(c),
                        None if c == ']' => break,
                        None => {}
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return None;
                }
                let inner: String = chars[start..j].iter().collect();
                let inner = inner.trim();
                if inner == "*" {
                    steps.push(Step::Wildcard);
                } else if inner.starts_with('?') {
                    steps.push(parse_filter(inner)?);
                } else if let Ok(n) = inner.parse::<i64>() {
                    steps.push(Step::Index(n));
                } else if let Value::String(s) = parse_literal(inner) {
                    steps.push(Step::Field(s));
                } else {
                    return None;
                }
                i = j + 1;
            }
            _ => {
                // A bare leading name (`spec.url`) is accepted like `.spec.url`.
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                steps.push(Step::Field(chars[start..i].iter().collect()));
            }
        }
    }
    Some(steps)
}

fn filter_matches(item: &Value, path: &[String], op: &Option<(bool, Value)>) -> bool {
    let mut cur = item;
    for p in path {
        match cur.get(p.as_str()) {
            Some(v) => cur = v,
            None => return false,
        }
    }
    match op {
        None => true,
        Some((eq, lit)) => {
            let same = match (cur, lit) {
                (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
                _ => cur == lit,
            };
            same == *eq
        }
    }
}

/// Evaluates the JSONPath subset used by kubectl and CRD printer columns:
/// `.a.b`, `['a']`, `[N]` (negative from the end), `[*]`, `.*`, and
/// `[?(@.k=="v")]` / `!=` / existence filters. Missing keys yield no results.
pub fn eval_json_path(obj: &Value, path: &str) -> Vec<Value> {
    let Some(steps) = parse_path(path) else {
        return Vec::new();
    };
    let mut cur: Vec<&Value> = vec![obj];
    for step in &steps {
        let mut next = Vec::new();
        for v in cur {
            match step {
                Step::Field(f) => {
                    if let Some(c) = v.get(f.as_str()) {
                        next.push(c);
                    }
                }
                Step::Wildcard => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => {
                        let mut keys: Vec<&String> = m.keys().collect();
                        keys.sort();
                        next.extend(keys.into_iter().map(|k| &m[k.as_str()]));
                    }
                    _ => {}
                },
                Step::Index(n) => {
                    if let Value::Array(a) = v {
                        let idx = if *n < 0 { a.len() as i64 + n } else { *n };
                        if let Some(c) = usize::try_from(idx).ok().and_then(|i| a.get(i)) {
                            next.push(c);
                        }
                    }
                }
                Step::Filter { path, op } => {
                    if let Value::Array(a) = v {
                        next.extend(a.iter().filter(|it| filter_matches(it, path, op)));
                    }
                }
            }
        }
        cur = next;
    }
    cur.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn gitrepo_columns() -> Vec<Column> {
        let path = format!(
            "{}/../../shared/reference/flux-crds/source.toolkit.fluxcd.io_gitrepositories.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Column::from_crd_printer_column)
            .collect()
    }

    fn gitrepo(ready: Option<&str>) -> Value {
        let mut o = json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "podinfo", "namespace": "flux-system",
                         "creationTimestamp": "2026-01-01T11:55:00Z", "resourceVersion": "7"},
            "spec": {"url": "https://github.com/stefanprodan/podinfo", "interval": "1m"},
        });
        if let Some(r) = ready {
            o["status"] = json!({"conditions": [
                {"type": "Reconciling", "status": "False", "message": "x"},
                {"type": "Ready", "status": r, "message": "stored artifact for revision 'main@sha1:abc'"}]});
        }
        o
    }

    #[test]
    fn json_path_table() {
        let o = json!({"spec": {"url": "u", "list": [{"n": 1, "t": "a"}, {"n": 2, "t": "b"}], "m": {"k.x": "v"}},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let cases: Vec<(&str, Vec<Value>)> = vec![
            (".spec.url", vec![json!("u")]),
            ("{.spec.url}", vec![json!("u")]),
            ("$.spec.url", vec![json!("u")]),
            (".spec.missing", vec![]),
            (".spec.list[0].n", vec![json!(1)]),
            (".spec.list[-1].n", vec![json!(2)]),
            (".spec.list[5].n", vec![]),
            (".spec.list[*].t", vec![json!("a"), json!("b")]),
            (".spec.list[?(@.t==\"b\")].n", vec![json!(2)]),
            (".spec.list[?(@.t=='a')].n", vec![json!(1)]),
            (".spec.list[?(@.t!=\"a\")].n", vec![json!(2)]),
            (".spec.list[?(@.n==2)].t", vec![json!("b")]),
            (".spec.list[?(@.zz)].t", vec![]),
            (".spec.m['k.x']", vec![json!("v")]),
            (
                ".status.conditions[?(@.type==\"Ready\")].status",
                vec![json!("True")],
            ),
        ];
        for (p, want) in cases {
            assert_eq!(eval_json_path(&o, p), want, "{p}");
        }
    }

    #[test]
    fn human_durations_match_apimachinery() {
        let cases: &[(i64, &str)] = &[
            (-5, "<invalid>"),
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 120, "3h2m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
            (3000 * 86400, "8y"),
        ];
        for (secs, want) in cases {
            assert_eq!(
                human_duration(chrono::Duration::seconds(*secs)),
                *want,
                "{secs}"
            );
        }
    }

    #[test]
    fn crd_table_for_flux_gitrepository() {
        let cols = gitrepo_columns();
        assert_eq!(
            cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            vec!["URL", "Age", "Ready", "Status"]
        );
        let t = build_table(
            "GitRepository",
            &cols,
            &[gitrepo(Some("True")), gitrepo(None)],
            "Metadata",
            json!({"resourceVersion": "9"}),
            now(),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"], json!({"resourceVersion": "9"}));
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["Name", "URL", "Age", "Ready", "Status"]);
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        assert_eq!(
            t["columnDefinitions"][1]["description"],
            "Custom resource definition column (in JSONPath format): .spec.url"
        );
        assert_eq!(t["columnDefinitions"][2]["type"], "date");
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "podinfo",
                "https://github.com/stefanprodan/podinfo",
                "5m",
                "True",
                "stored artifact for revision 'main@sha1:abc'"
            ])
        );
        assert_eq!(
            t["rows"][1]["cells"],
            json!([
                "podinfo",
                "https://github.com/stefanprodan/podinfo",
                "5m",
                null,
                null
            ])
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "podinfo");
        assert!(t["rows"][0]["object"].get("spec").is_none());
    }

    #[test]
    fn crd_without_columns_gets_default_age() {
        let t = build_table("X", &[], &[gitrepo(None)], "None", json!({}), now());
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["Name", "Age"]);
        assert_eq!(t["rows"][0]["cells"], json!(["podinfo", "5m"]));
        assert_eq!(t["rows"][0]["object"], Value::Null);
    }

    #[test]
    fn crd_cell_types() {
        let col = |t: &str, p: &str| {
            Column::from_crd_printer_column(&json!({"name": "C", "type": t, "jsonPath": p}))
                .unwrap()
        };
        let o = json!({"metadata": {"name": "n"}, "spec": {"i": 3, "f": 2.5, "b": true, "s": "x", "m": {"a": 1}, "bad": "nope"}});
        let cols = vec![
            col("integer", ".spec.i"),
            col("number", ".spec.f"),
            col("boolean", ".spec.b"),
            col("string", ".spec.m"),
            col("integer", ".spec.f"),
            col("date", ".spec.bad"),
            col("boolean", ".spec.s"),
            col("string", ".spec.i"),
        ];
        let t = build_table(
            "X",
            &cols,
            std::slice::from_ref(&o),
            "Object",
            json!({}),
            now(),
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["n", 3, 2.5, true, "map[a:1]", 2, "<invalid>", null, "3"])
        );
        assert_eq!(t["rows"][0]["object"], o);
    }

    #[test]
    fn printer_column_parsing() {
        let c = Column::from_crd_printer_column(
            &json!({"name": "Ready", "type": "string", "jsonPath": ".status.x",
            "description": "d", "priority": 1, "format": "f"}),
        )
        .unwrap();
        assert_eq!(
            (
                c.name.as_str(),
                c.type_.as_str(),
                c.format.as_str(),
                c.description.as_str(),
                c.priority
            ),
            ("Ready", "string", "f", "d", 1)
        );
        assert!(Column::from_crd_printer_column(&json!({"name": "x", "type": "string"})).is_none());
    }

    #[test]
    fn builtin_tables() {
        let ts = "2026-01-01T10:00:00Z";
        let ns = json!({"kind": "Namespace", "metadata": {"name": "flux-system", "creationTimestamp": ts}, "status": {"phase": "Active"}});
        let t = build_table(
            "Namespace",
            &builtin_columns("Namespace"),
            &[ns],
            "Metadata",
            json!({}),
            now(),
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["flux-system", "Active", "120m"])
        );

        let sec = json!({"metadata": {"name": "s", "creationTimestamp": ts}, "type": "Opaque", "data": {"a": "", "b": ""}});
        let t = build_table(
            "Secret",
            &builtin_columns("Secret"),
            &[sec],
            "Metadata",
            json!({}),
            now(),
        );
        assert_eq!(t["rows"][0]["cells"], json!(["s", "Opaque", 2, "120m"]));

        let cm = json!({"metadata": {"name": "c", "creationTimestamp": ts}, "data": {"a": ""}, "binaryData": {"b": ""}});
        let t = build_table(
            "ConfigMap",
            &builtin_columns("ConfigMap"),
            &[cm],
            "Metadata",
            json!({}),
            now(),
        );
        assert_eq!(t["rows"][0]["cells"], json!(["c", 2, "120m"]));

        let sa = json!({"metadata": {"name": "default", "creationTimestamp": ts}});
        let t = build_table(
            "ServiceAccount",
            &builtin_columns("ServiceAccount"),
            &[sa],
            "Metadata",
            json!({}),
            now(),
        );
        assert_eq!(t["rows"][0]["cells"], json!(["default", 0, "120m"]));

        let lease = json!({"metadata": {"name": "l", "creationTimestamp": ts}, "spec": {"holderIdentity": "pod-1"}});
        let t = build_table(
            "Lease",
            &builtin_columns("Lease"),
            &[lease],
            "Metadata",
            json!({}),
            now(),
        );
        assert_eq!(t["rows"][0]["cells"], json!(["l", "pod-1", "120m"]));

        let crd = json!({"metadata": {"name": "gitrepositories.source.toolkit.fluxcd.io", "creationTimestamp": "2026-01-01T10:00:00+00:00"}});
        let t = build_table(
            "CustomResourceDefinition",
            &builtin_columns("CustomResourceDefinition"),
            &[crd],
            "Metadata",
            json!({}),
            now(),
        );
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["Name", "Created At"]);
        assert_eq!(t["columnDefinitions"][1]["type"], "date");
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "gitrepositories.source.toolkit.fluxcd.io",
                "2026-01-01T10:00:00Z"
            ])
        );
    }

    #[test]
    fn workload_and_rbac_tables() {
        let ts = "2026-01-01T10:00:00Z";
        let names = |kind: &str| -> Vec<(String, i32)> {
            builtin_columns(kind)
                .into_iter()
                .map(|c| (c.name, c.priority))
                .collect()
        };
        let n = |v: &[(&str, i32)]| -> Vec<(String, i32)> {
            v.iter().map(|(a, p)| (a.to_string(), *p)).collect()
        };
        assert_eq!(
            names("Deployment"),
            n(&[
                ("Name", 0),
                ("Ready", 0),
                ("Up-to-date", 0),
                ("Available", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1)
            ])
        );
        let dep = json!({"metadata": {"name": "web", "creationTimestamp": ts},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "a": "b"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["y", "x"]}]},
                "template": {"spec": {"containers": [{"name": "c1", "image": "nginx:1"}, {"name": "c2", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = build_table(
            "Deployment",
            &builtin_columns("Deployment"),
            &[dep],
            "Metadata",
            json!({}),
            now(),
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web",
                "2/3",
                3,
                2,
                "120m",
                "c1,c2",
                "nginx:1,busybox",
                "a=b,app=web,tier in (x,y)"
            ])
        );
        let fresh =
            json!({"metadata": {"name": "d", "creationTimestamp": ts}, "spec": {"replicas": 1}});
        let t = build_table(
            "Deployment",
            &builtin_columns("Deployment"),
            &[fresh],
            "Metadata",
            json!({}),
            now(),
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["d", "0/1", 0, 0, "120m", "", "", ""])
        );

        assert_eq!(
            names("Service"),
            n(&[
                ("Name", 0),
                ("Type", 0),
                ("Cluster-IP", 0),
                ("External-IP", 0),
                ("Port(s)", 0),
                ("Age", 0),
                ("Selector", 1)
            ])
        );
        let svc = |spec: Value, status: Value| json!({"metadata": {"name": "s", "creationTimestamp": ts}, "spec": spec, "status": status});
        let cells = |o: Value| {
            build_table(
                "Service",
                &builtin_columns("Service"),
                &[o],
                "Metadata",
                json!({}),
                now(),
            )["rows"][0]["cells"]
                .clone()
        };
        assert_eq!(
            cells(svc(
                json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}], "selector": {"b": "2", "a": "1"}}),
                json!({})
            )),
            json!([
                "s",
                "ClusterIP",
                "10.96.0.10",
                "<none>",
                "80/TCP,443/TCP",
                "120m",
                "a=1,b=2"
            ])
        );
        assert_eq!(
            cells(svc(
                json!({"type": "NodePort", "clusterIPs": ["10.0.0.1"], "externalIPs": ["1.2.3.4"],
                "ports": [{"port": 80, "nodePort": 30080, "protocol": "UDP"}]}),
                json!({})
            )),
            json!([
                "s",
                "NodePort",
                "10.0.0.1",
                "1.2.3.4",
                "80:30080/UDP",
                "120m",
                "<none>"
            ])
        );
        assert_eq!(
            cells(svc(
                json!({"type": "LoadBalancer", "clusterIPs": ["10.0.0.2"]}),
                json!({})
            )),
            json!([
                "s",
                "LoadBalancer",
                "10.0.0.2",
                "<pending>",
                "<none>",
                "120m",
                "<none>"
            ])
        );
        assert_eq!(
            cells(svc(
                json!({"type": "LoadBalancer", "clusterIPs": ["10.0.0.2"]}),
                json!({"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example"}]}})
            ))[3],
            json!("5.6.7.8,lb.example")
        );
        assert_eq!(
            cells(svc(
                json!({"type": "ExternalName", "externalName": "db.example"}),
                json!({})
            ))[3],
            json!("db.example")
        );

        for kind in ["RoleBinding", "ClusterRoleBinding"] {
            assert_eq!(
                names(kind),
                n(&[
                    ("Name", 0),
                    ("Role", 0),
                    ("Age", 0),
                    ("Users", 1),
                    ("Groups", 1),
                    ("ServiceAccounts", 1)
                ])
            );
        }
        let rb = json!({"metadata": {"name": "rb", "creationTimestamp": ts},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "User", "name": "bob"},
                {"kind": "Group", "name": "devs"}, {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}]});
        let t = build_table(
            "RoleBinding",
            &builtin_columns("RoleBinding"),
            &[rb],
            "Metadata",
            json!({}),
            now(),
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "rb",
                "ClusterRole/view",
                "120m",
                "alice, bob",
                "devs",
                "ns/sa"
            ])
        );
        for kind in ["Role", "ClusterRole"] {
            assert_eq!(names(kind), n(&[("Name", 0), ("Created At", 0)]));
            let r = json!({"metadata": {"name": "r", "creationTimestamp": ts}});
            let t = build_table(
                kind,
                &builtin_columns(kind),
                &[r],
                "Metadata",
                json!({}),
                now(),
            );
            assert_eq!(t["rows"][0]["cells"], json!(["r", ts]));
            assert_eq!(t["columnDefinitions"][1]["type"], "date");
        }
    }

    #[test]
    fn event_table() {
        let ev = json!({"metadata": {"name": "podinfo.17a", "creationTimestamp": "2026-01-01T11:00:00Z"},
            "involvedObject": {"kind": "GitRepository", "name": "podinfo", "fieldPath": ""},
            "reason": "NewArtifact", "message": "stored artifact", "type": "Normal",
            "source": {"component": "source-controller"}, "count": 3,
            "firstTimestamp": "2026-01-01T11:00:00Z", "lastTimestamp": "2026-01-01T11:59:00Z"});
        let cols = builtin_columns("Event");
        let names: Vec<(&str, i32)> = cols.iter().map(|c| (c.name.as_str(), c.priority)).collect();
        assert_eq!(
            names,
            vec![
                ("Last Seen", 0),
                ("Type", 0),
                ("Reason", 0),
                ("Object", 0),
                ("Subobject", 1),
                ("Source", 1),
                ("Message", 0),
                ("First Seen", 1),
                ("Count", 1),
                ("Name", 1)
            ]
        );
        let t = build_table("Event", &cols, &[ev], "Metadata", json!({}), now());
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "60s",
                "Normal",
                "NewArtifact",
                "gitrepository/podinfo",
                "",
                "source-controller",
                "stored artifact",
                "60m",
                3,
                "podinfo.17a"
            ])
        );
    }

    #[test]
    fn every_flux_printer_column_parses() {
        let dir = format!(
            "{}/../../shared/reference/flux-crds",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let crd: Value = serde_saphyr::from_str(&text).unwrap();
            for v in crd["spec"]["versions"].as_array().unwrap() {
                for c in v["additionalPrinterColumns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let col = Column::from_crd_printer_column(c).unwrap();
                    assert!(parse_path(&col.json_path).is_some(), "{}", col.json_path);
                    seen += 1;
                }
            }
        }
        assert!(seen >= 30, "{seen}");
    }

    #[test]
    fn event_series_and_singletons() {
        let cols = builtin_columns("Event");
        let singleton = json!({"metadata": {"name": "e1"}, "eventTime": "2026-01-01T11:58:00.000000Z",
            "reportingComponent": "kustomize-controller", "reportingInstance": "pod-1",
            "involvedObject": {"kind": "Namespace"}, "message": "  spaced  ", "type": "Warning", "reason": "R"});
        let series = json!({"metadata": {"name": "e2"}, "eventTime": "2026-01-01T11:00:00.000000Z",
            "series": {"count": 7, "lastObservedTime": "2026-01-01T11:59:30.000000Z"},
            "involvedObject": {"kind": "Kustomization", "name": "apps"}, "type": "Normal", "reason": "R", "message": "m"});
        let t = build_table(
            "Event",
            &cols,
            &[singleton, series],
            "None",
            json!({}),
            now(),
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "2m",
                "Warning",
                "R",
                "namespace",
                "",
                "kustomize-controller, pod-1",
                "spaced",
                "2m",
                1,
                "e1"
            ])
        );
        assert_eq!(
            t["rows"][1]["cells"],
            json!([
                "30s",
                "Normal",
                "R",
                "kustomization/apps",
                "",
                "",
                "m",
                "60m",
                7,
                "e2"
            ])
        );
    }
}

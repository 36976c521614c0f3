//! Structural schema handling (prune, default, validate), ObjectMeta
//! validation, and the list/map type information that server-side apply and
//! strategic merge patch need.
//!
//! CEL rules (`x-kubernetes-validations`) are evaluated by `cel` for the
//! subset of CEL the Flux CRDs use; a rule outside it is logged and skipped.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

// ---------------------------------------------------------------------------
// Type information
// ---------------------------------------------------------------------------

/// How a list is merged and owned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole and owned as one field (the default everywhere).
    #[default]
    Atomic,
    /// Scalars merged by value.
    Set,
    /// Objects merged by the given key fields.
    Map(Vec<String>),
}

/// List/map semantics for SSA and strategic merge, derived from a structural
/// schema or from built-in knowledge.
#[derive(Clone, Debug, Default)]
pub struct TypeInfo {
    fields: BTreeMap<String, TypeInfo>,
    /// Element type of a list, or value type of a map (`additionalProperties`).
    elem: Option<Box<TypeInfo>>,
    list: ListType,
    /// `x-kubernetes-map-type: atomic` (or an atomic struct).
    map_atomic: bool,
    /// Unknown fields are kept (`x-kubernetes-preserve-unknown-fields`); they
    /// get the "deduced" type: granular maps, atomic lists.
    preserve: bool,
    /// This node is itself of the deduced type.
    deduced: bool,
    /// A map with typed values (`additionalProperties`).
    map: bool,
    /// Schema defaults of `map` list key fields: an element that omits such
    /// a key is identified by the default (`protocol: TCP` of ports), as
    /// structured-merge-diff does before defaulting runs.
    key_defaults: BTreeMap<String, Value>,
    /// Strategic-merge-patch semantics where they differ from the SSA list
    /// type (`patchStrategy`/`patchMergeKey` vs `listType`/`listMapKey`).
    smp: Option<ListType>,
}

static EMPTY: TypeInfo = TypeInfo {
    fields: BTreeMap::new(),
    elem: None,
    list: ListType::Atomic,
    map_atomic: false,
    preserve: false,
    deduced: false,
    map: false,
    key_defaults: BTreeMap::new(),
    smp: None,
};

static DEDUCED: TypeInfo = TypeInfo {
    fields: BTreeMap::new(),
    elem: None,
    list: ListType::Atomic,
    map_atomic: false,
    preserve: true,
    deduced: true,
    map: false,
    key_defaults: BTreeMap::new(),
    smp: None,
};

impl TypeInfo {
    pub fn from_schema(openapi_v3_schema: &Value) -> TypeInfo {
        let mut t = Self::from_schema_node(openapi_v3_schema);
        // ObjectMeta is not described by the CRD schema; its semantics are fixed.
        t.fields.insert("metadata".to_string(), object_meta_type());
        t
    }

    fn from_schema_node(s: &Value) -> TypeInfo {
        let mut t = TypeInfo::default();
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                t.fields.insert(k.clone(), Self::from_schema_node(v));
            }
        }
        if let Some(ap) = s.get("additionalProperties").filter(|v| v.is_object()) {
            t.elem = Some(Box::new(Self::from_schema_node(ap)));
            t.map = true;
        }
        if let Some(items) = s.get("items").filter(|v| v.is_object()) {
            t.elem = Some(Box::new(Self::from_schema_node(items)));
        }
        t.list = match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(
                s.get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => ListType::Atomic,
        };
        if let ListType::Map(keys) = &t.list {
            for k in keys {
                if let Some(d) = s.pointer(&format!("/items/properties/{k}/default")) {
                    t.key_defaults.insert(k.clone(), d.clone());
                }
            }
        }
        t.map_atomic = s.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
        t.preserve = s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if s.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true)) {
            t.fields
                .entry("metadata".to_string())
                .or_insert_with(object_meta_type);
        }
        t
    }

    pub fn builtin(api_version: &str, kind: &str) -> TypeInfo {
        let mut t = TypeInfo::default();
        t.fields.insert("metadata".to_string(), object_meta_type());
        let mut status = TypeInfo::default();
        status
            .fields
            .insert("conditions".to_string(), map_list(&["type"]));
        t.fields.insert("status".to_string(), status);
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        match (group, kind) {
            // spec.versions is `+listType=atomic`; status.conditions is
            // `+listType=map,listMapKey=type` but has no patch strategy, so
            // SMP replaces it.
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                let mut status = TypeInfo::default();
                status.fields.insert(
                    "conditions".to_string(),
                    TypeInfo {
                        smp: Some(ListType::Atomic),
                        ..map_list(&["type"])
                    },
                );
                t.fields.insert("status".to_string(), status);
            }
            ("", "Namespace") => {
                let mut spec = TypeInfo::default();
                // NamespaceSpec.finalizers is `+listType=atomic` (no patch
                // strategy), unlike metadata.finalizers.
                spec.fields
                    .insert("finalizers".to_string(), TypeInfo::default());
                t.fields.insert("spec".to_string(), spec);
            }
            // Unlike PodSpec.imagePullSecrets, ServiceAccount.imagePullSecrets
            // is `+listType=atomic` without a patch strategy: SMP replaces it.
            ("", "ServiceAccount") => {
                t.fields.insert("secrets".to_string(), map_list(&["name"]));
                t.fields
                    .insert("imagePullSecrets".to_string(), TypeInfo::default());
            }
            ("", "Pod") => {
                t.fields.insert("spec".to_string(), pod_spec_type());
            }
            ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
            | ("batch", "Job") => {
                let mut template = TypeInfo::default();
                template.fields.insert("spec".to_string(), pod_spec_type());
                let mut spec = TypeInfo::default();
                spec.fields.insert("template".to_string(), template);
                let mut selector = TypeInfo {
                    map_atomic: true,
                    ..TypeInfo::default()
                };
                selector
                    .fields
                    .insert("matchLabels".to_string(), TypeInfo::default());
                spec.fields.insert("selector".to_string(), selector);
                t.fields.insert("spec".to_string(), spec);
            }
            ("", "Service") => {
                let mut spec = TypeInfo::default();
                spec.fields.insert("ports".to_string(), ports_list("port"));
                spec.fields.insert(
                    "selector".to_string(),
                    TypeInfo {
                        map_atomic: true,
                        ..TypeInfo::default()
                    },
                );
                t.fields.insert("spec".to_string(), spec);
            }
            // Secret/ConfigMap data maps, Event and Lease fields are granular
            // maps and scalars, which is the default.
            _ => {}
        }
        t
    }

    /// The type of `field` of this object (a property, or a map value).
    pub fn child(&self, field: &str) -> &TypeInfo {
        if let Some(t) = self.fields.get(field) {
            return t;
        }
        match &self.elem {
            Some(e) if self.fields.is_empty() => e,
            _ if self.preserve => &DEDUCED,
            _ => &EMPTY,
        }
    }

    /// The element type of a list.
    pub fn elem(&self) -> &TypeInfo {
        match &self.elem {
            Some(e) => e,
            None if self.deduced => &DEDUCED,
            None => &EMPTY,
        }
    }

    /// Whether `field` is a named field (struct property) of this object,
    /// as opposed to a map key (`additionalProperties`, or unknown fields
    /// kept by `x-kubernetes-preserve-unknown-fields`). Objects of built-in
    /// kinds without detailed type information count as structs.
    pub fn is_named_field(&self, field: &str) -> bool {
        self.fields.contains_key(field) || !(self.map || self.preserve || self.deduced)
    }

    pub fn list_type(&self) -> &ListType {
        &self.list
    }

    /// Key fields of a `map` list.
    pub fn list_keys(&self) -> Option<&[String]> {
        match &self.list {
            ListType::Map(k) => Some(k),
            _ => None,
        }
    }

    /// The schema default of list-map key `key`, used when an element omits it.
    pub fn key_default(&self, key: &str) -> Option<&Value> {
        self.key_defaults.get(key)
    }

    /// List semantics for strategic merge patch.
    pub fn patch_list_type(&self) -> &ListType {
        self.smp.as_ref().unwrap_or(&self.list)
    }

    pub fn is_set(&self) -> bool {
        self.list == ListType::Set
    }

    pub fn is_atomic_map(&self) -> bool {
        self.map_atomic
    }
}

fn map_list(keys: &[&str]) -> TypeInfo {
    TypeInfo {
        list: ListType::Map(keys.iter().map(|k| k.to_string()).collect()),
        ..TypeInfo::default()
    }
}

/// Service and container ports: SSA keys on the port and `protocol`
/// (defaulted to TCP), strategic merge patch on the port alone.
fn ports_list(port: &str) -> TypeInfo {
    let mut t = map_list(&[port, "protocol"]);
    t.key_defaults
        .insert("protocol".to_string(), Value::String("TCP".to_string()));
    t.smp = Some(ListType::Map(vec![port.to_string()]));
    t
}

fn set_list() -> TypeInfo {
    TypeInfo {
        list: ListType::Set,
        ..TypeInfo::default()
    }
}

fn object_meta_type() -> TypeInfo {
    let mut m = TypeInfo::default();
    m.fields
        .insert("ownerReferences".to_string(), map_list(&["uid"]));
    m.fields.insert("finalizers".to_string(), set_list());
    m.fields
        .insert("managedFields".to_string(), TypeInfo::default());
    m
}

fn pod_spec_type() -> TypeInfo {
    let mut container = TypeInfo::default();
    container
        .fields
        .insert("ports".to_string(), ports_list("containerPort"));
    container
        .fields
        .insert("volumeDevices".to_string(), map_list(&["devicePath"]));
    container
        .fields
        .insert("env".to_string(), map_list(&["name"]));
    container
        .fields
        .insert("volumeMounts".to_string(), map_list(&["mountPath"]));
    let containers = TypeInfo {
        elem: Some(Box::new(container)),
        list: ListType::Map(vec!["name".to_string()]),
        ..TypeInfo::default()
    };
    let mut spec = TypeInfo::default();
    spec.fields
        .insert("containers".to_string(), containers.clone());
    spec.fields.insert("initContainers".to_string(), containers);
    spec.fields
        .insert("volumes".to_string(), map_list(&["name"]));
    spec.fields
        .insert("imagePullSecrets".to_string(), map_list(&["name"]));
    spec.fields
        .insert("tolerations".to_string(), TypeInfo::default());
    spec.fields.insert("ephemeralContainers".to_string(), {
        let mut c = map_list(&["name"]);
        c.elem = spec.fields.get("containers").and_then(|c| c.elem.clone());
        c
    });
    spec.fields
        .insert("hostAliases".to_string(), map_list(&["ip"]));
    spec.fields
        .insert("schedulingGates".to_string(), map_list(&["name"]));
    spec.fields
        .insert("resourceClaims".to_string(), map_list(&["name"]));
    spec.fields
        .insert("topologySpreadConstraints".to_string(), {
            let mut t = map_list(&["topologyKey", "whenUnsatisfiable"]);
            t.smp = Some(ListType::Map(vec!["topologyKey".to_string()]));
            t
        });
    spec.fields.insert(
        "nodeSelector".to_string(),
        TypeInfo {
            map_atomic: true,
            ..TypeInfo::default()
        },
    );
    spec
}

// ---------------------------------------------------------------------------
// Field errors
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: CauseType,
    pub message: String,
}

/// Values of the Status cause `reason` the real server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CauseType {
    Required,
    Invalid,
    NotSupported,
    TypeInvalid,
    TooLong,
    TooMany,
    Duplicate,
    Forbidden,
    /// Not a cause the real server emits: unknown fields are reported in the
    /// message of a 400 (`strict decoding error: unknown field "spec.foo"`).
    /// Kept so callers can classify pruning results uniformly.
    UnknownField,
}

impl CauseType {
    pub fn as_str(&self) -> &'static str {
        match self {
            CauseType::Required => "FieldValueRequired",
            CauseType::Invalid => "FieldValueInvalid",
            CauseType::NotSupported => "FieldValueNotSupported",
            CauseType::TypeInvalid => "FieldValueTypeInvalid",
            CauseType::TooLong => "FieldValueTooLong",
            CauseType::TooMany => "FieldValueTooMany",
            CauseType::Duplicate => "FieldValueDuplicate",
            CauseType::Forbidden => "FieldValueForbidden",
            CauseType::UnknownField => "FieldValueUnknownField",
        }
    }
}

impl FieldError {
    /// `<field>: <body>`, the form the server joins into a 422 message.
    pub fn message_line(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }

    /// `Required value` (with optional detail).
    pub fn required(field: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: CauseType::Required,
            message: with_detail("Required value".to_string(), detail),
        }
    }

    /// `Invalid value: <v>: detail`.
    pub fn invalid(field: &str, value: &Value, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: CauseType::Invalid,
            message: with_detail(format!("Invalid value: {}", go_value(value)), detail),
        }
    }

    pub fn type_invalid(field: &str, value: &Value, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: CauseType::TypeInvalid,
            message: with_detail(format!("Invalid value: {}", go_value(value)), detail),
        }
    }

    pub fn not_supported(field: &str, value: &Value, valid: &[String]) -> FieldError {
        let detail = if valid.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = valid.iter().map(|v| go_quote(v)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        FieldError {
            field: field.to_string(),
            reason: CauseType::NotSupported,
            message: with_detail(format!("Unsupported value: {}", go_value(value)), &detail),
        }
    }

    pub fn too_long(field: &str, max: usize) -> FieldError {
        let unit = if max == 1 { "byte" } else { "bytes" };
        FieldError {
            field: field.to_string(),
            reason: CauseType::TooLong,
            message: format!("Too long: may not be more than {max} {unit}"),
        }
    }

    pub fn too_many(field: &str, actual: usize, max: usize) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: CauseType::TooMany,
            message: format!("Too many: {actual}: must have at most {max} items"),
        }
    }

    pub fn duplicate(field: &str, value: &Value) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: CauseType::Duplicate,
            message: format!("Duplicate value: {}", go_value(value)),
        }
    }

    pub fn forbidden(field: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: CauseType::Forbidden,
            message: with_detail("Forbidden".to_string(), detail),
        }
    }
}

fn with_detail(mut s: String, detail: &str) -> String {
    if !detail.is_empty() {
        s.push_str(": ");
        s.push_str(detail);
    }
    s
}

/// Go's `%q` for a string (JSON escaping agrees for the printable ASCII that
/// Kubernetes names and values consist of).
pub fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// How `field.Error` renders a bad value: strings quoted, numbers and bools
/// bare, composite values in Go's `%#v` style.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        // field.Error renders a nil bad value as the quoted string "null".
        Value::Null => "\"null\"".to_string(),
        composite => go_sharp_v(composite),
    }
}

/// Go's `%#v` of a decoded JSON value (map keys sorted, as fmt does).
fn go_sharp_v(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", go_quote(k), go_sharp_v(&m[k.as_str()])))
                .collect();
            format!("map[string]interface {{}}{{{}}}", parts.join(", "))
        }
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(go_sharp_v).collect();
            format!("[]interface {{}}{{{}}}", parts.join(", "))
        }
        Value::Null => "interface {}(nil)".to_string(),
        Value::String(s) => go_quote(s),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Name validation helpers (k8s.io/apimachinery/pkg/util/validation)
// ---------------------------------------------------------------------------

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push_str(&format!("'{e}', "));
    }
    s.push_str(&format!("regex used for validation is '{fmt}')"));
    s
}

fn is_dns1123_label_str(s: &str) -> bool {
    let b = s.as_bytes();
    let ok_end = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && ok_end(b[0])
        && ok_end(b[b.len() - 1])
        && b.iter().all(|&c| ok_end(c) || c == b'-')
}

/// `validation.IsDNS1123Label`.
pub fn is_dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !is_dns1123_label_str(s) {
        errs.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

/// `validation.IsDNS1123Subdomain`.
pub fn is_dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if !s.split('.').all(is_dns1123_label_str) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter()
            .all(|&c| alnum(c) || c == b'-' || c == b'_' || c == b'.')
}

const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// `validation.IsQualifiedName` (label keys, annotation keys, finalizers).
pub fn is_qualified_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [n] => *n,
        [prefix, n] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for m in is_dns1123_subdomain_errors(prefix) {
                    errs.push(format!("prefix part {m}"));
                }
            }
            n
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `validation.IsValidLabelValue`.
pub fn label_value_errors(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !v.is_empty() && !is_qualified_name_part(v) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

// ---------------------------------------------------------------------------
// ObjectMeta validation
// ---------------------------------------------------------------------------

const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

pub fn validate_object_meta(obj: &Value, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let empty = Map::new();
    let meta = obj
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let str_of = |k: &str| meta.get(k).and_then(Value::as_str).unwrap_or("");
    // Namespaces are the one kind (of those emulated) named by DNS labels.
    let is_namespace = obj.get("kind").and_then(Value::as_str) == Some("Namespace")
        && obj.get("apiVersion").and_then(Value::as_str) == Some("v1");
    let name_errors = |s: &str| {
        if is_namespace {
            is_dns1123_label_errors(s)
        } else {
            is_dns1123_subdomain_errors(s)
        }
    };

    let name = str_of("name");
    let generate_name = str_of("generateName");
    if !generate_name.is_empty() {
        // Upstream masks a trailing dash of the prefix (maskTrailingDash)
        // before validating it as a name.
        let candidate = if generate_name.len() > 1 && generate_name.ends_with('-') {
            format!("{}a", &generate_name[..generate_name.len() - 2])
        } else {
            generate_name.to_string()
        };
        for m in name_errors(&candidate) {
            errs.push(FieldError::invalid(
                "metadata.generateName",
                &Value::String(generate_name.to_string()),
                &m,
            ));
        }
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        for m in name_errors(name) {
            errs.push(FieldError::invalid(
                "metadata.name",
                &Value::String(name.to_string()),
                &m,
            ));
        }
    }

    let namespace = str_of("namespace");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for m in is_dns1123_label_errors(namespace) {
                errs.push(FieldError::invalid(
                    "metadata.namespace",
                    &Value::String(namespace.to_string()),
                    &m,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }

    if let Some(g) = meta.get("generation").and_then(Value::as_i64) {
        if g < 0 {
            errs.push(FieldError::invalid(
                "metadata.generation",
                &Value::from(g),
                "must be greater than or equal to 0",
            ));
        }
    }

    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            for m in is_qualified_name_errors(k) {
                errs.push(FieldError::invalid(
                    "metadata.labels",
                    &Value::String(k.clone()),
                    &m,
                ));
            }
            let vs = v.as_str().unwrap_or("");
            for m in label_value_errors(vs) {
                errs.push(FieldError::invalid(
                    "metadata.labels",
                    &Value::String(vs.to_string()),
                    &m,
                ));
            }
        }
    }

    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0usize;
        for (k, v) in annotations {
            // Annotation keys are qualified names, case-insensitively.
            for m in is_qualified_name_errors(&k.to_lowercase()) {
                errs.push(FieldError::invalid(
                    "metadata.annotations",
                    &Value::String(k.clone()),
                    &m,
                ));
            }
            total += k.len() + v.as_str().map(str::len).unwrap_or(0);
        }
        if total > TOTAL_ANNOTATION_SIZE_LIMIT {
            errs.push(FieldError::too_long(
                "metadata.annotations",
                TOTAL_ANNOTATION_SIZE_LIMIT,
            ));
        }
    }

    if let Some(owners) = meta.get("ownerReferences").and_then(Value::as_array) {
        let mut first_controller: Option<String> = None;
        for o in owners {
            let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
            let checks = [
                ("apiVersion", "version must not be empty"),
                ("kind", "kind must not be empty"),
                ("name", "name must not be empty"),
                ("uid", "uid must not be empty"),
            ];
            for (k, msg) in checks {
                if s(k).is_empty() {
                    errs.push(FieldError::invalid(
                        &format!("metadata.ownerReferences.{k}"),
                        &Value::String(String::new()),
                        msg,
                    ));
                }
            }
            if o.get("controller") == Some(&Value::Bool(true)) {
                let current = format!("{}/{}", s("kind"), s("name"));
                match &first_controller {
                    Some(first) => errs.push(FieldError::invalid(
                        "metadata.ownerReferences",
                        &Value::Array(owners.clone()),
                        &format!(
                            "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"
                        ),
                    )),
                    None => first_controller = Some(current),
                }
            }
        }
    }

    if let Some(finalizers) = meta.get("finalizers").and_then(Value::as_array) {
        for f in finalizers {
            let fs = f.as_str().unwrap_or("");
            for m in is_qualified_name_errors(fs) {
                errs.push(FieldError::invalid(
                    "metadata.finalizers",
                    &Value::String(fs.to_string()),
                    &m,
                ));
            }
        }
    }
    errs
}

// ---------------------------------------------------------------------------
// Pruning
// ---------------------------------------------------------------------------

fn is_true(s: &Value, key: &str) -> bool {
    s.get(key) == Some(&Value::Bool(true))
}

/// Removes fields not in the schema and returns their paths (".spec.foo").
/// Also drops non-nullable nulls that have no default, as the real server does
/// right after pruning; those are not reported as unknown.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    if let Value::Object(map) = obj {
        prune_object_meta(map, "", &mut pruned);
        prune_object(schema, map, "", true, &mut pruned);
    }
    pruned.sort();
    pruned
}

fn prune_object_meta(map: &mut Map<String, Value>, path: &str, pruned: &mut Vec<String>) {
    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
        let unknown: Vec<String> = meta
            .keys()
            .filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in unknown {
            meta.remove(&k);
            pruned.push(format!("{path}.metadata.{k}"));
        }
    }
}

fn prune_object(
    schema: &Value,
    map: &mut Map<String, Value>,
    path: &str,
    is_resource_root: bool,
    pruned: &mut Vec<String>,
) {
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = is_true(schema, "x-kubernetes-preserve-unknown-fields")
        || additional == Some(&Value::Bool(true));
    let keys: Vec<String> = map.keys().cloned().collect();
    for k in keys {
        if is_resource_root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let child_path = format!("{path}.{k}");
        let child_schema = props
            .and_then(|p| p.get(&k))
            .or_else(|| additional.filter(|a| a.is_object()));
        match child_schema {
            Some(cs) => {
                // Only named properties lose their nulls (upstream
                // PruneNonNullableNullsWithoutDefaults); map values keep them
                // and fail validation instead.
                let is_property = props.is_some_and(|p| p.contains_key(&k));
                let is_null = map.get(&k).is_some_and(Value::is_null);
                if is_property && is_null && !is_true(cs, "nullable") && cs.get("default").is_none()
                {
                    map.remove(&k);
                    continue;
                }
                if let Some(v) = map.get_mut(&k) {
                    prune_value(cs, v, &child_path, pruned);
                }
            }
            None => {
                if !preserve {
                    map.remove(&k);
                    pruned.push(child_path);
                }
            }
        }
    }
}

fn prune_value(schema: &Value, v: &mut Value, path: &str, pruned: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            let embedded = is_true(schema, "x-kubernetes-embedded-resource");
            if embedded {
                prune_object_meta(map, path, pruned);
            }
            prune_object(schema, map, path, embedded, pruned);
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_value(is, item, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Defaulting
// ---------------------------------------------------------------------------

/// Applies `default` keywords where the parent object exists; a null in a
/// non-nullable field with a default is replaced, as upstream.
pub fn apply_defaults(schema: &Value, obj: &mut Value) {
    match obj {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    let Some(d) = ps.get("default") else { continue };
                    let missing = match map.get(k) {
                        None => true,
                        Some(Value::Null) => !is_true(ps, "nullable"),
                        Some(_) => false,
                    };
                    if missing {
                        map.insert(k.clone(), d.clone());
                    }
                }
            }
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let props = schema.get("properties").and_then(Value::as_object);
            for (k, v) in map.iter_mut() {
                if let Some(ps) = props.and_then(|p| p.get(k)) {
                    apply_defaults(ps, v);
                } else if let Some(a) = additional {
                    apply_defaults(a, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for item in items {
                    apply_defaults(is, item);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

thread_local! {
    static REGEX_CACHE: RefCell<HashMap<String, Option<regex::Regex>>> = RefCell::new(HashMap::new());
}

fn regex_matches(pattern: &str, s: &str) -> bool {
    REGEX_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let re = c
            .entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(pattern).ok());
        // An uncompilable pattern would have been rejected at CRD creation.
        re.as_ref().is_none_or(|r| r.is_match(s))
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn fmt_num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => format!("{f}"),
        None => v.to_string(),
    }
}

/// Validates `obj` against a structural schema. `metadata` at the root is
/// not described by the schema and is skipped here: `validate_object_meta`
/// checks it (including the DNS-1123 subdomain rule for metadata.name), so
/// calling both reports each metadata error once, as the real server does.
pub fn validate(schema: &Value, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_node(schema, obj, "", true, &mut errs);
    // Like the real server, CEL rules run after the OpenAPI checks and only
    // when no type error or unsupported value makes the object unfit to
    // evaluate against; then the server says so with a path-less error.
    if has_cel_rules(schema) {
        let blocking = errs
            .iter()
            .any(|e| matches!(e.reason, CauseType::TypeInvalid | CauseType::NotSupported));
        if blocking {
            errs.push(FieldError::invalid(
                "<nil>",
                &Value::Null,
                "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ));
        } else {
            validate_cel(schema, obj, "", &mut errs);
        }
    }
    errs
}

fn has_cel_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(m) => {
            m.contains_key("x-kubernetes-validations") || m.values().any(has_cel_rules)
        }
        Value::Array(a) => a.iter().any(has_cel_rules),
        _ => false,
    }
}

/// Walks the schema and value together, evaluating `x-kubernetes-validations`
/// at every node that carries them (with `self` = the value there).
/// Transition rules (`oldSelf`) do not apply to creates; the emulator treats
/// them as unsupported on updates too (no Flux CRD uses them).
fn validate_cel(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if v.is_null() {
        return;
    }
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        let type_name = schema.get("type").and_then(Value::as_str).unwrap_or("");
        crate::apiserver::cel::validate_rules(rules, v, path, type_name, errs);
    }
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in map {
                // metadata at the root is ObjectMeta, not described here.
                if path.is_empty() && k == "metadata" {
                    continue;
                }
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    validate_cel(s, child, &join(path, k), errs);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_cel(is, item, &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn validate_node(schema: &Value, v: &Value, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    if v.is_null() {
        if is_true(schema, "nullable") {
            return;
        }
        if let Some(t) = schema.get("type").and_then(Value::as_str) {
            errs.push(FieldError::type_invalid(
                path,
                &Value::String("null".to_string()),
                &format!("{path} in body must be of type {t}: \"null\""),
            ));
            return;
        }
        if is_true(schema, "x-kubernetes-int-or-string") {
            errs.push(FieldError::type_invalid(
                path,
                &Value::String("null".to_string()),
                &format!("{path} in body must be of type integer,string: \"null\""),
            ));
            return;
        }
    }
    if is_true(schema, "x-kubernetes-int-or-string") {
        if !(is_integer(v) || v.is_string()) {
            let actual = json_type(v);
            errs.push(FieldError::type_invalid(
                path,
                &Value::String(actual.to_string()),
                &format!("{path} in body must be of type integer,string: \"{actual}\""),
            ));
            return;
        }
    } else if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => is_integer(v),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            _ => true,
        };
        if !ok {
            let actual = json_type(v);
            errs.push(FieldError::type_invalid(
                path,
                &Value::String(actual.to_string()),
                &format!("{path} in body must be of type {t}: \"{actual}\""),
            ));
            return;
        }
    }
    value_validations(schema, v, path, errs);

    match v {
        Value::Object(map) => validate_object(schema, map, path, root, errs),
        Value::Array(items) => validate_array(schema, items, path, errs),
        _ => {}
    }
}

/// Keyword checks that apply to the value itself (also used for the
/// `anyOf`/`allOf`/`oneOf`/`not` sub-schemas, which are value validations only).
fn value_validations(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.iter().any(|o| o == v) {
            let valid: Vec<String> = options
                .iter()
                .map(|o| match o {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            errs.push(FieldError::not_supported(path, v, &valid));
        }
    }
    if let Value::String(s) = v {
        let len = s.chars().count();
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
            if len as u64 > max {
                errs.push(FieldError::too_long(path, max as usize));
            }
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
            if (len as u64) < min {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &format!("{path} in body should be at least {min} chars long"),
                ));
            }
        }
        if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
            if !regex_matches(p, s) {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &format!("{path} in body should match '{p}'"),
                ));
            }
        }
        if let Some(f) = schema.get("format").and_then(Value::as_str) {
            if !format_ok(f, s) {
                errs.push(FieldError::type_invalid(
                    path,
                    v,
                    &format!("{path} in body must be of type {f}: {}", go_quote(s)),
                ));
            }
        }
    }
    if let Some(n) = v.as_f64() {
        let excl = |k: &str| is_true(schema, k);
        if let Some(min) = schema.get("minimum").filter(|m| m.is_number()) {
            let m = min.as_f64().unwrap_or(f64::MIN);
            if excl("exclusiveMinimum") && n <= m {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &format!("{path} in body should be greater than {}", fmt_num(min)),
                ));
            } else if n < m {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &format!(
                        "{path} in body should be greater than or equal to {}",
                        fmt_num(min)
                    ),
                ));
            }
        }
        if let Some(max) = schema.get("maximum").filter(|m| m.is_number()) {
            let m = max.as_f64().unwrap_or(f64::MAX);
            if excl("exclusiveMaximum") && n >= m {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &format!("{path} in body should be less than {}", fmt_num(max)),
                ));
            } else if n > m {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &format!(
                        "{path} in body should be less than or equal to {}",
                        fmt_num(max)
                    ),
                ));
            }
        }
        if let Some(mo) = schema.get("multipleOf").and_then(Value::as_f64) {
            if mo > 0.0 && (n / mo).fract() != 0.0 {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &format!("{path} in body should be a multiple of {mo}"),
                ));
            }
        }
    }
    if let Value::Array(items) = v {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
            if (items.len() as u64) < min {
                errs.push(FieldError::invalid(
                    path,
                    &Value::from(items.len()),
                    &format!("{path} in body should have at least {min} items"),
                ));
            }
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
            if items.len() as u64 > max {
                errs.push(FieldError::too_many(path, items.len(), max as usize));
            }
        }
        if is_true(schema, "uniqueItems") {
            for i in 1..items.len() {
                if items[..i].contains(&items[i]) {
                    errs.push(FieldError::duplicate(&format!("{path}[{i}]"), &items[i]));
                }
            }
        }
    }
    if let Value::Object(m) = v {
        if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
            if (m.len() as u64) < min {
                errs.push(FieldError::invalid(
                    path,
                    &Value::from(m.len()),
                    &format!("{path} in body should have at least {min} properties"),
                ));
            }
        }
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
            if m.len() as u64 > max {
                errs.push(FieldError::too_many(path, m.len(), max as usize));
            }
        }
    }
    let sub_ok = |s: &Value| {
        let mut e = Vec::new();
        validate_sub(s, v, path, &mut e);
        e.is_empty()
    };
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            validate_sub(s, v, path, errs);
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        if !any.iter().any(sub_ok) {
            errs.push(FieldError::invalid(
                path,
                v,
                &format!("{path} in body must validate at least one schema (anyOf)"),
            ));
        }
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        if one.iter().filter(|s| sub_ok(s)).count() != 1 {
            errs.push(FieldError::invalid(
                path,
                v,
                &format!("{path} in body must validate one and only one schema (oneOf)"),
            ));
        }
    }
    if let Some(not) = schema.get("not") {
        if sub_ok(not) {
            errs.push(FieldError::invalid(
                path,
                v,
                &format!("{path} in body must not validate the schema (not)"),
            ));
        }
    }
}

/// Validates a value against a junctor sub-schema: its own keywords, plus
/// nested properties/items when present.
fn validate_sub(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    validate_node(schema, v, path, false, errs);
}

fn validate_object(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    root: bool,
    errs: &mut Vec<FieldError>,
) {
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                errs.push(FieldError::required(&join(path, r), ""));
            }
        }
    }
    if is_true(schema, "x-kubernetes-embedded-resource") {
        for k in ["apiVersion", "kind"] {
            let present = map
                .get(k)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if !present {
                errs.push(FieldError::required(&join(path, k), "must not be empty"));
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    for (k, v) in map {
        if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(ps) = props.and_then(|p| p.get(k)) {
            validate_node(ps, v, &join(path, k), false, errs);
        } else if let Some(a) = additional {
            match a {
                Value::Object(_) => {
                    validate_node(a, v, &format!("{path}[{k}]"), false, errs);
                }
                Value::Bool(false) if props.is_some() => {
                    errs.push(FieldError::forbidden(
                        &join(path, k),
                        &format!("{} in body is a forbidden property", join(path, k)),
                    ));
                }
                _ => {}
            }
        }
    }
}

fn validate_array(schema: &Value, items: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    if let Some(is) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            validate_node(is, item, &format!("{path}[{i}]"), false, errs);
        }
    }
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for i in 1..items.len() {
                if items[..i].contains(&items[i]) {
                    errs.push(FieldError::duplicate(&format!("{path}[{i}]"), &items[i]));
                }
            }
        }
        Some("map") => {
            for (i, it) in items.iter().enumerate() {
                if !(it.is_object() || it.is_null()) {
                    errs.push(FieldError::invalid(
                        &format!("{path}[{i}]"),
                        it,
                        "must be an object for an array of list-type map",
                    ));
                    return;
                }
            }
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            // Missing keys take their schema default, as upstream compares.
            let key_of = |item: &Value| -> Vec<Value> {
                keys.iter()
                    .map(|k| {
                        item.get(*k)
                            .or_else(|| {
                                schema
                                    .get("items")
                                    .and_then(|s| s.get("properties"))
                                    .and_then(|p| p.get(*k))
                                    .and_then(|p| p.get("default"))
                            })
                            .cloned()
                            .unwrap_or(Value::Null)
                    })
                    .collect()
            };
            let mut seen: Vec<Vec<Value>> = Vec::new();
            for (i, it) in items.iter().enumerate() {
                if it.is_null() {
                    continue;
                }
                let k = key_of(it);
                if seen.contains(&k) {
                    // The whole element is reported, not just its keys.
                    errs.push(FieldError::duplicate(&format!("{path}[{i}]"), it));
                }
                seen.push(k);
            }
        }
        _ => {}
    }
}

fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "uuid" => {
            let b = s.as_bytes();
            b.len() == 36
                && b.iter().enumerate().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => *c == b'-',
                    _ => c.is_ascii_hexdigit(),
                })
        }
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd_schema(file: &str) -> Value {
        let path = format!(
            "{}/../../shared/reference/flux-crds/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let crd: Value = serde_saphyr::from_str(&text).unwrap();
        let versions = crd["spec"]["versions"].as_array().unwrap();
        let v = versions
            .iter()
            .find(|v| v["served"] == json!(true) && v["storage"] == json!(true))
            .unwrap();
        v["schema"]["openAPIV3Schema"].clone()
    }

    fn gitrepo(spec: Value) -> Value {
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": "podinfo", "namespace": "flux-system"},
            "spec": spec,
        })
    }

    fn lines(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message_line).collect()
    }

    #[test]
    fn gitrepository_valid_object_passes() {
        let s = crd_schema("source.toolkit.fluxcd.io_gitrepositories.yaml");
        let mut o = gitrepo(json!({"url": "https://github.com/x/y", "interval": "1m"}));
        assert!(prune(&s, &mut o).is_empty());
        apply_defaults(&s, &mut o);
        assert_eq!(validate(&s, &o), vec![]);
    }

    #[test]
    fn gitrepository_missing_url_is_required() {
        let s = crd_schema("source.toolkit.fluxcd.io_gitrepositories.yaml");
        let o = gitrepo(json!({"interval": "1m"}));
        let errs = validate(&s, &o);
        assert_eq!(lines(&errs), vec!["spec.url: Required value"]);
        assert_eq!(errs[0].reason, CauseType::Required);
        assert_eq!(errs[0].reason.as_str(), "FieldValueRequired");
    }

    #[test]
    fn gitrepository_bad_interval_pattern() {
        let s = crd_schema("source.toolkit.fluxcd.io_gitrepositories.yaml");
        let o = gitrepo(json!({"url": "https://x", "interval": "1x"}));
        let errs = validate(&s, &o);
        assert_eq!(
            lines(&errs),
            vec![
                r#"spec.interval: Invalid value: "1x": spec.interval in body should match '^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$'"#
            ]
        );
        assert_eq!(errs[0].reason, CauseType::Invalid);
    }

    #[test]
    fn gitrepository_bad_url_and_wrong_type() {
        let s = crd_schema("source.toolkit.fluxcd.io_gitrepositories.yaml");
        let o = gitrepo(json!({"url": "ftp://x", "interval": 5}));
        let l = lines(&validate(&s, &o));
        assert!(l.contains(&r#"spec.interval: Invalid value: "integer": spec.interval in body must be of type string: "integer""#.to_string()), "{l:?}");
        assert!(l.contains(&r#"spec.url: Invalid value: "ftp://x": spec.url in body should match '^(http|https|ssh)://.*$'"#.to_string()), "{l:?}");
    }

    #[test]
    fn gitrepository_enum_not_supported() {
        let s = crd_schema("source.toolkit.fluxcd.io_gitrepositories.yaml");
        let o = gitrepo(json!({"url": "https://x", "interval": "1m",
            "verify": {"mode": "bogus", "secretRef": {"name": "k"}}}));
        let errs = validate(&s, &o);
        assert_eq!(
            lines(&errs),
            vec![
                r#"spec.verify.mode: Unsupported value: "bogus": supported values: "head", "HEAD", "Tag", "TagAndHEAD""#,
                r#"<nil>: Invalid value: "null": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"#,
            ]
        );
        assert_eq!(errs[0].reason.as_str(), "FieldValueNotSupported");
    }

    #[test]
    fn gitrepository_unknown_fields_pruned() {
        let s = crd_schema("source.toolkit.fluxcd.io_gitrepositories.yaml");
        let mut o = gitrepo(json!({"url": "https://x", "interval": "1m", "foo": 1,
            "ref": {"branch": "main", "bar": true}}));
        o["metadata"]["bogus"] = json!("x");
        o["extra"] = json!({});
        let pruned = prune(&s, &mut o);
        assert_eq!(
            pruned,
            vec![".extra", ".metadata.bogus", ".spec.foo", ".spec.ref.bar"]
        );
        assert!(o["spec"].get("foo").is_none());
        assert_eq!(o["spec"]["ref"], json!({"branch": "main"}));
        assert_eq!(o["apiVersion"], "source.toolkit.fluxcd.io/v1");
        assert_eq!(o["metadata"]["name"], "podinfo");
    }

    #[test]
    fn gitrepository_defaults_applied_where_parent_exists() {
        let s = crd_schema("source.toolkit.fluxcd.io_gitrepositories.yaml");
        let mut o = gitrepo(json!({"url": "https://x", "interval": "1m"}));
        apply_defaults(&s, &mut o);
        assert_eq!(o["spec"]["timeout"], "60s");
        // verify is absent, so its mode default must not materialise it.
        assert!(o["spec"].get("verify").is_none());
        // status has a root-level default.
        assert_eq!(o["status"], json!({"observedGeneration": -1}));
        let mut o = gitrepo(json!({"url": "https://x", "interval": "1m",
            "verify": {"secretRef": {"name": "k"}}, "timeout": "5s"}));
        apply_defaults(&s, &mut o);
        assert_eq!(o["spec"]["verify"]["mode"], "HEAD");
        assert_eq!(o["spec"]["timeout"], "5s");
    }

    #[test]
    fn null_non_nullable_without_default_is_dropped_with_default_is_defaulted() {
        let s = crd_schema("source.toolkit.fluxcd.io_gitrepositories.yaml");
        let mut o = gitrepo(json!({"url": "https://x", "interval": "1m",
            "timeout": null, "suspend": null}));
        assert!(prune(&s, &mut o).is_empty());
        assert!(o["spec"].get("suspend").is_none());
        apply_defaults(&s, &mut o);
        assert_eq!(o["spec"]["timeout"], "60s");
        assert_eq!(validate(&s, &o), vec![]);
    }

    #[test]
    fn null_map_values_are_kept_and_rejected() {
        let s = json!({"type": "object", "properties": {"m": {"type": "object",
            "additionalProperties": {"type": "string"}}}});
        let mut o = json!({"m": {"a": null, "b": "x"}});
        assert!(prune(&s, &mut o).is_empty());
        assert_eq!(o, json!({"m": {"a": null, "b": "x"}}));
        assert_eq!(
            lines(&validate(&s, &o)),
            vec![r#"m[a]: Invalid value: "null": m[a] in body must be of type string: "null""#]
        );
    }

    #[test]
    fn invalid_metadata_name_reported_once() {
        let s = crd_schema("source.toolkit.fluxcd.io_gitrepositories.yaml");
        let mut o = gitrepo(json!({"url": "https://x", "interval": "1m"}));
        o["metadata"]["name"] = json!("Bad_Name");
        assert_eq!(validate(&s, &o), vec![]);
        let l = lines(&validate_object_meta(&o, true));
        assert_eq!(l.len(), 1);
        assert!(l[0].starts_with("metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"), "{l:?}");
    }

    #[test]
    fn kustomization_schema_nested_required_and_enum() {
        let s = crd_schema("kustomize.toolkit.fluxcd.io_kustomizations.yaml");
        let base = json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system"},
            "spec": {"interval": "10m", "prune": true,
                "sourceRef": {"kind": "GitRepository", "name": "podinfo"},
                "postBuild": {"substitute": {"cluster_env": "prod"}}},
        });
        let mut o = base.clone();
        assert!(prune(&s, &mut o).is_empty());
        apply_defaults(&s, &mut o);
        assert_eq!(validate(&s, &o), vec![], "{o}");
        // A missing required field inside a nested object.
        let mut bad = base.clone();
        bad["spec"]["sourceRef"] = json!({"kind": "GitRepository"});
        let l = lines(&validate(&s, &bad));
        assert_eq!(l, vec!["spec.sourceRef.name: Required value"]);
        // Enum on sourceRef.kind.
        let mut bad = base.clone();
        bad["spec"]["sourceRef"]["kind"] = json!("Nope");
        let l = lines(&validate(&s, &bad));
        // The Kustomization schema has CEL rules, which an enum error blocks.
        assert_eq!(l.len(), 2);
        assert!(
            l[0].starts_with(
                "spec.sourceRef.kind: Unsupported value: \"Nope\": supported values: "
            ),
            "{l:?}"
        );
    }

    #[test]
    fn kustomization_substitute_map_values_typed() {
        let s = crd_schema("kustomize.toolkit.fluxcd.io_kustomizations.yaml");
        let o = json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system"},
            "spec": {"interval": "10m", "prune": true,
                "sourceRef": {"kind": "GitRepository", "name": "podinfo"},
                "postBuild": {"substitute": {"n": 5}}},
        });
        let l = lines(&validate(&s, &o));
        assert_eq!(
            l,
            vec![
                r#"spec.postBuild.substitute[n]: Invalid value: "integer": spec.postBuild.substitute[n] in body must be of type string: "integer""#,
                r#"<nil>: Invalid value: "null": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"#,
            ]
        );
    }

    #[test]
    fn helmrelease_values_preserved_unknown() {
        let s = crd_schema("helm.toolkit.fluxcd.io_helmreleases.yaml");
        let mut o = json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"interval": "5m", "values": {"anything": {"goes": [1, 2]}},
                "chart": {"spec": {"chart": "podinfo",
                    "sourceRef": {"kind": "HelmRepository", "name": "p"}}}},
        });
        assert_eq!(prune(&s, &mut o), Vec::<String>::new());
        assert_eq!(o["spec"]["values"]["anything"]["goes"], json!([1, 2]));
    }

    #[test]
    fn synthetic_schema_keyword_table() {
        let s = json!({"type": "object", "properties": {
            "i": {"type": "integer", "minimum": 1, "maximum": 10},
            "ie": {"type": "integer", "minimum": 1, "exclusiveMinimum": true},
            "n": {"type": "number"},
            "b": {"type": "boolean"},
            "s": {"type": "string", "minLength": 2, "maxLength": 4},
            "t": {"type": "string", "format": "date-time"},
            "ios": {"x-kubernetes-int-or-string": true},
            "nl": {"type": "string", "nullable": true},
            "arr": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string"}},
            "set": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "m": {"type": "array", "x-kubernetes-list-type": "map",
                  "x-kubernetes-list-map-keys": ["name"],
                  "items": {"type": "object", "properties": {"name": {"type": "string"}, "v": {"type": "integer"}}}},
            "props": {"type": "object", "minProperties": 1, "maxProperties": 2,
                      "additionalProperties": {"type": "string"}},
            "any": {"type": "string", "anyOf": [{"pattern": "^a"}, {"pattern": "^b"}]},
        }});
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({"i": 5}), vec![]),
            (
                json!({"i": 1.5}),
                vec![r#"i: Invalid value: "number": i in body must be of type integer: "number""#],
            ),
            (json!({"i": 2.0}), vec![]),
            (
                json!({"i": 0}),
                vec!["i: Invalid value: 0: i in body should be greater than or equal to 1"],
            ),
            (
                json!({"i": 11}),
                vec!["i: Invalid value: 11: i in body should be less than or equal to 10"],
            ),
            (
                json!({"ie": 1}),
                vec!["ie: Invalid value: 1: ie in body should be greater than 1"],
            ),
            (json!({"n": 1.5, "b": true}), vec![]),
            (
                json!({"b": "true"}),
                vec![r#"b: Invalid value: "string": b in body must be of type boolean: "string""#],
            ),
            (
                json!({"s": "a"}),
                vec![r#"s: Invalid value: "a": s in body should be at least 2 chars long"#],
            ),
            (
                json!({"s": "abcde"}),
                vec!["s: Too long: may not be more than 4 bytes"],
            ),
            (json!({"t": "2024-01-01T00:00:00Z"}), vec![]),
            (
                json!({"t": "yesterday"}),
                vec![
                    r#"t: Invalid value: "yesterday": t in body must be of type date-time: "yesterday""#,
                ],
            ),
            (json!({"ios": 3}), vec![]),
            (json!({"ios": "3"}), vec![]),
            (
                json!({"ios": true}),
                vec![
                    r#"ios: Invalid value: "boolean": ios in body must be of type integer,string: "boolean""#,
                ],
            ),
            (json!({"nl": null}), vec![]),
            (
                json!({"s": null}),
                vec![r#"s: Invalid value: "null": s in body must be of type string: "null""#],
            ),
            (
                json!({"arr": []}),
                vec!["arr: Invalid value: 0: arr in body should have at least 1 items"],
            ),
            (
                json!({"arr": ["a", "b", "c"]}),
                vec!["arr: Too many: 3: must have at most 2 items"],
            ),
            (
                json!({"arr": [1]}),
                vec![
                    r#"arr[0]: Invalid value: "integer": arr[0] in body must be of type string: "integer""#,
                ],
            ),
            (
                json!({"set": ["a", "b", "a"]}),
                vec![r#"set[2]: Duplicate value: "a""#],
            ),
            (
                json!({"m": [{"name": "a"}, {"name": "b"}, {"name": "a", "v": 1}]}),
                vec![r#"m[2]: Duplicate value: map[string]interface {}{"name":"a", "v":1}"#],
            ),
            (
                json!({"props": {}}),
                vec!["props: Invalid value: 0: props in body should have at least 1 properties"],
            ),
            (
                json!({"props": {"a": "1", "b": "2", "c": "3"}}),
                vec!["props: Too many: 3: must have at most 2 items"],
            ),
            (json!({"any": "apple"}), vec![]),
            (
                json!({"any": "cherry"}),
                vec![
                    r#"any: Invalid value: "cherry": any in body must validate at least one schema (anyOf)"#,
                ],
            ),
        ];
        for (obj, want) in cases {
            let got = lines(&validate(&s, &obj));
            assert_eq!(got, want, "object {obj}");
        }
    }

    #[test]
    fn error_reasons_have_real_cause_strings() {
        let s = json!({"type": "object", "properties": {
            "s": {"type": "string", "maxLength": 1},
            "a": {"type": "array", "maxItems": 0, "items": {"type": "string"}},
            "e": {"type": "string", "enum": ["x"]},
            "t": {"type": "integer"},
        }, "required": ["r"]});
        let errs = validate(&s, &json!({"s": "ab", "a": ["x"], "e": "y", "t": "z"}));
        let mut reasons: Vec<&str> = errs.iter().map(|e| e.reason.as_str()).collect();
        reasons.sort();
        assert_eq!(
            reasons,
            vec![
                "FieldValueNotSupported",
                "FieldValueRequired",
                "FieldValueTooLong",
                "FieldValueTooMany",
                "FieldValueTypeInvalid"
            ]
        );
    }

    #[test]
    fn prune_respects_preserve_additional_and_embedded() {
        let s = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "keep": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                         "properties": {"typed": {"type": "object", "properties": {}}}},
                "map": {"type": "object", "additionalProperties": {
                    "type": "object", "properties": {"a": {"type": "string"}}}},
                "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                "emb": {"type": "object", "x-kubernetes-embedded-resource": true,
                        "properties": {"spec": {"type": "object", "properties": {}}}},
            }},
        }});
        let mut o = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
        "spec": {
            "keep": {"free": 1, "typed": {"gone": 1}},
            "map": {"k1": {"a": "x", "b": "y"}},
            "items": [{"name": "a", "junk": 1}],
            "emb": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "nope": 1}, "data": {}, "spec": {"z": 1}},
        }});
        let pruned = prune(&s, &mut o);
        assert_eq!(
            pruned,
            vec![
                ".spec.emb.data",
                ".spec.emb.metadata.nope",
                ".spec.emb.spec.z",
                ".spec.items[0].junk",
                ".spec.keep.typed.gone",
                ".spec.map.k1.b",
            ]
        );
        assert_eq!(o["spec"]["keep"]["free"], 1);
        assert_eq!(o["spec"]["emb"]["kind"], "ConfigMap");
        assert_eq!(o["spec"]["emb"]["metadata"]["name"], "c");
    }

    #[test]
    fn defaults_inside_arrays_and_maps() {
        let s = json!({"type": "object", "properties": {
            "list": {"type": "array", "items": {"type": "object", "properties": {
                "p": {"type": "string", "default": "d"}}}},
            "m": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "q": {"type": "integer", "default": 3}}}},
            "n": {"type": "string", "nullable": true, "default": "x"},
        }});
        let mut o = json!({"list": [{}, {"p": "set"}], "m": {"a": {}}, "n": null});
        apply_defaults(&s, &mut o);
        assert_eq!(
            o,
            json!({"list": [{"p": "d"}, {"p": "set"}], "m": {"a": {"q": 3}}, "n": null})
        );
    }

    #[test]
    fn object_meta_validation() {
        let ok = json!({"metadata": {"name": "a.b-c", "namespace": "ns",
            "labels": {"app.kubernetes.io/name": "x", "e": ""},
            "annotations": {"Example.com/Note": "free text ✓"}}});
        assert_eq!(validate_object_meta(&ok, true), vec![]);

        let l = lines(&validate_object_meta(&json!({"metadata": {}}), true));
        assert_eq!(
            l,
            vec![
                "metadata.name: Required value: name or generateName is required",
                "metadata.namespace: Required value",
            ]
        );
        assert_eq!(
            validate_object_meta(&json!({"metadata": {"generateName": "x-"}}), false),
            vec![]
        );
        let l = lines(&validate_object_meta(
            &json!({"metadata": {"name": "n", "namespace": "x"}}),
            false,
        ));
        assert_eq!(
            l,
            vec!["metadata.namespace: Forbidden: not allowed on this type"]
        );

        let bad = json!({"metadata": {"name": "n", "namespace": "Bad",
            "labels": {"-k": "v", "k": "-v"}, "finalizers": ["a/b/c"]}});
        let l = lines(&validate_object_meta(&bad, true));
        assert_eq!(l.len(), 4, "{l:?}");
        assert!(l[0].starts_with("metadata.namespace: Invalid value: \"Bad\": a lowercase RFC 1123 label must consist of"));
        assert!(l[1].starts_with("metadata.labels: Invalid value: \"-k\": name part must consist of alphanumeric characters"));
        assert!(l[2].starts_with(
            "metadata.labels: Invalid value: \"-v\": a valid label must be an empty string"
        ));
        assert!(l[3].starts_with(
            "metadata.finalizers: Invalid value: \"a/b/c\": a qualified name must consist of"
        ));

        let long = "a".repeat(254);
        let l = lines(&validate_object_meta(
            &json!({"metadata": {"name": long}}),
            false,
        ));
        assert_eq!(
            l[0],
            format!(
                "metadata.name: Invalid value: \"{long}\": must be no more than 253 characters"
            )
        );

        let big = "x".repeat(256 * 1024);
        let l = lines(&validate_object_meta(
            &json!({"metadata": {"name": "n", "annotations": {"a": big}}}),
            false,
        ));
        assert_eq!(
            l,
            vec!["metadata.annotations: Too long: may not be more than 262144 bytes"]
        );
    }

    #[test]
    fn generate_name_generation_and_controllers() {
        let ok = json!({"metadata": {"generateName": "podinfo-"}});
        assert_eq!(validate_object_meta(&ok, false), vec![]);
        let bad = json!({"metadata": {"generateName": "Pod-", "generation": -1}});
        let l = lines(&validate_object_meta(&bad, false));
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(l[0].starts_with(
            "metadata.generateName: Invalid value: \"Pod-\": a lowercase RFC 1123 subdomain"
        ));
        assert_eq!(
            l[1],
            "metadata.generation: Invalid value: -1: must be greater than or equal to 0"
        );
        let refs = |n: usize| -> Value {
            (0..n)
                .map(|i| json!({"apiVersion": "v1", "kind": "K", "name": format!("o{i}"), "uid": format!("{i}"), "controller": true}))
                .collect()
        };
        let l = lines(&validate_object_meta(
            &json!({"metadata": {"name": "n", "ownerReferences": refs(3)}}),
            false,
        ));
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(
            l[1].ends_with("Found \"true\" in references for K/o0 and K/o2"),
            "{l:?}"
        );
    }

    #[test]
    fn namespace_names_are_dns_labels() {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}});
        let l = lines(&validate_object_meta(&ns, false));
        assert_eq!(l.len(), 1);
        assert!(l[0].contains("RFC 1123 label"), "{l:?}");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a.b", "namespace": "n"}});
        assert_eq!(validate_object_meta(&cm, true), vec![]);
    }

    #[test]
    fn owner_reference_validation() {
        let o = json!({"metadata": {"name": "n", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "uid": "1", "controller": true},
            {"apiVersion": "", "kind": "ConfigMap", "name": "b", "uid": "2", "controller": true},
        ]}});
        let l = lines(&validate_object_meta(&o, false));
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!(
            l[0],
            "metadata.ownerReferences.apiVersion: Invalid value: \"\": version must not be empty"
        );
        assert!(l[1].contains("Only one reference can have Controller set to true. Found \"true\" in references for ConfigMap/a and ConfigMap/b"));
    }

    #[test]
    fn go_value_rendering() {
        assert_eq!(go_value(&json!("a")), "\"a\"");
        assert_eq!(go_value(&json!(5)), "5");
        assert_eq!(go_value(&json!(1.5)), "1.5");
        assert_eq!(go_value(&json!(true)), "true");
        assert_eq!(go_value(&Value::Null), "\"null\"");
        assert_eq!(
            go_value(&json!({"b": [1, "x", null], "a": {"c": true}})),
            r#"map[string]interface {}{"a":map[string]interface {}{"c":true}, "b":[]interface {}{1, "x", interface {}(nil)}}"#
        );
    }

    #[test]
    fn qualified_name_messages() {
        assert!(is_qualified_name_errors("example.com/a").is_empty());
        assert_eq!(
            is_qualified_name_errors("/a"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(
            is_qualified_name_errors("a/"),
            vec![
                "name part must be non-empty".to_string(),
                format!("name part {QUALIFIED_NAME_ERR} (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{QUALIFIED_NAME_FMT}')")
            ]
        );
        assert_eq!(
            is_qualified_name_errors(&"a".repeat(64)),
            vec!["name part must be no more than 63 characters"]
        );
    }

    #[test]
    fn cel_rules_enforced_at_their_node() {
        let gr = crd_schema("source.toolkit.fluxcd.io_gitrepositories.yaml");
        let bad = gitrepo(
            json!({"interval": "1m", "url": "https://example.com/r", "serviceAccountName": "w"}),
        );
        assert_eq!(
            lines(&validate(&gr, &bad)),
            vec!["spec: Invalid value: \"object\": serviceAccountName can only be set when provider is 'azure' or 'aws'"]
        );
        assert_eq!(validate(&gr, &bad)[0].reason, CauseType::Invalid);
        let good = gitrepo(json!({"interval": "1m", "url": "https://example.com/r",
            "serviceAccountName": "w", "provider": "azure"}));
        assert!(validate(&gr, &good).is_empty());
        // A type error blocks CEL evaluation, as upstream.
        let typed = gitrepo(
            json!({"interval": 5, "url": "https://example.com/r", "serviceAccountName": "w"}),
        );
        let l = lines(&validate(&gr, &typed));
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!(l[1], "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation");
        // Without CEL rules in the schema there is nothing to skip.
        let plain = json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"n": {"type": "integer"}}}}});
        assert_eq!(validate(&plain, &json!({"spec": {"n": "x"}})).len(), 1);
        assert!(
            l[0].starts_with("spec.interval: Invalid value: \"integer\""),
            "{l:?}"
        );

        let hr = crd_schema("helm.toolkit.fluxcd.io_helmreleases.yaml");
        let obj = |spec: Value| {
            json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "h", "namespace": "ns"}, "spec": spec})
        };
        assert_eq!(
            lines(&validate(&hr, &obj(json!({"interval": "1m"})))),
            vec!["spec: Invalid value: \"object\": either chart or chartRef must be set"]
        );
        // Nested node: self is spec.upgrade.strategy there.
        let nested = obj(
            json!({"interval": "1m", "chartRef": {"kind": "OCIRepository", "name": "x"},
            "upgrade": {"strategy": {"name": "RemediateOnFailure", "retryInterval": "1m"}}}),
        );
        assert_eq!(
            lines(&validate(&hr, &nested)),
            vec!["spec.upgrade.strategy: Invalid value: \"object\": .retryInterval can only be set when .name is 'RetryOnFailure'"]
        );
        let both = obj(
            json!({"interval": "1m", "chartRef": {"kind": "OCIRepository", "name": "x"},
            "kubeConfig": {"secretRef": {"name": "a"}, "configMapRef": {"name": "b"}}}),
        );
        assert_eq!(
            lines(&validate(&hr, &both)),
            vec!["spec.kubeConfig: Invalid value: \"object\": exactly one of spec.kubeConfig.configMapRef or spec.kubeConfig.secretRef must be specified"]
        );
    }

    #[test]
    fn type_info_from_schema_and_builtin() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "l": {"type": "array", "items": {"type": "string"}},
            "s": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "m": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["a", "b"],
                  "items": {"type": "object", "properties": {"a": {"type": "string"}}}},
            "am": {"type": "object", "x-kubernetes-map-type": "atomic"},
            "free": {"type": "object", "additionalProperties": {"type": "array", "x-kubernetes-list-type": "set"}},
        }}}});
        let t = TypeInfo::from_schema(&s);
        let spec = t.child("spec");
        assert_eq!(spec.child("l").list_type(), &ListType::Atomic);
        assert!(spec.child("s").is_set());
        assert_eq!(
            spec.child("m").list_keys(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        assert!(spec.child("am").is_atomic_map());
        assert!(!spec.is_atomic_map());
        assert!(spec.child("free").child("anykey").is_set());
        assert!(spec.is_named_field("l"));
        assert!(!spec.child("free").is_named_field("anykey"));
        let p = TypeInfo::from_schema(&json!({"type": "object", "properties": {"v": {
            "type": "object", "x-kubernetes-preserve-unknown-fields": true,
            "properties": {"known": {"type": "object"}}}}}));
        let v = p.child("v");
        assert!(v.is_named_field("known"));
        assert!(!v.is_named_field("other"));
        assert!(!v.child("other").is_named_field("deeper"));
        assert!(TypeInfo::builtin("v1", "ConfigMap").is_named_field("data"));
        assert_eq!(
            t.child("metadata").child("ownerReferences").list_keys(),
            Some(&["uid".to_string()][..])
        );
        assert!(t.child("metadata").child("finalizers").is_set());

        let ns = TypeInfo::builtin("v1", "Namespace");
        assert_eq!(
            ns.child("spec").child("finalizers").list_type(),
            &ListType::Atomic
        );
        assert_eq!(
            ns.child("status").child("conditions").list_keys(),
            Some(&["type".to_string()][..])
        );
        let crd = TypeInfo::builtin("apiextensions.k8s.io/v1", "CustomResourceDefinition");
        assert_eq!(
            crd.child("spec").child("versions").list_type(),
            &ListType::Atomic
        );
        let conds = crd.child("status").child("conditions");
        assert_eq!(conds.list_keys(), Some(&["type".to_string()][..]));
        assert_eq!(conds.patch_list_type(), &ListType::Atomic);
        let sa = TypeInfo::builtin("v1", "ServiceAccount");
        assert_eq!(
            sa.child("secrets").list_keys(),
            Some(&["name".to_string()][..])
        );
        let ips = sa.child("imagePullSecrets");
        assert_eq!(ips.list_type(), &ListType::Atomic);
        assert_eq!(ips.patch_list_type(), &ListType::Atomic);
        // PodSpec.imagePullSecrets, by contrast, merges by name.
        let dep = TypeInfo::builtin("apps/v1", "Deployment");
        let pod = dep.child("spec").child("template").child("spec");
        assert_eq!(
            pod.child("imagePullSecrets").list_keys(),
            Some(&["name".to_string()][..])
        );
        let ports = pod.child("containers").elem().child("ports");
        assert_eq!(
            ports.list_keys(),
            Some(&["containerPort".to_string(), "protocol".to_string()][..])
        );
        assert_eq!(
            ports.patch_list_type(),
            &ListType::Map(vec!["containerPort".to_string()])
        );
        assert_eq!(ports.key_default("protocol"), Some(&json!("TCP")));
        assert_eq!(ports.key_default("containerPort"), None);
        assert_eq!(
            pod.child("containers").elem().child("env").list_keys(),
            Some(&["name".to_string()][..])
        );
        assert_eq!(
            pod.child("volumes").list_keys(),
            Some(&["name".to_string()][..])
        );
        assert_eq!(pod.child("tolerations").list_type(), &ListType::Atomic);
        let svc = TypeInfo::builtin("v1", "Service");
        let sp = svc.child("spec").child("ports");
        assert_eq!(
            sp.list_keys(),
            Some(&["port".to_string(), "protocol".to_string()][..])
        );
        assert_eq!(
            sp.patch_list_type(),
            &ListType::Map(vec!["port".to_string()])
        );
        assert_eq!(sp.key_default("protocol"), Some(&json!("TCP")));
        assert!(svc.child("spec").child("selector").is_atomic_map());
        for kind in ["Role", "ClusterRole"] {
            let r = TypeInfo::builtin("rbac.authorization.k8s.io/v1", kind);
            assert_eq!(r.child("rules").list_type(), &ListType::Atomic);
            assert_eq!(r.child("rules").patch_list_type(), &ListType::Atomic);
        }
        for kind in ["RoleBinding", "ClusterRoleBinding"] {
            let r = TypeInfo::builtin("rbac.authorization.k8s.io/v1", kind);
            assert_eq!(r.child("subjects").patch_list_type(), &ListType::Atomic);
        }
        // Key defaults come from the CRD schema's `default` on the key field.
        let kd = TypeInfo::from_schema(&json!({"type": "object", "properties": {"l": {
            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name", "proto"],
            "items": {"type": "object", "properties": {"name": {"type": "string"},
                "proto": {"type": "string", "default": "TCP"}}}}}}));
        assert_eq!(kd.child("l").key_default("proto"), Some(&json!("TCP")));
        assert_eq!(kd.child("l").key_default("name"), None);
        // Flux conditions carry no list-type, so they are atomic for CRs.
        let gr =
            TypeInfo::from_schema(&crd_schema("source.toolkit.fluxcd.io_gitrepositories.yaml"));
        assert_eq!(
            gr.child("status").child("conditions").list_type(),
            &ListType::Atomic
        );
    }
}

//! Compact OpenAPI v3 schemas of the emulated built-in kinds, enough for `kubectl explain`
//! to resolve their fields and types.

use serde_json::{json, Value};

pub const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn s(desc: &str) -> Value {
    json!({"type": "string", "description": desc})
}

fn string_map(desc: &str) -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string", "default": ""}, "description": desc})
}

fn obj(desc: &str, props: Value) -> Value {
    json!({"type": "object", "description": desc, "properties": props})
}

fn list_of(desc: &str, item: Value) -> Value {
    json!({"type": "array", "description": desc, "items": item})
}

fn meta_ref() -> Value {
    json!({
        "allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}],
        "default": {},
        "description": "Standard object's metadata.",
    })
}

fn top(desc: &str, mut props: Value) -> Value {
    if let Some(m) = props.as_object_mut() {
        m.insert(
            "apiVersion".into(),
            s("APIVersion defines the versioned schema of this representation of an object."),
        );
        m.insert(
            "kind".into(),
            s("Kind is a string value representing the REST resource this object represents."),
        );
        m.insert("metadata".into(), meta_ref());
    }
    obj(desc, props)
}

pub fn object_meta() -> Value {
    obj(
        "ObjectMeta is metadata that all persisted resources must have.",
        json!({
            "name": s("Name must be unique within a namespace."),
            "generateName": s("Optional prefix used by the server to generate a unique name."),
            "namespace": s("Namespace defines the space within which each name must be unique."),
            "uid": s("UID is the unique in time and space value for this object."),
            "resourceVersion": s("An opaque value that represents the internal version of this object."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state."},
            "creationTimestamp": {"type": "string", "format": "date-time", "description": "Server time when this object was created."},
            "deletionTimestamp": {"type": "string", "format": "date-time", "description": "Time at which this resource will be deleted."},
            "labels": string_map("Map of string keys and values that can be used to organize and categorize objects."),
            "annotations": string_map("Unstructured key value map stored with a resource."),
            "finalizers": list_of("Must be empty before the object is deleted from the registry.", json!({"type": "string", "default": ""})),
            "ownerReferences": list_of("List of objects depended by this object.", json!({"type": "object"})),
        }),
    )
}

/// The schema of a built-in kind, if one is emulated.
pub fn schema(group: &str, kind: &str) -> Option<Value> {
    let v = match (group, kind) {
        ("", "ConfigMap") => top(
            "ConfigMap holds configuration data for pods to consume.",
            json!({
                "data": string_map("Data contains the configuration data."),
                "binaryData": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}, "description": "BinaryData contains the binary data."},
                "immutable": {"type": "boolean", "description": "Immutable, if set to true, ensures that data stored in the ConfigMap cannot be updated."},
            }),
        ),
        ("", "Secret") => top(
            "Secret holds secret data of a certain type.",
            json!({
                "data": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}, "description": "Data contains the secret data, base64 encoded."},
                "stringData": string_map("stringData allows specifying non-binary secret data in string form; it is merged into data on write."),
                "type": s("Used to facilitate programmatic handling of secret data."),
                "immutable": {"type": "boolean", "description": "Immutable, if set to true, ensures that data stored in the Secret cannot be updated."},
            }),
        ),
        ("", "Namespace") => top(
            "Namespace provides a scope for Names.",
            json!({
                "spec": obj("Spec defines the behavior of the Namespace.", json!({"finalizers": list_of("Finalizers is an opaque list of values that must be empty to permanently remove object from storage.", json!({"type": "string", "default": ""}))})),
                "status": obj("Status describes the current status of a Namespace.", json!({"phase": s("Phase is the current lifecycle phase of the namespace.")})),
            }),
        ),
        ("", "ServiceAccount") => top(
            "ServiceAccount binds together a name, a principal that can be authenticated, and a set of secrets.",
            json!({
                "secrets": list_of("Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.", json!({"type": "object"})),
                "imagePullSecrets": list_of("ImagePullSecrets is a list of references to secrets for pulling images.", json!({"type": "object"})),
                "automountServiceAccountToken": {"type": "boolean", "description": "Whether pods running as this service account should have an API token automatically mounted."},
            }),
        ),
        ("coordination.k8s.io", "Lease") => top(
            "Lease defines a lease concept.",
            json!({"spec": obj("spec contains the specification of the Lease.", json!({
                "holderIdentity": s("holderIdentity contains the identity of the holder of a current lease."),
                "leaseDurationSeconds": {"type": "integer", "format": "int32", "description": "Duration that candidates for a lease need to wait to force acquire it."},
                "acquireTime": {"type": "string", "format": "date-time", "description": "When the current lease was acquired."},
                "renewTime": {"type": "string", "format": "date-time", "description": "When the current holder of a lease has last updated the lease."},
                "leaseTransitions": {"type": "integer", "format": "int32", "description": "The number of transitions of a lease between holders."},
            }))}),
        ),
        _ => return None,
    };
    Some(v)
}

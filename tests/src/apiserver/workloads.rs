//! Light strategies for the deploy-manifest kinds: Services, Deployments and RBAC objects
//! (defaults the real server fills in, required fields, immutable fields).

use serde_json::{json, Map, Value};

use crate::apiserver::schema::{go_quote, FieldError};

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    if !v.get(key).is_some_and(Value::is_object) {
        if let Some(m) = v.as_object_mut() {
            m.insert(key.to_string(), json!({}));
        }
    }
    v.get_mut(key).and_then(Value::as_object_mut)
}

fn default(m: &mut Map<String, Value>, key: &str, v: Value) {
    m.entry(key.to_string()).or_insert(v);
}

pub fn prepare_service(old: Option<&Value>, obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if ty != "ExternalName" {
        let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).cloned();
        if spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            let ip = old_ip.unwrap_or_else(|| {
                json!(format!(
                    "10.96.{}.{}",
                    fastrand::u8(0..=255),
                    fastrand::u8(1..=254)
                ))
            });
            spec.insert("clusterIP".into(), ip);
        }
        let ip = spec.get("clusterIP").cloned().unwrap_or(Value::Null);
        default(spec, "clusterIPs", json!([ip]));
        default(spec, "ipFamilies", json!(["IPv4"]));
        default(spec, "ipFamilyPolicy", json!("SingleStack"));
        default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                default(p, "targetPort", port);
            }
        }
    }
    if old.is_none() {
        obj["status"] = json!({"loadBalancer": {}});
    }
}

pub fn validate_service(obj: &Value, errs: &mut Vec<FieldError>) {
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let supported = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !supported.contains(&ty) {
        errs.push(FieldError::not_supported(
            "spec.type",
            &json!(ty),
            &supported.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ));
    }
    let ports = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty()
        && ty != "ExternalName"
        && obj.pointer("/spec/clusterIP") != Some(&json!("None"))
    {
        errs.push(FieldError::required("spec.ports", ""));
    }
    for (i, p) in ports.iter().enumerate() {
        match p.get("port").and_then(Value::as_i64) {
            None => errs.push(FieldError::required(&format!("spec.ports[{i}].port"), "")),
            Some(n) if !(1..=65535).contains(&n) => errs.push(FieldError::invalid(
                &format!("spec.ports[{i}].port"),
                &json!(n),
                "must be between 1 and 65535, inclusive",
            )),
            _ => {}
        }
        if ports.len() > 1
            && p.get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required(&format!("spec.ports[{i}].name"), ""));
        }
    }
}

fn default_container(c: &mut Map<String, Value>) {
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let latest = !image.contains(':') || image.ends_with(":latest");
    default(
        c,
        "imagePullPolicy",
        json!(if latest { "Always" } else { "IfNotPresent" }),
    );
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(p, "protocol", json!("TCP"));
        }
    }
}

pub fn prepare_deployment(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    default(spec, "replicas", json!(1));
    default(spec, "revisionHistoryLimit", json!(10));
    default(spec, "progressDeadlineSeconds", json!(600));
    default(
        spec,
        "strategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
    );
    if let Some(pod) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    {
        default(pod, "restartPolicy", json!("Always"));
        default(pod, "terminationGracePeriodSeconds", json!(30));
        default(pod, "dnsPolicy", json!("ClusterFirst"));
        default(pod, "securityContext", json!({}));
        default(pod, "schedulerName", json!("default-scheduler"));
        for key in ["containers", "initContainers"] {
            if let Some(cs) = pod.get_mut(key).and_then(Value::as_array_mut) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    default_container(c);
                }
            }
        }
    }
}

/// `%v` of a Go `map[string]string`, as validation messages print label maps.
fn go_map(v: &Value) -> String {
    let mut parts: Vec<String> = v
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v.as_str().unwrap_or(""))))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    format!("map[string]string{{{}}}", parts.join(", "))
}

pub fn validate_deployment(old: Option<&Value>, obj: &Value, errs: &mut Vec<FieldError>) {
    let selector = obj.pointer("/spec/selector/matchLabels").cloned();
    let has_selector = obj
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty());
    if !has_selector {
        errs.push(FieldError::required("spec.selector", ""));
    }
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    if let Some(Value::Object(sel)) = &selector {
        let ok = sel.iter().all(|(k, v)| labels.get(k) == Some(v));
        if !ok || sel.is_empty() {
            errs.push(FieldError {
                field: "spec.template.metadata.labels".into(),
                reason: crate::apiserver::schema::CauseType::Invalid,
                message: format!(
                    "Invalid value: {}: `selector` does not match template `labels`",
                    go_map(&labels)
                ),
            });
        }
    }
    let containers = obj
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if containers.is_empty() {
        errs.push(FieldError::required("spec.template.spec.containers", ""));
    }
    for (i, c) in containers.iter().enumerate() {
        if c.get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required(
                &format!("spec.template.spec.containers[{i}].name"),
                "",
            ));
        }
        if c.get("image")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required(
                &format!("spec.template.spec.containers[{i}].image"),
                "",
            ));
        }
    }
    if let Some(r) = obj.pointer("/spec/replicas").and_then(Value::as_i64) {
        if r < 0 {
            errs.push(FieldError::invalid(
                "spec.replicas",
                &json!(r),
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(o) = old {
        if o.pointer("/spec/selector") != obj.pointer("/spec/selector") {
            errs.push(FieldError {
                field: "spec.selector".into(),
                reason: crate::apiserver::schema::CauseType::Invalid,
                message: format!(
                    "Invalid value: v1.LabelSelector{{MatchLabels:{}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}}: field is immutable",
                    go_map(&selector.unwrap_or(json!({})))
                ),
            });
        }
    }
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn go_role_ref(r: &Value) -> String {
    let s = |k: &str| go_quote(r.get(k).and_then(Value::as_str).unwrap_or(""));
    format!(
        "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
        s("apiGroup"),
        s("kind"),
        s("name")
    )
}

pub fn validate_binding(
    cluster: bool,
    old: Option<&Value>,
    obj: &Value,
    errs: &mut Vec<FieldError>,
) {
    let rr = obj.get("roleRef").cloned().unwrap_or(json!({}));
    let s = |k: &str| rr.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if s("apiGroup") != RBAC_GROUP {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            &json!(s("apiGroup")),
            &[RBAC_GROUP.to_string()],
        ));
    }
    let kinds: Vec<String> = if cluster {
        vec!["ClusterRole".into()]
    } else {
        vec!["Role".into(), "ClusterRole".into()]
    };
    if !kinds.contains(&s("kind")) {
        errs.push(FieldError::not_supported(
            "roleRef.kind",
            &json!(s("kind")),
            &kinds,
        ));
    }
    if s("name").is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    }
    let subjects = obj
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, sub) in subjects.iter().enumerate() {
        let g = |k: &str| sub.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let path = format!("subjects[{i}]");
        if g("name").is_empty() {
            errs.push(FieldError::required(&format!("{path}.name"), ""));
        }
        match g("kind").as_str() {
            "ServiceAccount" => {
                if !g("apiGroup").is_empty() {
                    errs.push(FieldError::not_supported(
                        &format!("{path}.apiGroup"),
                        &json!(g("apiGroup")),
                        &[String::new()],
                    ));
                }
                if cluster && g("namespace").is_empty() {
                    errs.push(FieldError::required(&format!("{path}.namespace"), ""));
                }
            }
            "User" | "Group" => {
                if g("apiGroup") != RBAC_GROUP {
                    errs.push(FieldError::not_supported(
                        &format!("{path}.apiGroup"),
                        &json!(g("apiGroup")),
                        &[RBAC_GROUP.to_string()],
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                &format!("{path}.kind"),
                &json!(other),
                &["ServiceAccount".into(), "User".into(), "Group".into()],
            )),
        }
    }
    if let Some(o) = old {
        if o.get("roleRef") != obj.get("roleRef") {
            errs.push(FieldError {
                field: "roleRef".into(),
                reason: crate::apiserver::schema::CauseType::Invalid,
                message: format!("Invalid value: {}: cannot change roleRef", go_role_ref(&rr)),
            });
        }
    }
}

pub fn validate_role(cluster: bool, obj: &Value, errs: &mut Vec<FieldError>) {
    let rules = obj
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, r) in rules.iter().enumerate() {
        let len = |k: &str| r.get(k).and_then(Value::as_array).map_or(0, Vec::len);
        if len("verbs") == 0 {
            errs.push(FieldError::required(
                &format!("rules[{i}].verbs"),
                "verbs must contain at least one value",
            ));
        }
        if len("nonResourceURLs") > 0 {
            if !cluster {
                errs.push(FieldError::invalid(
                    &format!("rules[{i}].nonResourceURLs"),
                    &r["nonResourceURLs"],
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
        } else if len("resources") > 0 && len("apiGroups") == 0 {
            errs.push(FieldError::required(
                &format!("rules[{i}].apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
    }
}

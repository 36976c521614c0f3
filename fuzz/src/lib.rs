//! Oracles shared by the fuzz targets: what must hold of a configuration the agent accepts and
//! of an error it reports, beyond "no panic". Panicking here is the point: libFuzzer records the
//! input as a crash.

use fluxconfig_agent::apply::{effective_spec, fluxconfig_manifest, secret_name, settings_hash};
use fluxconfig_agent::sync::Desired;
use fluxconfig_api::protected::ProtectedSettings;
use fluxconfig_api::validation::{kustomization_object_name, ValidationErrors};
use fluxconfig_api::FluxConfig;
use fluxconfig_controller::translate::{applier_name, translate, FluxObjects};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Kubernetes' own rule for object names (DNS-1123 subdomain), written out again rather than
/// taken from the validation module so the oracle does not share its bugs.
pub fn is_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// DNS-1123 label: namespaces, and names that end up as label values.
pub fn is_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_subdomain(s)
}

/// Kubernetes label values: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends, or empty.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric()))
}

/// Every error names a field and says something; an empty list is no rejection at all.
pub fn assert_field_errors(errors: &ValidationErrors, what: &str) {
    assert!(!errors.0.is_empty(), "{what}: rejected without an error");
    for e in &errors.0 {
        assert!(
            !e.field.trim().is_empty(),
            "{what}: error without a field: {e:?}"
        );
        assert!(
            !e.message.trim().is_empty(),
            "{what}: error without a message: {e:?}"
        );
    }
}

fn assert_meta(meta: &ObjectMeta, namespace: &str, what: &str) {
    let name = meta.name.as_deref().unwrap_or_default();
    assert!(
        is_subdomain(name),
        "{what}: object name {name:?} is not a valid name"
    );
    assert_eq!(meta.namespace.as_deref(), Some(namespace), "{what}: {name}");
    for (k, v) in meta.labels.iter().flatten() {
        assert!(
            is_label_value(v),
            "{what}: {name}: label {k}={v:?} is not a valid value"
        );
    }
}

/// What the controller makes of a configuration it was handed: object names Kubernetes takes,
/// one Flux Kustomization `<config>-<k>` per kustomization (a label value, so at most 63), and
/// dependencies only on Kustomizations of the same configuration.
pub fn assert_objects(config: &FluxConfig, objects: &FluxObjects) {
    let name = config.metadata.name.as_deref().unwrap_or_default();
    let namespace = config.metadata.namespace.as_deref().unwrap_or_default();
    assert!(is_label(name), "configuration name {name:?}");
    assert!(is_label(namespace), "namespace {namespace:?}");
    let what = format!("{namespace}/{name}");
    for s in &objects.secrets {
        assert_meta(&s.metadata, namespace, &what);
    }
    if let Some(sa) = &objects.service_account {
        assert_meta(&sa.metadata, namespace, &what);
        assert_eq!(
            sa.metadata.name.as_deref(),
            Some(applier_name(name).as_str())
        );
    }
    if let Some(rb) = &objects.role_binding {
        assert_meta(&rb.metadata, namespace, &what);
    }
    let source = objects.source.to_value().expect("source serialises");
    let source_name = source["metadata"]["name"].as_str().unwrap_or_default();
    assert_eq!(
        source_name, name,
        "{what}: the source is named after the configuration"
    );
    let mut wanted: Vec<String> = config
        .spec
        .kustomizations
        .keys()
        .map(|k| kustomization_object_name(name, k))
        .collect();
    let mut made: Vec<String> = Vec::new();
    for k in &objects.kustomizations {
        assert_meta(&k.metadata, namespace, &what);
        let object = k.metadata.name.clone().unwrap_or_default();
        assert!(
            is_label(&object),
            "{what}: Kustomization {object:?} is no label value"
        );
        made.push(object);
    }
    wanted.sort();
    made.sort();
    assert_eq!(made, wanted, "{what}: one Kustomization per kustomization");
    let values = objects.to_values().expect("objects serialise");
    for k in values.iter().filter(|v| v["kind"] == "Kustomization") {
        for dep in k["spec"]["dependsOn"].as_array().into_iter().flatten() {
            let dep = dep["name"].as_str().unwrap_or_default();
            assert!(
                made.iter().any(|m| m == dep),
                "{what}: depends on unknown {dep:?}"
            );
        }
    }
}

/// An accepted listing item goes all the way: the agent writes the FluxConfig (and the Secret
/// when there are protected settings), the API server stores it as JSON, and the controller
/// translates what it reads back with the Secret's settings. That must succeed: a configuration
/// the agent accepts and the controller rejects would be reported as applied and never work.
pub fn assert_accepted_translates(d: &Desired) -> FluxObjects {
    let what = d.key.to_string();
    assert!(is_label(&d.key.name), "{what}: accepted name");
    assert!(is_label(&d.key.namespace), "{what}: accepted namespace");
    let has_secret = !d.protected.0.is_empty();
    if has_secret {
        assert!(
            is_subdomain(&secret_name(&d.key.name)),
            "{what}: Secret name"
        );
    }
    let hash = has_secret.then(|| settings_hash(&d.key, &d.protected.0));
    let spec = effective_spec(d, has_secret);
    let manifest = fluxconfig_manifest(&d.key, &spec, hash.as_deref());
    let stored = serde_json::to_vec(&manifest).expect("manifest serialises");
    let config: FluxConfig = serde_json::from_slice(&stored)
        .unwrap_or_else(|e| panic!("{what}: the written FluxConfig does not read back: {e}"));
    assert_eq!(
        config.spec, spec,
        "{what}: spec changed on the way through JSON"
    );
    let protected: ProtectedSettings = d.protected.0.clone();
    let objects = translate(&config, &protected).unwrap_or_else(|e| {
        panic!("{what}: accepted by the agent, rejected by the controller: {e}")
    });
    assert_objects(&config, &objects);
    objects
}

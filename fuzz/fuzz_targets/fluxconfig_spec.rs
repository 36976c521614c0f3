//! One FluxConfig as JSON (`metadata.name`/`namespace`, `spec` in Azure's property names,
//! `protectedSettings` as the plain values of the protected-settings Secret) → `parse_spec` +
//! `validate`, and every valid one through the controller's translation.
#![no_main]

use fluxconfig_api::protected::ProtectedSettings;
use fluxconfig_api::validation::{parse_spec, validate, validate_spec};
use fluxconfig_api::FluxConfig;
use fluxconfig_controller::translate::translate;
use fluxconfig_fuzz::{assert_field_errors, assert_objects};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let text = |pointer: &str, default: &str| {
        doc.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    let name = text("/metadata/name", "cluster-config");
    let namespace = text("/metadata/namespace", "default");
    let protected: ProtectedSettings = doc
        .get("protectedSettings")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let raw = doc.get("spec").unwrap_or(&doc);

    let spec = match parse_spec(raw) {
        Ok(spec) => spec,
        Err(e) => {
            assert_field_errors(&e, "parse_spec");
            for err in &e.0 {
                assert!(err.field.starts_with("spec"), "{err:?}");
            }
            return;
        }
    };
    // What the API server stores reads back as the same spec.
    let stored = serde_json::to_value(&spec).expect("spec serialises");
    assert_eq!(parse_spec(&stored).as_ref(), Ok(&spec), "spec round trip");

    let mut config = FluxConfig::new(&name, spec.clone());
    config.metadata.namespace = Some(namespace.clone());
    let by_config = validate(&config, &protected);
    let by_spec = validate_spec(&name, &namespace, &spec, &protected);
    assert_eq!(by_config, by_spec, "validate and validate_spec disagree");
    match (by_config, translate(&config, &protected)) {
        (Ok(()), Ok(objects)) => assert_objects(&config, &objects),
        (Ok(()), Err(e)) => panic!("valid, but translation fails: {e}"),
        (Err(e), Ok(_)) => panic!("invalid ({e}), but translated"),
        (Err(e), Err(_)) => assert_field_errors(&e, "validate"),
    }
});

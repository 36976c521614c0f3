//! The words of one `--kustomization` flag (one word per line of the input) → the testbed's
//! `az k8s-configuration flux` parser; what it accepts must format back to the same value and
//! reach the agent unchanged through the wire.
#![no_main]

use fluxconfig_api::kustomization_flag::{format_kustomization, parse_kustomization};
use fluxconfig_api::validation::parse_spec;
use libfuzzer_sys::fuzz_target;

/// Errors quote input, but only a bounded amount of it (a flag can be a whole file's worth).
const MAX_ERROR_CHARS: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let words: Vec<String> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\n').map(str::to_string).collect()
    };
    let (name, def) = match parse_kustomization(&words) {
        Ok(parsed) => parsed,
        Err(e) => {
            assert!(e.field.starts_with("--kustomization"), "{e:?}");
            assert!(!e.message.trim().is_empty(), "{e:?}");
            let shown = e.to_string().chars().count();
            assert!(shown <= MAX_ERROR_CHARS, "error of {shown} characters: {e}");
            return;
        }
    };
    assert!(!name.is_empty() && name.len() <= 63, "name {name:?}");
    assert!(
        name.split('.').all(|l| !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')),
        "name {name:?}"
    );
    for seconds in [
        def.timeout_in_seconds,
        def.sync_interval_in_seconds,
        def.retry_interval_in_seconds,
    ]
    .into_iter()
    .flatten()
    {
        assert!(seconds >= 0, "negative duration {seconds}");
    }

    let formatted = format_kustomization(&name, &def).expect("formats");
    let reparsed = parse_kustomization(&formatted)
        .unwrap_or_else(|e| panic!("{formatted:?} does not parse back: {e}"));
    assert_eq!(reparsed, (name.clone(), def.clone()), "{formatted:?}");

    // The look-alike sends `properties.kustomizations.<name>` as this JSON; the agent decodes it.
    let value = serde_json::to_value(&def).expect("serialises");
    let spec = parse_spec(&serde_json::json!({ "kustomizations": { &name: value } }))
        .unwrap_or_else(|e| panic!("the agent cannot decode what the CLI sends: {e}"));
    assert_eq!(
        spec.kustomizations.get(&name).map(|k| k.as_ref()),
        Some(&def),
        "wire round trip"
    );
});

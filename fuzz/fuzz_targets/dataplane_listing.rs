//! Bytes of a data-plane listing answer → the agent's decode and plan (apply / reject / delete),
//! and every accepted configuration through the controller's translation.
#![no_main]

use std::collections::BTreeMap;

use fluxconfig_agent::sync::{plan, ConfigKey, Plan};
use fluxconfig_api::dataplane::{ConfigurationList, MAX_LIST_BYTES};
use fluxconfig_fuzz::{assert_accepted_translates, assert_field_errors};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // The client refuses bigger bodies before decoding; a body that does not decode is a
    // failed poll and never reaches the plan.
    if data.len() > MAX_LIST_BYTES {
        return;
    }
    let Ok(list) = serde_json::from_slice::<ConfigurationList>(data) else {
        return;
    };

    // Owned: one FluxConfig per listed name in `default` (so moves and keeps are exercised) and
    // one the listing never mentions.
    let mut owned: Vec<ConfigKey> = list
        .value
        .iter()
        .filter_map(|i| i.get("name").and_then(Value::as_str))
        .map(|n| ConfigKey::new("default", n))
        .collect();
    owned.push(ConfigKey::new("flux-system", "unlisted"));
    let p = plan(&list, &owned);

    assert_eq!(
        p.apply.len() + p.rejected.len(),
        list.value.len(),
        "every item is either applied or rejected"
    );
    for r in &p.rejected {
        assert_field_errors(&r.errors, &format!("{:?}", r.name));
        let status = r.status("2026-01-01T00:00:00Z");
        assert!(status.error_message.is_some_and(|m| !m.is_empty()));
    }
    let mut applied_names = BTreeMap::new();
    for d in &p.apply {
        assert!(
            applied_names.insert(d.key.name.clone(), ()).is_none(),
            "{} applied twice",
            d.key.name
        );
        assert_accepted_translates(d);
    }

    check_deletions(&list, &owned, &p);
    check_items_independent(&list, &p);
});

/// Deletions only from a complete listing whose items all have names, only of owned
/// configurations, and never of one that is listed (unless it moved namespace).
fn check_deletions(list: &ConfigurationList, owned: &[ConfigKey], p: &Plan) {
    if p.delete.is_empty() {
        return;
    }
    assert!(
        list.is_complete(),
        "deleted from a partial listing: {:?}",
        p.delete
    );
    assert!(
        p.rejected.iter().all(|r| r.name.is_some()),
        "deleted while an item has no usable name"
    );
    for key in &p.delete {
        assert!(owned.contains(key), "deleted {key}, which is not owned");
        let listed_elsewhere = p
            .apply
            .iter()
            .any(|d| d.key.name == key.name && d.key.namespace != key.namespace);
        let listed = list
            .value
            .iter()
            .any(|i| i.get("name").and_then(Value::as_str) == Some(key.name.as_str()));
        assert!(
            !listed || listed_elsewhere,
            "deleted {key}, which is listed"
        );
        assert!(
            !p.apply.iter().any(|d| &d.key == key),
            "deleted {key} and applied it"
        );
    }
}

/// One bad item never stops another: an item judged alone gets the same verdict in the full
/// listing, except that a name used by more than one item rejects all of them, and so does a
/// Kustomization name (`<config>-<kustomization>`) that two configurations of one namespace
/// would both make — then the rejection must name that kustomization.
fn check_items_independent(list: &ConfigurationList, p: &Plan) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for item in &list.value {
        if let Some(n) = item.get("name").and_then(Value::as_str) {
            *counts.entry(n).or_default() += 1;
        }
    }
    for item in &list.value {
        let alone = plan(
            &ConfigurationList {
                value: vec![item.clone()],
                count: 1,
            },
            &[],
        );
        let Some(d) = alone.apply.first() else {
            continue;
        };
        if counts.get(d.key.name.as_str()).copied().unwrap_or(0) > 1 {
            continue;
        }
        let shared = p.rejected.iter().find(|r| {
            r.name.as_deref() == Some(d.key.name.as_str())
                && r.errors.0.iter().all(|e| {
                    e.field.starts_with("spec.kustomizations.") && e.message.contains("also makes")
                })
        });
        if shared.is_some() {
            continue;
        }
        assert!(
            p.apply.contains(d),
            "{} is accepted alone but not in the listing",
            d.key
        );
    }
}

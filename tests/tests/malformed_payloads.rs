//! Malformed data-plane payloads: one listing carries a good configuration and 30 broken ones
//! (wrong types, unknown enum values, missing or hostile fields and names, path traversal,
//! embedded bad JSON, duplicate keys, bad protected settings, oversized values). Each broken
//! one must be reported `Failed` with an error naming the offending field, must not reach the
//! cluster, and must not hold up the good one, which becomes Compliant.
//!
//! Payloads the management API cannot store (duplicate keys, non-string protected values,
//! non-object items) are spliced into the listing raw through
//! `FaultHandle::set_raw_listing_items`, in place of a stored configuration of that name so
//! the agent's report is accepted.
//!
//! Duplicate keys: `serde_json` keeps the last of duplicated object keys, as most JSON parsers
//! do (RFC 8259 leaves it undefined); the agent inherits that, so `"scope":"cluster",
//! "scope":"global"` is read as `global` and rejected by name, while the reverse order would be
//! accepted. That is asserted here so a change of parser shows up.

mod fault_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use fault_common::{simple_properties, within, Bed, NAMESPACE};
use fluxconfig_api::ProvisioningState;
use serde_json::{json, Value};

const GOOD: &str = "good";
/// Expected field of a case whose name the agent must not report under.
const UNREPORTABLE: &str = "";

struct Case {
    /// Name the configuration is stored under (and reported as).
    name: String,
    /// Stored properties.
    properties: Value,
    /// Listed instead of the stored form, when set.
    raw: Option<String>,
    /// Must appear in the reported errorMessage.
    field: &'static str,
}

/// Sets the member at a `/`-separated path, creating objects on the way.
fn set(v: &mut Value, pointer: &str, value: Value) {
    let mut at = v;
    let keys: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for key in &keys[..keys.len() - 1] {
        at = at
            .as_object_mut()
            .expect("object")
            .entry(key.to_string())
            .or_insert_with(|| json!({}));
    }
    at.as_object_mut()
        .expect("object")
        .insert(keys[keys.len() - 1].to_string(), value);
}

/// Size of the oversized value: over the agent's 1 MiB limit, under the data plane's 4 MiB
/// request limit. `MALFORMED_OVERSIZED_KIB` changes it.
fn oversized_kib() -> usize {
    std::env::var("MALFORMED_OVERSIZED_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1536)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn cases(url: &str) -> Vec<Case> {
    let good = || simple_properties(url);
    let mut out = Vec::new();
    let mut case = |name: &str, field: &'static str, change: &dyn Fn(&mut Value)| {
        let mut properties = good();
        change(&mut properties);
        out.push(Case {
            name: name.to_string(),
            properties,
            raw: None,
            field,
        });
    };
    case("prune-yes", "prune", &|v| {
        set(v, "/kustomizations/infra/prune", json!("yes"))
    });
    case("interval-string", "syncIntervalInSeconds", &|v| {
        set(v, "/gitRepository/syncIntervalInSeconds", json!("10"))
    });
    case("interval-negative", "syncIntervalInSeconds", &|v| {
        set(v, "/gitRepository/syncIntervalInSeconds", json!(-5))
    });
    case("interval-float", "syncIntervalInSeconds", &|v| {
        set(v, "/gitRepository/syncIntervalInSeconds", json!(1.5))
    });
    case("interval-huge", "syncIntervalInSeconds", &|v| {
        set(v, "/gitRepository/syncIntervalInSeconds", json!(1e20))
    });
    case("source-kind-helm", "sourceKind", &|v| {
        set(v, "/sourceKind", json!("Helm"))
    });
    case("scope-global", "scope", &|v| {
        set(v, "/scope", json!("global"))
    });
    case("url-missing", "url", &|v| {
        v["gitRepository"].as_object_mut().unwrap().remove("url");
    });
    case("url-file-scheme", "url", &|v| {
        set(v, "/gitRepository/url", json!("file:///etc/passwd"))
    });
    case("url-oversized", "url", &|v| {
        let huge = format!("https://example.com/{}", "a".repeat(oversized_kib() * 1024));
        set(v, "/gitRepository/url", json!(huge))
    });
    case("source-bad-json", "gitRepository", &|v| {
        set(v, "/gitRepository", json!("{\"url\": \"https://x"))
    });
    case("kustomizations-array", "kustomizations", &|v| {
        set(v, "/kustomizations", json!(["infra"]))
    });
    case("path-traversal", "path", &|v| {
        set(v, "/kustomizations/infra/path", json!("../../etc"))
    });
    case("path-nul", "path", &|v| {
        set(v, "/kustomizations/infra/path", json!("./a\u{0}b"))
    });
    case("kustomization-name-hostile", "kustomizations", &|v| {
        set(
            v,
            "/kustomizations",
            json!({"../evil": {"path": "./infrastructure"}}),
        )
    });
    case("depends-on-missing", "dependsOn[0]", &|v| {
        set(v, "/kustomizations/infra/dependsOn", json!(["nope"]))
    });
    case("timeout-string", "timeoutInSeconds", &|v| {
        set(v, "/kustomizations/infra/timeoutInSeconds", json!("abc"))
    });
    case("suspend-string", "suspend", &|v| {
        set(v, "/suspend", json!("true"))
    });
    case("namespace-number", "namespace", &|v| {
        set(v, "/namespace", json!(5))
    });
    case("namespace-hostile", "namespace", &|v| {
        set(v, "/namespace", json!("kube-system/../x"))
    });
    case("https-with-ssh-key", "sshPrivateKey", &|v| {
        set(
            v,
            "/configurationProtectedSettings",
            json!({"sshPrivateKey": b64("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n")}),
        )
    });
    case(
        "protected-bad-base64",
        "configurationProtectedSettings.httpsUser",
        &|v| {
            set(
                v,
                "/configurationProtectedSettings",
                json!({"httpsUser": "!!not base64!!", "httpsKey": b64("k")}),
            )
        },
    );
    case("name-UPPER", "name", &|_| {});
    case(&"a".repeat(300), UNREPORTABLE, &|_| {});
    case("café-ü", UNREPORTABLE, &|_| {});
    // Names that cannot be put in the status path safely are not reported at all (the data
    // plane keeps showing them as never reported) rather than reported somewhere else:
    // `x/../good` would land on `good`.
    case("../etc", UNREPORTABLE, &|_| {});
    case("x/../good", UNREPORTABLE, &|_| {});

    // Raw listing items, standing in for a stored configuration of the same name.
    let good_text = good().to_string();
    let inner = &good_text[1..good_text.len() - 1];
    let mut raw = |name: &str, field: &'static str, text: String| {
        out.push(Case {
            name: name.to_string(),
            properties: good(),
            raw: Some(text),
            field,
        });
    };
    raw(
        "dup-keys",
        "scope",
        format!(r#"{{"name":"dup-keys","properties":{{{inner},"scope":"global"}}}}"#),
    );
    raw(
        "protected-number",
        "configurationProtectedSettings",
        format!(
            r#"{{"name":"protected-number","properties":{{{inner},"configurationProtectedSettings":{{"httpsKey":12}}}}}}"#
        ),
    );
    raw(
        "protected-key-traversal",
        "configurationProtectedSettings",
        format!(
            r#"{{"name":"protected-key-traversal","properties":{{{inner},"configurationProtectedSettings":{{"../x":"{}"}}}}}}"#,
            b64("v")
        ),
    );
    raw(
        "properties-string",
        "properties",
        r#"{"name":"properties-string","properties":"{\"scope\":"}"#.to_string(),
    );
    raw(
        "properties-missing",
        "properties",
        r#"{"name":"properties-missing"}"#.to_string(),
    );
    out
}

/// The management path segment of a name: everything but unreserved characters escaped.
fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_malformed_payload_fails_by_field_and_the_good_one_proceeds() {
    let bed = Bed::start(true).await;
    let mut cases = cases(&bed.repo.url);
    assert!(cases.len() >= 25, "{} cases", cases.len());
    // MALFORMED_SKIP=a,b leaves out the cases whose names start with any of these (bisecting).
    if let Ok(skip) = std::env::var("MALFORMED_SKIP") {
        cases.retain(|c| {
            !skip
                .split(',')
                .any(|p| !p.is_empty() && c.name.starts_with(p))
        });
    }
    let raw: BTreeMap<String, String> = cases
        .iter()
        .filter_map(|c| c.raw.clone().map(|r| (c.name.clone(), r)))
        .collect();
    bed.dataplane.faults().set_raw_listing_items(raw);
    for c in &cases {
        bed.put(&encode(&c.name), c.properties.clone()).await;
    }
    bed.put_simple(GOOD).await;

    let controller = bed.start_controller();
    let agent = bed.start_agent(bed.agent_config());

    bed.await_compliant(&[GOOD.to_string()].into(), Duration::from_secs(60))
        .await;
    within(
        "every malformed one reported",
        Duration::from_secs(60),
        || async {
            cases
                .iter()
                .filter(|c| c.field != UNREPORTABLE)
                .all(|c| bed.status(&c.name).is_some())
        },
    )
    .await;
    // One more full report round, so a wrong report for an unreportable name would be seen.
    let heartbeats = bed.dataplane.stats().heartbeats;
    within("a full report round", Duration::from_secs(30), || async {
        bed.dataplane.stats().heartbeats >= heartbeats + 2
    })
    .await;

    let mut failures = Vec::new();
    for c in cases.iter().filter(|c| c.field == UNREPORTABLE) {
        if let Some(status) = bed.status(&c.name) {
            failures.push(format!("{}: reported {status:?}", c.name));
        }
    }
    for c in cases.iter().filter(|c| c.field != UNREPORTABLE) {
        let status = bed.status(&c.name).expect("reported");
        let message = status.error_message.clone().unwrap_or_default();
        let short: String = c.name.chars().take(40).collect();
        if status.provisioning_state != Some(ProvisioningState::Failed)
            || !message.contains(c.field)
        {
            failures.push(format!(
                "{short}: want Failed naming {:?}, got {:?}: {message}",
                c.field, status.provisioning_state
            ));
        } else {
            println!(
                "{short:40} -> {}",
                message.chars().take(160).collect::<String>()
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let state = bed.cluster_state().await.expect("state");
    let only_good: BTreeSet<String> = [GOOD.to_string()].into();
    assert_eq!(
        state.mismatch(&only_good),
        None,
        "nothing malformed reached {NAMESPACE}"
    );
    assert_eq!(
        bed.status(GOOD).and_then(|s| s.provisioning_state),
        Some(ProvisioningState::Succeeded)
    );

    agent.shutdown().await.expect("agent stops cleanly");
    controller
        .shutdown()
        .await
        .expect("controller stops cleanly");
    bed.shutdown().await;
}

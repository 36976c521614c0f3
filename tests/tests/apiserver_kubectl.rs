//! Conformance of the Kubernetes API server emulator, driven by the real `kubectl`.
//!
//! Every expectation here is what a real kube-apiserver (v1.32) answers to
//! kubectl; a difference is an emulator bug (see tests/CONFORMANCE-FINDINGS.md).

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::Value;

fn gitrepo_yaml(name: &str, url: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: {name}\nspec:\n  interval: 1m\n  url: {url}\n  ref:\n    branch: main\n"
    )
}

async fn kubectl_install_gitrepo_crd(env: &Env) {
    let path = gitrepo_crd_path();
    env.kubectl(&["apply", "-f", path.to_str().unwrap()])
        .await
        .ok();
    env.kubectl(&[
        "wait",
        "--for=condition=Established",
        &format!("crd/{GITREPO_CRD}"),
        "--timeout=30s",
    ])
    .await
    .ok();
}

fn names(stdout: &str) -> Vec<String> {
    let mut v: Vec<String> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn is_age(cell: &str) -> bool {
    regex::Regex::new(r"^[0-9]+(s|m[0-9]*s?)$")
        .unwrap()
        .is_match(cell)
}

// ---------------------------------------------------------------------------
// CRDs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_flux_crds_and_waits_established() {
    let env = Env::start().await;
    let out = env.kubectl(&["apply", "-f", FLUX_CRDS]).await;
    let stdout = out.ok();
    let mut crd_names = Vec::new();
    for file in flux_crd_files() {
        let name = load_crd(&file).metadata.name.unwrap();
        assert!(
            stdout.contains(&format!(
                "customresourcedefinition.apiextensions.k8s.io/{name} created"
            )),
            "apply output lacks {name}: {stdout}"
        );
        crd_names.push(format!("crd/{name}"));
    }
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=30s"];
    args.extend(crd_names.iter().map(String::as_str));
    let out = env.kubectl(&args).await;
    let stdout = out.ok();
    for name in &crd_names {
        let name = name.trim_start_matches("crd/");
        assert!(
            stdout.contains(&format!(
                "customresourcedefinition.apiextensions.k8s.io/{name} condition met"
            )),
            "wait output lacks {name}: {stdout}"
        );
    }
    // The naming controller publishes the accepted names.
    let kind = env
        .kubectl(&[
            "get",
            "crd",
            GITREPO_CRD,
            "-o",
            "jsonpath={.status.acceptedNames.kind}/{.status.acceptedNames.shortNames[0]}",
        ])
        .await;
    assert_eq!(kind.ok(), "GitRepository/gitrepo");
    // Re-applying unchanged CRDs is a no-op.
    let again = env
        .kubectl(&["apply", "-f", gitrepo_crd_path().to_str().unwrap()])
        .await;
    assert_eq!(
        again.ok().trim(),
        format!("customresourcedefinition.apiextensions.k8s.io/{GITREPO_CRD} unchanged")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_gitrepositories_all_namespaces_prints_printer_columns() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    for ns in ["team-a", "team-b"] {
        env.kubectl(&["create", "namespace", ns]).await.ok();
    }
    env.kubectl_stdin(
        &["apply", "-n", "team-a", "-f", "-"],
        &gitrepo_yaml("podinfo", "https://github.com/stefanprodan/podinfo"),
    )
    .await
    .ok();
    env.kubectl_stdin(
        &["apply", "-n", "team-b", "-f", "-"],
        &gitrepo_yaml("infra", "ssh://git@example.com/infra"),
    )
    .await
    .ok();
    let status = r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Succeeded","message":"stored artifact for revision 'main@sha1:1234'","lastTransitionTime":"2025-01-01T00:00:00Z","observedGeneration":1}]}}"#;
    env.kubectl(&[
        "patch",
        "gitrepository",
        "podinfo",
        "-n",
        "team-a",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ])
    .await
    .ok();

    let out = env.kubectl(&["get", "gitrepositories", "-A"]).await;
    let table = out.table();
    assert_eq!(
        table[0],
        ["NAMESPACE", "NAME", "URL", "AGE", "READY", "STATUS"],
        "header"
    );
    assert_eq!(table.len(), 3, "{table:?}");
    let podinfo = row(&table, &["team-a", "podinfo"]);
    assert_eq!(podinfo[2], "https://github.com/stefanprodan/podinfo");
    assert!(is_age(&podinfo[3]), "AGE cell {:?}", podinfo[3]);
    assert_eq!(podinfo[4], "True");
    assert_eq!(podinfo[5], "stored artifact for revision 'main@sha1:1234'");
    let infra = row(&table, &["team-b", "infra"]);
    assert_eq!(infra[2], "ssh://git@example.com/infra");
    assert!(is_age(&infra[3]), "AGE cell {:?}", infra[3]);
    assert_eq!(infra.len(), 4, "no Ready condition yet: {infra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_resolves_short_names_and_categories() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    env.kubectl_stdin(
        &["apply", "-n", "default", "-f", "-"],
        &gitrepo_yaml("podinfo", "https://github.com/stefanprodan/podinfo"),
    )
    .await
    .ok();
    let out = env.kubectl(&["get", "gitrepo", "-o", "name"]).await;
    assert_eq!(
        out.ok().trim(),
        "gitrepository.source.toolkit.fluxcd.io/podinfo"
    );
    let out = env.kubectl(&["get", "fluxcd-sources", "-o", "name"]).await;
    assert_eq!(
        out.ok().trim(),
        "gitrepository.source.toolkit.fluxcd.io/podinfo"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_schema_rejections_name_the_field() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;

    let out = env
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &gitrepo_yaml("bad", "ftp://example.com/repo"),
        )
        .await;
    let err = out.err();
    assert!(
        err.contains(r#"The GitRepository "bad" is invalid"#),
        "{err}"
    );
    assert!(
        err.contains(r#"spec.url: Invalid value: "ftp://example.com/repo""#),
        "{err}"
    );
    assert!(
        err.contains("should match '^(http|https|ssh)://.*$'"),
        "{err}"
    );

    let missing = "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: nointerval\nspec:\n  url: https://example.com/repo\n";
    let err = env.kubectl_stdin(&["apply", "-f", "-"], missing).await;
    assert!(
        err.err().contains("spec.interval: Required value"),
        "{}",
        err.stderr
    );

    let bad_enum = format!(
        "{}  provider: gitlab\n",
        gitrepo_yaml("badenum", "https://example.com/repo")
    );
    let out = env.kubectl_stdin(&["apply", "-f", "-"], &bad_enum).await;
    let err = out.err();
    assert!(
        err.contains(r#"spec.provider: Unsupported value: "gitlab": supported values: "generic", "aws", "azure", "github""#),
        "{err}"
    );
    // Nothing was stored.
    let list = env.kubectl(&["get", "gitrepositories", "-o", "name"]).await;
    assert_eq!(list.ok().trim(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sees_crd_defaults_applied() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    let yaml = format!(
        "{}  verify:\n    secretRef:\n      name: keys\n",
        gitrepo_yaml("defaulted", "https://example.com/repo")
    );
    env.kubectl_stdin(&["apply", "-f", "-"], &yaml).await.ok();
    let out = env
        .kubectl(&[
            "get",
            "gitrepository",
            "defaulted",
            "-o",
            "jsonpath={.spec.timeout}|{.spec.verify.mode}",
        ])
        .await;
    assert_eq!(out.ok(), "60s|HEAD");
}

// ---------------------------------------------------------------------------
// Server-side apply

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_conflict_and_force_conflicts() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    let alice = gitrepo_yaml("shared", "https://example.com/repo");
    let out = env
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
            &alice,
        )
        .await;
    assert_eq!(
        out.ok().trim(),
        "gitrepository.source.toolkit.fluxcd.io/shared serverside-applied"
    );
    let bob = alice.replace("interval: 1m", "interval: 5m");
    let out = env
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
            &bob,
        )
        .await;
    let err = out.err();
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "alice": .spec.interval"#),
        "{err}"
    );
    let interval = env
        .kubectl(&[
            "get",
            "gitrepository",
            "shared",
            "-o",
            "jsonpath={.spec.interval}",
        ])
        .await;
    assert_eq!(interval.ok(), "1m", "a conflicting apply changes nothing");

    let out = env
        .kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=bob",
                "--force-conflicts",
                "-f",
                "-",
            ],
            &bob,
        )
        .await;
    assert_eq!(
        out.ok().trim(),
        "gitrepository.source.toolkit.fluxcd.io/shared serverside-applied"
    );
    let obj = env
        .kubectl(&[
            "get",
            "gitrepository",
            "shared",
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .await
        .json();
    assert_eq!(obj["spec"]["interval"], "5m");
    let managed = obj["metadata"]["managedFields"].as_array().unwrap();
    let entry = |m: &str| {
        managed
            .iter()
            .find(|e| e["manager"] == m)
            .unwrap_or_else(|| panic!("no managedFields entry for {m}: {managed:?}"))
            .clone()
    };
    let (a, b) = (entry("alice"), entry("bob"));
    assert_eq!(a["operation"], "Apply");
    assert_eq!(b["operation"], "Apply");
    assert!(b["fieldsV1"]["f:spec"]["f:interval"].is_object(), "{b}");
    assert!(
        a["fieldsV1"]["f:spec"].get("f:interval").is_none(),
        "forced apply takes ownership away from alice: {a}"
    );
    // Both applied the same url: shared ownership.
    assert!(a["fieldsV1"]["f:spec"]["f:url"].is_object(), "{a}");
    assert!(b["fieldsV1"]["f:spec"]["f:url"].is_object(), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_removes_field_no_longer_applied() {
    let env = Env::start().await;
    let v1 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels:\n    keep: \"yes\"\n    drop: \"yes\"\ndata:\n  a: \"1\"\n  b: \"2\"\n";
    let v2 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels:\n    keep: \"yes\"\ndata:\n  a: \"1\"\n";
    let ssa = [
        "apply",
        "--server-side",
        "--field-manager=deployer",
        "-f",
        "-",
    ];
    env.kubectl_stdin(&ssa, v1).await.ok();
    let out = env.kubectl_stdin(&ssa, v2).await;
    assert_eq!(out.ok().trim(), "configmap/settings serverside-applied");
    let obj = env
        .kubectl(&["get", "configmap", "settings", "-o", "json"])
        .await
        .json();
    assert_eq!(obj["data"], serde_json::json!({"a": "1"}));
    assert_eq!(
        obj["metadata"]["labels"],
        serde_json::json!({"keep": "yes"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_strict_field_validation_rejects_unknown_fields() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    let yaml = format!(
        "{}  bogus: true\n",
        gitrepo_yaml("strict", "https://example.com/repo")
    );
    let out = env.kubectl_stdin(&["apply", "-f", "-"], &yaml).await;
    let err = out.err();
    assert!(err.contains(r#"unknown field "spec.bogus""#), "{err}");
    let none = env.kubectl(&["get", "gitrepositories", "-o", "name"]).await;
    assert_eq!(none.ok().trim(), "", "rejected object must not be stored");

    // --validate=false sends fieldValidation=Ignore: accepted, field pruned.
    let out = env
        .kubectl_stdin(&["apply", "--validate=false", "-f", "-"], &yaml)
        .await;
    assert_eq!(
        out.ok().trim(),
        "gitrepository.source.toolkit.fluxcd.io/strict created"
    );
    let obj = env
        .kubectl(&["get", "gitrepository", "strict", "-o", "json"])
        .await
        .json();
    assert!(
        obj["spec"].get("bogus").is_none(),
        "pruned: {}",
        obj["spec"]
    );
    assert_eq!(obj["spec"]["url"], "https://example.com/repo");
}

// ---------------------------------------------------------------------------
// Watch

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_prints_added_modified_deleted() {
    let env = Env::start().await;
    env.kubectl(&["create", "configmap", "w0", "--from-literal=k=v"])
        .await
        .ok();
    env.kubectl(&["label", "configmap", "w0", "app=watched"])
        .await
        .ok();
    let mut watch = env.kubectl_spawn(&[
        "get",
        "configmaps",
        "-l",
        "app=watched",
        "-w",
        "--output-watch-events",
    ]);
    let t = Duration::from_secs(20);
    let (header, _) = watch
        .wait_for_line("header", t, |l| l.starts_with("EVENT"))
        .await;
    assert_eq!(parse_table(&header)[0], ["EVENT", "NAME", "DATA", "AGE"]);
    let (line, _) = watch
        .wait_for_line("ADDED w0", t, |l| l.contains("w0"))
        .await;
    let cells = &parse_table(&line)[0];
    assert_eq!(&cells[..3], ["ADDED", "w0", "1"]);

    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: w1\n  labels:\n    app: watched\ndata:\n  k: v\n";
    env.kubectl_stdin(&["create", "-f", "-"], cm).await.ok();
    let (line, skipped) = watch
        .wait_for_line("ADDED w1", t, |l| l.contains("w1"))
        .await;
    assert!(skipped.is_empty(), "unexpected events {skipped:?}");
    assert_eq!(&parse_table(&line)[0][..3], ["ADDED", "w1", "1"]);

    env.kubectl(&[
        "patch",
        "configmap",
        "w1",
        "--type=merge",
        "-p",
        r#"{"data":{"k2":"v2"}}"#,
    ])
    .await
    .ok();
    let (line, skipped) = watch
        .wait_for_line("MODIFIED w1", t, |l| l.contains("w1"))
        .await;
    assert!(skipped.is_empty(), "unexpected events {skipped:?}");
    assert_eq!(&parse_table(&line)[0][..3], ["MODIFIED", "w1", "2"]);

    env.kubectl(&["delete", "configmap", "w1"]).await.ok();
    let (line, skipped) = watch
        .wait_for_line("DELETED w1", t, |l| l.contains("w1"))
        .await;
    assert!(skipped.is_empty(), "unexpected events {skipped:?}");
    assert_eq!(&parse_table(&line)[0][..3], ["DELETED", "w1", "2"]);

    // An object outside the selector produces no event.
    env.kubectl(&["create", "configmap", "other", "--from-literal=a=b"])
        .await
        .ok();
    env.kubectl(&["label", "configmap", "w0", "touched=yes"])
        .await
        .ok();
    let (line, skipped) = watch
        .wait_for_line("MODIFIED w0", t, |l| l.contains("w0"))
        .await;
    assert!(skipped.is_empty(), "unexpected events {skipped:?}");
    assert!(line.starts_with("MODIFIED"), "{line}");
}

// ---------------------------------------------------------------------------
// Deletion: finalizers, garbage collection, namespaces

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_with_finalizer_keeps_object_until_removed() {
    let env = Env::start().await;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers:\n  - example.com/hold\ndata:\n  k: v\n";
    env.kubectl_stdin(&["create", "-f", "-"], cm).await.ok();
    let out = env
        .kubectl(&["delete", "configmap", "held", "--wait=false"])
        .await;
    assert_eq!(out.ok().trim(), r#"configmap "held" deleted"#);
    let out = env
        .kubectl(&[
            "get",
            "configmap",
            "held",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}|{.metadata.finalizers[0]}",
        ])
        .await;
    let (ts, fin) = out.ok().split_once('|').unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
        "deletionTimestamp {ts:?}"
    );
    assert_eq!(fin, "example.com/hold");

    env.kubectl(&[
        "patch",
        "configmap",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .await
    .ok();
    let gone = eventually("held is deleted", DEADLINE, || async {
        let out = env.kubectl(&["get", "configmap", "held"]).await;
        (out.code != 0).then_some(out)
    })
    .await;
    assert!(
        gone.stderr
            .contains(r#"Error from server (NotFound): configmaps "held" not found"#),
        "{}",
        gone.stderr
    );
}

async fn owner_and_dependent(env: &Env) -> String {
    env.kubectl(&["create", "configmap", "owner", "--from-literal=a=b"])
        .await
        .ok();
    let uid = env
        .kubectl(&[
            "get",
            "configmap",
            "owner",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .await
        .ok()
        .to_string();
    let dep = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dependent\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: owner\n    uid: {uid}\ndata:\n  k: v\n"
    );
    env.kubectl_stdin(&["create", "-f", "-"], &dep).await.ok();
    uid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_cascade_orphan_keeps_dependents() {
    let env = Env::start().await;
    owner_and_dependent(&env).await;
    let out = env
        .kubectl(&["delete", "configmap", "owner", "--cascade=orphan"])
        .await;
    assert_eq!(out.ok().trim(), r#"configmap "owner" deleted"#);
    let owner = env.kubectl(&["get", "configmap", "owner"]).await;
    assert!(owner.err().contains("NotFound"), "{}", owner.stderr);
    eventually(
        "ownerReferences removed from the orphan",
        DEADLINE,
        || async {
            let out = env
                .kubectl(&[
                    "get",
                    "configmap",
                    "dependent",
                    "-o",
                    "jsonpath={.metadata.ownerReferences}",
                ])
                .await;
            (out.ok().is_empty()).then_some(())
        },
    )
    .await;
    // Still there after the owner is long gone.
    env.kubectl(&["get", "configmap", "dependent"]).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_cascade_background_collects_dependents() {
    let env = Env::start().await;
    owner_and_dependent(&env).await;
    env.kubectl(&["delete", "configmap", "owner"]).await.ok();
    eventually("dependent garbage-collected", DEADLINE, || async {
        let out = env.kubectl(&["get", "configmap", "dependent"]).await;
        (out.code != 0 && out.stderr.contains("NotFound")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_namespace_deletion_removes_contents() {
    let env = Env::start().await;
    env.kubectl(&["create", "namespace", "doomed"]).await.ok();
    env.kubectl(&[
        "create",
        "configmap",
        "c",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ])
    .await
    .ok();
    env.kubectl(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ])
    .await
    .ok();
    let out = env.kubectl(&["delete", "namespace", "doomed"]).await;
    assert_eq!(out.ok().trim(), r#"namespace "doomed" deleted"#);
    let out = env.kubectl(&["get", "namespace", "doomed"]).await;
    assert!(
        out.err()
            .contains(r#"Error from server (NotFound): namespaces "doomed" not found"#),
        "{}",
        out.stderr
    );
    // Listing in a missing namespace is an empty list, not an error.
    let out = env
        .kubectl(&["get", "configmaps,secrets", "-n", "doomed"])
        .await;
    assert_eq!(out.ok().trim(), "");
    assert!(
        out.stderr
            .contains("No resources found in doomed namespace."),
        "{}",
        out.stderr
    );
    // Re-creating the namespace does not bring its old contents back.
    env.kubectl(&["create", "namespace", "doomed"]).await.ok();
    let out = env
        .kubectl(&["get", "configmap", "c", "-n", "doomed"])
        .await;
    assert!(out.err().contains("NotFound"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// Discovery and tables

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_api_resources_lists_short_names_scope_and_verbs() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    let out = env.kubectl(&["api-resources"]).await;
    let table = out.table();
    assert_eq!(
        table[0],
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    assert_eq!(
        row(&table, &["configmaps"]),
        &["configmaps", "cm", "v1", "true", "ConfigMap"]
    );
    assert_eq!(
        row(&table, &["namespaces"]),
        &["namespaces", "ns", "v1", "false", "Namespace"]
    );
    assert_eq!(
        row(&table, &["secrets"]),
        &["secrets", "v1", "true", "Secret"]
    );
    assert_eq!(
        row(&table, &["customresourcedefinitions"]),
        &[
            "customresourcedefinitions",
            "crd,crds",
            "apiextensions.k8s.io/v1",
            "false",
            "CustomResourceDefinition"
        ]
    );
    assert_eq!(
        row(&table, &["gitrepositories"]),
        &[
            "gitrepositories",
            "gitrepo",
            "source.toolkit.fluxcd.io/v1",
            "true",
            "GitRepository"
        ]
    );

    let out = env.kubectl(&["api-resources", "-o", "wide"]).await;
    let table = out.table();
    assert_eq!(
        table[0],
        [
            "NAME",
            "SHORTNAMES",
            "APIVERSION",
            "NAMESPACED",
            "KIND",
            "VERBS",
            "CATEGORIES"
        ]
    );
    let cm = row(&table, &["configmaps"]);
    for verb in [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ] {
        assert!(
            cm[5]
                .split(|c: char| !c.is_alphanumeric())
                .any(|v| v == verb),
            "configmaps verbs {:?} lack {verb}",
            cm[5]
        );
    }
    let gr = row(&table, &["gitrepositories"]);
    assert!(gr[6].contains("fluxcd-sources"), "categories {gr:?}");

    let out = env
        .kubectl(&["api-resources", "--namespaced=false", "-o", "name"])
        .await;
    let listed: Vec<&str> = out.ok().lines().collect();
    assert!(listed.contains(&"namespaces"), "{listed:?}");
    assert!(!listed.contains(&"configmaps"), "{listed:?}");
    assert!(
        listed.contains(&"customresourcedefinitions.apiextensions.k8s.io"),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_default_namespace_exists() {
    let env = Env::start().await;
    let out = env.kubectl(&["get", "namespaces"]).await;
    let table = out.table();
    assert_eq!(table[0], ["NAME", "STATUS", "AGE"]);
    let default = row(&table, &["default"]);
    assert_eq!(default[1], "Active");
    assert!(is_age(&default[2]), "{default:?}");
    // kubectl's default namespace is usable immediately.
    env.kubectl(&["create", "configmap", "first", "--from-literal=a=b"])
        .await
        .ok();
    let out = env
        .kubectl(&[
            "get",
            "configmap",
            "first",
            "-o",
            "jsonpath={.metadata.namespace}",
        ])
        .await;
    assert_eq!(out.ok(), "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_system_namespaces_exist() {
    let env = Env::start().await;
    let out = env.kubectl(&["get", "namespaces", "-o", "name"]).await;
    let listed = names(out.ok());
    for ns in ["default", "kube-node-lease", "kube-public", "kube-system"] {
        assert!(
            listed.contains(&format!("namespace/{ns}")),
            "{ns} missing from {listed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_prints_builtin_tables() {
    let env = Env::start().await;
    env.kubectl(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=username=u",
        "--from-literal=password=p",
    ])
    .await
    .ok();
    let table = env.kubectl(&["get", "secrets"]).await.table();
    assert_eq!(table[0], ["NAME", "TYPE", "DATA", "AGE"]);
    let creds = row(&table, &["creds"]);
    assert_eq!(&creds[..3], ["creds", "Opaque", "2"]);
    assert!(is_age(&creds[3]), "{creds:?}");

    env.kubectl(&[
        "create",
        "configmap",
        "three",
        "--from-literal=a=1",
        "--from-literal=b=2",
        "--from-literal=c=3",
    ])
    .await
    .ok();
    let table = env.kubectl(&["get", "configmap", "three"]).await.table();
    assert_eq!(table[0], ["NAME", "DATA", "AGE"]);
    assert_eq!(&table[1][..2], ["three", "3"]);
    assert_eq!(table.len(), 2);

    env.kubectl(&["create", "serviceaccount", "builder"])
        .await
        .ok();
    let table = env
        .kubectl(&["get", "serviceaccount", "builder"])
        .await
        .table();
    assert_eq!(table[0], ["NAME", "SECRETS", "AGE"]);
    assert_eq!(&table[1][..2], ["builder", "0"]);

    kubectl_install_gitrepo_crd(&env).await;
    let table = env.kubectl(&["get", "crd", GITREPO_CRD]).await.table();
    assert_eq!(table[0], ["NAME", "CREATED AT"]);
    assert_eq!(table[1][0], GITREPO_CRD);
    assert!(
        chrono::DateTime::parse_from_rfc3339(&table[1][1]).is_ok(),
        "CREATED AT {:?}",
        table[1][1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_wide_shows_priority_columns() {
    let env = Env::start().await;
    let crd = format!("{FIXTURES}widgets-crd.yaml");
    env.kubectl(&["apply", "-f", &crd]).await.ok();
    env.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=30s",
    ])
    .await
    .ok();
    env.kubectl(&["apply", "-f", &format!("{FIXTURES}widgets.yaml")])
        .await
        .ok();
    let table = env.kubectl(&["get", "widgets"]).await.table();
    assert_eq!(table[0], ["NAME", "SIZE", "AGE"]);
    assert_eq!(&row(&table, &["small"])[..2], ["small", "2"]);
    assert_eq!(&row(&table, &["large"])[..2], ["large", "9"]);

    let table = env.kubectl(&["get", "wdg", "-o", "wide"]).await.table();
    assert_eq!(table[0], ["NAME", "SIZE", "COLOR", "AGE"]);
    // "blue" comes from the schema default.
    assert_eq!(&row(&table, &["small"])[..3], ["small", "2", "blue"]);
    assert_eq!(&row(&table, &["large"])[..3], ["large", "9", "red"]);
    // Rows are sorted by name as the server lists them.
    assert_eq!(table[1][0], "large");
    assert_eq!(table[2][0], "small");
}

// ---------------------------------------------------------------------------
// Secrets, selectors, patches, errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_secret_string_data_and_tls_required_keys() {
    let env = Env::start().await;
    let tls = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: cert\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: CERT\n";
    let out = env.kubectl_stdin(&["apply", "-f", "-"], tls).await;
    let err = out.err();
    assert!(err.contains(r#"The Secret "cert" is invalid"#), "{err}");
    assert!(err.contains("data[tls.key]: Required value"), "{err}");
    assert!(!err.contains("data[tls.crt]"), "tls.crt was given: {err}");

    let s = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: folded\nstringData:\n  password: s3cr3t\ndata:\n  user: YWRtaW4=\n";
    env.kubectl_stdin(&["apply", "-f", "-"], s).await.ok();
    let obj = env
        .kubectl(&["get", "secret", "folded", "-o", "json"])
        .await
        .json();
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(obj["data"]["password"], b64.encode("s3cr3t"));
    assert_eq!(obj["data"]["user"], "YWRtaW4=");
    assert!(obj.get("stringData").is_none(), "{obj}");
    assert_eq!(obj["type"], "Opaque");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_label_selectors() {
    let env = Env::start().await;
    for (name, labels) in [
        ("a", "env=prod tier=web"),
        ("b", "env=dev tier=web"),
        ("c", "env=staging"),
        ("d", "other=x"),
    ] {
        env.kubectl(&["create", "configmap", name]).await.ok();
        let mut args = vec!["label", "configmap", name, "suite=sel"];
        args.extend(labels.split(' '));
        env.kubectl(&args).await.ok();
    }
    let cases: [(&str, &[&str]); 7] = [
        ("env=prod", &["a"]),
        ("env==prod", &["a"]),
        ("suite=sel,env!=prod", &["b", "c", "d"]),
        ("suite=sel,env in (dev,staging)", &["b", "c"]),
        ("suite=sel,env notin (dev,staging)", &["a", "d"]),
        ("suite=sel,tier", &["a", "b"]),
        ("suite=sel,!tier", &["c", "d"]),
    ];
    for (selector, expected) in cases {
        let out = env
            .kubectl(&["get", "configmaps", "-l", selector, "-o", "name"])
            .await;
        let expected: Vec<String> = expected.iter().map(|n| format!("configmap/{n}")).collect();
        assert_eq!(names(out.ok()), expected, "selector {selector:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_field_selectors() {
    let env = Env::start().await;
    env.kubectl(&["create", "namespace", "other"]).await.ok();
    for (ns, name) in [("default", "a"), ("default", "b"), ("other", "a")] {
        env.kubectl(&["create", "configmap", name, "-n", ns])
            .await
            .ok();
    }
    let out = env
        .kubectl(&[
            "get",
            "configmaps",
            "--field-selector",
            "metadata.name=a",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(names(out.ok()), ["configmap/a"]);
    let out = env
        .kubectl(&[
            "get",
            "configmaps",
            "-A",
            "--field-selector",
            "metadata.name=a,metadata.namespace!=default",
            "-o",
            "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {end}",
        ])
        .await;
    assert_eq!(out.ok().trim(), "other/a");
    let out = env
        .kubectl(&["get", "configmaps", "--field-selector", "spec.x=y"])
        .await;
    let err = out.err();
    assert!(err.contains("BadRequest"), "{err}");
    assert!(err.contains("field label not supported: spec.x"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_strategic_merge_patch_is_unsupported_for_custom_resources() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    env.kubectl_stdin(
        &["apply", "-f", "-"],
        &gitrepo_yaml("p", "https://example.com/repo"),
    )
    .await
    .ok();
    let out = env
        .kubectl(&[
            "patch",
            "gitrepository",
            "p",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ])
        .await;
    let err = out.err();
    assert!(
        err.contains("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"),
        "{err}"
    );
    env.kubectl(&[
        "patch",
        "gitrepository",
        "p",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ])
    .await
    .ok();
    env.kubectl(&[
        "patch",
        "gitrepository",
        "p",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/interval","value":"10m"}]"#,
    ])
    .await
    .ok();
    let out = env
        .kubectl(&[
            "get",
            "gitrepository",
            "p",
            "-o",
            "jsonpath={.spec.suspend}|{.spec.interval}",
        ])
        .await;
    assert_eq!(out.ok(), "true|10m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_strategic_merge_patch_merges_builtin_lists() {
    let env = Env::start().await;
    let sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: bot\nsecrets:\n- name: a\nimagePullSecrets:\n- name: pull-a\n";
    env.kubectl_stdin(&["create", "-f", "-"], sa).await.ok();
    env.kubectl(&[
        "patch",
        "serviceaccount",
        "bot",
        "-p",
        r#"{"secrets":[{"name":"b"}],"imagePullSecrets":[{"name":"pull-b"}]}"#,
    ])
    .await
    .ok();
    let obj = env
        .kubectl(&["get", "serviceaccount", "bot", "-o", "json"])
        .await
        .json();
    // secrets: patchStrategy=merge, patchMergeKey=name; imagePullSecrets: atomic.
    assert_eq!(
        obj["secrets"],
        serde_json::json!([{"name": "a"}, {"name": "b"}])
    );
    assert_eq!(
        obj["imagePullSecrets"],
        serde_json::json!([{"name": "pull-b"}])
    );

    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fin\n  finalizers:\n  - example.com/a\n";
    env.kubectl_stdin(&["create", "-f", "-"], cm).await.ok();
    env.kubectl(&[
        "patch",
        "configmap",
        "fin",
        "--type=strategic",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/b"]}}"#,
    ])
    .await
    .ok();
    let fins = env
        .kubectl(&[
            "get",
            "configmap",
            "fin",
            "-o",
            "jsonpath={.metadata.finalizers}",
        ])
        .await;
    let fins: Value = serde_json::from_str(fins.ok()).unwrap();
    assert_eq!(fins, serde_json::json!(["example.com/a", "example.com/b"]));
    // A JSON merge patch replaces the list.
    env.kubectl(&[
        "patch",
        "configmap",
        "fin",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/c"]}}"#,
    ])
    .await
    .ok();
    let fins = env
        .kubectl(&[
            "get",
            "configmap",
            "fin",
            "-o",
            "jsonpath={.metadata.finalizers}",
        ])
        .await;
    let fins: Value = serde_json::from_str(fins.ok()).unwrap();
    assert_eq!(fins, serde_json::json!(["example.com/c"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_unauthorized_with_wrong_token() {
    let env = Env::start().await;
    let bad = env.kubeconfig_with_token(Some("not-the-token"));
    let out = env.kubectl_with(&bad, &["get", "configmaps"], None).await;
    let err = out.err();
    // kubectl's wording depends on whether discovery or the request itself got the 401
    // ("(Unauthorized)" or "(the server has asked for the client to provide credentials)").
    assert!(
        err.contains("error: You must be logged in to the server ("),
        "{err}"
    );
    // The right token still works.
    env.kubectl(&["get", "configmaps"]).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_reports_already_exists_and_missing_namespace() {
    let env = Env::start().await;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: once\n";
    env.kubectl_stdin(&["create", "-f", "-"], cm).await.ok();
    let out = env.kubectl_stdin(&["create", "-f", "-"], cm).await;
    assert!(
        out.err().contains(
            r#"Error from server (AlreadyExists): error when creating "STDIN": configmaps "once" already exists"#
        ),
        "{}",
        out.stderr
    );
    // The generator form wraps the same server message.
    let out = env.kubectl(&["create", "configmap", "once"]).await;
    assert!(
        out.err()
            .contains(r#"error: failed to create configmap: configmaps "once" already exists"#),
        "{}",
        out.stderr
    );
    let out = env
        .kubectl_stdin(&["create", "-n", "nope", "-f", "-"], cm)
        .await;
    assert!(
        out.err().contains(
            r#"Error from server (NotFound): error when creating "STDIN": namespaces "nope" not found"#
        ),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_replace_with_stale_resource_version_conflicts() {
    let env = Env::start().await;
    env.kubectl(&["create", "configmap", "cas", "--from-literal=v=1"])
        .await
        .ok();
    let stale = env
        .kubectl(&["get", "configmap", "cas", "-o", "json"])
        .await
        .ok()
        .to_string();
    env.kubectl(&[
        "patch",
        "configmap",
        "cas",
        "--type=merge",
        "-p",
        r#"{"data":{"v":"2"}}"#,
    ])
    .await
    .ok();
    let out = env.kubectl_stdin(&["replace", "-f", "-"], &stale).await;
    let err = out.err();
    assert!(err.contains("Error from server (Conflict)"), "{err}");
    assert!(
        err.contains(r#"Operation cannot be fulfilled on configmaps "cas": the object has been modified; please apply your changes to the latest version and try again"#),
        "{err}"
    );
    let v = env
        .kubectl(&["get", "configmap", "cas", "-o", "jsonpath={.data.v}"])
        .await;
    assert_eq!(v.ok(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_lists_in_chunks() {
    let env = Env::start().await;
    let mut expected = Vec::new();
    for i in 0..7 {
        let name = format!("page-{i}");
        env.kubectl(&["create", "configmap", &name]).await.ok();
        env.kubectl(&["label", "configmap", &name, "paged=yes"])
            .await
            .ok();
        expected.push(format!("configmap/{name}"));
    }
    let out = env
        .kubectl(&[
            "get",
            "configmaps",
            "-l",
            "paged=yes",
            "--chunk-size=2",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(out.ok().lines().collect::<Vec<_>>(), expected);
    let table = env
        .kubectl(&["get", "configmaps", "-l", "paged=yes", "--chunk-size=3"])
        .await
        .table();
    assert_eq!(table[0], ["NAME", "DATA", "AGE"]);
    assert_eq!(table.len(), 8, "one header and 7 rows: {table:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_client_side_apply_updates_and_prunes_fields() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    let v1 = format!(
        "{}  suspend: true\n",
        gitrepo_yaml("csa", "https://example.com/repo")
    );
    let out = env.kubectl_stdin(&["apply", "-f", "-"], &v1).await;
    assert_eq!(
        out.ok().trim(),
        "gitrepository.source.toolkit.fluxcd.io/csa created"
    );
    let out = env.kubectl_stdin(&["apply", "-f", "-"], &v1).await;
    assert_eq!(
        out.ok().trim(),
        "gitrepository.source.toolkit.fluxcd.io/csa unchanged"
    );
    let v2 =
        gitrepo_yaml("csa", "https://example.com/repo").replace("interval: 1m", "interval: 2m");
    let out = env.kubectl_stdin(&["apply", "-f", "-"], &v2).await;
    assert_eq!(
        out.ok().trim(),
        "gitrepository.source.toolkit.fluxcd.io/csa configured"
    );
    let obj = env
        .kubectl(&["get", "gitrepository", "csa", "-o", "json"])
        .await
        .json();
    assert_eq!(obj["spec"]["interval"], "2m");
    assert!(
        obj["spec"].get("suspend").is_none(),
        "a field dropped from the manifest is removed: {}",
        obj["spec"]
    );
    assert_eq!(obj["metadata"]["generation"], 2);
    let last = obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .expect("last-applied annotation");
    let last: Value = serde_json::from_str(last).unwrap();
    assert_eq!(last["spec"]["interval"], "2m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_dry_run_validates_without_persisting() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    let out = env
        .kubectl(&[
            "create",
            "configmap",
            "dry",
            "--from-literal=a=b",
            "--dry-run=server",
            "-o",
            "jsonpath={.metadata.name}/{.data.a}",
        ])
        .await;
    assert_eq!(out.ok(), "dry/b");
    let out = env.kubectl(&["get", "configmap", "dry"]).await;
    assert!(out.err().contains("NotFound"), "{}", out.stderr);

    let out = env
        .kubectl_stdin(
            &["apply", "--dry-run=server", "-f", "-"],
            &gitrepo_yaml("dry", "ftp://example.com/repo"),
        )
        .await;
    assert!(
        out.err()
            .contains(r#"spec.url: Invalid value: "ftp://example.com/repo""#),
        "{}",
        out.stderr
    );
    let out = env
        .kubectl_stdin(
            &["apply", "--dry-run=server", "-f", "-"],
            &gitrepo_yaml("dry", "https://example.com/repo"),
        )
        .await;
    assert_eq!(
        out.ok().trim(),
        "gitrepository.source.toolkit.fluxcd.io/dry created (server dry run)"
    );
    let list = env.kubectl(&["get", "gitrepositories", "-o", "name"]).await;
    assert_eq!(list.ok().trim(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wait_for_delete_returns_when_object_is_gone() {
    let env = Env::start().await;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: w\n  finalizers:\n  - example.com/hold\n";
    env.kubectl_stdin(&["create", "-f", "-"], cm).await.ok();
    env.kubectl(&["delete", "configmap", "w", "--wait=false"])
        .await
        .ok();
    // Still held: waiting times out.
    let out = env
        .kubectl(&["wait", "--for=delete", "configmap/w", "--timeout=1s"])
        .await;
    assert!(out.err().contains("timed out waiting"), "{}", out.stderr);
    let mut waiter = env.kubectl_spawn_with_stderr(&[
        "wait",
        "--for=delete",
        "configmap/w",
        "--timeout=30s",
        "-v=6",
    ]);
    // Remove the finalizer only once kubectl is watching, so it sees the deletion happen.
    waiter
        .wait_for_line("kubectl's watch request", Duration::from_secs(20), |l| {
            l.contains("watch=true")
        })
        .await;
    env.kubectl(&[
        "patch",
        "configmap",
        "w",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .await
    .ok();
    let (code, lines) = waiter.finish(Duration::from_secs(30)).await;
    assert_eq!(code, 0, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l == "configmap/w condition met"),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_applies_flux_crds() {
    let env = Env::start().await;
    let ssa = [
        "apply",
        "--server-side",
        "--field-manager=flux-install",
        "-f",
        FLUX_CRDS,
    ];
    for _ in 0..2 {
        let out = env.kubectl(&ssa).await;
        let stdout = out.ok();
        for file in flux_crd_files() {
            let name = load_crd(&file).metadata.name.unwrap();
            assert!(
                stdout.contains(&format!(
                    "customresourcedefinition.apiextensions.k8s.io/{name} serverside-applied"
                )),
                "{stdout}"
            );
        }
    }
    env.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/kustomizations.kustomize.toolkit.fluxcd.io",
        "crd/helmreleases.helm.toolkit.fluxcd.io",
        "--timeout=30s",
    ])
    .await
    .ok();
    let out = env
        .kubectl(&[
            "get",
            "crd",
            "kustomizations.kustomize.toolkit.fluxcd.io",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ])
        .await;
    assert!(out.ok().contains("flux-install"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wait_for_ready_condition_on_custom_resource() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    env.kubectl_stdin(
        &["apply", "-f", "-"],
        &gitrepo_yaml("ready", "https://example.com/repo"),
    )
    .await
    .ok();
    let out = env
        .kubectl(&[
            "wait",
            "--for=condition=Ready",
            "gitrepository/ready",
            "--timeout=1s",
        ])
        .await;
    assert!(out.err().contains("timed out waiting"), "{}", out.stderr);
    let waiter = env.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "gitrepository/ready",
        "--timeout=30s",
    ]);
    // kubectl wait ignores a condition whose observedGeneration (or status.observedGeneration,
    // defaulted to -1 by the Flux CRD) is older than metadata.generation.
    let status = r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Succeeded","message":"ok","lastTransitionTime":"2025-01-01T00:00:00Z","observedGeneration":1}]}}"#;
    let patch_args = [
        "patch",
        "gitrepository",
        "ready",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ];
    let patcher = env.kubectl(&patch_args);
    let (out, patched) = tokio::join!(waiter, patcher);
    patched.ok();
    assert_eq!(
        out.ok().trim(),
        "gitrepository.source.toolkit.fluxcd.io/ready condition met"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_deleting_a_crd_removes_its_resources() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    env.kubectl_stdin(
        &["apply", "-f", "-"],
        &gitrepo_yaml("doomed", "https://example.com/repo"),
    )
    .await
    .ok();
    let out = env.kubectl(&["delete", "crd", GITREPO_CRD]).await;
    assert_eq!(
        out.ok().trim(),
        format!(r#"customresourcedefinition.apiextensions.k8s.io "{GITREPO_CRD}" deleted"#)
    );
    let out = env.kubectl(&["get", "crd", GITREPO_CRD]).await;
    assert!(out.err().contains("NotFound"), "{}", out.stderr);
    let out = env.kubectl(&["get", "gitrepositories"]).await;
    assert!(out.err().contains("gitrepositories"), "{}", out.stderr);
    // Re-creating the CRD does not resurrect the old objects.
    kubectl_install_gitrepo_crd(&env).await;
    let out = env
        .kubectl(&["get", "gitrepositories", "-A", "-o", "name"])
        .await;
    assert_eq!(out.ok().trim(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_shows_object_and_its_events() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    env.kubectl_stdin(
        &["apply", "-f", "-"],
        &gitrepo_yaml("described", "https://example.com/repo"),
    )
    .await
    .ok();
    let uid = env
        .kubectl(&[
            "get",
            "gitrepository",
            "described",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .await
        .ok()
        .to_string();
    let event = format!(
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: described.1\ninvolvedObject:\n  apiVersion: source.toolkit.fluxcd.io/v1\n  kind: GitRepository\n  name: described\n  namespace: default\n  uid: {uid}\nreason: GitOperationFailed\nmessage: failed to checkout and determine revision\ntype: Warning\nsource:\n  component: source-controller\nfirstTimestamp: \"2025-01-01T00:00:00Z\"\nlastTimestamp: \"2025-01-01T00:00:00Z\"\ncount: 1\n"
    );
    env.kubectl_stdin(&["create", "-f", "-"], &event).await.ok();
    let out = env
        .kubectl(&["describe", "gitrepository", "described"])
        .await;
    let text = out.ok();
    for re in [
        r"(?m)^Name:\s+described$",
        r"(?m)^Namespace:\s+default$",
        r"(?m)^API Version:\s+source.toolkit.fluxcd.io/v1$",
        r"(?m)^Kind:\s+GitRepository$",
        r"(?m)^\s+Interval:\s+1m$",
        r"(?m)^Events:$",
        r"(?m)^\s+Warning\s+GitOperationFailed\s+.*source-controller\s+failed to checkout and determine revision$",
    ] {
        assert!(
            regex::Regex::new(re).unwrap().is_match(text),
            "describe output lacks {re}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_records_field_managers() {
    let env = Env::start().await;
    env.kubectl(&["create", "configmap", "managed", "--from-literal=a=b"])
        .await
        .ok();
    env.kubectl(&["label", "configmap", "managed", "team=x"])
        .await
        .ok();
    let obj = env
        .kubectl(&[
            "get",
            "configmap",
            "managed",
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .await
        .json();
    let entries: Vec<(String, String)> = obj["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("kubectl-create".to_string(), "Update".to_string()),
            ("kubectl-label".to_string(), "Update".to_string())
        ]
    );
    let label = obj["metadata"]["managedFields"][1]["fieldsV1"].clone();
    assert_eq!(
        label,
        serde_json::json!({"f:metadata": {"f:labels": {".": {}, "f:team": {}}}})
    );
    // Without --show-managed-fields kubectl hides them.
    let obj = env
        .kubectl(&["get", "configmap", "managed", "-o", "json"])
        .await
        .json();
    assert!(obj["metadata"].get("managedFields").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_diff_uses_server_dry_run() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    let v1 = gitrepo_yaml("diffed", "https://example.com/repo");
    env.kubectl_stdin(&["apply", "-f", "-"], &v1).await.ok();
    let same = env.kubectl_stdin(&["diff", "-f", "-"], &v1).await;
    assert_eq!(
        same.code, 0,
        "no differences: {} {}",
        same.stdout, same.stderr
    );
    assert_eq!(same.stdout.trim(), "");
    let v2 = v1.replace("interval: 1m", "interval: 5m");
    let changed = env.kubectl_stdin(&["diff", "-f", "-"], &v2).await;
    assert_eq!(changed.code, 1, "differences found: {}", changed.stderr);
    let lines: Vec<&str> = changed.stdout.lines().collect();
    assert!(lines.contains(&"-  interval: 1m"), "{}", changed.stdout);
    assert!(lines.contains(&"+  interval: 5m"), "{}", changed.stdout);
    assert!(
        lines.iter().any(|l| l.starts_with("-  generation: 1")),
        "{}",
        changed.stdout
    );
    assert!(
        lines.iter().any(|l| l.starts_with("+  generation: 2")),
        "the dry run bumps generation: {}",
        changed.stdout
    );
    // Nothing was written.
    let out = env
        .kubectl(&[
            "get",
            "gitrepository",
            "diffed",
            "-o",
            "jsonpath={.spec.interval}",
        ])
        .await;
    assert_eq!(out.ok(), "1m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_reads_crd_schema_from_openapi_v3() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    let out = env.kubectl(&["explain", "gitrepository.spec.url"]).await;
    let text = out.ok();
    for re in [
        r"(?m)^GROUP:\s+source.toolkit.fluxcd.io$",
        r"(?m)^KIND:\s+GitRepository$",
        r"(?m)^VERSION:\s+v1$",
        r"(?m)^FIELD: url <string>$",
        r"URL specifies the Git repository URL",
    ] {
        assert!(
            regex::Regex::new(re).unwrap().is_match(text),
            "explain output lacks {re}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_builtin_fields() {
    let env = Env::start().await;
    let out = env.kubectl(&["explain", "configmap.data"]).await;
    assert!(
        regex::Regex::new(r"(?m)^FIELD: data <map\[string\]string>$")
            .unwrap()
            .is_match(out.ok()),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_strict_field_validation_on_builtins() {
    let env = Env::start().await;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: strict\n  bogusMeta: 1\ndata:\n  a: b\nbogus: true\n";
    let out = env.kubectl_stdin(&["apply", "-f", "-"], cm).await;
    let err = out.err();
    assert!(err.contains(r#"unknown field "bogus""#), "{err}");
    assert!(
        err.contains(r#"unknown field "metadata.bogusMeta""#),
        "{err}"
    );
    let out = env
        .kubectl_stdin(&["apply", "--validate=false", "-f", "-"], cm)
        .await;
    assert_eq!(out.ok().trim(), "configmap/strict created");
    let obj = env
        .kubectl(&["get", "configmap", "strict", "-o", "json"])
        .await
        .json();
    assert!(obj.get("bogus").is_none());
    assert_eq!(obj["data"]["a"], "b");
}

/// Kills the `testbed apiserver` process when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `testbed apiserver` with EXTRA args; returns its guard and the kubeconfig text.
async fn start_cli(dir: &std::path::Path, extra: &[&str]) -> (KillOnDrop, String) {
    let kubeconfig = dir.join("kubeconfig");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(["apiserver", "--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn testbed");
    let guard = KillOnDrop(child);
    let text = eventually("kubeconfig written", DEADLINE, || async {
        std::fs::read_to_string(&kubeconfig).ok()
    })
    .await;
    (guard, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testbed_apiserver_cli_serves_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let (_guard, text) = start_cli(dir.path(), &["--fault-error-rate", "delete=500:1.0"]).await;
    assert!(text.contains("server: https://127.0.0.1:"), "{text}");
    let kubeconfig = dir.path().join("kubeconfig");
    let out = kubectl_at(
        dir.path(),
        &kubeconfig,
        &[
            "get",
            "namespace",
            "default",
            "-o",
            "jsonpath={.status.phase}",
        ],
        None,
    )
    .await;
    assert_eq!(out.ok(), "Active");
    kubectl_at(dir.path(), &kubeconfig, &["create", "configmap", "x"], None)
        .await
        .ok();
    // --fault-error-rate delete=500:1.0
    let out = kubectl_at(dir.path(), &kubeconfig, &["delete", "configmap", "x"], None).await;
    assert!(
        out.err().contains("Error from server (InternalError)"),
        "{}",
        out.stderr
    );
    kubectl_at(dir.path(), &kubeconfig, &["get", "configmap", "x"], None)
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testbed_apiserver_plain_http_is_usable_by_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let (_guard, text) = start_cli(dir.path(), &["--plain-http"]).await;
    assert!(text.contains("server: http://127.0.0.1:"), "{text}");
    let kubeconfig = dir.path().join("kubeconfig");
    // client-go never sends a bearer token over plain HTTP, so a plain-HTTP endpoint must not
    // require one (like the real server's old insecure port).
    let out = kubectl_at(
        dir.path(),
        &kubeconfig,
        &[
            "get",
            "namespace",
            "default",
            "-o",
            "jsonpath={.status.phase}",
        ],
        None,
    )
    .await;
    assert_eq!(out.ok(), "Active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_custom_resources_prints_printer_columns() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    env.kubectl_stdin(
        &["apply", "-f", "-"],
        &gitrepo_yaml("watched", "https://example.com/repo"),
    )
    .await
    .ok();
    let mut watch = env.kubectl_spawn(&["get", "gitrepositories", "-w", "--output-watch-events"]);
    let t = Duration::from_secs(20);
    let (header, _) = watch
        .wait_for_line("header", t, |l| l.starts_with("EVENT"))
        .await;
    assert_eq!(
        parse_table(&header)[0],
        ["EVENT", "NAME", "URL", "AGE", "READY", "STATUS"]
    );
    let (line, _) = watch
        .wait_for_line("ADDED watched", t, |l| l.contains("watched"))
        .await;
    assert_eq!(
        &parse_table(&line)[0][..3],
        ["ADDED", "watched", "https://example.com/repo"]
    );
    let status = r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"GitOperationFailed","message":"auth failed","lastTransitionTime":"2025-01-01T00:00:00Z","observedGeneration":1}]}}"#;
    let args = [
        "patch",
        "gitrepository",
        "watched",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ];
    env.kubectl(&args).await.ok();
    let (line, skipped) = watch
        .wait_for_line("MODIFIED watched", t, |l| l.contains("watched"))
        .await;
    assert!(skipped.is_empty(), "{skipped:?}");
    let cells = &parse_table(&line)[0];
    assert_eq!(
        &cells[..3],
        ["MODIFIED", "watched", "https://example.com/repo"]
    );
    assert_eq!(&cells[4..], ["False", "auth failed"]);
}

// ---------------------------------------------------------------------------
// Built-in workload / networking / RBAC kinds used by the deploy manifests

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_deployments_columns() {
    let env = Env::start().await;
    env.kubectl_stdin(&["apply", "-f", "-"], DEPLOYMENT)
        .await
        .ok();
    let table = env.kubectl(&["get", "deployments"]).await.table();
    assert_eq!(
        table[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(&table[1][..4], ["web", "0/3", "0", "0"]);
    let table = env.kubectl(&["get", "deploy", "-o", "wide"]).await.table();
    assert_eq!(
        table[0],
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert_eq!(&table[1][5..], ["web", "nginx:1.27", "app=web"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_deployment_bumps_generation() {
    let env = Env::start().await;
    env.kubectl_stdin(&["apply", "-f", "-"], DEPLOYMENT)
        .await
        .ok();
    let out = env
        .kubectl(&["scale", "deployment", "web", "--replicas=5"])
        .await;
    assert_eq!(out.ok().trim(), "deployment.apps/web scaled");
    let out = env
        .kubectl(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}/{.metadata.generation}",
        ])
        .await;
    assert_eq!(out.ok(), "5/2");
    // Labels do not bump generation.
    env.kubectl(&["label", "deployment", "web", "tier=front"])
        .await
        .ok();
    let out = env
        .kubectl(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.metadata.generation}",
        ])
        .await;
    assert_eq!(out.ok(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_defaults_are_applied() {
    let env = Env::start().await;
    let minimal = DEPLOYMENT.replace("  replicas: 3\n", "");
    env.kubectl_stdin(&["apply", "-f", "-"], &minimal)
        .await
        .ok();
    let obj = env
        .kubectl(&["get", "deployment", "web", "-o", "json"])
        .await
        .json();
    let spec = &obj["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(
        spec["strategy"],
        serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: 8080\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_services_columns() {
    let env = Env::start().await;
    env.kubectl_stdin(&["apply", "-f", "-"], SERVICE).await.ok();
    let table = env.kubectl(&["get", "service", "web"]).await.table();
    assert_eq!(
        table[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let row = &table[1];
    assert_eq!(row[0], "web");
    assert_eq!(row[1], "ClusterIP");
    assert!(row[2].parse::<std::net::Ipv4Addr>().is_ok(), "{row:?}");
    assert_eq!(&row[3..5], ["<none>", "80/TCP"]);
    let table = env
        .kubectl(&["get", "service", "kubernetes", "-n", "default"])
        .await
        .table();
    assert_eq!(&table[1][..2], ["kubernetes", "ClusterIP"]);
    assert_eq!(table[1][4], "443/TCP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_defaults_and_cluster_ip_allocation() {
    let env = Env::start().await;
    env.kubectl_stdin(&["apply", "-f", "-"], SERVICE).await.ok();
    let obj = env
        .kubectl(&["get", "service", "web", "-o", "json"])
        .await
        .json();
    let spec = &obj["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["ports"][0]["protocol"], "TCP");
    let ip: std::net::Ipv4Addr = spec["clusterIP"]
        .as_str()
        .expect("clusterIP allocated")
        .parse()
        .expect("an IPv4 address");
    assert_eq!(spec["clusterIPs"], serde_json::json!([ip.to_string()]));
    // A second Service gets a different address.
    let other = SERVICE.replace("name: web", "name: api");
    env.kubectl_stdin(&["apply", "-f", "-"], &other).await.ok();
    let other_ip = env
        .kubectl(&["get", "service", "api", "-o", "jsonpath={.spec.clusterIP}"])
        .await;
    assert_ne!(other_ip.ok(), ip.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_service_exists_in_default_namespace() {
    let env = Env::start().await;
    let obj = env
        .kubectl(&[
            "get",
            "service",
            "kubernetes",
            "-n",
            "default",
            "-o",
            "json",
        ])
        .await
        .json();
    assert_eq!(obj["spec"]["type"], "ClusterIP");
    let port = &obj["spec"]["ports"][0];
    assert_eq!(port["name"], "https");
    assert_eq!(port["port"], 443);
    assert_eq!(port["protocol"], "TCP");
}

const ROLE_BINDING: &str = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: flux-reader\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: view\nsubjects:\n- kind: ServiceAccount\n  name: flux\n  namespace: default\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rbac_tables() {
    let env = Env::start().await;
    env.kubectl_stdin(&["apply", "-f", "-"], ROLE_BINDING)
        .await
        .ok();
    let table = env
        .kubectl(&["get", "rolebinding", "flux-reader"])
        .await
        .table();
    assert_eq!(table[0], ["NAME", "ROLE", "AGE"]);
    assert_eq!(&table[1][..2], ["flux-reader", "ClusterRole/view"]);
    let table = env
        .kubectl(&["get", "rolebinding", "flux-reader", "-o", "wide"])
        .await
        .table();
    assert_eq!(
        table[0],
        ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    );
    assert_eq!(table[1].last().unwrap(), "default/flux");
    let cr = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: reader\nrules:\n- apiGroups: [\"\"]\n  resources: [\"configmaps\"]\n  verbs: [\"get\", \"list\", \"watch\"]\n";
    env.kubectl_stdin(&["apply", "-f", "-"], cr).await.ok();
    let table = env.kubectl(&["get", "clusterrole", "reader"]).await.table();
    assert_eq!(table[0], ["NAME", "CREATED AT"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolebinding_role_ref_is_immutable() {
    let env = Env::start().await;
    env.kubectl_stdin(&["apply", "-f", "-"], ROLE_BINDING)
        .await
        .ok();
    let changed = ROLE_BINDING.replace("name: view", "name: edit");
    let out = env.kubectl_stdin(&["apply", "-f", "-"], &changed).await;
    let err = out.err();
    assert!(
        err.contains(r#"The RoleBinding "flux-reader" is invalid: roleRef: Invalid value:"#),
        "{err}"
    );
    assert!(err.contains("cannot change roleRef"), "{err}");
    // Subjects may change.
    let more =
        format!("{ROLE_BINDING}- kind: ServiceAccount\n  name: other\n  namespace: default\n");
    env.kubectl_stdin(&["apply", "-f", "-"], &more).await.ok();
    let out = env
        .kubectl(&[
            "get",
            "rolebinding",
            "flux-reader",
            "-o",
            "jsonpath={.roleRef.name}/{.subjects[1].name}",
        ])
        .await;
    assert_eq!(out.ok(), "view/other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_handles_the_fluxconfig_crd_and_example() {
    let env = Env::start().await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/");
    let out = env
        .kubectl(&[
            "apply",
            "--server-side",
            "-f",
            &format!("{root}crds/clusterconfig.azure.com_fluxconfigs.yaml"),
        ])
        .await;
    assert_eq!(
        out.ok().trim(),
        "customresourcedefinition.apiextensions.k8s.io/fluxconfigs.clusterconfig.azure.com serverside-applied"
    );
    env.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/fluxconfigs.clusterconfig.azure.com",
        "--timeout=30s",
    ])
    .await
    .ok();
    env.kubectl(&["create", "namespace", "cluster-config"])
        .await
        .ok();
    env.kubectl(&[
        "apply",
        "-f",
        &format!("{root}examples/cluster-config.yaml"),
    ])
    .await
    .ok();
    let status = r#"{"status":{"provisioningState":"Succeeded","complianceState":"Compliant"}}"#;
    let args = [
        "patch",
        "fc",
        "cluster-config",
        "-n",
        "cluster-config",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ];
    env.kubectl(&args).await.ok();
    let table = env.kubectl(&["get", "fluxconfigs", "-A"]).await.table();
    assert_eq!(
        table[0],
        [
            "NAMESPACE",
            "NAME",
            "SCOPE",
            "URL",
            "PROVISION",
            "COMPLIANCE",
            "AGE"
        ]
    );
    assert_eq!(
        &table[1][..6],
        [
            "cluster-config",
            "cluster-config",
            "cluster",
            "https://github.com/Azure/gitops-flux2-kustomize-helm-mt",
            "Succeeded",
            "Compliant"
        ]
    );
    assert!(is_age(&table[1][6]), "{:?}", table[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_deploy_kustomization_without_drift() {
    let env = Env::start().await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kustomize");
    let rendered = env.kubectl(&["kustomize", dir]).await;
    let objects = rendered
        .ok()
        .lines()
        .filter(|l| l.starts_with("kind: "))
        .count();
    assert!(objects >= 10, "{}", rendered.stdout);
    let out = env.kubectl(&["apply", "--server-side", "-k", dir]).await;
    let applied = out
        .ok()
        .lines()
        .filter(|l| l.ends_with(" serverside-applied"))
        .count();
    assert_eq!(applied, objects, "{}", out.stdout);
    env.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/fluxconfigs.clusterconfig.azure.com",
        "--timeout=30s",
    ])
    .await
    .ok();
    // A second apply changes nothing and a server-side diff finds no drift.
    let before = env
        .kubectl(&[
            "get",
            "deployments",
            "-n",
            "flux-system",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion} {end}",
        ])
        .await
        .ok()
        .to_string();
    assert!(!before.trim().is_empty(), "deployments exist");
    env.kubectl(&["apply", "--server-side", "-k", dir])
        .await
        .ok();
    let after = env
        .kubectl(&[
            "get",
            "deployments",
            "-n",
            "flux-system",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion} {end}",
        ])
        .await
        .ok()
        .to_string();
    assert_eq!(before, after, "a no-op apply must not write");
    let diff = env.kubectl(&["diff", "--server-side", "-k", dir]).await;
    assert_eq!(
        diff.code, 0,
        "drift after apply:\n{}\n{}",
        diff.stdout, diff.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_generators_for_builtins() {
    let env = Env::start().await;
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "create",
                "deployment",
                "web",
                "--image=nginx:1.27",
                "--replicas=2",
            ],
            "deployment.apps/web created",
        ),
        (
            &["create", "service", "clusterip", "web", "--tcp=80:8080"],
            "service/web created",
        ),
        (
            &[
                "create",
                "role",
                "reader",
                "--verb=get,list",
                "--resource=configmaps",
            ],
            "role.rbac.authorization.k8s.io/reader created",
        ),
        (
            &[
                "create",
                "rolebinding",
                "reader",
                "--role=reader",
                "--serviceaccount=default:flux",
            ],
            "rolebinding.rbac.authorization.k8s.io/reader created",
        ),
        (
            &[
                "create",
                "secret",
                "docker-registry",
                "regcred",
                "--docker-server=registry.example.com",
                "--docker-username=u",
                "--docker-password=p",
            ],
            "secret/regcred created",
        ),
    ];
    for (args, expected) in cases {
        let out = env.kubectl(args).await;
        assert_eq!(out.ok().trim(), expected);
    }
    let checks: [(&[&str], &str); 5] = [
        (
            &["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}/{.spec.template.spec.containers[0].image}/{.spec.selector.matchLabels.app}"],
            "2/nginx:1.27/web",
        ),
        (
            &["get", "service", "web", "-o", "jsonpath={.spec.ports[0].port}/{.spec.ports[0].targetPort}/{.spec.selector.app}"],
            "80/8080/web",
        ),
        (
            &["get", "role", "reader", "-o", "jsonpath={.rules[0].resources[0]}/{.rules[0].verbs}"],
            r#"configmaps/["get","list"]"#,
        ),
        (
            &["get", "rolebinding", "reader", "-o", "jsonpath={.roleRef.kind}/{.roleRef.name}/{.subjects[0].kind}/{.subjects[0].name}"],
            "Role/reader/ServiceAccount/flux",
        ),
        (
            &["get", "secret", "regcred", "-o", "jsonpath={.type}"],
            "kubernetes.io/dockerconfigjson",
        ),
    ];
    for (args, expected) in checks {
        let out = env.kubectl(args).await;
        assert_eq!(out.ok(), expected, "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_takes_over_client_side_apply() {
    let env = Env::start().await;
    let v1 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: migrated\ndata:\n  a: \"1\"\n  b: \"2\"\n";
    let out = env.kubectl_stdin(&["apply", "-f", "-"], v1).await;
    assert_eq!(out.ok().trim(), "configmap/migrated created");
    // kubectl migrates the client-side-apply ownership to its server-side manager, so a field
    // dropped from the manifest is removed by the first server-side apply.
    let v2 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: migrated\ndata:\n  a: \"1\"\n";
    let out = env
        .kubectl_stdin(&["apply", "--server-side", "-f", "-"], v2)
        .await;
    assert_eq!(out.ok().trim(), "configmap/migrated serverside-applied");
    let obj = env
        .kubectl(&[
            "get",
            "configmap",
            "migrated",
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .await
        .json();
    assert_eq!(obj["data"], serde_json::json!({"a": "1"}));
    let managers: Vec<&str> = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert!(
        !managers.contains(&"kubectl-client-side-apply"),
        "{managers:?}"
    );
    assert!(managers.contains(&"kubectl"), "{managers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_version_api_versions_and_cluster_info() {
    let env = Env::start().await;
    kubectl_install_gitrepo_crd(&env).await;
    let v = env.kubectl(&["version", "-o", "json"]).await.json();
    let server = &v["serverVersion"];
    assert_eq!(server["major"], "1");
    let git = server["gitVersion"].as_str().expect("gitVersion");
    assert!(
        git.starts_with(&format!("v1.{}.", server["minor"].as_str().unwrap())),
        "{server}"
    );
    let out = env.kubectl(&["api-versions"]).await;
    let versions: Vec<&str> = out.ok().lines().collect();
    for gv in [
        "v1",
        "apps/v1",
        "apiextensions.k8s.io/v1",
        "coordination.k8s.io/v1",
        "rbac.authorization.k8s.io/v1",
        "source.toolkit.fluxcd.io/v1",
    ] {
        assert!(versions.contains(&gv), "{gv} not in {versions:?}");
    }
    let out = env.kubectl(&["cluster-info"]).await;
    assert!(
        out.ok().contains(&format!(
            "Kubernetes control plane is running at {}",
            env.server.url()
        )),
        "{}",
        out.stdout
    );
}

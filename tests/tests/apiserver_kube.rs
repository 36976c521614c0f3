//! Conformance of the Kubernetes API server emulator, driven by kube-rs
//! (`Api`, `Discovery`, `watcher`, `reflector`) and raw HTTP through the kube client.
//!
//! Every expectation is what a real kube-apiserver (v1.32) does; a difference is an
//! emulator bug (see tests/CONFORMANCE-FINDINGS.md).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fluxconfig_testbed::apiserver::Config;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::{json, Value};

fn cm(v: Value) -> ConfigMap {
    serde_json::from_value(v).unwrap()
}

fn cm_named(name: &str) -> ConfigMap {
    cm(json!({"metadata": {"name": name}, "data": {"k": "v"}}))
}

fn cms(env: &Env, ns: &str) -> Api<ConfigMap> {
    Api::namespaced(env.client.clone(), ns)
}

fn dyn_obj(v: Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

async fn install_gitrepo_crd(env: &Env) {
    env.install_crd(&gitrepo_crd_path()).await;
}

async fn is_gone<K>(api: &Api<K>, name: &str) -> Option<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(None) => Some(()),
        _ => None,
    }
}

fn names_of<K: kube::Resource>(items: &[K]) -> Vec<String> {
    items
        .iter()
        .map(|o| o.meta().name.clone().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------
// Discovery

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_run_resolves_builtin_and_custom_resources() {
    let env = Env::start().await;
    env.install_flux_crds().await;
    let discovery = Discovery::new(env.client.clone()).run().await.unwrap();
    for group in [
        "source.toolkit.fluxcd.io",
        "kustomize.toolkit.fluxcd.io",
        "helm.toolkit.fluxcd.io",
        "apiextensions.k8s.io",
        "coordination.k8s.io",
    ] {
        assert!(discovery.has_group(group), "group {group} not discovered");
    }
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk(
            "source.toolkit.fluxcd.io",
            "v1",
            "GitRepository",
        ))
        .expect("GitRepository discovered");
    assert_eq!(ar.plural, "gitrepositories");
    assert_eq!(caps.scope, Scope::Namespaced);
    for verb in [
        verbs::CREATE,
        verbs::GET,
        verbs::LIST,
        verbs::WATCH,
        verbs::PATCH,
        verbs::UPDATE,
        verbs::DELETE,
        verbs::DELETE_COLLECTION,
    ] {
        assert!(caps.supports_operation(verb), "GitRepository lacks {verb}");
    }
    assert!(
        caps.subresources.iter().any(|(r, _)| r.plural == "status"),
        "status subresource missing: {:?}",
        caps.subresources
    );
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("", "v1", "Namespace"))
        .unwrap();
    assert_eq!(ar.plural, "namespaces");
    assert_eq!(caps.scope, Scope::Cluster);
    let (_, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap"))
        .unwrap();
    assert_eq!(caps.scope, Scope::Namespaced);
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
        ))
        .unwrap();
    assert_eq!(ar.plural, "customresourcedefinitions");
    assert_eq!(caps.scope, Scope::Cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_discovery_resolves_custom_resources() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let discovery = Discovery::new(env.client.clone())
        .run_aggregated()
        .await
        .unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk(
            "source.toolkit.fluxcd.io",
            "v1",
            "GitRepository",
        ))
        .expect("GitRepository in aggregated discovery");
    assert_eq!(ar.plural, "gitrepositories");
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(caps.supports_operation(verbs::WATCH));
}

// ---------------------------------------------------------------------------
// Object metadata and resource versions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_namespace_exists_and_is_active() {
    let env = Env::start().await;
    let ns: Namespace = Api::all(env.client.clone()).get("default").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    assert_eq!(
        ns.metadata
            .labels
            .unwrap()
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("default")
    );
    assert_eq!(ns.spec.unwrap().finalizers, Some(vec!["kubernetes".into()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_sets_uid_creation_timestamp_and_resource_version() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    let before = chrono::Utc::now() - chrono::Duration::seconds(2);
    let created = api
        .create(&PostParams::default(), &cm_named("meta"))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().expect("uid");
    uuid::Uuid::parse_str(&uid).expect("uid is a UUID");
    let ts = created.metadata.creation_timestamp.clone().expect("ts").0;
    let secs = ts.as_second();
    assert!(
        secs >= before.timestamp() && secs <= chrono::Utc::now().timestamp() + 2,
        "{ts}"
    );
    let rv1 = rv(created.metadata.resource_version.as_ref());
    // Clients cannot choose uid / creationTimestamp on create.
    let mut forged = cm_named("forged");
    forged.metadata.uid = Some("11111111-1111-1111-1111-111111111111".into());
    let forged = api.create(&PostParams::default(), &forged).await.unwrap();
    assert_ne!(
        forged.metadata.uid.as_deref(),
        Some("11111111-1111-1111-1111-111111111111")
    );

    let updated = api
        .patch(
            "meta",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "v2"}})),
        )
        .await
        .unwrap();
    assert_eq!(updated.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(updated.metadata.creation_timestamp.unwrap().0, ts);
    assert!(rv(updated.metadata.resource_version.as_ref()) > rv1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_versions_come_from_one_global_counter() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let mut seen = Vec::new();
    let ns = env.create_namespace("rv-a").await;
    seen.push(rv(ns.metadata.resource_version.as_ref()));
    let c = cms(&env, "default")
        .create(&PostParams::default(), &cm_named("one"))
        .await
        .unwrap();
    seen.push(rv(c.metadata.resource_version.as_ref()));
    let s: Secret = Api::namespaced(env.client.clone(), "rv-a")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"a": "b"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    seen.push(rv(s.metadata.resource_version.as_ref()));
    let g = env
        .gitrepos("rv-a")
        .create(
            &PostParams::default(),
            &gitrepo("g", "https://example.com/r"),
        )
        .await
        .unwrap();
    seen.push(rv(g.metadata.resource_version.as_ref()));
    let c2 = cms(&env, "default")
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "changed"}})),
        )
        .await
        .unwrap();
    seen.push(rv(c2.metadata.resource_version.as_ref()));
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "resourceVersions not strictly increasing across kinds: {seen:?}"
    );
    // A list of any kind is served at (at least) the latest global revision.
    let list = cms(&env, "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(rv(list.metadata.resource_version.as_ref()) >= *seen.last().unwrap());
    let secrets: Api<Secret> = Api::all(env.client.clone());
    let list = secrets.list(&ListParams::default()).await.unwrap();
    assert!(rv(list.metadata.resource_version.as_ref()) >= *seen.last().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_resource_version_semantics() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    for n in ["a", "b", "c"] {
        api.create(&PostParams::default(), &cm_named(n))
            .await
            .unwrap();
    }
    let list = api.list(&ListParams::default()).await.unwrap();
    let list_rv = rv(list.metadata.resource_version.as_ref());
    for item in &list.items {
        assert!(rv(item.metadata.resource_version.as_ref()) <= list_rv);
    }
    // resourceVersion=0 (any) serves the same objects.
    let any = api.list(&ListParams::default().match_any()).await.unwrap();
    let mut a = names_of(&any.items);
    a.sort();
    let mut b = names_of(&list.items);
    b.sort();
    assert_eq!(a, b);
    // An exact read at the earlier revision does not see later writes.
    api.create(&PostParams::default(), &cm_named("d"))
        .await
        .unwrap();
    let exact = api
        .list(
            &ListParams::default()
                .at(&list_rv.to_string())
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap();
    assert!(!names_of(&exact.items).contains(&"d".to_string()));
    assert_eq!(exact.metadata.resource_version, Some(list_rv.to_string()));
}

// ---------------------------------------------------------------------------
// Errors: conflicts, already exists, not found

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_with_stale_resource_version_is_409() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    let v1 = api
        .create(&PostParams::default(), &cm_named("cas"))
        .await
        .unwrap();
    let mut v2 = v1.clone();
    v2.data = Some([("k".to_string(), "2".to_string())].into());
    let v2 = api
        .replace("cas", &PostParams::default(), &v2)
        .await
        .unwrap();
    assert!(rv(v2.metadata.resource_version.as_ref()) > rv(v1.metadata.resource_version.as_ref()));
    let mut stale = v1.clone();
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let st = api_err(api.replace("cas", &PostParams::default(), &stale).await);
    assert_eq!(st.code, 409);
    assert_eq!(st.reason, "Conflict");
    assert_eq!(
        st.message,
        r#"Operation cannot be fulfilled on configmaps "cas": the object has been modified; please apply your changes to the latest version and try again"#
    );
    assert_eq!(
        api.get("cas").await.unwrap().data.unwrap()["k"],
        "2",
        "stale update must not be applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resource_update_requires_resource_version() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos("default");
    let mut obj = api
        .create(
            &PostParams::default(),
            &gitrepo("u", "https://example.com/r"),
        )
        .await
        .unwrap();
    obj.metadata.resource_version = None;
    obj.data["spec"]["interval"] = json!("2m");
    let st = api_err(api.replace("u", &PostParams::default(), &obj).await);
    assert_eq!(st.code, 422);
    assert_eq!(st.reason, "Invalid");
    assert_eq!(
        st.message,
        r#"gitrepositories.source.toolkit.fluxcd.io "u" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"#
    );
    // Built-ins allow unconditional updates.
    let c = cms(&env, "default");
    let mut m = c
        .create(&PostParams::default(), &cm_named("free"))
        .await
        .unwrap();
    m.metadata.resource_version = None;
    m.data = Some([("k".to_string(), "new".to_string())].into());
    let m = c.replace("free", &PostParams::default(), &m).await.unwrap();
    assert_eq!(m.data.unwrap()["k"], "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_existing_object_is_409_already_exists() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    api.create(&PostParams::default(), &cm_named("dup"))
        .await
        .unwrap();
    let st = api_err(api.create(&PostParams::default(), &cm_named("dup")).await);
    assert_eq!(st.code, 409);
    assert_eq!(st.reason, "AlreadyExists");
    assert_eq!(st.message, r#"configmaps "dup" already exists"#);
    let details = st.details.expect("details");
    assert_eq!(details.name, "dup");
    assert_eq!(details.kind, "configmaps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_namespace_is_404_on_create_and_empty_on_list() {
    let env = Env::start().await;
    let api = cms(&env, "ghost");
    let st = api_err(api.create(&PostParams::default(), &cm_named("x")).await);
    assert_eq!(st.code, 404);
    assert_eq!(st.reason, "NotFound");
    assert_eq!(st.message, r#"namespaces "ghost" not found"#);
    let details = st.details.expect("details");
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("ghost", "namespaces")
    );
    let st = api_err(api.get("x").await);
    assert_eq!(st.code, 404);
    assert_eq!(st.message, r#"configmaps "x" not found"#);
    let list = api.list(&ListParams::default()).await.unwrap();
    assert!(list.items.is_empty());
}

// ---------------------------------------------------------------------------
// Generation and the status subresource

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_bumps_only_on_spec_change() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos("default");
    let mut obj = gitrepo("gen", "https://example.com/r");
    obj.metadata.generation = Some(7);
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(
        created.metadata.generation,
        Some(1),
        "clients cannot set generation"
    );
    let labelled = api
        .patch(
            "gen",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1), "metadata change");
    let spec = api
        .patch(
            "gen",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"interval": "7m"}})),
        )
        .await
        .unwrap();
    assert_eq!(spec.metadata.generation, Some(2), "spec change");
    let status = api
        .patch_status(
            "gen",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(status.metadata.generation, Some(2), "status change");
    assert_eq!(status.data["status"]["observedGeneration"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_update_keeps_resource_version() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos("default");
    let created = api
        .create(
            &PostParams::default(),
            &gitrepo("noop", "https://example.com/r"),
        )
        .await
        .unwrap();
    let same = api
        .patch(
            "noop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"interval": "1m"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(same.metadata.generation, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_separates_spec_and_status_writes() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos("default");
    let mut obj = gitrepo("st", "https://example.com/r");
    obj.data["status"] = json!({"observedGeneration": 5, "conditions": []});
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert_ne!(
        created.data["status"]["observedGeneration"], 5,
        "create must ignore status"
    );

    // A main-resource write ignores status.
    let mut upd = created.clone();
    upd.data["spec"]["interval"] = json!("3m");
    upd.data["status"] = json!({"observedGeneration": 9});
    let upd = api
        .replace("st", &PostParams::default(), &upd)
        .await
        .unwrap();
    assert_eq!(upd.data["spec"]["interval"], "3m");
    assert_ne!(upd.data["status"]["observedGeneration"], 9);
    let merged = api
        .patch(
            "st",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 9}})),
        )
        .await
        .unwrap();
    assert_ne!(merged.data["status"]["observedGeneration"], 9);

    // A /status write changes only status.
    let st = api
        .patch_status(
            "st",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "spec": {"interval": "99m"},
                "metadata": {"labels": {"from-status": "yes"}},
                "status": {"observedGeneration": 2}
            })),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["observedGeneration"], 2);
    assert_eq!(
        st.data["spec"]["interval"], "3m",
        "/status must not change spec"
    );
    assert!(
        st.labels().get("from-status").is_none(),
        "/status must not change labels"
    );
    let got = api.get("st").await.unwrap();
    assert_eq!(got.data["spec"]["interval"], "3m");
    assert_eq!(got.data["status"]["observedGeneration"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_schema_defaults_are_applied() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos("default");
    let mut obj = gitrepo("dflt", "https://example.com/r");
    obj.data["spec"]["verify"] = json!({"secretRef": {"name": "keys"}});
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.data["spec"]["timeout"], "60s");
    assert_eq!(created.data["spec"]["verify"]["mode"], "HEAD");
    let got = api.get("dflt").await.unwrap();
    assert_eq!(got.data["spec"]["timeout"], "60s");
    // An explicit value is kept.
    let mut obj = gitrepo("explicit", "https://example.com/r");
    obj.data["spec"]["timeout"] = json!("5s");
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.data["spec"]["timeout"], "5s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_status_default_is_applied_on_read() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos("default");
    let created = api
        .create(
            &PostParams::default(),
            &gitrepo("sdef", "https://example.com/r"),
        )
        .await
        .unwrap();
    // status: {default: {observedGeneration: -1}} in the Flux CRD.
    assert_eq!(created.data["status"]["observedGeneration"], -1);
    let got = api.get("sdef").await.unwrap();
    assert_eq!(got.data["status"]["observedGeneration"], -1);
}

// ---------------------------------------------------------------------------
// Validation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_are_422_with_causes_naming_fields() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos("default");
    let bad = dyn_obj(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "bad"},
        "spec": {"url": "ftp://example.com/r", "provider": "gitlab"},
    }));
    let st = api_err(api.create(&PostParams::default(), &bad).await);
    assert_eq!(st.code, 422);
    assert_eq!(st.reason, "Invalid");
    assert!(
        st.message
            .starts_with(r#"GitRepository.source.toolkit.fluxcd.io "bad" is invalid: ["#),
        "{}",
        st.message
    );
    for piece in [
        "spec.interval: Required value",
        r#"spec.url: Invalid value: "ftp://example.com/r": spec.url in body should match '^(http|https|ssh)://.*$'"#,
        r#"spec.provider: Unsupported value: "gitlab": supported values: "generic", "aws", "azure", "github""#,
    ] {
        assert!(st.message.contains(piece), "{piece} not in {}", st.message);
    }
    let details = st.details.expect("details");
    assert_eq!(details.name, "bad");
    assert_eq!(details.group, "source.toolkit.fluxcd.io");
    assert_eq!(details.kind, "GitRepository");
    let causes: BTreeSet<(String, String)> = details
        .causes
        .iter()
        .map(|c| (c.field.clone(), c.reason.clone()))
        .collect();
    for (field, reason) in [
        ("spec.interval", "FieldValueRequired"),
        ("spec.url", "FieldValueInvalid"),
        ("spec.provider", "FieldValueNotSupported"),
    ] {
        assert!(
            causes.contains(&(field.to_string(), reason.to_string())),
            "no cause {field}/{reason} in {causes:?}"
        );
    }
    assert!(api.get_opt("bad").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_pruned_by_default_rejected_when_strict() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos("default");
    let mut obj = gitrepo("pruned", "https://example.com/r");
    obj.data["spec"]["bogus"] = json!(true);
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert!(created.data["spec"].get("bogus").is_none(), "pruned");
    assert!(api.get("pruned").await.unwrap().data["spec"]
        .get("bogus")
        .is_none());

    let path = "/apis/source.toolkit.fluxcd.io/v1/namespaces/default/gitrepositories";
    let mut body = serde_json::to_value(gitrepo("strict", "https://example.com/r")).unwrap();
    body["spec"]["bogus"] = json!(true);
    let resp = env
        .raw(
            "POST",
            &format!("{path}?fieldValidation=Strict"),
            Some("application/json"),
            Some(&body),
        )
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    let st = resp.json();
    assert_eq!(st["reason"], "BadRequest");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains(r#"strict decoding error: unknown field "spec.bogus""#),
        "{st}"
    );
    assert!(api.get_opt("strict").await.unwrap().is_none());

    let resp = env
        .raw(
            "POST",
            &format!("{path}?fieldValidation=Warn"),
            Some("application/json"),
            Some(&body),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let warning = resp
        .headers
        .get("warning")
        .expect("Warning header")
        .to_str()
        .unwrap();
    assert!(
        warning.contains(r#"unknown field \"spec.bogus\""#),
        "{warning}"
    );
    assert!(resp.json()["spec"].get("bogus").is_none());
}

// ---------------------------------------------------------------------------
// Secrets

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_string_data_is_folded_into_data() {
    let env = Env::start().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), "default");
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": "fold"},
        "data": {"user": "YWRtaW4="},
        "stringData": {"password": "s3cr3t", "user": "root"},
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &s).await.unwrap();
    let data = created.data.clone().expect("data");
    assert_eq!(data["password"].0, b"s3cr3t");
    assert_eq!(data["user"].0, b"root", "stringData wins over data");
    assert!(created.string_data.is_none());
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    let got = api.get("fold").await.unwrap();
    assert_eq!(got.data.unwrap()["password"].0, b"s3cr3t");
    assert!(got.string_data.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_types_require_their_keys() {
    let env = Env::start().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), "default");
    let tls: Secret = serde_json::from_value(json!({
        "metadata": {"name": "tls"},
        "type": "kubernetes.io/tls",
        "stringData": {"ca.crt": "x"},
    }))
    .unwrap();
    let st = api_err(api.create(&PostParams::default(), &tls).await);
    assert_eq!(st.code, 422);
    assert_eq!(st.reason, "Invalid");
    let fields: BTreeSet<String> = st
        .details
        .expect("details")
        .causes
        .iter()
        .map(|c| c.field.clone())
        .collect();
    assert!(fields.contains("data[tls.crt]"), "{fields:?}");
    assert!(fields.contains("data[tls.key]"), "{fields:?}");
    assert!(
        st.message.contains("data[tls.key]: Required value"),
        "{}",
        st.message
    );

    let ok: Secret = serde_json::from_value(json!({
        "metadata": {"name": "tls"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": "c", "tls.key": "k"},
    }))
    .unwrap();
    api.create(&PostParams::default(), &ok).await.unwrap();

    let docker: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pull"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {"config.json": "{}"},
    }))
    .unwrap();
    let st = api_err(api.create(&PostParams::default(), &docker).await);
    assert_eq!(st.code, 422);
    assert!(
        st.message
            .contains("data[.dockerconfigjson]: Required value"),
        "{}",
        st.message
    );
}

// ---------------------------------------------------------------------------
// Selectors and pagination

async fn labelled_configmaps(env: &Env) -> Api<ConfigMap> {
    env.create_namespace("sel").await;
    let api = cms(env, "sel");
    for (name, labels) in [
        ("a", json!({"env": "prod", "tier": "web"})),
        ("b", json!({"env": "dev", "tier": "web"})),
        ("c", json!({"env": "staging"})),
        ("d", json!({"other": "x"})),
    ] {
        api.create(
            &PostParams::default(),
            &cm(json!({"metadata": {"name": name, "labels": labels}})),
        )
        .await
        .unwrap();
    }
    api
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selectors_filter_lists() {
    let env = Env::start().await;
    let api = labelled_configmaps(&env).await;
    for (selector, expected) in [
        ("env=prod", vec!["a"]),
        ("env==prod", vec!["a"]),
        ("env!=prod", vec!["b", "c", "d"]),
        ("env in (dev,staging)", vec!["b", "c"]),
        ("env notin (dev,staging)", vec!["a", "d"]),
        ("tier", vec!["a", "b"]),
        ("!tier", vec!["c", "d"]),
        ("tier=web,env!=dev", vec!["a"]),
    ] {
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        assert_eq!(names_of(&list.items), expected, "selector {selector:?}");
    }
    let st = api_err(api.list(&ListParams::default().labels("env in (")).await);
    assert_eq!(st.code, 400, "{}", st.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_selectors_filter_lists() {
    let env = Env::start().await;
    env.create_namespace("other").await;
    for ns in ["default", "other"] {
        cms(&env, ns)
            .create(&PostParams::default(), &cm_named("a"))
            .await
            .unwrap();
    }
    cms(&env, "default")
        .create(&PostParams::default(), &cm_named("b"))
        .await
        .unwrap();
    let list = cms(&env, "default")
        .list(&ListParams::default().fields("metadata.name=a"))
        .await
        .unwrap();
    assert_eq!(names_of(&list.items), ["a"]);
    let all: Api<ConfigMap> = Api::all(env.client.clone());
    let list = all
        .list(&ListParams::default().fields("metadata.namespace=other"))
        .await
        .unwrap();
    assert_eq!(names_of(&list.items), ["a"]);
    assert_eq!(list.items[0].metadata.namespace.as_deref(), Some("other"));
    let list = all
        .list(&ListParams::default().fields("metadata.name!=a,metadata.namespace=default"))
        .await
        .unwrap();
    assert_eq!(names_of(&list.items), ["b"]);
    let st = api_err(
        all.list(&ListParams::default().fields("spec.foo=bar"))
            .await,
    );
    assert_eq!(st.code, 400);
    assert_eq!(st.reason, "BadRequest");
    assert!(
        st.message.contains("field label not supported: spec.foo"),
        "{}",
        st.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_specific_field_selectors() {
    let env = Env::start().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), "default");
    for (name, ty, data) in [
        ("plain", "Opaque", json!({"a": "b"})),
        (
            "cert",
            "kubernetes.io/tls",
            json!({"tls.crt": "c", "tls.key": "k"}),
        ),
    ] {
        api.create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": name}, "type": ty, "stringData": data}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    }
    let list = api
        .list(&ListParams::default().fields("type=kubernetes.io/tls"))
        .await
        .unwrap();
    assert_eq!(names_of(&list.items), ["cert"]);
    let ns: Api<Namespace> = Api::all(env.client.clone());
    let list = ns
        .list(&ListParams::default().fields("status.phase=Active,metadata.name=default"))
        .await
        .unwrap();
    assert_eq!(names_of(&list.items), ["default"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pagination_with_limit_and_continue() {
    let env = Env::start().await;
    env.create_namespace("pages").await;
    let api = cms(&env, "pages");
    for i in 0..5 {
        api.create(&PostParams::default(), &cm_named(&format!("p{i}")))
            .await
            .unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names_of(&first.items), ["p0", "p1"]);
    let token = first.metadata.continue_.clone().expect("continue token");
    assert!(!token.is_empty());
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let snapshot_rv = first.metadata.resource_version.clone();

    // A write between pages is not visible to the paginated list (one snapshot).
    api.create(&PostParams::default(), &cm_named("p9"))
        .await
        .unwrap();

    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names_of(&second.items), ["p2", "p3"]);
    assert_eq!(second.metadata.remaining_item_count, Some(1));
    assert_eq!(second.metadata.resource_version, snapshot_rv);
    let token = second.metadata.continue_.clone().expect("continue token");
    let third = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names_of(&third.items), ["p4"]);
    assert!(third.metadata.continue_.as_deref().unwrap_or("").is_empty());
    assert_eq!(third.metadata.remaining_item_count, None);

    // Without a limit everything comes at once, p9 included.
    let all = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(names_of(&all.items), ["p0", "p1", "p2", "p3", "p4", "p9"]);
    assert!(all.metadata.continue_.as_deref().unwrap_or("").is_empty());
}

// ---------------------------------------------------------------------------
// Patches

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patch_and_merge_patch() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    api.create(
        &PostParams::default(),
        &cm(json!({"metadata": {"name": "jp"}, "data": {"a": "1", "c": "3"}})),
    )
    .await
    .unwrap();
    let path = "/api/v1/namespaces/default/configmaps/jp";
    let resp = env
        .raw(
            "PATCH",
            path,
            Some("application/json-patch+json"),
            Some(&json!([
                {"op": "add", "path": "/data/b", "value": "2"},
                {"op": "replace", "path": "/data/a", "value": "10"},
                {"op": "remove", "path": "/data/c"},
            ])),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json()["data"], json!({"a": "10", "b": "2"}));
    let resp = env
        .raw(
            "PATCH",
            path,
            Some("application/json-patch+json"),
            Some(&json!([{"op": "test", "path": "/data/a", "value": "wrong"}])),
        )
        .await;
    assert_eq!(resp.status, 422, "failed test op: {}", resp.text);

    let merged = api
        .patch(
            "jp",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": null, "d": "4"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap(),
        [
            ("b".to_string(), "2".to_string()),
            ("d".to_string(), "4".to_string())
        ]
        .into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategic_merge_patch_on_builtins_and_415_on_custom_resources() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), "default");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "bot", "finalizers": ["example.com/a"]},
            "secrets": [{"name": "a"}],
            "imagePullSecrets": [{"name": "pull-a"}],
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let patched = sas
        .patch(
            "bot",
            &PatchParams::default(),
            &Patch::Strategic(json!({
                "metadata": {"finalizers": ["example.com/b"]},
                "secrets": [{"name": "b"}],
                "imagePullSecrets": [{"name": "pull-b"}],
            })),
        )
        .await
        .unwrap();
    let v = serde_json::to_value(&patched).unwrap();
    assert_eq!(v["secrets"], json!([{"name": "a"}, {"name": "b"}]));
    assert_eq!(v["imagePullSecrets"], json!([{"name": "pull-b"}]));
    assert_eq!(
        v["metadata"]["finalizers"],
        json!(["example.com/a", "example.com/b"])
    );

    let repos = env.gitrepos("default");
    repos
        .create(
            &PostParams::default(),
            &gitrepo("smp", "https://example.com/r"),
        )
        .await
        .unwrap();
    let st = api_err(
        repos
            .patch(
                "smp",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"suspend": true}})),
            )
            .await,
    );
    assert_eq!(st.code, 415);
    assert_eq!(st.reason, "UnsupportedMediaType");
    assert!(
        st.message
            .contains("the body of the request was in an unknown format"),
        "{}",
        st.message
    );
}

// ---------------------------------------------------------------------------
// Server-side apply

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflict_and_force() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos("default");
    let alice = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "ssa"},
        "spec": {"interval": "1m", "url": "https://example.com/r"},
    });
    let created = api
        .patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(&alice))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let mf = created
        .metadata
        .managed_fields
        .clone()
        .expect("managedFields");
    assert!(mf
        .iter()
        .any(|e| e.manager.as_deref() == Some("alice") && e.operation.as_deref() == Some("Apply")));

    let mut bob = alice.clone();
    bob["spec"]["interval"] = json!("5m");
    let st = api_err(
        api.patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(&bob))
            .await,
    );
    assert_eq!(st.code, 409);
    assert_eq!(st.reason, "Conflict");
    assert_eq!(
        st.message,
        r#"Apply failed with 1 conflict: conflict with "alice": .spec.interval"#
    );
    let causes = st.details.expect("details").causes;
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    assert_eq!(causes[0].field, ".spec.interval");
    assert_eq!(causes[0].message, r#"conflict with "alice""#);

    let forced = api
        .patch(
            "ssa",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(&bob),
        )
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["interval"], "5m");
    assert_eq!(forced.metadata.generation, Some(2));
    // alice lost the field: her re-apply of 1m now conflicts with bob.
    let st = api_err(
        api.patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(&alice))
            .await,
    );
    assert!(
        st.message.contains(r#"conflict with "bob""#),
        "{}",
        st.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_removes_fields_no_longer_applied() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    let apply = |manager: &'static str, data: Value| {
        let api = api.clone();
        async move {
            api.patch(
                "owned",
                &PatchParams::apply(manager),
                &Patch::Apply(json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "owned"},
                    "data": data,
                })),
            )
            .await
            .unwrap()
        }
    };
    apply("alice", json!({"a": "1", "b": "2", "c": "3"})).await;
    apply("bob", json!({"b": "2"})).await;
    let after = apply("alice", json!({"a": "1"})).await;
    // c is gone; b stays because bob still applies it.
    assert_eq!(
        after.data.unwrap(),
        [
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string())
        ]
        .into()
    );
    let after = api
        .patch(
            "owned",
            &PatchParams::apply("bob"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        after.data.unwrap_or_default(),
        [("a".to_string(), "1".to_string())].into()
    );
}

// ---------------------------------------------------------------------------
// Deletion

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_keep_objects_until_removed() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    api.create(
        &PostParams::default(),
        &cm(json!({"metadata": {"name": "fin", "finalizers": ["example.com/hold"]}})),
    )
    .await
    .unwrap();
    let deleted = api.delete("fin", &DeleteParams::default()).await.unwrap();
    let obj = deleted
        .left()
        .expect("delete of a finalized object returns it");
    assert!(obj.metadata.deletion_timestamp.is_some());
    let got = api.get("fin").await.unwrap();
    assert!(got.metadata.deletion_timestamp.is_some());
    assert_eq!(got.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(got.finalizers(), ["example.com/hold"]);

    // No new finalizers while being deleted.
    let st = api_err(
        api.patch(
            "fin",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}}),
            ),
        )
        .await,
    );
    assert_eq!(st.code, 422, "{}", st.message);
    assert!(
        st.message
            .contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        st.message
    );

    api.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("finalized object removed", DEADLINE, || {
        is_gone(&api, "fin")
    })
    .await;
}

async fn owner_with_dependents(env: &Env, dependent_finalizer: bool) -> (Api<ConfigMap>, String) {
    let api = cms(env, "default");
    let owner = api
        .create(&PostParams::default(), &cm_named("owner"))
        .await
        .unwrap();
    let uid = owner.metadata.uid.unwrap();
    let mut meta = json!({
        "name": "dep",
        "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": uid, "blockOwnerDeletion": true,
        }],
    });
    if dependent_finalizer {
        meta["finalizers"] = json!(["example.com/hold"]);
    }
    api.create(&PostParams::default(), &cm(json!({"metadata": meta})))
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {
                "name": "dep-secret",
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
            }}))
            .unwrap(),
        )
        .await
        .unwrap();
    (api, uid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_propagation_collects_dependents() {
    let env = Env::start().await;
    let (api, _) = owner_with_dependents(&env, false).await;
    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    assert!(
        api.get_opt("owner").await.unwrap().is_none(),
        "owner deleted at once"
    );
    eventually("dependent collected", DEADLINE, || is_gone(&api, "dep")).await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "default");
    eventually("dependent secret collected", DEADLINE, || {
        is_gone(&secrets, "dep-secret")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_propagation_waits_for_blocking_dependents() {
    let env = Env::start().await;
    let (api, _) = owner_with_dependents(&env, true).await;
    let deleted = api
        .delete("owner", &DeleteParams::foreground())
        .await
        .unwrap();
    let owner = deleted.left().expect("foreground delete returns the owner");
    assert!(owner.metadata.deletion_timestamp.is_some());
    assert!(owner
        .finalizers()
        .contains(&"foregroundDeletion".to_string()));
    // The GC deletes the dependent, whose own finalizer keeps it.
    eventually("dependent marked deleted", DEADLINE, || async {
        let d = api.get("dep").await.ok()?;
        d.metadata.deletion_timestamp.map(|_| ())
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "default");
    eventually("non-blocking dependent collected", DEADLINE, || {
        is_gone(&secrets, "dep-secret")
    })
    .await;
    let owner = api.get("owner").await.expect("owner waits for dep");
    assert!(owner
        .finalizers()
        .contains(&"foregroundDeletion".to_string()));

    api.patch(
        "dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("dependent gone", DEADLINE, || is_gone(&api, "dep")).await;
    eventually("owner gone after its dependents", DEADLINE, || {
        is_gone(&api, "owner")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_propagation_keeps_dependents_and_drops_owner_references() {
    let env = Env::start().await;
    let (api, _) = owner_with_dependents(&env, false).await;
    api.delete("owner", &DeleteParams::orphan()).await.unwrap();
    eventually("owner gone", DEADLINE, || is_gone(&api, "owner")).await;
    let dep = eventually("ownerReferences removed", DEADLINE, || async {
        let d = api.get("dep").await.ok()?;
        d.metadata
            .owner_references
            .as_ref()
            .is_none_or(|r| r.is_empty())
            .then_some(d)
    })
    .await;
    assert!(dep.metadata.deletion_timestamp.is_none());
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "default");
    let s = eventually("secret orphaned", DEADLINE, || async {
        let s = secrets.get("dep-secret").await.ok()?;
        s.metadata
            .owner_references
            .as_ref()
            .is_none_or(|r| r.is_empty())
            .then_some(s)
    })
    .await;
    assert!(s.metadata.deletion_timestamp.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_collection_honours_label_selector() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    for (name, del) in [("x1", "yes"), ("x2", "yes"), ("y", "no")] {
        api.create(
            &PostParams::default(),
            &cm(json!({"metadata": {"name": name, "labels": {"del": del}}})),
        )
        .await
        .unwrap();
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("del=yes"),
    )
    .await
    .unwrap();
    let left = api
        .list(&ListParams::default().labels("del"))
        .await
        .unwrap();
    assert_eq!(names_of(&left.items), ["y"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_removes_contents() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    env.create_namespace("doomed").await;
    let c = cms(&env, "doomed");
    c.create(
        &PostParams::default(),
        &cm(json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})),
    )
    .await
    .unwrap();
    c.create(&PostParams::default(), &cm_named("plain"))
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "doomed");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap(),
        )
        .await
        .unwrap();
    let repos = env.gitrepos("doomed");
    repos
        .create(
            &PostParams::default(),
            &gitrepo("repo", "https://example.com/r"),
        )
        .await
        .unwrap();

    let nss: Api<Namespace> = Api::all(env.client.clone());
    nss.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let ns = nss.get("doomed").await.expect("held open by the finalizer");
    assert!(ns.metadata.deletion_timestamp.is_some());
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));

    let st = api_err(c.create(&PostParams::default(), &cm_named("late")).await);
    assert_eq!(st.code, 403);
    assert_eq!(st.reason, "Forbidden");
    assert!(
        st.message.contains(
            "unable to create new content in namespace doomed because it is being terminated"
        ),
        "{}",
        st.message
    );

    eventually("contents deleted", DEADLINE, || async {
        (is_gone(&c, "plain").await.is_some()
            && is_gone(&secrets, "s").await.is_some()
            && is_gone(&repos, "repo").await.is_some())
        .then_some(())
    })
    .await;
    let held = c.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(nss.get_opt("doomed").await.unwrap().is_some());

    c.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("namespace removed", DEADLINE, || is_gone(&nss, "doomed")).await;
}

// ---------------------------------------------------------------------------
// Watch

async fn next_event<S, K>(stream: &mut S, what: &str) -> WatchEvent<K>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("watch error while waiting for {what}: {e}"),
        Ok(None) => panic!("watch ended while waiting for {what}"),
        Err(_) => panic!("no watch event within 10s while waiting for {what}"),
    }
}

/// Next non-bookmark event.
async fn next_change<S, K>(stream: &mut S, what: &str) -> WatchEvent<K>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    loop {
        match next_event(stream, what).await {
            WatchEvent::Bookmark(_) => continue,
            ev => return ev,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_resource_version_delivers_events_in_order() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    let start = api.list(&ListParams::default()).await.unwrap();
    let start_rv = start.metadata.resource_version.unwrap();
    let c = api
        .create(&PostParams::default(), &cm_named("w"))
        .await
        .unwrap();
    let m = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "2"}})),
        )
        .await
        .unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();

    let mut stream = api
        .watch(&WatchParams::default().timeout(30), &start_rv)
        .await
        .unwrap()
        .boxed();
    match next_change(&mut stream, "ADDED").await {
        WatchEvent::Added(o) => {
            assert_eq!(o.name_any(), "w");
            assert_eq!(o.metadata.resource_version, c.metadata.resource_version);
        }
        ev => panic!("expected ADDED, got {ev:?}"),
    }
    match next_change(&mut stream, "MODIFIED").await {
        WatchEvent::Modified(o) => {
            assert_eq!(o.metadata.resource_version, m.metadata.resource_version);
            assert_eq!(o.data.unwrap()["k"], "2");
        }
        ev => panic!("expected MODIFIED, got {ev:?}"),
    }
    match next_change(&mut stream, "DELETED").await {
        WatchEvent::Deleted(o) => {
            assert_eq!(o.name_any(), "w");
            assert!(
                rv(o.metadata.resource_version.as_ref()) > rv(m.metadata.resource_version.as_ref()),
                "DELETED carries the deletion's resourceVersion"
            );
        }
        ev => panic!("expected DELETED, got {ev:?}"),
    }
    // Live events follow the replayed history on the same stream.
    api.create(&PostParams::default(), &cm_named("live"))
        .await
        .unwrap();
    match next_change(&mut stream, "live ADDED").await {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "live"),
        ev => panic!("expected ADDED live, got {ev:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_zero_starts_with_synthetic_added_events() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    for n in ["a", "b"] {
        api.create(&PostParams::default(), &cm_named(n))
            .await
            .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default().timeout(30), "0")
        .await
        .unwrap()
        .boxed();
    let mut seen = BTreeSet::new();
    for _ in 0..2 {
        match next_change(&mut stream, "synthetic ADDED").await {
            WatchEvent::Added(o) => {
                seen.insert(o.name_any());
            }
            ev => panic!("expected ADDED, got {ev:?}"),
        }
    }
    assert_eq!(seen, BTreeSet::from(["a".to_string(), "b".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_label_selector_sends_deleted_when_object_stops_matching() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    let rv0 = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().labels("app=sel").timeout(30), &rv0)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &cm_named("unlabelled"))
        .await
        .unwrap();
    api.create(
        &PostParams::default(),
        &cm(json!({"metadata": {"name": "m", "labels": {"app": "sel"}}})),
    )
    .await
    .unwrap();
    match next_change(&mut stream, "ADDED m").await {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "m"),
        ev => panic!("expected ADDED m (unlabelled filtered out), got {ev:?}"),
    }
    api.patch(
        "m",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    match next_change(&mut stream, "DELETED m").await {
        WatchEvent::Deleted(o) => {
            assert_eq!(o.name_any(), "m");
            assert_eq!(o.labels()["app"], "other");
        }
        ev => panic!("expected DELETED when leaving the selector, got {ev:?}"),
    }
    api.patch(
        "m",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "sel"}}})),
    )
    .await
    .unwrap();
    match next_change(&mut stream, "ADDED m again").await {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "m"),
        ev => panic!("expected ADDED when entering the selector, got {ev:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_bookmarks_only_when_asked() {
    let env = Env::with_config(Config {
        bookmark_interval: Duration::from_millis(200),
        ..Config::default()
    })
    .await;
    let api = cms(&env, "default");
    api.create(&PostParams::default(), &cm_named("b"))
        .await
        .unwrap();
    let rv0 = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &rv0)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut stream, "BOOKMARK").await {
        WatchEvent::Bookmark(bm) => {
            assert_eq!(bm.types.kind, "ConfigMap");
            assert_eq!(bm.types.api_version, "v1");
            assert!(rv(Some(&bm.metadata.resource_version)) >= rv(Some(&rv0)));
        }
        ev => panic!("expected a BOOKMARK, got {ev:?}"),
    }
    drop(stream);

    let stream = api
        .watch(&WatchParams::default().disable_bookmarks().timeout(2), &rv0)
        .await
        .unwrap();
    let events: Vec<_> =
        tokio::time::timeout(Duration::from_secs(10), stream.try_collect::<Vec<_>>())
            .await
            .expect("watch with timeoutSeconds=2 ends")
            .unwrap();
    assert!(
        !events.iter().any(|e| matches!(e, WatchEvent::Bookmark(_))),
        "bookmark sent although allowWatchBookmarks was not set"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_timeout_seconds_ends_the_stream() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    let started = Instant::now();
    let stream = api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), stream.try_collect::<Vec<_>>())
        .await
        .expect("watch did not end after timeoutSeconds=1")
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "ended too early: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_resource_version_is_410_expired() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    let old = api
        .create(&PostParams::default(), &cm_named("old"))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for i in 0..3 {
        api.patch(
            "old",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    env.server.compact_history();
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &old)
        .await
        .expect("a too-old watch is answered with 200 and an ERROR event")
        .boxed();
    match next_event(&mut stream, "ERROR 410").await {
        WatchEvent::Error(st) => {
            assert_eq!(st.code, 410);
            assert_eq!(st.reason, "Expired");
            assert!(
                st.message.starts_with("too old resource version: "),
                "{}",
                st.message
            );
        }
        ev => panic!("expected ERROR 410, got {ev:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_recovers_from_410_by_relisting() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    for n in ["a", "b"] {
        api.create(
            &PostParams::default(),
            &cm(json!({"metadata": {"name": n, "labels": {"app": "rec"}}})),
        )
        .await
        .unwrap();
    }
    let (reader, writer) = reflector::store::<ConfigMap>();
    let saw_410 = Arc::new(AtomicBool::new(false));
    let flag = saw_410.clone();
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().labels("app=rec")),
    )
    .default_backoff();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            if let Err(watcher::Error::WatchError(st)) = &item {
                if st.code == 410 {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        }
    });
    let store_names = |reader: &reflector::Store<ConfigMap>| {
        let mut v: Vec<String> = reader.state().iter().map(|o| o.name_any()).collect();
        v.sort();
        v
    };
    eventually("initial list in store", DEADLINE, || async {
        (store_names(&reader) == ["a", "b"]).then_some(())
    })
    .await;

    // Break the watch, change things while the watcher cannot see them, compact.
    let faults = env.server.faults();
    faults.set_error_rate(Some("watch"), 500, 1.0);
    faults.disconnect_watches_now();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    api.create(
        &PostParams::default(),
        &cm(json!({"metadata": {"name": "c", "labels": {"app": "rec"}}})),
    )
    .await
    .unwrap();
    env.server.compact_history();
    faults.clear();

    eventually("store relisted after 410", DEADLINE, || async {
        (store_names(&reader) == ["b", "c"]).then_some(())
    })
    .await;
    assert!(saw_410.load(Ordering::SeqCst), "the watcher saw the 410");
    // And it keeps watching afterwards.
    api.create(
        &PostParams::default(),
        &cm(json!({"metadata": {"name": "d", "labels": {"app": "rec"}}})),
    )
    .await
    .unwrap();
    eventually("watching again", DEADLINE, || async {
        (store_names(&reader) == ["b", "c", "d"]).then_some(())
    })
    .await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_store_tracks_creates_updates_and_deletes() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos_all();
    let writer = reflector::store::Writer::new(gitrepo_resource());
    let reader = writer.as_reader();
    let stream = reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    reader.wait_until_ready().await.unwrap();
    env.create_namespace("r2").await;
    for (ns, n) in [("default", "one"), ("default", "two"), ("r2", "three")] {
        env.gitrepos(ns)
            .create(&PostParams::default(), &gitrepo(n, "https://example.com/r"))
            .await
            .unwrap();
    }
    eventually("3 objects in store", DEADLINE, || async {
        (reader.state().len() == 3).then_some(())
    })
    .await;
    env.gitrepos("default")
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"interval": "9m"}})),
        )
        .await
        .unwrap();
    env.gitrepos("r2")
        .delete("three", &DeleteParams::default())
        .await
        .unwrap();
    eventually("store updated", DEADLINE, || async {
        let state = reader.state();
        let one = state.iter().find(|o| o.name_any() == "one")?;
        (state.len() == 2 && one.data["spec"]["interval"] == "9m").then_some(())
    })
    .await;
    task.abort();
}

// ---------------------------------------------------------------------------
// Tables, auth, faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_responses_for_accept_as_table() {
    let env = Env::start().await;
    cms(&env, "default")
        .create(
            &PostParams::default(),
            &cm(json!({"metadata": {"name": "three"}, "data": {"a": "1", "b": "2", "c": "3"}})),
        )
        .await
        .unwrap();
    let resp = raw_request(
        &env.client,
        "GET",
        "/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name%3Dthree",
        &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
        None,
        None,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let t = resp.json();
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Data", "Age"]);
    let rows = t["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["cells"][0], "three");
    assert_eq!(rows[0]["cells"][1], 3);
    assert_eq!(rows[0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(rows[0]["object"]["metadata"]["name"], "three");
    assert!(t["metadata"]["resourceVersion"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_valid_token_are_401() {
    let env = Env::start().await;
    for token in [None, Some("wrong-token")] {
        let client = env.client_with_token(token).await;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let st = api_err(api.list(&ListParams::default()).await);
        assert_eq!(st.code, 401, "token {token:?}");
        assert_eq!(st.reason, "Unauthorized");
    }
    cms(&env, "default")
        .list(&ListParams::default())
        .await
        .expect("the real token works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_error_rate_per_verb() {
    let env = Env::start().await;
    let api: Api<ConfigMap> = Api::namespaced(env.client_no_retry().await, "default");
    api.create(&PostParams::default(), &cm_named("f"))
        .await
        .unwrap();
    let faults = env.server.faults();
    faults.set_error_rate(Some("list"), 503, 1.0);
    let st = api_err(api.list(&ListParams::default()).await);
    assert_eq!(st.code, 503);
    api.get("f")
        .await
        .expect("get is not affected by a list fault");
    faults.clear();
    api.list(&ListParams::default()).await.expect("cleared");

    faults.set_error_rate(Some("get"), 500, 0.5);
    let mut failures = 0;
    for _ in 0..200 {
        match api.get("f").await {
            Ok(_) => {}
            Err(kube::Error::Api(st)) if st.code == 500 => failures += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(
        (50..=150).contains(&failures),
        "{failures}/200 failed at rate 0.5"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_throttling_is_429_with_retry_after() {
    let env = Env::start().await;
    env.server.faults().throttle(1.0, 7);
    let client = env.client_no_retry().await;
    let resp = raw_request(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[],
        None,
        None,
    )
    .await;
    assert_eq!(resp.status, 429);
    assert_eq!(
        resp.headers.get("retry-after").map(|v| v.to_str().unwrap()),
        Some("7")
    );
    let st = resp.json();
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "TooManyRequests");
    assert_eq!(st["code"], 429);
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let st = api_err(api.list(&ListParams::default()).await);
    assert_eq!(st.code, 429);
    assert_eq!(st.reason, "TooManyRequests");
    env.server.faults().clear();
    cms(&env, "default")
        .list(&ListParams::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_latency_delays_requests() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    env.server.faults().set_latency(Duration::from_millis(300));
    let t = Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_watch_disconnects_end_streams_and_watcher_recovers() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    // disconnect_watches_now ends an open watch.
    let mut stream = api
        .watch(&WatchParams::default().timeout(60), "0")
        .await
        .unwrap()
        .boxed();
    env.server.faults().disconnect_watches_now();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "watch still open after disconnect_watches_now"
    );

    // Periodic drops: a reflector still converges on every object.
    let (reader, writer) = reflector::store::<ConfigMap>();
    let s = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().labels("drop=yes")),
    )
    .default_backoff();
    let task = tokio::spawn(async move {
        futures::pin_mut!(s);
        while s.next().await.is_some() {}
    });
    reader.wait_until_ready().await.unwrap();
    env.server
        .faults()
        .drop_watches_every(Some(Duration::from_millis(150)));
    for i in 0..40 {
        api.create(
            &PostParams::default(),
            &cm(json!({"metadata": {"name": format!("d{i:02}"), "labels": {"drop": "yes"}}, "data": {"i": i.to_string()}})),
        )
        .await
        .unwrap();
        // Spread the writes over several drop periods.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in (0..40).step_by(3) {
        api.delete(&format!("d{i:02}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    let expected: Vec<String> = (0..40)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("d{i:02}"))
        .collect();
    eventually(
        "reflector converged despite watch drops",
        DEADLINE,
        || async {
            let mut names: Vec<String> = reader.state().iter().map(|o| o.name_any()).collect();
            names.sort();
            (names == expected).then_some(())
        },
    )
    .await;
    task.abort();
}

// ---------------------------------------------------------------------------
// Benchmark (small scale; `testbed bench-apiserver` runs 10,000 objects x 100 watches)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_small_run_every_watch_keeps_up() {
    let report = fluxconfig_testbed::bench_apiserver::run_apiserver_bench(300, 5).await;
    assert!(report.kept_up, "{report}");
    assert_eq!(report.created, 300);
    assert_eq!(report.events_received, 1500);
    assert_eq!(report.watches_complete, 5);
    assert!(report.latency_p50 <= report.latency_p99);
    assert!(report.latency_p99 <= report.latency_max);
    assert!(report.lag_p50 <= report.lag_max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_lists_and_gets() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    api.create(
        &PostParams::default(),
        &cm(json!({"metadata": {"name": "meta", "labels": {"a": "b"}}, "data": {"big": "x"}})),
    )
    .await
    .unwrap();
    let resp = raw_request(
        &env.client,
        "GET",
        "/api/v1/namespaces/default/configmaps?labelSelector=a%3Db",
        &[(
            "accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )],
        None,
        None,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let list = resp.json();
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["apiVersion"], "meta.k8s.io/v1");
    let item = &list["items"][0];
    assert_eq!(item["kind"], "PartialObjectMetadata");
    assert_eq!(item["metadata"]["name"], "meta");
    assert!(item.get("data").is_none(), "metadata only: {item}");
    let got = api.get_metadata("meta").await.unwrap();
    assert_eq!(got.labels()["a"], "b");
    assert_eq!(got.types.unwrap().kind, "PartialObjectMetadata");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_object_follows_a_single_object() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    api.create(&PostParams::default(), &cm_named("neighbour"))
        .await
        .unwrap();
    let stream = kube::runtime::watcher::watch_object(api.clone(), "solo");
    futures::pin_mut!(stream);
    assert!(
        next_object(&mut stream).await.is_none(),
        "solo does not exist yet"
    );
    api.create(&PostParams::default(), &cm_named("solo"))
        .await
        .unwrap();
    let seen: Option<ConfigMap> = next_object(&mut stream).await;
    assert_eq!(seen.expect("solo appears").name_any(), "solo");
    api.delete("solo", &DeleteParams::default()).await.unwrap();
    let gone: Option<ConfigMap> = next_object(&mut stream).await;
    assert!(gone.is_none(), "deleted");
}

async fn next_object<S>(stream: &mut S) -> Option<ConfigMap>
where
    S: futures::Stream<Item = Result<Option<ConfigMap>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("watch_object event")
        .expect("stream open")
        .expect("no error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_k8s_io_and_core_v1_events_share_storage() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    use kube::Resource;
    let env = Env::start().await;
    let subject = cms(&env, "default")
        .create(&PostParams::default(), &cm_named("subject"))
        .await
        .unwrap();
    let recorder = Recorder::new(
        env.client.clone(),
        Reporter {
            controller: "fluxconfig-test".into(),
            instance: None,
        },
    );
    recorder
        .publish(
            &Event {
                type_: EventType::Warning,
                reason: "ReconcileFailed".into(),
                note: Some("could not reconcile".into()),
                action: "Reconcile".into(),
                secondary: None,
            },
            &subject.object_ref(&()),
        )
        .await
        .expect("publish an events.k8s.io/v1 Event");
    let core: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(env.client.clone(), "default");
    let list = core.list(&ListParams::default()).await.unwrap();
    let ev = list
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("ReconcileFailed"))
        .expect("the events.k8s.io Event is visible as a core/v1 Event");
    assert_eq!(ev.message.as_deref(), Some("could not reconcile"));
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.involved_object.name.as_deref(), Some("subject"));
    assert_eq!(ev.involved_object.kind.as_deref(), Some("ConfigMap"));
    assert_eq!(ev.reporting_component.as_deref(), Some("fluxconfig-test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_cel_validation_rules_are_enforced() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos("default");
    let mut obj = gitrepo("cel", "https://example.com/r");
    obj.data["spec"]["serviceAccountName"] = json!("workload");
    let st = api_err(api.create(&PostParams::default(), &obj).await);
    assert_eq!(st.code, 422);
    assert_eq!(
        st.message,
        r#"GitRepository.source.toolkit.fluxcd.io "cel" is invalid: spec: Invalid value: "object": serviceAccountName can only be set when provider is 'azure' or 'aws'"#
    );
    let causes = st.details.expect("details").causes;
    assert_eq!(causes[0].field, "spec");
    assert_eq!(causes[0].reason, "FieldValueInvalid");
    obj.data["spec"]["provider"] = json!("azure");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("provider azure allows serviceAccountName");

    env.install_crd(
        &std::path::Path::new(FLUX_CRDS).join("helm.toolkit.fluxcd.io_helmreleases.yaml"),
    )
    .await;
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
        "helmreleases",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), "default", &ar);
    // The CEL rule "either chart or chartRef must be set".
    let none = dyn_obj(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "nochart"},
        "spec": {"interval": "5m"},
    }));
    let st = api_err(api.create(&PostParams::default(), &none).await);
    assert_eq!(st.code, 422);
    assert!(
        st.message.contains("either chart or chartRef must be set"),
        "{}",
        st.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_unknown_fields_keeps_helm_values() {
    let env = Env::start().await;
    env.install_crd(
        &std::path::Path::new(FLUX_CRDS).join("helm.toolkit.fluxcd.io_helmreleases.yaml"),
    )
    .await;
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
        "helmreleases",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), "default", &ar);
    let values = json!({"replicaCount": 3, "ingress": {"enabled": true, "hosts": ["a.example.com"]}, "anything": {"goes": null}});
    let hr = dyn_obj(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "podinfo"},
        "spec": {
            "interval": "5m",
            "chartRef": {"kind": "OCIRepository", "name": "podinfo"},
            "values": values,
            "bogus": "pruned",
        },
    }));
    let created = api.create(&PostParams::default(), &hr).await.unwrap();
    assert_eq!(created.data["spec"]["values"], values);
    assert!(
        created.data["spec"].get("bogus").is_none(),
        "pruned outside values"
    );
}

// ---------------------------------------------------------------------------
// More object-meta and request validation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_in_body_must_match_the_url() {
    let env = Env::start().await;
    env.create_namespace("other").await;
    let resp = env
        .raw(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some("application/json"),
            Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}})),
        )
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    let st = resp.json();
    assert_eq!(st["reason"], "BadRequest");
    assert_eq!(
        st["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_are_rejected_and_generate_name_works() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    let st = api_err(
        api.create(&PostParams::default(), &cm_named("Bad_Name"))
            .await,
    );
    assert_eq!(st.code, 422);
    assert!(
        st.message.starts_with(
            r#"ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"#
        ),
        "{}",
        st.message
    );
    let generated = api
        .create(
            &PostParams::default(),
            &cm(json!({"metadata": {"generateName": "gen-"}})),
        )
        .await
        .unwrap();
    let name = generated.name_any();
    let suffix = name.strip_prefix("gen-").expect("prefix kept");
    assert_eq!(suffix.len(), 5, "{name}");
    assert!(
        suffix
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{name}"
    );
    assert_eq!(generated.metadata.generate_name.as_deref(), Some("gen-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_configmap_data_cannot_change() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    api.create(
        &PostParams::default(),
        &cm(json!({"metadata": {"name": "imm"}, "data": {"a": "1"}, "immutable": true})),
    )
    .await
    .unwrap();
    let st = api_err(
        api.patch(
            "imm",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "2"}})),
        )
        .await,
    );
    assert_eq!(st.code, 422);
    assert_eq!(
        st.message,
        "ConfigMap \"imm\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
    );
    // Metadata may still change.
    api.patch(
        "imm",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"ok": "yes"}}})),
    )
    .await
    .expect("labels of an immutable ConfigMap can change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_preconditions_and_status_response() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    let obj = api
        .create(&PostParams::default(), &cm_named("pre"))
        .await
        .unwrap();
    let uid = obj.metadata.uid.clone().unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("00000000-0000-0000-0000-000000000000".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let st = api_err(api.delete("pre", &dp).await);
    assert_eq!(st.code, 409);
    assert_eq!(st.reason, "Conflict");
    assert_eq!(
        st.message,
        format!(
            r#"Operation cannot be fulfilled on configmaps "pre": Precondition failed: UID in precondition: 00000000-0000-0000-0000-000000000000, UID in object meta: {uid}"#
        )
    );
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some(uid.clone()),
            resource_version: obj.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    // A ConfigMap deleted at once is answered with a Success Status naming it.
    let status = api
        .delete("pre", &dp)
        .await
        .unwrap()
        .right()
        .expect("Status, not the object");
    assert!(status.is_success());
    let details = status.details.expect("details");
    assert_eq!(details.name, "pre");
    assert_eq!(details.kind, "configmaps");
    assert_eq!(details.uid, uid);
    assert!(api.get_opt("pre").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_token_after_compaction_is_410_expired() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    for i in 0..3 {
        api.create(&PostParams::default(), &cm_named(&format!("c{i}")))
            .await
            .unwrap();
    }
    let first = api.list(&ListParams::default().limit(1)).await.unwrap();
    let token = first.metadata.continue_.expect("continue");
    api.create(&PostParams::default(), &cm_named("later"))
        .await
        .unwrap();
    env.server.compact_history();
    let st = api_err(
        api.list(&ListParams::default().limit(1).continue_token(&token))
            .await,
    );
    assert_eq!(st.code, 410);
    assert_eq!(st.reason, "Expired");
    assert!(
        st.message.starts_with(
            "The provided continue parameter is too old to display a consistent list result."
        ),
        "{}",
        st.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_health_endpoints() {
    let env = Env::start().await;
    let info = env.client.apiserver_version().await.unwrap();
    assert_eq!(info.major, "1");
    assert!(
        info.git_version.starts_with(&format!("v1.{}.", info.minor)),
        "{info:?}"
    );
    for path in ["/healthz", "/livez", "/readyz"] {
        let resp = env.raw("GET", path, None, None).await;
        assert_eq!((resp.status, resp.text.as_str()), (200, "ok"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_sees_namespace_deletion_remove_contents() {
    let env = Env::start().await;
    env.create_namespace("gone").await;
    for ns in ["default", "gone"] {
        cms(&env, ns)
            .create(
                &PostParams::default(),
                &cm(json!({"metadata": {"name": format!("in-{ns}"), "labels": {"r": "ns"}}})),
            )
            .await
            .unwrap();
    }
    let all: Api<ConfigMap> = Api::all(env.client.clone());
    let (reader, writer) = reflector::store::<ConfigMap>();
    let s = reflector(
        writer,
        watcher(all, watcher::Config::default().labels("r=ns")),
    )
    .default_backoff();
    let task = tokio::spawn(async move {
        futures::pin_mut!(s);
        while s.next().await.is_some() {}
    });
    reader.wait_until_ready().await.unwrap();
    assert_eq!(reader.state().len(), 2);
    let nss: Api<Namespace> = Api::all(env.client.clone());
    nss.delete("gone", &DeleteParams::default()).await.unwrap();
    eventually(
        "contents of the deleted namespace leave the store",
        DEADLINE,
        || async {
            let names: Vec<String> = reader.state().iter().map(|o| o.name_any()).collect();
            (names == ["in-default"]).then_some(())
        },
    )
    .await;
    eventually("namespace gone", DEADLINE, || is_gone(&nss, "gone")).await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_round_trips_micro_time() {
    use k8s_openapi::api::coordination::v1::Lease;
    let env = Env::start().await;
    let api: Api<Lease> = Api::namespaced(env.client.clone(), "default");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "leader"},
        "spec": {
            "holderIdentity": "agent-0",
            "leaseDurationSeconds": 15,
            "acquireTime": "2025-01-01T00:00:00.123456Z",
            "renewTime": "2025-01-01T00:00:05.654321Z",
            "leaseTransitions": 0,
        },
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &lease).await.unwrap();
    let raw = env
        .raw(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/default/leases/leader",
            None,
            None,
        )
        .await
        .json();
    assert_eq!(raw["spec"]["renewTime"], "2025-01-01T00:00:05.654321Z");
    assert_eq!(raw["spec"]["acquireTime"], "2025-01-01T00:00:00.123456Z");
    assert_eq!(raw["spec"]["holderIdentity"], "agent-0");
    // Leader election is optimistic concurrency on the lease.
    let mut renewed = created.clone();
    renewed.spec.as_mut().unwrap().holder_identity = Some("agent-1".into());
    api.replace("leader", &PostParams::default(), &renewed)
        .await
        .unwrap();
    let st = api_err(
        api.replace("leader", &PostParams::default(), &created)
            .await,
    );
    assert_eq!(st.code, 409);
    assert_eq!(
        st.message,
        r#"Operation cannot be fulfilled on leases.coordination.k8s.io "leader": the object has been modified; please apply your changes to the latest version and try again"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_on_status_subresource() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos("default");
    let user = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "st"},
        "spec": {"interval": "1m", "url": "https://example.com/r"},
    });
    api.patch("st", &PatchParams::apply("user"), &Patch::Apply(&user))
        .await
        .unwrap();
    let status = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "st"},
        "status": {"observedGeneration": 1, "conditions": [{
            "type": "Ready", "status": "True", "reason": "Succeeded",
            "message": "ok", "lastTransitionTime": "2025-01-01T00:00:00Z",
        }]},
    });
    let after = api
        .patch_status(
            "st",
            &PatchParams::apply("source-controller").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    assert_eq!(after.data["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(after.metadata.generation, Some(1));
    let mf = after.metadata.managed_fields.clone().unwrap();
    let ctrl = mf
        .iter()
        .find(|e| e.manager.as_deref() == Some("source-controller"))
        .expect("controller entry");
    assert_eq!(ctrl.operation.as_deref(), Some("Apply"));
    assert_eq!(ctrl.subresource.as_deref(), Some("status"));
    let fields = serde_json::to_value(&ctrl.fields_v1).unwrap();
    assert!(fields["f:status"]["f:conditions"].is_object(), "{fields}");
    assert!(fields.get("f:spec").is_none(), "{fields}");
    // The user's next apply of spec neither conflicts with nor clears status.
    let mut user2 = user.clone();
    user2["spec"]["interval"] = json!("2m");
    let again = api
        .patch("st", &PatchParams::apply("user"), &Patch::Apply(&user2))
        .await
        .unwrap();
    assert_eq!(again.data["spec"]["interval"], "2m");
    assert_eq!(again.data["status"]["conditions"][0]["reason"], "Succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_patch_requires_field_manager() {
    let env = Env::start().await;
    let resp = env
        .raw(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/nomanager",
            Some("application/apply-patch+yaml"),
            Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nomanager"}})),
        )
        .await;
    assert_eq!(resp.status, 422, "{}", resp.text);
    let st = resp.json();
    assert_eq!(
        st["message"],
        r#"PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflict_with_an_update_manager() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos("default");
    let pp = PostParams {
        field_manager: Some("creator".into()),
        ..PostParams::default()
    };
    let created = api
        .create(&pp, &gitrepo("upd", "https://example.com/r"))
        .await
        .unwrap();
    let mf = created.metadata.managed_fields.expect("managedFields");
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("creator"));
    assert_eq!(mf[0].operation.as_deref(), Some("Update"));
    assert_eq!(
        mf[0].api_version.as_deref(),
        Some("source.toolkit.fluxcd.io/v1")
    );
    assert!(mf[0].time.is_some());
    let applied = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "upd"},
        "spec": {"interval": "9m", "url": "https://example.com/r"},
    });
    let st = api_err(
        api.patch(
            "upd",
            &PatchParams::apply("applier"),
            &Patch::Apply(&applied),
        )
        .await,
    );
    assert_eq!(st.code, 409);
    assert_eq!(
        st.message,
        r#"Apply failed with 1 conflict: conflict with "creator" using source.toolkit.fluxcd.io/v1: .spec.interval"#
    );
    let causes = st.details.expect("details").causes;
    assert_eq!(
        causes[0].message,
        r#"conflict with "creator" using source.toolkit.fluxcd.io/v1"#
    );
}

// ---------------------------------------------------------------------------
// The project's own CRD (kube-derive generated)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fluxconfig_crd_round_trips_typed_objects() {
    use fluxconfig_api::FluxConfig;
    use kube::CustomResourceExt;
    let env = Env::start().await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(env.client.clone());
    crds.create(&PostParams::default(), &FluxConfig::crd())
        .await
        .expect("the kube-derive CRD is accepted");
    env.wait_established("fluxconfigs.clusterconfig.azure.com")
        .await;
    env.create_namespace("cluster-config").await;
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/cluster-config.yaml"
    ))
    .unwrap();
    let fc: FluxConfig = serde_saphyr::from_str(&example).unwrap();
    let api: Api<FluxConfig> = Api::namespaced(env.client.clone(), "cluster-config");
    let created = api.create(&PostParams::default(), &fc).await.unwrap();
    assert_eq!(created.spec, fc.spec, "nothing pruned or changed on create");
    let got = api.get("cluster-config").await.unwrap();
    assert_eq!(got.spec, fc.spec);
    assert_eq!(got.metadata.generation, Some(1));

    let status = api
        .patch_status(
            "cluster-config",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"provisioningState": "Succeeded", "complianceState": "Non-Compliant", "observedGeneration": 1}})),
        )
        .await
        .unwrap();
    let st = status.status.expect("status");
    assert_eq!(
        st.provisioning_state,
        Some(fluxconfig_api::ProvisioningState::Succeeded)
    );
    assert_eq!(
        st.compliance_state,
        Some(fluxconfig_api::ComplianceState::NonCompliant)
    );

    let bad = api
        .patch(
            "cluster-config",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"scope": "galaxy"}})),
        )
        .await;
    let st = api_err(bad);
    assert_eq!(st.code, 422);
    assert!(
        st.message
            .contains(r#"spec.scope: Unsupported value: "galaxy""#),
        "{}",
        st.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_only_sees_its_resource_and_namespace() {
    let env = Env::start().await;
    env.create_namespace("elsewhere").await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "default");
    let rv0 = secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = secrets
        .watch(&WatchParams::default().timeout(30), &rv0)
        .await
        .unwrap()
        .boxed();
    cms(&env, "default")
        .create(&PostParams::default(), &cm_named("not-a-secret"))
        .await
        .unwrap();
    let other: Api<Secret> = Api::namespaced(env.client.clone(), "elsewhere");
    let secret = |name: &str| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    };
    other
        .create(&PostParams::default(), &secret("other-ns"))
        .await
        .unwrap();
    secrets
        .create(&PostParams::default(), &secret("mine"))
        .await
        .unwrap();
    match next_change(&mut stream, "ADDED mine").await {
        WatchEvent::Added(s) => {
            assert_eq!(s.name_any(), "mine");
            assert_eq!(s.namespace().as_deref(), Some("default"));
        }
        ev => panic!("expected only the default-namespace Secret, got {ev:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_finalizer_helper_works_end_to_end() {
    use kube::runtime::finalizer::{finalizer, Event as Fin};
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos("default");
    api.create(
        &PostParams::default(),
        &gitrepo("fin", "https://example.com/r"),
    )
    .await
    .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<&'static str>::new()));
    let run = |obj: DynamicObject| {
        let api = api.clone();
        let seen = seen.clone();
        async move {
            finalizer(
                &api,
                "example.com/cleanup",
                Arc::new(obj),
                |ev| async move {
                    seen.lock().unwrap().push(match ev {
                        Fin::Apply(_) => "apply",
                        Fin::Cleanup(_) => "cleanup",
                    });
                    Ok::<_, std::convert::Infallible>(
                        kube::runtime::controller::Action::await_change(),
                    )
                },
            )
            .await
            .expect("finalizer helper")
        }
    };
    // 1st pass adds the finalizer (JSON patch: test /metadata/finalizers == null, add).
    run(api.get("fin").await.unwrap()).await;
    let obj = api.get("fin").await.unwrap();
    assert_eq!(obj.finalizers(), ["example.com/cleanup"]);
    // 2nd pass reconciles.
    run(obj).await;
    // A second finalizer is appended with test-the-whole-list + add /-.
    api.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["example.com/cleanup"]},
                {"op": "add", "path": "/metadata/finalizers/-", "value": "example.com/other"},
            ]))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    api.delete("fin", &DeleteParams::default()).await.unwrap();
    // 3rd pass cleans up and removes its finalizer (test + remove by index).
    run(api.get("fin").await.unwrap()).await;
    let obj = api.get("fin").await.unwrap();
    assert_eq!(obj.finalizers(), ["example.com/other"]);
    assert_eq!(*seen.lock().unwrap(), ["apply", "cleanup"]);
    // A stale test op fails with 422 and changes nothing.
    let st = api_err(
        api.patch(
            "fin",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": "example.com/cleanup"},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ])).unwrap()),
        )
        .await,
    );
    assert_eq!(st.code, 422);
    api.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ]))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    eventually("object gone", DEADLINE, || is_gone(&api, "fin")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_discovery_documents_describe_resources_and_subresources() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let list = env
        .client
        .list_api_group_resources("source.toolkit.fluxcd.io/v1")
        .await
        .unwrap();
    assert_eq!(list.group_version, "source.toolkit.fluxcd.io/v1");
    let main = list
        .resources
        .iter()
        .find(|r| r.name == "gitrepositories")
        .expect("gitrepositories");
    assert_eq!(main.kind, "GitRepository");
    assert_eq!(main.singular_name, "gitrepository");
    assert!(main.namespaced);
    assert_eq!(
        main.short_names.as_deref(),
        Some(&["gitrepo".to_string()][..])
    );
    assert_eq!(
        main.categories.as_deref(),
        Some(
            &[
                "all".to_string(),
                "fluxcd".to_string(),
                "fluxcd-sources".to_string()
            ][..]
        )
    );
    let mut verbs = main.verbs.clone();
    verbs.sort();
    assert_eq!(
        verbs,
        [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ]
    );
    let status = list
        .resources
        .iter()
        .find(|r| r.name == "gitrepositories/status")
        .expect("status subresource listed");
    assert_eq!(status.kind, "GitRepository");
    let mut verbs = status.verbs.clone();
    verbs.sort();
    assert_eq!(verbs, ["get", "patch", "update"]);

    let core = env.client.list_core_api_resources("v1").await.unwrap();
    let names: Vec<&str> = core.resources.iter().map(|r| r.name.as_str()).collect();
    for n in [
        "configmaps",
        "secrets",
        "namespaces",
        "namespaces/status",
        "namespaces/finalize",
        "serviceaccounts",
        "events",
    ] {
        assert!(names.contains(&n), "{n} missing from /api/v1: {names:?}");
    }
    let groups = env.client.list_api_groups().await.unwrap();
    let flux = groups
        .groups
        .iter()
        .find(|g| g.name == "source.toolkit.fluxcd.io")
        .expect("group listed");
    assert_eq!(
        flux.preferred_version
            .as_ref()
            .map(|v| v.group_version.as_str()),
        Some("source.toolkit.fluxcd.io/v1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_meta_limits_are_enforced() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    let long_value = "v".repeat(64);
    let st = api_err(
        api.create(
            &PostParams::default(),
            &cm(json!({"metadata": {"name": "label", "labels": {"k": long_value}}})),
        )
        .await,
    );
    assert_eq!(st.code, 422);
    assert!(
        st.message.contains(&format!(
            r#"metadata.labels: Invalid value: "{long_value}": must be no more than 63 characters"#
        )),
        "{}",
        st.message
    );
    let big = "a".repeat(300 * 1024);
    let st = api_err(
        api.create(
            &PostParams::default(),
            &cm(json!({"metadata": {"name": "annot", "annotations": {"big": big}}})),
        )
        .await,
    );
    assert_eq!(st.code, 422);
    assert!(
        st.message.contains("metadata.annotations: Too long"),
        "{}",
        &st.message[..st.message.len().min(300)]
    );
    let nss: Api<Namespace> = Api::all(env.client.clone());
    let st = api_err(
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "a.b"}})).unwrap(),
        )
        .await,
    );
    assert_eq!(st.code, 422);
    assert!(
        st.message.contains(
            r#"metadata.name: Invalid value: "a.b": a lowercase RFC 1123 label must consist of"#
        ),
        "{}",
        st.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_namespaces_cannot_be_deleted() {
    let env = Env::start().await;
    let nss: Api<Namespace> = Api::all(env.client.clone());
    for ns in ["default", "kube-system", "kube-public"] {
        let st = api_err(nss.delete(ns, &DeleteParams::default()).await);
        assert_eq!(st.code, 403, "{ns}");
        assert_eq!(st.reason, "Forbidden");
        assert_eq!(
            st.message,
            format!(r#"namespaces "{ns}" is forbidden: this namespace may not be deleted"#)
        );
    }
    assert!(nss
        .get("default")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_resource_version_is_rejected() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    let mut obj = cm_named("rv-set");
    obj.metadata.resource_version = Some("12345".into());
    let st = api_err(api.create(&PostParams::default(), &obj).await);
    assert!(
        st.message
            .contains("resourceVersion should not be set on objects to be created"),
        "{st:?}"
    );
    assert!(api.get_opt("rv-set").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_treats_unannotated_crd_lists_as_atomic() {
    // The Flux CRDs declare no x-kubernetes-list-type on status.conditions, so for SSA the
    // list is atomic: a second applier conflicts on the whole list and, forced, replaces it.
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos("default");
    api.create(
        &PostParams::default(),
        &gitrepo("atomic", "https://example.com/r"),
    )
    .await
    .unwrap();
    let cond = |t: &str| json!({"type": t, "status": "True", "reason": "R", "message": "m", "lastTransitionTime": "2025-01-01T00:00:00Z"});
    let status = |conds: Value| {
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": "atomic"},
            "status": {"conditions": conds},
        })
    };
    api.patch_status(
        "atomic",
        &PatchParams::apply("a"),
        &Patch::Apply(status(json!([cond("Ready")]))),
    )
    .await
    .unwrap();
    let st = api_err(
        api.patch_status(
            "atomic",
            &PatchParams::apply("b"),
            &Patch::Apply(status(json!([cond("Reconciling")]))),
        )
        .await,
    );
    assert_eq!(st.code, 409);
    assert_eq!(
        st.message,
        r#"Apply failed with 1 conflict: conflict with "a" with subresource "status": .status.conditions"#
    );
    let forced = api
        .patch_status(
            "atomic",
            &PatchParams::apply("b").force(),
            &Patch::Apply(status(json!([cond("Reconciling")]))),
        )
        .await
        .unwrap();
    let types: Vec<&str> = forced.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Reconciling"], "atomic list replaced, not merged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collector_handles_absent_and_multiple_owners() {
    let env = Env::start().await;
    let api = cms(&env, "default");
    // An owner reference whose uid matches no object: the dependent is collected, even when an
    // object of that name exists (the uid is what counts).
    api.create(&PostParams::default(), &cm_named("ghost"))
        .await
        .unwrap();
    api.create(
        &PostParams::default(),
        &cm(
            json!({"metadata": {"name": "orphaned", "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "ghost",
                "uid": "00000000-0000-0000-0000-00000000dead",
            }]}}),
        ),
    )
    .await
    .unwrap();
    eventually("dependent of an absent owner collected", DEADLINE, || {
        is_gone(&api, "orphaned")
    })
    .await;
    assert!(api.get_opt("ghost").await.unwrap().is_some());

    // Two owners: deleting one leaves the dependent with only the live owner's reference.
    let o1 = api
        .create(&PostParams::default(), &cm_named("owner-1"))
        .await
        .unwrap();
    let o2 = api
        .create(&PostParams::default(), &cm_named("owner-2"))
        .await
        .unwrap();
    let uid1 = o1.metadata.uid.unwrap();
    let uid2 = o2.metadata.uid.unwrap();
    api.create(
        &PostParams::default(),
        &cm(json!({"metadata": {"name": "shared", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner-1", "uid": uid1},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner-2", "uid": uid2},
        ]}})),
    )
    .await
    .unwrap();
    api.delete("owner-1", &DeleteParams::background())
        .await
        .unwrap();
    let shared = eventually("dangling owner reference removed", DEADLINE, || async {
        let s = api.get("shared").await.ok()?;
        (s.metadata.owner_references.as_ref()?.len() == 1).then_some(s)
    })
    .await;
    let refs = shared.metadata.owner_references.unwrap();
    assert_eq!(refs[0].uid, uid2);
    assert!(shared.metadata.deletion_timestamp.is_none());
    api.delete("owner-2", &DeleteParams::background())
        .await
        .unwrap();
    eventually("collected with its last owner", DEADLINE, || {
        is_gone(&api, "shared")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_version_preconditions_in_patches_and_status_updates() {
    let env = Env::start().await;
    install_gitrepo_crd(&env).await;
    let api = env.gitrepos("default");
    let v1 = api
        .create(
            &PostParams::default(),
            &gitrepo("pre", "https://example.com/r"),
        )
        .await
        .unwrap();
    let stale = v1.metadata.resource_version.clone().unwrap();
    api.patch(
        "pre",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"interval": "2m"}})),
    )
    .await
    .unwrap();
    // A resourceVersion inside a merge patch is a precondition.
    let st = api_err(
        api.patch(
            "pre",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"resourceVersion": stale}, "spec": {"interval": "3m"}}),
            ),
        )
        .await,
    );
    assert_eq!(st.code, 409);
    assert_eq!(st.reason, "Conflict");
    // PUT /status with a stale resourceVersion conflicts too.
    let mut old = v1.clone();
    old.data["status"] = json!({"observedGeneration": 1});
    let st = api_err(
        api.replace_status("pre", &PostParams::default(), &old)
            .await,
    );
    assert_eq!(st.code, 409);
    // PUT /status with the current resourceVersion changes only status.
    let mut cur = api.get("pre").await.unwrap();
    cur.data["status"] = json!({"observedGeneration": 2});
    cur.data["spec"]["interval"] = json!("99m");
    let put = api
        .replace_status("pre", &PostParams::default(), &cur)
        .await
        .unwrap();
    assert_eq!(put.data["status"]["observedGeneration"], 2);
    assert_eq!(put.data["spec"]["interval"], "2m");
    // A dry-run apply answers with the result but stores nothing.
    let dry = api
        .patch(
            "pre",
            &PatchParams::apply("dry").dry_run().force(),
            &Patch::Apply(json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "GitRepository",
                "metadata": {"name": "pre"},
                "spec": {"interval": "42m", "url": "https://example.com/r"},
            })),
        )
        .await
        .unwrap();
    assert_eq!(dry.data["spec"]["interval"], "42m");
    let got = api.get("pre").await.unwrap();
    assert_eq!(got.data["spec"]["interval"], "2m");
    assert_eq!(got.metadata.resource_version, put.metadata.resource_version);
}

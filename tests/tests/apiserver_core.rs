//! Store, watch, discovery, auth and fault-injection basics of the API server emulator,
//! driven through kube-rs.

use std::time::Duration;

use fluxconfig_testbed::apiserver::{self, Config};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::core::Status;
use serde_json::json;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"}
    }))
    .unwrap()
}

fn api_err(e: kube::Error) -> Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_conflicts_and_not_found() {
    let server = apiserver::start(Config::default()).await.unwrap();
    let client = server.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert!(
        created.metadata.generation.is_none(),
        "ConfigMaps carry no generation"
    );

    let e = api_err(
        cms.create(&PostParams::default(), &cm("a", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, "configmaps \"a\" already exists");

    let mut updated = created.clone();
    updated.data = Some([("k".to_string(), "w".to_string())].into());
    let updated = cms
        .replace("a", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert_eq!(updated.data.as_ref().unwrap()["k"], "w", "{updated:?}");
    assert_ne!(
        updated.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    let e = api_err(
        cms.replace("a", &PostParams::default(), &created)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("the object has been modified"),
        "{}",
        e.message
    );

    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    let e = api_err(
        other
            .create(&PostParams::default(), &cm("a", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );

    let e = api_err(cms.get("missing").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "configmaps \"missing\" not found");

    let nss: Api<Namespace> = Api::all(client);
    assert!(nss.get("default").await.is_ok());
    server.shutdown().await;
}

#[tokio::test]
async fn list_selectors_and_pagination() {
    let server = apiserver::start(Config::default()).await.unwrap();
    let client = server.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        cms.create(
            &PostParams::default(),
            &cm(&format!("c{i}"), json!({"tier": tier})),
        )
        .await
        .unwrap();
    }
    let even = cms
        .list(&ListParams::default().labels("tier=even"))
        .await
        .unwrap();
    assert_eq!(even.items.len(), 4);
    let notin = cms
        .list(&ListParams::default().labels("tier notin (even)"))
        .await
        .unwrap();
    assert_eq!(notin.items.len(), 3);
    let byname = cms
        .list(&ListParams::default().fields("metadata.name=c3"))
        .await
        .unwrap();
    assert_eq!(byname.items.len(), 1);

    let first = cms.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    let token = first.metadata.continue_.clone().unwrap();
    let second = cms
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(second.items.len(), 4);
    assert!(second
        .metadata
        .continue_
        .as_deref()
        .unwrap_or("")
        .is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn watch_from_resource_version_and_410_after_compaction() {
    let server = apiserver::start(Config::default()).await.unwrap();
    let client = server.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let list = cms.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    cms.create(&PostParams::default(), &cm("w", json!({})))
        .await
        .unwrap();
    cms.delete("w", &DeleteParams::default()).await.unwrap();

    let mut stream = cms
        .watch(&WatchParams::default().timeout(2), &rv)
        .await
        .unwrap()
        .boxed();
    let mut kinds = Vec::new();
    while let Some(ev) = stream.try_next().await.unwrap() {
        match ev {
            WatchEvent::Added(_) => kinds.push("ADDED"),
            WatchEvent::Modified(_) => kinds.push("MODIFIED"),
            WatchEvent::Deleted(_) => kinds.push("DELETED"),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("unexpected {e:?}"),
        }
        if kinds.len() == 2 {
            break;
        }
    }
    assert_eq!(kinds, ["ADDED", "DELETED"]);

    server.compact_history();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(2), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn bookmarks_only_when_asked() {
    let server = apiserver::start(Config {
        bookmark_interval: Duration::from_millis(100),
        ..Config::default()
    })
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await.unwrap(), "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut s = cms
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .boxed();
    assert!(matches!(
        s.try_next().await.unwrap(),
        Some(WatchEvent::Bookmark(_))
    ));
    let s = cms
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), &rv)
        .await
        .unwrap();
    let events: Vec<_> = s.collect().await;
    assert!(events.is_empty(), "{events:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn rejects_wrong_token_and_serves_plain_http() {
    let server = apiserver::start(Config {
        tls: false,
        ..Config::default()
    })
    .await
    .unwrap();
    assert!(server.url().starts_with("http://"));
    assert!(server.ca_pem().is_none());
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await.unwrap(), "default");
    assert!(cms.list(&ListParams::default()).await.is_ok());

    let yaml = server.kubeconfig_yaml().replace(server.token(), "wrong");
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let bad: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(cfg).unwrap(), "default");
    let e = api_err(bad.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));
    server.shutdown().await;
}

#[tokio::test]
async fn injected_faults() {
    let server = apiserver::start(Config::default()).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await.unwrap(), "default");
    server.faults().set_error_rate(Some("list"), 500, 1.0);
    let e = api_err(cms.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    assert!(cms
        .create(&PostParams::default(), &cm("ok", json!({})))
        .await
        .is_ok());
    server.faults().clear();
    // kube-rs retries 429 by default; a client without retries sees the answer itself.
    let kc = kube::config::Kubeconfig::from_yaml(&server.kubeconfig_yaml()).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.default_retry = false;
    let cms: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(cfg).unwrap(), "default");
    server.faults().throttle(1.0, 2);
    let e = api_err(cms.get("ok").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (429, "TooManyRequests"));
    server.faults().clear();
    assert!(cms.get("ok").await.is_ok());
    server.shutdown().await;
}

#[tokio::test]
async fn discovery_lists_builtins() {
    let server = apiserver::start(Config::default()).await.unwrap();
    let client = server.client().await.unwrap();
    let d = kube::discovery::Discovery::new(client).run().await.unwrap();
    let groups: Vec<String> = d.groups().map(|g| g.name().to_string()).collect();
    assert!(groups.contains(&"".to_string()), "{groups:?}");
    assert!(groups.contains(&"apiextensions.k8s.io".to_string()));
    assert!(groups.contains(&"coordination.k8s.io".to_string()));
    server.shutdown().await;
}

#[tokio::test]
async fn terminating_namespace_forbids_creates_then_disappears() {
    let server = apiserver::start(Config::default()).await.unwrap();
    let client = server.client().await.unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "gone"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "gone");
    cms.create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap();
    nss.delete("gone", &DeleteParams::default()).await.unwrap();
    let phase = nss.get("gone").await.unwrap().status.and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Terminating"));
    let e = api_err(
        cms.create(&PostParams::default(), &cm("y", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert!(
        e.message.contains("because it is being terminated"),
        "{}",
        e.message
    );
    for _ in 0..100 {
        if nss.get_opt("gone").await.unwrap().is_none() {
            server.shutdown().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("namespace was never removed");
}

#[tokio::test]
async fn owner_references_are_collected() {
    let server = apiserver::start(Config::default()).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await.unwrap(), "default");
    let owner = cms
        .create(&PostParams::default(), &cm("owner", json!({})))
        .await
        .unwrap();
    let mut dep = cm("dep", json!({}));
    dep.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
        "uid": owner.metadata.uid.clone().unwrap()
    }))
    .unwrap()]);
    cms.create(&PostParams::default(), &dep).await.unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    for _ in 0..100 {
        if cms.get_opt("dep").await.unwrap().is_none() {
            server.shutdown().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("dependent was never collected");
}

#[tokio::test]
async fn events_v1_and_core_events_share_storage() {
    let server = apiserver::start(Config::default()).await.unwrap();
    let client = server.client().await.unwrap();
    let v1: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "default");
    let ev = serde_json::from_value(json!({
        "metadata": {"name": "e1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "example.com/ctrl", "reportingInstance": "i-1",
        "action": "Sync", "reason": "Synced", "type": "Normal", "note": "hello",
        "regarding": {"kind": "ConfigMap", "name": "x", "namespace": "default", "apiVersion": "v1"}
    }))
    .unwrap();
    v1.create(&PostParams::default(), &ev).await.unwrap();
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, "default");
    let got = core.get("e1").await.unwrap();
    assert_eq!(got.message.as_deref(), Some("hello"));
    assert_eq!(got.involved_object.name.as_deref(), Some("x"));
    assert_eq!(got.reporting_component.as_deref(), Some("example.com/ctrl"));
    server.shutdown().await;
}

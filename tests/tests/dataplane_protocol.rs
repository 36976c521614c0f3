//! The testbed data plane against the protocol of `fluxconfig_api::dataplane`.

use std::path::Path;
use std::time::{Duration, Instant};

use fluxconfig_api::dataplane::{
    AgentHeartbeat, ClusterRef, ClusterType, ConfigurationList, ErrorResponse,
    FluxConfigurationResource, FluxConfigurationResourceList, API_VERSION, MAX_REQUEST_BYTES,
    PROTECTED_SETTINGS,
};
use fluxconfig_api::{ComplianceState, FluxConfigStatus};
use fluxconfig_testbed::dataplane::client::{Client, ClientResponse};
use fluxconfig_testbed::dataplane::{self, Dataplane, DataplaneConfig, FaultConfig, Outage};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "s3cr3t-token";
const SECRET: &str = "c3NoLXByaXZhdGUta2V5LWJ5dGVz";

fn cluster(name: &str) -> ClusterRef {
    ClusterRef {
        subscription_id: "sub".into(),
        resource_group: "rg".into(),
        cluster_type: ClusterType::ConnectedClusters,
        cluster_name: name.into(),
    }
}

fn api(path: &str) -> String {
    format!("{path}?api-version={API_VERSION}")
}

fn config(dir: &Path, tls: bool) -> DataplaneConfig {
    let mut c = DataplaneConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.join("state.json"),
        TOKEN,
    );
    c.plain_http = !tls;
    c.tls_dir = tls.then(|| dir.join("tls"));
    c
}

async fn start(dir: &Path) -> (Dataplane, Client) {
    let dp = dataplane::start(config(dir, true)).await.unwrap();
    let client = Client::new(dp.url(), TOKEN, dp.ca_pem()).unwrap();
    (dp, client)
}

fn body(url: &str) -> Value {
    json!({"properties": {
        "scope": "cluster",
        "namespace": "default",
        "sourceKind": "GitRepository",
        "gitRepository": {"url": url, "repositoryRef": {"branch": "main"}},
        "kustomizations": {"infra": {"path": "./infrastructure", "prune": true}},
        PROTECTED_SETTINGS: {"sshPrivateKey": SECRET}
    }})
}

async fn create(client: &Client, c: &ClusterRef, name: &str) -> ClientResponse {
    client
        .put_json(
            &api(&c.management_path(Some(name))),
            &body("ssh://git@example.com/repo"),
        )
        .await
        .unwrap()
}

async fn list(client: &Client, c: &ClusterRef, etag: Option<&str>, wait: u64) -> ClientResponse {
    let path = format!("{}&waitSeconds={wait}", api(&c.configurations_path()));
    let headers: Vec<(&str, &str)> = etag.map(|e| ("if-none-match", e)).into_iter().collect();
    client
        .send(Method::GET, &path, &headers, None)
        .await
        .unwrap()
}

fn error_code(resp: &ClientResponse) -> String {
    resp.json::<ErrorResponse>().unwrap().error.code
}

#[tokio::test]
async fn etag_and_not_modified() {
    let dir = tempfile::tempdir().unwrap();
    let (dp, client) = start(dir.path()).await;
    let c = cluster("arc");
    assert_eq!(create(&client, &c, "cfg").await.status, StatusCode::CREATED);

    let first = list(&client, &c, None, 0).await;
    assert_eq!(first.status, StatusCode::OK);
    let etag = first.header("etag").unwrap().to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong, quoted: {etag}"
    );
    let listing: ConfigurationList = first.json().unwrap();
    assert!(listing.is_complete());
    assert_eq!(listing.count, 1);
    assert_eq!(listing.value[0]["name"], "cfg");
    assert_eq!(
        listing.value[0]["properties"][PROTECTED_SETTINGS]["sshPrivateKey"],
        SECRET
    );
    assert_eq!(first.header("cache-control"), Some("no-store"));

    let again = list(&client, &c, Some(&etag), 0).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    // Weak comparison, as If-None-Match wants.
    let weak = format!("W/{etag}");
    assert_eq!(
        list(&client, &c, Some(&weak), 0).await.status,
        StatusCode::NOT_MODIFIED
    );

    // A cluster without configurations still lists (empty, complete) with an ETag.
    let empty = list(&client, &cluster("other"), None, 0).await;
    let l: ConfigurationList = empty.json().unwrap();
    assert_eq!((l.count, l.value.len()), (0, 0));
    assert!(empty.header("etag").is_some());
    assert!(dp.stats().not_modified >= 2);
    dp.shutdown().await;
}

#[tokio::test]
async fn not_modified_is_tiny_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let dp = dataplane::start(config(dir.path(), false)).await.unwrap();
    let client = Client::new(dp.url(), TOKEN, None).unwrap();
    let c = cluster("arc");
    create(&client, &c, "cfg").await;
    let etag = list(&client, &c, None, 0)
        .await
        .header("etag")
        .unwrap()
        .to_string();

    let mut tcp = tokio::net::TcpStream::connect(dp.addr()).await.unwrap();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n",
        api(&c.configurations_path())
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 304"), "{text}");
    assert!(raw.len() < 1024, "304 is {} bytes", raw.len());
    dp.shutdown().await;
}

#[tokio::test]
async fn long_poll_answers_promptly_on_change_and_holds_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let (dp, client) = start(dir.path()).await;
    let c = cluster("arc");
    let etag = list(&client, &c, None, 0)
        .await
        .header("etag")
        .unwrap()
        .to_string();

    // Nothing changes: the poll is held for waitSeconds, then 304.
    let t = Instant::now();
    let held = list(&client, &c, Some(&etag), 1).await;
    assert_eq!(held.status, StatusCode::NOT_MODIFIED);
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );

    // A change to another cluster does not answer this cluster's poll.
    let other = cluster("other");
    let poll = {
        let client = client.clone();
        let c = c.clone();
        let etag = etag.clone();
        tokio::spawn(async move { list(&client, &c, Some(&etag), 1).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    create(&client, &other, "x").await;
    assert_eq!(poll.await.unwrap().status, StatusCode::NOT_MODIFIED);

    // A change to this cluster answers at once with the new listing.
    let poll = {
        let client = client.clone();
        let c = c.clone();
        let etag = etag.clone();
        tokio::spawn(async move {
            let r = list(&client, &c, Some(&etag), 30).await;
            (r, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let changed_at = Instant::now();
    create(&client, &c, "cfg").await;
    let (resp, answered_at) = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("long poll answered within the deadline")
        .unwrap();
    assert!(
        answered_at.duration_since(changed_at) < Duration::from_secs(1),
        "answered {:?} after the change",
        answered_at.duration_since(changed_at)
    );
    assert_eq!(resp.status, StatusCode::OK);
    assert_ne!(resp.header("etag"), Some(etag.as_str()));
    let l: ConfigurationList = resp.json().unwrap();
    assert_eq!(l.count, 1);

    // Deleting wakes a poll too.
    let etag2 = resp.header("etag").unwrap().to_string();
    let poll = {
        let client = client.clone();
        let c = c.clone();
        tokio::spawn(async move { list(&client, &c, Some(&etag2), 30).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    client
        .delete(&api(&c.management_path(Some("cfg"))))
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
    let l: ConfigurationList = resp.json().unwrap();
    assert_eq!((l.count, l.value.len()), (0, 0));

    // Bad waitSeconds.
    let bad = client
        .get(&format!(
            "{}&waitSeconds=soon",
            api(&c.configurations_path())
        ))
        .await
        .unwrap();
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    dp.shutdown().await;
}

#[tokio::test]
async fn auth_and_api_version() {
    let dir = tempfile::tempdir().unwrap();
    let (dp, client) = start(dir.path()).await;
    let c = cluster("arc");
    let path = api(&c.configurations_path());
    for bad in [
        client.with_token(""),
        client.with_token("wrong"),
        client.with_token(&format!("{TOKEN}x")),
    ] {
        let resp = bad.get(&path).await.unwrap();
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&resp), "Unauthorized");
        assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
        assert!(!String::from_utf8_lossy(&resp.body).contains(TOKEN));
    }
    let basic_only = client
        .with_token("")
        .send(
            Method::GET,
            &path,
            &[("authorization", "Basic Zm9vOmJhcg==")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(basic_only.status, StatusCode::UNAUTHORIZED);

    let missing = client.get(&c.configurations_path()).await.unwrap();
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&missing), "MissingApiVersionParameter");
    let wrong = client
        .get(&format!(
            "{}?api-version=2022-03-01",
            c.configurations_path()
        ))
        .await
        .unwrap();
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&wrong), "InvalidApiVersionParameter");

    let unknown = client.get(&api("/subscriptions/s/nothing")).await.unwrap();
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let wrong_method = client.delete(&api(&c.configurations_path())).await.unwrap();
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    dp.shutdown().await;
}

#[tokio::test]
async fn management_crud_never_returns_protected_settings() {
    let dir = tempfile::tempdir().unwrap();
    let (dp, client) = start(dir.path()).await;
    let c = cluster("arc");
    let one = api(&c.management_path(Some("cfg")));

    let created = create(&client, &c, "cfg").await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(!String::from_utf8_lossy(&created.body).contains(SECRET));
    let r: FluxConfigurationResource = created.json().unwrap();
    assert_eq!(r.name.as_deref(), Some("cfg"));
    assert_eq!(
        r.id.as_deref(),
        Some(c.management_path(Some("cfg")).as_str())
    );
    assert_eq!(r.properties["provisioningState"], "Creating");
    assert_eq!(r.properties["complianceState"], "Pending");

    // Update without protected settings keeps them for the agent.
    let mut update = body("https://example.com/other");
    update["properties"]
        .as_object_mut()
        .unwrap()
        .remove(PROTECTED_SETTINGS);
    let updated = client.put_json(&one, &update).await.unwrap();
    assert_eq!(updated.status, StatusCode::OK);
    let l: ConfigurationList = list(&client, &c, None, 0).await.json().unwrap();
    assert_eq!(
        l.value[0]["properties"]["gitRepository"]["url"],
        "https://example.com/other"
    );
    assert_eq!(
        l.value[0]["properties"][PROTECTED_SETTINGS]["sshPrivateKey"],
        SECRET
    );

    // The agent reports; management GET shows it, still without secrets.
    let status = FluxConfigStatus {
        compliance_state: Some(ComplianceState::Compliant),
        source_synced_commit_id: Some("main@sha1:4f1bdad".into()),
        provisioning_state: Some(fluxconfig_api::ProvisioningState::Succeeded),
        ..Default::default()
    };
    let reported = client
        .put_json(&api(&c.status_path("cfg")), &status)
        .await
        .unwrap();
    assert_eq!(reported.status, StatusCode::NO_CONTENT);
    let got = client.get(&one).await.unwrap();
    assert!(!String::from_utf8_lossy(&got.body).contains(SECRET));
    let r: FluxConfigurationResource = got.json().unwrap();
    assert_eq!(r.properties["complianceState"], "Compliant");
    assert_eq!(r.properties["sourceSyncedCommitId"], "main@sha1:4f1bdad");
    assert_eq!(r.properties["provisioningState"], "Succeeded");
    assert!(r.properties["statusUpdatedAt"].is_string());
    assert!(r.properties.get(PROTECTED_SETTINGS).is_none());
    assert_eq!(
        dp.status(&c, "cfg").unwrap().compliance_state,
        Some(ComplianceState::Compliant)
    );

    // Heartbeat.
    let hb = AgentHeartbeat {
        agent_version: "0.1.0".into(),
        configuration_count: 1,
        ..Default::default()
    };
    let resp = client
        .put_json(&api(&c.heartbeat_path()), &hb)
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    assert_eq!(dp.heartbeat(&c).unwrap().heartbeat, hb);

    // List.
    create(&client, &c, "second").await;
    let all = client.get(&api(&c.management_path(None))).await.unwrap();
    assert!(!String::from_utf8_lossy(&all.body).contains(SECRET));
    let all: FluxConfigurationResourceList = all.json().unwrap();
    assert_eq!(all.value.len(), 2);

    // Delete: gone from the listing, and its status with it.
    assert_eq!(client.delete(&one).await.unwrap().status, StatusCode::OK);
    assert_eq!(
        client.delete(&one).await.unwrap().status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        client.get(&one).await.unwrap().status,
        StatusCode::NOT_FOUND
    );
    assert!(dp.status(&c, "cfg").is_none());
    let l: ConfigurationList = list(&client, &c, None, 0).await.json().unwrap();
    assert_eq!(l.count, 1);
    assert_eq!(l.value[0]["name"], "second");
    // Reporting on a deleted configuration tells the agent it is gone.
    let late = client
        .put_json(&api(&c.status_path("cfg")), &status)
        .await
        .unwrap();
    assert_eq!(late.status, StatusCode::NOT_FOUND);
    // Re-created: fresh, without the old status.
    create(&client, &c, "cfg").await;
    let r: FluxConfigurationResource = client.get(&one).await.unwrap().json().unwrap();
    assert_eq!(r.properties["complianceState"], "Pending");
    dp.shutdown().await;
}

#[tokio::test]
async fn bad_bodies_name_the_field_and_invalid_configs_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (dp, client) = start(dir.path()).await;
    let c = cluster("arc");
    let one = api(&c.management_path(Some("cfg")));
    let cases: [(&[u8], &str); 4] = [
        (b"{not json", "(body)"),
        (br#"{"properties": []}"#, "properties"),
        (
            br#"{"properties": {"configurationProtectedSettings": {"sshPrivateKey": 5}}}"#,
            "properties.configurationProtectedSettings.sshPrivateKey",
        ),
        (b"{}", "properties"),
    ];
    for (bytes, field) in cases {
        let resp = client
            .send(Method::PUT, &one, &[], Some(bytes.to_vec()))
            .await
            .unwrap();
        assert_eq!(resp.status, StatusCode::BAD_REQUEST);
        let e: ErrorResponse = resp.json().unwrap();
        assert_eq!(e.error.code, "InvalidRequestContent");
        assert!(e.error.message.starts_with(field), "{}", e.error.message);
    }
    // Semantically invalid: stored, for the agent to reject and report.
    let invalid = json!({"properties": {"sourceKind": "Nope", "kustomizations": {"a": {"dependsOn": ["missing"]}}}});
    assert_eq!(
        client.put_json(&one, &invalid).await.unwrap().status,
        StatusCode::CREATED
    );
    let l: ConfigurationList = list(&client, &c, None, 0).await.json().unwrap();
    assert_eq!(l.value[0]["properties"]["sourceKind"], "Nope");

    // Status reports are typed: the offending field is named.
    let bad_status = client
        .send(
            Method::PUT,
            &api(&c.status_path("cfg")),
            &[],
            Some(br#"{"complianceState": "Great"}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(bad_status.status, StatusCode::BAD_REQUEST);
    let e: ErrorResponse = bad_status.json().unwrap();
    assert!(
        e.error.message.starts_with("complianceState"),
        "{}",
        e.error.message
    );
    dp.shutdown().await;
}

#[tokio::test]
async fn oversized_requests_get_413() {
    let dir = tempfile::tempdir().unwrap();
    let (dp, client) = start(dir.path()).await;
    let c = cluster("arc");
    create(&client, &c, "cfg").await;
    let big = vec![b' '; MAX_REQUEST_BYTES + 1];
    let resp = client
        .send(Method::PUT, &api(&c.status_path("cfg")), &[], Some(big))
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&resp), "RequestEntityTooLarge");
    // Exactly at the limit is accepted (a valid document padded with whitespace).
    let mut at_limit = b"{}".to_vec();
    at_limit.resize(MAX_REQUEST_BYTES, b' ');
    let ok = client
        .send(
            Method::PUT,
            &api(&c.status_path("cfg")),
            &[],
            Some(at_limit),
        )
        .await
        .unwrap();
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
    dp.shutdown().await;
}

#[tokio::test]
async fn restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster("arc");
    let (dp, client) = start(dir.path()).await;
    create(&client, &c, "cfg").await;
    let status = FluxConfigStatus {
        compliance_state: Some(ComplianceState::NonCompliant),
        error_message: Some("kustomization infra: path not found".into()),
        ..Default::default()
    };
    client
        .put_json(&api(&c.status_path("cfg")), &status)
        .await
        .unwrap();
    let hb = AgentHeartbeat {
        agent_version: "1".into(),
        ..Default::default()
    };
    client
        .put_json(&api(&c.heartbeat_path()), &hb)
        .await
        .unwrap();
    let etag = list(&client, &c, None, 0)
        .await
        .header("etag")
        .unwrap()
        .to_string();
    let ca_before = std::fs::read_to_string(dir.path().join("tls/ca.crt")).unwrap();
    dp.shutdown().await;

    let (dp, fresh_client) = start(dir.path()).await;
    // The old client (old CA file, old port gone) trusts the restarted server.
    let old_ca_client = Client::new(dp.url(), TOKEN, Some(&ca_before)).unwrap();
    let same = list(&old_ca_client, &c, Some(&etag), 0).await;
    assert_eq!(
        same.status,
        StatusCode::NOT_MODIFIED,
        "ETag survives the restart"
    );
    let l: ConfigurationList = list(&fresh_client, &c, None, 0).await.json().unwrap();
    assert_eq!(
        l.value[0]["properties"][PROTECTED_SETTINGS]["sshPrivateKey"],
        SECRET
    );
    assert_eq!(
        dp.status(&c, "cfg").unwrap(),
        FluxConfigStatus {
            status_updated_at: dp.status(&c, "cfg").unwrap().status_updated_at,
            ..status
        }
    );
    assert_eq!(dp.heartbeat(&c).unwrap().heartbeat, hb);

    // ETags keep growing after the restart.
    create(&fresh_client, &c, "another").await;
    let newer = list(&fresh_client, &c, None, 0)
        .await
        .header("etag")
        .unwrap()
        .to_string();
    let rev = |e: &str| -> u64 {
        e.trim_matches('"')
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(rev(&newer) > rev(&etag), "{newer} after {etag}");
    dp.shutdown().await;

    // A corrupt state file is an error, not an empty data plane.
    std::fs::write(dir.path().join("state.json"), b"{garbage").unwrap();
    assert!(dataplane::start(config(dir.path(), true)).await.is_err());
}

#[tokio::test]
async fn faults_503_429_5xx_partial_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (dp, client) = start(dir.path()).await;
    let c = cluster("arc");
    create(&client, &c, "a").await;
    create(&client, &c, "b").await;
    let faults = dp.faults();

    faults.set_retry_after(7);
    faults.set_outage(Some(Outage::Unavailable));
    let resp = list(&client, &c, None, 0).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.header("retry-after"), Some("7"));
    assert_eq!(error_code(&resp), "ServiceUnavailable");
    // Management keeps working during an agent-side outage.
    assert_eq!(create(&client, &c, "c").await.status, StatusCode::CREATED);
    faults.set_outage(None);

    faults.set_throttle(1.0, 3);
    let resp = client
        .put_json(&api(&c.heartbeat_path()), &AgentHeartbeat::default())
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.header("retry-after"), Some("3"));
    faults.set_throttle(0.0, 1);

    faults.set_error_rate(1.0, 502);
    assert_eq!(
        list(&client, &c, None, 0).await.status,
        StatusCode::BAD_GATEWAY
    );
    faults.set_error_rate(0.0, 500);

    faults.set_partial_listing(1);
    let partial = list(&client, &c, None, 0).await;
    assert_eq!(partial.status, StatusCode::OK);
    assert!(
        partial.header("etag").is_none(),
        "a partial listing is not cacheable"
    );
    let l: ConfigurationList = partial.json().unwrap();
    assert_eq!((l.count, l.value.len()), (3, 2));
    assert!(!l.is_complete());
    faults.set_partial_listing(0);

    faults.set_truncated_listing(true);
    let cut = list(&client, &c, None, 0).await;
    assert_eq!(cut.status, StatusCode::OK);
    assert!(
        cut.json::<ConfigurationList>().is_err(),
        "a cut body does not parse"
    );
    assert!(cut.header("etag").is_none());
    faults.set_truncated_listing(false);

    faults.set_latency(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(list(&client, &c, None, 0).await.status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(300));
    faults.set_latency(Duration::ZERO);

    faults.set_outage(Some(Outage::Refuse));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = client.get(&api(&c.configurations_path())).await;
    assert!(
        refused.is_err(),
        "connection refused while the outage lasts"
    );
    faults.set_outage(None);
    let mut back = false;
    for _ in 0..50 {
        if let Ok(r) = client.get(&api(&c.configurations_path())).await {
            assert_eq!(r.status, StatusCode::OK);
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back, "serving again after the outage");
    assert!(dp.stats().faults_injected >= 3);
    dp.shutdown().await;
}

#[tokio::test]
async fn faults_switch_over_http_and_timed_refusal_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (dp, client) = start(dir.path()).await;
    let c = cluster("arc");
    let f = FaultConfig {
        outage: Some(Outage::Refuse),
        outage_seconds: Some(1),
        ..FaultConfig::default()
    };
    let resp = client.put_json("/_testbed/faults", &f).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(client.get(&api(&c.configurations_path())).await.is_err());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let resp = client.get(&api(&c.configurations_path())).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    let now: FaultConfig = client
        .get("/_testbed/faults")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(now.outage, None);
    assert_eq!(
        client
            .with_token("x")
            .get("/_testbed/faults")
            .await
            .unwrap()
            .status,
        StatusCode::UNAUTHORIZED
    );
    dp.shutdown().await;
}

#[test]
fn debug_output_never_shows_the_token() {
    let dir = Path::new("/tmp");
    let shown = format!("{:?}", config(dir, true));
    assert!(!shown.contains(TOKEN), "{shown}");
}

#[tokio::test]
async fn state_file_is_private_and_ca_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (dp, _client) = start(dir.path()).await;
    let ca = std::fs::read_to_string(dir.path().join("tls/ca.crt")).unwrap();
    assert_eq!(Some(ca.as_str()), dp.ca_pem());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tls/url")).unwrap(),
        dp.url()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("state.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "state file holds secrets: {mode:o}");
    }
    // The certificate also names localhost.
    let by_name = Client::new(
        &format!("https://localhost:{}", dp.addr().port()),
        TOKEN,
        dp.ca_pem(),
    )
    .unwrap();
    let resp = by_name
        .get(&api(&cluster("arc").configurations_path()))
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    // Plain HTTP clients cannot talk to the TLS port.
    let plain = Client::new(&dp.url().replace("https", "http"), TOKEN, None).unwrap();
    assert!(!plain
        .get(&api("/x"))
        .await
        .map(|r| r.status.is_success())
        .unwrap_or(false));
    dp.shutdown().await;
}

#[tokio::test]
async fn many_long_polls_all_wake_on_one_change() {
    let dir = tempfile::tempdir().unwrap();
    let dp = dataplane::start(config(dir.path(), false)).await.unwrap();
    let client = Client::new(dp.url(), TOKEN, None).unwrap();
    let c = cluster("arc");
    let etag = list(&client, &c, None, 0)
        .await
        .header("etag")
        .unwrap()
        .to_string();
    let polls: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            let c = c.clone();
            let etag = etag.clone();
            tokio::spawn(async move { list(&client, &c, Some(&etag), 30).await.status })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    create(&client, &c, "cfg").await;
    for poll in polls {
        let status = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    dp.shutdown().await;
}

#[tokio::test]
async fn cli_entry_point_serves_and_writes_ready_files() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: dataplane::DataplaneArgs,
    }
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let state = dir.path().join("nested/state.json");
    let cli = Cli::try_parse_from([
        "dataplane",
        "--state",
        state.to_str().unwrap(),
        "--token",
        TOKEN,
        "--tls-dir",
        tls.to_str().unwrap(),
        "--fault-withhold-items",
        "1",
    ])
    .unwrap();
    let server = tokio::spawn(dataplane::run(cli.args));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tls.join("ca.crt").exists() {
        assert!(Instant::now() < deadline, "ca.crt never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = std::fs::read_to_string(tls.join("url")).unwrap();
    let ca = std::fs::read_to_string(tls.join("ca.crt")).unwrap();
    let client = Client::new(&url, TOKEN, Some(&ca)).unwrap();
    let c = cluster("arc");
    create(&client, &c, "cfg").await;
    let l: ConfigurationList = list(&client, &c, None, 0).await.json().unwrap();
    assert_eq!(
        (l.count, l.value.len()),
        (1, 0),
        "the flag's partial listing"
    );
    assert!(state.exists());
    server.abort();
}

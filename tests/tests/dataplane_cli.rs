//! `testbed flux` (the az look-alike) against a running testbed data plane, in process.

use base64::Engine as _;
use clap::Parser;
use fluxconfig_api::dataplane::{
    ClusterRef, ClusterType, ConfigurationList, API_VERSION, PROTECTED_SETTINGS,
};
use fluxconfig_api::{ComplianceState, FluxConfigStatus, ProvisioningState};
use fluxconfig_testbed::azcli::{self, Error, FluxArgs, FluxCommand};
use fluxconfig_testbed::dataplane::client::Client;
use fluxconfig_testbed::dataplane::{self, Dataplane, DataplaneConfig};
use serde_json::Value;

const TOKEN: &str = "cli-token";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: FluxCommand,
}

struct Env {
    dp: Dataplane,
    ca_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DataplaneConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("state.json"),
        TOKEN,
    );
    cfg.tls_dir = Some(dir.path().join("tls"));
    let dp = dataplane::start(cfg).await.unwrap();
    Env {
        ca_file: dir.path().join("tls/ca.crt"),
        dp,
        _dir: dir,
    }
}

impl Env {
    /// Runs `testbed flux <line>` (words split on spaces; `{}` stands for one word with spaces).
    async fn flux(&self, line: &str, extra: &[&str]) -> Result<Option<Value>, Error> {
        azcli::execute(self.args(line, extra)).await
    }

    fn args(&self, line: &str, extra: &[&str]) -> FluxArgs {
        let mut words: Vec<String> = std::iter::once("flux".to_string())
            .chain(line.split_whitespace().map(str::to_string))
            .collect();
        words.extend(extra.iter().map(|s| s.to_string()));
        words.extend([
            "--dataplane".into(),
            self.dp.url().to_string(),
            "--token".into(),
            TOKEN.into(),
            "--ca-file".into(),
            self.ca_file.display().to_string(),
        ]);
        let cli = Cli::try_parse_from(&words).unwrap_or_else(|e| panic!("{words:?}: {e}"));
        FluxArgs {
            command: cli.command,
        }
    }

    fn client(&self) -> Client {
        let ca = std::fs::read_to_string(&self.ca_file).unwrap();
        Client::new(self.dp.url(), TOKEN, Some(&ca)).unwrap()
    }
}

fn cluster() -> ClusterRef {
    ClusterRef {
        subscription_id: azcli::DEFAULT_SUBSCRIPTION.into(),
        resource_group: "my-rg".into(),
        cluster_type: ClusterType::ConnectedClusters,
        cluster_name: "my-cluster".into(),
    }
}

const WHERE: &str = "-g my-rg -c my-cluster -t connectedClusters";

async fn agent_listing(env: &Env) -> ConfigurationList {
    let path = format!(
        "{}?api-version={API_VERSION}",
        cluster().configurations_path()
    );
    env.client().get(&path).await.unwrap().json().unwrap()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn create_show_update_list_delete() {
    let env = env().await;
    let created = env
        .flux(
            &format!(
                "create {WHERE} -n cluster-config --namespace cluster-config --scope cluster \
                 -u https://github.com/Azure/gitops-flux2-kustomize-helm-mt --branch main \
                 --https-user me --https-key pat-secret-value --interval 5m \
                 --kustomization name=infra path=./infrastructure prune=true \
                 --kustomization name=apps path=./apps/staging prune=true dependsOn=[\"infra\"] sync_interval=10m"
            ),
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    let text = created.to_string();
    assert!(!text.contains("pat-secret-value") && !text.contains(&b64("pat-secret-value")));
    assert_eq!(created["name"], "cluster-config");
    assert_eq!(created["resourceGroup"], "my-rg");
    assert_eq!(created["provisioningState"], "Creating");
    assert_eq!(created["sourceKind"], "GitRepository");
    assert_eq!(created["gitRepository"]["syncIntervalInSeconds"], 300);
    assert_eq!(created["kustomizations"]["apps"]["dependsOn"][0], "infra");
    assert_eq!(
        created["kustomizations"]["apps"]["syncIntervalInSeconds"],
        600
    );

    // The agent gets the secret, base64-encoded as az sends it.
    let listing = agent_listing(&env).await;
    assert_eq!(listing.count, 1);
    assert_eq!(
        listing.value[0]["properties"][PROTECTED_SETTINGS]["httpsKey"],
        b64("pat-secret-value")
    );

    // What the agent reports is what `show` prints.
    let status = FluxConfigStatus {
        compliance_state: Some(ComplianceState::Compliant),
        provisioning_state: Some(ProvisioningState::Succeeded),
        source_synced_commit_id: Some("main@sha1:4f1bdad".into()),
        ..Default::default()
    };
    let path = format!(
        "{}?api-version={API_VERSION}",
        cluster().status_path("cluster-config")
    );
    env.client().put_json(&path, &status).await.unwrap();
    let shown = env
        .flux(&format!("show {WHERE} -n cluster-config"), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shown["complianceState"], "Compliant");
    assert_eq!(shown["provisioningState"], "Succeeded");
    assert_eq!(shown["sourceSyncedCommitId"], "main@sha1:4f1bdad");
    assert!(shown.get(PROTECTED_SETTINGS).is_none());

    // Update: the new ref replaces the old one, the secret stays.
    let updated = env
        .flux(
            &format!("update {WHERE} -n cluster-config --tag v1.2.0 --suspend"),
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        updated["gitRepository"]["repositoryRef"],
        serde_json::json!({"tag": "v1.2.0"})
    );
    assert_eq!(updated["suspend"], true);
    assert_eq!(updated["provisioningState"], "Updating");
    assert_eq!(
        updated["kustomizations"]["infra"]["path"],
        "./infrastructure"
    );
    let listing = agent_listing(&env).await;
    assert_eq!(
        listing.value[0]["properties"][PROTECTED_SETTINGS]["httpsKey"],
        b64("pat-secret-value")
    );

    let list = env
        .flux(&format!("list {WHERE}"), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    // The entry point the `testbed flux` subcommand calls prints the same and succeeds.
    azcli::run(env.args(&format!("list {WHERE}"), &[]))
        .await
        .unwrap();

    assert!(matches!(
        env.flux(&format!("delete {WHERE} -n cluster-config"), &[])
            .await,
        Err(Error::NotConfirmed)
    ));
    assert_eq!(
        env.flux(&format!("delete {WHERE} -n cluster-config --yes"), &[])
            .await
            .unwrap(),
        None
    );
    assert_eq!(agent_listing(&env).await.count, 0);
    let gone = env
        .flux(&format!("show {WHERE} -n cluster-config"), &[])
        .await;
    let Err(Error::Api { status, code, .. }) = gone else {
        panic!("expected an API error, got {gone:?}");
    };
    assert_eq!((status, code.as_str()), (404, "ResourceNotFound"));
    assert!(matches!(
        env.flux(&format!("update {WHERE} -n cluster-config --branch x"), &[])
            .await,
        Err(Error::NotFound(_))
    ));
    env.dp.shutdown().await;
}

#[tokio::test]
async fn key_files_and_other_source_kinds() {
    let env = env().await;
    let key_path = env._dir.path().join("id_ed25519");
    std::fs::write(&key_path, "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n").unwrap();
    let hosts_path = env._dir.path().join("known_hosts");
    std::fs::write(&hosts_path, "github.com ssh-ed25519 AAAA\n").unwrap();
    let ssh = env
        .flux(
            &format!(
                "create {WHERE} -n ssh -u ssh://git@github.com/org/repo --branch main \
                 --ssh-private-key-file {} --known-hosts-file {}",
                key_path.display(),
                hosts_path.display()
            ),
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ssh["gitRepository"]["sshKnownHosts"],
        b64("github.com ssh-ed25519 AAAA\n")
    );
    assert!(!ssh
        .to_string()
        .contains(&b64("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n")));

    let bucket = env
        .flux(
            &format!(
                "create {WHERE} -n b --kind bucket -u https://s3.example.com --bucket-name cfg \
                 --access-key AK --secret-key SK-secret --insecure false --timeout 1m"
            ),
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bucket["sourceKind"], "Bucket");
    assert_eq!(bucket["bucket"]["bucketName"], "cfg");
    assert_eq!(bucket["bucket"]["insecure"], false);
    assert_eq!(bucket["bucket"]["timeoutInSeconds"], 60);
    assert!(!bucket.to_string().contains(&b64("SK-secret")));

    let blob = env
        .flux(
            &format!(
                "create {WHERE} -n blob --kind azblob -u https://acct.blob.core.windows.net \
                 --container-name c --sp-client-id id --tenant-id t --sp-client-secret shh"
            ),
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(blob["azureBlob"]["servicePrincipal"]["clientId"], "id");

    let oci = env
        .flux(
            &format!(
                "create {WHERE} -n oci --kind oci -u oci://ghcr.io/org/manifests --semver >=1.0.0 \
                 --layer-selector-operation copy"
            ),
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(oci["ociRepository"]["repositoryRef"]["semver"], ">=1.0.0");
    assert_eq!(oci["sourceKind"], "OCIRepository");

    let listing = agent_listing(&env).await;
    let by_name = |n: &str| {
        listing
            .value
            .iter()
            .find(|v| v["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        by_name("ssh")["properties"][PROTECTED_SETTINGS]["sshPrivateKey"],
        b64("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n")
    );
    assert_eq!(
        by_name("b")["properties"][PROTECTED_SETTINGS]["bucketSecretKey"],
        b64("SK-secret")
    );
    assert_eq!(
        by_name("blob")["properties"][PROTECTED_SETTINGS]["clientSecret"],
        b64("shh")
    );

    // Flag errors name the flag.
    let wrong = env
        .flux(
            &format!("create {WHERE} -n x --kind oci --branch main"),
            &[],
        )
        .await;
    let Err(Error::Flag(e)) = wrong else {
        panic!("expected a flag error, got {wrong:?}");
    };
    assert_eq!(e.field, "--branch");
    let bad = env
        .flux(
            &format!("create {WHERE} -n x -u https://h/r --kustomization path=./x"),
            &[],
        )
        .await;
    let Err(Error::Flag(e)) = bad else {
        panic!("expected a flag error, got {bad:?}");
    };
    assert_eq!(e.field, "--kustomization name");
    env.dp.shutdown().await;
}

#[tokio::test]
async fn wrong_token_and_missing_ca_are_reported() {
    let env = env().await;
    let words = [
        "flux",
        "list",
        "-g",
        "g",
        "-c",
        "c",
        "-t",
        "managedClusters",
        "--dataplane",
    ];
    let mut with_bad_token: Vec<String> = words.iter().map(|s| s.to_string()).collect();
    with_bad_token.extend([
        env.dp.url().to_string(),
        "--token".into(),
        "nope".into(),
        "--ca-file".into(),
        env.ca_file.display().to_string(),
    ]);
    let cli = Cli::try_parse_from(&with_bad_token).unwrap();
    let r = azcli::execute(FluxArgs {
        command: cli.command,
    })
    .await;
    let Err(Error::Api { status, code, .. }) = r else {
        panic!("expected 401, got {r:?}");
    };
    assert_eq!((status, code.as_str()), (401, "Unauthorized"));

    let mut no_ca: Vec<String> = words.iter().map(|s| s.to_string()).collect();
    no_ca.extend([env.dp.url().to_string(), "--token".into(), TOKEN.into()]);
    let cli = Cli::try_parse_from(&no_ca).unwrap();
    assert!(azcli::execute(FluxArgs {
        command: cli.command
    })
    .await
    .is_err());
    env.dp.shutdown().await;
}

//! `testbed flux create|update|show|list|delete`: the `az k8s-configuration flux` look-alike
//! that manages configurations on the testbed data plane. Output is az-shaped JSON (resource
//! properties flattened next to `id`/`name`/`type`) and never holds protected values: the data
//! plane does not return them.

pub mod config;
pub mod kustomization;

use std::path::PathBuf;

use fluxconfig_api::dataplane::{
    ClusterRef, ClusterType, ErrorResponse, FluxConfigurationResource,
    FluxConfigurationResourceList, API_VERSION, PROTECTED_SETTINGS,
};
use fluxconfig_api::SourceKind;
use hyper::StatusCode;
use serde_json::{json, Map, Value};

use crate::dataplane::client::{Client, ClientError, ClientResponse};

pub use config::{ConfigArgs, KindArg, ScopeArg};
pub use kustomization::{parse_duration, parse_kustomization, FlagError};

/// Used when `--subscription` is not given.
pub const DEFAULT_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Flag(#[from] FlagError),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An error answer of the data plane, printed as az prints ARM errors.
    #[error("({code}) {message}\nCode: {code}\nStatus: {status}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the data plane: {0}")]
    Decode(String),
    #[error("encoding: {0}")]
    Encode(serde_json::Error),
    #[error("the configuration '{0}' does not exist; use `create`")]
    NotFound(String),
    #[error("deleting needs confirmation: pass --yes")]
    NotConfirmed,
}

/// Where the data plane is.
#[derive(clap::Args, Clone)]
pub struct ConnectionArgs {
    /// Data-plane base URL, e.g. https://127.0.0.1:8443.
    #[arg(long, env = "TESTBED_DATAPLANE_URL")]
    pub dataplane: String,
    #[arg(long, env = "TESTBED_DATAPLANE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// CA certificate (PEM) to trust for an https data plane.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    #[arg(long, default_value = DEFAULT_SUBSCRIPTION)]
    pub subscription: String,
}

impl std::fmt::Debug for ConnectionArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionArgs")
            .field("dataplane", &self.dataplane)
            .field("ca_file", &self.ca_file)
            .field("subscription", &self.subscription)
            .finish_non_exhaustive()
    }
}

fn parse_cluster_type(s: &str) -> Result<ClusterType, String> {
    ClusterType::parse(s).ok_or_else(|| "expected connectedClusters or managedClusters".into())
}

/// Which cluster.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    #[arg(short = 'g', long)]
    pub resource_group: String,
    #[arg(short = 'c', long)]
    pub cluster_name: String,
    /// connectedClusters (Arc) or managedClusters (AKS).
    #[arg(short = 't', long, value_parser = parse_cluster_type)]
    pub cluster_type: ClusterType,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CreateArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(short = 'n', long)]
    pub name: String,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct OneArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(short = 'n', long)]
    pub name: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub one: OneArgs,
    /// Do not prompt for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum FluxCommand {
    /// Create (or replace) a flux configuration.
    Create(CreateArgs),
    /// Change the given properties of an existing configuration.
    Update(CreateArgs),
    /// Show a configuration with the status the agent last reported.
    Show(OneArgs),
    /// List the configurations of a cluster.
    List(ListArgs),
    /// Delete a configuration.
    Delete(DeleteArgs),
}

/// `testbed flux …`
#[derive(clap::Args, Debug, Clone)]
pub struct FluxArgs {
    #[command(subcommand)]
    pub command: FluxCommand,
}

/// Entry point of `testbed flux`: runs the command and prints its JSON output (if any).
pub async fn run(args: FluxArgs) -> Result<(), Error> {
    if let Some(output) = execute(args).await? {
        let text = serde_json::to_string_pretty(&output).map_err(Error::Encode)?;
        println!("{text}");
    }
    Ok(())
}

/// Runs the command and returns what `run` would print.
pub async fn execute(args: FluxArgs) -> Result<Option<Value>, Error> {
    match args.command {
        FluxCommand::Create(a) => create(a).await.map(Some),
        FluxCommand::Update(a) => update(a).await.map(Some),
        FluxCommand::Show(a) => {
            let (client, cluster) = connect(&a.connection, &a.cluster)?;
            let path = api(&cluster.management_path(Some(&a.name)));
            let resp = client.get(&path).await?;
            if resp.status == StatusCode::NOT_FOUND {
                return Err(api_error(&resp));
            }
            let resource: FluxConfigurationResource = decode(&resp)?;
            Ok(Some(az_view(&resource, &cluster)))
        }
        FluxCommand::List(a) => {
            let (client, cluster) = connect(&a.connection, &a.cluster)?;
            let resp = client.get(&api(&cluster.management_path(None))).await?;
            let list: FluxConfigurationResourceList = decode(&resp)?;
            let items = list
                .value
                .iter()
                .map(|r| az_view(r, &cluster))
                .collect::<Vec<_>>();
            Ok(Some(Value::Array(items)))
        }
        FluxCommand::Delete(a) => {
            if !a.yes {
                return Err(Error::NotConfirmed);
            }
            let (client, cluster) = connect(&a.one.connection, &a.one.cluster)?;
            let resp = client
                .delete(&api(&cluster.management_path(Some(&a.one.name))))
                .await?;
            if !resp.status.is_success() {
                return Err(api_error(&resp));
            }
            Ok(None)
        }
    }
}

fn api(path: &str) -> String {
    format!("{path}?api-version={API_VERSION}")
}

fn connect(conn: &ConnectionArgs, cluster: &ClusterArgs) -> Result<(Client, ClusterRef), Error> {
    let ca = match &conn.ca_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let client = Client::new(&conn.dataplane, &conn.token, ca.as_deref())?;
    let cluster = ClusterRef {
        subscription_id: conn.subscription.clone(),
        resource_group: cluster.resource_group.clone(),
        cluster_type: cluster.cluster_type,
        cluster_name: cluster.cluster_name.clone(),
    };
    Ok((client, cluster))
}

fn api_error(resp: &ClientResponse) -> Error {
    match resp.json::<ErrorResponse>() {
        Ok(e) => Error::Api {
            status: resp.status.as_u16(),
            code: e.error.code,
            message: e.error.message,
        },
        Err(_) => Error::Api {
            status: resp.status.as_u16(),
            code: resp
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .replace(' ', ""),
            message: String::from_utf8_lossy(&resp.body)
                .chars()
                .take(200)
                .collect(),
        },
    }
}

fn decode<T: serde::de::DeserializeOwned>(resp: &ClientResponse) -> Result<T, Error> {
    if !resp.status.is_success() {
        return Err(api_error(resp));
    }
    resp.json().map_err(|e| Error::Decode(e.to_string()))
}

/// az prints ARM resources with `properties` flattened beside `id`, `name`, `type` and adds
/// `resourceGroup`.
pub fn az_view(resource: &FluxConfigurationResource, cluster: &ClusterRef) -> Value {
    let mut out = Map::new();
    if let Value::Object(props) = &resource.properties {
        out.extend(props.clone());
    }
    // The data plane never returns them; make sure they cannot be printed either way.
    out.remove(PROTECTED_SETTINGS);
    // az prints every read-only property, null (or empty) when the extension has not said.
    for key in [
        "complianceState",
        "provisioningState",
        "sourceSyncedCommitId",
        "sourceUpdatedAt",
        "statusUpdatedAt",
        "repositoryPublicKey",
        "errorMessage",
    ] {
        out.entry(key).or_insert(Value::Null);
    }
    out.entry("statuses").or_insert_with(|| json!([]));
    out.insert("id".into(), json!(resource.id));
    out.insert("name".into(), json!(resource.name));
    out.insert("type".into(), json!(resource.type_));
    out.insert("resourceGroup".into(), json!(cluster.resource_group));
    Value::Object(out)
}

async fn put(
    client: &Client,
    cluster: &ClusterRef,
    name: &str,
    properties: Map<String, Value>,
    protected: Option<std::collections::BTreeMap<String, String>>,
) -> Result<Value, Error> {
    let mut properties = properties;
    if let Some(p) = protected {
        properties.insert(PROTECTED_SETTINGS.into(), json!(p));
    }
    let body = json!({ "properties": properties });
    let resp = client
        .put_json(&api(&cluster.management_path(Some(name))), &body)
        .await?;
    let resource: FluxConfigurationResource = decode(&resp)?;
    Ok(az_view(&resource, cluster))
}

async fn create(a: CreateArgs) -> Result<Value, Error> {
    let (client, cluster) = connect(&a.connection, &a.cluster)?;
    let built = a.config.build(None)?;
    // az's defaults, written out so the stored configuration says what it means.
    let mut properties = Map::new();
    properties.insert("scope".into(), json!("cluster"));
    properties.insert("namespace".into(), json!("default"));
    properties.insert("sourceKind".into(), json!(built.kind.as_str()));
    properties.insert("suspend".into(), json!(false));
    config::merge(&mut properties, built.properties);
    put(&client, &cluster, &a.name, properties, built.protected).await
}

async fn update(a: CreateArgs) -> Result<Value, Error> {
    let (client, cluster) = connect(&a.connection, &a.cluster)?;
    let resp = client
        .get(&api(&cluster.management_path(Some(&a.name))))
        .await?;
    if resp.status == StatusCode::NOT_FOUND {
        return Err(Error::NotFound(a.name));
    }
    let current: FluxConfigurationResource = decode(&resp)?;
    let Value::Object(mut properties) = current.properties else {
        return Err(Error::Decode("properties is not an object".into()));
    };
    let kind = properties
        .get("sourceKind")
        .cloned()
        .and_then(|v| serde_json::from_value::<SourceKind>(v).ok());
    let built = a.config.build(kind)?;
    config::merge(&mut properties, built.properties);
    put(&client, &cluster, &a.name, properties, built.protected).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: FluxCommand,
    }

    fn parse(line: &str) -> FluxCommand {
        let words = std::iter::once("flux").chain(line.split_whitespace());
        Cli::try_parse_from(words)
            .unwrap_or_else(|e| panic!("{line}: {e}"))
            .command
    }

    #[test]
    fn az_command_line_shape() {
        let cmd = parse(
            "create -g my-rg -c my-cluster -t connectedClusters -n cluster-config \
             --namespace cluster-config --scope cluster -u https://github.com/Azure/gitops-flux2-kustomize-helm-mt \
             --branch main --kustomization name=infra path=./infrastructure prune=true \
             --kustomization name=apps path=./apps/staging prune=true dependsOn=[\"infra\"] \
             --dataplane https://127.0.0.1:1 --token t --ca-file /tmp/ca.crt --suspend",
        );
        let FluxCommand::Create(a) = cmd else {
            panic!("not create");
        };
        assert_eq!(a.cluster.cluster_type, ClusterType::ConnectedClusters);
        assert_eq!(a.config.kustomization.0.len(), 2);
        assert_eq!(
            a.config.kustomization.0[1],
            vec![
                "name=apps".to_string(),
                "path=./apps/staging".into(),
                "prune=true".into(),
                "dependsOn=[\"infra\"]".into()
            ]
        );
        assert_eq!(a.config.suspend, Some(true));
        let built = a.config.build(None).unwrap();
        assert_eq!(
            built.properties["kustomizations"]["apps"]["dependsOn"],
            json!(["infra"])
        );
    }

    #[test]
    fn suspend_takes_an_optional_value_and_delete_takes_yes() {
        let FluxCommand::Update(a) = parse(
            "update -g g -c c -t managedClusters -n x --suspend false --dataplane http://h:1 --token t",
        ) else {
            panic!("not update");
        };
        assert_eq!(a.config.suspend, Some(false));
        let FluxCommand::Delete(d) = parse(
            "delete -g g -c c -t managedClusters -n x --yes --dataplane http://h:1 --token t",
        ) else {
            panic!("not delete");
        };
        assert!(d.yes);
    }

    #[test]
    fn bad_cluster_type_is_rejected() {
        let words = "flux show -g g -c c -t clusters -n x --dataplane http://h:1 --token t";
        assert!(Cli::try_parse_from(words.split_whitespace()).is_err());
    }

    #[test]
    fn az_view_flattens_and_hides_secrets() {
        let r = FluxConfigurationResource {
            id: Some("/x".into()),
            name: Some("n".into()),
            type_: Some("t".into()),
            properties: json!({"complianceState": "Compliant", PROTECTED_SETTINGS: {"k": "v"}}),
        };
        let c = ClusterRef {
            subscription_id: "s".into(),
            resource_group: "rg".into(),
            cluster_type: ClusterType::ManagedClusters,
            cluster_name: "c".into(),
        };
        let v = az_view(&r, &c);
        assert_eq!(v["complianceState"], "Compliant");
        assert_eq!(v["statuses"], json!([]));
        assert!(v["errorMessage"].is_null() && v.get("errorMessage").is_some());
        assert_eq!(v["resourceGroup"], "rg");
        assert!(v.get(PROTECTED_SETTINGS).is_none());
    }
}

//! Command line and environment of `fluxconfig-agent run`, validated into an [`AgentConfig`].
//!
//! Every flag can also be set through a `FLUXCONFIG_AGENT_*` environment variable so the Helm
//! chart needs no command line. Choices:
//! - `--region R` is shorthand for `--dataplane-url https://R.dp.kubernetesconfiguration.azure.com`;
//!   exactly one of the two must be given.
//! - The data-plane URL must be `https://`; plain `http://` is accepted only for loopback hosts
//!   (tests), because the bearer token travels with every request.
//! - Exactly one of `--token-file` and `--token` (tests only); the token's value is hidden from
//!   `--help` and from every `Debug` output.
//! - `--long-poll-secs 0` turns long polling off (plain polling every `--poll-interval-secs`);
//!   larger values are capped at the data plane's [`MAX_WAIT_SECONDS`].
//! - `--https-proxy` (or `HTTPS_PROXY`, read once here) sends every data-plane request through
//!   that forward proxy, `user:password@` becoming `Proxy-Authorization`; hosts in `--no-proxy`
//!   (`NO_PROXY`) bypass it. Without it the HTTP client falls back to the proxy variables as
//!   reqwest reads them. The proxy's credentials never appear in `Debug` output or errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use fluxconfig_api::dataplane::{ClusterRef, ClusterType, MAX_WAIT_SECONDS};
use reqwest::Url;

use crate::telemetry::LogLevel;
use crate::token::TokenSource;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("give either --dataplane-url or --region")]
    NoDataPlane,
    #[error("--dataplane-url and --region are mutually exclusive")]
    BothDataPlanes,
    #[error("--dataplane-url {0:?} is not a valid URL")]
    BadUrl(String),
    #[error("--dataplane-url must use https (http only for localhost), got {0:?}")]
    InsecureUrl(String),
    #[error("--region {0:?} is not a valid Azure region name")]
    BadRegion(String),
    #[error("{flag} {value:?} is not valid: {reason}")]
    BadIdentifier {
        flag: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("give either --token-file or --token")]
    NoToken,
    #[error("--token-file and --token are mutually exclusive")]
    BothTokens,
    #[error("--poll-interval-secs must be at least 1")]
    PollInterval,
    #[error("--https-proxy {0:?} is not an http:// or https:// URL with a host")]
    BadProxy(String),
}

/// `fluxconfig-agent run` flags.
#[derive(Args, Clone)]
pub struct RunArgs {
    /// Base URL of the regional data plane, e.g. `https://westeurope.dp.kubernetesconfiguration.azure.com`.
    #[arg(long, env = "FLUXCONFIG_AGENT_DATAPLANE_URL")]
    pub dataplane_url: Option<String>,
    /// Azure region; the data-plane URL is derived from it.
    #[arg(long, env = "FLUXCONFIG_AGENT_REGION")]
    pub region: Option<String>,
    #[arg(long, env = "FLUXCONFIG_AGENT_SUBSCRIPTION_ID")]
    pub subscription_id: String,
    #[arg(long, env = "FLUXCONFIG_AGENT_RESOURCE_GROUP")]
    pub resource_group: String,
    /// `connectedClusters` (Arc) or `managedClusters` (AKS).
    #[arg(long, env = "FLUXCONFIG_AGENT_CLUSTER_TYPE", value_parser = parse_cluster_type)]
    pub cluster_type: ClusterType,
    #[arg(long, env = "FLUXCONFIG_AGENT_CLUSTER_NAME")]
    pub cluster_name: String,
    /// File holding the bearer token; re-read whenever it changes.
    #[arg(long, env = "FLUXCONFIG_AGENT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The bearer token itself (tests only).
    #[arg(long, env = "FLUXCONFIG_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM bundle trusted in addition to the built-in roots for the data plane.
    #[arg(long, env = "FLUXCONFIG_AGENT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM CA of a TLS-intercepting proxy (HTTPS_PROXY/NO_PROXY are read from the environment).
    #[arg(long, env = "FLUXCONFIG_AGENT_PROXY_CA_FILE")]
    pub proxy_ca_file: Option<PathBuf>,
    /// Forward proxy for data-plane requests, e.g. `http://user:password@proxy:3128`.
    #[arg(long, env = "HTTPS_PROXY", hide_env_values = true)]
    pub https_proxy: Option<String>,
    /// Comma-separated hosts, domains and CIDRs that bypass `--https-proxy`.
    #[arg(long, env = "NO_PROXY")]
    pub no_proxy: Option<String>,
    /// Seconds between polls when long polling is off or answered early.
    #[arg(
        long,
        env = "FLUXCONFIG_AGENT_POLL_INTERVAL_SECS",
        default_value_t = 30
    )]
    pub poll_interval_secs: u64,
    /// Seconds the data plane may hold a listing open waiting for a change (0: no long polling).
    #[arg(long, env = "FLUXCONFIG_AGENT_LONG_POLL_SECS", default_value_t = 50)]
    pub long_poll_secs: u64,
    /// Seconds between full status reports and heartbeats.
    #[arg(
        long,
        env = "FLUXCONFIG_AGENT_REPORT_INTERVAL_SECS",
        default_value_t = 60
    )]
    pub report_interval_secs: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "FLUXCONFIG_AGENT_METRICS_ADDR",
        default_value = "0.0.0.0:8081"
    )]
    pub metrics_addr: SocketAddr,
    /// `info` or `error`; RUST_LOG, when set, takes precedence.
    #[arg(
        long,
        value_enum,
        default_value = "info",
        env = "FLUXCONFIG_AGENT_LOG_LEVEL"
    )]
    pub log_level: LogLevel,
}

impl std::fmt::Debug for RunArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunArgs")
            .field("dataplane_url", &self.dataplane_url)
            .field("region", &self.region)
            .field("cluster_name", &self.cluster_name)
            .field("token_file", &self.token_file)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "https_proxy",
                &self
                    .https_proxy
                    .as_deref()
                    .map(crate::client::redact_credentials),
            )
            .field("no_proxy", &self.no_proxy)
            .finish_non_exhaustive()
    }
}

fn parse_cluster_type(s: &str) -> Result<ClusterType, String> {
    ClusterType::parse(s)
        .ok_or_else(|| format!("{s:?} is not connectedClusters or managedClusters"))
}

/// A forward proxy URL; `Debug` and `Display` hide its credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl(Url);

impl ProxyUrl {
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::BadProxy(crate::client::redact_credentials(raw));
        let url = Url::parse(raw).map_err(|_| bad())?;
        if url.host_str().is_none() || !matches!(url.scheme(), "http" | "https") {
            return Err(bad());
        }
        Ok(ProxyUrl(url))
    }

    /// The full URL, credentials included, for building the HTTP client only.
    pub fn expose(&self) -> &Url {
        &self.0
    }
}

impl std::fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::client::redact_credentials(self.0.as_str()))
    }
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

/// Everything [`crate::run::run`] needs; build it with [`AgentConfig::from_args`] or by hand in
/// tests.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub dataplane_url: Url,
    pub cluster: ClusterRef,
    pub token: TokenSource,
    pub ca_file: Option<PathBuf>,
    pub proxy_ca_file: Option<PathBuf>,
    /// `None`: the proxy environment variables as reqwest reads them.
    pub proxy: Option<ProxyUrl>,
    /// `NO_PROXY` syntax; applies to [`AgentConfig::proxy`].
    pub no_proxy: Option<String>,
    pub poll_interval: Duration,
    /// `None`: no long polling.
    pub long_poll: Option<Duration>,
    pub report_interval: Duration,
    /// How long a status change waits for further changes before it is reported.
    pub report_debounce: Duration,
    /// Longest wait between retries after a failed poll (Retry-After may ask for more).
    pub max_backoff: Duration,
    pub metrics_addr: SocketAddr,
}

impl AgentConfig {
    /// A configuration with the defaults of the command line.
    pub fn new(dataplane_url: Url, cluster: ClusterRef, token: TokenSource) -> Self {
        AgentConfig {
            dataplane_url,
            cluster,
            token,
            ca_file: None,
            proxy_ca_file: None,
            proxy: None,
            no_proxy: None,
            poll_interval: Duration::from_secs(30),
            long_poll: Some(Duration::from_secs(50)),
            report_interval: Duration::from_secs(60),
            report_debounce: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 8081)),
        }
    }

    pub fn from_args(args: &RunArgs) -> Result<Self, ConfigError> {
        let url = match (&args.dataplane_url, &args.region) {
            (Some(_), Some(_)) => return Err(ConfigError::BothDataPlanes),
            (None, None) => return Err(ConfigError::NoDataPlane),
            (Some(u), None) => parse_dataplane_url(u)?,
            (None, Some(r)) => region_url(r)?,
        };
        let cluster = ClusterRef {
            subscription_id: identifier("--subscription-id", &args.subscription_id)?,
            resource_group: identifier("--resource-group", &args.resource_group)?,
            cluster_type: args.cluster_type,
            cluster_name: identifier("--cluster-name", &args.cluster_name)?,
        };
        let token = match (&args.token_file, &args.token) {
            (Some(_), Some(_)) => return Err(ConfigError::BothTokens),
            (None, None) => return Err(ConfigError::NoToken),
            (Some(f), None) => TokenSource::File(f.clone()),
            (None, Some(t)) => TokenSource::Static(t.clone()),
        };
        if args.poll_interval_secs == 0 {
            return Err(ConfigError::PollInterval);
        }
        let mut config = AgentConfig::new(url, cluster, token);
        config.ca_file = args.ca_file.clone();
        config.proxy_ca_file = args.proxy_ca_file.clone();
        config.proxy = args
            .https_proxy
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .map(|p| ProxyUrl::parse(p.trim()))
            .transpose()?;
        config.no_proxy = args.no_proxy.clone().filter(|n| !n.trim().is_empty());
        config.poll_interval = Duration::from_secs(args.poll_interval_secs);
        config.long_poll = (args.long_poll_secs > 0)
            .then(|| Duration::from_secs(args.long_poll_secs.min(MAX_WAIT_SECONDS)));
        config.report_interval = Duration::from_secs(args.report_interval_secs.max(1));
        config.metrics_addr = args.metrics_addr;
        Ok(config)
    }
}

/// Parses and checks a data-plane base URL.
pub fn parse_dataplane_url(raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|_| ConfigError::BadUrl(raw.to_string()))?;
    if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::BadUrl(raw.to_string()));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        _ => Err(ConfigError::InsecureUrl(raw.to_string())),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `westeurope` → `https://westeurope.dp.kubernetesconfiguration.azure.com`.
pub fn region_url(region: &str) -> Result<Url, ConfigError> {
    let ok = !region.is_empty()
        && region.len() <= 63
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && region.starts_with(|c: char| c.is_ascii_lowercase());
    if !ok {
        return Err(ConfigError::BadRegion(region.to_string()));
    }
    Url::parse(&format!(
        "https://{region}.dp.kubernetesconfiguration.azure.com"
    ))
    .map_err(|_| ConfigError::BadRegion(region.to_string()))
}

/// ARM path segments: the value goes into URL paths unescaped, so reject what would change them.
fn identifier(flag: &'static str, value: &str) -> Result<String, ConfigError> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > 256 {
        Some("is longer than 256 characters")
    } else if value
        .chars()
        .any(|c| matches!(c, '/' | '?' | '#' | '%' | '\\') || c.is_whitespace() || c.is_control())
    {
        Some("must not contain '/', '?', '#', '%', '\\' or whitespace")
    } else if value == "." || value == ".." {
        Some("must not be a relative path segment")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ConfigError::BadIdentifier {
            flag,
            value: value.to_string(),
            reason,
        }),
        None => Ok(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<AgentConfig, ConfigError> {
        let mut all = vec!["fluxconfig-agent"];
        all.extend_from_slice(args);
        let cli = Cli::try_parse_from(all).expect("clap parses");
        AgentConfig::from_args(&cli.run)
    }

    const BASE: [&str; 8] = [
        "--subscription-id",
        "sub",
        "--resource-group",
        "rg",
        "--cluster-type",
        "connectedClusters",
        "--cluster-name",
        "arc",
    ];

    #[test]
    fn region_becomes_url() {
        let mut a = BASE.to_vec();
        a.extend(["--region", "westeurope", "--token", "t0k3n"]);
        let c = parse(&a).expect("valid");
        assert_eq!(
            c.dataplane_url.as_str(),
            "https://westeurope.dp.kubernetesconfiguration.azure.com/"
        );
        assert_eq!(c.cluster.cluster_type, ClusterType::ConnectedClusters);
        assert_eq!(c.long_poll, Some(Duration::from_secs(50)));
        assert!(!format!("{c:?}").contains("t0k3n"));
    }

    #[test]
    fn rejects_bad_combinations() {
        let mut a = BASE.to_vec();
        a.extend(["--token", "t"]);
        assert_eq!(parse(&a).err(), Some(ConfigError::NoDataPlane));
        let mut a = BASE.to_vec();
        a.extend([
            "--region",
            "x",
            "--dataplane-url",
            "https://h",
            "--token",
            "t",
        ]);
        assert_eq!(parse(&a).err(), Some(ConfigError::BothDataPlanes));
        let mut a = BASE.to_vec();
        a.extend(["--dataplane-url", "https://h"]);
        assert_eq!(parse(&a).err(), Some(ConfigError::NoToken));
        let mut a = BASE.to_vec();
        a.extend(["--dataplane-url", "http://dp.example.com", "--token", "t"]);
        assert!(matches!(parse(&a), Err(ConfigError::InsecureUrl(_))));
        let mut a = BASE.to_vec();
        a.extend(["--dataplane-url", "http://127.0.0.1:9000", "--token", "t"]);
        assert!(parse(&a).is_ok());
        let mut a = BASE.to_vec();
        a.extend(["--region", "West Europe", "--token", "t"]);
        assert!(matches!(parse(&a), Err(ConfigError::BadRegion(_))));
        let mut a = BASE.to_vec();
        a[7] = "a/b";
        a.extend(["--region", "x", "--token", "t"]);
        assert!(matches!(
            parse(&a),
            Err(ConfigError::BadIdentifier {
                flag: "--cluster-name",
                ..
            })
        ));
    }

    #[test]
    fn long_poll_is_capped_and_can_be_disabled() {
        let mut a = BASE.to_vec();
        a.extend(["--region", "x", "--token", "t", "--long-poll-secs", "600"]);
        assert_eq!(
            parse(&a).expect("valid").long_poll,
            Some(Duration::from_secs(MAX_WAIT_SECONDS))
        );
        let mut a = BASE.to_vec();
        a.extend(["--region", "x", "--token", "t", "--long-poll-secs", "0"]);
        assert_eq!(parse(&a).expect("valid").long_poll, None);
    }

    #[test]
    fn proxy_flag_is_parsed_and_its_password_hidden() {
        let mut a = BASE.to_vec();
        a.extend([
            "--region",
            "x",
            "--token",
            "t",
            "--https-proxy",
            "http://agent:pr0xy-pw@127.0.0.1:3128",
            "--no-proxy",
            "localhost,.svc",
        ]);
        let c = parse(&a).expect("valid");
        let proxy = c.proxy.as_ref().expect("proxy");
        assert_eq!(proxy.expose().password(), Some("pr0xy-pw"));
        assert_eq!(c.no_proxy.as_deref(), Some("localhost,.svc"));
        assert!(!format!("{c:?} {proxy}").contains("pr0xy-pw"));
        let mut a = BASE.to_vec();
        a.extend([
            "--region",
            "x",
            "--token",
            "t",
            "--https-proxy",
            "socks5://u:pw@h:1",
        ]);
        let err = parse(&a).expect_err("unsupported scheme");
        assert!(matches!(err, ConfigError::BadProxy(_)));
        assert!(!err.to_string().contains("pw@"), "{err}");
    }

    #[test]
    fn unknown_cluster_type_is_a_clap_error() {
        let mut a = vec!["fluxconfig-agent"];
        a.extend(BASE);
        a[6] = "clusters";
        assert!(Cli::try_parse_from(a).is_err());
    }
}

//! The data-plane HTTP client: listing (ETag + long poll), status reports and heartbeats.
//!
//! TLS is rustls only, with the built-in web PKI roots plus `--ca-file` and `--proxy-ca-file`.
//! The proxy is [`AgentConfig::proxy`] (with its `NO_PROXY` list) when set, otherwise
//! `HTTPS_PROXY`/`NO_PROXY` as reqwest reads them when the client is built; credentials in the
//! proxy URL become `Proxy-Authorization`. The bearer token travels only in the
//! `Authorization` header, so URLs in error messages never carry it; proxy credentials that a
//! message might echo are scrubbed by [`redact_credentials`].
//!
//! Error classes: connect/timeout/body errors, 5xx, 408 and 429 are retryable; every other
//! status, an undecodable body and a body over the limit are not (the loop still retries them,
//! just at the slowest pace). `Retry-After` (seconds or HTTP date) is kept, capped at
//! [`MAX_RETRY_AFTER`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fluxconfig_api::dataplane::{
    AgentHeartbeat, ClusterRef, ConfigurationList, ErrorResponse, StatusReport, API_VERSION,
    MAX_LIST_BYTES, MAX_REQUEST_BYTES,
};
use reqwest::header::{HeaderMap, AUTHORIZATION, ETAG, IF_NONE_MATCH, RETRY_AFTER};
use reqwest::{Response, StatusCode, Url};
use serde::Serialize;

use crate::config::AgentConfig;
use crate::token::{TokenError, TokenProvider};

/// Longest `Retry-After` honoured; a misbehaving server must not park the agent for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of a request that does not long-poll; a long poll gets its wait on top.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Server error messages are logged; keep them to a sane length.
const MAX_MESSAGE_CHARS: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("reading CA bundle {path}: {message}")]
    Ca { path: String, message: String },
    #[error("building the HTTP client: {0}")]
    Build(String),
    #[error("building the URL for {0}")]
    Url(String),
    #[error("configuration name {0:?} cannot be used in a URL path")]
    UnsafeName(String),
    #[error("{operation}: {message}")]
    Transport {
        operation: &'static str,
        timeout: bool,
        message: String,
    },
    #[error("{operation}: HTTP {status}{}", describe(.code, .message))]
    Http {
        operation: &'static str,
        status: u16,
        code: Option<String>,
        message: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("{operation}: body larger than {limit} bytes")]
    TooLarge {
        operation: &'static str,
        limit: usize,
    },
    #[error("{operation}: malformed body: {message}")]
    Decode {
        operation: &'static str,
        message: String,
    },
}

fn describe(code: &Option<String>, message: &Option<String>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" {c}: {m}"),
        (Some(c), None) => format!(" {c}"),
        (None, Some(m)) => format!(": {m}"),
        (None, None) => String::new(),
    }
}

impl ClientError {
    /// Whether the failure is likely to go away by itself soon.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Http { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Token(_) => "token",
            ClientError::Ca { .. } | ClientError::Build(_) | ClientError::Url(_) => "setup",
            ClientError::UnsafeName(_) => "name",
            ClientError::Transport { timeout: true, .. } => "timeout",
            ClientError::Transport { .. } => "transport",
            ClientError::Http { .. } => "http",
            ClientError::TooLarge { .. } => "too_large",
            ClientError::Decode { .. } => "decode",
        }
    }
}

/// The answer to a listing.
#[derive(Debug, Clone, PartialEq)]
pub enum ListOutcome {
    /// 304: nothing changed since the ETag that was sent.
    NotModified,
    /// 200 with a body that parsed.
    Listing {
        list: ConfigurationList,
        etag: Option<String>,
    },
}

#[derive(Clone, Debug)]
pub struct DataPlaneClient {
    http: reqwest::Client,
    base: Url,
    cluster: ClusterRef,
    token: Arc<TokenProvider>,
    max_list_bytes: usize,
}

impl DataPlaneClient {
    pub fn new(config: &AgentConfig, token: Arc<TokenProvider>) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(crate::version())
            .connect_timeout(CONNECT_TIMEOUT)
            // A proxy or server must not bounce the bearer token to somewhere else.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(proxy) = &config.proxy {
            let no_proxy = config
                .no_proxy
                .as_deref()
                .and_then(reqwest::NoProxy::from_string);
            let proxy = reqwest::Proxy::all(proxy.expose().as_str())
                .map_err(|e| ClientError::Build(redact_credentials(&error_chain(&e))))?
                .no_proxy(no_proxy);
            // The explicit proxy replaces whatever the environment says, not adds to it.
            builder = builder.no_proxy().proxy(proxy);
        }
        for path in [&config.ca_file, &config.proxy_ca_file]
            .into_iter()
            .flatten()
        {
            for cert in read_ca(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Build(redact_credentials(&error_chain(&e))))?;
        Ok(DataPlaneClient {
            http,
            base: config.dataplane_url.clone(),
            cluster: config.cluster.clone(),
            token,
            max_list_bytes: MAX_LIST_BYTES,
        })
    }

    /// Lowers the listing size limit (tests).
    pub fn with_max_list_bytes(mut self, limit: usize) -> Self {
        self.max_list_bytes = limit;
        self
    }

    fn url(&self, path: &str, wait: Option<Duration>) -> Result<Url, ClientError> {
        let raw = format!("{}{}", self.base.as_str().trim_end_matches('/'), path);
        let mut url = Url::parse(&raw).map_err(|_| ClientError::Url(path.to_string()))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", API_VERSION);
            if let Some(w) = wait {
                q.append_pair("waitSeconds", &w.as_secs().to_string());
            }
        }
        Ok(url)
    }

    /// Lists the desired configurations. With an ETag the server answers 304 when nothing
    /// changed, and with `wait` as well it may hold the request up to that long first.
    pub async fn list(
        &self,
        etag: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<ListOutcome, ClientError> {
        const OP: &str = "listing configurations";
        let wait = etag.and(wait);
        let url = self.url(&self.cluster.configurations_path(), wait)?;
        let token = self.token.token()?;
        let mut req = self
            .http
            .get(url)
            .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
            .timeout(REQUEST_TIMEOUT + wait.unwrap_or_default());
        if let Some(tag) = etag {
            req = req.header(IF_NONE_MATCH, tag);
        }
        let resp = req.send().await.map_err(|e| transport(OP, &e))?;
        match resp.status() {
            StatusCode::NOT_MODIFIED => Ok(ListOutcome::NotModified),
            StatusCode::OK => {
                let etag = resp
                    .headers()
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = read_limited(resp, self.max_list_bytes, OP).await?;
                let list: ConfigurationList =
                    serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
                        operation: OP,
                        message: e.to_string(),
                    })?;
                Ok(ListOutcome::Listing { list, etag })
            }
            _ => Err(http_error(OP, resp).await),
        }
    }

    /// Reports one configuration's status.
    pub async fn put_status(&self, name: &str, status: &StatusReport) -> Result<(), ClientError> {
        if !is_path_safe(name) {
            return Err(ClientError::UnsafeName(name.to_string()));
        }
        self.put("reporting status", &self.cluster.status_path(name), status)
            .await
    }

    pub async fn put_heartbeat(&self, heartbeat: &AgentHeartbeat) -> Result<(), ClientError> {
        self.put(
            "sending heartbeat",
            &self.cluster.heartbeat_path(),
            heartbeat,
        )
        .await
    }

    async fn put<T: Serialize>(
        &self,
        op: &'static str,
        path: &str,
        body: &T,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            operation: op,
            message: e.to_string(),
        })?;
        if body.len() > MAX_REQUEST_BYTES {
            return Err(ClientError::TooLarge {
                operation: op,
                limit: MAX_REQUEST_BYTES,
            });
        }
        let url = self.url(path, None)?;
        let token = self.token.token()?;
        let resp = self
            .http
            .put(url)
            .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(REQUEST_TIMEOUT)
            .body(body)
            .send()
            .await
            .map_err(|e| transport(op, &e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(http_error(op, resp).await)
        }
    }
}

fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let err = |message: String| ClientError::Ca {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate found".to_string()));
    }
    Ok(certs)
}

/// Whether a configuration name can be put into a URL path as it is.
pub fn is_path_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

async fn read_limited(
    mut resp: Response,
    limit: usize,
    operation: &'static str,
) -> Result<Vec<u8>, ClientError> {
    if resp.content_length().is_some_and(|l| l > limit as u64) {
        return Err(ClientError::TooLarge { operation, limit });
    }
    let mut body = Vec::new();
    // Checked chunk by chunk: a lying or absent Content-Length must not let the body grow.
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(operation, &e))? {
        if body.len() + chunk.len() > limit {
            return Err(ClientError::TooLarge { operation, limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn http_error(operation: &'static str, resp: Response) -> ClientError {
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers(), SystemTime::now());
    let (code, message) = match read_limited(resp, 64 * 1024, operation).await {
        Ok(body) => match serde_json::from_slice::<ErrorResponse>(&body) {
            Ok(e) => (Some(e.error.code), Some(truncate(&e.error.message))),
            Err(_) => (None, None),
        },
        Err(_) => (None, None),
    };
    ClientError::Http {
        operation,
        status,
        code,
        message: message.map(|m| redact_credentials(&m)),
        retry_after,
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= MAX_MESSAGE_CHARS {
        return s.to_string();
    }
    let mut t: String = s.chars().take(MAX_MESSAGE_CHARS).collect();
    t.push('…');
    t
}

fn transport(operation: &'static str, e: &reqwest::Error) -> ClientError {
    ClientError::Transport {
        operation,
        timeout: e.is_timeout(),
        message: redact_credentials(&error_chain(e)),
    }
}

/// The error and its sources, since reqwest's own message hides the cause ("error sending
/// request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`, capped at
/// [`MAX_RETRY_AFTER`]; a date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// Replaces `user:password@` in any URL inside `text` by `***@`.
pub fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_400);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 100000 ", now), Some(MAX_RETRY_AFTER));
        // 2015-10-21T07:28:00Z is 80 s after `now`.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(80))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redact_credentials("connect to http://user:p4ss@proxy:3128/ failed"),
            "connect to http://***@proxy:3128/ failed"
        );
        assert_eq!(
            redact_credentials("https://dp.example.com/a@b and ftp://x@y"),
            "https://dp.example.com/a@b and ftp://***@y"
        );
        assert_eq!(redact_credentials("no urls here"), "no urls here");
    }

    #[test]
    fn error_classes() {
        let http = |status| ClientError::Http {
            operation: "x",
            status,
            code: None,
            message: None,
            retry_after: None,
        };
        assert!(http(503).is_retryable());
        assert!(http(429).is_retryable());
        assert!(!http(401).is_retryable());
        assert!(!http(404).is_retryable());
        assert!(ClientError::Transport {
            operation: "x",
            timeout: true,
            message: String::new()
        }
        .is_retryable());
        assert!(!ClientError::TooLarge {
            operation: "x",
            limit: 1
        }
        .is_retryable());
    }

    #[test]
    fn path_safety() {
        assert!(is_path_safe("cluster-config"));
        assert!(!is_path_safe("../x"));
        assert!(!is_path_safe("a b"));
        assert!(!is_path_safe(".."));
        assert!(!is_path_safe(""));
    }
}

#[cfg(test)]
mod http_tests {
    use super::*;
    use crate::token::TokenSource;
    use axum::body::Body;
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap as AxHeaders, StatusCode as AxStatus};
    use axum::response::{IntoResponse, Response as AxResponse};
    use axum::routing::{get, put};
    use axum::Router;
    use fluxconfig_api::dataplane::{ClusterType, MAX_WAIT_SECONDS};
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Seen {
        auth: Vec<String>,
        queries: Vec<HashMap<String, String>>,
        bodies: Vec<serde_json::Value>,
    }

    type Shared = Arc<Mutex<Seen>>;

    fn cluster() -> ClusterRef {
        ClusterRef {
            subscription_id: "sub".into(),
            resource_group: "rg".into(),
            cluster_type: ClusterType::ConnectedClusters,
            cluster_name: "arc".into(),
        }
    }

    async fn serve(router: Router) -> Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Url::parse(&format!("http://{addr}")).expect("url")
    }

    fn client(base: Url, token: TokenSource) -> DataPlaneClient {
        let config = AgentConfig::new(base, cluster(), token);
        DataPlaneClient::new(&config, Arc::new(TokenProvider::new(config.token.clone())))
            .expect("client")
    }

    fn record(seen: &Shared, headers: &AxHeaders, q: HashMap<String, String>) {
        let mut s = seen.lock().expect("lock");
        s.auth.push(
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        );
        s.queries.push(q);
    }

    async fn listing(
        State(seen): State<Shared>,
        headers: AxHeaders,
        Query(q): Query<HashMap<String, String>>,
    ) -> AxResponse {
        record(&seen, &headers, q);
        if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some("\"v1\"") {
            return AxStatus::NOT_MODIFIED.into_response();
        }
        (
            [("etag", "\"v1\"")],
            axum::Json(json!({"value": [{"name": "a", "properties": {}}], "count": 1})),
        )
            .into_response()
    }

    async fn status(
        State(seen): State<Shared>,
        headers: AxHeaders,
        Query(q): Query<HashMap<String, String>>,
        axum::Json(body): axum::Json<serde_json::Value>,
    ) -> AxStatus {
        record(&seen, &headers, q);
        seen.lock().expect("lock").bodies.push(body);
        AxStatus::NO_CONTENT
    }

    fn router(seen: Shared) -> Router {
        let c = cluster();
        Router::new()
            .route(&c.configurations_path(), get(listing))
            .route(&c.status_path("a"), put(status))
            .route(&c.heartbeat_path(), put(status))
            .with_state(seen)
    }

    #[tokio::test]
    async fn etag_long_poll_and_token_rotation() {
        let seen = Shared::default();
        let base = serve(router(seen.clone())).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "tok-1").expect("write");
        let c = client(base, TokenSource::File(path.clone()));

        let wait = Some(Duration::from_secs(MAX_WAIT_SECONDS));
        let first = c.list(None, wait).await.expect("list");
        let ListOutcome::Listing { list, etag } = first else {
            panic!("expected a listing, got {first:?}");
        };
        assert_eq!(list.count, 1);
        assert_eq!(etag.as_deref(), Some("\"v1\""));

        std::fs::write(&path, "tok-2-rotated").expect("write");
        let second = c.list(etag.as_deref(), wait).await.expect("list");
        assert_eq!(second, ListOutcome::NotModified);

        let s = seen.lock().expect("lock");
        assert_eq!(s.auth, ["Bearer tok-1", "Bearer tok-2-rotated"]);
        assert_eq!(s.queries[0]["api-version"], API_VERSION);
        // No ETag, no long poll: the first answer must come at once.
        assert!(!s.queries[0].contains_key("waitSeconds"));
        assert_eq!(s.queries[1]["waitSeconds"], MAX_WAIT_SECONDS.to_string());
    }

    #[tokio::test]
    async fn status_and_heartbeat_are_put() {
        let seen = Shared::default();
        let base = serve(router(seen.clone())).await;
        let c = client(base, TokenSource::Static("t".into()));
        let st = StatusReport {
            error_message: Some("x".into()),
            ..StatusReport::default()
        };
        c.put_status("a", &st).await.expect("status");
        c.put_heartbeat(&AgentHeartbeat {
            agent_version: "v".into(),
            configuration_count: 3,
            ..AgentHeartbeat::default()
        })
        .await
        .expect("heartbeat");
        let err = c.put_status("../a", &st).await.expect_err("unsafe");
        assert!(matches!(err, ClientError::UnsafeName(_)));
        let err = c.put_status("zzz", &st).await.expect_err("404");
        assert!(matches!(err, ClientError::Http { status: 404, .. }));
        assert!(!err.is_retryable());
        let s = seen.lock().expect("lock");
        assert_eq!(s.bodies[0]["errorMessage"], "x");
        assert_eq!(s.bodies[1]["configurationCount"], 3);
    }

    #[tokio::test]
    async fn oversized_listing_is_refused() {
        let c = cluster();
        let big = json!({"value": [{"name": "x".repeat(4096), "properties": {}}], "count": 1})
            .to_string();
        let big2 = big.clone();
        let router = Router::new()
            .route(
                &c.configurations_path(),
                get(move || {
                    let big = big.clone();
                    async move { big }
                }),
            )
            .route(
                "/chunked",
                get(move || {
                    let big = big2.clone();
                    async move {
                        // A body without Content-Length: the limit must hold while streaming.
                        let chunks: Vec<Result<String, std::io::Error>> = big
                            .as_bytes()
                            .chunks(512)
                            .map(|c| Ok(String::from_utf8_lossy(c).into_owned()))
                            .collect();
                        Body::from_stream(futures::stream::iter(chunks))
                    }
                }),
            );
        let base = serve(router).await;
        let client =
            client(base.clone(), TokenSource::Static("t".into())).with_max_list_bytes(1024);
        let err = client.list(None, None).await.expect_err("too large");
        assert!(
            matches!(err, ClientError::TooLarge { limit: 1024, .. }),
            "{err:?}"
        );

        let resp = reqwest::get(base.join("/chunked").expect("url"))
            .await
            .expect("get");
        assert!(resp.content_length().is_none());
        let err = read_limited(resp, 1024, "x").await.expect_err("too large");
        assert!(matches!(err, ClientError::TooLarge { .. }));
    }

    #[tokio::test]
    async fn throttling_and_malformed_bodies() {
        let c = cluster();
        let router = Router::new().route(
            &c.configurations_path(),
            get(|Query(q): Query<HashMap<String, String>>| async move {
                match q.get("mode").map(String::as_str) {
                    _ if false => AxStatus::OK.into_response(),
                    _ => (
                        AxStatus::TOO_MANY_REQUESTS,
                        [("retry-after", "7")],
                        axum::Json(json!({"error": {"code": "Throttled", "message": "slow down"}})),
                    )
                        .into_response(),
                }
            }),
        );
        let base = serve(router).await;
        let err = client(base, TokenSource::Static("t".into()))
            .list(None, None)
            .await
            .expect_err("429");
        assert!(err.is_retryable());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(
            err.to_string(),
            "listing configurations: HTTP 429 Throttled: slow down"
        );

        for body in [
            "not json",
            r#"{"value": []}"#,
            r#"{"value": {}, "count": 0}"#,
        ] {
            let router =
                Router::new().route(&c.configurations_path(), get(move || async move { body }));
            let base = serve(router).await;
            let err = client(base, TokenSource::Static("t".into()))
                .list(None, None)
                .await
                .expect_err("malformed");
            assert!(matches!(err, ClientError::Decode { .. }), "{body}: {err:?}");
            assert!(!err.is_retryable());
        }
    }

    #[tokio::test]
    async fn unreachable_server_is_retryable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let base = Url::parse(&format!("http://{addr}")).expect("url");
        let err = client(base, TokenSource::Static("t".into()))
            .list(None, None)
            .await
            .expect_err("refused");
        assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
        assert!(err.is_retryable());
    }
}

/// TLS with `--ca-file`/`--proxy-ca-file`, and `HTTP_PROXY` with credentials, against raw
/// one-shot servers.
#[cfg(test)]
mod transport_tests {
    use super::*;
    use crate::token::TokenSource;
    use fluxconfig_api::dataplane::ClusterType;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    const LISTING: &str = r#"{"value":[],"count":0}"#;

    fn cluster() -> ClusterRef {
        ClusterRef {
            subscription_id: "sub".into(),
            resource_group: "rg".into(),
            cluster_type: ClusterType::ManagedClusters,
            cluster_name: "aks".into(),
        }
    }

    /// Reads one request head, answers with the listing, returns the head.
    async fn respond<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{LISTING}",
            LISTING.len()
        );
        let _ = s.write_all(resp.as_bytes()).await;
        let _ = s.shutdown().await;
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn tls_server_config() -> (String, Arc<rustls::ServerConfig>) {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &ca).expect("cert");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        (ca.pem(), Arc::new(config))
    }

    #[tokio::test]
    async fn ca_file_and_proxy_ca_file_are_trusted() {
        let (ca_pem, server_config) = tls_server_config();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        respond(tls).await;
                    }
                });
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &ca_pem).expect("write");
        let base = Url::parse(&format!("https://{addr}")).expect("url");
        let token = || Arc::new(TokenProvider::new(TokenSource::Static("t".into())));

        let mut config = AgentConfig::new(base.clone(), cluster(), TokenSource::Static("t".into()));
        let untrusted = DataPlaneClient::new(&config, token()).expect("client");
        let err = untrusted.list(None, None).await.expect_err("unknown CA");
        assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");

        config.ca_file = Some(ca_path.clone());
        let trusted = DataPlaneClient::new(&config, token()).expect("client");
        assert!(matches!(
            trusted.list(None, None).await.expect("list"),
            ListOutcome::Listing { .. }
        ));

        config.ca_file = None;
        config.proxy_ca_file = Some(ca_path);
        let via_proxy_ca = DataPlaneClient::new(&config, token()).expect("client");
        assert!(via_proxy_ca.list(None, None).await.is_ok());

        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "not a certificate").expect("write");
        config.proxy_ca_file = Some(bad);
        assert!(matches!(
            DataPlaneClient::new(&config, token()),
            Err(ClientError::Ca { .. })
        ));
    }

    const CHILD_ENV: &str = "FLUXCONFIG_AGENT_PROXY_TEST_CHILD";

    /// Proxies come from the environment, so the check runs in a child process of this test
    /// binary that owns its environment.
    #[test]
    fn http_proxy_with_credentials_is_used() {
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "client::transport_tests::proxy_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .expect("run child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("1 passed"), "{stdout}");
    }

    #[test]
    #[ignore = "run by http_proxy_with_credentials_is_used in a child process"]
    fn proxy_child() {
        if std::env::var(CHILD_ENV).is_err() {
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let proxy_addr = proxy.local_addr().expect("addr");
            let server = tokio::spawn(async move {
                let (tcp, _) = proxy.accept().await.expect("accept");
                respond(tcp).await
            });
            for var in [
                "NO_PROXY",
                "no_proxy",
                "ALL_PROXY",
                "all_proxy",
                "http_proxy",
            ] {
                std::env::remove_var(var);
            }
            std::env::set_var("HTTP_PROXY", format!("http://agent:p%40ss@{proxy_addr}"));
            // Nothing listens on the target: the request can only succeed through the proxy.
            let base = Url::parse("http://127.0.0.1:9").expect("url");
            let config = AgentConfig::new(base, cluster(), TokenSource::Static("tok".into()));
            let client =
                DataPlaneClient::new(&config, Arc::new(TokenProvider::new(config.token.clone())))
                    .expect("client");
            client
                .list(None, None)
                .await
                .expect("list through the proxy");
            let head = server.await.expect("proxy").to_ascii_lowercase();
            assert!(
                head.starts_with("get http://127.0.0.1:9/subscriptions/sub/"),
                "{head}"
            );
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode("agent:p@ss");
            assert!(
                head.contains(&format!(
                    "proxy-authorization: basic {}",
                    basic.to_ascii_lowercase()
                )),
                "{head}"
            );
            assert!(head.contains("authorization: bearer tok"), "{head}");

            // An unreachable proxy fails retryably, without echoing its credentials.
            let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let closed_addr = closed.local_addr().expect("addr");
            drop(closed);
            std::env::set_var("HTTP_PROXY", format!("http://agent:p%40ss@{closed_addr}"));
            let client =
                DataPlaneClient::new(&config, Arc::new(TokenProvider::new(config.token.clone())))
                    .expect("client");
            let err = client.list(None, None).await.expect_err("proxy down");
            assert!(err.is_retryable());
            let text = err.to_string();
            assert!(!text.contains("p%40ss") && !text.contains("p@ss"), "{text}");
        });
    }
}

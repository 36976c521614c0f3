//! A small HTTP(S) client for the data plane, used by `testbed flux` and the tests: one
//! connection per request, TLS trusting only the CA it is given.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid data-plane URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("CA certificate: {0}")]
    Ca(String),
    #[error("an https data-plane URL needs a CA file (--ca-file)")]
    NoCa,
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("building request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
}

#[derive(Debug, Clone)]
pub struct ClientResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ClientResponse {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
pub struct Client {
    host: String,
    port: u16,
    /// `host[:port]` as the Host header wants it.
    authority: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    token: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("authority", &self.authority)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

fn url_err(url: &str, reason: &'static str) -> ClientError {
    ClientError::Url {
        url: url.to_string(),
        reason,
    }
}

impl Client {
    /// `url` is `http(s)://host[:port]` (a trailing `/` is fine); `ca_pem` is required for https.
    pub fn new(url: &str, token: &str, ca_pem: Option<&str>) -> Result<Client, ClientError> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(url_err(url, "must start with http:// or https://"));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(url_err(url, "must be scheme://host[:port] without a path"));
        }
        let (host, port) =
            split_authority(authority).ok_or_else(|| url_err(url, "host or port is malformed"))?;
        let port = port.unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let pem = ca_pem.ok_or(ClientError::NoCa)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| ClientError::Ca(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Ca(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ClientError::Ca("no certificate in the CA file".into()));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientError::Ca(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = match host.parse::<IpAddr>() {
                Ok(ip) => ServerName::IpAddress(ip.into()),
                Err(_) => ServerName::try_from(host.clone())
                    .map_err(|_| url_err(url, "host is not a valid DNS name"))?,
            };
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Client {
            host,
            port,
            authority: authority.to_string(),
            tls,
            token: token.to_string(),
            timeout: Duration::from_secs(MAX_REQUEST_SECONDS),
        })
    }

    /// The same client with another token (or none, with an empty string).
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            token: token.to_string(),
            ..self.clone()
        }
    }

    pub async fn get(&self, path_and_query: &str) -> Result<ClientResponse, ClientError> {
        self.send(Method::GET, path_and_query, &[], None).await
    }

    pub async fn delete(&self, path_and_query: &str) -> Result<ClientResponse, ClientError> {
        self.send(Method::DELETE, path_and_query, &[], None).await
    }

    pub async fn put_json<T: serde::Serialize>(
        &self,
        path_and_query: &str,
        body: &T,
    ) -> Result<ClientResponse, ClientError> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.send(Method::PUT, path_and_query, &[], Some(bytes))
            .await
    }

    /// Sends one request on a fresh connection.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<ClientResponse, ClientError> {
        let timeout = self.timeout;
        tokio::time::timeout(
            timeout,
            self.send_inner(method, path_and_query, headers, body),
        )
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
    }

    async fn send_inner(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<ClientResponse, ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(HOST, &self.authority);
        if !self.token.is_empty() {
            builder = builder.header(AUTHORIZATION, format!("Bearer {}", self.token));
        }
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let req = builder.body(Full::new(Bytes::from(body.unwrap_or_default())))?;

        let addr = format!("{}:{}", self.host, self.port);
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let resp = match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| ClientError::Tls { addr, source })?;
                exchange(TokioIo::new(tls), req).await?
            }
            None => exchange(TokioIo::new(tcp), req).await?,
        };
        Ok(resp)
    }
}

/// The longest a request may take: a maximal long poll plus slack.
const MAX_REQUEST_SECONDS: u64 = fluxconfig_api::dataplane::MAX_WAIT_SECONDS + 30;

async fn exchange<IO>(io: IO, req: Request<Full<Bytes>>) -> Result<ClientResponse, ClientError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await;
    let result = match resp {
        Ok(resp) => {
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
            body.map(|body| ClientResponse {
                status,
                headers,
                body,
            })
            .map_err(ClientError::from)
        }
        Err(e) => Err(ClientError::from(e)),
    };
    driver.abort();
    result
}

/// `host[:port]`, with `[v6]` brackets removed from the host.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            Some((host.to_string(), Some(port.parse().ok()?)))
        }
        Some(_) => None,
        None => Some((authority.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_forms() {
        assert_eq!(
            split_authority("127.0.0.1:8443"),
            Some(("127.0.0.1".into(), Some(8443)))
        );
        assert_eq!(split_authority("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(
            split_authority("localhost"),
            Some(("localhost".into(), None))
        );
        assert_eq!(split_authority("h:x"), None);
        assert_eq!(split_authority(":80"), None);
    }

    #[test]
    fn https_needs_a_ca() {
        assert!(matches!(
            Client::new("https://127.0.0.1:1", "t", None),
            Err(ClientError::NoCa)
        ));
        assert!(Client::new("ftp://x", "t", None).is_err());
        assert!(Client::new("http://127.0.0.1:1/path", "t", None).is_err());
        assert!(Client::new("http://127.0.0.1:1/", "t", None).is_ok());
    }
}

//! Serving: the accept loop (which a `refuse` outage closes), connections, and the response
//! helpers every handler shares.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fluxconfig_api::dataplane::ErrorResponse;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::dataplane::faults::FaultConfig;
use crate::dataplane::handlers;
use crate::dataplane::Shared;

pub type Body = Full<Bytes>;
pub type Resp = Response<Body>;

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut resp = Response::new(Full::new(Bytes::from(bytes)));
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            format!("encoding response: {e}"),
        ),
    }
}

pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Resp {
    let body = ErrorResponse::new(code, message);
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(
        HeaderName::from_static("x-ms-error-code"),
        HeaderValue::from_str(code).unwrap_or(HeaderValue::from_static("Error")),
    );
    resp
}

pub fn retry_after(mut resp: Resp, secs: u64) -> Resp {
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    resp
}

pub fn empty(status: StatusCode) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// Resolves once the faults say `refuse`, so open connections close with the listener.
async fn refused(rx: &mut watch::Receiver<FaultConfig>) {
    loop {
        if rx.borrow_and_update().refusing() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn spawn_connection(
    tcp: tokio::net::TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let mut faults = shared.faults.subscribe();
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(handlers::handle(shared, req).await) }
        });
        let conn = async move {
            let builder = hyper::server::conn::http1::Builder::new();
            match acceptor {
                Some(acc) => {
                    if let Ok(tls) = acc.accept(tcp).await {
                        let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                }
            }
        };
        tokio::select! {
            _ = conn => {}
            _ = stop.changed() => {}
            _ = refused(&mut faults) => {}
        }
    });
}

/// Accepts until shutdown. While a `refuse` outage lasts the listening socket is closed, so
/// clients get "connection refused" rather than a hanging connect; it is bound again (same
/// address) when the outage ends.
pub async fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut faults = shared.faults.subscribe();
    let mut listener = Some(listener);
    loop {
        let refusing = faults.borrow_and_update().refusing();
        if refusing {
            listener = None;
        } else if listener.is_none() {
            match TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "re-binding after outage failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
        match &listener {
            None => {
                tokio::select! {
                    r = faults.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => return,
                }
            }
            Some(l) => {
                tokio::select! {
                    accepted = l.accept() => match accepted {
                        Ok((tcp, _)) => spawn_connection(tcp, acceptor.clone(), shared.clone(), shutdown.clone()),
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    },
                    r = faults.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

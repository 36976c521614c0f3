//! HTTP(S) serving, authentication, routing and content negotiation.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::apiserver::errors::{ApiError, ApiResult};
use crate::apiserver::ops::{self, present, DeleteOpts, Query, Req};
use crate::apiserver::resources::ResourceDef;
use crate::apiserver::watch::{self, Render};
use crate::apiserver::{discovery, table, Shared};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

const MAX_BODY: usize = 3 * 1024 * 1024;

pub async fn serve(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (tcp, _) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, req).await) }
            });
            let builder = hyper::server::conn::http1::Builder::new();
            match acceptor {
                Some(acc) => {
                    let Ok(tls) = acc.accept(tcp).await else {
                        return;
                    };
                    let conn = builder.serve_connection(TokioIo::new(tls), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.changed() => {}
                    }
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(tcp), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        });
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_response(code: u16, v: &Value, warnings: &[String]) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        "cache-control",
        HeaderValue::from_static("no-cache, private"),
    );
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert("audit-id", v);
    }
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            h.append("warning", v);
        }
    }
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.to_status(), &[]);
    if let Some(s) = e.retry_after {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
    }
    r
}

/// How the client wants the answer rendered (kubectl asks for server-side Tables).
#[derive(Clone, Debug, PartialEq)]
enum Accept {
    Json,
    Table,
    PartialMeta,
}

fn negotiate(accept: &str) -> Accept {
    for part in accept.split(',') {
        let mut it = part.split(';').map(str::trim);
        let mt = it.next().unwrap_or("");
        if mt != "application/json" && mt != "*/*" && mt != "application/*" {
            continue;
        }
        let params: Vec<(&str, &str)> = it.filter_map(|p| p.split_once('=')).collect();
        let get = |k: &str| params.iter().find(|(a, _)| *a == k).map(|(_, b)| *b);
        match (get("as"), get("g"), get("v")) {
            (None, _, _) => return Accept::Json,
            (Some("Table"), Some("meta.k8s.io"), Some("v1" | "v1beta1")) => return Accept::Table,
            (
                Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                Some("meta.k8s.io"),
                Some("v1" | "v1beta1"),
            ) => return Accept::PartialMeta,
            _ => continue,
        }
    }
    Accept::Json
}

fn user_agent_manager(req: &Request<Incoming>) -> String {
    let ua = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let prefix = ua.split('/').next().unwrap_or("").trim();
    if prefix.is_empty() {
        "unknown".into()
    } else {
        prefix.chars().take(128).collect()
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    shared.requests.record(
        req.headers().contains_key(super::CLIENT_TAG_HEADER),
        !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS),
    );
    let resp = match route(&shared, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    resp
}

fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let Some(h) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    else {
        // client-go never sends credentials to an http:// server; the real server's plain
        // port (the old insecure port) did not authenticate either.
        return shared.url.starts_with("http://");
    };
    let mut parts = h.splitn(2, ' ');
    let scheme = parts.next().unwrap_or("");
    let token = parts.next().unwrap_or("").trim();
    scheme.eq_ignore_ascii_case("bearer") && token == shared.token
}

struct Target {
    group: String,
    version: String,
    rest: Vec<String>,
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let path = req.uri().path().to_string();
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs_ref: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs_ref.as_slice() {
        ["healthz"] | ["livez"] | ["readyz"] => {
            let mut r = Response::new(full("ok"));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return Ok(r);
        }
        ["version"] => return Ok(json_response(200, &discovery::version(), &[])),
        _ => {}
    }
    if !authorized(shared, &req) {
        return Err(ApiError::unauthorized());
    }
    if req.method() == Method::GET {
        let reg = || shared.lock().registry.clone();
        match segs_ref.as_slice() {
            [] => {
                let paths = json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v3", "/readyz", "/version"]});
                return Ok(json_response(200, &paths, &[]));
            }
            ["api"] | ["apis"] => {
                let core = segs_ref.as_slice() == ["api"];
                let accept = req
                    .headers()
                    .get("accept")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if let Some(v) = discovery::wants_aggregated(accept) {
                    let av = format!("apidiscovery.k8s.io/{v}");
                    let doc = discovery::aggregated(&reg(), core, &av);
                    let mut r = json_response(200, &doc, &[]);
                    let ct = format!(
                        "application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"
                    );
                    if let Ok(h) = HeaderValue::from_str(&ct) {
                        r.headers_mut().insert(CONTENT_TYPE, h);
                    }
                    return Ok(r);
                }
                let doc = if core {
                    discovery::api_versions(&host_of(&shared.url))
                } else {
                    discovery::api_group_list(&reg())
                };
                return Ok(json_response(200, &doc, &[]));
            }
            ["api", v] => {
                return discovery::resource_list(&reg(), "", v)
                    .map(|d| json_response(200, &d, &[]))
                    .ok_or_else(ApiError::page_not_found)
            }
            ["apis", g] => {
                return discovery::api_group(&reg(), g)
                    .map(|d| json_response(200, &d, &[]))
                    .ok_or_else(ApiError::page_not_found)
            }
            ["apis", g, v] => {
                return discovery::resource_list(&reg(), g, v)
                    .map(|d| json_response(200, &d, &[]))
                    .ok_or_else(ApiError::page_not_found)
            }
            ["openapi", "v2"] => {
                let accept = req
                    .headers()
                    .get("accept")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if accept.contains("protobuf") {
                    let mut r = Response::new(full(discovery::openapi_v2_protobuf(&reg())));
                    r.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(
                            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                        ),
                    );
                    return Ok(r);
                }
                return Ok(json_response(200, &discovery::openapi_v2_json(&reg()), &[]));
            }
            ["openapi", "v3"] => {
                return Ok(json_response(200, &discovery::openapi_v3_root(&reg()), &[]))
            }
            ["openapi", "v3", "api", v] => {
                return discovery::openapi_v3_gv(&reg(), "", v)
                    .map(|d| json_response(200, &d, &[]))
                    .ok_or_else(ApiError::page_not_found)
            }
            ["openapi", "v3", "apis", g, v] => {
                return discovery::openapi_v3_gv(&reg(), g, v)
                    .map(|d| json_response(200, &d, &[]))
                    .ok_or_else(ApiError::page_not_found)
            }
            _ => {}
        }
    }
    let target = match segs_ref.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => Target {
            group: String::new(),
            version: v.to_string(),
            rest: rest.iter().map(|s| s.to_string()).collect(),
        },
        ["apis", g, v, rest @ ..] if !rest.is_empty() => Target {
            group: g.to_string(),
            version: v.to_string(),
            rest: rest.iter().map(|s| s.to_string()).collect(),
        },
        _ => return Err(ApiError::page_not_found()),
    };
    resource_request(shared, req, target).await
}

fn host_of(url: &str) -> String {
    url.split("://").nth(1).unwrap_or(url).to_string()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A resolved resource request.
struct Resolved {
    def: Arc<ResourceDef>,
    ns: String,
    name: Option<String>,
    sub: Option<String>,
    watch_prefix: bool,
}

fn resolve(shared: &Shared, t: Target) -> ApiResult<Resolved> {
    let mut rest: Vec<String> = t.rest;
    let mut watch_prefix = false;
    if rest.first().map(String::as_str) == Some("watch") {
        watch_prefix = true;
        rest.remove(0);
    }
    let reg = &shared.lock().registry;
    if !reg.has_group_version(&t.group, &t.version) {
        return Err(ApiError::page_not_found());
    }
    let lookup = |plural: &str| reg.get(&t.group, &t.version, plural);
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let (def, ns, name, sub) = match r.as_slice() {
        ["namespaces", ns, plural, tail @ ..]
            if t.group.is_empty()
                && matches!(*plural, "status" | "finalize")
                && tail.is_empty() =>
        {
            (
                lookup("namespaces"),
                String::new(),
                Some(ns.to_string()),
                Some(plural.to_string()),
            )
        }
        ["namespaces", ns, plural, tail @ ..] if !plural.is_empty() => {
            let d = lookup(plural).filter(|d| d.namespaced);
            match tail {
                [] => (d, ns.to_string(), None, None),
                [name] => (d, ns.to_string(), Some(name.to_string()), None),
                [name, sub] => (
                    d,
                    ns.to_string(),
                    Some(name.to_string()),
                    Some(sub.to_string()),
                ),
                _ => (None, String::new(), None, None),
            }
        }
        [plural] => (lookup(plural), String::new(), None, None),
        [plural, name] => (
            lookup(plural).filter(|d| !d.namespaced || d.plural == "namespaces"),
            String::new(),
            Some(name.to_string()),
            None,
        ),
        [plural, name, sub] => (
            lookup(plural).filter(|d| !d.namespaced),
            String::new(),
            Some(name.to_string()),
            Some(sub.to_string()),
        ),
        _ => (None, String::new(), None, None),
    };
    let def = def.ok_or_else(ApiError::page_not_found)?;
    if let Some(s) = &sub {
        let ok = (s == "status" && def.status_subresource)
            || (s == "scale" && def.kind == "Deployment" && def.group == "apps")
            || (s == "finalize" && def.plural == "namespaces" && def.group.is_empty());
        if !ok {
            return Err(ApiError::page_not_found());
        }
    }
    Ok(Resolved {
        def,
        ns,
        name,
        sub,
        watch_prefix,
    })
}

async fn read_body(req: Request<Incoming>) -> ApiResult<Bytes> {
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading request body: {e}")))?
        .to_bytes();
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        ));
    }
    Ok(body)
}

fn decode_object(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    let mt = content_type.split(';').next().unwrap_or("").trim();
    if crate::apiserver::protobuf::is_protobuf(content_type) {
        return crate::apiserver::protobuf::decode(body);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml",
        ));
    }
    match mt {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the object provided is unrecognized: {e}"))
        }),
        "application/yaml" => {
            let s = std::str::from_utf8(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            serde_saphyr::from_str::<Value>(s)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
        }
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {other})"),
        )),
    }
}

async fn resource_request(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    target: Target,
) -> ApiResult<Response<Body>> {
    let q = Query::parse(req.uri().query());
    let r = resolve(shared, target)?;
    let method = req.method().clone();
    let is_watch = r.watch_prefix || q.flag("watch");
    let verb = match (&method, r.name.is_some()) {
        (&Method::GET, false) if is_watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) if is_watch => "watch",
        (&Method::GET, true) => "get",
        (&Method::POST, false) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ))
        }
    };
    // The all-namespaces path of a namespaced resource only lists and watches.
    if r.def.namespaced && r.ns.is_empty() && !matches!(verb, "list" | "watch") {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let sub_verb_ok = match r.sub.as_deref() {
        None => true,
        Some("status") | Some("scale") => matches!(verb, "get" | "update" | "patch"),
        Some(_) => verb == "update",
    };
    if !sub_verb_ok || !r.def.verbs.iter().any(|v| v == verb) {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    shared.faults.before_request(verb).await?;

    let accept = negotiate(
        req.headers()
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json"),
    );
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let manager = match q.get("fieldManager") {
        Some(m) => {
            if m.chars().count() > 128 {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "PatchOptions",
                    "",
                    &[crate::apiserver::schema::FieldError::too_long(
                        "fieldManager",
                        128,
                    )],
                ));
            }
            m.to_string()
        }
        None => user_agent_manager(&req),
    };
    let ns = r.ns.clone();
    let name = r.name.clone().unwrap_or_default();
    let def = r.def.clone();
    let body = if matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    ) {
        read_body(req).await?
    } else {
        Bytes::new()
    };
    let now = chrono::Utc::now();
    let request = Req {
        def: def.clone(),
        ns,
        name,
        sub: r.sub.clone(),
        query: &q,
        manager,
        now,
    };

    if verb == "watch" {
        return start_watch(shared, &request, accept, &q);
    }
    if verb == "list" {
        // A resourceVersion ahead of the store is waited for (up to 3s, like the watch
        // cache) before it is refused as too large.
        if let Some(rv) = q.get("resourceVersion").and_then(|r| r.parse::<u64>().ok()) {
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while shared.lock().rv < rv && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let st = shared.lock();
        let res = ops::list(&st, &request)?;
        drop(st);
        return Ok(render_list(&def, res, &accept, &q, now));
    }

    let reply = {
        let mut st = shared.lock();
        if request.sub.as_deref() == Some("scale") {
            let r = ops::scale(&mut st, &request, verb, &content_type, &body);
            drop(st);
            let r = r?;
            if r.wrote {
                shared.gc_wake.notify_one();
            }
            return Ok(json_response(r.code, &r.body, &r.warnings));
        }
        match verb {
            "get" => ops::get(&st, &request),
            "create" => {
                let obj = decode_object(&content_type, &body)?;
                ops::create(&mut st, &request, obj)
            }
            "update" => {
                let obj = decode_object(&content_type, &body)?;
                if request.sub.as_deref() == Some("finalize") {
                    finalize_namespace(&mut st, &request, obj)
                } else {
                    ops::update(&mut st, &request, obj)
                }
            }
            "patch" => ops::patch(&mut st, &request, &content_type, &body),
            "delete" => {
                let opts = DeleteOpts::from_request(&q, &body)?;
                ops::delete(&mut st, &request, &opts)
            }
            "deletecollection" => {
                let opts = DeleteOpts::from_request(&q, &body)?;
                ops::delete_collection(&mut st, &request, &opts)
            }
            _ => Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            )),
        }
    }?;
    if reply.wrote {
        shared.gc_wake.notify_one();
    }
    let body = match (&accept, reply.body.get("kind").and_then(Value::as_str)) {
        (Accept::Table, Some(k)) if k == def.kind => table::build_table(
            &def.kind,
            &def.columns,
            std::slice::from_ref(&reply.body),
            q.get("includeObject").unwrap_or("Metadata"),
            json!({"resourceVersion": reply.body.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))}),
            now,
        ),
        (Accept::PartialMeta, Some(k)) if k == def.kind => watch::partial_metadata(&reply.body),
        _ => reply.body,
    };
    Ok(json_response(reply.code, &body, &reply.warnings))
}

/// PUT namespaces/{name}/finalize: the only way to change `spec.finalizers`.
fn finalize_namespace(
    st: &mut crate::apiserver::store::Store,
    req: &Req,
    obj: Value,
) -> ApiResult<ops::Reply> {
    let Some(old) = st.get(ops::NAMESPACES_GR, "", &req.name) else {
        return Err(ApiError::not_found("", "namespaces", &req.name));
    };
    let mut new = (*old).clone();
    new["spec"]["finalizers"] = obj
        .pointer("/spec/finalizers")
        .cloned()
        .unwrap_or(json!([]));
    let now = req.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    ops::controller_update(st, ops::NAMESPACES_GR, new, &req.manager, &now);
    let cur = st
        .get(ops::NAMESPACES_GR, "", &req.name)
        .map(|o| (*o).clone())
        .unwrap_or_else(|| (*old).clone());
    Ok(ops::Reply {
        code: 200,
        body: present(&req.def, &cur),
        warnings: Vec::new(),
        wrote: true,
    })
}

fn render_list(
    def: &ResourceDef,
    res: ops::ListResult,
    accept: &Accept,
    q: &Query,
    now: chrono::DateTime<chrono::Utc>,
) -> Response<Body> {
    let mut meta = json!({"resourceVersion": res.rv.to_string()});
    if let Some(c) = &res.cont {
        meta["continue"] = json!(c);
    }
    if let Some(n) = res.remaining {
        meta["remainingItemCount"] = json!(n);
    }
    let body = match accept {
        Accept::Table => {
            let objs: Vec<Value> = res.items.iter().map(|o| present(def, o)).collect();
            table::build_table(
                &def.kind,
                &def.columns,
                &objs,
                q.get("includeObject").unwrap_or("Metadata"),
                meta,
                now,
            )
        }
        Accept::PartialMeta => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "items": res.items.iter().map(|o| watch::partial_metadata(o)).collect::<Vec<_>>(),
        }),
        Accept::Json => {
            // Typed (built-in) lists carry no per-item apiVersion/kind; unstructured ones do.
            let items: Vec<Value> = res
                .items
                .iter()
                .map(|o| {
                    let mut v = present(def, o);
                    if !def.custom {
                        if let Some(m) = v.as_object_mut() {
                            m.remove("apiVersion");
                            m.remove("kind");
                        }
                    }
                    v
                })
                .collect();
            json!({
                "kind": def.list_kind,
                "apiVersion": def.api_version(),
                "metadata": meta,
                "items": items,
            })
        }
    };
    json_response(200, &body, &[])
}

fn start_watch(
    shared: &Arc<Shared>,
    req: &Req,
    accept: Accept,
    q: &Query,
) -> ApiResult<Response<Body>> {
    let render = match accept {
        Accept::Json => Render::Object,
        Accept::Table => Render::Table {
            include_object: q.get("includeObject").unwrap_or("Metadata").to_string(),
        },
        Accept::PartialMeta => Render::PartialMetadata,
    };
    let mut q2 = q.clone();
    if !req.name.is_empty() {
        let fs = match q.get("fieldSelector") {
            Some(f) => format!("{f},metadata.name={}", req.name),
            None => format!("metadata.name={}", req.name),
        };
        q2.0.insert("fieldSelector".into(), fs);
    }
    let start = {
        let st = shared.lock();
        watch::start(&st, req.def.clone(), &req.ns, &q2, render)?
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let faults = shared.faults.snapshot();
    let disconnect = shared.faults.disconnects();
    tokio::spawn(watch::run(
        start,
        tx,
        shared.bookmark_interval,
        faults.watch_drop_every,
        disconnect,
    ));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        "cache-control",
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}

//! The operations: agent listing (ETag + long poll), status and heartbeat reports, management
//! CRUD, and the testbed's fault switch.

// Handlers bail out with a finished HTTP response (`Result<_, Resp>`); it is built once per
// failed request, so its size does not matter and boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fluxconfig_api::dataplane::{
    AgentHeartbeat, ClusterRef, ConfigurationList, FluxConfigurationResourceList, API_VERSION,
    MAX_REQUEST_BYTES, MAX_WAIT_SECONDS, PROTECTED_SETTINGS,
};
use fluxconfig_api::FluxConfigStatus;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE,
    ETAG, IF_NONE_MATCH, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::dataplane::faults::{FaultConfig, Injected};
use crate::dataplane::http::{empty, error, json, retry_after, Resp};
use crate::dataplane::routes::{self, Route, Target};
use crate::dataplane::state::{Store, READ_ONLY_PROPERTIES};
use crate::dataplane::Shared;

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Resp {
    let mut resp = dispatch(&shared, req).await;
    let id = uuid::Uuid::new_v4().to_string();
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-ms-request-id", v);
    }
    resp
}

pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares digests, not tokens, so neither the content nor the length of the expected token
/// leaks through timing.
fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(scheme) = value.get(..7) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer ") {
        return false;
    }
    let presented = token_digest(value[7..].trim());
    presented
        .iter()
        .zip(shared.token_digest.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn check_api_version(query: &str) -> Result<(), Resp> {
    match query_param(query, "api-version") {
        None => Err(error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(v) if v == API_VERSION => Ok(()),
        Some(v) => {
            let shown: String = v.chars().take(64).collect();
            Err(error(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                format!(
                    "The api-version '{shown}' is invalid. The supported versions are '{API_VERSION}'."
                ),
            ))
        }
    }
}

fn injected(faults: &FaultConfig) -> Option<Resp> {
    match faults.decide() {
        Injected::Proceed => None,
        Injected::Respond(status, code, retry) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let resp = error(status, code, format!("injected fault: {}", status.as_u16()));
            Some(match retry {
                Some(secs) => retry_after(resp, secs),
                None => resp,
            })
        }
    }
}

fn method_not_allowed(allowed: &'static str) -> Resp {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("allowed methods: {allowed}"),
    );
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allowed));
    resp
}

async fn dispatch(shared: &Arc<Shared>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let route = routes::parse(&path);

    if let Some(Route::Cluster(_, target)) = &route {
        if target.is_agent() {
            let faults = shared.faults.get();
            if faults.latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
            }
            if let Some(resp) = injected(&faults) {
                shared.stats.faults_injected.fetch_add(1, Ordering::Relaxed);
                return resp;
            }
        }
    }

    if !authorized(shared, req.headers()) {
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or invalid bearer token",
        );
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }

    let Some(route) = route else {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "no such data-plane endpoint",
        );
    };

    if let Route::Faults = route {
        return faults_endpoint(shared, req).await;
    }
    if let Err(resp) = check_api_version(&query) {
        return resp;
    }
    let Route::Cluster(cluster, target) = route else {
        return error(StatusCode::NOT_FOUND, "NotFound", "no such endpoint");
    };
    let method = req.method().clone();
    match (target, method) {
        (Target::AgentList, Method::GET) => {
            list_for_agent(shared, &cluster, req.headers(), &query).await
        }
        (Target::AgentList, _) => method_not_allowed("GET"),
        (Target::AgentStatus(name), Method::PUT) => put_status(shared, &cluster, &name, req).await,
        (Target::AgentStatus(_), _) => method_not_allowed("PUT"),
        (Target::AgentHeartbeat, Method::PUT) => put_heartbeat(shared, &cluster, req).await,
        (Target::AgentHeartbeat, _) => method_not_allowed("PUT"),
        (Target::ManagementList, Method::GET) => {
            let value = lock(shared).resources(&cluster);
            json(StatusCode::OK, &FluxConfigurationResourceList { value })
        }
        (Target::ManagementList, _) => method_not_allowed("GET"),
        (Target::ManagementOne(name), Method::GET) => {
            match lock(shared).resource(&cluster, &name) {
                Some(r) => json(StatusCode::OK, &r),
                None => not_found(&name),
            }
        }
        (Target::ManagementOne(name), Method::PUT) => {
            put_configuration(shared, &cluster, &name, req).await
        }
        (Target::ManagementOne(name), Method::DELETE) => {
            delete_configuration(shared, &cluster, &name).await
        }
        (Target::ManagementOne(_), _) => method_not_allowed("GET, PUT, DELETE"),
    }
}

fn not_found(name: &str) -> Resp {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("The Resource 'Microsoft.KubernetesConfiguration/fluxConfigurations/{name}' was not found."),
    )
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Store> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    shared
        .store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Resp> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("request body exceeds {MAX_REQUEST_BYTES} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!("reading request body: {e}"),
        )),
    }
}

/// Decodes a typed body, naming the offending field on failure.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Resp> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = result.map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "(body)".to_string()
        } else {
            path
        };
        error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!("{field}: {}", e.inner()),
        )
    })?;
    de.end().map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!("(body): {e}"),
        )
    })?;
    Ok(value)
}

/// Writes the new state before anyone is told about it, so nothing acknowledged is lost.
/// Writers queue for the file in turn, and each writes the state as it is when its turn comes:
/// under load one write covers every change made while the previous one was in progress, and
/// the changes it covered return without writing (group commit). Serializing the whole state
/// for each status report made a 10,000-configuration sync spend minutes of CPU here.
async fn persist(shared: &Shared, mutate: impl FnOnce(&mut Store)) -> Result<(), Resp> {
    let seq = {
        let mut store = lock(shared);
        mutate(&mut store);
        store.changed()
    };
    let mut last_written = shared.persisted.lock().await;
    if seq <= *last_written {
        // A later snapshot, which includes this change, is already on disk.
        return Ok(());
    }
    let snapshot = lock(shared).snapshot().map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            e.to_string(),
        )
    })?;
    let path = shared.state_file.clone();
    let seq = snapshot.seq;
    let written = tokio::task::spawn_blocking(move || {
        crate::dataplane::state::write_atomically(&path, &snapshot.bytes)
    })
    .await;
    match written {
        Ok(Ok(())) => {
            *last_written = seq;
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::error!(path = %shared.state_file.display(), error = %e, "persisting state failed");
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "persisting state failed",
            ))
        }
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            format!("persisting state: {e}"),
        )),
    }
}

fn etag_matches(if_none_match: Option<&str>, etag: &str) -> bool {
    let Some(header) = if_none_match else {
        return false;
    };
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

fn parse_wait(query: &str) -> Result<Duration, Resp> {
    match query_param(query, "waitSeconds") {
        None => Ok(Duration::ZERO),
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Ok(Duration::from_secs(n.min(MAX_WAIT_SECONDS))),
            Err(_) => Err(error(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                format!("waitSeconds must be a whole number of seconds (0..={MAX_WAIT_SECONDS})"),
            )),
        },
    }
}

async fn list_for_agent(
    shared: &Shared,
    cluster: &ClusterRef,
    headers: &HeaderMap,
    query: &str,
) -> Resp {
    shared.stats.listings.fetch_add(1, Ordering::Relaxed);
    let wait = match parse_wait(query) {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    let if_none_match = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Subscribe before looking, so a change between the look and the wait still wakes us.
    let mut changes = shared.changes.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let current = {
            let store = lock(shared);
            let etag = store.etag(cluster);
            if etag_matches(if_none_match.as_deref(), &etag) {
                None
            } else {
                Some((etag, store.desired(cluster)))
            }
        };
        if let Some((etag, items)) = current {
            return listing(shared, etag, items);
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    shared.stats.not_modified.fetch_add(1, Ordering::Relaxed);
    let etag = lock(shared).etag(cluster);
    let mut resp = empty(StatusCode::NOT_MODIFIED);
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(ETAG, v);
    }
    resp
}

fn listing(shared: &Shared, etag: String, mut items: Vec<Value>) -> Resp {
    let faults = shared.faults.get();
    let withhold = faults.withhold_items;
    let partial = withhold > 0;
    let count = items.len();
    let count = if partial {
        items.truncate(count.saturating_sub(withhold));
        items.len() + withhold
    } else {
        count
    };
    let raw = shared.faults.raw_listing_items();
    let encoded = if raw.is_empty() {
        serde_json::to_vec(&ConfigurationList {
            value: items,
            count,
        })
    } else {
        splice_raw_items(&items, count, &raw)
    };
    let bytes = match encoded {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                format!("encoding listing: {e}"),
            )
        }
    };
    let truncated = faults.truncate_body;
    let bytes = if truncated {
        bytes[..bytes.len() / 2].to_vec()
    } else {
        bytes
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(bytes)));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Secrets inside: nothing on the way may keep a copy.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A partial (or cut) listing gets no ETag: the agent must not be able to confirm it later
    // with a 304.
    if !partial && !truncated {
        if let Ok(v) = HeaderValue::from_str(&etag) {
            headers.insert(ETAG, v);
        }
    }
    resp
}

/// A listing whose items named in `raw` are replaced by those texts verbatim, as no `Value`
/// can hold duplicate keys.
fn splice_raw_items(
    items: &[Value],
    count: usize,
    raw: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut parts = Vec::with_capacity(items.len());
    for item in items {
        match item
            .get("name")
            .and_then(Value::as_str)
            .and_then(|n| raw.get(n))
        {
            Some(text) => parts.push(text.clone()),
            None => parts.push(serde_json::to_string(item)?),
        }
    }
    Ok(format!("{{\"value\":[{}],\"count\":{count}}}", parts.join(",")).into_bytes())
}

async fn put_status(
    shared: &Shared,
    cluster: &ClusterRef,
    name: &str,
    req: Request<Incoming>,
) -> Resp {
    let bytes = match read_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let status: FluxConfigStatus = match decode(&bytes) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let mut found = false;
    if let Err(resp) = persist(shared, |s| found = s.put_status(cluster, name, status)).await {
        return resp;
    }
    if !found {
        return not_found(name);
    }
    shared.stats.status_reports.fetch_add(1, Ordering::Relaxed);
    empty(StatusCode::NO_CONTENT)
}

async fn put_heartbeat(shared: &Shared, cluster: &ClusterRef, req: Request<Incoming>) -> Resp {
    let bytes = match read_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let heartbeat: AgentHeartbeat = match decode(&bytes) {
        Ok(h) => h,
        Err(resp) => return resp,
    };
    if let Err(resp) = persist(shared, |s| s.put_heartbeat(cluster, heartbeat)).await {
        return resp;
    }
    shared.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
    empty(StatusCode::NO_CONTENT)
}

fn bad_field(field: &str, message: &str) -> Resp {
    error(
        StatusCode::BAD_REQUEST,
        "InvalidRequestContent",
        format!("{field}: {message}"),
    )
}

type ManagementBody = (Map<String, Value>, Option<BTreeMap<String, String>>);

/// Checks only the structure ARM itself would reject; everything semantic is left for the agent
/// to report, as Azure's extension does. Never echoes values (they may be secrets).
pub fn parse_management_body(bytes: &[u8]) -> Result<ManagementBody, Resp> {
    let body: Value = serde_json::from_slice(bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!("(body): not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut body) = body else {
        return Err(bad_field("(body)", "must be a JSON object"));
    };
    let mut properties = match body.remove("properties") {
        Some(Value::Object(p)) => p,
        Some(_) => return Err(bad_field("properties", "must be a JSON object")),
        None => return Err(bad_field("properties", "is required")),
    };
    let protected = match properties.remove(PROTECTED_SETTINGS) {
        None => None,
        Some(Value::Null) => Some(BTreeMap::new()),
        Some(Value::Object(settings)) => {
            let mut out = BTreeMap::new();
            for (key, value) in settings {
                match value {
                    Value::String(s) => {
                        out.insert(key, s);
                    }
                    _ => {
                        return Err(bad_field(
                            &format!("properties.{PROTECTED_SETTINGS}.{key}"),
                            "must be a string (base64)",
                        ))
                    }
                }
            }
            Some(out)
        }
        Some(_) => {
            return Err(bad_field(
                &format!("properties.{PROTECTED_SETTINGS}"),
                "must be a JSON object of strings",
            ))
        }
    };
    for key in READ_ONLY_PROPERTIES {
        properties.remove(key);
    }
    Ok((properties, protected))
}

async fn put_configuration(
    shared: &Shared,
    cluster: &ClusterRef,
    name: &str,
    req: Request<Incoming>,
) -> Resp {
    let bytes = match read_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let (properties, protected) = match parse_management_body(&bytes) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let mut created = false;
    let result = persist(shared, |s| {
        created = s.put_configuration(cluster, name, properties, protected)
    })
    .await;
    if let Err(resp) = result {
        return resp;
    }
    shared.changes.send_modify(|v| *v += 1);
    tracing::info!(cluster = %cluster.path(), name, created, "configuration stored");
    match lock(shared).resource(cluster, name) {
        Some(r) => json(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &r,
        ),
        // Deleted by a concurrent call in between.
        None => not_found(name),
    }
}

async fn delete_configuration(shared: &Shared, cluster: &ClusterRef, name: &str) -> Resp {
    let mut existed = false;
    if let Err(resp) = persist(shared, |s| existed = s.delete_configuration(cluster, name)).await {
        return resp;
    }
    if existed {
        shared.changes.send_modify(|v| *v += 1);
        tracing::info!(cluster = %cluster.path(), name, "configuration deleted");
        empty(StatusCode::OK)
    } else {
        empty(StatusCode::NO_CONTENT)
    }
}

async fn faults_endpoint(shared: &Shared, req: Request<Incoming>) -> Resp {
    match *req.method() {
        Method::GET => json(StatusCode::OK, &shared.faults.get()),
        Method::PUT => {
            let bytes = match read_body(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            match decode::<FaultConfig>(&bytes) {
                Ok(config) => {
                    tracing::info!(?config, "faults changed");
                    shared.faults.set(config);
                    json(StatusCode::OK, &shared.faults.get())
                }
                Err(resp) => resp,
            }
        }
        _ => method_not_allowed("GET, PUT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let e = "\"abc-3\"";
        assert!(etag_matches(Some("\"abc-3\""), e));
        assert!(etag_matches(Some("W/\"abc-3\""), e));
        assert!(etag_matches(Some("\"x\", \"abc-3\""), e));
        assert!(etag_matches(Some("*"), e));
        assert!(!etag_matches(Some("\"abc-2\""), e));
        assert!(!etag_matches(Some("abc-3"), e));
        assert!(!etag_matches(None, e));
    }

    #[test]
    fn management_body_structure() {
        let ok = br#"{"properties":{"namespace":"x","complianceState":"Compliant","configurationProtectedSettings":{"sshPrivateKey":"AAAA"}}}"#;
        let (props, protected) = parse_management_body(ok).unwrap();
        assert!(!props.contains_key("complianceState"));
        assert!(!props.contains_key(PROTECTED_SETTINGS));
        assert_eq!(protected.unwrap()["sshPrivateKey"], "AAAA");
        // Semantically wrong but structurally fine: stored for the agent to judge.
        assert!(parse_management_body(br#"{"properties":{"sourceKind":"Nope"}}"#).is_ok());
        for bad in [
            &b"{"[..],
            b"[]",
            b"{}",
            br#"{"properties":3}"#,
            br#"{"properties":{"configurationProtectedSettings":[]}}"#,
            br#"{"properties":{"configurationProtectedSettings":{"k":1}}}"#,
        ] {
            assert!(parse_management_body(bad).is_err());
        }
    }

    #[test]
    fn wait_is_clamped_and_validated() {
        assert_eq!(parse_wait("").ok(), Some(Duration::ZERO));
        assert_eq!(
            parse_wait("waitSeconds=1000").ok(),
            Some(Duration::from_secs(MAX_WAIT_SECONDS))
        );
        assert!(parse_wait("waitSeconds=-1").is_err());
    }
}

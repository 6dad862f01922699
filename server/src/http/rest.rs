//! REST handlers (PROTOCOL.md section 3). Bodies are read as JSON whatever
//! the Content-Type says; a malformed or non-object body counts as `{}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{App, error_json, is_upgrade};
use crate::adapter::{AdapterSource, WIT_VERSION};
use crate::instances::Instance;
use crate::push::store::{RegisterError, valid_token};
use crate::session::{CreateError, CreateRequest, RestartError, SpawnFailure};

/// The largest REST body read (axum's default limit).
pub const MAX_BODY_BYTES: usize = 2 << 20;

/// A REST body, or the JSON answer for one that is too large
/// (`413 {error:"too_large", limit}`) or unreadable.
pub struct Body(Result<Bytes, Response>);

/// How much of a too-large body is still read (and dropped) before the
/// 413, and for how long: a connection closed with unread bytes is reset,
/// and the client would see the reset instead of the answer.
const MAX_DRAIN_BYTES: usize = 16 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        use futures_util::StreamExt;
        let mut stream = req.into_body().into_data_stream();
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) if is_body_timeout(&e) => {
                    // The body paused longer than AMARRE_BODY_TIMEOUT_MS
                    // (http/listen.rs); the connection is closed after this.
                    return Ok(Body(Err((
                        StatusCode::REQUEST_TIMEOUT,
                        [(axum::http::header::CONNECTION, "close")],
                        Json(json!({"error": "body_timeout"})),
                    )
                        .into_response())));
                }
                Err(_) => {
                    return Ok(Body(Err((
                        StatusCode::BAD_REQUEST,
                        Json(json!({"error": "bad_body"})),
                    )
                        .into_response())));
                }
            };
            if buf.len() + chunk.len() > MAX_BODY_BYTES {
                let mut drained = 0usize;
                let _ = tokio::time::timeout(DRAIN_TIME, async {
                    while let Some(Ok(c)) = stream.next().await {
                        drained += c.len();
                        if drained > MAX_DRAIN_BYTES {
                            break;
                        }
                    }
                })
                .await;
                return Ok(Body(Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Json(json!({"error": "too_large", "limit": MAX_BODY_BYTES})),
                )
                    .into_response())));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Body(Ok(buf.freeze())))
    }
}

/// Whether a body error is the body read timeout's.
fn is_body_timeout(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = err.source();
    }
    false
}

fn body_object(body: &[u8]) -> serde_json::Map<String, Value> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

fn spawn_failed(e: &SpawnFailure) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"error": "spawn_failed", "reason": e.reason, "detail": e.detail})),
    )
        .into_response()
}

pub async fn healthz() -> Response {
    Json(json!({"status": "ok", "version": crate::VERSION})).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    use crate::session::Status;
    let sessions = app.sessions.list();
    let host = app.instances.host();
    let count = |st: Status| sessions.iter().filter(|s| s.status() == st).count() as u64;
    let (calls, traps) = host.calls_and_traps();
    let gauges = crate::ops::metrics::Gauges {
        running: count(Status::Running),
        crashed: count(Status::Crashed),
        stopped: count(Status::Stopped),
        clients: sessions.iter().map(|s| s.summary().clients as u64).sum(),
        adapter_calls: calls,
        adapter_traps: traps,
        compilations: host.compilations(),
        instances: app.instances.all().len() as u64,
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(&gauges),
    )
        .into_response()
}

pub async fn instances(State(app): State<Arc<App>>) -> Response {
    let list: Vec<Value> = app
        .instances
        .all()
        .iter()
        .map(|i| json!({"id": i.config.id, "agent": i.adapter().info.name}))
        .collect();
    Json(list).into_response()
}

/// The listing entry of one instance's adapter (`GET /adapters`, and the
/// answer to a reload).
fn adapter_entry(app: &App, instance: &Instance) -> Value {
    let a = instance.adapter();
    let mut versions: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for s in app.sessions.list() {
        if s.instance_id != instance.config.id {
            continue;
        }
        if let Some(running) = s.running_adapter() {
            versions
                .entry(running.hash.clone())
                .or_insert((running.info.version.clone(), 0))
                .1 += 1;
        }
    }
    let on_current = versions.get(&a.hash).map(|v| v.1).unwrap_or(0);
    let (source, builtin) = match &a.source {
        AdapterSource::Builtin(_) => ("built-in".to_owned(), true),
        AdapterSource::File(p) => (p.display().to_string(), false),
    };
    json!({
        "instance": instance.config.id,
        "name": a.info.name,
        "version": a.info.version,
        "witVersion": WIT_VERSION,
        "hash": a.hash,
        "source": source,
        "builtin": builtin,
        "programs": a.info.programs,
        "programEnv": a.info.program_env,
        "capabilities": a.info.capabilities,
        "loadedAt": a.loaded_at_ms,
        "sessions": on_current,
        "versions": versions
            .into_iter()
            .map(|(hash, (version, sessions))| json!({"hash": hash, "version": version, "sessions": sessions}))
            .collect::<Vec<_>>(),
        "lastReloadError": instance.last_error(),
        "reloads": instance.reloads(),
        "compilations": instance.compilations(),
    })
}

/// The entry with `available` and `problem` (12.1): whether a spawn could
/// find the agent's program now.
async fn adapter_entry_checked(app: &App, instance: &Instance) -> Value {
    let mut entry = adapter_entry(app, instance);
    let problem = app.sessions.availability(instance).await;
    entry["available"] = Value::Bool(problem.is_none());
    entry["problem"] = problem.map(Value::String).unwrap_or(Value::Null);
    entry
}

pub async fn adapters(State(app): State<Arc<App>>) -> Response {
    let mut list = Vec::new();
    for i in app.instances.all().iter() {
        list.push(adapter_entry_checked(&app, i).await);
    }
    Json(list).into_response()
}

/// `POST /instances/{id}/reload`: re-reads the instance's configured path
/// (never one from the request) and answers once the reload is done.
pub async fn reload_instance(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let Some(instance) = app.instances.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown_instance", "instanceId": id})),
        )
            .into_response();
    };
    match app.instances.reload(&instance).await {
        Ok(_) => Json(adapter_entry_checked(&app, &instance).await).into_response(),
        Err(detail) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "reload_failed", "detail": detail})),
        )
            .into_response(),
    }
}

pub async fn list_sessions(State(app): State<Arc<App>>) -> Response {
    let list: Vec<_> = app.sessions.list().iter().map(|s| s.summary()).collect();
    Json(list).into_response()
}

/// Why an `env` entry cannot reach a process: an empty name, a name with
/// `=` or NUL, a value with NUL.
fn invalid_env(name: &str, value: &str) -> bool {
    name.is_empty() || name.contains(['=', '\0']) || value.contains('\0')
}

pub async fn create_session(State(app): State<Arc<App>>, body: Body) -> Response {
    let body = match body.0 {
        Ok(b) => body_object(&b),
        Err(too_large) => return too_large,
    };
    let string = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let env: BTreeMap<String, String> = match body.get("env") {
        Some(Value::Object(map)) if map.values().all(Value::is_string) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect(),
        _ => BTreeMap::new(),
    };
    if let Some((name, _)) = env.iter().find(|(k, v)| invalid_env(k, v)) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_env", "name": name})),
        )
            .into_response();
    }
    let req = CreateRequest {
        instance_id: string("instanceId"),
        name: string("name"),
        cwd: string("cwd"),
        env,
    };
    match app.sessions.create(req).await {
        Ok(handle) => (StatusCode::CREATED, Json(handle.summary())).into_response(),
        Err(CreateError::UnknownInstance(id)) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown_instance", "instanceId": id})),
        )
            .into_response(),
        Err(CreateError::NoInstance) => error_json(StatusCode::NOT_FOUND, "unknown_instance"),
        Err(CreateError::MaxSessions(limit)) => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": "max_sessions_reached", "limit": limit})),
        )
            .into_response(),
        Err(CreateError::Spawn(e)) => spawn_failed(&e),
    }
}

/// `GET /sessions/{id}`: the summary, or the WebSocket when upgrading.
pub async fn get_session(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    if is_upgrade(req.headers()) {
        return super::ws::upgrade(app, id, req).await;
    }
    match app.sessions.get(&id) {
        Some(handle) => Json(handle.summary()).into_response(),
        None => error_json(StatusCode::NOT_FOUND, "not_found"),
    }
}

pub async fn delete_session(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    if app.sessions.delete(&id).await {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error_json(StatusCode::NOT_FOUND, "not_found")
    }
}

pub async fn restart_session(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.sessions.restart(&id).await {
        Ok(handle) => Json(handle.summary()).into_response(),
        Err(RestartError::NotFound) => error_json(StatusCode::NOT_FOUND, "not_found"),
        Err(RestartError::AlreadyRunning) => error_json(StatusCode::CONFLICT, "already_running"),
        Err(RestartError::InstanceGone(instance)) => (
            StatusCode::GONE,
            Json(json!({"error": "instance_gone", "instanceId": instance})),
        )
            .into_response(),
        Err(RestartError::MaxSessions(limit)) => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": "max_sessions_reached", "limit": limit})),
        )
            .into_response(),
        Err(RestartError::Spawn(e)) => spawn_failed(&e),
    }
}

fn push_disabled() -> Response {
    error_json(StatusCode::SERVICE_UNAVAILABLE, "push_disabled")
}

pub async fn push_list(State(app): State<Arc<App>>) -> Response {
    match &app.push {
        Some(push) => Json(push.store().tokens()).into_response(),
        None => push_disabled(),
    }
}

pub async fn push_register(State(app): State<Arc<App>>, body: Body) -> Response {
    let Some(push) = &app.push else {
        return push_disabled();
    };
    let body = match body.0 {
        Ok(b) => body_object(&b),
        Err(too_large) => return too_large,
    };
    let Some(token) = body
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| valid_token(t))
    else {
        return error_json(StatusCode::BAD_REQUEST, "invalid_token");
    };
    let device = body.get("deviceName").and_then(Value::as_str);
    let platform = body.get("platform").and_then(Value::as_str);
    match push.store().register(token, device, platform) {
        Ok((stored, true)) => (StatusCode::CREATED, Json(stored)).into_response(),
        Ok((stored, false)) => Json(stored).into_response(),
        Err(RegisterError::Full) => {
            let limit = push.store().max_tokens();
            tracing::warn!(
                limit,
                "push token refused: the store is full (AMARRE_PUSH_MAX_TOKENS)"
            );
            (
                StatusCode::CONFLICT,
                Json(json!({"error": "too_many_tokens", "limit": limit})),
            )
                .into_response()
        }
        Err(RegisterError::Store(e)) => {
            tracing::error!("{e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "push_store_failed", "detail": e})),
            )
                .into_response()
        }
    }
}

pub async fn push_unregister(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    let Some(push) = &app.push else {
        return push_disabled();
    };
    match push.store().remove_all(&[token]) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::error!("{e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "push_store_failed", "detail": e})),
            )
                .into_response()
        }
    }
}

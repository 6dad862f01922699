//! The HTTP surface: REST control plane, the WebSocket data plane, and the
//! browser-safety guard in front of both (PROTOCOL.md sections 3 and 4).
//! Handlers translate between HTTP and the session layer; they own no
//! session state themselves.

pub mod app;
pub mod guard;
pub mod listen;
mod rest;
mod review;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};

use crate::config::Limits;
use crate::instances::Instances;
use crate::ops::metrics::Metrics;
use crate::push::PushService;
use crate::session::Sessions;

/// The application state: exactly what the handlers need, built once in
/// `serve` (`cli/serve.rs`).
pub struct App {
    pub(crate) sessions: Arc<Sessions>,
    /// Instances, their adapters and reloading them.
    pub(crate) instances: Arc<Instances>,
    /// The token store and dispatcher, when push is configured.
    pub(crate) push: Option<Arc<PushService>>,
    pub(crate) metrics: Arc<Metrics>,
    /// Frame and line limits, ping and idle timers of the sockets.
    pub(crate) limits: Limits,
    /// The token check; `None` when `AMARRE_AUTH=none`.
    pub(crate) auth: Option<Arc<crate::auth::Verifier>>,
}

/// A JSON error body `{"error": code}`.
pub fn error_json(status: StatusCode, code: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": code }))).into_response()
}

/// Whether the request asks for a WebSocket upgrade.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The text of the 426 on `/`.
pub const ROOT_HINT: &str = "Use /sessions/<id>; see docs/PROTOCOL.md";

/// Builds the router with its guard (first) and token check (second).
pub fn router(app: Arc<App>, guard: Arc<guard::Guard>) -> Router {
    let routes = Router::new()
        .route("/", any(root_or_app))
        .route("/app", get(app::bare))
        .route("/app/", get(app::index))
        .route("/app/{*path}", get(app::asset))
        .route("/healthz", get(rest::healthz))
        .route("/metrics", get(rest::metrics))
        .route("/instances", get(rest::instances))
        .route("/instances/{id}/reload", post(rest::reload_instance))
        .route("/adapters", get(rest::adapters))
        .route(
            "/sessions",
            get(rest::list_sessions).post(rest::create_session),
        )
        .route(
            "/sessions/{id}",
            get(rest::get_session).delete(rest::delete_session),
        )
        .route("/sessions/{id}/restart", post(rest::restart_session))
        .route("/sessions/{id}/changes", get(review::changes))
        .route("/sessions/{id}/diff", get(review::diff))
        .route("/sessions/{id}/file", get(review::file))
        .route(
            "/push/tokens",
            get(rest::push_list).post(rest::push_register),
        )
        .route("/push/tokens/{token}", delete(rest::push_unregister))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(upgrade_paths));
    crate::auth::http::layer(routes, app.auth.clone())
        .layer(middleware::from_fn_with_state(guard, guard::check))
        .with_state(app)
}

/// `/`: browsers asking for a page go to the web client (12.1); anything
/// else keeps the 426.
async fn root_or_app(method: axum::http::Method, headers: HeaderMap) -> Response {
    if method == axum::http::Method::GET && !is_upgrade(&headers) && app::wants_html(&headers) {
        return app::redirect_to_app();
    }
    root().await
}

async fn root() -> Response {
    (
        StatusCode::UPGRADE_REQUIRED,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        ROOT_HINT,
    )
        .into_response()
}

async fn not_found() -> Response {
    error_json(StatusCode::NOT_FOUND, "not_found")
}

async fn method_not_allowed() -> Response {
    error_json(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
}

/// An upgrade anywhere but `/sessions/{id}`: 426 on `/`, 404 elsewhere.
async fn upgrade_paths(req: Request, next: Next) -> Response {
    if is_upgrade(req.headers()) {
        let path = req.uri().path();
        let is_session = path
            .strip_prefix("/sessions/")
            .is_some_and(|id| !id.is_empty() && !id.contains('/'));
        if path == "/" {
            return root().await;
        }
        if !is_session {
            return not_found().await;
        }
    }
    next.run(req).await
}

//! The review routes (PROTOCOL.md section 12.4): `GET /sessions/{id}/changes`,
//! `/diff?path=` and `/file?path=`. Translation only: the session's cwd
//! comes from the registry, everything else from [`crate::review`].
//!
//! Files are served only as `text/plain; charset=utf-8` or
//! `application/octet-stream`, with `Content-Security-Policy: sandbox` and
//! `X-Content-Type-Options: nosniff`, so that a repository's HTML or script
//! never runs in the daemon's origin.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{App, error_json};
use crate::review::{self, Limits, ReviewError, Tree};

fn error_response(e: &ReviewError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match e {
        ReviewError::TooLarge(limit) => {
            (status, Json(json!({"error": e.code(), "limit": limit}))).into_response()
        }
        ReviewError::Failed(detail) => {
            tracing::warn!(detail = %detail, "review request failed");
            (status, Json(json!({"error": e.code(), "detail": detail}))).into_response()
        }
        _ => error_json(status, e.code()),
    }
}

/// Adds the headers every `/diff` and `/file` answer carries.
fn sandboxed(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The session's cwd (the daemon's when it was created without one, as a
/// spawn without cwd inherits it) and the request limits.
fn session(app: &App, id: &str) -> Option<(PathBuf, Limits)> {
    let handle = app.sessions.get(id)?;
    // An empty path makes `review::locate` use the daemon's cwd.
    let cwd = handle
        .options
        .cwd
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_default();
    let l = &app.limits;
    Some((
        cwd,
        Limits {
            max_bytes: l.review_max_bytes,
            timeout: l.review_timeout,
        },
    ))
}

fn query_path(q: Result<Query<HashMap<String, String>>, QueryRejection>) -> Option<String> {
    q.ok().and_then(|Query(mut m)| m.remove("path"))
}

/// `GET /sessions/{id}/changes`.
pub async fn changes(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let Some((cwd, limits)) = session(&app, &id) else {
        return error_json(StatusCode::NOT_FOUND, "not_found");
    };
    let result = review::bounded(limits, async {
        let tree = match review::locate(&cwd).await {
            Ok(t) => t,
            Err(ReviewError::NoSuchFile | ReviewError::IgnoredPath) => {
                return Err(ReviewError::NotARepository);
            }
            Err(e) => return Err(e),
        };
        review::changes(&tree, limits).await
    })
    .await;
    let mut resp = match result {
        Ok(c) => Json(c).into_response(),
        Err(e) => error_response(&e),
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Runs a `/diff` or `/file` request: session, path parameter, tree.
async fn with_path<F, Fut>(
    app: &App,
    id: &str,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    work: F,
) -> Result<Vec<u8>, Response>
where
    F: FnOnce(Tree, String, Limits) -> Fut,
    Fut: Future<Output = Result<Vec<u8>, ReviewError>>,
{
    let Some((cwd, limits)) = session(app, id) else {
        return Err(error_json(StatusCode::NOT_FOUND, "not_found"));
    };
    let Some(path) = query_path(q) else {
        return Err(error_response(&ReviewError::InvalidPath));
    };
    review::bounded(limits, async move {
        // A bad path is refused before git runs at all.
        review::confine::check_path(&path)?;
        let tree = review::locate(&cwd).await?;
        work(tree, path, limits).await
    })
    .await
    .map_err(|e| error_response(&e))
}

/// `GET /sessions/{id}/diff?path=`.
pub async fn diff(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let result = with_path(&app, &id, q, |tree, path, limits| async move {
        review::diff(&tree, &path, limits).await
    })
    .await;
    sandboxed(match result {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, "text/x-diff; charset=utf-8")],
            bytes,
        )
            .into_response(),
        Err(resp) => resp,
    })
}

/// `GET /sessions/{id}/file?path=`.
pub async fn file(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let result = with_path(&app, &id, q, |tree, path, limits| async move {
        review::file(&tree, &path, limits).await
    })
    .await;
    sandboxed(match result {
        Ok(bytes) => {
            let kind = if std::str::from_utf8(&bytes).is_ok() {
                "text/plain; charset=utf-8"
            } else {
                "application/octet-stream"
            };
            ([(header::CONTENT_TYPE, kind)], bytes).into_response()
        }
        Err(resp) => resp,
    })
}

//! The token check in front of every route (PROTOCOL.md 12.5). It runs
//! after the Host/Origin guard and before routing, so unknown paths answer
//! 401 too. Exempt: `GET /healthz`, the web client's static files under
//! `/app/`, and the browser redirect of `GET /` (`Accept: text/html`).
//!
//! The token comes from `Authorization: Bearer <token>`; on a WebSocket
//! upgrade also from the query parameter `token` (browsers cannot set
//! headers on a WebSocket). Missing, malformed and wrong tokens get the
//! same 401 `{"error":"unauthorized"}` after the same work.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::watch;

use super::Verifier;
use crate::http::is_upgrade;

/// Put on an authenticated WebSocket upgrade: the token generation it was
/// opened under. The socket is closed with 1008 `token rotated` when it
/// changes (see [`SocketAuth::rotated`]).
#[derive(Debug, Clone)]
pub struct SocketAuth(watch::Receiver<u64>);

impl SocketAuth {
    /// The authentication of an upgrade request, if the daemon asks for one.
    pub fn of(req: &Request) -> Option<SocketAuth> {
        req.extensions().get::<SocketAuth>().cloned()
    }

    /// Resolves when the daemon's token changes; never without a token.
    pub async fn rotated(auth: Option<SocketAuth>) {
        match auth {
            Some(mut a) => {
                // An error means the daemon is going away: keep waiting,
                // the socket ends with it.
                if a.0.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// The close code and reason for a socket whose token was rotated.
pub const ROTATED: (u16, &str) = (1008, "token rotated");

/// The 401 answer, the same whatever was wrong.
pub fn unauthorized() -> Response {
    let mut resp = crate::http::error_json(StatusCode::UNAUTHORIZED, "unauthorized");
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

/// Whether a request may go through without the token.
pub fn exempt(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    if !(method == Method::GET || method == Method::HEAD) || is_upgrade(headers) {
        return false;
    }
    if path == "/healthz" {
        return true;
    }
    if path == "/app" || path.starts_with("/app/") {
        // Static files only; no `.` or `..` segment can lead elsewhere.
        return !path.split('/').any(|s| s == "." || s == "..");
    }
    path == "/" && accepts_html(headers)
}

fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

/// The value of `Authorization: Bearer <token>` (scheme case-insensitive).
/// A header that is present but not a bearer token yields an empty value,
/// which never matches.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = match v.iter().position(|b| *b == b' ') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &b""[..]),
    };
    if scheme.eq_ignore_ascii_case(b"bearer") {
        Some(rest.trim_ascii())
    } else {
        Some(&b""[..])
    }
}

/// The `token` query parameter (base64url needs no decoding).
fn query_token(query: Option<&str>) -> Option<&[u8]> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::as_bytes)
}

/// The middleware (installed only in token mode).
pub async fn check(
    State(verifier): State<Arc<Verifier>>,
    mut req: Request,
    next: Next,
) -> Response {
    if exempt(req.method(), req.uri().path(), req.headers()) {
        return next.run(req).await;
    }
    let upgrade = is_upgrade(req.headers());
    let presented = bearer(req.headers()).or_else(|| {
        if upgrade {
            query_token(req.uri().query())
        } else {
            None
        }
    });
    match verifier.check(presented) {
        Some(generation) => {
            if upgrade {
                req.extensions_mut().insert(SocketAuth(generation));
            }
            next.run(req).await
        }
        None => {
            tracing::debug!(method = %req.method(), path = %req.uri().path(), "refused a request without the daemon's token");
            unauthorized()
        }
    }
}

/// Adds the token check to `router` when the daemon asks for one. Call it
/// before the Host/Origin guard's layer, so that the guard answers first.
pub fn layer<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    verifier: Option<Arc<Verifier>>,
) -> axum::Router<S> {
    match verifier {
        Some(v) => router.layer(axum::middleware::from_fn_with_state(v, check)),
        None => router,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_health_the_app_and_the_browser_redirect_are_exempt() {
        let none = headers(&[]);
        let html = headers(&[("accept", "text/html,application/xhtml+xml")]);
        let up = headers(&[("upgrade", "websocket"), ("accept", "text/html")]);
        assert!(exempt(&Method::GET, "/healthz", &none));
        assert!(exempt(&Method::HEAD, "/healthz", &none));
        assert!(exempt(&Method::GET, "/app/", &none));
        assert!(exempt(&Method::GET, "/app", &none));
        assert!(exempt(&Method::GET, "/app/assets/index-1234.js", &none));
        assert!(exempt(&Method::GET, "/", &html));
        assert!(!exempt(&Method::GET, "/", &none));
        assert!(!exempt(&Method::POST, "/", &html));
        assert!(!exempt(&Method::GET, "/", &up));
        assert!(!exempt(&Method::POST, "/healthz", &none));
        assert!(!exempt(&Method::POST, "/app/", &none));
        assert!(!exempt(&Method::GET, "/app/../sessions", &none));
        assert!(!exempt(&Method::GET, "/application", &none));
        assert!(!exempt(&Method::GET, "/sessions", &html));
        assert!(!exempt(&Method::GET, "/healthz/", &none));
        assert!(!exempt(&Method::GET, "/metrics", &none));
    }

    #[test]
    fn the_bearer_scheme_is_read_case_insensitively() {
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer abc")])),
            Some(&b"abc"[..])
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "bearer  abc ")])),
            Some(&b"abc"[..])
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "Basic abc")])),
            Some(&b""[..])
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "abc")])),
            Some(&b""[..])
        );
        assert_eq!(bearer(&headers(&[])), None);
    }

    #[test]
    fn the_query_token_is_one_parameter() {
        assert_eq!(
            query_token(Some("hello=1&token=abc&seq=1")),
            Some(&b"abc"[..])
        );
        assert_eq!(query_token(Some("token=")), Some(&b""[..]));
        assert_eq!(query_token(Some("xtoken=abc")), None);
        assert_eq!(query_token(None), None);
    }
}

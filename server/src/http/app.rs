//! The built-in web client (PROTOCOL.md section 12.1): `/app/` and its
//! assets, compiled into the binary from `server/web/dist` (built by
//! `scripts/build-web`), and the browser redirect on `/`.
//!
//! The files are embedded with `rust-embed` (with `debug-embed`, so debug
//! builds carry them too: no files beside the binary). When the client was
//! not built, `/app/` answers a page that says how to build it.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::RustEmbed)]
#[folder = "$AMARRE_WEB_DIST"]
struct Dist;

/// The policy of every `/app` response: nothing inline, nothing from
/// another origin; the socket goes to the page's own origin only
/// (`connect-src 'self'` covers same-origin `ws:`/`wss:` in current
/// browsers; no bare scheme source is listed).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; \
worker-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

/// Whether the web client is compiled in (`web` in `amarre.hello`).
pub fn compiled_in() -> bool {
    Dist::get("index.html").is_some()
}

/// Whether a request on `/` comes from a browser that wants a page.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("text/html"))
}

/// `303 See Other` to `/app/`.
pub fn redirect_to_app() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/app/")]).into_response()
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Vite names the files of `assets/` after their content hash.
fn is_hashed(path: &str) -> bool {
    path.starts_with("assets/")
}

fn with_headers(mut resp: Response, cache: &'static str) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

const NOT_BUILT: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>amarre: web client not built</title></head><body>\
<h1>The web client is not built into this binary</h1>\
<p>Install Node.js (20 or later), then run <code>scripts/build-web</code> \
(or <code>scripts/run</code>, which builds it) and rebuild the daemon with \
<code>cargo build -p amarre</code>.</p>\
<p>The REST and WebSocket protocol works without it: see docs/PROTOCOL.md.</p>\
</body></html>\n";

fn page(path: &str) -> Response {
    match Dist::get(path) {
        Some(file) => {
            let cache = if is_hashed(path) {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            let resp = (
                [(header::CONTENT_TYPE, content_type(path))],
                file.data.into_owned(),
            )
                .into_response();
            with_headers(resp, cache)
        }
        None if path == "index.html" => with_headers(
            (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                NOT_BUILT,
            )
                .into_response(),
            "no-store",
        ),
        None => with_headers(
            super::error_json(StatusCode::NOT_FOUND, "not_found"),
            "no-store",
        ),
    }
}

/// `GET /app/`: the client's HTML.
pub async fn index() -> Response {
    page("index.html")
}

/// `GET /app`: to `/app/`, so that relative asset paths resolve.
pub async fn bare() -> Response {
    with_headers(
        (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "/app/")]).into_response(),
        "no-store",
    )
}

/// `GET /app/<asset>`.
pub async fn asset(Path(path): Path<String>) -> Response {
    if path.is_empty() || path.ends_with('/') {
        return page("index.html");
    }
    page(&path)
}

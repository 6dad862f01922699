//! Browser safety (PROTOCOL.md section 3): `Host` and `Origin` allow-lists
//! against DNS rebinding and cross-site requests, and CORS for the
//! operator's extra origins only. Applied to every request, REST and
//! WebSocket alike, before routing.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error_json;

/// The allow-lists, computed once at start.
#[derive(Debug, Clone)]
pub struct Guard {
    host_names: Vec<String>,
    extra_hosts: Vec<String>,
    extra_origins: Vec<String>,
    bound: Option<IpAddr>,
}

impl Guard {
    /// `extra_hosts` and `extra_origins` are the configured additions;
    /// `bound` the address the daemon listens on.
    pub fn new(extra_hosts: &[String], extra_origins: &[String], bound: IpAddr) -> Guard {
        let mut host_names = vec!["localhost".to_owned()];
        if let Some(name) = hostname() {
            let name = name.to_ascii_lowercase();
            if let Some((short, _)) = name.split_once('.') {
                host_names.push(short.to_owned());
            }
            host_names.push(name);
        }
        Guard {
            host_names,
            extra_hosts: extra_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            extra_origins: extra_origins
                .iter()
                .map(|o| o.to_ascii_lowercase())
                .collect(),
            bound: (!bound.is_unspecified()).then_some(bound),
        }
    }

    /// Whether a `Host` header value (`name[:port]`) may reach the daemon.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = strip_port(host).to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        if let Ok(ip) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return ip.is_loopback()
                || is_tailnet(ip)
                || Some(ip) == self.bound
                || self
                    .extra_hosts
                    .iter()
                    .any(|h| h.trim_start_matches('[').trim_end_matches(']') == ip.to_string());
        }
        name == "localhost"
            || name.ends_with(".localhost")
            || name.ends_with(".ts.net")
            || self.host_names.iter().any(|h| h == name)
            || self
                .extra_hosts
                .iter()
                .any(|h| h == name || strip_port(h) == name)
    }

    /// Whether an `Origin` may make requests; `host` is the request's Host.
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.extra_origins.contains(&origin) {
            return true;
        }
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        if scheme != "http" && scheme != "https" {
            return false;
        }
        if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
            return true;
        }
        matches!(strip_port(authority), "localhost" | "127.0.0.1" | "[::1]")
    }

    /// Whether CORS headers are sent for this origin (configured extras only).
    pub fn cors(&self, origin: &str) -> bool {
        self.extra_origins
            .contains(&origin.trim_end_matches('/').to_ascii_lowercase())
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest
            .split_once(']')
            .map(|(ip, _)| &host[..ip.len() + 2])
            .unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// Tailscale addresses: 100.64.0.0/10 and fd7a:115c:a1e0::/48.
fn is_tailnet(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 100 && (o[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0xfd7a && s[1] == 0x115c && s[2] == 0xa1e0
        }
    }
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    std::str::from_utf8(&buf[..end])
        .ok()
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The middleware: 403 for foreign hosts and origins, CORS for extras.
pub async fn check(
    State(guard): State<std::sync::Arc<Guard>>,
    req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    let host =
        header_str(headers, header::HOST).or_else(|| req.uri().authority().map(|a| a.as_str()));
    if let Some(h) = host
        && !guard.host_allowed(h)
    {
        tracing::warn!(host = h, path = %req.uri().path(), "refused a request for a foreign Host");
        return error_json(StatusCode::FORBIDDEN, "forbidden_host");
    }
    let origin = header_str(headers, header::ORIGIN).map(str::to_owned);
    if let Some(o) = &origin
        && !guard.origin_allowed(o, host)
    {
        tracing::warn!(origin = %o, path = %req.uri().path(), "refused a request from a foreign Origin");
        return error_json(StatusCode::FORBIDDEN, "forbidden_origin");
    }
    let cors = origin.filter(|o| guard.cors(o));
    if let (Some(o), true) = (&cors, req.method() == Method::OPTIONS) {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let requested = header_str(req.headers(), header::ACCESS_CONTROL_REQUEST_HEADERS)
            .unwrap_or("content-type")
            .to_owned();
        add_cors(resp.headers_mut(), o);
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
        );
        if let Ok(v) = HeaderValue::from_str(&requested) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return resp;
    }
    let mut resp = next.run(req).await;
    if let Some(o) = &cors {
        add_cors(resp.headers_mut(), o);
    }
    resp
}

fn add_cors(h: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::new(
            &["agents.example".into()],
            &["https://app.example".into()],
            IpAddr::from([127, 0, 0, 1]),
        )
    }

    #[test]
    fn loopback_tailnet_and_configured_hosts_are_allowed() {
        let g = guard();
        for ok in [
            "127.0.0.1:8341",
            "localhost:8341",
            "LOCALHOST",
            "[::1]:8341",
            "box.tail1234.ts.net",
            "100.101.102.103:8341",
            "agents.example:443",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:8341",
            "192.168.1.5:8341",
            "ts.net.evil.com",
            "100.128.0.1",
        ] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn origins_follow_the_rules_of_section_3() {
        let g = guard();
        assert!(g.origin_allowed("http://localhost:3000", Some("127.0.0.1:8341")));
        assert!(g.origin_allowed("https://127.0.0.1", None));
        assert!(g.origin_allowed("http://[::1]:9", None));
        // The Android app sends an Origin equal to the Host.
        assert!(g.origin_allowed(
            "http://box.tail1.ts.net:8341",
            Some("box.tail1.ts.net:8341")
        ));
        assert!(g.origin_allowed("https://app.example/", None));
        assert!(!g.origin_allowed("https://evil.com", Some("127.0.0.1:8341")));
        assert!(!g.origin_allowed("null", Some("127.0.0.1:8341")));
        assert!(g.cors("https://app.example"));
        assert!(!g.cors("http://localhost:3000"));
    }
}

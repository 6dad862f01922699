//! Optional authentication (PROTOCOL.md 12.5): the token on every route,
//! the WebSocket's header and query, rotation, the token file, timing, and
//! the pairing link and its QR code.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

/// A token-mode daemon with the fake agent and its state directory.
struct Guarded {
    d: Daemon,
    state: TempDir,
}

impl Guarded {
    async fn start() -> Guarded {
        let state = TempDir::new("auth-state");
        let instances = fake_instance(json!({}));
        let dir = state.path().to_str().unwrap().to_owned();
        let d = Daemon::start(&[
            ("AMARRE_INSTANCES_JSON", instances.as_str()),
            ("AMARRE_AUTH", "token"),
            ("AMARRE_STATE_DIR", dir.as_str()),
        ])
        .await;
        Guarded { d, state }
    }

    fn token_file(&self) -> std::path::PathBuf {
        self.state.path().join("token")
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.token_file())
            .expect("the token file")
            .trim()
            .to_owned()
    }

    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("AMARRE_AUTH", "token"),
            ("AMARRE_STATE_DIR", self.state.path().to_str().unwrap()),
        ]
    }

    /// A request with these headers: (status, raw body).
    async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, String) {
        let url = format!("{}{path}", self.d.url);
        let mut req = self.d.http().request(method.parse().expect("method"), &url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b.to_owned());
        }
        let resp = tokio::time::timeout(STEP, req.send())
            .await
            .unwrap_or_else(|_| panic!("timed out: {method} {path}"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    async fn with_token(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let bearer = format!("Bearer {}", self.token());
        let (st, text) = self
            .call(method, path, &[("authorization", &bearer)], body)
            .await;
        (
            st,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn rotate(&self) -> String {
        let (code, out, err) = cli(&["token", "--rotate"], &self.env()).await;
        assert_eq!(code, 0, "amarre token --rotate: {err}");
        let new = out.trim().to_owned();
        assert_eq!(new, self.token(), "--rotate prints the token it wrote");
        new
    }
}

const UNAUTHORIZED: &str = r#"{"error":"unauthorized"}"#;

#[tokio::test]
async fn every_route_needs_the_token_except_health_and_the_app() {
    let g = Guarded::start().await;
    let token = g.token();
    assert_eq!(token.len(), 43, "32 bytes in base64url");
    let mode = std::fs::metadata(g.token_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the token file is private");

    let (st, s) = g.with_token("POST", "/sessions", Some("{}")).await;
    assert_eq!(st, 201, "{s}");
    let id = s["id"].as_str().unwrap().to_owned();
    let routes: Vec<(&str, String, Option<&str>)> = vec![
        ("GET", "/instances".into(), None),
        ("GET", "/sessions".into(), None),
        ("POST", "/sessions".into(), Some("{}")),
        ("GET", format!("/sessions/{id}"), None),
        ("POST", format!("/sessions/{id}/restart"), None),
        ("GET", "/push/tokens".into(), None),
        ("POST", "/push/tokens".into(), Some(r#"{"token":"x"}"#)),
        ("DELETE", "/push/tokens/x".into(), None),
        ("GET", "/adapters".into(), None),
        ("GET", "/metrics".into(), None),
        ("POST", "/instances/default/reload".into(), None),
        ("GET", "/".into(), None),
        ("GET", "/nowhere".into(), None),
        ("PUT", "/sessions".into(), None),
        ("POST", "/healthz".into(), None),
        ("POST", "/app/".into(), None),
        ("DELETE", "/sessions/000000000000".into(), None),
    ];
    let wrong = format!("Bearer {}", "A".repeat(43));
    let mut flipped = token.clone().into_bytes();
    flipped[42] = if flipped[42] == b'A' { b'B' } else { b'A' };
    let flipped = format!("Bearer {}", String::from_utf8(flipped).unwrap());
    let basic = format!("Basic {token}");
    let bare = token.clone();
    let bad_headers: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("authorization", wrong.as_str())],
        vec![("authorization", flipped.as_str())],
        vec![("authorization", "Bearer")],
        vec![("authorization", "Bearer ")],
        vec![("authorization", basic.as_str())],
        vec![("authorization", bare.as_str())],
    ];
    for (method, path, body) in &routes {
        for headers in &bad_headers {
            let (st, text) = g.call(method, path, headers, *body).await;
            assert_eq!(
                (st, text.as_str()),
                (401, UNAUTHORIZED),
                "{method} {path} with {headers:?}"
            );
        }
        // `?token=` counts only on WebSocket upgrades.
        let with_query = if path.contains('?') {
            format!("{path}&token={token}")
        } else {
            format!("{path}?token={token}")
        };
        let (st, text) = g.call(method, &with_query, &[], *body).await;
        assert_eq!(
            (st, text.as_str()),
            (401, UNAUTHORIZED),
            "{method} {with_query}"
        );
        // With the token the route answers as it does without auth.
        let (st, v) = g.with_token(method, path, *body).await;
        assert_ne!(st, 401, "{method} {path} with the token: {v}");
    }
    // The answers of the routes with the token are the 2.2.0 ones.
    assert_eq!(g.with_token("GET", "/nowhere", None).await.0, 404);
    assert_eq!(g.with_token("PUT", "/sessions", None).await.0, 405);
    assert_eq!(g.with_token("GET", "/", None).await.0, 426);
    assert_eq!(g.with_token("GET", "/sessions", None).await.0, 200);

    // Exempt: health, the app's static files, the browser redirect of `/`.
    let (st, text) = g.call("GET", "/healthz", &[], None).await;
    assert_eq!(st, 200, "{text}");
    for (path, headers) in [
        ("/app/", vec![]),
        ("/app/index.html", vec![]),
        ("/", vec![("accept", "text/html,application/xhtml+xml")]),
    ] {
        let (st, text) = g.call("GET", path, &headers, None).await;
        assert_ne!(st, 401, "GET {path} {headers:?} is exempt: {text}");
    }

    // The Host/Origin guard answers first.
    let (st, text) = g
        .call("GET", "/sessions", &[("host", "evil.example")], None)
        .await;
    assert_eq!((st, text.as_str()), (403, r#"{"error":"forbidden_host"}"#));
    let (st, text) = g
        .call(
            "GET",
            "/sessions",
            &[("origin", "https://evil.example")],
            None,
        )
        .await;
    assert_eq!(
        (st, text.as_str()),
        (403, r#"{"error":"forbidden_origin"}"#)
    );

    // The token is nowhere the daemon shows or writes.
    for path in ["/adapters", "/metrics", "/instances", "/sessions"] {
        let (_, v) = g.with_token("GET", path, None).await;
        assert!(!v.to_string().contains(&token), "{path} shows the token");
    }
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", g.d.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&token));
    assert!(g.d.log().contains("token authentication is on"));
    assert!(!g.d.log().contains(&token), "the log shows the token");

    // The client commands of this machine find the token themselves.
    let url = g.d.url.clone();
    let (code, out, err) = cli(&["sessions", "--url", &url, "--json"], &g.env()).await;
    assert_eq!(code, 0, "amarre sessions: {err}");
    assert!(out.contains(&id), "{out}");
    let (code, _, err) = cli(&["adapters", "--url", &url], &g.env()).await;
    assert_eq!(code, 0, "amarre adapters: {err}");
}

#[tokio::test]
async fn sockets_take_the_header_or_the_query_and_close_when_the_token_is_rotated() {
    let g = Guarded::start().await;
    let token = g.token();
    let (st, s) = g.with_token("POST", "/sessions", Some("{}")).await;
    assert_eq!(st, 201, "{s}");
    let id = s["id"].as_str().unwrap().to_owned();
    let path = format!("/sessions/{id}");

    // Refused without the token, with a wrong one, and `?token=` wrong.
    for (query, headers) in [
        (String::new(), vec![]),
        ("?token=".to_owned(), vec![]),
        (format!("?token={}", "A".repeat(43)), vec![]),
        (
            String::new(),
            vec![("authorization", format!("Bearer {}", "A".repeat(43)))],
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (st, body) = g.d.ws_refused(&format!("{path}{query}"), &headers).await;
        assert_eq!(
            (st, body.as_str()),
            (401, UNAUTHORIZED),
            "{query} {headers:?}"
        );
    }
    // An upgrade elsewhere is refused the same way before anything else.
    let (st, body) = g.d.ws_refused("/", &[]).await;
    assert_eq!((st, body.as_str()), (401, UNAUTHORIZED));

    let bearer = format!("Bearer {token}");
    let mut by_header =
        g.d.ws_with(&id, "?hello=1", &[("authorization", &bearer)])
            .await;
    let hello = by_header.recv_json("hello").await;
    assert_eq!(hello["type"], "amarre.hello");
    assert!(
        hello["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("auth")),
        "{hello}"
    );
    let mut by_query = g.d.ws(&id, &format!("?token={token}")).await;
    by_header.send_json(json!({"n": 1})).await;
    assert_eq!(by_header.recv_json("echo").await, json!({"n": 1}));
    assert_eq!(by_query.recv_json("echo").await, json!({"n": 1}));

    // SIGHUP with the same token changes nothing.
    g.d.signal(libc::SIGHUP);
    g.d.wait_log("re-reading the configuration").await;
    by_query.send_json(json!({"n": 2})).await;
    assert_eq!(
        by_header.recv_json("echo after SIGHUP").await,
        json!({"n": 2})
    );
    assert_eq!(
        by_query.recv_json("echo after SIGHUP").await,
        json!({"n": 2})
    );

    let rotated_at = Instant::now();
    let new = g.rotate().await;
    assert_ne!(new, token);
    for (ws, how) in [(&mut by_header, "header"), (&mut by_query, "query")] {
        let (closed, _) = ws.closed(&format!("the socket opened by {how}")).await;
        assert_eq!(
            closed,
            Closed {
                code: Some(1008),
                reason: "token rotated".into()
            },
            "{how}"
        );
    }
    assert!(
        rotated_at.elapsed() < Duration::from_secs(5),
        "sockets closed {:?} after the rotation",
        rotated_at.elapsed()
    );
    // The old token answers 401 (already: the sockets closed after the
    // daemon took the new one), the new one works, on REST and sockets.
    let old = format!("Bearer {token}");
    for p in ["/sessions", path.as_str()] {
        let (st, text) = g.call("GET", p, &[("authorization", &old)], None).await;
        assert_eq!((st, text.as_str()), (401, UNAUTHORIZED), "old token on {p}");
        assert_eq!(
            g.with_token("GET", p, None).await.0,
            200,
            "new token on {p}"
        );
    }
    let (st, _) = g.d.ws_refused(&format!("{path}?token={token}"), &[]).await;
    assert_eq!(st, 401, "the old token opens no socket");
    let mut fresh = g.d.ws(&id, &format!("?token={new}")).await;
    fresh.send_json(json!({"n": 3})).await;
    assert_eq!(
        fresh.recv_json("echo on a new socket").await,
        json!({"n": 3})
    );
    assert!(!g.d.log().contains(&token) && !g.d.log().contains(&new));
}

/// Wrong tokens of any length are refused after the same work: the medians
/// of a few hundred requests per kind stay within a factor of 3 (a gross
/// bound: it catches an early exit on length or on the first wrong byte
/// only when it dominates, never network noise).
#[tokio::test]
async fn wrong_tokens_of_any_length_take_about_the_same_time() {
    let g = Guarded::start().await;
    let token = g.token();
    let mut near = token.clone().into_bytes();
    near[42] = if near[42] == b'A' { b'B' } else { b'A' };
    let near = String::from_utf8(near).unwrap();
    let kinds: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("one character", Some("Bearer x".into())),
        (
            "43 wrong characters",
            Some(format!("Bearer {}", "A".repeat(43))),
        ),
        (
            "all but the last character right",
            Some(format!("Bearer {near}")),
        ),
        (
            "4000 characters",
            Some(format!("Bearer {}", "A".repeat(4000))),
        ),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    // Warm the connection up, then interleave the kinds.
    for _ in 0..20 {
        g.call("GET", "/sessions", &[], None).await;
    }
    for _ in 0..200 {
        for (i, (_, header)) in kinds.iter().enumerate() {
            let headers: Vec<(&str, &str)> = header
                .as_deref()
                .map(|h| vec![("authorization", h)])
                .unwrap_or_default();
            let t = Instant::now();
            let (st, _) = g.call("GET", "/sessions", &headers, None).await;
            times[i].push(t.elapsed());
            assert_eq!(st, 401);
        }
    }
    let medians: Vec<Duration> = times
        .iter_mut()
        .map(|t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect();
    let (min, max) = (
        medians.iter().min().copied().unwrap(),
        medians.iter().max().copied().unwrap(),
    );
    let report: Vec<String> = kinds
        .iter()
        .zip(&medians)
        .map(|((k, _), m)| format!("{k}: {m:?}"))
        .collect();
    assert!(
        max <= min * 3,
        "medians differ grossly: {}",
        report.join(", ")
    );
}

#[tokio::test]
async fn a_token_file_others_may_read_is_refused_at_start() {
    let state = TempDir::new("auth-mode");
    let file = state.path().join("token");
    let token = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq";
    for mode in [0o640, 0o604, 0o660] {
        std::fs::write(&file, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, err) = Daemon::start_failing(
            &[
                ("AMARRE_AUTH", "token"),
                ("AMARRE_STATE_DIR", state.path().to_str().unwrap()),
            ],
            &[],
        )
        .await;
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&file.display().to_string()) && err.contains(&format!("{mode:04o}")),
            "the error names the file and its mode: {err}"
        );
        assert!(!err.contains(token), "the error shows the token: {err}");
    }
    // A file that holds no token is refused too, without showing it.
    std::fs::write(&file, "s3cret-but-not-a-token\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, err) = Daemon::start_failing(
        &[
            ("AMARRE_AUTH", "token"),
            ("AMARRE_STATE_DIR", state.path().to_str().unwrap()),
        ],
        &[],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not hold a token"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    // A bad mode value is named.
    let (code, err) = Daemon::start_failing(&[("AMARRE_AUTH", "password")], &[]).await;
    assert_eq!(code, 2);
    assert!(err.contains("AMARRE_AUTH"), "{err}");
}

/// Reads the QR code `amarre pair` draws (two modules per character,
/// light modules drawn as blocks) back into an image and decodes it.
fn decode_terminal_qr(lines: &[&str]) -> String {
    const SCALE: usize = 4;
    let rows: Vec<Vec<char>> = lines.iter().map(|l| l.chars().collect()).collect();
    let width = rows.iter().map(Vec::len).max().expect("QR lines");
    let height = rows.len() * 2;
    // (x, y) in modules: light (true) or dark.
    let light = |x: usize, y: usize| -> bool {
        let c = rows[y / 2].get(x).copied().unwrap_or(' ');
        let upper = y.is_multiple_of(2);
        match c {
            '█' => true,
            '▀' => upper,
            '▄' => !upper,
            ' ' => false,
            other => panic!("unexpected character {other:?} in the QR code"),
        }
    };
    let mut img =
        rqrr::PreparedImage::prepare_from_greyscale(width * SCALE, height * SCALE, |x, y| {
            if light(x / SCALE, y / SCALE) { 255 } else { 0 }
        });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the drawing");
    let (_, content) = grids[0].decode().expect("the QR code decodes");
    content
}

#[tokio::test]
async fn pair_prints_a_link_with_the_token_whose_qr_code_decodes_back_to_it() {
    let state = TempDir::new("auth-pair");
    let env = [
        ("AMARRE_AUTH", "token"),
        ("AMARRE_STATE_DIR", state.path().to_str().unwrap()),
    ];
    // `amarre token` creates the file when the daemon has not yet.
    let (code, out, err) = cli(&["token"], &env).await;
    assert_eq!(code, 0, "{err}");
    let token = out.trim().to_owned();
    assert_eq!(token.len(), 43);
    assert_eq!(
        std::fs::read_to_string(state.path().join("token"))
            .unwrap()
            .trim(),
        token
    );
    let (code, out, err) = cli(&["pair", "--url", "https://box.tail1234.ts.net"], &env).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let link = format!("https://box.tail1234.ts.net/app/#token={token}");
    assert_eq!(lines[0], link);
    let qr: Vec<&str> = lines[1..]
        .iter()
        .copied()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(qr.len() > 10, "a QR code follows the link: {out}");
    assert_eq!(decode_terminal_qr(&qr), link);
    // Without --url the link names the configured address.
    let (code, out, _) = cli(&["pair"], &env).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("http://127.0.0.1:8341/app/#token={token}\n")),
        "{out}"
    );
    let (code, _, err) = cli(&["pair", "--url", "ftp://x"], &env).await;
    assert_eq!(code, 2, "{err}");
}

#[tokio::test]
async fn without_token_mode_nothing_asks_for_a_token() {
    let instances = fake_instance(json!({}));
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", instances.as_str())]).await;
    assert_eq!(d.get("/sessions").await.0, 200);
    let id = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let mut ws = d.ws(&id, "?hello=1").await;
    let hello = ws.recv_json("hello").await;
    assert!(
        !hello["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("auth")),
        "{hello}"
    );
}

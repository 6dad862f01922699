//! Protocol 2.4.0 for the built-in web client (PROTOCOL.md section 12.1):
//! `/app` and its headers, the browser redirect on `/`, `available` and
//! `problem` on `GET /adapters`, `cwd` and `pendingQuestions` in Summary,
//! and `amarre.question_resolved`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

async fn daemon() -> Daemon {
    let instances = fake_instance(json!({}));
    Daemon::start(&[("AMARRE_INSTANCES_JSON", instances.as_str())]).await
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

async fn fetch(d: &Daemon, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = plain_client().get(format!("{}{path}", d.url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    tokio::time::timeout(STEP, req.send())
        .await
        .unwrap_or_else(|_| panic!("timed out: GET {path}"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header on {}", r.url()))
}

fn assert_app_headers(r: &reqwest::Response) {
    let csp = header(r, "content-security-policy");
    for part in [
        "default-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "CSP lacks {part}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "inline allowed: {csp}");
    for source in csp.split([';', ' ']) {
        assert!(
            source != "ws:" && source != "wss:" && source != "*",
            "bare source {source} in {csp}"
        );
    }
    assert_eq!(header(r, "x-content-type-options"), "nosniff");
    assert_eq!(header(r, "referrer-policy"), "no-referrer");
}

fn session_id(v: &Value) -> String {
    v["id"].as_str().expect("session id").to_owned()
}

#[tokio::test]
async fn the_app_is_served_from_the_binary_with_its_headers() {
    let d = daemon().await;
    let r = fetch(&d, "/app/", &[("accept", "text/html")]).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_app_headers(&r);
    assert!(header(&r, "content-type").starts_with("text/html"));
    let cache = header(&r, "cache-control").to_owned();
    assert!(
        cache.contains("no-cache") || cache.contains("no-store"),
        "the HTML must not be cached: {cache}"
    );
    let html = r.text().await.expect("html");
    assert!(
        !html.contains("<script>") && !html.contains("<script >"),
        "no inline script: {html}"
    );
    if amarre::web_client_compiled_in() {
        // Every asset the page names is served, hashed ones immutable.
        let assets: Vec<&str> = html
            .split('"')
            .filter(|s| s.starts_with("/app/assets/"))
            .collect();
        assert!(!assets.is_empty(), "no hashed assets in {html}");
        for asset in assets {
            let r = fetch(&d, asset, &[]).await;
            assert_eq!(r.status().as_u16(), 200, "{asset}");
            assert_app_headers(&r);
            assert!(
                header(&r, "cache-control").contains("immutable"),
                "{asset} not immutable"
            );
        }
        for file in ["/app/manifest.webmanifest", "/app/sw.js"] {
            let r = fetch(&d, file, &[]).await;
            assert_eq!(r.status().as_u16(), 200, "{file}");
            assert!(!header(&r, "cache-control").contains("immutable"));
        }
    } else {
        assert!(html.contains("scripts/build-web"), "{html}");
    }
    let r = fetch(&d, "/app/no-such-file.js", &[]).await;
    assert_eq!(r.status().as_u16(), 404);
    assert_app_headers(&r);
    // `/app` leads to `/app/`.
    let r = fetch(&d, "/app", &[]).await;
    assert_eq!(header(&r, "location"), "/app/");
}

#[tokio::test]
async fn a_browser_on_root_is_sent_to_the_app_and_everything_else_keeps_the_426() {
    let d = daemon().await;
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let r = fetch(&d, "/", &[("accept", browser)]).await;
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(header(&r, "location"), "/app/");
    for accept in [None, Some("*/*"), Some("application/json")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let r = fetch(&d, "/", &headers).await;
        assert_eq!(r.status().as_u16(), 426, "accept {accept:?}");
        assert!(
            r.text()
                .await
                .unwrap_or_default()
                .contains("/sessions/<id>")
        );
    }
    let r = tokio::time::timeout(
        STEP,
        plain_client()
            .post(format!("{}/", d.url))
            .header("accept", browser)
            .send(),
    )
    .await
    .expect("POST / in time")
    .expect("POST /");
    assert_eq!(r.status().as_u16(), 426);
}

#[tokio::test]
async fn the_app_answers_through_tailscale_serve() {
    let d = daemon().await;
    let host = "box.tail1234.ts.net";
    let origin = "https://box.tail1234.ts.net";
    let r = fetch(&d, "/app/", &[("host", host), ("origin", origin)]).await;
    assert_eq!(r.status().as_u16(), 200);
    let r = fetch(&d, "/sessions", &[("host", host), ("origin", origin)]).await;
    assert_eq!(r.status().as_u16(), 200);
    let id = session_id(&d.create(json!({})).await);
    let mut ws = d
        .ws_with(&id, "?hello=1", &[("Host", host), ("Origin", origin)])
        .await;
    assert_eq!(ws.recv_json("hello").await["type"], "amarre.hello");
    let r = fetch(
        &d,
        "/app/",
        &[("host", host), ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn adapters_say_whether_the_agent_can_be_started() {
    let fake = fake_agent();
    let instances = json!([
        {"id": "fake", "agent": "stdio", "command": fake},
        {"id": "nopi", "agent": "pi", "env": {"PATH": "/nonexistent-amarre-dir"}},
        {"id": "gone", "agent": "stdio", "command": "/nonexistent-amarre-dir/agent"},
    ])
    .to_string();
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", instances.as_str())]).await;
    let (status, list) = d.get("/adapters").await;
    assert_eq!(status, 200);
    let entry = |id: &str| {
        list.as_array()
            .and_then(|a| a.iter().find(|e| e["instance"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("no entry {id} in {list}"))
    };
    let fake = entry("fake");
    assert_eq!(fake["available"], true, "{fake}");
    assert_eq!(fake["problem"], Value::Null);
    let nopi = entry("nopi");
    assert_eq!(nopi["available"], false, "{nopi}");
    assert_eq!(nopi["problem"], "pi was not found on PATH");
    let gone = entry("gone");
    assert_eq!(gone["available"], false, "{gone}");
    assert!(
        gone["problem"]
            .as_str()
            .is_some_and(|p| p.contains("/nonexistent-amarre-dir/agent")),
        "{gone}"
    );
    // The answer matches what a spawn does.
    let (status, body) = d.post("/sessions", r#"{"instanceId":"nopi"}"#).await;
    assert_eq!(
        (status, body["reason"].clone()),
        (422, json!("program_not_found"))
    );
}

#[tokio::test]
async fn summaries_carry_cwd_and_the_pending_question_count() {
    let d = daemon().await;
    let dir = TempDir::new("web-cwd");
    let cwd = dir.path().display().to_string();
    let created = d.create(json!({"cwd": cwd})).await;
    assert_eq!(created["cwd"], cwd.as_str());
    assert_eq!(created["pendingQuestions"], 0);
    let id = session_id(&created);
    let bare = d.create(json!({})).await;
    assert_eq!(bare["cwd"], Value::Null);
    let mut ws = d.ws(&id, "").await;
    for q in ["q1", "q2"] {
        ws.send_json(json!({"type": "fake.ask", "id": q, "method": "confirm", "title": "ok?"}))
            .await;
        ws.recv_until("the question", |v| {
            v["id"] == q && v["type"] == "extension_ui_request"
        })
        .await;
    }
    d.wait_summary(&id, "two pending", |s| s["pendingQuestions"] == 2)
        .await;
    let (_, list) = d.get("/sessions").await;
    let listed = list
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == id.as_str()))
        .cloned()
        .expect("listed");
    assert_eq!(listed["pendingQuestions"], 2);
    assert_eq!(listed["cwd"], cwd.as_str());
    ws.send_json(json!({"type": "extension_ui_response", "id": "q1", "confirmed": true}))
        .await;
    d.wait_summary(&id, "one pending", |s| s["pendingQuestions"] == 1)
        .await;
}

#[tokio::test]
async fn an_answer_resolves_the_question_for_every_client_once() {
    let d = daemon().await;
    let id = session_id(&d.create(json!({})).await);
    let mut a = d.ws(&id, "?seq=1").await;
    let mut b = d.ws(&id, "?seq=1").await;
    a.send_json(json!({"type": "fake.ask", "id": "q1", "method": "select", "title": "pick"}))
        .await;
    for ws in [&mut a, &mut b] {
        ws.recv_until("the question", |v| v["type"] == "extension_ui_request")
            .await;
    }
    b.send_json(json!({"type": "extension_ui_response", "id": "q1", "value": "x"}))
        .await;
    for ws in [&mut a, &mut b] {
        let resolved = ws
            .recv_until("question_resolved", |v| {
                v["type"] == "amarre.question_resolved"
            })
            .await;
        assert_eq!(resolved["id"], "q1");
        assert_eq!(resolved["reason"], "answered");
        assert!(resolved["_seq"].as_u64().is_some(), "{resolved}");
        assert_eq!(resolved.as_object().map(|o| o.len()), Some(4), "{resolved}");
    }
    // The answer reached the agent (the fake agent echoes it).
    for ws in [&mut a, &mut b] {
        ws.recv_until("the echo of the answer", |v| v["value"] == "x")
            .await;
    }
    // A later answer to the same id resolves nothing (the fake agent echoes
    // it; nothing else follows).
    a.send_json(json!({"type": "extension_ui_response", "id": "q1", "value": "y"}))
        .await;
    for ws in [&mut a, &mut b] {
        let echo = ws.recv_json("the echo of the late answer").await;
        assert_eq!(echo["value"], "y", "{echo}");
        ws.expect_silence(Duration::from_millis(400), "after a late answer")
            .await;
    }
    // A client attaching now is not offered the question.
    let mut late = d.ws(&id, "").await;
    late.expect_silence(Duration::from_millis(300), "late client")
        .await;
}

#[tokio::test]
async fn a_question_whose_timeout_passes_is_resolved_as_timeout() {
    let d = daemon().await;
    let id = session_id(&d.create(json!({})).await);
    let mut ws = d.ws(&id, "?seq=1").await;
    ws.send_json(json!({"type": "fake.ask", "id": "t1", "method": "confirm", "timeout": 300}))
        .await;
    ws.recv_until("question", |v| v["type"] == "extension_ui_request")
        .await;
    let resolved = ws
        .recv_until("timeout", |v| v["type"] == "amarre.question_resolved")
        .await;
    assert_eq!(resolved["reason"], "timeout");
    assert_eq!(resolved["id"], "t1");
    let s = d
        .wait_summary(&id, "no pending", |s| s["pendingQuestions"] == 0)
        .await;
    assert_eq!(s["status"], "running");
}

#[tokio::test]
async fn questions_are_cancelled_when_the_turn_ends_or_the_agent_dies() {
    let d = daemon().await;
    let id = session_id(&d.create(json!({})).await);
    let mut ws = d.ws(&id, "?seq=1").await;
    // The fake agent echoes: an asked-before-the-turn question survives the
    // turn's end, one asked during it is withdrawn.
    ws.send_json(json!({"type": "fake.ask", "id": "before", "method": "confirm"}))
        .await;
    ws.recv_until("before", |v| v["id"] == "before").await;
    ws.send_json(json!({"type": "agent_start"})).await;
    ws.send_json(json!({"type": "fake.ask", "id": "during", "method": "input"}))
        .await;
    ws.recv_until("during", |v| v["id"] == "during").await;
    ws.send_json(json!({"type": "agent_end", "messages": []}))
        .await;
    ws.recv_until("agent_end", |v| v["type"] == "agent_end")
        .await;
    let r = ws.recv_json("withdrawn").await;
    assert_eq!(
        (r["type"].clone(), r["id"].clone(), r["reason"].clone()),
        (
            json!("amarre.question_resolved"),
            json!("during"),
            json!("cancelled")
        ),
        "{r}"
    );
    d.wait_summary(&id, "one pending", |s| s["pendingQuestions"] == 1)
        .await;
    // A crash cancels the rest, before the crash event.
    ws.send_json(json!({"type": "fake.exit", "code": 3})).await;
    let (closed, texts) = ws.closed("crash").await;
    assert_eq!(closed.code, Some(1011));
    let records: Vec<Value> = texts
        .iter()
        .filter_map(|t| serde_json::from_str(t).ok())
        .collect();
    let pos = |pred: &dyn Fn(&Value) -> bool| records.iter().position(pred);
    let cancelled = pos(&|v| {
        v["type"] == "amarre.question_resolved" && v["id"] == "before" && v["reason"] == "cancelled"
    })
    .unwrap_or_else(|| panic!("no cancellation in {texts:?}"));
    let crash = pos(&|v| v["type"] == "amarre.session_event")
        .unwrap_or_else(|| panic!("no crash event in {texts:?}"));
    assert!(cancelled < crash, "{texts:?}");
    let s = d
        .wait_summary(&id, "crashed", |s| s["status"] == "crashed")
        .await;
    assert_eq!(s["pendingQuestions"], 0);
}

#[tokio::test]
async fn deleting_a_session_cancels_its_questions() {
    let d = daemon().await;
    let id = session_id(&d.create(json!({})).await);
    let mut ws = d.ws(&id, "").await;
    ws.send_json(json!({"type": "fake.ask", "id": "d1", "method": "editor"}))
        .await;
    ws.recv_until("question", |v| v["id"] == "d1").await;
    let (status, _) = d.delete(&format!("/sessions/{id}")).await;
    assert_eq!(status, 204);
    let (closed, texts) = ws.closed("delete").await;
    assert_eq!(closed.code, Some(1000));
    assert!(
        texts.iter().any(|t| t.contains("amarre.question_resolved")
            && t.contains("\"d1\"")
            && t.contains("cancelled")),
        "{texts:?}"
    );
}

//! Push notifications (PROTOCOL.md section 8) against the project's fake
//! Expo service on 127.0.0.1. Absence is proven by order, not by time: a
//! later push that must arrive shows that an earlier one never will.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use amarre_e2e::fake_expo::{FakeExpo, Mode};
use serde_json::{Value, json};

use crate::harness::*;

const GRACE_MS: &str = "150";

struct Setup {
    expo: FakeExpo,
    daemon: Daemon,
    store: PathBuf,
    _dir: TempDir,
}

async fn setup_with(extra: &[(&str, &str)]) -> Setup {
    let expo = FakeExpo::start().await;
    let dir = TempDir::new("push");
    let store = dir.path().join("state/push-tokens.json");
    let daemon = start(&expo, &store, extra).await;
    Setup {
        expo,
        daemon,
        store,
        _dir: dir,
    }
}

async fn start(expo: &FakeExpo, store: &std::path::Path, extra: &[(&str, &str)]) -> Daemon {
    let instances = fake_instance(json!({}));
    let store = store.to_str().unwrap().to_owned();
    let mut env = vec![
        ("AMARRE_INSTANCES_JSON", instances.as_str()),
        ("AMARRE_PUSH_TOKENS_PATH", store.as_str()),
        ("AMARRE_PUSH_GRACE_MS", GRACE_MS),
        ("AMARRE_PUSH_EXPO_URL", expo.url.as_str()),
    ];
    env.extend_from_slice(extra);
    Daemon::start(&env).await
}

async fn register(d: &Daemon, token: &str) -> (u16, Value) {
    d.post(
        "/push/tokens",
        &json!({"token": token, "deviceName": "phone", "platform": "ios"}).to_string(),
    )
    .await
}

async fn session(d: &Daemon, name: &str) -> (String, Ws) {
    let id = d.create(json!({"name": name})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ws = d.ws(&id, "").await;
    (id, ws)
}

/// Makes the fake agent ask `id` a little after the client's frame, so the
/// client's own frame does not count as presence.
async fn ask(ws: &mut Ws, id: &str, method: &str) {
    ws.send_json(json!({"type": "fake.ask", "id": id, "method": method, "title": "Run bash? /home/me/x", "delayMs": 30}))
        .await;
    ws.recv_until("the question", |v| {
        v["type"] == "extension_ui_request" && v["id"] == id
    })
    .await;
}

#[tokio::test]
async fn token_routes_validate_store_and_persist_tokens() {
    let s = setup_with(&[]).await;
    let d = &s.daemon;
    assert_eq!(d.get("/push/tokens").await, (200, json!([])));
    for bad in [
        json!({}),
        json!({"token": 5}),
        json!({"token": "hello"}),
        json!({"token": "ExpoPushToken[x"}),
    ] {
        assert_eq!(
            d.post("/push/tokens", &bad.to_string()).await,
            (400, json!({"error": "invalid_token"})),
            "{bad}"
        );
    }
    let long_name = "d".repeat(100);
    let (st, t) = d
        .post("/push/tokens", &json!({"token": "ExponentPushToken[aaa]", "deviceName": long_name, "platform": "android"}).to_string())
        .await;
    assert_eq!(st, 201);
    assert_eq!(t["token"], "ExponentPushToken[aaa]");
    assert_eq!(t["deviceName"].as_str().unwrap().chars().count(), 64);
    assert_eq!(t["platform"], "android");
    assert!(t["registeredAt"].as_u64().unwrap() > 1_600_000_000_000);
    // Known: 200 with the first registration.
    let (st, again) = d
        .post(
            "/push/tokens",
            &json!({"token": "ExponentPushToken[aaa]", "deviceName": "other", "platform": "ios"})
                .to_string(),
        )
        .await;
    assert_eq!((st, &again), (200, &t));
    let (st, w) = d
        .post(
            "/push/tokens",
            &json!({"token": "ExpoPushToken[bbb]", "platform": "plan9", "deviceName": 3})
                .to_string(),
        )
        .await;
    assert_eq!(st, 201);
    assert_eq!(
        (w["platform"].clone(), w["deviceName"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(d.get("/push/tokens").await.1.as_array().unwrap().len(), 2);
    // The file holds them; a restart loads them.
    let file: Value = serde_json::from_slice(&std::fs::read(&s.store).unwrap()).unwrap();
    assert_eq!(file.as_array().unwrap().len(), 2);
    drop(s.daemon);
    let d = start(&s.expo, &s.store, &[]).await;
    assert_eq!(d.get("/push/tokens").await.1.as_array().unwrap().len(), 2);
    // DELETE takes the URL-encoded token, 204 whether or not it existed.
    let (st, _) = d.delete("/push/tokens/ExponentPushToken%5Baaa%5D").await;
    assert_eq!(st, 204);
    let (st, _) = d.delete("/push/tokens/ExponentPushToken%5Bnever%5D").await;
    assert_eq!(st, 204);
    let left = d.get("/push/tokens").await.1;
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["token"], "ExpoPushToken[bbb]");
}

#[tokio::test]
async fn the_token_store_is_capped_and_says_so() {
    let s = setup_with(&[("AMARRE_PUSH_MAX_TOKENS", "100")]).await;
    for i in 0..100 {
        let (st, _) = register(&s.daemon, &format!("ExpoPushToken[{i}]")).await;
        assert_eq!(st, 201);
    }
    let (st, body) = register(&s.daemon, "ExpoPushToken[one-too-many]").await;
    assert_eq!(
        (st, body),
        (409, json!({"error": "too_many_tokens", "limit": 100}))
    );
    // A known token is still answered; removing one makes room.
    assert_eq!(register(&s.daemon, "ExpoPushToken[7]").await.0, 200);
    let (st, _) = s.daemon.delete("/push/tokens/ExpoPushToken%5B7%5D").await;
    assert_eq!(st, 204);
    assert_eq!(
        register(&s.daemon, "ExpoPushToken[one-too-many]").await.0,
        201
    );
    let stored: Vec<Value> = serde_json::from_slice(&std::fs::read(&s.store).unwrap()).unwrap();
    assert_eq!(stored.len(), 100);
}

#[tokio::test]
async fn push_is_disabled_without_a_path_or_with_a_bad_store_and_the_rest_serves() {
    // No path.
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &fake_instance(json!({})))]).await;
    for (method, path) in [
        ("GET", "/push/tokens"),
        ("POST", "/push/tokens"),
        ("DELETE", "/push/tokens/x"),
    ] {
        let resp = d
            .http()
            .request(method.parse().unwrap(), format!("{}{path}", d.url))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503, "{method} {path}");
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"error": "push_disabled"})
        );
    }
    // A corrupt file: disabled, one log line naming it, file untouched.
    let dir = TempDir::new("push-bad");
    let corrupt = dir.path().join("tokens.json");
    std::fs::write(&corrupt, b"[{\"token\":").unwrap();
    let expo = FakeExpo::start().await;
    let d = start(&expo, &corrupt, &[]).await;
    assert_eq!(
        d.get("/push/tokens").await,
        (503, json!({"error": "push_disabled"}))
    );
    d.wait_log("push notifications disabled").await;
    assert!(d.log().contains(corrupt.to_str().unwrap()), "{}", d.log());
    assert_eq!(std::fs::read(&corrupt).unwrap(), b"[{\"token\":");
    d.create(json!({})).await;
    // A directory that cannot be created (a file is in the way).
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let d = start(&expo, &blocker.join("tokens.json"), &[]).await;
    assert_eq!(d.get("/push/tokens").await.0, 503);
    d.wait_log("push notifications disabled").await;
    d.create(json!({})).await;
}

#[tokio::test]
async fn an_unanswered_question_pushes_once_with_the_exact_payload() {
    let s = setup_with(&[]).await;
    let d = &s.daemon;
    register(d, "ExponentPushToken[one]").await;
    let (id, mut ws) = session(d, "refactor").await;
    ask(&mut ws, "q1", "confirm").await;
    let reqs = s
        .expo
        .wait_requests(1, STEP, "the awaiting-input push")
        .await;
    assert_eq!(
        reqs[0],
        json!([{
            "to": "ExponentPushToken[one]",
            "title": "amarre · awaiting input",
            "body": "confirm: Run bash?",
            "sound": "default",
            "data": {"amarre": "1", "trigger": "awaiting_input", "sessionId": id, "sessionName": "refactor", "requestId": "q1", "method": "confirm"},
        }])
    );
    let sent = ws
        .recv_until("push_sent", |v| v["type"] == "amarre.push_sent")
        .await;
    assert_eq!(
        sent,
        json!({"type": "amarre.push_sent", "trigger": "awaiting_input", "tokens": 1, "requestId": "q1"})
    );
    // The same id again does not push again; a new id does.
    ask(&mut ws, "q1", "confirm").await;
    ask(&mut ws, "q2", "select").await;
    let reqs = s.expo.wait_requests(2, STEP, "the push for q2").await;
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1][0]["data"]["requestId"], "q2");
    assert_eq!(reqs[1][0]["body"], "select: Run bash?");
}

#[tokio::test]
async fn answers_presence_notify_and_delete_prevent_pushes() {
    let s = setup_with(&[]).await;
    let d = &s.daemon;
    register(d, "ExponentPushToken[one]").await;
    let (_, mut ws) = session(d, "a").await;
    // Answered within the grace: no push.
    ws.send_json(json!({"type": "fake.ask", "id": "answered", "method": "confirm", "delayMs": 30}))
        .await;
    ws.recv_until("question", |v| v["id"] == "answered").await;
    ws.send_json(json!({"type": "extension_ui_response", "id": "answered", "confirmed": true}))
        .await;
    // A client is present (sends text frames) during the grace: no push.
    ws.send_json(json!({"type": "fake.ask", "id": "present", "method": "confirm", "delayMs": 30}))
        .await;
    ws.recv_until("question", |v| v["id"] == "present").await;
    for n in 0..6 {
        ws.send_json(json!({"typing": n})).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // A notify never pushes.
    ws.send_json(json!({"type": "fake.ask", "id": "note", "method": "notify", "delayMs": 30}))
        .await;
    // DELETE cancels a pending timer silently.
    let (gone, mut gws) = session(d, "deleted").await;
    ask(&mut gws, "on-deleted", "confirm").await;
    d.delete(&format!("/sessions/{gone}")).await;
    // Then one question nobody answers: the first and only push.
    ask(&mut ws, "last", "confirm").await;
    let reqs = s
        .expo
        .wait_requests(1, STEP, "the push for the last question")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: Vec<Value> = s
        .expo
        .messages()
        .iter()
        .map(|m| m["data"]["requestId"].clone())
        .collect();
    assert_eq!(ids, vec![json!("last")], "{reqs:?}");
}

#[tokio::test]
async fn a_crash_pushes_even_when_a_client_is_present() {
    let s = setup_with(&[]).await;
    let d = &s.daemon;
    register(d, "ExponentPushToken[one]").await;
    let (id, mut ws) = session(d, "build").await;
    ask(&mut ws, "q1", "confirm").await;
    ws.send_json(json!({"type": "fake.exit", "code": 3})).await;
    let reqs = s.expo.wait_requests(1, STEP, "the crash push").await;
    let m = &reqs[0][0];
    assert_eq!(m["title"], "amarre · session crashed");
    assert_eq!(
        m["data"],
        json!({"amarre": "1", "trigger": "crashed", "sessionId": id, "sessionName": "build"})
    );
    let body = m["body"].as_str().unwrap();
    assert!(
        body.contains("build") && body.contains('3') && body.chars().count() <= 100,
        "{body}"
    );
    // The crash cancelled q1's timer.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(s.expo.requests().len(), 1);
}

#[tokio::test]
async fn messages_go_in_chunks_of_100_and_unregistered_devices_are_pruned() {
    let s = setup_with(&[]).await;
    let d = &s.daemon;
    for n in 0..250 {
        let (st, _) = register(d, &format!("ExponentPushToken[t{n}]")).await;
        assert_eq!(st, 201);
    }
    let mut errors = HashMap::new();
    errors.insert(
        "ExponentPushToken[t5]".to_owned(),
        "DeviceNotRegistered".to_owned(),
    );
    errors.insert(
        "ExponentPushToken[t150]".to_owned(),
        "DeviceNotRegistered".to_owned(),
    );
    errors.insert(
        "ExponentPushToken[t7]".to_owned(),
        "MessageRateExceeded".to_owned(),
    );
    s.expo.set_mode(Mode::Errors(errors));
    let (_, mut ws) = session(d, "many").await;
    ask(&mut ws, "q1", "confirm").await;
    let reqs = s.expo.wait_requests(3, STEP, "three chunks").await;
    let sizes: Vec<usize> = reqs.iter().map(|r| r.as_array().unwrap().len()).collect();
    assert_eq!(sizes, vec![100, 100, 50]);
    let sent = ws
        .recv_until("push_sent", |v| v["type"] == "amarre.push_sent")
        .await;
    assert_eq!(sent["tokens"], 247, "ok tickets only");
    let tokens = d.get("/push/tokens").await.1;
    let names: Vec<&str> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 248);
    assert!(
        !names.contains(&"ExponentPushToken[t5]") && !names.contains(&"ExponentPushToken[t150]")
    );
    assert!(
        names.contains(&"ExponentPushToken[t7]"),
        "other errors keep the token"
    );
    let file: Value = serde_json::from_slice(&std::fs::read(&s.store).unwrap()).unwrap();
    assert_eq!(
        file.as_array().unwrap().len(),
        248,
        "pruned from the file too"
    );
}

#[tokio::test]
async fn provider_failures_keep_every_token_and_count_nothing() {
    let s = setup_with(&[]).await;
    let d = &s.daemon;
    register(d, "ExponentPushToken[one]").await;
    let (_, mut ws) = session(d, "x").await;
    for (n, mode) in [Mode::Status(500), Mode::Malformed, Mode::Status(400)]
        .into_iter()
        .enumerate()
    {
        s.expo.set_mode(mode);
        ask(&mut ws, &format!("q{n}"), "confirm").await;
        s.expo.wait_requests(n + 1, STEP, "a push attempt").await;
    }
    // The last attempt was answered; an ok push afterwards still reaches
    // the device, and only its push_sent is seen.
    s.expo.set_mode(Mode::Ok);
    ask(&mut ws, "ok", "confirm").await;
    let sent = ws
        .recv_until("push_sent", |v| v["type"] == "amarre.push_sent")
        .await;
    assert_eq!(sent["requestId"], "ok");
    assert_eq!(d.get("/push/tokens").await.1.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_slow_or_dead_provider_never_delays_frames() {
    let s = setup_with(&[]).await;
    let d = &s.daemon;
    register(d, "ExponentPushToken[one]").await;
    s.expo.set_mode(Mode::Hang);
    let (id, mut ws) = session(d, "x").await;
    ask(&mut ws, "q1", "confirm").await;
    s.expo.wait_requests(1, STEP, "the push is in flight").await;
    // While the provider holds the request open, records flow.
    for n in 0..20 {
        ws.send_json(json!({"n": n})).await;
        assert_eq!(
            ws.recv_json("echo while the push hangs").await,
            json!({"n": n})
        );
    }
    assert_eq!(
        s.expo.answered(),
        0,
        "the provider never answered during the exchange"
    );
    // And the session can be deleted.
    assert_eq!(d.delete(&format!("/sessions/{id}")).await.0, 204);
}

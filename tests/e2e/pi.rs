//! The `pi` adapter with the real pi CLI (pinned, from the npm registry)
//! against the project's fake LLM on 127.0.0.1, through the daemon over
//! real WebSockets.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

struct PiSetup {
    pi: OfflinePi,
    daemon: Daemon,
    work: TempDir,
}

async fn pi_daemon(extra_env: Value) -> PiSetup {
    let pi = OfflinePi::start().await;
    let mut env = pi.env();
    if let (Some(env), Some(extra)) = (env.as_object_mut(), extra_env.as_object()) {
        env.insert("PI_BIN".into(), json!(agent_cli("pi")));
        env.extend(extra.clone());
    }
    let instances = json!([{
        "id": "default",
        "agent": "pi",
        "env": env,
        "args": PI_OFFLINE_ARGS,
    }])
    .to_string();
    let daemon = Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", &instances),
        ("AMARRE_KILL_GRACE_MS", "2000"),
    ])
    .await;
    PiSetup {
        pi,
        daemon,
        work: TempDir::new("pi-work"),
    }
}

async fn pi_session(setup: &PiSetup) -> (String, Ws) {
    let s = setup.daemon.create(json!({"cwd": setup.work.path()})).await;
    assert_eq!(s["agent"], "pi");
    let id = s["id"].as_str().unwrap().to_owned();
    let ws = setup.daemon.ws(&id, "").await;
    (id, ws)
}

fn is(v: &Value, ty: &str) -> bool {
    v["type"] == ty
}

/// Sends a prompt and waits for the gate's question.
async fn prompt_until_question(ws: &mut Ws, id: &str, message: &str) -> Value {
    ws.send_json(json!({"type": "prompt", "id": id, "message": message}))
        .await;
    let seen = ws
        .recv_until_within(AGENT_STEP, "the gate's confirm request", |v| {
            is(v, "extension_ui_request") && v["method"] == "confirm"
        })
        .await;
    assert!(
        seen.iter()
            .any(|v| is(v, "response") && v["command"] == "prompt" && v["id"] == id),
        "the prompt is acknowledged first: {seen:?}"
    );
    seen.last().cloned().unwrap()
}

fn assert_file(path: &Path, exists: bool) {
    assert_eq!(
        path.exists(),
        exists,
        "{} should {}exist",
        path.display(),
        if exists { "" } else { "not " }
    );
}

#[tokio::test]
async fn pi_asks_before_a_tool_and_runs_it_when_allowed() {
    let _serial = agent_lock().await;
    let setup = pi_daemon(json!({})).await;
    let (_, mut ws) = pi_session(&setup).await;
    let q = prompt_until_question(&mut ws, "p1", "Please RUN: touch allowed.txt").await;
    assert_eq!(q["title"], "Run bash?");
    let message = q["message"].as_str().unwrap();
    assert!(message.contains("touch allowed.txt"), "{message}");
    assert!(message.chars().count() <= 400);
    ws.send_json(json!({"type": "extension_ui_response", "id": q["id"], "confirmed": true}))
        .await;
    let seen = ws
        .recv_until_within(AGENT_STEP, "tool_execution_end", |v| {
            is(v, "tool_execution_end")
        })
        .await;
    assert_eq!(seen.last().unwrap()["isError"], false, "{seen:?}");
    ws.until_agent_end("agent_end").await;
    assert_file(&setup.work.path().join("allowed.txt"), true);
    assert!(
        setup.pi.llm.requests().len() >= 2,
        "pi talked to the fake LLM"
    );

    // A second prompt in the same session.
    ws.send_json(json!({"type": "prompt", "id": "p2", "message": "hello again"}))
        .await;
    let seen = ws.until_agent_end("the second agent_end").await;
    let text: String = seen
        .iter()
        .filter(|v| is(v, "message_update") && v["assistantMessageEvent"]["type"] == "text_delta")
        .filter_map(|v| v["assistantMessageEvent"]["delta"].as_str())
        .collect();
    assert_eq!(text, "You said: hello again", "{seen:?}");

    // get_state is answered by pi.
    ws.send_json(json!({"type": "get_state", "id": "s1"})).await;
    let seen = ws
        .recv_until_within(AGENT_STEP, "get_state response", |v| {
            is(v, "response") && v["id"] == "s1"
        })
        .await;
    let state = seen.last().unwrap();
    assert_eq!(state["success"], true, "{state}");
    assert_eq!(state["command"], "get_state");
    assert_eq!(state["data"]["isStreaming"], false, "{state}");
}

#[tokio::test]
async fn a_denied_tool_is_blocked_and_reported_as_an_error() {
    let _serial = agent_lock().await;
    let setup = pi_daemon(json!({})).await;
    let (_, mut ws) = pi_session(&setup).await;
    let q = prompt_until_question(&mut ws, "p1", "RUN: touch denied.txt").await;
    ws.send_json(json!({"type": "extension_ui_response", "id": q["id"], "confirmed": false}))
        .await;
    let seen = ws
        .recv_until_within(AGENT_STEP, "tool_execution_end", |v| {
            is(v, "tool_execution_end")
        })
        .await;
    let end = seen.last().unwrap();
    assert_eq!(end["isError"], true, "{end}");
    assert!(
        end.to_string().contains("declined"),
        "the reason says the remote user declined: {end}"
    );
    ws.until_agent_end("agent_end").await;
    assert_file(&setup.work.path().join("denied.txt"), false);
}

#[tokio::test]
async fn two_clients_see_the_question_and_the_first_answer_wins() {
    let _serial = agent_lock().await;
    let setup = pi_daemon(json!({})).await;
    let (id, mut a) = pi_session(&setup).await;
    let mut b = setup.daemon.ws(&id, "").await;
    let q = prompt_until_question(&mut a, "p1", "RUN: touch first-wins.txt").await;
    let qb = b
        .recv_until_within(AGENT_STEP, "the question at the second client", |v| {
            is(v, "extension_ui_request") && v["method"] == "confirm"
        })
        .await;
    assert_eq!(qb.last().unwrap()["id"], q["id"]);
    // Two sockets race to the session, so the second answer is sent once
    // the first one visibly took effect: it arrives later, as a phone's
    // would, and must change nothing.
    a.send_json(json!({"type": "extension_ui_response", "id": q["id"], "confirmed": true}))
        .await;
    let seen = a
        .recv_until_within(AGENT_STEP, "tool_execution_end", |v| {
            is(v, "tool_execution_end")
        })
        .await;
    assert_eq!(seen.last().unwrap()["isError"], false);
    b.send_json(json!({"type": "extension_ui_response", "id": q["id"], "confirmed": false}))
        .await;
    b.recv_until_within(AGENT_STEP, "agent_end at the second client", |v| {
        is(v, "agent_end")
    })
    .await;
    assert_file(&setup.work.path().join("first-wins.txt"), true);
    a.recv_until_within(AGENT_STEP, "agent_end at the first client", |v| {
        is(v, "agent_end")
    })
    .await;
    // The late answer was harmless: the session goes on.
    a.send_json(json!({"type": "prompt", "id": "p2", "message": "after both answers"}))
        .await;
    let seen = a.until_agent_end("the next agent_end").await;
    assert!(
        seen.iter()
            .any(|v| is(v, "response") && v["id"] == "p2" && v["success"] == true)
    );
}

#[tokio::test]
async fn abort_interrupts_a_long_tool_call() {
    let _serial = agent_lock().await;
    let setup = pi_daemon(json!({})).await;
    let (_, mut ws) = pi_session(&setup).await;
    let q = prompt_until_question(&mut ws, "p1", "RUN: sleep 30 && touch never.txt").await;
    ws.send_json(json!({"type": "extension_ui_response", "id": q["id"], "confirmed": true}))
        .await;
    ws.recv_until_within(AGENT_STEP, "the tool starts running", |v| {
        is(v, "tool_execution_update") || is(v, "tool_execution_start")
    })
    .await;
    ws.send_json(json!({"type": "abort", "id": "a1"})).await;
    let seen = ws
        .recv_until_within(Duration::from_secs(25), "the abort response", |v| {
            is(v, "response") && v["id"] == "a1"
        })
        .await;
    assert_eq!(seen.last().unwrap()["success"], true);
    assert!(
        seen.iter().any(|v| is(v, "agent_end")),
        "abort ends the run: {seen:?}"
    );
    assert_file(&setup.work.path().join("never.txt"), false);
}

#[tokio::test]
async fn the_allow_list_skips_the_question() {
    let _serial = agent_lock().await;
    let setup = pi_daemon(json!({"AMARRE_PI_GATE_ALLOW": "read, bash"})).await;
    let (_, mut ws) = pi_session(&setup).await;
    ws.send_json(json!({"type": "prompt", "id": "p1", "message": "RUN: touch unasked.txt"}))
        .await;
    let seen = ws.until_agent_end("agent_end").await;
    assert!(
        !seen
            .iter()
            .any(|v| is(v, "extension_ui_request") && v["method"] == "confirm"),
        "no question: {seen:?}"
    );
    assert_file(&setup.work.path().join("unasked.txt"), true);
}

#[tokio::test]
async fn an_unanswered_question_is_denied_after_the_gate_timeout() {
    let _serial = agent_lock().await;
    let setup = pi_daemon(json!({"AMARRE_PI_GATE_TIMEOUT_MS": "300"})).await;
    let (_, mut ws) = pi_session(&setup).await;
    let q = prompt_until_question(&mut ws, "p1", "RUN: touch too-late.txt").await;
    assert_eq!(q["timeout"], 300, "{q}");
    let seen = ws
        .recv_until_within(AGENT_STEP, "tool_execution_end", |v| {
            is(v, "tool_execution_end")
        })
        .await;
    assert_eq!(seen.last().unwrap()["isError"], true);
    assert_file(&setup.work.path().join("too-late.txt"), false);
}

#[tokio::test]
async fn killing_pi_yields_the_crash_event() {
    let _serial = agent_lock().await;
    let setup = pi_daemon(json!({})).await;
    let (id, mut ws) = pi_session(&setup).await;
    ws.send_json(json!({"type": "get_state", "id": "s1"})).await;
    ws.recv_until_within(AGENT_STEP, "pi is up", |v| is(v, "response"))
        .await;
    let pid = setup.daemon.get(&format!("/sessions/{id}")).await.1["pid"]
        .as_u64()
        .unwrap();
    // SAFETY: signalling the agent this test's daemon started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let seen = ws
        .recv_until_within(AGENT_STEP, "the crash event", |v| {
            is(v, "amarre.session_event")
        })
        .await;
    assert_eq!(seen.last().unwrap()["signal"], "SIGKILL");
    let (closed, _) = ws.closed("close after the crash").await;
    assert_eq!(closed.code, Some(1011));
}

//! The `claude-code` adapter with the real Claude Code CLI (pinned, from
//! the npm registry) against the project's fake Anthropic API on
//! 127.0.0.1, through the daemon over real WebSockets.

use std::time::Duration;

use amarre_e2e::fake_llm::FakeLlm;
use serde_json::{Value, json};

use crate::harness::*;

struct ClaudeSetup {
    llm: FakeLlm,
    daemon: Daemon,
    work: TempDir,
    _home: TempDir,
}

async fn claude_daemon() -> ClaudeSetup {
    let llm = FakeLlm::start().await;
    let home = TempDir::new("claude-home");
    let env = json!({
        "CLAUDE_BIN": agent_cli("claude"),
        "ANTHROPIC_BASE_URL": llm.url,
        "ANTHROPIC_API_KEY": "dummy",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "HOME": home.path(),
    });
    let instances = json!([{"id": "default", "agent": "claude-code", "env": env}]).to_string();
    let daemon = Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", &instances),
        ("AMARRE_KILL_GRACE_MS", "2000"),
    ])
    .await;
    ClaudeSetup {
        llm,
        daemon,
        work: TempDir::new("claude-work"),
        _home: home,
    }
}

async fn claude_session(setup: &ClaudeSetup) -> Ws {
    let s = setup.daemon.create(json!({"cwd": setup.work.path()})).await;
    assert_eq!(s["agent"], "claude-code");
    setup.daemon.ws(s["id"].as_str().unwrap(), "").await
}

fn is(v: &Value, ty: &str) -> bool {
    v["type"] == ty
}

fn confirm(v: &Value) -> bool {
    is(v, "extension_ui_request") && v["method"] == "confirm"
}

async fn ask(ws: &mut Ws, id: &str, message: &str) -> Value {
    ws.send_json(json!({"type": "prompt", "id": id, "message": message}))
        .await;
    let seen = ws
        .recv_until_within(AGENT_STEP, "the permission question", confirm)
        .await;
    assert!(
        seen.iter()
            .any(|v| is(v, "response") && v["id"] == id && v["success"] == true),
        "{seen:?}"
    );
    assert!(seen.iter().any(|v| is(v, "agent_start")), "{seen:?}");
    seen.last().cloned().unwrap()
}

fn text_of(seen: &[Value]) -> String {
    seen.iter()
        .filter(|v| is(v, "message_update") && v["assistantMessageEvent"]["type"] == "text_delta")
        .filter_map(|v| v["assistantMessageEvent"]["delta"].as_str())
        .collect()
}

#[tokio::test]
async fn claude_asks_before_a_write_and_allowing_runs_it() {
    let _serial = agent_lock().await;
    let setup = claude_daemon().await;
    let mut ws = claude_session(&setup).await;
    let q = ask(&mut ws, "p1", "RUN: touch allowed.txt").await;
    assert_eq!(q["title"], "Run Bash?");
    assert!(
        q["message"].as_str().unwrap().contains("touch allowed.txt"),
        "{q}"
    );
    ws.send_json(json!({"type": "extension_ui_response", "id": q["id"], "confirmed": true}))
        .await;
    let seen = ws.until_agent_end("agent_end").await;
    let end = seen
        .iter()
        .find(|v| is(v, "tool_execution_end"))
        .expect("tool_execution_end");
    assert_eq!(end["isError"], false, "{end}");
    assert!(setup.work.path().join("allowed.txt").exists());
    let turn_end = seen.iter().find(|v| is(v, "turn_end")).unwrap();
    assert_eq!(turn_end["toolResults"].as_array().unwrap().len(), 1);
    assert_eq!(seen.iter().filter(|v| is(v, "agent_end")).count(), 1);
}

#[tokio::test]
async fn denying_blocks_the_write_and_claude_continues() {
    let _serial = agent_lock().await;
    let setup = claude_daemon().await;
    let mut ws = claude_session(&setup).await;
    let q = ask(&mut ws, "p1", "RUN: touch denied.txt").await;
    ws.send_json(json!({"type": "extension_ui_response", "id": q["id"], "confirmed": false}))
        .await;
    let seen = ws.until_agent_end("agent_end").await;
    let end = seen
        .iter()
        .find(|v| is(v, "tool_execution_end"))
        .expect("tool_execution_end");
    assert_eq!(end["isError"], true);
    assert!(
        text_of(&seen).starts_with("Done: The remote user denied"),
        "Claude went on: {}",
        text_of(&seen)
    );
    assert!(!setup.work.path().join("denied.txt").exists());
    // The session takes the next prompt.
    ws.send_json(json!({"type": "prompt", "id": "p2", "message": "still there?"}))
        .await;
    let seen = ws.until_agent_end("the second agent_end").await;
    assert_eq!(text_of(&seen), "You said: still there?");
}

#[tokio::test]
async fn a_read_only_command_asks_too_because_of_the_ask_list() {
    let _serial = agent_lock().await;
    let setup = claude_daemon().await;
    let mut ws = claude_session(&setup).await;
    let q = ask(&mut ws, "p1", "RUN: ls").await;
    assert_eq!(q["title"], "Run Bash?");
    ws.send_json(json!({"type": "extension_ui_response", "id": q["id"], "confirmed": true}))
        .await;
    ws.until_agent_end("agent_end").await;
}

#[tokio::test]
async fn in_plan_mode_a_plan_is_captured_for_the_user() {
    let _serial = agent_lock().await;
    let setup = claude_daemon().await;
    let mut ws = claude_session(&setup).await;
    ws.send_json(json!({"type": "set_permission_mode", "id": "m1", "mode": "plan"}))
        .await;
    let seen = ws
        .recv_until_within(AGENT_STEP, "the mode is set", |v| {
            is(v, "response") && v["id"] == "m1"
        })
        .await;
    assert_eq!(seen.last().unwrap()["success"], true, "{seen:?}");
    ws.send_json(json!({"type": "prompt", "id": "p1", "message": "PLAN: 1. refactor 2. test"}))
        .await;
    let seen = ws
        .recv_until_within(AGENT_STEP, "the plan capture", |v| {
            is(v, "extension_ui_request") && v["event"] == "plan_capture"
        })
        .await;
    let plan = seen.last().unwrap();
    assert_eq!(plan["method"], "notify");
    assert_eq!(plan["message"], "1. refactor 2. test");
    assert!(plan.get("id").is_none(), "{plan}");
    let seen = ws.until_agent_end("agent_end").await;
    assert!(
        text_of(&seen).contains("Plan captured"),
        "Claude was told to wait: {}",
        text_of(&seen)
    );
}

#[tokio::test]
async fn abort_interrupts_a_long_tool_call_and_the_next_prompt_works() {
    let _serial = agent_lock().await;
    let setup = claude_daemon().await;
    let mut ws = claude_session(&setup).await;
    let q = ask(&mut ws, "p1", "RUN: sleep 30").await;
    ws.send_json(json!({"type": "extension_ui_response", "id": q["id"], "confirmed": true}))
        .await;
    // Let the command start, then abort.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ws.send_json(json!({"type": "abort", "id": "a1"})).await;
    let seen = ws
        .recv_until_within(Duration::from_secs(25), "the abort response", |v| {
            is(v, "response") && v["id"] == "a1"
        })
        .await;
    let error = seen
        .iter()
        .find(|v| is(v, "message_update") && v["assistantMessageEvent"]["type"] == "error")
        .expect("the abort is surfaced");
    assert_eq!(error["assistantMessageEvent"]["reason"], "aborted");
    assert_eq!(
        seen.iter().filter(|v| is(v, "agent_end")).count(),
        1,
        "balanced"
    );
    ws.send_json(json!({"type": "prompt", "id": "p2", "message": "after the abort"}))
        .await;
    let seen = ws.until_agent_end("agent_end after the abort").await;
    assert_eq!(text_of(&seen), "You said: after the abort");
}

#[tokio::test]
async fn a_follow_up_sent_during_a_turn_is_delivered_after_it() {
    let _serial = agent_lock().await;
    let setup = claude_daemon().await;
    let mut ws = claude_session(&setup).await;
    // The turn waits on the question, so it is certainly running.
    let q = ask(&mut ws, "p1", "RUN: touch first.txt").await;
    ws.send_json(json!({"type": "follow_up", "id": "f1", "message": "and then this"}))
        .await;
    let seen = ws
        .recv_until_within(AGENT_STEP, "queue_update", |v| is(v, "queue_update"))
        .await;
    assert!(
        seen.iter()
            .any(|v| is(v, "response") && v["id"] == "f1" && v["success"] == true)
    );
    assert_eq!(seen.last().unwrap()["followUp"], json!(["and then this"]));
    ws.send_json(json!({"type": "extension_ui_response", "id": q["id"], "confirmed": true}))
        .await;
    let first = ws.until_agent_end("the first agent_end").await;
    assert!(!text_of(&first).contains("and then this"));
    let second = ws.until_agent_end("the follow-up's agent_end").await;
    assert!(second.iter().any(|v| is(v, "agent_start")), "{second:?}");
    assert_eq!(text_of(&second), "You said: and then this");
    // get_messages holds the whole history, user messages included.
    ws.send_json(json!({"type": "get_messages", "id": "g1"}))
        .await;
    let seen = ws
        .recv_until_within(AGENT_STEP, "get_messages", |v| {
            is(v, "response") && v["id"] == "g1"
        })
        .await;
    let roles: Vec<&str> = seen.last().unwrap()["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        vec![
            "user",
            "assistant",
            "toolResult",
            "assistant",
            "user",
            "assistant"
        ]
    );
}

#[tokio::test]
async fn set_model_reaches_the_api_requests() {
    let _serial = agent_lock().await;
    let setup = claude_daemon().await;
    let mut ws = claude_session(&setup).await;
    ws.send_json(json!({"type": "set_model", "id": "m1", "provider": "anthropic", "modelId": "claude-test-model"})).await;
    let seen = ws
        .recv_until_within(AGENT_STEP, "set_model response", |v| {
            is(v, "response") && v["id"] == "m1"
        })
        .await;
    let r = seen.last().unwrap();
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["data"]["id"], "claude-test-model");
    ws.send_json(json!({"type": "prompt", "id": "p1", "message": "which model?"}))
        .await;
    ws.until_agent_end("agent_end").await;
    let models = setup.llm.models();
    assert_eq!(
        models.last().map(String::as_str),
        Some("claude-test-model"),
        "{models:?}"
    );
    ws.send_json(json!({"type": "get_state", "id": "s1"})).await;
    let seen = ws
        .recv_until_within(AGENT_STEP, "get_state", |v| {
            is(v, "response") && v["id"] == "s1"
        })
        .await;
    assert_eq!(
        seen.last().unwrap()["data"]["model"]["id"],
        "claude-test-model"
    );
}

//! WIT 0.2.0 through the real daemon: the `acp` adapter's handshake reaches
//! the agent before any client record, the session keeps the resume token
//! it reports, and a restart hands it back (`session/load`). The agent is a
//! small `sh` script that speaks just enough ACP and checks the order of
//! what it reads; it exits with a distinct code when something is out of
//! order.

use serde_json::json;

use crate::harness::*;

/// Reads `initialize`, then `session/new` (answered `sessionId: s-new`) or a
/// `session/load` of `s-new`, then a `session/prompt`; answers the prompt
/// with one text chunk naming what it saw (`cwd=<dir> new` or `loaded`),
/// then exits.
const AGENT: &str = r#"
read -r a
case "$a" in *'"method":"initialize"'*) ;; *) echo "first line was not initialize: $a" >&2; exit 3;; esac
echo '{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"agentCapabilities":{"loadSession":true},"agentInfo":{"name":"sh-agent"}}}'
read -r b
case "$b" in
  *'"method":"session/new"'*"\"cwd\":\"$PWD\""*) seen="cwd=$PWD new" ;;
  *'"method":"session/load"'*'"sessionId":"s-new"'*) seen="loaded" ;;
  *) echo "second line was not session/new or a load of s-new: $b" >&2; exit 4;;
esac
echo '{"jsonrpc":"2.0","id":1,"result":{"sessionId":"s-new"}}'
read -r c
case "$c" in *'"method":"session/prompt"'*) ;; *) echo "third line was not the prompt: $c" >&2; exit 5;; esac
echo "{\"jsonrpc\":\"2.0\",\"method\":\"session/update\",\"params\":{\"sessionId\":\"s-new\",\"update\":{\"sessionUpdate\":\"agent_message_chunk\",\"content\":{\"type\":\"text\",\"text\":\"$seen\"}}}}"
echo '{"jsonrpc":"2.0","id":2,"result":{"stopReason":"end_turn"}}'
"#;

async fn prompt_and_read_text(d: &Daemon, id: &str) -> String {
    let mut ws = d.ws(id, "").await;
    // Sent at once: the adapter holds it until the session exists.
    ws.send_json(json!({"type": "prompt", "id": "p1", "message": "hi"}))
        .await;
    let delta = ws
        .recv_until("the agent's text chunk", |v| {
            v["type"] == "message_update" && v["assistantMessageEvent"]["type"] == "text_delta"
        })
        .await;
    ws.until_agent_end("the turn's end").await;
    delta["assistantMessageEvent"]["delta"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_acp_handshake_comes_first_and_a_restart_resumes_the_session() {
    let work = TempDir::new("acp-work");
    let cwd = std::fs::canonicalize(work.path()).unwrap();
    let cwd = cwd.to_string_lossy().into_owned();
    let instances =
        json!([{"id": "acp", "agent": "acp", "command": "sh", "args": ["-c", AGENT]}]).to_string();
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &instances)]).await;
    let summary = d.create(json!({"instanceId": "acp", "cwd": cwd})).await;
    let id = summary["id"].as_str().unwrap().to_owned();
    assert_eq!(summary["agent"], "acp");

    // First run: initialize and session/new (with the session's cwd) came
    // before the prompt.
    let seen = prompt_and_read_text(&d, &id).await;
    assert_eq!(seen, format!("cwd={cwd} new"), "log:\n{}", d.log());
    let s = d
        .wait_summary(&id, "the agent's exit", |s| s["status"] == "crashed")
        .await;
    assert_eq!(s["exitCode"], 0, "the script exits 0 only in order: {s}");

    // Second run: the token the adapter reported (the ACP sessionId) is
    // handed back, and the adapter loads the session instead.
    let (st, body) = d.post(&format!("/sessions/{id}/restart"), "").await;
    assert_eq!(st, 200, "{body}");
    let seen = prompt_and_read_text(&d, &id).await;
    assert_eq!(seen, "loaded", "log:\n{}", d.log());
}

#[tokio::test]
async fn an_acp_instance_without_a_command_fails_to_spawn_saying_so() {
    let instances = json!([{"id": "acp", "agent": "acp"}]).to_string();
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &instances)]).await;
    let (st, body) = d.post("/sessions", r#"{"instanceId":"acp"}"#).await;
    assert_eq!(st, 422, "{body}");
    let text = body.to_string();
    assert!(text.contains("needs the instance's `command`"), "{text}");
}

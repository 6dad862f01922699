//! The `acp` adapter with real Agent Client Protocol agents (pinned, from
//! the npm registry: Qwen Code, codex-acp, claude-agent-acp) against the
//! project's fake LLM on 127.0.0.1, through the daemon over real
//! WebSockets. What the adapter owes the client is AGENTS.md section 5; how
//! each agent runs offline is docs/adapters/acp-testing.md.

use std::path::Path;
use std::time::{Duration, Instant};

use amarre_e2e::fake_llm::FakeLlm;
use serde_json::{Value, json};

use crate::harness::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Agent {
    Qwen,
    Codex,
    Claude,
}

struct AcpSetup {
    agent: Agent,
    llm: FakeLlm,
    daemon: Daemon,
    work: TempDir,
    _home: TempDir,
    /// The sessions made, with their agent's process group.
    sessions: std::sync::Mutex<Vec<(String, u32)>>,
}

impl Drop for AcpSetup {
    /// The daemon is killed when dropped, which leaves its agents to exit
    /// on stdin EOF; codex-acp's native process does not, so the agents'
    /// process groups are killed first.
    fn drop(&mut self) {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        for (_, pgid) in sessions.iter() {
            // SAFETY: signalling the process group of an agent this test's
            // daemon started.
            unsafe {
                libc::kill(-(*pgid as i32), libc::SIGKILL);
            }
        }
    }
}

/// The instance that runs `agent` offline against `llm`, its scratch home
/// in `home`.
fn instance(agent: Agent, llm: &FakeLlm, home: &Path) -> Value {
    let base = json!({"HOME": home, "NO_COLOR": "1"});
    let (command, args, extra) = match agent {
        Agent::Qwen => (
            agent_cli("qwen"),
            json!([
                "--acp",
                "--auth-type",
                "openai",
                "--openai-base-url",
                format!("{}/v1", llm.url),
                "--openai-api-key",
                "dummy",
                "-m",
                "fake-model",
                "--approval-mode",
                "default"
            ]),
            json!({}),
        ),
        Agent::Codex => {
            let codex_home = home.join("codex");
            std::fs::create_dir_all(&codex_home).unwrap();
            std::fs::write(
                codex_home.join("config.toml"),
                format!(
                    "model = \"fake-model\"\nmodel_provider = \"fake\"\n\
                     approval_policy = \"untrusted\"\nsandbox_mode = \"danger-full-access\"\n\n\
                     [model_providers.fake]\nname = \"fake\"\nbase_url = \"{}/v1\"\n\
                     wire_api = \"responses\"\nenv_key = \"FAKE_KEY\"\n",
                    llm.url
                ),
            )
            .unwrap();
            (
                agent_cli("codex-acp"),
                json!([]),
                json!({"CODEX_HOME": codex_home, "FAKE_KEY": "dummy"}),
            )
        }
        Agent::Claude => (
            agent_cli("claude-agent-acp"),
            json!([]),
            json!({
                "ANTHROPIC_BASE_URL": llm.url,
                "ANTHROPIC_API_KEY": "dummy",
                "IS_SANDBOX": "1",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_AUTOUPDATER": "1",
                "DISABLE_TELEMETRY": "1",
                "DISABLE_ERROR_REPORTING": "1",
            }),
        ),
    };
    let mut env = base;
    if let (Some(env), Some(extra)) = (env.as_object_mut(), extra.as_object()) {
        env.extend(extra.clone());
    }
    json!({"id": "default", "agent": "acp", "command": command, "args": args, "env": env})
}

async fn acp_daemon(agent: Agent) -> AcpSetup {
    let llm = FakeLlm::start().await;
    let home = TempDir::new("acp-home");
    let instances = json!([instance(agent, &llm, home.path())]).to_string();
    let daemon = Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", &instances),
        ("AMARRE_KILL_GRACE_MS", "2000"),
    ])
    .await;
    AcpSetup {
        agent,
        llm,
        daemon,
        work: TempDir::new("acp-work"),
        _home: home,
        sessions: std::sync::Mutex::new(Vec::new()),
    }
}

async fn acp_session(setup: &AcpSetup) -> Ws {
    let s = setup.daemon.create(json!({"cwd": setup.work.path()})).await;
    assert_eq!(s["agent"], "acp", "{s}");
    let id = s["id"].as_str().unwrap().to_owned();
    let (_, summary) = setup.daemon.get(&format!("/sessions/{id}")).await;
    let pid = summary["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("the session's pid: {summary}")) as u32;
    setup.sessions.lock().unwrap().push((id.clone(), pid));
    setup.daemon.ws(&id, "").await
}

fn is(v: &Value, ty: &str) -> bool {
    v["type"] == ty
}

fn select(v: &Value) -> bool {
    is(v, "extension_ui_request") && v["method"] == "select"
}

fn text_of(seen: &[Value]) -> String {
    seen.iter()
        .filter(|v| is(v, "message_update") && v["assistantMessageEvent"]["type"] == "text_delta")
        .filter_map(|v| v["assistantMessageEvent"]["delta"].as_str())
        .collect()
}

/// The assistant's text of a turn. codex-acp opens a session's first turn
/// with a warning as assistant text (no metadata for the fake model); it is
/// checked and cut off here so the model's own reply can be compared.
fn reply_of(agent: Agent, seen: &[Value]) -> String {
    let text = text_of(seen);
    const CODEX_WARNING: &str = "Model metadata for `fake-model` not found.";
    if agent == Agent::Codex
        && text.starts_with(CODEX_WARNING)
        && let Some(at) = text.find("You said: ")
    {
        return text[at..].to_owned();
    }
    text
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

/// Sends a prompt and waits for the permission question; checks the
/// prompt was acknowledged and the turn started.
async fn ask(ws: &mut Ws, id: &str, message: &str) -> Value {
    ws.send_json(json!({"type": "prompt", "id": id, "message": message}))
        .await;
    let seen = ws
        .recv_until_within(AGENT_STEP, "the permission question", select)
        .await;
    assert!(
        seen.iter()
            .any(|v| is(v, "response") && v["id"] == id && v["success"] == true),
        "the prompt is acknowledged: {seen:?}"
    );
    assert!(seen.iter().any(|v| is(v, "agent_start")), "{seen:?}");
    let q = seen.last().cloned().unwrap();
    let options = q["options"].as_array().expect("options");
    assert!(options.len() >= 2, "{q}");
    assert!(q["id"].is_string(), "{q}");
    q
}

/// The answer that picks the question's first option (an allow, by the
/// ordering contract) or its last (a reject).
fn answer(q: &Value, allow: bool) -> Value {
    let options = q["options"].as_array().unwrap();
    let value = if allow {
        &options[0]
    } else {
        &options[options.len() - 1]
    };
    json!({"type": "extension_ui_response", "id": q["id"], "value": value})
}

async fn streams_text_and_answers_get_state(agent: Agent) {
    let _serial = agent_lock().await;
    let setup = acp_daemon(agent).await;
    let mut ws = acp_session(&setup).await;
    ws.send_json(json!({"type": "prompt", "id": "p1", "message": "hello there"}))
        .await;
    let seen = ws.until_agent_end("agent_end").await;
    assert!(
        seen.iter()
            .any(|v| is(v, "response") && v["id"] == "p1" && v["success"] == true),
        "{seen:?}"
    );
    let starts = seen.iter().filter(|v| is(v, "agent_start")).count();
    assert_eq!(starts, 1, "one agent_start per prompt: {seen:?}");
    assert!(seen.iter().any(|v| is(v, "turn_start")), "{seen:?}");
    assert!(seen.iter().any(|v| is(v, "message_start")), "{seen:?}");
    assert!(seen.iter().any(|v| is(v, "turn_end")), "{seen:?}");
    assert_eq!(reply_of(agent, &seen), "You said: hello there", "{seen:?}");
    assert!(
        setup
            .llm
            .requests()
            .iter()
            .any(|r| r.to_string().contains("hello there")),
        "the prompt reached the model"
    );

    ws.send_json(json!({"type": "get_state", "id": "s1"})).await;
    let seen = ws
        .recv_until_within(AGENT_STEP, "the get_state response", |v| {
            is(v, "response") && v["id"] == "s1"
        })
        .await;
    let state = seen.last().unwrap();
    assert_eq!(state["success"], true, "{state}");
    assert_eq!(state["command"], "get_state", "{state}");
    let data = &state["data"];
    assert_eq!(data["isStreaming"], false, "{state}");
    assert!(
        data["sessionId"].as_str().is_some_and(|s| !s.is_empty()),
        "the ACP session id: {state}"
    );
    assert_eq!(data["pendingMessageCount"], 0, "{state}");
    if setup.agent == Agent::Qwen {
        assert_eq!(data["permissionMode"], "default", "{state}");
    }

    // Deleting the session stops the whole agent (codex-acp's native
    // process too: the daemon signals the process group).
    let (id, pgid) = setup.sessions.lock().unwrap()[0].clone();
    let (status, _) = setup.daemon.delete(&format!("/sessions/{id}")).await;
    assert!((200..300).contains(&status), "delete: {status}");
    eventually("the agent's process group is gone", || !group_alive(pgid)).await;
}

async fn an_allowed_tool_runs(agent: Agent) {
    let _serial = agent_lock().await;
    let setup = acp_daemon(agent).await;
    let mut ws = acp_session(&setup).await;
    let q = ask(&mut ws, "p1", "RUN: touch allowed.txt").await;
    assert!(
        q["title"].as_str().is_some_and(|t| t.starts_with("Run ")),
        "{q}"
    );
    assert!(
        q["message"]
            .as_str()
            .is_some_and(|m| m.contains("touch allowed.txt")),
        "the question shows the command: {q}"
    );
    ws.send_json(answer(&q, true)).await;
    let seen = ws.until_agent_end("agent_end").await;
    let end = seen
        .iter()
        .find(|v| is(v, "tool_execution_end"))
        .unwrap_or_else(|| panic!("tool_execution_end: {seen:?}"));
    assert_eq!(end["isError"], false, "{end}");
    assert_file(&setup.work.path().join("allowed.txt"), true);
    assert!(
        reply_of(agent, &seen).contains("Done: "),
        "the model saw the result: {}",
        text_of(&seen)
    );
    assert_eq!(
        setup.llm.tool_results().len(),
        1,
        "{:?}",
        setup.llm.tool_results()
    );
    assert_eq!(seen.iter().filter(|v| is(v, "agent_end")).count(), 1);
}

async fn a_denied_tool_does_not_run(agent: Agent) {
    let _serial = agent_lock().await;
    let setup = acp_daemon(agent).await;
    let mut ws = acp_session(&setup).await;
    let q = ask(&mut ws, "p1", "RUN: touch denied.txt").await;
    ws.send_json(answer(&q, false)).await;
    let seen = ws.until_agent_end("agent_end").await;
    assert_eq!(seen.iter().filter(|v| is(v, "agent_end")).count(), 1);
    assert!(
        !seen
            .iter()
            .any(|v| is(v, "tool_execution_end") && v["isError"] == false),
        "no tool succeeded: {seen:?}"
    );
    assert_file(&setup.work.path().join("denied.txt"), false);
    // The session takes the next prompt.
    ws.send_json(json!({"type": "prompt", "id": "p2", "message": "still there?"}))
        .await;
    let seen = ws.until_agent_end("the second agent_end").await;
    assert_eq!(reply_of(agent, &seen), "You said: still there?", "{seen:?}");
    assert_file(&setup.work.path().join("denied.txt"), false);
}

async fn abort_interrupts_a_long_tool(agent: Agent) {
    let _serial = agent_lock().await;
    let setup = acp_daemon(agent).await;
    let mut ws = acp_session(&setup).await;
    // Claude runs a bare `sleep` without asking; a write makes it ask.
    let command = if agent == Agent::Claude {
        "RUN: touch started.txt && sleep 30"
    } else {
        "RUN: sleep 30"
    };
    let q = ask(&mut ws, "p1", command).await;
    ws.send_json(answer(&q, true)).await;
    // Let the command start, then abort.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let aborted_at = Instant::now();
    ws.send_json(json!({"type": "abort", "id": "a1"})).await;
    let mut seen = ws
        .recv_until_within(Duration::from_secs(25), "the abort response", |v| {
            is(v, "response") && v["id"] == "a1"
        })
        .await;
    assert_eq!(seen.last().unwrap()["success"], true, "{seen:?}");
    if !seen.iter().any(|v| is(v, "agent_end")) {
        seen.extend(
            ws.recv_until_within(Duration::from_secs(25), "agent_end after the abort", |v| {
                is(v, "agent_end")
            })
            .await,
        );
    }
    assert!(
        aborted_at.elapsed() < Duration::from_secs(25),
        "the turn ended well before the 30 s command would have"
    );
    let error = seen
        .iter()
        .find(|v| is(v, "message_update") && v["assistantMessageEvent"]["type"] == "error")
        .unwrap_or_else(|| panic!("the cancelled stop is surfaced: {seen:?}"));
    assert!(
        error["assistantMessageEvent"]["reason"].is_string(),
        "{error}"
    );
    assert_eq!(
        seen.iter().filter(|v| is(v, "agent_end")).count(),
        1,
        "balanced: {seen:?}"
    );
    ws.send_json(json!({"type": "prompt", "id": "p2", "message": "after the abort"}))
        .await;
    let seen = ws.until_agent_end("agent_end after the abort").await;
    if agent == Agent::Claude && text_of(&seen).is_empty() {
        // claude-agent-acp 0.23.1 answers the first prompt after a cancel at
        // once, empty, and delivers its reply in the next turn
        // (tests/agents/recordings/claude-abort-next.jsonl): the session
        // still works, one turn late.
        ws.send_json(json!({"type": "prompt", "id": "p3", "message": "and once more"}))
            .await;
        let next = ws.until_agent_end("the turn after the empty one").await;
        assert_eq!(
            text_of(&next),
            "You said: after the abortYou said: and once more",
            "{next:?}"
        );
    } else {
        assert_eq!(
            reply_of(agent, &seen),
            "You said: after the abort",
            "{seen:?}"
        );
    }
}

async fn a_follow_up_is_delivered_after_the_turn(agent: Agent) {
    let _serial = agent_lock().await;
    let setup = acp_daemon(agent).await;
    let mut ws = acp_session(&setup).await;
    // The turn waits on the question, so it is certainly running.
    let q = ask(&mut ws, "p1", "RUN: touch first.txt").await;
    ws.send_json(json!({"type": "follow_up", "id": "f1", "message": "and then this"}))
        .await;
    let seen = ws
        .recv_until_within(AGENT_STEP, "queue_update", |v| is(v, "queue_update"))
        .await;
    assert!(
        seen.iter()
            .any(|v| is(v, "response") && v["id"] == "f1" && v["success"] == true),
        "{seen:?}"
    );
    assert!(
        seen.last().unwrap().to_string().contains("and then this"),
        "{seen:?}"
    );
    ws.send_json(json!({"type": "get_state", "id": "s1"})).await;
    let seen = ws
        .recv_until_within(AGENT_STEP, "get_state during the turn", |v| {
            is(v, "response") && v["id"] == "s1"
        })
        .await;
    let state = &seen.last().unwrap()["data"];
    assert_eq!(state["isStreaming"], true, "{state}");
    assert_eq!(state["pendingMessageCount"], 1, "{state}");
    ws.send_json(answer(&q, true)).await;
    let first = ws.until_agent_end("the first agent_end").await;
    assert!(!text_of(&first).contains("and then this"), "{first:?}");
    assert_file(&setup.work.path().join("first.txt"), true);
    let second = ws.until_agent_end("the follow-up's agent_end").await;
    assert!(second.iter().any(|v| is(v, "agent_start")), "{second:?}");
    assert_eq!(
        reply_of(agent, &second),
        "You said: and then this",
        "{second:?}"
    );
}

macro_rules! agent_tests {
    ($module:ident, $agent:expr) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn streams_text_and_answers_get_state() {
                super::streams_text_and_answers_get_state($agent).await;
            }

            #[tokio::test]
            async fn an_allowed_tool_runs() {
                super::an_allowed_tool_runs($agent).await;
            }

            #[tokio::test]
            async fn a_denied_tool_does_not_run() {
                super::a_denied_tool_does_not_run($agent).await;
            }

            #[tokio::test]
            async fn abort_interrupts_a_long_tool() {
                super::abort_interrupts_a_long_tool($agent).await;
            }

            #[tokio::test]
            async fn a_follow_up_is_delivered_after_the_turn() {
                super::a_follow_up_is_delivered_after_the_turn($agent).await;
            }
        }
    };
}

agent_tests!(qwen, Agent::Qwen);
agent_tests!(codex, Agent::Codex);
agent_tests!(claude, Agent::Claude);

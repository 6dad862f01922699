//! A fake LLM API on 127.0.0.1 for running the real agent CLIs offline
//! (AGENTS.md sections 4 and 5). It answers the Anthropic Messages API
//! (`POST /v1/messages`, streaming SSE or plain JSON), which pi (with
//! `"api": "anthropic-messages"`), Claude Code and claude-agent-acp speak,
//! OpenAI chat completions (Qwen Code) and the OpenAI Responses API (codex),
//! see [`crate::fake_openai`], and records every request so tests can assert
//! what the agent sent.
//!
//! The reply is decided by the last message:
//! - a tool result (with no new user text after it): a final text,
//!   `Done: <first line of the result>`;
//! - user text containing `FAIL: <message>`: an API error (HTTP 400);
//! - user text containing `RUN: <command>`: one shell tool call (`Bash` when
//!   the request offers a tool of that name, Qwen Code's `run_shell_command`,
//!   codex's `exec_command`, else `bash`);
//! - user text containing `WRITE: <absolute path> :: <content>`: a tool call
//!   that writes the file (`Write`, `write_file`, or codex's `apply_patch`);
//! - user text containing `PLAN: <text>`: a plan tool call (`todo_write` for
//!   Qwen Code, `update_plan` for codex, else `ExitPlanMode{plan}`);
//! - user text containing `TODO: <text>`: Claude's `TodoWrite` (as `PLAN:`
//!   for the others);
//! - user text containing `THINK`: a thinking block before the text;
//! - anything else: `You said: <text>`.
//!
//! `GET /requests` lists the recorded requests (for debugging). The server
//! runs on the test's runtime and stops with it.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// A running fake API.
pub struct FakeLlm {
    /// `http://127.0.0.1:PORT` (no trailing slash, no `/v1`).
    pub url: String,
    requests: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeLlm {
    /// Starts the server on a free loopback port.
    pub async fn start() -> FakeLlm {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/", get(|| async { "fake llm" }))
            .route("/v1/messages", post(messages))
            .route(
                "/v1/messages/count_tokens",
                post(|| async { axum::Json(json!({"input_tokens": 10})) }),
            )
            .route(
                "/v1/chat/completions",
                post(crate::fake_openai::chat_completions),
            )
            .route("/v1/responses", post(crate::fake_openai::responses))
            .route("/v1/models", get(crate::fake_openai::models))
            .route("/requests", get(recorded))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
            .with_state(requests.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake LLM");
        let addr = listener.local_addr().expect("fake LLM address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeLlm {
            url: format!("http://{addr}"),
            requests,
            task,
        }
    }

    /// Every model request body so far (`/v1/messages`,
    /// `/v1/chat/completions`, `/v1/responses`).
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// The tool results the agent sent back so far, each once, in order
    /// (whatever the API).
    pub fn tool_results(&self) -> Vec<String> {
        crate::fake_openai::tool_results(&self.requests())
    }

    /// The `model` of every request so far.
    pub fn models(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| r["model"].as_str().map(str::to_owned))
            .collect()
    }
}

/// What the fake model does for one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Text {
        thinking: Option<String>,
        text: String,
    },
    Tool {
        name: String,
        input: Value,
    },
    /// An API error (HTTP 400) with this message.
    Fail(String),
}

/// The error response for [`Reply::Fail`], in the shape both the Anthropic
/// and the OpenAI clients read.
pub(crate) fn fail_response(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "type": "error",
            "error": {"type": "invalid_request_error", "message": message, "code": "fake_failure"},
        })),
    )
        .into_response()
}

pub(crate) fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .filter(|t| !t.trim_start().starts_with("<system-reminder>"))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

pub(crate) fn after_marker<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let at = text.rfind(marker)?;
    let rest = &text[at + marker.len()..];
    Some(rest.lines().next().unwrap_or("").trim())
}

/// What the last message of a conversation holds, whatever the API.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Last {
    /// A tool result with no user text after it: its first line.
    ToolResult(String),
    /// The user's text.
    Text(String),
}

fn decide(body: &Value) -> Reply {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    // Claude Code may append a `system`-role message after the user's.
    let last = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .cloned()
        .unwrap_or(Value::Null);
    let content = &last["content"];
    let tools: Vec<String> = body["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    // A tool result counts only when no user text follows it.
    if let Value::Array(blocks) = content
        && let Some(pos) = blocks.iter().rposition(|b| b["type"] == "tool_result")
    {
        let text_after: String = blocks[pos + 1..]
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .filter(|t| !t.trim_start().starts_with("<system-reminder>"))
            .collect();
        if text_after.trim().is_empty() {
            let result = &blocks[pos]["content"];
            let first = text_of(result).lines().next().unwrap_or("").to_owned();
            return decide_from(Last::ToolResult(first), &tools);
        }
    }
    decide_from(Last::Text(text_of(content)), &tools)
}

/// The tool call that runs `command` with the shell tool the request offers
/// (Claude's `Bash`, Qwen Code's `run_shell_command`, codex's
/// `exec_command`, `shell_command` or `shell`, else pi's `bash`).
fn shell_call(command: &str, tools: &[String]) -> Reply {
    let offers = |name: &str| tools.iter().any(|t| t == name);
    let (name, input) = if offers("Bash") {
        (
            "Bash",
            json!({"command": command, "description": "Run the requested command"}),
        )
    } else if offers("run_shell_command") {
        // Qwen Code refuses a bare `sleep` without this comment.
        let command = if command.trim_start().starts_with("sleep ")
            && !command.contains("intentional-sleep:")
        {
            format!("{command} # intentional-sleep: a long command to interrupt")
        } else {
            command.to_owned()
        };
        (
            "run_shell_command",
            json!({"command": command, "description": "Run the requested command", "is_background": false}),
        )
    } else if offers("exec_command") {
        // Without `yield_time_ms` codex hands a long command back after 10 s.
        (
            "exec_command",
            json!({"cmd": command, "yield_time_ms": 120000}),
        )
    } else if offers("shell_command") {
        (
            "shell_command",
            json!({"command": command, "timeout_ms": 120000}),
        )
    } else if offers("shell") {
        (
            "shell",
            json!({"command": ["bash", "-lc", command], "timeout_ms": 120000}),
        )
    } else {
        ("bash", json!({"command": command}))
    };
    Reply::Tool {
        name: name.into(),
        input,
    }
}

/// The tool call that writes `content` to the absolute `path` with the file
/// tool the request offers (Claude's `Write`, Qwen Code's `write_file`),
/// else a shell command that does it.
fn write_call(path: &str, content: &str, tools: &[String]) -> Reply {
    let offers = |name: &str| tools.iter().any(|t| t == name);
    if offers("Write") {
        return Reply::Tool {
            name: "Write".into(),
            input: json!({"file_path": path, "content": content}),
        };
    }
    if offers("write_file") {
        return Reply::Tool {
            name: "write_file".into(),
            input: json!({"file_path": path, "content": content}),
        };
    }
    if offers("apply_patch") || offers("exec_command") || offers("shell") {
        // codex turns an `apply_patch` command into a patch with a diff.
        let patch = format!(
            "apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: {path}\n+{content}\n*** End Patch\nEOF\n"
        );
        return shell_call(&patch, tools);
    }
    shell_call(&format!("printf '%s\\n' '{content}' > '{path}'"), tools)
}

/// The reply for a conversation whose last message is `last`, given the
/// names of the tools the request offers.
pub(crate) fn decide_from(last: Last, tools: &[String]) -> Reply {
    let text = match last {
        Last::ToolResult(first) => {
            return Reply::Text {
                thinking: None,
                text: format!("Done: {first}"),
            };
        }
        Last::Text(text) => text,
    };
    if let Some(error) = after_marker(&text, "FAIL:") {
        return Reply::Fail(error.to_owned());
    }
    if let Some(command) = after_marker(&text, "RUN:") {
        return shell_call(command, tools);
    }
    if let Some(spec) = after_marker(&text, "WRITE:")
        && let Some((path, content)) = spec.split_once(" :: ")
    {
        return write_call(path.trim(), content.trim(), tools);
    }
    if let Some(todos) = after_marker(&text, "TODO:")
        && tools.iter().any(|t| t == "TodoWrite")
    {
        let todos: Vec<Value> = plan_todos(todos)
            .iter()
            .map(|t| json!({"content": t["content"], "status": t["status"], "activeForm": t["content"]}))
            .collect();
        return Reply::Tool {
            name: "TodoWrite".into(),
            input: json!({"todos": todos}),
        };
    }
    if let Some(plan) = after_marker(&text, "PLAN:").or_else(|| after_marker(&text, "TODO:")) {
        // Qwen Code defers `todo_write` (not in the request's tools, but
        // registered): its shell tool gives it away.
        if tools
            .iter()
            .any(|t| t == "todo_write" || t == "run_shell_command")
        {
            return Reply::Tool {
                name: "todo_write".into(),
                input: json!({"todos": plan_todos(plan)}),
            };
        }
        if tools.iter().any(|t| t == "update_plan") {
            let plan: Vec<Value> = plan_todos(plan)
                .iter()
                .map(|t| json!({"step": t["content"], "status": t["status"]}))
                .collect();
            return Reply::Tool {
                name: "update_plan".into(),
                input: json!({"plan": plan}),
            };
        }
        return Reply::Tool {
            name: "ExitPlanMode".into(),
            input: json!({"plan": plan}),
        };
    }
    let said = text
        .lines()
        .rfind(|l| !l.trim().is_empty() && !l.contains("system-reminder"))
        .unwrap_or("")
        .to_owned();
    Reply::Text {
        thinking: text
            .contains("THINK")
            .then(|| "Let me think about this.".to_owned()),
        text: format!("You said: {said}"),
    }
}

/// `PLAN: 1. a 2. b` (or `a; b`) as todo items, the first in progress.
fn plan_todos(plan: &str) -> Vec<Value> {
    let steps: Vec<String> = plan
        .split(';')
        .flat_map(|s| s.split(|c: char| c.is_ascii_digit()).collect::<Vec<_>>())
        .map(|s| s.trim_start_matches(['.', ')']).trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": format!("{}", i + 1), "content": s,
                   "status": if i == 0 { "in_progress" } else { "pending" }})
        })
        .collect()
}

fn sse(out: &mut String, event: &str, data: Value) {
    out.push_str(&format!("event: {event}\ndata: {data}\n\n"));
}

/// Splits text into a few deltas so that streaming is exercised.
pub(crate) fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len().div_ceil(3).max(1);
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

async fn recorded(State(requests): State<Arc<Mutex<Vec<Value>>>>) -> axum::Json<Vec<Value>> {
    axum::Json(requests.lock().unwrap().clone())
}

async fn messages(State(requests): State<Arc<Mutex<Vec<Value>>>>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    requests.lock().unwrap().push(body.clone());
    let model = body["model"].as_str().unwrap_or("fake-model").to_owned();
    let reply = decide(&body);
    let n = requests.lock().unwrap().len();
    let id = format!("msg_fake_{n}");
    let tool_id = format!("toolu_fake_{n}");
    if let Reply::Fail(message) = &reply {
        return fail_response(message);
    }

    if body["stream"] != Value::Bool(true) {
        let (content, stop) = match &reply {
            Reply::Text { thinking, text } => {
                let mut c = Vec::new();
                if let Some(t) = thinking {
                    c.push(json!({"type": "thinking", "thinking": t, "signature": "sig"}));
                }
                c.push(json!({"type": "text", "text": text}));
                (c, "end_turn")
            }
            Reply::Tool { name, input } => (
                vec![json!({"type": "tool_use", "id": tool_id, "name": name, "input": input})],
                "tool_use",
            ),
            Reply::Fail(_) => (Vec::new(), "end_turn"),
        };
        return axum::Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }))
        .into_response();
    }

    let mut out = String::new();
    sse(
        &mut out,
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 1},
        }}),
    );
    let mut index = 0;
    let stop = match &reply {
        Reply::Text { thinking, text } => {
            if let Some(t) = thinking {
                sse(
                    &mut out,
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": ""}}),
                );
                for p in pieces(t) {
                    sse(
                        &mut out,
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": p}}),
                    );
                }
                sse(
                    &mut out,
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": "sig"}}),
                );
                sse(
                    &mut out,
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": index}),
                );
                index += 1;
            }
            sse(
                &mut out,
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
            );
            for p in pieces(text) {
                sse(
                    &mut out,
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p}}),
                );
            }
            sse(
                &mut out,
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            );
            "end_turn"
        }
        Reply::Tool { name, input } => {
            sse(
                &mut out,
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}}}),
            );
            let json_text = input.to_string();
            for p in pieces(&json_text) {
                sse(
                    &mut out,
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": p}}),
                );
            }
            sse(
                &mut out,
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            );
            "tool_use"
        }
        Reply::Fail(_) => "end_turn",
    };
    sse(
        &mut out,
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 5}}),
    );
    sse(&mut out, "message_stop", json!({"type": "message_stop"}));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_message_decides_the_reply() {
        let prompt = json!({"messages": [{"role": "user", "content": "please RUN: touch x"}], "tools": [{"name": "bash"}]});
        assert_eq!(
            decide(&prompt),
            Reply::Tool {
                name: "bash".into(),
                input: json!({"command": "touch x"})
            }
        );
        let claude = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "RUN: ls"}]}], "tools": [{"name": "Bash"}]});
        assert!(matches!(decide(&claude), Reply::Tool { name, .. } if name == "Bash"));
        let result = json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "hello\nworld"}]}]});
        assert_eq!(
            decide(&result),
            Reply::Text {
                thinking: None,
                text: "Done: hello".into()
            }
        );
        let folded = json!({"messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": "denied"},
            {"type": "text", "text": "RUN: echo again"}]}], "tools": [{"name": "Bash"}]});
        assert!(matches!(decide(&folded), Reply::Tool { .. }));
        let plan = json!({"messages": [{"role": "user", "content": "PLAN: step one"}]});
        assert_eq!(
            decide(&plan),
            Reply::Tool {
                name: "ExitPlanMode".into(),
                input: json!({"plan": "step one"})
            }
        );
    }
}

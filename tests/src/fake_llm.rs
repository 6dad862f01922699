//! A fake LLM API on 127.0.0.1 for running the real agent CLIs offline
//! (AGENTS.md section 4). It answers the Anthropic Messages API
//! (`POST /v1/messages`, streaming SSE or plain JSON), which both pi (with
//! `"api": "anthropic-messages"`) and Claude Code speak, and records every
//! request so tests can assert what the agent sent.
//!
//! The reply is decided by the last message:
//! - a tool result (with no new user text after it): a final text,
//!   `Done: <first line of the result>`;
//! - user text containing `RUN: <command>`: one shell tool call (`Bash` when
//!   the request offers a tool of that name, else `bash`);
//! - user text containing `PLAN: <text>`: a tool call `ExitPlanMode{plan}`;
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

    /// Every `/v1/messages` request body so far.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
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
enum Reply {
    Text {
        thinking: Option<String>,
        text: String,
    },
    Tool {
        name: String,
        input: Value,
    },
}

fn text_of(content: &Value) -> String {
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

fn after_marker<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let at = text.rfind(marker)?;
    let rest = &text[at + marker.len()..];
    Some(rest.lines().next().unwrap_or("").trim())
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
            return Reply::Text {
                thinking: None,
                text: format!("Done: {first}"),
            };
        }
    }
    let text = text_of(content);
    let tools: Vec<String> = body["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(command) = after_marker(&text, "RUN:") {
        let claude = tools.iter().any(|t| t == "Bash");
        return Reply::Tool {
            name: if claude { "Bash" } else { "bash" }.into(),
            input: if claude {
                json!({"command": command, "description": "Run the requested command"})
            } else {
                json!({"command": command})
            },
        };
    }
    if let Some(plan) = after_marker(&text, "PLAN:") {
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

fn sse(out: &mut String, event: &str, data: Value) {
    out.push_str(&format!("event: {event}\ndata: {data}\n\n"));
}

/// Splits text into a few deltas so that streaming is exercised.
fn pieces(text: &str) -> Vec<String> {
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

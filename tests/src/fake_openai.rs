//! The OpenAI side of the fake LLM (AGENTS.md sections 4 and 5): chat
//! completions, streaming and not (Qwen Code, pi with
//! `"api": "openai-completions"`), and the Responses API (codex). The reply
//! is decided by the same rules as for the Anthropic API (see
//! [`crate::fake_llm`]); requests that force a `respond_in_schema` tool call
//! (Qwen Code's next-speaker and JSON checks) get one whose arguments fill
//! the requested schema, with `next_speaker` always `user`.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::fake_llm::{Last, Reply, decide_from, fail_response, pieces, text_of};

type Requests = Arc<Mutex<Vec<Value>>>;

fn record(requests: &Requests, body: &Value) -> usize {
    let mut all = requests.lock().unwrap_or_else(|e| e.into_inner());
    all.push(body.clone());
    all.len()
}

fn event_stream(out: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        out,
    )
        .into_response()
}

/// A value of the JSON schema `schema`, filled with plain defaults.
fn fill(schema: &Value, name: &str) -> Value {
    if name == "next_speaker" {
        return json!("user");
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    match schema["type"]
        .as_str()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("object") => {
            let mut out = serde_json::Map::new();
            if let Some(props) = schema["properties"].as_object() {
                for (k, v) in props {
                    out.insert(k.clone(), fill(v, k));
                }
            }
            Value::Object(out)
        }
        Some("array") => json!([]),
        Some("boolean") => json!(false),
        Some("number") | Some("integer") => json!(0),
        _ => json!(format!("fake {name}")),
    }
}

// ---------------------------------------------------------------- chat

fn chat_tools(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn chat_decide(body: &Value) -> Reply {
    let tools = chat_tools(body);
    if tools.iter().any(|t| t == "respond_in_schema") {
        let schema = body["tools"]
            .as_array()
            .and_then(|t| {
                t.iter()
                    .find(|t| t["function"]["name"] == "respond_in_schema")
                    .map(|t| t["function"]["parameters"].clone())
            })
            .unwrap_or(Value::Null);
        return Reply::Tool {
            name: "respond_in_schema".into(),
            input: fill(&schema, ""),
        };
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages
        .iter()
        .rev()
        .find(|m| m["role"] != "system")
        .cloned()
        .unwrap_or(Value::Null);
    if last["role"] == "tool" {
        let first = text_of(&last["content"])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        return decide_from(Last::ToolResult(first), &tools);
    }
    decide_from(Last::Text(text_of(&last["content"])), &tools)
}

fn chunk(id: &str, model: &str, delta: Value, finish: Value) -> String {
    let v = json!({
        "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    format!("data: {v}\n\n")
}

/// `POST /v1/chat/completions`, streaming SSE (`data:` chunks ending
/// `[DONE]`) or one JSON answer.
pub(crate) async fn chat_completions(State(requests): State<Requests>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = record(&requests, &body);
    let model = body["model"].as_str().unwrap_or("fake-model").to_owned();
    let reply = chat_decide(&body);
    let id = format!("chatcmpl-fake-{n}");
    let call_id = format!("call_fake_{n}");
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});

    if body["stream"] != Value::Bool(true) {
        let (message, finish) = match &reply {
            Reply::Fail(message) => return fail_response(message),
            Reply::Text { thinking, text } => {
                let mut m = json!({"role": "assistant", "content": text});
                if let Some(t) = thinking {
                    m["reasoning_content"] = json!(t);
                }
                (m, "stop")
            }
            Reply::Tool { name, input } => (
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "id": call_id, "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }]}),
                "tool_calls",
            ),
        };
        return axum::Json(json!({
            "id": id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }))
        .into_response();
    }

    let mut out = chunk(
        &id,
        &model,
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    );
    let finish = match &reply {
        Reply::Fail(message) => return fail_response(message),
        Reply::Text { thinking, text } => {
            if let Some(t) = thinking {
                for p in pieces(t) {
                    out.push_str(&chunk(
                        &id,
                        &model,
                        json!({"reasoning_content": p}),
                        Value::Null,
                    ));
                }
            }
            for p in pieces(text) {
                out.push_str(&chunk(&id, &model, json!({"content": p}), Value::Null));
            }
            "stop"
        }
        Reply::Tool { name, input } => {
            out.push_str(&chunk(
                &id,
                &model,
                json!({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ));
            for p in pieces(&input.to_string()) {
                out.push_str(&chunk(
                    &id,
                    &model,
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}),
                    Value::Null,
                ));
            }
            "tool_calls"
        }
    };
    out.push_str(&chunk(&id, &model, json!({}), json!(finish)));
    let usage_chunk = json!({
        "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
        "choices": [], "usage": usage,
    });
    out.push_str(&format!("data: {usage_chunk}\n\n"));
    out.push_str("data: [DONE]\n\n");
    event_stream(out)
}

// ----------------------------------------------------------- responses

fn responses_tools(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The text of a Responses API message's content (`input_text` parts),
/// without codex's own context messages.
fn input_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .filter(|t| {
                let t = t.trim_start();
                !t.starts_with("<environment_context>")
                    && !t.starts_with("<user_instructions>")
                    && !t.starts_with("# AGENTS.md")
                    && !t.starts_with("<permissions")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn output_text(output: &Value) -> String {
    match output {
        Value::String(s) => s.clone(),
        Value::Object(_) => output["content"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| output.to_string()),
        Value::Array(_) => text_of(output),
        _ => String::new(),
    }
}

fn responses_decide(body: &Value) -> Reply {
    let tools = responses_tools(body);
    let input = body["input"].as_array().cloned().unwrap_or_default();
    let last = input.iter().rev().find(|item| {
        item["type"] == "function_call_output"
            || item["type"] == "custom_tool_call_output"
            || (item["role"] == "user" && !input_text(&item["content"]).trim().is_empty())
    });
    match last {
        Some(item) if item["role"] == "user" => {
            decide_from(Last::Text(input_text(&item["content"])), &tools)
        }
        Some(item) => {
            let text = output_text(&item["output"]);
            // codex prefixes the command's output with its own lines.
            let first = text
                .split_once("Output:\n")
                .map(|(_, o)| o)
                .unwrap_or(&text)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            decide_from(Last::ToolResult(first), &tools)
        }
        None => decide_from(Last::Text(String::new()), &tools),
    }
}

fn event(out: &mut String, data: Value) {
    let ty = data["type"].as_str().unwrap_or("").to_owned();
    out.push_str(&format!("event: {ty}\ndata: {data}\n\n"));
}

/// `POST /v1/responses`: the Responses API as SSE.
pub(crate) async fn responses(State(requests): State<Requests>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = record(&requests, &body);
    let model = body["model"].as_str().unwrap_or("fake-model").to_owned();
    let reply = responses_decide(&body);
    let resp_id = format!("resp_fake_{n}");
    let mut out = String::new();
    let response = json!({"id": resp_id, "object": "response", "created_at": 1_700_000_000,
        "status": "in_progress", "model": model, "output": []});
    event(
        &mut out,
        json!({"type": "response.created", "response": response}),
    );
    let mut index = 0;
    let mut items = Vec::new();
    match &reply {
        Reply::Fail(message) => {
            event(
                &mut out,
                json!({"type": "response.failed", "response": {"id": resp_id, "status": "failed",
                    "error": {"code": "invalid_request_error", "message": message}}}),
            );
            return event_stream(out);
        }
        Reply::Text { thinking, text } => {
            if let Some(t) = thinking {
                let item_id = format!("rs_fake_{n}");
                event(
                    &mut out,
                    json!({"type": "response.output_item.added", "output_index": index,
                        "item": {"type": "reasoning", "id": item_id, "summary": []}}),
                );
                for p in pieces(t) {
                    event(
                        &mut out,
                        json!({"type": "response.reasoning_summary_text.delta", "item_id": item_id,
                            "output_index": index, "summary_index": 0, "delta": p}),
                    );
                }
                let item = json!({"type": "reasoning", "id": item_id,
                    "summary": [{"type": "summary_text", "text": t}]});
                event(
                    &mut out,
                    json!({"type": "response.output_item.done", "output_index": index, "item": item}),
                );
                items.push(item);
                index += 1;
            }
            let item_id = format!("msg_fake_{n}");
            event(
                &mut out,
                json!({"type": "response.output_item.added", "output_index": index,
                    "item": {"type": "message", "id": item_id, "role": "assistant", "status": "in_progress", "content": []}}),
            );
            for p in pieces(text) {
                event(
                    &mut out,
                    json!({"type": "response.output_text.delta", "item_id": item_id,
                        "output_index": index, "content_index": 0, "delta": p}),
                );
            }
            let item = json!({"type": "message", "id": item_id, "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}]});
            event(
                &mut out,
                json!({"type": "response.output_item.done", "output_index": index, "item": item}),
            );
            items.push(item);
        }
        Reply::Tool { name, input } => {
            let item = json!({"type": "function_call", "id": format!("fc_fake_{n}"),
                "call_id": format!("call_fake_{n}"), "name": name,
                "arguments": input.to_string(), "status": "completed"});
            event(
                &mut out,
                json!({"type": "response.output_item.added", "output_index": index, "item": item}),
            );
            event(
                &mut out,
                json!({"type": "response.output_item.done", "output_index": index, "item": item}),
            );
            items.push(item);
        }
    }
    event(
        &mut out,
        json!({"type": "response.completed", "response": {"id": resp_id, "object": "response",
            "status": "completed", "model": model, "output": items,
            "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 15}}}),
    );
    event_stream(out)
}

/// `GET /v1/models`: the one fake model, in the OpenAI list shape (with an
/// empty `models` list for clients that read codex's own shape).
pub(crate) async fn models() -> axum::Json<Value> {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": "fake-model", "object": "model", "created": 1_700_000_000, "owned_by": "fake"}],
        "models": [],
    }))
}

/// The first line of every tool result the agent sent back, whatever the
/// API, in request order (a result repeated in later requests is listed
/// once).
pub fn tool_results(requests: &[Value]) -> Vec<String> {
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut push = |id: String, text: String| {
        if !seen.iter().any(|(i, _)| *i == id) {
            seen.push((id, text));
        }
    };
    for body in requests {
        for m in body["messages"].as_array().into_iter().flatten() {
            if m["role"] == "tool" {
                push(
                    m["tool_call_id"].as_str().unwrap_or("").to_owned(),
                    text_of(&m["content"]),
                );
            }
            if let Value::Array(blocks) = &m["content"] {
                for b in blocks.iter().filter(|b| b["type"] == "tool_result") {
                    push(
                        b["tool_use_id"].as_str().unwrap_or("").to_owned(),
                        text_of(&b["content"]),
                    );
                }
            }
        }
        for item in body["input"].as_array().into_iter().flatten() {
            if item["type"] == "function_call_output" {
                push(
                    item["call_id"].as_str().unwrap_or("").to_owned(),
                    output_text(&item["output"]),
                );
            }
        }
    }
    seen.into_iter().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_completions_decide_by_the_last_message() {
        let run = json!({"messages": [{"role": "system", "content": "x"},
            {"role": "user", "content": [{"type": "text", "text": "RUN: sleep 30"}]}],
            "tools": [{"type": "function", "function": {"name": "run_shell_command"}}]});
        match chat_decide(&run) {
            Reply::Tool { name, input } => {
                assert_eq!(name, "run_shell_command");
                assert!(
                    input["command"]
                        .as_str()
                        .unwrap()
                        .starts_with("sleep 30 # intentional-sleep: ")
                );
            }
            other => panic!("{other:?}"),
        }
        let result = json!({"messages": [{"role": "user", "content": "RUN: ls"},
            {"role": "assistant", "tool_calls": []},
            {"role": "tool", "tool_call_id": "c", "content": "a.txt\nb.txt"}]});
        assert_eq!(
            chat_decide(&result),
            Reply::Text {
                thinking: None,
                text: "Done: a.txt".into()
            }
        );
        let check = json!({"messages": [{"role": "user", "content": "who speaks next?"}],
            "tools": [{"type": "function", "function": {"name": "respond_in_schema", "parameters": {
                "type": "OBJECT", "properties": {"reasoning": {"type": "STRING"},
                "next_speaker": {"type": "STRING", "enum": ["model", "user"]}}}}}]});
        assert_eq!(
            chat_decide(&check),
            Reply::Tool {
                name: "respond_in_schema".into(),
                input: json!({"reasoning": "fake reasoning", "next_speaker": "user"}),
            }
        );
    }

    #[test]
    fn responses_decide_by_the_last_input_item() {
        let run = json!({"input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>cwd</environment_context>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "RUN: touch a"}]}],
            "tools": [{"type": "function", "name": "exec_command"}]});
        assert_eq!(
            responses_decide(&run),
            Reply::Tool {
                name: "exec_command".into(),
                input: json!({"cmd": "touch a", "yield_time_ms": 120000})
            }
        );
        let done = json!({"input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "RUN: echo hi"}]},
            {"type": "function_call", "call_id": "c", "name": "exec_command", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "Chunk ID: 1\nProcess exited with code 0\nOutput:\nhi\n"}]});
        assert_eq!(
            responses_decide(&done),
            Reply::Text {
                thinking: None,
                text: "Done: hi".into()
            }
        );
        assert_eq!(
            tool_results(&[done]),
            vec!["Chunk ID: 1\nProcess exited with code 0\nOutput:\nhi\n".to_owned()]
        );
    }
}

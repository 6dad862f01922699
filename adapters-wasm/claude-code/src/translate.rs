//! The translation between pi's RPC dialect (the clients) and Claude Code's
//! stream-json and control protocol (the agent), with the state it needs.
//! AGENTS.md section 3 is the contract; docs/adapters/claude-code.md the
//! table as implemented.
//!
//! This module is plain Rust (no SDK types), so its logic runs natively in
//! unit tests as well as inside the component. Time and fresh ids come from
//! a [`Clock`] so that the component uses the host's and tests are
//! deterministic.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use amarre_pi_dialect::{prompt_bytes, queue_refusal};

mod wire;

/// The longest tool input shown in a permission question, in characters.
const MAX_QUESTION_CHARS: usize = 400;
/// The deny message for a plan, so that Claude waits for the user.
pub const PLAN_DENIAL: &str = "Plan captured; awaiting user feedback.";
/// The deny message when the remote user says no.
pub const USER_DENIAL: &str = "The remote user denied this tool use.";
/// The deny message for questions pending at an abort.
pub const ABORT_DENIAL: &str = "aborted";
/// Version of the saved state layout.
const STATE_VERSION: u32 = 1;
/// The most history kept for `get_messages` (and a turn's `turn_end` and
/// `agent_end`), in bytes of JSON: the oldest messages are dropped first,
/// the newest is always kept. Everything the adapter keeps lives in its
/// sandbox (64 MiB by default), and answering `get_messages` holds the
/// history twice more (its JSON and the record).
pub const MAX_HISTORY_BYTES: usize = 4 << 20;
/// The most text (or tool input JSON) one content block keeps from its
/// streamed deltas: every delta still reaches the clients, but the block's
/// `*_end`, `message_end` and history hold at most this much (several
/// copies of a block live at once when its message ends).
pub const MAX_BLOCK_BYTES: usize = 4 << 20;

/// Where a translated record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Agent(String),
    Client(String),
}

/// Time and ids.
pub trait Clock {
    fn now_ms(&mut self) -> u64;
    fn new_id(&mut self) -> String;
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// A prompt waiting for the current run to end.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Queued {
    steer: bool,
    text: String,
    images: Vec<Value>,
}

/// A permission question waiting for a client's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct PendingPermission {
    request_id: String,
    input: Value,
}

/// A control request of ours waiting for Claude's reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct PendingControl {
    command: String,
    client_id: Value,
    /// What the client is told on success.
    data: Value,
    /// State to apply on success: ("model" | "permissionMode", value).
    apply: Option<(String, String)>,
}

/// One content block being built.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
enum Block {
    Text {
        text: String,
        closed: bool,
    },
    Thinking {
        text: String,
        closed: bool,
    },
    Tool {
        id: String,
        name: String,
        json: String,
        input: Option<Value>,
        closed: bool,
    },
    Other,
}

/// The assistant message being streamed or assembled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Current {
    id: String,
    model: Option<String>,
    blocks: Vec<Block>,
    stop_reason: Option<String>,
    /// Whether `stream_event`s describe this message (partial messages on).
    streamed: bool,
    started_at: u64,
}

/// Everything the translator remembers; serialised for hot-reload hand-over.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    v: u32,
    session_id: Option<String>,
    model: Option<String>,
    permission_mode: Option<String>,
    /// The user, assistant and toolResult messages of this process, the
    /// newest [`MAX_HISTORY_BYTES`] of them.
    history: VecDeque<Value>,
    /// How many older messages were dropped from `history`.
    #[serde(default)]
    history_omitted: u64,
    /// The JSON size of `history` (recomputed on restore).
    #[serde(skip)]
    history_bytes: usize,
    /// A prompt is in flight (sent, no `result` yet).
    streaming: bool,
    /// `agent_start` was emitted for the prompt in flight.
    started: bool,
    /// Where the prompt in flight begins in `history`.
    prompt_start: usize,
    queue: VecDeque<Queued>,
    permissions: BTreeMap<String, PendingPermission>,
    controls: BTreeMap<String, PendingControl>,
    /// Client ids of `abort` commands answered after the run ends.
    abort_waiters: Vec<Value>,
    aborting: bool,
    current: Option<Current>,
    /// Tool names by tool_use id (for results).
    tool_names: BTreeMap<String, String>,
    next_control: u64,
}

/// The translator of one session.
pub struct Translator<C: Clock> {
    state: State,
    clock: C,
}

fn obj(v: &Value) -> Option<&Map<String, Value>> {
    v.as_object()
}

fn s(v: &Value) -> String {
    v.to_string()
}

fn response(
    command: &str,
    id: &Value,
    success: bool,
    data: Option<Value>,
    error: Option<String>,
) -> Out {
    let mut r = json!({"type": "response", "command": command, "success": success});
    if !id.is_null() {
        r["id"] = id.clone();
    }
    if let Some(d) = data {
        r["data"] = d;
    }
    if let Some(e) = error {
        r["error"] = Value::String(e);
    }
    Out::Client(s(&r))
}

fn update(event: Value) -> Out {
    Out::Client(s(
        &json!({"type": "message_update", "assistantMessageEvent": event}),
    ))
}

/// Appends `delta` to a block's `text`, up to [`MAX_BLOCK_BYTES`] (cut on a
/// character boundary).
fn append_capped(text: &mut String, delta: &str) {
    let room = MAX_BLOCK_BYTES.saturating_sub(text.len());
    if delta.len() <= room {
        text.push_str(delta);
        return;
    }
    let mut end = room;
    while !delta.is_char_boundary(end) {
        end -= 1;
    }
    text.push_str(&delta[..end]);
}

/// The length of `v` as compact JSON, without writing it (strings count
/// their bytes, not their escapes).
pub fn json_size(v: &Value) -> usize {
    match v {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.iter().map(|x| json_size(x) + 1).sum::<usize>(),
        Value::Object(o) => {
            2 + o
                .iter()
                .map(|(k, x)| k.len() + 4 + json_size(x))
                .sum::<usize>()
        }
    }
}

/// Cuts text to `max` characters, the last being an ellipsis.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

fn stop_reason(claude: &str) -> &'static str {
    match claude {
        "tool_use" => "toolUse",
        "max_tokens" => "length",
        "refusal" => "error",
        _ => "stop",
    }
}

fn tool_result_content(content: &Value) -> Vec<Value> {
    match content {
        Value::String(t) => vec![json!({"type": "text", "text": t})],
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| match b["type"].as_str() {
                Some("text") => Some(json!({"type": "text", "text": b["text"]})),
                Some("image") => Some(json!({
                    "type": "image",
                    "data": b["source"]["data"],
                    "mimeType": b["source"]["media_type"],
                })),
                _ => None,
            })
            .collect(),
        Value::Null => Vec::new(),
        other => vec![json!({"type": "text", "text": other.to_string()})],
    }
}

impl<C: Clock> Translator<C> {
    /// A fresh translator, or one resumed from [`Translator::save`] output.
    pub fn new(clock: C, saved: Option<&str>) -> Result<Translator<C>, Invalid> {
        let state = match saved {
            None => State {
                v: STATE_VERSION,
                ..Default::default()
            },
            Some(text) => {
                let state: State = serde_json::from_str(text)
                    .map_err(|e| Invalid(format!("saved state is not readable: {e}")))?;
                if state.v != STATE_VERSION {
                    return Err(Invalid(format!(
                        "saved state has layout {}, this version reads {STATE_VERSION}",
                        state.v
                    )));
                }
                let mut state = state;
                state.history_bytes = state.history.iter().map(json_size).sum();
                state
            }
        };
        let mut t = Translator { state, clock };
        t.trim_history();
        Ok(t)
    }

    /// Adds a message to the history, dropping the oldest beyond
    /// [`MAX_HISTORY_BYTES`].
    fn remember(&mut self, message: Value) {
        self.state.history_bytes += json_size(&message);
        self.state.history.push_back(message);
        self.trim_history();
    }

    fn trim_history(&mut self) {
        while self.state.history_bytes > MAX_HISTORY_BYTES && self.state.history.len() > 1 {
            let Some(old) = self.state.history.pop_front() else {
                break;
            };
            self.state.history_bytes = self.state.history_bytes.saturating_sub(json_size(&old));
            self.state.history_omitted += 1;
            self.state.prompt_start = self.state.prompt_start.saturating_sub(1);
        }
    }

    /// The state for a newer version of this adapter.
    pub fn save(&self) -> String {
        serde_json::to_string(&self.state).unwrap_or_default()
    }

    fn control_id(&mut self) -> String {
        self.state.next_control += 1;
        format!("amarre-{}", self.state.next_control)
    }

    fn control_request(&mut self, request: Value) -> (String, Out) {
        let id = self.control_id();
        let line = json!({"type": "control_request", "request_id": id, "request": request});
        (id, Out::Agent(s(&line)))
    }

    fn permission_reply(request_id: &str, allow: bool, input: &Value, message: &str) -> Out {
        let response = if allow {
            json!({"behavior": "allow", "updatedInput": input})
        } else {
            json!({"behavior": "deny", "message": message})
        };
        Out::Agent(s(&json!({
            "type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": response},
        })))
    }

    /// Why a prompt cannot be queued now, if it cannot (its bounds are
    /// `amarre_pi_dialect`'s).
    fn queue_refusal(&self, text: &str, images: &[Value]) -> Option<String> {
        let queue = &self.state.queue;
        let queued = queue.iter().map(|q| prompt_bytes(&q.text, &q.images)).sum();
        queue_refusal(queue.len(), queued, prompt_bytes(text, images))
    }

    fn queue_update(&self) -> Out {
        let pick = |steer: bool| -> Vec<&str> {
            self.state
                .queue
                .iter()
                .filter(|q| q.steer == steer)
                .map(|q| q.text.as_str())
                .collect()
        };
        Out::Client(s(
            &json!({"type": "queue_update", "steering": pick(true), "followUp": pick(false)}),
        ))
    }

    // ----- client -> agent --------------------------------------------------

    /// Translates one client record.
    pub fn from_client(&mut self, record: &str) -> Result<Vec<Out>, Invalid> {
        let v: Value =
            serde_json::from_str(record).map_err(|e| Invalid(format!("not JSON: {e}")))?;
        let Some(o) = obj(&v) else {
            return Err(Invalid("a command must be a JSON object".into()));
        };
        let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
        let id = o.get("id").cloned().unwrap_or(Value::Null);
        let mut out = Vec::new();
        match kind {
            "prompt" | "steer" | "follow_up" => {
                let Some(text) = o.get("message").and_then(Value::as_str) else {
                    out.push(response(
                        kind,
                        &id,
                        false,
                        None,
                        Some(format!("{kind} needs a `message` string")),
                    ));
                    return Ok(out);
                };
                let images = o
                    .get("images")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if self.state.streaming {
                    if let Some(error) = self.queue_refusal(text, &images) {
                        out.push(response(kind, &id, false, None, Some(error)));
                        return Ok(out);
                    }
                    let steer = match kind {
                        "steer" => true,
                        "follow_up" => false,
                        _ => o.get("streamingBehavior").and_then(Value::as_str) == Some("steer"),
                    };
                    self.state.queue.push_back(Queued {
                        steer,
                        text: text.to_owned(),
                        images,
                    });
                    out.push(response(kind, &id, true, None, None));
                    out.push(self.queue_update());
                } else {
                    out.push(response(kind, &id, true, None, None));
                    self.start_prompt(text, &images, &mut out);
                }
            }
            "abort" => {
                if !self.state.streaming {
                    out.push(response("abort", &id, true, None, None));
                    return Ok(out);
                }
                for (_, p) in std::mem::take(&mut self.state.permissions) {
                    out.push(Self::permission_reply(
                        &p.request_id,
                        false,
                        &p.input,
                        ABORT_DENIAL,
                    ));
                }
                if !self.state.queue.is_empty() {
                    self.state.queue.clear();
                    out.push(self.queue_update());
                }
                if !self.state.aborting {
                    let (_, line) = self.control_request(json!({"subtype": "interrupt"}));
                    out.push(line);
                    self.state.aborting = true;
                }
                // pi answers abort after agent_end: so do we.
                self.state.abort_waiters.push(id);
            }
            "get_state" => {
                let data = json!({
                    "model": self.model_object(),
                    "thinkingLevel": "off",
                    "isStreaming": self.state.streaming,
                    "isCompacting": false,
                    "steeringMode": "all",
                    "followUpMode": "one-at-a-time",
                    "sessionId": self.state.session_id,
                    "permissionMode": self.state.permission_mode,
                    "autoCompactionEnabled": false,
                    "messageCount": self.state.history.len(),
                    "pendingMessageCount": self.state.queue.len(),
                });
                out.push(response("get_state", &id, true, Some(data), None));
            }
            "get_messages" => {
                let mut data = json!({"messages": self.state.history});
                if self.state.history_omitted > 0 {
                    // The history was cut: say so, and how much is missing.
                    data["truncated"] = json!(true);
                    data["omittedMessages"] = json!(self.state.history_omitted);
                }
                out.push(response("get_messages", &id, true, Some(data), None));
            }
            "get_last_assistant_text" => {
                let text = self
                    .state
                    .history
                    .iter()
                    .rev()
                    .find(|m| m["role"] == "assistant")
                    .map(|m| {
                        m["content"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|b| b["type"] == "text")
                            .filter_map(|b| b["text"].as_str())
                            .collect::<String>()
                    });
                out.push(response(
                    "get_last_assistant_text",
                    &id,
                    true,
                    Some(json!({"text": text})),
                    None,
                ));
            }
            "set_model" => {
                let model = o
                    .get("modelId")
                    .or_else(|| o.get("model"))
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty());
                let Some(model) = model else {
                    out.push(response(
                        "set_model",
                        &id,
                        false,
                        None,
                        Some("set_model needs `modelId` or `model`".into()),
                    ));
                    return Ok(out);
                };
                let (rid, line) =
                    self.control_request(json!({"subtype": "set_model", "model": model}));
                out.push(line);
                self.state.controls.insert(
                    rid,
                    PendingControl {
                        command: "set_model".into(),
                        client_id: id,
                        data: Self::model_json(model),
                        apply: Some(("model".into(), model.to_owned())),
                    },
                );
            }
            "set_permission_mode" => {
                let Some(mode) = o.get("mode").and_then(Value::as_str) else {
                    out.push(response(
                        "set_permission_mode",
                        &id,
                        false,
                        None,
                        Some("set_permission_mode needs `mode`".into()),
                    ));
                    return Ok(out);
                };
                let (rid, line) =
                    self.control_request(json!({"subtype": "set_permission_mode", "mode": mode}));
                out.push(line);
                self.state.controls.insert(
                    rid,
                    PendingControl {
                        command: "set_permission_mode".into(),
                        client_id: id,
                        data: json!({"mode": mode}),
                        apply: Some(("permissionMode".into(), mode.to_owned())),
                    },
                );
            }
            "extension_ui_response" => {
                let Some(ui_id) = o.get("id").and_then(Value::as_str) else {
                    return Ok(out);
                };
                // Unknown ids (answered already, or not ours) are ignored.
                if let Some(p) = self.state.permissions.remove(ui_id) {
                    let allow = o.get("confirmed").and_then(Value::as_bool).unwrap_or(false)
                        && !o.get("cancelled").and_then(Value::as_bool).unwrap_or(false);
                    out.push(Self::permission_reply(
                        &p.request_id,
                        allow,
                        &p.input,
                        USER_DENIAL,
                    ));
                }
            }
            other => {
                out.push(response(
                    other,
                    &id,
                    false,
                    None,
                    Some(format!("claude-code adapter does not support '{other}'")),
                ));
            }
        }
        Ok(out)
    }

    fn model_json(model: &str) -> Value {
        json!({"id": model, "name": model, "api": "anthropic-messages", "provider": "anthropic"})
    }

    fn model_object(&self) -> Value {
        self.state
            .model
            .as_deref()
            .map(Self::model_json)
            .unwrap_or(Value::Null)
    }

    /// Sends a user line and records the user message.
    fn start_prompt(&mut self, text: &str, images: &[Value], out: &mut Vec<Out>) {
        let mut blocks = vec![json!({"type": "text", "text": text})];
        let mut pi_content = vec![json!({"type": "text", "text": text})];
        for img in images {
            let (Some(data), mime) = (
                img["data"].as_str(),
                img["mimeType"].as_str().unwrap_or("image/png"),
            ) else {
                continue;
            };
            blocks.push(json!({"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}));
            pi_content.push(json!({"type": "image", "data": data, "mimeType": mime}));
        }
        let content = if blocks.len() == 1 {
            Value::String(text.to_owned())
        } else {
            Value::Array(blocks)
        };
        out.push(Out::Agent(s(&json!({
            "type": "user",
            "message": {"role": "user", "content": content},
            "parent_tool_use_id": null,
            "session_id": self.state.session_id.clone().unwrap_or_default(),
        }))));
        let now = self.clock.now_ms();
        let user = if pi_content.len() == 1 {
            json!({"role": "user", "content": text, "timestamp": now})
        } else {
            json!({"role": "user", "content": pi_content, "timestamp": now})
        };
        self.state.prompt_start = self.state.history.len();
        self.remember(user);
        self.state.streaming = true;
        self.state.started = false;
    }

    /// Emits agent_start, turn_start and the user message once per prompt.
    fn ensure_started(&mut self, out: &mut Vec<Out>) {
        if !self.state.streaming || self.state.started {
            return;
        }
        self.state.started = true;
        out.push(Out::Client(r#"{"type":"agent_start"}"#.into()));
        out.push(Out::Client(r#"{"type":"turn_start"}"#.into()));
        if let Some(user) = self.state.history.get(self.state.prompt_start).cloned() {
            out.push(Out::Client(s(
                &json!({"type": "message_start", "message": user}),
            )));
            out.push(Out::Client(s(
                &json!({"type": "message_end", "message": user}),
            )));
        }
    }

    // ----- agent -> client --------------------------------------------------

    /// Translates one line of Claude's stdout.
    pub fn from_agent(&mut self, line: &str) -> Result<Vec<Out>, Invalid> {
        // Deltas are most of a turn: read borrowed (`wire`). Any other
        // line, or one of another shape, is read as a `Value` below, with
        // the same result.
        if let Some(d) = wire::block_delta(line) {
            let mut out = Vec::new();
            self.on_block_delta(d.index, &d.kind, &d.text, &mut out);
            return Ok(out);
        }
        self.agent_line_as_tree(line)
    }

    /// Translates one line of Claude's stdout read as a `Value`.
    fn agent_line_as_tree(&mut self, line: &str) -> Result<Vec<Out>, Invalid> {
        let v: Value = serde_json::from_str(line).map_err(|e| Invalid(format!("not JSON: {e}")))?;
        let mut out = Vec::new();
        match v["type"].as_str().unwrap_or("") {
            "system" => self.on_system(&v, &mut out),
            "stream_event" => self.on_stream_event(&v["event"], &mut out),
            "assistant" => self.on_assistant(&v, &mut out),
            "user" => self.on_user(&v, &mut out),
            "control_request" => self.on_control_request(&v, &mut out),
            "control_cancel_request" => {
                let rid = v["request_id"].as_str().unwrap_or("");
                self.state.permissions.retain(|_, p| p.request_id != rid);
            }
            "control_response" => self.on_control_response(&v["response"], &mut out),
            "result" => self.on_result(&v, &mut out),
            // rate_limit_event and anything newer: nothing for the client.
            _ => {}
        }
        Ok(out)
    }

    fn on_system(&mut self, v: &Value, out: &mut Vec<Out>) {
        if let Some(mode) = v["permissionMode"].as_str() {
            self.state.permission_mode = Some(mode.to_owned());
        }
        if v["subtype"] == "init" {
            if let Some(id) = v["session_id"].as_str() {
                self.state.session_id = Some(id.to_owned());
            }
            if let Some(model) = v["model"].as_str() {
                self.state.model = Some(model.to_owned());
            }
            self.ensure_started(out);
        }
    }

    fn begin_message(
        &mut self,
        id: &str,
        model: Option<String>,
        streamed: bool,
        out: &mut Vec<Out>,
    ) {
        self.ensure_started(out);
        let now = self.clock.now_ms();
        self.state.current = Some(Current {
            id: id.to_owned(),
            model,
            blocks: Vec::new(),
            stop_reason: None,
            streamed,
            started_at: now,
        });
        let msg = self.current_message();
        out.push(Out::Client(s(
            &json!({"type": "message_start", "message": msg}),
        )));
        out.push(update(json!({"type": "start"})));
    }

    fn current_message(&self) -> Value {
        let Some(c) = &self.state.current else {
            return Value::Null;
        };
        let content: Vec<Value> = c
            .blocks
            .iter()
            .filter_map(|b| match b {
                Block::Text { text, .. } => Some(json!({"type": "text", "text": text})),
                Block::Thinking { text, .. } => Some(json!({"type": "thinking", "thinking": text})),
                Block::Tool { id, name, input, json, .. } => Some(json!({
                    "type": "toolCall",
                    "id": id,
                    "name": name,
                    "arguments": input.clone().unwrap_or_else(|| serde_json::from_str(json).unwrap_or(json!({}))),
                })),
                Block::Other => None,
            })
            .collect();
        json!({
            "role": "assistant",
            "content": content,
            "api": "anthropic-messages",
            "provider": "anthropic",
            "model": c.model.clone().or(self.state.model.clone()),
            "stopReason": c.stop_reason.as_deref().map(stop_reason),
            "timestamp": c.started_at,
        })
    }

    /// Closes block `i` of the current message: its `*_end` event, and for
    /// a tool call, `tool_execution_start`.
    fn close_block(&mut self, i: usize, out: &mut Vec<Out>) {
        let Some(c) = self.state.current.as_mut() else {
            return;
        };
        let Some(block) = c.blocks.get_mut(i) else {
            return;
        };
        match block {
            Block::Text { text, closed } if !*closed => {
                *closed = true;
                out.push(update(
                    json!({"type": "text_end", "contentIndex": i, "content": text}),
                ));
            }
            Block::Thinking { text, closed } if !*closed => {
                *closed = true;
                out.push(update(
                    json!({"type": "thinking_end", "contentIndex": i, "content": text}),
                ));
            }
            Block::Tool {
                id,
                name,
                json,
                input,
                closed,
            } if !*closed => {
                *closed = true;
                let args = input
                    .clone()
                    .unwrap_or_else(|| serde_json::from_str(json).unwrap_or(json!({})));
                *input = Some(args.clone());
                out.push(update(json!({
                    "type": "toolcall_end",
                    "contentIndex": i,
                    "toolCall": {"type": "toolCall", "id": id, "name": name, "arguments": args},
                })));
                self.state.tool_names.insert(id.clone(), name.clone());
                out.push(Out::Client(s(&json!({
                    "type": "tool_execution_start",
                    "toolCallId": id,
                    "toolName": name,
                    "args": args,
                }))));
            }
            _ => {}
        }
    }

    /// Ends the current message: open blocks closed, `done`, `message_end`.
    fn end_message(&mut self, out: &mut Vec<Out>) {
        let Some(n) = self.state.current.as_ref().map(|c| c.blocks.len()) else {
            return;
        };
        for i in 0..n {
            self.close_block(i, out);
        }
        // Without a message_delta (no partial messages), infer the reason.
        if let Some(c) = self
            .state
            .current
            .as_mut()
            .filter(|c| c.stop_reason.is_none())
        {
            let tool_last = matches!(
                c.blocks.iter().rev().find(|b| !matches!(b, Block::Other)),
                Some(Block::Tool { .. })
            );
            c.stop_reason = Some(if tool_last { "tool_use" } else { "end_turn" }.to_owned());
        }
        let msg = self.current_message();
        let reason = msg["stopReason"].as_str().unwrap_or("stop").to_owned();
        out.push(update(json!({"type": "done", "reason": reason})));
        out.push(Out::Client(s(
            &json!({"type": "message_end", "message": msg}),
        )));
        self.remember(msg);
        self.state.current = None;
    }

    fn on_stream_event(&mut self, e: &Value, out: &mut Vec<Out>) {
        let index = e["index"].as_u64().unwrap_or(0) as usize;
        match e["type"].as_str().unwrap_or("") {
            "message_start" => {
                if self.state.current.is_some() {
                    self.end_message(out);
                }
                let m = &e["message"];
                self.begin_message(
                    m["id"].as_str().unwrap_or(""),
                    m["model"].as_str().map(str::to_owned),
                    true,
                    out,
                );
            }
            "content_block_start" => {
                let Some(c) = self.state.current.as_mut() else {
                    return;
                };
                let cb = &e["content_block"];
                let (block, event) = match cb["type"].as_str().unwrap_or("") {
                    "text" => (
                        Block::Text {
                            text: String::new(),
                            closed: false,
                        },
                        Some(json!({"type": "text_start", "contentIndex": index})),
                    ),
                    "thinking" => (
                        Block::Thinking {
                            text: String::new(),
                            closed: false,
                        },
                        Some(json!({"type": "thinking_start", "contentIndex": index})),
                    ),
                    "tool_use" => (
                        Block::Tool {
                            id: cb["id"].as_str().unwrap_or("").to_owned(),
                            name: cb["name"].as_str().unwrap_or("").to_owned(),
                            json: String::new(),
                            input: None,
                            closed: false,
                        },
                        Some(json!({"type": "toolcall_start", "contentIndex": index})),
                    ),
                    _ => (Block::Other, None),
                };
                while c.blocks.len() < index {
                    c.blocks.push(Block::Other);
                }
                if c.blocks.len() == index {
                    c.blocks.push(block);
                } else {
                    c.blocks[index] = block;
                }
                if let Some(ev) = event {
                    out.push(update(ev));
                }
            }
            "content_block_delta" => {
                let d = &e["delta"];
                let kind = d["type"].as_str().unwrap_or("");
                let text = wire::delta_field(kind)
                    .and_then(|f| d[f].as_str())
                    .unwrap_or("");
                self.on_block_delta(index, kind, text, out);
            }
            "content_block_stop" => self.close_block(index, out),
            "message_delta" => {
                if let (Some(c), Some(r)) = (
                    self.state.current.as_mut(),
                    e["delta"]["stop_reason"].as_str(),
                ) {
                    c.stop_reason = Some(r.to_owned());
                }
            }
            "message_stop" => self.end_message(out),
            _ => {}
        }
    }

    /// A `content_block_delta` of the block at `index`: `kind` is the
    /// delta's type, `delta` its text.
    fn on_block_delta(&mut self, index: usize, kind: &str, delta: &str, out: &mut Vec<Out>) {
        let Some(c) = self.state.current.as_mut() else {
            return;
        };
        let Some(block) = c.blocks.get_mut(index) else {
            return;
        };
        let (buffer, event) = match (block, kind) {
            (
                Block::Text {
                    text,
                    closed: false,
                },
                "text_delta",
            ) => (text, "text_delta"),
            (
                Block::Thinking {
                    text,
                    closed: false,
                },
                "thinking_delta",
            ) => (text, "thinking_delta"),
            (
                Block::Tool {
                    json,
                    closed: false,
                    ..
                },
                "input_json_delta",
            ) => (json, "toolcall_delta"),
            _ => return,
        };
        append_capped(buffer, delta);
        out.push(Out::Client(wire::text(&wire::MessageUpdate {
            event: wire::Delta {
                content_index: index,
                delta,
                kind: event,
            },
            kind: "message_update",
        })));
    }

    /// A complete content block. With partial messages on it arrives before
    /// the block's stop event and carries the authoritative content; without
    /// them it is all there is, so the whole block becomes one delta.
    fn on_assistant(&mut self, v: &Value, out: &mut Vec<Out>) {
        let m = &v["message"];
        let id = m["id"].as_str().unwrap_or("");
        let same = self.state.current.as_ref().is_some_and(|c| c.id == id);
        if !same {
            if self.state.current.is_some() {
                self.end_message(out);
            }
            self.begin_message(id, m["model"].as_str().map(str::to_owned), false, out);
        }
        let streamed = self.state.current.as_ref().is_some_and(|c| c.streamed);
        for block in m["content"].as_array().into_iter().flatten() {
            let kind = block["type"].as_str().unwrap_or("");
            let Some(c) = self.state.current.as_mut() else {
                return;
            };
            if streamed {
                // Find the streamed block this one completes.
                let found = c.blocks.iter().position(|b| match (b, kind) {
                    (Block::Tool { id, .. }, "tool_use") => {
                        Some(id.as_str()) == block["id"].as_str()
                    }
                    (Block::Text { closed: false, .. }, "text") => true,
                    (Block::Thinking { closed: false, .. }, "thinking") => true,
                    _ => false,
                });
                let Some(i) = found else { continue };
                match &mut c.blocks[i] {
                    Block::Tool { input, .. } => *input = Some(block["input"].clone()),
                    Block::Text { text, .. } => {
                        if let Some(t) = block["text"].as_str() {
                            *text = t.to_owned();
                        }
                    }
                    Block::Thinking { text, .. } => {
                        if let Some(t) = block["thinking"].as_str() {
                            *text = t.to_owned();
                        }
                    }
                    Block::Other => {}
                }
                self.close_block(i, out);
                continue;
            }
            let i = c.blocks.len();
            match kind {
                "text" => {
                    let text = block["text"].as_str().unwrap_or("").to_owned();
                    c.blocks.push(Block::Text {
                        text: text.clone(),
                        closed: false,
                    });
                    out.push(update(json!({"type": "text_start", "contentIndex": i})));
                    out.push(update(
                        json!({"type": "text_delta", "contentIndex": i, "delta": text}),
                    ));
                }
                "thinking" => {
                    let text = block["thinking"].as_str().unwrap_or("").to_owned();
                    c.blocks.push(Block::Thinking {
                        text: text.clone(),
                        closed: false,
                    });
                    out.push(update(json!({"type": "thinking_start", "contentIndex": i})));
                    out.push(update(
                        json!({"type": "thinking_delta", "contentIndex": i, "delta": text}),
                    ));
                }
                "tool_use" => {
                    let input = block["input"].clone();
                    let json_text = input.to_string();
                    c.blocks.push(Block::Tool {
                        id: block["id"].as_str().unwrap_or("").to_owned(),
                        name: block["name"].as_str().unwrap_or("").to_owned(),
                        json: json_text.clone(),
                        input: Some(input),
                        closed: false,
                    });
                    out.push(update(json!({"type": "toolcall_start", "contentIndex": i})));
                    out.push(update(
                        json!({"type": "toolcall_delta", "contentIndex": i, "delta": json_text}),
                    ));
                }
                _ => {
                    c.blocks.push(Block::Other);
                    continue;
                }
            }
            self.close_block(i, out);
        }
    }

    fn on_user(&mut self, v: &Value, out: &mut Vec<Out>) {
        // Replays of local commands (e.g. after set_model) are not messages.
        if v["isReplay"] == true {
            return;
        }
        let Some(blocks) = v["message"]["content"].as_array() else {
            return;
        };
        if self.state.current.as_ref().is_some_and(|c| !c.streamed) {
            self.end_message(out);
        }
        for b in blocks.iter().filter(|b| b["type"] == "tool_result") {
            let id = b["tool_use_id"].as_str().unwrap_or("").to_owned();
            let name = self.state.tool_names.get(&id).cloned().unwrap_or_default();
            let content = tool_result_content(&b["content"]);
            let is_error = b["is_error"].as_bool().unwrap_or(false);
            out.push(Out::Client(s(&json!({
                "type": "tool_execution_end",
                "toolCallId": id,
                "toolName": name,
                "result": {"content": content},
                "isError": is_error,
            }))));
            let msg = json!({
                "role": "toolResult",
                "toolCallId": id,
                "toolName": name,
                "content": content,
                "isError": is_error,
                "timestamp": self.clock.now_ms(),
            });
            out.push(Out::Client(s(
                &json!({"type": "message_start", "message": msg}),
            )));
            out.push(Out::Client(s(
                &json!({"type": "message_end", "message": msg}),
            )));
            self.remember(msg);
        }
    }

    fn on_control_request(&mut self, v: &Value, out: &mut Vec<Out>) {
        let rid = v["request_id"].as_str().unwrap_or("").to_owned();
        let req = &v["request"];
        if req["subtype"] != "can_use_tool" {
            let sub = req["subtype"].as_str().unwrap_or("");
            out.push(Out::Agent(s(&json!({
                "type": "control_response",
                "response": {"subtype": "error", "request_id": rid, "error": format!("amarre does not handle '{sub}'")},
            }))));
            return;
        }
        self.ensure_started(out);
        let tool = req["tool_name"].as_str().unwrap_or("tool");
        let input = req["input"].clone();
        if tool == "ExitPlanMode" {
            let plan = input["plan"].as_str().unwrap_or("").to_owned();
            out.push(Out::Client(s(&json!({
                "type": "extension_ui_request",
                "method": "notify",
                "event": "plan_capture",
                "message": plan,
                "notifyType": "info",
            }))));
            out.push(Self::permission_reply(&rid, false, &input, PLAN_DENIAL));
            return;
        }
        let ui_id = self.clock.new_id();
        let message = cut(&input.to_string(), MAX_QUESTION_CHARS);
        out.push(Out::Client(s(&json!({
            "type": "extension_ui_request",
            "id": ui_id,
            "method": "confirm",
            "title": format!("Run {tool}?"),
            "message": message,
        }))));
        self.state.permissions.insert(
            ui_id,
            PendingPermission {
                request_id: rid,
                input,
            },
        );
    }

    fn on_control_response(&mut self, r: &Value, out: &mut Vec<Out>) {
        let rid = r["request_id"].as_str().unwrap_or("");
        let Some(p) = self.state.controls.remove(rid) else {
            return;
        };
        if r["subtype"] == "success" {
            match p.apply {
                Some((ref k, ref v)) if k == "model" => self.state.model = Some(v.clone()),
                Some((ref k, ref v)) if k == "permissionMode" => {
                    self.state.permission_mode = Some(v.clone())
                }
                _ => {}
            }
            out.push(response(&p.command, &p.client_id, true, Some(p.data), None));
        } else {
            let error = r["error"]
                .as_str()
                .unwrap_or("Claude Code refused the request")
                .to_owned();
            out.push(response(&p.command, &p.client_id, false, None, Some(error)));
        }
    }

    /// Closes the run in flight: the error (if any), `turn_end` over the
    /// whole turn, `agent_end`, pending aborts answered.
    fn finish_run(&mut self, error: Option<String>, out: &mut Vec<Out>) {
        if !self.state.streaming {
            return;
        }
        self.ensure_started(out);
        if self.state.current.is_some() {
            self.end_message(out);
        }
        let error_happened = error.is_some();
        if let Some(e) = error {
            let reason = if self.state.aborting {
                "aborted"
            } else {
                "error"
            };
            out.push(update(
                json!({"type": "error", "reason": reason, "error": e}),
            ));
        }
        let messages: Vec<Value> = self
            .state
            .history
            .range(self.state.prompt_start.min(self.state.history.len())..)
            .cloned()
            .collect();
        let assistants: Vec<&Value> = messages
            .iter()
            .filter(|m| m["role"] == "assistant")
            .collect();
        let content: Vec<Value> = assistants
            .iter()
            .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
            .collect();
        let last = assistants.last().copied().cloned().unwrap_or(Value::Null);
        let stop = if self.state.aborting {
            json!("aborted")
        } else if error_happened {
            json!("error")
        } else {
            last.get("stopReason").cloned().unwrap_or(json!("stop"))
        };
        let turn_message = json!({
            "role": "assistant",
            "content": content,
            "api": "anthropic-messages",
            "provider": "anthropic",
            "model": last.get("model").cloned().unwrap_or_else(|| json!(self.state.model)),
            "stopReason": stop,
            "timestamp": last.get("timestamp").cloned().unwrap_or_else(|| json!(self.clock.now_ms())),
        });
        let tool_results: Vec<&Value> = messages
            .iter()
            .filter(|m| m["role"] == "toolResult")
            .collect();
        out.push(Out::Client(s(
            &json!({"type": "turn_end", "message": turn_message, "toolResults": tool_results}),
        )));
        out.push(Out::Client(s(
            &json!({"type": "agent_end", "messages": messages}),
        )));
        self.state.streaming = false;
        self.state.started = false;
        self.state.permissions.clear();
        // Tool results come within their run: the names are not needed after.
        self.state.tool_names.clear();
        if self.state.aborting {
            self.state.aborting = false;
            for id in std::mem::take(&mut self.state.abort_waiters) {
                out.push(response("abort", &id, true, None, None));
            }
        }
    }

    fn on_result(&mut self, v: &Value, out: &mut Vec<Out>) {
        let aborted = self.state.aborting;
        let error = (v["is_error"] == true).then(|| {
            if aborted {
                return "Aborted by the remote user".to_owned();
            }
            v["result"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| {
                    v["errors"].as_array().map(|e| {
                        e.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                })
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| v["subtype"].as_str().unwrap_or("error").to_owned())
        });
        self.finish_run(error, out);
        // A queued prompt goes now, steering before follow-ups; never lost.
        let next = match self.state.queue.iter().position(|q| q.steer) {
            Some(i) => self.state.queue.remove(i),
            None => self.state.queue.pop_front(),
        };
        if let Some(next) = next {
            out.push(self.queue_update());
            self.start_prompt(&next.text, &next.images, out);
        }
    }

    /// Claude exited: close the run and answer what can no longer be.
    pub fn on_exit(&mut self, code: Option<i32>, signal: Option<&str>) -> Vec<Out> {
        let mut out = Vec::new();
        let how = match (code, signal) {
            (Some(c), _) => format!("Claude Code exited with code {c}"),
            (None, Some(sig)) => format!("Claude Code was killed by {sig}"),
            _ => "Claude Code exited".to_owned(),
        };
        self.finish_run(Some(how.clone()), &mut out);
        for (_, p) in std::mem::take(&mut self.state.controls) {
            out.push(response(
                &p.command,
                &p.client_id,
                false,
                None,
                Some(how.clone()),
            ));
        }
        for id in std::mem::take(&mut self.state.abort_waiters) {
            out.push(response("abort", &id, true, None, None));
        }
        self.state.permissions.clear();
        if !self.state.queue.is_empty() {
            self.state.queue.clear();
            out.push(self.queue_update());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestClock(u64);

    impl Clock for TestClock {
        fn now_ms(&mut self) -> u64 {
            1000
        }
        fn new_id(&mut self) -> String {
            self.0 += 1;
            format!("ui-{}", self.0)
        }
    }

    fn t() -> Translator<TestClock> {
        Translator::new(TestClock(0), None).unwrap()
    }

    fn client(out: &[Out]) -> Vec<Value> {
        out.iter()
            .filter_map(|o| match o {
                Out::Client(c) => Some(serde_json::from_str(c).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn agent(out: &[Out]) -> Vec<Value> {
        out.iter()
            .filter_map(|o| match o {
                Out::Agent(a) => Some(serde_json::from_str(a).unwrap()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_prompt_while_running_is_queued_and_sent_after_the_result() {
        let mut tr = t();
        let out = tr
            .from_client(r#"{"type":"prompt","id":"1","message":"first"}"#)
            .unwrap();
        assert_eq!(agent(&out)[0]["message"]["content"], "first");
        let out = tr
            .from_client(r#"{"type":"follow_up","id":"2","message":"second"}"#)
            .unwrap();
        assert!(agent(&out).is_empty(), "queued, not sent");
        assert_eq!(
            client(&out)[1],
            json!({"type": "queue_update", "steering": [], "followUp": ["second"]})
        );
        let out = tr
            .from_agent(r#"{"type":"result","subtype":"success","is_error":false,"result":"ok"}"#)
            .unwrap();
        let c = client(&out);
        let types: Vec<&str> = c.iter().map(|v| v["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            vec![
                "agent_start",
                "turn_start",
                "message_start",
                "message_end",
                "turn_end",
                "agent_end",
                "queue_update"
            ]
        );
        assert_eq!(agent(&out)[0]["message"]["content"], "second");
    }

    #[test]
    fn prompts_queued_while_running_are_bounded_in_bytes_and_count() {
        use amarre_pi_dialect::MAX_QUEUED;
        let mut tr = t();
        tr.from_client(r#"{"type":"prompt","id":"1","message":"first"}"#)
            .unwrap();
        let big = "x".repeat(3 << 20);
        let prompt = |id: usize, msg: &str| {
            json!({"type": "follow_up", "id": id.to_string(), "message": msg}).to_string()
        };
        for id in 0..2 {
            let out = tr.from_client(&prompt(id, &big)).unwrap();
            assert_eq!(client(&out)[0]["success"], true, "prompt {id} is queued");
        }
        let out = tr.from_client(&prompt(2, &big)).unwrap();
        let c = client(&out);
        assert_eq!(c.len(), 1, "only the refusal: {c:?}");
        assert_eq!(c[0]["success"], false);
        assert!(c[0]["error"].as_str().unwrap().contains("queue is full"));
        assert_eq!(tr.state.queue.len(), 2);
        for id in 3..MAX_QUEUED + 1 {
            let out = tr.from_client(&prompt(id, "s")).unwrap();
            assert_eq!(client(&out)[0]["success"], true, "prompt {id}");
        }
        let out = tr.from_client(&prompt(999, "s")).unwrap();
        assert_eq!(client(&out)[0]["success"], false);
        assert_eq!(tr.state.queue.len(), MAX_QUEUED);
    }

    #[test]
    fn state_survives_save_and_restore() {
        let mut tr = t();
        tr.from_client(r#"{"type":"prompt","message":"hi"}"#)
            .unwrap();
        let saved = tr.save();
        let restored = Translator::new(TestClock(0), Some(&saved)).unwrap();
        assert_eq!(restored.state, tr.state);
        assert!(Translator::new(TestClock(0), Some("{\"v\":99}")).is_err());
    }

    /// One prompt answered by one assistant text of `size` bytes.
    fn big_turn(tr: &mut Translator<TestClock>, n: usize, size: usize) -> Vec<Out> {
        tr.from_client(&json!({"type": "prompt", "message": format!("turn {n}")}).to_string())
            .unwrap();
        let text = format!("{n}:{}", "y".repeat(size));
        tr.from_agent(
            &json!({"type": "assistant", "message": {"id": format!("m{n}"), "role": "assistant",
                "content": [{"type": "text", "text": text}]}})
            .to_string(),
        )
        .unwrap();
        tr.from_agent(r#"{"type":"result","subtype":"success","is_error":false,"result":"ok"}"#)
            .unwrap()
    }

    #[test]
    fn history_is_bounded_in_bytes_and_get_messages_says_it_was_cut() {
        let mut tr = t();
        for n in 0..300 {
            let out = big_turn(&mut tr, n, 500_000);
            // Each turn's own records still carry its message.
            let end = client(&out)
                .into_iter()
                .find(|v| v["type"] == "agent_end")
                .unwrap();
            assert_eq!(end["messages"].as_array().unwrap().len(), 2, "turn {n}");
        }
        let history_bytes: usize = tr.state.history.iter().map(json_size).sum();
        assert!(history_bytes <= MAX_HISTORY_BYTES, "{history_bytes}");
        assert_eq!(tr.state.history_bytes, history_bytes);
        let out = tr
            .from_client(r#"{"type":"get_messages","id":"g"}"#)
            .unwrap();
        let answer = &client(&out)[0];
        assert_eq!(answer["success"], true);
        let messages = answer["data"]["messages"].as_array().unwrap();
        assert!(
            messages.len() >= 2 && messages.len() < 20,
            "{}",
            messages.len()
        );
        assert_eq!(answer["data"]["truncated"], true);
        assert_eq!(
            answer["data"]["omittedMessages"].as_u64().unwrap() + messages.len() as u64,
            600
        );
        // The newest messages are the ones kept.
        let last = &messages[messages.len() - 1];
        assert!(
            last["content"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with("299:")
        );
        let out = tr.from_client(r#"{"type":"get_state","id":"s"}"#).unwrap();
        assert_eq!(client(&out)[0]["data"]["messageCount"], messages.len());
    }

    #[test]
    fn an_uncut_history_has_no_truncation_fields_and_survives_restore() {
        let mut tr = t();
        big_turn(&mut tr, 0, 10);
        let out = tr
            .from_client(r#"{"type":"get_messages","id":"g"}"#)
            .unwrap();
        let data = &client(&out)[0]["data"];
        assert_eq!(data["messages"].as_array().unwrap().len(), 2);
        assert!(data.get("truncated").is_none(), "{data}");
        let restored = Translator::new(TestClock(0), Some(&tr.save())).unwrap();
        assert_eq!(restored.state, tr.state);
        // A state saved before the history was bounded (no counter) loads.
        let mut old: Value = serde_json::from_str(&tr.save()).unwrap();
        old.as_object_mut().unwrap().remove("history_omitted");
        let restored = Translator::new(TestClock(0), Some(&old.to_string())).unwrap();
        assert_eq!(restored.state, tr.state);
    }

    #[test]
    fn a_streamed_block_keeps_at_most_max_block_bytes_but_forwards_every_delta() {
        let mut tr = t();
        tr.from_client(r#"{"type":"prompt","message":"go"}"#)
            .unwrap();
        let ev = |e: Value| json!({"type": "stream_event", "event": e}).to_string();
        tr.from_agent(&ev(json!({"type": "message_start", "message": {"id": "m", "role": "assistant", "content": []}})))
            .unwrap();
        tr.from_agent(&ev(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})))
            .unwrap();
        let chunk = "é".repeat(1 << 20); // 2 MiB
        let mut forwarded = 0;
        for _ in 0..3 {
            let out = tr
                .from_agent(&ev(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": chunk}})))
                .unwrap();
            forwarded += client(&out)[0]["assistantMessageEvent"]["delta"]
                .as_str()
                .unwrap()
                .len();
        }
        assert_eq!(forwarded, 3 * chunk.len());
        let out = tr
            .from_agent(&ev(json!({"type": "content_block_stop", "index": 0})))
            .unwrap();
        let end = &client(&out)[0]["assistantMessageEvent"];
        assert_eq!(end["type"], "text_end");
        assert_eq!(end["content"].as_str().unwrap().len(), MAX_BLOCK_BYTES);
    }

    #[test]
    fn questions_are_cut_to_400_characters() {
        let long = "x".repeat(1000);
        assert_eq!(cut(&long, 400).chars().count(), 400);
        assert!(cut(&long, 400).ends_with('…'));
        assert_eq!(cut("short", 400), "short");
    }
}

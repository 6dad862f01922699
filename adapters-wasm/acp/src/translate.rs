//! The translation between pi's RPC dialect (the clients) and the Agent
//! Client Protocol (the agent, JSON-RPC 2.0 one message per line), with the
//! state it needs. AGENTS.md section 5 is the contract;
//! docs/adapters/acp.md the table as implemented.
//!
//! This module is plain Rust (no SDK types), so its logic runs natively in
//! unit tests as well as inside the component. Time and fresh ids come from
//! a [`Clock`].

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use amarre_pi_dialect::{prompt_bytes, queue_refusal};

mod wire;

use wire::{Fast, ToolFields};

/// The longest tool input shown in a permission question, in characters.
const MAX_QUESTION_CHARS: usize = 400;
/// The most messages `get_messages` keeps (the oldest go first).
pub const MAX_HISTORY: usize = 1000;
/// The most history kept, in bytes of JSON (the oldest go first, the
/// newest is always kept); the messages of the turn in flight, for its
/// `turn_end` and `agent_end`, are bounded the same way. Everything the
/// adapter keeps lives in its sandbox (64 MiB by default).
pub const MAX_HISTORY_BYTES: usize = 4 << 20;
/// The most text one content block keeps from its chunks: every chunk still
/// reaches the clients, but the block's `*_end`, `message_end` and history
/// hold at most this much.
pub const MAX_BLOCK_BYTES: usize = 4 << 20;

/// The ACP protocol version this adapter speaks.
const PROTOCOL_VERSION: u64 = 1;
/// Version of the saved state layout.
const STATE_VERSION: u32 = 1;
/// JSON-RPC "method not found".
const METHOD_NOT_FOUND: i64 = -32601;

/// Where a translated record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Agent(String),
    Client(String),
    /// A newer resume token (the ACP `sessionId`).
    Resume(String),
}

/// Time and ids.
pub trait Clock {
    fn now_ms(&mut self) -> u64;
    fn new_id(&mut self) -> String;
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// What the translator needs from the spawn request.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// The absolute working directory for `session/new`.
    pub cwd: String,
    /// The `sessionId` of an earlier run, to `session/load`.
    pub resume: Option<String>,
    /// This adapter's version, for `clientInfo`.
    pub version: String,
}

/// Where the ACP session stands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
enum Phase {
    /// `handshake` not called yet.
    #[default]
    Spawned,
    /// `initialize` sent.
    Initializing,
    /// `session/new` or `session/load` sent.
    Opening,
    /// The session exists.
    Ready,
    /// The handshake failed (the agent's message).
    Failed(String),
}

/// A prompt waiting for the current turn to end.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Queued {
    steer: bool,
    text: String,
    images: Vec<Value>,
}

/// One option of a permission question, in the order shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Choice {
    name: String,
    option_id: String,
    kind: String,
}

/// A permission question waiting for a client's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct PendingPermission {
    /// The agent's JSON-RPC id, echoed as received (number or string).
    request_id: Value,
    choices: Vec<Choice>,
}

/// A request of ours waiting for the agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
enum Pending {
    Initialize,
    Open {
        load: bool,
    },
    Prompt,
    /// A client command forwarded to the agent (`set_model`,
    /// `set_permission_mode`), acked when the agent answers.
    Command {
        command: String,
        client_id: Value,
        data: Value,
        /// ("model" | "mode", value) applied on success.
        apply: (String, String),
    },
}

/// A tool call seen in this session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
struct Tool {
    title: String,
    input: Value,
    /// The latest non-empty content (pi items).
    content: Vec<Value>,
    started: bool,
    ended: bool,
}

/// One content block of the assistant message being streamed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
enum Block {
    Text(String),
    Thinking(String),
    Tool {
        id: String,
        name: String,
        input: Value,
    },
}

/// The assistant message being streamed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Current {
    blocks: Vec<Block>,
    started_at: u64,
}

/// Everything the translator remembers; serialised for hot-reload hand-over.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    v: u32,
    cwd: String,
    resume: Option<String>,
    version: String,
    phase: Phase,
    /// Client records that arrived before the session existed.
    early: Vec<String>,
    load_session: bool,
    agent_name: Option<String>,
    session_id: Option<String>,
    model: Option<String>,
    mode: Option<String>,
    next_id: u64,
    /// Our requests by JSON-RPC id (as compact JSON text).
    pending: BTreeMap<String, Pending>,
    /// Messages of this process, at most [`MAX_HISTORY`] and
    /// [`MAX_HISTORY_BYTES`].
    history: VecDeque<Value>,
    /// How many older messages were dropped from `history`.
    #[serde(default)]
    history_omitted: u64,
    /// The JSON size of `history` (recomputed on restore).
    #[serde(skip)]
    history_bytes: usize,
    /// The JSON size of `turn_messages` (recomputed on restore).
    #[serde(skip)]
    turn_bytes: usize,
    /// A prompt is in flight (sent, not answered).
    streaming: bool,
    /// The messages of the prompt in flight (the newest
    /// [`MAX_HISTORY_BYTES`] of them).
    turn_messages: VecDeque<Value>,
    queue: VecDeque<Queued>,
    permissions: BTreeMap<String, PendingPermission>,
    tools: BTreeMap<String, Tool>,
    current: Option<Current>,
    /// Client ids of `abort` commands answered when the turn ends.
    abort_waiters: Vec<Value>,
    aborting: bool,
}

/// The translator of one session.
pub struct Translator<C: Clock> {
    state: State,
    clock: C,
}

fn s(v: &Value) -> String {
    v.to_string()
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

fn client(v: Value) -> Out {
    Out::Client(s(&v))
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

/// The rank of a permission option kind in a question: allow first, deny
/// last, so the mobile client's "first = allow, last = deny" holds.
fn kind_rank(kind: &str) -> u8 {
    match kind {
        "allow_once" => 0,
        "allow_always" => 1,
        "reject_always" => 2,
        "reject_once" => 3,
        _ => 4,
    }
}

/// Orders the agent's options by kind (stable within a kind) and makes every
/// name unique with a ` (2)`, ` (3)`, ... suffix.
fn order_options(options: &[Value]) -> Vec<Choice> {
    let mut choices: Vec<Choice> = options
        .iter()
        .filter_map(|o| {
            let option_id = o["optionId"].as_str()?.to_owned();
            let kind = o["kind"].as_str().unwrap_or("").to_owned();
            let name = o["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(&option_id)
                .to_owned();
            Some(Choice {
                name,
                option_id,
                kind,
            })
        })
        .collect();
    choices.sort_by_key(|c| kind_rank(&c.kind));
    let mut seen: Vec<String> = Vec::new();
    for c in &mut choices {
        let base = c.name.clone();
        let mut n = 1;
        while seen.contains(&c.name) {
            n += 1;
            c.name = format!("{base} ({n})");
        }
        seen.push(c.name.clone());
    }
    choices
}

/// A plan as a Markdown checklist.
fn plan_markdown(entries: &[Value]) -> String {
    entries
        .iter()
        .map(|e| {
            let done = if e["status"] == "completed" { "x" } else { " " };
            let text = e["content"].as_str().unwrap_or("");
            let note = if e["status"] == "in_progress" {
                " (in progress)"
            } else {
                ""
            };
            format!("- [{done}] {text}{note}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// ACP tool content items as pi result content: text and images as pi
/// blocks, diffs kept as `{type:"diff", path, oldText, newText}`.
fn tool_content(items: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for item in items.as_array().into_iter().flatten() {
        match item["type"].as_str().unwrap_or("") {
            "content" => {
                let c = &item["content"];
                match c["type"].as_str().unwrap_or("") {
                    "text" => out.push(json!({"type": "text", "text": c["text"]})),
                    "image" => out.push(
                        json!({"type": "image", "data": c["data"], "mimeType": c["mimeType"]}),
                    ),
                    "resource_link" => out.push(json!({"type": "text", "text": c["uri"]})),
                    _ => {}
                }
            }
            "diff" => out.push(json!({
                "type": "diff",
                "path": item["path"],
                "oldText": item["oldText"],
                "newText": item["newText"],
            })),
            _ => {}
        }
    }
    out
}

/// The text of a chunk's content block (empty unless a text block).
fn chunk_text(content: &Value) -> &str {
    match content["type"].as_str() {
        Some("text") => content["text"].as_str().unwrap_or(""),
        _ => "",
    }
}

/// What a `tool_call` or `tool_call_update` read as a `Value` says.
fn tool_fields(u: &Value) -> ToolFields<'_> {
    ToolFields {
        id: Cow::Borrowed(u["toolCallId"].as_str().unwrap_or("")),
        title: u["title"].as_str().map(Cow::Borrowed),
        raw_input: u["rawInput"].clone(),
        content: tool_content(&u["content"]),
        status: u["status"].as_str().map(Cow::Borrowed),
        raw_output: u["rawOutput"].clone(),
    }
}

fn raw_output_text(raw: &Value) -> Option<String> {
    match raw {
        Value::Null => None,
        Value::String(t) => Some(t.clone()),
        other => Some(other.to_string()),
    }
}

fn model_json(model: &str) -> Value {
    json!({"id": model, "name": model, "api": "acp", "provider": "acp"})
}

fn id_key(id: &Value) -> String {
    id.to_string()
}

impl<C: Clock> Translator<C> {
    /// A fresh translator, or one resumed from [`Translator::save`] output.
    pub fn new(clock: C, setup: Setup, saved: Option<&str>) -> Result<Translator<C>, Invalid> {
        let state = match saved {
            None => State {
                v: STATE_VERSION,
                cwd: setup.cwd,
                resume: setup.resume,
                version: setup.version,
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
                state.turn_bytes = state.turn_messages.iter().map(json_size).sum();
                state
            }
        };
        Ok(Translator { state, clock })
    }

    /// The state for a newer version of this adapter.
    pub fn save(&self) -> String {
        serde_json::to_string(&self.state).unwrap_or_default()
    }

    fn request(&mut self, method: &str, params: Value, pending: Pending) -> Out {
        let id = self.state.next_id;
        self.state.next_id += 1;
        self.state.pending.insert(id_key(&json!(id)), pending);
        Out::Agent(s(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        ))
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
        client(json!({"type": "queue_update", "steering": pick(true), "followUp": pick(false)}))
    }

    fn remember(&mut self, message: Value) {
        let size = json_size(&message);
        let st = &mut self.state;
        st.turn_bytes += size;
        st.turn_messages.push_back(message.clone());
        while st.turn_bytes > MAX_HISTORY_BYTES && st.turn_messages.len() > 1 {
            if let Some(old) = st.turn_messages.pop_front() {
                st.turn_bytes = st.turn_bytes.saturating_sub(json_size(&old));
            }
        }
        st.history_bytes += size;
        st.history.push_back(message);
        while (st.history.len() > MAX_HISTORY || st.history_bytes > MAX_HISTORY_BYTES)
            && st.history.len() > 1
        {
            if let Some(old) = st.history.pop_front() {
                st.history_bytes = st.history_bytes.saturating_sub(json_size(&old));
                st.history_omitted += 1;
            }
        }
    }

    // ----- handshake ----------------------------------------------------------

    /// The records sent before anything else: `initialize`.
    pub fn handshake(&mut self) -> Vec<Out> {
        if self.state.phase != Phase::Spawned {
            return Vec::new();
        }
        self.state.phase = Phase::Initializing;
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "clientCapabilities": {
                "fs": {"readTextFile": false, "writeTextFile": false},
                "terminal": false,
            },
            "clientInfo": {"name": "amarre", "title": "amarre", "version": self.state.version},
        });
        vec![self.request("initialize", params, Pending::Initialize)]
    }

    fn on_initialized(&mut self, result: &Value, out: &mut Vec<Out>) {
        self.state.load_session = result["agentCapabilities"]["loadSession"] == true;
        self.state.agent_name = result["agentInfo"]["name"].as_str().map(str::to_owned);
        self.state.phase = Phase::Opening;
        let resume = self
            .state
            .resume
            .clone()
            .filter(|_| self.state.load_session);
        let line = match resume {
            Some(id) => self.request(
                "session/load",
                json!({"sessionId": id, "cwd": self.state.cwd, "mcpServers": []}),
                Pending::Open { load: true },
            ),
            None => self.request(
                "session/new",
                json!({"cwd": self.state.cwd, "mcpServers": []}),
                Pending::Open { load: false },
            ),
        };
        out.push(line);
    }

    fn on_opened(&mut self, load: bool, result: &Value, out: &mut Vec<Out>) {
        let id = if load {
            self.state.resume.clone()
        } else {
            result["sessionId"].as_str().map(str::to_owned)
        };
        let Some(id) = id else {
            self.fail_handshake("session/new answered without a sessionId".into(), out);
            return;
        };
        self.state.session_id = Some(id.clone());
        out.push(Out::Resume(id));
        // `models` / `modes`, or (codex-acp) select `configOptions` of
        // category `model` / `mode`.
        let option = |category: &str| {
            result["configOptions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| o["category"] == category)
                .and_then(|o| o["currentValue"].as_str())
        };
        if let Some(m) = result["models"]["currentModelId"]
            .as_str()
            .or_else(|| option("model"))
        {
            self.state.model = Some(m.to_owned());
        }
        if let Some(m) = result["modes"]["currentModeId"]
            .as_str()
            .or_else(|| option("mode"))
        {
            self.state.mode = Some(m.to_owned());
        }
        self.state.phase = Phase::Ready;
        for record in std::mem::take(&mut self.state.early) {
            // Early records were read once already; a failure now cannot be
            // reported as an adapter error, so it is skipped.
            if let Ok(more) = self.from_client(&record) {
                out.extend(more);
            }
        }
    }

    fn fail_handshake(&mut self, message: String, out: &mut Vec<Out>) {
        let name = self.state.agent_name.as_deref().unwrap_or("the ACP agent");
        let error = format!("{name} did not open a session: {message}");
        out.push(client(json!({
            "type": "extension_error",
            "extensionPath": "acp",
            "event": "handshake",
            "error": error,
        })));
        self.state.phase = Phase::Failed(error);
        for record in std::mem::take(&mut self.state.early) {
            if let Ok(more) = self.from_client(&record) {
                out.extend(more);
            }
        }
    }

    // ----- client -> agent ----------------------------------------------------

    /// Translates one client record.
    pub fn from_client(&mut self, record: &str) -> Result<Vec<Out>, Invalid> {
        let v: Value =
            serde_json::from_str(record).map_err(|e| Invalid(format!("not JSON: {e}")))?;
        let Some(o) = v.as_object() else {
            return Err(Invalid("a command must be a JSON object".into()));
        };
        let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
        let id = o.get("id").cloned().unwrap_or(Value::Null);
        let mut out = Vec::new();
        match &self.state.phase {
            Phase::Ready => {}
            Phase::Failed(error) => {
                if kind != "extension_ui_response" {
                    out.push(response(kind, &id, false, None, Some(error.clone())));
                }
                return Ok(out);
            }
            _ => {
                self.state.early.push(record.to_owned());
                return Ok(out);
            }
        }
        match kind {
            "prompt" | "steer" | "follow_up" => self.on_prompt(kind, o, &id, &mut out),
            "abort" => {
                if !self.state.streaming {
                    out.push(response("abort", &id, true, None, None));
                    return Ok(out);
                }
                self.cancel_permissions(&mut out);
                if !self.state.queue.is_empty() {
                    self.state.queue.clear();
                    out.push(self.queue_update());
                }
                if !self.state.aborting {
                    self.state.aborting = true;
                    out.push(Out::Agent(s(&json!({
                        "jsonrpc": "2.0",
                        "method": "session/cancel",
                        "params": {"sessionId": self.state.session_id},
                    }))));
                }
                // The agent answers the prompt `cancelled`: abort is acked then.
                self.state.abort_waiters.push(id);
            }
            "get_state" => {
                let data = json!({
                    "model": self.state.model.as_deref().map(model_json),
                    "thinkingLevel": "off",
                    "isStreaming": self.state.streaming,
                    "isCompacting": false,
                    "steeringMode": "all",
                    "followUpMode": "one-at-a-time",
                    "sessionId": self.state.session_id,
                    "permissionMode": self.state.mode,
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
                        Some("set_model needs `modelId`".into()),
                    ));
                    return Ok(out);
                };
                let params = json!({"sessionId": self.state.session_id, "modelId": model});
                let pending = Pending::Command {
                    command: "set_model".into(),
                    client_id: id,
                    data: model_json(model),
                    apply: ("model".into(), model.to_owned()),
                };
                out.push(self.request("session/set_model", params, pending));
            }
            "set_permission_mode" => {
                let Some(mode) = o
                    .get("mode")
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty())
                else {
                    out.push(response(
                        "set_permission_mode",
                        &id,
                        false,
                        None,
                        Some("set_permission_mode needs `mode`".into()),
                    ));
                    return Ok(out);
                };
                let params = json!({"sessionId": self.state.session_id, "modeId": mode});
                let pending = Pending::Command {
                    command: "set_permission_mode".into(),
                    client_id: id,
                    data: json!({"mode": mode}),
                    apply: ("mode".into(), mode.to_owned()),
                };
                out.push(self.request("session/set_mode", params, pending));
            }
            "extension_ui_response" => {
                let Some(ui_id) = o.get("id").and_then(Value::as_str) else {
                    return Ok(out);
                };
                // Unknown ids (answered already, or not ours) are ignored.
                if let Some(p) = self.state.permissions.remove(ui_id) {
                    let chosen = Self::answer(&p.choices, o);
                    out.push(Self::permission_reply(&p.request_id, chosen));
                }
            }
            other => out.push(response(
                other,
                &id,
                false,
                None,
                Some(format!("acp adapter does not support '{other}'")),
            )),
        }
        Ok(out)
    }

    fn on_prompt(&mut self, kind: &str, o: &Map<String, Value>, id: &Value, out: &mut Vec<Out>) {
        let Some(text) = o.get("message").and_then(Value::as_str) else {
            out.push(response(
                kind,
                id,
                false,
                None,
                Some(format!("{kind} needs a `message` string")),
            ));
            return;
        };
        let images = o
            .get("images")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if self.state.streaming
            && let Some(error) = self.queue_refusal(text, &images)
        {
            out.push(response(kind, id, false, None, Some(error)));
            return;
        }
        out.push(response(kind, id, true, None, None));
        if self.state.streaming {
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
            out.push(self.queue_update());
        } else {
            self.start_prompt(text, &images, out);
        }
    }

    /// The option a client's answer picks: `value` by name; `confirmed:true`
    /// the first allow_once; anything else the last reject_once.
    fn answer<'a>(choices: &'a [Choice], o: &Map<String, Value>) -> Option<&'a Choice> {
        let cancelled = o.get("cancelled").and_then(Value::as_bool) == Some(true);
        if !cancelled {
            if let Some(value) = o.get("value").and_then(Value::as_str)
                && let Some(c) = choices.iter().find(|c| c.name == value)
            {
                return Some(c);
            }
            if o.get("confirmed").and_then(Value::as_bool) == Some(true) {
                return choices.iter().find(|c| c.kind == "allow_once");
            }
        }
        choices.iter().rev().find(|c| c.kind == "reject_once")
    }

    fn permission_reply(request_id: &Value, chosen: Option<&Choice>) -> Out {
        let outcome = match chosen {
            Some(c) => json!({"outcome": "selected", "optionId": c.option_id}),
            None => json!({"outcome": "cancelled"}),
        };
        Out::Agent(s(
            &json!({"jsonrpc": "2.0", "id": request_id, "result": {"outcome": outcome}}),
        ))
    }

    fn cancel_permissions(&mut self, out: &mut Vec<Out>) {
        for (_, p) in std::mem::take(&mut self.state.permissions) {
            out.push(Self::permission_reply(&p.request_id, None));
        }
    }

    /// Sends `session/prompt` and starts the run.
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
            blocks.push(json!({"type": "image", "data": data, "mimeType": mime}));
            pi_content.push(json!({"type": "image", "data": data, "mimeType": mime}));
        }
        let params = json!({"sessionId": self.state.session_id, "prompt": blocks});
        out.push(self.request("session/prompt", params, Pending::Prompt));
        let now = self.clock.now_ms();
        let user = if pi_content.len() == 1 {
            json!({"role": "user", "content": text, "timestamp": now})
        } else {
            json!({"role": "user", "content": pi_content, "timestamp": now})
        };
        self.state.streaming = true;
        self.state.turn_messages.clear();
        self.state.turn_bytes = 0;
        out.push(client(json!({"type": "agent_start"})));
        out.push(client(json!({"type": "turn_start"})));
        out.push(client(json!({"type": "message_start", "message": user})));
        out.push(client(json!({"type": "message_end", "message": user})));
        self.remember(user);
    }

    // ----- agent -> client ----------------------------------------------------

    /// Translates one line of the agent's stdout.
    pub fn from_agent(&mut self, line: &str) -> Result<Vec<Out>, Invalid> {
        // Chunks and tool updates are most of a turn: read borrowed
        // (`wire`). Any other line, or one of another shape, is read as a
        // `Value` below, with the same result.
        if self.state.phase == Phase::Ready
            && let Some(fast) = wire::session_update(line)
        {
            let mut out = Vec::new();
            match fast {
                Fast::Chunk { thinking, text } => self.on_chunk(thinking, &text, &mut out),
                Fast::Tool { call: true, fields } => self.on_tool_call(fields, &mut out),
                Fast::Tool {
                    call: false,
                    fields,
                } => self.on_tool_update(fields, &mut out),
            }
            return Ok(out);
        }
        self.agent_line_as_tree(line)
    }

    /// Translates one line of the agent's stdout read as a `Value`.
    fn agent_line_as_tree(&mut self, line: &str) -> Result<Vec<Out>, Invalid> {
        let v: Value = serde_json::from_str(line).map_err(|e| Invalid(format!("not JSON: {e}")))?;
        if !v.is_object() {
            return Err(Invalid("a JSON-RPC message must be an object".into()));
        }
        let mut out = Vec::new();
        let method = v["method"].as_str();
        let id = v.get("id").filter(|i| !i.is_null()).cloned();
        match (method, id) {
            (Some(method), Some(id)) => self.on_request(method, id, &v["params"], &mut out),
            (Some(method), None) => self.on_notification(method, &v["params"], &mut out),
            (None, Some(id)) => self.on_response(&id, &v, &mut out),
            (None, None) => {}
        }
        Ok(out)
    }

    fn on_request(&mut self, method: &str, id: Value, params: &Value, out: &mut Vec<Out>) {
        if method != "session/request_permission" {
            out.push(Out::Agent(s(&json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": METHOD_NOT_FOUND, "message": format!("Method not found: {method}")},
            }))));
            return;
        }
        let call = &params["toolCall"];
        let tool_id = call["toolCallId"].as_str().unwrap_or("").to_owned();
        let known = self.state.tools.get(&tool_id).cloned().unwrap_or_default();
        let title = call["title"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .or_else(|| Some(known.title.clone()).filter(|t| !t.is_empty()))
            .unwrap_or_else(|| "tool".to_owned());
        let input = match &call["rawInput"] {
            Value::Null => known.input.clone(),
            Value::Object(m) if m.is_empty() && !known.input.is_null() => known.input.clone(),
            other => other.clone(),
        };
        // Later tool_call records may carry less (qwen's has no input).
        if !tool_id.is_empty() {
            let t = self.state.tools.entry(tool_id).or_default();
            if t.title.is_empty() {
                t.title = title.clone();
            }
            if !input.is_null() {
                t.input = input.clone();
            }
        }
        let choices = order_options(params["options"].as_array().map_or(&[], |a| a));
        if choices.is_empty() {
            out.push(Self::permission_reply(&id, None));
            return;
        }
        let ui_id = self.clock.new_id();
        let mut question = json!({
            "type": "extension_ui_request",
            "id": ui_id,
            "method": "select",
            "title": format!("Run {title}?"),
            "options": choices.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        });
        if !input.is_null() {
            question["message"] = Value::String(cut(&input.to_string(), MAX_QUESTION_CHARS));
        }
        out.push(client(question));
        self.state.permissions.insert(
            ui_id,
            PendingPermission {
                request_id: id,
                choices,
            },
        );
    }

    fn on_notification(&mut self, method: &str, params: &Value, out: &mut Vec<Out>) {
        if method != "session/update" {
            return;
        }
        // While session/load replays history nothing is live.
        if self.state.phase != Phase::Ready {
            return;
        }
        let u = &params["update"];
        match u["sessionUpdate"].as_str().unwrap_or("") {
            "agent_message_chunk" => self.on_chunk(false, chunk_text(&u["content"]), out),
            "agent_thought_chunk" => self.on_chunk(true, chunk_text(&u["content"]), out),
            "tool_call" => self.on_tool_call(tool_fields(u), out),
            "tool_call_update" => self.on_tool_update(tool_fields(u), out),
            "plan" => {
                let entries = u["entries"].as_array().map_or(&[][..], |a| a);
                out.push(client(json!({
                    "type": "extension_ui_request",
                    "method": "notify",
                    "event": "plan_capture",
                    "message": plan_markdown(entries),
                    "notifyType": "info",
                })));
            }
            "current_mode_update" => {
                if let Some(m) = u["currentModeId"].as_str().or(u["modeId"].as_str()) {
                    self.state.mode = Some(m.to_owned());
                }
            }
            // available_commands_update, usage_update, user_message_chunk,
            // and anything newer: nothing for the client.
            _ => {}
        }
    }

    fn begin_message(&mut self, out: &mut Vec<Out>) {
        let now = self.clock.now_ms();
        self.state.current = Some(Current {
            blocks: Vec::new(),
            started_at: now,
        });
        let msg = self.current_message(None);
        out.push(client(json!({"type": "message_start", "message": msg})));
        out.push(update(json!({"type": "start"})));
    }

    fn current_message(&self, stop: Option<&str>) -> Value {
        let Some(c) = &self.state.current else {
            return Value::Null;
        };
        let content: Vec<Value> = c
            .blocks
            .iter()
            .map(|b| match b {
                Block::Text(t) => json!({"type": "text", "text": t}),
                Block::Thinking(t) => json!({"type": "thinking", "thinking": t}),
                Block::Tool { id, name, input } => {
                    json!({"type": "toolCall", "id": id, "name": name, "arguments": input})
                }
            })
            .collect();
        json!({
            "role": "assistant",
            "content": content,
            "api": "acp",
            "provider": self.state.agent_name.as_deref().unwrap_or("acp"),
            "model": self.state.model,
            "stopReason": stop,
            "timestamp": c.started_at,
        })
    }

    fn close_last_block(&mut self, out: &mut Vec<Out>) {
        let Some(c) = &self.state.current else {
            return;
        };
        let i = c.blocks.len().saturating_sub(1);
        match c.blocks.last() {
            Some(Block::Text(t)) => out.push(update(
                json!({"type": "text_end", "contentIndex": i, "content": t}),
            )),
            Some(Block::Thinking(t)) => out.push(update(
                json!({"type": "thinking_end", "contentIndex": i, "content": t}),
            )),
            _ => {}
        }
    }

    fn on_chunk(&mut self, thinking: bool, text: &str, out: &mut Vec<Out>) {
        if text.is_empty() {
            return;
        }
        if self.state.current.is_none() {
            self.begin_message(out);
        }
        let same = matches!(
            (
                self.state.current.as_ref().and_then(|c| c.blocks.last()),
                thinking
            ),
            (Some(Block::Text(_)), false) | (Some(Block::Thinking(_)), true)
        );
        if !same {
            self.close_last_block(out);
        }
        let Some(c) = self.state.current.as_mut() else {
            return;
        };
        if !same {
            c.blocks.push(if thinking {
                Block::Thinking(String::new())
            } else {
                Block::Text(String::new())
            });
            let start = if thinking {
                "thinking_start"
            } else {
                "text_start"
            };
            out.push(update(
                json!({"type": start, "contentIndex": c.blocks.len() - 1}),
            ));
        }
        let i = c.blocks.len() - 1;
        if let Some(Block::Text(t) | Block::Thinking(t)) = c.blocks.last_mut() {
            let room = MAX_BLOCK_BYTES.saturating_sub(t.len());
            let mut end = text.len().min(room);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            t.push_str(&text[..end]);
        }
        let kind = if thinking {
            "thinking_delta"
        } else {
            "text_delta"
        };
        out.push(Out::Client(wire::text(&wire::MessageUpdate {
            event: wire::Delta {
                content_index: i,
                delta: text,
                kind,
            },
            kind: "message_update",
        })));
    }

    /// Ends the assistant message in flight with `reason` (pi's stopReason).
    fn end_message(&mut self, reason: &str, out: &mut Vec<Out>) {
        if self.state.current.is_none() {
            return;
        }
        self.close_last_block(out);
        let msg = self.current_message(Some(reason));
        out.push(update(json!({"type": "done", "reason": reason})));
        out.push(client(json!({"type": "message_end", "message": msg})));
        self.remember(msg);
        self.state.current = None;
    }

    fn start_tool(&mut self, id: &str, out: &mut Vec<Out>) {
        let Some(t) = self.state.tools.get_mut(id) else {
            return;
        };
        if t.started {
            return;
        }
        t.started = true;
        let (name, input) = (t.title.clone(), t.input.clone());
        let args = if input.is_null() { json!({}) } else { input };
        // The tool call closes the assistant message that asked for it.
        if self.state.current.is_none() {
            self.begin_message(out);
        }
        self.close_last_block(out);
        let Some(c) = self.state.current.as_mut() else {
            return;
        };
        c.blocks.push(Block::Tool {
            id: id.to_owned(),
            name: name.clone(),
            input: args.clone(),
        });
        let i = c.blocks.len() - 1;
        out.push(update(json!({"type": "toolcall_start", "contentIndex": i})));
        out.push(update(json!({
            "type": "toolcall_end",
            "contentIndex": i,
            "toolCall": {"type": "toolCall", "id": id, "name": name, "arguments": args},
        })));
        // The last block is the tool call: end_message closes nothing else.
        let msg = self.current_message(Some("toolUse"));
        out.push(update(json!({"type": "done", "reason": "toolUse"})));
        out.push(client(json!({"type": "message_end", "message": msg})));
        self.remember(msg);
        self.state.current = None;
        out.push(client(json!({
            "type": "tool_execution_start",
            "toolCallId": id,
            "toolName": name,
            "args": args,
        })));
    }

    /// Takes what a tool call or update brings into the tool's state (its
    /// input and content are moved out of `u`).
    fn merge_tool(&mut self, u: &mut ToolFields) {
        if !self.state.tools.contains_key(u.id.as_ref()) {
            self.state.tools.insert(u.id.to_string(), Tool::default());
        }
        let Some(t) = self.state.tools.get_mut(u.id.as_ref()) else {
            return;
        };
        // The first title stays: tool_execution_start and _end agree.
        if t.title.is_empty()
            && let Some(title) = u.title.as_deref().filter(|t| !t.is_empty())
        {
            t.title = title.to_owned();
        }
        match std::mem::take(&mut u.raw_input) {
            Value::Null => {}
            Value::Object(m) if m.is_empty() => {
                if t.input.is_null() {
                    t.input = json!({});
                }
            }
            other => t.input = other,
        }
        if !u.content.is_empty() {
            t.content = std::mem::take(&mut u.content);
        }
    }

    fn on_tool_call(&mut self, mut u: ToolFields, out: &mut Vec<Out>) {
        self.merge_tool(&mut u);
        self.start_tool(&u.id, out);
        if u.ends() {
            self.end_tool(&u.id, u.failed(), &u.raw_output, out);
        }
    }

    fn on_tool_update(&mut self, mut u: ToolFields, out: &mut Vec<Out>) {
        self.merge_tool(&mut u);
        // codex-acp may update a tool it never announced.
        self.start_tool(&u.id, out);
        let Some(t) = self.state.tools.get(u.id.as_ref()) else {
            return;
        };
        if t.ended {
            return;
        }
        let empty = Value::Object(Map::new());
        out.push(Out::Client(wire::text(&wire::ToolUpdate {
            args: if t.input.is_null() { &empty } else { &t.input },
            partial_result: wire::Contents {
                content: &t.content,
            },
            tool_call_id: &u.id,
            tool_name: &t.title,
            kind: "tool_execution_update",
        })));
        if u.ends() {
            self.end_tool(&u.id, u.failed(), &u.raw_output, out);
        }
    }

    /// Ends a started tool: `failed` is its error flag, `raw_output` its
    /// result when no content came.
    fn end_tool(&mut self, id: &str, failed: bool, raw_output: &Value, out: &mut Vec<Out>) {
        let Some(t) = self.state.tools.get_mut(id) else {
            return;
        };
        if t.ended {
            return;
        }
        t.ended = true;
        let mut content = t.content.clone();
        if content.is_empty()
            && let Some(text) = raw_output_text(raw_output)
        {
            content.push(json!({"type": "text", "text": text}));
        }
        let name = t.title.clone();
        let is_error = failed;
        out.push(client(json!({
            "type": "tool_execution_end",
            "toolCallId": id,
            "toolName": name,
            "result": {"content": content},
            "isError": is_error,
        })));
        let msg = json!({
            "role": "toolResult",
            "toolCallId": id,
            "toolName": name,
            "content": content,
            "isError": is_error,
            "timestamp": self.clock.now_ms(),
        });
        out.push(client(json!({"type": "message_start", "message": msg})));
        out.push(client(json!({"type": "message_end", "message": msg})));
        self.remember(msg);
    }

    fn on_response(&mut self, id: &Value, v: &Value, out: &mut Vec<Out>) {
        let Some(pending) = self.state.pending.remove(&id_key(id)) else {
            return;
        };
        let error = v.get("error").filter(|e| !e.is_null()).map(|e| {
            let message = e["message"].as_str().unwrap_or("the agent refused");
            let data = &e["data"];
            let detail = data
                .as_str()
                .or(data["details"].as_str())
                .or(data["message"].as_str());
            match detail {
                Some(d) if !d.is_empty() && d != message => format!("{message}: {d}"),
                _ => message.to_owned(),
            }
        });
        let result = &v["result"];
        match pending {
            Pending::Initialize => match error {
                Some(e) => self.fail_handshake(format!("initialize failed: {e}"), out),
                None => self.on_initialized(result, out),
            },
            Pending::Open { load } => match error {
                Some(e) => {
                    let method = if load { "session/load" } else { "session/new" };
                    self.fail_handshake(format!("{method} failed: {e}"), out)
                }
                None => self.on_opened(load, result, out),
            },
            Pending::Prompt => {
                let stop = result["stopReason"].as_str().unwrap_or("end_turn");
                self.finish_turn(stop, error, out);
            }
            Pending::Command {
                command,
                client_id,
                data,
                apply,
            } => match error {
                None => {
                    match apply.0.as_str() {
                        "model" => self.state.model = Some(apply.1),
                        _ => self.state.mode = Some(apply.1),
                    }
                    out.push(response(&command, &client_id, true, Some(data), None));
                }
                Some(e) => out.push(response(&command, &client_id, false, None, Some(e))),
            },
        }
    }

    /// Closes the turn in flight: the error (if any), `turn_end`,
    /// `agent_end`, pending aborts answered, the next queued prompt sent.
    fn finish_turn(&mut self, stop: &str, error: Option<String>, out: &mut Vec<Out>) {
        if !self.state.streaming {
            return;
        }
        let cancelled = stop == "cancelled" || (self.state.aborting && error.is_some());
        let aborting = self.state.aborting;
        let reason = if cancelled {
            "aborted"
        } else if error.is_some() || stop == "refusal" {
            "error"
        } else if stop == "max_tokens" || stop == "max_turn_requests" {
            "length"
        } else {
            "stop"
        };
        self.end_message(reason, out);
        // Tools still running end with the turn (codex-acp and
        // claude-agent-acp send no closing update after a cancel).
        let open: Vec<String> = self
            .state
            .tools
            .iter()
            .filter(|(_, t)| t.started && !t.ended)
            .map(|(id, _)| id.clone())
            .collect();
        let note = if aborting {
            "Aborted by the remote user"
        } else {
            "The turn ended before the tool did"
        };
        for id in open {
            self.end_tool(&id, true, &Value::from(note), out);
        }
        // Tool ids do not outlive their turn: the map stays small.
        self.state.tools.clear();
        let problem = match (&error, stop) {
            (Some(e), _) => Some(e.clone()),
            (None, "cancelled") if self.state.aborting => {
                Some("Aborted by the remote user".to_owned())
            }
            (None, "cancelled") => Some("The agent cancelled the turn".to_owned()),
            (None, "refusal") => Some("The agent refused to continue".to_owned()),
            _ => None,
        };
        if let Some(e) = problem {
            out.push(update(
                json!({"type": "error", "reason": reason, "error": e}),
            ));
        }
        let messages = std::mem::take(&mut self.state.turn_messages);
        self.state.turn_bytes = 0;
        let assistants: Vec<&Value> = messages
            .iter()
            .filter(|m| m["role"] == "assistant")
            .collect();
        let content: Vec<Value> = assistants
            .iter()
            .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
            .collect();
        let timestamp = assistants
            .last()
            .map(|m| m["timestamp"].clone())
            .unwrap_or_else(|| json!(self.clock.now_ms()));
        let turn_message = json!({
            "role": "assistant",
            "content": content,
            "api": "acp",
            "provider": self.state.agent_name.as_deref().unwrap_or("acp"),
            "model": self.state.model,
            "stopReason": reason,
            "timestamp": timestamp,
        });
        let tool_results: Vec<&Value> = messages
            .iter()
            .filter(|m| m["role"] == "toolResult")
            .collect();
        out.push(client(
            json!({"type": "turn_end", "message": turn_message, "toolResults": tool_results}),
        ));
        out.push(client(json!({"type": "agent_end", "messages": messages})));
        self.state.streaming = false;
        // Questions the agent did not withdraw can no longer be answered.
        self.cancel_permissions(out);
        if self.state.aborting {
            self.state.aborting = false;
            for id in std::mem::take(&mut self.state.abort_waiters) {
                out.push(response("abort", &id, true, None, None));
            }
        }
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

    /// The agent exited: close the turn and answer what can no longer be.
    pub fn on_exit(&mut self, code: Option<i32>, signal: Option<&str>) -> Vec<Out> {
        let mut out = Vec::new();
        let name = self
            .state
            .agent_name
            .clone()
            .unwrap_or_else(|| "the ACP agent".to_owned());
        let what = match (code, signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(sig)) => format!("was killed by {sig}"),
            _ => "exited".to_owned(),
        };
        let how = format!("{name} {what}");
        if !self.state.queue.is_empty() {
            self.state.queue.clear();
            out.push(self.queue_update());
        }
        self.state.permissions.clear();
        if matches!(self.state.phase, Phase::Initializing | Phase::Opening) {
            self.fail_handshake(format!("it {what}"), &mut out);
        }
        self.finish_turn("end_turn", Some(how.clone()), &mut out);
        for (_, p) in std::mem::take(&mut self.state.pending) {
            if let Pending::Command {
                command, client_id, ..
            } = p
            {
                out.push(response(
                    &command,
                    &client_id,
                    false,
                    None,
                    Some(how.clone()),
                ));
            }
        }
        for id in std::mem::take(&mut self.state.abort_waiters) {
            out.push(response("abort", &id, true, None, None));
        }
        out
    }
}

#[cfg(test)]
mod tests;

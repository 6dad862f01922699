//! The fake agent's pi mode (`FAKE_PI=1`): a scripted agent that speaks
//! pi's RPC dialect (AGENTS.md section 1), for client tests that need
//! turns, streamed text, tool calls, questions and aborts without a model.
//!
//! The prompt's text picks the script:
//! - `CONFIRM`: a `bash` tool call gated by a `confirm` question; allowed,
//!   it prints 12 lines of output and says `The tool ran.`; denied, the tool
//!   fails and it says `The tool was denied.`;
//! - `SELECT`: a `select` ("Pick a mode": Fast, Careful, Stop), then
//!   `You picked <option>.`;
//! - `INPUT`: an `input` ("Your name?"), then `Hello, <value>.`;
//! - `SLOW`: streams `tick N ` every 150 ms (up to 400) until `abort`;
//! - `FAIL`: the turn ends with an error (`the fake model failed`);
//! - anything else: `You said: <text>` in three deltas.
//!
//! Also: `get_messages` (the conversation so far), `get_state`, `abort`,
//! prompts with `streamingBehavior` queued until the turn ends, and
//! `fake.exit`.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

fn emit(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn text_msg(role: &str, text: &str) -> Value {
    json!({"role": role, "content": [{"type": "text", "text": text}], "stopReason": "stop"})
}

#[derive(Default)]
struct State {
    history: Vec<Value>,
    /// The messages of the running turn (for `agent_end`).
    turn: Vec<Value>,
    busy: bool,
    /// The question the turn waits on: (id, script).
    waiting: Option<(String, String)>,
    queued: VecDeque<(String, Option<String>)>,
    slow_abort: Option<Arc<AtomicBool>>,
    asked: u64,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Streams `text` as one assistant message in `parts` deltas.
fn assistant_text(s: &Shared, text: &str, parts: usize) {
    emit(&json!({"type": "message_start", "message": {"role": "assistant", "content": []}}));
    emit(
        &json!({"type": "message_update", "assistantMessageEvent": {"type": "text_start", "contentIndex": 0}}),
    );
    let chars: Vec<char> = text.chars().collect();
    let step = chars.len().div_ceil(parts.max(1)).max(1);
    for chunk in chars.chunks(step) {
        let d: String = chunk.iter().collect();
        emit(
            &json!({"type": "message_update", "assistantMessageEvent": {"type": "text_delta", "contentIndex": 0, "delta": d}}),
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    emit(
        &json!({"type": "message_update", "assistantMessageEvent": {"type": "text_end", "contentIndex": 0}}),
    );
    let m = text_msg("assistant", text);
    emit(&json!({"type": "message_end", "message": m}));
    lock(s).turn.push(m);
}

fn end_turn(s: &Shared, last: Option<Value>) {
    if let Some(m) = last {
        emit(&json!({"type": "message_end", "message": m}));
        lock(s).turn.push(m);
    }
    let messages = {
        let mut st = lock(s);
        st.busy = false;
        st.waiting = None;
        st.slow_abort = None;
        let turn = std::mem::take(&mut st.turn);
        st.history.extend(turn.iter().cloned());
        turn
    };
    emit(
        &json!({"type": "turn_end", "message": messages.last().cloned().unwrap_or(Value::Null), "toolResults": []}),
    );
    emit(&json!({"type": "agent_end", "messages": messages}));
    let next = lock(s).queued.pop_front();
    if let Some((message, id)) = next {
        start_turn(s, &message, id);
    }
}

fn tool_start(name: &str, args: Value) {
    emit(
        &json!({"type": "tool_execution_start", "toolCallId": "call-1", "toolName": name, "args": args}),
    );
}

fn tool_end(s: &Shared, name: &str, text: &str, is_error: bool) {
    let result = json!({"content": [{"type": "text", "text": text}]});
    emit(
        &json!({"type": "tool_execution_end", "toolCallId": "call-1", "toolName": name, "result": result, "isError": is_error}),
    );
    lock(s).turn.push(
        json!({"role": "toolResult", "toolCallId": "call-1", "toolName": name,
        "content": [{"type": "text", "text": text}], "isError": is_error}),
    );
}

fn ask(s: &Shared, script: &str, method: &str, title: &str, extra: Value) {
    let id = {
        let mut st = lock(s);
        st.asked += 1;
        let id = format!("q{}-{script}", st.asked);
        st.waiting = Some((id.clone(), script.to_owned()));
        id
    };
    let mut q = json!({"type": "extension_ui_request", "id": id, "method": method, "title": title});
    if let (Some(q), Some(extra)) = (q.as_object_mut(), extra.as_object()) {
        q.extend(extra.clone());
    }
    emit(&q);
}

fn start_turn(s: &Shared, message: &str, id: Option<String>) {
    {
        let mut st = lock(s);
        st.busy = true;
        st.turn = vec![text_msg("user", message)];
    }
    emit(&json!({"type": "agent_start"}));
    emit(&json!({"type": "turn_start"}));
    let user = text_msg("user", message);
    emit(&json!({"type": "message_start", "message": user}));
    emit(&json!({"type": "message_end", "message": user}));
    let _ = id;
    if message.contains("CONFIRM") {
        let call = json!({"type": "toolCall", "id": "call-1", "name": "bash", "arguments": {"command": "seq 1 12"}});
        let m = json!({"role": "assistant", "content": [call], "stopReason": "toolUse"});
        emit(&json!({"type": "message_start", "message": {"role": "assistant", "content": []}}));
        emit(&json!({"type": "message_end", "message": m}));
        lock(s).turn.push(m);
        tool_start("bash", json!({"command": "seq 1 12"}));
        ask(
            s,
            "confirm",
            "confirm",
            "Run bash?",
            json!({"message": "{\"command\":\"seq 1 12\"}"}),
        );
    } else if message.contains("SELECT") {
        ask(
            s,
            "select",
            "select",
            "Pick a mode",
            json!({"options": ["Fast", "Careful", "Stop"]}),
        );
    } else if message.contains("INPUT") {
        ask(s, "input", "input", "Your name?", json!({}));
    } else if message.contains("SLOW") {
        let flag = Arc::new(AtomicBool::new(false));
        lock(s).slow_abort = Some(flag.clone());
        let s = s.clone();
        std::thread::spawn(move || {
            emit(
                &json!({"type": "message_start", "message": {"role": "assistant", "content": []}}),
            );
            let mut text = String::new();
            for i in 1..=400 {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let d = format!("tick {i} ");
                text.push_str(&d);
                emit(
                    &json!({"type": "message_update", "assistantMessageEvent": {"type": "text_delta", "contentIndex": 0, "delta": d}}),
                );
                std::thread::sleep(Duration::from_millis(150));
            }
            let aborted = flag.load(Ordering::SeqCst);
            let mut m = text_msg("assistant", &text);
            if aborted {
                m["stopReason"] = json!("aborted");
            }
            end_turn(&s, Some(m));
            if aborted {
                emit(&json!({"type": "response", "command": "abort", "success": true}));
            }
        });
    } else if message.contains("FAIL") {
        let mut m = text_msg("assistant", "");
        m["content"] = json!([]);
        m["stopReason"] = json!("error");
        m["errorMessage"] = json!("the fake model failed");
        emit(&json!({"type": "message_start", "message": {"role": "assistant", "content": []}}));
        end_turn(s, Some(m));
    } else {
        assistant_text(s, &format!("You said: {message}"), 3);
        end_turn(s, None);
    }
}

fn answered(s: &Shared, script: &str, v: &Value) {
    let cancelled = v["cancelled"] == true;
    match script {
        "confirm" => {
            if v["confirmed"] == true {
                let out: String = (1..=12).map(|i| format!("{i}\n")).collect();
                tool_end(s, "bash", &out, false);
                assistant_text(s, "The tool ran.", 2);
            } else {
                tool_end(s, "bash", "Blocked: the user denied it", true);
                assistant_text(s, "The tool was denied.", 2);
            }
        }
        "select" => {
            let pick = v["value"]
                .as_str()
                .filter(|_| !cancelled)
                .unwrap_or("nothing");
            assistant_text(s, &format!("You picked {pick}."), 2);
        }
        _ => {
            let name = v["value"]
                .as_str()
                .filter(|_| !cancelled)
                .unwrap_or("nobody");
            assistant_text(s, &format!("Hello, {name}."), 2);
        }
    }
    end_turn(s, None);
}

/// Runs the pi mode until stdin closes.
pub fn run() {
    let s: Shared = Arc::new(Mutex::new(State::default()));
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let id = v["id"].clone();
        let respond = |command: &str, data: Option<Value>| {
            let mut r = json!({"type": "response", "command": command, "success": true});
            if !id.is_null() {
                r["id"] = id.clone();
            }
            if let Some(d) = data {
                r["data"] = d;
            }
            emit(&r);
        };
        match v["type"].as_str().unwrap_or("") {
            "prompt" | "follow_up" | "steer" => {
                let message = v["message"].as_str().unwrap_or("").to_owned();
                let busy = lock(&s).busy;
                if busy {
                    if v["streamingBehavior"].is_string() || v["type"] != "prompt" {
                        lock(&s)
                            .queued
                            .push_back((message, id.as_str().map(str::to_owned)));
                        respond(v["type"].as_str().unwrap_or("prompt"), None);
                    } else {
                        let mut r = json!({"type": "response", "command": "prompt", "success": false,
                            "error": "Agent is already processing. Specify streamingBehavior ('steer' or 'followUp') to queue the message."});
                        if !id.is_null() {
                            r["id"] = id.clone();
                        }
                        emit(&r);
                    }
                } else {
                    respond("prompt", None);
                    start_turn(&s, &message, id.as_str().map(str::to_owned));
                }
            }
            "abort" => {
                let (flag, waiting) = {
                    let mut st = lock(&s);
                    st.queued.clear();
                    (st.slow_abort.clone(), st.waiting.take())
                };
                if let Some(flag) = flag {
                    // The streaming thread ends the turn and answers.
                    flag.store(true, Ordering::SeqCst);
                    continue;
                }
                if waiting.is_some() {
                    let mut m = text_msg("assistant", "");
                    m["content"] = json!([]);
                    m["stopReason"] = json!("aborted");
                    emit(
                        &json!({"type": "message_start", "message": {"role": "assistant", "content": []}}),
                    );
                    end_turn(&s, Some(m));
                }
                respond("abort", None);
            }
            "extension_ui_response" => {
                let waiting = lock(&s).waiting.clone();
                if let Some((qid, script)) = waiting
                    && v["id"] == qid.as_str()
                {
                    lock(&s).waiting = None;
                    answered(&s, &script, &v);
                }
            }
            "get_messages" => {
                let messages = lock(&s).history.clone();
                respond("get_messages", Some(json!({"messages": messages})));
            }
            "get_state" => {
                let busy = lock(&s).busy;
                respond("get_state", Some(json!({"isStreaming": busy})));
            }
            "fake.exit" => std::process::exit(v["code"].as_i64().unwrap_or(0) as i32),
            other => {
                let mut r = json!({"type": "response", "command": other, "success": false,
                    "error": format!("fake pi does not know `{other}`")});
                if !id.is_null() {
                    r["id"] = id.clone();
                }
                emit(&r);
            }
        }
    }
}

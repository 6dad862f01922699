//! The built-in claude-code and acp translators through the real host
//! (wasmtime, the built components): sequences of agent lines and client
//! records made of each dialect's words. The host never panics, every call
//! returns, every record a translator sends to clients or the agent is
//! JSON, and a trap is contained: the instance refuses further calls and a
//! fresh one works.

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{Map, Value, json};

use crate::adapter::{Adapter, AdapterHost, AdapterLimits, Emit, SpawnRequest};

/// A JSON value grown from the input, with object keys and strings taken
/// mostly from the dialect's words.
fn value(u: &mut Unstructured, words: &[&str], depth: u32) -> arbitrary::Result<Value> {
    let word = |u: &mut Unstructured| -> arbitrary::Result<String> {
        Ok(if u.ratio(7, 8)? {
            (*u.choose(words)?).to_owned()
        } else {
            String::arbitrary(u)?
        })
    };
    let pick = if depth >= 4 {
        u.int_in_range(0..=4)?
    } else {
        u.int_in_range(0..=6)?
    };
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(u)?),
        2 => json!(i64::arbitrary(u)?),
        3 => serde_json::Number::from_f64(f64::arbitrary(u)?).map_or(Value::Null, Value::Number),
        4 => Value::String(word(u)?),
        5 => {
            let n = u.int_in_range(0..=4)?;
            let mut list = Vec::new();
            for _ in 0..n {
                list.push(value(u, words, depth + 1)?);
            }
            Value::Array(list)
        }
        _ => object(u, words, depth + 1)?,
    })
}

fn object(u: &mut Unstructured, words: &[&str], depth: u32) -> arbitrary::Result<Value> {
    let n = u.int_in_range(0..=6)?;
    let mut map = Map::new();
    for _ in 0..n {
        let key = if u.ratio(7, 8)? {
            (*u.choose(words)?).to_owned()
        } else {
            String::arbitrary(u)?
        };
        map.insert(key, value(u, words, depth)?);
    }
    Ok(Value::Object(map))
}

/// A line: mostly a JSON object, sometimes any text.
fn line(u: &mut Unstructured, words: &[&str]) -> arbitrary::Result<String> {
    Ok(if u.ratio(9, 10)? {
        object(u, words, 0)?.to_string()
    } else {
        String::arbitrary(u)?
    })
}

const CLAUDE_WORDS: &[&str] = &[
    "type",
    "subtype",
    "message",
    "content",
    "text",
    "thinking",
    "tool_use",
    "tool_result",
    "tool_use_id",
    "id",
    "name",
    "input",
    "role",
    "assistant",
    "user",
    "system",
    "init",
    "result",
    "success",
    "error",
    "is_error",
    "stream_event",
    "event",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "content_block",
    "delta",
    "text_delta",
    "input_json_delta",
    "partial_json",
    "index",
    "usage",
    "session_id",
    "control_request",
    "control_response",
    "request_id",
    "request",
    "response",
    "can_use_tool",
    "tool_name",
    "behavior",
    "allow",
    "deny",
    "prompt",
    "abort",
    "get_messages",
    "get_state",
    "extension_ui_response",
    "confirmed",
    "cancelled",
    "value",
    "ExitPlanMode",
    "plan",
    "Bash",
    "command",
];

const ACP_WORDS: &[&str] = &[
    "jsonrpc",
    "2.0",
    "id",
    "method",
    "params",
    "result",
    "error",
    "code",
    "message",
    "initialize",
    "protocolVersion",
    "agentCapabilities",
    "session/new",
    "session/load",
    "session/prompt",
    "session/cancel",
    "session/update",
    "session/request_permission",
    "sessionId",
    "update",
    "sessionUpdate",
    "agent_message_chunk",
    "agent_thought_chunk",
    "user_message_chunk",
    "tool_call",
    "tool_call_update",
    "plan",
    "entries",
    "content",
    "type",
    "text",
    "toolCallId",
    "title",
    "kind",
    "status",
    "pending",
    "in_progress",
    "completed",
    "failed",
    "options",
    "optionId",
    "name",
    "allow_once",
    "allow_always",
    "reject_once",
    "reject_always",
    "outcome",
    "selected",
    "cancelled",
    "stopReason",
    "end_turn",
    "prompt",
    "abort",
    "get_messages",
    "get_state",
    "extension_ui_response",
    "confirmed",
    "value",
    "fs/read_text_file",
    "fs/write_text_file",
    "terminal/create",
    "path",
];

#[derive(Debug, Clone, Copy)]
enum Step {
    FromAgent,
    FromClient,
}

/// The steps of an input. An input that starts with `#` is text: after
/// its first line, `A <line>` is a line from the agent and `C <record>` a
/// record from a client (the corpus holds the golden transcripts so);
/// any other input is decoded into JSON made of the dialect's words.
fn steps(data: &[u8], words: &[&str]) -> Vec<(Step, String)> {
    if data.first() == Some(&b'#') {
        let text = String::from_utf8_lossy(data);
        return text
            .lines()
            .skip(1)
            .filter_map(|l| {
                if let Some(rest) = l.strip_prefix("A ") {
                    Some((Step::FromAgent, rest.to_owned()))
                } else {
                    l.strip_prefix("C ")
                        .map(|rest| (Step::FromClient, rest.to_owned()))
                }
            })
            .collect();
    }
    let mut u = Unstructured::new(data);
    let mut out = Vec::new();
    while let Ok(true) = u.arbitrary::<bool>() {
        let step = if u.ratio(2, 3).unwrap_or(true) {
            Step::FromAgent
        } else {
            Step::FromClient
        };
        let Ok(text) = line(&mut u, words) else { break };
        out.push((step, text));
    }
    out
}

/// Runs one input through a fresh instance of `adapter`.
async fn session(adapter: &Arc<Adapter>, steps: &[(Step, String)]) {
    let request = SpawnRequest {
        session_id: "0123456789ab".into(),
        instance_id: "default".into(),
        command: Some("true".into()),
        ..Default::default()
    };
    let mut inst = adapter.instantiate().await.expect("instantiate a built-in");
    let spec = inst.spawn(&request).await;
    assert!(spec.is_ok(), "spawn failed: {:?}", spec.err());
    inst.create_session(&request, None)
        .await
        .expect("create a session");
    let mut emitted = inst.handshake().await.unwrap_or_default();
    let mut trapped = false;
    for (step, text) in steps {
        let result = match step {
            Step::FromAgent => inst.from_agent(text).await,
            Step::FromClient => inst.from_client(text).await,
        };
        match result {
            Ok(emits) => emitted.extend(emits),
            Err(e) if e.is_trap() => {
                trapped = true;
                break;
            }
            Err(_) => {}
        }
    }
    for e in &emitted {
        match e {
            Emit::ToClient(t) | Emit::ToAgent(t) => {
                assert!(
                    serde_json::from_str::<Value>(t).is_ok(),
                    "a translator emitted a record that is not JSON: {t}"
                );
            }
            Emit::ResumeToken(_) => {}
        }
    }
    if trapped {
        // Contained: the trapped instance refuses, a fresh one works.
        assert!(inst.from_agent("{}").await.is_err());
        let mut fresh = adapter.instantiate().await.expect("a fresh instance");
        fresh.spawn(&request).await.expect("spawn after a trap");
        fresh
            .create_session(&request, None)
            .await
            .expect("a session after a trap");
    }
}

fn fuzz(target: &str, builtin: &str, words: &'static [&'static str]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // A generous call budget: the target is about what translators do with
    // their input, not about budgets (a busy machine must not turn a slow
    // call into a trap here).
    let host = AdapterHost::new(AdapterLimits {
        call_budget: std::time::Duration::from_secs(5),
        ..AdapterLimits::default()
    })
    .expect("adapter host");
    let adapter = rt
        .block_on(host.load_builtin(builtin))
        .unwrap_or_else(|e| panic!("the built-in {builtin} adapter: {}", e.0));
    super::run(target, |data| {
        rt.block_on(session(&adapter, &steps(data, words)));
    });
}

#[test]
fn fuzz_claude_code_translator() {
    fuzz("claude_code", "claude-code", CLAUDE_WORDS);
}

#[test]
fn fuzz_acp_translator() {
    fuzz("acp", "acp", ACP_WORDS);
}

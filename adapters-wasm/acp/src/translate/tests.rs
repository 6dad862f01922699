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

fn setup(resume: Option<&str>) -> Setup {
    Setup {
        cwd: "/work".into(),
        resume: resume.map(str::to_owned),
        version: "0.1.0".into(),
    }
}

fn t() -> Translator<TestClock> {
    Translator::new(TestClock(0), setup(None), None).unwrap()
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

fn types(values: &[Value]) -> Vec<String> {
    values
        .iter()
        .map(|v| match v["type"].as_str() {
            Some("message_update") => {
                format!(
                    "update:{}",
                    v["assistantMessageEvent"]["type"].as_str().unwrap()
                )
            }
            Some(t) => t.to_owned(),
            None => "?".into(),
        })
        .collect()
}

fn feed(tr: &mut Translator<TestClock>, line: Value) -> Vec<Out> {
    tr.from_agent(&line.to_string()).unwrap()
}

/// A translator with the session open (`sess-1`), handshake answered.
fn ready() -> Translator<TestClock> {
    let mut tr = t();
    tr.handshake();
    feed(
        &mut tr,
        json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"agentCapabilities":{"loadSession":true},"agentInfo":{"name":"qwen-code"}}}),
    );
    feed(
        &mut tr,
        json!({"jsonrpc":"2.0","id":1,"result":{"sessionId":"sess-1","modes":{"currentModeId":"default"},"models":{"currentModelId":"fake-model"}}}),
    );
    tr
}

fn update_line(update: Value) -> Value {
    json!({"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"sess-1","update":update}})
}

#[test]
fn the_handshake_initializes_then_opens_a_session_and_reports_its_id() {
    let mut tr = t();
    let out = tr.handshake();
    let init = &agent(&out)[0];
    assert_eq!(init["method"], "initialize");
    assert_eq!(init["params"]["protocolVersion"], 1);
    assert_eq!(init["params"]["clientCapabilities"]["terminal"], false);
    assert!(tr.handshake().is_empty(), "only once");
    let out = feed(
        &mut tr,
        json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"agentCapabilities":{}}}),
    );
    let open = &agent(&out)[0];
    assert_eq!(open["method"], "session/new");
    assert_eq!(open["params"], json!({"cwd": "/work", "mcpServers": []}));
    let out = feed(
        &mut tr,
        json!({"jsonrpc":"2.0","id":1,"result":{"sessionId":"s-9"}}),
    );
    assert_eq!(out, vec![Out::Resume("s-9".into())]);
}

#[test]
fn a_resume_token_loads_the_session_when_the_agent_can() {
    let mut tr = Translator::new(TestClock(0), setup(Some("old")), None).unwrap();
    tr.handshake();
    let out = feed(
        &mut tr,
        json!({"jsonrpc":"2.0","id":0,"result":{"agentCapabilities":{"loadSession":true}}}),
    );
    assert_eq!(agent(&out)[0]["method"], "session/load");
    assert_eq!(agent(&out)[0]["params"]["sessionId"], "old");
    // The replayed history is not live.
    let out = feed(
        &mut tr,
        update_line(
            json!({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"old"}}),
        ),
    );
    assert!(out.is_empty());
    let out = feed(&mut tr, json!({"jsonrpc":"2.0","id":1,"result":{}}));
    assert_eq!(out, vec![Out::Resume("old".into())]);

    let mut tr = Translator::new(TestClock(0), setup(Some("old")), None).unwrap();
    tr.handshake();
    let out = feed(
        &mut tr,
        json!({"jsonrpc":"2.0","id":0,"result":{"agentCapabilities":{"loadSession":false}}}),
    );
    assert_eq!(agent(&out)[0]["method"], "session/new", "no loadSession");
}

#[test]
fn records_before_the_session_exists_are_queued_then_handled() {
    let mut tr = t();
    tr.handshake();
    let out = tr
        .from_client(r#"{"type":"prompt","id":"p1","message":"hi"}"#)
        .unwrap();
    assert!(out.is_empty());
    let out = tr.from_client(r#"{"type":"get_state","id":"g"}"#).unwrap();
    assert!(out.is_empty());
    feed(&mut tr, json!({"jsonrpc":"2.0","id":0,"result":{}}));
    let out = feed(
        &mut tr,
        json!({"jsonrpc":"2.0","id":1,"result":{"sessionId":"s"}}),
    );
    let c = client(&out);
    assert_eq!(c[0]["command"], "prompt");
    assert_eq!(agent(&out)[0]["method"], "session/prompt");
    assert_eq!(agent(&out)[0]["params"]["sessionId"], "s");
    let state = c.iter().find(|v| v["command"] == "get_state").unwrap();
    assert_eq!(state["data"]["isStreaming"], true);
}

#[test]
fn a_failed_handshake_is_an_extension_error_and_fails_queued_commands() {
    let mut tr = t();
    tr.handshake();
    tr.from_client(r#"{"type":"prompt","id":"p1","message":"hi"}"#)
        .unwrap();
    feed(
        &mut tr,
        json!({"jsonrpc":"2.0","id":0,"result":{"agentInfo":{"name":"claude-agent-acp"}}}),
    );
    let out = feed(
        &mut tr,
        json!({"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"Authentication required"}}),
    );
    let c = client(&out);
    assert_eq!(c[0]["type"], "extension_error");
    let error = c[0]["error"].as_str().unwrap();
    assert!(error.contains("Authentication required"), "{error}");
    assert!(error.contains("claude-agent-acp"), "{error}");
    assert_eq!(c[1]["command"], "prompt");
    assert_eq!(c[1]["success"], false);
    let out = tr.from_client(r#"{"type":"get_state","id":"g"}"#).unwrap();
    assert_eq!(client(&out)[0]["success"], false);
}

#[test]
fn text_chunks_stream_as_one_assistant_message_and_the_answer_ends_the_turn() {
    let mut tr = ready();
    let out = tr
        .from_client(r#"{"type":"prompt","id":"p","message":"hello"}"#)
        .unwrap();
    assert_eq!(
        types(&client(&out)),
        [
            "response",
            "agent_start",
            "turn_start",
            "message_start",
            "message_end"
        ]
    );
    let prompt_id = agent(&out)[0]["id"].clone();
    let chunk = |t: &str| {
        update_line(
            json!({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":t}}),
        )
    };
    assert!(
        feed(&mut tr, chunk("")).is_empty(),
        "empty chunks are skipped"
    );
    let out = feed(&mut tr, chunk("Hel"));
    assert_eq!(
        types(&client(&out)),
        [
            "message_start",
            "update:start",
            "update:text_start",
            "update:text_delta"
        ]
    );
    let out = feed(&mut tr, chunk("lo"));
    assert_eq!(client(&out)[0]["assistantMessageEvent"]["delta"], "lo");
    let out = feed(
        &mut tr,
        json!({"jsonrpc":"2.0","id":prompt_id,"result":{"stopReason":"end_turn"}}),
    );
    let c = client(&out);
    assert_eq!(
        types(&c),
        [
            "update:text_end",
            "update:done",
            "message_end",
            "turn_end",
            "agent_end"
        ]
    );
    assert_eq!(c[2]["message"]["content"][0]["text"], "Hello");
    assert_eq!(c[3]["message"]["stopReason"], "stop");
    let out = tr
        .from_client(r#"{"type":"get_messages","id":"m"}"#)
        .unwrap();
    assert_eq!(
        client(&out)[0]["data"]["messages"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn permission_options_are_ordered_allow_first_deny_last_with_unique_names() {
    let options = [
        json!({"optionId":"cancel","name":"Reject","kind":"reject_once"}),
        json!({"optionId":"never","name":"Reject","kind":"reject_always"}),
        json!({"optionId":"proceed_once","name":"Allow","kind":"allow_once"}),
        json!({"optionId":"proceed_once_and_switch","name":"Allow","kind":"allow_once"}),
        json!({"optionId":"always","name":"Always","kind":"allow_always"}),
    ];
    let choices = order_options(&options);
    let names: Vec<&str> = choices.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["Allow", "Allow (2)", "Always", "Reject", "Reject (2)"]
    );
    let ids: Vec<&str> = choices.iter().map(|c| c.option_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "proceed_once",
            "proceed_once_and_switch",
            "always",
            "never",
            "cancel"
        ]
    );
}

fn ask(tr: &mut Translator<TestClock>, id: Value) -> Value {
    let out = feed(
        tr,
        json!({"jsonrpc":"2.0","id":id,"method":"session/request_permission","params":{
        "sessionId":"sess-1",
        "toolCall":{"toolCallId":"call-1","title":"Shell","rawInput":{"command":"touch a"}},
        "options":[
            {"optionId":"cancel","name":"Reject","kind":"reject_once"},
            {"optionId":"proceed_once","name":"Allow","kind":"allow_once"},
        ]}}),
    );
    client(&out).remove(0)
}

#[test]
fn answers_map_back_to_option_ids_and_echo_the_request_id() {
    let mut tr = ready();
    tr.from_client(r#"{"type":"prompt","message":"x"}"#)
        .unwrap();
    let q = ask(&mut tr, json!("uuid-a"));
    assert_eq!(q["method"], "select");
    assert_eq!(q["title"], "Run Shell?");
    assert_eq!(q["options"], json!(["Allow", "Reject"]));
    assert_eq!(q["message"], r#"{"command":"touch a"}"#);
    let answer = |tr: &mut Translator<TestClock>, q: &Value, extra: Value| {
        let mut r = json!({"type":"extension_ui_response","id":q["id"]});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        agent(&tr.from_client(&r.to_string()).unwrap()).remove(0)
    };
    let reply = answer(&mut tr, &q, json!({"value":"Allow"}));
    assert_eq!(reply["id"], "uuid-a");
    assert_eq!(
        reply["result"]["outcome"],
        json!({"outcome":"selected","optionId":"proceed_once"})
    );
    let q = ask(&mut tr, json!(7));
    let reply = answer(&mut tr, &q, json!({"confirmed": false}));
    assert_eq!(reply["id"], 7);
    assert_eq!(reply["result"]["outcome"]["optionId"], "cancel");
    let q = ask(&mut tr, json!(8));
    let reply = answer(&mut tr, &q, json!({"confirmed": true}));
    assert_eq!(reply["result"]["outcome"]["optionId"], "proceed_once");
    let q = ask(&mut tr, json!(9));
    let reply = answer(&mut tr, &q, json!({"cancelled": true, "value": "Allow"}));
    assert_eq!(reply["result"]["outcome"]["optionId"], "cancel");
    let q = ask(&mut tr, json!(10));
    let reply = answer(&mut tr, &q, json!({"value": "Maybe"}));
    assert_eq!(reply["result"]["outcome"]["optionId"], "cancel");
}

#[test]
fn abort_cancels_the_turn_and_pending_questions_and_drops_the_queue() {
    let mut tr = ready();
    let out = tr
        .from_client(r#"{"type":"prompt","message":"x"}"#)
        .unwrap();
    let prompt_id = agent(&out)[0]["id"].clone();
    tr.from_client(r#"{"type":"follow_up","message":"later"}"#)
        .unwrap();
    ask(&mut tr, json!(5));
    let out = tr.from_client(r#"{"type":"abort","id":"a"}"#).unwrap();
    let a = agent(&out);
    assert_eq!(
        a[0],
        json!({"jsonrpc":"2.0","id":5,"result":{"outcome":{"outcome":"cancelled"}}})
    );
    assert_eq!(a[1]["method"], "session/cancel");
    assert!(a[1].get("id").is_none(), "a notification");
    assert_eq!(client(&out)[0]["followUp"], json!([]));
    let out = feed(
        &mut tr,
        json!({"jsonrpc":"2.0","id":prompt_id,"result":{"stopReason":"cancelled"}}),
    );
    let c = client(&out);
    assert_eq!(
        types(&c),
        ["update:error", "turn_end", "agent_end", "response"]
    );
    assert_eq!(c[0]["assistantMessageEvent"]["reason"], "aborted");
    assert_eq!(c[3]["command"], "abort");
    assert!(agent(&out).is_empty(), "the dropped follow-up is not sent");
}

#[test]
fn unknown_agent_requests_get_method_not_found_with_their_own_id() {
    let mut tr = ready();
    let out = feed(
        &mut tr,
        json!({"jsonrpc":"2.0","id":"x-1","method":"craft/drainMidTurnQueue","params":{}}),
    );
    let a = agent(&out);
    assert_eq!(a[0]["id"], "x-1");
    assert_eq!(a[0]["error"]["code"], -32601);
    assert!(client(&out).is_empty());
    // Unknown notifications and updates are ignored.
    assert!(feed(&mut tr, json!({"jsonrpc":"2.0","method":"x/y"})).is_empty());
    assert!(
        feed(
            &mut tr,
            update_line(json!({"sessionUpdate":"usage_update","used":null}))
        )
        .is_empty()
    );
}

#[test]
fn a_prompt_during_a_turn_is_queued_and_sent_after_it() {
    let mut tr = ready();
    let out = tr
        .from_client(r#"{"type":"prompt","message":"one"}"#)
        .unwrap();
    let first = agent(&out)[0]["id"].clone();
    let out = tr
        .from_client(r#"{"type":"prompt","id":"2","message":"two","streamingBehavior":"followUp"}"#)
        .unwrap();
    assert!(agent(&out).is_empty());
    assert_eq!(client(&out)[1]["followUp"], json!(["two"]));
    let out = feed(
        &mut tr,
        json!({"jsonrpc":"2.0","id":first,"result":{"stopReason":"end_turn"}}),
    );
    assert_eq!(agent(&out)[0]["params"]["prompt"][0]["text"], "two");
    let c = types(&client(&out));
    assert_eq!(
        c,
        [
            "turn_end",
            "agent_end",
            "queue_update",
            "agent_start",
            "turn_start",
            "message_start",
            "message_end"
        ]
    );
}

#[test]
fn tool_calls_end_the_message_and_keep_diffs_and_raw_output() {
    let mut tr = ready();
    tr.from_client(r#"{"type":"prompt","message":"x"}"#)
        .unwrap();
    feed(
        &mut tr,
        update_line(
            json!({"sessionUpdate":"agent_thought_chunk","content":{"type":"text","text":"hmm"}}),
        ),
    );
    let out = feed(
        &mut tr,
        update_line(
            json!({"sessionUpdate":"tool_call","toolCallId":"c1","title":"Edit a.txt","kind":"edit","status":"pending","rawInput":{"path":"a.txt"}}),
        ),
    );
    let c = client(&out);
    assert_eq!(
        types(&c),
        [
            "update:thinking_end",
            "update:toolcall_start",
            "update:toolcall_end",
            "update:done",
            "message_end",
            "tool_execution_start"
        ]
    );
    assert_eq!(c[4]["message"]["stopReason"], "toolUse");
    assert_eq!(c[5]["toolName"], "Edit a.txt");
    assert_eq!(c[5]["args"], json!({"path":"a.txt"}));
    let out = feed(
        &mut tr,
        update_line(
            json!({"sessionUpdate":"tool_call_update","toolCallId":"c1","status":"completed","content":[{"type":"diff","path":"/w/a.txt","oldText":"a","newText":"b"}]}),
        ),
    );
    let c = client(&out);
    assert_eq!(
        types(&c),
        [
            "tool_execution_update",
            "tool_execution_end",
            "message_start",
            "message_end"
        ]
    );
    assert_eq!(
        c[1]["result"]["content"],
        json!([{"type":"diff","path":"/w/a.txt","oldText":"a","newText":"b"}])
    );
    assert_eq!(c[1]["isError"], false);
    // codex: no tool_call, only rawOutput at the end.
    let out = feed(
        &mut tr,
        update_line(
            json!({"sessionUpdate":"tool_call_update","toolCallId":"c2","title":"ls","status":"failed","rawOutput":{"exit_code":2}}),
        ),
    );
    let c = client(&out);
    let end = c
        .iter()
        .find(|v| v["type"] == "tool_execution_end")
        .unwrap();
    assert_eq!(
        end["result"]["content"],
        json!([{"type":"text","text":"{\"exit_code\":2}"}])
    );
    assert_eq!(end["isError"], true);
}

#[test]
fn a_plan_is_captured_as_a_checklist() {
    let mut tr = ready();
    let out = feed(
        &mut tr,
        update_line(json!({"sessionUpdate":"plan","entries":[
            {"content":"Read","priority":"high","status":"completed"},
            {"content":"Write","priority":"high","status":"in_progress"},
            {"content":"Test","priority":"low","status":"pending"}]})),
    );
    let c = client(&out);
    assert_eq!(c[0]["event"], "plan_capture");
    assert_eq!(
        c[0]["message"],
        "- [x] Read\n- [ ] Write (in progress)\n- [ ] Test"
    );
}

#[test]
fn mode_and_model_are_acked_after_the_agent_answers() {
    let mut tr = ready();
    let out = tr
        .from_client(r#"{"type":"set_permission_mode","id":"m","mode":"plan"}"#)
        .unwrap();
    assert!(client(&out).is_empty());
    let req = agent(&out).remove(0);
    assert_eq!(req["method"], "session/set_mode");
    assert_eq!(req["params"], json!({"sessionId":"sess-1","modeId":"plan"}));
    let out = feed(&mut tr, json!({"jsonrpc":"2.0","id":req["id"],"result":{}}));
    assert_eq!(client(&out)[0]["success"], true);
    let out = tr
        .from_client(r#"{"type":"set_model","id":"n","modelId":"big"}"#)
        .unwrap();
    let req = agent(&out).remove(0);
    let out = feed(
        &mut tr,
        json!({"jsonrpc":"2.0","id":req["id"],"error":{"code":-32601,"message":"Method not found"}}),
    );
    let c = client(&out);
    assert_eq!(c[0]["success"], false);
    assert_eq!(c[0]["error"], "Method not found");
    let out = tr.from_client(r#"{"type":"get_state"}"#).unwrap();
    let data = &client(&out)[0]["data"];
    assert_eq!(data["permissionMode"], "plan");
    assert_eq!(data["model"]["id"], "fake-model");
    assert_eq!(data["sessionId"], "sess-1");
    let out = tr.from_client(r#"{"type":"compact","id":"c"}"#).unwrap();
    assert_eq!(
        client(&out)[0]["error"],
        "acp adapter does not support 'compact'"
    );
}

#[test]
fn history_is_bounded_and_state_survives_save() {
    let mut tr = ready();
    for _ in 0..(MAX_HISTORY + 5) {
        tr.remember(json!({"role":"user"}));
    }
    assert_eq!(tr.state.history.len(), MAX_HISTORY);
    let out = tr
        .from_client(r#"{"type":"get_messages","id":"g"}"#)
        .unwrap();
    let data = &client(&out)[0]["data"];
    assert_eq!(data["truncated"], true);
    assert_eq!(data["omittedMessages"], 5);
    let saved = tr.save();
    let back = Translator::new(TestClock(0), setup(None), Some(&saved)).unwrap();
    assert_eq!(back.state, tr.state);
    assert!(Translator::new(TestClock(0), setup(None), Some("{\"v\":99}")).is_err());
}

#[test]
fn history_and_the_turn_in_flight_are_bounded_in_bytes() {
    let mut tr = ready();
    let big = "z".repeat(500_000);
    for n in 0..300 {
        tr.remember(json!({"role": "assistant", "content": [{"type": "text", "text": format!("{n}{big}")}]}));
    }
    let bytes: usize = tr.state.history.iter().map(json_size).sum();
    assert!(bytes <= MAX_HISTORY_BYTES, "{bytes}");
    assert_eq!(tr.state.history_bytes, bytes);
    let turn: usize = tr.state.turn_messages.iter().map(json_size).sum();
    assert!(turn <= MAX_HISTORY_BYTES, "{turn}");
    let out = tr
        .from_client(r#"{"type":"get_messages","id":"g"}"#)
        .unwrap();
    let data = &client(&out)[0]["data"];
    let kept = data["messages"].as_array().unwrap();
    assert_eq!(data["truncated"], true);
    assert_eq!(
        data["omittedMessages"].as_u64().unwrap() + kept.len() as u64,
        300
    );
    assert!(
        kept[kept.len() - 1]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("299")
    );
    let back = Translator::new(TestClock(0), setup(None), Some(&tr.save())).unwrap();
    assert_eq!(back.state, tr.state);
}

#[test]
fn an_exit_mid_turn_ends_it_with_an_error() {
    let mut tr = ready();
    tr.from_client(r#"{"type":"prompt","message":"x"}"#)
        .unwrap();
    let out = tr.on_exit(Some(1), None);
    let c = client(&out);
    assert_eq!(types(&c), ["update:error", "turn_end", "agent_end"]);
    assert!(
        c[0]["assistantMessageEvent"]["error"]
            .as_str()
            .unwrap()
            .contains("exited with code 1")
    );
}

/// Checks that a record is written as a `Value` writes it: compact, keys
/// in sorted order.
fn assert_canonical(out: &[Out]) {
    for o in out {
        if let Out::Client(text) | Out::Agent(text) = o {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(text, &v.to_string(), "not written as a Value writes it");
        }
    }
}

/// Feeds the same records to a translator reading chunks and tool updates
/// borrowed (`from_agent`) and one reading every line as a `Value`
/// (`agent_line_as_tree`): the records, and the state after, are identical
/// byte for byte.
fn assert_same_reading(client_and_agent: &[(bool, String)]) {
    let (mut fast, mut tree) = (t(), t());
    assert_eq!(fast.handshake(), tree.handshake());
    for (i, (from_agent, line)) in client_and_agent.iter().enumerate() {
        let (a, b) = if *from_agent {
            (fast.from_agent(line), tree.agent_line_as_tree(line))
        } else {
            (fast.from_client(line), tree.from_client(line))
        };
        assert_eq!(a, b, "step {i}: {line}");
        if let Ok(out) = &a {
            assert_canonical(out);
        }
    }
    assert_eq!(fast.save(), tree.save());
}

#[test]
fn the_borrowed_reading_matches_the_value_reading_on_every_transcript() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("transcripts");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut agent_lines = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // The recorded lines compact, and spread over lines with spaces (a
        // value's raw text then has whitespace inside).
        for pretty in [false, true] {
            let mut steps = Vec::new();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let step: Value = serde_json::from_str(line).unwrap();
                let write = |v: &Value| {
                    if pretty {
                        serde_json::to_string_pretty(v).unwrap()
                    } else {
                        v.to_string()
                    }
                };
                if let Some(a) = step.get("agent") {
                    steps.push((true, write(a)));
                    agent_lines += 1;
                } else if let Some(a) = step.get("agent_raw").and_then(Value::as_str) {
                    steps.push((true, a.to_owned()));
                } else if let Some(c) = step.get("client") {
                    steps.push((false, write(c)));
                }
            }
            assert_same_reading(&steps);
        }
    }
    assert!(
        files.len() >= 30 && agent_lines >= 500,
        "{agent_lines} lines"
    );
}

#[test]
fn the_borrowed_reading_matches_the_value_reading_on_unusual_shapes() {
    let u = |update: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","method":"session/update","params":{{"sessionId":"sess-1","update":{update}}}}}"#
        )
    };
    let chunk = |content: &str| {
        u(&format!(
            r#"{{"sessionUpdate":"agent_message_chunk","content":{content}}}"#
        ))
    };
    let mut steps: Vec<(bool, String)> = vec![
        (true, r#"{"jsonrpc":"2.0","id":0,"result":{"agentCapabilities":{},"agentInfo":{"name":"qwen-code"}}}"#.into()),
        (true, r#"{"jsonrpc":"2.0","id":1,"result":{"sessionId":"sess-1"}}"#.into()),
        (false, r#"{"type":"prompt","message":"hi"}"#.into()),
    ];
    let agent = [
        chunk(r#"{"type":"text","text":"plain"}"#),
        chunk(r#"{"type":"text","text":"escapes: \n \"q\" \u00e9 \ud83d\ude00 \\ end"}"#),
        u(r#"{"sessionUpdate":"agent_thought_chunk","content":{"type":"text","text":"hmm"}}"#),
        chunk("null"),
        u(r#"{"sessionUpdate":"agent_message_chunk"}"#),
        chunk(r#"{"type":"image","data":"AAAA","mimeType":"image/png"}"#),
        chunk(r#"{"type":"text","text":5}"#),
        chunk(r#"{"type":"text"}"#),
        chunk(r#""a string""#),
        chunk(r#"[{"type":"text","text":"in an array"}]"#),
        chunk(r#"["text","as fields in order"]"#),
        chunk(r#"{"type":"text","text":"one","text":"two"}"#),
        chunk(r#" { "type" : "text" , "text" : "spaced" } "#),
        r#"{"jsonrpc":"2.0","method":"session/update","params":{"update":["agent_message_chunk",{"type":"text","text":"x"}]}}"#.into(),
        r#"{"jsonrpc":"2.0","method":"session/update","params":[{"sessionUpdate":"agent_message_chunk"}]}"#.into(),
        r#"["2.0","session/update"]"#.into(),
        r#"{"jsonrpc":"2.0","method":"session/update","params":{"update":{"sessionUpdate":7}}}"#.into(),
        r#"{"jsonrpc":"2.0","method":5,"params":{"update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"x"}}}}"#.into(),
        r#"{"jsonrpc":"2.0","id":null,"method":"session/update","params":{"update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"id null"}}}}"#.into(),
        r#"{"jsonrpc":"2.0","id":9,"method":"session/update","params":{"update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"a request"}}}}"#.into(),
        u(r#"{"sessionUpdate":"tool_call","toolCallId":"t1","title":"Shell","status":"pending","rawInput":{"z":1,"a":[1, 2.5, "x"]},"content":[
            {"type":"content","content":{"type":"text","text":"out"}},
            {"type":"content","content":{"type":"image","data":"AAAA","mimeType":"image/png"}},
            {"type":"content","content":{"type":"resource_link","uri":"file:///a","name":"a"}},
            {"type":"content","content":{"type":"audio","data":"x"}},
            {"type":"content"},
            {"type":"diff","path":"/w/a.txt","oldText":null,"newText":"new\n"},
            {"type":"terminal","terminalId":"x"},
            {"type":7}
        ]}"#),
        u(r#"{"sessionUpdate":"tool_call_update","toolCallId":"t1","status":"in_progress","content":[{"type":"content","content":{"type":"text","text":"more"}}]}"#),
        u(r#"{"sessionUpdate":"tool_call_update","toolCallId":"t1","rawInput":{}}"#),
        u(r#"{"sessionUpdate":"tool_call_update","toolCallId":"t1","title":3}"#),
        u(r#"{"sessionUpdate":"tool_call_update","toolCallId":"t1","content":{"type":"content"}}"#),
        u(r#"{"sessionUpdate":"tool_call_update","toolCallId":"t1","content":[{"type":"content","content":"text"}]}"#),
        u(r#"{"sessionUpdate":"tool_call_update","toolCallId":"t1","content":[["diff","/p"]]}"#),
        u(r#"{"sessionUpdate":"tool_call_update","toolCallId":"t1","status":"completed","rawOutput":{"b": 1, "a": [1, 2]}}"#),
        u(r#"{"sessionUpdate":"tool_call","toolCallId":"t2","title":"Read","rawInput":{}}"#),
        u(r#"{"sessionUpdate":"tool_call_update","toolCallId":"t2","status":"failed","rawOutput":"boom"}"#),
        u(r#"{"sessionUpdate":"tool_call","toolCallId":"t3","status":"completed","rawOutput":null}"#),
        u(r#"{"sessionUpdate":"tool_call_update","status":"in_progress"}"#),
        u(r#"{"sessionUpdate":"tool_call_update","toolCallId":"t4","status":5}"#),
        u(r#"{"sessionUpdate":"plan","entries":[{"content":"a","status":"completed"}]}"#),
        chunk(r#"{"type":"text","text":"after the tools"}"#),
        "not json".into(),
        "[1,2]".into(),
        r#"{"jsonrpc":"2.0","id":2,"result":{"stopReason":"end_turn"}}"#.into(),
    ];
    steps.extend(agent.into_iter().map(|l| (true, l)));
    assert_same_reading(&steps);
}

#[test]
fn chunks_and_tool_updates_are_read_borrowed() {
    // The shapes the agents send take the borrowed path (a change there
    // would silently cost the Value tree again).
    let fast = |l: &str| wire::session_update(l).is_some();
    assert!(fast(
        &update_line(
            json!({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"a\nb"}})
        )
        .to_string()
    ));
    assert!(fast(&update_line(json!({"sessionUpdate":"tool_call_update","toolCallId":"t","status":"in_progress","content":[{"type":"content","content":{"type":"text","text":"x"}}]})).to_string()));
    assert!(!fast(
        &update_line(json!({"sessionUpdate":"plan","entries":[]})).to_string()
    ));
    assert!(!fast(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#));
}

#[test]
fn prompts_queued_during_a_turn_are_bounded_in_bytes_and_count() {
    use amarre_pi_dialect::MAX_QUEUED;
    let mut tr = ready();
    tr.from_client(r#"{"type":"prompt","message":"running"}"#)
        .unwrap();
    let big = "x".repeat(3 << 20);
    let prompt = |id: usize, msg: &str| {
        json!({"type": "follow_up", "id": id.to_string(), "message": msg}).to_string()
    };
    for id in 0..2 {
        let out = tr.from_client(&prompt(id, &big)).unwrap();
        assert_eq!(client(&out)[0]["success"], true, "prompt {id} is queued");
    }
    // A third 3 MiB prompt would pass MAX_QUEUED_BYTES: refused, the
    // queue unchanged.
    let out = tr.from_client(&prompt(2, &big)).unwrap();
    let c = client(&out);
    assert_eq!(c.len(), 1, "only the refusal: {c:?}");
    assert_eq!(c[0]["success"], false);
    assert!(c[0]["error"].as_str().unwrap().contains("queue is full"));
    assert_eq!(tr.state.queue.len(), 2);
    // Small prompts are refused past MAX_QUEUED.
    for id in 3..MAX_QUEUED + 1 {
        let out = tr.from_client(&prompt(id, "s")).unwrap();
        assert_eq!(client(&out)[0]["success"], true, "prompt {id}");
    }
    let out = tr.from_client(&prompt(999, "s")).unwrap();
    assert_eq!(client(&out)[0]["success"], false);
    assert_eq!(tr.state.queue.len(), MAX_QUEUED);
}

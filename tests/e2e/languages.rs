//! Adapters written in a language other than Rust (docs/adapters/authoring.md):
//! the JavaScript `redact` adapter, built from source with componentize-js by
//! scripts/build-js-adapters, runs real sessions through the daemon (with
//! the fake agent and with the real pi CLI), and behaves exactly like its
//! Rust twin on generated input.

use std::path::PathBuf;

use amarre::adapter::{AdapterHost, AdapterLimits, Emit, SpawnRequest};
use serde_json::{Value, json};

use crate::harness::*;

const GITHUB_TOKEN: &str = "ghp_0123456789abcdefghijABCDEFGHIJ0123";
const OPENAI_KEY: &str = "sk-proj-abcDEF123456789_abcdefghij";

/// A component built by scripts/build-js-adapters.
fn js_component(name: &str) -> PathBuf {
    let file = adapter_file(name);
    assert!(
        file.is_file(),
        "{} is missing: build the JavaScript adapters with scripts/build-js-adapters (scripts/test does)",
        file.display()
    );
    file
}

fn redact_instance(command: &str, args: Value, env: Value) -> String {
    json!([{
        "id": "default",
        "agentPath": js_component("redact"),
        "command": command,
        "args": args,
        "env": env,
    }])
    .to_string()
}

#[tokio::test]
async fn the_javascript_redact_adapter_masks_secrets_in_a_live_session() {
    let instances = redact_instance(
        fake_agent(),
        json!([]),
        json!({"AMARRE_REDACT_VALUES": "hunter2-db-pass"}),
    );
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &instances)]).await;
    let s = d.create(json!({})).await;
    assert_eq!(
        s["agent"], "redact",
        "the reported agent is the adapter's own name"
    );
    let id = s["id"].as_str().unwrap();
    let mut ws = d.ws(id, "").await;

    // The fake agent echoes the record; the echo is what the phone sees.
    let text = format!("key {OPENAI_KEY}, db hunter2-db-pass, token {GITHUB_TOKEN}");
    ws.send_json(json!({"type": "note", "text": text})).await;
    let echoed = ws.recv_json("the echoed note").await;
    assert_eq!(
        echoed,
        json!({"type": "note", "text": "key [REDACTED], db [REDACTED], token [REDACTED]"})
    );

    // A line that is not JSON is masked too.
    ws.send_json(json!({"type": "fake.raw", "chunks": [format!("plain {GITHUB_TOKEN} line\n")]}))
        .await;
    assert_eq!(ws.recv_text("the raw line").await, "plain [REDACTED] line");

    // A large record: the interpreted JavaScript takes longer than the
    // 50 ms budget of a call, and gets more time for its size.
    let big = format!(
        "{} {OPENAI_KEY}",
        "lorem ipsum dolor sit amet ".repeat(40_000)
    );
    ws.send_json(json!({"type": "note", "text": big})).await;
    let echoed = ws.recv_json("the large echoed note").await;
    let got = echoed["text"].as_str().unwrap();
    assert_eq!(got.len(), big.len() - OPENAI_KEY.len() + "[REDACTED]".len());
    assert!(got.ends_with(" [REDACTED]"));

    // The session is healthy afterwards: no trap, still answering.
    ws.send_json(json!({"type": "note", "text": "still here"}))
        .await;
    assert_eq!(
        ws.recv_json("after the large record").await["text"],
        "still here"
    );
    let metrics = d
        .http()
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("amarre_adapter_traps_total 0"),
        "no adapter trap: {metrics}"
    );
}

#[tokio::test]
async fn a_secret_in_pi_output_is_masked_before_it_reaches_the_phone() {
    let _serial = agent_lock().await;
    let pi = OfflinePi::start().await;
    // pi speaks the client dialect itself; redact runs it as the
    // operator's command and filters what it writes.
    let mut args = vec!["--mode", "rpc"];
    args.extend_from_slice(PI_OFFLINE_ARGS);
    let instances = redact_instance(agent_cli("pi").to_str().unwrap(), json!(args), pi.env());
    let d = Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", &instances),
        ("AMARRE_KILL_GRACE_MS", "2000"),
    ])
    .await;
    let work = TempDir::new("redact-pi-work");
    let s = d.create(json!({"cwd": work.path()})).await;
    let mut ws = d.ws(s["id"].as_str().unwrap(), "").await;

    // The model runs a command that prints a token, then reports the
    // output ("Done: <first line>"); pi streams all of it to the phone.
    ws.send_json(json!({"type": "prompt", "id": "p1", "message": format!("Please RUN: echo {GITHUB_TOKEN}")}))
        .await;
    let seen: Vec<Value> = ws.until_agent_end("agent_end").await;
    let all = serde_json::to_string(&seen).unwrap();
    assert!(
        !all.contains(GITHUB_TOKEN),
        "the token reached the client: {all}"
    );
    let tool_end = seen
        .iter()
        .find(|v| v["type"] == "tool_execution_end")
        .unwrap_or_else(|| panic!("the tool ran: {all}"));
    let output = tool_end["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(output.trim(), "[REDACTED]", "{tool_end}");
    // The model saw the real output (the filter is on the way to the
    // phone only) and its final text is masked in the finished message.
    let requests = pi.llm.requests();
    assert!(
        serde_json::to_string(&requests)
            .unwrap()
            .contains(GITHUB_TOKEN),
        "pi sent the real tool output to the model"
    );
    let end = seen
        .iter()
        .rev()
        .find(|v| v["type"] == "message_end")
        .unwrap();
    let final_text = serde_json::to_string(&end["message"]["content"]).unwrap();
    assert!(final_text.contains("Done: [REDACTED]"), "{end}");
}

fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

#[tokio::test]
async fn the_conformance_kit_replays_a_javascript_adapters_transcripts_and_reports_differences() {
    let cache = repo_path("target/test-component-cache");
    let env = [("AMARRE_CACHE_DIR", cache.to_str().unwrap())];
    let wasm = js_component("redact");
    let wasm = wasm.to_str().unwrap();
    let golden = repo_path("adapters-wasm/redact/transcripts");
    let count = std::fs::read_dir(&golden).unwrap().count();

    let (code, out, err) = cli(
        &[
            "adapters",
            "test",
            wasm,
            "--transcript",
            golden.to_str().unwrap(),
        ],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok    loads: redact"), "{out}");
    assert!(
        out.contains(&format!("{count} transcripts, {count} passed, 0 failed")),
        "{out}"
    );

    // Without --transcript: the check only.
    let (code, out, _) = cli(&["adapters", "test", wasm], &env).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("spawn spec passes the policy") && !out.contains("transcript"),
        "{out}"
    );

    // One wrong expectation: reported with its line, exit 1.
    let dir = TempDir::new("kit");
    for entry in std::fs::read_dir(&golden).unwrap().flatten() {
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let tokens = dir.path().join("tokens.jsonl");
    let text = std::fs::read_to_string(&tokens).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l.contains("OPENAI_API_KEY=[REDACTED]"))
        .unwrap();
    std::fs::write(
        &tokens,
        text.replacen("OPENAI_API_KEY=[REDACTED]", "OPENAI_API_KEY=[HIDDEN]", 1),
    )
    .unwrap();
    let (code, out, _) = cli(
        &[
            "adapters",
            "test",
            wasm,
            "--transcript",
            dir.path().to_str().unwrap(),
        ],
        &env,
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  tokens.jsonl (1 difference"), "{out}");
    assert!(out.contains(&format!("line {line}:")), "{out}");
    assert!(
        out.contains(&format!(
            "{count} transcripts, {} passed, 1 failed",
            count - 1
        )),
        "{out}"
    );

    // The contracts an author builds against: both hosted versions, or
    // exactly one.
    let v1 = std::fs::read_to_string(repo_path("wit/adapter.wit")).unwrap();
    let v2 = std::fs::read_to_string(repo_path("wit/0.2.0/adapter.wit")).unwrap();
    let (code, out, _) = cli(&["adapters", "wit"], &env).await;
    assert_eq!(code, 0);
    assert!(out.contains(&v1) && out.contains(&v2), "{out}");
    let (code, out, _) = cli(&["adapters", "wit", "--only", "0.1.0"], &env).await;
    assert_eq!((code, out), (0, v1));
    let (code, out, _) = cli(&["adapters", "wit", "--only", "0.2.0"], &env).await;
    assert_eq!((code, out), (0, v2));
}

#[test]
fn the_authoring_guide_shows_the_templates_as_they_are() {
    let guide = std::fs::read_to_string(repo_path("docs/adapters/authoring.md")).unwrap();
    for file in [
        "adapters-wasm/templates/rust/Cargo.toml",
        "adapters-wasm/templates/rust/src/lib.rs",
        "adapters-wasm/templates/js/adapter.js",
    ] {
        let text = std::fs::read_to_string(repo_path(file)).unwrap();
        assert!(
            guide.contains(&text),
            "{file} differs from its copy in docs/adapters/authoring.md"
        );
    }
}

/// Lines built from the pieces the patterns care about.
fn generated_lines(count: usize) -> Vec<String> {
    const PIECES: &[&str] = &[
        "sk-",
        "ghp_",
        "gho_",
        "github_pat_",
        "glpat-",
        "AKIA",
        "ASIA",
        "xoxb-",
        "xoxq-",
        "Bearer ",
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----BEGIN PUBLIC KEY-----",
        "-----END RSA PRIVATE KEY-----",
        "PRIVATE KEY-----",
        "\\n",
        "\\t",
        "\\\"",
        "\"",
        "\\",
        "_",
        "-",
        " ",
        "é",
        "日本",
        "a",
        "Z",
        "0",
        "hunter2",
        "pa\\\"ss",
        "abcdefghijklmnop",
        "ABCDEFGHIJKLMNOP0123",
        "qrstuvwxyz0123456789",
        "=",
        "/",
        "+",
        ".",
        "~",
        "{\"text\":\"",
        "\"}",
    ];
    // xorshift64*: deterministic, so a difference is reproducible.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    (0..count)
        .map(|_| {
            let n = 1 + (next() % 40) as usize;
            (0..n)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn the_javascript_adapter_and_its_rust_twin_agree_on_generated_input() {
    let cache =
        PathBuf::from(amarre::adapter::builtin::BUILT_ADAPTERS_DIR).join("../test-component-cache");
    let host = AdapterHost::with_cache(AdapterLimits::default(), Some(&cache)).unwrap();
    let request = SpawnRequest {
        session_id: "0123456789ab".into(),
        instance_id: "default".into(),
        command: Some("agent".into()),
        env: vec![(
            "AMARRE_REDACT_VALUES".into(),
            "hunter2, pa\"ss ,abc,hunter2-db".into(),
        )],
        ..Default::default()
    };
    let mut twins = Vec::new();
    for file in [js_component("redact"), adapter_file("redact-rs")] {
        let adapter = host.load_file(&file).await.unwrap();
        let mut instance = adapter.instantiate().await.unwrap();
        instance.create_session(&request, None).await.unwrap();
        twins.push(instance);
    }
    let lines = generated_lines(3000);
    let mut masked = 0;
    for line in &lines {
        let mut outputs = Vec::new();
        for twin in &mut twins {
            let emits = twin.from_agent(line).await.unwrap();
            let [Emit::ToClient(text)] = emits.as_slice() else {
                panic!("one record to the client for {line:?}, got {emits:?}");
            };
            outputs.push(text.clone());
        }
        assert_eq!(
            outputs[0], outputs[1],
            "JavaScript (left) and Rust (right) differ on {line:?}"
        );
        masked += usize::from(outputs[0].contains("[REDACTED]"));
    }
    // The generator reaches the interesting cases, both ways.
    assert!(
        masked > 300 && masked < 2700,
        "{masked} of {} lines masked",
        lines.len()
    );
}

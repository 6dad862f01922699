//! Boundary tests: real components built from `adapters-wasm/`, loaded by the
//! real host. Misbehaving fixtures must be contained with a clear error while
//! a well-behaved adapter keeps working in the same process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::*;
use crate::transcript;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(builtin::BUILT_ADAPTERS_DIR).join(format!("{name}.wasm"))
}

fn host() -> AdapterHost {
    AdapterHost::new(AdapterLimits {
        call_budget: Duration::from_millis(50),
        memory_bytes: 16 << 20,
        ..AdapterLimits::default()
    })
    .expect("adapter host")
}

fn request(env: &[(&str, &str)]) -> SpawnRequest {
    SpawnRequest {
        session_id: "0123456789ab".into(),
        instance_id: "default".into(),
        cwd: None,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        command: Some("cat".into()),
        args: vec!["-u".into()],
        ..Default::default()
    }
}

/// A well-behaved adapter still works: the proof that a failure was contained.
async fn stdio_still_works(host: &AdapterHost) {
    let stdio = host.load_builtin("stdio").await.expect("load stdio");
    let mut inst = stdio.instantiate().await.expect("instantiate stdio");
    let spec = inst.spawn(&request(&[])).await.expect("stdio spawn");
    assert_eq!(spec.command, "cat");
    inst.create_session(&request(&[]), None)
        .await
        .expect("create");
    let out = inst
        .from_agent(r#"{"type":"x"}"#)
        .await
        .expect("from_agent");
    assert_eq!(out, vec![Emit::ToClient(r#"{"type":"x"}"#.into())]);
}

#[tokio::test]
async fn the_stdio_builtin_describes_itself_and_passes_records_through() {
    let host = host();
    let stdio = host.load_builtin("stdio").await.expect("load stdio");
    assert_eq!(stdio.info.name, "stdio");
    assert_eq!(stdio.hash.len(), 64);
    let mut inst = stdio.instantiate().await.unwrap();
    let spec = inst.spawn(&request(&[])).await.unwrap();
    assert_eq!(spec.args, vec!["-u".to_string()]);
    assert!(spec.passthrough_both());
    inst.create_session(&request(&[]), None).await.unwrap();
    let out = inst.from_client(r#"{"type":"prompt"}"#).await.unwrap();
    assert_eq!(out, vec![Emit::ToAgent(r#"{"type":"prompt"}"#.into())]);
}

#[tokio::test]
async fn a_component_is_compiled_once_per_content_hash() {
    let host = host();
    host.load_builtin("stdio").await.unwrap();
    host.load_builtin("stdio").await.unwrap();
    host.load_file(&fixture("stdio")).await.unwrap();
    assert_eq!(host.compilations(), 1);
}

#[tokio::test]
async fn stdio_without_a_command_is_an_adapter_error() {
    let host = host();
    let stdio = host.load_builtin("stdio").await.unwrap();
    let mut inst = stdio.instantiate().await.unwrap();
    let mut req = request(&[]);
    req.command = None;
    let err = inst.spawn(&req).await.unwrap_err();
    assert!(!err.is_trap());
    assert!(err.to_string().contains("stdio@"), "{err}");
    assert!(err.to_string().contains("command"), "{err}");
}

#[tokio::test]
async fn a_trap_poisons_only_that_instance_and_names_the_adapter() {
    let host = host();
    let trap = host.load_file(&fixture("fixture-trap")).await.unwrap();
    let mut inst = trap.instantiate().await.unwrap();
    inst.create_session(&request(&[]), None).await.unwrap();
    assert!(inst.from_agent("fine").await.is_ok());
    let err = inst.from_agent("please trap").await.unwrap_err();
    assert!(err.is_trap(), "{err}");
    assert_eq!(err.adapter(), "fixture-trap@0.1.0");
    // Poisoned from now on, without running guest code again.
    let again = inst.from_agent("fine").await.unwrap_err();
    assert!(again.detail().contains("earlier trap"), "{again}");
    // A fresh instance of the same adapter is unaffected.
    let mut fresh = trap.instantiate().await.unwrap();
    fresh.create_session(&request(&[]), None).await.unwrap();
    assert!(fresh.from_agent("fine").await.is_ok());
    stdio_still_works(&host).await;
}

#[tokio::test]
async fn a_trap_at_spawn_is_contained() {
    let host = host();
    let trap = host.load_file(&fixture("fixture-trap")).await.unwrap();
    let mut inst = trap.instantiate().await.unwrap();
    let err = inst
        .spawn(&request(&[("FIXTURE_WHEN", "spawn")]))
        .await
        .unwrap_err();
    assert!(err.is_trap(), "{err}");
    stdio_still_works(&host).await;
}

#[tokio::test]
async fn an_endless_loop_ends_in_a_time_budget_trap() {
    let host = host();
    let looping = host.load_file(&fixture("fixture-loop")).await.unwrap();
    let mut inst = looping.instantiate().await.unwrap();
    inst.create_session(&request(&[]), None).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), inst.from_agent("loop"))
        .await
        .expect("the budget must end the call, not the test timeout")
        .unwrap_err();
    assert!(err.is_trap(), "{err}");
    assert!(err.detail().contains("time budget of 50 ms"), "{err}");
    stdio_still_works(&host).await;
}

/// On a single-threaded runtime, anything that runs while a looping call is
/// in flight proves the call gave the worker back.
#[tokio::test(flavor = "current_thread")]
async fn a_looping_call_yields_the_worker_until_its_budget_traps_it() {
    let host = AdapterHost::new(AdapterLimits {
        call_budget: Duration::from_millis(400),
        memory_bytes: 16 << 20,
        ..AdapterLimits::default()
    })
    .expect("adapter host");
    let looping = host.load_file(&fixture("fixture-loop")).await.unwrap();
    let mut inst = looping.instantiate().await.unwrap();
    inst.create_session(&request(&[]), None).await.unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let call = tokio::spawn(async move {
        let r = inst.from_agent("loop").await;
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    });
    // Timer ticks completed on the same thread while the call was running.
    let mut ticks_during_call = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if !done.load(std::sync::atomic::Ordering::SeqCst) {
            ticks_during_call += 1;
        }
    }
    let err = call.await.unwrap().unwrap_err();
    assert!(err.is_trap(), "{err}");
    assert!(err.detail().contains("time budget of 400 ms"), "{err}");
    assert!(
        ticks_during_call >= 10,
        "the looping call held the only worker: {ticks_during_call} timer ticks ran beside it"
    );
}

/// One prompt answered by an assistant text of `size` bytes; returns what the
/// client got for the agent's lines.
async fn claude_turn(inst: &mut AdapterInstance, n: usize, size: usize) -> Vec<Emit> {
    let prompt = serde_json::json!({"type": "prompt", "message": format!("turn {n}")});
    inst.from_client(&prompt.to_string()).await.expect("prompt");
    let text = format!("{n}:{}", "y".repeat(size));
    let line = serde_json::json!({"type": "assistant", "message": {"id": format!("m{n}"),
        "role": "assistant", "content": [{"type": "text", "text": text}]}});
    let mut out = inst
        .from_agent(&line.to_string())
        .await
        .expect("assistant line");
    let result = r#"{"type":"result","subtype":"success","is_error":false,"result":"ok"}"#;
    out.extend(
        inst.from_agent(result)
            .await
            .unwrap_or_else(|e| panic!("result of turn {n}: {e}")),
    );
    out
}

#[tokio::test]
async fn claude_code_stays_within_its_memory_through_long_sessions_and_large_lines() {
    // The default limits: 64 MiB per instance.
    let host = AdapterHost::new(AdapterLimits::default()).expect("adapter host");
    let claude = host.load_builtin("claude-code").await.unwrap();
    let mut inst = claude.instantiate().await.unwrap();
    inst.create_session(&request(&[]), None).await.unwrap();
    for n in 0..300 {
        let out = claude_turn(&mut inst, n, 500_000).await;
        assert!(
            out.iter()
                .any(|e| matches!(e, Emit::ToClient(t) if t.contains("\"agent_end\""))),
            "turn {n}"
        );
    }
    // A record as large as the adapter is given still translates.
    let limit = inst.record_limit();
    assert_eq!(
        limit,
        AdapterLimits::default().memory_bytes / RECORD_LIMIT_DIVISOR
    );
    claude_turn(&mut inst, 300, limit - 200).await;
    let out = inst
        .from_client(r#"{"type":"get_messages","id":"g"}"#)
        .await
        .expect("get_messages");
    let Some(Emit::ToClient(answer)) = out.first() else {
        panic!("no answer: {out:?}");
    };
    let answer: serde_json::Value = serde_json::from_str(answer).unwrap();
    assert_eq!(answer["success"], true);
    assert_eq!(answer["data"]["truncated"], true);
    // A larger one is refused by the host without calling the guest.
    let calls = host.calls_and_traps();
    let huge = format!(r#"{{"type":"assistant","pad":"{}"}}"#, "x".repeat(12 << 20));
    let err = inst.from_agent(&huge).await.unwrap_err();
    assert!(matches!(err, CallError::TooLarge { .. }), "{err}");
    assert!(!err.is_trap());
    assert_eq!(host.calls_and_traps(), calls);
    assert!(inst.poisoned().is_none());
    assert!(
        inst.memory_bytes() <= AdapterLimits::default().memory_bytes,
        "{}",
        inst.memory_bytes()
    );
}

#[test]
fn a_call_budget_grows_with_its_input_up_to_a_cap() {
    let limits = AdapterLimits {
        call_budget: Duration::from_millis(50),
        ..AdapterLimits::default()
    };
    assert_eq!(call_budget(&limits, 100), Duration::from_millis(50));
    assert_eq!(call_budget(&limits, 10 * 1024), Duration::from_millis(60));
    assert_eq!(call_budget(&limits, 16 << 20), MAX_CALL_BUDGET);
    // A base budget above the cap is the operator's choice and stands.
    let generous = AdapterLimits {
        call_budget: Duration::from_secs(5),
        ..AdapterLimits::default()
    };
    assert_eq!(call_budget(&generous, 16 << 20), Duration::from_secs(5));
}

#[tokio::test]
async fn unbounded_allocation_ends_in_a_memory_cap_trap() {
    let host = host();
    let hog = host.load_file(&fixture("fixture-hog")).await.unwrap();
    let mut inst = hog.instantiate().await.unwrap();
    let err = inst
        .spawn(&request(&[("FIXTURE_WHEN", "spawn")]))
        .await
        .unwrap_err();
    assert!(err.is_trap(), "{err}");
    assert!(err.detail().contains("memory cap of 16 MiB"), "{err}");
    stdio_still_works(&host).await;
}

#[tokio::test]
async fn the_sandbox_grants_no_files_environment_or_sockets() {
    // A listener the adapter would reach if sockets were allowed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let host = host();
    let escape = host.load_file(&fixture("fixture-escape")).await.unwrap();
    let mut inst = escape.instantiate().await.unwrap();
    let err = inst
        .spawn(&request(&[("FIXTURE_CONNECT", addr.as_str())]))
        .await
        .unwrap_err();
    let detail = err.detail();
    assert!(detail.contains("sandbox held"), "{detail}");
    assert!(detail.contains("file: denied"), "{detail}");
    assert!(detail.contains("dir: denied"), "{detail}");
    assert!(detail.contains("env: empty"), "{detail}");
    assert!(detail.contains("socket: denied"), "{detail}");
    stdio_still_works(&host).await;
}

#[tokio::test]
async fn an_undeclared_program_is_refused_by_the_policy() {
    let host = host();
    let undeclared = host
        .load_file(&fixture("fixture-undeclared"))
        .await
        .unwrap();
    let mut inst = undeclared.instantiate().await.unwrap();
    let spec = inst.spawn(&request(&[])).await.unwrap();
    let refusal = undeclared
        .check_spawn(&spec, &policy::OperatorPrograms::default())
        .unwrap_err();
    assert_eq!(refusal.reason(), "policy_refused");
    assert!(refusal.detail().contains("fixture-undeclared@0.1.0"));
    assert!(refusal.detail().contains("/bin/sh"));
}

#[tokio::test]
async fn a_component_of_another_wit_version_is_refused_clearly() {
    let host = host();
    let err = host
        .load_file(&fixture("fixture-wrong-wit"))
        .await
        .unwrap_err();
    assert!(err.0.contains("amarre:adapter@9.0.0"), "{err}");
    assert!(err.0.contains("amarre:adapter@0.1.0"), "{err}");
    stdio_still_works(&host).await;
}

#[tokio::test]
async fn garbage_bytes_are_refused_with_the_file_name() {
    let dir = std::env::temp_dir().join(format!("amarre-garbage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("garbage.wasm");
    std::fs::write(&path, b"not a component").unwrap();
    let err = host().load_file(&path).await.unwrap_err();
    assert!(err.0.contains("garbage.wasm"), "{err}");
    let missing = host()
        .load_file(&dir.join("missing.wasm"))
        .await
        .unwrap_err();
    assert!(missing.0.contains("missing.wasm"), "{missing}");
    std::fs::remove_dir_all(&dir).ok();
}

fn adapters_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../adapters-wasm")
}

/// The file name under target/adapters/ of the adapter built from `dir`:
/// `[package.metadata.amarre-adapter] name` of a crate, or
/// `amarre.adapter` of a JavaScript package.
fn built_name(dir: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) {
        let doc: toml::Table = text.parse().expect("a valid Cargo.toml");
        return doc["package"]
            .get("metadata")
            .and_then(|m| m.get("amarre-adapter"))
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .map(str::to_owned);
    }
    let text = std::fs::read_to_string(dir.join("package.json")).ok()?;
    let doc: serde_json::Value = serde_json::from_str(&text).expect("a valid package.json");
    doc["amarre"]["adapter"].as_str().map(str::to_owned)
}

/// Every adapter folder with `transcripts/` (templates included) passes
/// them through the host, whatever language it is written in. The
/// JavaScript ones are built by scripts/build-js-adapters.
#[tokio::test]
async fn every_adapter_passes_its_golden_transcripts() {
    // The compiled-component cache the end-to-end tests share: the
    // JavaScript components take seconds to compile.
    let cache = PathBuf::from(builtin::BUILT_ADAPTERS_DIR).join("../test-component-cache");
    let host = AdapterHost::with_cache(AdapterLimits::default(), Some(&cache)).expect("host");
    let root = adapters_root();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for parent in [root.clone(), root.join("templates")] {
        for entry in std::fs::read_dir(parent).unwrap().flatten() {
            if entry.path().join("transcripts").is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    let mut ran = 0;
    for dir in dirs {
        let name = built_name(&dir)
            .unwrap_or_else(|| panic!("{}: no adapter name in its manifest", dir.display()));
        let file = fixture(&name);
        if !file.is_file() && dir.join("package.json").is_file() {
            panic!(
                "{} is not built: run scripts/build-js-adapters (scripts/test does)",
                file.display()
            );
        }
        let dir = dir.join("transcripts");
        let adapter = host
            .load_file(&file)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let reports = transcript::run_dir(&adapter, &dir).await.unwrap();
        for r in &reports {
            assert!(r.passed(), "{name}:\n{r}");
            ran += 1;
        }
    }
    assert!(ran >= 10, "expected transcripts to run, ran {ran}");
}

#[tokio::test]
async fn a_transcript_reports_every_difference_with_its_line() {
    let host = host();
    let stdio = host.load_builtin("stdio").await.unwrap();
    let text = r#"{"spawn": {"command": "cat"}}
{"expect_spawn": {"command": "dog", "passthroughFromAgent": true}}
{"client": {"a": 1}}
{"to_agent": {"a": 2}}
{"agent": {"b": 1}}
{"to_agent": {"b": 1}}
{"agent": {"c": 1}}
{"client": {"d": 1}}
{"to_agent": {"d": 1}}
{"to_client": {"e": 1}}
{"client": {"id": "x1"}}
{"to_agent": {"id": "$first"}}
{"client": {"id": "x2"}}
{"to_agent": {"id": "$first"}}
not json
{"bogus": 1}
"#;
    let report = transcript::run(&stdio, "bad.jsonl", text).await;
    let lines: Vec<usize> = report.differences.iter().map(|d| d.line).collect();
    assert_eq!(lines, vec![2, 4, 6, 7, 10, 14, 15, 16], "{report}");
    let all = report.to_string();
    assert!(all.contains("$.command: expected \"dog\""), "{all}");
    assert!(all.contains("$.a: expected 2, got 1"), "{all}");
    assert!(
        all.contains("unexpected output: to_client {\"c\":1}"),
        "{all}"
    );
    assert!(
        all.contains("expected $first = \"x1\", got \"x2\""),
        "{all}"
    );
    assert!(all.contains("unknown step `bogus`"), "{all}");
}

#[tokio::test]
async fn a_transcript_checks_adapter_errors() {
    let host = host();
    let stdio = host.load_builtin("stdio").await.unwrap();
    // stdio with no command: spawn fails, reported at the spawn line.
    let report = transcript::run(&stdio, "x", "{\"spawn\": {}}\n").await;
    assert_eq!(report.differences.len(), 1, "{report}");
    assert!(
        report.differences[0].message.contains("spawn failed"),
        "{report}"
    );
    // An `error` step may expect it instead.
    let expected =
        "{\"spawn\": {}}\n{\"error\": {\"kind\": \"unsupported\", \"contains\": \"command\"}}\n";
    let report = transcript::run(&stdio, "x", expected).await;
    assert!(report.passed(), "{report}");
}

fn cache_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "amarre-cache-{tag}-{}-{}",
        std::process::id(),
        crate::util::now_ms()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn cached_host(dir: &std::path::Path) -> AdapterHost {
    AdapterHost::with_cache(AdapterLimits::default(), Some(dir)).expect("adapter host")
}

fn artifacts(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_restarted_host_loads_compiled_components_from_disk() {
    use std::os::unix::fs::PermissionsExt;
    let dir = cache_dir("hit");
    let first = cached_host(&dir);
    first.load_builtin("stdio").await.unwrap();
    assert_eq!((first.compilations(), first.disk_cache_hits()), (1, 0));
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(artifacts(&dir).len(), 1);
    // A new process (host) with the same directory compiles nothing.
    let second = cached_host(&dir);
    let stdio = second.load_builtin("stdio").await.unwrap();
    assert_eq!((second.compilations(), second.disk_cache_hits()), (0, 1));
    let mut inst = stdio.instantiate().await.unwrap();
    assert_eq!(inst.spawn(&request(&[])).await.unwrap().command, "cat");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn corrupt_or_foreign_cache_entries_are_rebuilt_not_trusted() {
    let dir = cache_dir("bad");
    cached_host(&dir).load_builtin("stdio").await.unwrap();
    let artifact = artifacts(&dir).remove(0);
    // Corrupt: one flipped byte no longer matches the checksum.
    let mut bytes = std::fs::read(&artifact).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&artifact, &bytes).unwrap();
    let host = cached_host(&dir);
    host.load_builtin("stdio").await.unwrap();
    assert_eq!(
        (host.compilations(), host.disk_cache_hits()),
        (1, 0),
        "recompiled"
    );
    assert_eq!(
        cached_host(&dir).load_builtin("stdio").await.map(|_| ()),
        Ok(())
    );
    // Foreign: garbage with a matching checksum is still refused by the
    // engine's own checks and rebuilt.
    let garbage = b"not a wasmtime artifact".to_vec();
    std::fs::write(&artifact, &garbage).unwrap();
    let sum: String = Sha256::digest(&garbage)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(artifact.with_extension("sha256"), sum).unwrap();
    let host = cached_host(&dir);
    host.load_builtin("stdio").await.unwrap();
    assert_eq!(
        (host.compilations(), host.disk_cache_hits()),
        (1, 0),
        "rebuilt"
    );
    let host = cached_host(&dir);
    host.load_builtin("stdio").await.unwrap();
    assert_eq!(
        (host.compilations(), host.disk_cache_hits()),
        (0, 1),
        "the rebuilt entry is good"
    );
    std::fs::remove_dir_all(&dir).ok();
}

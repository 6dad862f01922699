//! Durable sessions (PROTOCOL.md 12.3): a state directory keeps sessions
//! and their records across a restart of the daemon, graceful or not.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

async fn daemon(state: &Path) -> Daemon {
    let instances = fake_instance(json!({}));
    let state = state.to_string_lossy().into_owned();
    Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", instances.as_str()),
        ("AMARRE_STATE_DIR", state.as_str()),
    ])
    .await
}

fn seq(v: &Value) -> u64 {
    v["_seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no _seq in {v}"))
}

async fn sigterm(mut d: Daemon) {
    d.signal(libc::SIGTERM);
    let status = d.wait_exit().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
}

async fn sigkill(mut d: Daemon) {
    d.signal(libc::SIGKILL);
    d.wait_exit().await;
}

/// Every text frame until the socket ends (closed, reset or quiet for
/// `quiet`).
async fn drain(ws: &mut Ws, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(quiet, ws.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                out.push(serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}")))
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                return out;
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

fn session_dir(state: &Path, id: &str) -> std::path::PathBuf {
    state.join("sessions").join(id)
}

/// The one segment of a session's log.
fn segments(state: &Path, id: &str) -> Vec<std::path::PathBuf> {
    let mut all: Vec<_> = std::fs::read_dir(session_dir(state, id).join("log"))
        .expect("the session's log directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rec"))
        .collect();
    all.sort();
    all
}

#[tokio::test]
async fn kill_9_during_a_flood_loses_nothing_a_client_saw_and_duplicates_nothing() {
    let tmp = TempDir::new("durable-kill");
    let state = tmp.path().join("state");
    let d = daemon(&state).await;
    let id = d.create(json!({"name": "flood"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = d.ws(&id, "?seq=1").await;
    ws.send_json(
        json!({"type": "fake.flood", "count": 8000, "size": 40, "burst": 100, "pauseMs": 5}),
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 1500 {
        seen.push(ws.recv_json("flood records before the kill").await);
    }
    sigkill(d).await;
    seen.extend(drain(&mut ws, Duration::from_secs(2)).await);
    let last = seq(seen.last().unwrap());
    for (n, r) in seen.iter().enumerate() {
        assert_eq!(seq(r), n as u64 + 1, "first connection: numbers in order");
    }

    let d = daemon(&state).await;
    let (_, s) = d.get(&format!("/sessions/{id}")).await;
    assert_eq!(s["status"], "running", "{s}\nlog:\n{}", d.log());
    assert_eq!(s["name"], "flood");
    // Everything after what the client saw, then the resumed event, with
    // no gap and no number twice.
    let mut after = d.ws(&id, &format!("?since={last}")).await;
    let hello = after.recv_json("hello").await;
    assert_eq!(hello["type"], "amarre.hello");
    assert!(
        hello["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("durable")),
        "{hello}"
    );
    let restored_last = hello["seq"].as_u64().unwrap();
    assert!(restored_last > last, "the resumed event at least follows");
    let mut rest = Vec::new();
    while rest.last().is_none_or(|r: &Value| seq(r) < restored_last) {
        rest.push(after.recv_json("replay after the restart").await);
    }
    assert!(
        rest.iter().all(|r| r["type"] != "amarre.replay_gap"),
        "no gap: {:?}",
        rest.first()
    );
    for (n, r) in rest.iter().enumerate() {
        assert_eq!(seq(r), last + 1 + n as u64, "replay continues the numbers");
    }
    let resumed = rest.last().unwrap();
    assert_eq!(resumed["type"], "amarre.session_event", "{resumed}");
    assert_eq!(resumed["event"], "resumed");
    assert_eq!(resumed["resumed"], false, "stdio cannot resume its agent");
    assert_eq!(resumed["interrupted"], false);
    // The flood records come in order, each once.
    let floods: Vec<u64> = seen
        .iter()
        .chain(rest.iter())
        .filter(|r| r["type"] == "fake.flood" && r.get("i").is_some())
        .map(|r| r["i"].as_u64().unwrap())
        .collect();
    for w in floods.windows(2) {
        assert_eq!(w[1], w[0] + 1, "flood records in order, none twice");
    }
    assert!(
        floods.len() < 8000,
        "the kill came in the middle of the flood ({} records)",
        floods.len()
    );
    // A client from the very start gets the same records the first one saw.
    let mut again = d.ws(&id, "?since=0").await;
    again.recv_json("hello").await;
    for r in &seen {
        let replayed = again.recv_json("replay from the start").await;
        assert_eq!(&replayed, r, "the same record under the same number");
    }
    // The relay works after the restart, numbers continuing.
    after.send_json(json!({"n": 1})).await;
    let echo = after
        .recv_until("echo after restart", |v| v["n"] == 1)
        .await;
    assert_eq!(seq(&echo), restored_last + 1);
}

#[tokio::test]
async fn a_graceful_restart_keeps_running_and_crashed_sessions_and_forgets_deleted_ones() {
    let tmp = TempDir::new("durable-graceful");
    let state = tmp.path().join("state");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let d = daemon(&state).await;
    let kept = d
        .create(json!({"name": "kept", "cwd": work, "env": {"A_VAR": "1"}}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let crashed = d.create(json!({"name": "crashed"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = d.create(json!({"name": "deleted"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = d.ws(&kept, "?seq=1").await;
    ws.send_json(json!({"n": 1})).await;
    assert_eq!(seq(&ws.recv_json("echo").await), 1);
    // A question left pending: the restart interrupts it.
    ws.send_json(json!({"type": "fake.ask", "id": "q1", "method": "confirm", "title": "ok?"}))
        .await;
    let asked = ws
        .recv_until("the question", |v| v["type"] == "extension_ui_request")
        .await;
    let asked_seq = seq(&asked);
    let mut c = d.ws(&crashed, "").await;
    c.send_json(json!({"type": "fake.exit", "code": 3})).await;
    d.wait_summary(&crashed, "crashed", |s| s["status"] == "crashed")
        .await;
    let (status, _) = d.delete(&format!("/sessions/{deleted}")).await;
    assert_eq!(status, 204);
    assert!(
        !session_dir(&state, &deleted).exists(),
        "DELETE forgets for good"
    );
    sigterm(d).await;

    // Private files.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&session_dir(&state, &kept)), 0o700);
    assert_eq!(mode(&session_dir(&state, &kept).join("meta.json")), 0o600);
    for seg in segments(&state, &kept) {
        assert_eq!(mode(&seg), 0o600);
    }

    let d = daemon(&state).await;
    let (_, list) = d.get("/sessions").await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![kept.as_str(), crashed.as_str()], "{list}");
    let (_, s) = d.get(&format!("/sessions/{kept}")).await;
    assert_eq!(s["status"], "running");
    assert_eq!(s["name"], "kept");
    assert_eq!(s["cwd"], json!(work));
    let (_, s) = d.get(&format!("/sessions/{crashed}")).await;
    assert_eq!(s["status"], "crashed");
    assert_eq!(s["exitCode"], 3);

    let mut ws = d.ws(&kept, &format!("?since={asked_seq}")).await;
    ws.recv_json("hello").await;
    let resumed = ws.recv_json("the resumed event").await;
    assert_eq!(seq(&resumed), asked_seq + 1);
    assert_eq!(resumed["event"], "resumed");
    assert_eq!(resumed["interrupted"], true, "a question was pending");
    let resolved = ws.recv_json("the question withdrawn").await;
    assert_eq!(resolved["type"], "amarre.question_resolved");
    assert_eq!(resolved["id"], "q1");
    assert_eq!(resolved["reason"], "cancelled");
    // Same spawn options: the env reaches the respawned agent.
    ws.send_json(json!({"type": "fake.env"})).await;
    let env = ws
        .recv_until("the agent's env", |v| v["type"] == "fake.env")
        .await;
    assert_eq!(env["env"]["A_VAR"], "1", "{env}");
    assert_eq!(env["cwd"], json!(work));
    // A crashed one is restarted as before, its numbers continuing.
    let (status, _) = d.post(&format!("/sessions/{crashed}/restart"), "").await;
    assert_eq!(status, 200);
    // Its crash event was logged before it reached the clients.
    let mut c = d.ws(&crashed, "?since=0").await;
    c.recv_json("hello").await;
    let event = c
        .recv_until("the crash from before the restart", |v| {
            v["type"] == "amarre.session_event"
        })
        .await;
    assert_eq!(
        (&event["event"], &event["exitCode"]),
        (&json!("crashed"), &json!(3))
    );
}

#[tokio::test]
async fn a_respawn_that_fails_comes_back_crashed_with_resume_failed() {
    let tmp = TempDir::new("durable-fail");
    let state = tmp.path().join("state");
    let work = tmp.path().join("gone");
    std::fs::create_dir_all(&work).unwrap();
    let d = daemon(&state).await;
    let id = d.create(json!({"cwd": work})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = d.ws(&id, "?seq=1").await;
    ws.send_json(json!({"n": 1})).await;
    ws.recv_json("echo").await;
    sigterm(d).await;
    std::fs::remove_dir_all(&work).unwrap();

    let d = daemon(&state).await;
    let (_, s) = d.get(&format!("/sessions/{id}")).await;
    assert_eq!(s["status"], "crashed", "{s}");
    let (status, _) = d.ws_refused(&format!("/sessions/{id}"), &[]).await;
    assert_eq!(status, 409);
    // Restarted like any crashed session once its cwd is back: its stream
    // recorded why it came back crashed.
    std::fs::create_dir_all(&work).unwrap();
    let (status, body) = d.post(&format!("/sessions/{id}/restart"), "").await;
    assert_eq!(status, 200, "{body}");
    let mut ws = d.ws(&id, "?since=1").await;
    ws.recv_json("hello").await;
    let event = ws.recv_json("the crash at start").await;
    assert_eq!(seq(&event), 2);
    assert_eq!(event["type"], "amarre.session_event");
    assert_eq!(event["event"], "crashed");
    assert_eq!(event["reason"], "resume_failed");
    assert_eq!(event["exitCode"], Value::Null);
    assert!(
        event["detail"].as_str().is_some_and(|d| d.contains("cwd")),
        "{event}"
    );
}

#[tokio::test]
async fn a_corrupt_metadata_file_and_a_truncated_log_spare_the_rest() {
    let tmp = TempDir::new("durable-corrupt");
    let state = tmp.path().join("state");
    let d = daemon(&state).await;
    let bad = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let cut = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let mut ws = d.ws(&cut, "?seq=1").await;
    for n in 1..=5 {
        ws.send_json(json!({"n": n})).await;
        ws.recv_json("echo").await;
    }
    sigterm(d).await;
    std::fs::write(session_dir(&state, &bad).join("meta.json"), b"{\"id\": 12").unwrap();
    // Cut the last record in half.
    let seg = segments(&state, &cut).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let d = daemon(&state).await;
    let (status, _) = d.get(&format!("/sessions/{bad}")).await;
    assert_eq!(status, 404);
    let log = d.log();
    assert!(
        log.contains(&format!("{bad}/meta.json")) && log.contains("skipped a stored session"),
        "{log}"
    );
    assert!(
        state
            .join("sessions")
            .join(format!("{bad}.corrupt/meta.json"))
            .exists(),
        "moved aside, not deleted"
    );
    let mut ws = d.ws(&cut, "?since=0").await;
    let hello = ws.recv_json("hello").await;
    // Number 5 was given out before the restart: it is never reused.
    assert_eq!(hello["seq"], 6, "records 1-4 kept, then the resumed event");
    for n in 1..=4 {
        let r = ws.recv_json("replayed record").await;
        assert_eq!((seq(&r), &r["n"]), (n, &json!(n)));
    }
    let resumed = ws.recv_json("resumed").await;
    assert_eq!((seq(&resumed), &resumed["event"]), (6, &json!("resumed")));
}

#[tokio::test]
async fn a_second_daemon_on_the_same_state_directory_is_refused() {
    let tmp = TempDir::new("durable-lock");
    let state = tmp.path().join("state");
    let d = daemon(&state).await;
    let dir = state.to_string_lossy().into_owned();
    let instances = fake_instance(json!({}));
    let (code, stderr) = Daemon::start_failing(
        &[
            ("AMARRE_INSTANCES_JSON", instances.as_str()),
            ("AMARRE_STATE_DIR", dir.as_str()),
        ],
        &[],
    )
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains(&dir), "{stderr}");
    assert!(
        stderr.contains(&d.pid().to_string()),
        "names the pid: {stderr}"
    );
}

#[tokio::test]
async fn an_unusable_state_directory_is_a_clear_start_up_error() {
    let tmp = TempDir::new("durable-unwritable");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let dir = file.join("state").to_string_lossy().into_owned();
    let instances = fake_instance(json!({}));
    let (code, stderr) = Daemon::start_failing(
        &[
            ("AMARRE_INSTANCES_JSON", instances.as_str()),
            ("AMARRE_STATE_DIR", dir.as_str()),
        ],
        &[],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("AMARRE_STATE_DIR") && stderr.contains(&dir),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_full_disk_during_a_run_stops_persistence_and_the_relay_goes_on() {
    let tmp = TempDir::new("durable-full");
    let state = tmp.path().join("state");
    let d = daemon(&state).await;
    let id = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let mut ws = d.ws(&id, "?seq=1").await;
    ws.send_json(json!({"n": 1})).await;
    ws.recv_json("echo").await;
    sigterm(d).await;
    // The next start appends from number 2 on, into a segment that is a
    // device always full.
    let next = session_dir(&state, &id)
        .join("log")
        .join(format!("{:020}.rec", 2));
    std::os::unix::fs::symlink("/dev/full", &next).unwrap();

    let d = daemon(&state).await;
    d.wait_log("persistence stopped").await;
    assert_eq!(
        d.log().matches("persistence stopped").count(),
        1,
        "one log line"
    );
    let mut ws = d.ws(&id, "?seq=1").await;
    for n in 0..50 {
        ws.send_json(json!({"n": n})).await;
        let r = ws
            .recv_until("echo with a full disk", |v| v.get("n").is_some())
            .await;
        assert_eq!(r["n"], n);
    }
    let (_, s) = d.get(&format!("/sessions/{id}")).await;
    assert_eq!(s["status"], "running");
    assert_eq!(d.log().matches("persistence stopped").count(), 1);
}

/// Starts a daemon on `state` with one instance `default`.
async fn agent_daemon(state: &Path, instance: &Value) -> Daemon {
    let instances = json!([instance]).to_string();
    let state = state.to_string_lossy().into_owned();
    Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", instances.as_str()),
        ("AMARRE_STATE_DIR", state.as_str()),
        ("AMARRE_KILL_GRACE_MS", "3000"),
    ])
    .await
}

/// One prompt answered with text, to its `agent_end`.
async fn turn(ws: &mut Ws, id: &str, message: &str) -> Vec<Value> {
    ws.send_json(json!({"type": "prompt", "id": id, "message": message}))
        .await;
    ws.until_agent_end(&format!("the end of the turn {id}"))
        .await
}

/// Whether the latest model request carries `word` in an earlier message
/// (the conversation before the restart).
fn last_request_remembers(llm: &amarre_e2e::fake_llm::FakeLlm, word: &str) -> bool {
    let requests = llm.requests();
    let Some(last) = requests.last() else {
        return false;
    };
    let messages = last["messages"].as_array().cloned().unwrap_or_default();
    messages.len() > 1
        && messages[..messages.len() - 1]
            .iter()
            .any(|m| m.to_string().contains(word))
}

/// A restart in the middle of a conversation with a real agent: the
/// session comes back resumed and the next prompt's request to the model
/// carries the turns from before the restart.
async fn the_conversation_survives_a_restart(
    instance: Value,
    state: &Path,
    llm: &amarre_e2e::fake_llm::FakeLlm,
    work: &Path,
) {
    let d = agent_daemon(state, &instance).await;
    let id = d.create(json!({"cwd": work})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = d.ws(&id, "?seq=1").await;
    let seen = turn(&mut ws, "p1", "remember the word PAPAYA").await;
    let last = seq(seen.last().unwrap());
    drop(ws);
    sigterm(d).await;

    let d = agent_daemon(state, &instance).await;
    let (_, s) = d.get(&format!("/sessions/{id}")).await;
    assert_eq!(s["status"], "running", "{s}\nlog:\n{}", d.log());
    let mut ws = d.ws(&id, &format!("?since={last}")).await;
    ws.recv_json("hello").await;
    let resumed = ws.recv_json("the resumed event").await;
    assert_eq!(seq(&resumed), last + 1);
    assert_eq!(resumed["event"], "resumed", "{resumed}");
    assert_eq!(resumed["resumed"], true, "{resumed}\nlog:\n{}", d.log());
    assert_eq!(resumed["interrupted"], false);
    let before = llm.requests().len();
    turn(&mut ws, "p2", "which word was it").await;
    assert!(
        llm.requests().len() > before,
        "a new request reached the model"
    );
    assert!(
        last_request_remembers(llm, "PAPAYA"),
        "the request after the restart lacks the earlier turn: {}",
        llm.requests().last().unwrap()
    );
}

#[tokio::test]
async fn a_claude_conversation_continues_after_a_restart() {
    let _serial = agent_lock().await;
    let llm = amarre_e2e::fake_llm::FakeLlm::start().await;
    let home = TempDir::new("durable-claude-home");
    let tmp = TempDir::new("durable-claude");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let instance = json!({"id": "default", "agent": "claude-code", "env": {
        "CLAUDE_BIN": agent_cli("claude"),
        "ANTHROPIC_BASE_URL": llm.url,
        "ANTHROPIC_API_KEY": "dummy",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "HOME": home.path(),
    }});
    the_conversation_survives_a_restart(instance, &tmp.path().join("state"), &llm, &work).await;
}

#[tokio::test]
async fn a_pi_conversation_continues_after_a_restart() {
    let _serial = agent_lock().await;
    let pi = OfflinePi::start().await;
    let tmp = TempDir::new("durable-pi");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut env = pi.env();
    env["PI_BIN"] = json!(agent_cli("pi"));
    // pi keeps its session file this time (no `--no-session`).
    let args: Vec<&str> = PI_OFFLINE_ARGS
        .iter()
        .copied()
        .filter(|a| *a != "--no-session")
        .collect();
    let instance = json!({"id": "default", "agent": "pi", "env": env, "args": args});
    let state = tmp.path().join("state");
    the_conversation_survives_a_restart(instance, &state, &pi.llm, &work).await;
}

#[test]
fn the_shipped_unit_module_and_run_script_set_a_private_state_directory() {
    let repo = |p: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p);
    let unit = std::fs::read_to_string(repo("server/deploy/amarre.service")).unwrap();
    for line in [
        "StateDirectory=amarre",
        "StateDirectoryMode=0700",
        "Environment=AMARRE_STATE_DIR=%S/amarre",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing from the unit"
        );
    }
    let module = std::fs::read_to_string(repo("server/deploy/nixos-module.nix")).unwrap();
    assert!(module.contains("StateDirectoryMode = \"0700\""));
    assert!(module.contains("AMARRE_STATE_DIR = \"/var/lib/amarre\""));
    let run = std::fs::read_to_string(repo("scripts/run")).unwrap();
    assert!(
        run.contains(
            "AMARRE_STATE_DIR=\"${AMARRE_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/amarre}\""
        ),
        "scripts/run sets the state directory"
    );
}

#[tokio::test]
async fn the_session_cap_holds_for_restored_sessions() {
    let tmp = TempDir::new("durable-cap");
    let state = tmp.path().join("state");
    let d = daemon(&state).await;
    let first = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let second = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    sigterm(d).await;
    let instances = fake_instance(json!({}));
    let dir = state.to_string_lossy().into_owned();
    let d = Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", instances.as_str()),
        ("AMARRE_STATE_DIR", dir.as_str()),
        ("AMARRE_MAX_SESSIONS", "1"),
    ])
    .await;
    let (_, a) = d.get(&format!("/sessions/{first}")).await;
    let (_, b) = d.get(&format!("/sessions/{second}")).await;
    assert_eq!(a["status"], "running", "the oldest first");
    assert_eq!(b["status"], "crashed", "over the cap: {b}");
    let (status, body) = d.post("/sessions", "{}").await;
    assert_eq!(status, 429, "{body}");
}

/// Speaks just enough ACP: `initialize` (offering `loadSession`), then
/// `session/new` (answered `sessionId: s-durable`) or a `session/load` of
/// it, then one prompt answered with a text chunk saying which it was; then
/// it stays until its stdin closes.
const ACP_AGENT: &str = r#"
read -r a
echo '{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"agentCapabilities":{"loadSession":true},"agentInfo":{"name":"sh-agent"}}}'
read -r b
case "$b" in
  *'"method":"session/new"'*) seen="new" ;;
  *'"method":"session/load"'*'"sessionId":"s-durable"'*) seen="loaded" ;;
  *) echo "unexpected: $b" >&2; exit 4;;
esac
echo '{"jsonrpc":"2.0","id":1,"result":{"sessionId":"s-durable"}}'
read -r c
echo "{\"jsonrpc\":\"2.0\",\"method\":\"session/update\",\"params\":{\"sessionId\":\"s-durable\",\"update\":{\"sessionUpdate\":\"agent_message_chunk\",\"content\":{\"type\":\"text\",\"text\":\"$seen\"}}}}"
echo '{"jsonrpc":"2.0","id":2,"result":{"stopReason":"end_turn"}}'
cat >/dev/null
"#;

#[tokio::test]
async fn an_acp_session_is_loaded_again_after_a_restart() {
    let tmp = TempDir::new("durable-acp");
    let state = tmp.path().join("state");
    let instance =
        json!({"id": "default", "agent": "acp", "command": "sh", "args": ["-c", ACP_AGENT]});
    let said = |seen: &[Value]| -> String {
        seen.iter()
            .filter(|v| v["type"] == "message_update")
            .filter_map(|v| v["assistantMessageEvent"]["delta"].as_str())
            .collect()
    };
    let d = agent_daemon(&state, &instance).await;
    let id = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let mut ws = d.ws(&id, "?seq=1").await;
    let seen = turn(&mut ws, "p1", "hi").await;
    assert_eq!(said(&seen), "new");
    let last = seq(seen.last().unwrap());
    sigterm(d).await;

    let d = agent_daemon(&state, &instance).await;
    let mut ws = d.ws(&id, &format!("?since={last}")).await;
    ws.recv_json("hello").await;
    let resumed = ws.recv_json("the resumed event").await;
    assert_eq!(
        (&resumed["event"], &resumed["resumed"]),
        (&json!("resumed"), &json!(true)),
        "{resumed}"
    );
    let seen = turn(&mut ws, "p2", "hi again").await;
    assert_eq!(said(&seen), "loaded", "log:\n{}", d.log());
}

/// A durable daemon's environment whose agent lives until SIGKILL (it
/// ignores SIGTERM and the end of its input), `grace_ms` after SIGTERM.
fn stubborn_agent(state: &Path, grace_ms: &str) -> [(&'static str, String); 3] {
    [
        (
            "AMARRE_INSTANCES_JSON",
            fake_instance(json!({"FAKE_IGNORE_TERM": "1", "FAKE_EXIT_ON_EOF": "0"})),
        ),
        ("AMARRE_STATE_DIR", state.to_string_lossy().into_owned()),
        ("AMARRE_KILL_GRACE_MS", grace_ms.to_owned()),
    ]
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn a_session_being_deleted_never_comes_back_after_a_kill_9() {
    let tmp = TempDir::new("durable-delete-kill");
    let state = tmp.path().join("state");
    // DELETE waits out the kill grace.
    let owned = stubborn_agent(&state, "10000");
    let env = borrowed(&owned);
    let d = Daemon::start(&env).await;
    let id = d.create(json!({"name": "going"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let keep = d.create(json!({"name": "staying"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = d.ws(&id, "").await;
    let url = format!("{}/sessions/{id}", d.url);
    let delete = tokio::spawn(async move {
        let _ = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .delete(url)
            .send()
            .await;
    });
    // Its clients are closed at once; the daemon is killed while it waits
    // for the agent to end.
    let (closed, _) = ws.closed("the close for the delete").await;
    assert_eq!(closed.code, Some(1000));
    sigkill(d).await;
    delete.abort();
    let d = Daemon::start(&env).await;
    let (_, list) = d.get("/sessions").await;
    let ids: Vec<&str> = list
        .as_array()
        .expect("a session list")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert!(!ids.contains(&id.as_str()), "deleted, yet back: {list}");
    assert!(
        ids.contains(&keep.as_str()),
        "the other session is kept: {list}"
    );
}

#[tokio::test]
async fn a_session_deleted_while_the_daemon_shuts_down_never_comes_back() {
    let tmp = TempDir::new("durable-delete-term");
    let state = tmp.path().join("state");
    // The shutdown waits out the kill grace with the session already saved
    // for the next start.
    let owned = stubborn_agent(&state, "3000");
    let env = borrowed(&owned);
    let mut d = Daemon::start(&env).await;
    let id = d.create(json!({"name": "going"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = d.ws(&id, "").await;
    d.signal(libc::SIGTERM);
    // Its clients are closed when the shutdown reaches it; the daemon
    // still answers while it waits for the agent to end.
    let (closed, _) = ws.closed("the close for the shutdown").await;
    assert_eq!(closed.code, Some(1001));
    let deleted = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .delete(format!("{}/sessions/{id}", d.url))
        .send()
        .await
        .expect("the daemon answers during its shutdown");
    assert_eq!(deleted.status().as_u16(), 204, "log:\n{}", d.log());
    let status = d.wait_exit().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
    let d = Daemon::start(&env).await;
    let (_, list) = d.get("/sessions").await;
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(0),
        "answered 204, so it must not come back: {list}"
    );
}

#[tokio::test]
async fn an_acp_agent_without_load_session_starts_fresh_and_the_event_says_so() {
    let tmp = TempDir::new("durable-acp-fresh");
    let state = tmp.path().join("state");
    // No `loadSession`, and each session/new gets an id of its own.
    let agent = ACP_AGENT
        .replace(r#""loadSession":true"#, r#""loadSession":false"#)
        .replace(
            r#"echo '{"jsonrpc":"2.0","id":1,"result":{"sessionId":"s-durable"}}'"#,
            r#"echo "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"sessionId\":\"s-$$\"}}""#,
        );
    assert_ne!(agent, ACP_AGENT);
    let instance = json!({"id": "default", "agent": "acp", "command": "sh", "args": ["-c", agent]});
    let d = agent_daemon(&state, &instance).await;
    let id = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let mut ws = d.ws(&id, "?seq=1").await;
    let seen = turn(&mut ws, "p1", "hi").await;
    let last = seq(seen.last().unwrap());
    sigterm(d).await;

    let d = agent_daemon(&state, &instance).await;
    let mut ws = d.ws(&id, &format!("?since={last}")).await;
    ws.recv_json("hello").await;
    let resumed = ws.recv_json("the resumed event").await;
    assert_eq!(
        (&resumed["event"], &resumed["resumed"]),
        (&json!("resumed"), &json!(false)),
        "started fresh: {resumed}\nlog:\n{}",
        d.log()
    );
    assert_eq!(
        seq(&resumed),
        last + 1,
        "the first record after the restart"
    );
    let seen = turn(&mut ws, "p2", "hi again").await;
    assert!(
        seen.iter().all(|v| v["event"] != "resumed"),
        "the event comes once: {seen:?}"
    );
}

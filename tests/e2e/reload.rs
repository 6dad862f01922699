//! Hot reload of adapter components (docs/hot-reload.md): the file watcher,
//! `POST /instances/{id}/reload`, SIGHUP, broken components, live sessions
//! moving over with their state, and the compiled-component cache.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// The same component with a custom section appended: valid, and a
/// different file (a new content hash), as a rebuild would be.
fn variant(original: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"amarre-test";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = original.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// Writes `bytes` to `path` the way build tools do: a new file renamed
/// over the old one.
fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Setup {
    daemon: Daemon,
    file: PathBuf,
    original: Vec<u8>,
    dir: TempDir,
}

async fn setup(fixture: &str, extra: &[(&str, &str)]) -> Setup {
    let dir = TempDir::new("reload");
    let file = dir.path().join("adapter.wasm");
    let original = std::fs::read(adapter_file(fixture)).unwrap();
    std::fs::write(&file, &original).unwrap();
    let instances =
        json!([{"id": "default", "agentPath": file, "command": fake_agent()}]).to_string();
    let mut env = vec![
        ("AMARRE_INSTANCES_JSON", instances.as_str()),
        ("AMARRE_RELOAD_DEBOUNCE_MS", "50"),
    ];
    env.extend_from_slice(extra);
    let daemon = Daemon::start(&env).await;
    Setup {
        daemon,
        file,
        original,
        dir,
    }
}

async fn listing(d: &Daemon) -> Value {
    let (st, list) = d.get("/adapters").await;
    assert_eq!(st, 200);
    list[0].clone()
}

async fn wait_hash(d: &Daemon, what: &str, pred: impl Fn(&str) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let entry = listing(d).await;
        if pred(entry["hash"].as_str().unwrap()) {
            return entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never: {what}; listing {entry}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn state(ws: &mut Ws) -> Value {
    ws.send_json(json!({"type": "fixture.state"})).await;
    ws.recv_until("the fixture's state", |v| v["type"] == "fixture.state")
        .await
}

#[tokio::test]
async fn a_replaced_file_is_picked_up_and_live_sessions_move_with_their_state() {
    let s = setup("fixture-handover", &[]).await;
    let before = listing(&s.daemon).await;
    assert_eq!(before["name"], "fixture-handover");
    assert_eq!(before["witVersion"], "0.1.0");
    assert_eq!(before["builtin"], false);
    assert_eq!(before["source"], s.file.to_str().unwrap());
    assert_eq!(before["capabilities"], json!(["state-handover"]));
    assert_eq!(before["lastReloadError"], Value::Null);
    let id = s.daemon.create(json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = s.daemon.ws(&id, "").await;
    for n in 0..3 {
        ws.send_json(json!({"n": n})).await;
        ws.recv_json("echo").await;
    }
    assert_eq!(
        state(&mut ws).await,
        json!({"type": "fixture.state", "seen": 3, "resumed": 0})
    );

    replace_file(&s.file, &variant(&s.original, "v2"));
    let after = wait_hash(&s.daemon, "the watcher reloads the new file", |h| {
        h != before["hash"]
    })
    .await;
    assert_eq!(after["reloads"], 1);
    // The live session moves at its next record, keeping its count.
    ws.send_json(json!({"n": 3})).await;
    assert_eq!(ws.recv_json("echo after the swap").await, json!({"n": 3}));
    assert_eq!(
        state(&mut ws).await,
        json!({"type": "fixture.state", "seen": 4, "resumed": 1})
    );
    let entry = listing(&s.daemon).await;
    assert_eq!(entry["sessions"], 1, "{entry}");
    assert_eq!(
        entry["versions"].as_array().unwrap().len(),
        1,
        "nothing left on the old version: {entry}"
    );
    // New sessions use the new version from the start.
    let id2 = s.daemon.create(json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws2 = s.daemon.ws(&id2, "").await;
    assert_eq!(
        state(&mut ws2).await,
        json!({"type": "fixture.state", "seen": 0, "resumed": 0})
    );
    assert_eq!(listing(&s.daemon).await["sessions"], 2);
}

#[tokio::test]
async fn a_broken_component_is_rejected_and_the_old_version_keeps_serving() {
    let s = setup("fixture-handover", &[("AMARRE_RELOAD_WATCH", "0")]).await;
    let before = listing(&s.daemon).await;
    for (bytes, needle) in [
        (b"definitely not wasm".to_vec(), "failed to compile"),
        (
            std::fs::read(adapter_file("fixture-wrong-wit")).unwrap(),
            "amarre:adapter@9.0.0",
        ),
    ] {
        replace_file(&s.file, &bytes);
        let (st, body) = s.daemon.post("/instances/default/reload", "").await;
        assert_eq!(st, 422, "{body}");
        assert_eq!(body["error"], "reload_failed");
        assert!(body["detail"].as_str().unwrap().contains(needle), "{body}");
        let entry = listing(&s.daemon).await;
        assert_eq!(
            entry["hash"], before["hash"],
            "the old version still serves"
        );
        assert!(
            entry["lastReloadError"].as_str().unwrap().contains(needle),
            "{entry}"
        );
        let id = s.daemon.create(json!({})).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut ws = s.daemon.ws(&id, "").await;
        ws.send_json(json!({"ok": 1})).await;
        assert_eq!(
            ws.recv_json("the old version relays").await,
            json!({"ok": 1})
        );
    }
    s.daemon.wait_log("adapter reload failed").await;
    // A good file again: swapped, and the error is cleared.
    replace_file(&s.file, &variant(&s.original, "fixed"));
    let (st, entry) = s.daemon.post("/instances/default/reload", "").await;
    assert_eq!(st, 200, "{entry}");
    assert_ne!(entry["hash"], before["hash"]);
    assert_eq!(entry["lastReloadError"], Value::Null);
}

#[tokio::test]
async fn reload_answers_200_when_nothing_changed_and_only_rereads_its_own_path() {
    let s = setup("fixture-handover", &[("AMARRE_RELOAD_WATCH", "0")]).await;
    let before = listing(&s.daemon).await;
    // A path in the body is ignored.
    let other = adapter_file("fixture-trap");
    let (st, entry) = s
        .daemon
        .post(
            "/instances/default/reload",
            &json!({"path": other, "agentPath": other}).to_string(),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(entry["hash"], before["hash"]);
    assert_eq!(entry["name"], "fixture-handover");
    assert_eq!(entry["reloads"], 0);
    let (st, body) = s.daemon.post("/instances/nope/reload", "").await;
    assert_eq!(
        (st, body),
        (
            404,
            json!({"error": "unknown_instance", "instanceId": "nope"})
        )
    );
    assert_eq!(s.daemon.get("/instances/default/reload").await.0, 405);
}

#[tokio::test]
async fn reloading_repeatedly_under_a_flood_loses_and_reorders_nothing() {
    // Generous client queues and adapter call budget: this test is about
    // reloads, and neither its debug-build clients nor the adapter's calls
    // may be cut short (a slow reader closed, a call over 50 ms trapped)
    // while the cores are busy with other tests.
    let s = setup(
        "fixture-handover",
        &[
            ("AMARRE_RELOAD_WATCH", "0"),
            ("AMARRE_ADAPTER_CALL_MS", "5000"),
            ("AMARRE_CLIENT_QUEUE_RECORDS", "100000"),
            ("AMARRE_CLIENT_QUEUE_BYTES", "67108864"),
        ],
    )
    .await;
    let count = 20_000u64;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let id = s.daemon.create(json!({})).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        sessions.push(s.daemon.ws(&id, "").await);
    }
    for ws in &mut sessions {
        // About 400 ms of records: the eight reloads below overlap them.
        ws.send_json(
            json!({"type": "fake.flood", "count": count, "size": 50, "burst": 100, "pauseMs": 2}),
        )
        .await;
    }
    let readers: Vec<_> = sessions
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                for i in 0..count {
                    let v = ws.recv_json("flood record during reloads").await;
                    assert_eq!(v["i"], i, "in order, none lost: {v}");
                }
                ws
            })
        })
        .collect();
    // Swap versions back and forth while the records flow.
    for round in 0..8 {
        replace_file(&s.file, &variant(&s.original, &format!("round-{round}")));
        let (st, body) = s.daemon.post("/instances/default/reload", "").await;
        assert_eq!(st, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for r in readers {
        // A session moves at its next record: this query is one, after the
        // last reload.
        let mut ws = r.await.expect("reader");
        let st = state(&mut ws).await;
        assert_eq!(
            st["seen"], count,
            "the count travelled with every hand-over: {st}"
        );
        assert!(
            st["resumed"].as_u64().unwrap() >= 2,
            "moved mid-flood, more than once: {st}"
        );
    }
    let entry = listing(&s.daemon).await;
    assert_eq!(entry["reloads"], 8);
    assert_eq!(entry["sessions"], 3, "all on the newest version: {entry}");
}

#[tokio::test]
async fn without_state_handover_a_live_session_finishes_on_its_version() {
    let s = setup("fixture-trap", &[("AMARRE_RELOAD_WATCH", "0")]).await;
    let old = listing(&s.daemon).await["hash"].clone();
    let id = s.daemon.create(json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = s.daemon.ws(&id, "").await;
    replace_file(&s.file, &variant(&s.original, "v2"));
    let (st, entry) = s.daemon.post("/instances/default/reload", "").await;
    assert_eq!(st, 200);
    ws.send_json(json!({"n": 1})).await;
    assert_eq!(ws.recv_json("still relaying").await, json!({"n": 1}));
    let entry2 = listing(&s.daemon).await;
    let versions = entry2["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "{entry2}");
    assert_eq!(
        versions[0]["hash"], old,
        "the session stays on the old version"
    );
    assert_eq!(entry2["sessions"], 0);
    assert_ne!(entry["hash"], old);
    s.daemon.wait_log("stays on its version").await;
}

#[tokio::test]
async fn sighup_reloads_changed_files() {
    let s = setup("fixture-handover", &[("AMARRE_RELOAD_WATCH", "0")]).await;
    let before = listing(&s.daemon).await;
    replace_file(&s.file, &variant(&s.original, "hup"));
    s.daemon.signal(libc::SIGHUP);
    let after = wait_hash(&s.daemon, "SIGHUP reloads the file", |h| {
        h != before["hash"]
    })
    .await;
    assert_eq!(after["reloads"], 1);
    // The daemon is still up and serving.
    s.daemon.create(json!({})).await;
}

#[tokio::test]
async fn a_restarted_daemon_finds_its_components_compiled() {
    let cache = TempDir::new("cache");
    let cache_dir = cache.path().to_str().unwrap().to_owned();
    let s = setup("fixture-handover", &[("AMARRE_CACHE_DIR", &cache_dir)]).await;
    assert_eq!(
        listing(&s.daemon).await["compilations"],
        1,
        "first start compiles"
    );
    let instances =
        json!([{"id": "default", "agentPath": s.file, "command": fake_agent()}]).to_string();
    drop(s.daemon);
    let again = Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", &instances),
        ("AMARRE_CACHE_DIR", &cache_dir),
    ])
    .await;
    assert_eq!(
        listing(&again).await["compilations"],
        0,
        "the restart loads it from the cache"
    );
    // A reload to a version compiled before is a cache hit too.
    replace_file(&s.file, &variant(&s.original, "a"));
    let (_, e) = again.post("/instances/default/reload", "").await;
    assert_eq!(e["compilations"], 1);
    replace_file(&s.file, &s.original);
    let (_, e) = again.post("/instances/default/reload", "").await;
    assert_eq!(
        e["compilations"], 1,
        "back to a known component: no compile"
    );
    drop(s.dir);
}

/// The daemon's peak resident memory, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the daemon's /proc status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

#[tokio::test]
async fn a_component_file_over_the_size_cap_is_refused_without_being_read() {
    let s = setup("fixture-handover", &[("AMARRE_RELOAD_WATCH", "0")]).await;
    let before = listing(&s.daemon).await;
    // A 1 GiB file (sparse: it takes no disk space).
    let tmp = s.file.with_extension("tmp");
    let f = std::fs::File::create(&tmp).unwrap();
    f.set_len(1 << 30).unwrap();
    drop(f);
    std::fs::rename(&tmp, &s.file).unwrap();
    let (st, body) = s.daemon.post("/instances/default/reload", "").await;
    assert_eq!(st, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("too large"),
        "{body}"
    );
    assert_eq!(listing(&s.daemon).await["hash"], before["hash"]);
    let peak = peak_rss_kib(s.daemon.pid());
    assert!(
        peak < 512 * 1024,
        "the daemon's memory peaked at {peak} KiB: the file was read"
    );
}

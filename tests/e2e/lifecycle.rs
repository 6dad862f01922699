//! Session lifecycle (PROTOCOL.md section 5): delete, crash, adapter traps,
//! shutdown, and a daemon killed outright. Orphans are checked by the
//! agent's process group, never by scanning for names.

use serde_json::json;

use crate::harness::*;

async fn spawn_child_in_group(ws: &mut Ws) -> u32 {
    ws.send_json(json!({"type": "fake.spawn_child"})).await;
    let child = ws
        .recv_until("the fake agent's child pid", |v| v["type"] == "fake.child")
        .await;
    child["pid"].as_u64().unwrap() as u32
}

#[tokio::test]
async fn delete_closes_clients_with_1000_and_ends_the_whole_process_group() {
    let instances = fake_instance(json!({}));
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &instances)]).await;
    let s = d.create(json!({})).await;
    let id = s["id"].as_str().unwrap();
    let pgid = s["pid"].as_u64().unwrap() as u32;
    let mut ws = d.ws(id, "").await;
    let child = spawn_child_in_group(&mut ws).await;
    assert!(process_alive(child));
    let (st, _) = d.delete(&format!("/sessions/{id}")).await;
    assert_eq!(st, 204);
    let (closed, texts) = ws.closed("close after DELETE").await;
    assert_eq!(closed.code, Some(1000), "{closed:?}");
    assert!(
        texts.iter().all(|t| !t.contains("amarre.session_event")),
        "no crash event on delete: {texts:?}"
    );
    assert!(
        !group_alive(pgid),
        "the agent's process group must be gone when DELETE answers"
    );
    assert!(!process_alive(child));
}

#[tokio::test]
async fn an_agent_that_ignores_sigterm_is_killed_after_the_grace() {
    let instances = fake_instance(json!({"FAKE_IGNORE_TERM": "1", "FAKE_EXIT_ON_EOF": "0"}));
    let d = Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", &instances),
        ("AMARRE_KILL_GRACE_MS", "200"),
    ])
    .await;
    let s = d.create(json!({})).await;
    let id = s["id"].as_str().unwrap();
    let pgid = s["pid"].as_u64().unwrap() as u32;
    // One round trip: the agent has set up its SIGTERM handler by now.
    let mut ws = d.ws(id, "").await;
    ws.send_json(json!({"ready": true})).await;
    ws.recv_json("the agent is up").await;
    let (st, _) = d.delete(&format!("/sessions/{id}")).await;
    assert_eq!(st, 204);
    assert!(!group_alive(pgid));
    d.wait_log("ignored SIGTERM").await;
}

#[tokio::test]
async fn an_agent_exit_sends_one_crash_event_then_1011() {
    let instances = fake_instance(json!({}));
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &instances)]).await;
    let s = d.create(json!({})).await;
    let id = s["id"].as_str().unwrap();
    let mut a = d.ws(id, "").await;
    let mut b = d.ws(id, "").await;
    a.send_json(json!({"type": "fake.exit", "code": 42})).await;
    for ws in [&mut a, &mut b] {
        let (closed, texts) = ws.closed("crash close").await;
        assert_eq!(closed.code, Some(1011));
        let events: Vec<_> = texts
            .iter()
            .filter(|t| t.contains("amarre.session_event"))
            .collect();
        assert_eq!(events.len(), 1, "{texts:?}");
        let ev: serde_json::Value = serde_json::from_str(events[0]).unwrap();
        assert_eq!(
            ev,
            json!({"type": "amarre.session_event", "event": "crashed", "exitCode": 42, "signal": null})
        );
    }
    let s = d
        .wait_summary(id, "crashed", |s| s["status"] == "crashed")
        .await;
    assert_eq!(s["exitCode"], 42);
    assert_eq!(s["clients"], 0);
    d.wait_log("session crashed").await;
}

#[tokio::test]
async fn a_signal_death_is_reported_by_name() {
    let instances = fake_instance(json!({}));
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &instances)]).await;
    let s = d.create(json!({})).await;
    let id = s["id"].as_str().unwrap();
    let mut ws = d.ws(id, "").await;
    ws.send_json(json!({"type": "fake.signal", "signal": 9}))
        .await;
    let ev = ws
        .recv_until("crash event", |v| v["type"] == "amarre.session_event")
        .await;
    assert_eq!(ev["exitCode"], serde_json::Value::Null);
    assert_eq!(ev["signal"], "SIGKILL");
    let s = d
        .wait_summary(id, "crashed", |s| s["status"] == "crashed")
        .await;
    assert_eq!(s["signal"], "SIGKILL");
}

#[tokio::test]
async fn an_adapter_trap_ends_only_its_session_with_a_clear_event() {
    let agent = fake_agent();
    let instances = json!([
        {"id": "default", "agent": "stdio", "command": agent},
        {"id": "trap", "agentPath": adapter_file("fixture-trap"), "command": agent},
        {"id": "loop", "agentPath": adapter_file("fixture-loop"), "command": agent},
    ])
    .to_string();
    let d = Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", &instances),
        ("AMARRE_ADAPTER_CALL_MS", "30"),
        ("AMARRE_KILL_GRACE_MS", "200"),
    ])
    .await;
    let healthy = d.create(json!({})).await;
    let mut hws = d.ws(healthy["id"].as_str().unwrap(), "").await;

    for (instance, detail) in [("trap", "unreachable"), ("loop", "time budget of 30 ms")] {
        let s = d.create(json!({"instanceId": instance})).await;
        let id = s["id"].as_str().unwrap();
        let pgid = s["pid"].as_u64().unwrap() as u32;
        let mut ws = d.ws(id, "").await;
        ws.send_json(json!({"type": "ok", "n": 1})).await;
        assert_eq!(
            ws.recv_json("a record through the adapter").await,
            json!({"type": "ok", "n": 1})
        );
        // The fake agent echoes this line; the adapter misbehaves on it.
        ws.send_json(json!({"type": format!("please {instance}")}))
            .await;
        let (closed, texts) = ws.closed("close after the trap").await;
        assert_eq!(closed.code, Some(1011), "{instance}");
        let events: Vec<serde_json::Value> = texts
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .filter(|v: &serde_json::Value| v["type"] == "amarre.session_event")
            .collect();
        assert_eq!(events.len(), 1, "{instance}: {texts:?}");
        let ev = &events[0];
        assert_eq!(ev["event"], "crashed");
        assert_eq!(ev["reason"], "adapter_trap");
        assert_eq!(ev["adapter"], format!("fixture-{instance}@0.1.0"));
        assert_eq!(ev["exitCode"], serde_json::Value::Null);
        assert!(
            ev["detail"].as_str().unwrap().contains(detail),
            "{instance}: {ev}"
        );
        let s = d
            .wait_summary(id, "crashed", |s| s["status"] == "crashed")
            .await;
        assert_eq!(s["exitCode"], serde_json::Value::Null);
        eventually("the trapped session's agent group is gone", || {
            !group_alive(pgid)
        })
        .await;
        // A restart gets a fresh adapter instance.
        let (st, _) = d.post(&format!("/sessions/{id}/restart"), "").await;
        assert_eq!(st, 200);
        let mut ws = d.ws(id, "").await;
        ws.send_json(json!({"type": "fine again"})).await;
        assert_eq!(ws.recv_json("after restart").await["type"], "fine again");
    }
    // The other session never noticed.
    hws.send_json(json!({"type": "still here"})).await;
    assert_eq!(hws.recv_json("healthy session").await["type"], "still here");
}

#[tokio::test]
async fn sigterm_stops_every_session_without_orphans_and_exits_0() {
    let instances = fake_instance(json!({"FAKE_IGNORE_TERM": "1", "FAKE_EXIT_ON_EOF": "0"}));
    let mut d = Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", &instances),
        ("AMARRE_KILL_GRACE_MS", "300"),
    ])
    .await;
    let mut groups = Vec::new();
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let s = d.create(json!({})).await;
        groups.push(s["pid"].as_u64().unwrap() as u32);
        let mut ws = d.ws(s["id"].as_str().unwrap(), "").await;
        // The round trip also proves the SIGTERM handler is installed.
        groups.push(spawn_child_in_group(&mut ws).await);
        sockets.push(ws);
    }
    d.signal(libc::SIGTERM);
    for ws in &mut sockets {
        let (closed, texts) = ws.closed("close at shutdown").await;
        assert_eq!(closed.code, Some(1001));
        assert!(
            texts.iter().all(|t| !t.contains("crashed")),
            "no crash event at shutdown: {texts:?}"
        );
    }
    let status = d.wait_exit().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
    for pid in groups {
        assert!(!process_alive(pid), "process {pid} outlived the daemon");
    }
}

#[tokio::test]
async fn a_daemon_killed_with_sigkill_takes_its_agents_with_it() {
    let instances = fake_instance(json!({}));
    let mut d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &instances)]).await;
    let s = d.create(json!({})).await;
    let pid = s["pid"].as_u64().unwrap() as u32;
    assert!(process_alive(pid));
    d.signal(libc::SIGKILL);
    d.wait_exit().await;
    eventually(
        "the agent dies with the daemon (parent-death signal)",
        || !process_alive(pid),
    )
    .await;
}

#[tokio::test]
async fn the_close_after_an_adapter_trap_says_the_adapter_failed() {
    let agent = fake_agent();
    let instances = json!([
        {"id": "default", "agentPath": adapter_file("fixture-trap"), "command": agent},
    ])
    .to_string();
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &instances)]).await;
    let s = d.create(json!({})).await;
    let mut ws = d.ws(s["id"].as_str().unwrap(), "").await;
    ws.send_json(json!({"type": "please trap"})).await;
    let (closed, _) = ws.closed("close after the trap").await;
    assert_eq!(closed.code, Some(1011));
    assert_eq!(closed.reason, "adapter failed");
}

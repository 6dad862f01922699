//! Operating the daemon: the configuration file, the CLI, systemd
//! notifications, metrics, and configuration reload on SIGHUP.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

fn config_file(dir: &TempDir, text: &str) -> String {
    let path = dir.path().join("amarre.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn config_check_prints_the_effective_configuration_and_names_bad_keys() {
    let dir = TempDir::new("cfg");
    let path = config_file(
        &dir,
        &format!(
            "[server]\nport = 9100\nmax_sessions = 3\n\n[limits]\nkill_grace_ms = 1500\n\n[[instances]]\nid = \"echo\"\nagent = \"stdio\"\ncommand = \"{}\"\n",
            fake_agent()
        ),
    );
    let (code, out, err) = cli(
        &["config", "check", "--config", &path],
        &[("AMARRE_MAX_SESSIONS", "6")],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("port = 9100"), "{out}");
    assert!(
        out.contains("max_sessions = 6"),
        "the environment beats the file: {out}"
    );
    assert!(out.contains("kill_grace_ms = 1500"), "{out}");
    assert!(out.contains("id = \"echo\""), "{out}");
    // AMARRE_CONFIG names the file too.
    let (code, out, _) = cli(&["config", "check"], &[("AMARRE_CONFIG", &path)]).await;
    assert_eq!(code, 0);
    assert!(out.contains("port = 9100"));
    // Unknown keys are errors with the key named, exit code 2.
    let bad = config_file(&dir, "[server]\nprot = 1\n");
    let (code, _, err) = cli(&["config", "check", "--config", &bad], &[]).await;
    assert_eq!(code, 2);
    assert!(err.contains("prot") && err.contains("amarre.toml"), "{err}");
    let (code, _, err) = cli(&["config", "check", "--config", "/no/such.toml"], &[]).await;
    assert_eq!(code, 2);
    assert!(err.contains("/no/such.toml"), "{err}");
}

#[tokio::test]
async fn the_daemon_serves_the_instances_of_its_config_file() {
    let dir = TempDir::new("cfg-serve");
    let path = config_file(
        &dir,
        &format!(
            "[server]\nport = 1\n\n[[instances]]\nid = \"echo\"\nagent = \"stdio\"\ncommand = \"{}\"\nenv = {{ FROM_FILE = \"yes\" }}\n",
            fake_agent()
        ),
    );
    // AMARRE_PORT=0 from the harness overrides the file's port.
    let d = Daemon::start_args(&[], &["--config", &path]).await;
    assert_eq!(
        d.get("/instances").await.1,
        json!([{"id": "echo", "agent": "stdio"}])
    );
    let id = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let mut ws = d.ws(&id, "").await;
    ws.send_json(json!({"type": "fake.env"})).await;
    assert_eq!(ws.recv_json("env").await["env"]["FROM_FILE"], "yes");
    let (code, err) = Daemon::start_failing(&[], &["--config", "/no/such.toml"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("/no/such.toml"), "{err}");
}

#[tokio::test]
async fn the_cli_drives_sessions_and_lists_adapters_of_a_running_daemon() {
    let d = Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", &fake_instance(json!({}))),
        ("AMARRE_MAX_SESSIONS", "8"),
    ])
    .await;
    let url = d.url.clone();
    let (code, out, err) = cli(
        &[
            "sessions", "new", "--url", &url, "--name", "cli", "--env", "A=1",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_owned();
    assert_eq!(id.len(), 12, "{out}");
    let (code, out, _) = cli(&["sessions", "--url", &url], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains("running") && out.contains("cli"),
        "{out}"
    );
    let (code, out, _) = cli(&["sessions", "list", "--json", "--url", &url], &[]).await;
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    // Restart of a running session is refused (exit 1, the daemon's answer shown).
    let (code, _, err) = cli(&["sessions", "restart", &id, "--url", &url], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("already_running"), "{err}");
    let mut ws = d.ws(&id, "").await;
    ws.send_json(json!({"type": "fake.exit", "code": 1})).await;
    d.wait_summary(&id, "crashed", |s| s["status"] == "crashed")
        .await;
    let (code, out, err) = cli(&["sessions", "restart", &id, "--url", &url], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("running"), "{out}");
    let (code, out, _) = cli(&["adapters", "--url", &url], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("stdio") && out.contains("0.1.0") && out.contains("built-in"),
        "{out}"
    );
    let (code, _, _) = cli(&["sessions", "rm", &id, "--url", &url], &[]).await;
    assert_eq!(code, 0);
    assert_eq!(d.get("/sessions").await.1, json!([]));
    let (code, _, err) = cli(&["sessions", "rm", &id, "--url", &url], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("not_found"), "{err}");
    // Bad usage is exit 2; an unreachable daemon exit 1.
    let (code, _, _) = cli(
        &["sessions", "new", "--env", "NOEQUALS", "--url", &url],
        &[],
    )
    .await;
    assert_eq!(code, 2);
    let (code, _, _) = cli(&["sessions", "--url", "http://127.0.0.1:1"], &[]).await;
    assert_eq!(code, 1);
    let (code, out, _) = cli(&["--version"], &[]).await;
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    let (code, out, _) = cli(&["--help"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("serve") && out.contains("sessions") && out.contains("config"),
        "{out}"
    );
}

/// Waits for a notification containing `want` on the test's socket.
async fn notified(socket: &tokio::net::UnixDatagram, want: &str) -> String {
    let mut buf = [0u8; 512];
    loop {
        let n = tokio::time::timeout(STEP, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want} on the notify socket"))
            .expect("recv");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.contains(want) {
            return msg;
        }
    }
}

#[tokio::test]
async fn systemd_hears_ready_watchdog_and_stopping() {
    let dir = TempDir::new("notify");
    let socket_path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let instances = fake_instance(json!({}));
    let mut d = Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", &instances),
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "100000"),
    ])
    .await;
    let ready = notified(&socket, "READY=1").await;
    assert!(ready.contains(&format!("MAINPID={}", d.pid())), "{ready}");
    assert!(
        ready.contains("STATUS=listening on http://127.0.0.1:"),
        "{ready}"
    );
    notified(&socket, "WATCHDOG=1").await;
    notified(&socket, "WATCHDOG=1").await;
    d.signal(libc::SIGTERM);
    notified(&socket, "STOPPING=1").await;
    assert_eq!(d.wait_exit().await.code(), Some(0));
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn metrics_count_a_scripted_session() {
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &fake_instance(json!({})))]).await;
    let id = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let mut ws = d.ws(&id, "").await;
    for n in 0..3 {
        ws.send_json(json!({"n": n})).await;
        ws.recv_json("echo").await;
    }
    ws.send_text("not json").await;
    ws.send_json(json!({"type": "fake.exit", "code": 2})).await;
    ws.closed("crash").await;
    let _ = d.post("/sessions", r#"{"instanceId":"nope"}"#).await;
    let resp = d
        .http()
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.unwrap();
    // 3 echoes + the exit command; the agent echoed 3, then the report of
    // the dropped record and the crash event.
    assert_eq!(
        metric(
            &text,
            r#"amarre_records_total{direction="client_to_agent"}"#
        ),
        4.0
    );
    assert_eq!(
        metric(
            &text,
            r#"amarre_records_total{direction="agent_to_client"}"#
        ),
        5.0
    );
    assert!(metric(&text, r#"amarre_bytes_total{direction="agent_to_client"}"#) > 20.0);
    assert_eq!(
        metric(&text, r#"amarre_records_dropped_total{reason="not_json"}"#),
        1.0
    );
    assert_eq!(metric(&text, r#"amarre_sessions{state="crashed"}"#), 1.0);
    assert_eq!(metric(&text, r#"amarre_sessions{state="running"}"#), 0.0);
    assert_eq!(metric(&text, "amarre_sessions_created_total"), 1.0);
    assert_eq!(metric(&text, "amarre_sessions_crashed_total"), 1.0);
    assert_eq!(metric(&text, "amarre_clients"), 0.0);
    assert!(
        metric(&text, "amarre_adapter_calls_total") >= 2.0,
        "info and spawn at least"
    );
    assert_eq!(metric(&text, "amarre_adapter_traps_total"), 0.0);
    assert!(
        text.contains("# TYPE amarre_records_total counter"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "amarre_build_info{{version=\"{}\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}

#[tokio::test]
async fn sighup_rereads_the_configuration_file() {
    let dir = TempDir::new("cfg-hup");
    let agent = fake_agent();
    let one =
        format!("[[instances]]\nid = \"default\"\nagent = \"stdio\"\ncommand = \"{agent}\"\n");
    let path = config_file(&dir, &one);
    let d = Daemon::start_args(&[], &["--config", &path]).await;
    let old = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let mut ws = d.ws(&old, "").await;
    // A new instance, and the built-in `default` now served by a file.
    let file = dir.path().join("handover.wasm");
    std::fs::copy(adapter_file("fixture-handover"), &file).unwrap();
    let two = format!(
        "[[instances]]\nid = \"default\"\nagent_path = \"{}\"\ncommand = \"{agent}\"\n\n[[instances]]\nid = \"extra\"\nagent = \"stdio\"\ncommand = \"{agent}\"\n",
        file.display()
    );
    std::fs::write(&path, &two).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("instances reconfigured").await;
    let instances = d.get("/instances").await.1;
    assert_eq!(
        instances,
        json!([{"id": "default", "agent": "fixture-handover"}, {"id": "extra", "agent": "stdio"}])
    );
    let (_, adapters) = d.get("/adapters").await;
    assert_eq!(adapters[0]["source"], file.to_str().unwrap());
    // The live session keeps its agent.
    ws.send_json(json!({"still": true})).await;
    assert_eq!(ws.recv_json("old session").await, json!({"still": true}));
    // A removed instance: its sessions' restarts answer 410.
    let gone = d.create(json!({"instanceId": "extra"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut gws = d.ws(&gone, "").await;
    gws.send_json(json!({"type": "fake.exit", "code": 0})).await;
    d.wait_summary(&gone, "crashed", |s| s["status"] == "crashed")
        .await;
    std::fs::write(&path, &one).unwrap();
    d.signal(libc::SIGHUP);
    let deadline = tokio::time::Instant::now() + STEP;
    while d.get("/instances").await.1.as_array().unwrap().len() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the instance was never removed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, body) = d.post(&format!("/sessions/{gone}/restart"), "").await;
    assert_eq!(
        (st, body),
        (
            410,
            json!({"error": "instance_gone", "instanceId": "extra"})
        )
    );
    assert_eq!(
        d.get(&format!("/sessions/{gone}")).await.1["agent"],
        "unknown"
    );
    // A broken file changes nothing.
    std::fs::write(&path, "[[instances]]\nid = 3\n").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("configuration reload failed").await;
    assert_eq!(d.get("/instances").await.1.as_array().unwrap().len(), 1);
}

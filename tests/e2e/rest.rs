//! The REST control plane (PROTOCOL.md sections 3, 5 and 9).

use serde_json::{Value, json};

use crate::harness::*;

async fn fake_daemon(extra: &[(&str, &str)]) -> Daemon {
    let instances = fake_instance(json!({"FROM_INSTANCE": "instance", "LAYER": "instance"}));
    let mut env = vec![("AMARRE_INSTANCES_JSON", instances.as_str())];
    env.extend_from_slice(extra);
    Daemon::start(&env).await
}

#[tokio::test]
async fn healthz_and_instances_report_version_and_adapter_names() {
    let d = fake_daemon(&[]).await;
    let (s, body) = d.get("/healthz").await;
    assert_eq!(s, 200);
    assert_eq!(
        body,
        json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})
    );
    let (s, body) = d.get("/instances").await;
    assert_eq!(s, 200);
    assert_eq!(body, json!([{"id": "default", "agent": "stdio"}]));
}

#[tokio::test]
async fn a_session_is_created_listed_fetched_and_deleted() {
    let d = fake_daemon(&[]).await;
    let s = d.create(json!({"name": "work"})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 12);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{id}"
    );
    assert_eq!(s["name"], "work");
    assert_eq!(s["instanceId"], "default");
    assert_eq!(s["status"], "running");
    assert_eq!(s["agent"], "stdio");
    assert_eq!(s["clients"], 0);
    assert!(s["pid"].as_u64().unwrap() > 1);
    assert!(s["spawnedAt"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(
        s.get("exitCode").is_none() && s.get("signal").is_none(),
        "{s}"
    );

    let (st, list) = d.get("/sessions").await;
    assert_eq!(st, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    let (st, one) = d.get(&format!("/sessions/{id}")).await;
    assert_eq!(st, 200);
    assert_eq!(one["id"], id.as_str());

    let (st, body) = d.delete(&format!("/sessions/{id}")).await;
    assert_eq!(st, 204);
    assert_eq!(body, Value::String(String::new()));
    let (st, body) = d.get(&format!("/sessions/{id}")).await;
    assert_eq!((st, body), (404, json!({"error": "not_found"})));
    assert_eq!(
        d.delete(&format!("/sessions/{id}")).await,
        (404, json!({"error": "not_found"}))
    );
    assert_eq!(d.get("/sessions").await.1, json!([]));
}

#[tokio::test]
async fn name_is_null_when_unset_and_bodies_are_read_leniently() {
    let d = fake_daemon(&[]).await;
    // Malformed JSON and non-objects count as {}; wrong types are ignored.
    for body in [
        "",
        "{not json",
        "[1,2]",
        "\"x\"",
        r#"{"name": 5, "cwd": [], "env": {"A": 1}}"#,
    ] {
        let (st, s) = d.post("/sessions", body).await;
        assert_eq!(st, 201, "{body}: {s}");
        assert_eq!(s["name"], Value::Null, "{body}");
        d.delete(&format!("/sessions/{}", s["id"].as_str().unwrap()))
            .await;
    }
    // Any content type is read as JSON.
    let resp = d
        .http()
        .post(format!("{}/sessions", d.url))
        .header("content-type", "text/plain")
        .body(r#"{"name":"plain"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.json::<Value>().await.unwrap()["name"], "plain");
}

#[tokio::test]
async fn unknown_paths_methods_and_the_root_answer_as_specified() {
    let d = fake_daemon(&[]).await;
    assert_eq!(d.get("/nope").await, (404, json!({"error": "not_found"})));
    assert_eq!(
        d.get("/sessions/abc/def").await,
        (404, json!({"error": "not_found"}))
    );
    assert_eq!(
        d.delete("/sessions").await,
        (405, json!({"error": "method_not_allowed"}))
    );
    assert_eq!(
        d.post("/healthz", "").await,
        (405, json!({"error": "method_not_allowed"}))
    );
    assert_eq!(
        d.post("/sessions/abc", "").await,
        (405, json!({"error": "method_not_allowed"}))
    );
    assert_eq!(
        d.get("/sessions/abc/restart").await,
        (405, json!({"error": "method_not_allowed"}))
    );
    for method in ["GET", "POST", "DELETE"] {
        let resp = d
            .http()
            .request(method.parse().unwrap(), format!("{}/", d.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 426, "{method} /");
        assert_eq!(
            resp.text().await.unwrap(),
            "Use /sessions/<id>; see docs/PROTOCOL.md"
        );
    }
    assert_eq!(
        d.get("/push/tokens").await,
        (503, json!({"error": "push_disabled"}))
    );
}

#[tokio::test]
async fn an_unknown_instance_is_404_with_its_id() {
    let d = fake_daemon(&[]).await;
    let (st, body) = d.post("/sessions", r#"{"instanceId":"nope"}"#).await;
    assert_eq!(
        (st, body),
        (
            404,
            json!({"error": "unknown_instance", "instanceId": "nope"})
        )
    );
}

#[tokio::test]
async fn the_default_instance_is_default_else_the_first() {
    let agent = fake_agent();
    let instances = json!([
        {"id": "alpha", "agent": "stdio", "command": agent},
        {"id": "beta", "agent": "stdio", "command": agent},
    ])
    .to_string();
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &instances)]).await;
    assert_eq!(d.create(json!({})).await["instanceId"], "alpha");
    assert_eq!(
        d.create(json!({"instanceId": "beta"})).await["instanceId"],
        "beta"
    );
    let instances = json!([
        {"id": "alpha", "agent": "stdio", "command": agent},
        {"id": "default", "agent": "stdio", "command": agent},
    ])
    .to_string();
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &instances)]).await;
    assert_eq!(d.create(json!({})).await["instanceId"], "default");
}

#[tokio::test]
async fn the_session_cap_counts_live_sessions_and_is_rechecked_on_restart() {
    let d = fake_daemon(&[("AMARRE_MAX_SESSIONS", "2")]).await;
    let a = d.create(json!({})).await;
    let b = d.create(json!({})).await;
    let (st, body) = d.post("/sessions", "{}").await;
    assert_eq!(
        (st, body),
        (429, json!({"error": "max_sessions_reached", "limit": 2}))
    );
    // A crashed session does not count.
    let a_id = a["id"].as_str().unwrap();
    let mut ws = d.ws(a_id, "").await;
    ws.send_json(json!({"type": "fake.exit", "code": 3})).await;
    d.wait_summary(a_id, "crashed", |s| s["status"] == "crashed")
        .await;
    let c = d.create(json!({})).await;
    // Restarting the crashed one now exceeds the cap.
    let (st, body) = d.post(&format!("/sessions/{a_id}/restart"), "").await;
    assert_eq!(
        (st, body),
        (429, json!({"error": "max_sessions_reached", "limit": 2}))
    );
    d.delete(&format!("/sessions/{}", c["id"].as_str().unwrap()))
        .await;
    let (st, s) = d.post(&format!("/sessions/{a_id}/restart"), "").await;
    assert_eq!(st, 200, "{s}");
    assert_eq!(s["status"], "running");
    let _ = b;
}

#[tokio::test]
async fn the_session_cap_stays_exact_under_concurrent_posts() {
    let d = fake_daemon(&[("AMARRE_MAX_SESSIONS", "3")]).await;
    let posts = (0..24).map(|_| d.post("/sessions", "{}"));
    let answers = futures_util::future::join_all(posts).await;
    let created = answers.iter().filter(|(st, _)| *st == 201).count();
    let refused: Vec<_> = answers.iter().filter(|(st, _)| *st != 201).collect();
    assert_eq!(created, 3, "exactly the cap is created: {answers:?}");
    for (st, body) in &refused {
        assert_eq!(
            (*st, body.clone()),
            (429, json!({"error": "max_sessions_reached", "limit": 3}))
        );
    }
    let (_, list) = d.get("/sessions").await;
    let running = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "running")
        .count();
    assert_eq!(running, 3);
}

#[tokio::test]
async fn a_crash_is_reported_and_restart_reuses_id_and_options() {
    let d = fake_daemon(&[]).await;
    let cwd = TempDir::new("restart");
    let s = d
        .create(json!({"cwd": cwd.path(), "env": {"FROM_SESSION": "yes"}, "name": "keep"}))
        .await;
    let id = s["id"].as_str().unwrap().to_owned();
    let (st, body) = d.post(&format!("/sessions/{id}/restart"), "").await;
    assert_eq!((st, body), (409, json!({"error": "already_running"})));

    let mut ws = d.ws(&id, "").await;
    ws.send_json(json!({"type": "fake.exit", "code": 7})).await;
    let crashed = d
        .wait_summary(&id, "crashed", |s| s["status"] == "crashed")
        .await;
    assert_eq!(crashed["exitCode"], 7);
    assert_eq!(crashed["signal"], Value::Null);
    assert!(crashed.get("pid").is_none(), "{crashed}");

    let before = crashed["spawnedAt"].as_u64().unwrap();
    let (st, s) = d.post(&format!("/sessions/{id}/restart"), "").await;
    assert_eq!(st, 200, "{s}");
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["name"], "keep");
    assert_eq!(s["status"], "running");
    assert!(s.get("exitCode").is_none(), "{s}");
    assert!(s["spawnedAt"].as_u64().unwrap() >= before);
    let mut ws = d.ws(&id, "").await;
    ws.send_json(json!({"type": "fake.env"})).await;
    let env = ws.recv_json("env after restart").await;
    assert_eq!(env["env"]["FROM_SESSION"], "yes");
    assert_eq!(env["cwd"], cwd.path().to_str().unwrap());
    assert_eq!(
        d.post("/sessions/000000000000/restart", "").await,
        (404, json!({"error": "not_found"}))
    );
}

#[tokio::test]
async fn the_child_environment_merges_daemon_instance_and_session_in_order() {
    let d = fake_daemon(&[
        ("FROM_DAEMON", "daemon"),
        ("LAYER", "daemon"),
        ("AMARRE_STDIO_X", "prefixed"),
    ])
    .await;
    let cwd = TempDir::new("cwd");
    let s = d
        .create(json!({"cwd": cwd.path(), "env": {"LAYER": "session", "FROM_SESSION": "session"}}))
        .await;
    let mut ws = d.ws(s["id"].as_str().unwrap(), "").await;
    ws.send_json(json!({"type": "fake.env"})).await;
    let env = ws.recv_json("the fake agent's environment").await;
    let e = &env["env"];
    assert_eq!(e["FROM_DAEMON"], "daemon");
    assert_eq!(e["FROM_INSTANCE"], "instance");
    assert_eq!(e["FROM_SESSION"], "session");
    assert_eq!(e["LAYER"], "session", "the session's env wins");
    assert_eq!(env["cwd"], cwd.path().to_str().unwrap());
    // The agent runs in its own process group.
    assert_eq!(env["pid"], env["pgid"]);
    assert_eq!(env["pid"], s["pid"]);
}

#[tokio::test]
async fn spawn_failures_answer_422_with_a_reason_and_leave_no_session() {
    let agent = fake_agent();
    let plain = TempDir::new("plain");
    let not_exec = plain.path().join("agent.sh");
    std::fs::write(&not_exec, "#!/bin/sh\ncat\n").unwrap();
    let instances = json!([
        {"id": "default", "agent": "stdio", "command": agent},
        {"id": "missing", "agent": "stdio", "command": "/no/such/agent"},
        {"id": "missing-on-path", "agent": "stdio", "command": "amarre-no-such-agent"},
        {"id": "noexec", "agent": "stdio", "command": not_exec},
        {"id": "nocommand", "agent": "stdio"},
        {"id": "undeclared", "agentPath": adapter_file("fixture-undeclared")},
        {"id": "trapping", "agentPath": adapter_file("fixture-trap"), "env": {"FIXTURE_WHEN": "spawn"}},
    ])
    .to_string();
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &instances)]).await;
    let cases = [
        (
            json!({"instanceId": "missing"}),
            "program_not_found",
            "/no/such/agent",
        ),
        (
            json!({"instanceId": "missing-on-path"}),
            "program_not_found",
            "amarre-no-such-agent",
        ),
        (
            json!({"instanceId": "noexec"}),
            "not_executable",
            "agent.sh",
        ),
        (
            json!({"cwd": "/no/such/dir"}),
            "cwd_missing",
            "/no/such/dir",
        ),
        (
            json!({"instanceId": "nocommand"}),
            "adapter_error",
            "stdio@",
        ),
        (
            json!({"instanceId": "undeclared"}),
            "policy_refused",
            "/bin/sh",
        ),
        (
            json!({"instanceId": "trapping"}),
            "adapter_error",
            "fixture-trap@0.1.0",
        ),
    ];
    for (body, reason, needle) in cases {
        let (st, resp) = d.post("/sessions", &body.to_string()).await;
        assert_eq!(st, 422, "{body}: {resp}");
        assert_eq!(resp["error"], "spawn_failed", "{body}");
        assert_eq!(resp["reason"], reason, "{body}: {resp}");
        let detail = resp["detail"].as_str().unwrap();
        assert!(
            detail.contains(needle),
            "{body}: detail {detail:?} should mention {needle}"
        );
    }
    assert_eq!(
        d.get("/sessions").await.1,
        json!([]),
        "no session is left behind"
    );
    // The daemon still serves.
    d.create(json!({})).await;
}

#[tokio::test]
async fn a_session_env_cannot_override_the_program() {
    let instances =
        json!([{"id": "default", "agentPath": adapter_file("fixture-undeclared")}]).to_string();
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &instances)]).await;
    let (st, resp) = d.post("/sessions", r#"{"env":{"PI_BIN":"/bin/sh"}}"#).await;
    assert_eq!(st, 422);
    assert_eq!(resp["reason"], "policy_refused");
}

#[tokio::test]
async fn malformed_configuration_stops_start_up_naming_the_setting() {
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![("AMARRE_INSTANCES_JSON", "[{".into())],
            "AMARRE_INSTANCES_JSON",
        ),
        (
            vec![(
                "AMARRE_INSTANCES_JSON",
                r#"[{"id":"a","agent":"stdio"},{"id":"a","agent":"stdio"}]"#.into(),
            )],
            "duplicate instance id `a`",
        ),
        (
            vec![(
                "AMARRE_INSTANCES_JSON",
                r#"[{"id":"a","agent":"nope"}]"#.into(),
            )],
            "unknown built-in adapter `nope`",
        ),
        (
            vec![(
                "AMARRE_INSTANCES_JSON",
                json!([{"id": "a", "agentPath": "/no/such.wasm"}]).to_string(),
            )],
            "/no/such.wasm",
        ),
        (
            vec![(
                "AMARRE_INSTANCES_JSON",
                json!([{"id": "a", "agentPath": adapter_file("fixture-wrong-wit")}]).to_string(),
            )],
            "amarre:adapter@9.0.0",
        ),
        (vec![("AMARRE_PORT", "http".into())], "AMARRE_PORT"),
        (
            vec![("AMARRE_MAX_SESSIONS", "many".into())],
            "AMARRE_MAX_SESSIONS",
        ),
        (vec![("AMARRE_ARGS_JSON", "{".into())], "AMARRE_ARGS_JSON"),
        (vec![("AMARRE_HOST", "0.0.0.0".into())], "AMARRE_HOST"),
        // Bounds are checked at start-up (these used to be accepted).
        (vec![("AMARRE_WS_PING_MS", "0".into())], "AMARRE_WS_PING_MS"),
        (vec![("AMARRE_WS_IDLE_MS", "0".into())], "AMARRE_WS_IDLE_MS"),
        (
            vec![("AMARRE_MAX_SESSIONS", "0".into())],
            "AMARRE_MAX_SESSIONS",
        ),
        (
            vec![("AMARRE_RELOAD_WATCH", "maybe".into())],
            "AMARRE_RELOAD_WATCH",
        ),
        (vec![("AMARRE_LOG", "amarre=loud".into())], "AMARRE_LOG"),
    ];
    for (env, needle) in cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, stderr) = Daemon::start_failing(&env, &[]).await;
        assert_ne!(code, 0, "{env:?} should fail");
        assert!(
            stderr.contains(needle),
            "{env:?}: stderr should mention {needle:?}:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn a_forced_non_loopback_bind_starts_with_a_warning() {
    let instances = fake_instance(json!({}));
    let d = Daemon::start(&[
        ("AMARRE_HOST", "0.0.0.0"),
        ("AMARRE_ALLOW_NON_LOOPBACK", "1"),
        ("AMARRE_INSTANCES_JSON", &instances),
    ])
    .await;
    assert!(d.url.starts_with("http://0.0.0.0:"), "{}", d.url);
    d.wait_log("non-loopback").await;
    let d2 = Daemon::start_args(
        &[("AMARRE_INSTANCES_JSON", &instances)],
        &["--host", "0.0.0.0", "--allow-non-loopback"],
    )
    .await;
    assert!(d2.url.starts_with("http://0.0.0.0:"));
}

#[tokio::test]
async fn flags_override_environment_variables() {
    let instances = fake_instance(json!({}));
    let d = Daemon::start_args(
        &[
            ("AMARRE_INSTANCES_JSON", &instances),
            ("AMARRE_MAX_SESSIONS", "5"),
        ],
        &["--max-sessions", "1"],
    )
    .await;
    d.create(json!({})).await;
    let (st, body) = d.post("/sessions", "{}").await;
    assert_eq!(
        (st, body),
        (429, json!({"error": "max_sessions_reached", "limit": 1}))
    );
}

#[tokio::test]
async fn a_sessions_path_never_chooses_the_agents_binary() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("evil-path");
    for name in ["cat", "pi", "claude"] {
        let script = dir.path().join(name);
        let marker = dir.path().join(format!("ran-{name}"));
        std::fs::write(
            &script,
            // Shell built-ins only: the session's PATH has nothing else.
            format!(
                "#!/bin/sh\n: > '{}'\nwhile read -r line; do :; done\n",
                marker.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let instances = json!([
        {"id": "stdio", "agent": "stdio", "command": "cat"},
        {"id": "pi", "agent": "pi"},
        {"id": "claude", "agent": "claude-code"},
    ])
    .to_string();
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &instances)]).await;
    let path = dir.path().display().to_string();
    for instance in ["stdio", "pi", "claude"] {
        let (st, body) = d
            .post(
                "/sessions",
                &json!({"instanceId": instance, "env": {"PATH": path}}).to_string(),
            )
            .await;
        // Found on the daemon's PATH, or not found there: either way not
        // the session's program.
        assert!(
            st == 201 || (st == 422 && body["reason"] == "program_not_found"),
            "{instance}: {st} {body}"
        );
        if st == 201 {
            // The session's PATH still reaches the agent.
            let (_, s) = d
                .get(&format!("/sessions/{}", body["id"].as_str().unwrap()))
                .await;
            assert_eq!(s["status"], "running", "{instance}: {s}");
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for name in ["cat", "pi", "claude"] {
        assert!(
            !dir.path().join(format!("ran-{name}")).exists(),
            "the session's PATH chose `{name}`"
        );
    }
}

#[tokio::test]
async fn bad_env_names_oversized_bodies_and_bad_since_get_clear_answers() {
    let d = fake_daemon(&[]).await;
    for name in ["A=B", "NUL\u{0}X", ""] {
        let (st, body) = d
            .post("/sessions", &json!({"env": {name: "1"}}).to_string())
            .await;
        assert_eq!(
            (st, body),
            (400, json!({"error": "invalid_env", "name": name}))
        );
    }
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(3 << 20));
    let (st, body) = d.post("/sessions", &big).await;
    assert_eq!(
        (st, body),
        (413, json!({"error": "too_large", "limit": 2097152}))
    );
    let id = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let (st, text) = d
        .ws_refused(&format!("/sessions/{id}?since=abc"), &[])
        .await;
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("since"), "{text}");
}

#[tokio::test]
async fn client_text_reaches_the_log_escaped() {
    let d = fake_daemon(&[]).await;
    let (st, _) = d
        .post(
            "/sessions",
            &json!({"cwd": "/no/such/dir\nFORGED log line \u{1b}[31m"}).to_string(),
        )
        .await;
    assert_eq!(st, 422);
    d.wait_log("failed to spawn an agent").await;
    let log = d.log();
    assert!(
        !log.contains("\nFORGED"),
        "a raw newline from a client:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "a raw escape from a client:\n{log}"
    );
}

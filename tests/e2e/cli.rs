//! The terminal client (`amarre attach`, `new`, `send`, `approve`) against
//! the real daemon: the interactive client in a real terminal (`tmux`, 80x24,
//! driven with `send-keys` and read with `capture-pane`), the scripted
//! commands with their exit codes, and one attach with the real pi CLI.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;

/// How long the terminal may take to show something.
const SCREEN_WAIT: Duration = Duration::from_secs(30);

/// A tmux server of our own (its own socket name), killed when dropped.
struct Tmux {
    socket: String,
}

fn tmux_bin() -> &'static str {
    "tmux"
}

impl Tmux {
    /// Runs `args` of the amarre binary in a detached 80x24 terminal; when
    /// the program ends the pane shows `[exit N]`.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Tmux {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("amarre-cli-{}-{n}", std::process::id());
        let quoted: Vec<String> = std::iter::once(daemon_bin().to_owned())
            .chain(args.iter().map(|a| a.to_string()))
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let script = format!("{}; echo \"[exit $?]\"; sleep 600", quoted.join(" "));
        let mut cmd = Command::new(tmux_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("AMARRE_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("TERM", "xterm-256color");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let status = cmd
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "80",
                "-y",
                "24",
                "-s",
                "main",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| {
                panic!("tmux is needed for the terminal tests (scripts/test installs it): {e}")
            });
        assert!(status.success(), "tmux new-session failed: {status}");
        Tmux { socket }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new(tmux_bin())
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The visible screen.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "main"])
    }

    /// The screen and its scrollback.
    fn everything(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "main", "-S", "-2000"])
    }

    /// Types text literally.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "main", "-l", text]);
    }

    /// Presses keys by name (`Enter`, `C-c`, `y`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    fn say(&self, text: &str) {
        self.type_text(text);
        self.keys(&["Enter"]);
    }

    /// Waits until the screen and scrollback contain `needle`.
    async fn wait_for(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + SCREEN_WAIT;
        loop {
            let all = self.everything();
            if all.contains(needle) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the terminal never showed {needle:?}; it shows:\n{all}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the visible screen contains `needle`.
    async fn wait_screen(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + SCREEN_WAIT;
        loop {
            let s = self.screen();
            if s.contains(needle) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the screen never showed {needle:?}; it shows:\n{s}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.everything().matches(needle).count()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new(tmux_bin())
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

/// A TCP proxy in front of the daemon whose connections the test can cut
/// (as when a network path or a tailnet front drops the socket).
struct Proxy {
    port: u16,
    refusing: Arc<Mutex<bool>>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let refusing = Arc::new(Mutex::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (r, c) = (refusing.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if *r.lock().unwrap() {
                    drop(inbound);
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(h);
            }
        });
        Proxy {
            port,
            refusing,
            conns,
            task,
        }
    }

    /// Drops every connection and refuses new ones.
    fn cut(&self) {
        *self.refusing.lock().unwrap() = true;
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    fn resume(&self) {
        *self.refusing.lock().unwrap() = false;
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

async fn fake_pi_daemon() -> Daemon {
    let instances = fake_instance(json!({"FAKE_PI": "1"}));
    Daemon::start(&[("AMARRE_INSTANCES_JSON", &instances)]).await
}

/// Runs one prompt over a socket of the test's own and waits for its end.
async fn turn(d: &Daemon, id: &str, message: &str) -> Vec<Value> {
    let mut ws = d.ws(id, "").await;
    ws.send_json(json!({"type": "prompt", "id": "t", "message": message}))
        .await;
    ws.until_agent_end(&format!("the turn of {message:?}"))
        .await
}

#[tokio::test]
async fn attach_streams_answers_questions_reconnects_aborts_and_detaches() {
    let d = fake_pi_daemon().await;
    let s = d.create(json!({"name": "work"})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    // History from before the attach.
    turn(&d, &id, "first words").await;
    let proxy = Proxy::start(d.port).await;
    let t = Tmux::start(&["attach", "work", "--url", &proxy.url()], &[]);

    t.wait_screen("connected").await;
    t.wait_for("you> first words").await;
    t.wait_for("You said: first words").await;

    // A prompt and its streamed answer.
    t.say("hello there");
    t.wait_for("You said: hello there").await;

    // A confirm answered with `y`; the tool's long output is folded.
    t.say("please CONFIRM");
    t.wait_screen("? Run bash?").await;
    t.wait_screen("[y] yes").await;
    t.keys(&["y"]);
    t.wait_for("The tool ran.").await;
    t.wait_for("[tool] bash seq 1 12").await;
    t.wait_for("more lines folded").await;
    let all = t.everything();
    assert!(all.contains("│ 1") && !all.contains("│ 12"), "{all}");

    // A select answered with its number.
    t.say("SELECT a mode");
    t.wait_screen("2) Careful").await;
    t.keys(&["2"]);
    t.wait_for("You picked Careful.").await;

    // An input answered with the line editor.
    t.say("INPUT please");
    t.wait_screen("Your name?").await;
    t.type_text("Ada");
    t.keys(&["Enter"]);
    t.wait_for("Hello, Ada.").await;

    // The socket drops; a turn happens meanwhile; the client reconnects
    // with `since` and shows it exactly once, and nothing twice.
    proxy.cut();
    t.wait_screen("reconnecting").await;
    turn(&d, &id, "while away").await;
    proxy.resume();
    t.wait_for("[reconnected]").await;
    t.wait_for("You said: while away").await;
    t.wait_screen("connected").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(t.count("You said: while away"), 1, "{}", t.everything());
    assert_eq!(t.count("You said: hello there"), 1, "{}", t.everything());
    assert_eq!(t.count("You picked Careful."), 1, "{}", t.everything());

    // Ctrl-C aborts the running turn; a second one detaches.
    t.say("go SLOW");
    t.wait_for("tick 3").await;
    t.keys(&["C-c"]);
    t.wait_for("[turn ended: aborted]").await;
    t.wait_screen("idle").await;
    t.keys(&["C-c"]);
    t.wait_for("[exit 0]").await;
    t.wait_for("the agent keeps running").await;
    let (_, s) = d.get(&format!("/sessions/{id}")).await;
    assert_eq!(s["status"], "running", "{s}");

    // Attaching again shows the whole conversation from the agent's history.
    let t2 = Tmux::start(&["attach", &id, "--url", &d.url], &[]);
    t2.wait_screen("connected").await;
    t2.wait_for("── history").await;
    t2.wait_for("You said: while away").await;
    t2.wait_for("The tool ran.").await;
    t2.keys(&["C-c"]);
    t2.keys(&["C-c"]);
    t2.wait_for("[exit 0]").await;
}

#[tokio::test]
async fn after_a_replay_gap_attach_shows_the_history_and_sends_what_was_typed_offline() {
    // A replay buffer of 5 records: one turn while away overflows it.
    let instances = fake_instance(json!({"FAKE_PI": "1"}));
    let d = Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", &instances),
        ("AMARRE_REPLAY_RECORDS", "5"),
    ])
    .await;
    let s = d.create(json!({"name": "gap"})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let proxy = Proxy::start(d.port).await;
    let t = Tmux::start(&["attach", "gap", "--url", &proxy.url()], &[]);
    t.wait_screen("connected").await;
    t.say("before");
    t.wait_for("You said: before").await;

    proxy.cut();
    t.wait_screen("reconnecting").await;
    turn(&d, &id, "while away").await;
    t.say("typed while down");
    t.wait_for("[not connected: the prompt is sent once the connection is back]")
        .await;
    proxy.resume();
    t.wait_for("are no longer kept by the daemon").await;
    t.wait_for("You said: while away").await;
    t.wait_for("You said: typed while down").await;
    t.wait_screen("connected").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = t.everything();
    assert_eq!(all.matches("You said: while away").count(), 1, "{all}");
    assert_eq!(
        all.matches("You said: typed while down").count(),
        1,
        "{all}"
    );
    t.keys(&["C-c"]);
    t.keys(&["C-c"]);
    t.wait_for("[exit 0]").await;
}

#[tokio::test]
async fn attach_degrades_to_plain_lines_without_a_terminal() {
    let d = fake_pi_daemon().await;
    let s = d.create(json!({"name": "plain"})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let mut child = tokio::process::Command::new(daemon_bin())
        .args(["attach", "plain", "--url", &d.url])
        .env_remove("AMARRE_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn attach");
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut wait_line = async |needle: &str, seen: &mut Vec<String>| {
        let deadline = tokio::time::Instant::now() + SCREEN_WAIT;
        loop {
            let line = tokio::time::timeout_at(deadline, lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no line with {needle:?}; saw {seen:?}"))
                .expect("read")
                .unwrap_or_else(|| panic!("output ended before {needle:?}; saw {seen:?}"));
            let hit = line.contains(needle);
            seen.push(line);
            if hit {
                return;
            }
        }
    };
    wait_line("[attached to plain", &mut seen).await;
    stdin.write_all(b"CONFIRM it\n").await.unwrap();
    wait_line("? Run bash?", &mut seen).await;
    stdin.write_all(b"n\n").await.unwrap();
    wait_line("The tool was denied.", &mut seen).await;
    assert!(
        seen.iter().all(|l| !l.contains('\x1b')),
        "no terminal control sequences in plain output: {seen:?}"
    );
    // SIGINT twice: the first aborts (nothing runs), the second detaches.
    let pid = child.id().unwrap() as i32;
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(pid, libc::SIGINT) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = tokio::time::timeout(STEP, child.wait())
        .await
        .expect("attach should detach on the second SIGINT")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let (_, s) = d.get(&format!("/sessions/{id}")).await;
    assert_eq!(s["status"], "running");
}

#[tokio::test]
async fn send_wait_and_approve_work_from_scripts_with_their_exit_codes() {
    let d = fake_pi_daemon().await;
    let url = d.url.clone();
    let s = d.create(json!({"name": "job"})).await;
    let id = s["id"].as_str().unwrap().to_owned();

    let (code, out, err) = cli(&["send", "job", "hello", "--wait", "--url", &url], &[]).await;
    assert_eq!((code, out.as_str()), (0, "You said: hello\n"), "{err}");

    let (code, _, err) = cli(&["send", "job", "FAIL now", "--wait", "--url", &url], &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the fake model failed"), "{err}");

    // A question stops `send --wait` with exit 3 and the question printed.
    let (code, out, err) = cli(&["send", &id, "CONFIRM it", "--wait", "--url", &url], &[]).await;
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("? Run bash?"), "{out}");
    let mut watch = d.ws(&id, "").await;
    let (code, out, err) = cli(&["approve", "job", "--url", &url], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("allowed: Run bash?"), "{out}");
    let seen = watch.until_agent_end("the allowed tool's turn").await;
    assert!(
        seen.iter()
            .any(|v| v["type"] == "tool_execution_end" && v["isError"] == false),
        "{seen:?}"
    );

    // Without --wait, send returns once the agent took the prompt; deny
    // answers a select with its last option.
    let (code, _, err) = cli(&["send", "job", "SELECT", "--url", &url], &[]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&["approve", "job", "--deny", "--url", &url], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("answered `Stop`"), "{out}");
    let seen = watch.until_agent_end("the select's turn").await;
    assert!(
        seen.iter()
            .any(|v| v["message"]["content"][0]["text"] == "You picked Stop."),
        "{seen:?}"
    );

    // An input needs typed text: approve leaves it (exit 3); --deny cancels.
    let (code, _, _) = cli(&["send", "job", "INPUT", "--url", &url], &[]).await;
    assert_eq!(code, 0);
    let (code, out, _) = cli(&["approve", "job", "--url", &url], &[]).await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("left unanswered: Your name?"), "{out}");
    let (code, out, err) = cli(&["approve", "job", "--deny", "--all", "--url", &url], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cancelled: Your name?"), "{out}");
    watch.until_agent_end("the input's turn").await;
    let (code, _, err) = cli(&["approve", "job", "--url", &url], &[]).await;
    assert_eq!(code, 0);
    assert!(err.contains("no pending question"), "{err}");

    // Errors a person understands, with their exit codes.
    let (code, _, err) = cli(&["send", "nosuch", "x", "--url", &url], &[]).await;
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("no session has the id or name `nosuch`"),
        "{err}"
    );
    let a = d.create(json!({"name": "twin"})).await;
    let b = d.create(json!({"name": "twin"})).await;
    let (code, _, err) = cli(&["approve", "twin", "--url", &url], &[]).await;
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("matches 2 sessions")
            && err.contains(a["id"].as_str().unwrap())
            && err.contains(b["id"].as_str().unwrap()),
        "{err}"
    );
    let (code, _, err) = cli(&["send", "job", "x", "--url", "http://127.0.0.1:1"], &[]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("not reachable"), "{err}");
    let (code, _, err) = cli(&["send", "job", "x", "--url", "ftp://x"], &[]).await;
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = cli(&["help"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("6 unauthorized") && out.contains("attach"),
        "{out}"
    );
}

#[tokio::test]
async fn new_starts_a_session_in_the_current_directory_and_sessions_new_is_the_same() {
    let d = fake_pi_daemon().await;
    let dir = TempDir::new("cli-new");
    let mut cmd = Command::new(daemon_bin());
    cmd.args(["new", "--name", "here", "--url", &d.url])
        .current_dir(dir.path())
        .env_remove("AMARRE_TOKEN");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("run amarre new");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(id.len(), 12, "{id}");
    let (_, s) = d.get(&format!("/sessions/{id}")).await;
    assert_eq!(s["name"], "here", "{s}");
    // The agent runs in the directory `new` was started from.
    let canonical = dir.path().canonicalize().unwrap();
    assert_eq!(cwd_of_session(&d, &id).await, canonical);
    // A cwd that does not exist: the daemon's reason, exit 1.
    let (code, _, err) = cli(&["new", "--cwd", "/nonexistent/dir", "--url", &d.url], &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cwd_missing"), "{err}");
    let (code, out, err) = cli(
        &["sessions", "new", "--name", "old-way", "--url", &d.url],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim().len(), 12);
    // `new --attach` opens the new session in the terminal.
    let t = Tmux::start(
        &["new", "--name", "fresh", "--attach", "--url", &d.url],
        &[],
    );
    t.wait_screen("fresh (").await;
    t.wait_screen("connected").await;
    t.say("hi new");
    t.wait_for("You said: hi new").await;
    t.keys(&["C-c"]);
    t.keys(&["C-c"]);
    t.wait_for("[exit 0]").await;
    let list = d.get("/sessions").await.1;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "fresh"),
        "{list}"
    );
}

/// The working directory of a session's agent, from /proc.
async fn cwd_of_session(d: &Daemon, id: &str) -> std::path::PathBuf {
    let (_, s) = d.get(&format!("/sessions/{id}")).await;
    let pid = s["pid"].as_u64().expect("pid of a running session");
    std::fs::read_link(format!("/proc/{pid}/cwd")).expect("agent cwd")
}

fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A tiny daemon stand-in that wants `Bearer s3cret` on REST and on the
/// WebSocket upgrade, records what it got, lists one session `ws` and
/// answers a prompt on its socket with a one-message turn.
async fn token_server() -> (
    String,
    Arc<Mutex<Vec<Option<String>>>>,
    tokio::task::JoinHandle<()>,
) {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let (s2, s3) = (seen.clone(), seen.clone());
    let app = axum::Router::new()
        .route(
            "/sessions",
            axum::routing::get(move |headers: HeaderMap| {
                let seen = s2.clone();
                async move {
                    let auth = bearer(&headers);
                    let ok = auth.as_deref() == Some("Bearer s3cret");
                    seen.lock().unwrap().push(auth);
                    if ok {
                        (
                            StatusCode::OK,
                            axum::Json(json!([{"id": "abcdef123456", "name": "ws", "status": "running"}])),
                        )
                    } else {
                        (
                            StatusCode::UNAUTHORIZED,
                            axum::Json(json!({"error": "unauthorized"})),
                        )
                    }
                }
            }),
        )
        .route(
            "/sessions/{id}",
            axum::routing::get(move |headers: HeaderMap, ws: WebSocketUpgrade| {
                let seen = s3.clone();
                async move {
                    let auth = bearer(&headers);
                    let ok = auth.as_deref() == Some("Bearer s3cret");
                    seen.lock().unwrap().push(auth.map(|a| format!("ws {a}")));
                    if !ok {
                        return (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
                    }
                    ws.on_upgrade(|mut socket| async move {
                        let hello = json!({"type": "amarre.hello", "protocol": "2.4.0", "seq": 0});
                        let _ = socket.send(Message::text(hello.to_string())).await;
                        while let Some(Ok(msg)) = socket.recv().await {
                            let Message::Text(t) = msg else { continue };
                            let v: Value = serde_json::from_str(&t).unwrap_or_default();
                            if v["type"] != "prompt" {
                                continue;
                            }
                            let text = json!({"role": "assistant", "content": [{"type": "text", "text": "ok from the stand-in"}]});
                            for (i, r) in [
                                json!({"type": "response", "command": "prompt", "success": true, "id": v["id"]}),
                                json!({"type": "agent_start"}),
                                json!({"type": "agent_end", "messages": [text]}),
                            ]
                            .into_iter()
                            .enumerate()
                            {
                                let mut r = r;
                                r["_seq"] = json!(i + 1);
                                let _ = socket.send(Message::text(r.to_string())).await;
                            }
                        }
                    })
                }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen, task)
}

#[tokio::test]
async fn the_token_comes_from_the_flag_file_the_variable_or_the_local_file_and_travels_as_bearer() {
    let (url, seen, task) = token_server().await;
    let dir = TempDir::new("cli-token");
    let file = dir.path().join("tok");
    std::fs::write(&file, "s3cret\n").unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".config/amarre")).unwrap();
    let home_s = home.display().to_string();
    let no_xdg: [(&str, &str); 3] = [
        ("HOME", &home_s),
        ("XDG_STATE_HOME", ""),
        ("XDG_CONFIG_HOME", ""),
    ];

    // None: 401, exit 6, a message saying what to do.
    let (code, _, err) = cli(&["send", "s", "x", "--url", &url], &no_xdg).await;
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("unauthorized") && err.contains("--token-file"),
        "{err}"
    );
    // --token-file.
    let f = file.display().to_string();
    let (code, _, err) = cli(
        &["send", "s", "x", "--url", &url, "--token-file", &f],
        &no_xdg,
    )
    .await;
    assert_eq!(code, 5, "accepted, then no session `s`: {err}");
    // AMARRE_TOKEN.
    let env: Vec<(&str, &str)> = no_xdg
        .iter()
        .copied()
        .chain([("AMARRE_TOKEN", "s3cret")])
        .collect();
    let (code, _, err) = cli(&["send", "s", "x", "--url", &url], &env).await;
    assert_eq!(code, 5, "{err}");
    // A wrong one: exit 6 naming where it came from, never the token.
    let env: Vec<(&str, &str)> = no_xdg
        .iter()
        .copied()
        .chain([("AMARRE_TOKEN", "wrong")])
        .collect();
    let (code, _, err) = cli(&["send", "s", "x", "--url", &url], &env).await;
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("AMARRE_TOKEN") && !err.contains("wrong"),
        "{err}"
    );
    // The local daemon's token file (a loopback URL counts as local).
    std::fs::write(home.join(".config/amarre/token"), "s3cret").unwrap();
    let (code, _, err) = cli(&["send", "s", "x", "--url", &url], &no_xdg).await;
    assert_eq!(code, 5, "{err}");
    // The WebSocket upgrade carries it too.
    let (code, out, err) = cli(
        &[
            "send",
            "ws",
            "hi",
            "--wait",
            "--url",
            &url,
            "--token-file",
            &f,
        ],
        &no_xdg,
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "ok from the stand-in\n"), "{err}");
    let got = seen.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            None,
            Some("Bearer s3cret".into()),
            Some("Bearer s3cret".into()),
            Some("Bearer wrong".into()),
            Some("Bearer s3cret".into()),
            Some("Bearer s3cret".into()),
            Some("ws Bearer s3cret".into()),
        ]
    );
    task.abort();
}

#[tokio::test]
async fn attach_drives_the_real_pi_cli_against_the_fake_llm() {
    let _serial = agent_lock().await;
    let pi = OfflinePi::start().await;
    let mut env = pi.env();
    env["PI_BIN"] = json!(agent_cli("pi"));
    let instances =
        json!([{"id": "default", "agent": "pi", "env": env, "args": PI_OFFLINE_ARGS}]).to_string();
    let d = Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", &instances),
        ("AMARRE_KILL_GRACE_MS", "2000"),
    ])
    .await;
    let work = TempDir::new("cli-pi");
    let s = d.create(json!({"cwd": work.path(), "name": "pi"})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let t = Tmux::start(&["attach", "pi", "--url", &d.url], &[]);
    t.wait_screen("connected").await;
    t.say("Please RUN: touch from-terminal.txt");
    // pi's gate asks before the tool runs.
    t.wait_screen("Run bash?").await;
    t.keys(&["y"]);
    t.wait_for("[answered: yes]").await;
    t.wait_for("Done:").await;
    assert!(
        work.path().join("from-terminal.txt").exists(),
        "{}",
        t.everything()
    );
    t.say("hello pi");
    t.wait_for("You said: hello pi").await;
    t.keys(&["C-c"]);
    t.keys(&["C-c"]);
    t.wait_for("[exit 0]").await;
    let (_, s) = d.get(&format!("/sessions/{id}")).await;
    assert_eq!(s["status"], "running");
}

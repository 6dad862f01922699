//! The harness: the real daemon on a free loopback port, an HTTP client and
//! a WebSocket client whose every await has a timeout naming what it
//! waited for.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one step may take before the test fails naming it.
pub const STEP: Duration = Duration::from_secs(15);

pub fn daemon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_amarre-e2e-daemon")
}

pub fn fake_agent() -> &'static str {
    env!("CARGO_BIN_EXE_fake-agent")
}

/// A component built from `adapters-wasm/` (fixtures included).
pub fn adapter_file(name: &str) -> PathBuf {
    PathBuf::from(amarre::adapter::builtin::BUILT_ADAPTERS_DIR).join(format!("{name}.wasm"))
}

/// A scratch directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("amarre-e2e-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `AMARRE_INSTANCES_JSON` for one fake-agent instance `default`.
pub fn fake_instance(env: Value) -> String {
    serde_json::json!([{"id": "default", "agent": "stdio", "command": fake_agent(), "env": env}])
        .to_string()
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    stderr: Arc<Mutex<String>>,
    http: reqwest::Client,
}

fn base_command(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(daemon_bin());
    cmd.arg("serve");
    for (k, _) in std::env::vars() {
        if k.starts_with("AMARRE_") || k == "PI_BIN" || k == "CLAUDE_BIN" {
            cmd.env_remove(k);
        }
    }
    // Compiled components are shared by the tests' daemons, kept out of
    // the user's own cache.
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-component-cache");
    cmd.env("AMARRE_PORT", "0")
        .env("AMARRE_LOG", "info,amarre=debug")
        .env("AMARRE_CACHE_DIR", cache);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    if let Some(stderr) = child.stderr.take() {
        let b = buf.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("AMARRE_TEST_LOG").is_some() {
                    eprintln!("[daemon] {line}");
                }
                let mut b = b.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
            }
        });
    }
    buf
}

impl Daemon {
    /// Starts the daemon with these environment variables (and AMARRE_PORT=0).
    pub async fn start(env: &[(&str, &str)]) -> Daemon {
        Daemon::start_args(env, &[]).await
    }

    /// Starts the daemon with extra `serve` flags.
    pub async fn start_args(env: &[(&str, &str)], args: &[&str]) -> Daemon {
        Daemon::start_in(None, env, args).await
    }

    /// Starts the daemon in directory `dir` (else the tests' own cwd).
    pub async fn start_in(
        dir: Option<&std::path::Path>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Daemon {
        let mut cmd = base_command(env);
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the daemon");
        let stderr = collect_stderr(&mut child);
        let stdout = child.stdout.take().expect("daemon stdout");
        let first = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(stdout);
            let _ = reader.read_line(&mut line);
            // Keep draining so the daemon never blocks on stdout.
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = reader.read_to_end(&mut sink);
            });
            line
        });
        let line = match tokio::time::timeout(STEP, first).await {
            Ok(Ok(line)) => line,
            _ => panic!(
                "the daemon did not print its listening line in time; stderr:\n{}",
                stderr.lock().unwrap()
            ),
        };
        assert!(
            line.starts_with("amarre listening on http://"),
            "unexpected first stdout line {line:?}; stderr:\n{}",
            stderr.lock().unwrap()
        );
        let url = line
            .trim()
            .trim_start_matches("amarre listening on ")
            .to_owned();
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in the listening line");
        Daemon {
            child: Some(child),
            port,
            url,
            stderr,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("http client"),
        }
    }

    /// Runs `amarre serve` expecting it to fail at start-up: (exit code, stderr).
    pub async fn start_failing(env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
        let mut cmd = base_command(env);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = tokio::time::timeout(STEP, tokio::task::spawn_blocking(move || cmd.output()))
            .await
            .expect("the daemon should exit at start-up")
            .expect("join")
            .expect("run the daemon");
        assert!(
            out.stdout.is_empty(),
            "a failing start must not print the listening line: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + STEP;
        while !self.log().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the log never said {needle:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the daemon this harness started.
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// Waits for the daemon to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        tokio::time::timeout(STEP, tokio::task::spawn_blocking(move || child.wait()))
            .await
            .expect("the daemon should exit")
            .expect("join")
            .expect("wait")
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> (u16, Value) {
        let resp = tokio::time::timeout(STEP, req.send())
            .await
            .unwrap_or_else(|_| panic!("timed out: {what}"))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(
            self.http.get(format!("{}{path}", self.url)),
            &format!("GET {path}"),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.url))
                .body(body.to_owned()),
            &format!("POST {path}"),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(
            self.http.delete(format!("{}{path}", self.url)),
            &format!("DELETE {path}"),
        )
        .await
    }

    /// Creates a session (expects 201) and returns its summary.
    pub async fn create(&self, body: Value) -> Value {
        let (status, summary) = self.post("/sessions", &body.to_string()).await;
        assert_eq!(
            status,
            201,
            "POST /sessions {body}: {summary}\nlog:\n{}",
            self.log()
        );
        summary
    }

    /// Waits until the session's summary satisfies `pred`.
    pub async fn wait_summary(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let (_, s) = self.get(&format!("/sessions/{id}")).await;
            if pred(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "session {id} never got {what}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens a WebSocket to `/sessions/{id}{query}`.
    pub async fn ws(&self, id: &str, query: &str) -> Ws {
        self.ws_with(id, query, &[]).await
    }

    /// Opens a WebSocket with extra request headers.
    pub async fn ws_with(&self, id: &str, query: &str, headers: &[(&str, &str)]) -> Ws {
        let url = format!("ws://127.0.0.1:{}/sessions/{id}{query}", self.port);
        let mut req = url.as_str().into_client_request().expect("ws request");
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
            .await
            .unwrap_or_else(|_| panic!("timed out connecting a WebSocket to {url}"))
            .unwrap_or_else(|e| panic!("WebSocket to {url}: {e}"));
        Ws { ws }
    }

    /// Attempts an upgrade and returns the HTTP status and body of a refusal.
    pub async fn ws_refused(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let url = format!("ws://127.0.0.1:{}{path}", self.port);
        let mut req = url.as_str().into_client_request().expect("ws request");
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
            .await
            .expect("ws attempt")
        {
            Ok(_) => panic!("the upgrade to {path} should have been refused"),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                (resp.status().as_u16(), body)
            }
            Err(e) => panic!("unexpected upgrade error for {path}: {e}"),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A WebSocket client.
pub struct Ws {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a socket ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    pub code: Option<u16>,
    pub reason: String,
}

impl Ws {
    pub async fn send_text(&mut self, text: &str) {
        tokio::time::timeout(STEP, self.ws.send(Message::text(text.to_owned())))
            .await
            .expect("timed out sending")
            .expect("send");
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    /// The next text frame (pings and pongs skipped).
    pub async fn recv_text(&mut self, what: &str) -> String {
        loop {
            let msg = tokio::time::timeout(STEP, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .unwrap_or_else(|| panic!("socket ended while waiting for {what}"))
                .unwrap_or_else(|e| panic!("socket error while waiting for {what}: {e}"));
            match msg {
                Message::Text(t) => return t.to_string(),
                Message::Close(f) => panic!("socket closed ({f:?}) while waiting for {what}"),
                _ => continue,
            }
        }
    }

    /// The next text frame as JSON.
    pub async fn recv_json(&mut self, what: &str) -> Value {
        let t = self.recv_text(what).await;
        serde_json::from_str(&t).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {t}"))
    }

    /// Receives records until one satisfies `pred`.
    pub async fn recv_until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.recv_json(what).await;
            if pred(&v) {
                return v;
            }
        }
    }

    /// Reads until the server closes the socket; returns the close frame
    /// and the text frames that came before it.
    pub async fn closed(&mut self, what: &str) -> (Closed, Vec<String>) {
        let mut texts = Vec::new();
        loop {
            let msg = tokio::time::timeout(STEP, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for the close: {what}"));
            match msg {
                Some(Ok(Message::Text(t))) => texts.push(t.to_string()),
                Some(Ok(Message::Close(f))) => {
                    return (
                        Closed {
                            code: f.as_ref().map(|f| u16::from(f.code)),
                            reason: f.map(|f| f.reason.to_string()).unwrap_or_default(),
                        },
                        texts,
                    );
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error waiting for the close ({what}): {e}"),
                None => {
                    return (
                        Closed {
                            code: None,
                            reason: String::new(),
                        },
                        texts,
                    );
                }
            }
        }
    }

    /// Asserts nothing arrives within `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration, what: &str) {
        loop {
            match tokio::time::timeout(quiet, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) => panic!("{what}: unexpected record {t}"),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("{what}: unexpected {other:?}"),
            }
        }
    }
}

/// Whether any process of group `pgid` exists (zombies excluded).
pub fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command (which may contain spaces): state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            return true;
        }
    }
    false
}

/// Whether process `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

/// Waits until `pred` holds, failing with `what`.
pub async fn eventually(what: &str, pred: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !pred() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long one step with a real agent CLI may take (they start in about a
/// second, but 2 shared cores under a parallel test run are slow).
pub const AGENT_STEP: Duration = Duration::from_secs(60);

/// Real-agent tests run one at a time: they are heavy, and the shared
/// cores must not starve their timeouts.
pub async fn agent_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A CLI installed by `scripts/setup-agents` into tests/agents.
pub fn agent_cli(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("agents/node_modules/.bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-agents (scripts/test does it) to install the pinned agent CLIs",
        path.display()
    );
    path
}

impl Ws {
    /// The records of an agent turn up to and including its `agent_end`,
    /// within [`AGENT_STEP`].
    pub async fn until_agent_end(&mut self, what: &str) -> Vec<Value> {
        self.recv_until_within(AGENT_STEP, what, |v| v["type"] == "agent_end")
            .await
    }

    /// Receives records until one satisfies `pred`, within `within`;
    /// returns every record seen, the matching one last.
    pub async fn recv_until_within(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    let types: Vec<String> =
                        seen.iter().map(|v: &Value| v["type"].to_string()).collect();
                    panic!("timed out waiting for {what}; saw types {types:?}")
                })
                .unwrap_or_else(|| panic!("socket ended while waiting for {what}"))
                .unwrap_or_else(|e| panic!("socket error while waiting for {what}: {e}"));
            let text = match msg {
                Message::Text(t) => t.to_string(),
                Message::Close(f) => {
                    panic!("socket closed ({f:?}) while waiting for {what}; saw {seen:?}")
                }
                _ => continue,
            };
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
            let done = pred(&v);
            seen.push(v);
            if done {
                return seen;
            }
        }
    }
}

/// Runs the CLI; returns (exit code, stdout, stderr).
pub async fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(daemon_bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("AMARRE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = tokio::time::timeout(STEP, tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .expect("the CLI should finish")
        .expect("join")
        .expect("run the CLI");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// pi's arguments for a quiet offline run on the fake model (the pi adapter
/// adds `--mode rpc` itself).
pub const PI_OFFLINE_ARGS: &[&str] = &[
    "--no-session",
    "--offline",
    "--model",
    "fake/fake-model",
    "--no-extensions",
    "--no-skills",
    "--no-prompt-templates",
    "--no-context-files",
    "--no-themes",
];

/// A fake LLM and a pi home whose `models.json` points at it
/// (AGENTS.md section 4).
pub struct OfflinePi {
    pub llm: amarre_e2e::fake_llm::FakeLlm,
    pub home: TempDir,
}

impl OfflinePi {
    pub async fn start() -> OfflinePi {
        let llm = amarre_e2e::fake_llm::FakeLlm::start().await;
        let home = TempDir::new("pi-home");
        let agent_dir = home.path().join("agent");
        std::fs::create_dir_all(&agent_dir).unwrap();
        std::fs::write(
            agent_dir.join("models.json"),
            serde_json::json!({"providers": {"fake": {
                "baseUrl": llm.url, "api": "anthropic-messages", "apiKey": "dummy",
                "models": [{"id": "fake-model"}],
            }}})
            .to_string(),
        )
        .unwrap();
        OfflinePi { llm, home }
    }

    /// The environment pi needs to run offline against the fake LLM.
    pub fn env(&self) -> Value {
        serde_json::json!({
            "PI_CODING_AGENT_DIR": self.home.path().join("agent"),
            "PI_OFFLINE": "1",
            "PI_SKIP_VERSION_CHECK": "1",
            "HOME": self.home.path(),
        })
    }
}

//! The benchmark behind `amarre-bench` (docs/PERFORMANCE.md): relay loops
//! over REST and WebSockets against any server speaking the amarre protocol
//! (given an instance whose agent echoes lines; the floors they are
//! compared with are in [`crate::floor`]), the daemon's memory and start-up
//! time, and adapter translation costs through the real host.
//!
//! Records are `{"i":N,"p":"xxx..."}` padded to the requested size; the
//! receivers read `i` from the record's prefix (no JSON parse) and check
//! that every record arrives once and in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Where to relay through.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port`.
    pub url: String,
    /// The instance to create sessions on (its agent must echo lines).
    pub instance: Option<String>,
}

fn fail(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// A record of `size` bytes carrying `i`.
pub fn record(i: u64, size: usize) -> String {
    let head = format!("{{\"i\":{i},\"p\":\"");
    let pad = size.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// Reads `i` from a record's prefix.
pub fn index_of(text: &[u8]) -> Option<u64> {
    let rest = text.strip_prefix(b"{\"i\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

impl Target {
    fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client")
    }

    /// Creates a session; returns its id.
    pub async fn create(&self) -> Result<String, String> {
        let body = match &self.instance {
            Some(i) => json!({"instanceId": i}),
            None => json!({}),
        };
        let resp = self
            .http()
            .post(format!("{}/sessions", self.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| fail("POST /sessions", e))?;
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .map_err(|e| fail("POST /sessions body", e))?;
        if status.as_u16() != 201 {
            return Err(format!("POST /sessions answered {status}: {v}"));
        }
        v["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no id in {v}"))
    }

    pub async fn delete(&self, id: &str) {
        let _ = self
            .http()
            .delete(format!("{}/sessions/{id}", self.url))
            .send()
            .await;
    }

    pub async fn connect(&self, id: &str) -> Result<Ws, String> {
        self.connect_query(id, "").await
    }

    /// [`Target::connect`] with a query string (`?since=0`, ...).
    pub async fn connect_query(&self, id: &str, query: &str) -> Result<Ws, String> {
        let ws_url = format!(
            "{}/sessions/{id}{query}",
            self.url.replacen("http", "ws", 1)
        );
        // Nagle off, as a latency-sensitive client would have it.
        let (ws, _) = tokio_tungstenite::connect_async_with_config(&ws_url, None, true)
            .await
            .map_err(|e| fail(&ws_url, e))?;
        Ok(ws)
    }
}

async fn next_text(ws: &mut Ws) -> Result<Vec<u8>, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_bytes().to_vec()),
            Some(Ok(Message::Close(f))) => return Err(format!("closed: {f:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("socket ended".into()),
        }
    }
}

/// Round trips of one record at a time; microseconds per round trip.
///
/// The client is the cheapest there is: blocking reads and writes on a
/// thread of its own (tungstenite without a runtime, `TCP_NODELAY`), so a
/// round trip adds one wake-up on the client's side, as the pipe floor's
/// reader does, and the figure is the server's, not an async client's.
pub async fn latency(target: &Target, n: u64, size: usize) -> Result<Vec<f64>, String> {
    let id = target.create().await?;
    let ws_url = format!("{}/sessions/{id}", target.url.replacen("http", "ws", 1));
    let out = tokio::task::spawn_blocking(move || blocking_latency(&ws_url, n, size))
        .await
        .map_err(|e| fail("latency thread", e))?;
    target.delete(&id).await;
    out
}

fn blocking_latency(ws_url: &str, n: u64, size: usize) -> Result<Vec<f64>, String> {
    use tokio_tungstenite::tungstenite::stream::MaybeTlsStream;
    let (mut ws, _) =
        tokio_tungstenite::tungstenite::connect(ws_url).map_err(|e| fail(ws_url, e))?;
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_nodelay(true).map_err(|e| fail("TCP_NODELAY", e))?;
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let rec = record(i, size);
        let t = Instant::now();
        ws.send(Message::text(rec)).map_err(|e| fail("send", e))?;
        let got = loop {
            match ws.read().map_err(|e| fail("read", e))? {
                Message::Text(t) => break t,
                Message::Close(f) => return Err(format!("closed: {f:?}")),
                _ => continue,
            }
        };
        out.push(t.elapsed().as_secs_f64() * 1e6);
        if index_of(got.as_bytes()) != Some(i) {
            return Err(format!("latency: expected record {i}, got {got}"));
        }
    }
    let _ = ws.close(None);
    let _ = ws.flush();
    Ok(out)
}

/// The result of a pipelined run.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
}

impl Flow {
    pub fn rps(&self) -> f64 {
        self.records as f64 / self.seconds
    }
    pub fn mbps(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e6
    }
}

/// How far a receiver got, and a wake-up for the sender.
#[derive(Default)]
pub struct Progress {
    received: AtomicU64,
    changed: tokio::sync::Notify,
}

impl Progress {
    fn get(&self) -> u64 {
        self.received.load(Ordering::Acquire)
    }

    fn set(&self, n: u64) {
        self.received.store(n, Ordering::Release);
        self.changed.notify_one();
    }
}

/// Sends `n` records keeping at most `window` ahead of the slowest of
/// `progress`, sleeping (not spinning) while the window is full.
async fn pump(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    n: u64,
    size: usize,
    window: u64,
    progress: Vec<Arc<Progress>>,
) -> Result<(), String> {
    let mut i = 0;
    while i < n {
        let (slowest, which) = progress
            .iter()
            .enumerate()
            .map(|(k, p)| (p.get(), k))
            .min()
            .unwrap_or((0, 0));
        if i - slowest >= window {
            let p = &progress[which];
            let notified = p.changed.notified();
            if p.get() == slowest {
                notified.await;
            }
            continue;
        }
        let burst = (window - (i - slowest)).min(n - i).min(64);
        for _ in 0..burst {
            sink.feed(Message::text(record(i, size)))
                .await
                .map_err(|e| fail("send", e))?;
            i += 1;
        }
        sink.flush().await.map_err(|e| fail("flush", e))?;
    }
    Ok(())
}

async fn drain(
    mut stream: futures_util::stream::SplitStream<Ws>,
    n: u64,
    progress: Arc<Progress>,
) -> Result<(), String> {
    let mut expected = 0;
    while expected < n {
        let msg = match stream.next().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                return Err(format!("closed after {expected} records: {f:?}"));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err(format!("ended after {expected} records")),
        };
        match index_of(msg.as_bytes()) {
            Some(i) if i == expected => {
                expected += 1;
                progress.set(expected);
            }
            other => return Err(format!("out of order: expected {expected}, got {other:?}")),
        }
    }
    Ok(())
}

/// One session, one client, pipelined with a bounded window.
pub async fn throughput(target: &Target, n: u64, size: usize, window: u64) -> Result<Flow, String> {
    let id = target.create().await?;
    let ws = target.connect(&id).await?;
    let (sink, stream) = ws.split();
    let progress = Arc::new(Progress::default());
    let t = Instant::now();
    let reader = tokio::spawn(drain(stream, n, progress.clone()));
    pump(sink, n, size, window, vec![progress]).await?;
    reader.await.map_err(|e| fail("reader", e))??;
    let seconds = t.elapsed().as_secs_f64();
    target.delete(&id).await;
    Ok(Flow {
        records: n,
        bytes: n * size as u64,
        seconds,
    })
}

/// One sender, `clients` more receivers on the same session; delivered
/// records counted over every receiver (the sender included).
pub async fn fanout(
    target: &Target,
    n: u64,
    size: usize,
    window: u64,
    clients: usize,
) -> Result<Flow, String> {
    let id = target.create().await?;
    let (sink, sender_stream) = target.connect(&id).await?.split();
    let mut readers = Vec::new();
    let mut progress = Vec::new();
    let p = Arc::new(Progress::default());
    progress.push(p.clone());
    readers.push(tokio::spawn(drain(sender_stream, n, p)));
    for _ in 0..clients {
        let (_sink, stream) = target.connect(&id).await?.split();
        let p = Arc::new(Progress::default());
        progress.push(p.clone());
        readers.push(tokio::spawn(async move {
            let _keep = _sink;
            drain(stream, n, p).await
        }));
    }
    let t = Instant::now();
    pump(sink, n, size, window, progress).await?;
    for r in readers {
        r.await.map_err(|e| fail("reader", e))??;
    }
    let seconds = t.elapsed().as_secs_f64();
    target.delete(&id).await;
    let receivers = clients as u64 + 1;
    Ok(Flow {
        records: n * receivers,
        bytes: n * receivers * size as u64,
        seconds,
    })
}

/// `s` sessions in parallel, one pipelined client each; aggregate flow.
pub async fn sessions(
    target: &Target,
    s: usize,
    n: u64,
    size: usize,
    window: u64,
) -> Result<Flow, String> {
    let t = Instant::now();
    let runs: Vec<_> = (0..s)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move { throughput(&target, n, size, window).await })
        })
        .collect();
    for r in runs {
        r.await.map_err(|e| fail("session run", e))??;
    }
    Ok(Flow {
        records: n * s as u64,
        bytes: n * s as u64 * size as u64,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Reads `i` from a record anywhere in it (after an added `_seq`).
pub fn index_in(text: &[u8]) -> Option<u64> {
    let at = text.windows(4).position(|w| w == b"\"i\":")?;
    let rest = &text[at + 4..];
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// A session whose replay buffer holds `n` records of `size` bytes (sent
/// by a first client, `window` at a time, which then closes); then a client
/// reconnects with `?since=0`. Microseconds from its connect to the last
/// replayed record, every record checked once and in order.
pub async fn reconnect(target: &Target, n: u64, size: usize, window: u64) -> Result<f64, String> {
    let id = target.create().await?;
    let mut filler = target.connect(&id).await?;
    let mut i = 0;
    while i < n {
        let burst = (n - i).min(window);
        for k in i..i + burst {
            filler
                .feed(Message::text(record(k, size)))
                .await
                .map_err(|e| fail("send", e))?;
        }
        filler.flush().await.map_err(|e| fail("flush", e))?;
        for k in i..i + burst {
            let got = next_text(&mut filler).await?;
            if index_of(&got) != Some(k) {
                return Err(format!("reconnect: filling, expected record {k}"));
            }
        }
        i += burst;
    }
    let _ = filler.close(None).await;
    let t = Instant::now();
    let mut ws = target.connect_query(&id, "?since=0").await?;
    let mut expected = 0;
    while expected < n {
        let got = next_text(&mut ws).await?;
        // `amarre.hello` comes first and carries no `_seq`.
        if !got.starts_with(b"{\"_seq\"") && got.windows(12).any(|w| w == b"amarre.hello") {
            continue;
        }
        if index_in(&got) != Some(expected) {
            return Err(format!(
                "reconnect: expected record {expected}, got {}",
                String::from_utf8_lossy(&got[..got.len().min(120)])
            ));
        }
        expected += 1;
    }
    let micros = t.elapsed().as_secs_f64() * 1e6;
    let _ = ws.close(None).await;
    target.delete(&id).await;
    Ok(micros)
}

/// The spawn loop's times in microseconds, one entry per spawn: the whole
/// of it (POST to the first echo), and the two steps on the way.
#[derive(Debug, Default)]
pub struct Spawns {
    /// `POST /sessions` to the first echo on a new socket.
    pub total: Vec<f64>,
    /// `POST /sessions` sent to its `201` read.
    pub post: Vec<f64>,
    /// The `201` to the socket's `101`.
    pub open: Vec<f64>,
}

/// `k` times: `POST /sessions`, open a socket, send a record, wait for its
/// echo, then close and delete the session.
pub async fn spawn(target: &Target, k: usize) -> Result<Spawns, String> {
    let mut out = Spawns::default();
    for _ in 0..k {
        let t = Instant::now();
        let id = target.create().await?;
        let posted = t.elapsed();
        let mut ws = target.connect(&id).await?;
        let opened = t.elapsed();
        ws.send(Message::text(record(0, 64)))
            .await
            .map_err(|e| fail("send", e))?;
        let got = next_text(&mut ws).await?;
        out.total.push(t.elapsed().as_secs_f64() * 1e6);
        out.post.push(posted.as_secs_f64() * 1e6);
        out.open.push((opened - posted).as_secs_f64() * 1e6);
        if index_of(&got) != Some(0) {
            return Err(format!(
                "spawn: unexpected first record {}",
                String::from_utf8_lossy(&got)
            ));
        }
        drop(ws);
        target.delete(&id).await;
    }
    Ok(out)
}

/// Memory and start-up of a daemon process.
pub mod daemon {
    use super::*;

    /// `(VmRSS, VmHWM)` in KiB.
    pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// A daemon this program started.
    pub struct Started {
        pub child: std::process::Child,
        pub url: String,
        /// From spawn to the first 200 on /healthz.
        pub ready: Duration,
    }

    impl Drop for Started {
        fn drop(&mut self) {
            // SAFETY: SIGTERM to the daemon this program started.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
            let _ = self.child.wait();
        }
    }

    /// Starts `bin serve` on a free port with `env`, and waits for a
    /// ready /healthz.
    pub async fn start(bin: &str, env: &[(&str, &str)]) -> Result<Started, String> {
        use std::io::BufRead;
        let t = Instant::now();
        let mut child = std::process::Command::new(bin)
            .arg("serve")
            .env("AMARRE_PORT", "0")
            .env("AMARRE_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| fail(bin, e))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            std::thread::spawn(move || {
                let mut sink = String::new();
                while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                    sink.clear();
                }
            });
            line
        })
        .await
        .map_err(|e| fail("listening line", e))?;
        let url = line
            .trim()
            .strip_prefix("amarre listening on ")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .to_owned();
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| fail("client", e))?;
        loop {
            if let Ok(r) = http.get(format!("{url}/healthz")).send().await
                && r.status().is_success()
            {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                return Err("the daemon never answered /healthz".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(Started {
            ready: t.elapsed(),
            child,
            url,
        })
    }
}

/// Translation cost of one record through the real host.
pub mod translate {
    use std::path::Path;
    use std::sync::Arc;

    use amarre::adapter::{Adapter, AdapterHost, AdapterLimits, SpawnRequest};

    use super::*;

    /// Loads a built-in by name, or a component file (a path ending `.wasm`).
    pub async fn load(host: &AdapterHost, adapter: &str) -> Result<Arc<Adapter>, String> {
        let loaded = if adapter.ends_with(".wasm") {
            host.load_file(Path::new(adapter)).await
        } else {
            host.load_builtin(adapter).await
        };
        loaded.map_err(|e| e.to_string())
    }

    /// What one [`cost`] run measured.
    pub struct Cost {
        /// Microseconds per call.
        pub micros: Vec<f64>,
        /// The instance's linear memory after the calls, in bytes.
        pub memory_bytes: usize,
    }

    /// A Claude Code `stream_event` text delta of about 200 bytes.
    pub const TEXT_DELTA: &str = r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello, this is a delta"}},"session_id":"50a00af9-3256-4781-b5c1-95de3b4eab86","parent_tool_use_id":null,"uuid":"fee194de-702e-4162-bd95-eb025ca98ac8"}"#;

    /// A Claude Code permission question (a tool call).
    pub const TOOL_CALL: &str = r#"{"type":"control_request","request_id":"c5864b86-e5e6-4e7e-95dd-d4dec0f5b224","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"touch made.txt","description":"Run the requested command"},"tool_use_id":"toolu_1"}}"#;

    /// An ACP `agent_message_chunk` (a text chunk, as qwen-code sends it).
    pub const ACP_TEXT_CHUNK: &str = r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"b1f0c6a2-3f5e-4c7a-9d41-0e2f7a9c5d10","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"Hello, this is a delta"}}}}"#;

    /// An ACP `tool_call_update` in progress with a line of output.
    pub const ACP_TOOL_UPDATE: &str = r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"b1f0c6a2-3f5e-4c7a-9d41-0e2f7a9c5d10","update":{"sessionUpdate":"tool_call_update","toolCallId":"call_fake_1","status":"in_progress","content":[{"type":"content","content":{"type":"text","text":"Command: touch made.txt\nOutput: (empty)"}}]}}}"#;

    /// What an ACP agent answers to the `acp` adapter's handshake, then
    /// the `tool_call` the tool update refers to (agent lines, in order).
    pub const ACP_SETUP: &[&str] = &[
        r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"agentCapabilities":{"loadSession":true},"agentInfo":{"name":"qwen-code","version":"0.24.4"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"sessionId":"b1f0c6a2-3f5e-4c7a-9d41-0e2f7a9c5d10","modes":{"currentModeId":"default"}}}"#,
        r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"b1f0c6a2-3f5e-4c7a-9d41-0e2f7a9c5d10","update":{"sessionUpdate":"tool_call","toolCallId":"call_fake_1","title":"Shell","kind":"execute","status":"pending","rawInput":{"command":"touch made.txt"}}}}"#,
    ];

    /// Per-call microseconds of `line` through `adapter`'s from-agent
    /// (a session created with `env`), after `setup` lines.
    pub async fn cost(
        adapter: &Arc<Adapter>,
        env: &[(&str, &str)],
        setup: &[&str],
        client_setup: &[&str],
        line: &str,
        calls: usize,
    ) -> Result<Cost, String> {
        let mut inst = adapter.instantiate().await.map_err(|e| e.to_string())?;
        let req = SpawnRequest {
            session_id: "000000000000".into(),
            instance_id: "bench".into(),
            command: Some("cat".into()),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        inst.create_session(&req, None)
            .await
            .map_err(|e| e.to_string())?;
        // As the host does (nothing for 0.1.0 adapters).
        inst.handshake().await.map_err(|e| e.to_string())?;
        for c in client_setup {
            inst.from_client(c).await.map_err(|e| e.to_string())?;
        }
        for s in setup {
            inst.from_agent(s).await.map_err(|e| e.to_string())?;
        }
        // Warm up, then measure each call.
        for _ in 0..100 {
            inst.from_agent(line).await.map_err(|e| e.to_string())?;
        }
        let mut out = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            let emits = inst.from_agent(line).await.map_err(|e| e.to_string())?;
            out.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(emits);
        }
        Ok(Cost {
            micros: out,
            memory_bytes: inst.memory_bytes(),
        })
    }

    /// A host without a disk cache.
    pub fn host() -> Result<AdapterHost, String> {
        AdapterHost::new(AdapterLimits::default()).map_err(|e| e.to_string())
    }

    /// Compile (uncached) and instantiate times of a built-in or a
    /// component file, in ms.
    pub async fn load_times(adapter: &str, runs: usize) -> Result<(Vec<f64>, Vec<f64>), String> {
        let mut compile = Vec::new();
        let mut instantiate = Vec::new();
        for _ in 0..runs {
            let host = host()?;
            let t = Instant::now();
            let a = load(&host, adapter).await?;
            compile.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let inst = a.instantiate().await.map_err(|e| e.to_string())?;
            instantiate.push(t.elapsed().as_secs_f64() * 1e3);
            drop(inst);
        }
        Ok((compile, instantiate))
    }
}

/// `p` (0-100) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Sorts in place and returns it.
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// `median (min-max)` of per-run values.
pub fn spread(values: &[f64], digits: usize) -> String {
    let s = sorted(values.to_vec());
    format!(
        "{:.d$} ({:.d$}-{:.d$})",
        percentile(&s, 50.0),
        s.first().copied().unwrap_or(f64::NAN),
        s.last().copied().unwrap_or(f64::NAN),
        d = digits
    )
}

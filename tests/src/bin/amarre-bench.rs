//! `amarre-bench`: measures the relay and the adapters (docs/PERFORMANCE.md).
//!
//! - `all`: starts the daemon itself and runs everything below, R times.
//! - `relay --url URL [--instance ID] [--pid PID]`: the relay loops against
//!   any server speaking the amarre protocol whose instance echoes lines.
//! - `baseline`: the floors: the same loops straight over a `cat` child's
//!   pipes (blocking I/O on dedicated threads) and through a minimal
//!   WebSocket echo server (`ws-echo`, started as a child).
//! - `compare A B`: the relay suite for two daemon binaries, alternating
//!   rounds in one run, with the floors, each figure's ratio.
//! - `translate`: per-record adapter cost through the real host.
//! - `languages`: the redact adapter in JavaScript next to its Rust twin.
//! - `durable`: durable sessions' cost (persistence on versus off).
//! - `guests`: the translated relay, and how long /healthz and another
//!   session wait while two sessions' adapters loop on large lines.

use std::path::PathBuf;
use std::time::Instant;

use amarre_e2e::bench::{self, Target, daemon, percentile, sorted, spread, translate};
use amarre_e2e::floor;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(
    name = "amarre-bench",
    about = "Measure the amarre relay and its adapters"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Repetitions of every measurement (figures are median (min-max)).
    #[arg(long, default_value_t = 5, global = true)]
    runs: usize,
    /// Record size in bytes.
    #[arg(long, default_value_t = 200, global = true)]
    size: usize,
    /// Let idle CPUs halt instead of holding a 0 µs wake-up latency
    /// request (docs/PERFORMANCE.md, "The machine").
    #[arg(long, global = true)]
    cpu_idle_halt: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the daemon and measure everything.
    All {
        /// The daemon binary (default: `amarre` next to this program).
        #[arg(long)]
        daemon: Option<PathBuf>,
    },
    /// Relay loops against a running server.
    Relay {
        #[arg(long, default_value = "http://127.0.0.1:8341")]
        url: String,
        /// An instance whose agent echoes lines (default: the server's default).
        #[arg(long)]
        instance: Option<String>,
        /// The server's pid, to report its memory.
        #[arg(long)]
        pid: Option<u32>,
        /// Only these loops (comma list of latency, throughput, fanout,
        /// sessions, spawn), e.g. to profile one.
        #[arg(long, default_value = ALL_LOOPS)]
        loops: String,
    },
    /// The floors: the loops over a `cat` child's pipes (blocking I/O) and
    /// through a minimal WebSocket echo server.
    Baseline,
    /// The relay suite for two daemon binaries, alternating rounds in one
    /// run (A then B, then B then A, ...), with the floors measured in the
    /// same rounds; prints each figure for both, B/A, and each against the
    /// floors.
    Compare {
        /// The "before" daemon binary.
        a: PathBuf,
        /// The "after" daemon binary.
        b: PathBuf,
        /// Only these loops (comma list of latency, throughput, fanout,
        /// sessions, spawn, reconnect).
        #[arg(long, default_value = ALL_LOOPS)]
        loops: String,
    },
    /// The minimal WebSocket echo server of the floor (started by the
    /// bench itself; prints its URL, stops when its stdin closes).
    #[command(hide = true)]
    WsEcho,
    /// Translator cost per record through the host.
    Translate,
    /// The redact adapter in JavaScript next to its Rust twin: size,
    /// compile and instantiate time, memory, per-record cost.
    Languages,
    /// Durable sessions: relay with a state directory and without, restore
    /// time, log bytes per record.
    Durable {
        /// The daemon binary (default: `amarre` next to this program).
        #[arg(long)]
        daemon: Option<PathBuf>,
    },
    /// The translated relay (claude-code) and the stall a looping adapter
    /// causes elsewhere (issue 22 item 2).
    Guests {
        /// The daemon binary (default: `amarre` next to this program).
        #[arg(long)]
        daemon: Option<PathBuf>,
    },
    /// Hot-reload time of the claude-code component, uncached and cached.
    Reload {
        /// The daemon binary (default: `amarre` next to this program).
        #[arg(long)]
        daemon: Option<PathBuf>,
    },
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

struct Sizes {
    latency: u64,
    throughput: u64,
    window: u64,
    fanout: u64,
    clients: usize,
    sessions: usize,
    per_session: u64,
    spawns: usize,
    replay: u64,
}

const SIZES: Sizes = Sizes {
    latency: 2000,
    throughput: 100_000,
    window: 256,
    fanout: 20_000,
    clients: 10,
    sessions: 8,
    per_session: 20_000,
    spawns: 20,
    replay: 10_000,
};

#[derive(Default)]
struct Relay {
    p50: Vec<f64>,
    p99: Vec<f64>,
    p999: Vec<f64>,
    rps: Vec<f64>,
    mbps: Vec<f64>,
    fan_rps: Vec<f64>,
    sess_rps: Vec<f64>,
    spawn_p50: Vec<f64>,
    spawn_p99: Vec<f64>,
    spawn_post_p50: Vec<f64>,
    spawn_open_p50: Vec<f64>,
    reconnect_ms: Vec<f64>,
}

impl Relay {
    fn extend(&mut self, other: Relay) {
        self.p50.extend(other.p50);
        self.p99.extend(other.p99);
        self.p999.extend(other.p999);
        self.rps.extend(other.rps);
        self.mbps.extend(other.mbps);
        self.fan_rps.extend(other.fan_rps);
        self.sess_rps.extend(other.sess_rps);
        self.spawn_p50.extend(other.spawn_p50);
        self.spawn_p99.extend(other.spawn_p99);
        self.spawn_post_p50.extend(other.spawn_post_p50);
        self.spawn_open_p50.extend(other.spawn_open_p50);
        self.reconnect_ms.extend(other.reconnect_ms);
    }
}

const ALL_LOOPS: &str = "latency,throughput,fanout,sessions,spawn,reconnect";

async fn relay_runs(
    target: &Target,
    runs: usize,
    size: usize,
    loops: &str,
) -> Result<Relay, String> {
    let on = |name: &str| loops.split(',').any(|l| l.trim() == name);
    let mut r = Relay::default();
    for _ in 0..runs {
        if on("latency") {
            let lat = sorted(bench::latency(target, SIZES.latency, size).await?);
            r.p50.push(percentile(&lat, 50.0));
            r.p99.push(percentile(&lat, 99.0));
            r.p999.push(percentile(&lat, 99.9));
        }
        if on("throughput") {
            let flow = bench::throughput(target, SIZES.throughput, size, SIZES.window).await?;
            r.rps.push(flow.rps());
            r.mbps.push(flow.mbps());
        }
        if on("fanout") {
            let fan =
                bench::fanout(target, SIZES.fanout, size, SIZES.window, SIZES.clients).await?;
            r.fan_rps.push(fan.rps());
        }
        if on("sessions") {
            let sess = bench::sessions(
                target,
                SIZES.sessions,
                SIZES.per_session,
                size,
                SIZES.window,
            )
            .await?;
            r.sess_rps.push(sess.rps());
        }
        if on("spawn") {
            let times = bench::spawn(target, SIZES.spawns).await?;
            let sp = sorted(times.total);
            r.spawn_p50.push(percentile(&sp, 50.0) / 1000.0);
            r.spawn_p99.push(percentile(&sp, 99.0) / 1000.0);
            r.spawn_post_p50
                .push(percentile(&sorted(times.post), 50.0) / 1000.0);
            r.spawn_open_p50
                .push(percentile(&sorted(times.open), 50.0) / 1000.0);
        }
        if on("reconnect") {
            let us = bench::reconnect(target, SIZES.replay, size, SIZES.window).await?;
            r.reconnect_ms.push(us / 1000.0);
        }
    }
    Ok(r)
}

/// The blocking-pipe floor.
#[derive(Default)]
struct Base {
    p50: Vec<f64>,
    p99: Vec<f64>,
    p999: Vec<f64>,
    rps: Vec<f64>,
    mbps: Vec<f64>,
    spawn_p50: Vec<f64>,
    spawn_p99: Vec<f64>,
}

impl Base {
    fn extend(&mut self, other: Base) {
        self.p50.extend(other.p50);
        self.p99.extend(other.p99);
        self.p999.extend(other.p999);
        self.rps.extend(other.rps);
        self.mbps.extend(other.mbps);
        self.spawn_p50.extend(other.spawn_p50);
        self.spawn_p99.extend(other.spawn_p99);
    }
}

/// The pipe floor, `runs` times, on dedicated threads.
async fn pipe_runs(runs: usize, size: usize) -> Result<Base, String> {
    tokio::task::spawn_blocking(move || {
        let mut b = Base::default();
        for _ in 0..runs {
            let lat = sorted(floor::pipe::latency(SIZES.latency, size)?);
            b.p50.push(percentile(&lat, 50.0));
            b.p99.push(percentile(&lat, 99.0));
            b.p999.push(percentile(&lat, 99.9));
            let flow = floor::pipe::throughput(SIZES.throughput, size, SIZES.window)?;
            b.rps.push(flow.rps());
            b.mbps.push(flow.mbps());
            let sp = sorted(floor::pipe::spawn(SIZES.spawns)?);
            b.spawn_p50.push(percentile(&sp, 50.0) / 1000.0);
            b.spawn_p99.push(percentile(&sp, 99.0) / 1000.0);
        }
        Ok(b)
    })
    .await
    .map_err(|e| format!("pipe floor: {e}"))?
}

/// The WebSocket echo floor: this program's `ws-echo`, as a child.
struct Echo {
    child: std::process::Child,
    url: String,
}

impl Drop for Echo {
    fn drop(&mut self) {
        // Closing its stdin stops it; kill it in case it is stuck.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_echo() -> Result<Echo, String> {
    use std::io::BufRead;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(exe)
        .arg("ws-echo")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("ws-echo: {e}"))?;
    let stdout = child.stdout.take().ok_or("ws-echo: no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("ws-echo: {e}"))?;
    let url = line
        .trim()
        .strip_prefix("amarre listening on ")
        .ok_or_else(|| format!("ws-echo: unexpected first line {line:?}"))?
        .to_owned();
    Ok(Echo { child, url })
}

/// The loops of the relay suite the echo server can run (no replay).
fn echo_loops(loops: &str) -> String {
    loops
        .split(',')
        .map(str::trim)
        .filter(|l| matches!(*l, "latency" | "throughput" | "spawn"))
        .collect::<Vec<_>>()
        .join(",")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn median(v: &[f64]) -> f64 {
    percentile(&sorted(v.to_vec()), 50.0)
}

/// One row per figure: each column's median (min-max) over its runs and,
/// where the pipe floor has the figure, each column's ratio to it.
fn print_table(cols: &[(&str, &Relay)], pipe: Option<&Base>) {
    let mut head = String::from("| figure |");
    let mut rule = String::from("|---|");
    for (name, _) in cols {
        head.push_str(&format!(" {name} |"));
        rule.push_str("---|");
    }
    if pipe.is_some() {
        head.push_str(" pipe floor |");
        rule.push_str("---|");
        for (name, _) in cols {
            head.push_str(&format!(" {name} / pipe |"));
            rule.push_str("---|");
        }
    }
    println!("{head}\n{rule}");
    type Pick = fn(&Relay) -> &Vec<f64>;
    type PickBase = Option<fn(&Base) -> &Vec<f64>>;
    let rows: [(String, Pick, PickBase, usize); 12] = [
        ("latency p50 (µs)".into(), |r| &r.p50, Some(|b| &b.p50), 1),
        ("latency p99 (µs)".into(), |r| &r.p99, Some(|b| &b.p99), 1),
        (
            "latency p99.9 (µs)".into(),
            |r| &r.p999,
            Some(|b| &b.p999),
            1,
        ),
        (
            "throughput (records/s)".into(),
            |r| &r.rps,
            Some(|b| &b.rps),
            0,
        ),
        (
            "throughput (MB/s)".into(),
            |r| &r.mbps,
            Some(|b| &b.mbps),
            1,
        ),
        (
            format!(
                "fan-out to {}+1 clients (delivered records/s)",
                SIZES.clients
            ),
            |r| &r.fan_rps,
            None,
            0,
        ),
        (
            format!("{} sessions in parallel (records/s)", SIZES.sessions),
            |r| &r.sess_rps,
            None,
            0,
        ),
        (
            "spawn: POST to first echo p50 (ms)".into(),
            |r| &r.spawn_p50,
            Some(|b| &b.spawn_p50),
            2,
        ),
        (
            "spawn: POST to first echo p99 (ms)".into(),
            |r| &r.spawn_p99,
            Some(|b| &b.spawn_p99),
            2,
        ),
        (
            "spawn, of which POST to its 201, p50 (ms)".into(),
            |r| &r.spawn_post_p50,
            None,
            2,
        ),
        (
            "spawn, of which the 201 to the socket's 101, p50 (ms)".into(),
            |r| &r.spawn_open_p50,
            None,
            2,
        ),
        (
            format!("reconnect: since=0, {} records replayed (ms)", SIZES.replay),
            |r| &r.reconnect_ms,
            None,
            1,
        ),
    ];
    for (name, pick, pick_base, digits) in &rows {
        if cols.iter().all(|(_, r)| pick(r).is_empty()) {
            continue;
        }
        let mut line = format!("| {name} |");
        for (_, r) in cols {
            let v = pick(r);
            if v.is_empty() {
                line.push_str(" |");
            } else {
                line.push_str(&format!(" {} |", spread(v, *digits)));
            }
        }
        if let Some(b) = pipe {
            let floor = pick_base.map(|p| p(b)).filter(|v| !v.is_empty());
            match floor {
                Some(f) => {
                    line.push_str(&format!(" {} |", spread(f, *digits)));
                    for (_, r) in cols {
                        let v = pick(r);
                        if v.is_empty() {
                            line.push_str(" |");
                        } else {
                            line.push_str(&format!(" {:.2}x |", median(v) / median(f)));
                        }
                    }
                }
                None => {
                    line.push_str(" |");
                    for _ in cols {
                        line.push_str(" |");
                    }
                }
            }
        }
        println!("{line}");
    }
}

/// Streams `n` Claude text deltas through instance `instance`, translated
/// (`pi` true: a pi prompt, counting message_update deltas) or raw.
async fn stream_rate(target: &Target, n: u64, pi: bool) -> Result<f64, String> {
    let id = target.create().await?;
    let mut ws = target.connect(&id).await?;
    let t = Instant::now();
    let prompt = if pi {
        json!({"type": "prompt", "id": "b", "message": format!("STREAM {n}")})
    } else {
        json!({"type": "user", "message": {"role": "user", "content": format!("STREAM {n}")}})
    };
    ws.send(Message::text(prompt.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    let mut deltas = 0;
    loop {
        let Some(Ok(msg)) = ws.next().await else {
            return Err("socket ended".into());
        };
        let Message::Text(t) = msg else { continue };
        let s = t.as_str();
        if s.contains("text_delta") {
            deltas += 1;
        }
        if s.contains("\"agent_end\"") || s.contains("\"type\":\"result\"") {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    target.delete(&id).await;
    if deltas != n {
        return Err(format!("expected {n} deltas, got {deltas}"));
    }
    Ok(n as f64 / secs)
}

async fn translate_report(runs: usize) -> Result<(), String> {
    println!(
        "| adapter call (one record through the host) | µs per call, median (min-max of run medians) | p99 |"
    );
    println!("|---|---|---|");
    let start = r#"{"type":"stream_event","event":{"type":"message_start","message":{"id":"m","model":"x","role":"assistant","content":[]}}}"#;
    let block = r#"{"type":"stream_event","event":{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}}"#;
    let prompt = r#"{"type":"prompt","message":"hi"}"#;
    type Case<'a> = (&'a str, &'a str, Vec<&'a str>, Vec<&'a str>, &'a str);
    let acp_text_setup = &translate::ACP_SETUP[..2];
    let cases: [Case; 5] = [
        (
            "claude-code: stream_event text delta",
            "claude-code",
            vec![start, block],
            vec![prompt],
            translate::TEXT_DELTA,
        ),
        (
            "claude-code: can_use_tool (tool call question)",
            "claude-code",
            vec![],
            vec![prompt],
            translate::TOOL_CALL,
        ),
        (
            "acp: agent_message_chunk (text chunk)",
            "acp",
            acp_text_setup.to_vec(),
            vec![prompt],
            translate::ACP_TEXT_CHUNK,
        ),
        (
            "acp: tool_call_update (in progress, with content)",
            "acp",
            translate::ACP_SETUP.to_vec(),
            vec![prompt],
            translate::ACP_TOOL_UPDATE,
        ),
        (
            "stdio (pass-through translator): same text delta",
            "stdio",
            vec![],
            vec![],
            translate::TEXT_DELTA,
        ),
    ];
    let host = translate::host()?;
    for (name, adapter, setup, client, line) in cases {
        let adapter = translate::load(&host, adapter).await?;
        let mut medians = Vec::new();
        let mut p99s = Vec::new();
        for _ in 0..runs {
            let cost = translate::cost(&adapter, &[], &setup, &client, line, 20_000).await?;
            let v = sorted(cost.micros);
            medians.push(percentile(&v, 50.0));
            p99s.push(percentile(&v, 99.0));
        }
        println!(
            "| {name} ({} bytes) | {} | {} |",
            line.len(),
            spread(&medians, 2),
            spread(&p99s, 2)
        );
    }
    println!();
    println!("| component | compile, uncached (ms) | instantiate (ms) |");
    println!("|---|---|---|");
    for adapter in ["stdio", "pi", "claude-code", "acp"] {
        let (c, i) = translate::load_times(adapter, runs).await?;
        println!(
            "| {adapter} ({} KiB) | {} | {} |",
            amarre::adapter::builtin::bytes(adapter)
                .map(|b| b.len() / 1024)
                .unwrap_or(0),
            spread(&c, 1),
            spread(&i, 3)
        );
    }
    Ok(())
}

/// The claude-code component with a custom section appended (a new file
/// content, as a rebuild would make).
fn variant(original: &[u8], tag: &str) -> Vec<u8> {
    let name = b"amarre-bench";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = original.to_vec();
    out.push(0);
    let mut n = payload.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}

async fn reload_report(bin: PathBuf, runs: usize) -> Result<(), String> {
    let bin = bin.to_string_lossy().into_owned();
    let dir = std::env::temp_dir().join(format!("amarre-bench-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join("claude-code.wasm");
    let original = amarre::adapter::builtin::bytes("claude-code")
        .ok_or("no claude-code built-in")?
        .to_vec();
    std::fs::write(&file, &original).map_err(|e| e.to_string())?;
    let instances = json!([{"id": "c", "agentPath": file, "command": "cat"}]).to_string();
    let cache = dir.join("cache").to_string_lossy().into_owned();
    let d = daemon::start(
        &bin,
        &[
            ("AMARRE_INSTANCES_JSON", instances.as_str()),
            ("AMARRE_RELOAD_WATCH", "0"),
            ("AMARRE_CACHE_DIR", cache.as_str()),
        ],
    )
    .await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let reload = || async {
        let t = Instant::now();
        let r = http
            .post(format!("{}/instances/c/reload", d.url))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if !r.status().is_success() {
            return Err(format!("reload answered {}", r.status()));
        }
        Ok::<f64, String>(ms)
    };
    let mut uncached = Vec::new();
    let mut cached = Vec::new();
    for run in 0..runs {
        std::fs::write(&file, variant(&original, &format!("run-{run}")))
            .map_err(|e| e.to_string())?;
        uncached.push(reload().await?);
        std::fs::write(&file, &original).map_err(|e| e.to_string())?;
        cached.push(reload().await?);
    }
    println!("| reload of the claude-code component (516 KiB) | ms, POST to 200 |");
    println!("|---|---|");
    println!(
        "| a new component (compiled by Cranelift) | {} |",
        spread(&uncached, 1)
    );
    println!(
        "| a known component (compiled-component cache) | {} |",
        spread(&cached, 2)
    );
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn all(bin: PathBuf, runs: usize, size: usize) -> Result<(), String> {
    let bin = bin.to_string_lossy().into_owned();
    let fake = sibling("fake-agent").to_string_lossy().into_owned();
    println!(
        "machine: {} cores; {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_owned())
            )
            .unwrap_or_default()
    );
    println!("daemon: {bin}; records of {size} bytes; {runs} runs\n");

    // Start-up and memory, with the echo instance only.
    let echo = json!([{"id": "echo", "agent": "stdio", "command": "cat"}]).to_string();
    // Its own component cache: the first start is cold (compiles), the
    // measured ones are warm.
    let cache = std::env::temp_dir().join(format!("amarre-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let cache_str = cache.to_string_lossy().into_owned();
    let env = [
        ("AMARRE_INSTANCES_JSON", echo.as_str()),
        ("AMARRE_MAX_SESSIONS", "64"),
        ("AMARRE_CACHE_DIR", cache_str.as_str()),
    ];
    let cold = daemon::start(&bin, &env).await?;
    let cold_ready = cold.ready.as_secs_f64() * 1e3;
    let cold_rss = daemon::memory_kib(cold.child.id())
        .map(|m| mib(m.0))
        .unwrap_or(f64::NAN);
    drop(cold);
    let mut ready = Vec::new();
    let mut idle = Vec::new();
    let mut idle8 = Vec::new();
    let mut after = Vec::new();
    let mut peak = Vec::new();
    for _ in 0..runs {
        let d = daemon::start(&bin, &env).await?;
        ready.push(d.ready.as_secs_f64() * 1e3);
        let pid = d.child.id();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        idle.push(mib(daemon::memory_kib(pid).ok_or("memory")?.0));
        let target = Target {
            url: d.url.clone(),
            instance: None,
        };
        let mut ids = Vec::new();
        for _ in 0..8 {
            ids.push(target.create().await?);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        idle8.push(mib(daemon::memory_kib(pid).ok_or("memory")?.0));
        for id in ids {
            target.delete(&id).await;
        }
        bench::throughput(&target, SIZES.throughput, size, SIZES.window).await?;
        let (rss, hwm) = daemon::memory_kib(pid).ok_or("memory")?;
        after.push(mib(rss));
        peak.push(mib(hwm));
    }
    println!("| daemon | value |");
    println!("|---|---|");
    println!("| start to ready /healthz, cold component cache (ms, one run) | {cold_ready:.1} |");
    println!("| RSS idle, cold component cache (MiB, one run) | {cold_rss:.1} |");
    println!(
        "| start to ready /healthz, warm component cache (ms) | {} |",
        spread(&ready, 1)
    );
    println!(
        "| RSS idle, warm component cache (MiB) | {} |",
        spread(&idle, 1)
    );
    println!("| RSS with 8 idle sessions (MiB) | {} |", spread(&idle8, 1));
    println!(
        "| RSS after the throughput run (MiB) | {} |",
        spread(&after, 1)
    );
    println!(
        "| peak RSS (VmHWM) after the throughput run (MiB) | {} |",
        spread(&peak, 1)
    );
    println!();

    let d = daemon::start(&bin, &env).await?;
    let target = Target {
        url: d.url.clone(),
        instance: None,
    };
    println!("load average before the relay: {}", loadavg());
    let relay = relay_runs(&target, runs, size, ALL_LOOPS).await?;
    drop(d);
    let echo = start_echo()?;
    let ws = relay_runs(
        &Target {
            url: echo.url.clone(),
            instance: None,
        },
        runs,
        size,
        &echo_loops(ALL_LOOPS),
    )
    .await?;
    drop(echo);
    let base = pipe_runs(runs, size).await?;
    println!("load average after the floors: {}\n", loadavg());
    print_table(&[("amarre", &relay), ("WebSocket echo", &ws)], Some(&base));
    println!();

    // The claude-code adapter in the path versus pass-through, streaming
    // Claude text deltas from a fake agent.
    let both = json!([
        {"id": "raw", "agent": "stdio", "command": fake},
        {"id": "claude", "agent": "claude-code", "command": fake},
    ])
    .to_string();
    let d = daemon::start(
        &bin,
        &[
            ("AMARRE_INSTANCES_JSON", both.as_str()),
            ("AMARRE_CACHE_DIR", cache_str.as_str()),
        ],
    )
    .await?;
    let mut translated = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..runs {
        raw.push(
            stream_rate(
                &Target {
                    url: d.url.clone(),
                    instance: Some("raw".into()),
                },
                100_000,
                false,
            )
            .await?,
        );
        translated.push(
            stream_rate(
                &Target {
                    url: d.url.clone(),
                    instance: Some("claude".into()),
                },
                100_000,
                true,
            )
            .await?,
        );
    }
    println!("| agent to client, 100k Claude text deltas | records/s |");
    println!("|---|---|");
    println!(
        "| stdio (pass-through, Claude's own lines) | {} |",
        spread(&raw, 0)
    );
    println!(
        "| claude-code (translated to pi message_update) | {} |",
        spread(&translated, 0)
    );
    println!();
    drop(d);
    let _ = std::fs::remove_dir_all(&cache);
    translate_report(runs).await?;
    println!();
    languages_report(runs).await?;
    println!();
    reload_report(PathBuf::from(bin), runs).await
}

/// One probe of the control plane and of a healthy session: `/healthz` and
/// a record's round trip, in ms.
async fn probe(
    http: &reqwest::Client,
    url: &str,
    ws: &mut WsStream,
    n: u64,
) -> Result<(f64, f64), String> {
    let t = Instant::now();
    let st = http
        .get(format!("{url}/healthz"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .status();
    if !st.is_success() {
        return Err(format!("/healthz answered {st}"));
    }
    let healthz = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    ws.send(Message::text(format!("{{\"type\":\"probe\",\"n\":{n}}}")))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let Some(Ok(msg)) = ws.next().await else {
            return Err("the healthy session's socket ended".into());
        };
        if let Message::Text(t) = msg
            && t.as_str().contains(&format!("\"n\":{n}}}"))
        {
            break;
        }
    }
    Ok((healthz, t.elapsed().as_secs_f64() * 1e3))
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The worst /healthz and round-trip times (ms) while two sessions'
/// adapters loop on 3 MiB lines (until their budget traps them), and how
/// long the loops ran.
async fn stall_run(bin: &str, fake: &str) -> Result<(f64, f64, f64), String> {
    let looping =
        PathBuf::from(amarre::adapter::builtin::BUILT_ADAPTERS_DIR).join("fixture-loop.wasm");
    let instances = json!([
        {"id": "echo", "agent": "stdio", "command": fake},
        {"id": "loop", "agentPath": looping, "command": fake},
    ])
    .to_string();
    let d = daemon::start(bin, &[("AMARRE_INSTANCES_JSON", instances.as_str())]).await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let echo = Target {
        url: d.url.clone(),
        instance: Some("echo".into()),
    };
    let id = echo.create().await?;
    let mut ws = echo.connect(&id).await?;
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        probe(&http, &d.url, &mut ws, 0),
    )
    .await
    .map_err(|_| "the first probe got no answer in 30 s".to_string())??;
    let lp = Target {
        url: d.url.clone(),
        instance: Some("loop".into()),
    };
    let mut loops = Vec::new();
    for _ in 0..2 {
        let id = lp.create().await?;
        let mut lws = lp.connect(&id).await?;
        let line = json!({"type": "please loop", "pad": "x".repeat(3 << 20)});
        lws.send(Message::text(line.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        loops.push(tokio::spawn(async move {
            // Until the trap closes the socket.
            while let Some(Ok(msg)) = lws.next().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        }));
    }
    let t = Instant::now();
    let (mut healthz, mut trip) = (0f64, 0f64);
    let mut n = 1;
    while loops.iter().any(|l| !l.is_finished()) {
        if t.elapsed() > std::time::Duration::from_secs(60) {
            return Err("the looping calls never ended".into());
        }
        let (h, r) = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            probe(&http, &d.url, &mut ws, n),
        )
        .await
        .map_err(|_| format!("probe {n} got no answer in 30 s"))??;
        healthz = healthz.max(h);
        trip = trip.max(r);
        n += 1;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok((healthz, trip, t.elapsed().as_secs_f64() * 1e3))
}

/// What a pool of guest threads would add to every call: a hop from the
/// session task to a dedicated thread and back (a channel each way, the
/// task awaiting the answer), in µs per round trip, for `n` calls.
async fn hop_cost(n: usize) -> Vec<f64> {
    let (tx, rx) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
    let worker = std::thread::spawn(move || {
        while let Ok(reply) = rx.recv() {
            let _ = reply.send(());
        }
    });
    let mut micros = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (reply, answer) = tokio::sync::oneshot::channel();
        if tx.send(reply).is_err() {
            break;
        }
        let _ = answer.await;
        micros.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(tx);
    let _ = worker.join();
    micros
}

async fn guests_report(bin: PathBuf, runs: usize) -> Result<(), String> {
    let bin = bin.to_string_lossy().into_owned();
    let fake = sibling("fake-agent").to_string_lossy().into_owned();
    let (mut p50, mut p99) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let v = sorted(hop_cost(20_000).await);
        p50.push(percentile(&v, 50.0));
        p99.push(percentile(&v, 99.0));
    }
    println!("| a guest-thread hop per call (the pool design), µs | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| session task -> thread -> session task | {} | {} |",
        spread(&p50, 2),
        spread(&p99, 2)
    );
    println!();
    let (mut healthz, mut trip, mut spent) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (h, r, s) = stall_run(&bin, &fake).await?;
        healthz.push(h);
        trip.push(r);
        spent.push(s);
    }
    println!("| two sessions' adapters looping on 3 MiB lines | ms |");
    println!("|---|---|");
    println!("| worst /healthz meanwhile | {} |", spread(&healthz, 1));
    println!(
        "| worst record round trip through another session meanwhile | {} |",
        spread(&trip, 1)
    );
    println!("| until both loops trapped | {} |", spread(&spent, 0));
    println!();
    let both = json!([
        {"id": "raw", "agent": "stdio", "command": fake},
        {"id": "claude", "agent": "claude-code", "command": fake},
    ])
    .to_string();
    let d = daemon::start(&bin, &[("AMARRE_INSTANCES_JSON", both.as_str())]).await?;
    let (mut raw, mut translated) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = |i: &str| Target {
            url: d.url.clone(),
            instance: Some(i.into()),
        };
        raw.push(stream_rate(&t("raw"), 100_000, false).await?);
        translated.push(stream_rate(&t("claude"), 100_000, true).await?);
    }
    println!("| agent to client, 100k Claude text deltas | records/s |");
    println!("|---|---|");
    println!(
        "| stdio (pass-through, Claude's own lines) | {} |",
        spread(&raw, 0)
    );
    println!(
        "| claude-code (translated to pi message_update) | {} |",
        spread(&translated, 0)
    );
    Ok(())
}

/// The JavaScript `redact` component next to its Rust twin `redact-rs`
/// (built by scripts/build-js-adapters and the workspace build).
async fn languages_report(runs: usize) -> Result<(), String> {
    let dir = PathBuf::from(amarre::adapter::builtin::BUILT_ADAPTERS_DIR);
    let twins = [("JavaScript", "redact.wasm"), ("Rust", "redact-rs.wasm")];
    for (_, file) in twins {
        if !dir.join(file).is_file() {
            return Err(format!(
                "{} is missing: run scripts/build-js-adapters and cargo build --workspace",
                dir.join(file).display()
            ));
        }
    }
    let clean = r#"{"type":"message_update","assistantMessageEvent":{"type":"text_delta","delta":"Hello, this is a delta with no secret in it at all, just prose."}}"#;
    let mut output = String::from("line 1: all good\n");
    while output.len() < 4000 {
        output.push_str("cargo build: compiling crate foo v1.2.3 (/home/me/src/foo)\n");
    }
    output.push_str("OPENAI_API_KEY=sk-proj-abcDEF123456789_abcdefghij GITHUB_TOKEN=ghp_0123456789abcdefghijABCDEFGHIJ0123");
    let tool = serde_json::json!({
        "type": "tool_execution_end",
        "toolCallId": "t1",
        "toolName": "bash",
        "result": {"content": [{"type": "text", "text": output}]},
        "isError": false
    })
    .to_string();
    let values = [(
        "AMARRE_REDACT_VALUES",
        "hunter2-db-pass,correct-horse-battery,s3cr3t-t0k3n",
    )];
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        ("empty line: the cost of a call", &[], ""),
        ("text delta, nothing to mask", &[], clean),
        ("tool output with 2 tokens", &[], &tool),
        ("same, plus 3 operator values", &values, &tool),
    ];
    println!(
        "| redact, per record through the host | language | µs per call, median (min-max of run medians) | p99 |"
    );
    println!("|---|---|---|---|");
    let host = translate::host()?;
    let mut memory = Vec::new();
    for (name, env, line) in cases {
        for (language, file) in twins {
            let adapter = translate::load(&host, &dir.join(file).to_string_lossy()).await?;
            let mut medians = Vec::new();
            let mut p99s = Vec::new();
            for _ in 0..runs {
                let cost = translate::cost(&adapter, env, &[], &[], line, 5_000).await?;
                memory.push((language, cost.memory_bytes));
                let v = sorted(cost.micros);
                medians.push(percentile(&v, 50.0));
                p99s.push(percentile(&v, 99.0));
            }
            println!(
                "| {name} ({} bytes) | {language} | {} | {} |",
                line.len(),
                spread(&medians, 2),
                spread(&p99s, 2)
            );
        }
    }
    println!();
    println!(
        "| component | language | size (KiB) | compile, uncached (ms) | instantiate (ms) | linear memory per session (MiB) |"
    );
    println!("|---|---|---|---|---|---|");
    for (language, file) in twins {
        let path = dir.join(file);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let (c, i) = translate::load_times(&path.to_string_lossy(), runs).await?;
        let peak = memory
            .iter()
            .filter(|(l, _)| *l == language)
            .map(|(_, b)| *b)
            .max()
            .unwrap_or(0);
        println!(
            "| {file} | {language} | {} | {} | {} | {:.1} |",
            size / 1024,
            spread(&c, 0),
            spread(&i, 3),
            peak as f64 / (1024.0 * 1024.0)
        );
    }
    Ok(())
}

/// The floors alone: the WebSocket echo server and the blocking pipe,
/// alternating rounds.
async fn baseline(runs: usize, size: usize) -> Result<(), String> {
    println!("load average at start: {}", loadavg());
    let echo = start_echo()?;
    let target = Target {
        url: echo.url.clone(),
        instance: None,
    };
    let mut ws = Relay::default();
    let mut pipe = Base::default();
    for _ in 0..runs {
        ws.extend(relay_runs(&target, 1, size, &echo_loops(ALL_LOOPS)).await?);
        pipe.extend(pipe_runs(1, size).await?);
    }
    drop(echo);
    println!("load average at end: {}\n", loadavg());
    print_table(&[("WebSocket echo", &ws)], Some(&pipe));
    Ok(())
}

/// The relay suite against daemons `a` and `b` (each started here with
/// the `cat` echo instance), alternating rounds: A, B, then B, A, ..., with
/// the floors measured in every round too, so that load that comes and
/// goes spreads over both columns alike.
async fn compare(
    a: PathBuf,
    b: PathBuf,
    rounds: usize,
    size: usize,
    loops: &str,
) -> Result<(), String> {
    let echo_instance = json!([{"id": "echo", "agent": "stdio", "command": "cat"}]).to_string();
    let dir = std::env::temp_dir().join(format!("amarre-bench-compare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut started = Vec::new();
    for (name, bin) in [("A", &a), ("B", &b)] {
        let cache = dir.join(name).to_string_lossy().into_owned();
        let env = [
            ("AMARRE_INSTANCES_JSON", echo_instance.as_str()),
            ("AMARRE_MAX_SESSIONS", "64"),
            ("AMARRE_CACHE_DIR", cache.as_str()),
        ];
        started.push(daemon::start(&bin.to_string_lossy(), &env).await?);
    }
    println!("A: {}\nB: {}", a.display(), b.display());
    println!(
        "records of {size} bytes; {rounds} rounds, alternating; load average at start: {}",
        loadavg()
    );
    let echo = start_echo()?;
    let echo_target = Target {
        url: echo.url.clone(),
        instance: None,
    };
    let targets: Vec<Target> = started
        .iter()
        .map(|d| Target {
            url: d.url.clone(),
            instance: None,
        })
        .collect();
    let mut results = [Relay::default(), Relay::default()];
    let mut ws = Relay::default();
    let mut pipe = Base::default();
    let mut loads = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            results[k].extend(relay_runs(&targets[k], 1, size, loops).await?);
        }
        ws.extend(relay_runs(&echo_target, 1, size, &echo_loops(loops)).await?);
        pipe.extend(pipe_runs(1, size).await?);
        loads.push(loadavg());
        eprintln!(
            "round {} of {rounds} done; load average {}",
            round + 1,
            loadavg()
        );
    }
    drop(echo);
    let memory: Vec<String> = started
        .iter()
        .map(|d| match daemon::memory_kib(d.child.id()) {
            Some((rss, hwm)) => format!("RSS {:.1} MiB, peak {:.1} MiB", mib(rss), mib(hwm)),
            None => "?".into(),
        })
        .collect();
    drop(started);
    let _ = std::fs::remove_dir_all(&dir);
    println!("load average after each round: {}\n", loads.join("; "));
    print_table(
        &[
            ("A", &results[0]),
            ("B", &results[1]),
            ("WebSocket echo", &ws),
        ],
        Some(&pipe),
    );
    println!();
    println!("| figure | B / A |\n|---|---|");
    type Pick = fn(&Relay) -> &Vec<f64>;
    let rows: [(&str, Pick); 12] = [
        ("latency p50", |r| &r.p50),
        ("latency p99", |r| &r.p99),
        ("latency p99.9", |r| &r.p999),
        ("throughput", |r| &r.rps),
        ("throughput (MB/s)", |r| &r.mbps),
        ("fan-out", |r| &r.fan_rps),
        ("sessions in parallel", |r| &r.sess_rps),
        ("spawn p50", |r| &r.spawn_p50),
        ("spawn, POST to 201, p50", |r| &r.spawn_post_p50),
        ("spawn, 201 to 101, p50", |r| &r.spawn_open_p50),
        ("spawn p99", |r| &r.spawn_p99),
        ("reconnect", |r| &r.reconnect_ms),
    ];
    for (name, pick) in rows {
        let (va, vb) = (pick(&results[0]), pick(&results[1]));
        if va.is_empty() || vb.is_empty() {
            continue;
        }
        println!("| {name} | {:.3} |", median(vb) / median(va));
    }
    println!("\nA: {}\nB: {}", memory[0], memory[1]);
    Ok(())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let _wake = if matches!(cli.command, Cmd::WsEcho) {
        None
    } else {
        let wake = floor::CpuWake::hold(!cli.cpu_idle_halt);
        println!("CPU wake-up: {}", wake.state);
        Some(wake)
    };
    let result = match cli.command {
        Cmd::All { daemon } => {
            all(
                daemon.unwrap_or_else(|| sibling("amarre")),
                cli.runs,
                cli.size,
            )
            .await
        }
        Cmd::Relay {
            url,
            instance,
            pid,
            loops,
        } => {
            let target = Target { url, instance };
            match relay_runs(&target, cli.runs, cli.size, &loops).await {
                Ok(r) => {
                    print_table(&[("server", &r)], None);
                    if let Some((rss, hwm)) = pid.and_then(daemon::memory_kib) {
                        println!("\nserver RSS {:.1} MiB, peak {:.1} MiB", mib(rss), mib(hwm));
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        Cmd::Baseline => baseline(cli.runs, cli.size).await,
        Cmd::Compare { a, b, loops } => compare(a, b, cli.runs, cli.size, &loops).await,
        Cmd::WsEcho => floor::ws_echo::serve().await.map_err(|e| e.to_string()),
        Cmd::Translate => translate_report(cli.runs).await,
        Cmd::Guests { daemon } => {
            guests_report(daemon.unwrap_or_else(|| sibling("amarre")), cli.runs).await
        }
        Cmd::Languages => languages_report(cli.runs).await,
        Cmd::Durable { daemon } => {
            let bin = daemon.unwrap_or_else(|| sibling("amarre"));
            amarre_e2e::bench_durable::report(&bin.to_string_lossy(), cli.runs, cli.size).await
        }
        Cmd::Reload { daemon } => {
            reload_report(daemon.unwrap_or_else(|| sibling("amarre")), cli.runs).await
        }
    };
    if let Err(e) = result {
        eprintln!("amarre-bench: {e}");
        std::process::exit(1);
    }
}

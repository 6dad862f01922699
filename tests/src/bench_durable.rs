//! `amarre-bench durable`: what durable sessions cost (docs/durability.md,
//! docs/PERFORMANCE.md "Durable sessions"): relay latency and throughput
//! with a state directory and without, the time from start to 8 sessions
//! restored, and the disk bytes per record in the record log.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::bench::{self, Target, daemon, percentile, sorted, spread};

/// Round trips per latency run.
const LATENCY: u64 = 2000;
/// Records per throughput run, and the window of records in flight.
const THROUGHPUT: u64 = 100_000;
const WINDOW: u64 = 256;
/// Sessions restored at start.
const RESTORED: usize = 8;
/// Records relayed to measure the log's bytes per record.
const LOGGED: u64 = 2000;

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[derive(Default)]
struct Relay {
    p50: Vec<f64>,
    p99: Vec<f64>,
    rps: Vec<f64>,
}

async fn relay(target: &Target, runs: usize, size: usize) -> Result<Relay, String> {
    let mut r = Relay::default();
    for _ in 0..runs {
        let lat = sorted(bench::latency(target, LATENCY, size).await?);
        r.p50.push(percentile(&lat, 50.0));
        r.p99.push(percentile(&lat, 99.0));
        let flow = bench::throughput(target, THROUGHPUT, size, WINDOW).await?;
        r.rps.push(flow.rps());
    }
    Ok(r)
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v.to_vec());
    percentile(&s, 50.0)
}

async fn sessions(http: &reqwest::Client, url: &str) -> Result<Vec<Value>, String> {
    let v: Value = http
        .get(format!("{url}/sessions"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// Relays `n` records through a new session; returns its id.
async fn relay_records(target: &Target, n: u64, size: usize) -> Result<String, String> {
    let id = target.create().await?;
    let mut ws = target.connect(&id).await?;
    for i in 0..n {
        ws.send(Message::text(bench::record(i, size)))
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => got += 1,
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("relaying records: {other:?}")),
        }
    }
    Ok(id)
}

/// Runs every measurement and prints the docs/PERFORMANCE.md table.
pub async fn report(bin: &str, runs: usize, size: usize) -> Result<(), String> {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("amarre-bench-durable-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&scratch.0);
    std::fs::create_dir_all(&scratch.0).map_err(|e| e.to_string())?;
    let cache = scratch.0.join("cache").to_string_lossy().into_owned();
    let echo = json!([{"id": "echo", "agent": "stdio", "command": "cat"}]).to_string();
    let base = [
        ("AMARRE_INSTANCES_JSON", echo.as_str()),
        ("AMARRE_MAX_SESSIONS", "64"),
        ("AMARRE_CACHE_DIR", cache.as_str()),
    ];
    println!("daemon: {bin}; records of {size} bytes; {runs} runs\n");

    // Relay with persistence off and on: both daemons run side by side and
    // the runs alternate, so that drift of a shared machine hits both.
    let state = scratch.0.join("state");
    let state_str = state.to_string_lossy().into_owned();
    let mut with_state = base.to_vec();
    with_state.push(("AMARRE_STATE_DIR", state_str.as_str()));
    let (mut off, mut on) = (Relay::default(), Relay::default());
    let per_record = {
        let d_off = daemon::start(bin, &base).await?;
        let d_on = daemon::start(bin, &with_state).await?;
        let t_off = Target {
            url: d_off.url.clone(),
            instance: None,
        };
        let t_on = Target {
            url: d_on.url.clone(),
            instance: None,
        };
        for _ in 0..runs {
            for (target, into) in [(&t_off, &mut off), (&t_on, &mut on)] {
                let r = relay(target, 1, size).await?;
                into.p50.extend(r.p50);
                into.p99.extend(r.p99);
                into.rps.extend(r.rps);
            }
        }
        let id = relay_records(&t_on, LOGGED, size).await?;
        let log = state.join("sessions").join(&id).join("log");
        // The log holds every record relayed (within the replay limit).
        let per_record = dir_bytes(&log) as f64 / LOGGED as f64;
        t_on.delete(&id).await;
        per_record
    };

    // Start to 8 sessions restored (each respawned), over runs starts.
    let mut restore = Vec::new();
    {
        let d = daemon::start(bin, &with_state).await?;
        let target = Target {
            url: d.url.clone(),
            instance: None,
        };
        for _ in 0..RESTORED {
            relay_records(&target, 100, size).await?;
        }
        // Dropping the daemon stops it with SIGTERM: the sessions stay.
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    for _ in 0..runs {
        let t = Instant::now();
        let d = daemon::start(bin, &with_state).await?;
        let list = sessions(&http, &d.url).await?;
        let running = list.iter().filter(|s| s["status"] == "running").count();
        restore.push(t.elapsed().as_secs_f64() * 1e3);
        if running != RESTORED {
            return Err(format!(
                "expected {RESTORED} restored running sessions, found {running}: {list:?}"
            ));
        }
    }
    let mut fresh = Vec::new();
    for _ in 0..runs {
        let d = daemon::start(bin, &base).await?;
        fresh.push(d.ready.as_secs_f64() * 1e3);
    }

    println!("| durable sessions | off | on | on / off |");
    println!("|---|---|---|---|");
    println!(
        "| latency p50 (µs) | {} | {} | {:.2} |",
        spread(&off.p50, 1),
        spread(&on.p50, 1),
        median(&on.p50) / median(&off.p50)
    );
    println!(
        "| latency p99 (µs) | {} | {} | {:.2} |",
        spread(&off.p99, 1),
        spread(&on.p99, 1),
        median(&on.p99) / median(&off.p99)
    );
    println!(
        "| throughput (records/s) | {} | {} | {:.2} |",
        spread(&off.rps, 0),
        spread(&on.rps, 0),
        median(&on.rps) / median(&off.rps)
    );
    println!(
        "| start to ready (ms): no sessions / {RESTORED} restored and respawned | {} | {} | |",
        spread(&fresh, 1),
        spread(&restore, 1)
    );
    println!("| log bytes per record of {size} bytes | | {per_record:.1} | |");
    Ok(())
}

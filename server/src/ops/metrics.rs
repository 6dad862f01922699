//! Counters for `GET /metrics` (Prometheus text format 0.0.4), all named
//! `amarre_*`. Counters are relaxed atomics bumped on the relay path (one
//! add per record); gauges are computed at scrape time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// The daemon's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub records_client_to_agent: AtomicU64,
    pub records_agent_to_client: AtomicU64,
    pub bytes_client_to_agent: AtomicU64,
    pub bytes_agent_to_client: AtomicU64,
    pub dropped_not_json: AtomicU64,
    pub dropped_too_long: AtomicU64,
    pub slow_clients_closed: AtomicU64,
    pub sessions_created: AtomicU64,
    pub sessions_crashed: AtomicU64,
    pub spawn_failures: AtomicU64,
    pub push_sent: AtomicU64,
    pub push_failed: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// What the scrape reads besides the counters.
pub struct Gauges {
    pub running: u64,
    pub crashed: u64,
    pub stopped: u64,
    pub clients: u64,
    pub adapter_calls: u64,
    pub adapter_traps: u64,
    pub compilations: u64,
    pub instances: u64,
}

impl Metrics {
    /// The exposition text.
    pub fn render(&self, g: &Gauges) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {value}");
                }
            }
        };
        metric(
            "amarre_build_info",
            "gauge",
            "The daemon's version.",
            &[(
                &format!(
                    "version=\"{}\",protocol=\"{}\"",
                    crate::VERSION,
                    crate::PROTOCOL_VERSION
                ),
                1,
            )],
        );
        metric(
            "amarre_sessions",
            "gauge",
            "Sessions by state.",
            &[
                ("state=\"running\"", g.running),
                ("state=\"crashed\"", g.crashed),
                ("state=\"stopped\"", g.stopped),
            ],
        );
        metric(
            "amarre_clients",
            "gauge",
            "Attached WebSocket clients.",
            &[("", g.clients)],
        );
        metric(
            "amarre_instances",
            "gauge",
            "Configured instances.",
            &[("", g.instances)],
        );
        metric(
            "amarre_records_total",
            "counter",
            "Records relayed.",
            &[
                (
                    "direction=\"client_to_agent\"",
                    get(&self.records_client_to_agent),
                ),
                (
                    "direction=\"agent_to_client\"",
                    get(&self.records_agent_to_client),
                ),
            ],
        );
        metric(
            "amarre_bytes_total",
            "counter",
            "Bytes of records relayed.",
            &[
                (
                    "direction=\"client_to_agent\"",
                    get(&self.bytes_client_to_agent),
                ),
                (
                    "direction=\"agent_to_client\"",
                    get(&self.bytes_agent_to_client),
                ),
            ],
        );
        metric(
            "amarre_records_dropped_total",
            "counter",
            "Records dropped.",
            &[
                ("reason=\"not_json\"", get(&self.dropped_not_json)),
                ("reason=\"too_long\"", get(&self.dropped_too_long)),
            ],
        );
        metric(
            "amarre_slow_clients_closed_total",
            "counter",
            "Clients closed with 1008 for reading too slowly.",
            &[("", get(&self.slow_clients_closed))],
        );
        metric(
            "amarre_sessions_created_total",
            "counter",
            "Sessions created.",
            &[("", get(&self.sessions_created))],
        );
        metric(
            "amarre_sessions_crashed_total",
            "counter",
            "Session crashes (agent exits and adapter traps).",
            &[("", get(&self.sessions_crashed))],
        );
        metric(
            "amarre_spawn_failures_total",
            "counter",
            "Agents that could not be started (422).",
            &[("", get(&self.spawn_failures))],
        );
        metric(
            "amarre_adapter_calls_total",
            "counter",
            "Calls into adapter components.",
            &[("", g.adapter_calls)],
        );
        metric(
            "amarre_adapter_traps_total",
            "counter",
            "Adapter calls that trapped or ran out of time or memory.",
            &[("", g.adapter_traps)],
        );
        metric(
            "amarre_adapter_compilations_total",
            "counter",
            "Components compiled by Cranelift.",
            &[("", g.compilations)],
        );
        metric(
            "amarre_push_total",
            "counter",
            "Push notifications by outcome (sent: accepted tickets; failed: error tickets and failed requests).",
            &[
                ("result=\"sent\"", get(&self.push_sent)),
                ("result=\"failed\"", get(&self.push_failed)),
            ],
        );
        metric(
            "amarre_reloads_total",
            "counter",
            "Adapter reloads that swapped a version in, or failed.",
            &[
                ("result=\"ok\"", get(&self.reloads_ok)),
                ("result=\"failed\"", get(&self.reloads_failed)),
            ],
        );
        out
    }
}

//! Records the host drops instead of passing them on, reported to the
//! session's clients as `amarre.record_dropped` (PROTOCOL 12.6): a line
//! over the line limit, a line too large for the session's adapter, a
//! client record that is not JSON.
//!
//! At most one report per second per reason: the first drop is reported at
//! once; later ones within the second are counted and reported together
//! (`count`, `bytes` of the last one) when the second is over. This module
//! only counts and decides when; the session task publishes the records.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The shortest time between two reports of one reason.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Which way the dropped record was going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Direction {
    FromAgent,
    FromClient,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::FromAgent => "from_agent",
            Direction::FromClient => "from_client",
        }
    }
}

/// Why it was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Reason {
    /// Over `AMARRE_MAX_LINE_BYTES`.
    LineTooLong,
    /// Over what the session's adapter is given.
    AdapterLimit,
    /// A client record that is not JSON.
    NotJson,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::LineTooLong => "line_too_long",
            Reason::AdapterLimit => "adapter_limit",
            Reason::NotJson => "not_json",
        }
    }
}

/// One dropped record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub(crate) direction: Direction,
    pub(crate) reason: Reason,
    pub(crate) bytes: usize,
}

impl Dropped {
    pub(crate) fn from_agent(reason: Reason, bytes: usize) -> Dropped {
        Dropped {
            direction: Direction::FromAgent,
            reason,
            bytes,
        }
    }

    pub(crate) fn from_client(reason: Reason, bytes: usize) -> Dropped {
        Dropped {
            direction: Direction::FromClient,
            reason,
            bytes,
        }
    }
}

/// Drops not reported yet for one reason.
#[derive(Debug, Default)]
struct Held {
    count: u64,
    last: Option<Dropped>,
}

#[derive(Debug)]
struct PerReason {
    /// When the last report of this reason went out.
    reported_at: Instant,
    held: Held,
}

/// The session's drop reports.
#[derive(Debug, Default)]
pub(crate) struct DropReports {
    reasons: BTreeMap<Reason, PerReason>,
}

fn record(d: &Dropped, count: u64) -> String {
    serde_json::json!({
        "type": "amarre.record_dropped",
        "direction": d.direction.as_str(),
        "bytes": d.bytes,
        "reason": d.reason.as_str(),
        "count": count,
    })
    .to_string()
}

impl DropReports {
    /// Notes a drop; returns the report to publish now, if it is due.
    pub(crate) fn note(&mut self, d: Dropped, now: Instant) -> Option<String> {
        match self.reasons.get_mut(&d.reason) {
            Some(r) if now.saturating_duration_since(r.reported_at) < REPORT_INTERVAL => {
                r.held.count += 1;
                r.held.last = Some(d);
                None
            }
            Some(r) => {
                let count = r.held.count + 1;
                r.held = Held::default();
                r.reported_at = now;
                Some(record(&d, count))
            }
            None => {
                self.reasons.insert(
                    d.reason,
                    PerReason {
                        reported_at: now,
                        held: Held::default(),
                    },
                );
                Some(record(&d, 1))
            }
        }
    }

    /// When held drops are due to be reported.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.reasons
            .values()
            .filter(|r| r.held.count > 0)
            .map(|r| r.reported_at + REPORT_INTERVAL)
            .min()
    }

    /// The reports of held drops whose second is over.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.reasons.values_mut() {
            if r.held.count == 0 || now < r.reported_at + REPORT_INTERVAL {
                continue;
            }
            if let Some(last) = r.held.last {
                out.push(record(&last, r.held.count));
            }
            r.held = Held::default();
            r.reported_at = now;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn drop(reason: Reason, bytes: usize) -> Dropped {
        Dropped {
            direction: Direction::FromAgent,
            reason,
            bytes,
        }
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn the_first_drop_is_reported_at_once_and_later_ones_are_counted_per_second() {
        let t0 = Instant::now();
        let mut r = DropReports::default();
        let first = parse(&r.note(drop(Reason::LineTooLong, 100), t0).unwrap());
        assert_eq!(
            first,
            serde_json::json!({"type": "amarre.record_dropped", "direction": "from_agent",
                "bytes": 100, "reason": "line_too_long", "count": 1})
        );
        assert_eq!(r.note(drop(Reason::LineTooLong, 200), t0), None);
        assert_eq!(
            r.note(
                drop(Reason::LineTooLong, 300),
                t0 + Duration::from_millis(10)
            ),
            None
        );
        // Another reason has its own second.
        assert!(r.note(drop(Reason::NotJson, 5), t0).is_some());
        assert_eq!(r.next_deadline(), Some(t0 + REPORT_INTERVAL));
        assert!(r.due(t0 + Duration::from_millis(999)).is_empty());
        let due = r.due(t0 + REPORT_INTERVAL);
        assert_eq!(due.len(), 1);
        let held = parse(&due[0]);
        assert_eq!(held["count"], 2);
        assert_eq!(held["bytes"], 300);
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn a_drop_after_a_quiet_second_is_reported_at_once_with_what_was_held() {
        let t0 = Instant::now();
        let mut r = DropReports::default();
        r.note(drop(Reason::AdapterLimit, 1), t0).unwrap();
        assert_eq!(r.note(drop(Reason::AdapterLimit, 2), t0), None);
        let later = parse(
            &r.note(drop(Reason::AdapterLimit, 3), t0 + Duration::from_secs(2))
                .unwrap(),
        );
        assert_eq!(later["count"], 2);
        assert_eq!(later["reason"], "adapter_limit");
        assert_eq!(r.next_deadline(), None);
    }
}

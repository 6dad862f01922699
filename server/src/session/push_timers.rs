//! Awaiting-input push timers of one session (PROTOCOL.md section 8): a
//! question that expects an answer arms a timer ([`PushTimers::arm`]); an
//! answer disarms it; when the grace period is over it is
//! [`PushTimers::due`] and the session decides whether to notify. Exactly
//! one timer per request id, even if an agent repeats a question. Pure
//! bookkeeping: the caller passes the time.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::record::Head;
use super::stream::expects_answer;
use super::text::Text;

/// How many request ids are remembered to send one push per id.
const MAX_REMEMBERED_IDS: usize = 1024;

/// A question waiting for its grace period to end.
#[derive(Debug, Clone)]
pub(crate) struct Timer {
    pub(crate) request_id: String,
    pub(crate) deadline: Instant,
    pub(crate) method: String,
    pub(crate) record: Text,
}

/// The armed timers and the ids that already had one.
#[derive(Debug)]
pub(crate) struct PushTimers {
    /// Off when push is not configured: nothing is ever armed.
    enabled: bool,
    grace: Duration,
    timers: BTreeMap<String, Timer>,
    /// Request ids that already had a timer (bounded, oldest forgotten).
    armed: HashSet<String>,
    armed_order: VecDeque<String>,
}

impl PushTimers {
    pub(crate) fn new(enabled: bool, grace: Duration) -> PushTimers {
        PushTimers {
            enabled,
            grace,
            timers: BTreeMap::new(),
            armed: HashSet::new(),
            armed_order: VecDeque::new(),
        }
    }

    /// Arms a timer for a record going to the clients, if it is a question
    /// that expects an answer and its id never had one. True when armed.
    /// The clock is read (`now`) only when a timer is armed, not per record.
    pub(crate) fn arm(
        &mut self,
        head: &Head,
        record: &Text,
        now: impl FnOnce() -> Instant,
    ) -> bool {
        if !self.enabled || head.kind.as_deref() != Some("extension_ui_request") {
            return false;
        }
        if !expects_answer(head.method.as_deref()) {
            return false;
        }
        let Some(id) = head.id.clone() else {
            return false;
        };
        if self.armed.contains(&id) {
            return false;
        }
        if self.armed.len() >= MAX_REMEMBERED_IDS
            && let Some(old) = self.armed_order.pop_front()
        {
            self.armed.remove(&old);
        }
        self.armed.insert(id.clone());
        self.armed_order.push_back(id.clone());
        self.timers.insert(
            id.clone(),
            Timer {
                request_id: id,
                deadline: now() + self.grace,
                method: head.method.clone().unwrap_or_default(),
                record: record.clone(),
            },
        );
        true
    }

    /// A client answered question `id`.
    pub(crate) fn answered(&mut self, id: &str) {
        self.timers.remove(id);
    }

    /// Forgets every armed timer (crash, delete, restart).
    pub(crate) fn clear(&mut self) {
        self.timers.clear();
    }

    /// When the next timer is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.values().map(|t| t.deadline).min()
    }

    /// Removes and returns the timers due at `now`.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Timer> {
        let ids: Vec<String> = self
            .timers
            .iter()
            .filter(|(_, t)| t.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        ids.iter().filter_map(|id| self.timers.remove(id)).collect()
    }

    /// The grace period.
    pub(crate) fn grace(&self) -> Duration {
        self.grace
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::record::parse_head;

    fn arm(t: &mut PushTimers, record: &str, now: Instant) -> bool {
        let head = parse_head(record.as_bytes()).unwrap();
        t.arm(&head, &Text::from(record.to_owned()), || now)
    }

    const CONFIRM: &str =
        r#"{"type":"extension_ui_request","id":"q1","method":"confirm","title":"Run?"}"#;

    #[test]
    fn only_questions_that_expect_an_answer_arm_and_only_once_per_id() {
        let now = Instant::now();
        let mut t = PushTimers::new(true, Duration::from_millis(100));
        assert!(!arm(
            &mut t,
            r#"{"type":"extension_ui_request","id":"n","method":"notify"}"#,
            now
        ));
        assert!(!arm(&mut t, r#"{"type":"message_update","id":"x"}"#, now));
        assert!(!arm(
            &mut t,
            r#"{"type":"extension_ui_request","method":"confirm"}"#,
            now
        ));
        assert!(arm(&mut t, CONFIRM, now));
        assert!(!arm(&mut t, CONFIRM, now), "a repeated id arms nothing");
        t.answered("q1");
        assert!(!arm(&mut t, CONFIRM, now), "nor after its answer");
        let mut off = PushTimers::new(false, Duration::from_millis(100));
        assert!(!arm(&mut off, CONFIRM, now), "push disabled");
    }

    #[test]
    fn a_timer_is_due_at_the_end_of_the_grace_not_before() {
        let now = Instant::now();
        let grace = Duration::from_millis(100);
        let mut t = PushTimers::new(true, grace);
        assert_eq!(t.next_deadline(), None);
        arm(&mut t, CONFIRM, now);
        assert_eq!(t.next_deadline(), Some(now + grace));
        assert!(t.due(now + grace - Duration::from_millis(1)).is_empty());
        let due = t.due(now + grace);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].request_id, "q1");
        assert_eq!(due[0].method, "confirm");
        assert!(t.due(now + grace * 2).is_empty(), "due once");
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn answers_and_clear_disarm_and_memory_of_ids_is_bounded() {
        let now = Instant::now();
        let mut t = PushTimers::new(true, Duration::from_millis(1));
        arm(&mut t, CONFIRM, now);
        t.answered("q1");
        assert!(t.due(now + Duration::from_secs(1)).is_empty());
        for i in 0..MAX_REMEMBERED_IDS + 1 {
            let q = format!(r#"{{"type":"extension_ui_request","id":"r{i}","method":"input"}}"#);
            assert!(arm(&mut t, &q, now));
        }
        t.clear();
        assert!(t.due(now + Duration::from_secs(1)).is_empty());
        // The oldest id was forgotten: it may arm again.
        assert!(arm(
            &mut t,
            r#"{"type":"extension_ui_request","id":"r0","method":"input"}"#,
            now
        ));
        assert!(!arm(
            &mut t,
            r#"{"type":"extension_ui_request","id":"r5","method":"input"}"#,
            now
        ));
    }
}

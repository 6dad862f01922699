//! A session's record stream as clients see it over time: the sequence
//! counter, the bounded replay buffer and the questions still waiting for
//! an answer (PROTOCOL.md section 11). Pure bookkeeping, no I/O.

use std::collections::VecDeque;
use std::time::Instant;

use super::record::Head;
use super::text::Text;

/// Methods of `extension_ui_request` that expect an answer.
pub fn expects_answer(method: Option<&str>) -> bool {
    matches!(method, Some("confirm" | "select" | "input" | "editor"))
}

/// A question the agent asked that no client has answered yet.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) id: String,
    pub(crate) seq: Option<u64>,
    pub(crate) text: Text,
    pub(crate) deadline: Option<Instant>,
}

/// What a newly attached client receives before live records.
#[derive(Debug, Default)]
pub(crate) struct Catchup {
    /// `(first, last)` lost sequence numbers when `since` is older than
    /// the buffer.
    pub(crate) gap: Option<(u64, u64)>,
    /// Buffered records after `since`, oldest first.
    pub(crate) replay: Vec<(u64, Text)>,
    /// Pending questions not already in `replay`.
    pub(crate) pending: Vec<Pending>,
}

/// Sequence numbers, replay buffer and pending questions of one session.
#[derive(Debug)]
pub(crate) struct Stream {
    last_seq: u64,
    buffer: VecDeque<(u64, Text)>,
    buffer_bytes: usize,
    max_records: usize,
    max_bytes: usize,
    pending: Vec<Pending>,
    /// Sequence number of the latest `agent_start`: questions asked after
    /// it are withdrawn when that turn ends.
    turn_seq: u64,
    /// Set while restoring: a turn began and has not ended.
    turn_running: bool,
}

/// The `id` of an `amarre.question_resolved` record.
fn resolved_id(text: &Text) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(text.as_bytes()).ok()?;
    v.get("id")?.as_str().map(str::to_owned)
}

impl Stream {
    pub(crate) fn new(max_records: usize, max_bytes: usize) -> Stream {
        Stream {
            last_seq: 0,
            buffer: VecDeque::new(),
            buffer_bytes: 0,
            max_records,
            max_bytes,
            pending: Vec::new(),
            turn_seq: 0,
            turn_running: false,
        }
    }

    /// The last sequence number given out (0 before the first).
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The oldest sequence number still in the replay buffer (the next one
    /// when it is empty).
    pub(crate) fn oldest_seq(&self) -> u64 {
        self.buffer
            .front()
            .map(|(s, _)| *s)
            .unwrap_or(self.last_seq + 1)
    }

    /// Moves the counter on to `seq` (a restored session: never back).
    pub(crate) fn continue_from(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// Buffers a record read back from the session's log under its own
    /// number (a restart, PROTOCOL.md 12.3); questions and answers in it
    /// are followed as when it was first sent.
    pub(crate) fn restore(&mut self, seq: u64, text: &Text) {
        let Some(head) = super::record::parse_head(text.as_bytes()) else {
            return;
        };
        if !head.is_object || seq <= self.last_seq {
            return;
        }
        self.last_seq = seq - 1;
        self.push(text, Some(&head));
        match head.kind.as_deref() {
            Some("amarre.question_resolved") => {
                if let Some(id) = resolved_id(text) {
                    self.answered(&id);
                }
            }
            Some("agent_start") => self.turn_running = true,
            Some("agent_end") => self.turn_running = false,
            Some("amarre.session_event") => self.turn_running = false,
            _ => {}
        }
        let kind = head.kind.as_deref();
        for id in self.track_turn(kind, Some(seq)) {
            self.answered(&id);
        }
    }

    /// Whether a restored stream ended inside a turn (an `agent_start`
    /// without its `agent_end`).
    pub(crate) fn turn_running(&self) -> bool {
        self.turn_running
    }

    /// Numbers and buffers a record that goes to the clients; returns its
    /// sequence number (objects only). Tracks questions that expect an
    /// answer.
    pub(crate) fn push(&mut self, text: &Text, head: Option<&Head>) -> Option<u64> {
        let head = head.filter(|h| h.is_object)?;
        self.last_seq += 1;
        let seq = self.last_seq;
        self.buffer_bytes += text.len();
        self.buffer.push_back((seq, text.clone()));
        while self.buffer.len() > self.max_records
            || (self.buffer_bytes > self.max_bytes && self.buffer.len() > 1)
        {
            if let Some((_, old)) = self.buffer.pop_front() {
                self.buffer_bytes -= old.len();
            }
        }
        if head.kind.as_deref() == Some("extension_ui_request")
            && expects_answer(head.method.as_deref())
            && let Some(id) = &head.id
        {
            self.pending.retain(|p| &p.id != id);
            self.pending.push(Pending {
                id: id.clone(),
                seq: Some(seq),
                text: text.clone(),
                // The clock is read for questions only, not per record.
                deadline: head
                    .timeout_ms
                    .filter(|t| t.is_finite() && *t > 0.0)
                    .map(|t| Instant::now() + std::time::Duration::from_millis(t as u64)),
            });
        }
        Some(seq)
    }

    /// A client answered question `id`.
    pub(crate) fn answered(&mut self, id: &str) -> bool {
        let before = self.pending.len();
        self.pending.retain(|p| p.id != id);
        before != self.pending.len()
    }

    /// Forgets every pending question (crash, delete, restart); returns
    /// their ids, oldest first.
    pub(crate) fn clear_pending(&mut self) -> Vec<String> {
        self.pending.drain(..).map(|p| p.id).collect()
    }

    /// How many questions wait for an answer.
    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The earliest `timeout` of a pending question.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().filter_map(|p| p.deadline).min()
    }

    /// Removes the questions whose `timeout` has passed; returns their ids.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut gone = Vec::new();
        self.pending.retain(|p| {
            let keep = p.deadline.is_none_or(|d| d > now);
            if !keep {
                gone.push(p.id.clone());
            }
            keep
        });
        gone
    }

    /// Follows the agent's turns for a record just numbered `seq`: an
    /// `agent_start` begins one; an `agent_end` withdraws the questions
    /// asked during it (the agent no longer waits for them: the turn was
    /// aborted). Returns the withdrawn ids.
    pub(crate) fn track_turn(&mut self, kind: Option<&str>, seq: Option<u64>) -> Vec<String> {
        match (kind, seq) {
            (Some("agent_start"), Some(n)) => {
                self.turn_seq = n;
                Vec::new()
            }
            (Some("agent_end"), Some(_)) => self.withdraw_after(self.turn_seq),
            _ => Vec::new(),
        }
    }

    /// Removes the questions numbered after `seq` (asked during a turn the
    /// agent has ended); returns their ids.
    pub(crate) fn withdraw_after(&mut self, seq: u64) -> Vec<String> {
        let mut gone = Vec::new();
        self.pending.retain(|p| {
            let keep = p.seq.is_none_or(|s| s <= seq);
            if !keep {
                gone.push(p.id.clone());
            }
            keep
        });
        gone
    }

    /// What a client attaching now receives: replay after `since` (when
    /// given), then pending questions not already replayed.
    pub(crate) fn catchup(&mut self, since: Option<u64>, now: Instant) -> Catchup {
        // Expired questions are removed (with their record) by the session
        // task's timer; here they are only not sent.
        let mut out = Catchup::default();
        if let Some(since) = since {
            let oldest = self
                .buffer
                .front()
                .map(|(s, _)| *s)
                .unwrap_or(self.last_seq + 1);
            if since + 1 < oldest && since < self.last_seq {
                out.gap = Some((since + 1, oldest - 1));
            }
            // The buffer is ordered by sequence number: skip to the seam.
            let start = self.buffer.partition_point(|(s, _)| *s <= since);
            out.replay = self.buffer.range(start..).cloned().collect();
        }
        // The replay is one contiguous range, so a question was replayed
        // exactly when its number falls in it.
        let first_replayed = out.replay.first().map(|(s, _)| *s);
        out.pending = self
            .pending
            .iter()
            .filter(|p| p.deadline.is_none_or(|d| d > now))
            .filter(|p| !matches!((p.seq, first_replayed), (Some(s), Some(f)) if s >= f))
            .cloned()
            .collect();
        out
    }
}

/// The record text for a client: with `_seq` when it asked for numbers.
pub(crate) fn text_for(text: &Text, seq: Option<u64>, wants_seq: bool) -> Text {
    match (seq, wants_seq) {
        (Some(n), true) => text.with_seq(n),
        _ => text.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::record::parse_head;

    fn push(s: &mut Stream, text: &str) -> Option<u64> {
        let head = parse_head(text.as_bytes());
        s.push(&Text::from(text.to_owned()), head.as_ref())
    }

    #[test]
    fn a_restored_stream_keeps_numbers_questions_and_turns() {
        let mut s = Stream::new(100, 1 << 20);
        let rec = |t: &str| Text::from(t.to_owned());
        s.restore(4, &rec(r#"{"type":"agent_start"}"#));
        s.restore(
            5,
            &rec(r#"{"type":"extension_ui_request","id":"q1","method":"confirm"}"#),
        );
        s.restore(
            6,
            &rec(r#"{"type":"extension_ui_request","id":"q2","method":"confirm"}"#),
        );
        s.restore(
            7,
            &rec(r#"{"type":"amarre.question_resolved","id":"q1","reason":"answered"}"#),
        );
        // A number at or below the last is ignored, never reused.
        s.restore(7, &rec(r#"{"dup":true}"#));
        assert_eq!(s.last_seq(), 7);
        assert_eq!(s.oldest_seq(), 4);
        assert!(s.turn_running());
        assert_eq!(s.pending_count(), 1, "q2 still waits");
        s.continue_from(9);
        assert_eq!(push(&mut s, r#"{"next":1}"#), Some(10));
        let c = s.catchup(Some(5), Instant::now());
        assert_eq!(
            c.replay.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![6, 7, 10]
        );
        let mut s = Stream::new(100, 1 << 20);
        s.restore(1, &rec(r#"{"type":"agent_start"}"#));
        s.restore(2, &rec(r#"{"type":"agent_end"}"#));
        assert!(!s.turn_running());
    }

    #[test]
    fn only_objects_are_numbered_and_numbers_never_go_back() {
        let mut s = Stream::new(10, 1 << 20);
        assert_eq!(push(&mut s, r#"{"a":1}"#), Some(1));
        assert_eq!(push(&mut s, "not json"), None);
        assert_eq!(push(&mut s, "[1]"), None);
        assert_eq!(push(&mut s, r#"{"a":2}"#), Some(2));
        s.clear_pending();
        assert_eq!(push(&mut s, r#"{"a":3}"#), Some(3));
    }

    #[test]
    fn replay_returns_records_after_since_and_a_gap_when_too_old() {
        let mut s = Stream::new(3, 1 << 20);
        for i in 1..=5 {
            push(&mut s, &format!(r#"{{"i":{i}}}"#));
        }
        let c = s.catchup(Some(3), Instant::now());
        assert_eq!(c.gap, None);
        assert_eq!(
            c.replay.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![4, 5]
        );
        let c = s.catchup(Some(0), Instant::now());
        assert_eq!(c.gap, Some((1, 2)));
        assert_eq!(c.replay.len(), 3);
        let c = s.catchup(Some(5), Instant::now());
        assert!(c.gap.is_none() && c.replay.is_empty());
    }

    #[test]
    fn pending_questions_are_kept_until_answered_or_expired() {
        let mut s = Stream::new(100, 1 << 20);
        push(
            &mut s,
            r#"{"type":"extension_ui_request","id":"q1","method":"confirm"}"#,
        );
        push(
            &mut s,
            r#"{"type":"extension_ui_request","id":"n1","method":"notify"}"#,
        );
        push(
            &mut s,
            r#"{"type":"extension_ui_request","id":"q2","method":"select","timeout":1}"#,
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
        let c = s.catchup(None, Instant::now());
        assert_eq!(
            c.pending.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            vec!["q1"]
        );
        // Already replayed questions are not sent twice.
        let c = s.catchup(Some(0), Instant::now());
        assert!(c.pending.is_empty());
        assert!(s.answered("q1"));
        assert!(!s.answered("q1"), "a second answer resolves nothing");
        assert!(s.catchup(None, Instant::now()).pending.is_empty());
        assert_eq!(s.expire(Instant::now()), vec!["q2".to_owned()]);
        assert_eq!(s.pending_count(), 0);
    }

    #[test]
    fn questions_of_an_ended_turn_are_withdrawn_and_clear_returns_the_rest() {
        let mut s = Stream::new(100, 1 << 20);
        push(
            &mut s,
            r#"{"type":"extension_ui_request","id":"a","method":"confirm"}"#,
        );
        let turn = push(&mut s, r#"{"type":"agent_start"}"#).unwrap_or(0);
        push(
            &mut s,
            r#"{"type":"extension_ui_request","id":"b","method":"input","timeout":60000}"#,
        );
        assert!(s.next_deadline().is_some());
        assert_eq!(s.withdraw_after(turn), vec!["b".to_owned()]);
        assert_eq!(s.next_deadline(), None);
        assert_eq!(s.clear_pending(), vec!["a".to_owned()]);
    }

    #[test]
    fn the_end_of_a_turn_withdraws_only_that_turns_questions() {
        let mut s = Stream::new(100, 1 << 20);
        push(
            &mut s,
            r#"{"type":"extension_ui_request","id":"a","method":"confirm"}"#,
        );
        let start = push(&mut s, r#"{"type":"agent_start"}"#);
        assert!(s.track_turn(Some("agent_start"), start).is_empty());
        push(
            &mut s,
            r#"{"type":"extension_ui_request","id":"b","method":"select"}"#,
        );
        let other = push(&mut s, r#"{"type":"message_update"}"#);
        assert!(s.track_turn(Some("message_update"), other).is_empty());
        let end = push(&mut s, r#"{"type":"agent_end"}"#);
        assert_eq!(s.track_turn(Some("agent_end"), end), vec!["b".to_owned()]);
        assert_eq!(s.pending_count(), 1);
    }
}

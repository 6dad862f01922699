//! The clients attached to one session: each one's bounded queue toward its
//! socket writer, the queue limits and their accounting, and the step's
//! outbox. This module is the only place that counts what a client has
//! queued: the session adds when it delivers, the [`Batch`] the writer
//! receives subtracts when the writer is done with it (it is dropped).
//!
//! The session never waits for a client: records published during one step
//! of the session task go to every client in one batch at the end of the
//! step ([`Clients::flush`]). A client is slow when it stops draining, not
//! when a burst outruns one scheduling slice (PROTOCOL.md section 4,
//! 2.4.0): it is closed with 1008 at once when its queue would go over the
//! byte bound (each record counted with [`RECORD_OVERHEAD_BYTES`]) or the
//! record bound, or when it has taken nothing for the stall time while
//! records wait for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::stream::text_for;
use super::text::Text;

/// What one queued record costs beyond its bytes: its `Text` handle in a
/// batch (32 bytes), the batch's share of the channel, and the frame
/// header the writer adds (up to 14 bytes), rounded up.
pub(crate) const RECORD_OVERHEAD_BYTES: usize = 64;

/// The bytes a record counts for against a client's byte bound.
fn cost(text: &Text) -> usize {
    text.len() + RECORD_OVERHEAD_BYTES
}

/// A client's socket, as the session may write to it directly: when the
/// client has nothing queued, the step's records go straight to its socket
/// from the session task, without waking the client's writer (one hop less
/// per record on the way out). The socket layer implements it
/// (`http/ws.rs`); the session core names no socket type.
pub(crate) trait Lane: Send + Sync + std::fmt::Debug {
    /// Hands `texts` to the socket in order without waiting, as many as it
    /// takes at once; returns how many it took (the rest go through the
    /// client's queue after them), or `Err(())` when the socket failed.
    /// When the socket could not flush at once, the writer is told to.
    fn try_write(&self, texts: &[Text]) -> Result<usize, ()>;
}

/// Where the socket layer puts a client's [`Lane`] once its catch-up is
/// written; until then, everything goes through the queue.
pub(crate) type LaneSlot = Arc<std::sync::OnceLock<Arc<dyn Lane>>>;

/// A close code and reason for a client's socket.
pub(crate) type CloseWith = (u16, &'static str);

/// What one client's queue holds and its writer has not finished writing.
#[derive(Debug, Default)]
struct Queued {
    records: AtomicUsize,
    bytes: AtomicUsize,
    /// When the writer last took something (ms since the epoch).
    taken_ms: AtomicU64,
}

/// Something sent down one client's queue.
#[derive(Debug)]
enum Outbound {
    /// Records in order: everything one step of the session published, so
    /// that the writer wakes once and writes them with one flush.
    Batch(Vec<Text>),
    /// Close after everything queued before it.
    Close(CloseWith),
}

/// What a client's writer receives next.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// Records to write, in order.
    Records(Batch),
    /// Close the socket with this code and reason (after what came before).
    Close(CloseWith),
}

/// Records for one client. They stay counted against the client's queue
/// limits until the batch is dropped, i.e. until the writer has handed them
/// to its socket.
#[derive(Debug)]
pub(crate) struct Batch {
    texts: Vec<Text>,
    records: usize,
    bytes: usize,
    queued: Arc<Queued>,
}

impl Batch {
    /// The records, in order (the batch keeps counting until dropped).
    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, Text> {
        self.texts.drain(..)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.queued
            .records
            .fetch_sub(self.records, Ordering::AcqRel);
        self.queued.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The writer's end of one client's queue.
#[derive(Debug)]
pub(crate) struct Outbox {
    rx: mpsc::Receiver<Outbound>,
    queued: Arc<Queued>,
    /// Closes at once, ahead of what is queued (a slow client). Taken once
    /// it has resolved, so it is never polled after completion.
    kill: Option<oneshot::Receiver<CloseWith>>,
    lane: LaneSlot,
}

impl Outbox {
    /// Lets the session write to this client's socket directly from now on
    /// (whenever the client has nothing queued). Set it once what must go
    /// out first (the catch-up) has been handed to the socket.
    pub(crate) fn open_lane(&self, lane: Arc<dyn Lane>) {
        let _ = self.lane.set(lane);
    }

    fn delivery(&self, msg: Outbound) -> Delivery {
        match msg {
            Outbound::Batch(texts) => {
                self.queued
                    .taken_ms
                    .store(crate::util::now_ms(), Ordering::Relaxed);
                Delivery::Records(Batch {
                    records: texts.len(),
                    bytes: texts.iter().map(cost).sum(),
                    texts,
                    queued: self.queued.clone(),
                })
            }
            Outbound::Close(with) => Delivery::Close(with),
        }
    }

    /// The next delivery; an immediate close comes before anything queued.
    /// `None` once the session has let go of this client (it ended).
    /// Cancel-safe.
    pub(crate) async fn next(&mut self) -> Option<Delivery> {
        if let Some(kill) = self.kill.as_mut() {
            tokio::select! {
                biased;
                killed = kill => {
                    self.kill = None;
                    if let Ok(with) = killed {
                        return Some(Delivery::Close(with));
                    }
                }
                msg = self.rx.recv() => return msg.map(|m| self.delivery(m)),
            }
        }
        let msg = self.rx.recv().await;
        msg.map(|m| self.delivery(m))
    }

    /// A delivery already queued, without waiting.
    pub(crate) fn try_next(&mut self) -> Option<Delivery> {
        self.rx.try_recv().ok().map(|m| self.delivery(m))
    }
}

struct Client {
    id: u64,
    tx: mpsc::Sender<Outbound>,
    queued: Arc<Queued>,
    kill: Option<oneshot::Sender<CloseWith>>,
    wants_seq: bool,
    lane: LaneSlot,
}

impl Client {
    fn kill(&mut self, with: CloseWith) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(with);
        }
    }
}

/// A client closed because its queue went over a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slow {
    pub(crate) client: u64,
    pub(crate) records: usize,
    pub(crate) bytes: usize,
}

/// Every client of one session and the records of the current step.
pub(crate) struct Clients {
    list: Vec<Client>,
    /// Records published during the current step, with their numbers.
    outbox: Vec<(Text, Option<u64>)>,
    next_id: u64,
    max_records: usize,
    max_bytes: usize,
    stall_ms: u64,
}

impl Clients {
    /// An empty set whose clients may each have at most `max_records`
    /// records and `max_bytes` bytes (with overhead) queued, and may take
    /// nothing for at most `stall` while records wait.
    pub(crate) fn new(max_records: usize, max_bytes: usize, stall: Duration) -> Clients {
        Clients {
            list: Vec::new(),
            outbox: Vec::new(),
            next_id: 1,
            max_records: max_records.max(1),
            max_bytes,
            stall_ms: stall.as_millis().min(u64::MAX as u128) as u64,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Adds a client; returns its id and its writer's end.
    pub(crate) fn add(&mut self, wants_seq: bool) -> (u64, Outbox) {
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = mpsc::channel(self.max_records);
        let (kill_tx, kill_rx) = oneshot::channel();
        let queued = Arc::new(Queued::default());
        queued
            .taken_ms
            .store(crate::util::now_ms(), Ordering::Relaxed);
        let lane = LaneSlot::default();
        self.list.push(Client {
            id,
            tx,
            queued: queued.clone(),
            kill: Some(kill_tx),
            wants_seq,
            lane: lane.clone(),
        });
        (
            id,
            Outbox {
                rx,
                queued,
                kill: Some(kill_rx),
                lane,
            },
        )
    }

    /// Forgets a client (its socket ended). False when it was not here.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        let before = self.list.len();
        self.list.retain(|c| c.id != id);
        self.list.len() != before
    }

    /// Queues a record for every client, delivered at [`Clients::flush`].
    pub(crate) fn publish(&mut self, text: Text, seq: Option<u64>) {
        self.outbox.push((text, seq));
    }

    /// Delivers the step's records: one batch per client. A client whose
    /// queue would go over its limits is closed with 1008 at once and
    /// returned; a client whose writer is gone is dropped silently.
    pub(crate) fn flush(&mut self) -> Vec<Slow> {
        let mut slow = Vec::new();
        if self.outbox.is_empty() {
            return slow;
        }
        let outbox = std::mem::take(&mut self.outbox);
        let (max_records, max_bytes, stall_ms) = (self.max_records, self.max_bytes, self.stall_ms);
        let mut numbered: Option<Vec<Text>> = None;
        // The clock is read once per step, and only when some client has
        // records waiting.
        let mut now_ms: Option<u64> = None;
        self.list.retain_mut(|c| {
            let waiting = c.queued.records.load(Ordering::Acquire) > 0;
            let stalled = waiting && {
                let now = *now_ms.get_or_insert_with(crate::util::now_ms);
                now.saturating_sub(c.queued.taken_ms.load(Ordering::Relaxed)) >= stall_ms
            };
            let mut batch: Vec<Text> = if c.wants_seq {
                numbered
                    .get_or_insert_with(|| {
                        outbox
                            .iter()
                            .map(|(t, seq)| text_for(t, *seq, true))
                            .collect()
                    })
                    .clone()
            } else {
                outbox.iter().map(|(t, _)| t.clone()).collect()
            };
            // Nothing queued: straight to the socket, as far as it takes
            // the records at once (what it buffers is bounded by the
            // WebSocket layer's write buffer); the rest are queued behind
            // them, and the queue limits apply to what is queued.
            if !waiting && let Some(lane) = c.lane.get() {
                match lane.try_write(&batch) {
                    Ok(0) => {}
                    Ok(n) => {
                        let now = *now_ms.get_or_insert_with(crate::util::now_ms);
                        c.queued.taken_ms.store(now, Ordering::Relaxed);
                        if n >= batch.len() {
                            return true;
                        }
                        batch.drain(..n);
                    }
                    // The socket failed: as for a writer that is gone.
                    Err(()) => return false,
                }
            }
            let (n, len) = (batch.len(), batch.iter().map(cost).sum::<usize>());
            let records = c.queued.records.fetch_add(n, Ordering::AcqRel) + n;
            let bytes = c.queued.bytes.fetch_add(len, Ordering::AcqRel) + len;
            // Err(true): over a limit (slow); Err(false): the writer is gone.
            let sent = if stalled || records > max_records || bytes > max_bytes {
                Err(true)
            } else {
                match c.tx.try_send(Outbound::Batch(batch)) {
                    Ok(()) => Ok(()),
                    Err(mpsc::error::TrySendError::Full(_)) => Err(true),
                    Err(mpsc::error::TrySendError::Closed(_)) => Err(false),
                }
            };
            match sent {
                Ok(()) => true,
                Err(is_slow) => {
                    c.queued.records.fetch_sub(n, Ordering::AcqRel);
                    c.queued.bytes.fetch_sub(len, Ordering::AcqRel);
                    if is_slow {
                        c.kill((1008, "client too slow"));
                        slow.push(Slow {
                            client: c.id,
                            records,
                            bytes,
                        });
                    }
                    false
                }
            }
        });
        slow
    }

    /// Delivers what was published, then closes every client with `with`
    /// after what is queued for it (at once when its queue is full).
    pub(crate) fn close_all(&mut self, with: CloseWith) -> Vec<Slow> {
        let slow = self.flush();
        for mut c in self.list.drain(..) {
            if c.tx.try_send(Outbound::Close(with)).is_err() {
                c.kill(with);
            }
        }
        slow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Text {
        Text::from(s.to_owned())
    }

    fn records(d: Option<Delivery>) -> Vec<String> {
        match d {
            Some(Delivery::Records(mut b)) => b
                .drain()
                .map(|t| String::from_utf8(t.as_bytes().to_vec()).unwrap())
                .collect(),
            other => panic!("expected records, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn one_batch_per_step_and_numbers_only_for_clients_that_asked() {
        let mut set = Clients::new(100, 1 << 20, Duration::from_secs(60));
        let (_, mut plain) = set.add(false);
        let (_, mut numbered) = set.add(true);
        set.publish(text(r#"{"a":1}"#), Some(1));
        set.publish(text("[2]"), None);
        assert!(set.flush().is_empty());
        assert_eq!(records(plain.next().await), vec![r#"{"a":1}"#, "[2]"]);
        assert_eq!(
            records(numbered.next().await),
            vec![r#"{"_seq":1,"a":1}"#, "[2]"]
        );
        assert!(plain.try_next().is_none(), "one batch per step");
        // Nothing published: nothing sent.
        assert!(set.flush().is_empty());
        assert!(plain.try_next().is_none());
    }

    #[tokio::test]
    async fn a_client_over_its_record_limit_is_closed_with_1008_ahead_of_its_queue() {
        let mut set = Clients::new(3, 1 << 20, Duration::from_secs(60));
        let (slow_id, mut slow) = set.add(false);
        let (_, mut fast) = set.add(false);
        for i in 0..3 {
            set.publish(text(&format!("{{\"i\":{i}}}")), None);
            assert!(set.flush().is_empty());
            // The fast client drains each step; its batch is dropped here.
            records(fast.next().await);
        }
        set.publish(text(r#"{"i":3}"#), None);
        let closed = set.flush();
        assert_eq!(
            closed,
            vec![Slow {
                client: slow_id,
                records: 4,
                bytes: 28 + 4 * RECORD_OVERHEAD_BYTES
            }]
        );
        assert_eq!(set.len(), 1);
        assert_eq!(records(fast.next().await), vec![r#"{"i":3}"#]);
        // The close overtakes the three queued batches.
        match slow.next().await {
            Some(Delivery::Close((1008, "client too slow"))) => {}
            other => panic!("expected a 1008 close, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_byte_limit_counts_until_the_writer_drops_the_batch() {
        let mut set = Clients::new(100, 10 + 2 * RECORD_OVERHEAD_BYTES, Duration::from_secs(60));
        let (_, mut out) = set.add(false);
        set.publish(text("12345678"), None);
        assert!(set.flush().is_empty());
        let held = out.next().await;
        // Still counted while the writer holds it.
        set.publish(text("123"), None);
        assert_eq!(set.flush().len(), 1, "8 + 3 bytes > 10 (with overheads)");
        drop(held);

        let mut set = Clients::new(100, 10 + 2 * RECORD_OVERHEAD_BYTES, Duration::from_secs(60));
        let (_, mut out) = set.add(false);
        set.publish(text("12345678"), None);
        set.flush();
        drop(out.next().await);
        set.publish(text("123"), None);
        assert!(set.flush().is_empty(), "written bytes no longer count");
        assert_eq!(records(out.next().await), vec!["123"]);
    }

    #[tokio::test]
    async fn close_all_sends_what_was_published_then_the_close() {
        let mut set = Clients::new(100, 1 << 20, Duration::from_secs(60));
        let (_, mut out) = set.add(false);
        set.publish(text("{}"), None);
        set.close_all((1011, "agent exited"));
        assert_eq!(set.len(), 0);
        assert_eq!(records(out.next().await), vec!["{}"]);
        match out.next().await {
            Some(Delivery::Close((1011, "agent exited"))) => {}
            other => panic!("expected the close, got {other:?}"),
        }
        assert!(out.next().await.is_none(), "the session let go");
    }

    #[tokio::test]
    async fn a_gone_writer_is_dropped_and_a_gone_session_ends_the_outbox() {
        let mut set = Clients::new(100, 1 << 20, Duration::from_secs(60));
        let (id, out) = set.add(false);
        drop(out);
        set.publish(text("{}"), None);
        assert!(set.flush().is_empty(), "not counted as slow");
        assert_eq!(set.len(), 0);
        assert!(!set.remove(id));

        let (id, mut out) = set.add(false);
        assert!(set.remove(id));
        // The kill sender is gone too: the outbox ends, and polling it
        // again is harmless.
        assert!(out.next().await.is_none());
        assert!(out.next().await.is_none());
    }

    #[tokio::test]
    async fn a_client_is_slow_when_it_stops_taking_not_when_a_burst_queues_up() {
        let mut set = Clients::new(1 << 20, 1 << 30, Duration::from_millis(500));
        let (_, mut reader) = set.add(false);
        let (stalled_id, mut stalled) = set.add(false);
        // A burst of 10 000 records in 100 steps queues up; nobody is slow.
        for step in 0..100 {
            for i in 0..100 {
                set.publish(text(&format!("{{\"i\":{}}}", step * 100 + i)), None);
            }
            assert!(set.flush().is_empty());
        }
        let mut got = 0;
        while let Some(d) = reader.try_next() {
            got += records(Some(d)).len();
        }
        assert_eq!(got, 10_000);
        // The stall time passes: the reader took something meanwhile, the
        // other client took nothing while records waited.
        std::thread::sleep(Duration::from_millis(600));
        set.publish(text("{}"), None);
        let slow = set.flush();
        assert_eq!(
            slow.iter().map(|s| s.client).collect::<Vec<_>>(),
            vec![stalled_id]
        );
        assert_eq!(records(reader.next().await), vec!["{}"]);
        // Its close overtakes what it never read.
        match stalled.next().await {
            Some(Delivery::Close((1008, "client too slow"))) => {}
            other => panic!("expected a 1008 close, got {other:?}"),
        }
    }

    /// A socket that takes at most `room` records at once, or fails.
    #[derive(Debug)]
    struct FakeLane {
        room: std::sync::Mutex<usize>,
        fail: bool,
        got: std::sync::Mutex<Vec<String>>,
    }

    impl Lane for FakeLane {
        fn try_write(&self, texts: &[Text]) -> Result<usize, ()> {
            if self.fail {
                return Err(());
            }
            let mut room = self.room.lock().unwrap();
            let n = texts.len().min(*room);
            *room -= n;
            self.got.lock().unwrap().extend(
                texts[..n]
                    .iter()
                    .map(|t| String::from_utf8(t.as_bytes().to_vec()).unwrap()),
            );
            Ok(n)
        }
    }

    fn lane(room: usize, fail: bool) -> Arc<FakeLane> {
        Arc::new(FakeLane {
            room: std::sync::Mutex::new(room),
            fail,
            got: std::sync::Mutex::new(Vec::new()),
        })
    }

    #[tokio::test]
    async fn the_lane_takes_records_only_while_nothing_is_queued_and_order_holds() {
        let mut set = Clients::new(100, 1 << 20, Duration::from_secs(60));
        let (_, mut out) = set.add(true);
        // No lane yet (catch-up not written): the queue.
        set.publish(text(r#"{"i":0}"#), Some(1));
        assert!(set.flush().is_empty());
        let first = out.next().await;
        let socket = lane(3, false);
        out.open_lane(socket.clone());
        // Batch 0 is still held by the writer (counted): the queue again,
        // behind it.
        set.publish(text(r#"{"i":1}"#), Some(2));
        assert!(set.flush().is_empty());
        assert!(socket.got.lock().unwrap().is_empty());
        assert_eq!(records(first), vec![r#"{"_seq":1,"i":0}"#]);
        assert_eq!(records(out.next().await), vec![r#"{"_seq":2,"i":1}"#]);
        // Nothing queued: straight to the socket, numbered as asked.
        set.publish(text(r#"{"i":2}"#), Some(3));
        assert!(set.flush().is_empty());
        assert_eq!(*socket.got.lock().unwrap(), vec![r#"{"_seq":3,"i":2}"#]);
        assert!(out.try_next().is_none());
        // The socket takes two of three: the third is queued behind them.
        for i in 3..6 {
            set.publish(text(&format!("{{\"i\":{i}}}")), Some(i + 1));
        }
        assert!(set.flush().is_empty());
        assert_eq!(socket.got.lock().unwrap().len(), 3);
        let queued = out.next().await;
        // While that one is queued, nothing goes straight out.
        *socket.room.lock().unwrap() = 10;
        set.publish(text(r#"{"i":6}"#), Some(7));
        assert!(set.flush().is_empty());
        assert_eq!(socket.got.lock().unwrap().len(), 3);
        assert_eq!(records(queued), vec![r#"{"_seq":6,"i":5}"#]);
        assert_eq!(records(out.next().await), vec![r#"{"_seq":7,"i":6}"#]);
    }

    #[tokio::test]
    async fn a_lane_that_fails_drops_its_client_without_calling_it_slow() {
        let mut set = Clients::new(100, 1 << 20, Duration::from_secs(60));
        let (_, mut out) = set.add(false);
        out.open_lane(lane(10, true));
        set.publish(text("{}"), None);
        assert!(set.flush().is_empty(), "not slow");
        assert_eq!(set.len(), 0);
        assert!(out.next().await.is_none(), "the session let go");
    }
}

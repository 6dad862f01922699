//! The session task: the one owner of a session's agent, adapter instance,
//! clients, record stream and timers. It reacts to agent output, client
//! records and control requests, in order, and never waits on a client.
//!
//! Data path (DESIGN.md): client -> ws reader -> `inbound` -> here ->
//! (adapter from-client) -> agent stdin; agent stdout -> here -> (adapter
//! from-agent) -> each client's bounded queue -> its writer. This task reads
//! the agent's stdout and writes its stdin itself, with cancel-safe
//! `read_buf`/`write` branches of its select loop: two task hops and two
//! channels fewer per record than helper tasks would cost (measured in
//! docs/PERFORMANCE.md). Writes gather everything queued into one syscall.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};

use super::agent_io;
use super::framing::{LineSplitter, Split};
use super::instances::Instance;
use super::record::{Head, parse_head};
use super::spawn::{self, Started};
use super::stream::{Stream, expects_answer, text_for};
use super::{
    AttachError, AttachOptions, Catchup, ClientSlot, Control, Inbound, Outbound, Queued,
    RestartError, Runtime, SessionHandle, Status,
};
use crate::adapter::{Adapter, AdapterInstance, CallError, Capability, Emit, SpawnRequest};
use crate::ops::metrics::add;
use crate::process::{describe_exit, signal_group, wait_group_gone};

/// How many request ids are remembered to send one push per id.
const MAX_REMEMBERED_PUSH_IDS: usize = 1024;
/// How long to wait for an agent to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// Client records taken in one go before the agent's stdin is written.
const MAX_INBOUND_BATCH: usize = 256;
/// How long output is still read after the agent exited, for a descendant
/// that keeps its stdout open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

struct Client {
    id: u64,
    tx: mpsc::Sender<Outbound>,
    queued: Arc<Queued>,
    kill: Option<oneshot::Sender<(u16, &'static str)>>,
    wants_seq: bool,
}

/// One spawn of the agent, from start to exit.
struct Run {
    /// The instance, to notice (per record) that a newer adapter version
    /// was swapped in.
    instance: Arc<Instance>,
    /// The instance generation this run's translator was checked against.
    generation: u64,
    /// The request the translator was created with (for a hand-over).
    request: SpawnRequest,
    adapter: Arc<Adapter>,
    translator: Option<AdapterInstance>,
    through_from_client: bool,
    through_from_agent: bool,
    pgid: u32,
    files_dir: Option<PathBuf>,
}

/// An awaiting-input push waiting for its grace period.
struct PushTimer {
    deadline: Instant,
    method: String,
    record: Utf8Bytes,
}

pub(super) struct SessionTask {
    handle: Arc<SessionHandle>,
    rt: Arc<Runtime>,
    ctrl_rx: mpsc::Receiver<Control>,
    inbound_rx: mpsc::Receiver<Inbound>,
    run: Option<Run>,
    /// The agent process (until it is reaped).
    child: Option<Child>,
    stdout: Option<ChildStdout>,
    splitter: LineSplitter,
    stdin: Option<ChildStdin>,
    /// Bytes for the agent not yet written (records with their newlines).
    stdin_buf: BytesMut,
    /// Records in `stdin_buf`; at the stdin queue limit no client record is
    /// taken (backpressure).
    stdin_records: usize,
    /// How the agent exited, once reaped, while its output drains.
    exited: Option<(Option<i32>, Option<String>)>,
    drain_deadline: Option<Instant>,
    clients: Vec<Client>,
    /// Records published during the current step, delivered to every
    /// client at the end of the step (one batch per client).
    outbox: Vec<(Utf8Bytes, Option<u64>)>,
    stream: Stream,
    push_timers: BTreeMap<String, PushTimer>,
    /// Request ids that already had a push timer (bounded, oldest dropped).
    push_armed: HashSet<String>,
    push_armed_order: VecDeque<String>,
    /// Sequence number of the latest `agent_start` (questions asked after
    /// it are withdrawn when that turn ends).
    turn_seq: u64,
}

/// Reads a chunk of the agent's stdout into the splitter (cancel-safe).
async fn read_stdout(
    stdout: &mut Option<ChildStdout>,
    splitter: &mut LineSplitter,
) -> std::io::Result<usize> {
    match stdout {
        Some(s) => s.read_buf(splitter.buffer()).await,
        None => std::future::pending().await,
    }
}

/// Writes as much of `buf` as the pipe takes (cancel-safe).
async fn write_stdin(stdin: &mut Option<ChildStdin>, buf: &[u8]) -> std::io::Result<usize> {
    match stdin {
        Some(s) => s.write(buf).await,
        None => std::future::pending().await,
    }
}

async fn wait_child(child: &mut Option<Child>) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Agent output as a text frame; invalid UTF-8 is replaced, not dropped.
fn utf8(line: Bytes) -> Utf8Bytes {
    match Utf8Bytes::try_from(line.clone()) {
        Ok(text) => text,
        Err(_) => Utf8Bytes::from(String::from_utf8_lossy(&line).into_owned()),
    }
}

impl SessionTask {
    pub(super) fn start(
        handle: Arc<SessionHandle>,
        rt: Arc<Runtime>,
        ctrl_rx: mpsc::Receiver<Control>,
        inbound_rx: mpsc::Receiver<Inbound>,
        instance: Arc<Instance>,
        started: Started,
    ) {
        let limits = rt.config.limits.clone();
        let mut task = SessionTask {
            stream: Stream::new(limits.replay_records, limits.replay_bytes),
            handle,
            rt,
            ctrl_rx,
            inbound_rx,
            run: None,
            child: None,
            stdout: None,
            splitter: LineSplitter::new(limits.max_line_bytes),
            stdin: None,
            stdin_buf: BytesMut::new(),
            stdin_records: 0,
            exited: None,
            drain_deadline: None,
            clients: Vec::new(),
            outbox: Vec::new(),
            push_timers: BTreeMap::new(),
            push_armed: HashSet::new(),
            push_armed_order: VecDeque::new(),
            turn_seq: 0,
        };
        task.install(instance, started);
        tokio::spawn(task.main());
    }

    /// Takes over a freshly started agent.
    fn install(&mut self, instance: Arc<Instance>, mut started: Started) {
        let limits = &self.rt.config.limits;
        if let Some(stderr) = started.child.stderr.take() {
            tokio::spawn(agent_io::log_stderr(self.handle.id.clone(), stderr));
        }
        self.stdout = started.child.stdout.take();
        self.stdin = started.child.stdin.take();
        self.child = Some(started.child);
        self.splitter = LineSplitter::new(limits.max_line_bytes);
        self.stdin_buf.clear();
        self.stdin_records = 0;
        self.exited = None;
        self.drain_deadline = None;
        *self
            .handle
            .adapter
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(started.adapter.clone());
        self.run = Some(Run {
            generation: instance.generation(),
            instance,
            request: started.request,
            through_from_client: started.spec.passthrough_from_client
                || started.translator.is_none(),
            through_from_agent: started.spec.passthrough_from_agent || started.translator.is_none(),
            adapter: started.adapter,
            translator: started.translator,
            pgid: started.pid,
            files_dir: started.files_dir,
        });
    }

    async fn main(mut self) {
        let stdin_limit = self.rt.config.limits.stdin_queue_records;
        loop {
            let taking_input =
                self.run.is_some() && self.stdin.is_some() && self.stdin_records < stdin_limit;
            let writing = self.stdin.is_some() && !self.stdin_buf.is_empty();
            let next_timer = self
                .push_timers
                .values()
                .map(|t| t.deadline)
                .chain(self.stream.next_deadline())
                .min();
            let flow = tokio::select! {
                biased;
                ctrl = self.ctrl_rx.recv() => match ctrl {
                    Some(c) => self.on_control(c).await,
                    None => ControlFlow::Break(()),
                },
                read = read_stdout(&mut self.stdout, &mut self.splitter) => {
                    self.on_stdout(read).await;
                    ControlFlow::Continue(())
                }
                written = write_stdin(&mut self.stdin, &self.stdin_buf), if writing => {
                    self.on_written(written);
                    ControlFlow::Continue(())
                }
                Some(record) = self.inbound_rx.recv(), if taking_input => {
                    self.on_inbound(record).await;
                    // Take what else is queued now, so that one write
                    // carries many records.
                    for _ in 1..MAX_INBOUND_BATCH {
                        if self.stdin_records >= stdin_limit || self.run.is_none() {
                            break;
                        }
                        match self.inbound_rx.try_recv() {
                            Ok(record) => self.on_inbound(record).await,
                            Err(_) => break,
                        }
                    }
                    ControlFlow::Continue(())
                }
                status = wait_child(&mut self.child), if self.exited.is_none() => {
                    self.on_child_exit(status).await;
                    ControlFlow::Continue(())
                }
                () = sleep_opt(self.drain_deadline) => {
                    // A descendant keeps stdout open: stop waiting for EOF.
                    self.end_of_output().await;
                    ControlFlow::Continue(())
                }
                () = sleep_opt(next_timer) => {
                    self.on_timers();
                    ControlFlow::Continue(())
                }
            };
            self.flush_outbox();
            if flow.is_break() {
                break;
            }
        }
    }

    // ----- control -------------------------------------------------------

    async fn on_control(&mut self, ctrl: Control) -> ControlFlow<()> {
        match ctrl {
            Control::Attach { slot, opts, reply } => {
                let result = self.attach(slot, opts);
                if let Err((slot, e)) = result {
                    let _ = slot.kill.send((1011, "session not running"));
                    let _ = reply.send(Err(e));
                } else if let Ok(catchup) = result {
                    let _ = reply.send(Ok(catchup));
                }
            }
            Control::Detach { client } => {
                let before = self.clients.len();
                self.clients.retain(|c| c.id != client);
                if self.clients.len() != before {
                    self.update_client_count();
                    tracing::info!(session = %self.handle.id, client, clients = self.clients.len(), "client detached");
                }
            }
            Control::Delete { reply } => {
                self.stop(Status::Stopped, 1000, "session deleted").await;
                let _ = reply.send(());
                return ControlFlow::Break(());
            }
            Control::Shutdown { reply } => {
                self.stop(Status::Stopped, 1001, "server shutting down")
                    .await;
                let _ = reply.send(());
                return ControlFlow::Break(());
            }
            Control::Restart { reply } => {
                let _ = reply.send(self.restart().await);
            }
            Control::PushSent { request_id, tokens } => {
                if self.run.is_some() {
                    let record = serde_json::json!({
                        "type": "amarre.push_sent",
                        "trigger": "awaiting_input",
                        "tokens": tokens,
                        "requestId": request_id,
                    });
                    self.publish(Utf8Bytes::from(record.to_string()));
                }
            }
        }
        ControlFlow::Continue(())
    }

    #[allow(clippy::result_large_err)]
    fn attach(
        &mut self,
        slot: ClientSlot,
        opts: AttachOptions,
    ) -> Result<Catchup, (ClientSlot, AttachError)> {
        if self.run.is_none() {
            let status = self.handle.status();
            return Err((slot, AttachError::NotRunning(status)));
        }
        // Records of this step already count as sent (they are in the
        // replay buffer): deliver them to the existing clients first, so the
        // seam for the new one is exactly here.
        self.flush_outbox();
        let wants_seq = opts.seq || opts.since.is_some();
        let hello = opts.hello || opts.since.is_some();
        let mut first = Vec::new();
        if hello {
            first.push(Utf8Bytes::from(self.hello().to_string()));
        }
        let catchup = self.stream.catchup(opts.since, Instant::now());
        if let Some((from, to)) = catchup.gap {
            first.push(Utf8Bytes::from(
                serde_json::json!({"type": "amarre.replay_gap", "from": from, "to": to})
                    .to_string(),
            ));
        }
        first.extend(
            catchup
                .replay
                .iter()
                .map(|(seq, text)| text_for(text, Some(*seq), wants_seq)),
        );
        first.extend(
            catchup
                .pending
                .iter()
                .map(|p| text_for(&p.text, p.seq, wants_seq)),
        );
        self.clients.push(Client {
            id: slot.id,
            tx: slot.tx,
            queued: slot.queued,
            kill: Some(slot.kill),
            wants_seq,
        });
        self.update_client_count();
        tracing::info!(
            session = %self.handle.id,
            client = slot.id,
            clients = self.clients.len(),
            replayed = catchup.replay.len(),
            pending = catchup.pending.len(),
            "client attached"
        );
        Ok(first)
    }

    fn hello(&self) -> serde_json::Value {
        let adapter = self.run.as_ref().map(|r| &r.adapter.info);
        let mut caps: Vec<&str> = vec!["seq", "replay", "pending-questions", "question-resolved"];
        if crate::http::app::compiled_in() {
            caps.push("web");
        }
        if let Some(info) = adapter {
            caps.extend(info.capabilities.iter().map(|c| c.as_str()));
        }
        serde_json::json!({
            "type": "amarre.hello",
            "protocol": crate::PROTOCOL_VERSION,
            "server": {"name": "amarre", "version": crate::VERSION},
            "sessionId": self.handle.id,
            "instanceId": self.handle.instance_id,
            "adapter": {
                "name": adapter.map(|i| i.name.as_str()),
                "version": adapter.map(|i| i.version.as_str()),
            },
            "capabilities": caps,
            "seq": self.stream.last_seq(),
        })
    }

    async fn restart(&mut self) -> Result<(), RestartError> {
        if self.run.is_some() {
            return Err(RestartError::AlreadyRunning);
        }
        let instance = self
            .rt
            .instances
            .get(&self.handle.instance_id)
            .ok_or_else(|| RestartError::InstanceGone(self.handle.instance_id.clone()))?;
        let ctx = spawn::SpawnEnv {
            spawner: &self.rt.spawner,
            daemon_env: &self.rt.daemon_env,
            files_root: &self.rt.files_root,
        };
        let started = spawn::start(&ctx, instance.adapter(), &instance.config, &self.handle.id, &self.handle.options)
            .await
            .map_err(|e| {
                tracing::warn!(session = %self.handle.id, reason = e.reason, detail = %e.detail, "failed to restart the agent");
                RestartError::Spawn(e)
            })?;
        let pid = started.pid;
        tracing::info!(session = %self.handle.id, adapter = %started.adapter.label(), pid, "session restarted");
        self.install(instance, started);
        let mut state = self.handle.lock();
        state.status = Status::Running;
        state.spawned_at = crate::util::now_ms();
        state.pid = Some(pid);
        state.exited = false;
        state.exit_code = None;
        state.signal = None;
        Ok(())
    }

    /// DELETE and shutdown: close clients, terminate the agent's group
    /// (SIGTERM, SIGKILL after the grace) and wait for it to end.
    async fn stop(&mut self, status: Status, code: u16, reason: &'static str) {
        self.handle.lock().status = status;
        self.resolve_all("cancelled");
        self.close_clients(code, reason);
        self.push_timers.clear();
        let Some(run) = self.run.take() else { return };
        // Closing stdin lets a well-behaved agent exit on EOF by itself;
        // its output is no longer read.
        self.drop_io();
        let grace = self.rt.config.limits.kill_grace;
        signal_group(run.pgid, libc::SIGTERM);
        let exited = self.wait_exit(grace).await;
        signal_group(run.pgid, libc::SIGKILL);
        if !exited {
            tracing::warn!(session = %self.handle.id, pid = run.pgid, grace_ms = grace.as_millis() as u64, "agent ignored SIGTERM; sent SIGKILL");
            self.wait_exit(KILL_WAIT).await;
        }
        // SIGKILL is delivered asynchronously: answer once the whole group
        // is gone, not just its leader.
        if !wait_group_gone(run.pgid, KILL_WAIT).await {
            tracing::warn!(session = %self.handle.id, pgid = run.pgid, "processes of the agent's group survived SIGKILL");
        }
        self.child = None;
        self.handle.lock().pid = None;
        *self
            .handle
            .adapter
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        remove_files(&run);
    }

    /// Waits up to `within` for the agent to be reaped.
    async fn wait_exit(&mut self, within: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        tokio::time::timeout(within, child.wait()).await.is_ok()
    }

    /// Forgets the agent's pipes and whatever was queued for it.
    fn drop_io(&mut self) {
        self.stdin = None;
        self.stdout = None;
        self.stdin_buf.clear();
        self.stdin_records = 0;
        self.drain_deadline = None;
    }

    // ----- agent -> clients ----------------------------------------------

    async fn on_stdout(&mut self, read: std::io::Result<usize>) {
        let mut split = Split::default();
        let eof = !matches!(read, Ok(n) if n > 0);
        if eof {
            self.splitter.finish(&mut split);
        } else {
            self.splitter.drain(&mut split);
        }
        for bytes in &split.dropped {
            tracing::warn!(session = %self.handle.id, bytes, max_line = self.rt.config.limits.max_line_bytes, "dropped an agent line longer than the limit");
            add(&self.rt.metrics.dropped_too_long, 1);
        }
        for line in split.lines {
            if self.run.is_none() {
                return;
            }
            self.agent_line(line).await;
        }
        if eof {
            self.stdout = None;
            if self.exited.is_some() {
                self.end_of_output().await;
            }
        }
    }

    async fn on_child_exit(&mut self, status: std::io::Result<std::process::ExitStatus>) {
        let (code, signal) = status.map(describe_exit).unwrap_or((None, None));
        self.exited = Some((code, signal));
        if self.stdout.is_none() {
            self.end_of_output().await;
        } else {
            self.drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
        }
    }

    /// The agent exited and its output is read (or the drain time is up).
    async fn end_of_output(&mut self) {
        if self.stdout.is_some() {
            let mut split = Split::default();
            self.splitter.finish(&mut split);
            for line in split.lines {
                self.agent_line(line).await;
            }
        }
        let (code, signal) = self.exited.take().unwrap_or((None, None));
        self.child = None;
        self.crashed(code, signal, None).await;
    }

    async fn agent_line(&mut self, line: Bytes) {
        let Some(run) = self.run.as_mut() else { return };
        if run.through_from_agent {
            self.publish(utf8(line));
            return;
        }
        self.follow_reload().await;
        let Some(run) = self.run.as_mut() else { return };
        let Some(translator) = run.translator.as_mut() else {
            return;
        };
        let text = String::from_utf8_lossy(&line);
        match translator.from_agent(&text).await {
            Ok(emits) => self.emit(emits),
            Err(e) => self.adapter_failed(e).await,
        }
    }

    fn emit(&mut self, emits: Vec<Emit>) {
        for e in emits {
            match e {
                Emit::ToClient(text) => self.publish(Utf8Bytes::from(text)),
                Emit::ToAgent(text) => self.queue_to_agent(Bytes::from(text)),
            }
        }
    }

    /// Numbers, buffers and fans out one record; arms push timers.
    fn publish(&mut self, text: Utf8Bytes) {
        let head = parse_head(text.as_bytes());
        let seq = self.stream.push(&text, head.as_ref());
        if let Some(h) = &head {
            self.arm_push(h, &text);
        }
        let m = &self.rt.metrics;
        add(&m.records_agent_to_client, 1);
        add(&m.bytes_agent_to_client, text.len() as u64);
        self.outbox.push((text, seq));
        // After the record itself: what it resolves follows it, in order.
        self.track_turn(head.as_ref().and_then(|h| h.kind.as_deref()), seq);
    }

    /// Delivers the step's records: one batch per client. A client whose
    /// queue would exceed its limits is closed with 1008 at once; nobody
    /// waits for it.
    fn flush_outbox(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let outbox = std::mem::take(&mut self.outbox);
        let limits = &self.rt.config.limits;
        let (max_records, max_bytes) = (limits.client_queue_records, limits.client_queue_bytes);
        let mut numbered: Option<Vec<Utf8Bytes>> = None;
        let session = &self.handle.id;
        let metrics = &self.rt.metrics;
        let before = self.clients.len();
        self.clients.retain_mut(|c| {
            let batch: Vec<Utf8Bytes> = if c.wants_seq {
                numbered
                    .get_or_insert_with(|| outbox.iter().map(|(t, seq)| text_for(t, *seq, true)).collect())
                    .clone()
            } else {
                outbox.iter().map(|(t, _)| t.clone()).collect()
            };
            let (n, len) = (batch.len(), batch.iter().map(|t| t.len()).sum::<usize>());
            let records = c.queued.records.fetch_add(n, Ordering::AcqRel) + n;
            let bytes = c.queued.bytes.fetch_add(len, Ordering::AcqRel) + len;
            let sent = if records > max_records || bytes > max_bytes {
                Err(mpsc::error::TrySendError::Full(Outbound::Batch(batch)))
            } else {
                c.tx.try_send(Outbound::Batch(batch))
            };
            match sent {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    c.queued.records.fetch_sub(n, Ordering::AcqRel);
                    c.queued.bytes.fetch_sub(len, Ordering::AcqRel);
                    add(&metrics.slow_clients_closed, 1);
                    tracing::warn!(session = %session, client = c.id, queued_records = records, queued_bytes = bytes, "client too slow to read; closing it with 1008");
                    if let Some(kill) = c.kill.take() {
                        let _ = kill.send((1008, "client too slow"));
                    }
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if self.clients.len() != before {
            self.update_client_count();
        }
    }

    fn close_clients(&mut self, code: u16, reason: &'static str) {
        // What was published before the close goes first.
        self.flush_outbox();
        for mut c in self.clients.drain(..) {
            if c.tx.try_send(Outbound::Close(code, reason)).is_err()
                && let Some(kill) = c.kill.take()
            {
                let _ = kill.send((code, reason));
            }
        }
        self.update_client_count();
    }

    fn update_client_count(&self) {
        self.handle
            .clients
            .store(self.clients.len(), Ordering::Relaxed);
    }

    // ----- clients -> agent ----------------------------------------------

    async fn on_inbound(&mut self, record: Inbound) {
        add(&self.rt.metrics.records_client_to_agent, 1);
        add(
            &self.rt.metrics.bytes_client_to_agent,
            record.line.len() as u64,
        );
        if record.head.kind.as_deref() == Some("extension_ui_response")
            && let Some(id) = &record.head.id
        {
            if self.stream.answered(id) {
                self.resolved(id, "answered");
            }
            self.push_timers.remove(id);
        }
        let Some(run) = self.run.as_mut() else { return };
        if run.through_from_client {
            self.queue_to_agent(record.line);
            return;
        }
        self.follow_reload().await;
        let Some(run) = self.run.as_mut() else { return };
        let Some(translator) = run.translator.as_mut() else {
            return;
        };
        let text = String::from_utf8_lossy(&record.line);
        match translator.from_client(&text).await {
            Ok(emits) => self.emit(emits),
            Err(e) => self.adapter_failed(e).await,
        }
    }

    /// Queues a record for the agent; the select loop writes it.
    fn queue_to_agent(&mut self, line: Bytes) {
        if self.stdin.is_none() {
            return;
        }
        self.stdin_buf.extend_from_slice(&line);
        self.stdin_buf.extend_from_slice(b"\n");
        self.stdin_records += 1;
    }

    fn on_written(&mut self, written: std::io::Result<usize>) {
        match written {
            Ok(n) if n > 0 => {
                self.stdin_buf.advance(n);
                if self.stdin_buf.is_empty() {
                    self.stdin_records = 0;
                }
            }
            result => {
                if let Err(e) = result {
                    tracing::debug!(session = %self.handle.id, error = %e, "the agent's stdin is closed; dropping queued records");
                }
                self.stdin = None;
                self.stdin_buf.clear();
                self.stdin_records = 0;
            }
        }
    }

    // ----- hot reload ------------------------------------------------------

    /// At a record boundary: if the instance swapped in a newer version of
    /// this adapter and both versions declare `state-handover`, move the
    /// translator over (save on the old, create with that state on the new).
    /// Otherwise the session finishes on the version it started with. One
    /// atomic load per record when nothing changed.
    async fn follow_reload(&mut self) {
        let Some(run) = self.run.as_mut() else { return };
        let generation = run.instance.generation();
        if generation == run.generation {
            return;
        }
        // One attempt per new generation.
        run.generation = generation;
        let next = run.instance.adapter();
        let session = &self.handle.id;
        if Arc::ptr_eq(&next, &run.adapter) || run.translator.is_none() {
            return;
        }
        let both = run.adapter.info.has(Capability::StateHandover)
            && next.info.has(Capability::StateHandover);
        if !both || next.info.name != run.adapter.info.name {
            tracing::info!(session = %session, from = %run.adapter.label(), to = %next.label(), "no state hand-over between these versions; the session stays on its version");
            return;
        }
        let Some(old) = run.translator.as_mut() else {
            return;
        };
        let saved = match old.save().await {
            Ok(Some(state)) => state,
            Ok(None) => {
                tracing::info!(session = %session, adapter = %run.adapter.label(), "the adapter saved no state; the session stays on its version");
                return;
            }
            Err(e) => {
                tracing::warn!(session = %session, error = %e, "saving translator state failed; the session stays on its version");
                return;
            }
        };
        let mut fresh = match next.instantiate().await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(session = %session, error = %e, "the new version cannot be instantiated; the session stays on its version");
                return;
            }
        };
        if let Err(e) = fresh.create_session(&run.request, Some(&saved)).await {
            tracing::warn!(session = %session, error = %e, "the new version refused the saved state; the session stays on its version");
            return;
        }
        tracing::info!(session = %session, from = %run.adapter.label(), to = %next.label(), hash = %next.hash, "session moved to the new adapter version");
        run.translator = Some(fresh);
        run.adapter = next.clone();
        *self
            .handle
            .adapter
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(next);
    }

    // ----- failures --------------------------------------------------------

    async fn adapter_failed(&mut self, err: CallError) {
        if !err.is_trap() {
            tracing::warn!(session = %self.handle.id, error = %err, "the adapter rejected a record; dropped it");
            return;
        }
        tracing::error!(session = %self.handle.id, error = %err, "adapter trapped; ending the session");
        let Some(run) = self.run.as_ref() else { return };
        let pgid = run.pgid;
        let grace = self.rt.config.limits.kill_grace;
        // The agent's own exit adds no second event: stop listening to it,
        // terminate it and reap it in the background.
        self.drop_io();
        self.exited = None;
        let child = self.child.take();
        signal_group(pgid, libc::SIGTERM);
        tokio::spawn(async move {
            if let Some(mut child) = child
                && tokio::time::timeout(grace, child.wait()).await.is_err()
            {
                signal_group(pgid, libc::SIGKILL);
                let _ = child.wait().await;
            }
            signal_group(pgid, libc::SIGKILL);
        });
        self.crashed(None, None, Some(err)).await;
    }

    /// The agent exited by itself, or its adapter trapped: status crashed,
    /// the crash event once, close 1011, a crash push.
    async fn crashed(
        &mut self,
        code: Option<i32>,
        signal: Option<String>,
        trap: Option<CallError>,
    ) {
        let Some(mut run) = self.run.take() else {
            return;
        };
        if trap.is_none() {
            if let Some(t) = run.translator.as_mut().filter(|t| t.poisoned().is_none()) {
                match t.on_exit(code, signal.as_deref()).await {
                    Ok(emits) => {
                        // The agent is gone: only records for clients matter.
                        for e in emits {
                            if let Emit::ToClient(text) = e {
                                self.publish(Utf8Bytes::from(text));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(session = %self.handle.id, error = %e, "the adapter failed at agent exit")
                    }
                }
            }
            signal_group(run.pgid, libc::SIGKILL);
        }
        self.drop_io();
        *self
            .handle
            .adapter
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        add(&self.rt.metrics.sessions_crashed, 1);
        {
            let mut state = self.handle.lock();
            state.status = Status::Crashed;
            state.pid = None;
            state.exited = true;
            state.exit_code = code;
            state.signal = signal.clone();
        }
        let mut event = serde_json::json!({
            "type": "amarre.session_event",
            "event": "crashed",
            "exitCode": code,
            "signal": signal,
        });
        if let Some(err) = &trap {
            event["reason"] = "adapter_trap".into();
            event["adapter"] = err.adapter().into();
            event["detail"] = err.detail().into();
            tracing::warn!(session = %self.handle.id, adapter = %err.adapter(), "session crashed: adapter trap");
        } else {
            tracing::warn!(session = %self.handle.id, exit_code = ?code, signal = ?signal, "session crashed: agent exited");
        }
        self.resolve_all("cancelled");
        self.publish(Utf8Bytes::from(event.to_string()));
        self.close_clients(1011, "agent exited");
        self.push_timers.clear();
        if let Some(push) = &self.rt.push {
            push.crashed(
                &self.handle,
                code,
                signal.as_deref(),
                trap.as_ref().map(|t| t.adapter()),
            );
        }
        remove_files(&run);
    }

    // ----- question resolution (12.1) ------------------------------------

    /// `amarre.question_resolved` for a question that stopped being pending.
    fn resolved(&mut self, id: &str, reason: &str) {
        let record = serde_json::json!({
            "type": "amarre.question_resolved",
            "id": id,
            "reason": reason,
        });
        self.push_timers.remove(id);
        self.publish(Utf8Bytes::from(record.to_string()));
        self.sync_pending();
    }

    /// Every pending question stops being pending (crash, delete, shutdown).
    fn resolve_all(&mut self, reason: &str) {
        for id in self.stream.clear_pending() {
            self.resolved(&id, reason);
        }
        self.sync_pending();
    }

    /// An `agent_end` withdraws the questions asked during that turn: the
    /// agent no longer waits for them (the turn was aborted).
    fn track_turn(&mut self, kind: Option<&str>, seq: Option<u64>) {
        match (kind, seq) {
            (Some("agent_start"), Some(n)) => self.turn_seq = n,
            (Some("agent_end"), Some(_)) => {
                for id in self.stream.withdraw_after(self.turn_seq) {
                    self.resolved(&id, "cancelled");
                }
            }
            _ => {}
        }
        self.sync_pending();
    }

    fn sync_pending(&self) {
        self.handle
            .pending_questions
            .store(self.stream.pending_count(), Ordering::Relaxed);
    }

    // ----- push timers -----------------------------------------------------

    fn arm_push(&mut self, head: &Head, record: &Utf8Bytes) {
        if self.rt.push.is_none() || head.kind.as_deref() != Some("extension_ui_request") {
            return;
        }
        if !expects_answer(head.method.as_deref()) {
            return;
        }
        let Some(id) = head.id.clone() else { return };
        // Exactly one push per request id, even if an agent repeats one.
        if self.push_armed.contains(&id) {
            return;
        }
        if self.push_armed.len() >= MAX_REMEMBERED_PUSH_IDS
            && let Some(old) = self.push_armed_order.pop_front()
        {
            self.push_armed.remove(&old);
        }
        self.push_armed.insert(id.clone());
        self.push_armed_order.push_back(id.clone());
        self.push_timers.entry(id).or_insert_with(|| PushTimer {
            deadline: Instant::now() + self.rt.config.push.grace,
            method: head.method.clone().unwrap_or_default(),
            record: record.clone(),
        });
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        for id in self.stream.expire(now) {
            self.resolved(&id, "timeout");
        }
        let due: Vec<String> = self
            .push_timers
            .iter()
            .filter(|(_, t)| t.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let grace_ms = self.rt.config.push.grace.as_millis() as u64;
        for id in due {
            let Some(timer) = self.push_timers.remove(&id) else {
                continue;
            };
            let last_text = self.handle.last_client_text_ms.load(Ordering::Relaxed);
            if last_text != 0 && crate::util::now_ms().saturating_sub(last_text) < grace_ms {
                tracing::debug!(session = %self.handle.id, request = %id, "a client is active; no awaiting-input push");
                continue;
            }
            if let Some(push) = &self.rt.push {
                push.awaiting_input(&self.handle, &id, &timer.method, timer.record.as_str());
            }
        }
    }
}

fn remove_files(run: &Run) {
    if let Some(dir) = &run.files_dir
        && let Err(e) = std::fs::remove_dir_all(dir)
    {
        tracing::debug!(dir = %dir.display(), error = %e, "failed to remove the session directory");
    }
}

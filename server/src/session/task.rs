//! The session task: the one owner of a session's agent, adapter instance,
//! clients, record stream and timers. It reacts to agent output, client
//! records and control requests, in order, and never waits on a client.
//!
//! Data path (docs/architecture.md): client -> ws reader -> `inbound` ->
//! here -> (adapter from-client) -> agent stdin; agent stdout -> here ->
//! (adapter from-agent) -> each client's bounded queue -> its writer. This
//! task reads the agent's stdout and writes its stdin itself, with
//! cancel-safe branches of its select loop: two task hops and two channels
//! fewer per record than helper tasks would cost (docs/PERFORMANCE.md).
//! Writes gather everything queued into one syscall; records published in
//! one step reach each client as one batch.
//!
//! The parts live in their own modules: [`super::agent`] (pipes, exit),
//! [`super::clients`] (queues and limits), [`super::stream`] (numbers,
//! replay, pending questions), [`super::push_timers`] and
//! [`super::handover`] (hot reload).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::agent::Agent;
use super::clients::{Clients, Slow};
use super::dropped::{DropReports, Dropped, Reason as DropReason};
use super::handover::{self, Run};
use super::push_timers::PushTimers;
use super::record::parse_head;
use super::spawn::{self, Started};
use super::stream::{Stream, text_for};
use super::text::Text;
use super::{
    AttachError, AttachOptions, Attachment, Control, Deps, Detach, Inbound, RestartError,
    SessionHandle, Status,
};
use crate::adapter::{CallError, Emit};
use crate::instances::Instance;
use crate::ops::metrics::add;
use crate::process::{signal_group, wait_group_gone};

/// How long to wait for an agent to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// Client records taken in one go before the agent's stdin is written.
const MAX_INBOUND_BATCH: usize = 256;

pub(super) struct SessionTask {
    handle: Arc<SessionHandle>,
    deps: Arc<Deps>,
    ctrl_rx: mpsc::Receiver<Control>,
    inbound_rx: mpsc::Receiver<Inbound>,
    /// The adapter side of the current run (None once it ended).
    run: Option<Run>,
    agent: Agent,
    clients: Clients,
    stream: Stream,
    timers: PushTimers,
    _budget: CloseBudget,
    /// Dropped records not yet reported (`amarre.record_dropped`).
    drops: DropReports,
    /// After a restart, until the adapter says whether the agent's
    /// conversation was restored.
    resume_pending: Option<ResumePending>,
    /// The session's record log when sessions are durable (PROTOCOL.md
    /// 12.3): each step's records are written to it before they go to any
    /// client ([`SessionTask::flush`]).
    log: Option<crate::state::RecordLog>,
}

/// Closes the session's inbound byte budget when the task ends (also by a
/// panic), so that a socket reader waiting for room gives up.
struct CloseBudget(Arc<SessionHandle>);

impl Drop for CloseBudget {
    fn drop(&mut self) {
        self.0.inbound_bytes.close();
    }
}

/// A `resumed` event not sent yet: the token the agent was respawned with.
struct ResumePending {
    token: Option<String>,
    interrupted: bool,
}

/// How a session read back at start comes back (PROTOCOL.md 12.3).
pub(super) enum Restored {
    /// Respawned: `resumed` when the adapter was handed a resume token it
    /// can use; `interrupted` when a turn or a question was cut off.
    Respawned { resumed: bool, interrupted: bool },
    /// The respawn failed: the session is crashed (`resume_failed`).
    Failed { detail: String },
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

impl SessionTask {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        handle: Arc<SessionHandle>,
        deps: Arc<Deps>,
        ctrl_rx: mpsc::Receiver<Control>,
        inbound_rx: mpsc::Receiver<Inbound>,
        agent: Option<(Arc<Instance>, Started)>,
        stream: Stream,
        log: Option<crate::state::RecordLog>,
        restored: Option<Restored>,
    ) {
        let limits = &deps.limits;
        let mut task = SessionTask {
            stream,
            log,
            agent: Agent::new(limits.max_line_bytes),
            clients: Clients::new(
                limits.client_queue_records,
                limits.client_queue_bytes,
                limits.client_stall,
            ),
            timers: PushTimers::new(deps.notifier.is_some(), deps.push_grace),
            _budget: CloseBudget(handle.clone()),
            drops: DropReports::default(),
            resume_pending: None,
            handle,
            ctrl_rx,
            inbound_rx,
            run: None,
            deps,
        };
        // An adapter with a handshake decides with its agent whether the
        // conversation can be restored (ACP: `session/load` only when the
        // agent offers `loadSession`).
        let agent_decides = agent.as_ref().is_some_and(|(instance, _)| {
            instance
                .adapter()
                .info
                .has(crate::adapter::Capability::Handshake)
        });
        if let Some((instance, started)) = agent {
            task.install(instance, started);
        }
        match restored {
            Some(Restored::Respawned {
                resumed: true,
                interrupted,
            }) if agent_decides => {
                // Told when the adapter reports its session's token (the same
                // one: restored), or at the first other record (not restored).
                task.resume_pending = Some(ResumePending {
                    token: task.handle.resume_token(),
                    interrupted,
                });
            }
            Some(Restored::Respawned {
                resumed,
                interrupted,
            }) => task.resumed(resumed, interrupted),
            Some(Restored::Failed { detail }) => {
                task.resolve_all("cancelled");
                let event = serde_json::json!({
                    "type": "amarre.session_event",
                    "event": "crashed",
                    "exitCode": null,
                    "signal": null,
                    "reason": "resume_failed",
                    "detail": detail,
                });
                task.publish(Text::from(event.to_string()));
            }
            None => {}
        }
        task.flush();
        task.save_meta();
        tokio::spawn(task.main());
    }

    // ----- durability (PROTOCOL.md 12.3) --------------------------------

    /// The session's metadata as stored, with `status` as given.
    fn meta(&self, status: Status) -> crate::state::Meta {
        let st = self.handle.lock().clone();
        crate::state::Meta {
            id: self.handle.id.clone(),
            name: self.handle.name.clone(),
            instance_id: self.handle.instance_id.clone(),
            cwd: self.handle.options.cwd.clone(),
            env: self.handle.options.env.clone(),
            status: match status {
                Status::Running => "running".into(),
                _ => "crashed".into(),
            },
            created_at: self.handle.created_at,
            order: self.handle.order,
            spawned_at: st.spawned_at,
            exited: st.exited,
            exit_code: st.exit_code,
            signal: st.signal,
            resume_token: st.resume_token,
            last_seq: self.stream.last_seq(),
        }
    }

    /// Stores the session's metadata (a status or resume token changed).
    fn save_meta(&self) {
        let status = self.handle.status();
        if let Some(state) = &self.deps.state
            && status != Status::Stopped
        {
            state.save_meta(&self.meta(status));
        }
    }

    /// Writes the step's records to the log, before any client gets them.
    /// A failed write stops persistence (one log line); the relay goes on.
    fn persist(&mut self) {
        let Some(log) = self.log.as_mut() else { return };
        if !log.has_pending() {
            return;
        }
        let state = self.deps.state.as_deref();
        if state.is_some_and(|s| !s.active()) {
            self.log = None;
            return;
        }
        if let Err(e) = log.write(self.stream.oldest_seq()) {
            if let Some(s) = state {
                s.failed("append to a record log", log.dir(), &e);
            }
            self.log = None;
        }
    }

    /// Takes over a freshly started agent.
    fn install(&mut self, instance: Arc<Instance>, mut started: Started) {
        let max_line = self.deps.limits.max_line_bytes;
        self.agent.install(&self.handle.id, started.child, max_line);
        self.set_running_adapter(Some(started.adapter.clone()));
        if let Some(token) = started.resume_token.take() {
            self.handle.set_resume_token(token);
        }
        let through = started.translator.is_none();
        self.run = Some(Run {
            handshake_due: started.translator.is_some(),
            generation: instance.generation(),
            instance,
            request: started.request,
            through_from_client: started.spec.passthrough_from_client || through,
            through_from_agent: started.spec.passthrough_from_agent || through,
            adapter: started.adapter,
            translator: started.translator,
            pgid: started.pid,
            files_dir: started.files_dir,
        });
    }

    async fn main(mut self) {
        let stdin_limit = (
            self.deps.limits.stdin_queue_records,
            self.deps.limits.stdin_queue_bytes,
        );
        loop {
            if self.run.as_ref().is_some_and(|r| r.handshake_due) {
                self.handshake().await;
            }
            let taking_input =
                self.run.is_some() && self.agent.inp.taking(stdin_limit.0, stdin_limit.1);
            let writing = self.agent.inp.writing();
            let reaping = self.agent.exit.waiting();
            let drain_until = self.agent.exit.drain_deadline();
            let next_timer = [
                self.timers.next_deadline(),
                self.stream.next_deadline(),
                self.drops.next_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            let flow = tokio::select! {
                biased;
                ctrl = self.ctrl_rx.recv() => match ctrl {
                    Some(c) => self.on_control(c).await,
                    None => ControlFlow::Break(()),
                },
                read = self.agent.out.read() => {
                    self.on_stdout(read).await;
                    ControlFlow::Continue(())
                }
                written = self.agent.inp.write(), if writing => {
                    if let Some(e) = self.agent.inp.written(written) {
                        tracing::debug!(session = %self.handle.id, error = %e, "the agent's stdin is closed; dropping queued records");
                    }
                    ControlFlow::Continue(())
                }
                Some(record) = self.inbound_rx.recv(), if taking_input => {
                    let mut charged = record.charged;
                    self.on_inbound(record).await;
                    // Take what else is queued now, so that one write
                    // carries many records.
                    for _ in 1..MAX_INBOUND_BATCH {
                        if self.run.is_none() || !self.agent.inp.taking(stdin_limit.0, stdin_limit.1) {
                            break;
                        }
                        match self.inbound_rx.try_recv() {
                            Ok(record) => {
                                charged += record.charged;
                                self.on_inbound(record).await
                            }
                            Err(_) => break,
                        }
                    }
                    // The batch's bytes are in the stdin queue now (bounded
                    // by its own limit): one release for all of them.
                    self.handle.inbound_bytes.release(charged);
                    ControlFlow::Continue(())
                }
                status = self.agent.exit.wait(), if reaping => {
                    let stdout_open = self.agent.out.is_open();
                    if self.agent.exit.exited(status, stdout_open, Instant::now()) {
                        self.end_of_output().await;
                    }
                    ControlFlow::Continue(())
                }
                () = sleep_opt(drain_until) => {
                    // A descendant keeps stdout open: stop waiting for EOF.
                    self.end_of_output().await;
                    ControlFlow::Continue(())
                }
                () = sleep_opt(next_timer) => {
                    self.on_timers();
                    ControlFlow::Continue(())
                }
            };
            self.flush();
            if flow.is_break() {
                break;
            }
        }
    }

    // ----- control -------------------------------------------------------

    async fn on_control(&mut self, ctrl: Control) -> ControlFlow<()> {
        match ctrl {
            Control::Attach { opts, reply } => {
                // A client gone meanwhile drops the attachment, which
                // detaches it again.
                let _ = reply.send(self.attach(opts));
            }
            Control::Detach { client } => {
                if self.clients.remove(client) {
                    self.update_client_count();
                    tracing::info!(session = %self.handle.id, client, clients = self.clients.len(), "client detached");
                }
            }
            Control::Delete { reply } => {
                // Forgotten first: a daemon killed while the agent is being
                // stopped must not bring the session back (PROTOCOL.md 12.3).
                self.log = None;
                if let Some(state) = &self.deps.state {
                    state.forget(&self.handle.id);
                }
                self.stop(Status::Stopped, 1000, "session deleted", true)
                    .await;
                let state = spawn::state_dir(
                    &self.deps.files_root,
                    self.deps.state.as_deref(),
                    &self.handle.id,
                );
                if state.exists() {
                    let _ = std::fs::remove_dir_all(state);
                }
                let _ = reply.send(());
                return ControlFlow::Break(());
            }
            Control::Shutdown { reply } => {
                // Durable: the session is kept as it is for the next start
                // (a running one resumes); nothing more goes to its log, so
                // questions cut off are resolved after the restart.
                let keep = self.deps.state.is_some();
                if keep {
                    self.flush();
                    let status = self.handle.status();
                    if let Some(state) = &self.deps.state
                        && status != Status::Stopped
                    {
                        state.save_meta(&self.meta(status));
                    }
                    if let Some(log) = self.log.take()
                        && let Err(e) = log.sync()
                    {
                        tracing::warn!(session = %self.handle.id, error = %e, "syncing the record log at shutdown failed");
                    }
                }
                self.stop(Status::Stopped, 1001, "server shutting down", !keep)
                    .await;
                let _ = reply.send(());
                return ControlFlow::Break(());
            }
            Control::Restart { reply } => {
                let _ = reply.send(self.restart().await);
            }
            Control::Dropped(d) => self.dropped(d),
            Control::PushSent { request_id, tokens } => {
                if self.run.is_some() {
                    let record = serde_json::json!({
                        "type": "amarre.push_sent",
                        "trigger": "awaiting_input",
                        "tokens": tokens,
                        "requestId": request_id,
                    });
                    self.publish(Text::from(record.to_string()));
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn attach(&mut self, opts: AttachOptions) -> Result<Attachment, AttachError> {
        if self.run.is_none() {
            return Err(AttachError::NotRunning(self.handle.status()));
        }
        // Records of this step already count as sent (they are in the
        // replay buffer): deliver them to the existing clients first, so the
        // seam for the new one is exactly here.
        self.flush();
        let wants_seq = opts.seq || opts.since.is_some();
        let hello = opts.hello || opts.since.is_some();
        let mut first = Vec::new();
        if hello {
            first.push(Text::from(self.hello().to_string()));
        }
        let catchup = self.stream.catchup(opts.since, Instant::now());
        if let Some((from, to)) = catchup.gap {
            first.push(Text::from(
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
        let (client, outbox) = self.clients.add(wants_seq);
        self.update_client_count();
        tracing::info!(
            session = %self.handle.id,
            client,
            clients = self.clients.len(),
            replayed = catchup.replay.len(),
            pending = catchup.pending.len(),
            "client attached"
        );
        Ok(Attachment {
            client,
            catchup: first,
            outbox,
            detach: Detach {
                ctrl: self.handle.ctrl.clone(),
                client,
                armed: true,
            },
        })
    }

    fn hello(&self) -> serde_json::Value {
        let adapter = self.run.as_ref().map(|r| &r.adapter.info);
        let mut caps: Vec<&str> = vec!["seq", "replay", "pending-questions", "question-resolved"];
        caps.extend(self.deps.capabilities.iter().copied());
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
            .deps
            .instances
            .get(&self.handle.instance_id)
            .ok_or_else(|| RestartError::InstanceGone(self.handle.instance_id.clone()))?;
        let resume = self.handle.resume_token();
        let started = spawn::start(&self.deps.spawn_env(), instance.adapter(), &instance.config, &self.handle.id, &self.handle.options, resume)
            .await
            .map_err(|e| {
                tracing::warn!(session = %self.handle.id, reason = e.reason, detail = ?e.detail, "failed to restart the agent");
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
        drop(state);
        self.save_meta();
        Ok(())
    }

    /// DELETE and shutdown: close clients, terminate the agent's group
    /// (SIGTERM, SIGKILL after the grace) and wait for it to end.
    async fn stop(&mut self, status: Status, code: u16, reason: &'static str, resolve: bool) {
        self.handle.lock().status = status;
        if resolve {
            self.resolve_all("cancelled");
        }
        self.close_clients(code, reason);
        self.timers.clear();
        let Some(run) = self.run.take() else { return };
        // Closing stdin lets a well-behaved agent exit on EOF by itself;
        // its output is no longer read.
        self.agent.drop_io();
        let grace = self.deps.limits.kill_grace;
        signal_group(run.pgid, libc::SIGTERM);
        let exited = self.agent.exit.wait_for(grace).await;
        signal_group(run.pgid, libc::SIGKILL);
        if !exited {
            tracing::warn!(session = %self.handle.id, pid = run.pgid, grace_ms = grace.as_millis() as u64, "agent ignored SIGTERM; sent SIGKILL");
            self.agent.exit.wait_for(KILL_WAIT).await;
        }
        // SIGKILL is delivered asynchronously: answer once the whole group
        // is gone, not just its leader.
        if !wait_group_gone(run.pgid, KILL_WAIT).await {
            tracing::warn!(session = %self.handle.id, pgid = run.pgid, "processes of the agent's group survived SIGKILL");
        }
        self.agent.exit.end();
        self.handle.lock().pid = None;
        self.set_running_adapter(None);
        run.remove_files();
    }

    fn set_running_adapter(&self, adapter: Option<Arc<crate::adapter::Adapter>>) {
        *self
            .handle
            .adapter
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = adapter;
    }

    // ----- agent -> clients ----------------------------------------------

    async fn on_stdout(&mut self, read: std::io::Result<usize>) {
        let (split, eof) = self.agent.out.lines(&read);
        self.too_long(&split.dropped);
        for line in split.lines {
            if self.run.is_none() {
                return;
            }
            self.agent_line(line).await;
        }
        if eof && self.agent.exit.has_exited() {
            self.end_of_output().await;
        }
    }

    /// The agent exited and its output is read (or the drain time is up).
    async fn end_of_output(&mut self) {
        let rest = self.agent.out.finish();
        // An over-long last line cut off by the exit is dropped and reported
        // like any other (PROTOCOL.md 12.6).
        self.too_long(&rest.dropped);
        for line in rest.lines {
            self.agent_line(line).await;
        }
        let (code, signal) = self.agent.exit.end();
        self.crashed(code, signal, None).await;
    }

    /// Agent lines the framer dropped for being over the line limit.
    fn too_long(&mut self, dropped: &[usize]) {
        for &bytes in dropped {
            tracing::warn!(session = %self.handle.id, bytes, max_line = self.deps.limits.max_line_bytes, "dropped an agent line longer than the limit");
            add(&self.deps.metrics.dropped_too_long, 1);
            self.dropped(Dropped::from_agent(DropReason::LineTooLong, bytes));
        }
    }

    async fn agent_line(&mut self, line: Bytes) {
        let Some(run) = self.run.as_mut() else { return };
        if run.through_from_agent {
            self.publish(Text::lossy(line));
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
            Err(CallError::TooLarge { bytes, limit, .. }) => {
                tracing::warn!(session = %self.handle.id, bytes, limit, "dropped an agent line too large for the adapter");
                self.dropped(Dropped::from_agent(DropReason::AdapterLimit, bytes));
            }
            Err(e) => self.adapter_failed(e).await,
        }
    }

    /// Reports a dropped record to the clients (PROTOCOL 12.6), at most
    /// once a second per reason ([`DropReports`]).
    fn dropped(&mut self, d: Dropped) {
        if let Some(record) = self.drops.note(d, Instant::now()) {
            self.publish(Text::from(record));
        }
    }

    fn emit(&mut self, emits: Vec<Emit>) {
        for e in emits {
            match e {
                Emit::ToClient(text) => self.publish(Text::from(text)),
                Emit::ToAgent(text) => self.agent.inp.queue(text.as_bytes()),
                Emit::ResumeToken(token) => {
                    if let Some(p) = self.resume_pending.take() {
                        let same = p.token.as_deref() == Some(token.as_str());
                        self.resumed(same, p.interrupted);
                    }
                    if self.handle.resume_token().as_deref() != Some(token.as_str()) {
                        self.handle.set_resume_token(token);
                        self.save_meta();
                    }
                }
            }
        }
    }

    /// Calls the translator's `handshake` once per run, before any record
    /// (WIT 0.2.0), and delivers what it returns. An adapter error reaches
    /// clients as an `extension_error`; a trap ends the session.
    async fn handshake(&mut self) {
        let Some(run) = self.run.as_mut() else { return };
        match handover::handshake(run).await {
            Ok(emits) => self.emit(emits),
            Err(e) if !e.is_trap() => {
                tracing::warn!(session = %self.handle.id, error = %e, "the adapter's handshake failed");
                let record = serde_json::json!({
                    "type": "extension_error",
                    "extensionPath": e.adapter(),
                    "event": "handshake",
                    "error": e.detail(),
                });
                self.publish(Text::from(record.to_string()));
            }
            Err(e) => self.adapter_failed(e).await,
        }
        self.flush();
    }

    /// Numbers, buffers and queues one record for every client; arms push
    /// timers.
    /// The first record of the stream after a restart (PROTOCOL.md 12.3),
    /// then the questions asked before it are resolved: they wait for
    /// nobody now.
    fn resumed(&mut self, resumed: bool, interrupted: bool) {
        let event = serde_json::json!({
            "type": "amarre.session_event",
            "event": "resumed",
            "resumed": resumed,
            "interrupted": interrupted,
        });
        self.publish(Text::from(event.to_string()));
        self.resolve_all("cancelled");
    }

    fn publish(&mut self, text: Text) {
        if let Some(p) = self.resume_pending.take() {
            // Something else comes first: the adapter never confirmed the
            // earlier conversation.
            self.resumed(false, p.interrupted);
        }
        let head = parse_head(text.as_bytes());
        let seq = self.stream.push(&text, head.as_ref());
        if let (Some(log), Some(n)) = (self.log.as_mut(), seq) {
            log.push(n, text.as_bytes());
        }
        if let Some(h) = &head {
            self.timers.arm(h, &text, Instant::now);
        }
        let m = &self.deps.metrics;
        add(&m.records_agent_to_client, 1);
        add(&m.bytes_agent_to_client, text.len() as u64);
        self.clients.publish(text, seq);
        // After the record itself: what it resolves follows it, in order.
        for id in self
            .stream
            .track_turn(head.as_ref().and_then(|h| h.kind.as_deref()), seq)
        {
            self.resolved(&id, "cancelled");
        }
        self.sync_pending();
    }

    /// Delivers the step's records to every client (one batch each).
    fn flush(&mut self) {
        self.persist();
        let before = self.clients.len();
        let slow = self.clients.flush();
        self.closed_slow(&slow);
        if self.clients.len() != before {
            self.update_client_count();
        }
    }

    fn closed_slow(&self, slow: &[Slow]) {
        for s in slow {
            add(&self.deps.metrics.slow_clients_closed, 1);
            tracing::warn!(session = %self.handle.id, client = s.client, queued_records = s.records, queued_bytes = s.bytes, "client too slow to read; closing it with 1008");
        }
    }

    fn close_clients(&mut self, code: u16, reason: &'static str) {
        // `close_all` delivers the step's records first: they are logged
        // before that, as in `flush`.
        self.persist();
        let slow = self.clients.close_all((code, reason));
        self.closed_slow(&slow);
        self.update_client_count();
    }

    fn update_client_count(&self) {
        self.handle
            .clients
            .store(self.clients.len(), Ordering::Relaxed);
    }

    // ----- clients -> agent ----------------------------------------------

    async fn on_inbound(&mut self, record: Inbound) {
        add(&self.deps.metrics.records_client_to_agent, 1);
        add(
            &self.deps.metrics.bytes_client_to_agent,
            record.line.len() as u64,
        );
        if record.head.kind.as_deref() == Some("extension_ui_response")
            && let Some(id) = &record.head.id
        {
            if self.stream.answered(id) {
                self.resolved(id, "answered");
            }
            self.timers.answered(id);
        }
        let Some(run) = self.run.as_mut() else { return };
        if run.through_from_client {
            self.agent.inp.queue(&record.line);
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
            Err(CallError::TooLarge { bytes, limit, .. }) => {
                tracing::warn!(session = %self.handle.id, bytes, limit, "dropped a client record too large for the adapter");
                self.dropped(Dropped::from_client(DropReason::AdapterLimit, bytes));
            }
            Err(e) => self.adapter_failed(e).await,
        }
    }

    /// At a record boundary: moves to a newer adapter version if the
    /// instance has one and both versions hand over ([`handover`]).
    async fn follow_reload(&mut self) {
        let Some(run) = self.run.as_mut() else { return };
        if let Some(next) = handover::follow(run, &self.handle.id).await {
            self.set_running_adapter(Some(next));
        }
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
        let grace = self.deps.limits.kill_grace;
        // The agent's own exit adds no second event: stop listening to it,
        // terminate it and reap it in the background.
        self.agent.drop_io();
        let child = self.agent.exit.take_child();
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
                                self.publish(Text::from(text));
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
        self.agent.drop_io();
        self.set_running_adapter(None);
        add(&self.deps.metrics.sessions_crashed, 1);
        {
            let mut state = self.handle.lock();
            state.status = Status::Crashed;
            state.pid = None;
            state.exited = true;
            state.exit_code = code;
            state.signal = signal.clone();
        }
        self.save_meta();
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
        self.publish(Text::from(event.to_string()));
        let reason = if trap.is_some() {
            "adapter failed"
        } else {
            "agent exited"
        };
        self.close_clients(1011, reason);
        self.timers.clear();
        if let Some(n) = &self.deps.notifier {
            n.crashed(
                &self.handle.id,
                self.handle.name.as_deref(),
                code,
                signal.as_deref(),
                trap.as_ref().map(|t| t.adapter()),
            );
        }
        run.remove_files();
    }

    // ----- question resolution (12.1) ------------------------------------

    /// `amarre.question_resolved` for a question that stopped being pending.
    fn resolved(&mut self, id: &str, reason: &str) {
        let record = serde_json::json!({
            "type": "amarre.question_resolved",
            "id": id,
            "reason": reason,
        });
        self.timers.answered(id);
        self.publish(Text::from(record.to_string()));
        self.sync_pending();
    }

    /// Every pending question stops being pending (crash, delete, shutdown).
    fn resolve_all(&mut self, reason: &str) {
        for id in self.stream.clear_pending() {
            self.resolved(&id, reason);
        }
        self.sync_pending();
    }

    fn sync_pending(&self) {
        self.handle
            .pending_questions
            .store(self.stream.pending_count(), Ordering::Relaxed);
    }

    // ----- push timers -----------------------------------------------------

    fn on_timers(&mut self) {
        for id in self.stream.expire(Instant::now()) {
            self.resolved(&id, "timeout");
        }
        for record in self.drops.due(Instant::now()) {
            self.publish(Text::from(record));
        }
        let grace_ms = self.timers.grace().as_millis() as u64;
        for timer in self.timers.due(Instant::now()) {
            let last_text = self.handle.last_client_text_ms.load(Ordering::Relaxed);
            if last_text != 0 && crate::util::now_ms().saturating_sub(last_text) < grace_ms {
                tracing::debug!(session = %self.handle.id, request = %timer.request_id, "a client is active; no awaiting-input push");
                continue;
            }
            if let Some(n) = &self.deps.notifier {
                let handle = self.handle.clone();
                let request_id = timer.request_id.clone();
                n.awaiting_input(
                    &self.handle.id,
                    self.handle.name.as_deref(),
                    &timer.request_id,
                    &timer.method,
                    &timer.record.to_string_lossy(),
                    Box::new(move |tokens| handle.push_sent(request_id, tokens)),
                );
            }
        }
    }
}

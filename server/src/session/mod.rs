//! Sessions: the registry, the per-session handle the HTTP layer talks to,
//! and the session task that owns each agent (see [`task`]).
//!
//! One task per session owns its child process, its adapter instance and
//! its clients; everything that touches a session goes through that task's
//! bounded channels. The registry's map is locked only to look sessions up
//! and to take a session slot, never on the data path nor across an await.
//!
//! The task is small; its parts are tested alone (docs/architecture.md):
//! - [`agent`]: the agent's pipes, the stdin queue, its exit;
//! - [`clients`]: attached clients, their queues, limits and accounting;
//! - [`stream`]: sequence numbers, replay, pending questions;
//! - [`push_timers`]: awaiting-input timers (`arm`, `due`);
//! - [`handover`]: the adapter side of a run and the hot-reload hand-over;
//! - [`text`]: the record type the core carries ([`Text`]);
//! - [`availability`]: whether an instance's agent could be started now;
//! - [`spawn`]: starting an agent; [`framing`] and [`record`]: lines and
//!   the fields the core reads.

mod agent;
pub(crate) mod availability;
mod budget;
mod clients;
pub(crate) mod dropped;
pub(crate) mod framing;
mod handover;
mod push_timers;
pub(crate) mod record;
pub(crate) mod spawn;
pub(crate) mod stream;
mod task;
mod text;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::Limits;
use crate::instances::Instances;
use crate::ops::metrics::Metrics;
use crate::process::Spawner;
pub(crate) use clients::{CloseWith, Delivery, Lane, Outbox};
pub use spawn::{SessionOptions, SpawnFailure};
pub(crate) use text::Text;

/// A delivered notification's receipt: how many devices got it.
pub(crate) type Receipt = Box<dyn FnOnce(usize) + Send>;

/// Where a session's notifications go (push, when configured). Plain data
/// in, a receipt back: the session core and the push service do not know
/// each other; `cli/serve.rs` connects them.
pub(crate) trait Notifier: Send + Sync {
    /// A question waited for its grace period with nobody at the session.
    fn awaiting_input(
        &self,
        session_id: &str,
        session_name: Option<&str>,
        request_id: &str,
        method: &str,
        record: &str,
        receipt: Receipt,
    );
    /// A session crashed (its agent exited, or its adapter trapped).
    fn crashed(
        &self,
        session_id: &str,
        session_name: Option<&str>,
        code: Option<i32>,
        signal: Option<&str>,
        adapter: Option<&str>,
    );
}

/// What the session core needs from the daemon, built once in `serve`.
pub(crate) struct Deps {
    pub(crate) limits: Limits,
    pub(crate) max_sessions: usize,
    pub(crate) push_grace: Duration,
    pub(crate) instances: Arc<Instances>,
    pub(crate) spawner: Spawner,
    /// The daemon's environment, read once at start.
    pub(crate) daemon_env: Arc<HashMap<String, String>>,
    /// Root of the per-session private directories.
    pub(crate) files_root: PathBuf,
    pub(crate) notifier: Option<Arc<dyn Notifier>>,
    pub(crate) metrics: Arc<Metrics>,
    /// What this daemon offers every session, for `amarre.hello` (after
    /// `seq`, `replay`, `pending-questions`, before the adapter's):
    /// `cli/serve.rs`'s `daemon_capabilities`.
    pub(crate) capabilities: Vec<&'static str>,
    /// The state directory when sessions are durable (PROTOCOL.md 12.3).
    pub(crate) state: Option<Arc<crate::state::StateDir>>,
}

impl Deps {
    fn spawn_env(&self) -> spawn::SpawnEnv<'_> {
        spawn::SpawnEnv {
            spawner: &self.spawner,
            daemon_env: &self.daemon_env,
            files_root: &self.files_root,
            state: self.state.as_deref(),
        }
    }
}

/// A session's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Crashed,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Crashed => "crashed",
            Status::Stopped => "stopped",
        }
    }
}

/// The REST view of a session (PROTOCOL.md section 3).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub id: String,
    pub name: Option<String>,
    pub instance_id: String,
    pub status: Status,
    pub agent: String,
    pub spawned_at: u64,
    pub clients: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Present (possibly null) once the agent has exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<Option<i32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<Option<String>>,
    /// 2.4.0: the working directory the session was started in.
    pub cwd: Option<String>,
    /// 2.4.0: how many questions wait for an answer.
    pub pending_questions: usize,
}

#[derive(Debug, Clone)]
struct State {
    status: Status,
    spawned_at: u64,
    pid: Option<u32>,
    exited: bool,
    exit_code: Option<i32>,
    signal: Option<String>,
    /// The latest resume token the adapter reported (WIT 0.2.0), handed to
    /// the next spawn of this session.
    resume_token: Option<String>,
}

/// A record from a client, already checked to be JSON.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) line: Bytes,
    pub(crate) head: record::Head,
    /// What it charged against the inbound byte budget (set by
    /// [`SessionHandle::send`]), given back by the session task once per
    /// batch of records it took.
    pub(crate) charged: usize,
}

/// What a client asked for in the WebSocket URL (section 11).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AttachOptions {
    pub(crate) seq: bool,
    pub(crate) hello: bool,
    pub(crate) since: Option<u64>,
}

/// An attached client, as the socket handler gets it: the records to send
/// first, then whatever arrives in its outbox; detach when the socket ends.
pub(crate) struct Attachment {
    pub(crate) client: u64,
    /// Records to send before live ones, in order.
    pub(crate) catchup: Vec<Text>,
    pub(crate) outbox: Outbox,
    pub(crate) detach: Detach,
}

/// Unregisters a client from its session: explicitly with
/// [`Detach::detach`], or when dropped (a connection task that ended
/// abnormally).
pub(crate) struct Detach {
    ctrl: mpsc::Sender<Control>,
    client: u64,
    armed: bool,
}

impl Detach {
    /// Unregisters the client and waits until the session has the request.
    pub(crate) async fn detach(mut self) {
        self.armed = false;
        let _ = self
            .ctrl
            .send(Control::Detach {
                client: self.client,
            })
            .await;
    }
}

impl Drop for Detach {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let detach = Control::Detach {
            client: self.client,
        };
        if let Err(mpsc::error::TrySendError::Full(detach)) = self.ctrl.try_send(detach)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let ctrl = self.ctrl.clone();
            rt.spawn(async move {
                let _ = ctrl.send(detach).await;
            });
        }
    }
}

/// Why an attach failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttachError {
    NotRunning(Status),
    Gone,
}

enum Control {
    Attach {
        opts: AttachOptions,
        reply: oneshot::Sender<Result<Attachment, AttachError>>,
    },
    Detach {
        client: u64,
    },
    Delete {
        reply: oneshot::Sender<()>,
    },
    Restart {
        reply: oneshot::Sender<Result<(), RestartError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    PushSent {
        request_id: String,
        tokens: usize,
    },
    /// A client record the connection dropped (PROTOCOL 12.6).
    Dropped(dropped::Dropped),
}

/// The handle the HTTP layer holds for a session.
pub struct SessionHandle {
    pub id: String,
    pub name: Option<String>,
    pub instance_id: String,
    pub options: SessionOptions,
    order: u64,
    /// When the session was created (ms epoch; kept across restarts of
    /// the daemon).
    created_at: u64,
    state: Mutex<State>,
    clients: AtomicUsize,
    /// When a client of the session last sent a text frame (ms since the
    /// epoch); pings do not count. Read by push suppression.
    last_client_text_ms: AtomicU64,
    /// Questions waiting for an answer (kept by the session task).
    pending_questions: AtomicUsize,
    ctrl: mpsc::Sender<Control>,
    inbound: mpsc::Sender<Inbound>,
    /// Bytes of client records on their way to the session task: the
    /// inbound queue is bounded in bytes as well as in records.
    inbound_bytes: budget::ByteBudget,
    /// The adapter version serving the running agent (None when not running).
    adapter: Mutex<Option<Arc<crate::adapter::Adapter>>>,
    deps: Arc<Deps>,
}

impl SessionHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session's status now.
    pub fn status(&self) -> Status {
        self.lock().status
    }

    /// The latest resume token the adapter reported for this session.
    pub fn resume_token(&self) -> Option<String> {
        self.lock().resume_token.clone()
    }

    fn set_resume_token(&self, token: String) {
        self.lock().resume_token = Some(token);
    }

    /// The REST summary.
    pub fn summary(&self) -> Summary {
        let s = self.lock().clone();
        let agent = self
            .deps
            .instances
            .get(&self.instance_id)
            .map(|i| i.adapter().info.name.clone())
            .unwrap_or_else(|| "unknown".into());
        Summary {
            id: self.id.clone(),
            name: self.name.clone(),
            instance_id: self.instance_id.clone(),
            status: s.status,
            agent,
            spawned_at: s.spawned_at,
            clients: self.clients.load(Ordering::Relaxed),
            pid: if s.status == Status::Running {
                s.pid
            } else {
                None
            },
            exit_code: s.exited.then_some(s.exit_code),
            signal: s.exited.then(|| s.signal.clone()),
            cwd: self.options.cwd.clone(),
            pending_questions: self.pending_questions.load(Ordering::Relaxed),
        }
    }

    /// The adapter version serving the running agent.
    pub fn running_adapter(&self) -> Option<Arc<crate::adapter::Adapter>> {
        self.adapter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The daemon's counters.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.deps.metrics
    }

    /// Notes that a client sent a text frame now.
    pub(crate) fn touch_client_text(&self) {
        self.last_client_text_ms
            .store(crate::util::now_ms(), Ordering::Relaxed);
    }

    /// Attaches a client: the session builds its queue and answers with
    /// everything the socket handler needs ([`Attachment`]).
    pub(crate) async fn attach(&self, opts: AttachOptions) -> Result<Attachment, AttachError> {
        let (reply, rx) = oneshot::channel();
        self.ctrl
            .send(Control::Attach { opts, reply })
            .await
            .map_err(|_| AttachError::Gone)?;
        rx.await.map_err(|_| AttachError::Gone)?
    }

    /// Sends a client record toward the agent; waits while the session's
    /// stdin queue is full (backpressure). False when the session is gone.
    pub(crate) async fn send(&self, mut record: Inbound) -> bool {
        // A record larger than the whole budget takes all of it.
        let want = self.inbound_bytes.charge(record.line.len());
        if !self.inbound_bytes.acquire(want).await {
            return false;
        }
        record.charged = want;
        if self.inbound.send(record).await.is_err() {
            self.inbound_bytes.release(want);
            return false;
        }
        true
    }

    /// Reports a client record the connection dropped to the session's
    /// clients (`amarre.record_dropped`). Never waits: with the control
    /// queue full the report is skipped (the drop is still counted in the
    /// metrics and logged by the caller).
    pub(crate) fn report_dropped(&self, reason: dropped::Reason, bytes: usize) {
        let _ = self.ctrl.try_send(Control::Dropped(dropped::Dropped {
            direction: dropped::Direction::FromClient,
            reason,
            bytes,
        }));
    }

    /// Reports a delivered awaiting-input push (from the push dispatcher).
    fn push_sent(&self, request_id: String, tokens: usize) {
        let _ = self.ctrl.try_send(Control::PushSent { request_id, tokens });
    }
}

/// Why a session could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    UnknownInstance(String),
    NoInstance,
    MaxSessions(usize),
    Spawn(SpawnFailure),
}

/// Why a restart failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartError {
    NotFound,
    AlreadyRunning,
    InstanceGone(String),
    MaxSessions(usize),
    Spawn(SpawnFailure),
}

/// What `POST /sessions` asked for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub instance_id: Option<String>,
    pub name: Option<String>,
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
}

/// The map of sessions and the spawns under way.
#[derive(Default)]
struct Registry {
    map: HashMap<String, Arc<SessionHandle>>,
    /// Session slots taken by spawns that have not finished yet.
    reserved: usize,
}

impl Registry {
    fn live(&self) -> usize {
        self.map
            .values()
            .filter(|s| s.status() == Status::Running)
            .count()
    }
}

/// A session slot held while an agent spawns: counted against the cap
/// with no lock held across the spawn; given back when dropped.
struct Reservation<'a> {
    sessions: &'a Sessions,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut reg = self.sessions.lock();
        reg.reserved = reg.reserved.saturating_sub(1);
    }
}

/// All sessions of the daemon.
pub struct Sessions {
    deps: Arc<Deps>,
    registry: Mutex<Registry>,
    order: AtomicU64,
}

impl Sessions {
    pub(crate) fn new(deps: Arc<Deps>) -> Sessions {
        Sessions {
            deps,
            registry: Mutex::new(Registry::default()),
            order: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every session, oldest first.
    pub fn list(&self) -> Vec<Arc<SessionHandle>> {
        let mut all: Vec<_> = self.lock().map.values().cloned().collect();
        all.sort_by_key(|s| s.order);
        all
    }

    /// Why `instance`'s agent could not be started now (`problem` of
    /// `GET /adapters`, 12.1); `None` when it could.
    pub async fn availability(&self, instance: &crate::instances::Instance) -> Option<String> {
        availability::problem(instance, &self.deps.daemon_env).await
    }

    /// The session with this id.
    pub fn get(&self, id: &str) -> Option<Arc<SessionHandle>> {
        self.lock().map.get(id).cloned()
    }

    /// Takes a session slot if live sessions and spawns under way leave
    /// one under the cap; `Err(cap)` otherwise. The check and the take are
    /// one critical section, so concurrent requests never exceed the cap.
    fn reserve(&self) -> Result<Reservation<'_>, usize> {
        let limit = self.deps.max_sessions;
        let mut reg = self.lock();
        if reg.live() + reg.reserved >= limit {
            return Err(limit);
        }
        reg.reserved += 1;
        Ok(Reservation { sessions: self })
    }

    /// Creates a session and spawns its agent.
    pub(crate) async fn create(
        &self,
        req: CreateRequest,
    ) -> Result<Arc<SessionHandle>, CreateError> {
        let deps = &self.deps;
        let instance = match &req.instance_id {
            Some(id) => deps
                .instances
                .get(id)
                .ok_or_else(|| CreateError::UnknownInstance(id.clone()))?,
            None => deps
                .instances
                .default_instance()
                .ok_or(CreateError::NoInstance)?,
        };
        let reservation = self.reserve().map_err(CreateError::MaxSessions)?;
        let id = loop {
            let candidate: String = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
            if !self.lock().map.contains_key(&candidate) {
                break candidate;
            }
        };
        let options = SessionOptions {
            cwd: req.cwd,
            env: req.env,
        };
        let started = spawn::start(&deps.spawn_env(), instance.adapter(), &instance.config, &id, &options, None)
            .await
            .map_err(|e| {
                tracing::warn!(instance = %instance.config.id, reason = e.reason, detail = ?e.detail, "failed to spawn an agent");
                crate::ops::metrics::add(&deps.metrics.spawn_failures, 1);
                CreateError::Spawn(e)
            })?;
        crate::ops::metrics::add(&deps.metrics.sessions_created, 1);
        let (handle, ctrl_rx, in_rx) = self.handle(
            id.clone(),
            req.name,
            instance.config.id.clone(),
            options,
            crate::util::now_ms(),
            State {
                status: Status::Running,
                spawned_at: crate::util::now_ms(),
                pid: Some(started.pid),
                exited: false,
                exit_code: None,
                signal: None,
                resume_token: None,
            },
        );
        tracing::info!(
            session = %id,
            instance = %handle.instance_id,
            adapter = %started.adapter.label(),
            pid = started.pid,
            "session spawned"
        );
        // The running session now counts itself: its slot is given back in
        // the same critical section.
        {
            let mut reg = self.lock();
            reg.map.insert(id, handle.clone());
            reg.reserved = reg.reserved.saturating_sub(1);
            std::mem::forget(reservation);
        }
        let log = deps
            .state
            .as_ref()
            .and_then(|s| s.open_log(&handle.id, 1, &deps.limits));
        task::SessionTask::start(
            handle.clone(),
            deps.clone(),
            ctrl_rx,
            in_rx,
            Some((instance, started)),
            self.stream(),
            log,
            None,
        );
        Ok(handle)
    }

    fn stream(&self) -> stream::Stream {
        stream::Stream::new(
            self.deps.limits.replay_records,
            self.deps.limits.replay_bytes,
        )
    }

    /// A new handle and the receiving ends of its channels.
    #[allow(clippy::type_complexity)]
    fn handle(
        &self,
        id: String,
        name: Option<String>,
        instance_id: String,
        options: SessionOptions,
        created_at: u64,
        state: State,
    ) -> (
        Arc<SessionHandle>,
        mpsc::Receiver<Control>,
        mpsc::Receiver<Inbound>,
    ) {
        let (ctrl_tx, ctrl_rx) = mpsc::channel(64);
        let (in_tx, in_rx) = mpsc::channel(64);
        let handle = Arc::new(SessionHandle {
            id,
            name,
            instance_id,
            options,
            order: self.order.fetch_add(1, Ordering::Relaxed),
            created_at,
            state: Mutex::new(state),
            clients: AtomicUsize::new(0),
            last_client_text_ms: AtomicU64::new(0),
            pending_questions: AtomicUsize::new(0),
            ctrl: ctrl_tx,
            inbound: in_tx,
            inbound_bytes: budget::ByteBudget::new(self.deps.limits.stdin_queue_bytes),
            adapter: Mutex::new(None),
            deps: self.deps.clone(),
        });
        (handle, ctrl_rx, in_rx)
    }

    /// Brings back the sessions stored in the state directory (PROTOCOL.md
    /// 12.3): same ids, their record streams continuing; running ones
    /// respawned (resumed through their adapter when it can), within the
    /// session cap; crashed ones crashed. Returns how many came back.
    pub(crate) async fn restore(&self) -> usize {
        let Some(state) = self.deps.state.clone() else {
            return 0;
        };
        let loaded = state.load();
        let count = loaded.len();
        let mut running = 0usize;
        let mut respawns = Vec::new();
        for l in loaded {
            let meta = l.meta;
            let mut stream = self.stream();
            for r in &l.records {
                stream.restore(
                    r.seq,
                    &Text::from(String::from_utf8_lossy(&r.bytes).into_owned()),
                );
            }
            stream.continue_from(meta.last_seq);
            let interrupted = stream.turn_running() || stream.pending_count() > 0;
            let log = state.open_log(&meta.id, stream.last_seq() + 1, &self.deps.limits);
            let was_running = meta.status == "running";
            let (handle, ctrl_rx, in_rx) = self.handle(
                meta.id.clone(),
                meta.name.clone(),
                meta.instance_id.clone(),
                SessionOptions {
                    cwd: meta.cwd.clone(),
                    env: meta.env.clone(),
                },
                meta.created_at,
                State {
                    status: Status::Crashed,
                    spawned_at: meta.spawned_at,
                    pid: None,
                    exited: meta.exited || was_running,
                    exit_code: meta.exit_code,
                    signal: meta.signal.clone(),
                    resume_token: meta.resume_token.clone(),
                },
            );
            self.lock().map.insert(meta.id.clone(), handle.clone());
            if !was_running {
                tracing::info!(session = %meta.id, seq = stream.last_seq(), "restored a crashed session");
                task::SessionTask::start(
                    handle,
                    self.deps.clone(),
                    ctrl_rx,
                    in_rx,
                    None,
                    stream,
                    log,
                    None,
                );
                continue;
            }
            let within_cap = running < self.deps.max_sessions;
            if within_cap {
                running += 1;
            }
            respawns.push(async move {
                let outcome = if within_cap {
                    self.respawn(&handle).await
                } else {
                    Err(format!(
                        "the session cap ({}) was reached",
                        self.deps.max_sessions
                    ))
                };
                let (agent, restored) = match outcome {
                    Ok((instance, started, resumed)) => {
                        let mut st = handle.lock();
                        st.status = Status::Running;
                        st.spawned_at = crate::util::now_ms();
                        st.pid = Some(started.pid);
                        st.exited = false;
                        st.exit_code = None;
                        st.signal = None;
                        drop(st);
                        tracing::info!(session = %handle.id, pid = started.pid, resumed, interrupted, seq = stream.last_seq(), "restored and respawned a session");
                        (
                            Some((instance, started)),
                            task::Restored::Respawned {
                                resumed,
                                interrupted,
                            },
                        )
                    }
                    Err(detail) => {
                        tracing::warn!(session = %handle.id, detail = %detail, "restored a session whose respawn failed; it is crashed");
                        (None, task::Restored::Failed { detail })
                    }
                };
                task::SessionTask::start(
                    handle,
                    self.deps.clone(),
                    ctrl_rx,
                    in_rx,
                    agent,
                    stream,
                    log,
                    Some(restored),
                );
            });
        }
        futures_util::future::join_all(respawns).await;
        count
    }

    /// Spawns a restored session's agent with its latest resume token.
    /// Returns whether the adapter resumes with it.
    async fn respawn(
        &self,
        handle: &SessionHandle,
    ) -> Result<(Arc<crate::instances::Instance>, spawn::Started, bool), String> {
        let instance = self
            .deps
            .instances
            .get(&handle.instance_id)
            .ok_or_else(|| {
                format!(
                    "the instance {} is no longer configured",
                    handle.instance_id
                )
            })?;
        let token = handle.resume_token();
        let resumes = token.is_some()
            && instance
                .adapter()
                .info
                .has(crate::adapter::Capability::Resume);
        let started = spawn::start(
            &self.deps.spawn_env(),
            instance.adapter(),
            &instance.config,
            &handle.id,
            &handle.options,
            token,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok((instance, started, resumes))
    }

    /// Stops a session: clients closed with 1000, agent terminated, removed.
    pub async fn delete(&self, id: &str) -> bool {
        let Some(handle) = self.get(id) else {
            return false;
        };
        let (reply, rx) = oneshot::channel();
        let taken = handle.ctrl.send(Control::Delete { reply }).await.is_ok() && rx.await.is_ok();
        if !taken {
            // The session's task ended before it took the delete: a
            // shutdown under way kept it for the next start. The answer
            // says deleted, so it is forgotten here (after the shutdown
            // saved it: the task had ended).
            if let Some(state) = &self.deps.state {
                state.forget(id);
            }
        }
        self.lock().map.remove(id);
        tracing::info!(session = %id, "session deleted");
        true
    }

    /// Restarts a session that is not running, with its stored options.
    pub(crate) async fn restart(&self, id: &str) -> Result<Arc<SessionHandle>, RestartError> {
        let handle = self.get(id).ok_or(RestartError::NotFound)?;
        if handle.status() == Status::Running {
            return Err(RestartError::AlreadyRunning);
        }
        if self.deps.instances.get(&handle.instance_id).is_none() {
            return Err(RestartError::InstanceGone(handle.instance_id.clone()));
        }
        let _slot = self.reserve().map_err(RestartError::MaxSessions)?;
        let (reply, rx) = oneshot::channel();
        handle
            .ctrl
            .send(Control::Restart { reply })
            .await
            .map_err(|_| RestartError::NotFound)?;
        rx.await.map_err(|_| RestartError::NotFound)??;
        Ok(handle)
    }

    /// Stops every session (no crash events, no pushes) and waits for their
    /// agents to end.
    pub async fn shutdown(&self) {
        let all = self.list();
        let waits = all.iter().map(|h| async move {
            let (reply, rx) = oneshot::channel();
            if h.ctrl.send(Control::Shutdown { reply }).await.is_ok() {
                let _ = rx.await;
            }
        });
        futures_util::future::join_all(waits).await;
        self.lock().map.clear();
        if let Some(state) = &self.deps.state {
            state.sync_now();
        }
    }
}

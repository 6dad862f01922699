//! Sessions: the registry, the per-session handle the HTTP layer talks to,
//! and the session task that owns each agent (see [`task`]).
//!
//! One task per session owns its child process, its adapter instance and
//! its clients; everything that touches a session goes through that task's
//! bounded channels. The registry's map is locked only to look sessions up,
//! never on the data path.

mod agent_io;
pub mod availability;
pub mod framing;
pub mod instances;
pub mod record;
pub mod spawn;
pub mod stream;
mod task;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::adapter::AdapterHost;
use crate::config::Config;
use crate::process::Spawner;
use crate::push::PushService;
use instances::Instances;
pub use spawn::{SessionOptions, SpawnFailure};

/// What sessions need from the daemon.
pub struct Runtime {
    pub config: Arc<Config>,
    pub host: AdapterHost,
    pub instances: Instances,
    pub spawner: Spawner,
    /// The daemon's environment, read once at start.
    pub daemon_env: HashMap<String, String>,
    /// Root of the per-session private directories.
    pub files_root: PathBuf,
    pub push: Option<Arc<PushService>>,
    pub metrics: Arc<crate::ops::metrics::Metrics>,
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
}

/// A record from a client, already checked to be JSON.
#[derive(Debug)]
pub struct Inbound {
    pub client: u64,
    pub line: Bytes,
    pub head: record::Head,
}

/// Something sent to one client's socket writer.
#[derive(Debug)]
pub enum Outbound {
    /// Records in order: everything one step of the session published, so
    /// that the writer wakes once and writes them with one flush.
    Batch(Vec<Utf8Bytes>),
    /// Close after everything queued before it.
    Close(u16, &'static str),
}

/// What a client's queue holds, shared by the session (adds) and the
/// client's writer (subtracts as it writes).
#[derive(Debug, Default)]
pub struct Queued {
    pub records: AtomicUsize,
    pub bytes: AtomicUsize,
}

/// The session's side of one attached client.
pub struct ClientSlot {
    pub id: u64,
    pub tx: mpsc::Sender<Outbound>,
    /// Records and bytes queued and not yet written.
    pub queued: Arc<Queued>,
    /// Closes the socket at once, dropping what is queued.
    pub kill: oneshot::Sender<(u16, &'static str)>,
}

/// What a client asked for in the WebSocket URL (section 11).
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachOptions {
    pub seq: bool,
    pub hello: bool,
    pub since: Option<u64>,
}

/// Records a client receives before live ones, in order.
pub type Catchup = Vec<Utf8Bytes>;

/// Why an attach failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachError {
    NotRunning(Status),
    Gone,
}

enum Control {
    Attach {
        slot: ClientSlot,
        opts: AttachOptions,
        reply: oneshot::Sender<Result<Catchup, AttachError>>,
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
}

/// The handle the HTTP layer holds for a session.
pub struct SessionHandle {
    pub id: String,
    pub name: Option<String>,
    pub instance_id: String,
    pub options: SessionOptions,
    order: u64,
    state: Mutex<State>,
    clients: AtomicUsize,
    next_client: AtomicU64,
    /// When a client of the session last sent a text frame (ms since the
    /// epoch); pings do not count. Read by push suppression.
    last_client_text_ms: AtomicU64,
    /// Questions waiting for an answer (kept by the session task).
    pending_questions: AtomicUsize,
    ctrl: mpsc::Sender<Control>,
    inbound: mpsc::Sender<Inbound>,
    /// The adapter version serving the running agent (None when not running).
    adapter: Mutex<Option<Arc<crate::adapter::Adapter>>>,
    rt: Arc<Runtime>,
}

impl SessionHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session's status now.
    pub fn status(&self) -> Status {
        self.lock().status
    }

    /// The REST summary.
    pub fn summary(&self) -> Summary {
        let s = self.lock().clone();
        let agent = self
            .rt
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
    pub fn metrics(&self) -> &crate::ops::metrics::Metrics {
        &self.rt.metrics
    }

    /// A fresh client id.
    pub fn next_client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    /// Notes that a client sent a text frame now.
    pub fn touch_client_text(&self) {
        self.last_client_text_ms
            .store(crate::util::now_ms(), Ordering::Relaxed);
    }

    /// Registers a client; returns the records it receives first.
    pub async fn attach(
        &self,
        slot: ClientSlot,
        opts: AttachOptions,
    ) -> Result<Catchup, AttachError> {
        let (reply, rx) = oneshot::channel();
        self.ctrl
            .send(Control::Attach { slot, opts, reply })
            .await
            .map_err(|_| AttachError::Gone)?;
        rx.await.map_err(|_| AttachError::Gone)?
    }

    /// Unregisters a client (its socket ended).
    pub async fn detach(&self, client: u64) {
        let _ = self.ctrl.send(Control::Detach { client }).await;
    }

    /// Sends a client record toward the agent; waits while the session's
    /// stdin queue is full (backpressure). False when the session is gone.
    pub async fn send(&self, record: Inbound) -> bool {
        self.inbound.send(record).await.is_ok()
    }

    /// Reports a delivered awaiting-input push (from the push dispatcher).
    pub fn push_sent(&self, request_id: String, tokens: usize) {
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

/// All sessions of the daemon.
pub struct Sessions {
    rt: Arc<Runtime>,
    map: Mutex<HashMap<String, Arc<SessionHandle>>>,
    /// Serialises spawns so the session cap is checked atomically.
    spawn_lock: tokio::sync::Mutex<()>,
    order: AtomicU64,
}

impl Sessions {
    pub fn new(rt: Arc<Runtime>) -> Sessions {
        Sessions {
            rt,
            map: Mutex::new(HashMap::new()),
            spawn_lock: tokio::sync::Mutex::new(()),
            order: AtomicU64::new(0),
        }
    }

    /// The daemon's runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SessionHandle>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every session, oldest first.
    pub fn list(&self) -> Vec<Arc<SessionHandle>> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by_key(|s| s.order);
        all
    }

    /// The session with this id.
    pub fn get(&self, id: &str) -> Option<Arc<SessionHandle>> {
        self.lock().get(id).cloned()
    }

    fn live(&self) -> usize {
        self.lock()
            .values()
            .filter(|s| s.status() == Status::Running)
            .count()
    }

    /// Creates a session and spawns its agent.
    pub async fn create(&self, req: CreateRequest) -> Result<Arc<SessionHandle>, CreateError> {
        let _spawning = self.spawn_lock.lock().await;
        let instance = match &req.instance_id {
            Some(id) => self
                .rt
                .instances
                .get(id)
                .ok_or_else(|| CreateError::UnknownInstance(id.clone()))?,
            None => self
                .rt
                .instances
                .default_instance()
                .ok_or(CreateError::NoInstance)?,
        };
        let limit = self.rt.config.max_sessions;
        if self.live() >= limit {
            return Err(CreateError::MaxSessions(limit));
        }
        let id = loop {
            let candidate: String = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
            if !self.lock().contains_key(&candidate) {
                break candidate;
            }
        };
        let options = SessionOptions {
            cwd: req.cwd,
            env: req.env,
        };
        let ctx = spawn::SpawnEnv {
            spawner: &self.rt.spawner,
            daemon_env: &self.rt.daemon_env,
            files_root: &self.rt.files_root,
        };
        let started = spawn::start(&ctx, instance.adapter(), &instance.config, &id, &options)
            .await
            .map_err(|e| {
                tracing::warn!(instance = %instance.config.id, reason = e.reason, detail = %e.detail, "failed to spawn an agent");
                crate::ops::metrics::add(&self.rt.metrics.spawn_failures, 1);
                CreateError::Spawn(e)
            })?;
        crate::ops::metrics::add(&self.rt.metrics.sessions_created, 1);
        let (ctrl_tx, ctrl_rx) = mpsc::channel(64);
        let (in_tx, in_rx) = mpsc::channel(64);
        let handle = Arc::new(SessionHandle {
            id: id.clone(),
            name: req.name,
            instance_id: instance.config.id.clone(),
            options,
            order: self.order.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(State {
                status: Status::Running,
                spawned_at: crate::util::now_ms(),
                pid: Some(started.pid),
                exited: false,
                exit_code: None,
                signal: None,
            }),
            clients: AtomicUsize::new(0),
            next_client: AtomicU64::new(1),
            last_client_text_ms: AtomicU64::new(0),
            pending_questions: AtomicUsize::new(0),
            ctrl: ctrl_tx,
            inbound: in_tx,
            adapter: Mutex::new(None),
            rt: self.rt.clone(),
        });
        tracing::info!(
            session = %id,
            instance = %handle.instance_id,
            adapter = %started.adapter.label(),
            pid = started.pid,
            "session spawned"
        );
        self.lock().insert(id, handle.clone());
        task::SessionTask::start(
            handle.clone(),
            self.rt.clone(),
            ctrl_rx,
            in_rx,
            instance.clone(),
            started,
        );
        Ok(handle)
    }

    /// Stops a session: clients closed with 1000, agent terminated, removed.
    pub async fn delete(&self, id: &str) -> bool {
        let Some(handle) = self.get(id) else {
            return false;
        };
        let (reply, rx) = oneshot::channel();
        if handle.ctrl.send(Control::Delete { reply }).await.is_ok() {
            let _ = rx.await;
        }
        self.lock().remove(id);
        tracing::info!(session = %id, "session deleted");
        true
    }

    /// Restarts a session that is not running, with its stored options.
    pub async fn restart(&self, id: &str) -> Result<Arc<SessionHandle>, RestartError> {
        let _spawning = self.spawn_lock.lock().await;
        let handle = self.get(id).ok_or(RestartError::NotFound)?;
        if handle.status() == Status::Running {
            return Err(RestartError::AlreadyRunning);
        }
        if self.rt.instances.get(&handle.instance_id).is_none() {
            return Err(RestartError::InstanceGone(handle.instance_id.clone()));
        }
        let limit = self.rt.config.max_sessions;
        if self.live() >= limit {
            return Err(RestartError::MaxSessions(limit));
        }
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
        self.lock().clear();
    }
}

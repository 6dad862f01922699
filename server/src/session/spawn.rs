//! Starting an agent for a session: ask the adapter for a spawn spec, check
//! it against the policy, write its files to the session's private
//! directory, merge the environment (PROTOCOL.md section 5) and start it.
//! Any failure is a [`SpawnFailure`] with a `spawn_failed` reason, and
//! leaves nothing behind.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::process::Child;

use crate::adapter::policy::{self, OperatorPrograms, SpawnRefusal};
use crate::adapter::{Adapter, AdapterInstance, SpawnRequest, SpawnSpec};
use crate::config::InstanceConfig;
use crate::process::{SpawnPlan, Spawner};

/// The options a session was created with; a restart reuses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOptions {
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
}

/// Why an agent could not be started (the 422 body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnFailure {
    pub reason: &'static str,
    pub detail: String,
}

impl From<SpawnRefusal> for SpawnFailure {
    fn from(r: SpawnRefusal) -> Self {
        SpawnFailure {
            reason: r.reason(),
            detail: r.detail().to_owned(),
        }
    }
}

impl std::fmt::Display for SpawnFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// A started agent.
pub struct Started {
    pub child: Child,
    pub pid: u32,
    pub adapter: Arc<Adapter>,
    /// Present when the spec is not pass-through in both directions.
    pub translator: Option<AdapterInstance>,
    pub spec: SpawnSpec,
    pub request: SpawnRequest,
    /// The session's private directory, when the spec had files.
    pub files_dir: Option<PathBuf>,
    /// A resume token the spec reported at spawn (WIT 0.2.0).
    pub resume_token: Option<String>,
}

/// What spawning needs from the daemon.
pub struct SpawnEnv<'a> {
    pub spawner: &'a Spawner,
    /// The daemon's own environment.
    pub daemon_env: &'a HashMap<String, String>,
    /// Where per-session private directories are created.
    pub files_root: &'a Path,
    /// The state directory, when sessions are durable: `{state}` lives
    /// there, so that it outlives the daemon.
    pub state: Option<&'a crate::state::StateDir>,
}

fn adapter_failure(detail: String) -> SpawnFailure {
    SpawnFailure {
        reason: "adapter_error",
        detail,
    }
}

/// The environment the adapter may see (section 5): declared program
/// overrides and `AMARRE_<ADAPTER>_*` from the daemon, then the instance's
/// env, then the session's env without program overrides.
pub fn visible_env(
    adapter: &Adapter,
    daemon_env: &HashMap<String, String>,
    instance: &InstanceConfig,
    session_env: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let prefix = adapter.info.env_prefix();
    let declared = |k: &str| adapter.info.program_env.iter().any(|p| p == k);
    let mut env: BTreeMap<String, String> = daemon_env
        .iter()
        .filter(|(k, _)| declared(k) || k.starts_with(&prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend(instance.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(
        session_env
            .iter()
            .filter(|(k, _)| !declared(k))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    env.into_iter().collect()
}

/// The session's state directory, kept across restarts of its agent
/// (`{state}` in a spawn spec, WIT 0.2.0): in the daemon's state directory
/// when sessions are durable (it then outlives the daemon), else beside
/// the per-session private directories.
pub fn state_dir(
    files_root: &Path,
    durable: Option<&crate::state::StateDir>,
    session_id: &str,
) -> PathBuf {
    match durable {
        Some(state) => state.agent_dir(session_id),
        None => files_root.join(format!("{session_id}.state")),
    }
}

/// The absolute directory the agent runs in: the session's cwd, else the
/// daemon's own.
pub(crate) fn work_dir(cwd: Option<&str>) -> String {
    match cwd {
        Some(cwd) => cwd.to_owned(),
        None => std::env::current_dir()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "/".to_owned()),
    }
}

/// Starts the agent of `session_id` for `instance` with `options`;
/// `resume_token` is the session's latest one from an earlier run.
pub async fn start(
    ctx: &SpawnEnv<'_>,
    adapter: Arc<Adapter>,
    instance: &InstanceConfig,
    session_id: &str,
    options: &SessionOptions,
    resume_token: Option<String>,
) -> Result<Started, SpawnFailure> {
    if let Some(cwd) = &options.cwd {
        policy::check_cwd(cwd)?;
    }
    let request = SpawnRequest {
        work_dir: work_dir(options.cwd.as_deref()),
        resume_token,
        session_id: session_id.to_owned(),
        instance_id: instance.id.clone(),
        cwd: options.cwd.clone(),
        env: visible_env(&adapter, ctx.daemon_env, instance, &options.env),
        command: instance.command.clone(),
        args: instance.args.clone(),
    };
    let mut inst = adapter
        .instantiate()
        .await
        .map_err(|e| adapter_failure(e.to_string()))?;
    let spec = inst
        .spawn(&request)
        .await
        .map_err(|e| adapter_failure(e.to_string()))?;

    let operator = OperatorPrograms {
        command: instance.command.clone(),
        overrides: adapter
            .info
            .program_env
            .iter()
            .flat_map(|name| [ctx.daemon_env.get(name), instance.env.get(name)])
            .flatten()
            .filter(|v| !v.is_empty())
            .cloned()
            .collect(),
    };
    adapter.check_spawn(&spec, &operator)?;

    let translator = if spec.passthrough_both() {
        None
    } else {
        inst.create_session(&request, None)
            .await
            .map_err(|e| adapter_failure(e.to_string()))?;
        Some(inst)
    };

    let files_dir = if spec.files.is_empty() {
        None
    } else {
        Some(write_files(ctx.files_root, session_id, &spec).map_err(adapter_failure)?)
    };
    let cleanup = |e: SpawnFailure| {
        if let Some(dir) = &files_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        e
    };
    let uses_state = spec
        .args
        .iter()
        .chain(spec.env.iter().map(|(_, v)| v))
        .chain(spec.cwd.iter())
        .any(|s| s.contains("{state}"));
    let state = state_dir(ctx.files_root, ctx.state, session_id);
    if uses_state {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&state)
            .map_err(|e| {
                cleanup(adapter_failure(format!(
                    "failed to create the session's state directory {}: {e}",
                    state.display()
                )))
            })?;
    }
    let expand = |s: &str| {
        let s = match &files_dir {
            Some(dir) => s.replace("{files}", &dir.to_string_lossy()),
            None => s.to_owned(),
        };
        if uses_state {
            s.replace("{state}", &state.to_string_lossy())
        } else {
            s
        }
    };

    // Child environment: daemon, then spec, then instance, then session.
    let mut env: BTreeMap<String, String> = ctx
        .daemon_env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), expand(v))));
    env.extend(instance.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(options.env.iter().map(|(k, v)| (k.clone(), v.clone())));

    // The program is found with the daemon's and the instance's PATH only:
    // a session's env reaches the agent but never chooses its binary
    // (PROTOCOL.md section 5).
    let lookup_path = instance
        .env
        .get("PATH")
        .or_else(|| ctx.daemon_env.get("PATH"))
        .map(String::as_str);
    let program =
        policy::resolve_program(&spec.command, lookup_path).map_err(|e| cleanup(e.into()))?;
    let cwd = spec
        .cwd
        .as_deref()
        .map(expand)
        .or_else(|| options.cwd.clone());
    if let Some(cwd) = &cwd {
        policy::check_cwd(cwd).map_err(|e| cleanup(e.into()))?;
    }
    let plan = SpawnPlan {
        program,
        args: spec.args.iter().map(|a| expand(a)).collect(),
        env: env
            .into_iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect(),
        cwd: cwd.map(PathBuf::from),
    };
    let child = ctx.spawner.spawn(plan.clone()).await.map_err(|e| {
        cleanup(SpawnFailure {
            reason: match e.kind() {
                std::io::ErrorKind::NotFound => "program_not_found",
                _ => "not_executable",
            },
            detail: format!("failed to start `{}`: {e}", plan.program.display()),
        })
    })?;
    let pid = child.id().unwrap_or(0);
    Ok(Started {
        child,
        pid,
        adapter,
        translator,
        request,
        files_dir,
        resume_token: spec.resume_token.clone(),
        spec,
    })
}

/// Creates `<root>/<session>` with mode 0700 and writes the spec's files.
fn write_files(root: &Path, session_id: &str, spec: &SpawnSpec) -> Result<PathBuf, String> {
    let dir = root.join(session_id);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| {
            format!(
                "failed to create the session directory {}: {e}",
                dir.display()
            )
        })?;
    for file in &spec.files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
        }
        let mode = if file.executable { 0o700 } else { 0o600 };
        let result = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &file.contents));
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("failed to write {}: {e}", path.display()));
        }
    }
    Ok(dir)
}

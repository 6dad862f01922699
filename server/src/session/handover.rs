//! One run of the agent as far as its adapter goes ([`Run`]), and the
//! hot-reload hand-over (docs/hot-reload.md): at a record boundary, if the
//! instance swapped in a newer version of this adapter and both versions
//! declare `state-handover`, the translator moves over (save on the old,
//! create with that state on the new). Otherwise the session finishes on
//! the version it started with. One atomic load per record when nothing
//! changed.

use std::path::PathBuf;
use std::sync::Arc;

use crate::adapter::{
    Adapter, AdapterInfo, AdapterInstance, CallError, Capability, Emit, SpawnRequest,
};
use crate::instances::Instance;

/// One spawn of the agent, from start to exit: the adapter side.
pub(crate) struct Run {
    /// The instance, to notice (per record) that a newer adapter version
    /// was swapped in.
    pub(crate) instance: Arc<Instance>,
    /// The instance generation this run's translator was checked against.
    pub(crate) generation: u64,
    /// The request the translator was created with (for a hand-over).
    pub(crate) request: SpawnRequest,
    pub(crate) adapter: Arc<Adapter>,
    pub(crate) translator: Option<AdapterInstance>,
    pub(crate) through_from_client: bool,
    pub(crate) through_from_agent: bool,
    pub(crate) pgid: u32,
    pub(crate) files_dir: Option<PathBuf>,
    /// The translator's `handshake` is still to be called (before any
    /// record of this run).
    pub(crate) handshake_due: bool,
}

impl Run {
    /// Removes the session's private directory, if the spec had files.
    pub(crate) fn remove_files(&self) {
        if let Some(dir) = &self.files_dir
            && let Err(e) = std::fs::remove_dir_all(dir)
        {
            tracing::debug!(dir = %dir.display(), error = %e, "failed to remove the session directory");
        }
    }
}

/// Calls the translator's `handshake` once per run (WIT 0.2.0): the
/// records it returns go out before any other. Nothing for a pass-through
/// run or one already handshaken.
pub(crate) async fn handshake(run: &mut Run) -> Result<Vec<Emit>, CallError> {
    if !std::mem::take(&mut run.handshake_due) {
        return Ok(Vec::new());
    }
    match run.translator.as_mut() {
        Some(translator) => translator.handshake().await,
        None => Ok(Vec::new()),
    }
}

/// What to do about a newer version of the running adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Nothing to move (the same version, or no translator).
    Nothing,
    /// The versions cannot hand over: the session stays on its version.
    Stay,
    /// Save on the old version, create on the new.
    Move,
}

/// Decides whether a session moves from `from` to `to`.
pub(crate) fn plan(same: bool, has_translator: bool, from: &AdapterInfo, to: &AdapterInfo) -> Plan {
    if same || !has_translator {
        return Plan::Nothing;
    }
    let both = from.has(Capability::StateHandover) && to.has(Capability::StateHandover);
    if both && from.name == to.name {
        Plan::Move
    } else {
        Plan::Stay
    }
}

/// At a record boundary: moves the translator to the instance's newer
/// version when [`plan`] says so. Returns the new version when it moved.
pub(crate) async fn follow(run: &mut Run, session: &str) -> Option<Arc<Adapter>> {
    let generation = run.instance.generation();
    if generation == run.generation {
        return None;
    }
    // One attempt per new generation.
    run.generation = generation;
    let next = run.instance.adapter();
    match plan(
        Arc::ptr_eq(&next, &run.adapter),
        run.translator.is_some(),
        &run.adapter.info,
        &next.info,
    ) {
        Plan::Nothing => return None,
        Plan::Stay => {
            tracing::info!(session = %session, from = %run.adapter.label(), to = %next.label(), "no state hand-over between these versions; the session stays on its version");
            return None;
        }
        Plan::Move => {}
    }
    let old = run.translator.as_mut()?;
    let saved = match old.save().await {
        Ok(Some(state)) => state,
        Ok(None) => {
            tracing::info!(session = %session, adapter = %run.adapter.label(), "the adapter saved no state; the session stays on its version");
            return None;
        }
        Err(e) => {
            tracing::warn!(session = %session, error = %e, "saving translator state failed; the session stays on its version");
            return None;
        }
    };
    let mut fresh = match next.instantiate().await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(session = %session, error = %e, "the new version cannot be instantiated; the session stays on its version");
            return None;
        }
    };
    if let Err(e) = fresh.create_session(&run.request, Some(&saved)).await {
        tracing::warn!(session = %session, error = %e, "the new version refused the saved state; the session stays on its version");
        return None;
    }
    tracing::info!(session = %session, from = %run.adapter.label(), to = %next.label(), hash = %next.hash, "session moved to the new adapter version");
    run.translator = Some(fresh);
    run.adapter = next.clone();
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, version: &str, handover: bool) -> AdapterInfo {
        AdapterInfo {
            name: name.into(),
            version: version.into(),
            programs: vec![],
            program_env: vec![],
            capabilities: if handover {
                vec![Capability::StateHandover]
            } else {
                vec![]
            },
        }
    }

    #[test]
    fn only_two_versions_of_one_adapter_that_both_hand_over_move() {
        let a1 = info("a", "1", true);
        let a2 = info("a", "2", true);
        assert_eq!(plan(false, true, &a1, &a2), Plan::Move);
        assert_eq!(plan(false, true, &a1, &info("a", "2", false)), Plan::Stay);
        assert_eq!(plan(false, true, &info("a", "1", false), &a2), Plan::Stay);
        assert_eq!(plan(false, true, &a1, &info("b", "2", true)), Plan::Stay);
    }

    #[test]
    fn the_same_version_or_a_pass_through_session_has_nothing_to_move() {
        let a1 = info("a", "1", true);
        let a2 = info("a", "2", true);
        assert_eq!(plan(true, true, &a1, &a2), Plan::Nothing);
        assert_eq!(plan(false, false, &a1, &a2), Plan::Nothing);
    }
}

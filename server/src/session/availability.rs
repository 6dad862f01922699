//! Whether an instance's agent could be started now (`available` and
//! `problem` of `GET /adapters`, PROTOCOL.md section 12.1).
//!
//! The program is found the way a spawn finds it: the adapter is asked for
//! its spawn spec with the daemon's and the instance's environment only (no
//! session), the operator's checks are applied, and the program is looked up
//! on the `PATH` a spawn uses for it (the instance's, else the daemon's).

use std::collections::{BTreeMap, HashMap};

use super::spawn::{visible_env, work_dir};
use crate::adapter::SpawnRequest;
use crate::adapter::policy::{self, OperatorPrograms, SpawnRefusal};
use crate::instances::Instance;

/// `None` when the agent can be started, else why not, in words.
pub(crate) async fn problem(
    instance: &Instance,
    daemon_env: &HashMap<String, String>,
) -> Option<String> {
    let adapter = instance.adapter();
    let config = &instance.config;
    let request = SpawnRequest {
        session_id: "availability-check".to_owned(),
        instance_id: config.id.clone(),
        cwd: None,
        env: visible_env(&adapter, daemon_env, config, &BTreeMap::new()),
        command: config.command.clone(),
        args: config.args.clone(),
        work_dir: work_dir(None),
        resume_token: None,
    };
    let spec = match adapter.instantiate().await {
        Ok(mut inst) => match inst.spawn(&request).await {
            Ok(spec) => spec,
            Err(e) => {
                return Some(format!(
                    "the {} adapter cannot spawn: {e}",
                    adapter.info.name
                ));
            }
        },
        Err(e) => {
            return Some(format!(
                "the {} adapter cannot start: {e}",
                adapter.info.name
            ));
        }
    };
    let operator = OperatorPrograms {
        command: config.command.clone(),
        overrides: adapter
            .info
            .program_env
            .iter()
            .flat_map(|name| [daemon_env.get(name), config.env.get(name)])
            .flatten()
            .filter(|v| !v.is_empty())
            .cloned()
            .collect(),
    };
    if let Err(e) = adapter.check_spawn(&spec, &operator) {
        return Some(refusal_text(&spec.command, e));
    }
    let lookup_path = config
        .env
        .get("PATH")
        .or_else(|| daemon_env.get("PATH"))
        .map(String::as_str);
    policy::resolve_program(&spec.command, lookup_path)
        .err()
        .map(|e| refusal_text(&spec.command, e))
}

fn refusal_text(program: &str, e: SpawnRefusal) -> String {
    match e {
        SpawnRefusal::NotFound(_) if !program.contains('/') => {
            format!("{program} was not found on PATH")
        }
        SpawnRefusal::NotFound(_) => format!("{program} does not exist"),
        SpawnRefusal::NotExecutable(d) => d,
        SpawnRefusal::Policy(d) => format!("refused by the spawn policy: {d}"),
        SpawnRefusal::CwdMissing(d) => d,
    }
}

//! How Claude Code is started, shared by `claude-code` and
//! `claude-code-raw` (AGENTS.md sections 2 and 3).
//!
//! `claude -p --input-format stream-json --output-format stream-json
//! --verbose --permission-prompt-tool stdio --include-partial-messages`,
//! then `--settings` with the ask list, `--setting-sources` (empty by
//! default, so the user's saved allow-rules cannot silently pre-approve a
//! remote session), model, permission mode, additional directories, extra
//! args, and the operator's args.

use amarre_adapter_sdk::{SpawnRequest, SpawnSpec};

/// Built-in tools that always ask the remote user (the original's list).
pub const DEFAULT_ASK: &[&str] = &[
    "Bash",
    "Edit",
    "Write",
    "Read",
    "Glob",
    "Grep",
    "WebFetch",
    "WebSearch",
    "NotebookEdit",
    "Task",
    "TodoWrite",
    "AskUserQuestion",
    "ExitPlanMode",
    "EnterPlanMode",
    "Skill",
];

fn list(value: &str, sep: char) -> Vec<String> {
    value
        .split(sep)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The tools in `permissions.ask`: `AMARRE_CLAUDE_ASK` replaces the default
/// list, `AMARRE_CLAUDE_ASK_EXTRA` appends to it (both comma lists).
pub fn ask_list(request: &SpawnRequest) -> Vec<String> {
    let mut ask = match request.env("AMARRE_CLAUDE_ASK") {
        Some(v) => list(v, ','),
        None => DEFAULT_ASK.iter().map(|s| (*s).to_owned()).collect(),
    };
    if let Some(extra) = request.env("AMARRE_CLAUDE_ASK_EXTRA") {
        for tool in list(extra, ',') {
            if !ask.contains(&tool) {
                ask.push(tool);
            }
        }
    }
    ask
}

/// The spawn spec (both directions translated; the raw adapter marks it
/// pass-through). `resume`: the conversation to resume (`--resume`, the
/// `session_id` an earlier run reported; PROTOCOL.md 12.3).
pub fn spec(request: &SpawnRequest, resume: Option<&str>) -> SpawnSpec {
    let mut args: Vec<String> = [
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-prompt-tool",
        "stdio",
        "--include-partial-messages",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some(id) = resume.filter(|id| !id.is_empty()) {
        args.push("--resume".into());
        args.push(id.into());
    }
    let ask = ask_list(request);
    let settings = format!(
        "{{\"permissions\":{{\"ask\":[{}]}}}}",
        ask.iter()
            .map(|t| format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect::<Vec<_>>()
            .join(",")
    );
    args.push("--settings".into());
    args.push(settings);
    args.push("--setting-sources".into());
    args.push(
        list(
            request.env("AMARRE_CLAUDE_SETTING_SOURCES").unwrap_or(""),
            ',',
        )
        .join(","),
    );
    if let Some(model) = request.env("AMARRE_CLAUDE_MODEL").filter(|m| !m.is_empty()) {
        args.push("--model".into());
        args.push(model.into());
    }
    if let Some(mode) = request
        .env("AMARRE_CLAUDE_PERMISSION_MODE")
        .filter(|m| !m.is_empty())
    {
        args.push("--permission-mode".into());
        args.push(mode.into());
    }
    for dir in list(
        request
            .env("AMARRE_CLAUDE_ADDITIONAL_DIRECTORIES")
            .unwrap_or(""),
        ':',
    ) {
        args.push("--add-dir".into());
        args.push(dir);
    }
    args.extend(
        request
            .env("AMARRE_CLAUDE_EXTRA_ARGS")
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned),
    );
    args.extend(request.args.iter().cloned());
    SpawnSpec::new(request.program(&["CLAUDE_BIN"], "claude"))
        .args(args)
        .cwd(request.cwd.clone())
}

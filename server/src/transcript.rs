//! Golden transcripts: JSON-lines files that drive a built component through
//! the real host (spawn, then records in from either side) and state the
//! records expected out. The format is documented in docs/transcripts.md.
//! This is the one implementation behind the project's adapter tests and
//! `amarre adapters test`. It is tooling for adapter authors, kept out of
//! the adapter host (`adapter/`), which the daemon runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::adapter::{
    Adapter, AdapterError, AdapterInstance, CallError, Emit, SpawnRequest, SpawnSpec,
};

/// One difference between a transcript and what the adapter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// 1-based line of the transcript step.
    pub line: usize,
    pub message: String,
}

/// The outcome of one transcript.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub name: String,
    pub steps: usize,
    pub differences: Vec<Difference>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.differences.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.passed() {
            return write!(f, "ok    {} ({} steps)", self.name, self.steps);
        }
        writeln!(
            f,
            "FAIL  {} ({} differences)",
            self.name,
            self.differences.len()
        )?;
        for d in &self.differences {
            writeln!(f, "      line {}: {}", d.line, d.message)?;
        }
        Ok(())
    }
}

/// The `work-dir` of a spawn step without `workDir` or `cwd`.
const DEFAULT_WORK_DIR: &str = "/work";

/// What an input step produced: records, or an error.
type Produced = Result<Vec<Emit>, CallError>;

struct Runner<'a> {
    adapter: &'a Adapter,
    instance: Option<AdapterInstance>,
    vars: HashMap<String, Value>,
    report: Report,
    /// The last input's output not yet matched by expectations.
    pending: Option<(usize, Produced)>,
    spec: Option<SpawnSpec>,
    /// The line of a `spawn` step whose spawn failed (its error is pending).
    failed_spawn: Option<usize>,
}

/// Runs every `*.jsonl` file of `dir`, sorted by name.
pub async fn run_dir(adapter: &Adapter, dir: &Path) -> Result<Vec<Report>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read transcripts in {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no *.jsonl transcripts in {}", dir.display()));
    }
    let mut reports = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        reports.push(run(adapter, &name, &text).await);
    }
    Ok(reports)
}

/// Runs one transcript against a fresh instance of `adapter`.
pub async fn run(adapter: &Adapter, name: &str, text: &str) -> Report {
    let mut r = Runner {
        adapter,
        instance: None,
        vars: HashMap::new(),
        report: Report {
            name: name.to_owned(),
            ..Default::default()
        },
        pending: None,
        spec: None,
        failed_spawn: None,
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let step: Map<String, Value> = match serde_json::from_str(trimmed) {
            Ok(Value::Object(m)) if m.len() == 1 => m,
            Ok(_) => {
                r.diff(
                    n,
                    "a step must be a JSON object with exactly one key".into(),
                );
                continue;
            }
            Err(e) => {
                r.diff(n, format!("not JSON: {e}"));
                continue;
            }
        };
        r.report.steps += 1;
        let (key, value) = step.into_iter().next().unwrap_or_default();
        r.step(n, &key, value).await;
    }
    r.finish_pending();
    r.report
}

impl Runner<'_> {
    fn diff(&mut self, line: usize, message: String) {
        self.report.differences.push(Difference { line, message });
    }

    /// Everything the previous input produced must have been expected.
    fn finish_pending(&mut self) {
        match self.pending.take() {
            Some((line, Ok(rest))) if !rest.is_empty() => {
                let extra: Vec<String> = rest.iter().map(describe).collect();
                self.diff(line, format!("unexpected output: {}", extra.join(", ")));
            }
            Some((line, Err(e))) if self.failed_spawn == Some(line) => {
                self.diff(line, format!("spawn failed: {e}"))
            }
            Some((line, Err(e))) => self.diff(line, format!("unexpected error: {e}")),
            _ => {}
        }
    }

    async fn ensure_instance(&mut self, line: usize) -> bool {
        if self.instance.is_some() {
            return true;
        }
        self.spawn(line, Value::Object(Map::new())).await;
        self.instance.is_some()
    }

    async fn step(&mut self, line: usize, key: &str, value: Value) {
        match key {
            "comment" => {}
            "spawn" => {
                self.finish_pending();
                self.spawn(line, value).await;
            }
            "expect_spawn" => self.expect_spawn(line, &value),
            "client" | "client_raw" | "agent" | "agent_raw" => {
                self.finish_pending();
                if !self.ensure_instance(line).await {
                    return;
                }
                let text = match (key.ends_with("_raw"), self.substitute(value)) {
                    (true, Value::String(s)) => s,
                    (true, other) => other.to_string(),
                    (false, v) => v.to_string(),
                };
                let Some(inst) = self.instance.as_mut() else {
                    return;
                };
                let out = if key.starts_with("client") {
                    inst.from_client(&text).await
                } else {
                    inst.from_agent(&text).await
                };
                self.pending = Some((line, out));
            }
            "exit" => {
                self.finish_pending();
                if !self.ensure_instance(line).await {
                    return;
                }
                let code = value.get("code").and_then(Value::as_i64).map(|c| c as i32);
                let signal = value
                    .get("signal")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let Some(inst) = self.instance.as_mut() else {
                    return;
                };
                let out = inst.on_exit(code, signal.as_deref()).await;
                self.pending = Some((line, out));
            }
            "to_agent" | "to_client" | "to_agent_raw" | "to_client_raw" | "resume_token" => {
                self.expect_emit(line, key, value)
            }
            "error" => self.expect_error(line, &value),
            "save" => {
                self.finish_pending();
                let Some(inst) = self.instance.as_mut() else {
                    self.diff(line, "save before spawn".into());
                    return;
                };
                match inst.save().await {
                    Ok(state) => {
                        let actual = state
                            .map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s)))
                            .unwrap_or(Value::Null);
                        if let Err(m) = self.matches(&value, &actual, "$") {
                            self.diff(line, format!("saved state: {m}"));
                        }
                    }
                    Err(e) => self.diff(line, format!("save failed: {e}")),
                }
            }
            other => self.diff(line, format!("unknown step `{other}`")),
        }
    }

    async fn spawn(&mut self, line: usize, value: Value) {
        let value = self.substitute(value);
        let s = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
        let request = SpawnRequest {
            session_id: s("sessionId").unwrap_or_else(|| "0123456789ab".into()),
            instance_id: s("instanceId").unwrap_or_else(|| "default".into()),
            cwd: s("cwd"),
            env: value
                .get("env")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| v.to_string()),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            command: s("command"),
            args: value
                .get("args")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            work_dir: s("workDir")
                .or_else(|| s("cwd"))
                .unwrap_or_else(|| DEFAULT_WORK_DIR.into()),
            resume_token: s("resumeToken"),
        };
        let mut inst = match self.adapter.instantiate().await {
            Ok(i) => i,
            Err(e) => return self.diff(line, format!("instantiate failed: {e}")),
        };
        inst.make_deterministic();
        let spec = match inst.spawn(&request).await {
            Ok(spec) => spec,
            // An `error` step may expect it; otherwise it is a difference.
            Err(e) => {
                self.spec = None;
                self.failed_spawn = Some(line);
                self.pending = Some((line, Err(e)));
                return;
            }
        };
        if let Err(e) = inst.create_session(&request, None).await {
            return self.diff(line, format!("session create failed: {e}"));
        }
        // Like the host: the handshake comes first, its records are the
        // spawn step's output (none for pass-through and 0.1.0 adapters).
        if !spec.passthrough_both() {
            let out = inst.handshake().await;
            self.pending = Some((line, out));
        }
        self.spec = Some(spec);
        self.instance = Some(inst);
    }

    fn expect_spawn(&mut self, line: usize, expected: &Value) {
        let Some(spec) = &self.spec else {
            return self.diff(line, "expect_spawn without a spawn".into());
        };
        let env: Map<String, Value> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let files: Vec<Value> = spec
            .files
            .iter()
            .map(|f| {
                serde_json::json!({
                    "path": f.path,
                    "executable": f.executable,
                    "contents": String::from_utf8_lossy(&f.contents),
                })
            })
            .collect();
        let actual = serde_json::json!({
            "command": spec.command,
            "args": spec.args,
            "env": env,
            "cwd": spec.cwd,
            "passthroughFromClient": spec.passthrough_from_client,
            "passthroughFromAgent": spec.passthrough_from_agent,
            "files": files,
            "resumeToken": spec.resume_token,
        });
        let Some(fields) = expected.as_object() else {
            return self.diff(line, "expect_spawn takes an object".into());
        };
        for (k, want) in fields {
            let got = &actual[k.as_str()];
            let result = match (k.as_str(), want) {
                // env: only the named variables; null means absent.
                ("env", Value::Object(vars)) => vars.iter().try_for_each(|(name, v)| {
                    let got = got.get(name).cloned().unwrap_or(Value::Null);
                    self.matches(v, &got, &format!("$.env.{name}"))
                }),
                // files: each expected file exists; `contains` checks a substring.
                ("files", Value::Array(list)) => list.iter().try_for_each(|f| {
                    let path = f.get("path").and_then(Value::as_str).unwrap_or("");
                    let found = got
                        .as_array()
                        .and_then(|fs| fs.iter().find(|x| x["path"] == path));
                    match (found, f.get("contains").and_then(Value::as_str)) {
                        (None, _) => Err(format!("no file `{path}` in the spawn spec")),
                        (Some(x), Some(needle))
                            if !x["contents"].as_str().unwrap_or("").contains(needle) =>
                        {
                            Err(format!("file `{path}` does not contain {needle:?}"))
                        }
                        _ => Ok(()),
                    }
                }),
                _ => self.matches(want, got, &format!("$.{k}")),
            };
            if let Err(m) = result {
                self.diff(line, format!("spawn spec: {m}"));
            }
        }
    }

    fn expect_emit(&mut self, line: usize, key: &str, expected: Value) {
        let Some((input_line, produced)) = self.pending.take() else {
            return self.diff(
                line,
                format!("`{key}` expected, but no input step precedes it"),
            );
        };
        let mut emits = match produced {
            Ok(e) => e,
            Err(e) => {
                self.diff(line, format!("expected `{key}`, the adapter failed: {e}"));
                return;
            }
        };
        if emits.is_empty() {
            self.diff(
                line,
                format!("expected `{key}` {expected}, nothing more was produced"),
            );
            self.pending = Some((input_line, Ok(emits)));
            return;
        }
        let first = emits.remove(0);
        let (side, text) = match &first {
            Emit::ToAgent(t) => ("to_agent", t),
            Emit::ToClient(t) => ("to_client", t),
            Emit::ResumeToken(t) => ("resume_token", t),
        };
        if !key.starts_with(side) {
            self.diff(
                line,
                format!("expected `{key}` {expected}, got {}", describe(&first)),
            );
        } else if key.ends_with("_raw") || side == "resume_token" {
            let actual = Value::String(text.clone());
            if let Err(m) = self.matches(&expected, &actual, "$") {
                self.diff(line, m);
            }
        } else {
            match serde_json::from_str::<Value>(text) {
                Ok(actual) => {
                    if let Err(m) = self.matches(&expected, &actual, "$") {
                        self.diff(line, format!("{m}\n        got {actual}"));
                    }
                }
                Err(_) => self.diff(line, format!("expected JSON, got {text:?}")),
            }
        }
        self.pending = Some((input_line, Ok(emits)));
    }

    fn expect_error(&mut self, line: usize, expected: &Value) {
        let Some((_, produced)) = self.pending.take() else {
            return self.diff(
                line,
                "`error` expected, but no input step precedes it".into(),
            );
        };
        let want_kind = expected
            .get("kind")
            .and_then(Value::as_str)
            .or(expected.as_str())
            .unwrap_or("");
        let want_text = expected.get("contains").and_then(Value::as_str);
        match produced {
            Ok(emits) => {
                let got: Vec<String> = emits.iter().map(describe).collect();
                self.diff(
                    line,
                    format!(
                        "expected error `{want_kind}`, got records: {}",
                        got.join(", ")
                    ),
                );
            }
            Err(CallError::Adapter { error, .. }) => {
                let (kind, text) = match &error {
                    AdapterError::InvalidFrame(t) => ("invalid-frame", t),
                    AdapterError::Unsupported(t) => ("unsupported", t),
                    AdapterError::IncompatibleState(t) => ("incompatible-state", t),
                    AdapterError::Internal(t) => ("internal", t),
                };
                if kind != want_kind {
                    self.diff(
                        line,
                        format!("expected error `{want_kind}`, got `{kind}`: {text}"),
                    );
                } else if let Some(needle) = want_text.filter(|n| !text.contains(n)) {
                    self.diff(
                        line,
                        format!("error text {text:?} does not contain {needle:?}"),
                    );
                }
            }
            Err(trap) => self.diff(
                line,
                format!("expected error `{want_kind}`, the adapter trapped: {trap}"),
            ),
        }
    }

    /// Replaces `"$name"` strings bound earlier by their values.
    fn substitute(&self, v: Value) -> Value {
        match v {
            Value::String(s) if s.starts_with("$$") => Value::String(s[1..].to_owned()),
            Value::String(s) if s.starts_with('$') => {
                self.vars.get(&s[1..]).cloned().unwrap_or(Value::String(s))
            }
            Value::Array(a) => Value::Array(a.into_iter().map(|x| self.substitute(x)).collect()),
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .map(|(k, x)| (k, self.substitute(x)))
                    .collect(),
            ),
            other => other,
        }
    }

    /// Structural equality with patterns: `"$any"` matches anything,
    /// `"$name"` binds on first use and must match after, `"$$x"` is the
    /// literal `"$x"`.
    fn matches(&mut self, expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
        match (expected, actual) {
            (Value::String(p), _) if p == "$any" => Ok(()),
            (Value::String(p), _) if p.starts_with("$$") => {
                if actual.as_str() == Some(&p[1..]) {
                    Ok(())
                } else {
                    Err(format!("{path}: expected {:?}, got {actual}", &p[1..]))
                }
            }
            (Value::String(p), _) if p.starts_with('$') && p.len() > 1 => {
                let name = &p[1..];
                match self.vars.get(name) {
                    Some(bound) if bound == actual => Ok(()),
                    Some(bound) => Err(format!("{path}: expected ${name} = {bound}, got {actual}")),
                    None => {
                        self.vars.insert(name.to_owned(), actual.clone());
                        Ok(())
                    }
                }
            }
            (Value::Object(e), Value::Object(a)) => {
                for k in a.keys() {
                    if !e.contains_key(k) {
                        return Err(format!("{path}: unexpected field `{k}`"));
                    }
                }
                for (k, ev) in e {
                    match a.get(k) {
                        Some(av) => self.matches(ev, av, &format!("{path}.{k}"))?,
                        None => return Err(format!("{path}: missing field `{k}`")),
                    }
                }
                Ok(())
            }
            (Value::Array(e), Value::Array(a)) => {
                if e.len() != a.len() {
                    return Err(format!(
                        "{path}: expected {} items, got {}",
                        e.len(),
                        a.len()
                    ));
                }
                for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                    self.matches(ev, av, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            _ if expected == actual => Ok(()),
            _ => Err(format!("{path}: expected {expected}, got {actual}")),
        }
    }
}

fn describe(e: &Emit) -> String {
    match e {
        Emit::ToAgent(t) => format!("to_agent {t}"),
        Emit::ToClient(t) => format!("to_client {t}"),
        Emit::ResumeToken(t) => format!("resume_token {t}"),
    }
}

/// Runs the input steps of a transcript and returns it with the adapter's
/// actual output written after each input (expectation steps of the input
/// are dropped). For authoring: review the result, replace volatile values
/// (timestamps, fresh ids) with `"$any"` or `"$name"`, then commit it.
pub async fn record(adapter: &Adapter, text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut instance: Option<AdapterInstance> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let step: Map<String, Value> = match serde_json::from_str(trimmed) {
            Ok(Value::Object(m)) if m.len() == 1 => m,
            _ => return Err(format!("line {}: not a transcript step", i + 1)),
        };
        let Some((key, value)) = step.into_iter().next() else {
            continue;
        };
        let produced = match key.as_str() {
            "comment" | "expect_spawn" => {
                out.push_str(trimmed);
                out.push('\n');
                continue;
            }
            "to_agent" | "to_client" | "to_agent_raw" | "to_client_raw" | "resume_token"
            | "error" | "save" => {
                continue;
            }
            "spawn" => {
                out.push_str(trimmed);
                out.push('\n');
                let mut runner = Runner {
                    adapter,
                    instance: None,
                    vars: HashMap::new(),
                    report: Report::default(),
                    pending: None,
                    spec: None,
                    failed_spawn: None,
                };
                runner.spawn(i + 1, value).await;
                if let Some(d) = runner.report.differences.first() {
                    return Err(format!("line {}: {}", i + 1, d.message));
                }
                instance = runner.instance;
                // The handshake's records, or the spawn's error.
                match runner.pending.take() {
                    Some((_, produced)) => produced,
                    None => continue,
                }
            }
            "client" | "client_raw" | "agent" | "agent_raw" | "exit" => {
                out.push_str(trimmed);
                out.push('\n');
                if instance.is_none() {
                    return Err(format!("line {}: a spawn step must come first", i + 1));
                }
                let Some(inst) = instance.as_mut() else {
                    continue;
                };
                let text = match (key.ends_with("_raw"), &value) {
                    (true, Value::String(s)) => s.clone(),
                    _ => value.to_string(),
                };
                match key.as_str() {
                    "exit" => {
                        let code = value.get("code").and_then(Value::as_i64).map(|c| c as i32);
                        let signal = value.get("signal").and_then(Value::as_str);
                        inst.on_exit(code, signal).await
                    }
                    k if k.starts_with("client") => inst.from_client(&text).await,
                    _ => inst.from_agent(&text).await,
                }
            }
            other => return Err(format!("line {}: unknown step `{other}`", i + 1)),
        };
        match produced {
            Ok(emits) => {
                for e in emits {
                    let (key, text) = match e {
                        Emit::ToAgent(t) => ("to_agent", t),
                        Emit::ToClient(t) => ("to_client", t),
                        Emit::ResumeToken(t) => {
                            out.push_str(&serde_json::json!({ "resume_token": t }).to_string());
                            out.push('\n');
                            continue;
                        }
                    };
                    let step = match serde_json::from_str::<Value>(&text) {
                        Ok(v) => serde_json::json!({ key: v }),
                        Err(_) => serde_json::json!({ format!("{key}_raw"): text }),
                    };
                    out.push_str(&step.to_string());
                    out.push('\n');
                }
            }
            Err(CallError::Adapter { error, .. }) => {
                let kind = match error {
                    AdapterError::InvalidFrame(_) => "invalid-frame",
                    AdapterError::Unsupported(_) => "unsupported",
                    AdapterError::IncompatibleState(_) => "incompatible-state",
                    AdapterError::Internal(_) => "internal",
                };
                out.push_str(&serde_json::json!({"error": kind}).to_string());
                out.push('\n');
            }
            Err(trap) => return Err(format!("line {}: the adapter trapped: {trap}", i + 1)),
        }
    }
    Ok(out)
}

//! The spawn policy: the host checks every spawn spec an adapter returns
//! before anything is written or spawned, the way Zed's capability granter
//! checks extension requests. Pure logic; it names no wasmtime type.
//!
//! A program is allowed when it is one the adapter declared in its info (by
//! name, looked up on PATH), the operator's `command` for the instance, or the
//! value of a declared program-override variable (`PI_BIN`) taken from the
//! daemon's or the instance's configuration. Never from a session's env.

use std::path::{Component, Path, PathBuf};

use super::types::{AdapterInfo, SpawnSpec};

/// What the operator configured that may name a program.
#[derive(Debug, Clone, Default)]
pub struct OperatorPrograms {
    /// The instance's `command`.
    pub command: Option<String>,
    /// Values of the adapter's declared program-env variables from the
    /// daemon's environment and the instance's env.
    pub overrides: Vec<String>,
}

/// Why a spawn spec cannot be acted on; each maps to a `spawn_failed` reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnRefusal {
    /// `policy_refused`: the adapter asked for something it may not.
    Policy(String),
    /// `program_not_found`
    NotFound(String),
    /// `not_executable`
    NotExecutable(String),
    /// `cwd_missing`
    CwdMissing(String),
}

impl SpawnRefusal {
    /// The `reason` code of the 422 body.
    pub fn reason(&self) -> &'static str {
        match self {
            SpawnRefusal::Policy(_) => "policy_refused",
            SpawnRefusal::NotFound(_) => "program_not_found",
            SpawnRefusal::NotExecutable(_) => "not_executable",
            SpawnRefusal::CwdMissing(_) => "cwd_missing",
        }
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        match self {
            SpawnRefusal::Policy(d)
            | SpawnRefusal::NotFound(d)
            | SpawnRefusal::NotExecutable(d)
            | SpawnRefusal::CwdMissing(d) => d,
        }
    }
}

/// Checks that the spec's program is allowed and its files stay inside the
/// session directory. Does not touch the file system.
pub fn check(
    info: &AdapterInfo,
    spec: &SpawnSpec,
    operator: &OperatorPrograms,
) -> Result<(), SpawnRefusal> {
    let program = spec.command.as_str();
    let allowed = operator.command.as_deref() == Some(program)
        || operator.overrides.iter().any(|v| v == program)
        || info.programs.iter().any(|p| p == program);
    if !allowed {
        return Err(SpawnRefusal::Policy(format!(
            "adapter {} asked to spawn `{program}`, which it did not declare and the operator did not configure",
            info.label()
        )));
    }
    for file in &spec.files {
        let path = Path::new(&file.path);
        let inside = !file.path.is_empty()
            && path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(SpawnRefusal::Policy(format!(
                "adapter {} asked to write `{}` outside the session directory",
                info.label(),
                file.path
            )));
        }
    }
    Ok(())
}

/// Resolves `program` the way a shell would with `path_var` as PATH, and
/// checks that it is an executable file.
pub fn resolve_program(program: &str, path_var: Option<&str>) -> Result<PathBuf, SpawnRefusal> {
    if program.is_empty() {
        return Err(SpawnRefusal::NotFound("the program name is empty".into()));
    }
    if program.contains('/') {
        let path = PathBuf::from(program);
        return check_executable(&path).map(|()| path);
    }
    let mut non_executable = None;
    for dir in path_var.unwrap_or("").split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        match check_executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(SpawnRefusal::NotExecutable(d)) => non_executable = non_executable.or(Some(d)),
            Err(_) => {}
        }
    }
    Err(non_executable
        .map(SpawnRefusal::NotExecutable)
        .unwrap_or_else(|| SpawnRefusal::NotFound(format!("`{program}` was not found on PATH"))))
}

fn check_executable(path: &Path) -> Result<(), SpawnRefusal> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| SpawnRefusal::NotFound(format!("`{}`: {e}", path.display())))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(SpawnRefusal::NotExecutable(format!(
            "`{}` is not an executable file",
            path.display()
        )));
    }
    Ok(())
}

/// Checks that a working directory exists and is a directory.
pub fn check_cwd(cwd: &str) -> Result<(), SpawnRefusal> {
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(SpawnRefusal::CwdMissing(format!(
            "cwd `{cwd}` is not a directory"
        ))),
        Err(e) => Err(SpawnRefusal::CwdMissing(format!("cwd `{cwd}`: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::types::FileSpec;

    fn info() -> AdapterInfo {
        AdapterInfo {
            name: "pi".into(),
            version: "1.0.0".into(),
            programs: vec!["pi".into()],
            program_env: vec!["PI_BIN".into()],
            capabilities: vec![],
        }
    }

    fn spec(command: &str) -> SpawnSpec {
        SpawnSpec {
            command: command.into(),
            args: vec![],
            env: vec![],
            cwd: None,
            files: vec![],
            passthrough_from_client: true,
            passthrough_from_agent: true,
            resume_token: None,
        }
    }

    #[test]
    fn a_declared_program_is_allowed() {
        assert_eq!(check(&info(), &spec("pi"), &Default::default()), Ok(()));
    }

    #[test]
    fn an_undeclared_program_is_refused_naming_adapter_and_program() {
        let err = check(&info(), &spec("/bin/sh"), &Default::default()).unwrap_err();
        assert_eq!(err.reason(), "policy_refused");
        assert!(err.detail().contains("pi@1.0.0"), "{}", err.detail());
        assert!(err.detail().contains("/bin/sh"), "{}", err.detail());
    }

    #[test]
    fn the_operator_command_and_overrides_are_allowed() {
        let op = OperatorPrograms {
            command: Some("/opt/agent".into()),
            overrides: vec!["/opt/pi".into()],
        };
        assert_eq!(check(&info(), &spec("/opt/agent"), &op), Ok(()));
        assert_eq!(check(&info(), &spec("/opt/pi"), &op), Ok(()));
        assert!(check(&info(), &spec("/opt/other"), &op).is_err());
    }

    #[test]
    fn files_must_stay_inside_the_session_directory() {
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            let mut s = spec("pi");
            s.files.push(FileSpec {
                path: bad.into(),
                contents: vec![],
                executable: false,
            });
            assert_eq!(
                check(&info(), &s, &Default::default())
                    .unwrap_err()
                    .reason(),
                "policy_refused",
                "{bad}"
            );
        }
        let mut s = spec("pi");
        s.files.push(FileSpec {
            path: "gate/ext.ts".into(),
            contents: vec![],
            executable: false,
        });
        assert_eq!(check(&info(), &s, &Default::default()), Ok(()));
    }

    #[test]
    fn programs_resolve_on_path_with_precise_reasons() {
        let path = std::env::var("PATH").ok();
        assert!(resolve_program("sh", path.as_deref()).is_ok());
        assert_eq!(
            resolve_program("no-such-program-amarre", path.as_deref())
                .unwrap_err()
                .reason(),
            "program_not_found"
        );
        let plain = std::env::temp_dir().join(format!("amarre-plain-{}", std::process::id()));
        std::fs::write(&plain, b"data").unwrap();
        let plain_str = plain.to_str().unwrap();
        assert_eq!(
            resolve_program(plain_str, None).unwrap_err().reason(),
            "not_executable"
        );
        std::fs::remove_file(&plain).ok();
        assert_eq!(
            resolve_program("/no/such/file", None).unwrap_err().reason(),
            "program_not_found"
        );
        assert_eq!(
            check_cwd("/no/such/dir").unwrap_err().reason(),
            "cwd_missing"
        );
        assert!(check_cwd("/").is_ok());
    }
}

//! Running the `git` program for the review routes: read-only commands, in
//! their own process group, with a bounded output, killed (the whole group)
//! when the request's time runs out or its future is dropped.
//!
//! The environment is pinned so that neither the daemon's environment nor
//! the repository's configuration can redirect git, make it write, or make
//! it run programs: optional locks off (`GIT_OPTIONAL_LOCKS=0`, see
//! <https://git-scm.com/docs/git#Documentation/git.txt-codeGITOPTIONALLOCKScode>),
//! pathspecs literal, no fsmonitor, no external diff, no textconv, no pager.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncReadExt;

use super::ReviewError;

/// The daemon variables git may see: where to find git and the user's
/// global configuration (its excludes file decides what is ignored).
const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "XDG_CONFIG_HOME",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_NOSYSTEM",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
];

/// Most of git's standard error kept for a message.
const MAX_STDERR_BYTES: usize = 4096;

/// What a finished git command said.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard output as one trimmed line.
    pub fn line(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_owned()
    }
}

/// Kills the process group of a git command unless it finished.
struct GroupGuard {
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) on the group this module created; the leader
            // is not reaped yet (its `Child` is dropped after this guard),
            // so the group id cannot have been reused.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Runs `git <args>` in `dir`; its standard output is limited to
/// `max_stdout` bytes (over it: `TooLarge`, and git is killed).
pub async fn run(dir: &Path, args: &[&str], max_stdout: usize) -> Result<Output, ReviewError> {
    // `check-ignore` takes paths, not pathspecs, and refuses pathspec magic
    // (`literal` included).
    let literal = args.first() != Some(&"check-ignore");
    let mut cmd = tokio::process::Command::new("git");
    cmd.env_clear();
    for name in PASSED_ENV {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_LITERAL_PATHSPECS", if literal { "1" } else { "0" })
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_PAGER", "cat")
        .env("LC_ALL", "C")
        .args([
            "--no-pager",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.quotePath=false",
            "-c",
            "diff.external=",
            "-c",
            "color.ui=never",
        ])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| ReviewError::Failed(format!("failed to run git in {}: {e}", dir.display())))?;
    let pgid = child.id().map(|p| p as i32);
    let mut guard = GroupGuard { pgid };
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let read_out = async {
        let mut buf = Vec::new();
        if let Some(out) = stdout.as_mut() {
            let mut limited = out.take(max_stdout as u64 + 1);
            limited
                .read_to_end(&mut buf)
                .await
                .map_err(|e| ReviewError::Failed(format!("reading git's output: {e}")))?;
        }
        if buf.len() > max_stdout {
            // Kill git now: it is blocked writing to a pipe nobody reads,
            // and its standard error would never end.
            if let Some(pgid) = pgid {
                // SAFETY: kill(2) on the group created above; its leader
                // is not reaped yet.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
            return Err(ReviewError::TooLarge(max_stdout));
        }
        Ok(buf)
    };
    let read_err = async {
        let mut buf = Vec::new();
        if let Some(err) = stderr.as_mut() {
            // Keep the start, drain the rest so git never blocks on it.
            let _ = (&mut *err)
                .take(MAX_STDERR_BYTES as u64)
                .read_to_end(&mut buf)
                .await;
            let _ = tokio::io::copy(err, &mut tokio::io::sink()).await;
        }
        String::from_utf8_lossy(&buf).into_owned()
    };
    let (out, err) = tokio::join!(read_out, read_err);
    let stdout = out?;
    let status = child
        .wait()
        .await
        .map_err(|e| ReviewError::Failed(format!("waiting for git: {e}")))?;
    guard.pgid = None;
    Ok(Output {
        code: status.code(),
        stdout,
        stderr: err,
    })
}

/// Splits `-z` output into its NUL-terminated fields.
pub fn fields(out: &[u8]) -> Vec<String> {
    out.split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// One entry of `git diff --raw -z` (and its `--numstat -z` counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// The status letter (`M`, `A`, `D`, `R`, `T`, `U`, ...).
    pub status: char,
    /// The object id on the `HEAD` side (all zeros when there is none).
    pub old_id: String,
    pub path: String,
    pub old_path: Option<String>,
    /// None when git says the file is binary.
    pub counts: Option<(u64, u64)>,
}

/// Parses `git diff --raw --numstat -z`: every raw entry (`:` fields, then
/// one path or two for renames and copies), then every numstat entry in the
/// same order (`ins\tdel\tpath`, or `ins\tdel\t` then two paths).
pub fn parse_raw_numstat(out: &[u8]) -> Result<Vec<RawEntry>, ReviewError> {
    let bad = || ReviewError::Failed("unexpected output from git diff".into());
    let fields = fields(out);
    let mut it = fields.into_iter();
    let mut entries: Vec<RawEntry> = Vec::new();
    let mut counted = 0;
    while let Some(f) = it.next() {
        if let Some(meta) = f.strip_prefix(':') {
            let meta: Vec<&str> = meta.split(' ').collect();
            let status = meta.get(4).and_then(|s| s.chars().next()).ok_or_else(bad)?;
            let old_id = meta.get(2).map(|s| s.to_string()).unwrap_or_default();
            let first = it.next().ok_or_else(bad)?;
            let (path, old_path) = if matches!(status, 'R' | 'C') {
                (it.next().ok_or_else(bad)?, Some(first))
            } else {
                (first, None)
            };
            entries.push(RawEntry {
                status,
                old_id,
                path,
                old_path,
                counts: None,
            });
        } else {
            let mut parts = f.splitn(3, '\t');
            let ins = parts.next().ok_or_else(bad)?;
            let del = parts.next().ok_or_else(bad)?;
            let rest = parts.next().ok_or_else(bad)?;
            if rest.is_empty() {
                // A rename: the two paths follow.
                it.next().ok_or_else(bad)?;
                it.next().ok_or_else(bad)?;
            }
            let counts = match (ins.parse::<u64>(), del.parse::<u64>()) {
                (Ok(i), Ok(d)) => Some((i, d)),
                _ => None,
            };
            let entry = entries.get_mut(counted).ok_or_else(bad)?;
            entry.counts = counts;
            counted += 1;
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_numstat_output_is_paired() {
        let out = [
            ":100644 100644 de98044 0000000 M",
            "a.txt",
            ":100644 100644 d5d0b8b 0000000 M",
            "bin",
            ":100644 000000 abaddc0 0000000 D",
            "d.txt",
            ":100644 100644 96cc558 96cc558 R100",
            "old.txt",
            "new.txt",
            ":000000 100644 0000000 8ba3a16 A",
            "sp\tace.txt",
            "1\t0\ta.txt",
            "-\t-\tbin",
            "0\t1\td.txt",
            "0\t0\t",
            "old.txt",
            "new.txt",
            "1\t0\tsp\tace.txt",
        ]
        .join("\0");
        let out = out.as_bytes();
        let e = parse_raw_numstat(out).unwrap();
        assert_eq!(e.len(), 5);
        assert_eq!(
            (e[0].status, e[0].path.as_str(), e[0].counts),
            ('M', "a.txt", Some((1, 0)))
        );
        assert_eq!(e[1].counts, None);
        assert_eq!((e[2].status, e[2].counts), ('D', Some((0, 1))));
        assert_eq!(e[3].status, 'R');
        assert_eq!(e[3].path, "new.txt");
        assert_eq!(e[3].old_path.as_deref(), Some("old.txt"));
        assert_eq!(e[4].path, "sp\tace.txt");
        assert_eq!(e[4].counts, Some((1, 0)));
        assert!(parse_raw_numstat(b":100644 100644 a b M\0").is_err());
        assert!(parse_raw_numstat(b"1\t0\tx\0").is_err());
    }
}

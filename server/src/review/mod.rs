//! Review: a read-only view of a session's working tree (PROTOCOL.md
//! section 12.4): which files changed against `HEAD`, the diff of one, the
//! bytes of one. See docs/review.md.
//!
//! Git is read by running the `git` program ([`git`]), bounded in time and
//! output; paths from clients are confined to the repository root (or the
//! cwd outside a repository) by [`confine`]. This module never writes:
//! not to the work tree, not to the index (git runs with optional locks
//! off), and it never runs anything but git. Nothing here blocks the async
//! runtime: git runs under `tokio::process`, file system calls on the
//! blocking pool, and every request is cut at its time limit with its work
//! stopped (git's process group killed, blocking loops told to stop).

pub mod confine;
pub mod git;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Why a review request failed; each maps to one status and code of 12.4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewError {
    /// 400: empty, absolute, `..`.
    InvalidPath,
    /// 403: resolves outside the allowed root (or into /proc and the like).
    OutsideCwd,
    /// 403: a FIFO, socket, device or directory.
    NotARegularFile,
    /// 403: ignored by git, or under `.git/`.
    IgnoredPath,
    /// 404: nothing there (nor in the listing).
    NoSuchFile,
    /// 422: the cwd is not inside a git work tree.
    NotARepository,
    /// 413: over the byte limit (which is carried).
    TooLarge(usize),
    /// 504: over the time limit.
    Timeout,
    /// 500: git or the file system failed unexpectedly.
    Failed(String),
}

impl ReviewError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ReviewError::InvalidPath => 400,
            ReviewError::OutsideCwd | ReviewError::NotARegularFile | ReviewError::IgnoredPath => {
                403
            }
            ReviewError::NoSuchFile => 404,
            ReviewError::TooLarge(_) => 413,
            ReviewError::NotARepository => 422,
            ReviewError::Timeout => 504,
            ReviewError::Failed(_) => 500,
        }
    }

    /// The `error` code of the body.
    pub fn code(&self) -> &'static str {
        match self {
            ReviewError::InvalidPath => "invalid_path",
            ReviewError::OutsideCwd => "outside_cwd",
            ReviewError::NotARegularFile => "not_a_regular_file",
            ReviewError::IgnoredPath => "ignored_path",
            ReviewError::NoSuchFile => "no_such_file",
            ReviewError::NotARepository => "not_a_repository",
            ReviewError::TooLarge(_) => "too_large",
            ReviewError::Timeout => "review_timeout",
            ReviewError::Failed(_) => "review_failed",
        }
    }
}

/// The limits of one request (`AMARRE_REVIEW_MAX_BYTES`,
/// `AMARRE_REVIEW_TIMEOUT_MS`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// Most bytes of a listing read from git (`/changes` of a huge tree).
const LISTING_MAX_BYTES: usize = 64 << 20;
/// Most bytes of a one-line answer from git.
const LINE_MAX_BYTES: usize = 64 << 10;
/// Bytes looked at to decide that a file is binary (git's heuristic: a NUL
/// in the first 8000 bytes, see `buffer_is_binary` in git's xdiff-interface.c).
const BINARY_PROBE_BYTES: usize = 8000;
/// Review requests running at once, daemon-wide; more wait (within their
/// own time limit) so that a burst cannot start dozens of git processes.
const CONCURRENT_REVIEWS: usize = 4;

static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CONCURRENT_REVIEWS);

/// Runs one review request within its time limit. On timeout the future is
/// dropped, which kills its git process group and stops its blocking work.
pub async fn bounded<T>(
    limits: Limits,
    work: impl Future<Output = Result<T, ReviewError>>,
) -> Result<T, ReviewError> {
    let run = async {
        let _permit = RUNNING
            .acquire()
            .await
            .map_err(|_| ReviewError::Failed("review closed".into()))?;
        work.await
    };
    tokio::time::timeout(limits.timeout, run)
        .await
        .unwrap_or(Err(ReviewError::Timeout))
}

/// Where a session's files are.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The session's cwd, absolute, as the session has it.
    pub cwd: PathBuf,
    /// What paths are relative to: the repository's top level, or the cwd
    /// when it is not in a repository; canonical (no symlink).
    pub root: PathBuf,
    pub repo: bool,
}

/// Finds the work tree of `cwd` (relative paths are taken from the
/// daemon's cwd, as a spawn does; an empty one is the daemon's cwd). A cwd
/// that is gone answers `NoSuchFile`; one inside a `.git` directory
/// `IgnoredPath`.
pub async fn locate(cwd: &Path) -> Result<Tree, ReviewError> {
    let cwd = if cwd.is_absolute() {
        cwd.to_path_buf()
    } else {
        let here = std::env::current_dir()
            .map_err(|e| ReviewError::Failed(format!("the daemon's cwd: {e}")))?;
        if cwd.as_os_str().is_empty() {
            here
        } else {
            here.join(cwd)
        }
    };
    match tokio::fs::metadata(&cwd).await {
        Ok(m) if m.is_dir() => {}
        _ => return Err(ReviewError::NoSuchFile),
    }
    let out = git::run(&cwd, &["rev-parse", "--show-toplevel"], LINE_MAX_BYTES).await?;
    let canonical = |p: PathBuf| async move {
        tokio::fs::canonicalize(&p)
            .await
            .map_err(|e| ReviewError::Failed(format!("resolving {}: {e}", p.display())))
    };
    if out.ok() {
        let top = String::from_utf8_lossy(&out.stdout)
            .trim_end_matches('\n')
            .to_owned();
        let root = canonical(PathBuf::from(top)).await?;
        return Ok(Tree {
            cwd,
            root,
            repo: true,
        });
    }
    if out.stderr.contains("not a git repository") {
        let root = canonical(cwd.clone()).await?;
        if root
            .components()
            .any(|c| c.as_os_str().eq_ignore_ascii_case(".git"))
        {
            return Err(ReviewError::IgnoredPath);
        }
        return Ok(Tree {
            cwd,
            root,
            repo: false,
        });
    }
    if out.stderr.contains("must be run in a work tree") {
        // Inside a `.git` directory or a bare repository.
        return Err(ReviewError::IgnoredPath);
    }
    // Anything else (a repository git refuses to read, for instance one
    // owned by another user): fail closed rather than serve it as a plain
    // directory with nothing ignored.
    Err(ReviewError::Failed(format!(
        "git rev-parse failed in {}: {}",
        cwd.display(),
        out.stderr.trim()
    )))
}

/// The `/changes` answer.
#[derive(Debug, Clone, Serialize)]
pub struct Changes {
    pub cwd: String,
    pub repository: bool,
    pub branch: Option<String>,
    pub head: Option<String>,
    pub files: Vec<FileChange>,
}

/// One changed file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileChange {
    pub path: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    pub insertions: u64,
    pub deletions: u64,
    pub binary: bool,
}

/// The commit `HEAD` names, if any.
async fn head(root: &Path) -> Result<Option<String>, ReviewError> {
    let out = git::run(
        root,
        &["rev-parse", "--verify", "-q", "HEAD^{commit}"],
        LINE_MAX_BYTES,
    )
    .await?;
    Ok(out.ok().then(|| out.line()).filter(|l| !l.is_empty()))
}

/// What to compare the work tree with: `HEAD`, or the empty tree of the
/// repository's hash before the first commit (hashed, not written).
async fn base(root: &Path, head: &Option<String>) -> Result<String, ReviewError> {
    if let Some(h) = head {
        return Ok(h.clone());
    }
    let out = git::run(
        root,
        &["hash-object", "-t", "tree", "--stdin"],
        LINE_MAX_BYTES,
    )
    .await?;
    if !out.ok() {
        return Err(failed("hash-object", &out));
    }
    Ok(out.line())
}

fn failed(what: &str, out: &git::Output) -> ReviewError {
    ReviewError::Failed(format!("git {what} failed: {}", out.stderr.trim()))
}

/// The options every `git diff` here runs with: no pager, colour, external
/// diff or textconv driver, paths from the top level, standard prefixes.
const DIFF_OPTS: &[&str] = &[
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-relative",
    "--src-prefix=a/",
    "--dst-prefix=b/",
];

/// Tracked changes of the work tree against `base`, renames found.
async fn tracked(
    root: &Path,
    base: &str,
    numstat: bool,
) -> Result<Vec<git::RawEntry>, ReviewError> {
    let mut args = vec!["diff", base, "-M", "--raw", "--no-abbrev", "-z"];
    if numstat {
        args.push("--numstat");
    }
    args.extend_from_slice(DIFF_OPTS);
    args.push("--");
    let out = git::run(root, &args, LISTING_MAX_BYTES).await?;
    if !out.ok() {
        return Err(failed("diff", &out));
    }
    git::parse_raw_numstat(&out.stdout)
}

/// Untracked, not ignored files (a nested repository shows as `dir/`).
async fn untracked(root: &Path) -> Result<Vec<String>, ReviewError> {
    let out = git::run(
        root,
        &["ls-files", "--others", "--exclude-standard", "-z", "--"],
        LISTING_MAX_BYTES,
    )
    .await?;
    if !out.ok() {
        return Err(failed("ls-files", &out));
    }
    Ok(git::fields(&out.stdout))
}

/// Sets a flag when dropped: tells blocking work that nobody waits for it.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs blocking work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReviewError> + Send + 'static,
) -> Result<T, ReviewError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ReviewError::Failed(format!("blocking task: {e}")))?
}

/// Line count and binary flag of file contents, the way `git diff
/// --numstat` counts an added file.
pub fn count_lines(bytes: &[u8]) -> (u64, bool) {
    let probe = &bytes[..bytes.len().min(BINARY_PROBE_BYTES)];
    if probe.contains(&0) {
        return (0, true);
    }
    let newlines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
    let partial = u64::from(bytes.last().is_some_and(|b| *b != b'\n'));
    (newlines + partial, false)
}

/// What counting found in one untracked file.
#[derive(Debug, Clone, Copy, Default)]
struct Count {
    lines: u64,
    binary: bool,
    /// A regular file, read whole: a candidate for rename pairing.
    regular: bool,
}

/// Counts the lines of untracked files (blocking). Stops with `Timeout`
/// once `cancel` is set (the request was dropped) or `deadline` passed.
fn count_untracked(
    root: &Path,
    paths: &[String],
    max_bytes: usize,
    deadline: Instant,
    cancel: &AtomicBool,
) -> Result<Vec<Count>, ReviewError> {
    let mut counts = Vec::with_capacity(paths.len());
    for p in paths {
        if cancel.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return Err(ReviewError::Timeout);
        }
        counts.push(count_one(root, p, max_bytes));
    }
    Ok(counts)
}

fn count_one(root: &Path, path: &str, max_bytes: usize) -> Count {
    let none = Count::default();
    if path.ends_with('/') {
        return none;
    }
    let Ok(meta) = std::fs::symlink_metadata(root.join(path)) else {
        return none;
    };
    if meta.file_type().is_symlink() {
        // git diffs a symlink as one line: its target.
        return Count { lines: 1, ..none };
    }
    // Opened without following any symlink, and only if regular.
    let Ok(opened) = confine::walk(root, Path::new(path)) else {
        return none;
    };
    if !opened.is_regular() {
        return none;
    }
    if opened.size() > max_bytes as u64 {
        // Not read whole: reported binary, as git reports a file over
        // core.bigFileThreshold.
        return Count {
            binary: true,
            ..none
        };
    }
    match confine::read_opened(&opened, max_bytes) {
        Ok(bytes) => {
            let (lines, binary) = count_lines(&bytes);
            Count {
                lines,
                binary,
                // Empty files are never paired (nor does git pair them).
                regular: !bytes.is_empty(),
            }
        }
        Err(_) => none,
    }
}

/// Most bytes of paths given to one `git hash-object` (well under ARG_MAX);
/// beyond it, moved files are not paired.
const MAX_HASHED_PATH_BYTES: usize = 128 << 10;

/// Pairs deleted tracked files with untracked files of the very same
/// content: a plain `mv` (not `git mv`), which `git status` shows as a
/// deletion and an untracked file, is reported as the rename it is. The
/// untracked files are hashed by `git hash-object --no-filters` (no write,
/// no filter program). Returns (index in `deleted`, index in `untracked`).
async fn moved(
    root: &Path,
    deleted: &[&git::RawEntry],
    untracked: &[String],
    counts: &[Count],
) -> Result<Vec<(usize, usize)>, ReviewError> {
    let candidates: Vec<usize> = (0..untracked.len())
        .filter(|&i| counts[i].regular && !untracked[i].contains('\n'))
        .collect();
    let bytes: usize = candidates.iter().map(|&i| untracked[i].len() + 1).sum();
    if deleted.is_empty() || candidates.is_empty() || bytes > MAX_HASHED_PATH_BYTES {
        return Ok(Vec::new());
    }
    let mut args = vec!["hash-object", "--no-filters", "--"];
    args.extend(candidates.iter().map(|&i| untracked[i].as_str()));
    let out = git::run(root, &args, LISTING_MAX_BYTES).await?;
    if !out.ok() {
        // A file vanished meanwhile: no pairing, nothing wrong.
        return Ok(Vec::new());
    }
    let hashes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let mut taken = vec![false; untracked.len()];
    let mut pairs = Vec::new();
    for (d, entry) in deleted.iter().enumerate() {
        let found = candidates
            .iter()
            .zip(&hashes)
            .find(|&(&i, h)| !taken[i] && !entry.old_id.is_empty() && *h == entry.old_id);
        if let Some((&i, _)) = found {
            taken[i] = true;
            pairs.push((d, i));
        }
    }
    Ok(pairs)
}

fn change_status(letter: char) -> &'static str {
    match letter {
        'A' | 'C' => "added",
        'D' => "deleted",
        'R' => "renamed",
        _ => "modified",
    }
}

/// `GET /sessions/{id}/changes`.
pub async fn changes(tree: &Tree, limits: Limits) -> Result<Changes, ReviewError> {
    if !tree.repo {
        return Err(ReviewError::NotARepository);
    }
    let deadline = Instant::now() + limits.timeout;
    let root = &tree.root;
    let head = head(root).await?;
    let branch_out = git::run(
        root,
        &["symbolic-ref", "-q", "--short", "HEAD"],
        LINE_MAX_BYTES,
    )
    .await?;
    let branch = branch_out
        .ok()
        .then(|| branch_out.line())
        .filter(|b| !b.is_empty());
    let base = base(root, &head).await?;
    let (tracked, untracked) = tokio::try_join!(tracked(root, &base, true), untracked(root))?;
    let cancel = Arc::new(AtomicBool::new(false));
    let _stop = CancelOnDrop(cancel.clone());
    let counts = {
        let (root, paths, cancel) = (root.clone(), untracked.clone(), cancel.clone());
        let max = limits.max_bytes;
        blocking(move || count_untracked(&root, &paths, max, deadline, &cancel)).await?
    };
    let deleted: Vec<&git::RawEntry> = tracked.iter().filter(|e| e.status == 'D').collect();
    let pairs = moved(root, &deleted, &untracked, &counts).await?;
    let mut files: Vec<FileChange> = Vec::new();
    for (d, u) in &pairs {
        files.push(FileChange {
            path: untracked[*u].clone(),
            status: "renamed",
            old_path: Some(deleted[*d].path.clone()),
            insertions: 0,
            deletions: 0,
            binary: counts[*u].binary,
        });
    }
    let moved_from: Vec<&str> = pairs
        .iter()
        .map(|(d, _)| deleted[*d].path.as_str())
        .collect();
    let moved_to: Vec<usize> = pairs.iter().map(|(_, u)| *u).collect();
    files.extend(
        tracked
            .iter()
            .filter(|e| !(e.status == 'D' && moved_from.contains(&e.path.as_str())))
            .map(|e| FileChange {
                status: change_status(e.status),
                insertions: e.counts.map(|c| c.0).unwrap_or(0),
                deletions: e.counts.map(|c| c.1).unwrap_or(0),
                binary: e.counts.is_none(),
                path: e.path.clone(),
                old_path: e.old_path.clone(),
            }),
    );
    files.extend(
        untracked
            .iter()
            .zip(&counts)
            .enumerate()
            .filter(|(i, _)| !moved_to.contains(i))
            .map(|(_, (path, c))| FileChange {
                path: path.clone(),
                status: "untracked",
                old_path: None,
                insertions: c.lines,
                deletions: 0,
                binary: c.binary,
            }),
    );
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Changes {
        cwd: tree.cwd.display().to_string(),
        repository: true,
        branch,
        head,
        files,
    })
}

/// Whether git ignores `path` (tracked files never are). An error counts
/// as ignored: when in doubt, do not serve.
async fn ignored(root: &Path, path: &str) -> Result<bool, ReviewError> {
    if path.is_empty() {
        return Ok(false);
    }
    let out = git::run(root, &["check-ignore", "-q", "--", path], LINE_MAX_BYTES).await?;
    match out.code {
        Some(1) => Ok(false),
        Some(0) => Ok(true),
        _ => {
            tracing::warn!(path, stderr = %out.stderr.trim(), "git check-ignore failed; refusing the path");
            Ok(true)
        }
    }
}

/// Checks `path` and opens what it names beneath the tree's root: the
/// refusals shared by `/diff` and `/file`. `Ok(None)` when nothing is
/// there.
async fn confined(tree: &Tree, path: &str) -> Result<Option<confine::Opened>, ReviewError> {
    if confine::in_git_dir(path) {
        return Err(ReviewError::IgnoredPath);
    }
    let opened = {
        let (root, p) = (tree.root.clone(), path.to_owned());
        match blocking(move || confine::open_beneath(&root, &p)).await {
            Ok(o) => Some(o),
            Err(ReviewError::NoSuchFile) => None,
            Err(e) => return Err(e),
        }
    };
    let resolved = opened.as_ref().map(|o| o.resolved.clone());
    if resolved.as_deref().is_some_and(confine::in_git_dir) {
        return Err(ReviewError::IgnoredPath);
    }
    // What would be served is the resolved file: that is the path git must
    // not ignore (a symlink to `.env` is refused; a path through a symlinked
    // directory inside the tree is judged by where it lands). A path that
    // is not on disk is given to git as it is.
    if tree.repo && ignored(&tree.root, resolved.as_deref().unwrap_or(path)).await? {
        return Err(ReviewError::IgnoredPath);
    }
    Ok(opened)
}

/// Reads an opened file on the blocking pool.
async fn read(opened: confine::Opened, max_bytes: usize) -> Result<Vec<u8>, ReviewError> {
    blocking(move || confine::read_opened(&opened, max_bytes)).await
}

/// `GET /sessions/{id}/file?path=`: the bytes of a regular file.
pub async fn file(tree: &Tree, path: &str, limits: Limits) -> Result<Vec<u8>, ReviewError> {
    let path = confine::check_path(path)?;
    let opened = confined(tree, &path)
        .await?
        .ok_or(ReviewError::NoSuchFile)?;
    read(opened, limits.max_bytes).await
}

/// The unified diff of a file against nothing (an untracked file, or any
/// file outside a repository), as `git diff` writes it.
pub fn new_file_diff(path: &str, bytes: &[u8], executable: bool) -> Vec<u8> {
    let mode = if executable { "100755" } else { "100644" };
    let mut out = format!("diff --git a/{path} b/{path}\nnew file mode {mode}\n").into_bytes();
    if bytes.is_empty() {
        return out;
    }
    let (lines, binary) = count_lines(bytes);
    if binary {
        out.extend_from_slice(format!("Binary files /dev/null and b/{path} differ\n").as_bytes());
        return out;
    }
    out.extend_from_slice(format!("--- /dev/null\n+++ b/{path}\n").as_bytes());
    let range = if lines == 1 {
        "+1".to_owned()
    } else {
        format!("+1,{lines}")
    };
    out.extend_from_slice(format!("@@ -0,0 {range} @@\n").as_bytes());
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        out.push(b'+');
        out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            out.extend_from_slice(b"\n\\ No newline at end of file\n");
        }
    }
    out
}

/// `GET /sessions/{id}/diff?path=`: the unified diff of a file against
/// `HEAD`; every path `/changes` lists is accepted (a rename's new path
/// gives the rename's diff, its old path the deletion).
pub async fn diff(tree: &Tree, path: &str, limits: Limits) -> Result<Vec<u8>, ReviewError> {
    let path = confine::check_path(path)?;
    let opened = confined(tree, &path).await?;
    if let Some(o) = &opened
        && !o.is_regular()
    {
        return Err(ReviewError::NotARegularFile);
    }
    let untracked_diff = |opened: confine::Opened| {
        let path = path.clone();
        async move {
            let executable = opened.executable();
            let bytes = read(opened, limits.max_bytes).await?;
            let out = new_file_diff(&path, &bytes, executable);
            if out.len() > limits.max_bytes {
                return Err(ReviewError::TooLarge(limits.max_bytes));
            }
            Ok(out)
        }
    };
    if !tree.repo {
        return match opened {
            Some(o) => untracked_diff(o).await,
            None => Err(ReviewError::NoSuchFile),
        };
    }
    let root = &tree.root;
    let base = base(root, &head(root).await?).await?;
    let entries = tracked(root, &base, false).await?;
    let mut args: Vec<&str> = vec!["diff", &base];
    args.extend_from_slice(DIFF_OPTS);
    if let Some(e) = entries.iter().find(|e| e.path == path) {
        match &e.old_path {
            Some(old) if e.status == 'R' => args.extend(["-M", "--", old.as_str(), path.as_str()]),
            _ => args.extend(["--no-renames", "--", path.as_str()]),
        }
    } else if entries.iter().any(|e| e.old_path.as_deref() == Some(&path)) {
        args.extend(["--no-renames", "--", path.as_str()]);
    } else {
        let Some(o) = opened else {
            return Err(ReviewError::NoSuchFile);
        };
        let listed = git::run(root, &["ls-files", "-z", "--", &path], LINE_MAX_BYTES).await?;
        if !listed.ok() {
            return Err(failed("ls-files", &listed));
        }
        if listed.stdout.is_empty() {
            // Untracked: a plain `mv` of a deleted file when the content is
            // the same (as `/changes` pairs them), else a new file.
            let deleted: Vec<&git::RawEntry> = entries
                .iter()
                .filter(|e| e.status == 'D' && !e.old_id.is_empty())
                .collect();
            if !deleted.is_empty() && o.is_regular() && o.size() > 0 {
                let out = git::run(
                    root,
                    &["hash-object", "--no-filters", "--", &path],
                    LINE_MAX_BYTES,
                )
                .await?;
                let id = out.line();
                if let Some(from) = deleted.iter().find(|e| out.ok() && e.old_id == id) {
                    let old = &from.path;
                    return Ok(format!(
                        "diff --git a/{old} b/{path}\nsimilarity index 100%\nrename from {old}\nrename to {path}\n"
                    )
                    .into_bytes());
                }
            }
            return untracked_diff(o).await;
        }
        // Tracked and unchanged: an empty diff.
        return Ok(Vec::new());
    }
    let out = git::run(root, &args, limits.max_bytes).await?;
    if !out.ok() {
        return Err(failed("diff", &out));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_like_git() {
        assert_eq!(count_lines(b""), (0, false));
        assert_eq!(count_lines(b"a"), (1, false));
        assert_eq!(count_lines(b"a\nb\n"), (2, false));
        assert_eq!(count_lines(b"a\nb"), (2, false));
        assert_eq!(count_lines(b"a\0b"), (0, true));
    }

    #[test]
    fn a_new_file_diff_looks_like_gits() {
        assert_eq!(
            String::from_utf8(new_file_diff("d/x.txt", b"one\ntwo", false)).unwrap(),
            "diff --git a/d/x.txt b/d/x.txt\nnew file mode 100644\n--- /dev/null\n+++ b/d/x.txt\n\
             @@ -0,0 +1,2 @@\n+one\n+two\n\\ No newline at end of file\n"
        );
        assert_eq!(
            String::from_utf8(new_file_diff("b", b"\0\x01", true)).unwrap(),
            "diff --git a/b b/b\nnew file mode 100755\nBinary files /dev/null and b/b differ\n"
        );
    }

    #[test]
    fn errors_map_to_the_protocol() {
        assert_eq!(ReviewError::InvalidPath.status(), 400);
        assert_eq!(ReviewError::OutsideCwd.code(), "outside_cwd");
        assert_eq!(ReviewError::TooLarge(5).status(), 413);
        assert_eq!(ReviewError::NotARepository.status(), 422);
        assert_eq!(ReviewError::Timeout.code(), "review_timeout");
        assert_eq!(ReviewError::Timeout.status(), 504);
    }
}

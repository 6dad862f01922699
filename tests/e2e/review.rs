//! Review routes (PROTOCOL.md section 12.4): `/changes`, `/diff`, `/file`
//! over real HTTP against real git repositories made in temporary
//! directories, and one test per confinement attack, each asserting the
//! status and that no byte of the target leaked.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// Present in every file a confinement test must never serve.
const SECRET: &str = "AMARRE-REVIEW-SECRET-7f3a9c";

/// Runs git in `dir` with no global or system configuration.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap_or_else(|e| panic!("git is needed (apt-get install git): {e}"));
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A scratch directory holding `repo/` (a git repository, branch `main`)
/// and `outside/secret.txt` next to it.
struct Repo {
    tmp: TempDir,
    root: PathBuf,
}

impl Repo {
    fn new(tag: &str) -> Repo {
        let tmp = TempDir::new(&format!("review-{tag}"));
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let root = base.join("repo");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/secret.txt"), format!("{SECRET}\n")).unwrap();
        git(&root, &["init", "-q", "-b", "main"]);
        git(&root, &["config", "user.name", "Review Test"]);
        git(&root, &["config", "user.email", "review@example.invalid"]);
        Repo { tmp, root }
    }

    fn base(&self) -> PathBuf {
        std::fs::canonicalize(self.tmp.path()).unwrap()
    }

    fn write(&self, path: &str, bytes: impl AsRef<[u8]>) {
        let p = self.root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn git(&self, args: &[&str]) -> String {
        git(&self.root, args)
    }

    fn commit_all(&self, msg: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
    }

    fn symlink(&self, target: impl AsRef<Path>, link: &str) {
        std::os::unix::fs::symlink(target, self.root.join(link)).unwrap();
    }

    fn secret(&self) -> PathBuf {
        self.base().join("outside/secret.txt")
    }
}

async fn daemon(extra: &[(&str, &str)]) -> Daemon {
    let instances = fake_instance(json!({}));
    let mut env = vec![("AMARRE_INSTANCES_JSON", instances.as_str())];
    env.extend_from_slice(extra);
    Daemon::start(&env).await
}

async fn session(d: &Daemon, cwd: &Path) -> String {
    d.create(json!({"cwd": cwd.to_str().unwrap()})).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// An answer with its headers and raw bytes.
struct Answer {
    status: u16,
    content_type: String,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts an error answer, and that the secret is not in it.
    fn refused(&self, status: u16, code: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: {}", self.text());
        assert_eq!(self.json()["error"], code, "{what}");
        self.no_secret(what);
    }

    fn no_secret(&self, what: &str) {
        assert!(
            !self.text().contains(SECRET) && !self.text().contains("7f3a9c"),
            "{what} leaked the secret: {}",
            self.text()
        );
    }
}

/// Percent-encodes a query value (every byte but unreserved ones).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn fetch(d: &Daemon, path_and_query: &str) -> Answer {
    let url = format!("{}{path_and_query}", d.url);
    let resp = tokio::time::timeout(STEP, d.http().get(&url).send())
        .await
        .unwrap_or_else(|_| panic!("timed out: GET {path_and_query}"))
        .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = tokio::time::timeout(STEP, resp.bytes())
        .await
        .unwrap_or_else(|_| panic!("timed out reading GET {path_and_query}"))
        .unwrap_or_default()
        .to_vec();
    Answer {
        status,
        content_type,
        headers,
        body,
    }
}

async fn changes(d: &Daemon, id: &str) -> Answer {
    fetch(d, &format!("/sessions/{id}/changes")).await
}

async fn diff(d: &Daemon, id: &str, path: &str) -> Answer {
    fetch(d, &format!("/sessions/{id}/diff?path={}", encode(path))).await
}

async fn file(d: &Daemon, id: &str, path: &str) -> Answer {
    fetch(d, &format!("/sessions/{id}/file?path={}", encode(path))).await
}

/// Asserts the headers every `/diff` and `/file` answer carries.
fn sandboxed(a: &Answer, what: &str) {
    assert_eq!(a.header("content-security-policy"), "sandbox", "{what}");
    assert_eq!(a.header("x-content-type-options"), "nosniff", "{what}");
}

/// The files of a `/changes` answer, by path.
fn files(a: &Answer) -> Vec<Value> {
    assert_eq!(a.status, 200, "/changes: {}", a.text());
    a.json()["files"].as_array().cloned().unwrap_or_default()
}

fn entry(path: &str, status: &str, ins: u64, del: u64, binary: bool) -> Value {
    json!({"path": path, "status": status, "insertions": ins, "deletions": del, "binary": binary})
}

/// A repository with one change of every kind.
fn mixed_repo() -> Repo {
    let r = Repo::new("mixed");
    r.write(".gitignore", "*.log\n.env\nbuild/\n");
    r.write("a.txt", "one\ntwo\nthree\n");
    r.write("bin.dat", b"\x00\x01\x02binary");
    r.write("gone.txt", "going away\n");
    let old: String = (1..=40).map(|n| format!("line {n}\n")).collect();
    r.write("old/name.txt", &old);
    r.write("same.txt", "unchanged\n");
    r.write("plain/before.txt", "moved with a plain mv\n");
    r.write("plain/empty-a", "");
    r.commit_all("first");
    std::fs::rename(
        r.root.join("plain/before.txt"),
        r.root.join("plain/after.txt"),
    )
    .unwrap();
    // An empty file deleted and another created are not a rename.
    std::fs::remove_file(r.root.join("plain/empty-a")).unwrap();
    r.write("plain/empty-b", "");
    r.write("a.txt", "one\nTWO\nthree\nfour\n");
    r.write("bin.dat", b"\x00\x01\x02binary\x03");
    std::fs::remove_file(r.root.join("gone.txt")).unwrap();
    std::fs::create_dir_all(r.root.join("new")).unwrap();
    r.git(&["mv", "old/name.txt", "new/name.txt"]);
    r.write("staged.txt", "staged\n");
    r.git(&["add", "staged.txt"]);
    r.write("notes/untracked.md", "# notes\nsecond line");
    r.write("debug.log", format!("{SECRET}\n"));
    r.write(".env", format!("TOKEN={SECRET}\n"));
    r.write("build/out.txt", format!("{SECRET}\n"));
    r
}

#[tokio::test]
async fn changes_lists_the_work_tree_against_head() {
    let r = mixed_repo();
    let d = daemon(&[]).await;
    let id = session(&d, &r.root).await;
    let a = changes(&d, &id).await;
    assert_eq!(a.content_type, "application/json");
    let body = a.json();
    assert_eq!(body["cwd"], r.root.to_str().unwrap());
    assert_eq!(body["repository"], true);
    assert_eq!(body["branch"], "main");
    assert_eq!(body["head"], r.git(&["rev-parse", "HEAD"]));
    assert_eq!(body["head"].as_str().unwrap().len(), 40);
    let mut renamed = entry("new/name.txt", "renamed", 0, 0, false);
    renamed["oldPath"] = json!("old/name.txt");
    let mut moved = entry("plain/after.txt", "renamed", 0, 0, false);
    moved["oldPath"] = json!("plain/before.txt");
    // Ignored files (debug.log, .env, build/) are not listed; nor is the
    // unchanged same.txt.
    assert_eq!(
        files(&a),
        vec![
            entry("a.txt", "modified", 2, 1, false),
            entry("bin.dat", "modified", 0, 0, true),
            entry("gone.txt", "deleted", 0, 1, false),
            renamed,
            entry("notes/untracked.md", "untracked", 2, 0, false),
            moved,
            entry("plain/empty-a", "deleted", 0, 0, false),
            entry("plain/empty-b", "untracked", 0, 0, false),
            entry("staged.txt", "added", 1, 0, false),
        ]
    );
    a.no_secret("/changes");
    // Reading never wrote: the index is as git left it.
    let status = r.git(&["status", "--porcelain"]);
    assert!(
        status.contains("R  old/name.txt -> new/name.txt"),
        "{status}"
    );
}

#[tokio::test]
async fn diff_answers_every_listed_path() {
    let r = mixed_repo();
    let d = daemon(&[]).await;
    let id = session(&d, &r.root).await;

    let a = diff(&d, &id, "a.txt").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.content_type, "text/x-diff; charset=utf-8");
    sandboxed(&a, "diff of a.txt");
    let t = a.text();
    assert!(t.starts_with("diff --git a/a.txt b/a.txt\n"), "{t}");
    assert!(t.contains("\n-two\n+TWO\n three\n+four\n"), "{t}");

    let t = diff(&d, &id, "notes/untracked.md").await.text();
    assert!(t.contains("new file mode 100644"), "{t}");
    assert!(t.contains("--- /dev/null\n+++ b/notes/untracked.md\n@@ -0,0 +1,2 @@\n+# notes\n+second line\n\\ No newline at end of file\n"), "{t}");

    let t = diff(&d, &id, "gone.txt").await.text();
    assert!(t.contains("deleted file mode 100644"), "{t}");
    assert!(t.contains("-going away"), "{t}");

    let t = diff(&d, &id, "new/name.txt").await.text();
    assert!(
        t.contains("rename from old/name.txt\nrename to new/name.txt"),
        "{t}"
    );
    // The rename's old path: its content against nothing on disk.
    let t = diff(&d, &id, "old/name.txt").await.text();
    assert!(t.contains("deleted file mode 100644"), "{t}");
    assert!(t.contains("-line 40"), "{t}");

    // A plain `mv`: the rename for the new path, the old one deleted.
    let t = diff(&d, &id, "plain/after.txt").await.text();
    assert_eq!(
        t,
        "diff --git a/plain/before.txt b/plain/after.txt\nsimilarity index 100%\n\
         rename from plain/before.txt\nrename to plain/after.txt\n"
    );
    let t = diff(&d, &id, "plain/before.txt").await.text();
    assert!(
        t.contains("deleted file mode") && t.contains("-moved with a plain mv"),
        "{t}"
    );

    let t = diff(&d, &id, "staged.txt").await.text();
    assert!(t.contains("new file mode") && t.contains("+staged"), "{t}");
    let t = diff(&d, &id, "bin.dat").await.text();
    assert!(
        t.contains("Binary files a/bin.dat and b/bin.dat differ"),
        "{t}"
    );

    // Tracked and unchanged: an empty diff.
    let a = diff(&d, &id, "same.txt").await;
    assert_eq!((a.status, a.body.len()), (200, 0), "{}", a.text());
    // Nowhere: not on disk, not in HEAD.
    let a = diff(&d, &id, "never-was.txt").await;
    a.refused(404, "no_such_file", "diff of a missing path");
    sandboxed(&a, "a refused diff");
}

#[tokio::test]
async fn file_is_served_only_as_plain_text_or_octet_stream() {
    let r = Repo::new("file");
    r.write("page.html", "<script>alert(document.cookie)</script>\n");
    r.write("blob.bin", b"\x89PNG\r\n\x1a\n\xff\xfe\x00");
    r.write("utf8.txt", "café ✓\n");
    r.commit_all("first");
    std::fs::remove_file(r.root.join("utf8.txt")).unwrap();
    let d = daemon(&[]).await;
    let id = session(&d, &r.root).await;

    let a = file(&d, &id, "page.html").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type, "text/plain; charset=utf-8");
    sandboxed(&a, "html file");
    assert_eq!(a.body, b"<script>alert(document.cookie)</script>\n");

    let a = file(&d, &id, "blob.bin").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type, "application/octet-stream");
    sandboxed(&a, "binary file");
    assert_eq!(a.body, b"\x89PNG\r\n\x1a\n\xff\xfe\x00");

    // Deleted from the work tree: nothing to serve.
    file(&d, &id, "utf8.txt")
        .await
        .refused(404, "no_such_file", "deleted file");
    let a = file(&d, &id, "dir-that-is-not-there/x").await;
    a.refused(404, "no_such_file", "missing file");
    sandboxed(&a, "a refused file");
}

#[tokio::test]
async fn a_repository_in_a_parent_of_the_cwd() {
    let r = Repo::new("parent");
    r.write("top.txt", "top\n");
    r.write("sub/deeper/inner.txt", "inner\n");
    r.commit_all("first");
    r.write("top.txt", "top changed\n");
    r.write("sub/deeper/inner.txt", "inner changed\n");
    let d = daemon(&[]).await;
    let id = session(&d, &r.root.join("sub/deeper")).await;
    let a = changes(&d, &id).await;
    assert_eq!(a.json()["cwd"], r.root.join("sub/deeper").to_str().unwrap());
    let paths: Vec<Value> = files(&a).iter().map(|f| f["path"].clone()).collect();
    assert_eq!(paths, vec![json!("sub/deeper/inner.txt"), json!("top.txt")]);
    // Paths are relative to the repository root, not to the cwd.
    assert_eq!(file(&d, &id, "top.txt").await.body, b"top changed\n");
    assert_eq!(
        file(&d, &id, "sub/deeper/inner.txt").await.body,
        b"inner changed\n"
    );
    file(&d, &id, "inner.txt")
        .await
        .refused(404, "no_such_file", "a cwd-relative path");
    let t = diff(&d, &id, "top.txt").await.text();
    assert!(t.contains("-top\n+top changed"), "{t}");
}

#[tokio::test]
async fn a_git_worktree() {
    let r = Repo::new("worktree");
    r.write("shared.txt", "shared\n");
    r.commit_all("first");
    let wt = r.base().join("feature-tree");
    r.git(&[
        "worktree",
        "add",
        "-q",
        "-b",
        "feature",
        wt.to_str().unwrap(),
    ]);
    std::fs::write(wt.join("shared.txt"), "changed in the worktree\n").unwrap();
    std::fs::write(wt.join("fresh.txt"), "fresh\n").unwrap();
    let d = daemon(&[]).await;
    let id = session(&d, &wt).await;
    let body = changes(&d, &id).await.json();
    assert_eq!(body["branch"], "feature");
    assert_eq!(body["head"], r.git(&["rev-parse", "HEAD"]));
    assert_eq!(
        body["files"],
        json!([
            entry("fresh.txt", "untracked", 1, 0, false),
            entry("shared.txt", "modified", 1, 1, false),
        ])
    );
    assert_eq!(
        file(&d, &id, "shared.txt").await.body,
        b"changed in the worktree\n"
    );
    let t = diff(&d, &id, "shared.txt").await.text();
    assert!(t.contains("-shared\n+changed in the worktree"), "{t}");
    // The worktree's `.git` is a file naming the main repository.
    file(&d, &id, ".git")
        .await
        .refused(403, "ignored_path", "a worktree's .git file");
    // The main repository's work tree is unchanged.
    assert_eq!(r.git(&["status", "--porcelain"]), "");
}

#[tokio::test]
async fn a_repository_with_no_commit_yet() {
    let r = Repo::new("unborn");
    r.write("staged.txt", "staged\nlines\n");
    r.git(&["add", "staged.txt"]);
    r.write("loose.txt", "loose\n");
    let d = daemon(&[]).await;
    let id = session(&d, &r.root).await;
    let body = changes(&d, &id).await.json();
    assert_eq!(body["head"], Value::Null);
    assert_eq!(body["branch"], "main");
    assert_eq!(
        body["files"],
        json!([
            entry("loose.txt", "untracked", 1, 0, false),
            entry("staged.txt", "added", 2, 0, false),
        ])
    );
    let t = diff(&d, &id, "staged.txt").await.text();
    assert!(
        t.contains("new file mode 100644") && t.contains("+staged\n+lines\n"),
        "{t}"
    );
    let t = diff(&d, &id, "loose.txt").await.text();
    assert!(
        t.contains("new file mode 100644") && t.contains("+loose\n"),
        "{t}"
    );
}

#[tokio::test]
async fn a_cwd_outside_any_repository() {
    let tmp = TempDir::new("review-plain");
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    std::fs::write(dir.join("notes.txt"), "plain notes\n").unwrap();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/more.txt"), "more\n").unwrap();
    // Git must not find a repository above the temporary directory.
    let d = daemon(&[]).await;
    let id = session(&d, &dir).await;
    changes(&d, &id)
        .await
        .refused(422, "not_a_repository", "a plain directory");
    // Paths are relative to the cwd.
    let a = file(&d, &id, "sub/more.txt").await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"more\n"[..]));
    let a = diff(&d, &id, "notes.txt").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.text(),
        "diff --git a/notes.txt b/notes.txt\nnew file mode 100644\n--- /dev/null\n+++ b/notes.txt\n@@ -0,0 +1 @@\n+plain notes\n"
    );
    diff(&d, &id, "none.txt")
        .await
        .refused(404, "no_such_file", "missing file");
}

#[tokio::test]
async fn ignored_files_and_the_git_directory_are_refused() {
    let r = mixed_repo();
    r.symlink(".env", "env-link");
    let d = daemon(&[]).await;
    let id = session(&d, &r.root).await;
    for p in [".env", "debug.log", "build/out.txt", "env-link"] {
        file(&d, &id, p)
            .await
            .refused(403, "ignored_path", &format!("file {p}"));
        diff(&d, &id, p)
            .await
            .refused(403, "ignored_path", &format!("diff {p}"));
    }
    for p in [
        ".git/config",
        ".git/HEAD",
        ".git",
        "./.git/index",
        "x/.git/config",
    ] {
        file(&d, &id, p)
            .await
            .refused(403, "ignored_path", &format!("file {p}"));
        diff(&d, &id, p)
            .await
            .refused(403, "ignored_path", &format!("diff {p}"));
    }
    // A symlink into .git.
    r.symlink(".git/config", "cfg");
    file(&d, &id, "cfg")
        .await
        .refused(403, "ignored_path", "symlink into .git");
}

#[tokio::test]
async fn a_crashed_session_still_answers_and_a_deleted_one_is_gone() {
    let r = Repo::new("crashed");
    r.write("a.txt", "a\n");
    r.commit_all("first");
    r.write("a.txt", "b\n");
    let d = daemon(&[]).await;
    let id = session(&d, &r.root).await;
    let mut ws = d.ws(&id, "").await;
    ws.send_json(json!({"type": "fake.exit", "code": 3})).await;
    d.wait_summary(&id, "crashed", |s| s["status"] == "crashed")
        .await;
    assert_eq!(
        files(&changes(&d, &id).await),
        vec![entry("a.txt", "modified", 1, 1, false)]
    );
    assert_eq!(file(&d, &id, "a.txt").await.body, b"b\n");
    assert_eq!(diff(&d, &id, "a.txt").await.status, 200);
    assert_eq!(d.delete(&format!("/sessions/{id}")).await.0, 204);
    for a in [
        changes(&d, &id).await,
        file(&d, &id, "a.txt").await,
        diff(&d, &id, "a.txt").await,
    ] {
        a.refused(404, "not_found", "a deleted session");
    }
}

#[tokio::test]
async fn a_session_without_cwd_uses_the_daemons() {
    let r = Repo::new("daemon-cwd");
    r.write("a.txt", "a\n");
    r.commit_all("first");
    r.write("a.txt", "daemon cwd\n");
    let instances = fake_instance(json!({}));
    let d = Daemon::start_in(Some(&r.root), &[("AMARRE_INSTANCES_JSON", &instances)], &[]).await;
    let id = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let body = changes(&d, &id).await.json();
    assert_eq!(body["cwd"], r.root.to_str().unwrap());
    assert_eq!(
        body["files"],
        json!([entry("a.txt", "modified", 1, 1, false)])
    );
    assert_eq!(file(&d, &id, "a.txt").await.body, b"daemon cwd\n");
}

#[tokio::test]
async fn invalid_paths_answer_400() {
    let r = Repo::new("invalid");
    r.write("a.txt", "a\n");
    let d = daemon(&[]).await;
    let id = session(&d, &r.root).await;
    let secret = r.secret();
    let rel_up = "../outside/secret.txt";
    for p in [
        "",
        "/",
        secret.to_str().unwrap(),
        "/etc/passwd",
        "..",
        rel_up,
        "a/../../outside/secret.txt",
        "a.txt/../../outside/secret.txt",
    ] {
        file(&d, &id, p)
            .await
            .refused(400, "invalid_path", &format!("file {p:?}"));
        diff(&d, &id, p)
            .await
            .refused(400, "invalid_path", &format!("diff {p:?}"));
    }
    // Without the parameter, or encoded `..`.
    for q in [
        "",
        "?",
        "?other=a.txt",
        "?path=%2e%2e%2foutside%2fsecret.txt",
    ] {
        for route in ["file", "diff"] {
            fetch(&d, &format!("/sessions/{id}/{route}{q}"))
                .await
                .refused(400, "invalid_path", &format!("{route}{q}"));
        }
    }
}

#[tokio::test]
async fn files_over_the_limit_answer_413_without_being_read() {
    let r = Repo::new("limit");
    r.write("small.txt", vec![b'a'; 1000]);
    r.write("big.txt", vec![b'a'; 1001]);
    // 1 TiB, sparse: reading it whole would take far longer than the
    // test's timeout (and the review's).
    let f = std::fs::File::create(r.root.join("huge.bin")).unwrap();
    f.set_len(1 << 40).unwrap();
    let d = daemon(&[("AMARRE_REVIEW_MAX_BYTES", "1000")]).await;
    let id = session(&d, &r.root).await;
    assert_eq!(file(&d, &id, "small.txt").await.body.len(), 1000);
    for p in ["big.txt", "huge.bin"] {
        let a = file(&d, &id, p).await;
        assert_eq!(a.status, 413, "{p}: {}", a.text());
        assert_eq!(a.json(), json!({"error": "too_large", "limit": 1000}));
        let a = diff(&d, &id, p).await;
        assert_eq!(a.status, 413, "diff {p}: {}", a.text());
    }
    // The listing does not read it either.
    let list = files(&changes(&d, &id).await);
    assert!(
        list.contains(&entry("huge.bin", "untracked", 0, 0, true)),
        "{list:?}"
    );
}

/// A `git` process whose cwd is `dir`, if any.
fn process_in(dir: &Path) -> Option<String> {
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() == "git"
            && std::fs::read_link(e.path().join("cwd")).ok().as_deref() == Some(dir)
            && process_alive(name.parse().unwrap_or(0))
        {
            return Some(format!("{name} {}", comm.trim()));
        }
    }
    None
}

#[tokio::test]
async fn a_huge_repository_answers_504_and_the_daemon_keeps_serving() {
    let r = Repo::new("huge");
    r.write("tracked.txt", "t\n");
    r.commit_all("first");
    // 100,000 small untracked files (about 400 MB of blocks, removed at
    // the end): far more than the time limit below allows to count.
    let root = r.root.clone();
    tokio::task::spawn_blocking(move || {
        for d in 0..100 {
            let dir = root.join(format!("gen/d{d}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..1000 {
                std::fs::write(dir.join(format!("f{f}.txt")), "x\n").unwrap();
            }
        }
    })
    .await
    .unwrap();
    let d = daemon(&[("AMARRE_REVIEW_TIMEOUT_MS", "300")]).await;
    let id = session(&d, &r.root).await;
    let url = format!("{}/sessions/{id}/changes", d.url);
    let http = d.http().clone();
    let started = tokio::time::Instant::now();
    let review = tokio::spawn(async move {
        let resp = http.get(&url).send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        (status, body, tokio::time::Instant::now())
    });
    // The daemon answers while the review runs.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, health) = d.get("/healthz").await;
    let healthy_at = tokio::time::Instant::now();
    assert_eq!((status, &health["status"]), (200, &json!("ok")));
    let (status, body, done_at) = tokio::time::timeout(STEP, review)
        .await
        .expect("the review answers within its time limit")
        .unwrap();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body, json!({"error": "review_timeout"}));
    assert!(
        healthy_at < done_at,
        "/healthz answered only after the review ended"
    );
    assert!(done_at - started >= Duration::from_millis(300));
    // The work behind it is stopped: no git left running in the repository.
    eventually("every git of the review has ended", || {
        process_in(&r.root).is_none()
    })
    .await;
}

// ---- Confinement: one test per attack. ----

#[tokio::test]
async fn attack_a_file_symlink_pointing_out() {
    let r = Repo::new("file-link");
    r.symlink(r.secret(), "innocent.txt");
    r.symlink("../outside/secret.txt", "relative.txt");
    let d = daemon(&[]).await;
    let id = session(&d, &r.root).await;
    for p in ["innocent.txt", "relative.txt"] {
        file(&d, &id, p)
            .await
            .refused(403, "outside_cwd", &format!("file {p}"));
        diff(&d, &id, p)
            .await
            .refused(403, "outside_cwd", &format!("diff {p}"));
    }
    changes(&d, &id).await.no_secret("/changes with links out");
}

#[tokio::test]
async fn attack_a_directory_symlink_pointing_out() {
    let r = Repo::new("dir-link");
    r.symlink(r.base().join("outside"), "docs");
    r.write("real/inner.txt", "fine\n");
    r.symlink("real", "alias");
    let d = daemon(&[]).await;
    let id = session(&d, &r.root).await;
    file(&d, &id, "docs/secret.txt").await.refused(
        403,
        "outside_cwd",
        "file through a directory link",
    );
    diff(&d, &id, "docs/secret.txt").await.refused(
        403,
        "outside_cwd",
        "diff through a directory link",
    );
    // A directory link that stays inside is followed.
    assert_eq!(file(&d, &id, "alias/inner.txt").await.body, b"fine\n");
}

#[tokio::test]
async fn attack_a_symlinked_cwd() {
    let r = Repo::new("cwd-link");
    r.write("a.txt", "a\n");
    r.commit_all("first");
    r.write("a.txt", "A\n");
    r.symlink(r.secret(), "out.txt");
    let link = r.base().join("cwd-link");
    std::os::unix::fs::symlink(&r.root, &link).unwrap();
    let d = daemon(&[]).await;
    let id = session(&d, &link).await;
    // Paths inside still work through the symlinked cwd...
    let a = changes(&d, &id).await;
    assert_eq!(a.json()["cwd"], link.to_str().unwrap());
    assert!(files(&a).contains(&entry("a.txt", "modified", 1, 1, false)));
    assert_eq!(file(&d, &id, "a.txt").await.body, b"A\n");
    // ...and a link out is still refused.
    file(&d, &id, "out.txt")
        .await
        .refused(403, "outside_cwd", "link out under a symlinked cwd");
    // A cwd that is a symlink into a plain directory: its root is the
    // link's target, and a link to the target's parent is outside.
    let plain = r.base().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::write(plain.join("p.txt"), "p\n").unwrap();
    std::os::unix::fs::symlink("../outside/secret.txt", plain.join("up.txt")).unwrap();
    let plain_link = r.base().join("plain-link");
    std::os::unix::fs::symlink(&plain, &plain_link).unwrap();
    let id = session(&d, &plain_link).await;
    assert_eq!(file(&d, &id, "p.txt").await.body, b"p\n");
    file(&d, &id, "up.txt")
        .await
        .refused(403, "outside_cwd", "link out of a symlinked plain cwd");
}

#[tokio::test]
async fn attack_proc_self_through_a_symlink() {
    let r = Repo::new("proc");
    r.symlink("/proc/self/environ", "env.txt");
    r.symlink("/proc/self/root", "rootfs");
    r.symlink("/proc/self/cwd", "selfcwd");
    let d = daemon(&[("REVIEW_TEST_MARKER", SECRET)]).await;
    let id = session(&d, &r.root).await;
    for p in ["env.txt", "rootfs/etc/hostname", "selfcwd/Cargo.toml"] {
        file(&d, &id, p)
            .await
            .refused(403, "outside_cwd", &format!("file {p}"));
        diff(&d, &id, p)
            .await
            .refused(403, "outside_cwd", &format!("diff {p}"));
    }
}

#[tokio::test]
async fn attack_a_fifo_is_never_opened() {
    let r = Repo::new("fifo");
    r.write("a.txt", "a\n");
    let fifo = std::ffi::CString::new(r.root.join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    // A time limit longer than the test's step: opening the FIFO for
    // reading would block, and the test would time out instead of seeing
    // an answer.
    let d = daemon(&[("AMARRE_REVIEW_TIMEOUT_MS", "60000")]).await;
    let id = session(&d, &r.root).await;
    file(&d, &id, "pipe")
        .await
        .refused(403, "not_a_regular_file", "file of a FIFO");
    diff(&d, &id, "pipe")
        .await
        .refused(403, "not_a_regular_file", "diff of a FIFO");
    // Listing the tree does not open it either.
    assert_eq!(
        files(&changes(&d, &id).await),
        vec![entry("a.txt", "untracked", 1, 0, false)]
    );
}

#[tokio::test]
async fn attack_device_files_and_sockets() {
    let r = Repo::new("device");
    r.symlink("/dev/zero", "zero");
    r.symlink("/dev/urandom", "random");
    let _sock = std::os::unix::net::UnixListener::bind(r.root.join("sock")).unwrap();
    let d = daemon(&[]).await;
    let id = session(&d, &r.root).await;
    for p in ["zero", "random"] {
        let a = file(&d, &id, p).await;
        a.refused(403, "outside_cwd", &format!("file {p}"));
        assert!(
            !a.body.contains(&0) && a.body.len() < 100,
            "{p} leaked bytes"
        );
        diff(&d, &id, p)
            .await
            .refused(403, "outside_cwd", &format!("diff {p}"));
    }
    file(&d, &id, "sock")
        .await
        .refused(403, "not_a_regular_file", "a socket");
    file(&d, &id, ".")
        .await
        .refused(400, "invalid_path", "the root itself");
    r.write("dir/x.txt", "x");
    file(&d, &id, "dir")
        .await
        .refused(403, "not_a_regular_file", "a directory");
}

#[tokio::test]
async fn attack_a_file_swapped_for_a_symlink_between_check_and_read() {
    let r = Repo::new("swap");
    let safe = "safe content\n";
    r.write("target.txt", safe);
    let d = daemon(&[]).await;
    let id = session(&d, &r.root).await;
    // A thread swaps target.txt between a regular file and a symlink to
    // the secret as fast as it can, while requests are made.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (root, secret, stop) = (r.root.clone(), r.secret(), stop.clone());
        std::thread::spawn(move || {
            let path = root.join("target.txt");
            let (tmp_file, tmp_link) = (root.join(".tmp-file"), root.join(".tmp-link"));
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::write(&tmp_file, safe);
                let _ = std::fs::rename(&tmp_file, &path);
                let _ = std::os::unix::fs::symlink(&secret, &tmp_link);
                let _ = std::fs::rename(&tmp_link, &path);
                swaps += 1;
            }
            swaps
        })
    };
    let (mut served, mut refused) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        for a in [
            file(&d, &id, "target.txt").await,
            diff(&d, &id, "target.txt").await,
        ] {
            a.no_secret("a swapped file");
            match a.status {
                200 => {
                    served += 1;
                    assert!(a.text().contains("safe content"), "{}", a.text());
                }
                403 | 404 => refused += 1,
                other => panic!("unexpected {other}: {}", a.text()),
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 100, "the file was swapped only {swaps} times");
    assert!(
        served + refused > 20,
        "too few requests: {served} + {refused}"
    );
}

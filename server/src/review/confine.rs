//! Path confinement for the review routes (PROTOCOL.md section 12.4): a
//! client's path is checked as text, resolved with symlinks followed, and
//! opened once, beneath the allowed root, without following any symlink on
//! the way; what was opened is then checked (`fstat`, `fstatfs`) before a
//! byte is read.
//!
//! Everything here blocks (file system calls): callers run it on the
//! blocking pool. Nothing here writes, and nothing here opens a file for
//! reading unless `fstat` on an `O_PATH` descriptor said it is a regular
//! file, so a FIFO or a device is never opened (opening a FIFO blocks;
//! opening a device may have effects).

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use super::ReviewError;

/// The longest path accepted (Linux `PATH_MAX`).
const MAX_PATH_BYTES: usize = 4096;

/// Checks a client's path as text: not empty, relative, no `..` segment, no
/// NUL. Returns it normalised (`.` and empty segments dropped), joined with
/// `/`.
pub fn check_path(path: &str) -> Result<String, ReviewError> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES || path.starts_with('/') {
        return Err(ReviewError::InvalidPath);
    }
    if path.contains('\0') {
        return Err(ReviewError::InvalidPath);
    }
    let mut parts = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => continue,
            ".." => return Err(ReviewError::InvalidPath),
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return Err(ReviewError::InvalidPath);
    }
    Ok(parts.join("/"))
}

/// Whether a checked path has a `.git` segment (the repository's own
/// files, or a nested repository's). Compared without case, for
/// case-insensitive file systems.
pub fn in_git_dir(path: &str) -> bool {
    path.split('/').any(|s| s.eq_ignore_ascii_case(".git"))
}

/// A file opened beneath the root with `O_PATH` (not opened for reading).
pub struct Opened {
    fd: OwnedFd,
    /// Where it really is, relative to the root, joined with `/` (empty
    /// for the root itself).
    pub resolved: String,
    stat: libc::stat,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("resolved", &self.resolved)
            .field("mode", &self.stat.st_mode)
            .finish()
    }
}

impl Opened {
    /// Whether it is a regular file.
    pub fn is_regular(&self) -> bool {
        self.stat.st_mode & libc::S_IFMT == libc::S_IFREG
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.stat.st_size.max(0) as u64
    }

    /// Whether any execute bit is set.
    pub fn executable(&self) -> bool {
        self.stat.st_mode & 0o111 != 0
    }
}

fn errno_error(what: &str, e: std::io::Error) -> ReviewError {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => ReviewError::NoSuchFile,
        // A component became a symlink after the path was resolved: refuse
        // rather than follow it.
        Some(libc::ELOOP) => ReviewError::OutsideCwd,
        Some(libc::EACCES) | Some(libc::EPERM) => ReviewError::NotARegularFile,
        _ => ReviewError::Failed(format!("{what}: {e}")),
    }
}

fn c_name(name: &std::ffi::OsStr) -> Result<CString, ReviewError> {
    CString::new(name.as_bytes()).map_err(|_| ReviewError::InvalidPath)
}

fn open_at(dir: Option<&OwnedFd>, name: &CString, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let dirfd = dir.map(|d| d.as_raw_fd()).unwrap_or(libc::AT_FDCWD);
    // SAFETY: openat(2) with a NUL-terminated name; the result is checked
    // and owned at once.
    let fd = unsafe { libc::openat(dirfd, name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: fstat(2) fills a zeroed stat buffer of the right type.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// Kernel pseudo file systems whose "regular files" are views of processes
/// or of the kernel (`/proc/self/environ`, `/sys/...`): never served, even
/// when the allowed root contains them (a daemon started in `/`).
/// Values from linux/magic.h.
const PSEUDO_FS: &[i64] = &[
    0x9fa0,      // PROC_SUPER_MAGIC
    0x6265_6572, // SYSFS_MAGIC
    0x6462_6720, // DEBUGFS_MAGIC
    0x7472_6163, // TRACEFS_MAGIC
    0x7363_6673, // SECURITYFS_MAGIC
    0x0027_e0eb, // CGROUP_SUPER_MAGIC
    0x6367_7270, // CGROUP2_SUPER_MAGIC
    0xcafe_4a11, // BPF_FS_MAGIC
    0xde5e_81e4, // EFIVARFS_MAGIC
    0x6265_6570, // CONFIGFS_MAGIC
    0x6165_676c, // PSTOREFS_MAGIC
    0x1cd1,      // DEVPTS_SUPER_MAGIC
];

fn on_pseudo_fs(fd: &OwnedFd) -> std::io::Result<bool> {
    // SAFETY: fstatfs(2) fills a zeroed statfs buffer of the right type.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    let kind = st.f_type as i64;
    Ok(PSEUDO_FS.contains(&kind))
}

/// Resolves `path` (already checked by [`check_path`]) beneath `root` (a
/// canonical directory) and opens what it names with `O_PATH`.
///
/// The path is first resolved with every symlink followed; a result outside
/// the root is refused. Then the resolved path is opened again one component
/// at a time from a descriptor of the root, with `O_NOFOLLOW` on each: a
/// component swapped for a symlink in between is refused, never followed.
pub fn open_beneath(root: &Path, path: &str) -> Result<Opened, ReviewError> {
    let full = root.join(path);
    let real = std::fs::canonicalize(&full).map_err(|e| errno_error("resolving the path", e))?;
    let rel = real
        .strip_prefix(root)
        .map_err(|_| ReviewError::OutsideCwd)?;
    walk(root, rel)
}

/// Opens `rel` (with no symlink and no `..` in it) beneath `root` without
/// following any symlink, then checks what was opened.
pub(crate) fn walk(root: &Path, rel: &Path) -> Result<Opened, ReviewError> {
    let root_name = c_name(root.as_os_str())?;
    let mut fd = open_at(None, &root_name, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| errno_error("opening the root", e))?;
    let parts: Vec<&std::ffi::OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(ReviewError::OutsideCwd),
        })
        .collect::<Result<_, _>>()?;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let flags = if last {
            libc::O_PATH | libc::O_NOFOLLOW
        } else {
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY
        };
        fd = open_at(Some(&fd), &c_name(part)?, flags).map_err(|e| {
            if !last && e.raw_os_error() == Some(libc::ENOTDIR) {
                // A directory became a symlink (or a file) since the path
                // was resolved.
                ReviewError::OutsideCwd
            } else {
                errno_error("opening the path", e)
            }
        })?;
    }
    let stat = fstat(&fd).map_err(|e| ReviewError::Failed(format!("fstat: {e}")))?;
    if stat.st_mode & libc::S_IFMT == libc::S_IFLNK {
        // The last component became a symlink since it was resolved.
        return Err(ReviewError::OutsideCwd);
    }
    if on_pseudo_fs(&fd).map_err(|e| ReviewError::Failed(format!("fstatfs: {e}")))? {
        return Err(ReviewError::OutsideCwd);
    }
    let resolved = parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    Ok(Opened { fd, resolved, stat })
}

/// Reads an opened regular file, at most `max_bytes` of it: the `O_PATH`
/// descriptor is reopened for reading through `/proc/self/fd`, which opens
/// that very inode (not whatever the path names now). A file that grew past
/// the limit since it was checked answers `TooLarge` too.
pub fn read_opened(opened: &Opened, max_bytes: usize) -> Result<Vec<u8>, ReviewError> {
    if !opened.is_regular() {
        return Err(ReviewError::NotARegularFile);
    }
    if opened.size() > max_bytes as u64 {
        return Err(ReviewError::TooLarge(max_bytes));
    }
    let file = reopen(opened)?;
    let mut bytes = Vec::with_capacity(opened.size() as usize);
    file.take(max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ReviewError::Failed(format!("reading the file: {e}")))?;
    if bytes.len() > max_bytes {
        return Err(ReviewError::TooLarge(max_bytes));
    }
    Ok(bytes)
}

/// Opens the inode behind an `O_PATH` descriptor for reading.
pub fn reopen(opened: &Opened) -> Result<std::fs::File, ReviewError> {
    let magic = CString::new(format!("/proc/self/fd/{}", opened.fd.as_raw_fd()))
        .map_err(|_| ReviewError::Failed("descriptor path".into()))?;
    let fd = open_at(
        None,
        &magic,
        libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK,
    )
    .map_err(|e| ReviewError::Failed(format!("reopening the file: {e}")))?;
    let st = fstat(&fd).map_err(|e| ReviewError::Failed(format!("fstat: {e}")))?;
    if st.st_dev != opened.stat.st_dev || st.st_ino != opened.stat.st_ino {
        return Err(ReviewError::Failed(
            "the reopened file is another file".into(),
        ));
    }
    Ok(std::fs::File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("amarre-confine-{}-{tag}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Tmp(std::fs::canonicalize(&dir).unwrap())
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A root `r/` holding `a.txt`, and a secret beside it (outside).
    fn setup(tag: &str) -> (Tmp, PathBuf) {
        let t = Tmp::new(tag);
        let root = t.0.join("r");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("a.txt"), "inside\n").unwrap();
        std::fs::write(root.join("d/b.txt"), "deeper\n").unwrap();
        std::fs::create_dir_all(t.0.join("out")).unwrap();
        std::fs::write(t.0.join("out/secret"), "SECRET").unwrap();
        (t, root)
    }

    fn read(root: &Path, p: &str) -> Result<Vec<u8>, ReviewError> {
        let p = check_path(p)?;
        read_opened(&open_beneath(root, &p)?, 1 << 20)
    }

    #[test]
    fn paths_are_checked_as_text() {
        for bad in [
            "",
            "/",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a/..",
            "a\0b",
            ".",
            "./",
        ] {
            assert_eq!(check_path(bad), Err(ReviewError::InvalidPath), "{bad:?}");
        }
        assert_eq!(check_path("a/./b//c").unwrap(), "a/b/c");
        assert_eq!(check_path("a..b/c..").unwrap(), "a..b/c..");
        assert_eq!(check_path(&"a".repeat(5000)), Err(ReviewError::InvalidPath));
        assert!(in_git_dir(".git/config"));
        assert!(in_git_dir("sub/.GIT/HEAD"));
        assert!(!in_git_dir(".gitignore"));
        assert!(!in_git_dir("x.git/y"));
    }

    #[test]
    fn files_inside_are_read_and_symlinks_inside_followed() {
        let (_t, root) = setup("inside");
        assert_eq!(read(&root, "a.txt").unwrap(), b"inside\n");
        std::os::unix::fs::symlink("d/b.txt", root.join("link")).unwrap();
        let opened = open_beneath(&root, "link").unwrap();
        assert_eq!(opened.resolved, "d/b.txt");
        assert_eq!(read_opened(&opened, 100).unwrap(), b"deeper\n");
        // An absolute symlink that lands inside is followed too.
        std::os::unix::fs::symlink(root.join("a.txt"), root.join("abs")).unwrap();
        assert_eq!(read(&root, "abs").unwrap(), b"inside\n");
    }

    #[test]
    fn symlinks_out_are_refused() {
        let (t, root) = setup("out");
        std::os::unix::fs::symlink(t.0.join("out/secret"), root.join("f")).unwrap();
        std::os::unix::fs::symlink("../out", root.join("dir")).unwrap();
        std::os::unix::fs::symlink("/proc/self/environ", root.join("env")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("zero")).unwrap();
        for p in ["f", "dir/secret", "env", "zero"] {
            assert_eq!(read(&root, p), Err(ReviewError::OutsideCwd), "{p}");
        }
        assert_eq!(read(&root, "missing"), Err(ReviewError::NoSuchFile));
        assert_eq!(read(&root, "a.txt/x"), Err(ReviewError::NoSuchFile));
    }

    #[test]
    fn proc_is_refused_even_inside_the_root() {
        // A daemon whose root is `/` must still not serve /proc.
        assert_eq!(
            read(Path::new("/"), "proc/self/environ"),
            Err(ReviewError::OutsideCwd)
        );
    }

    #[test]
    fn fifos_sockets_and_directories_are_not_regular_files() {
        let (_t, root) = setup("special");
        let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        // Opening the FIFO for reading would block this test forever.
        for p in ["fifo", "sock", "d"] {
            assert_eq!(read(&root, p), Err(ReviewError::NotARegularFile), "{p}");
        }
    }

    #[test]
    fn sizes_over_the_limit_are_refused_before_reading() {
        let (_t, root) = setup("size");
        let f = std::fs::File::create(root.join("huge")).unwrap();
        // Sparse: reading it whole would take minutes.
        f.set_len(1 << 40).unwrap();
        let opened = open_beneath(&root, "huge").unwrap();
        assert_eq!(read_opened(&opened, 1000), Err(ReviewError::TooLarge(1000)));
        assert_eq!(
            read_opened(&open_beneath(&root, "a.txt").unwrap(), 3),
            Err(ReviewError::TooLarge(3))
        );
    }

    #[test]
    fn a_component_swapped_for_a_symlink_after_resolution_is_refused() {
        let (t, root) = setup("swap-dir");
        // Resolved as d/b.txt; then d becomes a symlink to a directory
        // outside holding a b.txt of its own.
        std::fs::create_dir_all(t.0.join("evil")).unwrap();
        std::fs::write(t.0.join("evil/b.txt"), "SECRET").unwrap();
        std::fs::rename(root.join("d"), t.0.join("d-away")).unwrap();
        std::os::unix::fs::symlink(t.0.join("evil"), root.join("d")).unwrap();
        assert_eq!(
            walk(&root, Path::new("d/b.txt")).unwrap_err(),
            ReviewError::OutsideCwd
        );
        // The last component swapped for a symlink.
        std::fs::remove_file(root.join("a.txt")).unwrap();
        std::os::unix::fs::symlink(t.0.join("out/secret"), root.join("a.txt")).unwrap();
        assert_eq!(
            walk(&root, Path::new("a.txt")).unwrap_err(),
            ReviewError::OutsideCwd
        );
    }

    #[test]
    fn what_was_opened_is_what_is_read() {
        let (t, root) = setup("swap-file");
        let opened = open_beneath(&root, "a.txt").unwrap();
        // Swapped after the open: the read still gets the checked inode.
        std::fs::rename(root.join("a.txt"), t.0.join("moved")).unwrap();
        std::os::unix::fs::symlink(t.0.join("out/secret"), root.join("a.txt")).unwrap();
        assert_eq!(read_opened(&opened, 100).unwrap(), b"inside\n");
    }
}

//! One session's record log: the numbered records of its stream, appended
//! in batches, in segment files that rotate so the log stays within about
//! one and a half times the replay limits (PROTOCOL.md 12.3).
//!
//! A segment is `log/<first seq, 20 digits>.rec`; each record in it is
//! `<seq> <length>\n<bytes>\n`, so a record may hold any bytes (a newline
//! too) and a cut-off tail is recognised. The session task writes a batch
//! with one `write` before the batch reaches any client; the daemon's
//! syncer thread ([`Syncer`]) syncs written segments at least once a
//! second; shutdown syncs at once.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often written segments are synced to disk.
pub(crate) const SYNC_EVERY: Duration = Duration::from_secs(1);

/// A segment written since its last sync.
struct Dirty {
    file: Arc<File>,
    flag: Arc<AtomicBool>,
}

/// Syncs written segments once a second on a thread of its own, so the
/// relay never waits for the disk.
#[derive(Default)]
pub(crate) struct Syncer {
    queue: Mutex<Vec<Dirty>>,
}

impl Syncer {
    /// Starts the sync thread; it ends with the process.
    pub(crate) fn start() -> std::io::Result<Arc<Syncer>> {
        let syncer = Arc::new(Syncer::default());
        let weak = Arc::downgrade(&syncer);
        std::thread::Builder::new()
            .name("amarre-state-sync".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(SYNC_EVERY);
                    let Some(s) = weak.upgrade() else { return };
                    s.sync_now();
                }
            })?;
        Ok(syncer)
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Dirty>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn written(&self, file: &Arc<File>, flag: &Arc<AtomicBool>) {
        if !flag.swap(true, Ordering::AcqRel) {
            self.queue().push(Dirty {
                file: file.clone(),
                flag: flag.clone(),
            });
        }
    }

    /// Syncs every segment written since the last sync.
    pub(crate) fn sync_now(&self) {
        let dirty = std::mem::take(&mut *self.queue());
        for d in dirty {
            // Cleared first: a write after this point queues it again.
            d.flag.store(false, Ordering::Release);
            if let Err(e) = d.file.sync_data() {
                tracing::debug!(error = %e, "syncing a record log failed");
            }
        }
    }
}

/// A record read back from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Logged {
    pub(crate) seq: u64,
    pub(crate) bytes: Vec<u8>,
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.rec")
}

fn segment_first(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".rec")?.parse().ok()
}

/// The segments of a log directory, oldest first.
fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let path = e?.path();
                if let Some(first) = segment_first(&path) {
                    out.push((first, path));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort_by_key(|(first, _)| *first);
    Ok(out)
}

/// Parses one segment's bytes: the records it holds and the length of the
/// well-formed prefix (shorter than the input when the tail is cut off or
/// damaged).
pub(crate) fn parse_segment(data: &[u8]) -> (Vec<Logged>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let Some(nl) = data[at..].iter().position(|b| *b == b'\n') else {
            break;
        };
        let header = &data[at..at + nl];
        let parsed = std::str::from_utf8(header).ok().and_then(|h| {
            let (seq, len) = h.split_once(' ')?;
            Some((seq.parse::<u64>().ok()?, len.parse::<usize>().ok()?))
        });
        let Some((seq, len)) = parsed else { break };
        let start = at + nl + 1;
        let Some(end) = start.checked_add(len) else {
            break;
        };
        if end >= data.len() || data[end] != b'\n' {
            break;
        }
        if out.last().is_some_and(|l: &Logged| l.seq >= seq) {
            break;
        }
        out.push(Logged {
            seq,
            bytes: data[start..end].to_vec(),
        });
        at = end + 1;
    }
    (out, at)
}

/// What reading a log found.
#[derive(Debug, Default)]
pub(crate) struct ReadLog {
    pub(crate) records: Vec<Logged>,
    /// A segment whose tail was cut off or damaged (it was truncated to its
    /// last whole record): `(path, bytes kept, bytes it had)`.
    pub(crate) truncated: Option<(PathBuf, usize, usize)>,
}

/// Reads every segment of `dir`, oldest first. A segment whose tail is cut
/// off (a write interrupted by a crash) is truncated to its last whole
/// record, and nothing after it is read (numbers must follow on).
pub(crate) fn read(dir: &Path) -> std::io::Result<ReadLog> {
    let mut out = ReadLog::default();
    let all = segments(dir)?;
    for (i, (_, path)) in all.iter().enumerate() {
        // Only regular files are read (a device would never end).
        if !std::fs::symlink_metadata(path)?.is_file() {
            continue;
        }
        let data = std::fs::read(path)?;
        let (records, good) = parse_segment(&data);
        out.records.extend(records);
        if good < data.len() {
            let f = std::fs::OpenOptions::new().write(true).open(path)?;
            f.set_len(good as u64)?;
            out.truncated = Some((path.clone(), good, data.len()));
            // Later segments would leave a hole in the numbers.
            for (_, later) in &all[i + 1..] {
                let _ = std::fs::rename(later, later.with_extension("rec.corrupt"));
            }
            break;
        }
    }
    Ok(out)
}

/// The open log of one session, written by its session task.
pub(crate) struct RecordLog {
    dir: PathBuf,
    /// The segment being written.
    file: Arc<File>,
    dirty: Arc<AtomicBool>,
    /// Older segments still on disk: `(first seq, path)`, oldest first.
    older: Vec<(u64, PathBuf)>,
    current_first: u64,
    current_records: usize,
    current_bytes: usize,
    /// Rotation thresholds: half the replay limits.
    rotate_records: usize,
    rotate_bytes: usize,
    /// Encoded records not yet written.
    pending: Vec<u8>,
    syncer: Arc<Syncer>,
}

fn open_segment(dir: &Path, first: u64) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(dir.join(segment_name(first)))
}

impl RecordLog {
    /// Opens `dir` for appending records numbered from `next_seq` on, in a
    /// fresh segment; segments already there stay (they hold the records
    /// read back at start).
    pub(crate) fn open(
        dir: &Path,
        next_seq: u64,
        replay_records: usize,
        replay_bytes: usize,
        syncer: Arc<Syncer>,
    ) -> std::io::Result<RecordLog> {
        super::create_private_dir(dir)?;
        let mut older = segments(dir)?;
        older.retain(|(first, _)| *first < next_seq);
        let file = open_segment(dir, next_seq)?;
        Ok(RecordLog {
            dir: dir.to_owned(),
            file: Arc::new(file),
            dirty: Arc::new(AtomicBool::new(false)),
            older,
            current_first: next_seq,
            current_records: 0,
            current_bytes: 0,
            rotate_records: (replay_records / 2).max(1),
            rotate_bytes: (replay_bytes / 2).max(1),
            pending: Vec::new(),
            syncer,
        })
    }

    /// Queues one numbered record; written by [`RecordLog::write`].
    pub(crate) fn push(&mut self, seq: u64, bytes: &[u8]) {
        if self.current_records > 0
            && (self.current_records >= self.rotate_records
                || self.current_bytes >= self.rotate_bytes)
            && self.pending.is_empty()
        {
            // Rotation happens between batches only: a failure here leaves
            // the current segment in use.
            if let Ok(file) = open_segment(&self.dir, seq) {
                let old = std::mem::replace(&mut self.file, Arc::new(file));
                self.syncer.written(&old, &Arc::new(AtomicBool::new(false)));
                self.dirty = Arc::new(AtomicBool::new(false));
                self.older.push((
                    self.current_first,
                    self.dir.join(segment_name(self.current_first)),
                ));
                self.current_first = seq;
                self.current_records = 0;
                self.current_bytes = 0;
            }
        }
        let _ = writeln!(self.pending, "{seq} {}", bytes.len());
        self.pending.extend_from_slice(bytes);
        self.pending.push(b'\n');
        self.current_records += 1;
        self.current_bytes += bytes.len();
    }

    /// The log's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether records are queued.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes the queued records (one `write`, repeated only when the
    /// kernel takes part of it) and removes segments whose records all
    /// precede `oldest_kept`, the oldest record still in the replay buffer.
    pub(crate) fn write(&mut self, oldest_kept: u64) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = (&*self.file).write_all(&self.pending);
        self.pending.clear();
        result?;
        self.syncer.written(&self.file, &self.dirty);
        while !self.older.is_empty() {
            let next_first = self
                .older
                .get(1)
                .map(|(f, _)| *f)
                .unwrap_or(self.current_first);
            if next_first > oldest_kept {
                break;
            }
            let (_, path) = self.older.remove(0);
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// Syncs the segment being written now (shutdown).
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("amarre-log-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn records_come_back_in_order_and_a_cut_tail_is_dropped() {
        let dir = temp();
        let syncer = Arc::new(Syncer::default());
        let mut log = RecordLog::open(&dir, 1, 100, 1 << 20, syncer.clone()).unwrap();
        log.push(1, b"{\"a\":1}");
        log.push(2, b"{\"b\":\"x\ny\"}");
        log.write(1).unwrap();
        log.push(3, b"{\"c\":3}");
        log.write(1).unwrap();
        syncer.sync_now();
        let back = read(&dir).unwrap();
        assert_eq!(
            back.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(back.records[1].bytes, b"{\"b\":\"x\ny\"}");
        assert!(back.truncated.is_none());
        // Cut the last record in half.
        let seg = dir.join(segment_name(1));
        let len = std::fs::metadata(&seg).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 4)
            .unwrap();
        let back = read(&dir).unwrap();
        assert_eq!(back.records.len(), 2);
        assert!(back.truncated.is_some());
        // The file was repaired: a second read finds no damage.
        let again = read(&dir).unwrap();
        assert_eq!(again.records.len(), 2);
        assert!(again.truncated.is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn segments_rotate_and_old_ones_go_once_out_of_the_buffer() {
        let dir = temp();
        let syncer = Arc::new(Syncer::default());
        // Replay limit 4 records: segments of 2.
        let mut log = RecordLog::open(&dir, 1, 4, 1 << 20, syncer).unwrap();
        for seq in 1..=20u64 {
            log.push(seq, format!("{{\"n\":{seq}}}").as_bytes());
            log.write(seq.saturating_sub(3).max(1)).unwrap();
        }
        let files = segments(&dir).unwrap();
        assert!(files.len() <= 3, "segments kept: {files:?}");
        let back = read(&dir).unwrap();
        let seqs: Vec<u64> = back.records.iter().map(|r| r.seq).collect();
        assert!(seqs.ends_with(&[17, 18, 19, 20]), "{seqs:?}");
        assert!(seqs.len() <= 6, "{seqs:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn garbage_is_not_a_record() {
        let (recs, good) = parse_segment(b"1 2\n{}\nnonsense");
        assert_eq!(recs.len(), 1);
        assert_eq!(good, 7);
        let (recs, good) = parse_segment(b"1 99999999999999999999999\n");
        assert!(recs.is_empty() && good == 0);
    }
}

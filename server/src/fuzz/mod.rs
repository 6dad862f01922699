//! Fuzz targets, run under `cargo test` on stable Rust (docs/fuzzing.md).
//!
//! Each target is a function of a byte string that must hold its property
//! (never panic, and whatever the target checks) for every input. A run of
//! a target first replays its corpus, `tests/fuzz/corpus/<target>/` (every
//! file an input), then feeds it mutated corpus entries and random inputs
//! until its time budget is spent: `AMARRE_FUZZ_MS` milliseconds (default
//! 6000) per target, with the seed `AMARRE_FUZZ_SEED` (default: from the
//! clock; printed, so a failing run can be repeated). Inputs are decoded
//! with `arbitrary` into structured values (JSON-like records, frames,
//! settings), so that most of them reach past the first check.
//!
//! A failing input is written to `$TMPDIR/amarre-fuzz/<target>/` and named
//! in the failure; once the bug is fixed, copy it into the corpus so that
//! every run replays it.

mod config;
mod framer;
mod record;
mod translators;
mod ws_frame;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The corpus of `target`.
fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fuzz/corpus")).join(target)
}

/// Every corpus entry of `target`, in name order.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut entries: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} cannot be read: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    entries.sort();
    assert!(
        !entries.is_empty(),
        "the corpus {} is empty: keep at least one input there",
        dir.display()
    );
    entries
}

/// splitmix64: a small, well-known generator; the seed is all there is to
/// a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One mutation of `input`: flipped, replaced, inserted, deleted or
/// duplicated bytes, or a part of another entry spliced in.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    const INTERESTING: &[u8] = b"\x00\x01\x7f\x80\xff\n\r{}[]\":,\\0-9e";
    let rounds = 1 + rng.below(8);
    for _ in 0..rounds {
        let len = input.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                input.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(256));
                let part = input[i..i + n].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, part);
            }
            5 if !other.is_empty() => {
                let i = rng.below(other.len());
                let n = 1 + rng.below((other.len() - i).min(512));
                let at = rng.below(len + 1);
                input.splice(at..at, other[i..i + n].iter().copied());
            }
            _ => {
                let n = rng.below(len + 1);
                input.truncate(n);
            }
        }
    }
}

fn budget() -> Duration {
    let ms = std::env::var("AMARRE_FUZZ_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(6000);
    Duration::from_millis(ms)
}

fn seed() -> u64 {
    std::env::var("AMARRE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// Saves a failing input and names it.
fn save_failure(target: &str, input: &[u8]) -> String {
    let dir = std::env::temp_dir().join("amarre-fuzz").join(target);
    let name = format!("{:016x}", {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        input.hash(&mut h);
        h.finish()
    });
    let path = dir.join(name);
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input)) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("(not saved: {e}) {:?}", String::from_utf8_lossy(input)),
    }
}

/// Runs `check` on the corpus of `target`, then on mutated and random
/// inputs until the budget is spent. Panics naming the first failing
/// input.
fn run(target: &str, mut check: impl FnMut(&[u8])) {
    let entries = corpus(target);
    for (name, bytes) in &entries {
        if catch_unwind(AssertUnwindSafe(|| check(bytes))).is_err() {
            panic!("fuzz target {target}: corpus entry {name} fails (see the panic above)");
        }
    }
    let seed = seed();
    let mut rng = Rng(seed);
    let deadline = Instant::now() + budget();
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let input = if rng.below(8) == 0 {
            let n = rng.below(4096);
            (0..n).map(|_| rng.next() as u8).collect()
        } else {
            let mut input = entries[rng.below(entries.len())].1.clone();
            let other = &entries[rng.below(entries.len())].1;
            mutate(&mut rng, &mut input, other);
            input
        };
        runs += 1;
        if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
            let saved = save_failure(target, &input);
            panic!(
                "fuzz target {target} failed on run {runs} (AMARRE_FUZZ_SEED={seed}); the input is at {saved}"
            );
        }
    }
    eprintln!(
        "fuzz target {target}: {} corpus entries and {runs} generated inputs passed (AMARRE_FUZZ_SEED={seed})",
        entries.len()
    );
}

#[test]
fn the_mutator_is_deterministic_for_a_seed() {
    let go = |seed| {
        let mut rng = Rng(seed);
        let mut input = b"{\"type\":\"x\"}".to_vec();
        for _ in 0..100 {
            mutate(&mut rng, &mut input, b"[1,2,3]");
        }
        input
    };
    assert_eq!(go(7), go(7));
    assert_ne!(go(7), go(8));
}

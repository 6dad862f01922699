//! The agent-stdout line framer ([`LineSplitter`]) against a model: the
//! same lines, whatever the chunking.

use bytes::Bytes;

use crate::session::framing::{LineSplitter, Split, split_frame};

/// What the framer must produce: lines split on `\n`, a trailing `\r`
/// removed, empty ones skipped, longer than `max` dropped; the partial
/// last line included (end of stream).
fn model(stream: &[u8], max: usize) -> (Vec<Bytes>, usize) {
    let mut lines = Vec::new();
    let mut dropped = 0;
    for line in stream.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line.len() > max {
            dropped += 1;
        } else {
            lines.push(Bytes::copy_from_slice(line));
        }
    }
    (lines, dropped)
}

/// The input: the line limit (first byte, 1 to 64), how the stream is
/// cut into chunks (second byte), then the stream.
fn check(data: &[u8]) {
    let (max, cut, stream) = match data {
        [m, c, rest @ ..] => (1 + *m as usize % 64, *c, rest),
        _ => return,
    };
    let mut splitter = LineSplitter::new(max);
    let mut out = Split::default();
    let mut rest = stream;
    let mut state = u32::from(cut);
    while !rest.is_empty() {
        // Chunk sizes from 1 to 128 bytes, a sequence of its own per `cut`.
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (1 + (state >> 16) as usize % 128).min(rest.len());
        splitter.buffer().extend_from_slice(&rest[..n]);
        splitter.drain(&mut out);
        rest = &rest[n..];
    }
    splitter.finish(&mut out);
    let (lines, dropped) = model(stream, max);
    assert_eq!(
        out.lines,
        lines,
        "max_line {max}, {:?}",
        String::from_utf8_lossy(stream)
    );
    assert_eq!(out.dropped.len(), dropped, "dropped lines, max_line {max}");
    assert!(out.lines.iter().all(|l| l.len() <= max));
}

/// A client frame split into records: the same model, without a limit.
fn check_frame(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let got: Vec<&str> = split_frame(&text).collect();
    let (want, _) = model(text.as_bytes(), usize::MAX);
    assert_eq!(
        got.iter().map(|l| l.as_bytes()).collect::<Vec<_>>(),
        want.iter().map(|b| &b[..]).collect::<Vec<_>>()
    );
}

#[test]
fn fuzz_line_framer() {
    super::run("framer", |data| {
        check(data);
        check_frame(data);
    });
}

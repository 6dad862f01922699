//! Byte-level line framing of agent stdout. Lines are split on `\n` in the
//! byte stream (a `\n` byte never occurs inside a multi-byte UTF-8
//! character, so no character is ever cut), a trailing `\r` is removed,
//! empty lines are skipped, and a line longer than the limit is dropped
//! without being buffered: the splitter discards up to the next newline.

use bytes::{Bytes, BytesMut};
use memchr::memchr;

/// What the splitter produced for one chunk of input.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub lines: Vec<Bytes>,
    /// Sizes of lines dropped for exceeding the limit (for logging).
    pub dropped: Vec<usize>,
}

/// Splits a byte stream into lines of at most `max_line` bytes.
#[derive(Debug)]
pub struct LineSplitter {
    buf: BytesMut,
    max_line: usize,
    /// Bytes skipped so far of an oversized line, while discarding.
    discarding: Option<usize>,
    /// How far `buf` has been scanned for a newline.
    scanned: usize,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            buf: BytesMut::with_capacity(64 * 1024),
            max_line,
            discarding: None,
            scanned: 0,
        }
    }

    /// The buffer to read into (reserve before reading).
    pub fn buffer(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        &mut self.buf
    }

    /// Takes every complete line now in the buffer.
    pub fn drain(&mut self, out: &mut Split) {
        loop {
            let Some(pos) = memchr(b'\n', &self.buf[self.scanned..]).map(|p| p + self.scanned)
            else {
                self.scanned = self.buf.len();
                if let Some(skipped) = self.discarding.as_mut() {
                    *skipped += self.buf.len();
                    self.buf.clear();
                    self.scanned = 0;
                } else if self.buf.len() > self.max_line
                    // A line of exactly the limit whose `\r\n` is cut
                    // between the two bytes still fits.
                    && !(self.buf.len() == self.max_line + 1 && self.buf.last() == Some(&b'\r'))
                {
                    self.discarding = Some(self.buf.len());
                    self.buf.clear();
                    self.scanned = 0;
                }
                return;
            };
            let mut line = self.buf.split_to(pos + 1);
            self.scanned = 0;
            if let Some(skipped) = self.discarding.take() {
                out.dropped.push(skipped + line.len() - 1);
                continue;
            }
            line.truncate(pos);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.is_empty() {
                continue;
            }
            if line.len() > self.max_line {
                out.dropped.push(line.len());
                continue;
            }
            out.lines.push(line.freeze());
        }
    }

    /// The partial last line at end of stream, if any (delivered at exit).
    pub fn finish(&mut self, out: &mut Split) {
        self.drain(out);
        if let Some(skipped) = self.discarding.take() {
            out.dropped.push(skipped + self.buf.len());
            self.buf.clear();
            return;
        }
        let mut rest = self.buf.split();
        self.scanned = 0;
        if rest.last() == Some(&b'\r') {
            rest.truncate(rest.len() - 1);
        }
        if !rest.is_empty() {
            out.lines.push(rest.freeze());
        }
    }
}

/// Splits a client text frame into its non-empty lines (a trailing `\r` is
/// removed from each).
pub fn split_frame(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &mut LineSplitter, chunks: &[&[u8]]) -> Split {
        let mut out = Split::default();
        for c in chunks {
            s.buffer().extend_from_slice(c);
            s.drain(&mut out);
        }
        out
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let mut s = LineSplitter::new(1024);
        let out = feed(&mut s, &[b"{\"a\"", b":1}\n{\"b\":2}\r\n\n", b"{\"c\""]);
        assert_eq!(
            out.lines,
            vec![Bytes::from("{\"a\":1}"), Bytes::from("{\"b\":2}")]
        );
        let mut end = Split::default();
        s.finish(&mut end);
        assert_eq!(end.lines, vec![Bytes::from("{\"c\"")]);
    }

    #[test]
    fn a_multibyte_character_split_across_writes_survives() {
        let text = "{\"t\":\"héllo 🌍\"}\n".as_bytes();
        let mut s = LineSplitter::new(1024);
        // Cut inside the 4-byte emoji.
        let cut = text.len() - 4;
        let out = feed(&mut s, &[&text[..cut], &text[cut..]]);
        assert_eq!(
            std::str::from_utf8(&out.lines[0]).unwrap(),
            "{\"t\":\"héllo 🌍\"}"
        );
    }

    #[test]
    fn an_oversized_line_is_dropped_without_buffering_it() {
        let mut s = LineSplitter::new(8);
        let out = feed(&mut s, &[b"ok\n0123456789", b"0123456789", b"end\nnext\n"]);
        assert_eq!(out.lines, vec![Bytes::from("ok"), Bytes::from("next")]);
        assert_eq!(out.dropped, vec![23]);
        assert!(s.buf.capacity() < 200_000);
    }

    #[test]
    fn frames_split_on_newlines_and_skip_empty_lines() {
        let lines: Vec<_> = split_frame("{\"a\":1}\r\n\n{\"b\":2}\n").collect();
        assert_eq!(lines, vec!["{\"a\":1}", "{\"b\":2}"]);
    }
}

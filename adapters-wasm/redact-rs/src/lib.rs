//! `redact` in Rust: the twin of the JavaScript adapter in
//! `adapters-wasm/redact/redact.js`, written to behave identically (both
//! pass `adapters-wasm/redact/transcripts`). It runs the operator's command
//! and masks secrets in the agent's output before it reaches a phone: API
//! keys, tokens, private keys, and the exact values the operator lists in
//! `AMARRE_REDACT_VALUES`. Client records go to the agent untouched.
//!
//! It exists to compare the cost of the two languages
//! (docs/adapters/authoring.md) and to keep the JavaScript one honest.
//! The JavaScript one finds secrets with one regular expression; this one
//! with a hand-written scanner over bytes (no regex crate in the
//! component). Every pattern is ASCII, so bytes here and UTF-16 units there
//! give the same matches.

use amarre_adapter_sdk::*;

const MASK: &str = "[REDACTED]";
/// Operator values shorter than this (in characters) are ignored.
const MIN_VALUE_LENGTH: usize = 4;

/// A token: a prefix (kept when `keep`), then at least `min` bytes of
/// `chars`, as many as follow.
struct Token {
    prefixes: &'static [&'static str],
    chars: fn(u8) -> bool,
    min: usize,
    keep: bool,
}

fn alnum_dash_underscore(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}
fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}
fn alnum_underscore(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
fn upper_digit(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}
fn alnum_dash(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}
fn bearer(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b)
}

const TOKENS: &[Token] = &[
    Token {
        prefixes: &["sk-"],
        chars: alnum_dash_underscore,
        min: 20,
        keep: false,
    },
    Token {
        prefixes: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        chars: alnum,
        min: 30,
        keep: false,
    },
    Token {
        prefixes: &["github_pat_"],
        chars: alnum_underscore,
        min: 20,
        keep: false,
    },
    Token {
        prefixes: &["glpat-"],
        chars: alnum_dash_underscore,
        min: 20,
        keep: false,
    },
    Token {
        prefixes: &["AKIA", "ASIA"],
        chars: upper_digit,
        min: 16,
        keep: false,
    },
    Token {
        prefixes: &["xoxb-", "xoxa-", "xoxp-", "xoxr-", "xoxs-"],
        chars: alnum_dash,
        min: 10,
        keep: false,
    },
    Token {
        prefixes: &["Bearer "],
        chars: bearer,
        min: 20,
        keep: true,
    },
];
const KEY_BEGIN: &[u8] = b"-----BEGIN ";
const KEY_END: &[u8] = b"-----END ";
const KEY_TAIL: &[u8] = b"PRIVATE KEY-----";

/// Whether a token may start at `at`: the byte before it is not a letter,
/// digit or `_`, or it ends a JSON escape such as `\n` or `\t`.
fn boundary(text: &[u8], at: usize) -> bool {
    if at == 0 || !alnum_underscore(text[at - 1]) {
        return true;
    }
    at >= 2 && text[at - 2] == b'\\' && b"bfnrt".contains(&text[at - 1])
}

/// Length of a label (capitals and spaces) + "PRIVATE KEY-----" at `at`, or 0.
fn key_marker(text: &[u8], at: usize) -> usize {
    let mut i = at;
    while i < text.len() && (text[i].is_ascii_uppercase() || text[i] == b' ') {
        if text[i..].starts_with(KEY_TAIL) {
            return i + KEY_TAIL.len() - at;
        }
        i += 1;
    }
    if text[i..].starts_with(KEY_TAIL) {
        i + KEY_TAIL.len() - at
    } else {
        0
    }
}

/// End of a private key block whose BEGIN marker ends at `at`: after its
/// END marker, or where the JSON string holding it ends, or the line ends.
fn key_block_end(text: &[u8], at: usize) -> usize {
    let mut i = at;
    while i < text.len() {
        match text[i] {
            b'\\' => {
                i += 2;
                continue;
            }
            b'"' => return i,
            _ => {}
        }
        if text[i..].starts_with(KEY_END) {
            let n = key_marker(text, i + KEY_END.len());
            if n > 0 {
                return i + KEY_END.len() + n;
            }
        }
        i += 1;
    }
    text.len()
}

/// The operator's values, and the bytes any secret can start with (a
/// position starting with another byte is skipped at once).
struct Patterns {
    values: Vec<String>,
    starts: [bool; 256],
}

impl Patterns {
    fn new(values: Vec<String>) -> Patterns {
        let mut starts = [false; 256];
        let firsts = TOKENS
            .iter()
            .flat_map(|t| t.prefixes.iter().map(|p| p.as_bytes()))
            .chain(values.iter().map(|v| v.as_bytes()))
            .chain([KEY_BEGIN]);
        for first in firsts.filter_map(|p| p.first()) {
            starts[*first as usize] = true;
        }
        Patterns { values, starts }
    }
}

/// The text with every secret replaced by [`MASK`].
fn redact(line: String, patterns: &Patterns) -> String {
    let text = line.as_bytes();
    let values = &patterns.values;
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    'outer: while i < text.len() {
        if !patterns.starts[text[i] as usize] {
            i += 1;
            continue;
        }
        for v in values {
            if text[i..].starts_with(v.as_bytes()) {
                out.push_str(&line[copied..i]);
                out.push_str(MASK);
                i += v.len();
                copied = i;
                continue 'outer;
            }
        }
        if text[i..].starts_with(KEY_BEGIN) {
            let n = key_marker(text, i + KEY_BEGIN.len());
            if n > 0 {
                out.push_str(&line[copied..i]);
                out.push_str(MASK);
                i = key_block_end(text, i + KEY_BEGIN.len() + n);
                copied = i;
                continue;
            }
        }
        if boundary(text, i) {
            for rule in TOKENS {
                for prefix in rule.prefixes {
                    if !text[i..].starts_with(prefix.as_bytes()) {
                        continue;
                    }
                    let start = i + prefix.len();
                    let end = start
                        + text[start..]
                            .iter()
                            .take_while(|b| (rule.chars)(**b))
                            .count();
                    if end - start >= rule.min {
                        out.push_str(&line[copied..i]);
                        if rule.keep {
                            out.push_str(prefix);
                        }
                        out.push_str(MASK);
                        i = end;
                        copied = i;
                        continue 'outer;
                    }
                }
            }
        }
        i += 1;
    }
    if copied == 0 {
        return line;
    }
    out.push_str(&line[copied..]);
    out
}

/// `value` as it appears inside a JSON string (as JavaScript's
/// `JSON.stringify` writes it, without the quotes).
fn json_escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The operator's values, as written and as they appear inside a JSON
/// string, longest first so a value containing another wins.
fn values_from(request: &SpawnRequest) -> Vec<String> {
    let Some(list) = request.env("AMARRE_REDACT_VALUES") else {
        return Vec::new();
    };
    let mut values = Vec::new();
    for raw in list.split(',') {
        let v = raw.trim_matches([' ', '\t', '\r', '\n']);
        if v.is_empty() {
            continue;
        }
        if v.chars().count() < MIN_VALUE_LENGTH {
            log(
                LogLevel::Warn,
                &format!(
                    "AMARRE_REDACT_VALUES: ignoring a value shorter than {MIN_VALUE_LENGTH} characters"
                ),
            );
            continue;
        }
        values.push(v.to_owned());
        values.push(json_escaped(v));
    }
    values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    values.dedup();
    values
}

struct Redact;

struct Session {
    patterns: Patterns,
}

impl amarre_adapter_sdk::Session for Session {
    /// The values come from the spawn request again, so a newer version
    /// needs no state: hot reload moves live sessions at once.
    fn create(request: SpawnRequest, _saved: Option<String>) -> Result<Self, AdapterError> {
        Ok(Session {
            patterns: Patterns::new(values_from(&request)),
        })
    }

    fn from_agent(&mut self, line: String) -> Result<Vec<Emit>, AdapterError> {
        Ok(vec![Emit::ToClient(redact(line, &self.patterns))])
    }

    fn save(&self) -> Option<String> {
        Some("{}".into())
    }
}

impl Adapter for Redact {
    type Session = Session;

    fn info() -> AdapterInfo {
        AdapterInfo::new("redact", env!("CARGO_PKG_VERSION"))
            .capabilities([Capability::StateHandover])
    }

    fn spawn(request: SpawnRequest) -> Result<SpawnSpec, AdapterError> {
        let command = request.command.clone().ok_or_else(|| {
            AdapterError::Unsupported("the redact adapter needs the instance's `command`".into())
        })?;
        let mut spec = SpawnSpec::new(command).args(request.args).cwd(request.cwd);
        spec.passthrough_from_client = true;
        Ok(spec)
    }
}

export_adapter!(Redact);

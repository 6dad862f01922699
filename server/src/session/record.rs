//! What the core reads of a record: its top-level `type`, `id`, `method`
//! and `timeout`, nothing else (PROTOCOL.md section 2). Parsing the head
//! also validates the whole record as JSON in one pass; no tree is built.
//! And the one thing the core may add: `_seq`, spliced in as text.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// The fields the core looks at.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Head {
    /// Whether the record is a JSON object (only objects get a `_seq`).
    pub is_object: bool,
    pub kind: Option<String>,
    /// The `id`, as text: a string id verbatim, another value as JSON.
    pub id: Option<String>,
    pub method: Option<String>,
    pub timeout_ms: Option<f64>,
}

#[derive(Deserialize)]
struct RawHead<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<IdValue<'a>>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(default)]
    timeout: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue<'a> {
    Str(#[serde(borrow)] Cow<'a, str>),
    Num(serde_json::Number),
    Other(IgnoredAny),
}

/// Parses a record's head. `None` when the text is not JSON at all.
pub fn parse_head(text: &[u8]) -> Option<Head> {
    let first = text.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return serde_json::from_slice::<IgnoredAny>(text)
            .ok()
            .map(|_| Head::default());
    }
    // Only types the core acts on are kept as owned strings. An object
    // whose head fields are not what the core reads (a `type` that is not
    // a string, a `timeout` that is not a number, a field twice) is still
    // an object: it is relayed and numbered, and the core reads nothing
    // of it.
    let Ok(raw) = serde_json::from_slice::<RawHead>(text) else {
        return serde_json::from_slice::<IgnoredAny>(text)
            .ok()
            .map(|_| Head {
                is_object: true,
                ..Head::default()
            });
    };
    let kind = raw.kind.map(Cow::into_owned);
    let interesting = matches!(
        kind.as_deref(),
        Some("extension_ui_request" | "extension_ui_response")
    );
    Some(Head {
        is_object: true,
        id: if interesting {
            raw.id.and_then(|id| match id {
                IdValue::Str(s) => Some(s.into_owned()),
                IdValue::Num(n) => Some(n.to_string()),
                IdValue::Other(_) => None,
            })
        } else {
            None
        },
        method: if interesting {
            raw.method.map(Cow::into_owned)
        } else {
            None
        },
        timeout_ms: raw.timeout,
        kind,
    })
}

/// The record with `"_seq":N` as its first member, without re-serialising
/// it. `text` must be a JSON object.
#[cfg(test)]
fn with_seq(text: &str, seq: u64) -> String {
    // Only ASCII is inserted after an ASCII `{`: the result is UTF-8.
    String::from_utf8(with_seq_bytes(text.as_bytes(), seq)).unwrap_or_default()
}

/// The record with `"_seq":N` as its first member, spliced into the
/// bytes without re-serialising (the relay path: no UTF-8 re-check).
pub(crate) fn with_seq_bytes(text: &[u8], seq: u64) -> Vec<u8> {
    let open = text.iter().position(|b| *b == b'{').unwrap_or(0);
    let rest = text.get(open + 1..).unwrap_or_default();
    let empty = rest.trim_ascii_start().starts_with(b"}");
    let mut out = Vec::with_capacity(text.len() + 24);
    out.extend_from_slice(&text[..(open + 1).min(text.len())]);
    out.extend_from_slice(b"\"_seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_of_a_ui_request_is_read() {
        let h = parse_head(br#"{"type":"extension_ui_request","id":"q1","method":"confirm","title":"Run bash?","timeout":500}"#).unwrap();
        assert!(h.is_object);
        assert_eq!(h.kind.as_deref(), Some("extension_ui_request"));
        assert_eq!(h.id.as_deref(), Some("q1"));
        assert_eq!(h.method.as_deref(), Some("confirm"));
        assert_eq!(h.timeout_ms, Some(500.0));
    }

    #[test]
    fn non_json_is_none_and_non_objects_have_no_head() {
        assert_eq!(parse_head(b"hello"), None);
        assert_eq!(parse_head(b"{\"a\":"), None);
        let h = parse_head(b"[1,2]").unwrap();
        assert!(!h.is_object);
        assert!(
            parse_head(br#"{"type":"x","id":{"deep":[1]}}"#)
                .unwrap()
                .is_object
        );
    }

    #[test]
    fn seq_is_spliced_in_as_the_first_member() {
        assert_eq!(with_seq(r#"{"type":"x"}"#, 7), r#"{"_seq":7,"type":"x"}"#);
        assert_eq!(with_seq("{}", 1), r#"{"_seq":1}"#);
        let spaced: serde_json::Value = serde_json::from_str(&with_seq(" { } ", 2)).unwrap();
        assert_eq!(spaced, serde_json::json!({"_seq": 2}));
        let v: serde_json::Value = serde_json::from_str(&with_seq(r#"{"a":{"b":1}}"#, 3)).unwrap();
        assert_eq!(v["_seq"], 3);
        assert_eq!(v["a"]["b"], 1);
    }
}

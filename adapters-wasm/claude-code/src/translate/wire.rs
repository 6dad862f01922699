//! The agent line met most often, a `stream_event` with a
//! `content_block_delta` (text, thinking or tool input), read without a
//! `Value` tree: only the fields the translation uses, strings borrowed from
//! the line where they have no escapes; and the record it produces written
//! straight from a borrowed struct.
//!
//! A line of any other shape, or with a field of an unexpected type (a
//! number where a string was expected, a key given twice), is not read here:
//! [`block_delta`] answers `None` and the caller reads the line as a
//! `Value`, exactly as before. So this module changes the cost, never the
//! result. Written records keep the key order of a serialised `Value`
//! (sorted by bytes), so the output is byte for byte the same too.

use std::borrow::Cow;

use amarre_pi_dialect::{Obj, Str, cow};
use serde::{Deserialize, Deserializer, Serialize};

/// A string field that must hold `expected`: any other value stops the
/// reading there (Claude writes `type` first, so a line that is not a delta
/// costs a few bytes of parsing before it is read as a `Value`).
fn expect<'de, D: Deserializer<'de>>(d: D, expected: &str) -> Result<(), D::Error> {
    let Str(s) = Str::deserialize(d)?;
    if s == expected {
        Ok(())
    } else {
        Err(serde::de::Error::custom(format_args!("not {expected}")))
    }
}

/// `"type":"stream_event"`.
struct StreamEvent;

impl<'de> Deserialize<'de> for StreamEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        expect(d, "stream_event").map(|()| StreamEvent)
    }
}

/// `"type":"content_block_delta"`.
struct ContentBlockDelta;

impl<'de> Deserialize<'de> for ContentBlockDelta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        expect(d, "content_block_delta").map(|()| ContentBlockDelta)
    }
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    _kind: StreamEvent,
    #[serde(borrow)]
    event: Obj<Event<'a>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    _kind: ContentBlockDelta,
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    delta: Option<Obj<DeltaIn<'a>>>,
}

#[derive(Deserialize)]
struct DeltaIn<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    text: Option<Str<'a>>,
    #[serde(borrow, default)]
    thinking: Option<Str<'a>>,
    #[serde(borrow, default)]
    partial_json: Option<Str<'a>>,
}

/// A `content_block_delta` read borrowed.
#[derive(Debug)]
pub struct BlockDelta<'a> {
    /// The block's index (0 when missing).
    pub index: usize,
    /// The delta's `type` (empty when missing).
    pub kind: Cow<'a, str>,
    /// Its text: `text`, `thinking` or `partial_json` by kind (empty when
    /// missing or for another kind).
    pub text: Cow<'a, str>,
}

/// The field that holds a delta's text, by the delta's type.
pub fn delta_field(kind: &str) -> Option<&'static str> {
    match kind {
        "text_delta" => Some("text"),
        "thinking_delta" => Some("thinking"),
        "input_json_delta" => Some("partial_json"),
        _ => None,
    }
}

/// Reads `line` when it is a `stream_event` with a `content_block_delta` in
/// the expected shape; `None` for anything else.
pub fn block_delta(line: &str) -> Option<BlockDelta<'_>> {
    let Obj(head): Obj<Line> = serde_json::from_str(line).ok()?;
    let Obj(e) = head.event;
    let index = usize::try_from(e.index.unwrap_or(0)).ok()?;
    let (kind, text) = match e.delta {
        None => (Cow::Borrowed(""), Cow::Borrowed("")),
        Some(Obj(d)) => {
            let kind = cow(d.kind).unwrap_or_default();
            let text = match delta_field(&kind) {
                Some("text") => cow(d.text),
                Some("thinking") => cow(d.thinking),
                Some(_) => cow(d.partial_json),
                None => None,
            };
            (kind, text.unwrap_or_default())
        }
    };
    Some(BlockDelta { index, kind, text })
}

// ----- written records ------------------------------------------------------

/// `{"type":"message_update","assistantMessageEvent":E}`.
#[derive(Serialize)]
pub struct MessageUpdate<E> {
    #[serde(rename = "assistantMessageEvent")]
    pub event: E,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// A `text_delta`, `thinking_delta` or `toolcall_delta` event.
#[derive(Serialize)]
pub struct Delta<'a> {
    #[serde(rename = "contentIndex")]
    pub content_index: usize,
    pub delta: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// A record as compact JSON text.
pub fn text<T: Serialize>(record: &T) -> String {
    // Serialising these structs (strings and numbers) cannot fail.
    serde_json::to_string(record).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::{Clock, Out, Translator};

    struct TestClock(u64);

    impl Clock for TestClock {
        fn now_ms(&mut self) -> u64 {
            1000
        }
        fn new_id(&mut self) -> String {
            self.0 += 1;
            format!("ui-{}", self.0)
        }
    }

    fn t() -> Translator<TestClock> {
        Translator::new(TestClock(0), None).unwrap()
    }

    /// Feeds the same records to a translator reading deltas borrowed
    /// (`from_agent`) and one reading every line as a `Value`
    /// (`agent_line_as_tree`): the records (each written as a `Value` writes
    /// it), and the state after, are identical byte for byte.
    fn assert_same_reading(steps: &[(bool, String)]) {
        let (mut fast, mut tree) = (t(), t());
        for (i, (from_agent, line)) in steps.iter().enumerate() {
            let (a, b) = if *from_agent {
                (fast.from_agent(line), tree.agent_line_as_tree(line))
            } else {
                (fast.from_client(line), tree.from_client(line))
            };
            assert_eq!(a, b, "step {i}: {line}");
            for o in a.iter().flatten() {
                let (Out::Client(text) | Out::Agent(text)) = o;
                let v: Value = serde_json::from_str(text).unwrap();
                assert_eq!(text, &v.to_string(), "not written as a Value writes it");
            }
        }
        assert_eq!(fast.save(), tree.save());
    }

    #[test]
    fn the_borrowed_reading_matches_the_value_reading_on_every_transcript() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("transcripts");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        files.sort();
        let mut deltas = 0;
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            for pretty in [false, true] {
                let mut steps = Vec::new();
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let step: Value = serde_json::from_str(line).unwrap();
                    let write = |v: &Value| {
                        if pretty {
                            serde_json::to_string_pretty(v).unwrap()
                        } else {
                            v.to_string()
                        }
                    };
                    if let Some(a) = step.get("agent") {
                        let line = write(a);
                        if super::block_delta(&line).is_some() {
                            deltas += 1;
                        }
                        steps.push((true, line));
                    } else if let Some(c) = step.get("client") {
                        steps.push((false, write(c)));
                    }
                }
                assert_same_reading(&steps);
            }
        }
        assert!(files.len() >= 10 && deltas >= 20, "{deltas} deltas");
    }

    #[test]
    fn the_borrowed_reading_matches_the_value_reading_on_unusual_shapes() {
        let ev = |event: &str| {
            format!(
                r#"{{"type":"stream_event","event":{event},"session_id":"s","parent_tool_use_id":null}}"#
            )
        };
        let delta = |index: &str, delta: &str| {
            ev(&format!(
                r#"{{"type":"content_block_delta","index":{index},"delta":{delta}}}"#
            ))
        };
        let mut steps: Vec<(bool, String)> =
            vec![(false, r#"{"type":"prompt","message":"hi"}"#.into())];
        let agent = [
            ev(r#"{"type":"message_start","message":{"id":"m1","model":"x","role":"assistant","content":[]}}"#),
            ev(r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
            delta("0", r#"{"type":"text_delta","text":"plain"}"#),
            delta("0", r#"{"type":"text_delta","text":"escapes: \n \"q\" \u00e9 \ud83d\ude00 \\ end"}"#),
            delta("0", r#"{"type":"text_delta","text":5}"#),
            delta("0", r#"{"type":"text_delta"}"#),
            delta("0", r#"{"type":"text_delta","text":"one","text":"two"}"#),
            delta("0", r#"{"type":"thinking_delta","thinking":"wrong block"}"#),
            delta("0", r#"["text_delta","as fields in order"]"#),
            delta("0", "null"),
            delta("null", r#"{"type":"text_delta","text":"index null"}"#),
            delta("-1", r#"{"type":"text_delta","text":"negative"}"#),
            delta("0.0", r#"{"type":"text_delta","text":"float"}"#),
            delta("7", r#"{"type":"text_delta","text":"no such block"}"#),
            delta("0", r#" { "type" : "text_delta" , "text" : "spaced" } "#),
            ev(r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"no index"}}"#),
            r#"{"type":"stream_event","event":["content_block_delta",0]}"#.into(),
            r#"["stream_event",{"type":"content_block_delta"}]"#.into(),
            r#"{"type":5,"event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}}"#.into(),
            ev(r#"{"type":"content_block_stop","index":0}"#),
            delta("0", r#"{"type":"text_delta","text":"after the stop"}"#),
            ev(r#"{"type":"content_block_start","index":1,"content_block":{"type":"thinking","thinking":""}}"#),
            delta("1", r#"{"type":"thinking_delta","thinking":"hmm","text":"ignored"}"#),
            delta("1", r#"{"type":"thinking_delta","thinking":"x","text":3}"#),
            ev(r#"{"type":"content_block_stop","index":1}"#),
            ev(r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"Bash","input":{}}}"#),
            delta("2", r#"{"type":"input_json_delta","partial_json":"{\"command\":"}"#),
            delta("2", r#"{"type":"input_json_delta","partial_json":"\"ls\"}"}"#),
            ev(r#"{"type":"content_block_stop","index":2}"#),
            ev(r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"}}"#),
            ev(r#"{"type":"message_stop"}"#),
            "not json".into(),
            r#"{"type":"result","subtype":"success","is_error":false,"result":"ok"}"#.into(),
        ];
        steps.extend(agent.into_iter().map(|l| (true, l)));
        assert_same_reading(&steps);
        // The shape Claude sends takes the borrowed path.
        assert!(super::block_delta(&steps[3].1).is_some());
    }
}

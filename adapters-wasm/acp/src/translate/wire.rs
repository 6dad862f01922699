//! The agent lines met most often (`session/update` text and thought chunks,
//! `tool_call` and `tool_call_update`), read without a `Value` tree: only the
//! fields the translation uses, strings borrowed from the line where they
//! have no escapes, parts that are passed through kept as raw JSON text until
//! they are needed. The records they produce most often are written straight
//! from borrowed structs.
//!
//! A line of any other shape, or with a field of an unexpected type (a
//! number where a string was expected, a key given twice), is not read here:
//! [`session_update`] answers `None` and the caller reads the line as a
//! `Value`, exactly as before. So this module changes the cost, never the
//! result.
//!
//! Written records keep the key order of a serialised `Value` (sorted by
//! bytes), so the output is byte for byte what the `Value` path writes.

use std::borrow::Cow;

use std::marker::PhantomData;

use amarre_pi_dialect::{Obj, Str, cow};
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON-RPC message, as far as routing a session update needs.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    method: Option<Str<'a>>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<Obj<Params<'a>>>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow, default)]
    update: Option<Obj<Update<'a>>>,
}

/// A `session/update`'s `update`, with the fields of chunks and tool calls.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Update<'a> {
    #[serde(borrow, default)]
    session_update: Option<Str<'a>>,
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    #[serde(borrow, default)]
    tool_call_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    title: Option<Str<'a>>,
    #[serde(default)]
    raw_input: Option<Value>,
    #[serde(borrow, default)]
    status: Option<Str<'a>>,
    #[serde(borrow, default)]
    raw_output: Option<&'a RawValue>,
}

/// An update's `content`, read in one pass: an object (a chunk's content
/// block) or an array (a tool call's items). Anything else is not read here.
enum Content<'a> {
    Block(Block<'a>),
    Items(Vec<Obj<Item<'a>>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Either<'a> {
            type Value = Content<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object or array")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Content<'a>, A::Error> {
                Block::deserialize(MapAccessDeserializer::new(map)).map(Content::Block)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Content<'a>, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(Content::Items)
            }
        }
        d.deserialize_any(Either(PhantomData))
    }
}

/// A chunk's content block.
#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    text: Option<Str<'a>>,
}

/// One item of a tool call's `content`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    content: Option<Obj<ItemContent<'a>>>,
    #[serde(default)]
    path: Option<Value>,
    #[serde(default)]
    old_text: Option<Value>,
    #[serde(default)]
    new_text: Option<Value>,
}

/// The content block of a `content` item.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemContent<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(default)]
    text: Option<Value>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    mime_type: Option<Value>,
    #[serde(default)]
    uri: Option<Value>,
}

/// The fields of a `tool_call` or `tool_call_update` the translation uses,
/// read from either path.
#[derive(Debug)]
pub struct ToolFields<'a> {
    /// `toolCallId`, empty when missing.
    pub id: Cow<'a, str>,
    pub title: Option<Cow<'a, str>>,
    /// `rawInput` (null when missing).
    pub raw_input: Value,
    /// The content items as pi result content (see `tool_content`).
    pub content: Vec<Value>,
    pub status: Option<Cow<'a, str>>,
    /// `rawOutput` (null when missing); read only when the tool ends.
    pub raw_output: Value,
}

impl ToolFields<'_> {
    /// Whether the update ends the tool.
    pub fn ends(&self) -> bool {
        matches!(self.status.as_deref(), Some("completed" | "failed"))
    }

    pub fn failed(&self) -> bool {
        self.status.as_deref() == Some("failed")
    }
}

/// A session update read borrowed.
#[derive(Debug)]
pub enum Fast<'a> {
    /// `agent_message_chunk` (`thinking` false) or `agent_thought_chunk`;
    /// `text` is empty when the content is not a text block.
    Chunk { thinking: bool, text: Cow<'a, str> },
    /// `tool_call` (`call` true) or `tool_call_update`.
    Tool { call: bool, fields: ToolFields<'a> },
}

/// Reads `line` when it is a `session/update` notification of a chunk or a
/// tool call in the expected shape; `None` for anything else.
pub fn session_update(line: &str) -> Option<Fast<'_>> {
    let Obj(head): Obj<Line> = serde_json::from_str(line).ok()?;
    if head.id.is_some() || cow(head.method).as_deref() != Some("session/update") {
        return None;
    }
    let u = head.params?.0.update?.0;
    match cow(u.session_update)?.as_ref() {
        kind @ ("agent_message_chunk" | "agent_thought_chunk") => {
            // Not a block (null, missing, an array): no text.
            let block = match u.content {
                Some(Content::Block(b)) => Some(b),
                _ => None,
            };
            let text = match block {
                Some(Block {
                    kind: Some(k),
                    text,
                }) if k.0 == "text" => cow(text).unwrap_or_default(),
                _ => Cow::Borrowed(""),
            };
            Some(Fast::Chunk {
                thinking: kind == "agent_thought_chunk",
                text,
            })
        }
        kind @ ("tool_call" | "tool_call_update") => {
            // Not an array (null, missing, an object): no items.
            let items = match u.content {
                Some(Content::Items(items)) => items,
                _ => Vec::new(),
            };
            let mut content = Vec::new();
            for Obj(item) in items {
                if let Some(v) = item_content(item) {
                    content.push(v);
                }
            }
            let mut fields = ToolFields {
                id: cow(u.tool_call_id).unwrap_or_default(),
                title: cow(u.title),
                raw_input: u.raw_input.unwrap_or_default(),
                content,
                status: cow(u.status),
                raw_output: Value::Null,
            };
            if fields.ends() {
                fields.raw_output = value(u.raw_output)?;
            }
            Some(Fast::Tool {
                call: kind == "tool_call",
                fields,
            })
        }
        _ => None,
    }
}

/// Raw JSON as a `Value` (null when missing).
fn value(raw: Option<&RawValue>) -> Option<Value> {
    match raw {
        None => Some(Value::Null),
        Some(raw) => serde_json::from_str(raw.get()).ok(),
    }
}

/// One ACP content item as pi result content, as `tool_content` makes it
/// (`None` for an item that shows nothing). A missing or null field is null.
fn item_content(item: Item) -> Option<Value> {
    fn object<const N: usize>(pairs: [(&str, Option<Value>); N]) -> Value {
        Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.unwrap_or_default()))
                .collect(),
        )
    }
    let kind = |k: &str| Some(Value::from(k));
    match cow(item.kind).as_deref() {
        Some("content") => {
            let Obj(c) = item.content?;
            match cow(c.kind).as_deref() {
                Some("text") => Some(object([("type", kind("text")), ("text", c.text)])),
                Some("image") => Some(object([
                    ("type", kind("image")),
                    ("data", c.data),
                    ("mimeType", c.mime_type),
                ])),
                Some("resource_link") => Some(object([("type", kind("text")), ("text", c.uri)])),
                _ => None,
            }
        }
        Some("diff") => Some(object([
            ("type", kind("diff")),
            ("path", item.path),
            ("oldText", item.old_text),
            ("newText", item.new_text),
        ])),
        _ => None,
    }
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

/// A `text_delta` or `thinking_delta` event.
#[derive(Serialize)]
pub struct Delta<'a> {
    #[serde(rename = "contentIndex")]
    pub content_index: usize,
    pub delta: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// `tool_execution_update`.
#[derive(Serialize)]
pub struct ToolUpdate<'a> {
    pub args: &'a Value,
    #[serde(rename = "partialResult")]
    pub partial_result: Contents<'a>,
    #[serde(rename = "toolCallId")]
    pub tool_call_id: &'a str,
    #[serde(rename = "toolName")]
    pub tool_name: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// `{"content": [...]}`.
#[derive(Serialize)]
pub struct Contents<'a> {
    pub content: &'a [Value],
}

/// A record as compact JSON text.
pub fn text<T: Serialize>(record: &T) -> String {
    // Serialising these structs (strings, numbers, `Value`s) cannot fail.
    serde_json::to_string(record).unwrap_or_default()
}

//! What the translating adapters (claude-code, acp) share about the pi
//! dialect they write for clients: borrowed reading of the agent lines they
//! meet most often, and the bounds of the prompt queue a client fills while
//! a run is going. Agent-specific logic stays in each adapter; the adapter
//! SDK stays agent-neutral.

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A struct read from a JSON object only. (Derived structs also accept an
/// array of their fields in order, which a `Value` never reads as one.)
pub struct Obj<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(Only(PhantomData))
    }
}

/// A JSON string, borrowed from the line unless it has escapes. (A
/// `Cow<str>` inside an `Option` is always copied by serde; inside this
/// newtype it borrows.)
#[derive(Deserialize)]
pub struct Str<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// The string of an optional [`Str`].
pub fn cow<'a>(s: Option<Str<'a>>) -> Option<Cow<'a, str>> {
    s.map(|s| s.0)
}

/// Prompts queued while a run is going: at most this many bytes (text and
/// images as JSON) and [`MAX_QUEUED`] prompts; beyond them a prompt is
/// refused (success false), so a client cannot fill the sandbox's memory.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;
/// At most this many queued prompts.
pub const MAX_QUEUED: usize = 256;

/// A queued prompt's size as [`queue_refusal`] counts it.
pub fn prompt_bytes(text: &str, images: &[Value]) -> usize {
    text.len()
        + images
            .iter()
            .map(|i| serde_json::to_string(i).map_or(0, |s| s.len()))
            .sum::<usize>()
}

/// Why a prompt of `bytes` cannot join a queue of `queued` prompts holding
/// `queued_bytes`, if it cannot.
pub fn queue_refusal(queued: usize, queued_bytes: usize, bytes: usize) -> Option<String> {
    if queued >= MAX_QUEUED {
        return Some(format!(
            "the prompt queue is full ({MAX_QUEUED} prompts); wait for the turn to end or abort it"
        ));
    }
    if queued_bytes + bytes > MAX_QUEUED_BYTES {
        return Some(format!(
            "the prompt queue is full ({queued_bytes} bytes queued, at most {MAX_QUEUED_BYTES}); wait for the turn to end or abort it"
        ));
    }
    None
}

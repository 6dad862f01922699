//! [`Text`]: one record as the session core carries it, shared (cloning is
//! a reference count) and always valid UTF-8. The core owns this type so
//! that it names no HTTP or WebSocket type; the socket writer converts it
//! to a text frame at the last moment (`http/ws.rs`).

use bytes::Bytes;

/// A record's text: shared bytes that are valid UTF-8.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Text(Bytes);

impl Text {
    /// Agent output as a record: invalid UTF-8 is replaced, not dropped.
    pub(crate) fn lossy(line: Bytes) -> Text {
        match std::str::from_utf8(&line) {
            Ok(_) => Text(line),
            Err(_) => Text(Bytes::from(String::from_utf8_lossy(&line).into_owned())),
        }
    }

    /// A record the core or an adapter produced.
    pub(crate) fn from_string(text: String) -> Text {
        Text(Bytes::from(text))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The bytes, for the socket writer (valid UTF-8).
    pub(crate) fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The text with `"_seq":N` as its first member (objects only; see
    /// [`super::record::with_seq_bytes`]).
    pub(crate) fn with_seq(&self, seq: u64) -> Text {
        Text(Bytes::from(super::record::with_seq_bytes(&self.0, seq)))
    }

    /// The text as a `String` (for the rare paths that need one).
    pub(crate) fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text::from_string(text)
    }
}

impl From<&'static str> for Text {
    fn from(text: &'static str) -> Text {
        Text(Bytes::from_static(text.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_replaced_and_valid_text_is_shared() {
        let raw = Bytes::from_static(b"{\"a\":\"\xff\"}");
        let t = Text::lossy(raw);
        assert_eq!(t.as_bytes(), "{\"a\":\"\u{fffd}\"}".as_bytes());
        let ok = Bytes::from_static(b"{\"a\":1}");
        let t = Text::lossy(ok.clone());
        assert_eq!(
            t.as_bytes().as_ptr(),
            ok.as_ptr(),
            "valid text is not copied"
        );
        assert!(std::str::from_utf8(t.with_seq(3).as_bytes()).is_ok());
        assert_eq!(t.with_seq(3).as_bytes(), br#"{"_seq":3,"a":1}"#);
    }
}

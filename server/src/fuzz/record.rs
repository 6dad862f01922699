//! The record-head parser ([`parse_head`]) and the `_seq` splice, against
//! `serde_json`: every JSON text is recognised as JSON, every object as an
//! object, and a numbered object is the same object with `_seq` first.

use serde_json::Value;

use crate::session::record::{parse_head, with_seq_bytes};

fn check(data: &[u8]) {
    let head = parse_head(data);
    let parsed = serde_json::from_slice::<Value>(data).ok();
    // serde_json's tree is the reference for "is it JSON" (it refuses
    // nesting deeper than 128, which the head parser may accept: only the
    // other direction is checked then).
    if let Some(v) = &parsed {
        let head = head
            .as_ref()
            .unwrap_or_else(|| panic!("JSON taken for not JSON: {v}"));
        assert_eq!(head.is_object, v.is_object(), "{v}");
        // A `type` the core reads is the record's (the core reads nothing
        // of an object whose head fields are odd, e.g. given twice).
        if let (Some(obj), Some(kind)) = (v.as_object(), &head.kind) {
            assert_eq!(
                Some(kind.as_str()),
                obj.get("type").and_then(Value::as_str),
                "{v}"
            );
        }
    }
    let Some(head) = head else { return };
    if !head.is_object {
        return;
    }
    let numbered = with_seq_bytes(data, 42);
    let Some(Value::Object(original)) = parsed else {
        return;
    };
    let again: Value = serde_json::from_slice(&numbered).unwrap_or_else(|e| {
        panic!(
            "the numbered record is not JSON ({e}): {}",
            String::from_utf8_lossy(&numbered)
        )
    });
    if original.contains_key("_seq") {
        return;
    }
    let Value::Object(mut again) = again else {
        panic!("the numbered record is not an object");
    };
    assert_eq!(again.remove("_seq"), Some(Value::from(42)));
    assert_eq!(again, original);
}

#[test]
fn fuzz_record_head() {
    super::run("record_head", check);
}

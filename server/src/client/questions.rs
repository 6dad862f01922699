//! Questions (`extension_ui_request`, PROTOCOL.md section 7) and their
//! answers (`extension_ui_response`, echoing the question's `id`).

use serde_json::{Value, json};

/// The kinds of question that expect an answer.
pub const ANSWERED_METHODS: &[&str] = &["confirm", "select", "input", "editor"];

/// Whether `v` is a question that expects an answer.
pub fn is_question(v: &Value) -> bool {
    v["type"] == "extension_ui_request"
        && v["id"].is_string()
        && v["method"]
            .as_str()
            .is_some_and(|m| ANSWERED_METHODS.contains(&m))
}

/// The options of a `select`.
pub fn options(q: &Value) -> Vec<String> {
    q["options"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| match o {
            Value::String(s) => s.clone(),
            other => other["label"]
                .as_str()
                .or(other["value"].as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| other.to_string()),
        })
        .collect()
}

/// `confirm`: yes or no.
pub fn confirm(q: &Value, yes: bool) -> Value {
    json!({"type": "extension_ui_response", "id": q["id"], "confirmed": yes})
}

/// `select`, `input`, `editor`: a value.
pub fn value(q: &Value, v: &str) -> Value {
    json!({"type": "extension_ui_response", "id": q["id"], "value": v})
}

/// Any question: no answer given.
pub fn cancel(q: &Value) -> Value {
    json!({"type": "extension_ui_response", "id": q["id"], "cancelled": true})
}

/// The answer of `amarre approve` (as the mobile client answers): confirm
/// with yes/no, select with the first option to allow and the last to
/// deny, input/editor cancelled on deny. `None`: the question needs text
/// a person must type (input/editor when allowing).
pub fn approve(q: &Value, allow: bool) -> Option<Value> {
    match q["method"].as_str()? {
        "confirm" => Some(confirm(q, allow)),
        "select" => {
            let opts = options(q);
            let pick = if allow { opts.first() } else { opts.last() };
            Some(match pick {
                Some(o) => value(q, o),
                None => cancel(q),
            })
        }
        "input" | "editor" if !allow => Some(cancel(q)),
        _ => None,
    }
}

/// The question in one or more lines of text.
pub fn describe(q: &Value) -> Vec<String> {
    let mut out = vec![format!(
        "? {}",
        q["title"].as_str().unwrap_or("The agent asks")
    )];
    if let Some(m) = q["message"].as_str().filter(|m| !m.is_empty()) {
        out.extend(m.lines().take(8).map(|l| format!("  {l}")));
    }
    if q["method"] == "select" {
        for (i, o) in options(q).iter().enumerate() {
            out.push(format!("  {}) {o}", i + 1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approve_answers_like_the_mobile_client() {
        let c = json!({"type": "extension_ui_request", "id": "q1", "method": "confirm", "title": "Run bash?"});
        assert!(is_question(&c));
        assert_eq!(approve(&c, true).unwrap()["confirmed"], true);
        assert_eq!(approve(&c, false).unwrap()["confirmed"], false);
        let s = json!({"type": "extension_ui_request", "id": "q2", "method": "select", "options": ["Allow", "Always", "Deny"]});
        assert_eq!(approve(&s, true).unwrap()["value"], "Allow");
        assert_eq!(approve(&s, false).unwrap()["value"], "Deny");
        let i = json!({"type": "extension_ui_request", "id": "q3", "method": "input"});
        assert_eq!(approve(&i, true), None);
        assert_eq!(approve(&i, false).unwrap()["cancelled"], true);
        assert_eq!(approve(&i, false).unwrap()["id"], "q3");
        let n = json!({"type": "extension_ui_request", "id": "q4", "method": "notify"});
        assert!(!is_question(&n));
    }
}

//! pi-dialect records (AGENTS.md section 1) and the server's `amarre.*`
//! records as things to show: whole lines, and the assistant's text as it
//! streams. Pure: the terminal (or plain output) decides how to draw them.

use serde_json::Value;

/// How a line is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    User,
    Assistant,
    Tool,
    ToolOutput,
    Info,
    Error,
}

/// Something to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// A whole line (no newline inside).
    Line(Style, String),
    /// A piece of the assistant's streamed text (may hold newlines).
    Delta(String),
    /// The streamed text ended: finish its last line.
    EndText,
}

/// Tool output longer than this many lines is folded.
pub const FOLD_LINES: usize = 6;
/// Lines of a folded output shown before the fold.
pub const FOLD_KEEP: usize = 4;
/// Longest tool-argument summary, in characters.
const ARGS_CHARS: usize = 200;

/// The turn's state as far as the records tell.
#[derive(Debug, Default)]
pub struct Renderer {
    /// A turn is running (`agent_start` .. `agent_end`).
    pub busy: bool,
    /// Inside a streamed text block.
    streaming: bool,
    /// The current assistant message has streamed text (so its
    /// `message_end` must not print it again).
    streamed: bool,
    /// Text of the last assistant message of the turn (for `send --wait`).
    pub last_text: String,
}

fn cut(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| {
            if c == '\n' || c == '\r' || c == '\t' {
                ' '
            } else {
                c
            }
        })
        .collect();
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut t: String = one_line.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A tool call's arguments in a few words: `command` for shells, `path`
/// for file tools, else the JSON.
pub fn summarize_args(args: &Value) -> String {
    for key in ["command", "path", "file_path", "pattern", "url"] {
        if let Some(s) = args[key].as_str() {
            return cut(s, ARGS_CHARS);
        }
    }
    match args {
        Value::Null => String::new(),
        Value::Object(m) if m.is_empty() => String::new(),
        v => cut(&v.to_string(), ARGS_CHARS),
    }
}

/// The text parts of a message's `content` (a string or an array of
/// blocks).
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// A tool's output as lines, folded when long.
pub fn tool_output(text: &str, is_error: bool, out: &mut Vec<Out>) {
    let style = if is_error {
        Style::Error
    } else {
        Style::ToolOutput
    };
    let lines: Vec<&str> = text.trim_end().lines().collect();
    if lines.is_empty() {
        return;
    }
    let shown = if lines.len() > FOLD_LINES {
        FOLD_KEEP
    } else {
        lines.len()
    };
    for l in &lines[..shown] {
        out.push(Out::Line(style, format!("  │ {l}")));
    }
    if shown < lines.len() {
        out.push(Out::Line(
            Style::ToolOutput,
            format!("  │ … {} more lines folded", lines.len() - shown),
        ));
    }
}

fn user_lines(text: &str, out: &mut Vec<Out>) {
    for (i, l) in text.lines().enumerate() {
        out.push(Out::Line(
            Style::User,
            if i == 0 {
                format!("you> {l}")
            } else {
                format!("     {l}")
            },
        ));
    }
}

fn assistant_lines(text: &str, out: &mut Vec<Out>) {
    for l in text.lines() {
        out.push(Out::Line(Style::Assistant, l.to_owned()));
    }
}

/// Why an assistant message failed, if it did.
pub fn failure_of(message: &Value) -> Option<String> {
    match message["stopReason"].as_str() {
        Some("error") => Some(
            message["errorMessage"]
                .as_str()
                .unwrap_or("the agent reported an error")
                .to_owned(),
        ),
        Some("aborted") => Some("aborted".to_owned()),
        _ => None,
    }
}

impl Renderer {
    /// Forgets a streamed text block without finishing it on screen (its
    /// text is shown another way, e.g. by the history).
    pub fn discard_stream(&mut self) {
        self.streaming = false;
    }

    fn end_stream(&mut self, out: &mut Vec<Out>) {
        if self.streaming {
            self.streaming = false;
            out.push(Out::EndText);
        }
    }

    /// What to show for one message of `get_messages` (the history).
    pub fn history_message(&mut self, m: &Value, out: &mut Vec<Out>) {
        match m["role"].as_str() {
            Some("user") => user_lines(&content_text(&m["content"]), out),
            Some("assistant") => {
                for b in m["content"].as_array().into_iter().flatten() {
                    match b["type"].as_str() {
                        Some("text") => assistant_lines(b["text"].as_str().unwrap_or(""), out),
                        Some("toolCall") => out.push(Out::Line(
                            Style::Tool,
                            format!(
                                "[tool] {} {}",
                                b["name"].as_str().unwrap_or("?"),
                                summarize_args(&b["arguments"])
                            ),
                        )),
                        _ => {}
                    }
                }
                if let Some(f) = failure_of(m) {
                    out.push(Out::Line(Style::Error, format!("[turn ended: {f}]")));
                }
            }
            Some("toolResult") => tool_output(
                &content_text(&m["content"]),
                m["isError"].as_bool().unwrap_or(false),
                out,
            ),
            _ => {}
        }
    }

    /// What to show for one record of the stream. Questions
    /// (`extension_ui_request` that expect an answer) are left to the
    /// caller.
    pub fn record(&mut self, v: &Value) -> Vec<Out> {
        let mut out = Vec::new();
        let ty = v["type"].as_str().unwrap_or("");
        match ty {
            "agent_start" => {
                self.busy = true;
                self.last_text.clear();
            }
            "agent_end" => {
                self.end_stream(&mut out);
                self.busy = false;
                if let Some(last) = v["messages"]
                    .as_array()
                    .and_then(|ms| ms.iter().rev().find(|m| m["role"] == "assistant"))
                {
                    let text = content_text(&last["content"]);
                    if !text.is_empty() {
                        self.last_text = text;
                    }
                    if let Some(f) = failure_of(last) {
                        out.push(Out::Line(Style::Error, format!("[turn ended: {f}]")));
                    }
                }
            }
            "message_start" if v["message"]["role"] == "assistant" => {
                self.streamed = false;
            }
            "message_update" => {
                let e = &v["assistantMessageEvent"];
                match e["type"].as_str() {
                    Some("text_delta") => {
                        if let Some(d) = e["delta"].as_str() {
                            self.streaming = true;
                            self.streamed = true;
                            out.push(Out::Delta(d.to_owned()));
                        }
                    }
                    Some("text_end") => self.end_stream(&mut out),
                    Some("thinking_start") => {
                        self.end_stream(&mut out);
                        out.push(Out::Line(Style::Info, "(thinking)".into()));
                    }
                    _ => {}
                }
            }
            "message_end" => {
                self.end_stream(&mut out);
                let m = &v["message"];
                match m["role"].as_str() {
                    Some("user") => user_lines(&content_text(&m["content"]), &mut out),
                    Some("assistant") => {
                        let text = content_text(&m["content"]);
                        if !self.streamed && !text.is_empty() {
                            assistant_lines(&text, &mut out);
                        }
                        if !text.is_empty() {
                            self.last_text = text;
                        }
                        self.streamed = false;
                    }
                    _ => {}
                }
            }
            "tool_execution_start" => {
                self.end_stream(&mut out);
                out.push(Out::Line(
                    Style::Tool,
                    format!(
                        "[tool] {} {}",
                        v["toolName"].as_str().unwrap_or("?"),
                        summarize_args(&v["args"])
                    ),
                ));
            }
            "tool_execution_end" => {
                self.end_stream(&mut out);
                let text = content_text(&v["result"]["content"]);
                let is_error = v["isError"].as_bool().unwrap_or(false);
                tool_output(&text, is_error, &mut out);
                if is_error && text.trim().is_empty() {
                    out.push(Out::Line(Style::Error, "  │ (the tool failed)".into()));
                }
            }
            "extension_ui_request" => match v["method"].as_str() {
                Some("notify") if v["event"] == "plan_capture" => {
                    self.end_stream(&mut out);
                    out.push(Out::Line(Style::Info, "[plan]".into()));
                    for l in v["message"].as_str().unwrap_or("").lines() {
                        out.push(Out::Line(Style::Assistant, format!("  {l}")));
                    }
                }
                Some("notify") => {
                    self.end_stream(&mut out);
                    out.push(Out::Line(
                        Style::Info,
                        format!("[note] {}", cut(v["message"].as_str().unwrap_or(""), 400)),
                    ));
                }
                _ => {}
            },
            "response" if v["success"] == false => {
                self.end_stream(&mut out);
                out.push(Out::Line(
                    Style::Error,
                    format!(
                        "[{} failed: {}]",
                        v["command"].as_str().unwrap_or("command"),
                        v["error"].as_str().unwrap_or("no reason given")
                    ),
                ));
            }
            "extension_error" => {
                self.end_stream(&mut out);
                out.push(Out::Line(
                    Style::Error,
                    format!("[extension error] {}", cut(&v["error"].to_string(), 400)),
                ));
            }
            "auto_retry_start" => {
                out.push(Out::Line(Style::Info, "[retrying the model call]".into()));
            }
            "amarre.session_event" => {
                self.end_stream(&mut out);
                match v["event"].as_str() {
                    Some("crashed") => {
                        self.busy = false;
                        let how = match (v["exitCode"].as_i64(), v["signal"].as_str()) {
                            (Some(c), _) => format!("exit code {c}"),
                            (None, Some(s)) => format!("signal {s}"),
                            _ => v["reason"].as_str().unwrap_or("no exit status").to_owned(),
                        };
                        out.push(Out::Line(
                            Style::Error,
                            format!("[the agent exited: {how}]"),
                        ));
                    }
                    Some("resumed") => out.push(Out::Line(
                        Style::Info,
                        format!(
                            "[the daemon restarted; conversation {}{}]",
                            if v["resumed"] == true {
                                "restored"
                            } else {
                                "started fresh"
                            },
                            if v["interrupted"] == true {
                                ", a turn was interrupted"
                            } else {
                                ""
                            }
                        ),
                    )),
                    _ => {}
                }
            }
            "amarre.record_dropped" => out.push(Out::Line(
                Style::Info,
                format!(
                    "[the daemon dropped {} record(s) {} ({})]",
                    v["count"].as_u64().unwrap_or(1),
                    if v["direction"] == "from_client" {
                        "from a client"
                    } else {
                        "from the agent"
                    },
                    v["reason"].as_str().unwrap_or("?")
                ),
            )),
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn delta(t: &str) -> Value {
        json!({"type": "message_update", "assistantMessageEvent": {"type": "text_delta", "delta": t}})
    }

    #[test]
    fn streamed_text_is_not_printed_again_at_message_end() {
        let mut r = Renderer::default();
        let mut all = Vec::new();
        for v in [
            json!({"type": "agent_start"}),
            json!({"type": "message_start", "message": {"role": "assistant"}}),
            delta("Hel"),
            delta("lo"),
            json!({"type": "message_end", "message": {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}}),
            json!({"type": "agent_end", "messages": []}),
        ] {
            all.extend(r.record(&v));
        }
        assert_eq!(
            all,
            vec![
                Out::Delta("Hel".into()),
                Out::Delta("lo".into()),
                Out::EndText
            ]
        );
        assert_eq!(r.last_text, "Hello");
        assert!(!r.busy);
    }

    #[test]
    fn long_tool_output_is_folded() {
        let mut r = Renderer::default();
        let text: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let out = r.record(&json!({"type": "tool_execution_end", "isError": false,
            "result": {"content": [{"type": "text", "text": text}]}}));
        assert_eq!(out.len(), FOLD_KEEP + 1);
        assert_eq!(out[0], Out::Line(Style::ToolOutput, "  │ line 1".into()));
        assert_eq!(
            out[FOLD_KEEP],
            Out::Line(Style::ToolOutput, "  │ … 16 more lines folded".into())
        );
        let short = r.record(&json!({"type": "tool_execution_end",
            "result": {"content": [{"type": "text", "text": "a\nb"}]}}));
        assert_eq!(short.len(), 2);
    }

    #[test]
    fn a_failed_turn_says_why_and_history_shows_every_role() {
        let mut r = Renderer::default();
        let out = r.record(&json!({"type": "agent_end", "messages": [
            {"role": "assistant", "content": [], "stopReason": "error", "errorMessage": "model overloaded"}]}));
        assert_eq!(
            out,
            vec![Out::Line(
                Style::Error,
                "[turn ended: model overloaded]".into()
            )]
        );
        let mut h = Vec::new();
        r.history_message(&json!({"role": "user", "content": "hi"}), &mut h);
        r.history_message(
            &json!({"role": "assistant", "content": [{"type": "text", "text": "ok"},
                {"type": "toolCall", "name": "bash", "arguments": {"command": "ls -la"}}]}),
            &mut h,
        );
        r.history_message(
            &json!({"role": "toolResult", "content": [{"type": "text", "text": "f1"}]}),
            &mut h,
        );
        assert_eq!(
            h,
            vec![
                Out::Line(Style::User, "you> hi".into()),
                Out::Line(Style::Assistant, "ok".into()),
                Out::Line(Style::Tool, "[tool] bash ls -la".into()),
                Out::Line(Style::ToolOutput, "  │ f1".into()),
            ]
        );
    }
}

//! `amarre attach`: a session in the terminal.
//!
//! The conversation is printed into the terminal's own scrollback (so it
//! survives detaching and works in any size, 80x24 included); below it a
//! few live rows are redrawn in place: the assistant's line still being
//! streamed, the open question, a status row (connection, turn) and the
//! input line (edited with `tui-input`). When stdin or stdout is not a
//! terminal the same conversation is written as plain lines and answers are
//! read as lines from stdin.
//!
//! Keys: Enter sends the line as a prompt (a follow-up while a turn runs);
//! Ctrl-C aborts the running turn, a second Ctrl-C detaches (the agent keeps
//! running); Ctrl-D on an empty line detaches. A confirm is answered with
//! `y`/`n`, a select with its number, an input/editor by typing the answer
//! and Enter (Esc cancels the question).

use std::collections::{HashSet, VecDeque};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crossterm::event::{
    Event as TermEvent, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers,
};
use crossterm::style::{Attribute, Color, Print, SetAttribute, SetForegroundColor};
use crossterm::{cursor, queue, terminal};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tui_input::Input;
use tui_input::backend::crossterm::EventHandler;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::api::Api;
use super::conn::{Conn, End, Event};
use super::exit;
use super::questions;
use super::render::{Out, Renderer, Style};

/// The id of our `get_messages` request.
const HISTORY_ID: &str = "amarre-attach-history";
/// How long records wait for the history before being shown anyway.
const HISTORY_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
enum ConnState {
    Connecting,
    Connected,
    Reconnecting(String),
    Ended,
}

/// Attaches to session `summary` of `api` until the person detaches or
/// the session ends; returns the exit code.
pub async fn attach(api: Api, summary: Value) -> i32 {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let id = summary["id"].as_str().unwrap_or_default().to_owned();
    let label = match summary["name"].as_str() {
        Some(n) => format!("{n} ({id})"),
        None => id.clone(),
    };
    let conn = Conn::open(api, id);
    let mut app = App {
        conn,
        label,
        renderer: Renderer::default(),
        state: ConnState::Connecting,
        questions: VecDeque::new(),
        answered: HashSet::new(),
        history_since: None,
        held: Vec::new(),
        history_covers_held: false,
        ctrl_c_at: None,
        next_id: 0,
        screen: if tty {
            Screen::Tty(Tty::new())
        } else {
            Screen::Plain(Plain::default())
        },
        input: Input::default(),
        answer: Input::default(),
    };
    let code = if tty {
        match TermGuard::enter() {
            Ok(_guard) => app.run_tty().await,
            Err(e) => {
                eprintln!("amarre: cannot set up the terminal: {e}");
                exit::FAILURE
            }
        }
    } else {
        app.run_plain().await
    };
    app.screen.finish();
    let App { conn, .. } = app;
    conn.close().await;
    code
}

/// Raw mode while attached; restored on drop (and so on panic unwinding).
struct TermGuard;

impl TermGuard {
    fn enter() -> std::io::Result<TermGuard> {
        terminal::enable_raw_mode()?;
        // A paste arrives as one event (its newlines do not send prompts).
        let mut out = std::io::stdout();
        let _ = crossterm::execute!(out, crossterm::event::EnableBracketedPaste);
        Ok(TermGuard)
    }
}

impl Drop for TermGuard {
    fn drop(&mut self) {
        let mut out = std::io::stdout();
        let _ = queue!(out, crossterm::event::DisableBracketedPaste, cursor::Show);
        let _ = out.flush();
        let _ = terminal::disable_raw_mode();
        let _ = out.flush();
    }
}

enum Flow {
    Continue,
    Exit(i32),
}

struct App {
    conn: Conn,
    label: String,
    renderer: Renderer,
    state: ConnState,
    /// Open questions, oldest first (the first one is shown).
    questions: VecDeque<Value>,
    /// Ids of questions answered here or resolved (repeats are ignored).
    answered: HashSet<String>,
    /// Set while the history is being fetched: records wait in `held`.
    history_since: Option<Instant>,
    held: Vec<Value>,
    /// After a replay gap the history covers what was replayed: the held
    /// records only update the state (questions, turn), without being shown.
    history_covers_held: bool,
    ctrl_c_at: Option<Instant>,
    next_id: u64,
    screen: Screen,
    input: Input,
    answer: Input,
}

impl App {
    fn request_id(&mut self, what: &str) -> String {
        self.next_id += 1;
        format!("amarre-attach-{what}-{}", self.next_id)
    }

    fn show(&mut self, outs: Vec<Out>) {
        for o in outs {
            self.screen.out(o);
        }
    }

    fn info(&mut self, text: impl Into<String>) {
        self.screen.out(Out::Line(Style::Info, text.into()));
    }

    fn fetch_history(&mut self) {
        self.history_since = Some(Instant::now());
        self.conn
            .send(&json!({"type": "get_messages", "id": HISTORY_ID}));
    }

    fn release_held(&mut self, history_arrived: bool) {
        self.history_since = None;
        let covered = std::mem::take(&mut self.history_covers_held) && history_arrived;
        for v in std::mem::take(&mut self.held) {
            if covered && !questions::is_question(&v) && v["type"] != "amarre.question_resolved" {
                // Keep the turn's state; the history already shows the text.
                let _ = self.renderer.record(&v);
                self.renderer.discard_stream();
            } else {
                self.record(v);
            }
        }
    }

    /// One connection event.
    fn event(&mut self, e: Event) -> Flow {
        match e {
            Event::Connected { again, hello } => {
                self.state = ConnState::Connected;
                if again {
                    self.info("[reconnected]");
                } else {
                    let adapter = hello["adapter"]["name"].as_str().unwrap_or("agent");
                    let text = format!("[attached to {} · {adapter}]", self.label);
                    self.info(text);
                    self.fetch_history();
                }
            }
            Event::Disconnected { reason, .. } => {
                if self.state != ConnState::Ended {
                    if !matches!(self.state, ConnState::Reconnecting(_)) {
                        self.info(format!("[connection lost: {reason}; reconnecting]"));
                    }
                    self.state = ConnState::Reconnecting(reason);
                }
            }
            Event::Gap { from, to } => {
                self.info(format!(
                    "[records {from} to {to} are no longer kept by the daemon; the history follows]"
                ));
                self.history_covers_held = true;
                self.fetch_history();
            }
            // A question repeated on a new socket is recognised by its id.
            Event::Record { record, .. } => {
                if self.history_since.is_some() {
                    if record["type"] == "response" && record["id"] == HISTORY_ID {
                        self.history(&record);
                        self.release_held(record["success"] != false);
                    } else {
                        self.held.push(record);
                    }
                } else {
                    self.record(record);
                }
            }
            Event::Ended(end) => {
                self.state = ConnState::Ended;
                let (msg, code) = match end {
                    End::Crashed => (
                        "the agent exited; restart the session with `amarre sessions restart`"
                            .to_owned(),
                        exit::FAILURE,
                    ),
                    End::Gone => ("the session was deleted".to_owned(), exit::FAILURE),
                    End::NotRunning(why) => {
                        (format!("the session is not running: {why}"), exit::FAILURE)
                    }
                    End::Unauthorized => (
                        "the daemon refused the token (unauthorized)".to_owned(),
                        exit::UNAUTHORIZED,
                    ),
                    End::Closed => return Flow::Exit(exit::OK),
                };
                if !self.held.is_empty() {
                    self.release_held(false);
                }
                self.screen.out(Out::Line(Style::Error, format!("[{msg}]")));
                return Flow::Exit(code);
            }
        }
        Flow::Continue
    }

    fn history(&mut self, resp: &Value) {
        let messages = resp["data"]["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if resp["success"] == false {
            self.info(format!(
                "[no history: {}]",
                resp["error"]
                    .as_str()
                    .unwrap_or("the agent did not give it")
            ));
            return;
        }
        if messages.is_empty() {
            return;
        }
        self.info(format!("── history: {} messages ──", messages.len()));
        let mut outs = Vec::new();
        for m in &messages {
            self.renderer.history_message(m, &mut outs);
        }
        self.show(outs);
        self.info("── live ──");
    }

    fn record(&mut self, v: Value) {
        if v["type"] == "response" && v["id"] == HISTORY_ID {
            return;
        }
        if questions::is_question(&v) {
            let id = v["id"].as_str().unwrap_or_default().to_owned();
            let known =
                self.answered.contains(&id) || self.questions.iter().any(|q| q["id"] == v["id"]);
            if !known {
                self.questions.push_back(v);
            }
            return;
        }
        if v["type"] == "amarre.question_resolved" {
            if let Some(id) = v["id"].as_str() {
                self.answered.insert(id.to_owned());
                self.questions.retain(|q| q["id"] != v["id"]);
            }
            return;
        }
        if v["type"] == "agent_end" || v["type"] == "amarre.session_event" {
            // A turn's end withdraws what the agent was still asking.
            for q in self.questions.drain(..) {
                if let Some(id) = q["id"].as_str() {
                    self.answered.insert(id.to_owned());
                }
            }
        }
        let outs = self.renderer.record(&v);
        self.show(outs);
    }

    fn answer(&mut self, response: Value, shown: String) {
        if let Some(q) = self.questions.pop_front() {
            if let Some(id) = q["id"].as_str() {
                self.answered.insert(id.to_owned());
            }
            self.conn.send(&response);
            self.info(format!("[answered: {shown}]"));
        }
        self.answer.reset();
    }

    fn send_prompt(&mut self, text: String) {
        let id = self.request_id("prompt");
        let mut record = json!({"type": "prompt", "id": id, "message": text});
        if self.renderer.busy {
            record["streamingBehavior"] = json!("followUp");
        }
        self.conn.send(&record);
        if self.state != ConnState::Connected {
            self.info("[not connected: the prompt is sent once the connection is back]");
        }
    }

    fn ctrl_c(&mut self) -> Flow {
        // A second Ctrl-C (with no other key between) detaches.
        if self.ctrl_c_at.is_some() {
            self.info("[detached; the agent keeps running]");
            return Flow::Exit(exit::OK);
        }
        self.ctrl_c_at = Some(Instant::now());
        if self.renderer.busy {
            let id = self.request_id("abort");
            self.conn.send(&json!({"type": "abort", "id": id}));
            self.info("[abort sent; Ctrl-C again to detach]");
        } else {
            self.info("[Ctrl-C again to detach]");
        }
        Flow::Continue
    }

    fn status(&self) -> String {
        let conn = match &self.state {
            ConnState::Connecting => "connecting".to_owned(),
            ConnState::Connected => "connected".to_owned(),
            ConnState::Reconnecting(_) => "reconnecting".to_owned(),
            ConnState::Ended => "ended".to_owned(),
        };
        let activity = if self.renderer.busy {
            "running"
        } else {
            "idle"
        };
        let hint = if self.ctrl_c_at.is_some() {
            "Ctrl-C again: detach"
        } else if self.renderer.busy {
            "Ctrl-C: abort"
        } else {
            "Enter: send · Ctrl-C twice: detach"
        };
        format!(" {} · {conn} · {activity} · {hint} ", self.label)
    }

    /// The live rows: the open question, the status row; the input row is
    /// drawn by the screen.
    fn live(&self) -> Live {
        let mut rows = Vec::new();
        let mut prompt = "> ".to_owned();
        let mut answering = false;
        if let Some(q) = self.questions.front() {
            rows.extend(questions::describe(q).into_iter().map(|l| (Style::Tool, l)));
            let more = if self.questions.len() > 1 {
                format!(" ({} more waiting)", self.questions.len() - 1)
            } else {
                String::new()
            };
            let hint = match q["method"].as_str() {
                Some("confirm") => format!("  [y] yes  [n] no  [Esc] cancel{more}"),
                Some("select") => format!(
                    "  press 1-{} to choose, [Esc] cancel{more}",
                    questions::options(q).len()
                ),
                _ => {
                    answering = true;
                    prompt = "answer> ".to_owned();
                    format!("  type the answer, Enter sends, [Esc] cancel{more}")
                }
            };
            rows.push((Style::Tool, hint));
        }
        rows.push((Style::Info, self.status()));
        let input = if answering { &self.answer } else { &self.input };
        Live {
            rows,
            prompt,
            input: input.clone(),
        }
    }

    fn key(&mut self, key: KeyEvent, raw: &TermEvent) -> Flow {
        if key.kind == KeyEventKind::Release {
            return Flow::Continue;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return self.ctrl_c();
        }
        self.ctrl_c_at = None;
        if ctrl && key.code == KeyCode::Char('d') && self.input.value().is_empty() {
            self.info("[detached; the agent keeps running]");
            return Flow::Exit(exit::OK);
        }
        if let Some(q) = self.questions.front().cloned() {
            let method = q["method"].as_str().unwrap_or("");
            if key.code == KeyCode::Esc {
                self.answer(questions::cancel(&q), "cancelled".into());
                return Flow::Continue;
            }
            match method {
                "confirm" => match key.code {
                    KeyCode::Char('y') | KeyCode::Char('Y') => {
                        self.answer(questions::confirm(&q, true), "yes".into())
                    }
                    KeyCode::Char('n') | KeyCode::Char('N') => {
                        self.answer(questions::confirm(&q, false), "no".into())
                    }
                    _ => {}
                },
                "select" => {
                    if let KeyCode::Char(c) = key.code
                        && let Some(n) = c.to_digit(10)
                    {
                        let opts = questions::options(&q);
                        if n >= 1 && (n as usize) <= opts.len() {
                            let o = opts[n as usize - 1].clone();
                            self.answer(questions::value(&q, &o), o);
                        }
                    }
                }
                _ => {
                    if key.code == KeyCode::Enter {
                        let v = self.answer.value().to_owned();
                        self.answer(questions::value(&q, &v), v.clone());
                    } else {
                        self.answer.handle_event(raw);
                    }
                }
            }
            return Flow::Continue;
        }
        if key.code == KeyCode::Enter {
            let text = self.input.value().trim().to_owned();
            self.input.reset();
            if !text.is_empty() {
                self.send_prompt(text);
            }
        } else {
            self.input.handle_event(raw);
        }
        Flow::Continue
    }

    async fn run_tty(&mut self) -> i32 {
        let mut keys = EventStream::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        // SIGTERM or SIGHUP (the terminal went away) detach cleanly, so the
        // terminal is restored.
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            eprintln!("amarre: cannot watch for signals");
            return exit::FAILURE;
        };
        self.screen.redraw(&self.live());
        loop {
            let flow = tokio::select! {
                _ = term.recv() => Flow::Exit(exit::OK),
                _ = hup.recv() => Flow::Exit(exit::OK),
                e = self.conn.events.recv() => match e {
                    Some(e) => self.event(e),
                    None => Flow::Exit(exit::FAILURE),
                },
                k = keys.next() => match k {
                    Some(Ok(ev)) => match &ev {
                        TermEvent::Key(key) => self.key(*key, &ev),
                        TermEvent::Resize(w, _) => {
                            self.screen.resize(*w);
                            Flow::Continue
                        }
                        TermEvent::Paste(text) => {
                            let target = if self.questions.front().is_some_and(|q| !matches!(q["method"].as_str(), Some("confirm" | "select"))) {
                                &mut self.answer
                            } else {
                                &mut self.input
                            };
                            for c in text.chars() {
                                let c = if c == '\r' || c == '\n' { ' ' } else { c };
                                target.handle(tui_input::InputRequest::InsertChar(c));
                            }
                            Flow::Continue
                        }
                        _ => Flow::Continue,
                    },
                    Some(Err(_)) | None => Flow::Exit(exit::OK),
                },
                _ = tick.tick() => {
                    if self.history_since.is_some_and(|t| t.elapsed() > HISTORY_WAIT) {
                        self.info("[the agent did not send its history]");
                        self.release_held(false);
                    }
                    Flow::Continue
                }
            };
            if let Flow::Exit(code) = flow {
                self.screen.redraw(&self.live());
                return code;
            }
            // Draw once the burst of ready events is handled.
            while let Ok(e) = self.conn.events.try_recv() {
                if let Flow::Exit(code) = self.event(e) {
                    self.screen.redraw(&self.live());
                    return code;
                }
            }
            self.screen.redraw(&self.live());
        }
    }

    async fn run_plain(&mut self) -> i32 {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut stdin_open = true;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut shown_question: Option<Value> = None;
        let mut sigint =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("amarre: cannot watch for Ctrl-C: {e}");
                    return exit::FAILURE;
                }
            };
        loop {
            let flow = tokio::select! {
                e = self.conn.events.recv() => match e {
                    Some(e) => self.event(e),
                    None => Flow::Exit(exit::FAILURE),
                },
                l = lines.next_line(), if stdin_open => match l {
                    Ok(Some(line)) => self.plain_line(line),
                    _ => {
                        stdin_open = false;
                        Flow::Continue
                    }
                },
                _ = sigint.recv() => self.ctrl_c(),
                _ = tick.tick() => {
                    if self.history_since.is_some_and(|t| t.elapsed() > HISTORY_WAIT) {
                        self.info("[the agent did not send its history]");
                        self.release_held(false);
                    }
                    Flow::Continue
                }
            };
            if self.questions.front() != shown_question.as_ref() {
                shown_question = self.questions.front().cloned();
                if let Some(q) = &shown_question {
                    let hint = match q["method"].as_str() {
                        Some("confirm") => "  answer y or n".to_owned(),
                        Some("select") => "  answer with a number".to_owned(),
                        _ => "  type the answer (an empty line cancels)".to_owned(),
                    };
                    for l in questions::describe(q).into_iter().chain([hint]) {
                        self.screen.out(Out::Line(Style::Tool, l));
                    }
                }
            }
            if let Flow::Exit(code) = flow {
                return code;
            }
        }
    }

    fn plain_line(&mut self, line: String) -> Flow {
        let text = line.trim().to_owned();
        let Some(q) = self.questions.front().cloned() else {
            if !text.is_empty() {
                self.send_prompt(text);
            }
            return Flow::Continue;
        };
        match q["method"].as_str() {
            Some("confirm") => match text.to_ascii_lowercase().as_str() {
                "y" | "yes" => self.answer(questions::confirm(&q, true), "yes".into()),
                "n" | "no" => self.answer(questions::confirm(&q, false), "no".into()),
                _ => self.info("[answer y or n]"),
            },
            Some("select") => {
                let opts = questions::options(&q);
                match text.parse::<usize>() {
                    Ok(n) if n >= 1 && n <= opts.len() => {
                        let o = opts[n - 1].clone();
                        self.answer(questions::value(&q, &o), o);
                    }
                    _ => self.info(format!("[answer with a number from 1 to {}]", opts.len())),
                }
            }
            _ if text.is_empty() => self.answer(questions::cancel(&q), "cancelled".into()),
            _ => self.answer(questions::value(&q, &line), line.clone()),
        }
        Flow::Continue
    }
}

/// The live rows to draw under the conversation.
struct Live {
    /// The question's rows, then the status row (drawn in reverse video).
    rows: Vec<(Style, String)>,
    prompt: String,
    input: Input,
}

enum Screen {
    Tty(Tty),
    Plain(Plain),
}

impl Screen {
    fn out(&mut self, o: Out) {
        match self {
            Screen::Tty(t) => t.out(o),
            Screen::Plain(p) => p.out(o),
        }
    }

    fn redraw(&mut self, live: &Live) {
        if let Screen::Tty(t) = self {
            t.redraw(live);
        }
    }

    fn resize(&mut self, width: u16) {
        if let Screen::Tty(t) = self {
            t.width = width.max(20);
        }
    }

    fn finish(&mut self) {
        match self {
            Screen::Tty(t) => t.finish(),
            Screen::Plain(p) => p.out(Out::EndText),
        }
    }
}

/// Plain lines on stdout.
#[derive(Default)]
struct Plain {
    mid_line: bool,
}

impl Plain {
    fn out(&mut self, o: Out) {
        let mut stdout = std::io::stdout().lock();
        match o {
            Out::Line(_, text) => {
                if self.mid_line {
                    let _ = writeln!(stdout);
                    self.mid_line = false;
                }
                let _ = writeln!(stdout, "{text}");
            }
            Out::Delta(d) => {
                let _ = write!(stdout, "{d}");
                self.mid_line = !d.ends_with('\n');
            }
            Out::EndText => {
                if self.mid_line {
                    let _ = writeln!(stdout);
                    self.mid_line = false;
                }
            }
        }
        let _ = stdout.flush();
    }
}

/// The terminal: lines committed to the scrollback, live rows redrawn.
struct Tty {
    width: u16,
    /// The assistant's line being streamed (not yet committed).
    partial: String,
    /// Lines to commit at the next redraw.
    pending: Vec<(Style, String)>,
    /// Row of the cursor within the live rows drawn last.
    cursor_row: u16,
}

fn display_width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// Cuts `s` to at most `max` columns.
fn fit(s: &str, max: usize) -> String {
    let mut w = 0;
    let mut out = String::new();
    for c in s.chars() {
        let cw = c.width().unwrap_or(0);
        if w + cw > max {
            break;
        }
        w += cw;
        out.push(c);
    }
    out
}

/// Wraps one line (no newline inside) to `width` columns, at spaces when
/// it can.
pub fn wrap(line: &str, width: usize) -> Vec<String> {
    let width = width.max(10);
    let mut rows = Vec::new();
    let mut rest = line.to_owned();
    while display_width(&rest) > width {
        let head = fit(&rest, width);
        let cut = match head.rfind(' ') {
            Some(i) if i > 0 && display_width(&head[..i]) > width / 3 => i,
            _ => head.len(),
        };
        rows.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start_matches(' ').to_owned();
    }
    rows.push(rest);
    rows
}

fn style_of(style: Style) -> (Option<Color>, Option<Attribute>) {
    match style {
        Style::User => (Some(Color::Cyan), Some(Attribute::Bold)),
        Style::Assistant => (None, None),
        Style::Tool => (Some(Color::Yellow), None),
        Style::ToolOutput => (Some(Color::DarkGrey), None),
        Style::Info => (Some(Color::DarkGrey), None),
        Style::Error => (Some(Color::Red), None),
    }
}

impl Tty {
    fn new() -> Tty {
        let width = terminal::size().map(|(w, _)| w).unwrap_or(80).max(20);
        Tty {
            width,
            partial: String::new(),
            pending: Vec::new(),
            cursor_row: 0,
        }
    }

    fn cols(&self) -> usize {
        // One column spare: a row that fills the width exactly would leave
        // some terminals waiting to wrap.
        usize::from(self.width).saturating_sub(1).max(10)
    }

    fn commit(&mut self, style: Style, line: &str) {
        for row in wrap(line, self.cols()) {
            self.pending.push((style, row));
        }
    }

    fn out(&mut self, o: Out) {
        match o {
            Out::Line(style, text) => {
                self.flush_partial();
                self.commit(style, &text);
            }
            Out::Delta(d) => {
                self.partial.push_str(&d);
                while let Some(i) = self.partial.find('\n') {
                    let line: String = self.partial[..i].trim_end_matches('\r').to_owned();
                    self.partial.drain(..=i);
                    self.commit(Style::Assistant, &line);
                }
                // Rows that are already full go to the scrollback.
                let cols = self.cols();
                if display_width(&self.partial) > cols {
                    let mut rows = wrap(&self.partial, cols);
                    let last = rows.pop().unwrap_or_default();
                    for r in rows {
                        self.pending.push((Style::Assistant, r));
                    }
                    self.partial = last;
                }
            }
            Out::EndText => self.flush_partial(),
        }
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let p = std::mem::take(&mut self.partial);
            self.commit(Style::Assistant, &p);
        }
    }

    fn styled(out: &mut impl Write, style: Style, text: &str) {
        let (color, attr) = style_of(style);
        if let Some(c) = color {
            let _ = queue!(out, SetForegroundColor(c));
        }
        if let Some(a) = attr {
            let _ = queue!(out, SetAttribute(a));
        }
        let _ = queue!(out, Print(text), SetAttribute(Attribute::Reset));
    }

    fn redraw(&mut self, live: &Live) {
        let mut out = std::io::stdout().lock();
        let cols = self.cols();
        let _ = queue!(out, cursor::Hide, cursor::MoveToColumn(0));
        if self.cursor_row > 0 {
            let _ = queue!(out, cursor::MoveUp(self.cursor_row));
        }
        let _ = queue!(out, terminal::Clear(terminal::ClearType::FromCursorDown));
        for (style, line) in self.pending.drain(..) {
            Self::styled(&mut out, style, &line);
            let _ = queue!(out, Print("\r\n"));
        }
        let height = terminal::size().map(|(_, h)| h).unwrap_or(24).max(4) as usize;
        let mut rows: Vec<(Style, String)> = Vec::new();
        if !self.partial.is_empty() {
            rows.push((Style::Assistant, fit(&self.partial, cols)));
        }
        rows.extend(live.rows.iter().map(|(s, t)| (*s, fit(t, cols))));
        // Keep the status and input rows on screen whatever the question.
        while rows.len() + 1 > height.saturating_sub(1) && rows.len() > 1 {
            rows.remove(0);
        }
        let last = rows.len().saturating_sub(1);
        for (i, (style, row)) in rows.iter().enumerate() {
            if i == last {
                let _ = queue!(
                    out,
                    SetAttribute(Attribute::Reverse),
                    Print(row),
                    SetAttribute(Attribute::Reset)
                );
            } else {
                Self::styled(&mut out, *style, row);
            }
            let _ = queue!(out, Print("\r\n"));
        }
        // The input row, scrolled so the cursor is visible.
        let prompt_w = display_width(&live.prompt);
        let room = cols.saturating_sub(prompt_w).max(1);
        let scroll = live.input.visual_scroll(room);
        let cursor_col = live.input.visual_cursor();
        let visible: String = {
            let mut w = 0;
            let mut s = String::new();
            for c in live.input.value().chars() {
                let cw = c.width().unwrap_or(0);
                if w >= scroll && w + cw <= scroll + room {
                    s.push(c);
                }
                w += cw;
            }
            s
        };
        let _ = queue!(
            out,
            SetAttribute(Attribute::Bold),
            Print(&live.prompt),
            SetAttribute(Attribute::Reset),
            Print(&visible),
            cursor::MoveToColumn((prompt_w + cursor_col.saturating_sub(scroll)) as u16),
            cursor::Show
        );
        self.cursor_row = rows.len() as u16;
        let _ = out.flush();
    }

    fn finish(&mut self) {
        self.flush_partial();
        let mut out = std::io::stdout().lock();
        let _ = queue!(out, cursor::MoveToColumn(0));
        if self.cursor_row > 0 {
            let _ = queue!(out, cursor::MoveUp(self.cursor_row));
        }
        let _ = queue!(out, terminal::Clear(terminal::ClearType::FromCursorDown));
        for (style, line) in self.pending.drain(..) {
            Self::styled(&mut out, style, &line);
            let _ = queue!(out, Print("\r\n"));
        }
        self.cursor_row = 0;
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wrap_at_spaces_within_the_width() {
        let rows = wrap("the quick brown fox jumps over the lazy dog", 16);
        assert_eq!(
            rows,
            vec!["the quick brown", "fox jumps over", "the lazy dog"]
        );
        for r in wrap(&"x".repeat(50), 20) {
            assert!(display_width(&r) <= 20);
        }
        assert_eq!(wrap("", 20), vec![""]);
    }
}

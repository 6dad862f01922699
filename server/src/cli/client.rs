//! The client commands: `amarre attach`, `new`, `send`, `approve`. Each
//! talks to a daemon only through the public protocol ([`crate::client`]).

use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};

use crate::client::api::{ClientOpts, NewSession};
use crate::client::conn::{Conn, End, Event};
use crate::client::render::{Renderer, failure_of};
use crate::client::{Api, ClientError, exit, questions, tui};

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The session's id or name.
    pub session: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// Flags of `amarre new` and `amarre sessions new` (one implementation).
#[derive(Debug, Args, Clone, Default)]
pub struct NewArgs {
    /// The instance (default: the daemon's default instance).
    #[arg(long)]
    pub instance: Option<String>,
    /// A name to find the session by.
    #[arg(long)]
    pub name: Option<String>,
    /// The working directory, which must exist [default: the current
    /// directory when the daemon is local, else the daemon's].
    #[arg(long)]
    pub cwd: Option<String>,
    /// Environment for the agent, `KEY=VALUE` (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NewCmdArgs {
    #[command(flatten)]
    pub new: NewArgs,
    /// Attach to the new session instead of printing its id.
    #[arg(long)]
    pub attach: bool,
    /// Print the session's summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The session's id or name.
    pub session: String,
    /// The prompt.
    pub prompt: String,
    /// Wait for the turn to end and print the assistant's final text (exit 1
    /// when the turn failed, 3 when the agent asked a question).
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The session's id or name.
    pub session: String,
    /// Deny instead of allowing.
    #[arg(long)]
    pub deny: bool,
    /// Answer every pending question (default: the oldest one).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

fn code(r: Result<i32, ClientError>) -> i32 {
    r.unwrap_or_else(|e| e.report())
}

/// Whether a base URL is this machine's.
fn is_local(api: &Api) -> bool {
    let host = api
        .base
        .split("://")
        .nth(1)
        .unwrap_or("")
        .trim_start_matches('[');
    host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("::1]")
}

/// `POST /sessions` from the flags: the one implementation of `amarre new`
/// and `amarre sessions new`.
pub async fn create(api: &Api, args: &NewArgs) -> Result<Value, ClientError> {
    let mut env = serde_json::Map::new();
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(ClientError::Usage(format!(
                "--env takes KEY=VALUE, got `{kv}`"
            )));
        };
        env.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    let cwd = match &args.cwd {
        Some(c) => Some(match std::path::Path::new(c) {
            p if p.is_relative() && is_local(api) => std::env::current_dir()
                .map(|d| d.join(p).display().to_string())
                .unwrap_or_else(|_| c.clone()),
            _ => c.clone(),
        }),
        None if is_local(api) => std::env::current_dir()
            .ok()
            .map(|d| d.display().to_string()),
        None => None,
    };
    api.create_session(&NewSession {
        instance: args.instance.clone(),
        name: args.name.clone(),
        cwd,
        env,
    })
    .await
}

pub async fn attach(args: AttachArgs) -> i32 {
    code(
        async {
            let api = Api::new(&args.client)?;
            let summary = api.resolve(&args.session).await?;
            if summary["status"] != "running" {
                return Err(ClientError::Failure(format!(
                    "the session {} is {}; restart it with `amarre sessions restart {}`",
                    args.session,
                    summary["status"].as_str().unwrap_or("not running"),
                    summary["id"].as_str().unwrap_or("?")
                )));
            }
            Ok(tui::attach(api, summary).await)
        }
        .await,
    )
}

pub async fn new(args: NewCmdArgs) -> i32 {
    code(
        async {
            let api = Api::new(&args.client)?;
            let summary = create(&api, &args.new).await?;
            if args.attach {
                return Ok(tui::attach(api, summary).await);
            }
            if args.json {
                println!("{summary}");
            } else {
                println!("{}", summary["id"].as_str().unwrap_or(""));
            }
            Ok(exit::OK)
        }
        .await,
    )
}

/// Waits for the first connection of `conn`; a drop before it is an error.
async fn connected(conn: &mut Conn, api: &Api) -> Result<(), ClientError> {
    loop {
        match tokio::time::timeout(Duration::from_secs(15), conn.events.recv()).await {
            Err(_) => {
                return Err(ClientError::Unreachable {
                    url: api.base.clone(),
                    detail: "the WebSocket did not open within 15 s".into(),
                });
            }
            Ok(Some(Event::Connected { .. })) => return Ok(()),
            Ok(Some(Event::Disconnected { reason, .. })) => {
                return Err(ClientError::Unreachable {
                    url: api.base.clone(),
                    detail: reason,
                });
            }
            Ok(Some(Event::Ended(end))) => return Err(ended(end, api)),
            Ok(Some(_)) => continue,
            Ok(None) => return Err(ClientError::Failure("the connection ended".into())),
        }
    }
}

fn ended(end: End, api: &Api) -> ClientError {
    match end {
        End::Crashed => ClientError::Failure("the agent exited (the session crashed)".into()),
        End::Gone => ClientError::NotFound("the session no longer exists".into()),
        End::NotRunning(why) => ClientError::Failure(format!("the session is not running: {why}")),
        End::Unauthorized => api.unauthorized_error(),
        End::Closed => ClientError::Failure("the connection was closed".into()),
    }
}

fn print_question(q: &Value) {
    for l in questions::describe(q) {
        println!("{l}");
    }
    println!(
        "(the agent waits for an answer: `amarre approve` or `amarre attach`; question id {})",
        q["id"].as_str().unwrap_or("?")
    );
}

pub async fn send(args: SendArgs) -> i32 {
    code(send_inner(args).await)
}

async fn send_inner(args: SendArgs) -> Result<i32, ClientError> {
    let api = Api::new(&args.client)?;
    let summary = api.resolve(&args.session).await?;
    let id = summary["id"].as_str().unwrap_or_default().to_owned();
    let mut conn = Conn::open(api.clone(), id);
    connected(&mut conn, &api).await?;
    let prompt_id = format!("amarre-send-{}", uuid::Uuid::new_v4().simple());
    conn.send(&json!({"type": "prompt", "id": prompt_id, "message": args.prompt}));
    let mut renderer = Renderer::default();
    let mut started = false;
    // Without --wait: the agent's acknowledgement, if it gives one soon.
    let ack_wait = if args.wait {
        None
    } else {
        Some(tokio::time::Instant::now() + Duration::from_secs(10))
    };
    let result = loop {
        let next = match ack_wait {
            Some(deadline) => match tokio::time::timeout_at(deadline, conn.events.recv()).await {
                Ok(e) => e,
                Err(_) => break Ok(exit::OK),
            },
            None => conn.events.recv().await,
        };
        let Some(event) = next else {
            break Err(ClientError::Failure("the connection ended".into()));
        };
        match event {
            Event::Record { record: v, .. } => {
                if v["type"] == "response" && v["id"] == prompt_id.as_str() {
                    if v["success"] == false {
                        break Err(ClientError::Failure(format!(
                            "the agent refused the prompt: {}",
                            v["error"].as_str().unwrap_or("no reason given")
                        )));
                    }
                    started = true;
                    if !args.wait {
                        break Ok(exit::OK);
                    }
                    continue;
                }
                if !args.wait {
                    continue;
                }
                if questions::is_question(&v) {
                    print_question(&v);
                    break Ok(exit::QUESTION);
                }
                if v["type"] == "agent_start" {
                    started = true;
                }
                let ended_turn = v["type"] == "agent_end" && started;
                let _ = renderer.record(&v);
                if v["type"] == "amarre.session_event" && v["event"] == "crashed" {
                    break Err(ClientError::Failure(
                        "the agent exited during the turn".into(),
                    ));
                }
                if ended_turn {
                    let last = v["messages"]
                        .as_array()
                        .and_then(|ms| ms.iter().rev().find(|m| m["role"] == "assistant"))
                        .cloned()
                        .unwrap_or(Value::Null);
                    if !renderer.last_text.is_empty() {
                        println!("{}", renderer.last_text);
                    }
                    break match failure_of(&last) {
                        Some(why) => Err(ClientError::Failure(format!("the turn failed: {why}"))),
                        None => Ok(exit::OK),
                    };
                }
            }
            Event::Ended(end) => break Err(ended(end, &api)),
            Event::Gap { .. } | Event::Connected { .. } | Event::Disconnected { .. } => {}
        }
    };
    conn.close().await;
    result
}

pub async fn approve(args: ApproveArgs) -> i32 {
    code(approve_inner(args).await)
}

async fn approve_inner(args: ApproveArgs) -> Result<i32, ClientError> {
    let api = Api::new(&args.client)?;
    let summary = api.resolve(&args.session).await?;
    let id = summary["id"].as_str().unwrap_or_default().to_owned();
    let mut conn = Conn::open(api.clone(), id.clone());
    connected(&mut conn, &api).await?;
    // Pending questions arrive right after attaching (PROTOCOL.md 11);
    // collect until the socket has been quiet for a moment.
    let mut pending: Vec<Value> = Vec::new();
    let hard_stop = tokio::time::Instant::now() + Duration::from_secs(3);
    // A 2.4.0 summary says how many there are (`pendingQuestions`).
    let expected = summary["pendingQuestions"].as_u64().filter(|n| *n > 0);
    loop {
        if expected.is_some_and(|n| pending.len() as u64 >= n) {
            break;
        }
        let quiet = tokio::time::Instant::now() + Duration::from_millis(400);
        match tokio::time::timeout_at(quiet.min(hard_stop), conn.events.recv()).await {
            Err(_) => break,
            Ok(Some(Event::Record { record, .. })) => {
                if questions::is_question(&record) {
                    if !pending.iter().any(|q| q["id"] == record["id"]) {
                        pending.push(record);
                    }
                } else if record["type"] == "amarre.question_resolved" {
                    pending.retain(|q| q["id"] != record["id"]);
                }
            }
            Ok(Some(Event::Ended(end))) => return Err(ended(end, &api)),
            Ok(Some(_)) => {}
            Ok(None) => break,
        }
    }
    if pending.is_empty() {
        eprintln!("amarre: session {id} has no pending question");
        conn.close().await;
        return Ok(exit::OK);
    }
    let take = if args.all { pending.len() } else { 1 };
    let mut left = 0;
    for q in pending.iter().take(take) {
        let title = q["title"].as_str().unwrap_or("question");
        match questions::approve(q, !args.deny) {
            Some(answer) => {
                conn.send(&answer);
                let what = match (&answer["confirmed"], &answer["value"], &answer["cancelled"]) {
                    (Value::Bool(true), _, _) => "allowed".to_owned(),
                    (Value::Bool(false), _, _) => "denied".to_owned(),
                    (_, Value::String(v), _) => format!("answered `{v}`"),
                    _ => "cancelled".to_owned(),
                };
                println!("{what}: {title} ({})", q["id"].as_str().unwrap_or("?"));
            }
            None => {
                left += 1;
                println!(
                    "left unanswered: {title} ({}) needs a typed answer: use `amarre attach`, or --deny to cancel it",
                    q["id"].as_str().unwrap_or("?")
                );
            }
        }
    }
    conn.close().await;
    Ok(if left > 0 { exit::QUESTION } else { exit::OK })
}

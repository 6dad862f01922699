//! `amarre sessions`: the sessions of a running daemon over its REST API
//! (`--url`, default `http://127.0.0.1:8341`).

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{EXIT_CONFIG, EXIT_FAILURE};

#[derive(Debug, Args)]
pub struct SessionsArgs {
    #[command(subcommand)]
    command: Option<SessionsCommand>,
    /// The daemon to talk to.
    #[arg(long, default_value = "http://127.0.0.1:8341", global = true)]
    url: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// The daemon's token file (AMARRE_AUTH=token) [default: AMARRE_TOKEN,
    /// else the local daemon's token file].
    #[arg(long, global = true)]
    token_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// List sessions (the default).
    List,
    /// Create a session.
    New {
        /// The instance (default: the daemon's default instance).
        #[arg(long)]
        instance: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// The working directory (must exist).
        #[arg(long)]
        cwd: Option<String>,
        /// Environment for the agent, `KEY=VALUE` (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
    },
    /// Delete a session (its agent is terminated).
    Rm { id: String },
    /// Restart a session that is not running.
    Restart { id: String },
}

fn client(token_file: Option<&std::path::Path>) -> Result<reqwest::Client, i32> {
    crate::auth::http_client(token_file).map_err(|e| {
        eprintln!("amarre: {e}");
        EXIT_CONFIG
    })
}

async fn call(req: reqwest::RequestBuilder, url: &str) -> Result<(u16, Value), i32> {
    let resp = req.send().await.map_err(|e| {
        eprintln!("amarre: cannot reach the daemon at {url}: {e}");
        EXIT_FAILURE
    })?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

fn print_table(list: &[Value]) {
    println!(
        "{:<12} {:<9} {:<12} {:<12} {:>7} {:>8}  name",
        "id", "status", "instance", "agent", "clients", "pid"
    );
    for s in list {
        let pid = s["pid"]
            .as_u64()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<12} {:<9} {:<12} {:<12} {:>7} {:>8}  {}",
            s["id"].as_str().unwrap_or(""),
            s["status"].as_str().unwrap_or(""),
            s["instanceId"].as_str().unwrap_or(""),
            s["agent"].as_str().unwrap_or(""),
            s["clients"].as_u64().unwrap_or(0),
            pid,
            s["name"].as_str().unwrap_or("")
        );
    }
}

fn fail(status: u16, body: &Value) -> i32 {
    eprintln!("amarre: the daemon answered {status}: {body}");
    EXIT_FAILURE
}

pub async fn run(args: SessionsArgs) -> i32 {
    match run_inner(args).await {
        Ok(()) => 0,
        Err(code) => code,
    }
}

async fn run_inner(args: SessionsArgs) -> Result<(), i32> {
    let base = args.url.trim_end_matches('/').to_owned();
    let http = client(args.token_file.as_deref())?;
    match args.command.unwrap_or(SessionsCommand::List) {
        SessionsCommand::List => {
            let (st, body) = call(http.get(format!("{base}/sessions")), &base).await?;
            if st != 200 {
                return Err(fail(st, &body));
            }
            if args.json {
                println!("{body}");
            } else {
                print_table(body.as_array().map(Vec::as_slice).unwrap_or(&[]));
            }
        }
        SessionsCommand::New {
            instance,
            name,
            cwd,
            env,
        } => {
            let mut vars = serde_json::Map::new();
            for kv in env {
                let Some((k, v)) = kv.split_once('=') else {
                    eprintln!("amarre: --env takes KEY=VALUE, got `{kv}`");
                    return Err(EXIT_CONFIG);
                };
                vars.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            let mut body = json!({"env": vars});
            if let Some(i) = instance {
                body["instanceId"] = i.into();
            }
            if let Some(n) = name {
                body["name"] = n.into();
            }
            if let Some(c) = cwd {
                body["cwd"] = c.into();
            }
            let (st, resp) = call(http.post(format!("{base}/sessions")).json(&body), &base).await?;
            if st != 201 {
                return Err(fail(st, &resp));
            }
            if args.json {
                println!("{resp}");
            } else {
                println!("{}", resp["id"].as_str().unwrap_or(""));
            }
        }
        SessionsCommand::Rm { id } => {
            let (st, resp) = call(http.delete(format!("{base}/sessions/{id}")), &base).await?;
            if st != 204 {
                return Err(fail(st, &resp));
            }
        }
        SessionsCommand::Restart { id } => {
            let (st, resp) =
                call(http.post(format!("{base}/sessions/{id}/restart")), &base).await?;
            if st != 200 {
                return Err(fail(st, &resp));
            }
            if args.json {
                println!("{resp}");
            } else {
                print_table(std::slice::from_ref(&resp));
            }
        }
    }
    Ok(())
}

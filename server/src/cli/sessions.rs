//! `amarre sessions`: the sessions of a running daemon over its REST API
//! (`--url`, default: the local daemon of the configuration; the token as
//! PROTOCOL.md 12.5 says).

use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{NewArgs, create};
use crate::client::api::ClientOpts;
use crate::client::{Api, ClientError};

#[derive(Debug, Args)]
pub struct SessionsArgs {
    #[command(subcommand)]
    command: Option<SessionsCommand>,
    #[command(flatten)]
    client: ClientOpts,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// List sessions (the default).
    List,
    /// Create a session (the same as `amarre new`).
    New(NewArgs),
    /// Delete a session (its agent is terminated).
    Rm { id: String },
    /// Restart a session that is not running.
    Restart { id: String },
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

pub async fn run(args: SessionsArgs) -> i32 {
    match run_inner(args).await {
        Ok(()) => 0,
        // `amarre sessions` keeps its exit codes: 2 for usage, else 1.
        Err(e) => match e.report() {
            crate::client::exit::USAGE => super::EXIT_CONFIG,
            _ => super::EXIT_FAILURE,
        },
    }
}

async fn run_inner(args: SessionsArgs) -> Result<(), ClientError> {
    let api = Api::new(&args.client)?;
    match args.command.unwrap_or(SessionsCommand::List) {
        SessionsCommand::List => {
            let list = api.sessions().await?;
            if args.json {
                println!("{}", Value::Array(list));
            } else {
                print_table(&list);
            }
        }
        SessionsCommand::New(new) => {
            let resp = create(&api, &new).await?;
            if args.json {
                println!("{resp}");
            } else {
                println!("{}", resp["id"].as_str().unwrap_or(""));
            }
        }
        SessionsCommand::Rm { id } => api.delete_session(&id).await?,
        SessionsCommand::Restart { id } => {
            let resp = api.restart_session(&id).await?;
            if args.json {
                println!("{resp}");
            } else {
                print_table(std::slice::from_ref(&resp));
            }
        }
    }
    Ok(())
}

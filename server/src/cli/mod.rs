//! The command line: `amarre serve`, `amarre adapters ...`, `--version`.
//! Parsing and dispatch only; each command lives in its own module.

pub mod adapters;
pub mod client;
pub mod config;
pub mod serve;
pub mod sessions;
pub mod token;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Exit code for a usage or configuration error.
pub const EXIT_CONFIG: i32 = 2;
/// Exit code for a failure at run time.
pub const EXIT_FAILURE: i32 = 1;

/// Parses the command line, runs the command and exits with its code.
pub fn main() -> ! {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("amarre: cannot start the async runtime: {e}");
            std::process::exit(EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Adapters(args) => adapters::run(args).await,
            Command::Config(args) => config::run(args),
            Command::Sessions(args) => sessions::run(args).await,
            Command::Token(args) => token::run_token(args),
            Command::Pair(args) => token::run_pair(args),
            Command::Attach(args) => client::attach(args).await,
            Command::New(args) => client::new(args).await,
            Command::Send(args) => client::send(args).await,
            Command::Approve(args) => client::approve(args).await,
        }
    });
    // Do not wait for detached tasks (sockets being closed) to finish.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}

#[derive(Debug, Parser)]
#[command(
    name = "amarre",
    version = crate::VERSION,
    about = "Drive CLI coding agents (pi, Claude Code, ...) from your phone over your private network",
    long_about = "amarre spawns coding agents, proxies their JSON-lines stdio over WebSockets, relays \
permission questions to the remote user and sends push notifications. Agent-specific logic lives in \
sandboxed WebAssembly adapters.\n\nConfiguration comes from flags, then AMARRE_* environment variables, \
then the configuration file, then defaults. See README.md and docs/PROTOCOL.md.\n\n\
Exit codes: 0 success, 1 failure at run time (or a failed check), 2 usage or configuration error. \
The client commands (attach, new, send, approve) add: 3 the agent asked a question (`send --wait`, \
printed unanswered; `approve` left one that needs typed text), 4 the daemon cannot be reached, \
5 no session has that id or name (or a name matches several), 6 unauthorized (token missing or \
refused). See docs/cli.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// The adapters a daemon has loaded; check, test, record and export components.
    Adapters(adapters::AdaptersArgs),
    /// Validate a configuration and print the effective one.
    Config(config::ConfigArgs),
    /// List, create, delete and restart sessions of a running daemon.
    Sessions(sessions::SessionsArgs),
    /// Print the local daemon's token (AMARRE_AUTH=token), or replace it with --rotate.
    Token(token::TokenArgs),
    /// Print the web client's pairing link and the same link as a QR code.
    Pair(token::PairArgs),
    /// Open a session in the terminal: its conversation, questions, prompts.
    Attach(client::AttachArgs),
    /// Start a session in the current directory; print its id (or --attach).
    New(client::NewCmdArgs),
    /// Send a prompt to a session (--wait: print the answer when the turn ends).
    Send(client::SendArgs),
    /// Answer a session's pending question(s): allow, or --deny.
    Approve(client::ApproveArgs),
}

/// Flags of `amarre serve`; each overrides the variable named in its help.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Configuration file (TOML) [env: AMARRE_CONFIG].
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Bind address [env: AMARRE_HOST] [default: 127.0.0.1].
    #[arg(long)]
    pub host: Option<String>,
    /// Port; 0 picks a free one [env: AMARRE_PORT] [default: 8341].
    #[arg(long)]
    pub port: Option<u16>,
    /// Cap on live sessions [env: AMARRE_MAX_SESSIONS] [default: 8].
    #[arg(long)]
    pub max_sessions: Option<usize>,
    /// Allow binding a non-loopback address (see README "Who can reach the
    /// daemon") [env: AMARRE_ALLOW_NON_LOOPBACK=1].
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Adapter of instance `default` [env: AMARRE_AGENT].
    #[arg(long)]
    pub agent: Option<String>,
    /// Adapter component file of instance `default` [env: AMARRE_AGENT_PATH].
    #[arg(long)]
    pub agent_path: Option<PathBuf>,
    /// Program of instance `default`, replacing the adapter's [env: AMARRE_COMMAND].
    #[arg(long)]
    pub command: Option<String>,
    /// Arguments appended for instance `default` (repeatable) [env: AMARRE_ARGS_JSON].
    #[arg(long = "arg", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Instances as a JSON array [env: AMARRE_INSTANCES_JSON].
    #[arg(long)]
    pub instances_json: Option<String>,
    /// Log format: text or json [env: AMARRE_LOG_FORMAT].
    #[arg(long)]
    pub log_format: Option<String>,
}

impl ServeArgs {
    /// The flags as configuration overrides.
    pub fn overrides(&self) -> crate::config::Overrides {
        crate::config::Overrides {
            config: self.config.clone(),
            host: self.host.clone(),
            port: self.port,
            max_sessions: self.max_sessions,
            allow_non_loopback: self.allow_non_loopback,
            agent: self.agent.clone(),
            agent_path: self.agent_path.clone(),
            command: self.command.clone(),
            args: (!self.args.is_empty()).then(|| self.args.clone()),
            instances_json: self.instances_json.clone(),
            log_format: self.log_format.clone(),
        }
    }
}

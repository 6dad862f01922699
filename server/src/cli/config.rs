//! `amarre config check`: validates the configuration (file, environment
//! and flags, exactly as `amarre serve` would combine them) and prints the
//! effective configuration in the file's layout. No daemon is started and
//! no adapter is loaded.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::EXIT_CONFIG;
use crate::config::{Config, Overrides, file};

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate and print the effective configuration.
    Check {
        /// The configuration file [env: AMARRE_CONFIG].
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
    },
}

pub fn run(args: ConfigArgs) -> i32 {
    match args.command {
        ConfigCommand::Check { config } => {
            let flags = Overrides {
                config,
                ..Default::default()
            };
            match Config::load(&flags) {
                Ok(cfg) => {
                    if let Some(p) = &cfg.config_file {
                        println!("# configuration file: {}", p.display());
                    }
                    println!("# effective configuration (flags > environment > file > defaults)");
                    print!("{}", file::to_toml(&cfg));
                    0
                }
                Err(e) => {
                    eprintln!("amarre: {e}");
                    EXIT_CONFIG
                }
            }
        }
    }
}

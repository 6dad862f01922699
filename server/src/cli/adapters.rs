//! `amarre adapters`: list the built-in adapters.

use clap::Args;

use crate::adapter::{AdapterHost, AdapterLimits, builtin};

#[derive(Debug, Args)]
pub struct AdaptersArgs {}

/// Lists the built-in adapters with their versions and capabilities.
pub async fn run(_args: AdaptersArgs) -> i32 {
    let host = match AdapterHost::new(AdapterLimits::default()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("amarre: {e:#}");
            return super::EXIT_FAILURE;
        }
    };
    let mut code = 0;
    for name in builtin::names() {
        match host.load_builtin(name).await {
            Ok(a) => {
                let caps: Vec<&str> = a.info.capabilities.iter().map(|c| c.as_str()).collect();
                println!(
                    "{:<16} {:<10} built-in  programs: {}  capabilities: {}",
                    a.info.name,
                    a.info.version,
                    if a.info.programs.is_empty() {
                        "(operator's command)".to_owned()
                    } else {
                        a.info.programs.join(",")
                    },
                    if caps.is_empty() {
                        "-".to_owned()
                    } else {
                        caps.join(",")
                    }
                );
            }
            Err(e) => {
                eprintln!("amarre: {e}");
                code = super::EXIT_FAILURE;
            }
        }
    }
    code
}

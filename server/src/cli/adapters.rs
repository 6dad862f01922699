//! `amarre adapters`: list the adapters a running daemon has loaded, and
//! work with adapter components locally (no daemon needed): `builtins`,
//! `check`, `test` (the conformance kit), `record`, `export` and `wit`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::{EXIT_CONFIG, EXIT_FAILURE};
use crate::adapter::policy::{OperatorPrograms, check};
use crate::adapter::{Adapter, AdapterHost, AdapterLimits, SpawnRequest, builtin};
use crate::transcript;

#[derive(Debug, Args)]
pub struct AdaptersArgs {
    #[command(subcommand)]
    command: Option<AdaptersCommand>,
    /// The daemon to ask (for the listing).
    #[arg(long, default_value = "http://127.0.0.1:8341", global = true)]
    url: String,
    /// The daemon's token file (AMARRE_AUTH=token) [default: AMARRE_TOKEN,
    /// else the local daemon's token file].
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AdaptersCommand {
    /// List the adapters built into this binary.
    Builtins,
    /// Validate a component: it loads, describes itself, and its spawn spec
    /// passes the spawn policy.
    Check {
        /// The component file.
        file: PathBuf,
    },
    /// Check a component, then replay golden transcripts through it.
    Test {
        /// The component file.
        file: PathBuf,
        /// A folder of `*.jsonl` transcripts (docs/transcripts.md).
        #[arg(long)]
        transcript: Option<PathBuf>,
    },
    /// Run a transcript's inputs and print it with the adapter's actual
    /// output after each input, for authoring golden transcripts (review
    /// it, replace timestamps and fresh ids with "$any" or "$name").
    Record {
        /// The component file.
        file: PathBuf,
        /// A transcript whose input steps are replayed.
        transcript: PathBuf,
    },
    /// Write a built-in component to a file (a starting point, or to run it
    /// as a file adapter).
    Export {
        /// The built-in's name.
        name: String,
        /// Where to write it.
        file: PathBuf,
    },
    /// Print the WIT contracts adapters implement (amarre:adapter@0.1.0 and
    /// @0.2.0, each after a comment line naming it), or write them to DIR
    /// for a component toolchain: DIR/adapter.wit (0.1.0) and
    /// DIR/0.2.0/adapter.wit, as in the repository's wit/.
    Wit {
        /// A folder to write into.
        dir: Option<PathBuf>,
        /// Only this package version (0.1.0 or 0.2.0): printed as it is, or
        /// written to DIR/adapter.wit.
        #[arg(long, value_name = "VERSION")]
        only: Option<String>,
    },
}

mod wit;

/// Runs `amarre adapters ...`; returns the exit code.
pub async fn run(args: AdaptersArgs) -> i32 {
    match args.command {
        None => list(&args.url, args.token_file.as_deref()).await,
        Some(AdaptersCommand::Builtins) => builtins().await,
        Some(AdaptersCommand::Check { file }) => match check_file(&file).await {
            Ok(_) => 0,
            Err(code) => code,
        },
        Some(AdaptersCommand::Test { file, transcript }) => {
            test(&file, transcript.as_deref()).await
        }
        Some(AdaptersCommand::Export { name, file }) => export(&name, &file),
        Some(AdaptersCommand::Record { file, transcript }) => record(&file, &transcript).await,
        Some(AdaptersCommand::Wit { dir, only }) => wit(dir.as_deref(), only.as_deref()),
    }
}

fn wit(dir: Option<&Path>, only: Option<&str>) -> i32 {
    let only = match only.map(wit::package).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("amarre: {e}");
            return EXIT_CONFIG;
        }
    };
    let Some(dir) = dir else {
        print!("{}", wit::printed(only));
        return 0;
    };
    match wit::write(dir, only) {
        Ok(files) => {
            for file in files {
                println!("wrote {}", file.display());
            }
            0
        }
        Err(e) => {
            eprintln!("amarre: cannot write into {}: {e}", dir.display());
            EXIT_FAILURE
        }
    }
}

/// A host with the daemon's default limits and compiled-component cache
/// (large components, such as JavaScript ones, compile once).
fn host() -> Result<AdapterHost, i32> {
    let cache = crate::adapter::cache::default_dir(crate::util::environment());
    AdapterHost::with_cache(AdapterLimits::default(), cache.as_deref()).map_err(|e| {
        eprintln!("amarre: {e:#}");
        EXIT_FAILURE
    })
}

async fn list(url: &str, token_file: Option<&Path>) -> i32 {
    let endpoint = format!("{}/adapters", url.trim_end_matches('/'));
    let http = match crate::auth::http_client(token_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("amarre: {e}");
            return EXIT_CONFIG;
        }
    };
    let resp = match http.get(&endpoint).send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("amarre: cannot reach the daemon at {url}: {e}");
            return EXIT_FAILURE;
        }
    };
    if !resp.status().is_success() {
        eprintln!("amarre: {endpoint} answered {}", resp.status());
        return EXIT_FAILURE;
    }
    let list: serde_json::Value = match resp.json().await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("amarre: {endpoint} did not answer JSON: {e}");
            return EXIT_FAILURE;
        }
    };
    println!(
        "{:<12} {:<16} {:<10} {:<8} {:<9} source",
        "instance", "adapter", "version", "wit", "sessions"
    );
    for a in list.as_array().into_iter().flatten() {
        let source = a["source"].as_str().unwrap_or("");
        println!(
            "{:<12} {:<16} {:<10} {:<8} {:<9} {}",
            a["instance"].as_str().unwrap_or(""),
            a["name"].as_str().unwrap_or(""),
            a["version"].as_str().unwrap_or(""),
            a["witVersion"].as_str().unwrap_or(""),
            a["sessions"].as_u64().unwrap_or(0),
            source
        );
        if let Some(err) = a["lastReloadError"].as_str() {
            println!("{:<12} last reload failed: {err}", "");
        }
    }
    0
}

async fn builtins() -> i32 {
    let host = match host() {
        Ok(h) => h,
        Err(c) => return c,
    };
    let mut code = 0;
    for name in builtin::names() {
        match host.load_builtin(name).await {
            Ok(a) => println!("{}", describe(&a)),
            Err(e) => {
                eprintln!("amarre: {e}");
                code = EXIT_FAILURE;
            }
        }
    }
    code
}

fn describe(a: &Adapter) -> String {
    let caps: Vec<&str> = a.info.capabilities.iter().map(|c| c.as_str()).collect();
    format!(
        "{:<16} {:<10} programs: {}  overrides: {}  capabilities: {}",
        a.info.name,
        a.info.version,
        if a.info.programs.is_empty() {
            "(the operator's command)".to_owned()
        } else {
            a.info.programs.join(",")
        },
        if a.info.program_env.is_empty() {
            "-".to_owned()
        } else {
            a.info.program_env.join(",")
        },
        if caps.is_empty() {
            "-".to_owned()
        } else {
            caps.join(",")
        }
    )
}

/// Loads a component and checks what can be checked without a session.
async fn check_file(file: &Path) -> Result<std::sync::Arc<Adapter>, i32> {
    let host = host()?;
    let adapter = match host.load_file(file).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("FAIL  {e}");
            return Err(EXIT_FAILURE);
        }
    };
    println!("ok    loads: {}", describe(&adapter));
    let mut problems = Vec::new();
    for p in &adapter.info.programs {
        if p.is_empty() || (p.contains('/') && !p.starts_with('/')) {
            problems.push(format!(
                "declared program `{p}` is neither a name on PATH nor an absolute path"
            ));
        }
    }
    for v in &adapter.info.program_env {
        if v.is_empty()
            || !v
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            problems.push(format!(
                "program override `{v}` is not an environment variable name"
            ));
        }
    }
    // A spawn with only the operator's command set, as stdio-like adapters
    // need, must produce a spec the policy accepts.
    let request = SpawnRequest {
        session_id: "000000000000".into(),
        instance_id: "check".into(),
        command: Some("/bin/true".into()),
        ..Default::default()
    };
    match adapter.instantiate().await {
        Ok(mut inst) => match inst.spawn(&request).await {
            Ok(spec) => {
                let operator = OperatorPrograms {
                    command: request.command.clone(),
                    overrides: Vec::new(),
                };
                match check(&adapter.info, &spec, &operator) {
                    Ok(()) => println!(
                        "ok    spawn spec passes the policy: {} {}",
                        spec.command,
                        spec.args.join(" ")
                    ),
                    Err(r) => problems.push(format!("spawn spec refused: {}", r.detail())),
                }
            }
            Err(e) if e.is_trap() => problems.push(format!("spawn trapped: {e}")),
            Err(e) => {
                println!("note  spawn with a sample request failed (may need configuration): {e}")
            }
        },
        Err(e) => problems.push(format!("instantiate failed: {e}")),
    }
    if problems.is_empty() {
        Ok(adapter)
    } else {
        for p in &problems {
            println!("FAIL  {p}");
        }
        Err(EXIT_FAILURE)
    }
}

async fn test(file: &Path, dir: Option<&Path>) -> i32 {
    let adapter = match check_file(file).await {
        Ok(a) => a,
        Err(code) => return code,
    };
    let Some(dir) = dir else { return 0 };
    let reports = match transcript::run_dir(&adapter, dir).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("amarre: {e}");
            return EXIT_CONFIG;
        }
    };
    let failed = reports.iter().filter(|r| !r.passed()).count();
    for r in &reports {
        print!("{r}");
        if r.passed() {
            println!();
        }
    }
    println!(
        "{} transcript{}, {} passed, {} failed",
        reports.len(),
        if reports.len() == 1 { "" } else { "s" },
        reports.len() - failed,
        failed
    );
    if failed == 0 { 0 } else { EXIT_FAILURE }
}

async fn record(file: &Path, path: &Path) -> i32 {
    let host = match host() {
        Ok(h) => h,
        Err(c) => return c,
    };
    let adapter = match host.load_file(file).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("amarre: {e}");
            return EXIT_FAILURE;
        }
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("amarre: cannot read {}: {e}", path.display());
            return EXIT_CONFIG;
        }
    };
    match transcript::record(&adapter, &text).await {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("amarre: {}: {e}", path.display());
            EXIT_FAILURE
        }
    }
}

fn export(name: &str, file: &Path) -> i32 {
    let Some(bytes) = builtin::bytes(name) else {
        eprintln!(
            "amarre: unknown built-in adapter `{name}` (built-ins: {})",
            builtin::names().join(", ")
        );
        return EXIT_CONFIG;
    };
    match std::fs::write(file, bytes) {
        Ok(()) => {
            println!("wrote {} ({} bytes)", file.display(), bytes.len());
            0
        }
        Err(e) => {
            eprintln!("amarre: cannot write {}: {e}", file.display());
            EXIT_FAILURE
        }
    }
}

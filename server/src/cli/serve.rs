//! `amarre serve`: start-up, the listener, and graceful shutdown.
//!
//! Start-up errors name the setting and the problem and exit with code 2.
//! On SIGTERM or SIGINT the daemon stops accepting, stops every session
//! (SIGTERM to each agent's process group, SIGKILL after the grace) and
//! exits 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::signal::unix::{SignalKind, signal};

use super::{EXIT_CONFIG, EXIT_FAILURE, ServeArgs};
use crate::adapter::{AdapterHost, AdapterLimits};
use crate::config::{Config, LogFormat};
use crate::http::{self, App, guard::Guard};
use crate::process::Spawner;
use crate::push::PushService;
use crate::session::instances::Instances;
use crate::session::{Runtime, Sessions};

/// Initialises logging to stderr (stdout carries only the listening line).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AMARRE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Where per-session private directories go: systemd's RuntimeDirectory,
/// else `$XDG_RUNTIME_DIR/amarre`, else the temp dir; one folder per
/// daemon process, mode 0700.
fn files_root(env: &HashMap<String, String>) -> PathBuf {
    let base = env
        .get("RUNTIME_DIRECTORY")
        .map(PathBuf::from)
        .or_else(|| {
            env.get("XDG_RUNTIME_DIR")
                .map(|d| PathBuf::from(d).join("amarre"))
        })
        .unwrap_or_else(|| {
            // SAFETY: getuid cannot fail.
            let uid = unsafe { libc::getuid() };
            std::env::temp_dir().join(format!("amarre-{uid}"))
        });
    base.join(format!("daemon-{}", std::process::id()))
}

/// Runs the daemon until a termination signal; returns the exit code.
pub async fn run(args: ServeArgs) -> i32 {
    let config = match Config::load(&args.overrides()) {
        Ok(c) => c,
        Err(e) => {
            init_logging(LogFormat::Text);
            eprintln!("amarre: {e}");
            return EXIT_CONFIG;
        }
    };
    init_logging(config.log_format);
    if !config.host.is_loopback() {
        if !config.allow_non_loopback {
            eprintln!(
                "amarre: AMARRE_HOST: refusing to bind the non-loopback address {} because amarre has no authentication; \
reach it through `tailscale serve`, or force it with --allow-non-loopback / AMARRE_ALLOW_NON_LOOPBACK=1",
                config.host
            );
            return EXIT_CONFIG;
        }
        tracing::warn!(host = %config.host, "binding a non-loopback address: anyone who can reach it can run agents as this user");
    }

    let env_now: HashMap<String, String> = std::env::vars().collect();
    let cache_dir = crate::adapter::cache::default_dir(&env_now);
    let host = match AdapterHost::with_cache(
        AdapterLimits {
            call_budget: config.limits.adapter_call,
            memory_bytes: config.limits.adapter_memory_bytes,
        },
        cache_dir.as_deref(),
    ) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("amarre: {e:#}");
            return EXIT_FAILURE;
        }
    };
    let instances = match Instances::load(&host, &config.instances).await {
        Ok(i) => i,
        Err(e) => {
            let setting = if std::env::var_os("AMARRE_INSTANCES_JSON").is_some()
                || args.instances_json.is_some()
            {
                "AMARRE_INSTANCES_JSON"
            } else {
                "AMARRE_AGENT / AMARRE_AGENT_PATH"
            };
            eprintln!("amarre: {setting}: {e}");
            return EXIT_CONFIG;
        }
    };
    let daemon_env: HashMap<String, String> = std::env::vars().collect();
    let files_root = files_root(&daemon_env);
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&files_root)
    {
        eprintln!(
            "amarre: cannot create the session directory {}: {e}",
            files_root.display()
        );
        return EXIT_FAILURE;
    }
    let spawner = match Spawner::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("amarre: cannot start the spawner thread: {e}");
            return EXIT_FAILURE;
        }
    };

    let addr = SocketAddr::new(config.host, config.port);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("amarre: AMARRE_HOST/AMARRE_PORT: cannot listen on {addr}: {e}");
            return EXIT_CONFIG;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    let guard = Arc::new(Guard::new(
        &config.allowed_hosts,
        &config.allowed_origins,
        config.host,
    ));
    let config = Arc::new(config);
    let push = match &config.push.tokens_path {
        None => {
            tracing::info!("push notifications disabled (AMARRE_PUSH_TOKENS_PATH is not set)");
            None
        }
        Some(_) => match PushService::open(&config.push) {
            Ok(p) => {
                tracing::info!(tokens = p.store().tokens().len(), url = %config.push.expo_url, "push notifications enabled");
                Some(p)
            }
            Err(e) => {
                tracing::error!("push notifications disabled: {e}");
                None
            }
        },
    };
    let runtime = Arc::new(Runtime {
        config: config.clone(),
        host,
        instances,
        spawner,
        daemon_env,
        files_root: files_root.clone(),
        push,
    });
    let watcher = if config.limits.reload_watch {
        crate::session::watch::start(runtime.clone(), config.limits.reload_debounce)
    } else {
        None
    };
    // SIGHUP reloads every adapter file that changed.
    if let Ok(mut hup) = signal(SignalKind::hangup()) {
        let rt = runtime.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!(signal = "SIGHUP", "reloading changed adapter files");
                crate::session::watch::reload_all(&rt).await;
            }
        });
    }
    let app = Arc::new(App {
        sessions: Sessions::new(runtime),
    });
    let router = http::router(app.clone(), guard);

    println!("amarre listening on http://{local}");
    tracing::info!(
        address = %local,
        version = crate::VERSION,
        instances = config.instances.len(),
        "amarre listening"
    );

    let shutdown_app = app.clone();
    let shutdown = async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            std::future::pending::<()>().await;
            return;
        };
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "shutting down: stopping every session");
        shutdown_app.sessions.shutdown().await;
    };
    // Records are small writes: without TCP_NODELAY, Nagle's algorithm
    // holds them back until the peer's (delayed) ACK, stalling a stream
    // for milliseconds at a time (measured in docs/PERFORMANCE.md).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
    if let Some(w) = watcher {
        w.abort();
    }
    let _ = std::fs::remove_dir_all(&files_root);
    match served {
        Ok(()) => {
            tracing::info!("stopped");
            0
        }
        Err(e) => {
            tracing::error!(error = %e, "the server failed");
            EXIT_FAILURE
        }
    }
}

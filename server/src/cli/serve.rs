//! `amarre serve`: start-up, the listener, signals, and graceful shutdown.
//!
//! Start-up errors name the setting and the problem and exit with code 2.
//! Under systemd (`Type=notify`) readiness, stopping and the watchdog are
//! reported with sd_notify. SIGHUP re-reads the configuration file
//! (instances) and reloads changed adapter files. On SIGTERM or SIGINT the
//! daemon stops accepting, stops every session (SIGTERM to each agent's
//! process group, SIGKILL after the grace) and exits 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::signal::unix::{SignalKind, signal};

use super::{EXIT_CONFIG, EXIT_FAILURE, ServeArgs};
use crate::adapter::{AdapterHost, AdapterLimits};
use crate::config::{Config, LogFormat, Overrides};
use crate::http::{self, App, guard::Guard};
use crate::ops::metrics::Metrics;
use crate::ops::systemd;
use crate::process::Spawner;
use crate::push::PushService;
use crate::session::instances::Instances;
use crate::session::{Runtime, Sessions};

/// Initialises logging to stderr (stdout carries only the listening line):
/// no colours unless stderr is a terminal, no timestamps when the journal
/// adds its own.
pub fn init_logging(format: LogFormat, filter: Option<&str>) {
    use std::io::IsTerminal;
    let filter = filter
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match (format, systemd::logging_to_journal()) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Text, false) => builder.try_init(),
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
    let overrides = args.overrides();
    let config = match Config::load(&overrides) {
        Ok(c) => c,
        Err(e) => {
            init_logging(LogFormat::Text, None);
            eprintln!("amarre: {e}");
            return EXIT_CONFIG;
        }
    };
    init_logging(config.log_format, config.log_filter.as_deref());
    let token_mode = config.auth == crate::auth::AuthMode::Token;
    if !config.host.is_loopback() {
        if !config.allow_non_loopback {
            let why = if token_mode {
                "without an explicit opt-in"
            } else {
                "because amarre has no authentication (AMARRE_AUTH=none)"
            };
            eprintln!(
                "amarre: AMARRE_HOST: refusing to bind the non-loopback address {} {why}; \
reach it through `tailscale serve`, or force it with --allow-non-loopback / AMARRE_ALLOW_NON_LOOPBACK=1",
                config.host
            );
            return EXIT_CONFIG;
        }
        if token_mode {
            tracing::warn!(host = %config.host, "binding a non-loopback address: traffic is not encrypted without a TLS front such as `tailscale serve`");
        } else {
            tracing::warn!(host = %config.host, "binding a non-loopback address: anyone who can reach it can run agents as this user");
        }
    }
    let auth = match crate::auth::start(&config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("amarre: {e}");
            return EXIT_CONFIG;
        }
    };

    let host = match AdapterHost::with_cache(
        AdapterLimits {
            call_budget: config.limits.adapter_call,
            memory_bytes: config.limits.adapter_memory_bytes,
            ..AdapterLimits::default()
        },
        config.cache_dir.as_deref(),
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
            let setting = match &config.config_file {
                _ if std::env::var_os("AMARRE_INSTANCES_JSON").is_some()
                    || args.instances_json.is_some() =>
                {
                    "AMARRE_INSTANCES_JSON".to_owned()
                }
                Some(path) => format!("config file {}", path.display()),
                None => "AMARRE_AGENT / AMARRE_AGENT_PATH".to_owned(),
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
    let metrics = Arc::new(Metrics::default());
    let push = match &config.push.tokens_path {
        None => {
            tracing::info!("push notifications disabled (AMARRE_PUSH_TOKENS_PATH is not set)");
            None
        }
        Some(_) => match PushService::open(&config.push, metrics.clone()) {
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
    let config = Arc::new(config);
    let runtime = Arc::new(Runtime {
        config: config.clone(),
        host,
        instances,
        spawner,
        daemon_env,
        files_root: files_root.clone(),
        push,
        metrics,
    });
    let watcher = Arc::new(std::sync::Mutex::new(start_watcher(&runtime)));
    spawn_sighup(runtime.clone(), overrides, watcher.clone());
    let app = Arc::new(App {
        sessions: Sessions::new(runtime),
        auth,
    });
    let router = http::router(app.clone(), guard);

    println!("amarre listening on http://{local}");
    tracing::info!(
        address = %local,
        version = crate::VERSION,
        instances = config.instances.len(),
        "amarre listening"
    );
    systemd::notify(&format!(
        "READY=1\nSTATUS=listening on http://{local}\nMAINPID={}",
        std::process::id()
    ));
    if let Some(every) = systemd::watchdog_interval() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                systemd::notify("WATCHDOG=1");
            }
        });
    }

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
        systemd::notify("STOPPING=1\nSTATUS=stopping sessions");
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
    if let Some(w) = watcher.lock().unwrap_or_else(|p| p.into_inner()).take() {
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

/// SIGHUP: re-read the configuration file (new, changed and removed
/// instances take effect; other settings need a restart, which is logged),
/// then reload every adapter file that changed.
type Watcher = Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>;

fn start_watcher(rt: &Arc<Runtime>) -> Option<tokio::task::JoinHandle<()>> {
    if rt.config.limits.reload_watch {
        crate::session::watch::start(rt.clone(), rt.config.limits.reload_debounce)
    } else {
        None
    }
}

fn spawn_sighup(rt: Arc<Runtime>, overrides: Overrides, watcher: Watcher) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            systemd::notify("RELOADING=1");
            tracing::info!(
                signal = "SIGHUP",
                "re-reading the configuration and reloading changed adapter files"
            );
            if rt.config.config_file.is_some() {
                match Config::load(&overrides) {
                    Ok(next) => {
                        let current: Vec<_> = rt
                            .instances
                            .all()
                            .iter()
                            .map(|i| i.config.clone())
                            .collect();
                        if next.instances != current {
                            match rt.instances.replace(&rt.host, &next.instances).await {
                                Ok(()) => {
                                    tracing::info!(
                                        instances = next.instances.len(),
                                        "instances reconfigured"
                                    );
                                    // Watch the files of the new list.
                                    let mut w = watcher.lock().unwrap_or_else(|p| p.into_inner());
                                    if let Some(old) = w.take() {
                                        old.abort();
                                    }
                                    *w = start_watcher(&rt);
                                }
                                Err(e) => tracing::error!(
                                    "configuration reload failed, instances unchanged: {e}"
                                ),
                            }
                        }
                        let mut others = (*rt.config).clone();
                        others.instances = next.instances.clone();
                        if others != next {
                            tracing::warn!(
                                "settings other than instances changed in the configuration file; they take effect at the next restart"
                            );
                        }
                    }
                    Err(e) => tracing::error!("configuration reload failed, nothing changed: {e}"),
                }
            }
            crate::session::watch::reload_all(&rt).await;
            systemd::notify("READY=1");
        }
    });
}

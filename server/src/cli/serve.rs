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

use tokio::signal::unix::{SignalKind, signal};

use super::{EXIT_CONFIG, EXIT_FAILURE, ServeArgs};
use crate::adapter::{AdapterHost, AdapterLimits};
use crate::config::{Config, LogFormat};
use crate::http::{self, App, guard::Guard};
use crate::instances::Instances;
use crate::ops::metrics::Metrics;
use crate::ops::systemd;
use crate::process::Spawner;
use crate::push::PushService;
use crate::session::{Deps, Notifier, Receipt, Sessions};

/// Connects the session core's notifications to the push service (neither
/// knows the other).
struct PushNotifier(Arc<PushService>);

impl Notifier for PushNotifier {
    fn awaiting_input(
        &self,
        session_id: &str,
        session_name: Option<&str>,
        request_id: &str,
        method: &str,
        record: &str,
        receipt: Receipt,
    ) {
        self.0.awaiting_input(
            session_id,
            session_name,
            request_id,
            method,
            record,
            receipt,
        );
    }

    fn crashed(
        &self,
        session_id: &str,
        session_name: Option<&str>,
        code: Option<i32>,
        signal: Option<&str>,
        adapter: Option<&str>,
    ) {
        self.0
            .crashed(session_id, session_name, code, signal, adapter);
    }
}

/// Initialises logging to stderr (stdout carries only the listening line):
/// no colours unless stderr is a terminal, no timestamps when the journal
/// adds its own.
pub fn init_logging(format: LogFormat, filter: Option<&str>) {
    use std::io::IsTerminal;
    // A configured filter was checked when the configuration was read
    // (a bad one is a start-up error naming its setting).
    let filter = match filter.map(tracing_subscriber::EnvFilter::try_new) {
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            eprintln!("amarre: the log filter is invalid ({e}); logging at `info`");
            tracing_subscriber::EnvFilter::new("info")
        }
        None => tracing_subscriber::EnvFilter::new("info"),
    };
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
    // The environment is read here, once; everything after start-up
    // (SIGHUP included) uses this copy.
    let env: Arc<HashMap<String, String>> = Arc::new(crate::util::environment().clone());
    let config = match Config::load_from(&env, &overrides) {
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
                "amarre: {}: refusing to bind the non-loopback address {} {why}; \
reach it through `tailscale serve`, or force it with --allow-non-loopback / AMARRE_ALLOW_NON_LOOPBACK=1",
                crate::config::settings::origin("server.host", &env, &overrides, &config),
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

    // Durable sessions (PROTOCOL.md 12.3): the state directory is locked
    // for this daemon before anything else uses it.
    let state = match &config.state_dir {
        Some(dir) => match crate::state::StateDir::open(dir) {
            Ok(s) => {
                tracing::info!(path = %s.root().display(), "durable sessions: sessions and their records are kept in the state directory");
                Some(Arc::new(s))
            }
            Err(e) => {
                eprintln!("amarre: {e}");
                return EXIT_CONFIG;
            }
        },
        None => {
            tracing::info!("no state directory (AMARRE_STATE_DIR): sessions end with the daemon");
            None
        }
    };

    let host = match AdapterHost::with_cache(
        AdapterLimits::from(&config.limits),
        config.cache_dir.as_deref(),
    ) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("amarre: {e:#}");
            return EXIT_FAILURE;
        }
    };
    let metrics = Arc::new(Metrics::default());
    let watch = config
        .limits
        .reload_watch
        .then_some(config.limits.reload_debounce);
    let instances = match Instances::load(host, &config.instances, metrics.clone(), watch).await {
        Ok(i) => Arc::new(i),
        Err(e) => {
            let setting = match &config.config_file {
                _ if env.contains_key("AMARRE_INSTANCES_JSON") || args.instances_json.is_some() => {
                    "AMARRE_INSTANCES_JSON".to_owned()
                }
                Some(path) => format!("config file {}", path.display()),
                None => "AMARRE_AGENT / AMARRE_AGENT_PATH".to_owned(),
            };
            eprintln!("amarre: {setting}: {e}");
            return EXIT_CONFIG;
        }
    };
    let files_root = files_root(&env);
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
    let deps = Arc::new(Deps {
        limits: config.limits.clone(),
        max_sessions: config.max_sessions,
        push_grace: config.push.grace,
        instances: instances.clone(),
        spawner,
        daemon_env: env.clone(),
        files_root: files_root.clone(),
        notifier: push
            .clone()
            .map(|p| Arc::new(PushNotifier(p)) as Arc<dyn Notifier>),
        metrics: metrics.clone(),
        capabilities: daemon_capabilities(&config),
        state,
    });
    instances.watch();
    instances.spawn_sighup(config.clone(), env.clone(), overrides);
    let sessions = Arc::new(Sessions::new(deps));
    let restored = sessions.restore().await;
    if restored > 0 {
        tracing::info!(sessions = restored, "restored the stored sessions");
    }
    let app = Arc::new(App {
        sessions,
        instances: instances.clone(),
        push,
        metrics,
        limits: config.limits.clone(),
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
    http::listen::serve(listener, router, config.conn, shutdown).await;
    instances.stop_watching();
    let _ = std::fs::remove_dir_all(&files_root);
    tracing::info!("stopped");
    0
}

/// The daemon-wide capabilities `amarre.hello` reports (PROTOCOL.md
/// section 12), after the session's own and before the adapter's.
pub(crate) fn daemon_capabilities(config: &Config) -> Vec<&'static str> {
    let mut caps = Vec::new();
    if http::app::compiled_in() {
        caps.push("web");
    }
    caps.push("review");
    if crate::adapter::builtin::bytes("acp").is_some() {
        caps.push("acp");
    }
    if config.auth == crate::auth::AuthMode::Token {
        caps.push("auth");
    }
    if config.state_dir.is_some() {
        caps.push("durable");
    }
    caps
}

//! Configured instances, the adapter version currently serving each, and
//! every way a new version arrives (docs/hot-reload.md): this module loads
//! the instances at start-up, watches their files ([`watch`]), re-reads the
//! configuration on SIGHUP ([`Instances::spawn_sighup`]) and serves
//! `POST /instances/{id}/reload` ([`Instances::reload`]). Sessions only read
//! [`Instance::adapter`] and [`Instance::generation`].
//!
//! A reload re-reads the instance's configured `agentPath` (never a path
//! from a request), loads the component off the async runtime (or from a
//! cache), and swaps it in for new sessions with one write of a lock that is
//! never held across an await. The instance's generation counter tells live
//! sessions, with one atomic load per record, that a newer version exists.
//! Reloads of one instance are serialised: one that overlaps another waits
//! for it and then finds nothing left to do.

pub(crate) mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::adapter::{Adapter, AdapterHost, AdapterSource, content_hash};
use crate::config::{Config, InstanceConfig, Overrides};
use crate::ops::metrics::{Metrics, add};
use crate::ops::systemd;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// A new version now serves new sessions.
    Swapped { from: String, to: String },
    /// The file holds the version already serving (or the instance is a
    /// built-in, which has no file to re-read).
    Unchanged,
}

/// One instance: its configuration and the adapter serving new sessions.
pub struct Instance {
    pub config: InstanceConfig,
    adapter: RwLock<Arc<Adapter>>,
    generation: AtomicU64,
    reload_lock: tokio::sync::Mutex<()>,
    last_error: Mutex<Option<String>>,
    compilations: AtomicU64,
    reloads: AtomicU64,
}

impl Instance {
    fn new(config: InstanceConfig, adapter: Arc<Adapter>) -> Instance {
        let compiled = u64::from(adapter.compiled);
        Instance {
            config,
            adapter: RwLock::new(adapter),
            generation: AtomicU64::new(0),
            reload_lock: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(None),
            compilations: AtomicU64::new(compiled),
            reloads: AtomicU64::new(0),
        }
    }

    /// The adapter version new sessions use.
    pub fn adapter(&self) -> Arc<Adapter> {
        self.adapter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Increases with every swap; sessions compare it per record.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Why the last reload failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// How many times this instance's adapter was compiled by Cranelift.
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// How many reloads swapped a new version in.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// The file this instance's adapter comes from, if any.
    pub fn path(&self) -> Option<&PathBuf> {
        self.config.agent_path.as_ref()
    }

    /// Re-reads the configured file and swaps in the component it holds.
    /// On failure the old version keeps serving and the error is kept for
    /// the listing.
    async fn reload(&self, host: &AdapterHost, metrics: &Metrics) -> Result<Reloaded, String> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let Some(path) = self.config.agent_path.clone() else {
            return Ok(Reloaded::Unchanged);
        };
        let started = Instant::now();
        let fail = |e: String| {
            add(&metrics.reloads_failed, 1);
            tracing::error!(instance = %self.config.id, path = %path.display(), "adapter reload failed, the old version keeps serving: {e}");
            self.set_error(Some(e.clone()));
            Err(e)
        };
        let bytes = match crate::adapter::read_component_file(&path).await {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
        let current = self.adapter();
        if content_hash(&bytes) == current.hash {
            self.set_error(None);
            return Ok(Reloaded::Unchanged);
        }
        let next = match host.load(bytes, AdapterSource::File(path.clone())).await {
            Ok(a) => a,
            Err(e) => return fail(e.0),
        };
        if next.compiled {
            self.compilations.fetch_add(1, Ordering::Relaxed);
        }
        let (from, to) = (current.label(), next.label());
        *self.adapter.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        add(&metrics.reloads_ok, 1);
        self.set_error(None);
        tracing::info!(
            instance = %self.config.id,
            from = %from,
            to = %to,
            hash = %next.hash,
            compiled = next.compiled,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "adapter reloaded; new sessions use the new version"
        );
        Ok(Reloaded::Swapped { from, to })
    }
}

/// All instances, in configuration order, with what reloading them needs.
pub struct Instances {
    list: RwLock<Vec<Arc<Instance>>>,
    host: AdapterHost,
    metrics: Arc<Metrics>,
    /// Watching on, and its debounce (from the start-up configuration).
    watch: Option<Duration>,
    /// The file watcher of the current list.
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Instances {
    /// Loads the adapter of every configured instance. The error names the
    /// instance and says why its adapter could not be loaded.
    pub async fn load(
        host: AdapterHost,
        configs: &[InstanceConfig],
        metrics: Arc<Metrics>,
        watch: Option<Duration>,
    ) -> Result<Instances, String> {
        let mut list = Vec::with_capacity(configs.len());
        for config in configs {
            let adapter = load_adapter(&host, config).await?;
            list.push(Arc::new(Instance::new(config.clone(), adapter)));
        }
        Ok(Instances {
            list: RwLock::new(list),
            host,
            metrics,
            watch,
            watcher: Mutex::new(None),
        })
    }

    /// The adapter host (for the listing's counters).
    pub fn host(&self) -> &AdapterHost {
        &self.host
    }

    /// Every instance.
    pub fn all(&self) -> Vec<Arc<Instance>> {
        self.list.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The instance with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Instance>> {
        self.list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|i| i.config.id == id)
            .cloned()
    }

    /// `default`, else the first.
    pub fn default_instance(&self) -> Option<Arc<Instance>> {
        self.get("default")
            .or_else(|| self.all().into_iter().next())
    }

    /// `POST /instances/{id}/reload`, the watcher and SIGHUP: re-reads the
    /// instance's configured file and swaps in the component it holds.
    pub async fn reload(&self, instance: &Instance) -> Result<Reloaded, String> {
        instance.reload(&self.host, &self.metrics).await
    }

    /// Reloads every instance whose file changed (SIGHUP).
    pub async fn reload_all(&self) {
        for instance in self.all() {
            if instance.path().is_some() {
                let _ = self.reload(&instance).await;
            }
        }
    }

    /// Replaces the instance list (a configuration reload): instances whose
    /// configuration is unchanged keep their `Instance` (and adapter),
    /// changed or new ones are loaded; removed ones disappear (their live
    /// sessions finish, restarts answer 410). All or nothing.
    pub async fn replace(&self, configs: &[InstanceConfig]) -> Result<(), String> {
        let old = self.all();
        let mut next = Vec::with_capacity(configs.len());
        for config in configs {
            match old.iter().find(|i| &i.config == config) {
                Some(same) => next.push(same.clone()),
                None => {
                    let adapter = load_adapter(&self.host, config).await?;
                    next.push(Arc::new(Instance::new(config.clone(), adapter)));
                }
            }
        }
        *self.list.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// (Re)starts watching the files of the current list, when watching is
    /// on.
    pub fn watch(self: &Arc<Self>) {
        let mut w = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = w.take() {
            old.abort();
        }
        if let Some(debounce) = self.watch {
            *w = watch::start(self.clone(), debounce);
        }
    }

    /// Stops watching.
    pub fn stop_watching(&self) {
        if let Some(w) = self
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            w.abort();
        }
    }

    /// SIGHUP: re-read the configuration file (new, changed and removed
    /// instances take effect; other settings need a restart, which is
    /// logged), then reload every adapter file that changed. `env` is the
    /// environment read at start-up (never read again).
    pub fn spawn_sighup(
        self: &Arc<Self>,
        config: Arc<Config>,
        env: Arc<HashMap<String, String>>,
        overrides: Overrides,
    ) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                systemd::notify("RELOADING=1");
                tracing::info!(
                    signal = "SIGHUP",
                    "re-reading the configuration and reloading changed adapter files"
                );
                if config.config_file.is_some() {
                    this.reconfigure(&config, &env, &overrides).await;
                }
                this.reload_all().await;
                systemd::notify("READY=1");
            }
        });
    }

    async fn reconfigure(
        self: &Arc<Self>,
        config: &Config,
        env: &HashMap<String, String>,
        overrides: &Overrides,
    ) {
        let next = match Config::load_from(env, overrides) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!("configuration reload failed, nothing changed: {e}");
                return;
            }
        };
        let current: Vec<_> = self.all().iter().map(|i| i.config.clone()).collect();
        if next.instances != current {
            match self.replace(&next.instances).await {
                Ok(()) => {
                    tracing::info!(instances = next.instances.len(), "instances reconfigured");
                    // Watch the files of the new list.
                    self.watch();
                }
                Err(e) => tracing::error!("configuration reload failed, instances unchanged: {e}"),
            }
        }
        let mut others = config.clone();
        others.instances = next.instances.clone();
        if others != next {
            tracing::warn!(
                "settings other than instances changed in the configuration file; they take effect at the next restart"
            );
        }
    }
}

/// Loads the adapter an instance names: its `agentPath` file when set (with
/// a warning when the file's adapter has another name than `agent`), else
/// the built-in `agent`.
async fn load_adapter(host: &AdapterHost, config: &InstanceConfig) -> Result<Arc<Adapter>, String> {
    let loaded = match (&config.agent_path, &config.agent) {
        (Some(path), agent) => {
            let adapter = host
                .load_file(path)
                .await
                .map_err(|e| format!("instance `{}`: {e}", config.id))?;
            if let Some(agent) = agent.as_deref().filter(|a| *a != adapter.info.name) {
                tracing::warn!(
                    instance = %config.id,
                    agent,
                    reported = %adapter.info.name,
                    "the adapter file reports another name than the configured agent; using the file"
                );
            }
            adapter
        }
        (None, Some(agent)) => host
            .load_builtin(agent)
            .await
            .map_err(|e| format!("instance `{}`: {e}", config.id))?,
        (None, None) => {
            return Err(format!(
                "instance `{}` needs `agent` or `agentPath`",
                config.id
            ));
        }
    };
    tracing::info!(
        instance = %config.id,
        adapter = %loaded.label(),
        source = %match &loaded.source {
            AdapterSource::Builtin(_) => "built-in".to_owned(),
            AdapterSource::File(p) => p.display().to_string(),
        },
        compiled = loaded.compiled,
        "adapter loaded"
    );
    Ok(loaded)
}

//! Configured instances and the adapter version currently serving each.
//! The registry is read on every spawn and swapped wholesale on reload, so
//! it sits behind a plain `RwLock` that is never held across an await.

use std::sync::{Arc, RwLock};

use crate::adapter::{Adapter, AdapterHost, AdapterSource};
use crate::config::InstanceConfig;

/// One instance: its configuration and the adapter serving new sessions.
pub struct Instance {
    pub config: InstanceConfig,
    adapter: RwLock<Arc<Adapter>>,
}

impl Instance {
    /// The adapter version new sessions use.
    pub fn adapter(&self) -> Arc<Adapter> {
        self.adapter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the adapter for new sessions.
    pub fn set_adapter(&self, adapter: Arc<Adapter>) {
        *self.adapter.write().unwrap_or_else(|p| p.into_inner()) = adapter;
    }
}

/// All instances, in configuration order.
#[derive(Default)]
pub struct Instances {
    list: RwLock<Vec<Arc<Instance>>>,
}

impl Instances {
    /// Loads the adapter of every configured instance. The error names the
    /// instance and says why its adapter could not be loaded.
    pub async fn load(host: &AdapterHost, configs: &[InstanceConfig]) -> Result<Instances, String> {
        let mut list = Vec::with_capacity(configs.len());
        for config in configs {
            let adapter = load_adapter(host, config).await?;
            list.push(Arc::new(Instance {
                config: config.clone(),
                adapter: RwLock::new(adapter),
            }));
        }
        Ok(Instances {
            list: RwLock::new(list),
        })
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
}

/// Loads the adapter an instance names: its `agentPath` file when set (with
/// a warning when the file's adapter has another name than `agent`), else
/// the built-in `agent`.
pub async fn load_adapter(
    host: &AdapterHost,
    config: &InstanceConfig,
) -> Result<Arc<Adapter>, String> {
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
        "adapter loaded"
    );
    Ok(loaded)
}

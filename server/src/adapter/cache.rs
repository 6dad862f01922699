//! The compiled-component cache on disk, so that a daemon restart or the
//! reload of a known component does not recompile it.
//!
//! Layout: `<dir>/<content sha256>-<engine hash>.cwasm` (wasmtime's
//! serialized component) and `<same>.sha256` (the hex SHA-256 of the
//! `.cwasm` bytes). The engine hash is
//! `Engine::precompile_compatibility_hash`, so artifacts of another wasmtime
//! version or configuration are never looked up. The sidecar is checked
//! before anything is deserialized; a missing, corrupt or foreign entry is
//! reported and rebuilt, never trusted. The directory is created with mode
//! 0700; files are written to a temporary name and renamed.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components are kept.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
    engine_hash: String,
}

/// What a lookup found.
pub enum Lookup {
    Hit(Component),
    /// Nothing usable; the reason is set when an entry existed but was
    /// rejected (for the log).
    Miss(Option<String>),
}

/// The default cache directory: `AMARRE_CACHE_DIR`, systemd's
/// `CACHE_DIRECTORY`, `$XDG_CACHE_HOME/amarre`, or `~/.cache/amarre`.
pub fn default_dir(env: &std::collections::HashMap<String, String>) -> Option<PathBuf> {
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    get("AMARRE_CACHE_DIR")
        .or_else(|| get("CACHE_DIRECTORY").map(|d| d.join("components")))
        .or_else(|| get("XDG_CACHE_HOME").map(|d| d.join("amarre")))
        .or_else(|| get("HOME").map(|d| d.join(".cache/amarre")))
}

impl DiskCache {
    /// Opens (creating, mode 0700) the cache directory for `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> Result<DiskCache, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the component cache {}: {e}", dir.display()))?;
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(DiskCache {
            dir: dir.to_owned(),
            engine_hash: format!("{:016x}", h.finish()),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn paths(&self, content_hash: &str) -> (PathBuf, PathBuf) {
        let stem = format!("{content_hash}-{}", self.engine_hash);
        (
            self.dir.join(format!("{stem}.cwasm")),
            self.dir.join(format!("{stem}.sha256")),
        )
    }

    /// Looks up the compiled form of the component with `content_hash`.
    pub fn load(&self, engine: &Engine, content_hash: &str) -> Lookup {
        let (artifact, sidecar) = self.paths(content_hash);
        let bytes = match std::fs::read(&artifact) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss(None),
            Err(e) => {
                return Lookup::Miss(Some(format!("cannot read {}: {e}", artifact.display())));
            }
        };
        let expected = match std::fs::read_to_string(&sidecar) {
            Ok(s) => s.trim().to_owned(),
            Err(e) => {
                return Lookup::Miss(Some(format!(
                    "no checksum for {} ({e})",
                    artifact.display()
                )));
            }
        };
        if super::content_hash(&bytes) != expected {
            return Lookup::Miss(Some(format!(
                "{} does not match its checksum",
                artifact.display()
            )));
        }
        match deserialize(engine, &bytes) {
            Ok(c) => Lookup::Hit(c),
            Err(e) => Lookup::Miss(Some(format!(
                "{} is not usable by this engine: {e:#}",
                artifact.display()
            ))),
        }
    }

    /// Stores a compiled component (best effort; errors are returned for
    /// the log, the component is used either way).
    pub fn store(&self, content_hash: &str, component: &Component) -> Result<(), String> {
        let bytes = component
            .serialize()
            .map_err(|e| format!("cannot serialize a component: {e:#}"))?;
        let (artifact, sidecar) = self.paths(content_hash);
        write_atomic(&artifact, &bytes)?;
        write_atomic(&sidecar, super::content_hash(&bytes).as_bytes())
    }
}

/// Deserializes a compiled component.
fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` trusts its input to be a wasmtime
    // artifact: only bytes that wasmtime itself produced may reach it. The
    // caller passes only cache entries whose SHA-256 matches the sidecar
    // this module wrote next to them (in a directory of mode 0700 owned by
    // the daemon's user), and wasmtime additionally checks the artifact's
    // header and engine compatibility and returns an error on a mismatch.
    unsafe { Component::deserialize(engine, bytes) }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    crate::util::write_private_atomic(path, &tmp, bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

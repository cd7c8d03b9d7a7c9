//! Compiled components on disk, so a restart does not compile again.
//!
//! A cache entry is named by the sha256 of the component and a hash of
//! everything that makes compiled code compatible with this engine (wasmtime
//! version, target, settings); a new binary or new settings miss the cache
//! rather than load code built for another engine.

#![allow(unsafe_code)] // `Component::deserialize_file`; see `load`.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// The on-disk cache of compiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

/// Feeds `Hash` output into sha256, for a key that is stable across runs.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        unreachable!("only the digest is used")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Whether a component came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cached,
    Compiled,
}

impl CompileCache {
    /// A cache in `dir` (created, private to the host user) for `engine`.
    pub fn new(dir: &Path, engine: &wasmtime::Engine) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(Self {
            dir: dir.to_path_buf(),
            engine_key,
        })
    }

    /// The compiled component whose source has this sha256, if this host
    /// has compiled it before.
    pub fn load_compiled(&self, engine: &wasmtime::Engine, sha256: &str) -> Option<Component> {
        let path = self.path(sha256);
        if !path.exists() {
            return None;
        }
        // SAFETY: as in `load`.
        unsafe { Component::deserialize_file(engine, &path) }
            .inspect_err(
                |e| tracing::warn!(path = %path.display(), error = %e, "unreadable cache entry"),
            )
            .ok()
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The compiled component for `wasm`: from the cache, or compiled now
    /// and written to it.
    pub fn load(
        &self,
        engine: &wasmtime::Engine,
        wasm: &[u8],
    ) -> anyhow::Result<(Component, Origin)> {
        let sha = hex::encode(Sha256::digest(wasm));
        let path = self.path(&sha);
        if path.exists() {
            // SAFETY: the file is one this host wrote (below) into a directory
            // only the host's user can write, for this exact engine; wasmtime
            // also checks its header. A file that fails to load is replaced.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, Origin::Cached)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "recompiling a bad cache entry")
                }
            }
        }
        let compiled = engine
            .precompile_component(wasm)
            .map_err(anyhow::Error::from)
            .context("compiling the component")?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, &compiled)?;
        std::fs::rename(&tmp, &path)?;
        // SAFETY: as above; this is the file just written from `compiled`.
        let component = unsafe { Component::deserialize_file(engine, &path) }?;
        Ok((component, Origin::Compiled))
    }
}

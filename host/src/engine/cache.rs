//! Compiled components on disk, so a restart does not compile again.
//!
//! A cache entry is named by the sha256 of the component and a hash of
//! everything that makes compiled code compatible with this engine (wasmtime
//! version, target, settings); a new binary or new settings miss the cache
//! rather than load code built for another engine. At start the host clears
//! what it can no longer use ([`CompileCache::retain`]): another engine's
//! entries, files a crash left half-written, and components no longer
//! stored.

#![allow(unsafe_code)] // `Component::deserialize_file`; see `load`.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// Marks a [`CompileCache::load`] failure that is the host's (writing or
/// reading its file), not the component's.
#[derive(Debug)]
pub struct CacheFault;

impl std::fmt::Display for CacheFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the compile cache failed")
    }
}

/// The on-disk cache of compiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
    /// Components this process has loaded or compiled (by sha256), and
    /// when last: their entries stay a while, stored or not (an upload is
    /// compiled before its bytes are stored).
    used: Arc<Mutex<HashMap<String, Instant>>>,
    /// Components this process runs for as long as it lives (the route
    /// groups, loaded once at start and never stored as deployments):
    /// their entries always stay.
    pinned: Arc<Mutex<HashSet<String>>>,
}

/// How long an entry this process used stays when nothing stored needs it.
const KEPT_AFTER_USE: Duration = Duration::from_secs(600);

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
            used: Arc::default(),
            pinned: Arc::default(),
        })
    }

    fn mark_used(&self, sha256: &str) {
        self.used
            .lock()
            .expect("cache marks poisoned")
            .insert(sha256.to_owned(), Instant::now());
    }

    /// Removes the files no component can use any more: entries compiled
    /// by another engine (an older binary, other settings), files another
    /// process left half-written (the data directory is this process's
    /// alone), and entries of components neither in `stored` (the
    /// platform's, by sha256) nor used by this process in the last
    /// [`KEPT_AFTER_USE`]. How many went.
    pub fn retain(&self, stored: &HashSet<String>) -> usize {
        self.retain_as_of(stored, Instant::now())
    }

    fn retain_as_of(&self, stored: &HashSet<String>, now: Instant) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let recent = |at: &Instant| now.saturating_duration_since(*at) < KEPT_AFTER_USE;
        self.used
            .lock()
            .expect("cache marks poisoned")
            .retain(|_, at| recent(at));
        let ours = format!("tmp-{}-", std::process::id());
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((sha256, rest)) = name.to_str().and_then(|n| n.split_once('-')) else {
                continue;
            };
            let stale = match rest.split_once('.') {
                Some((key, "cwasm")) if key == self.engine_key => {
                    !stored.contains(sha256)
                        && !self
                            .pinned
                            .lock()
                            .expect("cache marks poisoned")
                            .contains(sha256)
                        && !self
                            .used
                            .lock()
                            .expect("cache marks poisoned")
                            .get(sha256)
                            .is_some_and(recent)
                }
                Some((_, "cwasm")) => true,
                Some((_, extension)) => {
                    extension.starts_with("tmp-") && !extension.starts_with(&ours)
                }
                None => false,
            };
            if stale && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// The compiled component whose source has this sha256, if this host
    /// has compiled it before.
    pub fn load_compiled(&self, engine: &wasmtime::Engine, sha256: &str) -> Option<Component> {
        self.mark_used(sha256);
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

    /// Removes the entry of `sha256` (a component compiled for an upload
    /// that was then refused).
    pub fn remove(&self, sha256: &str) {
        let _ = std::fs::remove_file(self.path(sha256));
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// [`CompileCache::load`], its entry kept for as long as this process
    /// lives (see `pinned`).
    pub fn load_pinned(
        &self,
        engine: &wasmtime::Engine,
        wasm: &[u8],
    ) -> anyhow::Result<(Component, Origin)> {
        let sha = hex::encode(Sha256::digest(wasm));
        self.pinned
            .lock()
            .expect("cache marks poisoned")
            .insert(sha.clone());
        self.load_hashed(engine, wasm, sha)
    }

    /// The compiled component for `wasm`: from the cache, or compiled now
    /// and written to it.
    pub fn load(
        &self,
        engine: &wasmtime::Engine,
        wasm: &[u8],
    ) -> anyhow::Result<(Component, Origin)> {
        self.load_hashed(engine, wasm, hex::encode(Sha256::digest(wasm)))
    }

    /// [`CompileCache::load`] of `wasm`, whose sha256 is `sha`.
    fn load_hashed(
        &self,
        engine: &wasmtime::Engine,
        wasm: &[u8],
        sha: String,
    ) -> anyhow::Result<(Component, Origin)> {
        self.mark_used(&sha);
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
        // Written aside under a name no other writer uses (another thread
        // may be compiling the same component), then renamed into place.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let tmp = path.with_extension(format!(
            "tmp-{}-{}",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        // Synced before it takes its name, and the name synced after: a
        // crash can leave no file under the name whose header is whole but
        // whose code is not (the header is all that loading checks).
        write_synced(&tmp, &compiled)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| sync_dir(&path))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
            .context(CacheFault)?;
        // SAFETY: as above; this is the file just written from `compiled`.
        let component = unsafe { Component::deserialize_file(engine, &path) }
            .map_err(anyhow::Error::from)
            .context(CacheFault)?;
        Ok((component, Origin::Compiled))
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Syncs the directory `path` is in (its entries: a rename into it).
fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: its header and nothing else.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn retain_keeps_what_is_stored_or_used_and_nothing_stale() {
        let dir =
            std::env::temp_dir().join(format!("zatabase-cache-retain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let engine = wasmtime::Engine::default();
        let cache = CompileCache::new(&dir, &engine).unwrap();
        let (empty, _) = cache.load(&engine, EMPTY_COMPONENT).unwrap();
        drop(empty);
        let used = hex::encode(Sha256::digest(EMPTY_COMPONENT));
        let (stored, gone) = ("a".repeat(64), "b".repeat(64));
        let key = &cache.engine_key;
        let pid = std::process::id();
        for name in [
            format!("{stored}-{key}.cwasm"),
            format!("{gone}-{key}.cwasm"),
            format!("{stored}-0123456789abcdef.cwasm"),
            format!("{stored}-{key}.tmp-4000000000-0"),
            format!("{stored}-{key}.tmp-{pid}-7"),
            "README".to_owned(),
        ] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let removed = cache.retain(&HashSet::from([stored.clone()]));
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected = vec![
            format!("{stored}-{key}.cwasm"),
            format!("{stored}-{key}.tmp-{pid}-7"),
            format!("{used}-{key}.cwasm"),
            "README".to_owned(),
        ];
        expected.sort();
        assert_eq!(left, expected);
        assert_eq!(removed, 3);
        // Used, but not lately, and not stored: it goes too.
        let later = Instant::now() + KEPT_AFTER_USE * 2;
        assert_eq!(
            cache.retain_as_of(&HashSet::from([stored.clone()]), later),
            1
        );
        assert!(!dir.join(format!("{used}-{key}.cwasm")).exists());
        // A route group's, pinned, stays however long unused.
        let (empty, _) = cache.load_pinned(&engine, EMPTY_COMPONENT).unwrap();
        drop(empty);
        let much_later = Instant::now() + KEPT_AFTER_USE * 10;
        assert_eq!(cache.retain_as_of(&HashSet::new(), much_later), 1);
        assert!(dir.join(format!("{used}-{key}.cwasm")).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn threads_compiling_one_component_at_once_all_get_it() {
        let dir = std::env::temp_dir().join(format!("zatabase-cache-test-{}", std::process::id()));
        let engine = wasmtime::Engine::default();
        let cache = CompileCache::new(&dir, &engine).unwrap();
        for _ in 0..20 {
            cache.remove(&hex::encode(Sha256::digest(EMPTY_COMPONENT)));
            let start = std::sync::Barrier::new(8);
            std::thread::scope(|scope| {
                let loads: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            cache
                                .load(&engine, EMPTY_COMPONENT)
                                .map(|(_, origin)| origin)
                        })
                    })
                    .collect();
                for load in loads {
                    if let Err(error) = load.join().unwrap() {
                        panic!("a concurrent load failed: {error:#}");
                    }
                }
            });
        }
        let (_, origin) = cache.load(&engine, EMPTY_COMPONENT).unwrap();
        assert_eq!(origin, Origin::Cached);
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

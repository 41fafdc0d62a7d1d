//! Compiled code on disk, so a component is compiled once and reused across restarts.
//!
//! An entry is named by the SHA-256 of the wasm and of the engine's compatibility hash (which
//! changes with the wasmtime version, the target and every setting that affects code), and ends
//! with the SHA-256 of its own contents. Loading code is `unsafe`: wasmtime trusts it blindly.
//! So an entry whose checksum does not match, or that wasmtime rejects, is compiled afresh and
//! overwritten, never used.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::error::Context as _;
use wasmtime::{Engine, Result};

const CHECKSUM_LEN: usize = 32;

pub struct CompileCache {
    dir: PathBuf,
    /// Whether the entries were checked by the process that filled the cache: see `checked`.
    checked: bool,
}

impl CompileCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache {
            dir: dir.into(),
            checked: false,
        }
    }

    /// A cache whose entries were checked moments ago, by a process that loaded each one that
    /// will be used (Apache's precompile step, before the children start): an entry is then
    /// mapped as it is, not read whole and hashed once more by every child. Entries are only
    /// ever replaced by a rename, so what was checked stays what is mapped.
    pub fn checked(dir: impl Into<PathBuf>) -> Self {
        CompileCache {
            dir: dir.into(),
            checked: true,
        }
    }

    /// `$WASMBRIDGE_CACHE_DIR`, else `$XDG_CACHE_HOME/wasmbridge`, else `~/.cache/wasmbridge`.
    pub fn default_dir() -> Option<PathBuf> {
        let env = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        env("WASMBRIDGE_CACHE_DIR")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("wasmbridge")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/wasmbridge")))
    }

    /// The compiled form of a component, from the cache when a sound entry exists. `key` is
    /// what the component is made from (the wasm itself, or a module and the adapter that
    /// wraps it); `build` makes the component's bytes when they must be compiled.
    pub fn component(
        &self,
        engine: &Engine,
        key: &[&[u8]],
        build: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Component> {
        let path = self.entry_path(engine, key);
        if let Some(component) = self.load(engine, &path) {
            return Ok(component);
        }
        let code = engine.precompile_component(&build()?)?;
        match self.store(&path, &code) {
            // SAFETY: this engine produced the bytes just now, and the file holds them.
            Ok(()) => unsafe { map_or_copy(engine, &path, &code) },
            Err(e) => {
                eprintln!(
                    "wasmbridge: cannot write the compile cache at {}: {e:#}",
                    path.display()
                );
                // SAFETY: the bytes were produced by this engine just now.
                unsafe { Component::deserialize(engine, &code) }
            }
        }
    }

    fn entry_path(&self, engine: &Engine, key: &[&[u8]]) -> PathBuf {
        let mut digest = Sha256::new();
        for part in key {
            digest.update(Sha256::digest(part));
        }
        let mut compat = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut compat);
        // Decides at compile time whether instances start from a memory image, yet is not part
        // of wasmtime's hash.
        engine
            .get_memory_guaranteed_dense_image_size()
            .hash(&mut compat);
        digest.update(compat.0.finalize());
        self.dir.join(format!("{}.cwasm", hex(&digest.finalize())))
    }

    fn load(&self, engine: &Engine, path: &Path) -> Option<Component> {
        if self.checked {
            // SAFETY: see `checked`; wasmtime still checks that the entry matches this engine.
            // On any failure the entry is read and checked below.
            if let Ok(component) = unsafe { Component::deserialize_file(engine, path) } {
                return Some(component);
            }
        }
        let bytes = std::fs::read(path).ok()?;
        let Some(split) = bytes.len().checked_sub(CHECKSUM_LEN) else {
            eprintln!(
                "wasmbridge: recompiling: cache entry {} is truncated",
                path.display()
            );
            return None;
        };
        let (code, checksum) = bytes.split_at(split);
        if Sha256::digest(code).as_slice() != checksum {
            eprintln!(
                "wasmbridge: recompiling: cache entry {} is corrupt",
                path.display()
            );
            return None;
        }
        // SAFETY: the checksum shows these are the bytes this cache wrote from
        // `Engine::precompile_component`; wasmtime still checks that they match this engine.
        match unsafe { map_or_copy(engine, path, code) } {
            Ok(component) => Some(component),
            Err(e) => {
                eprintln!(
                    "wasmbridge: recompiling: cache entry {} is stale: {e}",
                    path.display()
                );
                None
            }
        }
    }

    /// Writes to a temporary file and renames it, so readers never see half an entry.
    fn store(&self, path: &Path, code: &[u8]) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut bytes = Vec::with_capacity(code.len() + CHECKSUM_LEN);
        bytes.extend_from_slice(code);
        bytes.extend_from_slice(&Sha256::digest(code));
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// Loads an entry mapped from its file rather than copied, so that the processes that load it
/// (Apache's children) share its code and memory images in the page cache; from `code`, the
/// same bytes in memory, where the file system refuses executable mappings (`noexec`).
///
/// # Safety
///
/// `code` must be what `Engine::precompile_component` wrote for `engine`, and the file at
/// `path` must hold `code` (the checksum after it is ignored: wasmtime reads the object by its
/// headers). Entries are never changed in place, only replaced by a rename, so a mapping stays
/// what was checked.
unsafe fn map_or_copy(engine: &Engine, path: &Path, code: &[u8]) -> Result<Component> {
    unsafe { Component::deserialize_file(engine, path) }
        .or_else(|_| unsafe { Component::deserialize(engine, code) })
}

/// Feeds `Hash` output into SHA-256, so the key does not depend on std's unstable hasher.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        unreachable!("only the digest is used")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! Compiled code on disk, so a component is compiled once and reused across restarts.
//!
//! Loading compiled code is `unsafe`: wasmtime maps it and runs it as it is. So the cache is
//! only ever read from a directory that nobody but its owner can change, and that owner is
//! this process's user or root (or, for Apache's children, the user that runs the parent):
//!
//! - every directory on the way to the cache belongs to root or to the owner and is writable
//!   by nobody else (a sticky directory such as `/tmp` may be: others cannot rename or remove
//!   what is not theirs), and the cache directory itself is writable by its owner alone;
//! - the directory is opened once, without following a symlink, and every entry is reached
//!   relative to that handle: renaming the path afterwards changes nothing;
//! - an entry must be a regular file of the owner that only the owner can write;
//! - entries are written to a new file (`O_CREAT|O_EXCL|O_NOFOLLOW`, relative to the handle)
//!   and renamed into place, so a planted symlink is never followed and readers never see half
//!   an entry.
//!
//! An entry is named by the SHA-256 of what the component is made from and of the engine's
//! compatibility hash (which changes with the wasmtime version, the target and every setting
//! that affects code), and ends with the SHA-256 of its own contents, which catches a truncated
//! or damaged file. The checksum is not what keeps code safe — the ownership is.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::error::Context as _;
use wasmtime::{Engine, Result, bail, format_err};

const CHECKSUM_LEN: usize = 32;

/// What a process may do with a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Load entries after checking their checksum, and add entries (`wasmbridge serve`, the
    /// precompile step of Apache's parent).
    ReadWrite,
    /// Map entries as they are, and never write (Apache's children, whose parent wrote and
    /// checked every entry just before they started, as another user).
    Shared,
}

pub struct CompileCache {
    /// The cache directory, opened once; entries are reached relative to it.
    dir: OwnedFd,
    path: PathBuf,
    /// Whose entries are trusted: this user (and root).
    owner: u32,
    access: Access,
}

impl CompileCache {
    /// Opens the cache of this process's own user, creating the directory (mode 0700) if it is
    /// missing. Fails when anyone else could change what is in it.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if !path.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .with_context(|| format!("cannot create the compile cache {}", path.display()))?;
        }
        let owner = rustix::process::geteuid().as_raw();
        CompileCache::open_as(path, owner, Access::ReadWrite)
    }

    /// Opens a cache that another process, running as `owner`, wrote and checked moments ago,
    /// for reading only: entries are mapped as they are (Apache's children, whose parent
    /// filled the cache as root before it started them).
    pub fn open_shared(path: impl Into<PathBuf>, owner: u32) -> Result<Self> {
        CompileCache::open_as(path.into(), owner, Access::Shared)
    }

    /// For a server that fills a cache as root and lets children of another user (`user`) read
    /// it, as Apache does: creates the directory (mode 0755) or, when it belongs to `user`
    /// (as an earlier mod_wasm left it), takes it back: it becomes root's and its entries,
    /// which `user` could have written, are removed. Returns what was done, for the log.
    pub fn prepare_shared(path: &Path, user: u32) -> Result<Option<String>> {
        if !path.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(path)
                .with_context(|| format!("cannot create the compile cache {}", path.display()))?;
            return Ok(None);
        }
        let dir = open_dir(path)?;
        let stat = rustix::fs::fstat(&dir)?;
        let me = rustix::process::geteuid().as_raw();
        if stat.st_uid == me || stat.st_uid != user || user == me {
            return Ok(None); // checked when it is opened
        }
        // Nothing new can appear once the directory is root's; then clear out what was there.
        rustix::fs::fchown(
            &dir,
            Some(rustix::process::Uid::from_raw(me)),
            Some(rustix::process::getegid()),
        )?;
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o755))?;
        let mut removed = 0;
        for entry in rustix::fs::Dir::read_from(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let is_dir = entry.file_type() == FileType::Directory;
            let flags = if is_dir {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            rustix::fs::unlinkat(&dir, name, flags).with_context(|| {
                format!(
                    "cannot remove {}/{} (a directory must be empty)",
                    path.display(),
                    name.to_string_lossy()
                )
            })?;
            removed += 1;
        }
        Ok(Some(format!(
            "the compile cache {} belonged to uid {user}, which could have changed its entries: \
             it belongs to root now, and its {removed} entries were removed",
            path.display()
        )))
    }

    fn open_as(path: PathBuf, owner: u32, access: Access) -> Result<Self> {
        let shown = path.display();
        let path = path
            .canonicalize()
            .with_context(|| format!("cannot open the compile cache {shown}"))?;
        check_ancestors(&path, owner)?;
        let dir = open_dir(&path)?;
        let stat = rustix::fs::fstat(&dir)?;
        check_owned(&stat, owner).map_err(|why| {
            format_err!(
                "the compile cache {} is not safe to load code from: it {why}",
                path.display()
            )
        })?;
        Ok(CompileCache {
            dir,
            path,
            owner,
            access,
        })
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

    pub fn path(&self) -> &Path {
        &self.path
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
        let name = entry_name(engine, key);
        if let Some(component) = self.load(engine, &name) {
            return Ok(component);
        }
        let code = engine.precompile_component(&build()?)?;
        if self.access == Access::ReadWrite {
            match self.store(&name, &code) {
                // SAFETY: this engine produced the bytes just now, and the entry holds them.
                Ok(()) => return unsafe { self.map_or_copy(engine, &name, &code) },
                Err(e) => eprintln!(
                    "wasmbridge: cannot write the compile cache at {}: {e:#}",
                    self.path.display()
                ),
            }
        }
        // SAFETY: the bytes were produced by this engine just now.
        unsafe { Component::deserialize(engine, &code) }
    }

    /// Makes sure the cache holds a sound entry for the component, compiling it if not,
    /// without loading it: the process that fills a cache for others never maps its code.
    pub fn ensure(
        &self,
        engine: &Engine,
        key: &[&[u8]],
        build: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<()> {
        let name = entry_name(engine, key);
        if self.read_checked(&name).is_some() {
            return Ok(());
        }
        let code = engine.precompile_component(&build()?)?;
        self.store(&name, &code)
    }

    fn load(&self, engine: &Engine, name: &str) -> Option<Component> {
        if self.access == Access::Shared {
            self.entry_stat(name).ok()??;
            // SAFETY: only the owner can have written the entry (see the module's comment),
            // and the process that did checked it before this one started; wasmtime still
            // checks that it was made for this engine.
            return match unsafe { Component::deserialize_file(engine, self.entry_path(name)) } {
                Ok(component) => Some(component),
                Err(e) => {
                    eprintln!(
                        "wasmbridge: compiling in memory: cache entry {}/{name} cannot be loaded: {e}",
                        self.path.display()
                    );
                    None
                }
            };
        }
        let bytes = self.read_checked(name)?;
        let code = &bytes[..bytes.len() - CHECKSUM_LEN];
        // SAFETY: the entry is the owner's, and its checksum shows these are the bytes this
        // cache wrote from `Engine::precompile_component`; wasmtime still checks that they
        // match this engine.
        match unsafe { self.map_or_copy(engine, name, code) } {
            Ok(component) => Some(component),
            Err(e) => {
                eprintln!(
                    "wasmbridge: recompiling: cache entry {}/{name} is stale: {e}",
                    self.path.display()
                );
                None
            }
        }
    }

    /// The entry's bytes, checksum included, if it exists, is the owner's and is whole.
    fn read_checked(&self, name: &str) -> Option<Vec<u8>> {
        match self.entry_stat(name) {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(why) => {
                eprintln!("wasmbridge: recompiling: {why}");
                return None;
            }
        }
        let fd = rustix::fs::openat(
            &self.dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let mut bytes = Vec::new();
        File::from(fd).read_to_end(&mut bytes).ok()?;
        let Some(split) = bytes.len().checked_sub(CHECKSUM_LEN) else {
            eprintln!(
                "wasmbridge: recompiling: cache entry {}/{name} is truncated",
                self.path.display()
            );
            return None;
        };
        let (code, checksum) = bytes.split_at(split);
        if Sha256::digest(code).as_slice() != checksum {
            eprintln!(
                "wasmbridge: recompiling: cache entry {}/{name} is corrupt",
                self.path.display()
            );
            return None;
        }
        Some(bytes)
    }

    /// `Ok(None)` when there is no entry; an error when there is one that is not the owner's
    /// own regular file, writable by nobody else.
    fn entry_stat(&self, name: &str) -> Result<Option<Stat>, String> {
        let stat = match rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(format!("cannot read cache entry {name}: {e}")),
        };
        let unsafe_entry = |why: String| {
            format!(
                "cache entry {}/{name} is not used: it {why}",
                self.path.display()
            )
        };
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(unsafe_entry("is not a regular file".into()));
        }
        check_owned(&stat, self.owner).map_err(unsafe_entry)?;
        Ok(Some(stat))
    }

    /// Writes to a new file of its own and renames it into place.
    fn store(&self, name: &str, code: &[u8]) -> Result<()> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = format!(
            ".tmp-{}-{}-{:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| t.subsec_nanos())
        );
        let fd = rustix::fs::openat(
            &self.dir,
            &*tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .with_context(|| format!("cannot create {}/{tmp}", self.path.display()))?;
        let mut file = File::from(fd);
        let written = file
            .write_all(code)
            .and_then(|()| file.write_all(&Sha256::digest(code)));
        let renamed = written.map_err(wasmtime::Error::from).and_then(|()| {
            rustix::fs::renameat(&self.dir, &*tmp, &self.dir, name).map_err(Into::into)
        });
        if renamed.is_err() {
            let _ = rustix::fs::unlinkat(&self.dir, &*tmp, AtFlags::empty());
        }
        renamed
    }

    /// The entry's path through the directory handle this cache opened, so that it names the
    /// checked directory whatever happens to its path.
    fn entry_path(&self, name: &str) -> PathBuf {
        let through_fd = PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_fd().as_raw_fd()));
        if through_fd.exists() {
            through_fd.join(name)
        } else {
            self.path.join(name)
        }
    }

    /// Loads an entry mapped from its file rather than copied, so that the processes that load
    /// it (Apache's children) share its code and memory images in the page cache; from `code`,
    /// the same bytes in memory, where the file system refuses executable mappings (`noexec`).
    ///
    /// # Safety
    ///
    /// `code` must be what `Engine::precompile_component` wrote for `engine`, and the entry
    /// must hold `code` (the checksum after it is ignored: wasmtime reads the object by its
    /// headers). Entries are never changed in place, only replaced by a rename, so a mapping
    /// stays what was checked.
    unsafe fn map_or_copy(&self, engine: &Engine, name: &str, code: &[u8]) -> Result<Component> {
        unsafe { Component::deserialize_file(engine, self.entry_path(name)) }
            .or_else(|_| unsafe { Component::deserialize(engine, code) })
    }
}

/// The entry's file name: what the component is made from, and the engine it is for.
fn entry_name(engine: &Engine, key: &[&[u8]]) -> String {
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
    format!("{}.cwasm", hex(&digest.finalize()))
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open the compile cache {}", path.display()))
}

/// Whether a file or directory belongs to `owner` (or root) and nobody else may write it.
fn check_owned(stat: &Stat, owner: u32) -> Result<(), String> {
    if stat.st_uid != owner && stat.st_uid != 0 {
        return Err(format!(
            "belongs to uid {}, not to uid {owner} or root",
            stat.st_uid
        ));
    }
    if stat.st_mode & 0o022 != 0 {
        return Err(format!(
            "can be written by others (mode {:o})",
            stat.st_mode & 0o7777
        ));
    }
    Ok(())
}

/// Every directory above the cache belongs to root or `owner`, and only they can change it,
/// unless it is sticky (as `/tmp` is: others cannot rename what they do not own).
fn check_ancestors(path: &Path, owner: u32) -> Result<()> {
    for ancestor in path.ancestors().skip(1) {
        let stat = rustix::fs::stat(ancestor)
            .with_context(|| format!("cannot check {}", ancestor.display()))?;
        let sticky = stat.st_mode & 0o1000 != 0;
        let owned = stat.st_uid == owner || stat.st_uid == 0;
        if !owned || (stat.st_mode & 0o022 != 0 && !sticky) {
            bail!(
                "the compile cache {} is not safe to load code from: {} can be changed by uid {} or others (mode {:o})",
                path.display(),
                ancestor.display(),
                stat.st_uid,
                stat.st_mode & 0o7777
            );
        }
    }
    Ok(())
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

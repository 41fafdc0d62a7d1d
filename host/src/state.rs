//! The data of one request's store: WASI context, HTTP context, resource table and limiter.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use wasmtime::component::ResourceTable;
use wasmtime::error::Context as _;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::cgi::channel::Channel;
use crate::limits::Limiter;
use crate::outbound::AllowedHosts;
use crate::sandbox::Sandbox;

pub(crate) struct RequestState {
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub hooks: HttpHooks,
    pub limiter: Limiter,
    /// A CGI worker's channel to the host (`wasmbridge:worker/channel`).
    pub channel: Option<Channel>,
    /// The instance's own temporary directory, removed with the store.
    pub _scratch: Option<Scratch>,
    /// Counts the instance as live for as long as its store lives.
    pub instance: crate::metrics::LiveInstance,
    /// The request the guest's output lines are tagged with: an instance that serves many
    /// requests is retagged as it starts each.
    pub request_id: std::sync::Arc<AtomicU64>,
}

/// Where a CGI program finds its own temporary directory (`TMPDIR`).
pub const SCRATCH_DIR: &str = "/tmp/wasmbridge";

/// An instance's own temporary directory, mounted at [`SCRATCH_DIR`] and named by `TMPDIR`
/// (unless the app grants a `TMPDIR` of its own). It lives in this process's directory (see
/// [`ProcessDir`]) and is removed with everything in it when the instance's store goes,
/// whatever ended it.
pub(crate) struct Scratch {
    host: PathBuf,
}

impl Scratch {
    pub(crate) fn new(wasi: &mut WasiCtxBuilder, sandbox: &Sandbox) -> wasmtime::Result<Scratch> {
        let host = ProcessDir::new_entry()?;
        let scratch = Scratch { host };
        wasi.preopened_dir(&scratch.host, SCRATCH_DIR, FsPerms::ReadWrite)?;
        if !sandbox.env.iter().any(|(name, _)| name == "TMPDIR") {
            wasi.env("TMPDIR", SCRATCH_DIR);
        }
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.host);
        ProcessDir::release(&self.host);
    }
}

/// The directory that holds this process's scratch directories, directly under the system's
/// temporary directory: made when the first one is, removed when the last one goes, and
/// removed whole by [`remove_scratch_dirs`] when the process ends with instances still alive
/// (CGI workers). `mkdir` fails on any name that exists (a leftover of a process that had
/// this pid, a symlink someone planted), so the directory we get is ours, and so is all in it.
struct ProcessDir {
    /// The process that made it: a forked child (Apache's) makes its own.
    pid: u32,
    path: PathBuf,
    live: usize,
    next: u64,
}

static PROCESS_DIR: Mutex<Option<ProcessDir>> = Mutex::new(None);

impl ProcessDir {
    /// A new, empty directory for one instance.
    fn new_entry() -> wasmtime::Result<PathBuf> {
        let mut current = PROCESS_DIR.lock().unwrap();
        let pid = std::process::id();
        if current.as_ref().is_none_or(|dir| dir.pid != pid) {
            *current = Some(ProcessDir {
                pid,
                path: Self::create()?,
                live: 0,
                next: 0,
            });
        }
        let dir = current.as_mut().expect("made above");
        let entry = dir.path.join(dir.next.to_string());
        dir.next += 1;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&entry)
            .with_context(|| format!("cannot create {}", entry.display()))?;
        dir.live += 1;
        Ok(entry)
    }

    /// `entry` is gone; the last one takes the directory with it.
    fn release(entry: &std::path::Path) {
        let mut current = PROCESS_DIR.lock().unwrap();
        let ours = |dir: &&mut ProcessDir| {
            dir.pid == std::process::id() && entry.parent() == Some(dir.path.as_path())
        };
        if let Some(dir) = current.as_mut().filter(ours) {
            dir.live -= 1;
            if dir.live == 0 {
                let _ = std::fs::remove_dir(&dir.path);
                *current = None;
            }
        }
    }

    fn create() -> wasmtime::Result<PathBuf> {
        use std::hash::{BuildHasher as _, RandomState};
        let tmp = std::env::temp_dir();
        let mut tries = 0;
        loop {
            let salt = RandomState::new().hash_one(std::process::id()) as u32;
            let path = tmp.join(format!("wasmbridge-{}-{salt:08x}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 16 => tries += 1,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()));
                }
            }
        }
    }
}

/// Removes this process's scratch directories, the instances still alive included: for a
/// process that is ending (an Apache child at exit, `wasmbridge serve` at shutdown), whose
/// long-lived instances would otherwise leave theirs behind.
pub fn remove_scratch_dirs() {
    let mut current = PROCESS_DIR.lock().unwrap();
    if let Some(dir) = current.take_if(|dir| dir.pid == std::process::id()) {
        let _ = std::fs::remove_dir_all(&dir.path);
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// How `wasi:http` behaves for one app.
#[derive(Clone, Debug)]
pub(crate) struct HttpHooks {
    /// Outgoing requests are network access: all allowed when the network was granted
    /// (`-S inherit-network`), else those the app's allowed hosts name.
    pub outgoing_allowed: bool,
    pub allowed_hosts: AllowedHosts,
    pub outgoing_body_buffer_chunks: usize,
    pub outgoing_body_chunk_size: usize,
}

type SendResult = wasmtime_wasi_http::Result<crate::outgoing::Sent>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let (any, hosts) = (self.outgoing_allowed, self.allowed_hosts.clone());
        Box::new(async move { crate::outgoing::send(request, options, any, &hosts).await })
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        self.outgoing_body_buffer_chunks
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        self.outgoing_body_chunk_size
    }
}

//! The Rust half of mod_wasm: the wasmbridge host behind the small C interface that
//! `mod_wasm.c` calls (declared in `mod_wasm_core.h`).
//!
//! A request runs on the Apache thread that took it, on that thread's own single-threaded tokio
//! runtime: no hand-offs between threads. The thread loops on [`wb_request_next`], which drives
//! the request until the host needs Apache (read more of the request body, send the response
//! head, pass a chunk of the body down the output filters, write a log line); the thread does
//! that with Apache's own APIs and comes back. Only that thread touches the `request_rec`, its
//! pools and its filters.
//!
//! Nothing here starts a thread before [`wb_child_init`], which Apache calls in each child after
//! the fork (the epoch ticker is the only thread the host adds); configuration checks ([`wb_inspect`]) and the precompile step ([`wb_precompile`],
//! run in a throwaway process) are single-threaded or leave no threads behind.
//!
//! # Safety
//!
//! Every function trusts its caller, mod_wasm.c: strings are NUL-terminated and valid for the
//! call, arrays hold as many elements as their count says, and a `WbRequest` is used by one
//! thread at a time and freed once.
#![allow(
    clippy::missing_safety_doc,
    reason = "one contract for all, stated above"
)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame};
use tokio::sync::{Semaphore, mpsc};
use wasmtime::Engine;
use wasmtime_cli_flags::CommonOptions;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use wasmbridge::cache::CompileCache;
use wasmbridge::cgi::CgiConfig;
use wasmbridge::engine::{EpochTicker, new_engine};
use wasmbridge::failure::Failure;
use wasmbridge::limits::Limits;
use wasmbridge::log::{GuestStream, Log, failure_line};
use wasmbridge::metrics::Registry;
use wasmbridge::outbound::AllowedHosts;
use wasmbridge::sandbox::{Preopen, Sandbox};
use wasmbridge::{App, AppConfig, Mode, RequestContext};

/// Apache's log levels (`APLOG_ERR`, `APLOG_INFO`).
const LEVEL_ERR: c_int = 3;
const LEVEL_INFO: c_int = 6;

/// Response chunks in flight between the guest and the Apache thread: the guest waits for the
/// client beyond this, so a large response never piles up in memory.
const DATA_WINDOW: usize = 8;

/// Writes a line to Apache's error log for the server (no request at hand).
pub type ServerLogFn = extern "C" fn(level: c_int, message: *const c_char);

/// One child process's host: engine and the apps loaded so far.
struct Child {
    engine: Engine,
    _ticker: EpochTicker,
    cache: Option<CompileCache>,
    max_concurrent: usize,
    /// Apps by their description (see [`AppDescription`]); a child keeps what it loaded, or
    /// why it could not (until a restart, which is also what picks up a changed file).
    apps: Mutex<HashMap<String, Arc<LoadedApp>>>,
    next_id: AtomicU64,
    log: Arc<ApacheLog>,
    /// The counters of this child's apps, by name: sections that load the same module count
    /// together (`wasm-status`).
    stats: Registry,
}

static CHILD: OnceLock<Child> = OnceLock::new();

/// Loaded once per child: the threads that want it meanwhile wait for that one load.
type LoadedApp = OnceLock<Result<&'static App, String>>;

thread_local! {
    /// The runtime of the Apache thread: it runs the requests this thread serves, one at a
    /// time, while the thread waits in `wb_request_next`.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
}

/// Prepares, in Apache's parent at configuration time, what the children can no longer do
/// once they run as `User`: see [`wasmbridge::engine::open_pagemap_for_children`].
#[unsafe(no_mangle)]
pub extern "C" fn wb_parent_init() {
    wasmbridge::engine::open_pagemap_for_children();
}

/// The engine's options from `WasmEngineOptions`: wasmtime's `-O` options, comma-separated as
/// `wasmtime serve -O` takes them (empty: none).
fn engine_options(optimize: &str) -> Result<CommonOptions, String> {
    use clap::Parser as _;
    let mut args = vec!["WasmEngineOptions"];
    if !optimize.is_empty() {
        args.extend(["-O", optimize]);
    }
    let mut options = CommonOptions::try_parse_from(args).map_err(|e| {
        // clap's first line, without its "error: " and usage.
        let text = e.to_string();
        let line = text.lines().next().unwrap_or_default();
        line.trim_start_matches("error: ").to_string()
    })?;
    // Reads the raw `-O` values into their typed fields: a bad value fails here.
    options.init_logging().map_err(|e| format!("{e:#}"))?;
    Ok(options)
}

/// Checks `WasmEngineOptions` at configuration time. Returns 0, or -1 with the reason in
/// `error`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_check_engine_options(
    optimize: *const c_char,
    error: *mut c_char,
    error_len: usize,
) -> c_int {
    match engine_options(unsafe { str_or_empty(optimize) }) {
        Ok(_) => 0,
        Err(message) => {
            unsafe { write_c(error, error_len, &message) };
            -1
        }
    }
}

/// Ends the host in an Apache child that is exiting: the instances it keeps (CGI workers) go
/// with the process, so their temporary directories go now.
#[unsafe(no_mangle)]
pub extern "C" fn wb_child_exit() {
    wasmbridge::remove_scratch_dirs();
}

/// Starts the host in an Apache child: `threads` requests may run at once (the MPM's threads
/// per child), `cache_dir` holds compiled code (NULL: no cache), `optimize` is
/// `WasmEngineOptions` (NULL: none). Returns 0, or -1 with the reason already logged.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_child_init(
    threads: c_int,
    cache_dir: *const c_char,
    cache_owner: u32,
    optimize: *const c_char,
    server_log: ServerLogFn,
) -> c_int {
    let log = Arc::new(ApacheLog {
        requests: Mutex::new(HashMap::new()),
        server: server_log,
    });
    let threads = threads.max(1) as usize;
    let result = (|| -> wasmtime::Result<Child> {
        let mut options =
            engine_options(unsafe { str_or_empty(optimize) }).map_err(wasmtime::Error::msg)?;
        let engine = new_engine(&mut options, threads as u32)?;
        // wb_precompile wrote and checked the entries, as `cache_owner`, just before the
        // children started; they only read them.
        let cache = unsafe { opt_str(cache_dir) }.and_then(|dir| {
            CompileCache::open_shared(dir, cache_owner)
                .inspect_err(|e| {
                    log.server(LEVEL_ERR, &format!("compiling without the cache: {e:#}"))
                })
                .ok()
        });
        Ok(Child {
            _ticker: EpochTicker::start(&engine),
            engine,
            cache,
            max_concurrent: threads,
            apps: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            log: log.clone(),
            stats: Registry::default(),
        })
    })();
    match result {
        Ok(child) => {
            let _ = CHILD.set(child);
            0
        }
        Err(e) => {
            log.server(
                LEVEL_ERR,
                &format!("cannot start the WebAssembly host: {e:#}"),
            );
            -1
        }
    }
}

/// Checks at configuration time that `path` can be served: CGI-style when `cgi` is 1, by CGI
/// workers when it is 2, by instances that serve many requests (a WASI 0.3 component) when it
/// is 3. Returns 0, or -1 with the reason in `error` (NUL-terminated, cut to `error_len`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_inspect(
    path: *const c_char,
    cgi: c_int,
    error: *mut c_char,
    error_len: usize,
) -> c_int {
    use wasmbridge::program::{Kind, inspect, serves_workers};
    let path = unsafe { str_or_empty(path) };
    let checked = std::fs::read(path)
        .map_err(|e| format!("cannot read {path}: {e}"))
        .and_then(|wasm| {
            let kind = inspect(&wasm).map_err(|e| format!("{path}: {e}"))?;
            match kind {
                Kind::HttpComponent | Kind::Http3Component if cgi == 1 || cgi == 2 => Err(format!(
                    "{path} is a wasi:http component, not a CGI program: remove `WasmEnableCGI On`"
                )),
                Kind::HttpComponent | Kind::CommandComponent | Kind::Preview1Command
                    if cgi == 3 =>
                {
                    Err(format!(
                        "{path} gets a fresh instance for every request: instance reuse \
                         (`WasmMaxInstanceReuse` above 1) is for WASI 0.3 components"
                    ))
                }
                _ if cgi == 2 && !serves_workers(&wasm).unwrap_or(false) => Err(format!(
                    "{path} cannot serve as a CGI worker: it does not import `{}` (php-cgi from \
                     guests/php does); remove `WasmCGIWorkers`",
                    wasmbridge::cgi::WORKER_CHANNEL
                )),
                _ => Ok(()),
            }
        });
    match checked {
        Ok(()) => 0,
        Err(message) => {
            unsafe { write_c(error, error_len, &message) };
            -1
        }
    }
}

/// Checks at configuration time what only running the app can check (a WSGI app that does
/// not import: see [`App::check_start`]), with the code compiled into the cache at `cache_dir`
/// by `cache_owner` (NULL: no cache) and `WasmEngineOptions` (`optimize`). mod_wasm.c runs it
/// in a process of its own, which ends after it. Returns 0, or -1 with the reason in `error`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_check_start(
    description: *const c_char,
    cache_dir: *const c_char,
    cache_owner: u32,
    optimize: *const c_char,
    error: *mut c_char,
    error_len: usize,
) -> c_int {
    let description = unsafe { str_or_empty(description) };
    let cache_dir = unsafe { opt_str(cache_dir) };
    let optimize = unsafe { str_or_empty(optimize) };
    let checked = (|| -> Result<(), String> {
        let AppDescription { module, config } = AppDescription::parse(description)?;
        let mut options = engine_options(optimize)?;
        let engine = new_engine(&mut options, 1).map_err(|e| format!("{e:#}"))?;
        let cache = cache_dir.and_then(|dir| CompileCache::open_shared(dir, cache_owner).ok());
        let app = App::load(&engine, &module, cache.as_ref(), false, config)
            .map_err(|e| format!("{e:#}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let _ticker = EpochTicker::start(&engine);
        runtime
            .block_on(app.check_start())
            .map_err(|e| format!("{e:#}"))
    })();
    match checked {
        Ok(()) => 0,
        Err(message) => {
            unsafe { write_c(error, error_len, &message) };
            -1
        }
    }
}

/// Makes the compile cache at `cache_dir` ready for the precompile step, in Apache's parent
/// (as root): creates it, or takes it back from `user` (Apache's `User`) if an earlier
/// mod_wasm left it to that user. Returns 0, with what was done in `note` (empty if nothing),
/// or -1 with the reason in `error`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_cache_prepare(
    cache_dir: *const c_char,
    user: u32,
    note: *mut c_char,
    error: *mut c_char,
    len: usize,
) -> c_int {
    let dir = std::path::Path::new(unsafe { str_or_empty(cache_dir) });
    match CompileCache::prepare_shared(dir, user) {
        Ok(done) => {
            unsafe { write_c(note, len, done.as_deref().unwrap_or_default()) };
            0
        }
        Err(e) => {
            unsafe { write_c(error, len, &format!("{e:#}")) };
            -1
        }
    }
}

/// Compiles the apps described by `descriptions` (`count` of them) into the compile cache at
/// `cache_dir`, with the engine options of `WasmEngineOptions` (`optimize`). Apache runs this
/// in a short-lived process forked from the parent before the children start, so that they
/// load compiled code instead of each compiling it. Returns 0, or
/// -1 with the first failure in `error`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_precompile(
    descriptions: *const *const c_char,
    count: usize,
    cache_dir: *const c_char,
    optimize: *const c_char,
    error: *mut c_char,
    error_len: usize,
) -> c_int {
    let Some(cache_dir) = (unsafe { opt_str(cache_dir) }) else {
        return 0;
    };
    let result = (|| -> Result<(), String> {
        let cache = CompileCache::open(cache_dir).map_err(|e| format!("{e:#}"))?;
        // The children's options, so that they find what is compiled here.
        let mut options = engine_options(unsafe { str_or_empty(optimize) })?;
        let engine = new_engine(&mut options, 1).map_err(|e| format!("{e:#}"))?;
        for i in 0..count {
            let description = unsafe { str_or_empty(*descriptions.add(i)) };
            let app = AppDescription::parse(description)?;
            wasmbridge::program::precompile(&engine, &app.module, &cache)
                .map_err(|e| format!("{e:#}"))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => 0,
        Err(message) => {
            unsafe { write_c(error, error_len, &message) };
            -1
        }
    }
}

/// The request head as Apache has it. Strings are NUL-terminated and live until
/// [`wb_request_start`] returns.
#[repr(C)]
pub struct WbRequestHead {
    pub method: *const c_char,
    /// Path and query as the client sent them.
    pub uri: *const c_char,
    /// 1 when the client came over TLS.
    pub https: c_int,
    pub header_names: *const *const c_char,
    pub header_values: *const *const c_char,
    pub header_count: usize,
    /// 0 when the request has no body (no Content-Length above 0, no Transfer-Encoding).
    pub has_body: c_int,
    pub local_ip: *const c_char,
    pub local_port: u16,
    pub remote_ip: *const c_char,
    pub remote_port: u16,
    /// Apache's CGI variables (`ap_add_cgi_vars`), for CGI mode; NULL otherwise.
    pub cgi_names: *const *const c_char,
    pub cgi_values: *const *const c_char,
    pub cgi_count: usize,
}

/// What the Apache thread does next.
#[repr(C)]
pub struct WbEvent {
    pub kind: c_int,
    /// HEAD: the status and headers. Valid until the next call for this request.
    pub status: c_int,
    pub header_names: *const *const c_char,
    pub header_values: *const *const c_char,
    pub header_count: usize,
    /// DATA: bytes to pass down the output filters. LOG, FAILED: a NUL-terminated line.
    pub data: *const c_char,
    pub len: usize,
    /// LOG: Apache's level for the line.
    pub level: c_int,
}

pub const WB_EMPTY: c_int = 0;
pub const WB_WANT_BODY: c_int = 1;
pub const WB_HEAD: c_int = 2;
pub const WB_DATA: c_int = 3;
pub const WB_END: c_int = 4;
pub const WB_LOG: c_int = 5;
pub const WB_FAILED: c_int = 6;
pub const WB_FAILURE_CAUSE: c_int = 7;

enum Event {
    WantBody,
    Head(http::response::Parts),
    Data(Bytes),
    End,
    Failed(String),
    Log(c_int, String),
    /// Why the request failed, in a word ([`Failure::cause`]): the `wasm-failure` note.
    FailureCause(&'static str),
}

/// A request in flight, owned by the Apache thread serving it.
pub struct WbRequest {
    id: u64,
    events: mpsc::UnboundedReceiver<Event>,
    /// The request body's way in; dropped at the end of the body.
    body: Option<mpsc::Sender<Result<Bytes, wasmtime_wasi_http::Error>>>,
    /// When the request's deadline passes, if it has one.
    deadline: Option<std::time::Instant>,
    /// Returned one per DATA event handled: the guest may have DATA_WINDOW chunks in flight.
    credits: Arc<Semaphore>,
    /// Keeps what the last event points at alive until the next call.
    held: Held,
    /// Serves the request and turns the response into events; polled in place by
    /// `wb_request_next` (a spawned task would wake this thread's runtime through its
    /// eventfd). None once it has finished.
    serve: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

impl WbRequest {
    /// Polls the request's future, if it has not finished.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(serve) = &mut self.serve
            && serve.as_mut().poll(cx).is_ready()
        {
            self.serve = None;
        }
    }

    /// Polls the request's future once, without waiting.
    fn drive_once(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            self.drive(cx);
            Poll::Ready(())
        })
    }
}

#[derive(Default)]
struct Held {
    strings: Vec<CString>,
    names: Vec<*const c_char>,
    values: Vec<*const c_char>,
    data: Bytes,
}

/// Returns the app a configuration describes, loading it on first use in this child; NULL if
/// it cannot be loaded (the reason is in `error`). The app lives as long as the child.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_app_get(
    description: *const c_char,
    error: *mut c_char,
    error_len: usize,
) -> *const App {
    let Some(child) = CHILD.get() else {
        unsafe {
            write_c(
                error,
                error_len,
                "the WebAssembly host did not start in this child",
            )
        };
        return std::ptr::null();
    };
    let description = unsafe { str_or_empty(description) };
    let slot = child
        .apps
        .lock()
        .unwrap()
        .entry(description.to_string())
        .or_default()
        .clone();
    // Loaded outside the table's lock: a slow load holds up only the requests for this app.
    let loaded =
        slot.get_or_init(|| load_app(child, description).map(|app| &*Box::leak(Box::new(app))));
    match loaded {
        Ok(app) => *app,
        Err(message) => {
            unsafe { write_c(error, error_len, message) };
            std::ptr::null()
        }
    }
}

/// Writes the app's name (what its log lines and `wasm-status` call it) into `name`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_app_name(app: *const App, name: *mut c_char, name_len: usize) {
    unsafe { write_c(name, name_len, (*app).name()) };
}

/// Checks a `WasmAllowedOutboundHosts` rule. Returns 0, or -1 with the reason in `error`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_check_outbound_host(
    rule: *const c_char,
    error: *mut c_char,
    error_len: usize,
) -> c_int {
    match AllowedHosts::parse(&[unsafe { str_or_empty(rule) }]) {
        Ok(_) => 0,
        Err(e) => {
            unsafe { write_c(error, error_len, &format!("{e:#}")) };
            -1
        }
    }
}

/// The counters of the apps this child has loaded, in Prometheus' text format (the
/// `wasm-status` handler). Free it with [`wb_status_free`].
#[unsafe(no_mangle)]
pub extern "C" fn wb_status() -> *mut c_char {
    let mut text = format!(
        "# wasmbridge in Apache child {}: each child counts the requests it serves\n",
        std::process::id()
    );
    if let Some(child) = CHILD.get() {
        let apps: Vec<&'static App> = child
            .apps
            .lock()
            .unwrap()
            .values()
            .filter_map(|slot| slot.get()?.as_ref().ok().copied())
            .collect();
        // Apps of the same name count together: one series each.
        let mut seen = std::collections::BTreeMap::new();
        for app in apps {
            seen.entry(app.name()).or_insert_with(|| app.stats());
        }
        text += &wasmbridge::metrics::render(seen.iter().map(|(name, stats)| (*name, &***stats)));
    }
    CString::new(text).unwrap_or_default().into_raw()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_status_free(text: *mut c_char) {
    if !text.is_null() {
        drop(unsafe { CString::from_raw(text) });
    }
}

/// 1 when the app runs CGI programs (the Apache side then passes its CGI variables).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_app_is_cgi(app: *const App) -> c_int {
    unsafe { &*app }.is_cgi() as c_int
}

/// Starts serving a request with `app`. Never fails: a failure becomes an error response.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_request_start(
    app: *const App,
    head: *const WbRequestHead,
) -> *mut WbRequest {
    let child = CHILD
        .get()
        .expect("wb_app_get succeeded, so the child started");
    let app: &'static App = unsafe { &*app };
    let head = unsafe { &*head };
    let id = child.next_id.fetch_add(1, Ordering::Relaxed);
    let deadline = app
        .config()
        .limits
        .timeout
        .map(|timeout| std::time::Instant::now() + timeout);

    let (events_tx, events) = mpsc::unbounded_channel();
    let (body_tx, body_rx) = mpsc::channel(1);
    let credits = Arc::new(Semaphore::new(DATA_WINDOW));
    child.log.register(id, events_tx.clone());

    let request = unsafe { build_request(head, body_rx, events_tx.clone()) };
    let mut cx = RequestContext::new(
        id,
        if head.https == 1 {
            Scheme::Https
        } else {
            Scheme::Http
        },
    );
    cx.local = unsafe { socket_addr(head.local_ip, head.local_port) };
    cx.remote = unsafe { socket_addr(head.remote_ip, head.remote_port) };
    if !head.cgi_names.is_null() {
        // WASI's environment is UTF-8: other bytes become U+FFFD rather than nothing.
        let vars = unsafe { pairs(head.cgi_names, head.cgi_values, head.cgi_count) };
        let text = |bytes| String::from_utf8_lossy(bytes).into_owned();
        cx.cgi_env = Some(vars.map(|(n, v)| (text(n), text(v))).collect());
    }
    let body = (head.has_body != 0).then_some(body_tx);

    let task_credits = credits.clone();
    let serve = Box::pin(async move {
        let response = match request {
            Ok(request) => app.handle(request, cx).await,
            Err(failure) => wasmbridge::app::error_response(&failure),
        };
        let (parts, body) = response.into_parts();
        if events_tx.send(Event::Head(parts)).is_err() {
            return;
        }
        let mut body = std::pin::pin!(body);
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            match frame {
                Ok(frame) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    let Ok(permit) = task_credits.acquire().await else {
                        return;
                    };
                    permit.forget();
                    if events_tx.send(Event::Data(data)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // A guest that failed mid-response has said so in the log already.
                    let line = match e {
                        wasmtime_wasi_http::Error::HttpResponseIncomplete => String::new(),
                        e => format!(
                            "error [{id}] :: app `{}`: the response body failed: {e}",
                            app.name()
                        ),
                    };
                    let _ = events_tx.send(Event::Failed(line));
                    return;
                }
            }
        }
        let _ = events_tx.send(Event::End);
    });

    Box::into_raw(Box::new(WbRequest {
        id,
        events,
        body,
        deadline,
        credits,
        held: Held::default(),
        serve: Some(serve),
    }))
}

/// The next thing to do for `request`. With `wait_ms` 0 it returns `WB_EMPTY` instead of
/// waiting, so that the caller can flush what it has passed down so far first; otherwise it
/// waits up to `wait_ms` milliseconds (-1: for as long as it takes) and returns `WB_EMPTY`
/// if nothing happened, so that the caller can see whether its client is still there.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_request_next(
    request: *mut WbRequest,
    event: *mut WbEvent,
    wait_ms: c_int,
) -> c_int {
    let request = unsafe { &mut *request };
    let event = unsafe { &mut *event };
    // What the previous DATA event lent out has been passed on: the guest may send more.
    if !request.held.data.is_empty() {
        request.held.data = Bytes::new();
        request.credits.add_permits(1);
    }
    request.held.strings.clear();
    request.held.names.clear();
    request.held.values.clear();

    let next = if wait_ms != 0 {
        let next = RUNTIME.with(|runtime| {
            runtime.block_on(async {
                let next = std::future::poll_fn(|cx| {
                    request.drive(cx);
                    request.events.poll_recv(cx)
                });
                match u64::try_from(wait_ms) {
                    Ok(ms) => tokio::time::timeout(Duration::from_millis(ms), next)
                        .await
                        .ok(),
                    Err(_) => Some(next.await),
                }
            })
        });
        let Some(next) = next else {
            event.kind = WB_EMPTY;
            return WB_EMPTY;
        };
        next
    } else {
        let mut next = request.events.try_recv();
        if matches!(next, Err(mpsc::error::TryRecvError::Empty)) {
            // Let what is ready run first: a guest that has finished its response will have
            // sent the end too, and the Apache side can then send it all in one write.
            RUNTIME.with(|runtime| {
                runtime.block_on(async {
                    request.drive_once().await;
                    // Once round the runtime's other tasks (the guest's), then here again.
                    tokio::task::yield_now().await;
                    request.drive_once().await;
                })
            });
            next = request.events.try_recv();
        }
        match next {
            Ok(next) => Some(next),
            Err(mpsc::error::TryRecvError::Empty) => {
                event.kind = WB_EMPTY;
                return WB_EMPTY;
            }
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        }
    };
    let held = &mut request.held;
    let mut text = |text: String| {
        let text = CString::new(text.replace('\0', "\\0")).unwrap();
        let pointer = text.as_ptr();
        held.strings.push(text);
        pointer
    };
    event.kind = match next {
        Some(Event::WantBody) => WB_WANT_BODY,
        Some(Event::Head(parts)) => {
            event.status = parts.status.as_u16() as c_int;
            for (name, value) in &parts.headers {
                let name = text(name.as_str().to_string());
                let value = text(String::from_utf8_lossy(value.as_bytes()).into_owned());
                held.names.push(name);
                held.values.push(value);
            }
            event.header_names = held.names.as_ptr();
            event.header_values = held.values.as_ptr();
            event.header_count = held.names.len();
            WB_HEAD
        }
        Some(Event::Data(data)) => {
            event.data = data.as_ptr().cast();
            event.len = data.len();
            held.data = data;
            WB_DATA
        }
        Some(Event::Log(level, line)) => {
            event.level = level;
            event.len = line.len();
            event.data = text(line);
            WB_LOG
        }
        Some(Event::Failed(line)) => {
            event.len = line.len();
            event.data = text(line);
            WB_FAILED
        }
        Some(Event::FailureCause(cause)) => {
            event.len = cause.len();
            event.data = text(cause.to_string());
            WB_FAILURE_CAUSE
        }
        Some(Event::End) | None => WB_END,
    };
    event.kind
}

/// Hands the host the next piece of the request body (after `WB_WANT_BODY`); `len` 0 means
/// the body has ended.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_request_feed(request: *mut WbRequest, data: *const c_char, len: usize) {
    let request = unsafe { &mut *request };
    if len == 0 {
        request.body = None;
        return;
    }
    let chunk = Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(data.cast(), len) });
    if let Some(body) = &request.body {
        // Room is certain: the body asks for a chunk only once it has taken the last one.
        let _ = body.try_send(Ok(chunk));
    }
}

/// Tells the host that the request body cannot be read to its end (after `WB_WANT_BODY`):
/// `status` is what Apache makes of it (413 with Apache's `limit`, 408, 400), or 504 when the
/// request's deadline passed while Apache waited. The request fails with that status.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_request_fail_body(request: *mut WbRequest, status: c_int, limit: u64) {
    let request = unsafe { &mut *request };
    if let Some(body) = request.body.take() {
        let _ = body.try_send(Err(wasmbridge::body::body_error(status as u16, limit)));
    }
}

/// Milliseconds left until the request's deadline (`WasmTimeout`), for Apache's own waits on
/// the client; -1 without a deadline.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_request_time_left(request: *const WbRequest) -> i64 {
    let request = unsafe { &*request };
    match request.deadline {
        Some(deadline) => deadline
            .saturating_duration_since(std::time::Instant::now())
            .as_millis() as i64,
        None => -1,
    }
}

/// 1 when the app runs the script at `path` (a path below a mapped directory, as the URL
/// chose it): not through a dot-file or dot-directory, and with one of the app's script
/// extensions (`WasmCGIExt`; by default `.php` for PHP, `.py` for Python, else `.cgi`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_app_runs_script(app: *const App, path: *const c_char) -> c_int {
    let app = unsafe { &*app };
    let path = String::from_utf8_lossy(unsafe { c_bytes(path) });
    app.runs_script(&path) as c_int
}

/// Ends a request, finished or not (a client gone away stops the guest).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wb_request_free(request: *mut WbRequest) {
    let WbRequest { id, serve, .. } = *unsafe { Box::from_raw(request) };
    // What the request left running (a guest finishing after its response, a cut-short one
    // unwinding) ends now, before this thread takes another request: nothing else would run it.
    RUNTIME.with(|runtime| {
        let metrics = runtime.metrics();
        if serve.is_none() && metrics.num_alive_tasks() == 0 {
            return; // the usual case: all done
        }
        runtime.block_on(async {
            drop(serve);
            // Usually nothing, or a task one poll from its end: yield first, then wait.
            let mut polls = 0;
            while metrics.num_alive_tasks() > 0 {
                if polls < 64 {
                    tokio::task::yield_now().await;
                    polls += 1;
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    });
    if let Some(child) = CHILD.get() {
        child.log.unregister(id);
    }
}

/// An app as a `<Location>` or `<Directory>` configures it: one `key value` per line, built
/// by mod_wasm.c from the merged directives. It doubles as the key of the child's app table.
struct AppDescription {
    module: PathBuf,
    config: AppConfig,
}

impl AppDescription {
    fn parse(text: &str) -> Result<AppDescription, String> {
        let mut module = None;
        let mut config = AppConfig::new("app");
        let mut sandbox = Sandbox::default();
        let mut limits = Limits::default();
        let mut cgi = CgiConfig::default();
        let mut python_path = Vec::new();
        let mut outbound = Vec::new();
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            let number = |what: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("`{value}` is not {what} (`{key}` in an app description)"))
            };
            match key {
                "module" => module = Some(PathBuf::from(value)),
                "dir" => sandbox
                    .dirs
                    .push(Preopen::parse(value).map_err(|e| format!("{e:#}"))?),
                "env" => {
                    let (name, value) = value.split_once('=').unwrap_or((value, ""));
                    sandbox.env.retain(|(existing, _)| existing != name);
                    sandbox.env.push((name.into(), value.into()));
                }
                "arg" => cgi.args.push(value.into()),
                "ext" => cgi.extensions.push(value.into()),
                "script-arg" => cgi.script_arg = value == "on",
                "cgi" => config.mode = if value == "on" { Mode::Cgi } else { Mode::Auto },
                "max-memory" => {
                    let bytes = number("a number of bytes")?;
                    limits.max_memory_size =
                        Some(usize::try_from(bytes).map_err(|e| e.to_string())?);
                }
                "timeout-ms" => {
                    limits.timeout =
                        Some(Duration::from_millis(number("a number of milliseconds")?))
                }
                // A WSGI app's default, as `wasmbridge serve --wsgi` has it.
                "cgi-workers" if value == "auto" => {
                    cgi.workers = wasmbridge::cgi::default_wsgi_workers()
                }
                "cgi-workers" => cgi.workers = number("a number of workers")? as usize,
                "wsgi" => cgi.wsgi = Some(value.into()),
                "python-path" => python_path.push(value.into()),
                "outbound" => outbound.push(value.to_string()),
                "instance-reuse" => {
                    config.reuse.max_requests = Some(number("a number of requests")? as usize)
                }
                "instance-concurrent-reuse" => {
                    config.reuse.max_concurrent = Some(number("a number of requests")? as usize)
                }
                "idle-instance-timeout-ms" => {
                    config.reuse.idle_timeout =
                        Some(Duration::from_millis(number("a number of milliseconds")?))
                }
                _ => return Err(format!("unknown key `{key}` in an app description")),
            }
        }
        let module = module.ok_or("no WasmModule")?;
        config.name = module
            .file_stem()
            .map_or_else(|| "app".into(), |s| s.to_string_lossy().into_owned());
        sandbox.add_python_path(&python_path);
        sandbox.allowed_outbound_hosts =
            AllowedHosts::parse(&outbound).map_err(|e| format!("{e:#}"))?;
        config.sandbox = sandbox;
        config.limits = limits;
        config.cgi = cgi;
        Ok(AppDescription { module, config })
    }
}

fn load_app(child: &Child, description: &str) -> Result<App, String> {
    let AppDescription { module, mut config } = AppDescription::parse(description)?;
    config.max_concurrent = child.max_concurrent;
    // A child never needs more workers than requests it serves at once.
    config.cgi.workers = config.cgi.workers.min(child.max_concurrent);
    config.log = child.log.clone();
    config.stats = child.stats.stats(&config.name);
    App::load(&child.engine, &module, child.cache.as_ref(), false, config)
        .map_err(|e| format!("{e:#}"))
}

/// Routes log lines to the Apache thread serving the request, which logs them with the
/// request's context; lines of a request already finished go to the server's log.
struct ApacheLog {
    requests: Mutex<HashMap<u64, mpsc::UnboundedSender<Event>>>,
    server: ServerLogFn,
}

impl ApacheLog {
    fn register(&self, id: u64, events: mpsc::UnboundedSender<Event>) {
        self.requests.lock().unwrap().insert(id, events);
    }

    fn unregister(&self, id: u64) {
        self.requests.lock().unwrap().remove(&id);
    }

    fn line(&self, request: u64, level: c_int, line: String) {
        let sent = match self.requests.lock().unwrap().get(&request) {
            Some(events) => events.send(Event::Log(level, line)).map_err(|e| match e.0 {
                Event::Log(_, line) => line,
                _ => unreachable!(),
            }),
            None => Err(line),
        };
        if let Err(line) = sent {
            self.server(level, &line);
        }
    }

    fn server(&self, level: c_int, line: &str) {
        let line = CString::new(line.replace('\0', "\\0")).unwrap();
        (self.server)(level, line.as_ptr());
    }
}

impl Log for ApacheLog {
    fn guest_output(&self, request: u64, stream: GuestStream, line: &[u8]) {
        let level = match stream {
            GuestStream::Stderr => LEVEL_ERR,
            GuestStream::Stdout => LEVEL_INFO,
        };
        let line = format!(
            "{} [{request}] :: {}",
            stream.name(),
            String::from_utf8_lossy(line)
        );
        self.line(request, level, line);
    }

    fn request_failed(&self, request: u64, app: &str, failure: &Failure) {
        if let Some(events) = self.requests.lock().unwrap().get(&request) {
            let _ = events.send(Event::FailureCause(failure.cause()));
        }
        self.line(request, LEVEL_ERR, failure_line(request, app, failure));
    }
}

/// The request body, pulled from Apache's input filters one brigade at a time.
struct ApacheBody {
    chunks: mpsc::Receiver<Result<Bytes, wasmtime_wasi_http::Error>>,
    events: mpsc::UnboundedSender<Event>,
    asked: bool,
}

impl http_body::Body for ApacheBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.chunks.poll_recv(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.asked = false;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !self.asked {
                    self.asked = true;
                    let _ = self.events.send(Event::WantBody);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_closed() && self.chunks.is_empty()
    }
}

unsafe fn build_request(
    head: &WbRequestHead,
    chunks: mpsc::Receiver<Result<Bytes, wasmtime_wasi_http::Error>>,
    events: mpsc::UnboundedSender<Event>,
) -> Result<http::Request<ApacheBody>, Failure> {
    let bad = |e: &dyn std::fmt::Display| Failure::BadRequest(e.to_string());
    // The builder copies what it keeps.
    let headers = || unsafe { pairs(head.header_names, head.header_values, head.header_count) };
    let host = headers()
        .find(|(name, _)| name.eq_ignore_ascii_case(b"host"))
        .map_or(&b"localhost"[..], |(_, value)| value);
    let host = std::str::from_utf8(host).map_err(|_| bad(&"the Host header is not UTF-8"))?;
    // A path that is not UTF-8 names nothing a guest could serve: refused, never emptied.
    let path = std::str::from_utf8(unsafe { c_bytes(head.uri) })
        .map_err(|_| bad(&"the request's path is not UTF-8"))?;
    let method = std::str::from_utf8(unsafe { c_bytes(head.method) })
        .map_err(|_| bad(&"the request's method is not UTF-8"))?;
    let scheme = if head.https == 1 { "https" } else { "http" };
    let uri = format!("{scheme}://{host}{}", percent_encode_non_ascii(path));
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers() {
        // Values pass as the client sent them, whatever their bytes.
        builder = builder.header(name, value);
    }
    builder
        .body(ApacheBody {
            chunks,
            events,
            asked: false,
        })
        .map_err(|e| bad(&e))
}

/// Raw non-ASCII characters in a path, which Apache lets through, as a client should have
/// sent them: percent-encoded UTF-8.
fn percent_encode_non_ascii(path: &str) -> std::borrow::Cow<'_, str> {
    if path.is_ascii() {
        return path.into();
    }
    let mut out = String::with_capacity(path.len() * 2);
    for byte in path.bytes() {
        if byte.is_ascii() {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out.into()
}

/// Name-value pairs borrowed from Apache's strings (valid for the call that passed them).
unsafe fn pairs<'a>(
    names: *const *const c_char,
    values: *const *const c_char,
    count: usize,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    (0..count).map(move |i| unsafe { (c_bytes(*names.add(i)), c_bytes(*values.add(i))) })
}

unsafe fn c_bytes<'a>(s: *const c_char) -> &'a [u8] {
    if s.is_null() {
        return b"";
    }
    unsafe { CStr::from_ptr(s) }.to_bytes()
}

unsafe fn socket_addr(ip: *const c_char, port: u16) -> Option<std::net::SocketAddr> {
    let ip: std::net::IpAddr = unsafe { opt_str(ip) }?.parse().ok()?;
    Some((ip, port).into())
}

unsafe fn str_or_empty<'a>(s: *const c_char) -> &'a str {
    unsafe { opt_str(s) }.unwrap_or("")
}

unsafe fn opt_str<'a>(s: *const c_char) -> Option<&'a str> {
    if s.is_null() {
        return None;
    }
    unsafe { CStr::from_ptr(s) }.to_str().ok()
}

unsafe fn write_c(buffer: *mut c_char, len: usize, message: &str) {
    if buffer.is_null() || len == 0 {
        return;
    }
    let bytes = message.as_bytes();
    let n = bytes.len().min(len - 1);
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.cast(), n);
        *buffer.add(n) = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_description_with_a_value_it_cannot_read_is_refused() {
        let base = "module /srv/app.wasm\n";
        for (line, reason) in [
            ("max-memory 512M", "is not a number of bytes"),
            ("max-memory -1", "is not a number of bytes"),
            ("timeout-ms soon", "is not a number of milliseconds"),
            ("cgi-workers four", "is not a number of workers"),
            ("instance-reuse many", "is not a number of requests"),
            (
                "idle-instance-timeout-ms 1s",
                "is not a number of milliseconds",
            ),
            ("dir /srv::/data::RO", "is not an access mode"),
            ("cache big", "unknown key `cache`"),
        ] {
            let error = AppDescription::parse(&format!("{base}{line}\n"))
                .err()
                .unwrap_or_else(|| panic!("`{line}` was accepted"));
            assert!(error.contains(reason), "{line}: {error}");
        }
        let app =
            AppDescription::parse(&format!("{base}max-memory 1048576\ntimeout-ms 500\n")).unwrap();
        assert_eq!(app.config.limits.max_memory_size, Some(1 << 20));
        assert_eq!(app.config.limits.timeout, Some(Duration::from_millis(500)));
    }

    #[test]
    fn a_wsgi_app_puts_its_python_path_before_a_granted_one_and_gets_workers_by_default() {
        let app = AppDescription::parse(
            "module /srv/python.wasm\nenv PYTHONPATH=/extra\npython-path /app\n\
             python-path /usr/lib/python3/dist-packages\nwsgi app:app\ncgi on\ncgi-workers auto\n",
        )
        .unwrap();
        let env = &app.config.sandbox.env;
        assert_eq!(
            env.iter()
                .filter(|(name, _)| name == "PYTHONPATH")
                .collect::<Vec<_>>(),
            [&(
                "PYTHONPATH".to_string(),
                "/app:/usr/lib/python3/dist-packages:/extra".to_string()
            )]
        );
        assert_eq!(app.config.cgi.wsgi.as_deref(), Some("app:app"));
        assert_eq!(
            app.config.cgi.workers,
            wasmbridge::cgi::default_wsgi_workers()
        );
    }
}

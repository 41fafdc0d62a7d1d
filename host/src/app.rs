//! An app: one compiled component, linked once, instantiated afresh for every request.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker, Resource, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{Engine, Precompiled, Result, Store, bail};
use wasmtime_wasi::cli::AsyncStdoutStream;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HostOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView as _};

use crate::body::{BodyWatch, RequestBody};
use crate::cache::CompileCache;
use crate::cgi::channel::Channel;
use crate::cgi::{CgiConfig, GuestRun, Workers};
use crate::guest::{ClientWatch, End, Ending, GuardedBody, GuestTask};
use crate::limits::{Limiter, Limits};
use crate::log::{GuestOutput, GuestStream, Log, StderrLog};
use crate::metrics::AppStats;
use crate::reuse::{InstanceReuse, Pool};
use crate::sandbox::Sandbox;
use crate::state::{HttpHooks, RequestState, Scratch};
use crate::{Body, Failure};

/// The export that makes a component a `wasi:http` app.
const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";
/// The export that makes a component a WASI 0.3 `wasi:http` app.
const HANDLER: &str = "wasi:http/handler@0.3";
/// The export that makes a component a command, served in CGI mode.
const CLI_RUN: &str = "wasi:cli/run@0.2";

/// How an app is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// By what the program exports: `wasi:http/incoming-handler` natively, a command as CGI.
    #[default]
    Auto,
    Http,
    Cgi,
}

/// Everything about an app except its code.
#[derive(Clone)]
pub struct AppConfig {
    /// How the app is named in log lines.
    pub name: String,
    pub mode: Mode,
    pub sandbox: Sandbox,
    pub limits: Limits,
    /// How a CGI program is started; unused for wasi:http components.
    pub cgi: CgiConfig,
    /// Link the whole WASI command world (filesystem, sockets, environment, ...) with only the
    /// grants of `sandbox`, so that components built with a language's standard library run.
    /// When false, only the interfaces of the `wasi:http/proxy` world are available.
    pub link_cli: bool,
    /// Link WASI 0.3 beside 0.2 (`-S p3`), so that WASI 0.3 components run.
    pub link_p3: bool,
    /// How instances of a WASI 0.3 component serve many requests.
    pub reuse: InstanceReuse,
    /// Requests of this app that run at once; later ones wait for a free slot.
    pub max_concurrent: usize,
    /// Largest size of a header or trailer set, in bytes (`-S max-http-fields-size`).
    pub max_http_fields_size: Option<usize>,
    /// Buffering of outgoing bodies (`-S http-outgoing-body-buffer-chunks`, `-chunk-size`).
    pub outgoing_body_buffer_chunks: Option<usize>,
    pub outgoing_body_chunk_size: Option<usize>,
    /// Where guest output and failures are logged.
    pub log: Arc<dyn Log>,
    /// What the app's requests count into (shared by the versions of an app across reloads).
    pub stats: Arc<AppStats>,
}

impl AppConfig {
    pub fn new(name: impl Into<String>) -> Self {
        AppConfig {
            name: name.into(),
            mode: Mode::Auto,
            sandbox: Sandbox::default(),
            limits: Limits::default(),
            cgi: CgiConfig::default(),
            link_cli: true,
            link_p3: true,
            reuse: InstanceReuse::default(),
            max_concurrent: 1000,
            max_http_fields_size: None,
            outgoing_body_buffer_chunks: None,
            outgoing_body_chunk_size: None,
            log: Arc::new(StderrLog { guest_prefix: true }),
            stats: AppStats::new(),
        }
    }
}

/// What the front end knows about a request besides the request itself.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// The id that tags the request's log lines.
    pub id: u64,
    /// `http` or `https`, as the client reached the front end.
    pub scheme: Scheme,
    /// The server's and the client's ends of the connection.
    pub local: Option<std::net::SocketAddr>,
    pub remote: Option<std::net::SocketAddr>,
    /// Set when the front end authenticated the client (`AUTH_TYPE`, `REMOTE_USER` in CGI).
    pub auth_type: Option<String>,
    pub remote_user: Option<String>,
    /// CGI local redirects followed so far.
    pub redirects: u8,
    /// The routes the request came through, if the front end has them: a CGI local redirect
    /// follows them to whichever app takes the new URL.
    pub router: Option<Arc<crate::router::Router>>,
    /// Where the front end mounted the app: the start of the URL path its route matched
    /// (`/api` for `/api/...`), empty at the root. A CGI program gets it as `SCRIPT_NAME`.
    pub mount: String,
    /// CGI meta-variables the front end made itself (Apache's own, as mod_cgi passes them),
    /// used in CGI mode instead of wasmbridge's.
    pub cgi_env: Option<Vec<(String, String)>>,
}

impl RequestContext {
    pub fn new(id: u64, scheme: Scheme) -> Self {
        RequestContext {
            id,
            scheme,
            local: None,
            remote: None,
            auth_type: None,
            remote_user: None,
            redirects: 0,
            router: None,
            mount: String::new(),
            cgi_env: None,
        }
    }
}

/// The kinds of guest, pre-instantiated.
#[derive(Clone)]
enum Guest {
    Http(ProxyPre<RequestState>),
    /// A WASI 0.3 handler, with the instances that serve it.
    Http3(Pool),
    Cgi(CommandPre<RequestState>),
}

/// What a guest task calls.
pub(crate) enum Entry {
    Http(
        Resource<HostIncomingRequest>,
        Resource<HostResponseOutparam>,
    ),
    Cgi,
}

/// What python.wasm's WSGI gateway finds in its environment when it is only to import the app
/// and exit ([`App::check_start`]).
pub const WSGI_CHECK_VARIABLE: &str = "WASMBRIDGE_WSGI_CHECK";

/// How much of a start-up check's output is kept for its error: the end, where Python's
/// traceback is.
const CHECK_OUTPUT: usize = 64 * 1024;

/// The last [`CHECK_OUTPUT`] bytes written to it; what comes before is dropped, never refused
/// (an app may print much at import).
#[derive(Clone, Default)]
struct Tail(Arc<std::sync::Mutex<Vec<u8>>>);

impl tokio::io::AsyncWrite for Tail {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut kept = self.0.lock().unwrap();
        kept.extend_from_slice(data);
        let excess = kept.len().saturating_sub(CHECK_OUTPUT);
        kept.drain(..excess);
        std::task::Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

pub struct App {
    config: AppConfig,
    guest: Guest,
    /// `argv[0]` of a CGI program: the file name it was loaded from.
    program_name: String,
    /// The file the app was loaded from, if it was.
    source: Option<std::path::PathBuf>,
    slots: Arc<Semaphore>,
    /// A CGI app's long-lived instances, when it has them.
    workers: Option<Arc<Workers>>,
}

impl App {
    /// Compiles (or takes from `cache`) the program at `path` and links it. A wasi:http
    /// component, a command component, or a WASI preview-1 command module (wrapped into a
    /// component with the preview-1 adapter first). `allow_precompiled` accepts a `.cwasm`
    /// made by `wasmtime compile` for this engine.
    pub fn load(
        engine: &Engine,
        path: &Path,
        cache: Option<&CompileCache>,
        allow_precompiled: bool,
        config: AppConfig,
    ) -> Result<App> {
        let shown = path.display();
        let bytes = std::fs::read(path).with_context(|| format!("cannot read `{shown}`"))?;
        let component = match Engine::detect_precompiled(&bytes) {
            Some(Precompiled::Component) if allow_precompiled => {
                // SAFETY: the user vouched for the file with `--allow-precompiled`.
                unsafe { Component::deserialize(engine, &bytes) }
                    .with_context(|| format!("cannot load precompiled `{shown}`"))?
            }
            Some(Precompiled::Component) => {
                bail!("`{shown}` is precompiled code; pass `--allow-precompiled` to run it")
            }
            Some(Precompiled::Module) => {
                bail!("`{shown}` is a precompiled core module, not a component")
            }
            None => crate::program::compile(engine, &bytes, cache, config.mode)
                .with_context(|| format!("cannot load `{shown}`"))?,
        };
        let program_name = path
            .file_name()
            .map_or_else(|| config.name.clone(), |n| n.to_string_lossy().into_owned());
        let mut app = App::new(engine, &component, config)
            .with_context(|| format!("cannot serve `{shown}`"))?;
        app.program_name = program_name;
        app.source = Some(path.to_path_buf());
        Ok(app)
    }

    /// Links an already compiled component.
    pub fn new(engine: &Engine, component: &Component, mut config: AppConfig) -> Result<App> {
        // Every failure is logged once; counted there, it is counted once.
        config.log = Arc::new(CountingLog {
            inner: config.log.clone(),
            stats: config.stats.clone(),
        });
        let exports: Vec<String> = component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let exports_any = |prefix: &str| exports.iter().any(|name| name.starts_with(prefix));
        let http = exports_any(INCOMING_HANDLER) || exports_any(HANDLER);
        let cgi = match config.mode {
            Mode::Auto if http => false,
            Mode::Auto | Mode::Cgi if exports_any(CLI_RUN) => true,
            Mode::Http if http => false,
            mode => {
                let found = if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                };
                let expected = match mode {
                    Mode::Http => format!(
                        "a wasi:http component: it exports {found}, but `{HANDLER}.x` or `{INCOMING_HANDLER}.x` was expected"
                    ),
                    Mode::Cgi => {
                        format!("a CGI program: it exports {found}, but `{CLI_RUN}.x` was expected")
                    }
                    Mode::Auto => format!(
                        "a wasi:http component or a command: it exports {found}, but `{HANDLER}.x`, `{INCOMING_HANDLER}.x` or `{CLI_RUN}.x` was expected"
                    ),
                };
                bail!("it is not {expected}");
            }
        };
        if cgi && !config.link_cli {
            bail!("a CGI program needs the WASI command world, which `-S cli=n` leaves out");
        }
        let http3 = !cgi && exports_any(HANDLER);
        if http3 && !config.link_p3 {
            bail!(
                "it is a WASI 0.3 component (it exports `{HANDLER}.x`), which `-S p3=n` turns off"
            );
        }

        let mut linker = Linker::new(engine);
        if config.link_cli {
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        } else {
            wasmtime_wasi_http::p2::add_to_linker_async(&mut linker)?;
        }
        // WASI 0.3 beside 0.2, as `wasmtime serve` links them: a 0.3 component built by Rust's
        // standard library imports some 0.2 interfaces too.
        if config.link_p3 {
            if config.link_cli {
                wasmtime_wasi::p3::add_to_linker(&mut linker)?;
            } else {
                wasmtime_wasi::p3::clocks::add_to_linker(&mut linker)?;
                wasmtime_wasi::p3::random::add_to_linker(&mut linker)?;
                wasmtime_wasi::p3::cli::add_to_linker(&mut linker)?;
            }
            wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        }
        let serves_workers = component
            .component_type()
            .imports(engine)
            .any(|(name, _)| name == crate::cgi::channel::INTERFACE);
        if cgi && serves_workers {
            crate::cgi::channel::add_to_linker(&mut linker)?;
        }
        let pre = linker.instantiate_pre(component).context(if config.link_cli {
            "it imports an interface this host does not provide"
        } else {
            "it imports an interface outside the wasi:http/proxy world (`-S cli` would provide the WASI command world)"
        })?;
        let guest = if cgi {
            Guest::Cgi(CommandPre::new(pre)?)
        } else if http3 {
            Guest::Http3(Pool::new(ServicePre::new(pre)?, &config))
        } else {
            if config.reuse.is_set() {
                bail!(
                    "instance reuse (`--max-instance-reuse-count`, ...) is for WASI 0.3 \
                     components; this WASI 0.2 one gets a fresh instance for every request"
                );
            }
            Guest::Http(ProxyPre::new(pre)?)
        };
        config.sandbox.validate()?;
        let workers = match config.cgi.workers {
            0 => None,
            _ if !cgi => {
                bail!("CGI workers are for CGI programs, and this is a wasi:http component")
            }
            _ if !serves_workers => bail!(
                "CGI workers take their requests over `{}`, which the program does not import \
                 (php-cgi from guests/php does)",
                crate::cgi::channel::INTERFACE
            ),
            _ if config.limits.fuel.is_some() => bail!(
                "a CGI worker serves many requests with one instance, so a fuel budget (`-W fuel`) would be shared by all of them; use a deadline instead"
            ),
            n if n > config.max_concurrent => bail!(
                "{n} CGI workers need as many instances, but at most {} may run at once",
                config.max_concurrent
            ),
            n => Some(Workers::new(n)),
        };
        Ok(App {
            workers,
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
            program_name: config.name.clone(),
            source: None,
            config,
            guest,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn config(&self) -> &AppConfig {
        &self.config
    }

    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The app's counters, with its CGI workers' state as of now.
    pub fn stats(&self) -> &Arc<AppStats> {
        if let Some(workers) = &self.workers {
            let (busy, idle) = workers.busy_and_idle();
            self.config.stats.set_workers(busy, idle);
        }
        &self.config.stats
    }

    /// Whether requests are served in CGI mode.
    pub fn is_cgi(&self) -> bool {
        matches!(self.guest, Guest::Cgi(_))
    }

    /// Whether the URL-chosen script at `path` (below the directory URLs map into) may run:
    /// it has one of the app's script extensions and no part of it is a dot-file or
    /// dot-directory. For front ends that find the script themselves (Apache).
    pub fn runs_script(&self, path: &str) -> bool {
        self.config.cgi.runs_script(&self.program_name, path)
    }

    pub(crate) fn program_name(&self) -> &str {
        &self.program_name
    }

    pub(crate) fn slots(&self) -> &Arc<Semaphore> {
        &self.slots
    }

    /// Whether instances serve many requests (a WASI 0.3 component).
    pub fn reuses_instances(&self) -> bool {
        matches!(self.guest, Guest::Http3(_))
    }

    pub(crate) fn workers(&self) -> Option<&Arc<Workers>> {
        self.workers.as_ref()
    }

    /// Serves one request. The response head comes back as soon as the guest sets it; the body
    /// streams while the guest writes it. Failures become an error response and one log line;
    /// a failure after the head makes the body end with an error. Dropping the response (or
    /// this future) before its end stops the guest: the client is gone.
    ///
    /// Deadlines rely on the engine's epoch advancing: keep an
    /// [`EpochTicker`](crate::engine::EpochTicker) running for the engine.
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
        cx: RequestContext,
    ) -> http::Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let mut counted = self.config.stats.request();
        let response = self.respond(request, cx).await;
        counted.set_status(response.status().as_u16());
        // The request counts as served when its body is done with: moved into the body's
        // frame mapper, the guard goes with the body.
        response.map(|body| {
            body.map_frame(move |frame| {
                let _ = &counted;
                frame
            })
            .boxed_unsync()
        })
    }

    async fn respond<B>(
        &self,
        request: http::Request<B>,
        cx: RequestContext,
    ) -> http::Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let id = cx.id;
        let watch = BodyWatch::default();
        let limits = self.config.limits.body;
        // A body that says it is too large is refused before anything runs.
        let length = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(limit) = limits
            .max_size
            .filter(|max| length.is_some_and(|l| l > *max))
        {
            return self.fail(id, Failure::BodyTooLarge(limit));
        }
        // A request without a body (most GETs) has nothing to watch.
        let has_body = !request.body().is_end_stream();
        let request = request.map(|body| {
            let body = body.map_err(Into::into).boxed_unsync();
            match has_body {
                true => RequestBody::new(body, limits, watch.clone()).boxed_unsync(),
                false => body,
            }
        });
        let respond = async {
            match &self.guest {
                Guest::Http(_) => self.handle_http(request, cx, watch.clone()).await,
                Guest::Http3(pool) => pool.handle(self, request, cx, watch.clone()).await,
                Guest::Cgi(_) => crate::cgi::handle(self, request, cx, watch.clone()).await,
            }
        };
        // Dropped before it has a response, this future stops the guest and says so.
        let client = ClientWatch::new(&*self.config.log, id, &self.config.name);
        let response = match has_body {
            // A body that fails before the response starts is the answer: 408, 413 or 400.
            true => tokio::select! {
                biased;
                response = respond => response,
                failure = watch.failed() => self.fail(id, failure),
            },
            false => respond.await,
        };
        client.disarm();
        response
    }

    async fn handle_http(
        &self,
        request: http::Request<Body>,
        cx: RequestContext,
        watch: BodyWatch,
    ) -> http::Response<Body> {
        let id = cx.id;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let guest = self.spawn_guest(
            id,
            |_| {},
            move |store| {
                let mut http = store.data_mut().http();
                let incoming = http
                    .new_incoming_request(cx.scheme, request)
                    .map_err(|e| Failure::BadRequest(e.to_string()))?;
                let outparam = http
                    .new_response_outparam(sender)
                    .map_err(|e| Failure::Instantiate(format!("{e:#}")))?;
                Ok(Entry::Http(incoming, outparam))
            },
        );
        let guest = match guest.await {
            Ok(guest) => guest,
            Err(failure) => return self.fail(id, failure),
        };
        match receiver.await {
            Ok(Ok(response)) => {
                response.map(|body| GuardedBody::new(body, guest, watch, false).boxed())
            }
            Ok(Err(code)) => self.fail(id, Failure::GuestError(format!("{code:?}"))),
            // The guest ended without setting a response; its task says why.
            Err(_) => match guest.join().await {
                Err(failure) => error_response(&failure),
                Ok(_) => self.fail(id, Failure::NoResponse),
            },
        }
    }

    /// Logs a failure and makes its response.
    pub(crate) fn fail(&self, id: u64, failure: Failure) -> http::Response<Body> {
        self.config
            .log
            .request_failed(id, &self.config.name, &failure);
        error_response(&failure)
    }

    /// Waits for a free slot, prepares a store (`configure` adds to its WASI context, `entry`
    /// says what to call) and runs the guest in its own task. The guest may go on after the
    /// response head is sent, so the task reports its own failures; it returns the exit status.
    pub(crate) async fn spawn_guest(
        &self,
        id: u64,
        configure: impl FnOnce(&mut WasiCtxBuilder),
        entry: impl FnOnce(&mut Store<RequestState>) -> Result<Entry, Failure>,
    ) -> Result<GuestTask, Failure> {
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return Err(Failure::Overloaded("the app is shutting down".into()));
        };
        let mut store = new_store(self.engine(), &self.config, id, self.is_cgi(), configure)
            .map_err(|e| Failure::Instantiate(format!("{e:#}")))?;
        let entry = entry(&mut store)?;
        let guest = self.guest.clone();
        let timeout = self.config.limits.timeout;
        let (log, name) = (self.config.log.clone(), self.config.name.clone());
        let ending = Arc::new(Ending::default());
        let task = tokio::spawn({
            let (ending, log, name) = (ending.clone(), log.clone(), name.clone());
            async move {
                let _slot = slot;
                let outcome = run_guest(&guest, entry, &mut store, timeout).await;
                // Said before the store goes, and with it what the guest was still writing.
                ending.set(match &outcome {
                    Ok(code) => End::Exited(*code),
                    Err(_) => End::Failed {
                        response_cut: matches!(guest, Guest::Cgi(_)) || unfinished_body(&mut store),
                    },
                });
                if let Err(failure) = &outcome {
                    log.request_failed(id, &name, failure);
                }
                drop(store);
                outcome
            }
        });
        Ok(GuestTask::new(task, ending, log, id, name))
    }

    /// Checks, before the first request, what can be checked by running the program: that a
    /// WSGI app ([`CgiConfig::wsgi`]) imports. One fresh instance imports it and exits; when
    /// it cannot, the error says so with what the program wrote (Python's traceback names
    /// the module and the line). Nothing to do for other apps.
    ///
    /// [`CgiConfig::wsgi`]: crate::cgi::CgiConfig::wsgi
    pub async fn check_start(&self) -> Result<()> {
        let Some(wsgi) = &self.config.cgi.wsgi else {
            return Ok(());
        };
        let args = self.config.cgi.argv(&self.program_name);
        let output = Tail::default();
        let configure = |wasi: &mut WasiCtxBuilder| {
            wasi.args(&args);
            wasi.env(WSGI_CHECK_VARIABLE, "1");
            wasi.stdout(AsyncStdoutStream::new(CHECK_OUTPUT, output.clone()));
            wasi.stderr(AsyncStdoutStream::new(CHECK_OUTPUT, output.clone()));
        };
        let outcome = match self.spawn_guest(0, configure, |_| Ok(Entry::Cgi)).await {
            Ok(task) => task.join().await,
            Err(failure) => Err(failure),
        };
        let said = String::from_utf8_lossy(&output.0.lock().unwrap())
            .trim_end()
            .to_string();
        match outcome {
            Ok(0) => Ok(()),
            Ok(status) => {
                bail!("the WSGI app `{wsgi}` does not load (exit status {status}):\n{said}")
            }
            Err(failure) => bail!("the WSGI app `{wsgi}` does not load: {failure}\n{said}"),
        }
    }

    /// Prepares a CGI worker's run: the program runs while the returned future is polled, by
    /// each request it serves in turn, without a deadline of its own (each request has one).
    pub(crate) fn start_worker(
        &self,
        id: u64,
        configure: impl FnOnce(&mut WasiCtxBuilder),
        channel: Channel,
    ) -> Result<GuestRun, Failure> {
        let mut store = new_store(self.engine(), &self.config, id, true, configure)
            .map_err(|e| Failure::Instantiate(format!("{e:#}")))?;
        store.data_mut().channel = Some(channel);
        let guest = self.guest.clone();
        Ok(Box::pin(async move {
            run_guest(&guest, Entry::Cgi, &mut store, None).await
        }))
    }

    fn engine(&self) -> &Engine {
        match &self.guest {
            Guest::Http(pre) => pre.engine(),
            Guest::Http3(pool) => pool.engine(),
            Guest::Cgi(pre) => pre.engine(),
        }
    }
}

/// A store for one request, or for one instance that serves many: the app's grants, limits
/// and output, and `configure`'s additions to its WASI context. A CGI program (`scratch`) gets
/// a temporary directory of its own.
pub(crate) fn new_store(
    engine: &Engine,
    config: &AppConfig,
    id: u64,
    scratch: bool,
    configure: impl FnOnce(&mut WasiCtxBuilder),
) -> Result<Store<RequestState>> {
    let limits = &config.limits;
    let mut wasi = WasiCtxBuilder::new();
    // A guest's files are its local grants: a syscall on the request's own thread costs
    // less than a hand-off to tokio's blocking pool and back. Set before the grants: each
    // preopened directory keeps the setting it was made with.
    wasi.allow_blocking_current_thread(true);
    config.sandbox.configure(&mut wasi)?;
    let request_id = Arc::new(AtomicU64::new(id));
    let output = |stream| GuestOutput::tagged(config.log.clone(), request_id.clone(), stream);
    wasi.stdout(output(GuestStream::Stdout));
    wasi.stderr(output(GuestStream::Stderr));
    configure(&mut wasi);
    // A CGI program's temporary files (PHP's uploads among them) go to a directory of the
    // instance's own, gone with it: nothing an instance cut short leaves behind reaches the
    // app's writable grants, or the next request.
    let scratch = match scratch {
        true => Some(Scratch::new(&mut wasi, &config.sandbox)?),
        false => None,
    };

    let mut table = ResourceTable::new();
    if let Some(max) = limits.max_resources {
        table.set_max_capacity(max);
    }
    let mut http = WasiHttpCtx::new();
    if let Some(max) = config.max_http_fields_size {
        http.set_field_size_limit(max);
    }
    let hooks = HttpHooks {
        outgoing_allowed: config.sandbox.inherit_network,
        allowed_hosts: config.sandbox.allowed_outbound_hosts.clone(),
        outgoing_body_buffer_chunks: config
            .outgoing_body_buffer_chunks
            .unwrap_or(wasmtime_wasi_http::p2::DEFAULT_OUTGOING_BODY_BUFFER_CHUNKS),
        outgoing_body_chunk_size: config
            .outgoing_body_chunk_size
            .unwrap_or(wasmtime_wasi_http::p2::DEFAULT_OUTGOING_BODY_CHUNK_SIZE),
    };
    let state = RequestState {
        table,
        wasi: wasi.build(),
        http,
        hooks,
        limiter: Limiter::new(limits),
        channel: None,
        _scratch: scratch,
        instance: config.stats.instance(),
        request_id,
    };

    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    if let Some(fuel) = limits.fuel {
        store.set_fuel(fuel)?;
    }
    if let Some(fuel) = limits.hostcall_fuel {
        store.set_hostcall_fuel(fuel);
    }
    if let Some(max) = limits.max_component_handles {
        store.set_max_component_handles(max);
    }
    // Yield to the other requests at every epoch tick; the deadline itself is a timer.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    Ok(store)
}

/// Instantiates the guest and calls its entry point, within the deadline if there is one.
/// Returns the exit status: 0 for a handler that returned, the program's status for a command.
async fn run_guest(
    guest: &Guest,
    entry: Entry,
    store: &mut Store<RequestState>,
    timeout: Option<std::time::Duration>,
) -> Result<i32, Failure> {
    let call = async {
        match (guest, entry) {
            (Guest::Http(pre), Entry::Http(incoming, outparam)) => {
                let start = std::time::Instant::now();
                let proxy = pre
                    .instantiate_async(&mut *store)
                    .await
                    .map_err(|e| (e, true))?;
                store.data().instance.stats().instantiated(start.elapsed());
                let handler = proxy.wasi_http_incoming_handler();
                // A handler may end with `wasi:cli/exit`, as a wrapped CGI program does.
                match handler.call_handle(&mut *store, incoming, outparam).await {
                    Ok(()) => Ok(0),
                    Err(e) => match e.downcast_ref::<I32Exit>() {
                        Some(exit) => Ok(exit.0),
                        None => Err((e, false)),
                    },
                }
            }
            (Guest::Cgi(pre), Entry::Cgi) => {
                let start = std::time::Instant::now();
                let command = pre
                    .instantiate_async(&mut *store)
                    .await
                    .map_err(|e| (e, true))?;
                store.data().instance.stats().instantiated(start.elapsed());
                match command.wasi_cli_run().call_run(&mut *store).await {
                    Ok(Ok(())) => Ok(0),
                    Ok(Err(())) => Ok(1),
                    Err(e) => match e.downcast_ref::<I32Exit>() {
                        Some(exit) => Ok(exit.0),
                        None => Err((e, false)),
                    },
                }
            }
            _ => unreachable!("the entry always matches the guest"),
        }
    };
    let result = match timeout {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => return Err(Failure::Deadline(limit)),
        },
        None => call.await,
    };
    result.map_err(|(error, instantiating)| {
        Failure::from_error(&error, store.data().limiter.hit, instantiating)
    })
}

/// Whether the guest still held an outgoing body it had not finished: a response cut short.
fn unfinished_body(store: &mut Store<RequestState>) -> bool {
    store
        .data_mut()
        .table
        .iter_mut()
        .any(|entry| entry.is::<HostOutgoingBody>())
}

/// The response a client gets for a failed request.
pub fn error_response(failure: &Failure) -> http::Response<Body> {
    let mut response = simple_response(failure.status(), failure.page());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

pub(crate) fn simple_response(status: http::StatusCode, body: String) -> http::Response<Body> {
    let mut response = http::Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Passes log lines on, and counts failures by cause.
struct CountingLog {
    inner: Arc<dyn Log>,
    stats: Arc<AppStats>,
}

impl Log for CountingLog {
    fn guest_output(&self, request: u64, stream: GuestStream, line: &[u8]) {
        self.inner.guest_output(request, stream, line);
    }

    fn request_failed(&self, request: u64, app: &str, failure: &Failure) {
        self.stats.failed(failure);
        self.inner.request_failed(request, app, failure);
    }
}

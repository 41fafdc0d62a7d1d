//! An app: one compiled component, linked once, instantiated afresh for every request.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use wasmtime::component::{Component, Linker};
use wasmtime::error::Context as _;
use wasmtime::{Engine, Precompiled, Result, bail};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::AsyncStdoutStream;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use crate::body::{BodyWatch, RequestBody};
use crate::cache::CompileCache;
use crate::cgi::{CgiConfig, Workers};
use crate::guest::{ClientWatch, GuardedBody};
use crate::limits::Limits;
use crate::log::{GuestStream, Log, StderrLog};
use crate::metrics::AppStats;
use crate::reuse::{InstanceReuse, Pool};
use crate::run::{Entry, GuestPre, Runner};
use crate::sandbox::Sandbox;
use crate::{Body, Failure};

pub use crate::failure::error_response;

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

    /// Logs the failure of one of the app's requests and makes the response its client gets.
    pub(crate) fn fail(&self, id: u64, failure: Failure) -> http::Response<Body> {
        self.log.request_failed(id, &self.name, &failure);
        error_response(&failure)
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

/// The kinds of guest, ready to serve.
enum Guest {
    /// A WASI 0.2 handler: a fresh instance for each request.
    Http(Runner),
    /// A WASI 0.3 handler, with the instances that serve it.
    Http3(Pool),
    /// A command, served as CGI: a fresh instance for each request, or the app's workers.
    Cgi(Runner),
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
    config: Arc<AppConfig>,
    guest: Guest,
    /// `argv[0]` of a CGI program: the file name it was loaded from.
    program_name: String,
    /// The file the app was loaded from, if it was.
    source: Option<std::path::PathBuf>,
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
        let config = Arc::new(config);
        let guest = if cgi {
            Guest::Cgi(Runner::new(
                GuestPre::Cgi(CommandPre::new(pre)?),
                config.clone(),
            ))
        } else if http3 {
            Guest::Http3(Pool::new(ServicePre::new(pre)?, &config))
        } else {
            if config.reuse.is_set() {
                bail!(
                    "instance reuse (`--max-instance-reuse-count`, ...) is for WASI 0.3 \
                     components; this WASI 0.2 one gets a fresh instance for every request"
                );
            }
            Guest::Http(Runner::new(
                GuestPre::Http(ProxyPre::new(pre)?),
                config.clone(),
            ))
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

    /// Whether instances serve many requests (a WASI 0.3 component).
    pub fn reuses_instances(&self) -> bool {
        matches!(self.guest, Guest::Http3(_))
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
            return self.config.fail(id, Failure::BodyTooLarge(limit));
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
                Guest::Http(runner) => self.handle_http(runner, request, cx, watch.clone()).await,
                Guest::Http3(pool) => pool.handle(request, cx, watch.clone()).await,
                Guest::Cgi(runner) => {
                    let program = crate::cgi::Program {
                        name: &self.program_name,
                        runner,
                        workers: self.workers.as_ref(),
                    };
                    crate::cgi::handle(self, program, request, cx, watch.clone()).await
                }
            }
        };
        // Dropped before it has a response, this future stops the guest and says so.
        let client = ClientWatch::new(&*self.config.log, id, &self.config.name);
        let response = match has_body {
            // A body that fails before the response starts is the answer: 408, 413 or 400.
            true => tokio::select! {
                biased;
                response = respond => response,
                failure = watch.failed() => self.config.fail(id, failure),
            },
            false => respond.await,
        };
        client.disarm();
        response
    }

    async fn handle_http(
        &self,
        runner: &Runner,
        request: http::Request<Body>,
        cx: RequestContext,
        watch: BodyWatch,
    ) -> http::Response<Body> {
        let id = cx.id;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let guest = runner.spawn(
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
            Err(failure) => return self.config.fail(id, failure),
        };
        match receiver.await {
            Ok(Ok(response)) => {
                response.map(|body| GuardedBody::new(body, guest, watch, false).boxed())
            }
            Ok(Err(code)) => self
                .config
                .fail(id, Failure::GuestError(format!("{code:?}"))),
            // The guest ended without setting a response; its task says why.
            Err(_) => match guest.join().await {
                Err(failure) => error_response(&failure),
                Ok(_) => self.config.fail(id, Failure::NoResponse),
            },
        }
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
        let Guest::Cgi(runner) = &self.guest else {
            bail!("the WSGI app `{wsgi}` needs a CGI program, and this is a wasi:http component");
        };
        let args = self.config.cgi.argv(&self.program_name);
        let output = Tail::default();
        let configure = |wasi: &mut WasiCtxBuilder| {
            wasi.args(&args);
            wasi.env(WSGI_CHECK_VARIABLE, "1");
            wasi.stdout(AsyncStdoutStream::new(CHECK_OUTPUT, output.clone()));
            wasi.stderr(AsyncStdoutStream::new(CHECK_OUTPUT, output.clone()));
        };
        let outcome = match runner.spawn(0, configure, |_| Ok(Entry::Cgi)).await {
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

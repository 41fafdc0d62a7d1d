//! An app: one compiled component, linked once, instantiated afresh for every request.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{Engine, Precompiled, Result, Store, bail};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView as _};

use crate::cache::CompileCache;
use crate::limits::{Limiter, Limits};
use crate::log::{GuestOutput, GuestStream, Log, StderrLog};
use crate::sandbox::Sandbox;
use crate::state::{HttpHooks, RequestState};
use crate::{Body, Failure};

/// The export that makes a component a `wasi:http` app.
const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// Everything about an app except its code.
#[derive(Clone)]
pub struct AppConfig {
    /// How the app is named in log lines.
    pub name: String,
    pub sandbox: Sandbox,
    pub limits: Limits,
    /// Link the whole WASI command world (filesystem, sockets, environment, ...) with only the
    /// grants of `sandbox`, so that components built with a language's standard library run.
    /// When false, only the interfaces of the `wasi:http/proxy` world are available.
    pub link_cli: bool,
    /// Requests of this app that run at once; later ones wait for a free slot.
    pub max_concurrent: usize,
    /// Largest size of a header or trailer set, in bytes (`-S max-http-fields-size`).
    pub max_http_fields_size: Option<usize>,
    /// Buffering of outgoing bodies (`-S http-outgoing-body-buffer-chunks`, `-chunk-size`).
    pub outgoing_body_buffer_chunks: Option<usize>,
    pub outgoing_body_chunk_size: Option<usize>,
    /// Where guest output and failures are logged.
    pub log: Arc<dyn Log>,
}

impl AppConfig {
    pub fn new(name: impl Into<String>) -> Self {
        AppConfig {
            name: name.into(),
            sandbox: Sandbox::default(),
            limits: Limits::default(),
            link_cli: true,
            max_concurrent: 1000,
            max_http_fields_size: None,
            outgoing_body_buffer_chunks: None,
            outgoing_body_chunk_size: None,
            log: Arc::new(StderrLog { guest_prefix: true }),
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
}

pub struct App {
    config: AppConfig,
    pre: ProxyPre<RequestState>,
    slots: Arc<Semaphore>,
}

impl App {
    /// Compiles (or takes from `cache`) the component at `path` and links it.
    /// `allow_precompiled` accepts a `.cwasm` made by `wasmtime compile` for this engine.
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
            None => {
                if !wasmtime::wasmparser::Parser::is_component(&bytes) {
                    if wasmtime::wasmparser::Parser::is_core_wasm(&bytes) {
                        bail!(
                            "`{shown}` is a core WebAssembly module, not a component: \
                             expected a component exporting `{INCOMING_HANDLER}.x` \
                             (build for wasm32-wasip2, or wrap the module with `wasm-tools component new`)"
                        );
                    }
                    bail!("`{shown}` is not a WebAssembly file");
                }
                let compiled = match cache {
                    Some(cache) => cache.component(engine, &bytes),
                    None => Component::new(engine, &bytes),
                };
                compiled.with_context(|| format!("cannot compile `{shown}`"))?
            }
        };
        App::new(engine, &component, config).with_context(|| format!("cannot serve `{shown}`"))
    }

    /// Links an already compiled component.
    pub fn new(engine: &Engine, component: &Component, config: AppConfig) -> Result<App> {
        let exports: Vec<String> = component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        if !exports
            .iter()
            .any(|name| name.starts_with(INCOMING_HANDLER))
        {
            let found = if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            };
            bail!(
                "it is not a wasi:http component: it exports {found}, but `{INCOMING_HANDLER}.x` was expected"
            );
        }

        let mut linker = Linker::new(engine);
        if config.link_cli {
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        } else {
            wasmtime_wasi_http::p2::add_to_linker_async(&mut linker)?;
        }
        let pre = linker.instantiate_pre(component).context(if config.link_cli {
            "it imports an interface this host does not provide"
        } else {
            "it imports an interface outside the wasi:http/proxy world (`-S cli` would provide the WASI command world)"
        })?;
        let pre = ProxyPre::new(pre)?;
        config.sandbox.validate()?;
        Ok(App {
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
            config,
            pre,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Serves one request. The response head comes back as soon as the guest sets it; the body
    /// streams while the guest writes it. Failures become an error response and one log line.
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
        let id = cx.id;
        let fail = |failure: Failure| {
            self.config
                .log
                .request_failed(id, &self.config.name, &failure);
            error_response(&failure)
        };

        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return fail(Failure::Overloaded("the app is shutting down".into()));
        };
        let mut store = match self.new_store(id) {
            Ok(store) => store,
            Err(e) => return fail(Failure::Instantiate(format!("{e:#}"))),
        };
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let resources = {
            let mut http = store.data_mut().http();
            http.new_incoming_request(cx.scheme, request)
                .and_then(|req| Ok((req, http.new_response_outparam(sender)?)))
        };
        let (incoming, outparam) = match resources {
            Ok(resources) => resources,
            Err(e) => {
                let status = http::StatusCode::BAD_REQUEST;
                return simple_response(status, format!("{e}\n"));
            }
        };

        // The guest runs in its own task: it may go on writing the body after the head is
        // sent, and it reports its own failures, also those that happen after that point.
        let pre = self.pre.clone();
        let timeout = self.config.limits.timeout;
        let (log, name) = (self.config.log.clone(), self.config.name.clone());
        let guest = tokio::spawn(async move {
            let _slot = slot;
            let outcome = run_guest(&pre, &mut store, incoming, outparam, timeout).await;
            if let Err(failure) = &outcome {
                log.request_failed(id, &name, failure);
            }
            outcome
        });

        match receiver.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => fail(Failure::GuestError(code)),
            // The guest ended without setting a response; its task says why.
            Err(_) => match guest.await {
                Ok(Err(failure)) => error_response(&failure),
                Ok(Ok(())) => fail(Failure::NoResponse),
                Err(e) => fail(Failure::Trap(format!("host task failed: {e}"))),
            },
        }
    }

    fn new_store(&self, id: u64) -> Result<Store<RequestState>> {
        let config = &self.config;
        let limits = &config.limits;
        let mut wasi = WasiCtxBuilder::new();
        config.sandbox.configure(&mut wasi)?;
        wasi.stdout(GuestOutput::new(
            config.log.clone(),
            id,
            GuestStream::Stdout,
        ));
        wasi.stderr(GuestOutput::new(
            config.log.clone(),
            id,
            GuestStream::Stderr,
        ));

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
        };

        let mut store = Store::new(self.pre.engine(), state);
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
}

/// Instantiates the app and calls its handler, within the deadline if there is one.
async fn run_guest(
    pre: &ProxyPre<RequestState>,
    store: &mut Store<RequestState>,
    incoming: wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostIncomingRequest>,
    outparam: wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostResponseOutparam>,
    timeout: Option<std::time::Duration>,
) -> Result<(), Failure> {
    let call = async {
        let proxy = pre
            .instantiate_async(&mut *store)
            .await
            .map_err(|e| (e, true))?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut *store, incoming, outparam)
            .await
            .map_err(|e| (e, false))
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

/// The response a client gets for a failed request.
pub fn error_response(failure: &Failure) -> http::Response<Body> {
    let mut response = simple_response(failure.status(), failure.page());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn simple_response(status: http::StatusCode, body: String) -> http::Response<Body> {
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

//! Running a guest: a store with the app's limits, sandbox and logs, a fresh instance in it,
//! and the deadline the run must meet. A request's run goes in a task of its own; a CGI
//! worker's is driven by the requests it serves.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{Engine, Result, Store};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HostOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

use crate::Failure;
use crate::app::AppConfig;
use crate::cgi::channel::Channel;
use crate::guest::{End, Ending, GuestTask};
use crate::limits::Limiter;
use crate::log::{GuestOutput, GuestStream};
use crate::state::{HttpHooks, RequestState, Scratch};

/// A component, linked and ready to instantiate, by the world it serves.
#[derive(Clone)]
pub(crate) enum GuestPre {
    /// A WASI 0.2 `wasi:http/proxy` handler.
    Http(ProxyPre<RequestState>),
    /// A command, served as a CGI program.
    Cgi(CommandPre<RequestState>),
}

impl GuestPre {
    fn engine(&self) -> &Engine {
        match self {
            GuestPre::Http(pre) => pre.engine(),
            GuestPre::Cgi(pre) => pre.engine(),
        }
    }
}

/// What a run calls.
pub(crate) enum Entry {
    Http(
        Resource<HostIncomingRequest>,
        Resource<HostResponseOutparam>,
    ),
    Cgi,
}

/// A CGI worker's run as a future, polled by the request it serves at the time.
pub(crate) type GuestRun = Pin<Box<dyn Future<Output = Result<i32, Failure>> + Send>>;

/// Runs an app's guest, in a fresh instance each time. A request's run takes one of
/// [`AppConfig::max_concurrent`] slots, waiting for a free one; a CGI worker's takes none.
pub(crate) struct Runner {
    pre: GuestPre,
    config: Arc<AppConfig>,
    slots: Arc<Semaphore>,
}

impl Runner {
    pub(crate) fn new(pre: GuestPre, config: Arc<AppConfig>) -> Runner {
        let slots = Arc::new(Semaphore::new(config.max_concurrent));
        Runner { pre, config, slots }
    }

    pub(crate) fn config(&self) -> &AppConfig {
        &self.config
    }

    /// Waits for a free slot, prepares a store (`configure` adds to its WASI context, `entry`
    /// says what to call) and runs the guest in its own task. The guest may go on after the
    /// response head is sent, so the task reports its own failures; it returns the exit status.
    pub(crate) async fn spawn(
        &self,
        id: u64,
        configure: impl FnOnce(&mut WasiCtxBuilder),
        entry: impl FnOnce(&mut Store<RequestState>) -> Result<Entry, Failure>,
    ) -> Result<GuestTask, Failure> {
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return Err(Failure::Overloaded("the app is shutting down".into()));
        };
        let cgi = matches!(self.pre, GuestPre::Cgi(_));
        let mut store = new_store(self.pre.engine(), &self.config, id, cgi, configure)
            .map_err(|e| Failure::Instantiate(format!("{e:#}")))?;
        let entry = entry(&mut store)?;
        let pre = self.pre.clone();
        let timeout = self.config.limits.timeout;
        let (log, name) = (self.config.log.clone(), self.config.name.clone());
        let ending = Arc::new(Ending::default());
        let task = tokio::spawn({
            let (ending, log, name) = (ending.clone(), log.clone(), name.clone());
            async move {
                let _slot = slot;
                let outcome = run_guest(&pre, entry, &mut store, timeout).await;
                // Said before the store goes, and with it what the guest was still writing.
                ending.set(match &outcome {
                    Ok(code) => End::Exited(*code),
                    Err(_) => End::Failed {
                        response_cut: cgi || unfinished_body(&mut store),
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

    /// Prepares a CGI worker's run: the program runs while the returned future is polled, by
    /// each request it serves in turn, without a deadline of its own (each request has one).
    pub(crate) fn start_worker(
        &self,
        id: u64,
        configure: impl FnOnce(&mut WasiCtxBuilder),
        channel: Channel,
    ) -> Result<GuestRun, Failure> {
        let mut store = new_store(self.pre.engine(), &self.config, id, true, configure)
            .map_err(|e| Failure::Instantiate(format!("{e:#}")))?;
        store.data_mut().channel = Some(channel);
        let pre = self.pre.clone();
        Ok(Box::pin(async move {
            run_guest(&pre, Entry::Cgi, &mut store, None).await
        }))
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
    pre: &GuestPre,
    entry: Entry,
    store: &mut Store<RequestState>,
    timeout: Option<Duration>,
) -> Result<i32, Failure> {
    let call = async {
        match (pre, entry) {
            (GuestPre::Http(pre), Entry::Http(incoming, outparam)) => {
                let start = Instant::now();
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
            (GuestPre::Cgi(pre), Entry::Cgi) => {
                let start = Instant::now();
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

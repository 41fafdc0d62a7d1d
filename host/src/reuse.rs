//! Instances that serve many requests: WASI 0.3 (`wasi:http/handler@0.3`) components.
//!
//! A WASI 0.3 handler is an async function, so one instance can take requests one after
//! another and several at once, as `wasmtime serve` lets it. wasmtime-wasi-http's
//! [`ProxyHandler`] hands each request to an instance with room for it or starts a new one;
//! this module says when an instance takes another request and when it goes
//! ([`InstanceReuse`]), and tells each request that an instance failed why it failed.
//!
//! Limits: memory, tables and resources are the instance's. The deadline is each request's:
//! a request past it is answered 504 (or its body cut), and an instance whose requests are
//! all past it is dropped, so a guest that never yields ends too. Fuel, when set, is filled
//! up again for each request, which then has its instance to itself.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::GuestTaskId;
use wasmtime::{Result, Store, StoreContextMut, format_err};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, InstantiationError, Proxy, ProxyHandler, ShouldAccept,
    TrapOrPanicError, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

use crate::app::{AppConfig, RequestContext};
use crate::body::BodyWatch;
use crate::guest::{Ending, GuardedBody, GuestTask};
use crate::limits::LimitHit;
use crate::run::new_store;
use crate::state::RequestState;
use crate::{Body, Failure};

/// How the instances of a WASI 0.3 component are reused: `wasmtime serve`'s
/// `--max-instance-reuse-count`, `--max-instance-concurrent-reuse-count` and
/// `--idle-instance-timeout`, with its defaults where unset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceReuse {
    /// Requests one instance serves before it goes (default 128).
    pub max_requests: Option<usize>,
    /// Requests one instance serves at once (default 16).
    pub max_concurrent: Option<usize>,
    /// How long an instance with nothing to do waits for the next request (default 1 s).
    pub idle_timeout: Option<Duration>,
}

/// `wasmtime serve`'s defaults for WASI 0.3 components.
pub const DEFAULT_MAX_REQUESTS: usize = 128;
pub const DEFAULT_MAX_CONCURRENT: usize = 16;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

impl InstanceReuse {
    /// Whether it asks for more than one request per instance, which only a WASI 0.3
    /// component can serve.
    pub fn is_set(&self) -> bool {
        self.max_requests.is_some_and(|n| n > 1)
    }

    pub fn max_requests(&self) -> usize {
        self.max_requests.unwrap_or(DEFAULT_MAX_REQUESTS).max(1)
    }

    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT).max(1)
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT)
    }
}

/// The instances of one WASI 0.3 app.
pub(crate) struct Pool {
    handler: ProxyHandler<Instances>,
    /// One for each request that may be served at once; later ones wait for a free one.
    slots: Arc<Semaphore>,
}

struct Instances {
    pre: ServicePre<RequestState>,
    config: AppConfig,
}

/// What a request learns of the instance that takes it.
struct Ticket {
    id: u64,
    instance: Arc<OnceLock<Taken>>,
}

/// A request's place on the instance that took it, held until its response is complete (or
/// nobody waits for it any more).
struct Taken(Arc<Shared>);

impl Drop for Taken {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One instance, as the requests it serves see it.
struct Shared {
    /// Set when the instance goes, before its store is dropped: a response body it was still
    /// writing then is cut, with the failure it holds.
    ending: Arc<Ending>,
    /// Its requests were past their deadline when it was dropped.
    expired: AtomicBool,
    /// The request its output lines are tagged with.
    output_tag: Arc<AtomicU64>,
    /// Requests it has taken whose responses are not complete.
    open: AtomicUsize,
    /// The last request it took, to name in the log a failure that cut no request.
    last_request: AtomicU64,
}

impl Pool {
    pub(crate) fn new(pre: ServicePre<RequestState>, config: &AppConfig) -> Pool {
        Pool {
            handler: ProxyHandler::new(Instances {
                pre,
                config: config.clone(),
            }),
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
        }
    }

    /// Serves one request on an instance that may be serving others. Failures are logged and
    /// answered like a fresh instance's.
    pub(crate) async fn handle(
        &self,
        request: http::Request<Body>,
        cx: RequestContext,
        watch: BodyWatch,
    ) -> http::Response<Body> {
        let config = &self.handler.state().config;
        let id = cx.id;
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return config.fail(id, Failure::Overloaded("the app is shutting down".into()));
        };
        let request = match absolute_uri(request, &cx.scheme) {
            Ok(request) => request,
            Err(failure) => return config.fail(id, failure),
        };
        let start = tokio::time::Instant::now();
        let instance = Arc::new(OnceLock::new());
        let ticket = Ticket {
            id,
            instance: instance.clone(),
        };
        let handler = self.handler.clone();
        let call = async move { handler.handle(ticket, request).await };
        // Instances live on a runtime that always runs: a front end that drives a
        // current-thread runtime only while it waits for a request of its own (mod_wasm's
        // Apache threads) hands them to a shared one.
        let outcome = match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => instance_runtime()
                .spawn(call)
                .await
                .unwrap_or_else(|e| Err(format_err!("host task failed: {e}"))),
            _ => call.await,
        };
        let shared = instance.get().map(|taken| taken.0.clone());
        let served = Served {
            _taken: instance,
            _slot: slot,
        };
        match outcome {
            Ok(response) => {
                let ending = shared
                    .as_ref()
                    .map_or_else(Default::default, |s| s.ending.clone());
                let log = config.log.clone();
                let task =
                    GuestTask::shared(ending, log, id, config.name.clone(), Box::new(served));
                response.map(|body| {
                    GuardedBody::new(body, task, watch, false)
                        .with_deadline(config.limits.timeout, start)
                        .boxed()
                })
            }
            Err(error) => {
                let failure = self.failure(&error, shared.as_deref()).await;
                drop(served);
                config.fail(id, failure)
            }
        }
    }

    /// What a request that got no response is told.
    async fn failure(&self, error: &wasmtime::Error, instance: Option<&Shared>) -> Failure {
        let limits = &self.handler.state().config.limits;
        if let Some(e) = error.downcast_ref::<InstantiationError<Ticket>>() {
            let hit = e
                .error
                .downcast_ref::<InstantiationLimit>()
                .map(|limit| limit.0);
            return Failure::from_error(&e.error, hit, true);
        }
        if error.is::<ExpirationError>() {
            return Failure::Deadline(limits.timeout.unwrap_or_default());
        }
        if let Some(code) = error.downcast_ref::<ErrorCode>() {
            return Failure::GuestError(format!("{code:?}"));
        }
        if error.is::<TrapOrPanicError>() {
            // The instance failed; it says why as it goes, right after its requests learn it.
            if let Some(instance) = instance {
                let _ = tokio::time::timeout(Duration::from_secs(1), instance.ending.wait()).await;
                if let Some(failure) = instance.ending.failure() {
                    return failure;
                }
            }
            return Failure::Trap("the instance serving the request failed".into());
        }
        Failure::from_error(error, None, false)
    }
}

/// What a request holds until its response is complete.
struct Served {
    _taken: Arc<OnceLock<Taken>>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// The runtime that runs instances for front ends without a multi-threaded one: one thread
/// per CPU, started on first use (in an Apache child, after the fork).
fn instance_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("wasmbridge-instances")
            .enable_all()
            .build()
            .expect("failed to start the instances' runtime")
    })
}

/// A WASI 0.3 request carries its scheme and authority in its URI: from the front end's
/// scheme and the `Host` header, as WASI 0.2's incoming requests get them.
fn absolute_uri(
    request: http::Request<Body>,
    scheme: &Scheme,
) -> Result<http::Request<Body>, Failure> {
    let (mut parts, body) = request.into_parts();
    if parts.uri.scheme().is_none() {
        let authority = match parts.uri.authority() {
            Some(authority) => authority.as_str().to_string(),
            None => parts
                .headers
                .get(http::header::HOST)
                .and_then(|host| host.to_str().ok())
                .ok_or_else(|| Failure::BadRequest("no authority in the URI or Host".into()))?
                .to_string(),
        };
        let scheme = match scheme {
            Scheme::Http => "http".to_string(),
            Scheme::Https => "https".to_string(),
            Scheme::Other(other) => other.clone(),
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = format!("{scheme}://{authority}{path}")
            .parse()
            .map_err(|e| Failure::BadRequest(format!("bad request target: {e}")))?;
    }
    Ok(http::Request::from_parts(parts, body))
}

/// A limit stopped an instantiation: the store's limiter says which, and the store goes with
/// the failed instance, so the error carries it to the requests that waited for it.
#[derive(Debug)]
struct InstantiationLimit(LimitHit);

impl std::fmt::Display for InstantiationLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Failure::Limit(self.0).fmt(f)
    }
}

impl std::error::Error for InstantiationLimit {}

impl HandlerState for Instances {
    type StoreData = RequestState;
    type WorkerExpiration = Expiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> Result<Instance<RequestState, Expiration, Worker>> {
        let config = &self.config;
        let mut store = new_store(self.pre.engine(), config, 0, false, |_| {})?;
        let start = std::time::Instant::now();
        let instantiate = self.pre.instantiate_async(&mut store);
        let instantiated = match config.limits.timeout {
            Some(limit) => tokio::time::timeout(limit, instantiate)
                .await
                .map_err(|_| format_err!("instantiation took longer than {limit:?}"))?,
            None => instantiate.await,
        };
        let service = instantiated.map_err(|error| match store.data().limiter.hit {
            Some(hit) => wasmtime::Error::new(InstantiationLimit(hit)),
            None => error,
        })?;
        config.stats.instantiated(start.elapsed());
        let shared = Arc::new(Shared {
            ending: Arc::default(),
            expired: AtomicBool::new(false),
            output_tag: store.data().request_id.clone(),
            open: AtomicUsize::new(0),
            last_request: AtomicU64::new(0),
        });
        let timeout = config.limits.timeout.unwrap_or(Duration::MAX);
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: WasiHttpView::http,
            expiration: Expiration {
                idle_timeout: config.reuse.idle_timeout(),
                request_timeout: timeout,
                shared: shared.clone(),
                timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
                armed_for: None,
            },
            state: Worker {
                shared,
                config: config.clone(),
            },
        })
    }
}

/// When an instance goes: idle past the idle timeout, or busy past the request deadline.
struct Expiration {
    idle_timeout: Duration,
    request_timeout: Duration,
    shared: Arc<Shared>,
    timer: Pin<Box<tokio::time::Sleep>>,
    armed_for: Option<Instant>,
}

impl WorkerExpiration for Expiration {
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let timeout = match status {
            WorkerStatus::Idle => self.idle_timeout,
            WorkerStatus::Requests | WorkerStatus::PostReturn => self.request_timeout,
        };
        let Some(deadline) = start.checked_add(timeout) else {
            return Poll::Pending;
        };
        if self.armed_for != Some(deadline) {
            self.armed_for = Some(deadline);
            self.timer.as_mut().reset(deadline.into());
        }
        let poll = self.timer.as_mut().poll(cx);
        if poll.is_ready() && status != WorkerStatus::Idle {
            self.shared.expired.store(true, Ordering::SeqCst);
        }
        poll
    }
}

/// What decides, for one instance, which requests it takes and what its end means.
struct Worker {
    shared: Arc<Shared>,
    config: AppConfig,
}

impl WorkerState for Worker {
    type StoreData = RequestState;
    type RequestData = Ticket;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        let reuse = &self.config.reuse;
        // With a fuel budget, each request has the instance's fuel to itself.
        let max_concurrent = match self.config.limits.fuel {
            Some(_) => 1,
            None => reuse.max_concurrent(),
        };
        if total >= reuse.max_requests() {
            ShouldAccept::Never
        } else if concurrent >= max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, RequestState>,
        ticket: Ticket,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        let shared = &self.shared;
        shared.open.fetch_add(1, Ordering::SeqCst);
        shared.last_request.store(ticket.id, Ordering::SeqCst);
        shared.output_tag.store(ticket.id, Ordering::Relaxed);
        let _ = ticket.instance.set(Taken(shared.clone()));
        if let Some(fuel) = self.config.limits.fuel {
            let _ = store.set_fuel(fuel);
        }
        match self.config.limits.timeout {
            Some(limit) => Box::pin(tokio::time::sleep(limit)),
            None => Box::pin(std::future::pending()),
        }
    }

    fn drop(&self, store: Store<RequestState>, result: Result<()>) {
        let shared = &self.shared;
        // wasmtime-wasi-http says a worker dropped before its end "panicked"; when no thread
        // is panicking, the runtime dropped it as the server shut down.
        let shut_down = |error: &wasmtime::Error| {
            !std::thread::panicking() && error.to_string() == "worker panicked"
        };
        let failure = result.err().map(|error| {
            if shut_down(&error) {
                Failure::Overloaded("the server shut down".into())
            } else if shared.expired.load(Ordering::SeqCst) {
                Failure::Deadline(self.config.limits.timeout.unwrap_or_default())
            } else {
                Failure::from_error(&error, store.data().limiter.hit, false)
            }
        });
        // A failure that cut no request (the instance's own work after its responses) is
        // the instance's: one line, under the last request it took. Not a deadline: a request
        // past its deadline has said so in its own line (504, or its body cut).
        if let Some(failure) = &failure
            && shared.open.load(Ordering::SeqCst) == 0
            && !matches!(failure, Failure::Overloaded(_) | Failure::Deadline(_))
        {
            let request = shared.last_request.load(Ordering::SeqCst);
            self.config
                .log
                .request_failed(request, &self.config.name, failure);
        }
        // Said before the store goes, and with it what the instance was still writing.
        shared.ending.set_shared(failure);
        drop(store);
    }
}

//! The HTTP front end of `wasmbridge serve`: hyper, HTTP/1.1 and HTTP/2 (h2c with prior
//! knowledge, or ALPN over TLS) on one port, routes to apps, connection timeouts, reload and
//! graceful shutdown.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use http_body::Frame;
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use wasmtime::Result;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::access_log::{AccessEntry, AccessLog, PendingEntry};
use crate::failure::simple_response;
use crate::router::{Route, Router};
use crate::{Body, RequestContext};
use std::sync::{Arc, RwLock};

/// Default for [`ServerOptions::header_read_timeout`] (mod_reqtimeout's first limit).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Default for [`ServerOptions::keep_alive_timeout`] (Apache's `KeepAliveTimeout`).
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Connections held open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Requests served at once, across all apps; more wait for a free slot.
    pub max_requests: usize,
    /// Headers set on every request before the app sees it (`-H`), replacing the client's.
    pub request_headers: Vec<(HeaderName, HeaderValue)>,
    /// How long a client may take to send a request's headers (HTTP/1.1).
    pub header_read_timeout: Option<Duration>,
    /// How long a connection with no request in flight is kept open without traffic.
    pub keep_alive_timeout: Option<Duration>,
    /// Where each request gets its line (`--access-log`).
    pub access_log: Option<Arc<AccessLog>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: 1000,
            max_requests: 1000,
            request_headers: Vec::new(),
            header_read_timeout: Some(HEADER_READ_TIMEOUT),
            keep_alive_timeout: Some(KEEP_ALIVE_TIMEOUT),
            access_log: None,
        }
    }
}

/// What a server serves, replaced whole on reload: requests that started keep the apps they
/// started with, new ones get the new apps.
pub struct Site {
    router: RwLock<Arc<Router>>,
    tls: RwLock<Option<TlsAcceptor>>,
}

impl Site {
    pub fn new(router: Router, tls: Option<TlsAcceptor>) -> Site {
        Site {
            router: RwLock::new(Arc::new(router)),
            tls: RwLock::new(tls),
        }
    }

    pub fn router(&self) -> Arc<Router> {
        self.router.read().unwrap().clone()
    }

    fn tls(&self) -> Option<TlsAcceptor> {
        self.tls.read().unwrap().clone()
    }

    /// Takes new apps (and certificates) for the requests that come from now on.
    pub fn replace(&self, router: Router, tls: Option<TlsAcceptor>) {
        *self.router.write().unwrap() = Arc::new(router);
        *self.tls.write().unwrap() = tls;
    }
}

/// Serves `site` on `listener` until `shutdown` completes, then stops accepting, closes the
/// connections that have no request in flight and waits for the requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    site: Arc<Site>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let connections = Arc::new(Semaphore::new(options.max_connections));
    let tracker = TaskTracker::new();
    let (stop, stopping) = watch::channel(false);
    let options = Arc::new(options);
    let next_id = Arc::new(AtomicU64::new(0));
    let request_slots = Arc::new(Semaphore::new(options.max_requests));
    tokio::pin!(shutdown);

    loop {
        let (permit, stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = async {
                let permit = connections.clone().acquire_owned().await.expect("never closed");
                listener.accept().await.map(|(stream, remote)| (permit, stream, remote))
            } => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: the listener itself is fine.
                Err(e) => {
                    eprintln!("wasmbridge: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small body chunks should leave at once, not after Nagle's delay.
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let activity = Arc::new(Activity::new());
        let tls = site.tls();
        let scheme = match tls {
            Some(_) => Scheme::Https,
            None => Scheme::Http,
        };
        let service = {
            let (site, options, next_id, activity, request_slots) = (
                site.clone(),
                options.clone(),
                next_id.clone(),
                activity.clone(),
                request_slots.clone(),
            );
            hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                let (options, activity, scheme) =
                    (options.clone(), activity.clone(), scheme.clone());
                let request_slots = request_slots.clone();
                let router = site.router();
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let in_flight = InFlight::start(activity);
                async move {
                    let route = router.route(request.uri().path());
                    let mut access = PendingEntry(options.access_log.clone().map(|log| {
                        let mut entry = AccessEntry::new(&request, Some(remote));
                        entry.id = id;
                        entry.app = route.map_or("-", |(route, _)| route.app.name()).to_string();
                        (log, entry)
                    }));
                    let response = match route {
                        Some((route, mount)) => {
                            prepare(&mut request, &options, local);
                            if route.spin_headers {
                                spin_headers(&mut request, route, mount, &scheme, remote);
                            }
                            let head_only = request.method() == http::Method::HEAD;
                            let cx = RequestContext {
                                local,
                                remote: Some(remote),
                                mount: mount.to_string(),
                                router: Some(router.clone()),
                                ..RequestContext::new(id, scheme)
                            };
                            // A request slot of the server's, across its apps, until the
                            // response is done with.
                            let Ok(slot) = request_slots.acquire_owned().await else {
                                unreachable!("never closed");
                            };
                            let response = route.app.handle(request, cx).await;
                            let response = response.map(|body| {
                                body.map_frame(move |frame| {
                                    let _ = &slot;
                                    frame
                                })
                                .boxed_unsync()
                            });
                            without_unread_body(response, head_only)
                        }
                        None => simple_response(http::StatusCode::NOT_FOUND, "Not Found\n".into()),
                    };
                    let status = response.status().as_u16();
                    Ok::<http::Response<Body>, Infallible>(response.map(|body| {
                        Counted {
                            inner: body,
                            _in_flight: in_flight,
                            sent: 0,
                            access: access.0.take().map(|(log, entry)| (log, entry, status)),
                        }
                        .boxed_unsync()
                    }))
                }
            })
        };
        let (builder, stopping, options) = (builder.clone(), stopping.clone(), options.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let stream = Tracked {
                stream,
                activity: activity.clone(),
            };
            let Some(tls) = tls else {
                return serve_connection(&builder, stream, service, activity, stopping, &options)
                    .await;
            };
            // A client gets as long for its handshake as for its request's headers. A failed
            // handshake is the client's business (a scanner, an old client).
            let handshake = tls.accept(stream);
            let stream = match options.header_read_timeout {
                Some(limit) => match tokio::time::timeout(limit, handshake).await {
                    Ok(stream) => stream,
                    Err(_) => return,
                },
                None => handshake.await,
            };
            if let Ok(stream) = stream {
                serve_connection(&builder, stream, service, activity, stopping, &options).await
            }
        });
    }

    drop(listener);
    let _ = stop.send(true);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Serves one connection's requests until it closes, the server stops, or it has idled for
/// the keep-alive timeout.
async fn serve_connection<S, Svc>(
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    service: Svc,
    activity: Arc<Activity>,
    mut stopping: watch::Receiver<bool>,
    options: &ServerOptions,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<Body>,
            Error = Infallible,
        > + Send
        + 'static,
    Svc::Future: Send + 'static,
{
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            // Errors here are the client's doing (reset, bad framing, a header timeout):
            // nothing to report.
            _ = connection.as_mut() => break,
            _ = stopping.wait_for(|stop| *stop), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = activity.idle(options.keep_alive_timeout), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The headers Spin gives a component about its route (Spin's SDK routers read them).
fn spin_headers(
    request: &mut http::Request<hyper::body::Incoming>,
    route: &Route,
    mount: &str,
    scheme: &Scheme,
    remote: std::net::SocketAddr,
) {
    let path = request.uri().path();
    let path_info = path.strip_prefix(mount).unwrap_or(path).to_string();
    // HTTP/2 carries the authority in the URI, HTTP/1.1 in Host.
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            let host = request.headers().get(http::header::HOST)?;
            host.to_str().ok().map(str::to_string)
        })
        .unwrap_or_else(|| "localhost".into());
    let scheme = match scheme {
        Scheme::Https => "https",
        _ => "http",
    };
    let full_url = format!(
        "{scheme}://{host}{}",
        request.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let pattern = route.pattern.to_string();
    let component_route = pattern.strip_suffix("/...").unwrap_or(&pattern).to_string();
    let headers = request.headers_mut();
    for (name, value) in [
        ("spin-full-url", full_url),
        ("spin-path-info", path_info),
        ("spin-matched-route", pattern.clone()),
        ("spin-base-path", "/".to_string()),
        ("spin-raw-component-route", pattern),
        ("spin-component-route", component_route),
        ("spin-client-addr", remote.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

fn prepare(
    request: &mut http::Request<hyper::body::Incoming>,
    options: &ServerOptions,
    local: Option<std::net::SocketAddr>,
) {
    let headers = request.headers_mut();
    for (name, _) in &options.request_headers {
        headers.remove(name);
    }
    for (name, value) in &options.request_headers {
        headers.append(name, value.clone());
    }
    // HTTP/1.0 clients may send no Host; wasi:http needs an authority, so use our address.
    let has_authority =
        request.uri().authority().is_some() || request.headers().contains_key(http::header::HOST);
    if let Some(addr) = local.filter(|_| !has_authority) {
        let value = HeaderValue::from_str(&addr.to_string()).expect("an address is a valid header");
        request.headers_mut().insert(http::header::HOST, value);
    }
}

/// hyper never reads the body of a response to HEAD, or of a 204 or 304: the guest writes it
/// all the same and finishes in its own time, rather than being taken for a client that left.
fn without_unread_body(response: http::Response<Body>, head_only: bool) -> http::Response<Body> {
    let status = response.status();
    if !head_only
        && status != http::StatusCode::NO_CONTENT
        && status != http::StatusCode::NOT_MODIFIED
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    tokio::spawn(async move {
        let _ = body.collect().await;
    });
    let empty = http_body_util::Empty::new()
        .map_err(|e| match e {})
        .boxed_unsync();
    http::Response::from_parts(parts, empty)
}

/// When a connection last moved a byte, and how many of its requests are in flight.
struct Activity {
    since: Instant,
    /// Milliseconds after `since`.
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            since: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        self.last
            .store(self.since.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once the connection has had no request in flight and no traffic for `limit`;
    /// never without a limit.
    async fn idle(&self, limit: Option<Duration>) {
        let Some(limit) = limit else {
            return std::future::pending().await;
        };
        loop {
            let last = self.since + Duration::from_millis(self.last.load(Ordering::Relaxed));
            if self.in_flight.load(Ordering::Relaxed) == 0 && last.elapsed() >= limit {
                return;
            }
            let from = if self.in_flight.load(Ordering::Relaxed) == 0 {
                last
            } else {
                Instant::now()
            };
            tokio::time::sleep_until((from + limit).into()).await;
        }
    }
}

/// A request in flight, until its response body is dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that counts as a request in flight while it lives, and writes the
/// request's access log line when it goes.
struct Counted {
    inner: Body,
    _in_flight: InFlight,
    /// Body bytes passed on so far.
    sent: u64,
    access: Option<(Arc<AccessLog>, AccessEntry, u16)>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some((log, entry, status)) = &self.access {
            entry.finish(log, *status, self.sent);
        }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll
            && let Some(data) = frame.data_ref()
        {
            self.sent += data.len() as u64;
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A client's connection that notes when bytes move.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves the apps' metrics in Prometheus' text format, on any path, until the process ends.
/// A scraper needs little: a few connections at once, each held to the header timeout.
pub async fn serve_metrics(listener: TcpListener, site: Arc<Site>) {
    let connections = Arc::new(Semaphore::new(16));
    loop {
        let permit = connections
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let site = site.clone();
        let service = hyper::service::service_fn(move |_request| {
            let apps = site.router().apps();
            let text = crate::metrics::render(apps.iter().map(|app| (app.name(), &**app.stats())));
            let mut response = http::Response::new(http_body_util::Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            std::future::ready(Ok::<_, Infallible>(response))
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(Duration::from_secs(60), connection).await;
        });
    }
}

//! The HTTP front end of `wasmbridge serve`: hyper, HTTP/1.1 and HTTP/2 (h2c with prior
//! knowledge) on one port, graceful shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderName, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use wasmtime::Result;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::{App, Body, RequestContext};

#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Connections held open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Headers set on every request before the app sees it (`-H`), replacing the client's.
    pub request_headers: Vec<(HeaderName, HeaderValue)>,
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and waits for
/// the requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(options.max_connections));
    let options = Arc::new(options);
    let next_id = Arc::new(AtomicU64::new(0));
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
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small body chunks should leave at once, not after Nagle's delay.
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let (app, options, next_id) = (app.clone(), options.clone(), next_id.clone());
        let service =
            hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                let (app, options) = (app.clone(), options.clone());
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                async move {
                    prepare(&mut request, &options, local);
                    let cx = RequestContext {
                        local,
                        remote: Some(remote),
                        ..RequestContext::new(id, Scheme::Http)
                    };
                    Ok::<http::Response<Body>, Infallible>(app.handle(request, cx).await)
                }
            });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are the client's doing (reset, bad framing): nothing to report.
            let _ = connection.await;
            drop(permit);
        });
    }

    drop(listener);
    graceful.shutdown().await;
    Ok(())
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

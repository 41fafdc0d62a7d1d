//! Sending a guest's outgoing `wasi:http` request under its app's allowed hosts.
//!
//! A host a rule names is reached as wasmtime-wasi-http reaches any host. A host only a
//! wildcard allows is resolved once, every address it has must be public, and the connection
//! goes to one of those addresses: resolving the name again to connect would let a name that
//! changes its answer in between (DNS rebinding) lead to an internal address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
use wasmtime_wasi_http::{Error, RequestOptions};

use crate::outbound::{AllowedHosts, Verdict, is_internal};

type WasiBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, Error>;
pub(crate) type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// wasmtime-wasi-http's own timeouts, when the guest sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Sends `request` if `hosts` allow it (all of them with `any`), else `HTTP-request-denied`.
pub(crate) async fn send(
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    any: bool,
    hosts: &AllowedHosts,
) -> Result<Sent, Error> {
    let uri = request.uri();
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return Err(Error::HttpRequestUriInvalid);
    };
    let verdict = match any {
        true => Verdict::Named,
        // `user@host`: what the check saw would not be what the connection reaches.
        false if uri.authority().is_some_and(|a| a.as_str().contains('@')) => Verdict::Denied,
        false => {
            let port = uri.port_u16().unwrap_or(default_port(scheme));
            hosts.check(scheme, host, port)
        }
    };
    match verdict {
        Verdict::Denied => Err(Error::HttpRequestDenied),
        Verdict::Named => {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(|b| b.boxed_unsync()), Box::new(io)))
        }
        Verdict::PublicOnly => {
            let addrs = public_addresses(uri, options).await?;
            send_to(&addrs, request, options).await
        }
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// The addresses the request's host resolves to, all of them public; else denied.
async fn public_addresses(
    uri: &http::Uri,
    options: Option<RequestOptions>,
) -> Result<Vec<SocketAddr>, Error> {
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(default_port(uri.scheme_str().unwrap_or("")));
    let timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(|_| Error::DnsError {
                rcode: None,
                info_code: None,
            })?
            .collect();
    if addrs.is_empty() || addrs.iter().any(|addr| is_internal(addr.ip())) {
        return Err(Error::HttpRequestDenied);
    }
    Ok(addrs)
}

/// Sends `request` over a connection to one of `addrs`, with TLS for `https` (the name in the
/// URI is what the certificate must show).
async fn send_to(
    addrs: &[SocketAddr],
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<Sent, Error> {
    let timeout = |get: fn(&RequestOptions) -> Option<Duration>| {
        options.as_ref().and_then(get).unwrap_or(DEFAULT_TIMEOUT)
    };
    let (connect_timeout, first_byte_timeout) = (
        timeout(|o| o.connect_timeout),
        timeout(|o| o.first_byte_timeout),
    );
    let uri = request.uri().clone();
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addrs))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    let io: Box<dyn Io> = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        let host = uri.host().unwrap_or_default();
        let name = rustls_pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let connect = tls_connector().connect(name, stream);
        let tls = tokio::time::timeout(connect_timeout, connect)
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
        Box::new(tls)
    } else {
        Box::new(stream)
    };
    let (mut sender, connection) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake(TokioIo::new(io)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    // The connection runs on its own; it ends when the response (and the guest's hold on
    // it) is gone. The request line carries the path only: the host is in `Host`.
    let connection = tokio::spawn(connection);
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
    let io = async move {
        match connection.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::from(e)),
            Err(_) => Err(Error::InternalError(Some(
                "the connection task failed".into(),
            ))),
        }
    };
    Ok((
        response.map(|body| body.map_err(Error::from).boxed_unsync()),
        Box::new(io),
    ))
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A TLS client that trusts the Web PKI's roots, as wasmtime-wasi-http's does; made once.
fn tls_connector() -> TlsConnector {
    static CONNECTOR: std::sync::OnceLock<TlsConnector> = std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            TlsConnector::from(Arc::new(config))
        })
        .clone()
}

//! wasmbridge: a WebAssembly host for web servers.
//!
//! It serves two kinds of guest: `wasi:http` components, natively (WASI 0.2's
//! `wasi:http/proxy` and WASI 0.3's async `wasi:http/handler`), and CGI programs (preview-1
//! command modules, wrapped into components, and `wasi:cli/command` components).
//!
//! The library is the engine every front end shares. The `wasmbridge serve` command line and
//! the Apache module both load an [`App`] and hand it requests with [`App::handle`]: a request
//! head plus a streaming body in, a response head plus a streaming body out. Everything else
//! (sockets, TLS, HTTP framing, access logs) belongs to the front end.
//!
//! The `cli` feature (on by default, off for mod_wasm) adds what only the command line needs:
//! the HTTP server, TLS, access logs and manifests for `serve`, `wrap` with its CGI adapter, and
//! the snapshots of `wizer`.
//!
//! Each request runs in a fresh [`wasmtime::Store`] with its own limits, so nothing a guest does
//! survives into the next request, and a guest that traps, loops or runs out of memory costs only
//! the request it was serving. WASI 0.3 components are the exception they ask to be: an instance
//! serves many requests, some at once ([`reuse`]), and a failure costs the requests it serves.

#[cfg(feature = "cli")]
pub mod access_log;
pub mod app;
pub mod body;
pub mod cache;
pub mod cgi;
pub mod engine;
pub mod failure;
mod guest;
pub mod limits;
pub mod log;
#[cfg(feature = "cli")]
pub mod manifest;
pub mod metrics;
pub mod outbound;
mod outgoing;
#[cfg(feature = "cli")]
pub mod preinit;
pub mod program;
pub mod reuse;
pub mod router;
mod run;
pub mod sandbox;
#[cfg(feature = "cli")]
pub mod server;
mod state;
#[cfg(feature = "cli")]
pub mod tls;
#[cfg(feature = "cli")]
pub mod wrap;

pub use app::{App, AppConfig, Mode, RequestContext};
pub use failure::Failure;
pub use state::remove_scratch_dirs;

/// The body of a request or response as it crosses the host: a stream of byte chunks.
pub type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, wasmtime_wasi_http::Error>;

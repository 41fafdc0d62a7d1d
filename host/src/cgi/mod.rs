//! CGI mode: a WASI command (a preview-1 module wrapped into a component, or a
//! `wasi:cli/command` component) serves each request the way a CGI program does under Apache.
//! The request becomes RFC 3875 meta-variables in its environment and its body arrives on
//! stdin; what it writes to stdout is parsed as a CGI response and streamed to the client.

pub(crate) mod channel;
mod meta;
mod pipe;
mod response;
mod worker;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, StreamBody};
use tokio::io::{AsyncRead, AsyncWriteExt as _};
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream};

pub use channel::INTERFACE as WORKER_CHANNEL;
pub use meta::{Script, meta_variables};
pub use response::{CgiResponse, Malformed};
pub use worker::WORKER_VARIABLE;
pub(crate) use worker::Workers;

use crate::app::App;
use crate::body::BodyWatch;
use crate::failure::{error_response, simple_response};
use crate::guest::{GuardedBody, GuestTask};
use crate::run::{Entry, Runner};
use crate::sandbox::Sandbox;
use crate::{Body, Failure, RequestContext};

/// Bytes buffered between the program and the client in either direction.
const PIPE_SIZE: usize = 64 * 1024;

/// Local redirects followed for one request before giving up.
const MAX_LOCAL_REDIRECTS: u8 = 10;

/// How a CGI app finds its script.
#[derive(Clone, Debug)]
pub struct CgiConfig {
    /// Arguments after the program name (mod_wasm's `WasmArg`), e.g. the script of an
    /// interpreter: `["/app/prettyfy.py"]`.
    pub args: Vec<String>,
    /// Docroot style (mod_wasm's `WasmMapCGIFileNames`): the guest directory that URL paths map
    /// into. The script a URL names is appended to the arguments and is `SCRIPT_FILENAME`.
    pub docroot: Option<String>,
    /// Docroot style: the scripts a directory's URL runs, first found wins (Apache's
    /// `DirectoryIndex`).
    pub index: Vec<String>,
    /// Docroot style: the script, a URL path in the docroot, for URLs that name no script —
    /// a front controller (Apache's `FallbackResource`).
    pub fallback: Option<String>,
    /// Docroot style: the extensions of the files that run (without the dot); any other file
    /// is not handed to the program. Empty: [`default_extensions`] of the program.
    pub extensions: Vec<String>,
    /// Under a front end that maps the script itself (mod_wasm's `WasmMapCGIFileNames` with
    /// `WasmCGIScriptArg`): its `SCRIPT_FILENAME` is appended to the arguments, as the script
    /// `docroot` finds is.
    pub script_arg: bool,
    /// A WSGI app (`MODULE:CALLABLE`) that python.wasm from guests/python serves through its
    /// gateway: `--wsgi MODULE:CALLABLE` follows the arguments. See [`App::check_start`].
    ///
    /// [`App::check_start`]: crate::App::check_start
    pub wsgi: Option<String>,
    /// Long-lived instances that serve one request after another over FastCGI on stdin and
    /// stdout (see [`WORKER_VARIABLE`]), at most this many; 0: a fresh instance per request.
    pub workers: usize,
    /// How long a request waits for a free worker before it is answered 503.
    pub worker_wait: Duration,
}

/// How many workers a WSGI app ([`CgiConfig::wsgi`]) gets when the configuration does not
/// say: one per CPU, as gunicorn's and mod_wsgi's own guides start from.
pub fn default_wsgi_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Default for [`CgiConfig::worker_wait`].
pub const WORKER_WAIT: Duration = Duration::from_secs(10);

impl Default for CgiConfig {
    fn default() -> Self {
        CgiConfig {
            args: Vec::new(),
            docroot: None,
            index: Vec::new(),
            fallback: None,
            extensions: Vec::new(),
            script_arg: false,
            wsgi: None,
            workers: 0,
            worker_wait: WORKER_WAIT,
        }
    }
}

/// The scripts an interpreter runs when the configuration does not say: `.php` for PHP,
/// `.py` for Python, `.cgi` for anything else, by the program's file name.
pub fn default_extensions(program: &str) -> Vec<String> {
    let name = program.to_ascii_lowercase();
    let ext = if name.contains("php") {
        "php"
    } else if name.starts_with("py") || name.contains("python") {
        "py"
    } else {
        "cgi"
    };
    vec![ext.to_string()]
}

impl CgiConfig {
    /// The program's argv before any script: its name, then the configured arguments.
    pub(crate) fn argv(&self, program: &str) -> Vec<String> {
        let mut argv = vec![program.to_string()];
        argv.extend(self.args.iter().cloned());
        if let Some(app) = &self.wsgi {
            argv.extend(["--wsgi".to_string(), app.clone()]);
        }
        argv
    }

    /// The extensions of the scripts the program runs: as configured, else by its name.
    fn script_extensions(&self, program: &str) -> Vec<String> {
        match self.extensions.is_empty() {
            true => default_extensions(program),
            false => self.extensions.clone(),
        }
    }

    /// Whether a script the URL chose, at `path`, may run: no dot-file or dot-directory on
    /// the way, and a script extension.
    pub(crate) fn runs_script(&self, program: &str, path: &str) -> bool {
        let extensions = self.script_extensions(program);
        let mut segments = path.split('/').filter(|s| !s.is_empty()).peekable();
        while let Some(segment) = segments.next() {
            if segment.starts_with('.') {
                return false;
            }
            if segments.peek().is_none() {
                return segment
                    .rsplit_once('.')
                    .is_some_and(|(_, ext)| extensions.iter().any(|e| e == ext));
            }
        }
        false
    }

    /// Finds the script for a URL path. `None` when the path names no file in the docroot.
    pub fn script(&self, program: &str, path: &str, sandbox: &Sandbox) -> Option<Script> {
        let Some(docroot) = &self.docroot else {
            // A fixed script answers every URL: all of the path is PATH_INFO.
            let filename = self
                .args
                .last()
                .cloned()
                .unwrap_or_else(|| program.to_string());
            let document_root = Path::new(&filename)
                .parent()
                .map_or("/".into(), |p| p.display().to_string());
            return Some(Script {
                filename,
                name: String::new(),
                path_info: path.to_string(),
                document_root,
            });
        };
        let extensions = self.script_extensions(program);
        let root = DocRoot {
            host: sandbox.host_path(docroot)?,
            guest: docroot,
            extensions: &extensions,
        };
        match root.find(path, &self.index) {
            Lookup::Script(script) => Some(script),
            Lookup::Refused => None,
            Lookup::NoScript => match root.find(self.fallback.as_deref()?, &[]) {
                Lookup::Script(script) if script.path_info.is_empty() => Some(script),
                _ => None,
            },
        }
    }
}

/// What a URL path names in a docroot.
enum Lookup {
    Script(Script),
    /// Nothing the program may run: no file, a directory without an index, a file of another
    /// kind. A front controller may take the URL.
    NoScript,
    /// A path through a dot-file or dot-directory (`/.env`, `/.git/config`): never served.
    Refused,
}

/// A docroot, in the host's file system and as the guest sees it (`DOCUMENT_ROOT`).
struct DocRoot<'a> {
    host: PathBuf,
    guest: &'a str,
    /// What a script's name ends with: only such files run.
    extensions: &'a [String],
}

impl DocRoot<'_> {
    /// The file the URL path names — the first segments that make a file, the rest being
    /// PATH_INFO — or a directory's index file. Only scripts count: a file of any other kind
    /// (`notes.txt`, `index.py` under PHP) is never handed to the program, and a path through
    /// a dot-file or dot-directory is refused outright.
    fn find(&self, path: &str, index: &[String]) -> Lookup {
        let mut host = self.host.clone();
        let mut guest = self.guest.trim_end_matches('/').to_string();
        let mut name = String::new();
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        while let Some(segment) = segments.next() {
            let Some(decoded) = percent_decode(segment) else {
                return Lookup::NoScript;
            };
            if decoded.starts_with('.') || decoded.contains('/') || decoded.contains('\0') {
                return Lookup::Refused;
            }
            host.push(&decoded);
            guest = format!("{guest}/{decoded}");
            name = format!("{name}/{segment}");
            let Ok(metadata) = std::fs::metadata(&host) else {
                return Lookup::NoScript;
            };
            if metadata.is_file() {
                let rest: Vec<&str> = segments.collect();
                let path_info = if rest.is_empty() {
                    String::new()
                } else {
                    format!("/{}", rest.join("/"))
                };
                return self.script(&host, guest, name, path_info);
            }
        }
        index
            .iter()
            .filter(|file| std::fs::metadata(host.join(file)).is_ok_and(|m| m.is_file()))
            .map(|file| {
                self.script(
                    &host.join(file),
                    format!("{guest}/{file}"),
                    format!("{name}/{file}"),
                    String::new(),
                )
            })
            .find(|lookup| matches!(lookup, Lookup::Script(_)))
            .unwrap_or(Lookup::NoScript)
    }

    fn script(&self, host: &Path, filename: String, name: String, path_info: String) -> Lookup {
        let runs = filename
            .rsplit_once('.')
            .is_some_and(|(_, ext)| self.extensions.iter().any(|e| e == ext));
        // A symlink out of the docroot does not count as a script in it.
        let inside = match (
            std::fs::canonicalize(host),
            std::fs::canonicalize(&self.host),
        ) {
            (Ok(file), Ok(root)) => file.starts_with(root),
            _ => false,
        };
        if !runs || !inside {
            return Lookup::NoScript;
        }
        Lookup::Script(Script {
            filename,
            name,
            path_info,
            document_root: self.guest.to_string(),
        })
    }
}

fn percent_decode(segment: &str) -> Option<String> {
    String::from_utf8(wasmbridge_cgi::decode_segment(segment.as_bytes())?).ok()
}

/// Largest environment a CGI program is started with, in bytes (`NAME=value` and a NUL for
/// each variable): the WASI preview-1 adapter takes a program's environment into a buffer of
/// its own, and a larger one would trap the program. A request whose variables do not fit is
/// answered 431.
pub const MAX_ENVIRONMENT: usize = 48 * 1024;

/// A CGI app's program, as a request runs it.
#[derive(Clone, Copy)]
pub(crate) struct Program<'a> {
    /// `argv[0]`: the file name the program was loaded from.
    pub name: &'a str,
    /// Starts a fresh instance of it.
    pub runner: &'a Runner,
    /// Its long-lived instances, when it has them.
    pub workers: Option<&'a Arc<Workers>>,
}

/// Serves one request of `app` with its CGI program.
pub(crate) async fn handle(
    app: &App,
    program: Program<'_>,
    request: http::Request<Body>,
    cx: RequestContext,
    watch: BodyWatch,
) -> http::Response<Body> {
    let config = app.config();
    let (parts, body) = request.into_parts();
    // Below its mount point, the app sees the path as if it were served at the root.
    let path = parts.uri.path();
    let below_mount = path
        .strip_prefix(cx.mount.as_str())
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .unwrap_or(path);
    let Some(mut script) = config
        .cgi
        .script(program.name, below_mount, &config.sandbox)
    else {
        return simple_response(http::StatusCode::NOT_FOUND, "Not Found\n".into());
    };
    script.name = format!("{}{}", cx.mount, script.name);
    if config.cgi.script_arg
        && let Some((_, filename)) = cx
            .cgi_env
            .iter()
            .flatten()
            .find(|(name, _)| name == "SCRIPT_FILENAME")
    {
        script.filename = filename.clone();
    }
    // Granted variables last, so that a request cannot override them.
    let mut env = match &cx.cgi_env {
        Some(env) => env.clone(),
        None => meta_variables(&parts, &cx, &script),
    };
    env.retain(|(name, _)| {
        !config
            .sandbox
            .env
            .iter()
            .any(|(granted, _)| granted == name)
    });

    let id = cx.id;
    let guest = match program.workers {
        Some(workers) => {
            workers
                .serve(program.runner, program.name, id, &env, body)
                .await
        }
        None => start(program, id, &env, &script, body).await,
    };
    let (guest, mut stdout) = match guest {
        Ok(guest) => guest,
        Err(failure) => return config.fail(id, failure),
    };

    match response::read_head(&mut stdout).await {
        Ok((CgiResponse::Document { status, headers }, first)) => {
            let body = futures::stream::once(async move { Ok(Bytes::from(first)) })
                .chain(tokio_util::io::ReaderStream::new(stdout))
                .filter(|chunk| std::future::ready(!matches!(chunk, Ok(c) if c.is_empty())))
                .map(|chunk| {
                    chunk
                        .map(http_body::Frame::data)
                        .map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))
                });
            // The body ends when the program's output does, and says how the program ended.
            let body = GuardedBody::new(StreamBody::new(body).boxed_unsync(), guest, watch, true);
            let mut response = http::Response::new(body.boxed());
            *response.status_mut() = status;
            let response_headers = response.headers_mut();
            for (name, value) in headers {
                response_headers.append(name, value);
            }
            response
        }
        Ok((CgiResponse::LocalRedirect(location), _)) => {
            guest.stop();
            if cx.redirects >= MAX_LOCAL_REDIRECTS {
                return config.fail(id, Failure::RedirectLoop(location));
            }
            let empty = http_body_util::Empty::new()
                .map_err(|e| match e {})
                .boxed_unsync();
            let Ok(mut redirected) = http::Request::get(location.as_str()).body(empty) else {
                let malformed = Malformed::BadLocation(location.into_bytes());
                return config.fail(
                    id,
                    Failure::BadCgiOutput {
                        malformed,
                        exit: None,
                    },
                );
            };
            let headers = redirected.headers_mut();
            for (name, value) in &parts.headers {
                if name != http::header::CONTENT_LENGTH && name != http::header::CONTENT_TYPE {
                    headers.append(name, value.clone());
                }
            }
            // The front end's variables described the first URL, not this one.
            let mut cx = RequestContext {
                redirects: cx.redirects + 1,
                cgi_env: None,
                ..cx
            };
            // Under a router, the new URL goes where a client's request for it would: maybe
            // to another app.
            if let Some(router) = cx.router.clone() {
                let Some((route, mount)) = router.route(redirected.uri().path()) else {
                    return simple_response(http::StatusCode::NOT_FOUND, "Not Found\n".into());
                };
                cx.mount = mount.to_string();
                if !std::ptr::eq(Arc::as_ptr(&route.app), app) {
                    return Box::pin(route.app.handle(redirected, cx)).await;
                }
            }
            Box::pin(handle(app, program, redirected, cx, watch)).await
        }
        Err(malformed) => {
            // A program that wrote nonsense may still be running: stop it. One that ended
            // before its headers has its own story (a trap, a deadline, an exit status).
            let ended = matches!(malformed, Malformed::NoHeaderBlock { .. });
            if !ended {
                guest.stop();
                return config.fail(
                    id,
                    Failure::BadCgiOutput {
                        malformed,
                        exit: None,
                    },
                );
            }
            match guest.join().await {
                Err(failure) => error_response(&failure),
                Ok(code) => config.fail(
                    id,
                    Failure::BadCgiOutput {
                        malformed,
                        exit: Some(code),
                    },
                ),
            }
        }
    }
}

/// The program's output, as the request reads it.
pub(crate) type Output = Pin<Box<dyn AsyncRead + Send>>;

/// Starts a fresh instance of the program for one request: the body flows into its stdin,
/// its stdout comes back.
fn start(
    program: Program<'_>,
    id: u64,
    env: &[(String, String)],
    script: &Script,
    body: Body,
) -> impl Future<Output = Result<(GuestTask, Output), Failure>> {
    let config = program.runner.config();
    let size: usize = env.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
    let mut args = config.cgi.argv(program.name);
    if config.cgi.docroot.is_some() || config.cgi.script_arg {
        args.push(script.filename.clone());
    }
    let env = env.to_vec();
    async move {
        if size > MAX_ENVIRONMENT {
            return Err(Failure::HeadersTooLarge(size));
        }
        let (stdout, stdout_in) = tokio::io::duplex(PIPE_SIZE);
        // The request body flows into stdin through a bounded pipe, so a large upload
        // waits for the program to read it instead of piling up in memory.
        // (A duplex pipe, not a simplex one: dropping one end is what tells the other end
        // EOF.)
        let (stdin, mut body_in) = tokio::io::duplex(PIPE_SIZE);
        let configure = |wasi: &mut wasmtime_wasi::WasiCtxBuilder| {
            wasi.args(&args);
            for (name, value) in &env {
                wasi.env(name, value);
            }
            wasi.stdin(AsyncStdinStream::new(stdin));
            wasi.stdout(AsyncStdoutStream::new(PIPE_SIZE, stdout_in));
        };
        let guest = program
            .runner
            .spawn(id, configure, |_| Ok(Entry::Cgi))
            .await?;
        // A body that breaks off never reaches its end here: the program sees no EOF (it
        // would take what came for the whole body) and is stopped, as the request fails.
        let ending = guest.ending.clone();
        tokio::spawn(async move {
            let mut body = std::pin::pin!(body);
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    ending.wait().await;
                    return;
                };
                if let Ok(data) = frame.into_data()
                    && body_in.write_all(&data).await.is_err()
                {
                    return;
                }
            }
        });
        Ok((guest, Box::pin(stdout) as Output))
    }
}

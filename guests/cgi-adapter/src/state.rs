//! The instance's state: the request's arguments and environment, the descriptor table and
//! the response being written.

use alloc::vec::Vec;

use crate::bindings::wasi::filesystem::types::Descriptor;
use crate::bindings::wasi::http::types::{IncomingBody, IncomingRequest, ResponseOutparam};
use crate::bindings::wasi::io::streams::{InputStream, OutputStream};

use crate::cgi::{self, Env, Output};
use crate::config::Config;

pub type Slot = Option<State>;

pub struct State {
    pub args: Env,
    pub env: Env,
    pub fds: Vec<Fd>,
    /// The request body, fd 0 (the stream is dropped before its body).
    pub stdin: Option<(InputStream, IncomingBody)>,
    /// The response, fd 1.
    pub stdout: Output,
    pub stderr: OutputStream,
}

pub enum Fd {
    Closed,
    Stdin,
    Stdout,
    Stderr,
    File(File),
}

pub struct File {
    pub descriptor: Descriptor,
    pub position: u64,
    pub append: bool,
    pub directory: bool,
    /// For a preopened directory, the path the program sees it at.
    pub preopen: Option<Vec<u8>>,
}

impl State {
    pub fn get() -> &'static mut State {
        let slot = unsafe {
            &mut *crate::alloc_arena::root()
                .add(crate::alloc_arena::SLOT)
                .cast::<Slot>()
        };
        slot.get_or_insert_with(|| State {
            args: Env::default(),
            env: Env::default(),
            fds: Vec::new(),
            stdin: None,
            stdout: Output::Done,
            stderr: crate::bindings::wasi::cli::stderr::get_stderr(),
        })
    }

    /// Sets up the program's world for `request`. False when the request is answered
    /// already, because its URL names no script.
    pub fn begin(&mut self, request: IncomingRequest, response_out: ResponseOutparam) -> bool {
        let config = Config::load();
        self.fds = Vec::from([Fd::Stdin, Fd::Stdout, Fd::Stderr]);
        for (descriptor, path) in crate::bindings::wasi::filesystem::preopens::get_directories() {
            self.fds.push(Fd::File(File {
                descriptor,
                position: 0,
                append: false,
                directory: true,
                preopen: Some(path.into_bytes()),
            }));
        }
        let path_and_query = request.path_with_query().unwrap_or_default();
        let path = path_and_query.split('?').next().unwrap_or_default();
        let script = {
            let preopens: Vec<(&Descriptor, &[u8])> = self
                .fds
                .iter()
                .filter_map(|fd| match fd {
                    Fd::File(File {
                        descriptor,
                        preopen: Some(path),
                        ..
                    }) => Some((descriptor, &path[..])),
                    _ => None,
                })
                .collect();
            cgi::script(&config, path.as_bytes(), &preopens)
        };
        let Some(script) = script else {
            cgi::respond(response_out, 404, &lit!(b"Not Found\n"));
            return false;
        };

        let default_program = &lit!(b"app.wasm");
        let program = config.value(&lit!(b"program")).unwrap_or(default_program);
        self.args.push_arg(program);
        for arg in config.values(&lit!(b"arg")) {
            self.args.push_arg(arg);
        }
        if config.value(&lit!(b"docroot")).is_some() {
            self.args.push_arg(&script.filename);
        }

        // The fixed environment last, so that a request cannot override it.
        let fixed: Vec<&[u8]> = config.values(&lit!(b"env")).collect();
        let names: Vec<&[u8]> = fixed
            .iter()
            .map(|entry| entry.split(|b| *b == b'=').next().unwrap_or_default())
            .collect();
        self.env = cgi::meta_variables(&request, path_and_query.as_bytes(), &script, &names);
        for entry in fixed {
            self.env.bytes.extend_from_slice(entry);
            self.env.bytes.push(0);
            self.env.count += 1;
        }

        if let Ok(body) = request.consume()
            && let Ok(stream) = body.stream()
        {
            self.stdin = Some((stream, body));
        }
        self.stdout = Output::Head {
            buffer: Vec::new(),
            response_out,
        };
        true
    }

    /// The program ended with `code`: complete the response and let go of the request.
    pub fn finish(&mut self, code: u32) {
        self.stdout.finish(code);
        self.stdin = None;
    }
}

impl Env {
    fn push_arg(&mut self, arg: &[u8]) {
        self.bytes.extend_from_slice(arg);
        self.bytes.push(0);
        self.count += 1;
    }
}

/// One line on stderr, for what the adapter itself has to say.
pub fn log(parts: &[&[u8]]) {
    let mut line = Vec::from(&lit!(b"cgi adapter: ")[..]);
    for part in parts {
        line.extend_from_slice(part);
    }
    line.push(b'\n');
    write_stderr(&line);
}

/// Writes to the host's stderr, in the pieces a blocking write may take.
pub fn write_stderr(data: &[u8]) {
    for chunk in data.chunks(4096) {
        let _ = State::get().stderr.blocking_write_and_flush(chunk);
    }
}

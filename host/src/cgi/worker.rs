//! CGI workers: long-lived instances of a program that serves request after request over
//! FastCGI (the responder role, one request at a time) on its stdin and stdout, as php-cgi from
//! `guests/php` does when it finds `WASMBRIDGE_FASTCGI` in its environment.
//!
//! A request takes an idle worker, starts one while fewer than the configured number exist, or
//! waits for one. Its CGI meta-variables travel as FastCGI params and its body as stdin
//! records; the stdout records carry the same CGI response a fresh instance would write. A
//! worker that fails, overruns the deadline or may be out of step with its input is dropped;
//! a later request starts a new one.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::pipe::{PipeReader, PipeWriter, pipe};
use super::{Malformed, PIPE_SIZE};
use crate::app::App;
use crate::log::{GuestOutput, GuestStream};
use crate::{Body, Failure};

/// What a program finds in its environment when it is to serve FastCGI on stdin and stdout.
pub const WORKER_VARIABLE: &str = "WASMBRIDGE_FASTCGI";

/// A program's run as a future, polled by the request it serves at the time.
pub(crate) type GuestRun = Pin<Box<dyn Future<Output = Result<i32, Failure>> + Send>>;

// FastCGI 1.0: record types, the responder role, and the flag that keeps the connection.
const VERSION: u8 = 1;
const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const RESPONDER: u16 = 1;
const KEEP_CONN: u8 = 1;
/// One request at a time on a worker's connection, so always the same id.
const REQUEST_ID: u16 = 1;
const MAX_CONTENT: usize = u16::MAX as usize;

/// The workers of one app.
pub(crate) struct Workers {
    idle: Mutex<Vec<Worker>>,
    /// A permit per worker there may be.
    free: Arc<Semaphore>,
}

struct Worker {
    /// The host's ends of the program's stdin and stdout.
    input: PipeWriter,
    output: PipeReader,
    /// The program's end of its stdin, to see when it waits for the next request.
    stdin: PipeReader,
    run: GuestRun,
    /// Where records are read, kept from one request to the next.
    read_buf: Vec<u8>,
}

impl Workers {
    pub(crate) fn new(count: usize) -> Arc<Workers> {
        Arc::new(Workers {
            idle: Mutex::new(Vec::new()),
            free: Arc::new(Semaphore::new(count)),
        })
    }

    /// Hands a request to a worker, in a task of its own. The CGI response is written to
    /// `out`; the task ends with the app's status, or with the failure it has logged.
    pub(crate) async fn serve(
        self: &Arc<Self>,
        app: &App,
        id: u64,
        params: &[(String, String)],
        body: Body,
        out: DuplexStream,
    ) -> Result<JoinHandle<Result<i32, Failure>>, Failure> {
        let config = app.config();
        let Ok(permit) = self.free.clone().acquire_owned().await else {
            return Err(Failure::Overloaded("the app is shutting down".into()));
        };
        // The most recently used worker first: its memory is the warmest.
        let idle = self.idle.lock().unwrap().pop();
        let worker = match idle {
            Some(worker) => worker,
            None => Worker::start(app, id)?,
        };
        let request = Request {
            head: request_head(params),
            // Without a length the program cannot know where the body ends, and what it
            // leaves unread would be taken for the next request.
            has_length: params.iter().any(|(name, _)| name == "CONTENT_LENGTH"),
            body,
            out,
            stderr: GuestOutput::new(config.log.clone(), id, GuestStream::Stderr),
        };
        let (log, name, timeout) = (
            config.log.clone(),
            config.name.clone(),
            config.limits.timeout,
        );
        let workers = self.clone();
        Ok(tokio::spawn(async move {
            let _permit = permit;
            let exchange = exchange(workers, worker, request);
            let outcome = match timeout {
                Some(limit) => tokio::time::timeout(limit, exchange)
                    .await
                    .unwrap_or(Err(Failure::Deadline(limit))),
                None => exchange.await,
            };
            if let Err(failure) = &outcome {
                log.request_failed(id, &name, failure);
            }
            outcome
        }))
    }
}

impl Worker {
    fn start(app: &App, id: u64) -> Result<Worker, Failure> {
        let (input, stdin) = pipe(PIPE_SIZE);
        let (stdout, output) = pipe(PIPE_SIZE);
        let args = app.config().cgi.argv(app.program_name());
        let program_stdin = stdin.clone();
        let run = app.start_worker(id, move |wasi| {
            wasi.args(&args);
            wasi.env(WORKER_VARIABLE, "1");
            wasi.stdin(program_stdin);
            wasi.stdout(stdout);
        })?;
        Ok(Worker {
            input,
            output,
            stdin,
            run,
            read_buf: Vec::new(),
        })
    }

    /// Runs what the program does after its response (PHP frees the request's memory) until
    /// it reads its stdin again, so that it waits in the pool ready. False if it ended.
    async fn tidy_up(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            if self.stdin.is_waiting() {
                return Poll::Ready(true);
            }
            match self.run.as_mut().poll(cx) {
                Poll::Ready(_) => Poll::Ready(false),
                Poll::Pending if self.stdin.is_waiting() => Poll::Ready(true),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// One request as the worker gets it.
struct Request {
    head: Vec<u8>,
    has_length: bool,
    body: Body,
    out: DuplexStream,
    stderr: GuestOutput,
}

/// Runs the program while the request goes in and the response comes out; puts the worker
/// back when it is ready for the next request.
async fn exchange(
    workers: Arc<Workers>,
    mut worker: Worker,
    request: Request,
) -> Result<i32, Failure> {
    let Request {
        head,
        has_length,
        body,
        mut out,
        stderr,
    } = request;
    let mut sent = None;
    let mut ran = None;
    let ended = {
        let Worker {
            input,
            output,
            run,
            read_buf,
            ..
        } = &mut worker;
        let mut write = pin!(write_request(input, head, body));
        let mut read = pin!(read_response(output, read_buf, &mut out, &stderr));
        loop {
            tokio::select! {
                biased;
                ended = &mut read => break ended,
                result = &mut write, if sent.is_none() => sent = Some(result),
                result = run.as_mut(), if ran.is_none() => ran = Some(result),
            }
        }
    };
    // The response is complete.
    drop(out);
    match ended {
        Ok(Some(status)) => {
            let in_step = matches!(sent, Some(Ok(bytes)) if bytes == 0 || has_length);
            if in_step && ran.is_none() && worker.tidy_up().await {
                workers.idle.lock().unwrap().push(worker);
            }
            Ok(status)
        }
        // The output ended without the end of the request: the program ended, and says why.
        Ok(None) => match ran {
            Some(result) => result,
            None => worker.run.await,
        },
        Err(malformed) => Err(Failure::BadCgiOutput {
            malformed,
            exit: None,
        }),
    }
}

/// Writes the request: its head, then the body as stdin records, then the empty one that
/// ends it. Returns the body's length.
async fn write_request(input: &mut PipeWriter, head: Vec<u8>, body: Body) -> std::io::Result<u64> {
    input.write_all(&head).await?;
    let mut body = pin!(body);
    let mut length = 0;
    let mut buf = Vec::new();
    // A client that goes away mid-body ends the body there.
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            for chunk in data.chunks(MAX_CONTENT) {
                buf.clear();
                record(&mut buf, STDIN, chunk);
                input.write_all(&buf).await?;
                length += chunk.len() as u64;
            }
        }
    }
    buf.clear();
    record(&mut buf, STDIN, &[]);
    input.write_all(&buf).await?;
    Ok(length)
}

/// Reads records until the end of the request: stdout goes to `out`, stderr to the log.
/// `Ok(None)` when the output ends first.
async fn read_response(
    output: &mut PipeReader,
    content: &mut Vec<u8>,
    out: &mut DuplexStream,
    stderr: &GuestOutput,
) -> Result<Option<i32>, Malformed> {
    let mut header = [0u8; 8];
    let mut client_gone = false;
    loop {
        if output.read_exact(&mut header).await.is_err() {
            return Ok(None);
        }
        let [version, kind, _, _, length_high, length_low, padding, _] = header;
        if version != VERSION {
            return Err(Malformed::NotFastCgi);
        }
        let length = u16::from_be_bytes([length_high, length_low]) as usize;
        if content.len() < length + padding as usize {
            content.resize(length + padding as usize, 0);
        }
        let record = &mut content[..length + padding as usize];
        if output.read_exact(record).await.is_err() {
            return Ok(None);
        }
        let data = &record[..length];
        match kind {
            // A client that went away takes no more, but the program still finishes.
            STDOUT if !client_gone => client_gone = out.write_all(data).await.is_err(),
            STDERR => stderr.write(data),
            END_REQUEST if length >= 4 => {
                return Ok(Some(i32::from_be_bytes([
                    data[0], data[1], data[2], data[3],
                ])));
            }
            _ => {}
        }
    }
}

/// BEGIN_REQUEST (keeping the connection) and the params.
fn request_head(params: &[(String, String)]) -> Vec<u8> {
    let mut head = Vec::new();
    let [role_high, role_low] = RESPONDER.to_be_bytes();
    record(
        &mut head,
        BEGIN_REQUEST,
        &[role_high, role_low, KEEP_CONN, 0, 0, 0, 0, 0],
    );
    let mut pairs = Vec::new();
    for (name, value) in params {
        param_length(&mut pairs, name.len());
        param_length(&mut pairs, value.len());
        pairs.extend_from_slice(name.as_bytes());
        pairs.extend_from_slice(value.as_bytes());
    }
    for chunk in pairs.chunks(MAX_CONTENT) {
        record(&mut head, PARAMS, chunk);
    }
    record(&mut head, PARAMS, &[]);
    head
}

fn param_length(out: &mut Vec<u8>, length: usize) {
    match u8::try_from(length) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => out.extend_from_slice(&(length as u32 | 0x8000_0000).to_be_bytes()),
    }
}

fn record(out: &mut Vec<u8>, kind: u8, content: &[u8]) {
    let padding = content.len().next_multiple_of(8) - content.len();
    let [id_high, id_low] = REQUEST_ID.to_be_bytes();
    let [length_high, length_low] = (content.len() as u16).to_be_bytes();
    out.extend_from_slice(&[
        VERSION,
        kind,
        id_high,
        id_low,
        length_high,
        length_low,
        padding as u8,
        0,
    ]);
    out.extend_from_slice(content);
    out.resize(out.len() + padding, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_name_value_pairs_with_long_lengths_in_four_bytes() {
        let head = request_head(&[("A".into(), "x".repeat(200))]);
        // BEGIN_REQUEST: 8 header bytes and 8 of body, role 1, KEEP_CONN.
        assert_eq!(&head[..8], &[1, BEGIN_REQUEST, 0, 1, 0, 8, 0, 0]);
        assert_eq!(&head[8..16], &[0, 1, 1, 0, 0, 0, 0, 0]);
        // PARAMS: 1 + 4 + 1 + 200 = 206 bytes, padded to 208.
        assert_eq!(&head[16..24], &[1, PARAMS, 0, 1, 0, 206, 2, 0]);
        assert_eq!(&head[24..30], &[1, 0x80, 0, 0, 200, b'A']);
        // The empty PARAMS record ends them.
        assert_eq!(&head[head.len() - 8..], &[1, PARAMS, 0, 1, 0, 0, 0, 0]);
        assert_eq!(head.len(), 16 + 8 + 208 + 8);
    }
}

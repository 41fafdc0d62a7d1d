//! CGI workers: long-lived instances of a program that serves request after request over
//! FastCGI (the responder role, one request at a time) on the worker channel
//! (`wasmbridge:worker/channel`, see [`super::channel`]), as php-cgi from `guests/php` does when
//! it finds `WASMBRIDGE_FASTCGI` in its environment. Its stdin is empty and its stdout goes to
//! the log, so a script it runs cannot reach the channel.
//!
//! A request takes an idle worker, starts one while fewer than the configured number exist, or
//! waits for one. Its CGI meta-variables travel as FastCGI params and its body as stdin
//! records; the stdout records carry the same CGI response a fresh instance would write. A
//! worker that fails, overruns the deadline or may be out of step with its input is dropped;
//! a later request starts a new one.

use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Semaphore;

use super::channel::Channel;
use super::pipe::{PipeReader, PipeWriter, pipe};
use super::{Malformed, Output, PIPE_SIZE};
use crate::body::Spool;
use crate::guest::{End, Ending, GuestTask};
use crate::log::{GuestOutput, GuestStream};
use crate::run::{GuestRun, Runner};
use crate::{Body, Failure};

/// What a program finds in its environment when it is to serve FastCGI on stdin and stdout.
pub const WORKER_VARIABLE: &str = "WASMBRIDGE_FASTCGI";

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
    count: usize,
}

struct Worker {
    /// The host's ends of the program's channel (`wasmbridge:worker/channel`).
    input: PipeWriter,
    output: PipeReader,
    /// The program's end of the channel's input, to see when it waits for the next request.
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
            count,
        })
    }

    /// Workers serving a request, and workers waiting for one.
    pub(crate) fn busy_and_idle(&self) -> (usize, usize) {
        let busy = self.count - self.free.available_permits();
        (busy, self.idle.lock().unwrap().len())
    }

    /// Hands a request to a worker, in a task of its own, starting one of `program` with
    /// `runner` if need be. The request body is read whole first, so that a slow client never
    /// holds a worker; the response is kept for the client as fast as the worker writes it, for
    /// the same reason. Returns the task (it ends with the app's status, or with the failure it
    /// has logged) and the CGI response as it comes.
    pub(crate) async fn serve(
        self: &Arc<Self>,
        runner: &Runner,
        program: &str,
        id: u64,
        params: &[(String, String)],
        body: Body,
    ) -> Result<(GuestTask, Output), Failure> {
        let config = runner.config();
        let (input, length) = spool_body(body).await?;
        let wait = config.cgi.worker_wait;
        let permit = match tokio::time::timeout(wait, self.free.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(Failure::Overloaded("the app is shutting down".into())),
            Err(_) => {
                return Err(Failure::Overloaded(format!(
                    "every CGI worker was busy for {wait:?}"
                )));
            }
        };
        // The most recently used worker first: its memory is the warmest.
        let idle = self.idle.lock().unwrap().pop();
        let worker = match idle {
            Some(worker) => worker,
            None => Worker::start(runner, program, id)?,
        };
        // The body's length is known now, chunked or not: the program reads exactly that.
        let mut params = params.to_vec();
        if !params.iter().any(|(name, _)| name == "CONTENT_LENGTH") && length > 0 {
            params.push(("CONTENT_LENGTH".into(), length.to_string()));
        }
        let output = Spool::new();
        let request = Request {
            head: request_head(&params),
            body: input,
            out: output.clone(),
            stderr: GuestOutput::new(config.log.clone(), id, GuestStream::Stderr),
        };
        let (log, name, timeout) = (
            config.log.clone(),
            config.name.clone(),
            config.limits.timeout,
        );
        let ending = Arc::new(Ending::default());
        let workers = self.clone();
        let response = output.reader();
        let task = tokio::spawn({
            let (ending, log, name) = (ending.clone(), log.clone(), name.clone());
            async move {
                let _permit = permit;
                let exchange = exchange(workers, worker, request, &ending);
                let outcome = match timeout {
                    Some(limit) => tokio::time::timeout(limit, exchange)
                        .await
                        .unwrap_or(Err(Failure::Deadline(limit))),
                    None => exchange.await,
                };
                if let Err(failure) = &outcome {
                    ending.set(End::Failed { response_cut: true });
                    output.end(Err(failure.to_string()));
                    log.request_failed(id, &name, failure);
                }
                outcome
            }
        });
        Ok((
            GuestTask::new(task, ending, log, id, name),
            Box::pin(response) as Output,
        ))
    }
}

/// Reads a request body whole, into memory or, past a point, a temporary file. Returns it with
/// its length; a body that fails (too large, too slow, broken off) fails the request.
async fn spool_body(body: Body) -> Result<(Arc<Spool>, u64), Failure> {
    let spool = Spool::new();
    let mut length = 0;
    let mut body = pin!(body);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::BodyBroken(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            length += data.len() as u64;
            spool
                .push(&data)
                .await
                .map_err(|e| Failure::BodyBroken(format!("cannot keep the body: {e}")))?;
        }
    }
    spool.end(Ok(()));
    Ok((spool, length))
}

impl Worker {
    /// Starts `program` (its `argv[0]`) as a worker.
    fn start(runner: &Runner, program: &str, id: u64) -> Result<Worker, Failure> {
        let (input, from_host) = pipe(PIPE_SIZE);
        let (to_host, output) = pipe(PIPE_SIZE);
        let args = runner.config().cgi.argv(program);
        let channel = Channel {
            input: from_host.clone(),
            output: to_host,
        };
        let run = runner.start_worker(
            id,
            move |wasi| {
                wasi.args(&args);
                wasi.env(WORKER_VARIABLE, "1");
            },
            channel,
        )?;
        Ok(Worker {
            input,
            output,
            stdin: from_host,
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
    body: Arc<Spool>,
    out: Arc<Spool>,
    stderr: GuestOutput,
}

/// Runs the program while the request goes in and the response comes out; puts the worker
/// back when it is ready for the next request.
async fn exchange(
    workers: Arc<Workers>,
    mut worker: Worker,
    request: Request,
    ending: &Ending,
) -> Result<i32, Failure> {
    let Request {
        head,
        body,
        out,
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
        let mut read = pin!(read_response(output, read_buf, &out, &stderr));
        loop {
            tokio::select! {
                biased;
                ended = &mut read => break ended,
                result = &mut write, if sent.is_none() => sent = Some(result),
                result = run.as_mut(), if ran.is_none() => ran = Some(result),
            }
        }
    };
    match ended {
        Ok(Some(status)) => {
            // The response is complete: the client has it, whatever the worker does next.
            ending.set(End::Exited(status));
            out.end(Ok(()));
            // The program has read the whole body (it had its length) when it answered.
            let in_step = matches!(sent, Some(Ok(())));
            if in_step && ran.is_none() && worker.tidy_up().await {
                workers.idle.lock().unwrap().push(worker);
            }
            Ok(status)
        }
        // The output ended without the end of the request: the program ended, and says why.
        Ok(None) => match ran {
            Some(result) => result,
            None => worker.run.await,
        }
        .and_then(|status| {
            Err(Failure::BadCgiOutput {
                malformed: Malformed::NoHeaderBlock { bytes: 0 },
                exit: Some(status),
            })
        }),
        Err(failure) => Err(failure),
    }
}

/// Writes the request: its head, then the body as stdin records, then the empty one that
/// ends it.
async fn write_request(
    input: &mut PipeWriter,
    head: Vec<u8>,
    body: Arc<Spool>,
) -> std::io::Result<()> {
    input.write_all(&head).await?;
    let mut body = body.reader();
    let mut chunk = vec![0; MAX_CONTENT];
    let mut buf = Vec::new();
    loop {
        let n = body.read(&mut chunk).await?;
        buf.clear();
        record(&mut buf, STDIN, &chunk[..n]);
        input.write_all(&buf).await?;
        if n == 0 {
            return Ok(());
        }
    }
}

/// Reads records until the end of the request: stdout goes to `out`, stderr to the log.
/// `Ok(None)` when the output ends first.
async fn read_response(
    output: &mut PipeReader,
    content: &mut Vec<u8>,
    out: &Spool,
    stderr: &GuestOutput,
) -> Result<Option<i32>, Failure> {
    let mut header = [0u8; 8];
    loop {
        if output.read_exact(&mut header).await.is_err() {
            return Ok(None);
        }
        let [version, kind, _, _, length_high, length_low, padding, _] = header;
        if version != VERSION {
            return Err(Failure::NotFastCgi);
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
            // What cannot be kept for the client is dropped; the program still finishes.
            STDOUT if !data.is_empty() => {
                let _ = out.push(data).await;
            }
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

//! Request and response bodies as they cross the host: a request body held to its size limit
//! and read timeout, and a spool that lets a CGI worker finish with a request whatever the
//! client's speed.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::Notify;

use crate::{Body, Failure};

/// How much of a request body is taken, and how long the host waits for the next piece.
#[derive(Clone, Copy, Debug, Default)]
pub struct BodyLimits {
    /// Largest body, in bytes; a larger one is refused with 413.
    pub max_size: Option<u64>,
    /// Longest wait for the next piece of the body; 408 after it.
    pub read_timeout: Option<Duration>,
}

/// Why a request body could not be read, told to whoever answers for the request.
#[derive(Clone, Default)]
pub(crate) struct BodyWatch(Arc<Watch>);

#[derive(Default)]
struct Watch {
    failure: OnceLock<BodyFailure>,
    notify: Notify,
}

#[derive(Clone, Debug)]
enum BodyFailure {
    /// No data for this long (or for the front end's own timeout).
    Timeout(Option<Duration>),
    TooLarge(u64),
    /// The request's deadline passed while the front end waited for the body.
    Deadline,
    Broken(String),
}

impl BodyFailure {
    /// How a front end's body says why it failed (see [`body_error`]).
    fn from_error(error: &wasmtime_wasi_http::Error) -> BodyFailure {
        use wasmtime_wasi_http::Error;
        match error {
            Error::HttpRequestBodySize(limit) => BodyFailure::TooLarge(limit.unwrap_or(0)),
            Error::ConnectionReadTimeout => BodyFailure::Timeout(None),
            Error::ConnectionTimeout => BodyFailure::Deadline,
            other => BodyFailure::Broken(other.to_string()),
        }
    }
}

/// What a front end's request body yields when the front end cannot read it to its end:
/// `status` 413 (with the `limit` it was held to), 408, 504 (the request's deadline passed),
/// or anything else for a body that broke off.
pub fn body_error(status: u16, limit: u64) -> wasmtime_wasi_http::Error {
    use wasmtime_wasi_http::Error;
    match status {
        413 => Error::HttpRequestBodySize(Some(limit)),
        408 => Error::ConnectionReadTimeout,
        504 => Error::ConnectionTimeout,
        _ => Error::ConnectionTerminated,
    }
}

impl BodyWatch {
    fn fail(&self, failure: BodyFailure) {
        if self.0.failure.set(failure).is_ok() {
            self.0.notify.notify_waiters();
        }
    }

    /// The failure, once the body has failed.
    pub(crate) fn failure(&self) -> Option<Failure> {
        Some(match self.0.failure.get()? {
            BodyFailure::Timeout(limit) => Failure::BodyTimeout(*limit),
            BodyFailure::TooLarge(limit) => Failure::BodyTooLarge(*limit),
            BodyFailure::Deadline => Failure::Deadline(Duration::ZERO),
            BodyFailure::Broken(why) => Failure::BodyBroken(why.clone()),
        })
    }

    /// Resolves when the body fails; never, if it does not.
    pub(crate) async fn failed(&self) -> Failure {
        loop {
            let notified = self.0.notify.notified();
            if let Some(failure) = self.failure() {
                return failure;
            }
            notified.await;
        }
    }
}

/// A request body held to [`BodyLimits`]. When it fails, the [`BodyWatch`] says why: a body
/// that breaks off is never taken for a whole one.
pub(crate) struct RequestBody {
    inner: Body,
    limits: BodyLimits,
    received: u64,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    watch: BodyWatch,
}

impl RequestBody {
    pub(crate) fn new(inner: Body, limits: BodyLimits, watch: BodyWatch) -> RequestBody {
        RequestBody {
            inner,
            limits,
            received: 0,
            idle: None,
            watch,
        }
    }

    fn fail(&mut self, failure: BodyFailure) -> wasmtime_wasi_http::Error {
        let error = match &failure {
            BodyFailure::Timeout(_) => wasmtime_wasi_http::Error::ConnectionReadTimeout,
            BodyFailure::TooLarge(limit) => {
                wasmtime_wasi_http::Error::HttpRequestBodySize(Some(*limit))
            }
            BodyFailure::Deadline => wasmtime_wasi_http::Error::ConnectionTimeout,
            BodyFailure::Broken(_) => wasmtime_wasi_http::Error::ConnectionTerminated,
        };
        self.watch.fail(failure);
        error
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.watch.0.failure.get().is_some() {
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionTerminated)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle = None;
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if let Some(limit) = this.limits.max_size.filter(|l| this.received > *l) {
                        return Poll::Ready(Some(Err(this.fail(BodyFailure::TooLarge(limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.watch.fail(BodyFailure::from_error(&e));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let Some(timeout) = this.limits.read_timeout else {
                    return Poll::Pending;
                };
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match idle.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(this.fail(BodyFailure::Timeout(Some(timeout))))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Bytes in memory up to this much; beyond it a spool goes to a temporary file.
const SPOOL_MEMORY: usize = 1 << 20;
/// Bytes a spool keeps on disk before its writer waits for its reader.
const SPOOL_FILE: u64 = 1 << 30;
/// What a reader takes from the file at once.
const SPOOL_READ: usize = 64 * 1024;

/// Bytes from a writer that must not wait (a CGI worker, which other requests need) to a reader
/// that may be slow (a client): kept in memory, then in an unnamed temporary file, so that the
/// writer is done as soon as it has written. A reader sees the bytes in order, then the end,
/// or the error the writer ended with.
pub(crate) struct Spool {
    state: Mutex<SpoolState>,
}

#[derive(Default)]
struct SpoolState {
    memory: VecDeque<Bytes>,
    in_memory: usize,
    /// Bytes past memory: written up to `written`, read up to `read`. Memory holds only
    /// bytes older than the file's unread ones, so the order is kept.
    file: Option<File>,
    written: u64,
    read: u64,
    end: Option<Result<(), String>>,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Spool {
    pub(crate) fn new() -> Arc<Spool> {
        Arc::new(Spool {
            state: Mutex::new(SpoolState::default()),
        })
    }

    /// Adds bytes; waits only when a whole [`SPOOL_FILE`] is waiting for the reader.
    pub(crate) async fn push(&self, data: &[u8]) -> std::io::Result<()> {
        std::future::poll_fn(|cx| {
            let mut state = self.state.lock().unwrap();
            if state.written - state.read >= SPOOL_FILE {
                state.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(())
        })
        .await;
        let mut state = self.state.lock().unwrap();
        let state = &mut *state;
        if state.read == state.written && state.in_memory + data.len() <= SPOOL_MEMORY {
            state.memory.push_back(Bytes::copy_from_slice(data));
            state.in_memory += data.len();
        } else {
            if state.file.is_none() {
                state.file = Some(anonymous_file()?);
            }
            let file = state.file.as_ref().expect("just made");
            file.write_all_at(data, state.written)?;
            state.written += data.len() as u64;
        }
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
        Ok(())
    }

    /// Ends the bytes: with `Ok`, they are all there; with an error, they are cut short.
    pub(crate) fn end(&self, result: Result<(), String>) {
        let mut state = self.state.lock().unwrap();
        state.end.get_or_insert(result);
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
    }

    /// The next bytes, in order; `None` at a whole end.
    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<std::io::Result<Bytes>>> {
        let mut state = self.state.lock().unwrap();
        let state = &mut *state;
        if let Some(bytes) = state.memory.pop_front() {
            state.in_memory -= bytes.len();
            return Poll::Ready(Some(Ok(bytes)));
        }
        if state.read < state.written {
            let file = state.file.as_ref().expect("bytes were written to it");
            let len = SPOOL_READ.min((state.written - state.read) as usize);
            let mut buf = vec![0; len];
            if let Err(e) = file.read_exact_at(&mut buf, state.read) {
                return Poll::Ready(Some(Err(e)));
            }
            state.read += len as u64;
            if state.read == state.written {
                // All caught up: the file starts over.
                state.read = 0;
                state.written = 0;
                let _ = file.set_len(0);
            }
            if let Some(writer) = state.writer.take() {
                writer.wake();
            }
            return Poll::Ready(Some(Ok(buf.into())));
        }
        match &state.end {
            Some(Ok(())) => Poll::Ready(None),
            Some(Err(why)) => Poll::Ready(Some(Err(std::io::Error::other(why.clone())))),
            None => {
                state.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// The bytes as they come, for a reader that wants them as a stream.
    pub(crate) fn reader(self: &Arc<Self>) -> SpoolReader {
        SpoolReader {
            spool: self.clone(),
            pending: Bytes::new(),
        }
    }
}

/// Reads a [`Spool`] as an `AsyncRead`.
pub(crate) struct SpoolReader {
    spool: Arc<Spool>,
    pending: Bytes,
}

impl tokio::io::AsyncRead for SpoolReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pending.is_empty() {
            match self.spool.poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => self.pending = bytes,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

/// A temporary file that has no name, so nothing is left behind whatever happens.
fn anonymous_file() -> std::io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let dir = std::env::temp_dir();
    let flags = OFlags::RDWR | OFlags::CLOEXEC;
    match rustix::fs::open(&dir, flags | OFlags::TMPFILE, Mode::from_raw_mode(0o600)) {
        Ok(fd) => Ok(File::from(fd)),
        // Where O_TMPFILE is not supported: a new file, unlinked at once.
        Err(_) => {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let path = dir.join(format!(
                ".wasmbridge-spool-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            let fd = rustix::fs::open(
                &path,
                flags | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o600),
            )?;
            std::fs::remove_file(&path)?;
            Ok(File::from(fd))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[tokio::test]
    async fn a_spool_keeps_the_order_through_memory_and_file() {
        let spool = Spool::new();
        let mut expected = Vec::new();
        // More than fits in memory, in pieces of odd sizes.
        for i in 0..300u32 {
            let piece: Vec<u8> = (0..(i * 37 % 9000 + 1)).map(|j| (i + j) as u8).collect();
            spool.push(&piece).await.unwrap();
            expected.extend_from_slice(&piece);
            if i == 150 {
                expected.extend_from_slice(b"!");
                spool.push(b"!").await.unwrap();
            }
        }
        for _ in 0..200 {
            spool.push(&[7; 10_000]).await.unwrap();
            expected.extend_from_slice(&[7; 10_000]);
        }
        spool.end(Ok(()));
        let mut got = Vec::new();
        spool.reader().read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected);
    }

    #[tokio::test]
    async fn a_spool_cut_short_is_an_error_for_its_reader() {
        let spool = Spool::new();
        spool.push(b"partial").await.unwrap();
        spool.end(Err("the worker failed".into()));
        let mut got = Vec::new();
        assert!(spool.reader().read_to_end(&mut got).await.is_err());
        assert_eq!(got, b"partial");
    }
}

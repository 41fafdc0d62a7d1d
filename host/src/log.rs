//! Where guest output and request failures go.
//!
//! Guest stdout and stderr are split into lines, so that lines of concurrent requests never
//! interleave, and each line is tagged with its request id. A front end picks the sink: the
//! command line writes to stderr, the Apache module to Apache's error log.

use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::Failure;

/// Which guest stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestStream {
    Stdout,
    Stderr,
}

impl GuestStream {
    pub fn name(self) -> &'static str {
        match self {
            GuestStream::Stdout => "stdout",
            GuestStream::Stderr => "stderr",
        }
    }
}

/// A destination for the host's log lines.
pub trait Log: Send + Sync + 'static {
    /// One line a guest wrote, without its line ending.
    fn guest_output(&self, request: u64, stream: GuestStream, line: &[u8]);
    /// A request that failed; called once per failed request.
    fn request_failed(&self, request: u64, app: &str, failure: &Failure);
}

/// Writes to the process's stderr, one `write` per line.
pub struct StderrLog {
    /// Prefix guest lines with `stdout [ID] :: ` as `wasmtime serve` does.
    pub guest_prefix: bool,
}

impl Log for StderrLog {
    fn guest_output(&self, request: u64, stream: GuestStream, line: &[u8]) {
        let mut buf = Vec::with_capacity(line.len() + 24);
        if self.guest_prefix {
            let _ = write!(buf, "{} [{request}] :: ", stream.name());
        }
        buf.extend_from_slice(line);
        buf.push(b'\n');
        let _ = std::io::stderr().lock().write_all(&buf);
    }

    fn request_failed(&self, request: u64, app: &str, failure: &Failure) {
        eprintln!("{}", failure_line(request, app, failure));
    }
}

/// The one line that reports a failed request.
pub fn failure_line(request: u64, app: &str, failure: &Failure) -> String {
    format!(
        "error [{request}] :: app `{app}`: {} ({})",
        failure,
        failure.status().as_u16()
    )
}

/// Longest partial line kept before it is written out anyway.
const MAX_LINE: usize = 16 * 1024;

/// A guest's stdout or stderr: bytes in, whole lines out to a [`Log`].
#[derive(Clone)]
pub(crate) struct GuestOutput(Arc<LineBuffer>);

struct LineBuffer {
    log: Arc<dyn Log>,
    /// The request the lines are tagged with: an instance that serves many requests is
    /// retagged with each one it starts.
    request: Arc<AtomicU64>,
    stream: GuestStream,
    pending: Mutex<Vec<u8>>,
}

impl GuestOutput {
    pub(crate) fn new(log: Arc<dyn Log>, request: u64, stream: GuestStream) -> Self {
        Self::tagged(log, Arc::new(AtomicU64::new(request)), stream)
    }

    pub(crate) fn tagged(log: Arc<dyn Log>, request: Arc<AtomicU64>, stream: GuestStream) -> Self {
        GuestOutput(Arc::new(LineBuffer {
            log,
            request,
            stream,
            pending: Mutex::new(Vec::new()),
        }))
    }

    pub(crate) fn write(&self, mut bytes: &[u8]) {
        let buf = &self.0;
        let mut pending = buf.pending.lock().unwrap();
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            pending.extend_from_slice(&bytes[..end]);
            buf.emit(&mut pending);
            bytes = &bytes[end + 1..];
        }
        pending.extend_from_slice(bytes);
        if pending.len() >= MAX_LINE {
            buf.emit(&mut pending);
        }
    }
}

impl LineBuffer {
    fn emit(&self, line: &mut Vec<u8>) {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let request = self.request.load(Ordering::Relaxed);
        self.log.guest_output(request, self.stream, line);
        line.clear();
    }
}

impl Drop for LineBuffer {
    // A last line without a newline still reaches the log when the request ends.
    fn drop(&mut self) {
        let mut pending = std::mem::take(self.pending.get_mut().unwrap());
        if !pending.is_empty() {
            self.emit(&mut pending);
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        GuestOutput::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        GuestOutput::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);

    impl Log for Collect {
        fn guest_output(&self, request: u64, stream: GuestStream, line: &[u8]) {
            let line = String::from_utf8_lossy(line);
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {request} {line}", stream.name()));
        }
        fn request_failed(&self, _: u64, _: &str, _: &Failure) {}
    }

    #[test]
    fn output_is_split_into_whole_lines() {
        let log = Arc::new(Collect::default());
        let out = GuestOutput::new(log.clone(), 7, GuestStream::Stderr);
        out.write(b"one\ntw");
        out.write(b"o\r\nthree");
        assert_eq!(*log.0.lock().unwrap(), ["stderr 7 one", "stderr 7 two"]);
        drop(out);
        assert_eq!(log.0.lock().unwrap().last().unwrap(), "stderr 7 three");
    }

    #[test]
    fn an_endless_line_is_written_in_pieces() {
        let log = Arc::new(Collect::default());
        let out = GuestOutput::new(log.clone(), 1, GuestStream::Stdout);
        out.write(&vec![b'x'; MAX_LINE + 10]);
        assert_eq!(log.0.lock().unwrap().len(), 1);
    }
}

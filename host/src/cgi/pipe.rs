//! A bounded in-memory pipe for a CGI worker's stdin and stdout. Unlike wasmtime-wasi's async
//! pipes it spawns no task: a worker outlives the request that started it and may serve the
//! next one from another runtime (each Apache thread has its own), so everything it needs must
//! run when, and where, it is polled.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

/// A pipe holding up to `capacity` bytes.
pub(crate) fn pipe(capacity: usize) -> (PipeWriter, PipeReader) {
    let state = Arc::new(Mutex::new(State {
        data: BytesMut::new(),
        capacity,
        reader_gone: false,
        writer_gone: false,
        reader_waiting: false,
        wake_reader: None,
        wake_writer: None,
    }));
    let end = |side| {
        Arc::new(End {
            state: state.clone(),
            side,
        })
    };
    (PipeWriter(end(Side::Writer)), PipeReader(end(Side::Reader)))
}

/// Wakes whoever waits on the other side, after the lock is released.
fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

struct State {
    data: BytesMut,
    capacity: usize,
    reader_gone: bool,
    writer_gone: bool,
    /// The reader found the pipe empty and waits for data.
    reader_waiting: bool,
    wake_reader: Option<Waker>,
    wake_writer: Option<Waker>,
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Reader,
    Writer,
}

/// One end, shared by its clones (a guest opens stdin and stdout more than once); dropping the
/// last clone closes that side.
struct End {
    state: Arc<Mutex<State>>,
    side: Side,
}

impl Drop for End {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap();
        let waker = match self.side {
            Side::Reader => {
                state.reader_gone = true;
                state.wake_writer.take()
            }
            Side::Writer => {
                state.writer_gone = true;
                state.wake_reader.take()
            }
        };
        drop(state);
        wake(waker);
    }
}

/// The reading end: the host's for a worker's stdout, the guest's stdin.
#[derive(Clone)]
pub(crate) struct PipeReader(Arc<End>);

impl PipeReader {
    /// Takes up to `max` bytes: `Some(empty)` when none are there yet, `None` at the end.
    fn take(&self, max: usize) -> Option<Bytes> {
        let mut state = self.0.state.lock().unwrap();
        if state.data.is_empty() {
            return (!state.writer_gone).then(Bytes::new);
        }
        let n = max.min(state.data.len());
        let bytes = state.data.split_to(n).freeze();
        // A reader that takes data is at work, whatever it polled before: it waits again only
        // when it next finds the pipe empty. (A stale flag would hand a worker that is
        // exiting the next request.)
        state.reader_waiting = false;
        let waker = state.wake_writer.take();
        drop(state);
        wake(waker);
        Some(bytes)
    }

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.0.state.lock().unwrap();
        if !state.data.is_empty() || state.writer_gone {
            state.reader_waiting = false;
            return Poll::Ready(());
        }
        state.reader_waiting = true;
        state.wake_reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Whether the reader is waiting on an empty pipe.
    pub(crate) fn is_waiting(&self) -> bool {
        let state = self.0.state.lock().unwrap();
        state.reader_waiting && state.data.is_empty()
    }
}

impl AsyncRead for PipeReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            match self.take(buf.remaining()) {
                None => return Poll::Ready(Ok(())),
                Some(bytes) if bytes.is_empty() => {
                    std::task::ready!(self.poll_readable(cx));
                }
                Some(bytes) => {
                    buf.put_slice(&bytes);
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl InputStream for PipeReader {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        self.take(size).ok_or(StreamError::Closed)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for PipeReader {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.poll_readable(cx)).await
    }
}

impl IsTerminal for PipeReader {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for PipeReader {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

/// The writing end: the host's for a worker's stdin, the guest's stdout.
#[derive(Clone)]
pub(crate) struct PipeWriter(Arc<End>);

impl PipeWriter {
    /// Room for more: `Err` when the reader is gone.
    fn room(&self) -> Result<usize, ()> {
        let state = self.0.state.lock().unwrap();
        if state.reader_gone {
            return Err(());
        }
        Ok(state.capacity.saturating_sub(state.data.len()))
    }

    fn put(&self, bytes: &[u8]) {
        let mut state = self.0.state.lock().unwrap();
        state.data.extend_from_slice(bytes);
        let waker = state.wake_reader.take();
        drop(state);
        wake(waker);
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.0.state.lock().unwrap();
        if state.reader_gone || state.data.len() < state.capacity {
            return Poll::Ready(());
        }
        state.wake_writer = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for PipeWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            match self.room() {
                Err(()) => return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
                Ok(0) => std::task::ready!(self.poll_writable(cx)),
                Ok(room) => {
                    let n = room.min(buf.len());
                    self.put(&buf[..n]);
                    return Poll::Ready(Ok(n));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl OutputStream for PipeWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.room().map_err(|()| StreamError::Closed)?;
        self.put(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.room().map_err(|()| StreamError::Closed)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for PipeWriter {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.poll_writable(cx)).await
    }
}

impl IsTerminal for PipeWriter {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PipeWriter {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn bytes_pass_in_order_and_the_writer_waits_for_room() {
        let (mut writer, mut reader) = pipe(4);
        let sent = tokio::spawn(async move {
            writer.write_all(b"0123456789").await.unwrap();
        });
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        sent.await.unwrap();
        assert_eq!(got, b"0123456789");
    }

    #[tokio::test]
    async fn a_writer_learns_that_the_reader_is_gone() {
        let (mut writer, reader) = pipe(4);
        drop(reader);
        assert!(writer.write_all(b"x").await.is_err());
    }
}

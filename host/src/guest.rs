//! A guest's run for one request, as the request sees it: a task that ends with an outcome,
//! stopped when the client goes away, and a response body that tells the client the truth
//! about how it ended.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::body::BodyWatch;
use crate::log::Log;
use crate::{Body, Failure};

/// How a guest's run ended, as far as the response is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// It ran to its end with this exit status (0 for a handler that returned).
    Exited(i32),
    /// It failed (trap, limit, deadline: logged by the task); `response_cut` when its response
    /// was unfinished then, and the client must not take it for a whole one.
    Failed { response_cut: bool },
}

/// Set by a guest's task when its run ends, before its store (and with it whatever the guest
/// was still writing) is dropped; read by the response body when the bytes stop.
#[derive(Default)]
pub(crate) struct Ending {
    end: Mutex<Option<End>>,
    /// Why the run failed, for the requests of an instance that serves many: each logs it
    /// for itself.
    failure: Mutex<Option<Failure>>,
    notify: Notify,
}

impl Ending {
    pub(crate) fn set(&self, end: End) {
        self.end.lock().unwrap().get_or_insert(end);
        self.notify.notify_waiters();
    }

    /// Ends a run that served many requests, with the failure that cut them, if it failed.
    pub(crate) fn set_shared(&self, failure: Option<Failure>) {
        let end = match &failure {
            Some(_) => End::Failed { response_cut: true },
            None => End::Exited(0),
        };
        *self.failure.lock().unwrap() = failure;
        self.set(end);
    }

    pub(crate) fn failure(&self) -> Option<Failure> {
        self.failure.lock().unwrap().clone()
    }

    pub(crate) fn get(&self) -> Option<End> {
        *self.end.lock().unwrap()
    }

    pub(crate) async fn wait(&self) -> End {
        loop {
            let notified = self.notify.notified();
            if let Some(end) = self.get() {
                return end;
            }
            notified.await;
        }
    }
}

/// A guest running in a task of its own for one request. Dropped before [`GuestTask::detach`],
/// it stops the guest: the request it was serving is gone.
///
/// Or one request's share of an instance that serves many ([`GuestTask::shared`]): nothing
/// to stop, and the instance's failure is for the request to log.
pub(crate) struct GuestTask {
    handle: Option<JoinHandle<Result<i32, Failure>>>,
    pub(crate) ending: Arc<Ending>,
    /// Whose guest it is, for the line that says it was stopped.
    pub(crate) log: Arc<dyn Log>,
    pub(crate) id: u64,
    pub(crate) app: String,
    /// What the request holds while its response is unfinished (its slot, its place on the
    /// instance); set for a request on a shared instance.
    shared: Option<Box<dyn Send + Sync>>,
}

impl GuestTask {
    pub(crate) fn new(
        handle: JoinHandle<Result<i32, Failure>>,
        ending: Arc<Ending>,
        log: Arc<dyn Log>,
        id: u64,
        app: String,
    ) -> GuestTask {
        GuestTask {
            handle: Some(handle),
            ending,
            log,
            id,
            app,
            shared: None,
        }
    }

    /// A request's share of an instance that serves many, ending with `ending`; `hold` is
    /// dropped when the request is done.
    pub(crate) fn shared(
        ending: Arc<Ending>,
        log: Arc<dyn Log>,
        id: u64,
        app: String,
        hold: Box<dyn Send + Sync>,
    ) -> GuestTask {
        GuestTask {
            handle: None,
            ending,
            log,
            id,
            app,
            shared: Some(hold),
        }
    }

    /// Waits for the task's outcome (its failure is logged by the task). Dropped while it
    /// waits, it stops the guest like the task itself.
    pub(crate) async fn join(mut self) -> Result<i32, Failure> {
        let handle = self.handle.as_mut().expect("joined once");
        let outcome = handle
            .await
            .unwrap_or_else(|e| Err(Failure::Trap(format!("host task failed: {e}"))));
        self.handle = None;
        outcome
    }

    /// Lets the guest finish on its own: its response is complete.
    pub(crate) fn detach(mut self) {
        self.handle = None;
    }

    /// Stops the guest for a reason that is logged already.
    pub(crate) fn stop(self) {
        drop(self);
    }
}

impl Drop for GuestTask {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
            self.ending.set(End::Failed { response_cut: true });
        }
    }
}

/// Logs that the client went away, unless disarmed first: held while a request is served.
pub(crate) struct ClientWatch<'a> {
    log: &'a dyn Log,
    id: u64,
    app: &'a str,
}

impl<'a> ClientWatch<'a> {
    pub(crate) fn new(log: &'a dyn Log, id: u64, app: &'a str) -> Self {
        ClientWatch { log, id, app }
    }

    pub(crate) fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for ClientWatch<'_> {
    fn drop(&mut self) {
        self.log
            .request_failed(self.id, self.app, &Failure::ClientGone);
    }
}

/// A response body tied to the guest that writes it. When the bytes stop it asks how the guest
/// ended ([`Ending`]): a run that failed mid-response makes the body end with an error, which the
/// front end turns into a reset stream or a connection closed without its last chunk, never a
/// clean end. So does a request body that broke off. Dropped before its end (the client went
/// away), it stops the guest.
pub(crate) struct GuardedBody {
    inner: Body,
    guest: Option<GuestTask>,
    request_body: BodyWatch,
    /// Wait for the guest's end before ending the body (CGI: its output ends when it exits);
    /// otherwise take it as it is (wasi:http: the handler may go on after `finish`).
    wait_for_end: bool,
    ending: Option<Pin<Box<dyn Future<Output = End> + Send>>>,
    /// Exit statuses other than 0 are logged, once the body has ended.
    log_exit: bool,
    /// When the request's deadline passes, for a guest whose run does not end with the
    /// request (a shared instance): the body is cut there.
    deadline: Option<(std::time::Duration, tokio::time::Instant)>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl GuardedBody {
    pub(crate) fn new(
        inner: Body,
        guest: GuestTask,
        request_body: BodyWatch,
        wait_for_end: bool,
    ) -> GuardedBody {
        GuardedBody {
            inner,
            guest: Some(guest),
            request_body,
            wait_for_end,
            ending: None,
            log_exit: wait_for_end,
            deadline: None,
            timer: None,
        }
    }

    /// Cuts the body when `limit` has passed since `start`.
    pub(crate) fn with_deadline(
        mut self,
        limit: Option<std::time::Duration>,
        start: tokio::time::Instant,
    ) -> GuardedBody {
        self.deadline = limit.map(|limit| (limit, start + limit));
        self
    }

    pub(crate) fn boxed(self) -> Body {
        http_body_util::BodyExt::boxed_unsync(self)
    }

    /// The request's deadline passed with the body unfinished: it ends with an error.
    fn cut_at_deadline(
        &mut self,
        limit: std::time::Duration,
    ) -> Poll<Option<Result<Frame<Bytes>, wasmtime_wasi_http::Error>>> {
        let guest = self.guest.take().expect("not finished yet");
        guest
            .log
            .request_failed(guest.id, &guest.app, &Failure::Deadline(limit));
        guest.stop();
        Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpResponseIncomplete)))
    }

    /// The body ends here: cleanly, or with an error if the guest failed with it unfinished.
    fn finish(
        &mut self,
        end: Option<End>,
    ) -> Poll<Option<Result<Frame<Bytes>, wasmtime_wasi_http::Error>>> {
        let guest = self.guest.take().expect("finished once");
        match end {
            Some(End::Failed { response_cut: true }) => {
                // A task logs its own failure; a shared instance's is for each request it cut.
                if guest.shared.is_some()
                    && let Some(failure) = guest.ending.failure()
                {
                    guest.log.request_failed(guest.id, &guest.app, &failure);
                }
                guest.stop();
                Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpResponseIncomplete)))
            }
            Some(End::Exited(code)) if self.log_exit && code != 0 => {
                guest
                    .log
                    .request_failed(guest.id, &guest.app, &Failure::ExitAfterResponse(code));
                guest.detach();
                Poll::Ready(None)
            }
            _ => {
                guest.detach();
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for GuardedBody {
    fn drop(&mut self) {
        // Dropped before its end: nobody reads the rest.
        if let Some(guest) = self.guest.take() {
            guest
                .log
                .request_failed(guest.id, &guest.app, &Failure::ClientGone);
        }
    }
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.guest.is_none() {
            return Poll::Ready(None);
        }
        if let Some(failure) = this.request_body.failure() {
            // The request did not arrive whole: what the guest made of it is no answer.
            let guest = this.guest.take().expect("checked");
            guest.log.request_failed(guest.id, &guest.app, &failure);
            guest.stop();
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpResponseIncomplete)));
        }
        if let Some(ending) = &mut this.ending {
            return match ending.as_mut().poll(cx) {
                Poll::Ready(end) => this.finish(Some(end)),
                Poll::Pending => Poll::Pending,
            };
        }
        // Checked first, for a body that always has data ready.
        if let Some((limit, at)) = this.deadline
            && tokio::time::Instant::now() >= at
        {
            return this.cut_at_deadline(limit);
        }
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        if poll.is_pending()
            && let Some((limit, at)) = this.deadline
        {
            // Made here, on the runtime that polls the body, to wake one that waits.
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if timer.as_mut().poll(cx).is_ready() {
                return this.cut_at_deadline(limit);
            }
        }
        match poll {
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {
                // The last frame: the response is complete, whether or not it is polled again.
                if let Some(guest) = this.guest.take() {
                    guest.detach();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                // The guest broke its own body off (an aborted wasi:http body).
                if let Some(guest) = this.guest.take() {
                    guest.detach();
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                let ending = this.guest.as_ref().expect("checked").ending.clone();
                if !this.wait_for_end {
                    // A handler may go on after its body is finished: only a run that has
                    // failed with the body unfinished cut it.
                    return this.finish(ending.get());
                }
                let mut ending: Pin<Box<dyn Future<Output = End> + Send>> =
                    Box::pin(async move { ending.wait().await });
                match ending.as_mut().poll(cx) {
                    Poll::Ready(end) => this.finish(Some(end)),
                    Poll::Pending => {
                        this.ending = Some(ending);
                        Poll::Pending
                    }
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.guest.is_none()
    }
}

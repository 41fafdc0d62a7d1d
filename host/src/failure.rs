//! Why a request failed, and the response the client gets for it.
//!
//! | cause                                              | status |
//! |----------------------------------------------------|--------|
//! | the guest trapped (panic, `unreachable`, bad access)| 500    |
//! | the guest could not be instantiated                 | 500    |
//! | the request cannot be given to the guest (no authority, ...) | 400 |
//! | the guest returned without a response, or with an `error-code` | 502 |
//! | a CGI program wrote no valid CGI header block (exited early, malformed) | 502 |
//! | a CGI program's local redirects went in circles     | 500    |
//! | a memory, table or resource-table limit was hit    | 503    |
//! | the fuel budget ran out (`-W fuel`)                | 503    |
//! | the server is at its instance limit                | 503    |
//! | the deadline passed (`-W timeout`)                 | 504    |
//! | the request body came too slowly                   | 408    |
//! | the request body is larger than allowed            | 413    |
//! | the request's CGI variables are larger than a program takes | 431 |
//! | the request body broke off (the client went away, bad framing) | 400 |

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt as _, Full};
use wasmtime::Trap;
use wasmtime::component::ResourceTableError;

use crate::Body;
use crate::limits::LimitHit;

#[derive(Clone, Debug)]
pub enum Failure {
    /// The guest trapped.
    Trap(String),
    /// Instantiation failed: a missing import at run time, a start function that trapped.
    Instantiate(String),
    /// `handle` returned without setting the response.
    NoResponse,
    /// The guest answered with an `error-code` (named as the WIT variant's Rust case) instead
    /// of a response.
    GuestError(String),
    /// The request could not be handed to the guest.
    BadRequest(String),
    /// A CGI program's output was not a CGI response; `exit` is its exit status if it ended.
    BadCgiOutput {
        malformed: crate::cgi::Malformed,
        exit: Option<i32>,
    },
    /// A CGI worker wrote something other than FastCGI records.
    NotFastCgi,
    /// A CGI program exited with a non-zero status after its response had started (logged;
    /// the client already has the status).
    ExitAfterResponse(i32),
    /// A CGI program's local redirects did not end.
    RedirectLoop(String),
    /// A linear memory or table tried to grow past its cap.
    Limit(LimitHit),
    /// The guest used more resource-table entries than allowed.
    ResourceTableFull,
    /// The fuel budget ran out.
    OutOfFuel,
    /// Every instance slot is in use.
    Overloaded(String),
    /// The request's deadline passed.
    Deadline(Duration),
    /// No byte of the request body came for this long (or for the front end's own timeout).
    BodyTimeout(Option<Duration>),
    /// The request body is larger than this many bytes.
    BodyTooLarge(u64),
    /// The request body could not be read to its end.
    BodyBroken(String),
    /// The request's CGI variables take this many bytes, more than the program can take.
    HeadersTooLarge(usize),
    /// The client went away before the response was complete; the guest was stopped.
    ClientGone,
}

impl Failure {
    /// The cause in one word, as metrics count it.
    pub fn cause(&self) -> &'static str {
        match self {
            Failure::Trap(_) => "trap",
            Failure::Deadline(_) => "deadline",
            Failure::Limit(_) | Failure::ResourceTableFull => "memory",
            Failure::OutOfFuel => "fuel",
            Failure::Overloaded(_) => "overloaded",
            Failure::Instantiate(_) => "instantiate",
            Failure::NoResponse | Failure::GuestError(_) => "guest_error",
            Failure::BadCgiOutput { .. } | Failure::NotFastCgi | Failure::RedirectLoop(_) => {
                "bad_cgi_output"
            }
            Failure::BodyTimeout(_)
            | Failure::BodyTooLarge(_)
            | Failure::BodyBroken(_)
            | Failure::HeadersTooLarge(_)
            | Failure::BadRequest(_) => "request_body",
            Failure::ClientGone => "client_gone",
            Failure::ExitAfterResponse(_) => "exit_status",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Failure::Trap(_)
            | Failure::Instantiate(_)
            | Failure::ExitAfterResponse(_)
            | Failure::RedirectLoop(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Failure::BadRequest(_) => StatusCode::BAD_REQUEST,
            Failure::NoResponse
            | Failure::GuestError(_)
            | Failure::BadCgiOutput { .. }
            | Failure::NotFastCgi => StatusCode::BAD_GATEWAY,
            Failure::Limit(_)
            | Failure::ResourceTableFull
            | Failure::OutOfFuel
            | Failure::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Deadline(_) => StatusCode::GATEWAY_TIMEOUT,
            Failure::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Failure::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::BodyBroken(_) => StatusCode::BAD_REQUEST,
            Failure::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            // Nobody reads it; what the access log of a proxy would say (nginx's 499).
            Failure::ClientGone => StatusCode::from_u16(499).expect("a valid status"),
        }
    }

    /// Classifies an error from instantiating or calling a guest. `hit` is the limit the
    /// store's limiter saw, if any: a guest that aborts after a failed allocation traps with
    /// `unreachable`, and the limiter is what tells that apart from a plain bug.
    pub(crate) fn from_error(
        error: &wasmtime::Error,
        hit: Option<LimitHit>,
        instantiating: bool,
    ) -> Failure {
        if let Some(trap) = error.downcast_ref::<Trap>() {
            match trap {
                Trap::OutOfFuel => return Failure::OutOfFuel,
                Trap::Interrupt => return Failure::Deadline(Duration::ZERO),
                _ => {}
            }
        }
        if let Some(hit) = hit {
            return Failure::Limit(hit);
        }
        if error
            .chain()
            .any(|cause| cause.downcast_ref::<ResourceTableError>().is_some())
        {
            return Failure::ResourceTableFull;
        }
        if error.chain().any(|cause| {
            cause
                .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some()
        }) {
            return Failure::Overloaded(one_line(error));
        }
        let mut message = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => one_line(error),
        };
        // Where in the guest: the innermost function with a name.
        if let Some(trace) = error.downcast_ref::<wasmtime::WasmBacktrace>()
            && let Some(name) = trace.frames().iter().find_map(|frame| frame.func_name())
        {
            message = format!("{message} in `{:#}`", rustc_demangle::demangle(name));
        }
        if instantiating {
            Failure::Instantiate(message)
        } else {
            Failure::Trap(message)
        }
    }

    /// A small HTML page for the client. It names the kind of failure, never guest details.
    pub fn page(&self) -> String {
        let status = self.status();
        let reason = status.canonical_reason().unwrap_or("Error");
        format!(
            "<!doctype html>\n<html><head><title>{code} {reason}</title></head>\n<body><h1>{code} {reason}</h1><p>{summary}</p><hr>wasmbridge</body></html>\n",
            code = status.as_u16(),
            summary = self.summary(),
        )
    }

    fn summary(&self) -> &'static str {
        match self {
            Failure::Trap(_)
            | Failure::Instantiate(_)
            | Failure::ExitAfterResponse(_)
            | Failure::RedirectLoop(_) => "The application failed while handling this request.",
            Failure::BadRequest(_) => "The request cannot be handled.",
            Failure::NoResponse
            | Failure::GuestError(_)
            | Failure::BadCgiOutput { .. }
            | Failure::NotFastCgi => "The application did not produce a valid response.",
            Failure::Limit(_) | Failure::ResourceTableFull | Failure::OutOfFuel => {
                "The application exceeded a resource limit."
            }
            Failure::Overloaded(_) => "The server is busy. Try again later.",
            Failure::Deadline(_) => "The application did not finish in time.",
            Failure::BodyTimeout(_) => "The request body did not arrive in time.",
            Failure::BodyTooLarge(_) => "The request body is too large.",
            Failure::BodyBroken(_) => "The request body could not be read.",
            Failure::HeadersTooLarge(_) => "The request's headers are too large.",
            Failure::ClientGone => "The client went away.",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Trap(m) => write!(f, "guest trapped: {m}"),
            Failure::Instantiate(m) => write!(f, "instantiation failed: {m}"),
            Failure::NoResponse => write!(f, "guest returned without setting a response"),
            Failure::GuestError(code) => write!(f, "guest answered with error code {code}"),
            Failure::BadRequest(m) => write!(f, "bad request: {m}"),
            Failure::BadCgiOutput {
                malformed,
                exit: None,
            } => write!(f, "bad CGI response: {malformed}"),
            Failure::BadCgiOutput {
                malformed,
                exit: Some(code),
            } => {
                write!(
                    f,
                    "bad CGI response: {malformed}; the program exited with status {code}"
                )
            }
            Failure::NotFastCgi => write!(
                f,
                "the worker wrote something other than FastCGI records to {}",
                crate::cgi::WORKER_CHANNEL
            ),
            Failure::ExitAfterResponse(code) => {
                write!(
                    f,
                    "the program exited with status {code} after its response had started"
                )
            }
            Failure::RedirectLoop(location) => {
                write!(f, "too many local redirects; the last was to {location:?}")
            }
            Failure::Limit(LimitHit::Memory { requested, limit }) => write!(
                f,
                "memory limit exceeded: the guest asked for {requested} bytes of linear memory, the limit is {limit}"
            ),
            Failure::Limit(LimitHit::TableElements { requested, limit }) => write!(
                f,
                "table limit exceeded: the guest asked for {requested} table elements, the limit is {limit}"
            ),
            Failure::ResourceTableFull => {
                write!(f, "resource limit exceeded: the resource table is full")
            }
            Failure::OutOfFuel => write!(f, "fuel exhausted: the request used all of its fuel"),
            Failure::Overloaded(m) => write!(f, "no instance slot free: {m}"),
            Failure::Deadline(t) if t.is_zero() => write!(f, "deadline exceeded"),
            Failure::Deadline(t) => write!(f, "deadline exceeded: still running after {t:?}"),
            Failure::BodyTimeout(Some(t)) => {
                write!(f, "request body timed out: no data for {t:?}")
            }
            Failure::BodyTimeout(None) => write!(f, "request body timed out"),
            Failure::BodyTooLarge(limit) => {
                write!(f, "request body too large: the limit is {limit} bytes")
            }
            Failure::BodyBroken(m) => write!(f, "request body broke off: {m}"),
            Failure::HeadersTooLarge(size) => write!(
                f,
                "request headers too large: the CGI variables take {size} bytes, more than a CGI program can take ({} at most)",
                crate::cgi::MAX_ENVIRONMENT
            ),
            Failure::ClientGone => write!(f, "the client went away; the guest was stopped"),
        }
    }
}

/// The response a client gets for a failed request.
pub fn error_response(failure: &Failure) -> http::Response<Body> {
    let mut response = simple_response(failure.status(), failure.page());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// A response the host makes itself, with a plain-text body.
pub(crate) fn simple_response(status: StatusCode, body: String) -> http::Response<Body> {
    let mut response = http::Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// An error chain on one line: `outer: inner: root`, without backtraces.
fn one_line(error: &wasmtime::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let first = text.lines().next().unwrap_or_default();
        if first.is_empty() || line.contains(first) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(first);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_has_its_documented_status() {
        let memory = Failure::Limit(LimitHit::Memory {
            requested: 2,
            limit: 1,
        });
        assert_eq!(Failure::Trap("x".into()).status(), 500);
        assert_eq!(Failure::NoResponse.status(), 502);
        assert_eq!(memory.status(), 503);
        assert_eq!(Failure::OutOfFuel.status(), 503);
        assert_eq!(Failure::Deadline(Duration::from_secs(1)).status(), 504);
    }

    #[test]
    fn traps_are_told_apart_from_limits() {
        let trap = wasmtime::Error::new(Trap::UnreachableCodeReached);
        assert!(matches!(
            Failure::from_error(&trap, None, false),
            Failure::Trap(_)
        ));
        let hit = LimitHit::Memory {
            requested: 2,
            limit: 1,
        };
        assert!(matches!(
            Failure::from_error(&trap, Some(hit), false),
            Failure::Limit(_)
        ));
        let fuel = wasmtime::Error::new(Trap::OutOfFuel);
        assert!(matches!(
            Failure::from_error(&fuel, Some(hit), false),
            Failure::OutOfFuel
        ));
    }

    #[test]
    fn the_page_names_the_status_but_not_the_cause() {
        let page = Failure::Trap("secret detail".into()).page();
        assert!(page.contains("500 Internal Server Error") && !page.contains("secret"));
    }
}

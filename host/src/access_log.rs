//! The access log of `wasmbridge serve`: one line per request in Apache's combined format,
//! followed by the request id, the app and the time spent in microseconds (Apache's `%D`):
//!
//! ```text
//! 127.0.0.1 - - [03/Dec/2026:15:30:00 +0000] "GET /count HTTP/1.1" 200 33 "-" "curl/7.88.1" 17 http3 412
//! ```
//!
//! The line is written when the response has been sent or has broken off, so that the size is
//! what went out and the time covers the whole body.

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::Result;
use wasmtime::error::Context as _;

/// Where access log lines go: a file opened for appending, or stdout (`-`).
pub struct AccessLog {
    /// The file, `None` for stdout.
    path: Option<PathBuf>,
    out: Mutex<Box<dyn std::io::Write + Send>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLog")
    }
}

impl AccessLog {
    /// Opens `path` for appending (creating it), or stdout for `-`.
    pub fn open(path: &Path) -> Result<AccessLog> {
        let path = (path != Path::new("-")).then(|| path.to_path_buf());
        let out = AccessLog::open_output(path.as_deref())?;
        Ok(AccessLog {
            path,
            out: Mutex::new(out),
        })
    }

    fn open_output(path: Option<&Path>) -> Result<Box<dyn std::io::Write + Send>> {
        Ok(match path {
            None => Box::new(std::io::stdout()),
            Some(path) => Box::new(
                File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open the access log {}", path.display()))?,
            ),
        })
    }

    /// Opens the file again (at a reload), so that a log rotated away is followed by a new
    /// one; on failure the old file is kept.
    pub fn reopen(&self) -> Result<()> {
        if self.path.is_some() {
            *self.out.lock().unwrap() = AccessLog::open_output(self.path.as_deref())?;
        }
        Ok(())
    }

    fn write(&self, line: &str) {
        // One write per line: lines of concurrent requests never interleave.
        let _ = self.out.lock().unwrap().write_all(line.as_bytes());
    }
}

/// An entry on its way, written with 499 (nginx's "client closed request") if it is dropped
/// before the response is handed over: the client left while the app was still working.
pub(crate) struct PendingEntry(pub Option<(std::sync::Arc<AccessLog>, AccessEntry)>);

impl Drop for PendingEntry {
    fn drop(&mut self) {
        if let Some((log, entry)) = self.0.take() {
            entry.finish(&log, 499, 0);
        }
    }
}

/// What the line of one request says, gathered as it is served.
pub(crate) struct AccessEntry {
    pub remote: Option<SocketAddr>,
    /// `METHOD TARGET VERSION`, as the request line had it.
    pub request_line: String,
    pub referer: Option<Vec<u8>>,
    pub user_agent: Option<Vec<u8>>,
    pub id: u64,
    pub app: String,
    pub received: SystemTime,
    pub start: Instant,
}

impl AccessEntry {
    pub(crate) fn new(request: &http::Request<impl Sized>, remote: Option<SocketAddr>) -> Self {
        let header = |name| {
            request
                .headers()
                .get(name)
                .map(|v: &http::HeaderValue| v.as_bytes().to_vec())
        };
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        AccessEntry {
            remote,
            request_line: format!("{} {target} {:?}", request.method(), request.version()),
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
            id: 0,
            app: String::new(),
            received: SystemTime::now(),
            start: Instant::now(),
        }
    }

    /// Writes the line for a response with `status` of which `bytes` of body went out.
    pub(crate) fn finish(&self, log: &AccessLog, status: u16, bytes: u64) {
        let quoted = |value: &Option<Vec<u8>>| match value {
            Some(value) => escape(value),
            None => "-".into(),
        };
        let host = self
            .remote
            .map_or_else(|| "-".to_string(), |addr| addr.ip().to_string());
        let size = match bytes {
            0 => "-".to_string(),
            n => n.to_string(),
        };
        log.write(&format!(
            "{host} - - [{}] \"{}\" {status} {size} \"{}\" \"{}\" {} {} {}\n",
            clf_time(self.received),
            escape(self.request_line.as_bytes()),
            quoted(&self.referer),
            quoted(&self.user_agent),
            self.id,
            self.app,
            self.start.elapsed().as_micros(),
        ));
    }
}

/// Quotes, backslashes, control characters and bytes outside ASCII escaped, as Apache escapes
/// what it logs.
fn escape(text: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for &byte in text {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..0x7f => out.push(byte as char),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    out
}

/// `03/Dec/2026:15:30:00 +0000`: the Common Log Format's time, in UTC.
fn clf_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (Howard Hinnant's algorithm), for the proleptic Gregorian calendar.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_in_the_common_log_format() {
        assert_eq!(clf_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        let leap_day = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(clf_time(leap_day), "29/Feb/2024:12:34:56 +0000");
    }

    #[test]
    fn quotes_and_control_characters_are_escaped() {
        assert_eq!(escape(b"a \"b\"\n"), "a \\\"b\\\"\\x0a");
        assert_eq!(escape("Jürgen".as_bytes()), "J\\xc3\\xbcrgen");
    }
}

//! What each app does, counted: requests by status class, latency, instantiation time,
//! failures by cause, requests in flight, live instances. Rendered in Prometheus' text format
//! (`wasmbridge serve --metrics-addr`, mod_wasm's `wasm-status` handler).
//!
//! An app's [`AppStats`] outlive a reload: the new code counts on where the old stopped, so
//! counters only fall when the process restarts.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Failure;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Failure causes, as [`Failure::cause`] names them.
const CAUSES: [&str; 12] = [
    "trap",
    "deadline",
    "memory",
    "fuel",
    "overloaded",
    "instantiate",
    "guest_error",
    "bad_cgi_output",
    "request_body",
    "client_gone",
    "exit_status",
    "other",
];

/// A histogram with fixed buckets; the sum is kept in microseconds.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (le, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// The counters of one app.
#[derive(Default)]
pub struct AppStats {
    /// Responses by status class: 1xx to 5xx (a client that left counts as 4xx, 499).
    responses: [AtomicU64; 5],
    latency: Histogram,
    instantiation: Histogram,
    failures: [AtomicU64; CAUSES.len()],
    in_flight: AtomicI64,
    instances: AtomicI64,
    /// CGI workers: busy and idle, as last seen.
    workers: Mutex<Option<(usize, usize)>>,
}

impl AppStats {
    pub fn new() -> Arc<AppStats> {
        Arc::new(AppStats::default())
    }

    /// A request came in; the returned guard counts its response when it goes.
    pub fn request(self: &Arc<Self>) -> InFlightRequest {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightRequest {
            stats: self.clone(),
            start: std::time::Instant::now(),
            status: 499,
        }
    }

    pub fn failed(&self, failure: &Failure) {
        let cause = failure.cause();
        let i = CAUSES
            .iter()
            .position(|c| *c == cause)
            .unwrap_or(CAUSES.len() - 1);
        self.failures[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn instantiated(&self, took: Duration) {
        self.instantiation.observe(took);
    }

    /// An instance lives until the guard goes.
    pub(crate) fn instance(self: &Arc<Self>) -> LiveInstance {
        self.instances.fetch_add(1, Ordering::Relaxed);
        LiveInstance(self.clone())
    }

    pub(crate) fn set_workers(&self, busy: usize, idle: usize) {
        *self.workers.lock().unwrap() = Some((busy, idle));
    }
}

/// A request being served, until its response body is done with.
pub struct InFlightRequest {
    stats: Arc<AppStats>,
    start: std::time::Instant,
    status: u16,
}

impl InFlightRequest {
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }
}

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        let class = (self.status / 100).clamp(1, 5) as usize - 1;
        self.stats.responses[class].fetch_add(1, Ordering::Relaxed);
        self.stats.latency.observe(self.start.elapsed());
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One live instance of an app.
pub(crate) struct LiveInstance(Arc<AppStats>);

impl LiveInstance {
    pub(crate) fn stats(&self) -> &AppStats {
        &self.0
    }
}

impl Drop for LiveInstance {
    fn drop(&mut self) {
        self.0.instances.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The stats of every app by name, so that a reloaded app keeps counting where it was.
#[derive(Default)]
pub struct Registry {
    apps: Mutex<HashMap<String, Arc<AppStats>>>,
}

impl Registry {
    pub fn stats(&self, app: &str) -> Arc<AppStats> {
        self.apps
            .lock()
            .unwrap()
            .entry(app.to_string())
            .or_default()
            .clone()
    }
}

/// Renders the stats of `apps` (name, stats) in Prometheus' text exposition format.
pub fn render<'a>(apps: impl IntoIterator<Item = (&'a str, &'a AppStats)>) -> String {
    let apps: Vec<(String, &AppStats)> = apps
        .into_iter()
        .map(|(name, stats)| (escape(name), stats))
        .collect();
    let mut out = String::new();
    family(
        &mut out,
        "wasmbridge_requests_total",
        "counter",
        "Requests answered, by status class.",
    );
    for (app, stats) in &apps {
        for (i, n) in stats.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "wasmbridge_requests_total{{app=\"{app}\",class=\"{}xx\"}} {}",
                i + 1,
                n.load(Ordering::Relaxed)
            );
        }
    }
    family(
        &mut out,
        "wasmbridge_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to the end of its response body.",
    );
    for (app, stats) in &apps {
        stats.latency.render(
            &mut out,
            "wasmbridge_request_duration_seconds",
            &format!("app=\"{app}\""),
        );
    }
    family(
        &mut out,
        "wasmbridge_instantiation_duration_seconds",
        "histogram",
        "Time to instantiate the guest.",
    );
    for (app, stats) in &apps {
        stats.instantiation.render(
            &mut out,
            "wasmbridge_instantiation_duration_seconds",
            &format!("app=\"{app}\""),
        );
    }
    family(
        &mut out,
        "wasmbridge_failures_total",
        "counter",
        "Failed requests, by cause (each also has a line in the error log).",
    );
    for (app, stats) in &apps {
        for (cause, n) in CAUSES.iter().zip(&stats.failures) {
            let _ = writeln!(
                out,
                "wasmbridge_failures_total{{app=\"{app}\",cause=\"{cause}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
    for (name, help, value) in [
        (
            "wasmbridge_requests_in_flight",
            "Requests being served.",
            (|s: &AppStats| s.in_flight.load(Ordering::Relaxed)) as fn(&AppStats) -> i64,
        ),
        (
            "wasmbridge_instances",
            "Live guest instances (one per request, a CGI worker, or a reused WASI 0.3 instance).",
            |s: &AppStats| s.instances.load(Ordering::Relaxed),
        ),
    ] {
        family(&mut out, name, "gauge", help);
        for (app, stats) in &apps {
            let _ = writeln!(out, "{name}{{app=\"{app}\"}} {}", value(stats));
        }
    }
    family(
        &mut out,
        "wasmbridge_cgi_workers",
        "gauge",
        "CGI workers, busy with a request or idle.",
    );
    for (app, stats) in &apps {
        if let Some((busy, idle)) = *stats.workers.lock().unwrap() {
            let _ = writeln!(
                out,
                "wasmbridge_cgi_workers{{app=\"{app}\",state=\"busy\"}} {busy}"
            );
            let _ = writeln!(
                out,
                "wasmbridge_cgi_workers{{app=\"{app}\",state=\"idle\"}} {idle}"
            );
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value, escaped as the text format wants.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

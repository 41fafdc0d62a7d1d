//! WASI 0.3 components (`wasi:http/handler@0.3`, guests/fixtures/http3) through `wasmbridge
//! serve` and Apache: one instance serves many requests, some at once, within wasmtime serve's
//! reuse limits, and a failure costs only the requests of the instance it happened in.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::time::Duration;

use wasmbridge_tests::apache::Apache;
use wasmbridge_tests::{Server, check_chunked_echo, client, get, guest, start_error};

const HELLO: &str = "Hello from a WASI 0.3 component!\n";

/// `instance X request N` (from `/count` and `/sleep`): the instance and its request count.
fn instance_and_count(body: &str) -> (String, u64) {
    let words: Vec<&str> = body.split_whitespace().collect();
    assert!(
        words.len() >= 4 && words[0] == "instance" && words[2] == "request",
        "{body}"
    );
    (words[1].to_string(), words[3].parse().unwrap())
}

async fn count(url: String) -> (String, u64) {
    let (status, body) = get(url).await;
    assert_eq!(status, 200, "{body}");
    instance_and_count(&body)
}

/// A raw HTTP/1.1 GET that accepts trailers; the whole response as text.
fn raw_get_with_trailers(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTE: trailers\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Starts `n` requests to `/sleep?ms=1500`, 100 ms apart, so that they overlap; returns how
/// many instances served them.
async fn overlapping_sleeps(base: &str, n: usize) -> usize {
    let mut sleeps = Vec::new();
    for _ in 0..n {
        sleeps.push(tokio::spawn(get(format!("{base}/sleep?ms=1500"))));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut instances = BTreeSet::new();
    for sleep in sleeps {
        let (status, body) = sleep.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.ends_with("slept 1500 ms\n"), "{body}");
        instances.insert(instance_and_count(&body).0);
    }
    instances.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_0_3_component_is_served_with_streams_and_trailers() {
    let server = Server::start(&[&guest("http3")]);
    let (status, body) = get(server.url("/")).await;
    assert_eq!((status, body.as_str()), (200, HELLO));

    // One instance serves one request after another.
    let (first, n) = count(server.url("/count")).await;
    let (second, m) = count(server.url("/count")).await;
    assert_eq!(first, second);
    assert_eq!(m, n + 1);

    check_chunked_echo(server.url("/echo"), 32).await;

    let response = client()
        .get(server.url("/stream?chunks=3&ms=50"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.text().await.unwrap(),
        "chunk 0\nchunk 1\nchunk 2\n"
    );

    let port = server.addr.port();
    let response = tokio::task::spawn_blocking(move || raw_get_with_trailers(port, "/trailers"))
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("body before trailers"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nx-checksum: 42\r\n"),
        "{response}"
    );
    assert!(!server.log().contains("error ["), "{}", server.log());

    // The same component under wasmtime serve answers the same.
    let wasm = std::path::PathBuf::from(guest("http3"));
    tokio::task::spawn_blocking(move || {
        wasmbridge_tests::check_under_wasmtime_serve(&wasm, &[], "/", HELLO)
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_serves_requests_that_await_timers_at_once() {
    let server = Server::start(&[&guest("http3")]);
    let base = server.url("");
    let base = base.trim_end_matches('/');
    count(format!("{base}/count")).await;
    let n = 6;
    let instances = overlapping_sleeps(base, n).await;
    assert!(
        instances < n,
        "{n} overlapping requests took {instances} instances"
    );

    // With one request per instance at a time, each overlapping request needs its own.
    let server = Server::start(&[
        "--max-instance-concurrent-reuse-count",
        "1",
        &guest("http3"),
    ]);
    let base = server.url("");
    let instances = overlapping_sleeps(base.trim_end_matches('/'), 3).await;
    assert_eq!(instances, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_serves_its_reuse_count_then_goes_and_idles_out() {
    let server = Server::start(&[
        "--max-instance-reuse-count",
        "3",
        "--idle-instance-timeout",
        "400ms",
        &guest("http3"),
    ]);
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(count(server.url("/count")).await);
    }
    let counts: Vec<u64> = seen.iter().map(|(_, n)| *n).collect();
    assert_eq!(counts, [1, 2, 3, 1, 2, 3, 1], "{seen:?}");
    let instances: BTreeSet<_> = seen.iter().map(|(i, _)| i.clone()).collect();
    assert_eq!(instances.len(), 3, "{seen:?}");

    // Idle for less than the timeout, the instance is kept; for longer, it is gone.
    let (kept, n) = count(server.url("/count")).await;
    assert_eq!(n, 2);
    assert_eq!(kept, seen[6].0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (fresh, n) = count(server.url("/count")).await;
    assert_eq!(n, 1);
    assert_ne!(fresh, kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_fails_only_the_requests_of_its_instance() {
    // Each request on an instance of its own: a trap in one leaves the other alone.
    let server = Server::start(&[
        "--max-instance-concurrent-reuse-count",
        "1",
        &guest("http3"),
    ]);
    let sleeper = tokio::spawn(get(server.url("/sleep?ms=1000")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = get(server.url("/trap")).await;
    assert_eq!(status, 500);
    let (status, body) = sleeper.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(server.wait_for_log("guest trapped", Duration::from_secs(5)));
    assert_eq!(
        server.log_lines("guest trapped").len(),
        1,
        "{}",
        server.log()
    );

    // Sharing an instance, the other request fails with it, cleanly: its own status and line.
    let server = Server::start(&[&guest("http3")]);
    count(server.url("/count")).await;
    let sleeper = tokio::spawn(get(server.url("/sleep?ms=1500")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = get(server.url("/trap")).await;
    assert_eq!(status, 500);
    let (status, _) = sleeper.await.unwrap();
    assert_eq!(status, 500);
    // The log reaches the test through a pipe: wait for both lines.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.log_lines("guest trapped").len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = server.log_lines("guest trapped");
    assert_eq!(lines.len(), 2, "{}", server.log());
    assert!(
        lines.iter().all(|line| line.ends_with("(500)")),
        "{lines:?}"
    );
    // The next request gets a fresh instance.
    assert_eq!(count(server.url("/count")).await.1, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_and_memory_limits_fail_the_request_and_the_server_goes_on() {
    let server = Server::start(&[
        "-W",
        "timeout=1s",
        "-W",
        "max-memory-size=67108864",
        &guest("http3"),
    ]);
    // A guest that never yields is stopped at the deadline.
    let (status, _) = get(server.url("/spin")).await;
    assert_eq!(status, 504);
    assert!(server.wait_for_log("deadline exceeded", Duration::from_secs(5)));

    let (status, _) = get(server.url("/membomb")).await;
    assert_eq!(status, 503);
    assert!(server.wait_for_log("memory limit exceeded", Duration::from_secs(5)));

    // A body still streaming at the deadline is cut: the client sees it end in error.
    let response = client()
        .get(server.url("/stream?chunks=20&ms=200"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err());
    assert!(server.wait_for_log("(504)", Duration::from_secs(5)));

    // An error code instead of a response is the guest's answer: 502.
    let (status, _) = get(server.url("/error")).await;
    assert_eq!(status, 502);
    assert!(server.wait_for_log("HttpRequestDenied (502)", Duration::from_secs(5)));

    let (status, body) = get(server.url("/")).await;
    assert_eq!((status, body.as_str()), (200, HELLO));
}

/// An instance that cannot even start within the memory limit is the limit's 503, as under
/// WASI 0.2, with the line that says so, not an instantiation failure's 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_over_the_memory_limit_at_start_is_503() {
    // Without the pooling allocator, whose slots would refuse the component at load.
    let server = Server::start(&[
        "-O",
        "pooling-allocator=n",
        "-W",
        "max-memory-size=65536",
        &guest("http3"),
    ]);
    let (status, _) = get(server.url("/")).await;
    assert_eq!(status, 503, "{}", server.log());
    assert!(
        server.wait_for_log("memory limit exceeded", Duration::from_secs(5)),
        "{}",
        server.log()
    );
}

#[test]
fn reuse_flags_and_p3_are_checked_at_start() {
    let log = start_error(&["-S", "p3=n", &guest("http3")]);
    assert!(log.contains("-S p3=n"), "{log}");
    let log = start_error(&["--max-instance-reuse-count", "4", &guest("echo")]);
    assert!(log.contains("instance reuse"), "{log}");
    let log = start_error(&["--max-instance-reuse-count", "0", &guest("http3")]);
    assert!(log.contains("max-instance-reuse-count"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apache_serves_a_wasi_0_3_component_with_instance_reuse() {
    let apache = Apache::start(
        "event",
        "<Location /p3>\n SetHandler wasm-handler\n WasmModule {fixtures}/wasm/http3.wasm\n \
         WasmTimeout 2\n</Location>\n\
         <Location /p3/limited>\n WasmMaxInstanceReuse 2\n WasmIdleInstanceTimeout 300ms\n\
         </Location>",
    );
    let (status, body) = get(apache.url("/p3/")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, HELLO),
        "{}",
        apache.error_log()
    );
    check_chunked_echo(apache.url("/p3/echo"), 16).await;

    // Apache's threads hand requests to shared instances.
    count(apache.url("/p3/count")).await;
    let instances = overlapping_sleeps(&apache.url("/p3"), 4).await;
    assert!(
        instances < 4,
        "4 overlapping requests took {instances} instances"
    );

    // The section's own reuse limits; at most 2 requests per instance there.
    for _ in 0..4 {
        let (_, n) = count(apache.url("/p3/limited/count")).await;
        assert!(n <= 2, "request {n} on an instance limited to 2");
    }

    // A guest that never yields is stopped at WasmTimeout; the next request is served.
    let (status, _) = get(apache.url("/p3/spin")).await;
    assert_eq!(status, 504);
    assert!(
        apache.wait_for_log("deadline exceeded", Duration::from_secs(5)),
        "{}",
        apache.error_log()
    );
    let (status, _) = get(apache.url("/p3/trap")).await;
    assert_eq!(status, 500);
    assert!(apache.wait_for_log("guest trapped", Duration::from_secs(5)));
    let (status, body) = get(apache.url("/p3/")).await;
    assert_eq!((status, body.as_str()), (200, HELLO));
}

#[test]
fn apache_refuses_instance_reuse_for_a_wasi_0_2_component() {
    let apache = Apache::configure(
        "event",
        "<Location />\n SetHandler wasm-handler\n WasmModule {fixtures}/wasm/echo.wasm\n \
         WasmMaxInstanceReuse 8\n</Location>",
    );
    let (ok, output) = apache.configtest();
    assert!(!ok, "{output}");
    assert!(output.contains("instance reuse"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_the_head_is_logged_with_499() {
    let log = wasmbridge_tests::temp_dir("access-log-499").join("access.log");
    let server = Server::start(&["--access-log", log.to_str().unwrap(), &guest("http3")]);
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(
        impatient
            .get(server.url("/sleep?ms=1500"))
            .send()
            .await
            .is_err()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if !text.is_empty() || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        text.contains("\"GET /sleep?ms=1500 HTTP/1.1\" 499 - "),
        "{text}"
    );
}

//! Test harness: starts the real `wasmbridge` binary on a free loopback port, collects its log,
//! and stops it by PID when the test ends, passed or failed.
//!
//! Paths come from the environment the test command sets, with fallbacks for a plain
//! `cargo test` after a build:
//! - `WASMBRIDGE_BIN`: the binary (default: beside this test's `deps/` directory);
//! - `WASMBRIDGE_GUESTS`: the built guests (default: the guests workspace's release target).

pub mod apache;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The `wasmbridge` binary under test.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WASMBRIDGE_BIN") {
        return path.into();
    }
    // target/<profile>/deps/<test>  ->  target/<profile>/wasmbridge
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("wasmbridge")
}

/// Runs `wasmbridge ARGS...` (a command other than `serve`) and panics with its stderr if it
/// fails.
pub fn run_wasmbridge<I, S>(args: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = Command::new(binary()).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `wasmbridge wrap` of the preview-1 guest `name` (e.g. `cgi-probe`), as a component of its
/// own in a new directory; `options` go before the program (`--cgi-docroot /www`).
pub fn wrapped_p1(name: &str, options: &[&str]) -> PathBuf {
    let wasm = temp_dir(&format!("wrapped-{name}")).join(format!("{name}.wasm"));
    run_wasmbridge(
        ["wrap"]
            .iter()
            .chain(options)
            .chain(&["-o", wasm.to_str().unwrap(), &guest_p1(name)])
            .copied(),
    );
    wasm
}

/// A guest `.wasm` built by the guests workspace for wasm32-wasip2, e.g. `guest("echo")`.
pub fn guest(name: &str) -> String {
    guest_for("wasm32-wasip2", name)
}

/// A guest built for wasm32-wasip1: a core module, served through the preview-1 adapter.
pub fn guest_p1(name: &str) -> String {
    guest_for("wasm32-wasip1", name)
}

fn guest_for(target: &str, name: &str) -> String {
    let dir = match std::env::var_os("WASMBRIDGE_GUESTS") {
        // The variable names the wasm32-wasip2 directory; the other targets sit beside it.
        Some(dir) => PathBuf::from(dir)
            .join("../..")
            .join(target)
            .join("release"),
        None => {
            let target_dir = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guests/target")
                });
            target_dir.join(target).join("release")
        }
    };
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "guest {} is not built; run the README's test command",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// A compile cache shared by the tests of every run, so each guest is compiled once (entries
/// are named by what they are compiled from and by the engine, as Apache's test cache is).
pub fn test_cache_dir() -> PathBuf {
    std::env::temp_dir().join("wasmbridge-test-cache")
}

/// A running `wasmbridge serve`.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// `http`, or `https` for a server started with `--tls-cert`.
    pub scheme: &'static str,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `wasmbridge serve --addr 127.0.0.1:0 ARGS...` and waits until it listens.
    /// Panics with the server's log if it does not start.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        match Server::try_start(args, env) {
            Ok(server) => server,
            Err((_, log)) => panic!("wasmbridge did not start:\n{log}"),
        }
    }

    /// Starts the server; on failure returns its exit status and log.
    pub fn try_start(
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server, (Option<ExitStatus>, String)> {
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env("WASMBRIDGE_CACHE_DIR", test_cache_dir())
            // Its instances' temporary directories, gone with this process's space.
            .env("TMPDIR", run_dir().join("tmp"))
            .env_remove("RUST_BACKTRACE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary().display()));

        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let (log, ready_tx) = (log.clone(), ready_tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let listening = [
                        ("http", "Serving HTTP on http://"),
                        ("https", "Serving HTTPS on https://"),
                    ]
                    .into_iter()
                    .find_map(|(scheme, prefix)| Some((scheme, line.strip_prefix(prefix)?)));
                    if let Some((scheme, addr)) = listening {
                        let addr = addr.trim_end_matches('/').parse::<SocketAddr>().ok();
                        let _ = ready_tx.send(addr.map(|addr| (scheme, addr)));
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                let _ = ready_tx.send(None);
            });
        }
        drop(ready_tx);

        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Some((scheme, addr))) => {
                    return Ok(Server {
                        child,
                        addr,
                        scheme,
                        log,
                    });
                }
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Output closed: the process is exiting. Give it a moment to be reaped.
                    let status = wait_timeout(&mut child, Duration::from_secs(10));
                    let _ = child.kill();
                    let _ = child.wait();
                    std::thread::sleep(Duration::from_millis(50));
                    return Err((status, log.lock().unwrap().clone()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() > deadline => {
                    let _ = child.kill();
                    return Err((None, log.lock().unwrap().clone()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log has a line containing `needle`; returns whether it came in time.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The lines of the log that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Sends a signal by name (`TERM`, `INT`) to the server process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_timeout(&mut self.child, timeout)
    }

    /// Resident set size of the server process, in bytes.
    pub fn rss(&self) -> u64 {
        rss_of(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident set size of a process, in bytes (0 once it is gone).
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `wasmbridge serve ARGS...` expecting it to refuse to start; returns its log.
pub fn start_error(args: &[&str]) -> String {
    match Server::try_start(args, &[]) {
        Ok(server) => panic!(
            "wasmbridge started but should have refused:\n{}",
            server.log()
        ),
        Err((status, log)) => {
            assert!(
                status.is_some_and(|s| !s.success()),
                "expected a failing exit status, got {status:?}:\n{log}"
            );
            log
        }
    }
}

/// An HTTP client that talks to loopback directly, never through a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

/// An HTTP client that hands back redirects instead of following them.
pub fn no_redirect_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// POSTs `mib` MiB in chunks of unknown total length (so it goes out chunked) to an echo at
/// `url` and checks that the same bytes come back.
pub async fn check_chunked_echo(url: String, mib: usize) {
    use futures::StreamExt as _;
    use sha2::{Digest as _, Sha256};
    const MIB: usize = 1 << 20;
    let chunk = |i: usize| bytes::Bytes::from(vec![(i % 251) as u8; MIB]);
    let mut expected = Sha256::new();
    (0..mib).for_each(|i| expected.update(chunk(i)));
    let upload = futures::stream::iter(0..mib).map(move |i| Ok::<_, std::io::Error>(chunk(i)));
    let response = client()
        .post(url)
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let (mut hasher, mut length) = (Sha256::new(), 0);
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        length += piece.len();
        hasher.update(&piece);
    }
    assert_eq!(length, mib * MIB);
    assert_eq!(hasher.finalize(), expected.finalize());
}

/// GETs `url`: the status and the body as text.
pub async fn get(url: String) -> (u16, String) {
    let response = client().get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// POSTs `form` (already urlencoded) to `url`: the status and the body as text.
pub async fn post_form(url: String, form: &str) -> (u16, String) {
    let response = client()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A `multipart/form-data` body with one text field and one file: its content type and bytes.
pub fn multipart(field: (&str, &str), file: (&str, &str, &[u8])) -> (String, Vec<u8>) {
    let boundary = "wasmbridge-boundary";
    let ((name, value), (file_field, filename, data)) = (field, file);
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; \
         filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// POSTs a multipart form of one field and one file (see [`multipart`]); returns the status
/// and the body.
pub async fn post_multipart(
    url: String,
    field: (&str, &str),
    file: (&str, &str, &[u8]),
) -> (u16, String) {
    let (content_type, body) = multipart(field, file);
    let response = client()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The SHA-256 of `data` in lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new directory of its own under the system's temp directory, for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = run_dir().join(format!("{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// This test process's own space, `$TMPDIR/wasmbridge-tests/PID`: the directories its tests
/// make, and the temporary directories of the servers it starts. A test process that is killed,
/// or a server that is, cannot clean up after itself; so the first call removes what processes
/// that are gone left there.
pub fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let parent = std::env::temp_dir().join("wasmbridge-tests");
        for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            let pid = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = parent.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        // Apache's children (www-data) reach their fixtures through it.
        for path in [&parent, &dir] {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
        }
        dir
    })
}

/// An interpreter's build output, `guests/GUEST/dist`, checked to hold `file`.
pub fn interpreter_dist(guest: &str, file: &str) -> PathBuf {
    let dist = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../guests/{guest}/dist"));
    assert!(
        dist.join(file).exists(),
        "{} has no {file}; run the README's test command",
        dist.display()
    );
    dist
}

/// `wasmbridge wizer --init-func wasmbridge-warm` (guests/php/README.md): php-cgi.wasm again,
/// with the scripts `warm` names (`PHP_OPCACHE_WARM`) compiled into OPcache, written to `out`,
/// `dir` (`HOST::GUEST[::ro]`) granted while it is taken. Returns what it said on stderr.
pub fn warm_php_snapshot(dir: &str, warm: &str, out: &std::path::Path) -> String {
    let php = interpreter_dist("php", "php-cgi.wasm").join("php-cgi.wasm");
    let output = Command::new(binary())
        .args([
            "wizer",
            "--init-func",
            "wasmbridge-warm",
            "--dir",
            dir,
            "--env",
        ])
        .arg(format!("PHP_OPCACHE_WARM={warm}"))
        .arg("-o")
        .arg(out)
        .arg(php)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    stderr
}

/// Makes `dir` readable by Apache's www-data children: the tree, and the way to it through
/// the temp directory.
pub fn readable(dir: &std::path::Path) -> &std::path::Path {
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status()
        .unwrap();
    for parent in dir
        .ancestors()
        .skip(1)
        .filter(|p| p.starts_with(std::env::temp_dir()))
    {
        Command::new("chmod")
            .arg("a+x")
            .arg(parent)
            .status()
            .unwrap();
    }
    dir
}

/// The `wasmtime` 48 binary (as wasmbridge pins), for portability checks. It is not in the
/// Debian archive: it is used when `WASMTIME` names it or `scripts/bench.sh` has built it
/// (`BENCH_BUILD_WASMTIME=1`); `None`, with a note, otherwise.
pub fn wasmtime() -> Option<PathBuf> {
    let wasmtime = std::env::var_os("WASMTIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache/wasmbridge-tools/wasmtime-48.0.8/bin/wasmtime")
        });
    if wasmtime.exists() {
        Some(wasmtime)
    } else {
        eprintln!(
            "note: no wasmtime at {}: not checked under wasmtime serve",
            wasmtime.display()
        );
        None
    }
}

/// Serves `wasm` with `wasmtime serve -S cli ARGS...` and checks that `path` answers 200 with
/// `expected`; skipped when there is no wasmtime (see [`wasmtime`]).
pub fn check_under_wasmtime_serve(
    wasm: &std::path::Path,
    args: &[&str],
    path: &str,
    expected: &str,
) {
    let Some(wasmtime) = wasmtime() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(&wasmtime)
        .args(["serve", "-S", "cli", "--addr", &format!("127.0.0.1:{port}")])
        .args(args)
        .arg(wasm)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        match http10_get(port, path) {
            Some(body) => break Some(body),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            None => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        body.as_deref(),
        Some(expected),
        "wasmtime serve {}",
        wasm.display()
    );
}

/// The body of a 200 answer to a plain HTTP/1.0 GET, or `None`.
fn http10_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?;
    (status == "200").then(|| body.to_string())
}

/// A 300 KB multipart upload to `guests/fixtures/python/cases.py` at `base`, parsed by
/// Python's `cgi` module; `log` is the server's log, for a failure's message.
pub async fn check_python_upload(base: &str, log: impl Fn() -> String) {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (status, text) = post_multipart(
        format!("{base}/upload"),
        ("note", "hi"),
        ("file", "data.bin", &data),
    )
    .await;
    assert_eq!(status, 200, "{}", log());
    assert_eq!(
        text,
        format!("data.bin 300000 {} note=hi\n", sha256_hex(&data))
    );
}

/// The multipart upload to the PHP fixtures' `upload.php` at `base` (a URL without a trailing
/// slash): a 300 KB file that fileinfo knows as a PDF by its first bytes, beside a form field.
/// Shared by the PHP tests in CGI mode and wrapped.
pub async fn check_php_upload(base: &str, log: impl Fn() -> String) {
    let mut data = b"%PDF-1.4\n".to_vec();
    data.extend((0..300_000u32 - 9).map(|i| (i % 251) as u8));
    let (status, text) = post_multipart(
        format!("{base}/upload.php"),
        ("title", "hi"),
        ("file", "data.bin", &data),
    )
    .await;
    assert_eq!(status, 200, "{}", log());
    assert_eq!(
        text,
        format!(
            "name: data.bin\nsize: 300000\nsha256: {}\ntype: application/pdf\ntitle: hi\n",
            sha256_hex(&data)
        )
    );
}

/// A PHP session at `base/session.php`: its cookie counts three visits, and another client has
/// a session of its own. Shared by the PHP tests in CGI mode and wrapped.
pub async fn check_php_session(base: &str, log: impl Fn() -> String) {
    let url = format!("{base}/session.php");
    let first = client().get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200, "{}", log());
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("PHPSESSID="), "{cookie}");
    assert_eq!(first.text().await.unwrap(), "visits: 1\n");
    let session = cookie.split(';').next().unwrap().to_string();
    for visits in 2..=3 {
        let page = client()
            .get(&url)
            .header("cookie", &session)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(page, format!("visits: {visits}\n"));
    }
    assert_eq!(get(url).await.1, "visits: 1\n");
}

/// What `guests/fixtures/python/cases.py` answers at `base` (a URL without a trailing slash):
/// a CGI Status, a client redirect, a cookie both ways and a 5 MiB body streamed without a
/// length. Shared by the Python tests in CGI mode and wrapped, so that both pass the same.
pub async fn check_python_cases(base: &str) {
    let missing = client()
        .get(format!("{base}/missing"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.text().await.unwrap(), "<h1>no such page</h1>\n");

    let moved = no_redirect_client()
        .get(format!("{base}/moved"))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 301);
    assert_eq!(moved.headers()["location"], "https://example.com/new");

    let cookie = client()
        .get(format!("{base}/cookie"))
        .header("cookie", "a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        cookie.headers()["set-cookie"],
        "session=abc; Path=/; HttpOnly"
    );
    assert_eq!(cookie.text().await.unwrap(), "got: a=1\n");

    let big = client().get(format!("{base}/big")).send().await.unwrap();
    assert!(
        big.headers().get("content-length").is_none(),
        "not streamed"
    );
    assert_eq!(big.bytes().await.unwrap().len(), 80 * 65536);
}

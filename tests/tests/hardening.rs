//! Attacks on `wasmbridge serve` and on wrapped apps, each tried for real: what a hostile client,
//! a broken program or another local user does, and what the server must answer instead.
//! (Apache's side: apache_hardening.rs.)

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wasmbridge_tests::{
    Server, client, guest, guest_p1, h2c_client, interpreter_dist, post_multipart, run_wasmbridge,
    start_error, temp_dir, wrapped_p1,
};

fn vars(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

fn php() -> String {
    interpreter_dist("php", "php-cgi.wasm")
        .join("php-cgi.wasm")
        .display()
        .to_string()
}

fn fixtures_php() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guests/fixtures/php")
}

fn is_root() -> bool {
    current_uid() == 0
}

fn current_uid() -> u32 {
    String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A connection to `server` that has sent `bytes` and waits; whether the server closed it
/// within `within` (a read that ends or fails, rather than one that times out).
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (a 408, say), then the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.addr).unwrap()
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Whether the process spends less than half of one core over a second: no guest spinning.
fn idle(pid: u32) -> bool {
    let ticks_per_second = 100;
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    cpu_ticks(pid) - before < ticks_per_second / 2
}

// ---- 1. the compile cache ---------------------------------------------------------------

#[tokio::test]
async fn a_compile_cache_that_others_can_write_is_never_loaded() {
    let dir = temp_dir("cache-open");
    Command::new("chmod").arg("777").arg(&dir).status().unwrap();
    let dir_arg = dir.display().to_string();

    // Named on the command line: the server refuses to start.
    let log = start_error(&["--cache-dir", &dir_arg, &guest("echo")]);
    assert!(
        log.contains("is not safe to load code from") && log.contains("can be written by others"),
        "{log}"
    );

    // The default place: the server runs without it, and says so.
    let server = Server::start_with_env(
        &[&guest("hello_http")],
        &[("WASMBRIDGE_CACHE_DIR", &dir_arg)],
    );
    assert_eq!(
        client().get(server.url("/")).send().await.unwrap().status(),
        200
    );
    assert!(
        server.log().contains("compiling without a cache"),
        "{}",
        server.log()
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing written there"
    );
}

#[tokio::test]
async fn a_cache_entry_of_another_user_is_compiled_afresh_not_loaded() {
    if !is_root() {
        eprintln!("note: not root: an entry of another user cannot be planted");
        return;
    }
    // Fill a cache with the echo component's entry, then give the entry to another user.
    let dir = temp_dir("cache-planted");
    let dir_arg = dir.display().to_string();
    let server = Server::start(&["--cache-dir", &dir_arg, &guest("echo")]);
    drop(server);
    let entry = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("an entry");
    Command::new("chown")
        .arg("nobody")
        .arg(&entry)
        .status()
        .unwrap();
    let server = Server::start(&["--cache-dir", &dir_arg, &guest("echo")]);
    let response = client()
        .post(server.url("/"))
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "hi");
    assert!(
        server.log().contains("is not used: it belongs to uid"),
        "{}",
        server.log()
    );
}

// ---- 2. a CGI Content-Length that lies --------------------------------------------------

/// A response that says 5 bytes and sends 150 000 arrives whole, and the connection it came
/// on serves the next request: the length is the server's to set.
async fn check_length_lie(base: &str) {
    let client = client();
    for _ in 0..2 {
        let response = client
            .get(format!("{base}/length-lie"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_ne!(
            response
                .headers()
                .get("content-length")
                .map(|v| v.to_str().unwrap()),
            Some("5")
        );
        assert_eq!(response.bytes().await.unwrap().len(), 150_000);
        let next = client.get(format!("{base}/env")).send().await.unwrap();
        assert_eq!(next.status(), 200);
        assert!(next.text().await.unwrap().contains("REQUEST_METHOD=GET"));
    }
}

#[tokio::test]
async fn a_cgi_content_length_that_lies_is_dropped() {
    let server = Server::start(&[&guest_p1("cgi-probe")]);
    check_length_lie(&server.url("")).await;

    let wrapped = wrapped_p1("cgi-probe", &[]);
    let server = Server::start(&[wrapped.to_str().unwrap()]);
    check_length_lie(&server.url("")).await;
}

// ---- 3. docroot mode runs scripts only ---------------------------------------------------

/// A docroot that holds secrets beside its scripts.
fn docroot_with_secrets() -> PathBuf {
    let root = temp_dir("secrets");
    let www = root.join("www");
    for dir in ["sub", ".git", ".hidden"] {
        std::fs::create_dir_all(www.join(dir)).unwrap();
    }
    for (file, text) in [
        ("index.php", "<?php echo 'index runs';"),
        ("page.php", "<?php echo 'page runs';"),
        ("page.phtml", "<?php echo 'phtml runs';"),
        (".env", "DB_PASSWORD=hunter2\n"),
        (".htaccess", "Require all denied # hunter2\n"),
        ("notes.txt", "the password is hunter2\n"),
        ("sub/index.py", "print('python source hunter2')\n"),
        (".git/config.php", "<?php echo 'hunter2';"),
        (".hidden/x.php", "<?php echo 'hunter2';"),
    ] {
        std::fs::write(www.join(file), text).unwrap();
    }
    root
}

async fn check_only_scripts_run(base: &str, fallback: bool) {
    let get = |path: &str| {
        let url = format!("{base}{path}");
        async move {
            let response = client().get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(get("/page.php").await, (200, "page runs".into()));
    assert_eq!(get("/").await, (200, "index runs".into()));
    for refused in [
        "/.env",
        "/.htaccess",
        "/%2eenv",
        "/.git/config.php",
        "/.hidden/x.php",
        "/sub/../.env",
    ] {
        let (status, page) = get(refused).await;
        assert_eq!(status, 404, "{refused}: {page}");
        assert!(!page.contains("hunter2"), "{refused}: {page}");
    }
    for not_a_script in ["/notes.txt", "/sub/", "/sub/index.py", "/page.phtml"] {
        let (status, page) = get(not_a_script).await;
        assert!(
            !page.contains("hunter2") && !page.contains("phtml runs"),
            "{not_a_script}: {page}"
        );
        match fallback {
            // The front controller takes what names no script.
            true => assert_eq!((status, &page[..]), (200, "index runs"), "{not_a_script}"),
            false => assert_eq!(status, 404, "{not_a_script}: {page}"),
        }
    }
}

#[tokio::test]
async fn docroot_mode_runs_only_scripts_and_refuses_dot_files() {
    let root = docroot_with_secrets();
    let grant = format!("{}::/www::ro", root.join("www").display());
    let server = Server::start(&["--dir", &grant, "--cgi-docroot", "/www", &php()]);
    check_only_scripts_run(&server.url(""), false).await;
    let server = Server::start(&[
        "--dir",
        &grant,
        "--cgi-docroot",
        "/www",
        "--cgi-fallback",
        "/index.php",
        &php(),
    ]);
    check_only_scripts_run(&server.url(""), true).await;

    // --cgi-ext names the extensions that run, and only those.
    let server = Server::start(&[
        "--dir",
        &grant,
        "--cgi-docroot",
        "/www",
        "--cgi-ext",
        "phtml",
        &php(),
    ]);
    let page = client()
        .get(server.url("/page.phtml"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.text().await.unwrap(), "phtml runs");
    assert_eq!(
        client()
            .get(server.url("/page.php"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Wrapped, the adapter follows the same rule.
    let wrapped = root.join("php-app.wasm");
    run_wasmbridge([
        "wrap",
        "--cgi-docroot",
        "/www",
        "-o",
        wrapped.to_str().unwrap(),
        &php(),
    ]);
    let server = Server::start(&["--dir", &grant, wrapped.to_str().unwrap()]);
    check_only_scripts_run(&server.url(""), false).await;
}

// ---- 4. connection timeouts ---------------------------------------------------------------

#[tokio::test]
async fn slow_headers_idle_connections_and_stalled_bodies_are_cut_off() {
    let server = Server::start(&[
        "--header-read-timeout",
        "1s",
        "--keep-alive-timeout",
        "1s",
        "--body-read-timeout",
        "1s",
        "--max-concurrent-connections",
        "20",
        &guest("echo"),
    ]);
    // Twenty clients that never finish their headers would hold every connection slot.
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = connect(&server);
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            stream
        })
        .collect();
    for stream in &mut slow {
        assert!(
            closed_by_server(stream, Duration::from_secs(10)),
            "a slow header was let be"
        );
    }
    let response = client()
        .post(server.url("/"))
        .body("after")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "after");

    // An idle keep-alive connection is closed.
    let mut idle = connect(&server);
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_by_server(&mut idle, Duration::from_secs(10)));

    // A body that stops coming fails the request: the echo has started its answer, which
    // breaks off (no last chunk)...
    let mut stalled = connect(&server);
    stalled
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten..")
        .unwrap();
    let answer = read_all(&mut stalled);
    assert!(
        answer.starts_with("HTTP/1.1 200") && !answer.ends_with("0\r\n\r\n"),
        "{answer}"
    );
    assert!(
        server.wait_for_log(
            "request body timed out: no data for 1s",
            Duration::from_secs(5)
        ),
        "{}",
        server.log()
    );

    // ... and a program that reads the whole body first answers 408.
    let grant = format!("{}::/www::ro", fixtures_php().display());
    let server = Server::start(&[
        "--body-read-timeout",
        "1s",
        "--dir",
        &grant,
        "--cgi-docroot",
        "/www",
        &php(),
    ]);
    let mut stalled = connect(&server);
    stalled
        .write_all(b"POST /hello.php HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten..")
        .unwrap();
    let answer = read_all(&mut stalled);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// What the server sends until it closes the connection (or 10 s pass).
fn read_all(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_client_that_never_sends_its_headers() {
    let mut server = Server::start(&["--header-read-timeout", "2s", &guest("echo")]);
    let mut stream = connect(&server);
    stream.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    // An idle keep-alive connection too.
    let mut idle = connect(&server);
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.is_some(), "still waiting:\n{}", server.log());
}

// ---- 5. a response cut short says so ----------------------------------------------------

/// The body fails after the head: the client must see an error (while it reads the body, or
/// already while it reads the head if the connection broke off first), never a clean end.
async fn check_cut_short(client: reqwest::Client, url: String) {
    let Ok(response) = client.get(url).send().await else {
        return;
    };
    assert_eq!(response.status(), 200);
    assert!(
        response.bytes().await.is_err(),
        "a cut response looked complete"
    );
}

#[tokio::test]
async fn a_response_cut_by_a_deadline_or_trap_ends_with_an_error() {
    let server = Server::start(&["-W", "timeout=1s", &guest_p1("cgi-probe")]);
    for client in [client(), h2c_client()] {
        check_cut_short(client.clone(), server.url("/partial-loop")).await;
        check_cut_short(client, server.url("/partial-trap")).await;
    }
    assert!(server.log().contains("(504)") && server.log().contains("guest trapped"));

    let server = Server::start(&["-W", "timeout=1s", &guest("spin")]);
    for client in [client(), h2c_client()] {
        check_cut_short(client, server.url("/partial")).await;
    }
    let server = Server::start(&[&guest("trap")]);
    for client in [client(), h2c_client()] {
        check_cut_short(client, server.url("/partial")).await;
    }
    // Nothing is wrong with a response that was whole.
    assert_eq!(
        client()
            .get(server.url("/ok"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "still alive\n"
    );
}

#[tokio::test]
async fn a_response_cut_by_a_workers_deadline_ends_with_an_error() {
    let grant = format!("{}::/www::ro", fixtures_php().display());
    let tmp = format!("{}::/tmp", temp_dir("cut-tmp").display());
    let server = Server::start(&[
        "-W",
        "timeout=1s",
        "--cgi-workers",
        "1",
        "--dir",
        &grant,
        "--dir",
        &tmp,
        "--cgi-docroot",
        "/www",
        &php(),
    ]);
    check_cut_short(client(), server.url("/partial.php")).await;
    // The worker it took is replaced.
    let hello = client().get(server.url("/hello.php")).send().await.unwrap();
    assert_eq!(hello.status(), 200);
}

// ---- 6. safe defaults, and a client that leaves stops its guest -------------------------

#[tokio::test]
async fn without_flags_a_request_has_a_memory_cap_and_a_deadline() {
    let server = Server::start(&[&guest("membomb")]);
    assert!(
        server
            .log()
            .contains("memory 512 MiB (-W max-memory-size), deadline 60s (-W timeout)"),
        "{}",
        server.log()
    );
    let response = client().get(server.url("/?mb=2048")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(
        server.rss() < 1 << 30,
        "the bomb went off: {} bytes",
        server.rss()
    );
}

#[tokio::test]
async fn a_client_that_leaves_stops_its_guest() {
    for (program, path) in [
        (guest("spin"), "/"),
        (guest_p1("cgi-probe"), "/loop"),
        // CGI after its head is out, too.
        (guest_p1("cgi-probe"), "/partial-loop"),
    ] {
        let server = Server::start(&["-W", "timeout=60s", &program]);
        // The client sends its request, waits a little and hangs up.
        let mut impatient = connect(&server);
        write!(impatient, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        drop(impatient);
        assert!(
            server.wait_for_log(
                "the client went away; the guest was stopped",
                Duration::from_secs(5)
            ),
            "{path}: {}",
            server.log()
        );
        assert!(idle(server.pid()), "{path}: the guest is still running");
    }
}

// ---- 7. CGI workers cannot be starved ----------------------------------------------------

fn php_workers(workers: &str, extra: &[&str]) -> Server {
    let grant = format!("{}::/www::ro", fixtures_php().display());
    let tmp = format!("{}::/tmp", temp_dir("starve-tmp").display());
    let mut args = vec![
        "-W",
        "timeout=30s",
        "--cgi-workers",
        workers,
        "--dir",
        &grant,
        "--dir",
        &tmp,
        "--cgi-docroot",
        "/www",
    ];
    args.extend(extra);
    let php = php();
    args.push(&php);
    Server::start(&args)
}

#[tokio::test]
async fn slow_clients_cannot_hold_the_workers() {
    let server = php_workers("2", &[]);
    // Two bodies that trickle in, a byte a second...
    let trickling: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = connect(&server);
            stream
                .write_all(b"POST /hello.php HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\na")
                .unwrap();
            stream
        })
        .collect();
    // ... and two clients that never read a 5 MiB page.
    let unread: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = connect(&server);
            stream
                .write_all(b"GET /big.php HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let hello = client().get(server.url("/hello.php")).send().await.unwrap();
    assert_eq!(hello.status(), 200, "{}", server.log());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it waited for the slow clients"
    );
    drop((trickling, unread));
}

#[tokio::test]
async fn a_request_waits_for_a_busy_worker_only_so_long() {
    let server = php_workers("1", &["--cgi-worker-wait", "1s"]);
    let busy = tokio::spawn(client().get(server.url("/loop.php")).send());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = client().get(server.url("/hello.php")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(
        server.wait_for_log("every CGI worker was busy for 1s", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    busy.abort();
}

#[tokio::test]
async fn a_request_body_over_the_limit_is_refused_with_413() {
    let server = Server::start(&["--max-request-body-size", "1K", &guest("echo")]);
    let small = client()
        .post(server.url("/"))
        .body(vec![b'a'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(small.bytes().await.unwrap().len(), 1000);
    let large = client()
        .post(server.url("/"))
        .body(vec![b'a'; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(large.status(), 413);
    // Without a length, too.
    let chunks = futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 600])));
    let chunked = client()
        .post(server.url("/"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    // Refused while sending, or answered: 413, or (the echo's head already out) a body that
    // does not end cleanly.
    if let Ok(response) = chunked {
        let status = response.status();
        assert!(status == 413 || response.bytes().await.is_err(), "{status}");
    }
    // The line may come a moment after the response.
    assert!(
        server.wait_for_log(
            "request body too large: the limit is 1024 bytes",
            Duration::from_secs(10)
        ),
        "{}",
        server.log()
    );

    // CGI workers read the body before a worker takes it: refused there too.
    let server = php_workers("1", &["--max-request-body-size", "1K"]);
    let (status, _) = post_multipart(
        server.url("/upload.php"),
        ("title", "big"),
        ("file", "big.bin", &[7u8; 4096]),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(
        client()
            .get(server.url("/hello.php"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

// ---- 8. header names with `_` -----------------------------------------------------------

async fn check_underscore_headers(base: &str) {
    let page = client()
        .get(format!("{base}/env"))
        .header("X_Remote_User", "evil")
        .header("Content_Type", "text/evil")
        .header("Content_Length", "9")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let vars = vars(&page);
    assert_eq!(
        vars.get("HTTP_X_REMOTE_USER").map(String::as_str),
        Some("admin"),
        "{page}"
    );
    assert_eq!(page.matches("HTTP_X_REMOTE_USER=").count(), 1, "{page}");
    assert!(
        !vars.contains_key("CONTENT_TYPE") && !vars.contains_key("CONTENT_LENGTH"),
        "{page}"
    );
    assert!(!page.contains("evil"), "{page}");
}

#[tokio::test]
async fn header_names_with_underscores_never_become_cgi_variables() {
    let server = Server::start(&["-H", "X-Remote-User: admin", &guest_p1("cgi-probe")]);
    check_underscore_headers(&server.url("")).await;

    let wrapped = wrapped_p1("cgi-probe", &[]);
    let server = Server::start(&["-H", "X-Remote-User: admin", wrapped.to_str().unwrap()]);
    check_underscore_headers(&server.url("")).await;
}

// ---- 10. grants fail closed -------------------------------------------------------------

#[test]
fn a_dir_mode_other_than_ro_or_rw_is_refused() {
    let dir = temp_dir("dir-mode").display().to_string();
    for mode in ["RO", "Ro", "readonly", "r"] {
        let log = start_error(&["--dir", &format!("{dir}::/data::{mode}"), &guest("probe")]);
        assert!(
            log.contains(&format!("`{mode}` is not an access mode")),
            "{log}"
        );
    }
}

// ---- 13. an upload cut short leaves nothing behind --------------------------------------

#[tokio::test]
async fn an_upload_cut_by_the_deadline_leaves_no_temporary_file() {
    for workers in ["0", "1"] {
        let tmp = temp_dir("upload-tmp");
        let grant = format!("{}::/www::ro", fixtures_php().display());
        let tmp_grant = format!("{}::/tmp", tmp.display());
        let server = Server::start(&[
            "-W",
            "timeout=1s",
            "--cgi-workers",
            workers,
            "--dir",
            &grant,
            "--dir",
            &tmp_grant,
            "--cgi-docroot",
            "/www",
            &php(),
        ]);
        let (status, _) = post_multipart(
            server.url("/upload-loop.php"),
            ("title", "x"),
            ("file", "data.bin", &[1u8; 100_000]),
        )
        .await;
        assert_eq!(status, 504);
        let left: Vec<_> = walk(&tmp).into_iter().filter(|p| !p.is_dir()).collect();
        assert!(
            left.is_empty(),
            "left behind in the writable grant: {left:?}"
        );
        // The next upload works.
        let (status, page) = post_multipart(
            server.url("/upload.php"),
            ("title", "y"),
            ("file", "data.bin", &[1u8; 1000]),
        )
        .await;
        assert_eq!(status, 200, "{page}");
    }
}

/// CGI workers keep their instances, and their temporary directories, until the server ends:
/// then they go too, and nothing a request left in them stays in the host's /tmp.
#[tokio::test]
async fn the_temporary_directories_of_cgi_workers_go_with_the_server() {
    let tmp = temp_dir("process-tmp");
    let grant = format!("{}::/www::ro", fixtures_php().display());
    let start = || {
        Server::start_with_env(
            &[
                "--cgi-workers",
                "2",
                "--dir",
                &grant,
                "--cgi-docroot",
                "/www",
                &php(),
            ],
            &[("TMPDIR", tmp.to_str().unwrap())],
        )
    };
    let mut server = start();
    let (status, page) = wasmbridge_tests::get(server.url("/hello.php")).await;
    assert_eq!(status, 200, "{page}");
    let held: Vec<PathBuf> = walk(&tmp);
    assert!(
        !held.is_empty(),
        "the workers have no temporary directories"
    );
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).is_some());
    assert_eq!(walk(&tmp), Vec::<PathBuf>::new(), "{}", server.log());

    // A second signal ends the server at once, with a request still running: the same.
    let mut server = start();
    let looping = tokio::spawn(wasmbridge_tests::get(server.url("/loop.php")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!walk(&tmp).is_empty());
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).is_some());
    looping.abort();
    assert_eq!(walk(&tmp), Vec::<PathBuf>::new(), "{}", server.log());
}

/// Everything under `dir`, directories included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

// ---- 14. a huge header is refused, not a trap -------------------------------------------

#[tokio::test]
async fn a_60_kb_header_is_431_not_a_trap() {
    let big = "a".repeat(60_000);
    let server = Server::start(&[&guest_p1("cgi-probe")]);
    let response = client()
        .get(server.url("/env"))
        .header("x-big", &big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431, "{}", server.log());
    assert!(!server.log().contains("guest trapped"), "{}", server.log());
    assert_eq!(
        client()
            .get(server.url("/env"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let wrapped = wrapped_p1("cgi-probe", &[]);
    let server = Server::start(&[wrapped.to_str().unwrap()]);
    let response = client()
        .get(server.url("/env"))
        .header("x-big", &big)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let page = response.text().await.unwrap();
    assert!(
        status == 431 || (status == 200 && page.contains(&big)),
        "{status}: {}",
        server.log()
    );
    assert!(!server.log().contains("guest trapped"), "{}", server.log());
}

// ---- 15. CGI status, Upgrade, and HTTP_HOST over HTTP/2 ---------------------------------

async fn check_cgi_edges(base: &str, h2: bool) {
    for code in ["101", "100", "199", "600", "999"] {
        let response = client()
            .get(format!("{base}/status-code?code={code}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 502, "Status: {code}");
    }
    for code in ["200", "404", "599"] {
        let response = client()
            .get(format!("{base}/status-code?code={code}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_str(), code);
    }
    let upgrade = client()
        .get(format!("{base}/upgrade"))
        .send()
        .await
        .unwrap();
    assert_eq!(upgrade.status(), 200);
    assert!(upgrade.headers().get("upgrade").is_none());
    if h2 {
        let page = h2c_client()
            .get(format!("{base}/env"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let host = base.trim_start_matches("http://");
        assert_eq!(
            vars(&page).get("HTTP_HOST").map(String::as_str),
            Some(host),
            "{page}"
        );
    }
}

#[tokio::test]
async fn cgi_statuses_outside_200_to_599_and_upgrade_are_not_passed_on() {
    let server = Server::start(&[&guest_p1("cgi-probe")]);
    check_cgi_edges(&server.url(""), true).await;
    let wrapped = wrapped_p1("cgi-probe", &[]);
    let server = Server::start(&[wrapped.to_str().unwrap()]);
    check_cgi_edges(&server.url(""), true).await;
}

// ---- 16. a worker's scripts cannot reach the channel its requests come over -------------

#[tokio::test]
async fn a_worker_script_that_writes_to_its_stdout_forges_no_response() {
    // A script that got hold of its process's stdout writes a whole FastCGI response there.
    let server = Server::start(&["--cgi-workers", "1", &guest_p1("cgi-worker")]);
    let page = |path: &'static str| {
        let url = server.url(path);
        async move {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert_eq!(page("/forge").await, "request 1: /forge\n");
    assert_eq!(page("/next").await, "request 2: /next\n");
    assert!(
        server.wait_for_log("forged response", Duration::from_secs(5)),
        "{}",
        server.log()
    );

    // php-cgi: php://stdout is no way into the channel either.
    let server = php_workers("1", &[]);
    let (status, _) = get_text(&server, "/stdout.php").await;
    assert_eq!(status, 200, "{}", server.log());
    for _ in 0..3 {
        let (status, page) = get_text(&server, "/hello.php").await;
        assert_eq!(status, 200);
        assert!(
            page.contains("Hello from PHP") && !page.contains("forged"),
            "{page}"
        );
    }

    // A program that does not import the channel cannot serve as a worker.
    let log = start_error(&["--cgi-workers", "1", &guest_p1("cgi-probe")]);
    assert!(log.contains("which the program does not import"), "{log}");
}

async fn get_text(server: &Server, path: &str) -> (u16, String) {
    let response = client().get(server.url(path)).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

//! The CPython guest (guests/python, built from Debian's source) serving CGI scripts.

use std::path::PathBuf;

use wasmbridge_tests::{Server, check_python_cases, check_python_upload, client, temp_dir};

fn dist() -> PathBuf {
    let dist = std::env::var_os("WASMBRIDGE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guests/python/dist"));
    assert!(
        dist.join("python.wasm").exists(),
        "{} has no python.wasm; run the README's test command",
        dist.display()
    );
    dist
}

/// A writable scratch directory for the guest's /tmp (the `cgi` module spools uploads there).
fn scratch() -> String {
    format!("{}::/tmp", temp_dir("python-tmp").display())
}

/// Serves `script` (a guest path under /app) with the CPython guest, the way the README says:
/// the stdlib at its configured prefix, `app` at /app, a scratch /tmp, no bytecode writes.
fn start_python(app: &str, script: &str, timeout: &str) -> Server {
    let dist = dist();
    let app = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(app);
    Server::start(&[
        "-W",
        &format!("timeout={timeout}"),
        "--env",
        "TMPDIR=/tmp",
        // The stdlib first, where and as the snapshot was taken (guests/python/README.md).
        "--dir",
        &format!("{}::/usr/local/lib", dist.join("lib").display()),
        "--dir",
        &scratch(),
        "--dir",
        &format!("{}::/app", app.display()),
        dist.join("python.wasm").to_str().unwrap(),
        script,
    ])
}

/// A test script from guests/fixtures/python.
fn start(script: &str) -> Server {
    start_python("../guests/fixtures/python", script, "30s")
}

#[tokio::test]
async fn python_answers_a_get_with_a_query_string() {
    let server = start("/app/hello.py");
    let response = client()
        .get(server.url("/?name=wasm&x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", server.log());
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.starts_with("Hello from Python 3.11."), "{text}");
    assert!(
        text.contains("method: GET\nquery: name=wasm&x=1\n"),
        "{text}"
    );
    assert!(text.contains("field name: wasm\nfield x: 1\n"), "{text}");
}

#[tokio::test]
async fn the_cgi_module_parses_a_urlencoded_post() {
    let server = start("/app/hello.py");
    let response = client()
        .post(server.url("/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("greeting=hello+world&n=42")
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(text.contains("method: POST\n"), "{text}");
    assert!(
        text.contains("field greeting: hello world\nfield n: 42\n"),
        "{text}"
    );
}

#[tokio::test]
async fn an_environment_variable_set_by_one_request_is_gone_in_the_next() {
    let server = start("/app/hello.py");
    let first = client()
        .get(server.url("/?set=secret"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(first.contains("leak: none\n"), "{first}");
    let second = client()
        .get(server.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(second.contains("leak: none\n"), "{second}");
}

fn start_prettyfy() -> Server {
    start_python("../guests/python/apps/prettyfy", "/app/prettyfy.py", "30s")
}

#[tokio::test]
async fn prettyfy_highlights_a_file_with_pygments() {
    let server = start_prettyfy();
    let response = client()
        .get(server.url("/?file=hello.py"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", server.log());
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("<title>hello.py</title>"), "{page}");
    assert!(
        page.contains(r#"<span class="nf">greet</span>"#),
        "not highlighted: {page}"
    );
}

#[tokio::test]
async fn the_path_traversal_attack_on_prettyfy_fails() {
    let server = start_prettyfy();
    // Natively, this joins to the host's /etc/passwd and prints it; here the interpreter sees
    // only the granted directories.
    for attack in [
        "../../../../etc/passwd",
        "/etc/passwd",
        "../../../../../../../../etc/apache2/apache2.conf",
    ] {
        let response = client()
            .get(server.url(&format!("/?file={attack}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{attack}");
        let page = response.text().await.unwrap();
        assert!(
            page.contains("Cannot show") && !page.contains("root:") && !page.contains("ServerRoot"),
            "{page}"
        );
    }
}

#[tokio::test]
async fn a_multipart_upload_is_parsed_by_the_cgi_module() {
    let server = start("/app/cases.py");
    check_python_upload(&server.url(""), || server.log()).await;
}

#[tokio::test]
async fn status_location_cookies_and_a_streamed_5_mib_response() {
    let server = start("/app/cases.py");
    check_python_cases(&server.url("")).await;
}

#[tokio::test]
async fn an_exception_is_a_5xx_with_the_traceback_in_the_log_only() {
    let server = start("/app/cases.py");
    let response = client().get(server.url("/error")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let page = response.text().await.unwrap();
    assert!(
        !page.contains("Traceback") && !page.contains("deliberate"),
        "{page}"
    );
    assert!(server.wait_for_log(
        "error [0] :: app `python`",
        std::time::Duration::from_secs(5)
    ));
    let log = server.log();
    assert!(
        log.contains("stderr [0] :: Traceback (most recent call last):"),
        "{log}"
    );
    assert!(
        log.contains("stderr [0] :: ValueError: a deliberate exception in cases.py"),
        "{log}"
    );
    assert_eq!(server.log_lines("error [0]").len(), 1, "{log}");
}

#[tokio::test]
async fn sys_exit_after_the_response_is_logged() {
    let server = start("/app/cases.py");
    let response = client().get(server.url("/exit")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "bye\n");
    assert!(
        server.wait_for_log(
            "error [0] :: app `python`: the program exited with status 3",
            std::time::Duration::from_secs(5)
        ),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn each_request_from_the_snapshot_gets_its_own_random_seed_argv_and_path() {
    let server = start("/app/cases.py");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let response = client().get(server.url("/random")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let (number, rest) = text.trim().split_once(' ').unwrap();
        assert_eq!(rest, "['/app/cases.py'] /app");
        seen.push(number.to_string());
    }
    assert_ne!(
        seen[0], seen[1],
        "two requests drew the same random numbers"
    );
}

#[tokio::test]
async fn while_true_is_stopped_by_the_deadline() {
    let server = start_python("../guests/fixtures/python", "/app/cases.py", "2s");
    let started = std::time::Instant::now();
    let response = client().get(server.url("/loop")).send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    assert!(
        server.wait_for_log("deadline exceeded", std::time::Duration::from_secs(5)),
        "{}",
        server.log()
    );
    assert_eq!(
        client()
            .get(server.url("/missing"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

/// The stdlib modules web apps use, which all import.
const IMPORTS: &[&str] = &[
    // compression and archives (zlib, bzip2 and xz are built in)
    "zlib",
    "gzip",
    "bz2",
    "lzma",
    "zipfile",
    "tarfile",
    // databases
    "sqlite3",
    "dbm.dumb",
    "shelve",
    // XML and text
    "pyexpat",
    "xml.etree.ElementTree",
    "xml.dom.minidom",
    "xml.sax",
    "html.parser",
    "unicodedata",
    "_multibytecodec",
    "_codecs_jp",
    "csv",
    "json",
    // numbers, hashes, randomness
    "_decimal",
    "decimal",
    "fractions",
    "statistics",
    "hashlib",
    "hmac",
    "secrets",
    "uuid",
    "_sha256",
    "_sha512",
    "_sha3",
    "_blake2",
    "_md5",
    "_sha1",
    "crypt",
    // time
    "datetime",
    "zoneinfo",
    "time",
    "calendar",
    // the web
    "cgi",
    "wsgiref.handlers",
    "wsgiref.simple_server",
    "http.cookies",
    "http.client",
    "urllib.request",
    "email.parser",
    "mimetypes",
    "smtplib",
    // the rest of what frameworks import at start
    "asyncio",
    "threading",
    "subprocess",
    "multiprocessing",
    "socket",
    "select",
    "selectors",
    "signal",
    "tempfile",
    "logging.handlers",
    "concurrent.futures",
    "getpass",
    "locale",
    "pickle",
    "copy",
    "weakref",
    "contextvars",
    "dataclasses",
    "typing",
    "inspect",
    "ast",
    "importlib.metadata",
    "cProfile",
    "faulthandler",
    "array",
    "cmath",
];

/// What cannot import under WASI, and why (guests/python/README.md says the same).
const MISSING: &[(&str, &str)] = &[
    (
        "ssl",
        "no OpenSSL in the build: TLS is the front end's (Apache, or a proxy)",
    ),
    (
        "_hashlib",
        "no OpenSSL: hashlib's builtin md5, sha1, sha2, sha3 and blake2 serve",
    ),
    (
        "ctypes",
        "no foreign function interface: WebAssembly cannot call native code",
    ),
    (
        "_posixsubprocess",
        "WASI cannot start processes (subprocess imports; Popen fails)",
    ),
    ("_multiprocessing", "WASI cannot start processes"),
    ("_posixshmem", "WASI has no shared memory"),
    ("mmap", "WASI cannot map files into memory"),
    ("pwd", "WASI has no users"),
    ("grp", "WASI has no groups"),
    ("spwd", "WASI has no users"),
    ("nis", "WASI has no users"),
    ("fcntl", "WASI has no fcntl and no file locks"),
    (
        "resource",
        "WASI has no resource limits (the host's are the real ones)",
    ),
    ("termios", "WASI has no terminals"),
    ("tty", "WASI has no terminals"),
    ("pty", "WASI has no terminals"),
    ("readline", "WASI has no terminals"),
    ("curses", "WASI has no terminals"),
    (
        "syslog",
        "WASI has no syslog: write to stderr, the server's log",
    ),
    ("_dbm", "no ndbm library in the build: dbm.dumb serves"),
    ("_gdbm", "no gdbm library in the build: dbm.dumb serves"),
    ("_uuid", "no libuuid in the build: uuid works without it"),
    ("tkinter", "not shipped: no GUI"),
];

#[tokio::test]
async fn the_stdlib_modules_that_import_and_the_ones_that_cannot_under_wasi() {
    let server = start("/app/modules.py");
    let names: Vec<&str> = IMPORTS
        .iter()
        .copied()
        .chain(MISSING.iter().map(|(name, _)| *name))
        .collect();
    let response = client()
        .get(server.url(&format!("/?{}", names.join(","))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", server.log());
    let report = response.text().await.unwrap();
    let result = |name: &str| -> String {
        report
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} not reported:\n{report}"))
            .to_string()
    };
    let failed: Vec<String> = IMPORTS
        .iter()
        .filter(|name| result(name) != "ok")
        .map(|name| format!("{name}: {}", result(name)))
        .collect();
    assert!(
        failed.is_empty(),
        "these should import:\n{}",
        failed.join("\n")
    );
    let imported: Vec<String> = MISSING
        .iter()
        .filter(|(name, _)| !result(name).starts_with("ModuleNotFoundError"))
        .map(|(name, why)| format!("{name} ({why}): {}", result(name)))
        .collect();
    assert!(
        imported.is_empty(),
        "these were not expected to import (update MISSING and the README):\n{}",
        imported.join("\n")
    );
}

//! Attacks on mod_wasm inside a real Apache httpd, each tried for real: Apache's user against
//! the compile cache, a site's author against the sandbox (.htaccess), hostile clients and
//! broken programs against the server. (`wasmbridge serve`'s side: hardening.rs.)

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wasmbridge_tests::apache::Apache;
use wasmbridge_tests::{client, get, h2c_client, readable, temp_dir};

fn is_root() -> bool {
    String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
        .unwrap()
        .trim()
        == "0"
}

/// Runs a command as Apache's user, www-data; whether it succeeded.
fn as_www_data(args: &[&str]) -> bool {
    Command::new("setpriv")
        .args([
            "--reuid=www-data",
            "--regid=www-data",
            "--clear-groups",
            "--",
        ])
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect()
}

/// A component at `/a`, compiled into `cache`, once it has answered (the port may take
/// connections before Apache has finished starting).
async fn serving(module: &str, cache: &Path) -> Apache {
    let apache = Apache::start(
        "event",
        &format!(
            "WasmCacheDir {}\n<Location /a>\n SetHandler wasm-handler\n \
             WasmModule {{fixtures}}/wasm/{module}.wasm\n</Location>",
            cache.display()
        ),
    );
    get(apache.url("/a")).await;
    apache
}

// ---- 1. the compile cache ---------------------------------------------------------------

#[tokio::test]
async fn apaches_user_can_neither_swap_nor_plant_compiled_code() {
    if !is_root() {
        eprintln!("note: not root: Apache runs as one user, and there is nobody to attack it");
        return;
    }
    let cache = temp_dir("apache-cache-attack");
    // The entries of two apps: hello_http (what /a should run) and probe (the attacker's pick).
    drop(serving("hello_http", &cache).await);
    let hello = entries(&cache);
    drop(serving("probe", &cache).await);
    let probe: Vec<PathBuf> = entries(&cache)
        .into_iter()
        .filter(|e| !hello.contains(e))
        .collect();
    let (hello, probe) = (&hello[0], &probe[0]);

    // The cache as an earlier mod_wasm left it, User's own; User swaps the entries.
    Command::new("chown")
        .args(["-R", "www-data:www-data"])
        .arg(&cache)
        .status()
        .unwrap();
    assert!(as_www_data(&[
        "cp",
        probe.to_str().unwrap(),
        hello.to_str().unwrap()
    ]));

    let apache = serving("hello_http", &cache).await;
    let (status, page) = get(apache.url("/a")).await;
    assert_eq!(
        (status, page.as_str()),
        (200, "Hello from WebAssembly!\n"),
        "{}",
        apache.error_log()
    );
    assert!(
        apache.error_log().contains("it belongs to root now"),
        "{}",
        apache.error_log()
    );

    // Now the cache is root's: User can change nothing in it.
    let planted = cache.join("planted.cwasm");
    assert!(
        !as_www_data(&["touch", planted.to_str().unwrap()]),
        "User wrote into the cache"
    );
    assert!(!as_www_data(&[
        "cp",
        probe.to_str().unwrap(),
        hello.to_str().unwrap()
    ]));
    assert!(!as_www_data(&[
        "mv",
        probe.to_str().unwrap(),
        hello.to_str().unwrap()
    ]));
    let meta = std::fs::metadata(&cache).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!((meta.uid(), meta.mode() & 0o022), (0, 0));
    for entry in entries(&cache) {
        let meta = std::fs::metadata(&entry).unwrap();
        assert_eq!(
            (meta.uid(), meta.mode() & 0o022),
            (0, 0),
            "{}",
            entry.display()
        );
    }
}

#[test]
fn a_cache_dir_of_another_user_is_refused_at_start() {
    if !is_root() {
        return;
    }
    let cache = temp_dir("apache-cache-nobody");
    Command::new("chown")
        .arg("nobody")
        .arg(&cache)
        .status()
        .unwrap();
    let apache = Apache::launch(
        "event",
        &format!(
            "WasmCacheDir {}\n<Location /a>\n SetHandler wasm-handler\n \
             WasmModule {{fixtures}}/wasm/hello_http.wasm\n</Location>",
            cache.display()
        ),
    );
    assert!(
        apache.wait_for_log("is not safe to load code from", Duration::from_secs(30)),
        "{}",
        apache.error_log()
    );
}

// ---- 2, 15. what a CGI program may not say ----------------------------------------------

const PROBE: &str = "<Location /probe>\n SetHandler wasm-handler\n \
     WasmModule {fixtures}/wasm-p1/cgi-probe.wasm\n WasmEnableCGI On\n</Location>\n";

#[tokio::test]
async fn a_cgi_content_length_that_lies_and_bad_statuses_stop_at_mod_wasm() {
    let apache = Apache::start("event", PROBE);
    let client = client();
    for _ in 0..2 {
        let response = client
            .get(apache.url("/probe/length-lie"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", apache.error_log());
        assert_ne!(
            response
                .headers()
                .get("content-length")
                .map(|v| v.to_str().unwrap()),
            Some("5")
        );
        assert_eq!(response.bytes().await.unwrap().len(), 150_000);
        // The keep-alive connection is whole.
        let next = client.get(apache.url("/probe/env")).send().await.unwrap();
        assert!(next.text().await.unwrap().contains("REQUEST_METHOD=GET"));
    }
    for code in ["101", "100", "600"] {
        let (status, _) = get(apache.url(&format!("/probe/status-code?code={code}"))).await;
        assert_eq!(status, 502, "Status: {code}");
    }
    let upgrade = client
        .get(apache.url("/probe/upgrade"))
        .send()
        .await
        .unwrap();
    assert!(upgrade.headers().get("upgrade").is_none());
}

// ---- 3. only scripts run ----------------------------------------------------------------

#[tokio::test]
async fn a_handler_over_a_whole_directory_runs_only_its_scripts() {
    let root = temp_dir("apache-secrets");
    let www = root.join("www");
    for dir in ["sub", ".git"] {
        std::fs::create_dir_all(www.join(dir)).unwrap();
    }
    for (file, text) in [
        ("page.php", "<?php echo 'page runs';"),
        (".env", "DB_PASSWORD=hunter2\n"),
        ("notes.txt", "the password is hunter2\n"),
        ("sub/index.py", "print('hunter2')\n"),
        (".git/config.php", "<?php echo 'hunter2';"),
    ] {
        std::fs::write(www.join(file), text).unwrap();
    }
    readable(&root);
    let apache = Apache::start(
        "event",
        &format!(
            "LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so\n\
             Alias /app {www}\n\
             <Directory {www}>\n SetHandler wasm-handler\n WasmModule {{fixtures}}/php/php-cgi.wasm\n \
             WasmMapDir /www {www} ro\n WasmEnableCGI On\n WasmMapCGIFileNames On\n</Directory>",
            www = www.display()
        ),
    );
    let (status, page) = get(apache.url("/app/page.php")).await;
    assert_eq!(
        (status, page.as_str()),
        (200, "page runs"),
        "{}",
        apache.error_log()
    );
    for path in [
        "/app/.env",
        "/app/notes.txt",
        "/app/sub/index.py",
        "/app/.git/config.php",
    ] {
        let (status, page) = get(apache.url(path)).await;
        assert_eq!(status, 404, "{path}: {page}");
        assert!(!page.contains("hunter2"), "{path}: {page}");
    }
}

// ---- 5, 6, 12. a response cut short, a client that leaves, a body that trickles ---------

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

/// CPU time of the Apache processes started from `conf`, in clock ticks.
fn apache_cpu(conf: &Path) -> u64 {
    let conf = conf.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            cmdline
                .split(|b| *b == 0)
                .any(|a| a == conf.as_bytes())
                .then_some(())?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?)
        })
        .sum()
}

#[tokio::test]
async fn responses_cut_short_end_with_an_error_and_clients_that_leave_stop_their_guest() {
    let apache = Apache::start(
        "event",
        &format!(
            "LoadModule http2_module /usr/lib/apache2/modules/mod_http2.so\n\
             Protocols h2c http/1.1\n\
             {PROBE}<Location /probe>\n WasmTimeout 1\n</Location>\n\
             <Location /spin>\n SetHandler wasm-handler\n WasmModule {{fixtures}}/wasm/spin.wasm\n \
             WasmTimeout 60\n</Location>\n\
             <Location /trap>\n SetHandler wasm-handler\n WasmModule {{fixtures}}/wasm/trap.wasm\n</Location>\n"
        ),
    );
    for client in [client(), h2c_client()] {
        check_cut_short(client.clone(), apache.url("/probe/partial-loop")).await;
        check_cut_short(client.clone(), apache.url("/probe/partial-trap")).await;
        check_cut_short(client, apache.url("/trap/partial")).await;
    }
    assert!(
        apache.wait_for_log("(504)", Duration::from_secs(5)),
        "{}",
        apache.error_log()
    );

    // A client that hangs up on a guest that computes: the guest is stopped, not left to
    // its 60 s deadline.
    for (stopped, path) in [(1, "/spin/"), (2, "/spin/partial")] {
        let mut stream = TcpStream::connect(("127.0.0.1", apache.port)).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        drop(stream);
        let gone = "the client went away; the guest was stopped";
        let deadline = Instant::now() + Duration::from_secs(5);
        while apache.error_log().matches(gone).count() < stopped && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            apache.error_log().matches(gone).count(),
            stopped,
            "{path}: {}",
            apache.error_log()
        );
        let before = apache_cpu(apache.conf_path());
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            apache_cpu(apache.conf_path()) - before < 50,
            "{path}: the guest still runs"
        );
    }
}

#[tokio::test]
async fn the_deadline_runs_while_apache_reads_a_trickling_body() {
    let apache = Apache::start("event", &php_at("WasmTimeout 2"));
    // Compiled (once per module, seconds on a busy machine) before the clock below starts.
    assert_eq!(
        wasmbridge_tests::get(apache.url("/php/hello.php")).await.0,
        200,
        "{}",
        apache.error_log()
    );
    let mut stream = TcpStream::connect(("127.0.0.1", apache.port)).unwrap();
    stream
        .write_all(b"POST /php/hello.php HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // A byte every 300 ms, never idle long enough for Apache's own timeouts, until an answer
    // comes; then read it to its end.
    while started.elapsed() < Duration::from_secs(15) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) if answer.is_empty() => {
                let _ = stream.write_all(b"a");
            }
            Err(_) => break,
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 504"),
        "{answer}\n{}",
        apache.error_log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "cut only after {:?}",
        started.elapsed()
    );
}

// ---- an instance's temporary directory ------------------------------------------------

/// A child's CGI workers keep their temporary directories while they live; when Apache stops,
/// the children take them along.
#[tokio::test]
async fn the_temporary_directories_of_cgi_workers_go_with_their_child() {
    let apache = Apache::start("event", &php_at("WasmCGIWorkers 2"));
    let (status, page) = get(apache.url("/php/hello.php")).await;
    assert_eq!(status, 200, "{page}\n{}", apache.error_log());
    let entries = || std::fs::read_dir(apache.tmp_dir()).unwrap().count();
    assert!(entries() > 0, "the workers have no temporary directories");
    apache.stop();
    let left: Vec<_> = std::fs::read_dir(apache.tmp_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(
        left.is_empty(),
        "left behind: {left:?}\n{}",
        apache.error_log()
    );
}

/// php-cgi.wasm serving the PHP fixtures at /php, with `directives` in its section.
fn php_at(directives: &str) -> String {
    format!(
        "LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so\n\
         Alias /php {{fixtures}}/www/php\n\
         <Directory {{fixtures}}/www/php>\n SetHandler wasm-handler\n \
         WasmModule {{fixtures}}/php/php-cgi.wasm\n WasmMapDir /www {{fixtures}}/www/php ro\n \
         WasmEnableCGI On\n WasmMapCGIFileNames On\n {directives}\n</Directory>\n"
    )
}

// ---- 7, body limit. slow clients and large bodies ---------------------------------------

#[tokio::test]
async fn workers_serve_while_slow_clients_trickle_and_large_bodies_are_refused() {
    let apache = Apache::start(
        "event",
        &format!(
            "LimitRequestBody 1024\n{}\
             <Location /echo>\n SetHandler wasm-handler\n WasmModule {{fixtures}}/wasm/echo.wasm\n</Location>\n",
            php_at("WasmCGIWorkers 2\n WasmTimeout 30")
        ),
    );
    let trickling: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", apache.port)).unwrap();
            stream
                .write_all(
                    b"POST /php/hello.php HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\na",
                )
                .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let (status, page) = get(apache.url("/php/hello.php")).await;
    assert_eq!(status, 200, "{page}\n{}", apache.error_log());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it waited for the slow clients"
    );
    drop(trickling);

    let large = client()
        .post(apache.url("/echo"))
        .body(vec![b'a'; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(large.status(), 413);
    let small = client()
        .post(apache.url("/echo"))
        .body(vec![b'a'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(small.bytes().await.unwrap().len(), 1000);
}

// ---- 8. header names with `_` -----------------------------------------------------------

#[tokio::test]
async fn header_names_with_underscores_reach_no_cgi_variable_under_apache() {
    let wrapped = wasmbridge_tests::wrapped_p1("cgi-probe", &[]);
    readable(wrapped.parent().unwrap());
    let apache = Apache::start(
        "event",
        &format!(
            "<Location />\n SetHandler wasm-handler\n WasmModule {}\n</Location>\n{PROBE}\
             RequestHeader set X-Remote-User admin\n",
            wrapped.display()
        )
        .replace(
            "RequestHeader",
            "LoadModule headers_module /usr/lib/apache2/modules/mod_headers.so\nRequestHeader",
        ),
    );
    for path in ["/probe/env", "/env"] {
        let page = client()
            .get(apache.url(path))
            .header("X_Remote_User", "evil")
            .header("Content_Type", "text/evil")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("HTTP_X_REMOTE_USER=admin\n"),
            "{path}: {page}"
        );
        assert!(!page.contains("evil"), "{path}: {page}");
    }
}

// ---- 9. .htaccess cannot widen the sandbox ----------------------------------------------

#[tokio::test]
async fn htaccess_cannot_grant_a_module_anything() {
    let site = temp_dir("apache-htaccess");
    std::fs::write(
        site.join(".htaccess"),
        "SetHandler wasm-handler\nWasmModule WASM\nWasmMapDir /host /\n".replace(
            "WASM",
            &wasmbridge_tests::apache::fixtures()
                .join("wasm/probe.wasm")
                .to_string_lossy(),
        ),
    )
    .unwrap();
    readable(&site);
    let apache = Apache::start(
        "event",
        &format!(
            "LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so\n\
             Alias /site {site}\n<Directory {site}>\n AllowOverride All\n</Directory>",
            site = site.display()
        ),
    );
    let (status, page) = get(apache.url("/site/read?path=/host/etc/passwd")).await;
    assert_eq!(status, 500, "{page}");
    assert!(!page.contains("root:"), "{page}");
    assert!(
        apache.error_log().contains("not allowed here"),
        "{}",
        apache.error_log()
    );
}

// ---- 10. configtest checks what requests will see -----------------------------------------

#[test]
fn configtest_checks_merged_sections_and_sizes() {
    let cases = [
        (
            "<Location /x>\n SetHandler wasm-handler\n WasmMaxMemory 99999999999G\n</Location>",
            "is not a size from 1 byte to 4G",
        ),
        (
            "<Location /x>\n WasmRoot {fixtures}/wasm\n</Location>\n\
             <Location /x/y>\n SetHandler wasm-handler\n WasmModule missing.wasm\n</Location>",
            "cannot read",
        ),
        (
            "<Location /x/y>\n SetHandler wasm-handler\n WasmModule missing.wasm\n</Location>",
            "a relative path, but no WasmRoot of this server holds it",
        ),
    ];
    for (body, reason) in cases {
        let apache = Apache::configure("event", body);
        let (ok, output) = apache.configtest();
        assert!(!ok, "{body}: accepted\n{output}");
        assert!(
            output.contains(reason),
            "{body}: no `{reason}` in\n{output}"
        );
    }
    // A relative module whose WasmRoot an enclosing section gives is checked and served.
    let apache = Apache::start(
        "event",
        "<Location /x>\n WasmRoot {fixtures}/wasm\n</Location>\n\
         <Location /x/y>\n SetHandler wasm-handler\n WasmModule hello_http.wasm\n</Location>",
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, page) = runtime.block_on(get(apache.url("/x/y")));
    assert_eq!((status, page.as_str()), (200, "Hello from WebAssembly!\n"));
}

// ---- 11. bytes that are not UTF-8 -------------------------------------------------------

#[tokio::test]
async fn a_path_that_is_not_utf8_is_400_and_header_bytes_pass_as_they_are() {
    let apache = Apache::start(
        "event",
        "<Location />\n SetHandler wasm-handler\n WasmModule {fixtures}/wasm/probe.wasm\n</Location>",
    );
    let raw = |request: &[u8]| {
        let mut stream = TcpStream::connect(("127.0.0.1", apache.port)).unwrap();
        stream.write_all(request).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        answer
    };
    let answer = raw(b"GET /caf\xe9 HTTP/1.0\r\nHost: x\r\n\r\n");
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let answer =
        raw(b"GET /header-bytes?name=x-latin HTTP/1.0\r\nHost: x\r\nX-Latin: caf\xe9\r\n\r\n");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        answer.ends_with(b"\r\n\r\ncaf\xe9"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // A raw UTF-8 path reaches the app percent-encoded, as a client should have sent it.
    let answer = raw("GET /caf\u{e9} HTTP/1.0\r\nHost: x\r\n\r\n".as_bytes());
    assert!(
        answer.ends_with(b"no route /caf%C3%A9\n"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

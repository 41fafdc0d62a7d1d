//! `wasmbridge wrap`: CGI programs made into standalone wasi:http components by the CGI
//! adapter, served by `wasmbridge serve` as components (no CGI mode), by Apache's mod_wasm and
//! by `wasmtime serve`, and checked like the same apps in the host's CGI mode.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use wasmbridge_tests::apache::{Apache, fixtures};
use wasmbridge_tests::{
    Server, binary, check_php_session, check_php_upload, check_python_cases, check_python_upload,
    check_under_wasmtime_serve, client, get, interpreter_dist, no_redirect_client, post_form,
    readable, temp_dir,
};

/// Runs `wasmbridge wrap ARGS... -o OUT` and returns OUT, or the error it printed.
fn try_wrap(args: &[&str]) -> Result<PathBuf, String> {
    let out = temp_dir("wrapped").join("app.wasm");
    let output = Command::new(binary())
        .arg("wrap")
        .arg("-o")
        .arg(&out)
        .args(args)
        .output()
        .unwrap();
    if output.status.success() {
        Ok(out)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn wrap(args: &[&str]) -> PathBuf {
    try_wrap(args).unwrap_or_else(|error| panic!("wasmbridge wrap {args:?} failed:\n{error}"))
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// The CPython guest wrapped around `script` (a guest path under /app), with the scratch
/// directory the `cgi` module spools uploads to fixed in its environment.
fn wrap_python(script: &str) -> PathBuf {
    let python = interpreter_dist("python", "python.wasm").join("python.wasm");
    wrap(&["--env", "TMPDIR=/tmp", python.to_str().unwrap(), script])
}

/// The grants a wrapped Python app is served with: the stdlib where the snapshot was taken,
/// the app at /app, a scratch /tmp. (In wasmtime's `--dir` syntax, which has no `::ro`.)
fn python_dirs(app: &Path) -> Vec<String> {
    let dist = interpreter_dist("python", "python.wasm");
    vec![
        "--dir".into(),
        format!("{}::/usr/local/lib", dist.join("lib").display()),
        "--dir".into(),
        format!("{}::/tmp", temp_dir("wrapped-tmp").display()),
        "--dir".into(),
        format!("{}::/app", app.display()),
    ]
}

fn serve(wasm: &Path, dirs: &[String], timeout: &str) -> Server {
    let mut args: Vec<&str> = vec!["-W", timeout];
    args.extend(dirs.iter().map(String::as_str));
    args.push(wasm.to_str().unwrap());
    Server::start(&args)
}

#[tokio::test]
async fn a_wrapped_python_script_answers_get_and_post_as_a_component() {
    let wasm = wrap_python("/app/hello.py");
    let dirs = python_dirs(&repo("guests/fixtures/python"));
    let server = serve(&wasm, &dirs, "timeout=30s");
    let (status, text) = get(server.url("/?name=wasm&x=1")).await;
    assert_eq!(status, 200, "{}", server.log());
    assert!(text.starts_with("Hello from Python 3.11."), "{text}");
    assert!(
        text.contains("method: GET\nquery: name=wasm&x=1\n"),
        "{text}"
    );
    assert!(text.contains("field name: wasm\nfield x: 1\n"), "{text}");
    let (_, text) = post_form(server.url("/"), "greeting=hello+world&n=42").await;
    assert!(text.contains("method: POST\n"), "{text}");
    assert!(
        text.contains("field greeting: hello world\nfield n: 42\n"),
        "{text}"
    );
    // Served as a component: no CGI mode in between.
    assert!(!server.log().contains("CGI"), "{}", server.log());

    // The same component under an unmodified `wasmtime serve`, with the same grants.
    let (_, expected) = get(server.url("/?name=wasmtime")).await;
    let args: Vec<&str> = dirs.iter().map(String::as_str).collect();
    check_under_wasmtime_serve(&wasm, &args, "/?name=wasmtime", &expected);
}

#[tokio::test]
async fn wrapped_python_cases_match_the_host_cgi_mode() {
    let wasm = wrap_python("/app/cases.py");
    let server = serve(
        &wasm,
        &python_dirs(&repo("guests/fixtures/python")),
        "timeout=30s",
    );
    check_python_cases(&server.url("")).await;

    check_python_upload(&server.url(""), || server.log()).await;

    let random = get(server.url("/random")).await.1;
    assert!(
        random.trim().ends_with(" ['/app/cases.py'] /app"),
        "{random}"
    );
}

#[tokio::test]
async fn a_wrapped_python_exception_is_a_502_with_the_traceback_in_the_log() {
    let wasm = wrap_python("/app/cases.py");
    let server = serve(
        &wasm,
        &python_dirs(&repo("guests/fixtures/python")),
        "timeout=2s",
    );
    let (status, page) = get(server.url("/error")).await;
    assert_eq!(status, 502, "{}", server.log());
    assert!(!page.contains("Traceback"), "{page}");
    assert!(
        server.wait_for_log(
            "stderr [0] :: cgi adapter: the program exited with status 1 before its CGI header block",
            Duration::from_secs(5)
        ),
        "{}",
        server.log()
    );
    assert!(
        server
            .log()
            .contains("stderr [0] :: ValueError: a deliberate exception in cases.py"),
        "{}",
        server.log()
    );

    // sys.exit(3) after the response: the client has it; the log says how the program ended.
    assert_eq!(get(server.url("/exit")).await, (200, "bye\n".into()));
    assert!(
        server.wait_for_log(
            "stderr [1] :: cgi adapter: the program exited with status 3 after its response",
            Duration::from_secs(5)
        ),
        "{}",
        server.log()
    );
    assert!(server.log_lines("error [1]").is_empty(), "{}", server.log());

    // An endless loop meets the host's deadline, and the next request is served.
    assert_eq!(get(server.url("/loop")).await.0, 504);
    assert_eq!(get(server.url("/missing")).await.0, 404);
}

#[tokio::test]
async fn the_path_traversal_attack_fails_on_wrapped_prettyfy() {
    let wasm = wrap_python("/app/prettyfy.py");
    let server = serve(
        &wasm,
        &python_dirs(&repo("guests/python/apps/prettyfy")),
        "timeout=30s",
    );
    let (status, page) = get(server.url("/?file=hello.py")).await;
    assert_eq!(status, 200, "{}", server.log());
    assert!(page.contains(r#"<span class="nf">greet</span>"#), "{page}");
    for attack in [
        "../../../../etc/passwd",
        "/etc/passwd",
        "../../../../../../../../etc/apache2/apache2.conf",
    ] {
        let (status, page) = get(server.url(&format!("/?file={attack}"))).await;
        assert_eq!(status, 404, "{attack}");
        assert!(
            !page.contains("root:") && !page.contains("ServerRoot"),
            "{page}"
        );
    }
}

/// php-cgi wrapped for a docroot at /www: URL paths name scripts, as in the host's CGI mode.
fn wrap_php() -> PathBuf {
    let php = interpreter_dist("php", "php-cgi.wasm").join("php-cgi.wasm");
    wrap(&["--cgi-docroot", "/www", php.to_str().unwrap()])
}

fn php_dirs(data: &Path) -> Vec<String> {
    vec![
        "--dir".into(),
        format!("{}::/www::ro", repo("guests/fixtures/php").display()),
        "--dir".into(),
        format!("{}::/tmp", temp_dir("wrapped-php-tmp").display()),
        "--dir".into(),
        format!("{}::/data", data.display()),
    ]
}

#[tokio::test]
async fn a_wrapped_php_docroot_matches_the_host_cgi_mode() {
    let wasm = wrap_php();
    let server = serve(
        &wasm,
        &php_dirs(&temp_dir("wrapped-php-data")),
        "timeout=3s",
    );
    assert_eq!(
        get(server.url("/")).await,
        (200, "index of /index.php\nuri: /\n".into()),
        "{}",
        server.log()
    );
    assert_eq!(
        get(server.url("/sub/")).await,
        (200, "sub index: /sub/index.php\n".into())
    );
    let (_, page) = get(server.url("/path.php/extra/x?q=1")).await;
    assert!(
        page.contains("SCRIPT_NAME=/path.php\nSCRIPT_FILENAME=/www/path.php\nPATH_INFO=/extra/x\nREQUEST_URI=/path.php/extra/x?q=1\nQUERY_STRING=q=1\nDOCUMENT_ROOT=/www\n"),
        "{page}"
    );
    // RFC 3875: PATH_INFO is decoded (REQUEST_URI is not), as every front end passes it.
    let (_, page) = get(server.url("/path.php/J%C3%BCrgen?q=1")).await;
    assert!(
        page.contains("PATH_INFO=/Jürgen\nREQUEST_URI=/path.php/J%C3%BCrgen?q=1\n"),
        "{page}"
    );
    // The Host header reaches a wasi:http guest as the authority; PHP still sees HTTP_HOST.
    assert!(
        page.ends_with(&format!("HTTP_HOST={}\nPATH=\n", server.addr)),
        "{page}"
    );
    assert_eq!(get(server.url("/articles/42")).await.0, 404);

    let (_, page) = post_form(server.url("/form.php"), "n=x1&email=nope&name=wasm").await;
    assert!(
        page.starts_with("method: POST\npost n: x1\npost email: nope\npost name: wasm\n"),
        "{page}"
    );

    check_php_upload(&server.url(""), || server.log()).await;
    check_php_session(&server.url(""), || server.log()).await;

    let created = post_form(server.url("/notes.php?action=create"), "text=wrapped").await;
    assert_eq!(created, (200, "{\"id\":1}".into()), "{}", server.log());
    assert!(
        get(server.url("/notes.php"))
            .await
            .1
            .contains("\"text\":\"wrapped\"")
    );

    let headers = client()
        .get(server.url("/headers.php"))
        .header("cookie", "flavour=ginger")
        .send()
        .await
        .unwrap();
    assert_eq!(headers.status(), 201);
    assert_eq!(headers.headers()["x-powered-by-guest"], "php-cgi.wasm");
    assert_eq!(headers.text().await.unwrap(), "cookie: ginger\n");
}

#[tokio::test]
async fn wrapped_php_fails_safely() {
    let wasm = wrap_php();
    let server = serve(
        &wasm,
        &php_dirs(&temp_dir("wrapped-php-data")),
        "timeout=3s",
    );
    let (status, page) = get(server.url("/fatal.php")).await;
    assert_eq!(status, 500, "{}", server.log());
    assert!(!page.contains("undefined_function"), "{page}");
    assert!(
        server.wait_for_log(
            "Call to undefined function undefined_function_for_the_test()",
            Duration::from_secs(5)
        ),
        "{}",
        server.log()
    );
    for file in ["/etc/passwd", "/www/../../../../etc/passwd"] {
        let (status, page) = get(server.url(&format!("/read.php?file={file}"))).await;
        assert_eq!(status, 404, "{file}: {page}");
        assert!(!page.contains("root:"), "{page}");
    }
    assert_eq!(
        get(server.url("/write.php?file=/www/index.php")).await.0,
        403
    );
    assert_eq!(get(server.url("/loop.php")).await.0, 504);
    assert_eq!(get(server.url("/")).await.0, 200);
}

/// Apache with mod_wasm serving a wrapped app at `/` as a component, with `grants`.
fn apache_serving(wasm: &Path, grants: &str) -> Apache {
    let public = temp_dir("wrapped-public");
    std::fs::copy(wasm, public.join("app.wasm")).unwrap();
    Apache::start(
        "event",
        &format!(
            "<Location />\n SetHandler wasm-handler\n WasmModule {}/app.wasm\n{grants}\n \
             WasmTimeout 3\n</Location>",
            readable(&public).display()
        ),
    )
}

fn writable(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    Command::new("chmod").arg("777").arg(&dir).status().unwrap();
    dir
}

#[tokio::test]
async fn apache_serves_wrapped_python_and_php() {
    let python = wrap_python("/app/cases.py");
    let apache = apache_serving(
        &python,
        &format!(
            " WasmMapDir /usr/local/lib {{fixtures}}/python/lib ro\n \
             WasmMapDir /app {{fixtures}}/www/cases ro\n WasmMapDir /tmp {}",
            writable("wrapped-apache-tmp").display()
        ),
    );
    assert_eq!(
        get(apache.url("/missing")).await.0,
        404,
        "{}",
        apache.error_log()
    );
    check_python_cases(&apache.url("")).await;
    check_python_upload(&apache.url(""), || apache.error_log()).await;
    assert_eq!(get(apache.url("/error")).await.0, 502);
    assert!(
        apache.wait_for_log("ValueError: a deliberate exception", Duration::from_secs(5)),
        "{}",
        apache.error_log()
    );
    drop(apache);

    let php = wrap_php();
    let apache = apache_serving(
        &php,
        &format!(
            " WasmMapDir /www {{fixtures}}/www/php ro\n WasmMapDir /tmp {}\n WasmMapDir /data {}",
            writable("wrapped-apache-php-tmp").display(),
            writable("wrapped-apache-php-data").display()
        ),
    );
    assert_eq!(
        get(apache.url("/")).await,
        (200, "index of /index.php\nuri: /\n".into()),
        "{}",
        apache.error_log()
    );
    let created = post_form(apache.url("/notes.php?action=create"), "text=from+apache").await;
    assert_eq!(created, (200, "{\"id\":1}".into()));
    let fixtures_conf = format!("{}/../httpd.conf", fixtures().display());
    for file in ["/etc/apache2/apache2.conf", fixtures_conf.as_str()] {
        assert_eq!(
            get(apache.url(&format!("/read.php?file={file}"))).await.0,
            404
        );
    }
    assert_eq!(get(apache.url("/fatal.php")).await.0, 500);
    assert_eq!(get(apache.url("/loop.php")).await.0, 504);
    assert_eq!(get(apache.url("/")).await.0, 200);
}

#[test]
fn wrap_says_what_it_cannot_wrap() {
    // A component is not a CGI program.
    let echo = wasmbridge_tests::guest("echo");
    let error = try_wrap(&[&echo]).unwrap_err();
    assert!(error.contains("it is a component already"), "{error}");

    // A module that imports a function preview-1 does not have (a WASIX-style socket call).
    let module = [
        &b"\0asm\x01\0\0\0"[..],
        b"\x01\x04\x01\x60\x00\x00",
        b"\x02\x24\x01\x16wasi_snapshot_preview1\x09sock_open\x00\x00",
        b"\x03\x02\x01\x00",
        b"\x07\x0a\x01\x06_start\x00\x01",
        b"\x0a\x04\x01\x02\x00\x0b",
    ]
    .concat();
    let path = temp_dir("wrap-bad").join("sockets.wasm");
    std::fs::write(&path, module).unwrap();
    let error = try_wrap(&[path.to_str().unwrap()]).unwrap_err();
    assert!(
        error.contains("the CGI adapter does not provide: sock_open"),
        "{error}"
    );
}

/// The Rust CGI fixture (guests/fixtures/cgi-probe) wrapped with arguments and a fixed
/// environment: the CGI edge cases, as the adapter handles them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_handles_the_cgi_edge_cases() {
    let probe = wasmbridge_tests::guest_p1("cgi-probe");
    let wasm = wrap(&[
        "--env",
        "APP_MODE=demo",
        "--env",
        "QUERY_STRING=fixed",
        &probe,
        "one",
        "two",
    ]);
    let server = serve(&wasm, &[], "timeout=2s");

    // argv and the environment: meta-variables, with the fixed ones winning over the request.
    assert_eq!(
        get(server.url("/args")).await,
        (200, "cgi-probe.wasm\none\ntwo\n".into())
    );
    let (_, env) = get(server.url("/env?x=1")).await;
    for line in [
        "APP_MODE=demo",
        "QUERY_STRING=fixed",
        "REQUEST_METHOD=GET",
        "GATEWAY_INTERFACE=CGI/1.1",
        "PATH_INFO=/env",
        "REQUEST_URI=/env?x=1",
        "SCRIPT_FILENAME=two",
        &format!("HTTP_HOST={}", server.addr),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing in:\n{env}");
    }

    // An 8 MiB chunked upload streams through stdin and back out of stdout.
    let body: Vec<u8> = (0..8 << 20).map(|i| (i % 253) as u8).collect();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let echo = client()
        .post(server.url("/echo"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(echo.status(), 200);
    assert_eq!(echo.bytes().await.unwrap().as_ref(), body.as_slice());

    // A local redirect cannot run a second URL in one instance: the client is sent there.
    let local = no_redirect_client()
        .get(server.url("/local"))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 302);
    assert_eq!(local.headers()["location"], "/env?from=local");

    // Broken output is a 502 with the reason on stderr; a trap is a 500; a loop a 504.
    for (path, status, reason) in [
        ("/nothing", 502, "the program wrote nothing to stdout"),
        ("/no-header", 502, "bytes) has no CGI header block"),
        (
            "/malformed",
            502,
            "malformed CGI header at line 1: \"this is not a header\"",
        ),
        (
            "/exit2",
            502,
            "the program exited with status 2 before its CGI header block",
        ),
        ("/trap", 500, "deliberate trap from cgi-probe"),
        ("/loop", 504, "deadline exceeded"),
    ] {
        assert_eq!(get(server.url(path)).await.0, status, "{path}");
        assert!(
            server.wait_for_log(reason, Duration::from_secs(5)),
            "{path}: {}",
            server.log()
        );
    }
    assert_eq!(get(server.url("/args")).await.0, 200);
}

//! CGI mode: WASI command programs answer requests the way CGI programs do under Apache, with
//! the request in RFC 3875 variables and stdin, and a CGI response on stdout.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wasmbridge_tests::{Server, client, guest, guest_p1, no_redirect_client};

async fn get(server: &Server, path: &str) -> reqwest::Response {
    client().get(server.url(path)).send().await.unwrap()
}

fn vars(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

#[tokio::test]
async fn a_rust_cgi_hello_runs_as_preview1_and_preview2() {
    for program in [guest_p1("cgi-hello"), guest("cgi-hello")] {
        let program: &str = &program;
        let server = Server::start(&[program]);
        let response = get(&server, "/anything?x=1").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            response.text().await.unwrap(),
            "Hello from a CGI program!\nGET with query \"x=1\"\n"
        );
    }
}

#[tokio::test]
async fn the_request_arrives_as_rfc_3875_variables() {
    let server = Server::start(&[&guest_p1("cgi-probe")]);
    let response = client()
        .get(server.url("/env?a=1&b=two"))
        .header("x-custom", "yes")
        .header("authorization", "Basic c2VjcmV0")
        .header("proxy", "http://attacker/")
        .send()
        .await
        .unwrap();
    let vars = vars(&response.text().await.unwrap());
    let port = server.addr.port().to_string();
    for (name, value) in [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "GET"),
        ("QUERY_STRING", "a=1&b=two"),
        ("REQUEST_URI", "/env?a=1&b=two"),
        ("PATH_INFO", "/env"),
        ("SCRIPT_NAME", ""),
        ("SERVER_NAME", "127.0.0.1"),
        ("SERVER_PORT", &port),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REQUEST_SCHEME", "http"),
        ("REDIRECT_STATUS", "200"),
        ("HTTP_X_CUSTOM", "yes"),
    ] {
        assert_eq!(
            vars.get(name).map(String::as_str),
            Some(value),
            "{name}: {vars:?}"
        );
    }
    assert!(vars["SERVER_SOFTWARE"].starts_with("wasmbridge/"));
    assert!(vars["REMOTE_PORT"].parse::<u16>().is_ok());
    for withheld in ["HTTP_AUTHORIZATION", "HTTP_PROXY", "PATH", "HOME"] {
        assert!(
            !vars.contains_key(withheld),
            "{withheld} reached the program"
        );
    }
}

#[tokio::test]
async fn granted_variables_and_arguments_reach_the_program_and_requests_cannot_override_them() {
    let server = Server::start(&[
        "--env",
        "APP_MODE=demo",
        "--env",
        "QUERY_STRING=fixed",
        &guest_p1("cgi-probe"),
        "one",
        "two",
    ]);
    let env = vars(&get(&server, "/env?x=1").await.text().await.unwrap());
    assert_eq!(env["APP_MODE"], "demo");
    assert_eq!(env["QUERY_STRING"], "fixed");
    assert_eq!(env["SCRIPT_FILENAME"], "two");
    let args = get(&server, "/args").await.text().await.unwrap();
    assert_eq!(args, "cgi-probe.wasm\none\ntwo\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_streams_through_stdin_and_stdout() {
    let server = Server::start(&[&guest_p1("cgi-probe")]);
    let body: Vec<u8> = (0..8 << 20).map(|i| (i % 253) as u8).collect();
    let response = client()
        .post(server.url("/echo"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), body.as_slice());
}

#[tokio::test]
async fn a_5_mib_response_arrives_whole() {
    let server = Server::start(&[&guest_p1("cgi-probe")]);
    let response = get(&server, "/big?mb=5").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("content-length").is_none(),
        "the response should be streamed"
    );
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), 5 << 20);
    assert!(body.iter().all(|b| *b == b'x'));
}

#[tokio::test]
async fn status_location_and_cookies() {
    let server = Server::start(&[&guest_p1("cgi-probe")]);
    let status = get(&server, "/status").await;
    assert_eq!(status.status(), 404);
    assert_eq!(status.headers()["content-type"], "text/html");
    assert_eq!(status.text().await.unwrap(), "<h1>gone</h1>\n");

    let no_follow = no_redirect_client();
    let redirect = no_follow.get(server.url("/redirect")).send().await.unwrap();
    assert_eq!(redirect.status(), 302);
    assert_eq!(
        redirect.headers()["location"],
        "https://example.com/elsewhere"
    );

    // A local redirect is served by the server itself, as a GET of the new path.
    let local = no_follow.get(server.url("/local")).send().await.unwrap();
    assert_eq!(local.status(), 200);
    let env = vars(&local.text().await.unwrap());
    assert_eq!(
        (env["PATH_INFO"].as_str(), env["QUERY_STRING"].as_str()),
        ("/env", "from=local")
    );

    let cookies = client()
        .get(server.url("/cookie"))
        .header("cookie", "z=9")
        .send()
        .await
        .unwrap();
    let set: Vec<_> = cookies
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(set, ["a=1; Path=/", "b=2; Path=/"]);
    assert_eq!(cookies.text().await.unwrap(), "cookies: z=9\n");
}

/// Asserts one failure line for the request, containing `cause`.
fn assert_failure_logged(server: &Server, request: u64, cause: &str) {
    let prefix = format!("error [{request}] :: app `cgi-probe`: ");
    assert!(
        server.wait_for_log(&prefix, Duration::from_secs(5)),
        "no failure line:\n{}",
        server.log()
    );
    let lines = server.log_lines(&prefix);
    assert_eq!(lines.len(), 1, "{}", server.log());
    assert!(
        lines[0].contains(cause),
        "{} does not say {cause:?}",
        lines[0]
    );
}

#[tokio::test]
async fn bad_output_is_a_502_with_the_cause_logged() {
    let server = Server::start(&[&guest_p1("cgi-probe")]);
    for (id, (path, cause)) in [
        ("/nothing", "the program wrote nothing to stdout"),
        ("/no-header", "has no CGI header block"),
        (
            "/malformed",
            "malformed CGI header at line 1: \"this is not a header\"",
        ),
        ("/exit2", "the program exited with status 2"),
    ]
    .into_iter()
    .enumerate()
    {
        let response = get(&server, path).await;
        assert_eq!(response.status(), 502, "{path}");
        assert_failure_logged(&server, id as u64, cause);
    }
    assert_eq!(get(&server, "/env").await.status(), 200);
}

#[tokio::test]
async fn an_exit_after_the_response_is_logged() {
    let server = Server::start(&[&guest_p1("cgi-probe")]);
    let response = get(&server, "/exit3").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "partial\n");
    assert_failure_logged(
        &server,
        0,
        "exited with status 3 after its response had started",
    );
}

#[tokio::test]
async fn a_trap_is_a_500_with_stderr_in_the_log() {
    let server = Server::start(&[&guest_p1("cgi-probe")]);
    let response = get(&server, "/trap").await;
    assert_eq!(response.status(), 500);
    assert!(!response.text().await.unwrap().contains("deliberate"));
    assert_failure_logged(&server, 0, "guest trapped");
    assert!(
        server
            .log()
            .contains("stderr [0] :: deliberate trap from cgi-probe"),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_the_deadline() {
    let server = Server::start(&["-W", "timeout=1s", &guest_p1("cgi-probe")]);
    let started = Instant::now();
    assert_eq!(get(&server, "/loop").await.status(), 504);
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_failure_logged(&server, 0, "deadline exceeded");
    assert_eq!(get(&server, "/env").await.status(), 200);
}

#[tokio::test]
async fn docroot_style_maps_url_paths_to_scripts_in_a_granted_directory() {
    let root = wasmbridge_tests::temp_dir("docroot");
    std::fs::create_dir_all(root.join("www/sub")).unwrap();
    std::fs::write(root.join("www/sub/page.cgi"), "#!cgi-probe\n").unwrap();
    std::fs::write(root.join("secret.cgi"), "outside\n").unwrap();
    std::os::unix::fs::symlink(root.join("secret.cgi"), root.join("www/escape.cgi")).unwrap();
    let grant = format!("{}::/www", root.join("www").display());
    let server = Server::start(&[
        "--dir",
        &grant,
        "--cgi-docroot",
        "/www",
        &guest_p1("cgi-probe"),
    ]);

    let env = vars(
        &get(&server, "/sub/page.cgi/env?q=1")
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(env["SCRIPT_FILENAME"], "/www/sub/page.cgi");
    assert_eq!(env["SCRIPT_NAME"], "/sub/page.cgi");
    assert_eq!(env["PATH_INFO"], "/env");
    assert_eq!(env["DOCUMENT_ROOT"], "/www");
    let args = get(&server, "/sub/page.cgi/args")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(args, "cgi-probe.wasm\n/www/sub/page.cgi\n");

    for missing in [
        "/sub/none.cgi/env",
        "/sub",
        "/../secret.cgi/env",
        "/sub/%2e%2e/%2e%2e/secret.cgi/env",
        "/escape.cgi/env",
    ] {
        assert_eq!(get(&server, missing).await.status(), 404, "{missing}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

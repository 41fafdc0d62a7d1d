//! Many apps in one `wasmbridge serve`: wasmbridge's manifest and Spin's, routes, per-app
//! grants and outbound hosts, reload (SIGHUP and `--watch`) under load, metrics, and the
//! errors a bad manifest gets.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use wasmbridge_tests::{
    Server, client, get, guest, guest_p1, interpreter_dist, start_error, temp_dir,
};

/// A directory holding `name` (a manifest's text) beside a `static/` directory with one file.
fn site(manifest: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir("manifest");
    std::fs::create_dir_all(dir.join("static")).unwrap();
    std::fs::write(dir.join("static/hello.txt"), "static file\n").unwrap();
    let path = dir.join("apps.toml");
    std::fs::write(&path, manifest).unwrap();
    (dir, path)
}

fn python_lib() -> PathBuf {
    interpreter_dist("python", "python.wasm").join("lib")
}

fn wsgi_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guests/fixtures/python-wsgi")
}

/// Four apps of four kinds: a wasi:http component, a CGI program, a WSGI app on python.wasm
/// and a WASI 0.3 component, each with its own grants.
fn four_apps() -> String {
    format!(
        r#"
[[app]]
name = "probe"
routes = ["/probe/..."]
source = "{probe}"
dirs = ["static::/static::ro"]
env = {{ GREETING = "hello from probe" }}

[[app]]
name = "exact"
route = "/probe/exact"
source = "{hello}"

[[app]]
name = "cgi"
route = "/cgi/..."
source = "{cgi}"
env = {{ CGI_ONLY = "yes" }}
[app.limits]
timeout = "5s"

[[app]]
name = "py"
route = "/py/..."
source = "{python}"
kind = "wsgi"
wsgi = "wsgi_probe:application"
workers = 1
dirs = ["{lib}::/usr/local/lib::ro", "{fixtures}::/app::ro"]
python_path = ["/app"]
[app.limits]
timeout = "60s"

[[app]]
name = "async"
route = "/..."
source = "{http3}"
"#,
        probe = guest("probe"),
        hello = guest("hello_http"),
        cgi = guest_p1("cgi-probe"),
        python = interpreter_dist("python", "python.wasm")
            .join("python.wasm")
            .display(),
        lib = python_lib().display(),
        fixtures = wsgi_fixtures().display(),
        http3 = guest("http3"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn one_manifest_serves_four_kinds_of_app_each_on_its_routes_with_its_own_grants() {
    let (dir, manifest) = site(&four_apps());
    let access = dir.join("access.log");
    let server = Server::start(&[
        "--metrics-addr",
        "127.0.0.1:0",
        "--access-log",
        access.to_str().unwrap(),
        manifest.to_str().unwrap(),
    ]);
    for route in [
        "/probe/... -> app `probe`",
        "/py/... -> app `py`",
        "/... -> app `async`",
    ] {
        assert!(server.log().contains(route), "{}", server.log());
    }

    // A prefix route: the component sees its own grants, and only them.
    let (status, env) = get(server.url("/probe/env")).await;
    assert_eq!(status, 200);
    assert_eq!(env, "GREETING=hello from probe\n");
    let (status, body) = get(server.url("/probe/read?path=/static/hello.txt")).await;
    assert_eq!((status, body.as_str()), (200, "static file\n"));
    // An exact route beats the prefix it lies under; a path below it does not.
    assert_eq!(
        get(server.url("/probe/exact")).await,
        (200, "Hello from WebAssembly!\n".into())
    );
    assert_eq!(get(server.url("/probe/exact/env")).await.0, 200);

    // A CGI program under a prefix: the mount is SCRIPT_NAME, the rest PATH_INFO.
    let (status, env) = get(server.url("/cgi/env?x=1")).await;
    assert_eq!(status, 200, "{env}");
    for line in [
        "SCRIPT_NAME=/cgi\n",
        "PATH_INFO=/env\n",
        "QUERY_STRING=x=1\n",
        "CGI_ONLY=yes\n",
    ] {
        assert!(env.contains(line), "{line:?} missing:\n{env}");
    }
    assert!(
        !env.contains("GREETING"),
        "another app's variable leaked:\n{env}"
    );
    let (_, env) = get(server.url("/probe/env")).await;
    assert!(!env.contains("CGI_ONLY"), "{env}");

    // A WSGI app mounted at /py.
    let (status, environ) = get(server.url("/py/environ")).await;
    assert_eq!(status, 200, "{environ}\n{}", server.log());
    assert!(environ.contains("SCRIPT_NAME=/py\n"), "{environ}");
    assert!(environ.contains("PATH_INFO=/environ\n"), "{environ}");

    // The catch-all: a WASI 0.3 component.
    let (status, body) = get(server.url("/")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "Hello from a WASI 0.3 component!\n")
    );

    // The access log names the app of each request.
    let log = std::fs::read_to_string(&access).unwrap();
    for app in [" probe ", " exact ", " cgi ", " py ", " async "] {
        assert!(
            log.lines().any(|l| l.contains(app)),
            "no line for{app}:\n{log}"
        );
    }

    // Metrics, per app.
    let metrics_addr = metrics_address(&server);
    let (status, metrics) = get(format!("http://{metrics_addr}/metrics")).await;
    assert_eq!(status, 200);
    for line in [
        "wasmbridge_requests_total{app=\"probe\",class=\"2xx\"} 4",
        "wasmbridge_requests_total{app=\"cgi\",class=\"2xx\"} 1",
        "wasmbridge_requests_total{app=\"py\",class=\"2xx\"} 1",
        "wasmbridge_cgi_workers{app=\"py\",state=\"busy\"}",
        "wasmbridge_request_duration_seconds_count{app=\"async\"} 1",
        "# TYPE wasmbridge_instantiation_duration_seconds histogram",
    ] {
        assert!(metrics.contains(line), "{line:?} missing:\n{metrics}");
    }
}

/// The address `--metrics-addr` bound, from the start-up line.
fn metrics_address(server: &Server) -> String {
    let log = server.log();
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("Serving metrics on http://"))
        .unwrap_or_else(|| panic!("no metrics line:\n{log}"));
    line.trim_end_matches("/metrics").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_are_counted_by_cause_and_a_path_no_route_takes_is_404() {
    let (_dir, manifest) = site(&format!(
        r#"
[[app]]
name = "cgi"
route = "/cgi/..."
source = "{cgi}"
[app.limits]
timeout = "1s"
"#,
        cgi = guest_p1("cgi-probe"),
    ));
    let server = Server::start(&["--metrics-addr", "127.0.0.1:0", manifest.to_str().unwrap()]);
    assert_eq!(get(server.url("/elsewhere")).await.0, 404);
    assert_eq!(get(server.url("/cgi/trap")).await.0, 500);
    assert_eq!(get(server.url("/cgi/loop")).await.0, 504);
    assert_eq!(get(server.url("/cgi/malformed")).await.0, 502);
    let (_, metrics) = get(format!("http://{}/metrics", metrics_address(&server))).await;
    for line in [
        "wasmbridge_failures_total{app=\"cgi\",cause=\"trap\"} 1",
        "wasmbridge_failures_total{app=\"cgi\",cause=\"deadline\"} 1",
        "wasmbridge_failures_total{app=\"cgi\",cause=\"bad_cgi_output\"} 1",
        "wasmbridge_requests_total{app=\"cgi\",class=\"5xx\"} 3",
        "wasmbridge_requests_in_flight{app=\"cgi\"} 0",
    ] {
        assert!(metrics.contains(line), "{line:?} missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spin_manifest_serves_its_http_triggers_and_its_wagi_component() {
    let (dir, manifest) = site(&format!(
        r#"
spin_manifest_version = 2

[application]
name = "spin-app"
version = "1.0.0"

[[trigger.http]]
route = "/probe/..."
component = "probe"

[[trigger.http]]
route = "/wagi/..."
component = "wagi"
executor = {{ type = "wagi" }}

[[trigger.http]]
route = {{ private = true }}
component = "probe"

[component.probe]
source = "{probe}"
files = [{{ source = "static", destination = "/assets" }}]
environment = {{ MODE = "spin" }}
allowed_outbound_hosts = ["http://localhost:1"]
[component.probe.build]
command = "cargo build --target wasm32-wasip2 --release"

[component.wagi]
source = "{cgi}"
files = ["static/*.txt"]
"#,
        probe = guest("probe"),
        cgi = guest_p1("cgi-probe"),
    ));
    let server = Server::start(&[manifest.to_str().unwrap()]);
    assert_eq!(
        get(server.url("/probe/env")).await,
        (200, "MODE=spin\n".into())
    );
    let (status, body) = get(server.url("/probe/read?path=/assets/hello.txt")).await;
    assert_eq!((status, body.as_str()), (200, "static file\n"));
    // Spin's route headers, as Spin's SDKs read them.
    let (_, headers) = get(server.url("/probe/a/b/headers")).await;
    for line in [
        "spin-path-info: /a/b/headers\n",
        "spin-matched-route: /probe/...\n",
        "spin-component-route: /probe\n",
    ] {
        assert!(headers.contains(line), "{line:?} missing:\n{headers}");
    }
    // allowed_outbound_hosts: what is listed is tried, anything else refused.
    let (_, denied) = get(server.url("/probe/fetch?authority=127.0.0.1:1")).await;
    assert!(denied.contains("HttpRequestDenied"), "{denied}");
    let (_, tried) = get(server.url("/probe/fetch?authority=localhost:1")).await;
    assert!(!tried.contains("HttpRequestDenied"), "{tried}");

    // The WAGI executor: the module in CGI mode, its files granted read-only.
    let (status, env) = get(server.url("/wagi/env")).await;
    assert_eq!(status, 200, "{env}");
    assert!(env.contains("SCRIPT_NAME=/wagi\n"), "{env}");
    assert!(!env.contains("MODE=spin"), "{env}");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn what_spin_has_and_wasmbridge_does_not_is_refused_with_the_key_and_its_line() {
    let probe = guest("probe");
    for (extra, key, line) in [
        ("key_value_stores = [\"default\"]", "key_value_stores", 9),
        ("sqlite_databases = [\"default\"]", "sqlite_databases", 9),
        (
            "source = { url = \"https://example.com/x.wasm\", digest = \"sha256:0\" }",
            "url",
            9,
        ),
        (
            "allowed_outbound_hosts = [\"redis://cache:6379\"]",
            "redis://",
            9,
        ),
        ("spin_nonsense = 1", "unknown field `spin_nonsense`", 9),
    ] {
        let text = format!(
            "spin_manifest_version = 2\n[application]\nname = \"x\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c\"\n[component.c]\nsource = \"{probe}\"\n{extra}\n"
        );
        // A second `source` replaces the first in the url case.
        let text = if key == "url" {
            text.replace(&format!("source = \"{probe}\"\n"), "")
        } else {
            text
        };
        let line = if key == "url" { line - 1 } else { line };
        let (_dir, manifest) = site(&text);
        let log = start_error(&[manifest.to_str().unwrap()]);
        let at = format!("apps.toml:{line}:");
        assert!(
            log.contains(&at) && log.contains(key),
            "{key}: expected {at}:\n{log}"
        );
    }
}

#[test]
fn a_bad_manifest_is_refused_with_its_file_line_and_reason() {
    let probe = guest("probe");
    let app = |extra: &str| {
        format!("[[app]]\nname = \"a\"\nroute = \"/a/...\"\nsource = \"{probe}\"\n{extra}\n")
    };
    for (text, line, reason) in [
        (app("colour = \"red\""), 5, "unknown field `colour`"),
        (
            app("") + "[[app]]\nname = \"b\"\nroute = \"/a/...\"\nsource = \"" + &probe + "\"\n",
            8,
            "route `/a/...` is taken twice",
        ),
        (
            "[[app]]\nname = \"a\"\nroute = \"/a\"\nsource = \"missing.wasm\"\n".to_string(),
            4,
            "is not a file",
        ),
        (
            app("[app.limits]\nmemory = \"lots\""),
            6,
            "`lots` is not a size",
        ),
        (
            app("[app.limits]\ntimeout = \"soon\""),
            6,
            "`soon` is not a duration",
        ),
        (app("dirs = [\"nowhere::/x\"]"), 5, "is not a directory"),
        (app("kind = \"fastcgi\""), 5, "kind `fastcgi`"),
        (
            "[[app]]\nname = \"a\"\nroute = \"no-slash\"\nsource = \"x\"\n".to_string(),
            3,
            "does not start with `/`",
        ),
    ] {
        let (_dir, manifest) = site(&text);
        let log = start_error(&[manifest.to_str().unwrap()]);
        let at = format!("apps.toml:{line}: ");
        assert!(
            log.contains(&at) && log.contains(reason),
            "expected `{at}` and `{reason}`:\n{log}"
        );
    }
}

/// Requests that keep coming from several clients until told to stop; each counts its answers
/// and remembers any that was not a 200.
struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    bodies: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let load = Load {
            stop: Arc::default(),
            served: Arc::default(),
            failures: Arc::default(),
            bodies: Arc::default(),
            tasks: Vec::new(),
        };
        let tasks = (0..clients)
            .map(|_| {
                let (url, stop, served) = (url.clone(), load.stop.clone(), load.served.clone());
                let (failures, bodies) = (load.failures.clone(), load.bodies.clone());
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(Ordering::Relaxed) {
                        match client.get(&url).send().await {
                            Ok(response) => {
                                let status = response.status();
                                let body = response.text().await.unwrap_or_default();
                                if status != 200 {
                                    failures.lock().unwrap().push(format!("{status}: {body}"));
                                } else {
                                    bodies.lock().unwrap().insert(body);
                                }
                            }
                            Err(e) => failures.lock().unwrap().push(e.to_string()),
                        }
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load { tasks, ..load }
    }

    async fn finish(self) -> (usize, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        let bodies = self.bodies.lock().unwrap().iter().cloned().collect();
        (self.served.load(Ordering::Relaxed), failures, bodies)
    }
}

fn probe_app(version: &str) -> String {
    format!(
        "[[app]]\nname = \"probe\"\nroute = \"/...\"\nsource = \"{}\"\nenv = {{ VERSION = \"{version}\" }}\n\n[[app]]\nname = \"slow\"\nroute = \"/slow/...\"\nsource = \"{}\"\n",
        guest("probe"),
        guest("http3"),
    )
}

async fn wait_until(server: &Server, needle: &str, count: usize) {
    for _ in 0..300 {
        if server.log_lines(needle).len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no {count} lines with `{needle}`:\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_under_load_without_a_failed_request_and_a_broken_manifest_changes_nothing()
{
    let (_dir, manifest) = site(&probe_app("1"));
    let server = Server::start(&[manifest.to_str().unwrap()]);
    let load = Load::start(server.url("/env"), 4);
    // A response in flight across the reload finishes on the code it started with.
    let slow = tokio::spawn(get(server.url("/slow/stream?chunks=10&ms=150")));
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::write(&manifest, probe_app("2")).unwrap();
    server.signal("HUP");
    wait_until(&server, "wasmbridge: reloaded", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A manifest that does not load is logged; version 2 keeps serving.
    std::fs::write(&manifest, probe_app("3") + "bogus = true\n").unwrap();
    server.signal("HUP");
    wait_until(&server, "failed, the running apps keep serving", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (served, failures, bodies) = load.finish().await;
    assert!(failures.is_empty(), "{failures:?}\n{}", server.log());
    assert!(served > 20, "only {served} requests went out");
    assert_eq!(bodies, ["VERSION=1\n", "VERSION=2\n"], "{}", server.log());
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body.lines().count(), 10, "{body}");
    let failed = server.log_lines("failed, the running apps keep serving");
    assert!(
        failed[0].contains("apps.toml:") && failed[0].contains("bogus"),
        "{failed:?}"
    );
    assert_eq!(get(server.url("/env")).await.1, "VERSION=2\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_reloads_when_a_program_changes_and_a_broken_one_leaves_the_old_serving() {
    let dir = temp_dir("watch");
    let program = dir.join("app.wasm");
    std::fs::copy(guest("hello_http"), &program).unwrap();
    let server = Server::start(&["--watch", program.to_str().unwrap()]);
    assert_eq!(get(server.url("/")).await.1, "Hello from WebAssembly!\n");

    // A module that does not compile: logged, and the old one serves on.
    std::fs::write(&program, b"\0asm broken").unwrap();
    wait_until(&server, "failed, the running apps keep serving", 1).await;
    assert_eq!(get(server.url("/")).await.1, "Hello from WebAssembly!\n");

    replace(Path::new(&guest("probe")), &program);
    wait_until(&server, "wasmbridge: reloaded", 1).await;
    assert_eq!(get(server.url("/status?code=201")).await.0, 201);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// Replaces `to` whole (a rename), as a deploy would, so that it is never read half-written.
fn replace(from: &Path, to: &Path) {
    let next = to.with_extension("next");
    std::fs::copy(from, &next).unwrap();
    std::fs::rename(&next, to).unwrap();
}

#[test]
fn a_manifest_takes_no_single_app_options() {
    let (_dir, manifest) = site(&probe_app("1"));
    for (flags, says) in [
        (&["--cgi-docroot", "/x"][..], "`--cgi-docroot` is one app's"),
        (&["--dir", "/tmp"][..], "give it as `dirs`"),
        (&["--env", "A=1"][..], "give it as `env`"),
        (
            &["-S", "inherit-network"][..],
            "give it as `allowed_outbound_hosts`",
        ),
        (&["--cgi-workers", "2"][..], "give it as `workers`"),
    ] {
        let mut args = flags.to_vec();
        args.push(manifest.to_str().unwrap());
        let log = start_error(&args);
        assert!(log.contains(says), "{flags:?}: {log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_outbound_host_lets_a_single_app_reach_what_it_names_and_nothing_else() {
    let target = Server::start(&[&guest("hello_http")]);
    let port = target.addr.port();
    let named = format!("http://127.0.0.1:{port}");
    let server = Server::start(&[
        "--allowed-outbound-host",
        &named,
        "--allowed-outbound-host",
        "http://*:*",
        &guest("probe"),
    ]);
    let (status, body) = get(server.url(&format!("/fetch?authority=127.0.0.1:{port}"))).await;
    assert_eq!((status, body.as_str()), (200, "Hello from WebAssembly!\n"));
    // A wildcard does not reach loopback, even on the same port under another name.
    let (status, body) = get(server.url(&format!("/fetch?authority=localhost:{port}"))).await;
    assert_eq!(status, 502);
    assert!(body.contains("HttpRequestDenied"), "{body}");
    let log =
        wasmbridge_tests::start_error(&["--allowed-outbound-host", "ftp://x", &guest("probe")]);
    assert!(log.contains("`ftp://`"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_opens_the_access_log_anew_after_logrotate_moved_it() {
    let dir = temp_dir("rotate");
    let log = dir.join("access.log");
    let server = Server::start(&["--access-log", log.to_str().unwrap(), &guest("hello_http")]);
    assert_eq!(get(server.url("/first")).await.0, 200);
    let rotated = dir.join("access.log.1");
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    for _ in 0..100 {
        if read(&log).contains("/first") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::rename(&log, &rotated).unwrap();
    server.signal("HUP");
    wait_until(&server, "wasmbridge: reloaded", 1).await;
    assert_eq!(get(server.url("/second")).await.0, 200);
    for _ in 0..100 {
        if read(&log).contains("/second") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(read(&log).contains("GET /second"), "{}", read(&log));
    assert!(read(&rotated).contains("GET /first") && !read(&rotated).contains("/second"));
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cgi_local_redirect_goes_where_the_routes_send_its_url() {
    let (_dir, manifest) = site(&format!(
        "[[app]]\nname = \"cgi\"\nroute = \"/cgi/...\"\nsource = \"{}\"\n\n\
         [[app]]\nname = \"probe\"\nroute = \"/...\"\nsource = \"{}\"\nenv = {{ WHO = \"probe\" }}\n",
        guest_p1("cgi-probe"),
        guest("probe"),
    ));
    let server = Server::start(&[manifest.to_str().unwrap()]);
    // cgi-probe's `/local` answers `Location: /env`: another app's URL.
    let (status, body) = get(server.url("/cgi/local")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "WHO=probe\n"),
        "{}",
        server.log()
    );
}

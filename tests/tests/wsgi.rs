//! WSGI apps on python.wasm (guests/python): `wasmbridge serve --wsgi` and Apache's `WasmWSGI`,
//! in CGI workers and in a fresh instance per request from a snapshot that imported the app.
//! The gateway's PEP 3333 behaviour is checked with a bare probe app
//! (guests/fixtures/python-wsgi); real apps are a Flask app and a Django project on Debian's
//! Flask 2.2 and Django 3.2 (`WASMBRIDGE_PYTHON_APPS`, unpacked by the test command).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use wasmbridge_tests::apache::Apache;
use wasmbridge_tests::{
    Server, binary, client, interpreter_dist, multipart, readable, sha256_hex, start_error,
    temp_dir,
};

/// The tests' own WSGI apps.
fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guests/fixtures/python-wsgi")
}

fn python() -> PathBuf {
    interpreter_dist("python", "python.wasm").join("python.wasm")
}

fn stdlib() -> PathBuf {
    interpreter_dist("python", "python.wasm").join("lib")
}

/// Debian's Python packages (Flask, Django and what they need), as Debian installs them; a
/// copy in the temp directory for Apache, whose www-data children cannot reach the cache.
fn dist_packages(front: Front) -> PathBuf {
    let root = std::env::var_os("WASMBRIDGE_PYTHON_APPS")
        .map(PathBuf::from)
        .expect("WASMBRIDGE_PYTHON_APPS is not set: run the README's test command");
    let packages = root.join("usr/lib/python3/dist-packages");
    assert!(packages.is_dir(), "{} is missing", packages.display());
    match front {
        Front::Serve => packages,
        Front::Apache => {
            let copy = temp_dir("dist-packages");
            let status = Command::new("cp")
                .arg("-rT")
                .arg(&packages)
                .arg(&copy)
                .status()
                .unwrap();
            assert!(status.success());
            copy
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Front {
    Serve,
    Apache,
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Long-lived instances (`--cgi-workers 2`, `WasmCGIWorkers 2`).
    Workers,
    /// A fresh instance per request, from a snapshot with the app imported.
    Snapshot,
}

/// A host directory the app sees at `guest`.
struct Grant {
    guest: &'static str,
    host: PathBuf,
    writable: bool,
}

impl Grant {
    fn ro(guest: &'static str, host: impl Into<PathBuf>) -> Grant {
        Grant {
            guest,
            host: host.into(),
            writable: false,
        }
    }
    fn rw(guest: &'static str, host: impl Into<PathBuf>) -> Grant {
        Grant {
            guest,
            host: host.into(),
            writable: true,
        }
    }
}

/// Where Apache mounts the app: its `<Location>`, which is the app's SCRIPT_NAME.
const MOUNT: &str = "/site";

/// An app being served.
enum Site {
    Serve(Server),
    Apache(Apache),
}

/// What a site is started with.
struct App<'a> {
    wsgi: &'a str,
    grants: Vec<Grant>,
    python_path: &'a [&'a str],
    env: &'a [(&'a str, &'a str)],
    /// Extra `wasmbridge serve` options (limits).
    options: &'a [&'a str],
}

impl Site {
    fn start(front: Front, mode: Mode, app: &App) -> Site {
        // The stdlib first, as python.wasm's snapshot was taken; then the app's grants, in
        // the same order for the app's snapshot and for serving it.
        let mut dirs = vec![format!("{}::/usr/local/lib::ro", stdlib().display())];
        for grant in &app.grants {
            let mode = if grant.writable { "" } else { "::ro" };
            dirs.push(format!("{}::{}{mode}", grant.host.display(), grant.guest));
        }
        let python_path = app.python_path.join(":");
        let program = match mode {
            Mode::Workers => python(),
            Mode::Snapshot => {
                let out = temp_dir("wsgi-snapshot").join("app-python.wasm");
                let said = warm_python_snapshot(&dirs, &python_path, app.env, app.wsgi, &out);
                assert!(said.contains("wasmbridge-warm: 1 imported"), "{said}");
                out
            }
        };
        match front {
            Front::Serve => {
                let mut args: Vec<String> = vec!["-W".into(), "timeout=60s".into()];
                args.extend(app.options.iter().map(|s| s.to_string()));
                for dir in &dirs {
                    args.extend(["--dir".into(), dir.clone()]);
                }
                for (name, value) in app.env {
                    args.extend(["--env".into(), format!("{name}={value}")]);
                }
                for dir in app.python_path {
                    args.extend(["--python-path".into(), dir.to_string()]);
                }
                let workers = match mode {
                    Mode::Workers => "2",
                    Mode::Snapshot => "0",
                };
                args.extend(["--cgi-workers".into(), workers.into()]);
                args.extend(["--wsgi".into(), app.wsgi.into()]);
                args.push(program.display().to_string());
                Site::Serve(Server::start(
                    &args.iter().map(String::as_str).collect::<Vec<_>>(),
                ))
            }
            Front::Apache => {
                readable(program.parent().unwrap());
                let mut maps = format!("WasmMapDir /usr/local/lib {} ro\n", stdlib().display());
                for grant in &app.grants {
                    readable(&grant.host);
                    let mode = if grant.writable { "" } else { " ro" };
                    maps += &format!(
                        "WasmMapDir {} {}{mode}\n",
                        grant.guest,
                        grant.host.display()
                    );
                }
                let envs: String = app
                    .env
                    .iter()
                    .map(|(name, value)| format!("WasmEnv {name} {value}\n"))
                    .collect();
                let python_path = match app.python_path {
                    [] => String::new(),
                    dirs => format!("WasmPythonPath {}\n", dirs.join(" ")),
                };
                let workers = match mode {
                    Mode::Workers => 2,
                    Mode::Snapshot => 0,
                };
                let conf = format!(
                    "<Location {MOUNT}>\n\
                     SetHandler wasm-handler\n\
                     WasmModule {program}\n\
                     {maps}{envs}{python_path}\
                     WasmWSGI {wsgi}\n\
                     WasmCGIWorkers {workers}\n\
                     WasmTimeout 60\n\
                     </Location>",
                    program = program.display(),
                    wsgi = app.wsgi,
                );
                Site::Apache(Apache::start("event", &conf))
            }
        }
    }

    fn url(&self, path: &str) -> String {
        match self {
            Site::Serve(server) => server.url(path),
            Site::Apache(apache) => apache.url(&format!("{MOUNT}{path}")),
        }
    }

    /// The app's SCRIPT_NAME.
    fn script_name(&self) -> &'static str {
        match self {
            Site::Serve(_) => "",
            Site::Apache(_) => MOUNT,
        }
    }

    fn log(&self) -> String {
        match self {
            Site::Serve(server) => server.log(),
            Site::Apache(apache) => apache.error_log(),
        }
    }

    fn wait_for_log(&self, needle: &str) -> bool {
        match self {
            Site::Serve(server) => server.wait_for_log(needle, Duration::from_secs(10)),
            Site::Apache(apache) => apache.wait_for_log(needle, Duration::from_secs(10)),
        }
    }
}

/// `wasmbridge wizer --init-func wasmbridge-warm` (guests/python/README.md): python.wasm
/// again, with `warm` (`PYTHON_WARM`) imported, the grants `dirs` in place. Returns what it
/// said.
fn warm_python_snapshot(
    dirs: &[String],
    python_path: &str,
    env: &[(&str, &str)],
    warm: &str,
    out: &Path,
) -> String {
    let mut command = Command::new(binary());
    command.args(["wizer", "--init-func", "wasmbridge-warm"]);
    for dir in dirs {
        command.args(["--dir", dir]);
    }
    for (name, value) in env {
        command.arg("--env").arg(format!("{name}={value}"));
    }
    command
        .arg("--env")
        .arg(format!("PYTHONPATH={python_path}"));
    command.arg("--env").arg(format!("PYTHON_WARM={warm}"));
    let output = command.arg("-o").arg(out).arg(python()).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    said
}

/// An `application/x-www-form-urlencoded` body.
fn form(fields: &[(&str, &str)]) -> String {
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn post(http: &reqwest::Client, url: String, fields: &[(&str, &str)]) -> reqwest::RequestBuilder {
    http.post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(fields))
}

fn cookie_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A test per front end and mode of an app: `CHECK(&START(front, mode))` in each.
macro_rules! each_front_and_mode {
    ($check:ident($start:ident); $($name:ident: $front:ident, $mode:ident;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                $check(&$start(Front::$front, Mode::$mode)).await;
            }
        )*
    };
}

// ---- the gateway, with a bare WSGI app -------------------------------------------------------

fn probe(front: Front, mode: Mode, options: &[&str]) -> Site {
    Site::start(
        front,
        mode,
        &App {
            wsgi: "wsgi_probe:application",
            grants: vec![Grant::ro("/app", fixtures())],
            python_path: &["/app"],
            env: &[],
            options,
        },
    )
}

/// GETs `path` of the site with `http`: the status and the body as text.
async fn get_with(http: &reqwest::Client, site: &Site, path: &str) -> (u16, String) {
    let response = http.get(site.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn text(site: &Site, path: &str) -> (u16, String) {
    get_with(&client(), site, path).await
}

/// What every front end and mode must do with the probe app.
async fn check_gateway(site: &Site, mode: Mode) {
    let (status, body) = text(site, "/environ?a=1&b=%20").await;
    assert_eq!(status, 200, "{body}\n{}", site.log());
    assert!(body.contains("REQUEST_METHOD=GET\n"), "{body}");
    assert!(
        body.contains(&format!("SCRIPT_NAME={}\n", site.script_name())),
        "{body}"
    );
    assert!(body.contains("PATH_INFO=/environ\n"), "{body}");
    assert!(body.contains("QUERY_STRING=a=1&b=%20\n"), "{body}");
    assert!(body.contains("wsgi.url_scheme=http\n"), "{body}");
    assert!(body.contains("wsgi.multithread=False\n"), "{body}");
    match mode {
        Mode::Workers => assert!(body.contains("wsgi.run_once=False\n"), "{body}"),
        Mode::Snapshot => {
            assert!(body.contains("wsgi.run_once=True\n"), "{body}");
            // Nothing crosses requests: each starts from the snapshot's state.
            let (_, again) = text(site, "/environ").await;
            assert!(again.contains("served=1\n"), "{again}");
        }
    }

    // The body, as wsgi.input gives it: a line, then the rest (3 MB, over many records).
    let mut upload = b"first line\n".to_vec();
    upload.extend((0..3_000_000u32).map(|i| (i % 251) as u8));
    let response = client()
        .post(site.url("/echo"))
        .body(upload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", site.log());
    assert_eq!(response.headers()["x-first-line"], "11");
    assert!(
        response.bytes().await.unwrap() == upload,
        "the body came back changed"
    );

    // write() before the iterable, and the iterable's close().
    let (status, body) = text(site, "/stream").await;
    assert_eq!(status, 200);
    assert_eq!(body, "written first\nchunk 0\nchunk 1\nchunk 2\n");
    assert!(
        site.wait_for_log("wsgi_probe: close() called"),
        "{}",
        site.log()
    );

    // wsgi.errors goes to the server's log.
    let (status, _) = text(site, "/errors").await;
    assert_eq!(status, 204);
    assert!(
        site.wait_for_log("wsgi_probe: a line for the log"),
        "{}",
        site.log()
    );

    // start_response again with exc_info, before anything was sent, replaces the head.
    let (status, body) = text(site, "/exc-info").await;
    assert_eq!((status, body.as_str()), (503, "replaced\n"));

    // An exception: 500, the traceback in the log only; the next request is served.
    let (status, body) = text(site, "/raise").await;
    assert_eq!(status, 500, "{body}");
    assert!(!body.contains("Traceback"), "{body}");
    assert!(
        site.wait_for_log("ValueError: wsgi_probe raised on purpose"),
        "{}",
        site.log()
    );
    let (status, _) = text(site, "/environ").await;
    assert_eq!(status, 200, "{}", site.log());

    // A chunked body (no Content-Length) reaches wsgi.input whole too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(b"chunked line\n".to_vec()), Ok(vec![b'y'; 100_000])];
    let response = client()
        .post(site.url("/echo"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", site.log());
    assert_eq!(response.bytes().await.unwrap().len(), 13 + 100_000);

    // What the app prints goes to the log, never into the response.
    let (status, body) = text(site, "/print").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "printed\n"),
        "{}",
        site.log()
    );
    assert!(
        site.wait_for_log("wsgi_probe: printed xxx"),
        "{}",
        site.log()
    );

    // A status with a CR LF cannot forge a header: it is the app's error, a 500.
    let response = client().get(site.url("/inject")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert!(response.headers().get("x-injected").is_none());

    // An app that fails after part of its body: the response is cut (or, when the front end
    // had not sent its head yet, an error), never ended as if it were whole.
    if let Ok(response) = client().get(site.url("/raise-late")).send().await {
        match response.status().as_u16() {
            200 => assert!(
                response.bytes().await.is_err(),
                "a cut response looked complete"
            ),
            status => assert!(status >= 500, "{status}"),
        }
    }
    assert!(
        site.wait_for_log("wsgi_probe raised after its first chunk"),
        "{}",
        site.log()
    );

    // An app that closes wsgi.input unread.
    let response = client()
        .post(site.url("/close-input"))
        .body(vec![b'z'; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", site.log());

    // A body the app never reads does not spill into the next request.
    let response = client()
        .post(site.url("/unread"))
        .body(vec![b'x'; 1_000_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, body) = text(site, "/environ").await;
    assert_eq!(status, 200, "{body}\n{}", site.log());
    assert!(body.contains("REQUEST_METHOD=GET\n"), "{body}");
}

#[tokio::test]
async fn the_gateway_serves_pep_3333_in_workers_through_serve() {
    let site = probe(Front::Serve, Mode::Workers, &[]);
    check_gateway(&site, Mode::Workers).await;
    // A worker keeps the app's state from one request to the next (one at a time here).
    let (_, first) = text(&site, "/environ").await;
    let (_, second) = text(&site, "/environ").await;
    let served = |body: &str| -> u32 {
        body.lines()
            .find_map(|l| l.strip_prefix("served="))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(served(&second) > served(&first), "{first}\n{second}");
}

#[tokio::test]
async fn the_gateway_serves_pep_3333_in_fresh_instances_through_serve() {
    check_gateway(&probe(Front::Serve, Mode::Snapshot, &[]), Mode::Snapshot).await;
}

#[tokio::test]
async fn the_gateway_serves_pep_3333_in_workers_through_apache() {
    check_gateway(&probe(Front::Apache, Mode::Workers, &[]), Mode::Workers).await;
}

#[tokio::test]
async fn the_gateway_serves_pep_3333_in_fresh_instances_through_apache() {
    check_gateway(&probe(Front::Apache, Mode::Snapshot, &[]), Mode::Snapshot).await;
}

#[tokio::test]
async fn a_worker_that_loops_or_hoards_memory_is_replaced() {
    let site = probe(
        Front::Serve,
        Mode::Workers,
        &["-W", "timeout=3s", "-W", "max-memory-size=268435456"],
    );
    let (status, _) = text(&site, "/spin").await;
    assert!(status >= 500, "{status}");
    assert!(site.wait_for_log("deadline"), "{}", site.log());
    let (status, body) = text(&site, "/environ").await;
    assert_eq!(status, 200, "{body}\n{}", site.log());

    let (status, _) = text(&site, "/leak").await;
    assert!(status >= 500, "{status}");
    assert!(site.wait_for_log("memory"), "{}", site.log());
    let (status, body) = text(&site, "/environ").await;
    assert_eq!(status, 200, "{body}\n{}", site.log());
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_the_app_reads_it() {
    let site = probe(
        Front::Serve,
        Mode::Workers,
        &["--max-request-body-size", "1K"],
    );
    let response = client()
        .post(site.url("/echo"))
        .body(vec![b'x'; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let (status, _) = text(&site, "/environ").await;
    assert_eq!(status, 200);
}

#[test]
fn an_app_that_raises_at_import_stops_serve_and_apache_configtest_with_its_line() {
    let fixtures = fixtures();
    let log = start_error(&[
        "--dir",
        &format!("{}::/usr/local/lib::ro", stdlib().display()),
        "--dir",
        &format!("{}::/app::ro", fixtures.display()),
        "--python-path",
        "/app",
        "--wsgi",
        "broken_app:application",
        python().to_str().unwrap(),
    ]);
    assert!(
        log.contains("the WSGI app `broken_app:application` does not load"),
        "{log}"
    );
    assert!(log.contains("/app/broken_app.py\", line 5"), "{log}");
    assert!(log.contains("KeyError: 'database'"), "{log}");

    readable(&fixtures);
    let apache = Apache::configure(
        "event",
        &format!(
            "<Location /broken>\n\
             SetHandler wasm-handler\n\
             WasmModule {}\n\
             WasmMapDir /usr/local/lib {} ro\n\
             WasmMapDir /app {} ro\n\
             WasmPythonPath /app\n\
             WasmWSGI broken_app:application\n\
             </Location>",
            python().display(),
            stdlib().display(),
            fixtures.display()
        ),
    );
    let (ok, said) = apache.configtest();
    assert!(!ok, "{said}");
    assert!(said.contains("WasmWSGI broken_app:application"), "{said}");
    assert!(said.contains("/app/broken_app.py\", line 5"), "{said}");
}

// ---- Flask 2.2 --------------------------------------------------------------------------------

fn flask(front: Front, mode: Mode) -> Site {
    Site::start(
        front,
        mode,
        &App {
            wsgi: "app:app",
            grants: vec![
                Grant::ro("/app", fixtures().join("flaskapp")),
                Grant::ro("/usr/lib/python3/dist-packages", dist_packages(front)),
            ],
            python_path: &["/app", "/usr/lib/python3/dist-packages"],
            env: &[],
            options: &[],
        },
    )
}

async fn check_flask(site: &Site) {
    let http = cookie_client();
    // A route and a Jinja2 template.
    let response = http.get(site.url("/?name=Wasm")).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", site.log());
    let page = response.text().await.unwrap();
    assert!(page.contains("<h1>Hello, Wasm!</h1>"), "{page}");
    assert!(page.contains("Visits: 0"), "{page}");

    // The signed-cookie session, across requests (and so across instances).
    for _ in 0..2 {
        let response = http.get(site.url("/visit")).send().await.unwrap();
        assert_eq!(response.status(), 302, "{}", site.log());
        let location = response.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.ends_with(&format!("{}/", site.script_name())),
            "{location}"
        );
    }
    let (_, page) = get_with(&http, site, "/").await;
    assert!(page.contains("Visits: 2"), "{page}");

    // A form.
    let response = post(&http, site.url("/form"), &[("name", "Form & <Field>")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("Hello, Form &amp; &lt;Field&gt;!"), "{page}");

    // The JSON API, with the mount point as Flask's script_root.
    let response = http
        .put(site.url("/api/items/7"))
        .header("content-type", "application/json")
        .body(r#"{"colour": "blue"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", site.log());
    assert_eq!(response.headers()["content-type"], "application/json");
    let json = response.text().await.unwrap();
    assert!(json.contains(r#""id":7"#), "{json}");
    assert!(json.contains(r#""stored":{"colour":"blue"}"#), "{json}");
    assert!(
        json.contains(&format!(r#""script_root":"{}""#, site.script_name())),
        "{json}"
    );

    // An upload, larger than what werkzeug keeps in memory (it spools to a temporary file).
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let (content_type, body) = multipart(("note", "a note"), ("file", "data.bin", &data));
    let response = http
        .post(site.url("/upload"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", site.log());
    let json = response.text().await.unwrap();
    assert!(json.contains(r#""filename":"data.bin""#), "{json}");
    assert!(
        json.contains(&format!(r#""size":{}"#, data.len())),
        "{json}"
    );
    assert!(
        json.contains(&format!(r#""sha256":"{}""#, sha256_hex(&data))),
        "{json}"
    );
    assert!(json.contains(r#""note":"a note""#), "{json}");

    // A view that raises: Flask's own 500, its traceback in the log.
    let response = http.get(site.url("/boom")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert!(
        site.wait_for_log("RuntimeError: the view failed on purpose"),
        "{}",
        site.log()
    );
}

each_front_and_mode! {
    check_flask(flask);
    flask_runs_in_workers_through_serve: Serve, Workers;
    flask_runs_in_fresh_instances_from_a_snapshot_through_serve: Serve, Snapshot;
    flask_runs_in_workers_through_apache: Apache, Workers;
    flask_runs_in_fresh_instances_from_a_snapshot_through_apache: Apache, Snapshot;
}

// ---- Django 3.2 -------------------------------------------------------------------------------

const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// A Django project as `django-admin startproject` makes it, on SQLite, migrated and with a
/// superuser, by the host's python3 with Debian's Django (the set-up a user does once); the
/// guest sees it at /srv/mysite, writable (SQLite writes beside its database).
fn django_project() -> PathBuf {
    let dir = temp_dir("django");
    let native = |args: &[&str], cwd: &Path| {
        let output = Command::new("python3")
            .args(args)
            .current_dir(cwd)
            .env("PYTHONPATH", dist_packages(Front::Serve))
            .env("DJANGO_SUPERUSER_PASSWORD", ADMIN_PASSWORD)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "python3 {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    native(&["-m", "django", "startproject", "mysite", "."], &dir);
    let settings = dir.join("mysite/settings.py");
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(
        &settings,
        text.replace(
            "ALLOWED_HOSTS = []",
            "ALLOWED_HOSTS = ['127.0.0.1', 'localhost']",
        ),
    )
    .unwrap();
    native(&["manage.py", "migrate", "--noinput"], &dir);
    native(
        &[
            "manage.py",
            "createsuperuser",
            "--noinput",
            "--username",
            "admin",
            "--email",
            "admin@example.org",
        ],
        &dir,
    );
    // Apache's www-data writes the database and its journal.
    Command::new("chmod")
        .arg("-R")
        .arg("a+rwX")
        .arg(&dir)
        .status()
        .unwrap();
    dir
}

fn django(front: Front, mode: Mode) -> Site {
    Site::start(
        front,
        mode,
        &App {
            wsgi: "mysite.wsgi:application",
            grants: vec![
                Grant::ro("/usr/lib/python3/dist-packages", dist_packages(front)),
                // Debian's pytz reads the system's time zones.
                Grant::ro("/usr/share/zoneinfo", "/usr/share/zoneinfo"),
                Grant::rw("/srv/mysite", django_project()),
            ],
            python_path: &["/srv/mysite", "/usr/lib/python3/dist-packages"],
            env: &[],
            options: &[],
        },
    )
}

/// The CSRF token of a form in `page`.
fn csrf_token(page: &str) -> String {
    let at = page
        .find("name=\"csrfmiddlewaretoken\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF token in:\n{page}"));
    let rest = &page[at + "name=\"csrfmiddlewaretoken\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

async fn check_django(site: &Site) {
    let http = cookie_client();
    let base = site.script_name();
    let response = http.get(site.url("/admin/login/")).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", site.log());
    let page = response.text().await.unwrap();
    assert!(page.contains("Django administration"), "{page}");
    assert!(
        page.contains(&format!("action=\"{base}/admin/login/\"")),
        "the form posts back under the mount: {page}"
    );

    let referer = site.url("/admin/login/");
    let response = post(
        &http,
        site.url("/admin/login/"),
        &[
            ("csrfmiddlewaretoken", csrf_token(&page).as_str()),
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("next", &format!("{base}/admin/")),
        ],
    )
    .header("Referer", &referer)
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 302, "{}", site.log());
    assert_eq!(response.headers()["location"], &format!("{base}/admin/"));

    let (_, page) = get_with(&http, site, "/admin/auth/group/add/").await;
    let response = post(
        &http,
        site.url("/admin/auth/group/add/"),
        &[
            ("csrfmiddlewaretoken", csrf_token(&page).as_str()),
            ("name", "wasm-editors"),
            ("_save", "Save"),
        ],
    )
    .header("Referer", site.url("/admin/auth/group/add/"))
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 302, "{}", site.log());

    let response = http
        .get(site.url("/admin/auth/group/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("wasm-editors"), "{page}");
}

each_front_and_mode! {
    check_django(django);
    django_runs_in_workers_through_serve: Serve, Workers;
    django_runs_in_fresh_instances_from_a_snapshot_through_serve: Serve, Snapshot;
    django_runs_in_workers_through_apache: Apache, Workers;
    django_runs_in_fresh_instances_from_a_snapshot_through_apache: Apache, Snapshot;
}

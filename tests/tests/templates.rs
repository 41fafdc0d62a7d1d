//! `wasmbridge new`: every template written into a temp dir, built as its README says, served,
//! and its pages checked.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use wasmbridge_tests::apache::Apache;
use wasmbridge_tests::{
    Server, binary, check_under_wasmtime_serve, client, get, interpreter_dist, no_redirect_client,
    post_form, readable, run_wasmbridge, temp_dir,
};

/// `wasmbridge new TEMPLATE PARENT/NAME`: the project's directory.
fn new(template: &str, name: &str) -> PathBuf {
    let dir = temp_dir(template).join(name);
    run_wasmbridge([OsStr::new("new"), OsStr::new(template), dir.as_os_str()]);
    assert!(dir.join("README.md").exists());
    dir
}

/// Builds a Rust template for `target` as its README says; returns the .wasm.
fn cargo_build(project: &Path, target: &str, artifact: &str) -> PathBuf {
    // A target directory of its own, kept between runs, beside the workspace's.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("templates");
    let status = Command::new("cargo")
        .args(["build", "--release", "--target", target])
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(project)
        .status()
        .unwrap();
    assert!(status.success(), "cargo build in {}", project.display());
    target_dir.join(target).join("release").join(artifact)
}

/// The routes rust-http, python-http and js-http share: text at /, JSON at /api/hello, a
/// streamed echo and a 404. `greeting` is the JSON for the name Jürgen, as the language writes it.
async fn check_http_routes(server: &Server, name: &str, greeting: &str) {
    assert_eq!(
        get(server.url("/")).await,
        (200, format!("Hello from {name}!\n"))
    );
    assert_eq!(
        get(server.url("/api/hello?name=J%C3%BCrgen")).await,
        (200, greeting.to_string())
    );
    let body = "streamed ".repeat(100_000);
    let response = client()
        .post(server.url("/echo"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), body);
    assert_eq!(get(server.url("/nope")).await.0, 404);
}

/// A component template under all three servers: its routes under `wasmbridge serve`, then one
/// page unchanged under Apache's mod_wasm and under `wasmtime serve` (no lock-in). `greeting`
/// is the JSON the language writes for a name.
async fn check_component(wasm: &Path, project: &str, greeting: impl Fn(&str) -> String) {
    let server = Server::start(&[wasm.to_str().unwrap()]);
    check_http_routes(&server, project, &greeting("Jürgen")).await;
    drop(server);
    check_under_apache(wasm, "/api/hello?name=Apache", &greeting("Apache")).await;
    check_under_wasmtime_serve(wasm, &[], "/api/hello?name=wasmtime", &greeting("wasmtime"));
}

#[test]
fn new_lists_the_templates_for_an_unknown_one_and_keeps_out_of_full_directories() {
    let output = Command::new(binary())
        .args(["new", "cobol-http"])
        .arg(temp_dir("unknown").join("app"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("there is no template `cobol-http`"),
        "{error}"
    );
    for template in [
        "rust-http",
        "rust-http3",
        "js-http",
        "rust-cgi",
        "python-http",
        "python-cgi",
        "php-app",
    ] {
        assert!(error.contains(template), "{error}");
    }

    let full = temp_dir("full");
    std::fs::write(full.join("keep.txt"), "mine").unwrap();
    let output = Command::new(binary())
        .args(["new", "rust-http"])
        .arg(&full)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is not empty"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(full.join("keep.txt")).unwrap(),
        "mine"
    );
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);
}

#[tokio::test]
async fn rust_http_builds_and_serves_its_routes() {
    let project = new("rust-http", "hello-app");
    let wasm = cargo_build(&project, "wasm32-wasip2", "hello_app.wasm");
    check_component(&wasm, "hello-app", |name| {
        format!("{{\"greeting\":\"Hello, {name}!\"}}\n")
    })
    .await;
}

#[tokio::test]
async fn rust_http3_builds_and_serves_its_routes() {
    let project = new("rust-http3", "async-app");
    let wasm = cargo_build(&project, "wasm32-wasip2", "async_app.wasm");
    check_component(&wasm, "async-app", |name| {
        format!("{{\"greeting\":\"Hello, {name}!\"}}\n")
    })
    .await;
}

/// Serves the component `wasm` under Apache's mod_wasm and checks one page.
async fn check_under_apache(wasm: &Path, path: &str, expected: &str) {
    let apache = apache_serving(wasm, "");
    let response = client().get(apache.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", apache.error_log());
    assert_eq!(response.text().await.unwrap(), expected);
}

/// Apache with mod_wasm serving `wasm` (copied where www-data children can read it) at `/`,
/// with `directives` added to its `<Location>`.
fn apache_serving(wasm: &Path, directives: &str) -> Apache {
    let public = temp_dir("public");
    std::fs::copy(wasm, public.join("app.wasm")).unwrap();
    Apache::start(
        "event",
        &format!(
            "<Location />\n SetHandler wasm-handler\n WasmModule {}/app.wasm\n{directives}</Location>",
            readable(&public).display()
        ),
    )
}

#[tokio::test]
async fn rust_cgi_builds_and_answers_as_a_cgi_program() {
    let project = new("rust-cgi", "cgi-app");
    let wasm = cargo_build(&project, "wasm32-wasip1", "cgi-app.wasm");
    let server = Server::start(&[wasm.to_str().unwrap()]);
    assert_eq!(
        post_form(server.url("/some/path?x=1"), "name=you").await,
        (
            200,
            "Hello from cgi-app, a CGI program!\nmethod: POST\npath: /some/path\nquery: x=1\nbody: name=you\n"
                .into()
        )
    );
    drop(server);

    let apache = apache_serving(&wasm, " WasmEnableCGI On\n");
    assert_eq!(
        post_form(apache.url("/some/path?x=1"), "name=Apache").await,
        (
            200,
            "Hello from cgi-app, a CGI program!\nmethod: POST\npath: /some/path\nquery: x=1\nbody: name=Apache\n"
                .into()
        ),
        "{}",
        apache.error_log()
    );
    drop(apache);

    // Wrapped into one wasi:http component, as the README shows, and served as one.
    let component = project.join("cgi-app-http.wasm");
    run_wasmbridge([
        OsStr::new("wrap"),
        OsStr::new("-o"),
        component.as_os_str(),
        wasm.as_os_str(),
    ]);
    let server = Server::start(&[component.to_str().unwrap()]);
    assert_eq!(
        post_form(server.url("/some/path?x=1"), "name=you").await,
        (
            200,
            "Hello from cgi-app, a CGI program!\nmethod: POST\npath: /some/path\nquery: x=1\nbody: name=you\n"
                .into()
        )
    );
    let (_, page) = get(server.url("/some/path?x=1")).await;
    check_under_wasmtime_serve(&component, &[], "/some/path?x=1", &page);
}

#[tokio::test]
async fn python_cgi_serves_its_form_and_template() {
    let project = new("python-cgi", "greeter");
    let dist = interpreter_dist("python", "python.wasm");
    let server = Server::start(&[
        "--dir",
        &format!("{}::/usr/local/lib", dist.join("lib").display()),
        "--dir",
        &format!("{}::/app::ro", project.display()),
        dist.join("python.wasm").to_str().unwrap(),
        "/app/app.py",
    ]);
    let (status, page) = get(server.url("/")).await;
    assert_eq!(status, 200, "{}", server.log());
    assert!(page.contains("<title>greeter</title>"), "{page}");
    assert!(page.contains("<h1>Hello! Who are you?</h1>"), "{page}");
    let (status, page) = post_form(server.url("/"), "name=%3Cb%3EAda").await;
    assert_eq!(status, 200);
    assert!(page.contains("<h1>Hello, &lt;b&gt;Ada!</h1>"), "{page}");
    assert!(page.contains("(POST)"), "{page}");
    drop(server);

    // Unchanged under Apache, with mod_wasm's own directives.
    let apache = Apache::start(
        "event",
        &format!(
            "<Location />\n SetHandler wasm-handler\n WasmModule {{fixtures}}/python/python.wasm\n \
             WasmMapDir /usr/local/lib {{fixtures}}/python/lib\n WasmMapDir /app {} ro\n \
             WasmArg /app/app.py\n WasmEnableCGI On\n</Location>",
            readable(&project).display()
        ),
    );
    let (status, page) = post_form(apache.url("/"), "name=Apache").await;
    assert_eq!(status, 200, "{}", apache.error_log());
    assert!(page.contains("<h1>Hello, Apache!</h1>"), "{page}");
}

#[tokio::test]
async fn php_app_routes_everything_through_its_front_controller() {
    let project = new("php-app", "notes");
    let dist = interpreter_dist("php", "php-cgi.wasm");
    let state = temp_dir("php-state");
    std::fs::create_dir_all(state.join("tmp")).unwrap();
    std::fs::create_dir_all(state.join("data")).unwrap();
    let server = Server::start(&[
        "--dir",
        &format!("{}::/www::ro", project.join("public").display()),
        "--dir",
        &format!("{}::/tmp", state.join("tmp").display()),
        "--dir",
        &format!("{}::/data", state.join("data").display()),
        "--cgi-docroot",
        "/www",
        "--cgi-fallback",
        "/index.php",
        dist.join("php-cgi.wasm").to_str().unwrap(),
    ]);
    let added = no_redirect_client()
        .post(server.url("/notes"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("text=first+note")
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 303, "{}", server.log());
    assert_eq!(
        get(server.url("/api/notes")).await,
        (200, "[{\"id\":1,\"text\":\"first note\"}]\n".into())
    );
    let (status, page) = get(server.url("/")).await;
    assert_eq!(status, 200);
    assert!(page.contains("<li>first note</li>"), "{page}");
    assert_eq!(post_form(server.url("/notes"), "text=").await.0, 400);
    assert_eq!(get(server.url("/elsewhere")).await.0, 404);
    drop(server);

    // Unchanged under Apache: the public directory as the DocumentRoot, a front controller by
    // FallbackResource, the state directories owned by Apache's user.
    Command::new("chown")
        .args(["-R", "www-data:www-data"])
        .arg(&state)
        .status()
        .unwrap();
    let public = readable(&project).join("public");
    let apache = Apache::start(
        "event",
        &format!(
            "LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so\n\
             DocumentRoot {public}\n\
             <Directory {public}>\n FallbackResource /index.php\n\
             <Files index.php>\n SetHandler wasm-handler\n</Files>\n\
             WasmModule {{fixtures}}/php/php-cgi.wasm\n\
             WasmMapDir /www {public} ro\n\
             WasmMapDir /tmp {tmp}\n WasmMapDir /data {data}\n\
             WasmEnableCGI On\n WasmMapCGIFileNames On\n</Directory>",
            public = public.display(),
            tmp = state.join("tmp").display(),
            data = state.join("data").display(),
        ),
    );
    assert_eq!(
        get(apache.url("/api/notes")).await,
        (200, "[{\"id\":1,\"text\":\"first note\"}]\n".into()),
        "{}",
        apache.error_log()
    );
}

#[tokio::test]
async fn python_http_becomes_a_component_with_componentize_py() {
    let tool = std::env::var_os("WASMBRIDGE_COMPONENTIZE_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache/wasmbridge-tools/componentize-py-0.25.1/bin/componentize-py")
        });
    assert!(
        tool.exists(),
        "{} is missing; run the README's test command",
        tool.display()
    );
    let project = new("python-http", "py-app");
    assert!(project.join("wit/deps/http/http.wit").exists());
    let status = Command::new(&tool)
        .args([
            "-d",
            "wit",
            "-w",
            "app",
            "componentize",
            "app",
            "-o",
            "app.wasm",
        ])
        .current_dir(&project)
        .status()
        .unwrap();
    assert!(status.success());
    check_component(&project.join("app.wasm"), "py-app", |name| {
        format!("{{\"greeting\": \"Hello, {name}!\"}}\n")
    })
    .await;
}

#[tokio::test]
async fn js_http_becomes_a_component_with_componentize_js() {
    // `npm install` is the test command's, from the template's own package-lock.json.
    let node_modules = std::env::var_os("WASMBRIDGE_JS_NODE_MODULES")
        .map(PathBuf::from)
        .filter(|dir| dir.join(".bin/componentize-js").exists())
        .expect(
            "WASMBRIDGE_JS_NODE_MODULES names no componentize-js; run the README's test command",
        );
    let project = new("js-http", "js-app");
    assert!(project.join("wit/deps/http/package.wit").exists());
    std::os::unix::fs::symlink(&node_modules, project.join("node_modules")).unwrap();
    let output = Command::new("npm")
        .args(["run", "build"])
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "npm run build: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    check_component(&project.join("app.wasm"), "js-app", |name| {
        format!("{{\"greeting\":\"Hello, {name}!\"}}\n")
    })
    .await;
}

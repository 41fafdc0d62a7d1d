//! The CPython guest (guests/python, built from Debian's source) serving CGI scripts.

use std::path::PathBuf;

use wasmbridge_tests::{Server, client};

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

fn start(script: &str) -> Server {
    let dist = dist();
    let apps = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guests/fixtures/python");
    Server::start(&[
        "-W",
        "timeout=30s",
        "--env",
        "PYTHONDONTWRITEBYTECODE=1",
        "--dir",
        &format!("{}::/usr/local/lib", dist.join("lib").display()),
        "--dir",
        &format!("{}::/app", apps.display()),
        dist.join("python.wasm").to_str().unwrap(),
        script,
    ])
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
    let dist = dist();
    let app = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guests/python/apps/prettyfy");
    Server::start(&[
        "-W",
        "timeout=30s",
        "--env",
        "PYTHONDONTWRITEBYTECODE=1",
        "--dir",
        &format!("{}::/usr/local/lib", dist.join("lib").display()),
        "--dir",
        &format!("{}::/app", app.display()),
        dist.join("python.wasm").to_str().unwrap(),
        "/app/prettyfy.py",
    ])
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

//! A guest reaches no variable or file that was not granted.

use std::path::PathBuf;

use wasmbridge_tests::{Server, get, guest};

#[tokio::test]
async fn no_environment_variable_without_env() {
    let server = Server::start_with_env(&[&guest("probe")], &[("WB_SECRET", "s3cret")]);
    assert_eq!(get(server.url("/env")).await, (200, String::new()));
}

#[tokio::test]
async fn env_grants_exactly_the_named_variables() {
    let server = Server::start_with_env(
        &[
            "--env",
            "GIVEN=1",
            "--env",
            "WB_INHERITED",
            "--env",
            "WB_UNSET",
            &guest("probe"),
        ],
        &[("WB_INHERITED", "from host"), ("WB_SECRET", "s3cret")],
    );
    // WB_UNSET is not set on the host, so the guest does not get it either.
    assert_eq!(
        get(server.url("/env")).await,
        (200, "GIVEN=1\nWB_INHERITED=from host\n".to_string())
    );
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = wasmbridge_tests::temp_dir(name);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn no_file_without_dir() {
    let server = Server::start(&[&guest("probe")]);
    let (status, text) = get(server.url("/read?path=/etc/passwd")).await;
    assert_eq!(status, 404, "{text}");
    assert!(!text.contains("root:"), "{text}");
    assert_eq!(get(server.url("/list?path=/")).await.0, 404);
}

#[tokio::test]
async fn dir_grants_exactly_that_directory() {
    let tmp = TempDir::new("sandbox");
    let public = tmp.0.join("public");
    std::fs::create_dir_all(&public).unwrap();
    std::fs::write(public.join("hello.txt"), "inside").unwrap();
    std::fs::write(tmp.0.join("secret.txt"), "outside").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", public.join("passwd-link")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", public.join("secret-link")).unwrap();

    let grant = format!("{}::/data", public.display());
    let server = Server::start(&["--dir", &grant, &guest("probe")]);

    assert_eq!(
        get(server.url("/read?path=/data/hello.txt")).await,
        (200, "inside".to_string())
    );
    assert_eq!(
        get(server.url("/list?path=/data")).await,
        (200, "hello.txt\npasswd-link\nsecret-link\n".to_string())
    );
    for escape in [
        "/etc/passwd",
        "/data/../secret.txt",
        "/data/../../etc/passwd",
        "../secret.txt",
        "/data/passwd-link",
        "/data/secret-link",
        &format!("{}/secret.txt", tmp.0.display()),
    ] {
        let (status, text) = get(server.url(&format!("/read?path={escape}"))).await;
        assert_eq!(status, 404, "{escape} was readable: {text}");
        assert!(
            !text.contains("outside") && !text.contains("root:"),
            "{escape} leaked: {text}"
        );
    }
}

/// A one-line HTTP server on loopback that counts its connections.
async fn upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream",
                )
                .await;
        }
    });
    (authority, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_outgoing_request_without_a_network_grant() {
    let (authority, hits) = upstream().await;
    let server = Server::start(&[&guest("probe")]);
    let (status, text) = get(server.url(&format!("/fetch?authority={authority}"))).await;
    assert_eq!(
        (status, text.as_str()),
        (502, "fetch failed: ErrorCode::HttpRequestDenied\n")
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the upstream was reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inherit_network_grants_outgoing_requests() {
    let (authority, hits) = upstream().await;
    let server = Server::start(&["-S", "inherit-network", &guest("probe")]);
    assert_eq!(
        get(server.url(&format!("/fetch?authority={authority}"))).await,
        (200, "upstream".to_string())
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

//! Serving components: responses as the guest made them, over HTTP/1.1 and h2c, and under load.

use wasmbridge_tests::{Server, client, guest, h2c_client};

#[tokio::test]
async fn hello_answers_like_wasmtime_serve() {
    let server = Server::start(&[&guest("hello_http")]);
    let response = client().get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(response.text().await.unwrap(), "Hello from WebAssembly!\n");
}

#[tokio::test]
async fn status_and_headers_set_by_the_guest_arrive_unchanged() {
    let server = Server::start(&[&guest("probe")]);
    for code in [201u16, 404, 418, 503] {
        let response = client()
            .get(server.url(&format!("/status?code={code}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), code);
        let headers = response.headers();
        assert_eq!(headers["content-type"], "text/x-probe");
        assert_eq!(headers["x-probe"], "yes");
        let cookies: Vec<_> = headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cookies, ["a=1; Path=/", "b=2; Path=/"]);
        assert_eq!(response.text().await.unwrap(), format!("status {code}\n"));
    }
}

#[tokio::test]
async fn request_headers_reach_the_guest() {
    let server = Server::start(&[&guest("probe")]);
    let text = client()
        .get(server.url("/headers"))
        .header("x-test", "value 1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("x-test: value 1\n"), "{text}");
}

#[tokio::test]
async fn header_flag_replaces_request_headers() {
    let server = Server::start(&["-H", "x-test: from-server", &guest("probe")]);
    let text = client()
        .get(server.url("/headers"))
        .header("x-test", "from-client")
        .send()
        .await
        .unwrap();
    let text = text.text().await.unwrap();
    assert!(
        text.contains("x-test: from-server\n") && !text.contains("from-client"),
        "{text}"
    );
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let server = Server::start(&[&guest("hello_http")]);
    let response = h2c_client().get(server.url("/")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "Hello from WebAssembly!\n");
}

#[tokio::test]
async fn every_request_gets_a_fresh_instance() {
    let server = Server::start(&[&guest("counter")]);
    let client = client();
    for _ in 0..20 {
        let text = client
            .get(server.url("/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(text, "1\n");
    }
    let concurrent = (0..50).map(|_| {
        let (client, url) = (client.clone(), server.url("/"));
        tokio::spawn(async move { client.get(url).send().await.unwrap().text().await.unwrap() })
    });
    for answer in futures::future::join_all(concurrent).await {
        assert_eq!(answer.unwrap(), "1\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_requests_all_succeed() {
    let server = Server::start(&[&guest("hello_http")]);
    // A client per request, so that each one is its own connection.
    let requests = (0..500).map(|_| {
        let url = server.url("/");
        tokio::spawn(async move {
            let response = client().get(url).send().await?;
            let status = response.status();
            let body = response.text().await?;
            Ok::<_, reqwest::Error>((status, body))
        })
    });
    let results = futures::future::join_all(requests).await;
    let ok = results
        .iter()
        .filter(|r| matches!(r, Ok(Ok((status, body))) if *status == 200 && body == "Hello from WebAssembly!\n"))
        .count();
    assert_eq!(
        ok,
        500,
        "only {ok} of 500 succeeded; log:\n{}",
        server.log()
    );
}

#[tokio::test]
async fn a_wasmtime_serve_command_line_works_unchanged() {
    let data = wasmbridge_tests::temp_dir("compat");
    std::fs::write(data.join("greeting.txt"), "hi there").unwrap();
    let dir = format!("{}::/data", data.display());
    let server = Server::start(&[
        "-S",
        "cli",
        "-S",
        "inherit-network=n,allow-ip-name-lookup=n",
        "-W",
        "timeout=30s,max-memory-size=104857600",
        "-O",
        "pooling-allocator=n",
        "--dir",
        &dir,
        "--env",
        "GREETING=hello",
        "--max-instance-reuse-count",
        "1",
        "--no-logging-prefix",
        &guest("probe"),
    ]);
    let c = client();
    let env = c
        .get(server.url("/env"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(env, "GREETING=hello\n");
    let file = c
        .get(server.url("/read?path=/data/greeting.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(file.text().await.unwrap(), "hi there");
    std::fs::remove_dir_all(&data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_a_combined_format_line_per_request() {
    let log = wasmbridge_tests::temp_dir("access-log").join("access.log");
    let server = Server::start(&["--access-log", log.to_str().unwrap(), &guest("hello_http")]);
    let response = client()
        .get(server.url("/page?x=1"))
        .header("user-agent", "a \"quoted\" agent")
        .header("referer", "http://example.test/")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "Hello from WebAssembly!\n");
    let head = client().head(server.url("/")).send().await.unwrap();
    assert_eq!(head.status(), 200);

    // Written as each response ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 2 || std::time::Instant::now() > deadline {
            break text.lines().map(String::from).collect::<Vec<_>>();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(lines.len(), 2, "{lines:?}");
    let get = &lines[0];
    assert!(get.starts_with("127.0.0.1 - - ["), "{get}");
    assert!(
        get.contains(
            "] \"GET /page?x=1 HTTP/1.1\" 200 24 \"http://example.test/\" \"a \\\"quoted\\\" agent\" 0 hello_http "
        ),
        "{get}"
    );
    let micros = get.rsplit(' ').next().unwrap();
    assert!(micros.parse::<u64>().is_ok(), "{get}");
    // A HEAD sends no body: `-` for its size, as Apache logs it.
    assert!(
        lines[1].contains("\"HEAD / HTTP/1.1\" 200 - \"-\" "),
        "{}",
        lines[1]
    );
}

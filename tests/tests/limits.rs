//! A guest that traps, loops or runs out of memory or fuel costs one request: the client gets
//! the documented 5xx, the log gets one line naming the app, the request and the cause, and the
//! next request is served.

use std::time::{Duration, Instant};

use wasmbridge_tests::{Server, client, guest};

/// Asserts that exactly one log line reports a failure of `app`, and that it says `cause`.
fn assert_one_failure_line(server: &Server, app: &str, cause: &str) {
    assert!(
        server.wait_for_log(cause, Duration::from_secs(5)),
        "no `{cause}` in log:\n{}",
        server.log()
    );
    let lines = server.log_lines("error [");
    assert_eq!(
        lines.len(),
        1,
        "expected one failure line:\n{}",
        server.log()
    );
    let line = &lines[0];
    assert!(
        line.starts_with("error [0] :: ")
            && line.contains(&format!("app `{app}`"))
            && line.contains(cause),
        "{line}"
    );
}

#[tokio::test]
async fn a_trap_is_a_500_and_the_next_request_succeeds() {
    let server = Server::start(&[&guest("trap")]);
    let response = client().get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    let page = response.text().await.unwrap();
    assert!(
        !page.contains("deliberate"),
        "guest details must not reach the client: {page}"
    );
    assert_one_failure_line(
        &server,
        "trap",
        "guest trapped: wasm trap: wasm `unreachable` instruction executed",
    );
    // The guest's own panic message is in the log, tagged with the request id.
    assert!(
        server
            .log()
            .contains("stderr [0] :: deliberate trap from the trap fixture"),
        "{}",
        server.log()
    );

    let next = client().get(server.url("/ok")).send().await.unwrap();
    assert_eq!(next.status(), 200);
    assert_eq!(next.text().await.unwrap(), "still alive\n");
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_the_deadline() {
    let server = Server::start(&["-W", "timeout=1s", &guest("spin")]);
    let started = Instant::now();
    let response = client().get(server.url("/")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    assert_one_failure_line(&server, "spin", "deadline exceeded: still running after 1s");
    assert_eq!(
        client()
            .get(server.url("/ok"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_request_does_not_stall_the_others() {
    let server = Server::start(&["-W", "timeout=3s", &guest("spin")]);
    // Occupy both cores with loops, then ask for a quick answer.
    let loops: Vec<_> = (0..2)
        .map(|_| tokio::spawn(client().get(server.url("/")).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let ok = client().get(server.url("/ok")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    for l in loops {
        assert_eq!(l.await.unwrap().unwrap().status(), 504);
    }
}

#[tokio::test]
async fn a_memory_bomb_under_a_cap_is_a_503() {
    let server = Server::start(&["-W", "max-memory-size=67108864", &guest("membomb")]);
    let response = client().get(server.url("/?mb=1024")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_one_failure_line(&server, "membomb", "memory limit exceeded");
    assert!(
        server.log_lines("error [0]")[0].contains("the limit is 67108864"),
        "{}",
        server.log()
    );
    let small = client().get(server.url("/?mb=8")).send().await.unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(small.text().await.unwrap(), "allocated 8 MiB\n");
}

#[tokio::test]
async fn running_out_of_fuel_is_a_503() {
    let server = Server::start(&["-W", "fuel=5000000", &guest("spin")]);
    let response = client().get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_one_failure_line(&server, "spin", "fuel exhausted");
    assert_eq!(
        client()
            .get(server.url("/ok"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_full_resource_table_is_a_503() {
    let server = Server::start(&["-S", "max-resources=1000", &guest("probe")]);
    let response = client()
        .get(server.url("/resources?n=5000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_one_failure_line(&server, "probe", "the resource table is full");
    let fine = client()
        .get(server.url("/resources?n=100"))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.text().await.unwrap(), "holding 100 resources\n");
}

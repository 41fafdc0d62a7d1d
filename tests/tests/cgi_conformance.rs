//! The CGI conformance suite (cgi/conformance.toml), end to end: every case goes as a real
//! request to the cgi-probe fixture under `wasmbridge serve`, as a wrapped component
//! (`wasmbridge wrap`) under `wasmbridge serve`, and under mod_wasm in Apache. Where a server
//! differs from the core, the case says so, and why; every other answer must be the core's.

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmbridge_tests::apache::Apache;
use wasmbridge_tests::{Server, guest_p1, no_redirect_client, wrapped_p1};

#[derive(Deserialize)]
struct Suite {
    request: Vec<RequestCase>,
    response: Vec<ResponseCase>,
}

#[derive(Deserialize, Clone)]
struct RequestCase {
    name: String,
    #[serde(default = "get")]
    method: String,
    target: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    body: Option<String>,
    #[serde(default)]
    expect: BTreeMap<String, String>,
    #[serde(default)]
    absent: Vec<String>,
    only: Option<Vec<String>>,
    wrapped: Option<RequestDifference>,
    apache: Option<RequestDifference>,
}

/// Where one server's variables differ from the core's.
#[derive(Deserialize, Clone)]
struct RequestDifference {
    #[serde(default)]
    expect: BTreeMap<String, String>,
    #[serde(default)]
    unset: Vec<String>,
    status: Option<u16>,
    #[allow(dead_code)]
    why: String,
}

#[derive(Deserialize, Clone)]
struct ResponseCase {
    name: String,
    output: String,
    #[serde(flatten)]
    answer: Answer,
    wrapped: Option<Answer>,
    apache: Option<Answer>,
}

/// What the client gets.
#[derive(Deserialize, Clone, Default)]
struct Answer {
    status: Option<u16>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    absent: Vec<String>,
    body: Option<String>,
    local_redirect: Option<String>,
    malformed: Option<String>,
    #[allow(dead_code)]
    why: Option<String>,
}

fn get() -> String {
    "GET".into()
}

fn suite() -> Suite {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../cgi/conformance.toml");
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// One server under test: where the probe is, and how to read its log.
struct Target<'a> {
    name: &'static str,
    base: String,
    port: u16,
    log: &'a dyn Fn() -> String,
}

/// Sends every request case; returns what differs from the suite, one line a difference.
async fn check_requests(target: &Target<'_>) -> Vec<String> {
    let client = no_redirect_client();
    let mut differences = Vec::new();
    for case in suite().request {
        if case
            .only
            .as_ref()
            .is_some_and(|only| !only.iter().any(|s| s == target.name))
        {
            continue;
        }
        let difference = match target.name {
            "wrapped" => case.wrapped.clone(),
            "apache" => case.apache.clone(),
            _ => None,
        };
        let mut request = client.request(
            case.method.parse().unwrap(),
            format!("{}{}", target.base, case.target),
        );
        for (name, value) in &case.headers {
            request = request.header(name, value);
        }
        if let Some(body) = &case.body {
            request = request.body(body.clone());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let mut differ = |what: String| differences.push(format!("{}: {what}", case.name));
        let expected_status = difference.as_ref().and_then(|d| d.status).unwrap_or(200);
        if status != expected_status {
            differ(format!("status {status}, not {expected_status}: {text}"));
            continue;
        }
        if status != 200 {
            continue;
        }
        let vars: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .collect();
        let mut expect = case.expect.clone();
        let mut absent = case.absent.clone();
        if let Some(difference) = &difference {
            expect.extend(difference.expect.clone());
            expect.retain(|name, _| !difference.unset.contains(name));
            absent.extend(difference.unset.iter().cloned());
        }
        for (name, value) in &expect {
            let value = value.replace("$PORT", &target.port.to_string());
            if vars.get(name.as_str()) != Some(&&*value) {
                differ(format!(
                    "{name} is {:?}, not {value:?}",
                    vars.get(name.as_str())
                ));
            }
        }
        for name in &absent {
            if let Some(value) = vars.get(name.as_str()) {
                differ(format!("{name} is set ({value:?})"));
            }
        }
    }
    differences
}

/// Has the probe write every response case; returns what differs from the suite.
async fn check_responses(target: &Target<'_>) -> Vec<String> {
    let client = no_redirect_client();
    let mut differences = Vec::new();
    for case in suite().response {
        let answer = match target.name {
            "wrapped" => case.wrapped.clone(),
            "apache" => case.apache.clone(),
            _ => None,
        }
        .unwrap_or(case.answer.clone());
        let response = client
            .post(format!("{}/output", target.base))
            .body(case.output.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        let mut differ = |what: String| {
            differences.push(format!("{}: {what} (got {status} {body:?})", case.name))
        };
        if let Some(malformed) = &answer.malformed {
            if status != 502 {
                differ("not a 502".into());
            }
            // The log line may come a moment after the response. Apache's error log doubles
            // the backslashes of what it logs.
            let line = match target.name {
                "apache" => malformed.replace('\\', "\\\\"),
                _ => malformed.clone(),
            };
            let logged = (0..50).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                (target.log)().contains(&line)
            });
            if !logged {
                differ(format!("{malformed:?} is not in the log"));
            }
            continue;
        }
        if let Some(path) = &answer.local_redirect {
            // The server serves the new path in its place: the probe's environment for it.
            let query = path.split_once('?').map_or("", |(_, q)| q);
            if status != 200 || !body.contains(&format!("QUERY_STRING={query}\n")) {
                differ(format!("not the answer for {path}"));
            }
            continue;
        }
        if Some(status) != answer.status {
            differ(format!("status is not {:?}", answer.status));
        }
        for (name, value) in &answer.headers {
            let got = headers.get(name).map(|v| v.to_str().unwrap());
            if got != Some(value.as_str()) {
                differ(format!("{name} is {got:?}, not {value:?}"));
            }
        }
        for name in &answer.absent {
            if let Some(value) = headers.get(name) {
                differ(format!("{name} is set ({value:?})"));
            }
        }
        if answer
            .body
            .as_ref()
            .is_some_and(|expected| *expected != body)
        {
            differ(format!("the body is not {:?}", answer.body));
        }
    }
    differences
}

/// Runs the whole suite against one server and lists every difference at once.
async fn check(target: Target<'_>) {
    let mut differences = check_requests(&target).await;
    differences.extend(check_responses(&target).await);
    assert!(
        differences.is_empty(),
        "{} differs from the suite:\n{}\n\nlog:\n{}",
        target.name,
        differences.join("\n"),
        (target.log)()
    );
}

#[tokio::test]
async fn wasmbridge_serve_follows_the_suite() {
    let server = Server::start(&[&guest_p1("cgi-probe")]);
    let log = || server.log();
    let target = Target {
        name: "serve",
        base: server.url(""),
        port: server.addr.port(),
        log: &log,
    };
    check(target).await;
}

#[tokio::test]
async fn the_wrapped_component_follows_the_suite() {
    let wrapped = wrapped_p1("cgi-probe", &[]);
    let server = Server::start(&[wrapped.to_str().unwrap()]);
    let log = || server.log();
    let target = Target {
        name: "wrapped",
        base: server.url(""),
        port: server.addr.port(),
        log: &log,
    };
    check(target).await;
}

#[tokio::test]
async fn mod_wasm_follows_the_suite() {
    let apache = Apache::start(
        "event",
        "<Location /probe>\n SetHandler wasm-handler\n \
         WasmModule {fixtures}/wasm-p1/cgi-probe.wasm\n WasmEnableCGI On\n</Location>\n",
    );
    let log = || apache.error_log();
    let target = Target {
        name: "apache",
        base: apache.url("/probe"),
        port: apache.port,
        log: &log,
    };
    check(target).await;
}

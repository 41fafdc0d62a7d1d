//! Runs the conformance suite (cgi/conformance.toml) against the core. The same cases run end
//! to end against every server in tests/tests/cgi_conformance.rs.

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmbridge_cgi::{Endpoint, Head, Request, Script, header_end, meta_variables, parse_head};

#[derive(Deserialize)]
struct Suite {
    request: Vec<RequestCase>,
    response: Vec<ResponseCase>,
}

#[derive(Deserialize)]
struct RequestCase {
    name: String,
    #[serde(default = "get")]
    method: String,
    target: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    https: bool,
    #[serde(default = "yes")]
    local: bool,
    authority: Option<String>,
    #[serde(default)]
    script_name: String,
    #[serde(default)]
    expect: BTreeMap<String, String>,
    #[serde(default)]
    absent: Vec<String>,
}

#[derive(Deserialize)]
struct ResponseCase {
    name: String,
    output: String,
    status: Option<u16>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    absent: Vec<String>,
    body: Option<String>,
    local_redirect: Option<String>,
    malformed: Option<String>,
}

fn get() -> String {
    "GET".into()
}

fn yes() -> bool {
    true
}

fn suite() -> Suite {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conformance.toml");
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The port the core's requests come in on, for `$PORT`.
const PORT: u16 = 8080;

#[test]
fn requests_become_the_variables_the_suite_expects() {
    for case in suite().request {
        let headers: Vec<(&[u8], &[u8])> = case
            .headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let (path, _) = case.target.split_once('?').unwrap_or((&case.target, ""));
        let target = format!("{}{}", case.script_name, case.target);
        let body_length;
        let mut headers = headers;
        if case.method == "POST" {
            // What a client sends with a body.
            body_length = "3".to_string();
            headers.push((b"content-length", body_length.as_bytes()));
        }
        let request = Request {
            method: case.method.as_bytes(),
            https: case.https,
            protocol: Some(b"HTTP/1.1"),
            target: target.as_bytes(),
            authority: case.authority.as_deref().map(str::as_bytes),
            headers: &headers,
            server_software: b"wasmbridge",
            local: case.local.then_some(Endpoint {
                ip: b"127.0.0.1",
                port: PORT,
            }),
            remote: Some(Endpoint {
                ip: b"127.0.0.2",
                port: 50000,
            }),
            auth_type: None,
            remote_user: None,
        };
        let script = Script {
            filename: b"/www/probe",
            name: case.script_name.as_bytes(),
            path_info: path.as_bytes(),
            document_root: b"/www",
        };
        let mut vars = BTreeMap::new();
        meta_variables(&request, &script, |name, value| {
            let name = String::from_utf8(name.to_vec()).unwrap();
            let value = String::from_utf8(value.to_vec()).unwrap();
            assert!(
                vars.insert(name.clone(), value).is_none(),
                "{}: {name} set twice",
                case.name
            );
        });
        for (name, value) in &case.expect {
            let value = value.replace("$PORT", &PORT.to_string());
            assert_eq!(vars.get(name), Some(&value), "{}: {name}", case.name);
        }
        for name in &case.absent {
            assert_eq!(vars.get(name), None, "{}: {name}", case.name);
        }
    }
}

#[test]
fn output_means_what_the_suite_expects() {
    for case in suite().response {
        let output = case.output.as_bytes();
        let head = match header_end(output) {
            Some((head, body)) => parse_head(&output[..head]).map(|head| (head, &output[body..])),
            None => Err(wasmbridge_cgi::Malformed::NoHeaderBlock {
                bytes: output.len(),
            }),
        };
        match (head, &case.malformed, &case.local_redirect) {
            (Err(malformed), Some(expected), _) => {
                assert_eq!(
                    String::from_utf8(malformed.describe()).unwrap(),
                    *expected,
                    "{}",
                    case.name
                );
            }
            (Ok((Head::LocalRedirect(path), _)), None, Some(expected)) => {
                assert_eq!(path, expected.as_bytes(), "{}", case.name);
            }
            (Ok((Head::Document { status, headers }, body)), None, None) => {
                assert_eq!(Some(status), case.status, "{}", case.name);
                let headers: BTreeMap<String, String> = headers
                    .iter()
                    .map(|(n, v)| {
                        (
                            String::from_utf8(n.to_ascii_lowercase()).unwrap(),
                            String::from_utf8(v.to_vec()).unwrap(),
                        )
                    })
                    .collect();
                for (name, value) in &case.headers {
                    assert_eq!(headers.get(name), Some(value), "{}: {name}", case.name);
                }
                for name in &case.absent {
                    assert_eq!(headers.get(name), None, "{}: {name}", case.name);
                }
                // What the program sent as framing is dropped, not passed on.
                assert_eq!(headers.get("content-length"), None, "{}", case.name);
                if let Some(expected) = &case.body {
                    assert_eq!(body, expected.as_bytes(), "{}", case.name);
                }
            }
            (other, _, _) => panic!("{}: {other:?}", case.name),
        }
    }
}

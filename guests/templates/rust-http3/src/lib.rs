//! A WASI 0.3 wasi:http component: an async handler with a small router, a JSON endpoint and
//! a streamed echo.

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response};
use wasip3::{wit_bindgen, wit_future, wit_stream};

struct App;

impl wasip3::exports::http::handler::Guest for App {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path_with_query = request.get_path_with_query().unwrap_or_default();
        let (path, query) = path_with_query
            .split_once('?')
            .unwrap_or((&path_with_query, ""));
        Ok(match (request.get_method(), path) {
            (Method::Get, "/") => respond(
                200,
                "text/plain; charset=utf-8",
                b"Hello from {{name}}!\n".to_vec(),
            ),
            (Method::Get, "/api/hello") => {
                let name = query_param(query, "name").unwrap_or_else(|| "world".into());
                let json = format!("{{\"greeting\":\"Hello, {}!\"}}\n", json_escape(&name));
                respond(200, "application/json", json.into_bytes())
            }
            (Method::Post, "/echo") => echo(request),
            _ => respond(404, "text/plain; charset=utf-8", b"Not Found\n".to_vec()),
        })
    }
}

wasip3::http::service::export!(App);

/// A response whose body a task writes after the handler has returned it.
fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), content_type.as_bytes().to_vec()),
        ("content-length".to_string(), body.len().to_string().into_bytes()),
    ])
    .unwrap();
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    drop(trailers_tx); // no trailers: the default, `Ok(None)`
    let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
    response.set_status_code(status).unwrap();
    wit_bindgen::spawn_local(async move {
        body_tx.write_all(body).await;
    });
    response
}

/// Copies the request body to the response a chunk at a time: nothing is buffered whole.
fn echo(request: Request) -> Response {
    let headers = Fields::from_list(&[(
        "content-type".to_string(),
        b"application/octet-stream".to_vec(),
    )])
    .unwrap();
    let (_, request_done) = wit_future::new(|| Ok(()));
    let (mut input, request_trailers) = Request::consume_body(request, request_done);
    let (mut output, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
    wit_bindgen::spawn_local(async move {
        loop {
            let (result, chunk) = input.read(Vec::with_capacity(64 * 1024)).await;
            // A write that leaves bytes over: the client went away.
            if !chunk.is_empty() && !output.write_all(chunk).await.is_empty() {
                return;
            }
            if !matches!(result, wit_bindgen::StreamResult::Complete(_)) {
                break;
            }
        }
        drop(output);
        let _ = trailers_tx.write(request_trailers.await).await;
    });
    response
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 2;
            }
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

//! A wasi:http component: a small router, a JSON endpoint and a streamed echo.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct App;

impl wasip2::exports::http::incoming_handler::Guest for App {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let (path, query) = path_with_query
            .split_once('?')
            .unwrap_or((&path_with_query, ""));
        match (request.method(), path) {
            (Method::Get, "/") => respond(
                response_out,
                200,
                "text/plain; charset=utf-8",
                b"Hello from {{name}}!\n",
            ),
            (Method::Get, "/api/hello") => {
                let name = query_param(query, "name").unwrap_or_else(|| "world".into());
                let json = format!("{{\"greeting\":\"Hello, {}!\"}}\n", json_escape(&name));
                respond(response_out, 200, "application/json", json.as_bytes());
            }
            (Method::Post, "/echo") => echo(request, response_out),
            _ => respond(response_out, 404, "text/plain; charset=utf-8", b"Not Found\n"),
        }
    }
}

wasip2::http::proxy::export!(App);

fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), content_type.as_bytes().to_vec()),
        ("content-length".to_string(), body.len().to_string().into_bytes()),
    ])
    .unwrap();
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).unwrap();
    let outgoing = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    let mut stream = outgoing.write().unwrap();
    stream.write_all(body).unwrap();
    stream.flush().unwrap();
    drop(stream);
    OutgoingBody::finish(outgoing, None).unwrap();
}

/// Copies the request body to the response a chunk at a time: nothing is buffered whole.
fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let headers = Fields::from_list(&[(
        "content-type".to_string(),
        b"application/octet-stream".to_vec(),
    )])
    .unwrap();
    let response = OutgoingResponse::new(headers);
    let outgoing = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    let incoming = request.consume().unwrap();
    let input = incoming.stream().unwrap();
    let mut output = outgoing.write().unwrap();
    // Err: the body has ended (or the client went away).
    while let Ok(chunk) = input.blocking_read(64 * 1024) {
        output.write_all(&chunk).unwrap();
    }
    output.flush().unwrap();
    drop(output);
    OutgoingBody::finish(outgoing, None).unwrap();
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

//! A CGI program: the request arrives as environment variables and stdin, the response leaves
//! on stdout, headers first.
//!
//! Build: `cargo build --release --target wasm32-wasip1 -p cgi-hello` (or `wasm32-wasip2`)
//! Serve: `wasmbridge serve target/wasm32-wasip1/release/cgi-hello.wasm`

fn main() {
    let method = std::env::var("REQUEST_METHOD").unwrap_or_default();
    let query = std::env::var("QUERY_STRING").unwrap_or_default();
    print!("Content-Type: text/plain; charset=utf-8\r\n\r\n");
    println!("Hello from a CGI program!");
    println!("{method} with query {query:?}");
}

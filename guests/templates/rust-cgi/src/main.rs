//! A CGI program: the request comes in as environment variables and stdin, the response goes
//! out on stdout as a header block, an empty line and the body.

use std::io::{Read as _, Write as _};

fn main() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let mut body = String::new();
    let _ = std::io::stdin().read_to_string(&mut body);

    let mut out = std::io::stdout().lock();
    let _ = write!(
        out,
        "Content-Type: text/plain; charset=utf-8\r\n\r\n\
         Hello from {{name}}, a CGI program!\n\
         method: {}\npath: {}\nquery: {}\nbody: {}\n",
        var("REQUEST_METHOD"),
        // The path asked for: the script's own part and what follows it. How the two split
        // depends on the server (Apache splits at the last existing directory, as for mod_cgi).
        var("SCRIPT_NAME") + &var("PATH_INFO"),
        var("QUERY_STRING"),
        body,
    );
}

//! Reading a CGI response (RFC 3875 §6) from a program's stdout: the header block, then the
//! body, which is passed on as it comes.

use http::{HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// Largest header block accepted, in bytes.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// What the header block asks for.
#[derive(Debug)]
pub enum CgiResponse {
    /// A document (or a client redirect with a document): status, headers, then the body.
    Document {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// A local redirect (§6.2.2): serve the request again for this path, as a GET.
    LocalRedirect(String),
}

/// Why the output was not a CGI response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The output ended before the blank line that ends the header block.
    NoHeaderBlock {
        bytes: usize,
    },
    TooLarge,
    BadLine {
        line: usize,
        text: String,
    },
    BadStatus(String),
    /// A status a CGI response cannot have: 1xx (101 included) or above 599.
    StatusOutOfRange(u16),
    BadLocation(String),
    /// A CGI worker's output was not FastCGI records.
    NotFastCgi,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::NoHeaderBlock { bytes: 0 } => {
                write!(f, "the program wrote nothing to stdout")
            }
            Malformed::NoHeaderBlock { bytes } => {
                write!(
                    f,
                    "the program's output ({bytes} bytes) has no CGI header block"
                )
            }
            Malformed::TooLarge => write!(
                f,
                "the CGI header block is larger than {MAX_HEADER_BLOCK} bytes"
            ),
            Malformed::BadLine { line, text } => {
                write!(f, "malformed CGI header at line {line}: {text:?}")
            }
            Malformed::BadStatus(value) => write!(f, "malformed CGI Status header: {value:?}"),
            Malformed::StatusOutOfRange(code) => write!(
                f,
                "CGI Status {code} is not a final response status (200 to 599)"
            ),
            Malformed::BadLocation(value) => write!(f, "malformed CGI Location header: {value:?}"),
            Malformed::NotFastCgi => write!(
                f,
                "the worker wrote something other than FastCGI records to {}",
                super::channel::INTERFACE
            ),
        }
    }
}

/// Reads the header block from `output`. Returns the response and the body bytes that came
/// with the header block; the rest of the body is what remains in `output`.
pub async fn read_head(
    output: &mut (impl AsyncRead + Unpin),
) -> Result<(CgiResponse, Vec<u8>), Malformed> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let (head_len, body_start) = loop {
        if let Some(end) = header_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEADER_BLOCK {
            return Err(Malformed::TooLarge);
        }
        match output.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(Malformed::NoHeaderBlock { bytes: buf.len() }),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let response = parse_head(&buf[..head_len])?;
    Ok((response, buf.split_off(body_start)))
}

/// The end of the header lines and the start of the body: the first empty line, LF or CRLF.
fn header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut line_start = 0;
    for (i, byte) in buf.iter().enumerate() {
        if *byte == b'\n' {
            let line = &buf[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some((line_start, i + 1));
            }
            line_start = i + 1;
        }
    }
    None
}

fn parse_head(head: &[u8]) -> Result<CgiResponse, Malformed> {
    let mut status = None;
    let mut location = None;
    let mut headers = Vec::new();
    for (index, raw) in head.split(|b| *b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            continue;
        }
        let bad = || Malformed::BadLine {
            line: index + 1,
            text: String::from_utf8_lossy(raw).into_owned(),
        };
        let colon = raw.iter().position(|b| *b == b':').ok_or_else(bad)?;
        let name = HeaderName::from_bytes(&raw[..colon]).map_err(|_| bad())?;
        let value = trim(&raw[colon + 1..]);
        let value = HeaderValue::from_bytes(value).map_err(|_| bad())?;
        match name.as_str() {
            "status" => status = Some(parse_status(&value)?),
            "location" => location = Some(value),
            // Framing is the server's business, not the program's: a Content-Length that
            // disagrees with the body would split a keep-alive connection (the server counts or
            // chunks, as mod_cgi does), and a CGI response cannot switch protocols.
            "connection" | "transfer-encoding" | "keep-alive" | "content-length" | "upgrade" => {}
            _ => headers.push((name, value)),
        }
    }
    match location {
        // A local redirect is a path alone, with no status and no other headers (§6.2.2).
        Some(path)
            if path.as_bytes().starts_with(b"/") && status.is_none() && headers.is_empty() =>
        {
            let path = String::from_utf8_lossy(path.as_bytes()).into_owned();
            Ok(CgiResponse::LocalRedirect(path))
        }
        Some(url) => {
            headers.push((http::header::LOCATION, url));
            Ok(CgiResponse::Document {
                status: status.unwrap_or(StatusCode::FOUND),
                headers,
            })
        }
        None => Ok(CgiResponse::Document {
            status: status.unwrap_or(StatusCode::OK),
            headers,
        }),
    }
}

/// `Status: 404 Not Found` → 404.
fn parse_status(value: &HeaderValue) -> Result<StatusCode, Malformed> {
    let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
    let code = text.split_whitespace().next().unwrap_or_default();
    match StatusCode::from_bytes(code.as_bytes()) {
        Ok(status) if code.len() == 3 && (200..=599).contains(&status.as_u16()) => Ok(status),
        Ok(status) if code.len() == 3 => Err(Malformed::StatusOutOfRange(status.as_u16())),
        _ => Err(Malformed::BadStatus(text)),
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(output: &str) -> Result<(CgiResponse, Vec<u8>), Malformed> {
        read_head(&mut output.as_bytes()).await
    }

    fn document(
        result: Result<(CgiResponse, Vec<u8>), Malformed>,
    ) -> (u16, Vec<(String, String)>, String) {
        match result.unwrap() {
            (CgiResponse::Document { status, headers }, body) => (
                status.as_u16(),
                headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                    .collect(),
                String::from_utf8(body).unwrap(),
            ),
            other => panic!("not a document: {other:?}"),
        }
    }

    #[tokio::test]
    async fn lf_and_crlf_headers() {
        let lf = document(read("Content-Type: text/plain\nX-A:  1 \n\nbody\n").await);
        let crlf = document(read("Content-Type: text/plain\r\nX-A: 1\r\n\r\nbody\n").await);
        assert_eq!(lf, crlf);
        assert_eq!(
            lf,
            (
                200,
                vec![
                    ("content-type".into(), "text/plain".into()),
                    ("x-a".into(), "1".into())
                ],
                "body\n".into()
            )
        );
    }

    #[tokio::test]
    async fn framing_headers_are_the_servers() {
        let (_, headers, _) = document(
            read("Content-Length: 5\nUpgrade: h2c\nConnection: upgrade\nX-A: 1\n\nbody").await,
        );
        assert_eq!(headers, [("x-a".to_string(), "1".to_string())]);
    }

    #[tokio::test]
    async fn status_and_redirects() {
        assert_eq!(
            document(read("Status: 404 Not Found\nContent-Type: text/html\n\n").await).0,
            404
        );
        let client = document(read("Location: https://example.com/x\n\n").await);
        assert_eq!(
            (client.0, &client.1[0].1[..]),
            (302, "https://example.com/x")
        );
        let moved =
            document(read("Status: 301\nLocation: /new\nContent-Type: text/html\n\nmoved").await);
        assert_eq!(
            (moved.0, &moved.1[1].1[..], &moved.2[..]),
            (301, "/new", "moved")
        );
        assert!(
            matches!(read("Location: /other?x=1\n\n").await, Ok((CgiResponse::LocalRedirect(p), _)) if p == "/other?x=1")
        );
    }

    #[tokio::test]
    async fn malformed_output_is_named() {
        assert_eq!(
            read("").await.unwrap_err(),
            Malformed::NoHeaderBlock { bytes: 0 }
        );
        assert_eq!(
            read("Content-Type: text/plain\n").await.unwrap_err(),
            Malformed::NoHeaderBlock { bytes: 25 }
        );
        assert!(matches!(
            read("hello world\n\n").await.unwrap_err(),
            Malformed::BadLine { line: 1, .. }
        ));
        assert!(matches!(
            read("Status: abc\n\n").await.unwrap_err(),
            Malformed::BadStatus(_)
        ));
        for status in ["101 Switching Protocols", "100", "199", "600", "999"] {
            assert!(matches!(
                read(&format!("Status: {status}\n\n")).await.unwrap_err(),
                Malformed::StatusOutOfRange(_)
            ));
        }
        let huge = format!("X: {}\n", "a".repeat(MAX_HEADER_BLOCK + 10));
        assert_eq!(read(&huge).await.unwrap_err(), Malformed::TooLarge);
    }
}

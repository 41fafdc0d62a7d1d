//! Reading a CGI response (RFC 3875 §6) from a program's stdout: the header block, read by the
//! rules of the CGI core (`wasmbridge-cgi`), then the body, which is passed on as it comes.

use http::{HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use wasmbridge_cgi::Head;

pub use wasmbridge_cgi::{MAX_HEADER_BLOCK, Malformed};

/// What the header block asks for.
#[derive(Debug)]
pub enum CgiResponse {
    /// A document (or a client redirect with a document): status, headers, then the body.
    Document {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// A local redirect (RFC 3875 6.2.2): serve the request again for this path, as a GET.
    LocalRedirect(String),
}

/// Reads the header block from `output`. Returns the response and the body bytes that came
/// with the header block; the rest of the body is what remains in `output`.
pub async fn read_head(
    output: &mut (impl AsyncRead + Unpin),
) -> Result<(CgiResponse, Vec<u8>), Malformed> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let (head_len, body_start) = loop {
        if let Some(end) = wasmbridge_cgi::header_end(&buf) {
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
    let response = match wasmbridge_cgi::parse_head(&buf[..head_len])? {
        Head::Document { status, headers } => {
            // The core checked all three: a final status, names that are tokens of a sane
            // length, values of text.
            let status =
                StatusCode::from_u16(status).map_err(|_| Malformed::StatusOutOfRange(status))?;
            let mut converted = Vec::with_capacity(headers.len());
            for (name, value) in headers {
                let bad = || Malformed::BadLine {
                    line: 0,
                    text: name.to_vec(),
                };
                let name = HeaderName::from_bytes(name).map_err(|_| bad())?;
                let value = HeaderValue::from_bytes(value).map_err(|_| bad())?;
                converted.push((name, value));
            }
            CgiResponse::Document {
                status,
                headers: converted,
            }
        }
        Head::LocalRedirect(path) => {
            CgiResponse::LocalRedirect(String::from_utf8_lossy(path).into_owned())
        }
    };
    Ok((response, buf.split_off(body_start)))
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
        // A name longer than HTTP libraries take is a bad line, not a panic.
        let long_name = format!("{}: x\n\n", "A".repeat(10_000));
        assert!(matches!(
            read(&long_name).await.unwrap_err(),
            Malformed::BadLine { line: 1, .. }
        ));
        let longest_name = format!("{}: x\n\n", "A".repeat(MAX_HEADER_BLOCK + 1000));
        assert_eq!(read(&longest_name).await.unwrap_err(), Malformed::TooLarge);
        let huge = format!("X: {}\n", "a".repeat(MAX_HEADER_BLOCK + 10));
        assert_eq!(read(&huge).await.unwrap_err(), Malformed::TooLarge);
    }
}

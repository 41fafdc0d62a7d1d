//! A program's output read as a CGI response (RFC 3875 section 6): a header block, ended by
//! an empty line (LF or CRLF), then the body.

use alloc::vec::Vec;

use crate::text::{decimal, push_quoted};

/// Largest header block accepted, in bytes.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Longest header name accepted, in bytes (HTTP libraries refuse names of 64 KiB).
const MAX_NAME: usize = 8 * 1024;

/// What a header block asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head<'a> {
    /// A document, or a client redirect (its `Location` is among the headers): the status, the
    /// headers in their order, then the body.
    Document {
        status: u16,
        headers: Vec<(&'a [u8], &'a [u8])>,
    },
    /// A local redirect (section 6.2.2): the server serves this path instead, as a GET.
    LocalRedirect(&'a [u8]),
}

/// Why the output is not a CGI response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The output ended before the empty line that ends the header block.
    NoHeaderBlock { bytes: usize },
    /// The header block goes on past [`MAX_HEADER_BLOCK`].
    TooLarge,
    /// A line that is not `Name: value` with a token for the name and no control characters in
    /// the value.
    BadLine { line: usize, text: Vec<u8> },
    /// A `Status` that does not start with three digits.
    BadStatus(Vec<u8>),
    /// A status a CGI response cannot have: 1xx (101 included) or above 599.
    StatusOutOfRange(u16),
    /// A local redirect to something that is not a request target.
    BadLocation(Vec<u8>),
}

impl Malformed {
    /// What went wrong, for the log.
    pub fn describe(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Malformed::NoHeaderBlock { bytes: 0 } => {
                out.extend_from_slice(&lit!(b"the program wrote nothing to stdout"));
            }
            Malformed::NoHeaderBlock { bytes } => {
                out.extend_from_slice(&lit!(b"the program's output ("));
                out.extend_from_slice(&decimal(*bytes as u64));
                out.extend_from_slice(&lit!(b" bytes) has no CGI header block"));
            }
            Malformed::TooLarge => {
                out.extend_from_slice(&lit!(b"the CGI header block is larger than "));
                out.extend_from_slice(&decimal(MAX_HEADER_BLOCK as u64));
                out.extend_from_slice(&lit!(b" bytes"));
            }
            Malformed::BadLine { line, text } => {
                out.extend_from_slice(&lit!(b"malformed CGI header at line "));
                out.extend_from_slice(&decimal(*line as u64));
                out.extend_from_slice(&lit!(b": "));
                push_quoted(&mut out, text);
            }
            Malformed::BadStatus(value) => {
                out.extend_from_slice(&lit!(b"malformed CGI Status header: "));
                push_quoted(&mut out, value);
            }
            Malformed::StatusOutOfRange(code) => {
                out.extend_from_slice(&lit!(b"CGI Status "));
                out.extend_from_slice(&decimal((*code).into()));
                out.extend_from_slice(&lit!(b" is not a final response status (200 to 599)"));
            }
            Malformed::BadLocation(value) => {
                out.extend_from_slice(&lit!(b"malformed CGI Location header: "));
                push_quoted(&mut out, value);
            }
        }
        out
    }
}

/// The end of the header lines and the start of the body: the first empty line, LF or CRLF.
pub fn header_end(output: &[u8]) -> Option<(usize, usize)> {
    let mut line_start = 0;
    for (i, byte) in output.iter().enumerate() {
        if *byte == b'\n' {
            let line = &output[line_start..i];
            if line.is_empty() || line == [b'\r'] {
                return Some((line_start, i + 1));
            }
            line_start = i + 1;
        }
    }
    None
}

/// Reads the header lines (the block before the empty line).
pub fn parse_head(head: &[u8]) -> Result<Head<'_>, Malformed> {
    if head.len() > MAX_HEADER_BLOCK {
        return Err(Malformed::TooLarge);
    }
    let mut status = None;
    let mut location = None;
    let mut headers = Vec::new();
    for (index, raw) in head.split(|b| *b == b'\n').enumerate() {
        let raw = raw.strip_suffix(&[b'\r']).unwrap_or(raw);
        if raw.is_empty() {
            continue;
        }
        let bad = || Malformed::BadLine {
            line: index + 1,
            text: raw[..raw.len().min(200)].to_vec(),
        };
        let colon = raw.iter().position(|b| *b == b':').ok_or_else(bad)?;
        let (name, value) = (&raw[..colon], trim(&raw[colon + 1..]));
        if name.is_empty()
            || name.len() > MAX_NAME
            || !name.iter().all(|b| is_token(*b))
            || !value.iter().all(|b| is_text(*b))
        {
            return Err(bad());
        }
        if name.eq_ignore_ascii_case(&lit!(b"status")) {
            status = Some(parse_status(value)?);
        } else if name.eq_ignore_ascii_case(&lit!(b"location")) {
            location = Some((name, value));
        } else if is_framing(name) {
            // Framing is the server's business, not the program's: a Content-Length that
            // disagrees with the body would split a keep-alive connection (the server counts
            // or chunks, as mod_cgi does), and a CGI response cannot switch protocols.
        } else {
            headers.push((name, value));
        }
    }
    match location {
        // A local redirect is a path alone, with no status and no other headers (6.2.2);
        // `//host/x` names another host, so the client goes there.
        Some((_, path))
            if path.first() == Some(&b'/')
                && path.get(1) != Some(&b'/')
                && status.is_none()
                && headers.is_empty() =>
        {
            if path.iter().all(|b| *b > 0x20 && *b != 0x7f) {
                Ok(Head::LocalRedirect(path))
            } else {
                Err(Malformed::BadLocation(path.to_vec()))
            }
        }
        Some(location) => {
            headers.push(location);
            Ok(Head::Document {
                status: status.unwrap_or(302),
                headers,
            })
        }
        None => Ok(Head::Document {
            status: status.unwrap_or(200),
            headers,
        }),
    }
}

fn is_framing(name: &[u8]) -> bool {
    [
        &lit!(b"connection")[..],
        &lit!(b"transfer-encoding"),
        &lit!(b"keep-alive"),
        &lit!(b"content-length"),
        &lit!(b"upgrade"),
    ]
    .iter()
    .any(|framing| name.eq_ignore_ascii_case(framing))
}

/// `404 Not Found` → 404: three digits, then the end or a space and a reason.
fn parse_status(value: &[u8]) -> Result<u16, Malformed> {
    let code = match value {
        [a, b, c, rest @ ..]
            if [a, b, c].iter().all(|d| d.is_ascii_digit())
                && rest.first().is_none_or(|b| *b == b' ' || *b == b'\t') =>
        {
            [a, b, c]
                .iter()
                .fold(0u16, |n, d| n * 10 + u16::from(**d - b'0'))
        }
        _ => return Err(Malformed::BadStatus(value.to_vec())),
    };
    match code {
        200..=599 => Ok(code),
        100..=199 | 600..=999 => Err(Malformed::StatusOutOfRange(code)),
        _ => Err(Malformed::BadStatus(value.to_vec())),
    }
}

/// A header name's characters (RFC 9110 `tchar`).
fn is_token(b: u8) -> bool {
    // A match, not a byte string: the adapter may have no data segment.
    matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'!' | b'#'..=b'\'' | b'*' | b'+')
        || matches!(b, b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// A header value's: no control characters but tab.
fn is_text(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &value[start..end]
}

impl core::fmt::Display for Malformed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&alloc::string::String::from_utf8_lossy(&self.describe()))
    }
}

//! The request as RFC 3875 meta-variables (section 4.1), plus the ones PHP and Python programs
//! expect from Apache (`REQUEST_URI`, `REQUEST_SCHEME`, `HTTPS`, `REDIRECT_STATUS`, ...).

use alloc::vec::Vec;

use crate::text::decimal;

/// A request, as the server saw it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    pub method: &'a [u8],
    /// Whether the client reached the server over TLS.
    pub https: bool,
    /// `HTTP/1.1`, `HTTP/2.0`; `None` when the server is not told (wasi:http does not say),
    /// which passes as `HTTP/1.1`.
    pub protocol: Option<&'a [u8]>,
    /// The path and query as the client sent them, still encoded.
    pub target: &'a [u8],
    /// The request's authority (HTTP/2's `:authority`, or the URI's); the `Host` header stands
    /// in when there is none.
    pub authority: Option<&'a [u8]>,
    /// In the order they came, repeated names included.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    pub server_software: &'a [u8],
    /// The server's end of the connection: `SERVER_ADDR`, and `SERVER_PORT` when the
    /// authority has no port.
    pub local: Option<Endpoint<'a>>,
    /// The client's end: `REMOTE_ADDR`, `REMOTE_PORT`.
    pub remote: Option<Endpoint<'a>>,
    /// Set when the front end authenticated the client.
    pub auth_type: Option<&'a [u8]>,
    pub remote_user: Option<&'a [u8]>,
}

/// One end of a connection: an address as text, and a port.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint<'a> {
    pub ip: &'a [u8],
    pub port: u16,
}

/// Where the script is, as the program and the URL see it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Script<'a> {
    /// The script's path inside the guest (`SCRIPT_FILENAME`).
    pub filename: &'a [u8],
    /// The URL path that names the script, still encoded; empty when it is served at the root.
    pub name: &'a [u8],
    /// The rest of the URL path, still encoded.
    pub path_info: &'a [u8],
    /// The guest directory URLs map into (`DOCUMENT_ROOT`).
    pub document_root: &'a [u8],
}

/// Calls `set` with each meta-variable of `request` for `script`, each name once. A value with
/// a NUL byte is left out: an environment entry ends at the first one.
pub fn meta_variables(request: &Request, script: &Script, mut set: impl FnMut(&[u8], &[u8])) {
    let mut set = |name: &[u8], value: &[u8]| {
        if !value.contains(&0) {
            set(name, value);
        }
    };
    let host_header = header(request.headers, &lit!(b"host"));
    let authority = request.authority.or(host_header).unwrap_or_default();
    let (server_name, port) = split_host(authority);
    let port = match (port, request.local) {
        (Some(port), _) => port.to_vec(),
        // The port the request came in on (Apache's `UseCanonicalPhysicalPort On`).
        (None, Some(local)) => decimal(local.port.into()),
        (None, None) if request.https => lit!(b"443").to_vec(),
        (None, None) => lit!(b"80").to_vec(),
    };

    set(&lit!(b"GATEWAY_INTERFACE"), &lit!(b"CGI/1.1"));
    set(&lit!(b"SERVER_SOFTWARE"), request.server_software);
    set(
        &lit!(b"SERVER_PROTOCOL"),
        request.protocol.unwrap_or(&lit!(b"HTTP/1.1")),
    );
    set(&lit!(b"SERVER_NAME"), server_name);
    set(&lit!(b"SERVER_PORT"), &port);
    if let Some(local) = request.local {
        set(&lit!(b"SERVER_ADDR"), local.ip);
    }
    if let Some(remote) = request.remote {
        set(&lit!(b"REMOTE_ADDR"), remote.ip);
        set(&lit!(b"REMOTE_PORT"), &decimal(remote.port.into()));
    }
    if let Some(auth_type) = request.auth_type {
        set(&lit!(b"AUTH_TYPE"), auth_type);
    }
    if let Some(user) = request.remote_user {
        set(&lit!(b"REMOTE_USER"), user);
    }
    set(&lit!(b"REQUEST_METHOD"), request.method);
    if request.https {
        set(&lit!(b"REQUEST_SCHEME"), &lit!(b"https"));
        set(&lit!(b"HTTPS"), &lit!(b"on"));
    } else {
        set(&lit!(b"REQUEST_SCHEME"), &lit!(b"http"));
    }
    let target = match request.target {
        [] => &lit!(b"/")[..],
        target => target,
    };
    set(&lit!(b"REQUEST_URI"), target);
    let query = match target.iter().position(|b| *b == b'?') {
        Some(i) => &target[i + 1..],
        None => &[],
    };
    set(&lit!(b"QUERY_STRING"), query);
    // Sections 4.1.13 and 4.1.5: the script's URL path and the rest are decoded, as Apache
    // passes them (REQUEST_URI keeps what the client sent).
    let path_info = decode_path(script.path_info);
    set(&lit!(b"SCRIPT_NAME"), &decode_path(script.name));
    set(&lit!(b"SCRIPT_FILENAME"), script.filename);
    set(&lit!(b"DOCUMENT_ROOT"), script.document_root);
    if !path_info.is_empty() {
        let mut translated = trim_slashes(script.document_root).to_vec();
        translated.extend_from_slice(&path_info);
        set(&lit!(b"PATH_TRANSLATED"), &translated);
    }
    set(&lit!(b"PATH_INFO"), &path_info);
    set(&lit!(b"REDIRECT_STATUS"), &lit!(b"200"));
    if let Some(value) = header(request.headers, &lit!(b"content-type")) {
        set(&lit!(b"CONTENT_TYPE"), value);
    }
    if let Some(value) = header(request.headers, &lit!(b"content-length")) {
        set(&lit!(b"CONTENT_LENGTH"), value);
    }

    // Each header once, repeated ones joined with ", " (Cookie with "; ").
    let mut done: Vec<Vec<u8>> = Vec::new();
    for (index, (name, _)) in request.headers.iter().enumerate() {
        let Some(variable) = variable_name(name) else {
            continue;
        };
        let header = &variable[5..];
        // Credentials stay with the server (as Apache keeps them), `Proxy` would set
        // HTTP_PROXY (httpoxy), and the content headers have their own variables.
        let withheld = [
            &lit!(b"AUTHORIZATION")[..],
            &lit!(b"PROXY_AUTHORIZATION"),
            &lit!(b"PROXY"),
            &lit!(b"CONTENT_TYPE"),
            &lit!(b"CONTENT_LENGTH"),
        ];
        if withheld.contains(&header) || done.contains(&variable) {
            continue;
        }
        let separator = if *header == *lit!(b"COOKIE") {
            &lit!(b"; ")[..]
        } else {
            &lit!(b", ")[..]
        };
        let mut value = Vec::new();
        for (other, v) in &request.headers[index..] {
            if variable_name(other).as_ref() == Some(&variable) {
                if !value.is_empty() {
                    value.extend_from_slice(separator);
                }
                value.extend_from_slice(v);
            }
        }
        set(&variable, &value);
        done.push(variable);
    }
    // HTTP/2 carries the host as the authority, without a Host header; programs build their
    // URLs from HTTP_HOST.
    if host_header.is_none() && !authority.is_empty() {
        set(&lit!(b"HTTP_HOST"), authority);
    }
}

/// `HTTP_X_FORWARDED_FOR` for `X-Forwarded-For`. As in Apache, only names of letters, digits
/// and `-` become variables: `X_User` would become the same `HTTP_X_USER` as `X-User`, and
/// could stand in for a header the server sets; `Content_Type` for `CONTENT_TYPE`.
fn variable_name(header: &[u8]) -> Option<Vec<u8>> {
    if header.is_empty()
        || !header
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    {
        return None;
    }
    let mut name = lit!(b"HTTP_").to_vec();
    name.extend(header.iter().map(|b| match b {
        b'-' => b'_',
        b => b.to_ascii_uppercase(),
    }));
    Some(name)
}

/// The first value of a header.
fn header<'a>(headers: &[(&[u8], &'a [u8])], name: &[u8]) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, value)| *value)
}

/// A URL path with its `%XX` escapes decoded. `%2F` stays as it is, as Apache's
/// `AllowEncodedSlashes NoDecode` keeps it (a decoded one would be a separator the client did
/// not write), and so does `%00`; a path whose bytes are not UTF-8 once decoded is passed on
/// undecoded, since a variable is text.
pub fn decode_path(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let escaped = match path[i..] {
            [b'%', high, low, ..] => match (hex(high), hex(low)) {
                (Some(high), Some(low)) => Some(high << 4 | low).filter(|b| *b != b'/' && *b != 0),
                _ => None,
            },
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(path[i]);
                i += 1;
            }
        }
    }
    let out = if crate::text::utf8(&out).is_some() {
        out
    } else {
        path.to_vec()
    };
    remove_dot_segments(&out)
}

/// `/a/./b/../c` → `/a/c`, never above the root (RFC 3986 5.2.4), as Apache's
/// `ap_getparents` makes of a decoded path: `%2E%2E` cannot climb out of the docroot in
/// PATH_TRANSLATED.
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut parts = path.split(|b| *b == b'/').peekable();
    // What comes before the first `/` (nothing, for an absolute path).
    let first = parts.next().unwrap_or_default();
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            [b'.'] | [b'.', b'.'] => {
                if segment.len() == 2 {
                    segments.pop();
                }
                // `/a/..` is the directory `/`, with its trailing slash.
                if last {
                    segments.push(&[]);
                }
            }
            _ => segments.push(segment),
        }
    }
    let mut out = first.to_vec();
    for segment in segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    out
}

/// One segment of a URL path decoded, all escapes included; `None` for a bad escape.
pub fn decode_segment(segment: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(segment.len());
    let mut i = 0;
    while i < segment.len() {
        if segment[i] == b'%' {
            let high = hex(*segment.get(i + 1)?)?;
            let low = hex(*segment.get(i + 2)?)?;
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(segment[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// `/www/` → `/www`; `/` → ``.
fn trim_slashes(path: &[u8]) -> &[u8] {
    match path {
        [rest @ .., b'/'] => trim_slashes(rest),
        _ => path,
    }
}

/// `example.com:8080` → (`example.com`, `8080`); `[::1]:80` → (`[::1]`, `80`).
pub fn split_host(host: &[u8]) -> (&[u8], Option<&[u8]>) {
    match host.iter().rposition(|b| *b == b':') {
        Some(i) if i > 0 && i + 1 < host.len() && host[i + 1..].iter().all(u8::is_ascii_digit) => {
            (&host[..i], Some(&host[i + 1..]))
        }
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_except_slashes_and_nul_and_never_climb() {
        let decoded =
            |path: &str| alloc::string::String::from_utf8(decode_path(path.as_bytes())).unwrap();
        assert_eq!(decoded("/hello/J%C3%BCrgen"), "/hello/Jürgen");
        assert_eq!(decoded("/a%2Fb%2fc/%00"), "/a%2Fb%2fc/%00");
        assert_eq!(decoded("/100%"), "/100%");
        assert_eq!(decoded("/%ff"), "/%ff");
        assert_eq!(decoded("/%+5"), "/%+5");
        assert_eq!(decoded("/%2e%2e/%2E%2E/etc/x"), "/etc/x");
        assert_eq!(decoded("/a/./b/../c"), "/a/c");
        assert_eq!(decoded("/a/b/.."), "/a/");
        assert_eq!(decoded(""), "");
        assert_eq!(decoded("/"), "/");
    }
}

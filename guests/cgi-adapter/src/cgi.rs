//! The CGI side of a request (RFC 3875): the script a URL names, the meta-variables, and the
//! program's stdout read as a CGI response — a header block, then the body, streamed.

use alloc::vec::Vec;

use crate::bindings::wasi::filesystem::types::{Descriptor, DescriptorType, PathFlags};
use crate::bindings::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam, Scheme,
};
use crate::bindings::wasi::io::streams::OutputStream;

use crate::config::Config;

/// Largest header block accepted, as in the host's CGI mode.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Body bytes gathered before they go out; also sent when the program waits or ends.
const BODY_BUFFER: usize = 16 * 1024;

/// Where the script is, as the program and the URL see it.
pub struct Script {
    pub filename: Vec<u8>,
    pub name: Vec<u8>,
    pub path_info: Vec<u8>,
    pub document_root: Vec<u8>,
}

/// Finds the script for a URL path; `None` when it names no file in the docroot.
pub fn script(config: &Config, path: &[u8], preopens: &[(&Descriptor, &[u8])]) -> Option<Script> {
    let Some(docroot) = config.value(&lit!(b"docroot")) else {
        // A fixed script answers every URL: all of the path is PATH_INFO.
        let filename = config
            .values(&lit!(b"arg"))
            .last()
            .or(config.value(&lit!(b"program")))
            .unwrap_or_default();
        let parent = match filename.iter().rposition(|b| *b == b'/') {
            Some(0) | None => &lit!(b"/")[..],
            Some(i) => &filename[..i],
        };
        return Some(Script {
            filename: filename.to_vec(),
            name: Vec::new(),
            path_info: path.to_vec(),
            document_root: parent.to_vec(),
        });
    };
    let docroot = trim_end(docroot);
    // The preopen that holds the docroot, and the docroot relative to it.
    let (dir, relative) = preopens.iter().find_map(|(dir, guest)| {
        let guest = trim_end(guest);
        let rest = docroot.strip_prefix(guest)?;
        match rest {
            [] => Some((*dir, Vec::from(&lit!(b".")[..]))),
            [b'/', rest @ ..] => Some((*dir, rest.to_vec())),
            _ => None,
        }
    })?;
    let extensions: Vec<&[u8]> = config.values(&lit!(b"ext")).collect();
    let root = DocRoot {
        dir,
        relative,
        guest: docroot,
        extensions: &extensions,
    };
    let index: Vec<&[u8]> = config.values(&lit!(b"index")).collect();
    match root.find(path, &index) {
        Lookup::Script(script) => Some(script),
        Lookup::Refused => None,
        Lookup::NoScript => match root.find(config.value(&lit!(b"fallback"))?, &[]) {
            Lookup::Script(script) if script.path_info.is_empty() => Some(script),
            _ => None,
        },
    }
}

/// What a URL path names in the docroot.
enum Lookup {
    Script(Script),
    /// Nothing the program may run; a front controller may take the URL.
    NoScript,
    /// A path through a dot-file or dot-directory (`/.env`): never served.
    Refused,
}

struct DocRoot<'a> {
    dir: &'a Descriptor,
    relative: Vec<u8>,
    guest: &'a [u8],
    /// What a script's name ends with: only such files run.
    extensions: &'a [&'a [u8]],
}

impl DocRoot<'_> {
    /// The file the URL path names — the first segments that make a file, the rest being
    /// PATH_INFO — or a directory's index file. Only scripts count: any other file is never
    /// handed to the program, and a path through a dot-file or dot-directory is refused.
    fn find(&self, path: &[u8], index: &[&[u8]]) -> Lookup {
        let mut relative = self.relative.clone();
        let mut name = Vec::new();
        let mut segments = path.split(|b| *b == b'/').filter(|s| !s.is_empty());
        while let Some(segment) = segments.next() {
            let Some(decoded) = percent_decode(segment) else {
                return Lookup::NoScript;
            };
            if decoded.first() == Some(&b'.') || decoded.contains(&b'/') || decoded.contains(&0) {
                return Lookup::Refused;
            }
            relative.push(b'/');
            relative.extend_from_slice(&decoded);
            name.push(b'/');
            name.extend_from_slice(segment);
            match self.kind(&relative) {
                Some(DescriptorType::Directory) => {}
                Some(DescriptorType::RegularFile) => {
                    let mut path_info = Vec::new();
                    for rest in segments {
                        path_info.push(b'/');
                        path_info.extend_from_slice(rest);
                    }
                    return self.script(&relative, name, path_info);
                }
                _ => return Lookup::NoScript,
            }
        }
        for file in index {
            let mut relative = relative.clone();
            relative.push(b'/');
            relative.extend_from_slice(file);
            if self.kind(&relative) != Some(DescriptorType::RegularFile) {
                continue;
            }
            let mut name = name.clone();
            name.push(b'/');
            name.extend_from_slice(file);
            if let script @ Lookup::Script(_) = self.script(&relative, name, Vec::new()) {
                return script;
            }
        }
        Lookup::NoScript
    }

    /// The type of a file, symlinks followed; wasi:filesystem keeps them inside the grant.
    fn kind(&self, relative: &[u8]) -> Option<DescriptorType> {
        let path = crate::text::utf8(relative)?;
        let stat = self.dir.stat_at(PathFlags::SYMLINK_FOLLOW, path).ok()?;
        Some(stat.type_)
    }

    fn script(&self, relative: &[u8], name: Vec<u8>, path_info: Vec<u8>) -> Lookup {
        let base = match relative.iter().rposition(|b| *b == b'/') {
            Some(i) => &relative[i + 1..],
            None => relative,
        };
        let runs = match base.iter().rposition(|b| *b == b'.') {
            Some(dot) => self.extensions.contains(&&base[dot + 1..]),
            None => false,
        };
        if !runs {
            return Lookup::NoScript;
        }
        // `relative` starts with the docroot's own part, then the URL's segments.
        let own = self.relative.len();
        let mut filename = self.guest.to_vec();
        filename.extend_from_slice(&relative[own..]);
        Lookup::Script(Script {
            filename,
            name,
            path_info,
            document_root: self.guest.to_vec(),
        })
    }
}

fn trim_end(path: &[u8]) -> &[u8] {
    match path {
        [rest @ .., b'/'] if !rest.is_empty() => trim_end(rest),
        _ => path,
    }
}

/// A URL path with its `%XX` escapes decoded, except `%2F` and `%00` (as the host's
/// `decode_path`); undecoded when the result is not UTF-8.
fn decode_path(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let escaped = match (path[i], path.get(i + 1), path.get(i + 2)) {
            (b'%', Some(high), Some(low)) => match (hex(*high), hex(*low)) {
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
    if is_utf8(&out) { out } else { path.to_vec() }
}

/// Whether `bytes` are UTF-8, checked by hand: `core::str::from_utf8` brings a lookup table,
/// and an adapter may have no data section.
fn is_utf8(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        let lead = bytes[i];
        let width = if lead < 0x80 {
            1
        } else if (0xc2..=0xdf).contains(&lead) {
            2
        } else if lead & 0xf0 == 0xe0 {
            3
        } else if (0xf0..=0xf4).contains(&lead) {
            4
        } else {
            return false;
        };
        let Some(rest) = bytes.get(i + 1..i + width) else {
            return false;
        };
        if rest.iter().any(|b| b & 0xc0 != 0x80) {
            return false;
        }
        i += width;
    }
    true
}

fn percent_decode(segment: &[u8]) -> Option<Vec<u8>> {
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

/// The request's meta-variables as `NAME=value` NUL-terminated entries, with their count.
/// Names in `keep` (the wrapped app's fixed environment) are left out, so that a request
/// cannot override them.
pub fn meta_variables(
    request: &IncomingRequest,
    path_and_query: &[u8],
    script: &Script,
    keep: &[&[u8]],
) -> Env {
    let mut env = Env::default();
    let query = match path_and_query.iter().position(|b| *b == b'?') {
        Some(i) => &path_and_query[i + 1..],
        None => &[],
    };
    let https = matches!(request.scheme(), Some(Scheme::Https));
    let headers = request.headers().entries();
    let host_header = headers
        .iter()
        .find(|(name, _)| name.as_bytes().eq_ignore_ascii_case(&lit!(b"host")))
        .map(|(_, value)| value.clone());
    let has_host = host_header.is_some();
    let authority = request
        .authority()
        .map(|a| a.into_bytes())
        .or(host_header)
        .unwrap_or_default();
    let (server_name, port) = split_host(&authority);
    let default_port = if https {
        &lit!(b"443")[..]
    } else {
        &lit!(b"80")[..]
    };

    let mut set = |name: &[u8], value: &[u8]| {
        if !keep.contains(&name) {
            env.push(name, value);
        }
    };
    set(&lit!(b"GATEWAY_INTERFACE"), &lit!(b"CGI/1.1"));
    set(&lit!(b"SERVER_SOFTWARE"), &lit!(b"wasmbridge-cgi-adapter"));
    set(&lit!(b"SERVER_PROTOCOL"), &lit!(b"HTTP/1.1"));
    set(&lit!(b"SERVER_NAME"), server_name);
    set(&lit!(b"SERVER_PORT"), port.unwrap_or(default_port));
    set(&lit!(b"REQUEST_METHOD"), &method(request.method()));
    if https {
        set(&lit!(b"REQUEST_SCHEME"), &lit!(b"https"));
        set(&lit!(b"HTTPS"), &lit!(b"on"));
    } else {
        set(&lit!(b"REQUEST_SCHEME"), &lit!(b"http"));
    }
    let root = &lit!(b"/");
    let uri = if path_and_query.is_empty() {
        root
    } else {
        path_and_query
    };
    set(&lit!(b"REQUEST_URI"), uri);
    set(&lit!(b"QUERY_STRING"), query);
    // RFC 3875 4.1.13 and 4.1.5: decoded, as Apache passes them.
    let path_info = decode_path(&script.path_info);
    set(&lit!(b"SCRIPT_NAME"), &decode_path(&script.name));
    set(&lit!(b"SCRIPT_FILENAME"), &script.filename);
    set(&lit!(b"DOCUMENT_ROOT"), &script.document_root);
    set(&lit!(b"PATH_INFO"), &path_info);
    if !path_info.is_empty() {
        let mut translated = trim_end(&script.document_root).to_vec();
        if translated == [b'/'] {
            translated.clear();
        }
        translated.extend_from_slice(&path_info);
        set(&lit!(b"PATH_TRANSLATED"), &translated);
    }
    set(&lit!(b"REDIRECT_STATUS"), &lit!(b"200"));

    // Headers become HTTP_* variables, repeated ones joined with ", " (Cookie with "; ");
    // credentials stay with the server, `Proxy` would set HTTP_PROXY (httpoxy), and the
    // content headers have their own names.
    let mut names: Vec<Vec<u8>> = Vec::new();
    for (name, _) in &headers {
        // As in Apache, only names of letters, digits and `-`: `X_User` would become the same
        // variable as `X-User`, and `Content_Type` would set CONTENT_TYPE.
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            continue;
        }
        let mut variable = Vec::from(&lit!(b"HTTP_")[..]);
        variable.extend(name.bytes().map(|b| match b {
            b'-' => b'_',
            b => b.to_ascii_uppercase(),
        }));
        if !names.contains(&variable) {
            names.push(variable);
        }
    }
    for variable in names {
        let header = &variable[5..];
        let (content, withheld) = (
            *header == *lit!(b"CONTENT_TYPE") || *header == *lit!(b"CONTENT_LENGTH"),
            *header == *lit!(b"AUTHORIZATION")
                || *header == *lit!(b"PROXY_AUTHORIZATION")
                || *header == *lit!(b"PROXY"),
        );
        let separator = if *header == *lit!(b"COOKIE") {
            &lit!(b"; ")[..]
        } else {
            &lit!(b", ")[..]
        };
        let mut value = Vec::new();
        for (name, v) in &headers {
            let exported = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            let same = exported
                && name.len() == header.len()
                && name.bytes().zip(header).all(|(a, b)| {
                    (if a == b'-' {
                        b'_'
                    } else {
                        a.to_ascii_uppercase()
                    }) == *b
                });
            if same {
                if !value.is_empty() {
                    value.extend_from_slice(separator);
                }
                value.extend_from_slice(v);
            }
        }
        if content {
            set(header, &value);
        } else if !withheld {
            set(&variable, &value);
        }
    }
    // wasi:http hosts carry the Host header as the authority; programs build URLs from it.
    if !has_host && !authority.is_empty() {
        set(&lit!(b"HTTP_HOST"), &authority);
    }
    env
}

#[derive(Default)]
pub struct Env {
    pub bytes: Vec<u8>,
    pub count: usize,
}

impl Env {
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        self.bytes.extend_from_slice(name);
        self.bytes.push(b'=');
        self.bytes.extend_from_slice(value);
        self.bytes.push(0);
        self.count += 1;
    }
}

fn method(method: Method) -> Vec<u8> {
    let name: &[u8] = match method {
        Method::Get => &lit!(b"GET"),
        Method::Head => &lit!(b"HEAD"),
        Method::Post => &lit!(b"POST"),
        Method::Put => &lit!(b"PUT"),
        Method::Delete => &lit!(b"DELETE"),
        Method::Connect => &lit!(b"CONNECT"),
        Method::Options => &lit!(b"OPTIONS"),
        Method::Trace => &lit!(b"TRACE"),
        Method::Patch => &lit!(b"PATCH"),
        Method::Other(other) => return other.into_bytes(),
    };
    name.to_vec()
}

/// `example.com:8080` → (`example.com`, `8080`); `[::1]:80` → (`[::1]`, `80`).
fn split_host(host: &[u8]) -> (&[u8], Option<&[u8]>) {
    match host.iter().rposition(|b| *b == b':') {
        Some(i) if i > 0 && i + 1 < host.len() && host[i + 1..].iter().all(u8::is_ascii_digit) => {
            (&host[..i], Some(&host[i + 1..]))
        }
        _ => (host, None),
    }
}

/// The program's stdout: first the header block, then the body.
pub enum Output {
    Head {
        buffer: Vec<u8>,
        response_out: ResponseOutparam,
    },
    Body {
        stream: OutputStream,
        body: OutgoingBody,
        buffer: Vec<u8>,
    },
    /// Answered already (an error, or the end): what the program writes goes nowhere.
    Done,
}

impl Output {
    pub fn write(&mut self, data: &[u8]) {
        match self {
            Output::Head { buffer, .. } => {
                buffer.extend_from_slice(data);
                if let Some((head, body)) = header_end(buffer) {
                    let Output::Head {
                        buffer,
                        response_out,
                    } = core::mem::replace(self, Output::Done)
                    else {
                        crate::trap()
                    };
                    *self = start_response(&buffer[..head], &buffer[body..], response_out);
                } else if buffer.len() > MAX_HEADER_BLOCK {
                    crate::state::log(&[&lit!(b"the CGI header block is larger than 64 KiB")]);
                    self.fail();
                }
            }
            Output::Body { buffer, .. } => {
                buffer.extend_from_slice(data);
                if buffer.len() >= BODY_BUFFER {
                    self.flush();
                }
            }
            Output::Done => {}
        }
    }

    /// Sends what the body has gathered.
    pub fn flush(&mut self) {
        if let Output::Body { stream, buffer, .. } = self {
            let sent = write_all(stream, buffer).is_ok() && stream.blocking_flush().is_ok();
            buffer.clear();
            if !sent {
                // The client is gone; the program may go on, its output has nowhere to go.
                *self = Output::Done;
            }
        }
    }

    /// The program ended with `code`: complete the response.
    pub fn finish(&mut self, code: u32) {
        self.flush();
        match core::mem::replace(self, Output::Done) {
            Output::Head {
                buffer,
                response_out,
            } => {
                if code != 0 {
                    crate::state::log(&[
                        &lit!(b"the program exited with status "),
                        &decimal(code as u64),
                        &lit!(b" before its CGI header block"),
                    ]);
                } else if buffer.is_empty() {
                    crate::state::log(&[&lit!(b"the program wrote nothing to stdout")]);
                } else {
                    crate::state::log(&[
                        &lit!(b"the program's output ("),
                        &decimal(buffer.len() as u64),
                        &lit!(b" bytes) has no CGI header block"),
                    ]);
                }
                bad_gateway(response_out);
            }
            Output::Body { stream, body, .. } => {
                drop(stream);
                let _ = OutgoingBody::finish(body, None);
                if code != 0 {
                    crate::state::log(&[
                        &lit!(b"the program exited with status "),
                        &decimal(code as u64),
                        &lit!(b" after its response"),
                    ]);
                }
            }
            Output::Done => {}
        }
    }

    fn fail(&mut self) {
        if let Output::Head { response_out, .. } = core::mem::replace(self, Output::Done) {
            bad_gateway(response_out);
        }
    }
}

fn write_all(stream: &OutputStream, mut data: &[u8]) -> Result<(), ()> {
    while !data.is_empty() {
        let permit = stream.check_write().map_err(drop)? as usize;
        if permit == 0 {
            stream.subscribe().block();
            continue;
        }
        let n = permit.min(data.len());
        stream.write(&data[..n]).map_err(drop)?;
        data = &data[n..];
    }
    Ok(())
}

/// The end of the header lines and the start of the body: the first empty line, LF or CRLF.
fn header_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let mut line_start = 0;
    for (i, byte) in buffer.iter().enumerate() {
        if *byte == b'\n' {
            let line = &buffer[line_start..i];
            if line.is_empty() || line == [b'\r'] {
                return Some((line_start, i + 1));
            }
            line_start = i + 1;
        }
    }
    None
}

/// Answers with the header block's status and headers, and sends what followed it.
fn start_response(head: &[u8], first: &[u8], response_out: ResponseOutparam) -> Output {
    let fields = Fields::new();
    let mut status: Option<u16> = None;
    let mut location = false;
    for (index, raw) in head.split(|b| *b == b'\n').enumerate() {
        let raw = raw.strip_suffix(&[b'\r']).unwrap_or(raw);
        if raw.is_empty() {
            continue;
        }
        let Some(colon) = raw.iter().position(|b| *b == b':') else {
            return malformed(index, raw, response_out);
        };
        let (name, value) = (&raw[..colon], trim(&raw[colon + 1..]));
        let Some(name_str) = crate::text::utf8(name) else {
            return malformed(index, raw, response_out);
        };
        if name.eq_ignore_ascii_case(&lit!(b"status")) {
            match parse_status(value) {
                Some(code) => status = Some(code),
                None => return malformed(index, raw, response_out),
            }
            continue;
        }
        // Framing is the server's business, not the program's: a Content-Length that
        // disagrees with the body would split a keep-alive connection, and a CGI response
        // cannot switch protocols.
        if name.eq_ignore_ascii_case(&lit!(b"connection"))
            || name.eq_ignore_ascii_case(&lit!(b"transfer-encoding"))
            || name.eq_ignore_ascii_case(&lit!(b"keep-alive"))
            || name.eq_ignore_ascii_case(&lit!(b"content-length"))
            || name.eq_ignore_ascii_case(&lit!(b"upgrade"))
        {
            continue;
        }
        location |= name.eq_ignore_ascii_case(&lit!(b"location"));
        use crate::bindings::wasi::http::types::HeaderError;
        match fields.append(name_str, value) {
            Ok(()) | Err(HeaderError::Forbidden) => {}
            Err(_) => return malformed(index, raw, response_out),
        }
    }
    // A Location without a Status redirects the client. (A local redirect, a path alone,
    // would have the server run the new URL, which one instance cannot: the client does.)
    let status = status.unwrap_or(if location { 302 } else { 200 });
    let response = OutgoingResponse::new(fields);
    if response.set_status_code(status).is_err() {
        crate::state::log(&[&lit!(b"the CGI Status header is not a valid status")]);
        bad_gateway(response_out);
        return Output::Done;
    }
    let Ok(body) = response.body() else {
        crate::trap()
    };
    ResponseOutparam::set(response_out, Ok(response));
    let Ok(stream) = body.write() else {
        crate::trap()
    };
    let mut buffer = Vec::with_capacity(BODY_BUFFER);
    buffer.extend_from_slice(first);
    Output::Body {
        stream,
        body,
        buffer,
    }
}

fn malformed(index: usize, line: &[u8], response_out: ResponseOutparam) -> Output {
    crate::state::log(&[
        &lit!(b"malformed CGI header at line "),
        &decimal(index as u64 + 1),
        &lit!(b": "),
        &line[..line.len().min(200)],
    ]);
    bad_gateway(response_out);
    Output::Done
}

/// `404 Not Found` → 404.
fn parse_status(value: &[u8]) -> Option<u16> {
    let digits = value.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || value.get(3).is_some_and(|b| *b != b' ') {
        return None;
    }
    let code = digits.iter().fold(0u16, |n, d| n * 10 + (d - b'0') as u16);
    // A final status only: 1xx (101 included) is not a CGI response.
    (200..=599).contains(&code).then_some(code)
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

/// A short plain-text answer, for requests the program does not get to answer.
pub fn respond(response_out: ResponseOutparam, status: u16, text: &[u8]) {
    let fields = Fields::new();
    let _ = fields.append(
        crate::text::utf8(&lit!(b"content-type")).unwrap_or_default(),
        &lit!(b"text/plain; charset=utf-8"),
    );
    let response = OutgoingResponse::new(fields);
    let _ = response.set_status_code(status);
    let Ok(body) = response.body() else {
        crate::trap()
    };
    ResponseOutparam::set(response_out, Ok(response));
    if let Ok(stream) = body.write() {
        let _ = write_all(&stream, text);
        let _ = stream.blocking_flush();
    }
    let _ = OutgoingBody::finish(body, None);
}

fn bad_gateway(response_out: ResponseOutparam) {
    respond(response_out, 502, &lit!(b"Bad Gateway\n"));
}

pub fn decimal(mut n: u64) -> Vec<u8> {
    let mut digits = Vec::new();
    loop {
        digits.push(b'0' + (n % 10) as u8);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    digits
}

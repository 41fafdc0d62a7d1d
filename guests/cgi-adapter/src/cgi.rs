//! The CGI side of a request (RFC 3875): the script a URL names, the meta-variables, and the
//! program's stdout read as a CGI response — a header block, then the body, streamed.

use alloc::vec::Vec;

use crate::bindings::wasi::filesystem::types::{Descriptor, DescriptorType, PathFlags};
use crate::bindings::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam, Scheme,
};
use crate::bindings::wasi::io::streams::OutputStream;

use wasmbridge_cgi::text::decimal;
use wasmbridge_cgi::{Head, Malformed};

use crate::config::Config;

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
            let Some(decoded) = wasmbridge_cgi::decode_segment(segment) else {
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

/// The request's meta-variables as `NAME=value` NUL-terminated entries, with their count.
/// Names in `keep` (the wrapped app's fixed environment) are left out, so that a request
/// cannot override them.
pub fn meta_variables(
    request: &IncomingRequest,
    path_and_query: &[u8],
    script: &Script,
    keep: &[&[u8]],
) -> Env {
    let entries = request.headers().entries();
    let headers: Vec<(&[u8], &[u8])> = entries
        .iter()
        .map(|(name, value)| (name.as_bytes(), &value[..]))
        .collect();
    let authority = request.authority().map(|a| a.into_bytes());
    let method = method(request.method());
    let request = wasmbridge_cgi::Request {
        method: &method,
        https: matches!(request.scheme(), Some(Scheme::Https)),
        // wasi:http does not say which HTTP version the client spoke.
        protocol: None,
        target: path_and_query,
        authority: authority.as_deref(),
        headers: &headers,
        server_software: &lit!(b"wasmbridge-cgi-adapter"),
        // Nor which addresses the connection has.
        local: None,
        remote: None,
        auth_type: None,
        remote_user: None,
    };
    let script = wasmbridge_cgi::Script {
        filename: &script.filename,
        name: &script.name,
        path_info: &script.path_info,
        document_root: &script.document_root,
    };
    let mut env = Env::default();
    wasmbridge_cgi::meta_variables(&request, &script, |name, value| {
        if !keep.contains(&name) {
            env.push(name, value);
        }
    });
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
                if let Some((head, body)) = wasmbridge_cgi::header_end(buffer) {
                    let Output::Head {
                        buffer,
                        response_out,
                    } = core::mem::replace(self, Output::Done)
                    else {
                        crate::trap()
                    };
                    *self = start_response(&buffer[..head], &buffer[body..], response_out);
                } else if buffer.len() > wasmbridge_cgi::MAX_HEADER_BLOCK {
                    self.fail(Malformed::TooLarge);
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
                } else {
                    let malformed = Malformed::NoHeaderBlock {
                        bytes: buffer.len(),
                    };
                    crate::state::log(&[&malformed.describe()]);
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

    fn fail(&mut self, malformed: Malformed) {
        if let Output::Head { response_out, .. } = core::mem::replace(self, Output::Done) {
            crate::state::log(&[&malformed.describe()]);
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

/// Answers with the header block's status and headers, and sends what followed it.
fn start_response(head: &[u8], first: &[u8], response_out: ResponseOutparam) -> Output {
    let location = lit!(b"location");
    let (status, headers) = match wasmbridge_cgi::parse_head(head) {
        Ok(Head::Document { status, headers }) => (status, headers),
        // A local redirect would have the server run the new URL, which one instance cannot:
        // the client does.
        Ok(Head::LocalRedirect(path)) => (302, alloc::vec![(&location[..], path)]),
        Err(malformed) => {
            crate::state::log(&[&malformed.describe()]);
            bad_gateway(response_out);
            return Output::Done;
        }
    };
    let fields = Fields::new();
    for (name, value) in headers {
        // The core checked the name: a token, so text.
        let name = crate::text::utf8(name).unwrap_or_default();
        // A header the host keeps for itself is left out.
        let _ = fields.append(name, value);
    }
    let response = OutgoingResponse::new(fields);
    if response.set_status_code(status).is_err() {
        crate::trap()
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

//! The request as RFC 3875 meta-variables, plus the ones interpreters expect from Apache.

use http::request::Parts;

use crate::RequestContext;

/// Where the script is, as the program and the URL see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Script {
    /// The script's path inside the guest (`SCRIPT_FILENAME`).
    pub filename: String,
    /// The URL path that names the script (`SCRIPT_NAME`); empty when it is served at the root.
    pub name: String,
    /// The rest of the URL path (`PATH_INFO`).
    pub path_info: String,
    /// The guest directory URLs map into (`DOCUMENT_ROOT`).
    pub document_root: String,
}

/// Request headers that never become `HTTP_*` variables: credentials stay with the server (as
/// Apache does), `Proxy` would set `HTTP_PROXY` (httpoxy), and the content headers have their own.
const WITHHELD: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "proxy",
    "content-type",
    "content-length",
];

/// A URL path with its `%XX` escapes decoded. `%2F` stays as it is, as Apache's
/// `AllowEncodedSlashes NoDecode` keeps it (a decoded one would be a separator the client did
/// not write), and so does `%00`; a path whose bytes are not UTF-8 once decoded is passed on
/// undecoded, since a variable is text.
pub fn decode_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| *b != b'/' && *b != 0);
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| path.to_string())
}

pub fn meta_variables(
    parts: &Parts,
    cx: &RequestContext,
    script: &Script,
) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = Vec::with_capacity(32);
    let mut set = |name: &str, value: String| vars.push((name.to_string(), value));

    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let (server_name, host_port) = split_host(&host);
    let server_port = host_port
        .or_else(|| cx.local.map(|a| a.port().to_string()))
        .unwrap_or_else(|| "80".into());
    let https = matches!(
        cx.scheme,
        wasmtime_wasi_http::p2::bindings::http::types::Scheme::Https
    );

    set("GATEWAY_INTERFACE", "CGI/1.1".into());
    set(
        "SERVER_SOFTWARE",
        format!("wasmbridge/{}", env!("CARGO_PKG_VERSION")),
    );
    set("SERVER_PROTOCOL", format!("{:?}", parts.version));
    set("SERVER_NAME", server_name);
    set("SERVER_PORT", server_port);
    if let Some(local) = cx.local {
        set("SERVER_ADDR", local.ip().to_string());
    }
    if let Some(remote) = cx.remote {
        set("REMOTE_ADDR", remote.ip().to_string());
        set("REMOTE_PORT", remote.port().to_string());
    }
    if let Some(auth_type) = &cx.auth_type {
        set("AUTH_TYPE", auth_type.clone());
    }
    if let Some(user) = &cx.remote_user {
        set("REMOTE_USER", user.clone());
    }
    set("REQUEST_METHOD", parts.method.to_string());
    set(
        "REQUEST_SCHEME",
        if https { "https" } else { "http" }.into(),
    );
    if https {
        set("HTTPS", "on".into());
    }
    set(
        "REQUEST_URI",
        parts
            .uri
            .path_and_query()
            .map_or("/".into(), |p| p.as_str().to_string()),
    );
    set(
        "QUERY_STRING",
        parts.uri.query().unwrap_or_default().to_string(),
    );
    // RFC 3875 4.1.13 and 4.1.5: the script's URL path and the rest, decoded, as Apache
    // passes them (REQUEST_URI keeps what the client sent).
    let path_info = decode_path(&script.path_info);
    set("SCRIPT_NAME", decode_path(&script.name));
    set("SCRIPT_FILENAME", script.filename.clone());
    set("DOCUMENT_ROOT", script.document_root.clone());
    if !path_info.is_empty() {
        set(
            "PATH_TRANSLATED",
            format!(
                "{}{}",
                script.document_root.trim_end_matches('/'),
                path_info
            ),
        );
    }
    set("PATH_INFO", path_info);
    set("REDIRECT_STATUS", "200".into());
    for (name, header) in [
        ("CONTENT_TYPE", http::header::CONTENT_TYPE),
        ("CONTENT_LENGTH", http::header::CONTENT_LENGTH),
    ] {
        if let Some(value) = parts.headers.get(header).and_then(|v| v.to_str().ok()) {
            set(name, value.to_string());
        }
    }

    // Repeated headers are joined with ", " (Cookie with "; "), as one variable.
    let mut http_vars: Vec<(String, String)> = Vec::new();
    for name in parts.headers.keys() {
        if WITHHELD.contains(&name.as_str()) || !exported(name.as_str()) {
            continue;
        }
        let separator = if name == http::header::COOKIE {
            "; "
        } else {
            ", "
        };
        let value = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(separator);
        http_vars.push((
            format!(
                "HTTP_{}",
                name.as_str().to_ascii_uppercase().replace('-', "_")
            ),
            value,
        ));
    }
    // HTTP/2 carries the host as the authority, without a Host header; scripts build their
    // URLs from HTTP_HOST.
    if !parts.headers.contains_key(http::header::HOST) && !host.is_empty() {
        http_vars.push(("HTTP_HOST".into(), host));
    }
    vars.extend(http_vars);
    vars
}

/// Whether a header becomes an `HTTP_*` variable: as in Apache, only names of letters, digits
/// and `-`. `X_User` would become the same `HTTP_X_USER` as `X-User`, and could stand in for
/// a header the server sets (`-H`); `Content_Type` for `CONTENT_TYPE`.
fn exported(name: &str) -> bool {
    name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `example.com:8080` → (`example.com`, `8080`); `[::1]:80` → (`[::1]`, `80`).
fn split_host(host: &str) -> (String, Option<String>) {
    match host.rsplit_once(':') {
        Some((name, port))
            if !name.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (name.to_string(), Some(port.to_string()))
        }
        _ => (host.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_are_decoded_except_slashes_and_nul() {
        use super::decode_path;
        assert_eq!(decode_path("/hello/J%C3%BCrgen"), "/hello/Jürgen");
        assert_eq!(decode_path("/a%2Fb%2fc/%00"), "/a%2Fb%2fc/%00");
        assert_eq!(decode_path("/100%"), "/100%");
        assert_eq!(decode_path("/%ff"), "/%ff");
    }

    use super::*;
    use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

    #[test]
    fn variables_follow_rfc_3875() {
        let request = http::Request::post("/app/run/extra?a=1&b=2")
            .header("host", "example.com:8080")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", "3")
            .header("authorization", "Basic c2VjcmV0")
            .header("proxy", "http://evil/")
            .header("x-forwarded-for", "1.2.3.4")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x_forwarded_for", "6.6.6.6")
            .header("content_type", "text/evil")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let cx = RequestContext {
            local: Some("127.0.0.1:8080".parse().unwrap()),
            remote: Some("127.0.0.2:5555".parse().unwrap()),
            ..RequestContext::new(1, Scheme::Http)
        };
        let script = Script {
            filename: "/www/run".into(),
            name: "/app/run".into(),
            path_info: "/extra".into(),
            document_root: "/www".into(),
        };
        let vars: std::collections::HashMap<_, _> =
            meta_variables(&parts, &cx, &script).into_iter().collect();
        let get = |name: &str| vars.get(name).map(String::as_str);
        assert_eq!(get("REQUEST_METHOD"), Some("POST"));
        assert_eq!(get("QUERY_STRING"), Some("a=1&b=2"));
        assert_eq!(get("REQUEST_URI"), Some("/app/run/extra?a=1&b=2"));
        assert_eq!(get("SERVER_NAME"), Some("example.com"));
        assert_eq!(get("SERVER_PORT"), Some("8080"));
        assert_eq!(get("SERVER_PROTOCOL"), Some("HTTP/1.1"));
        assert_eq!(get("REMOTE_ADDR"), Some("127.0.0.2"));
        assert_eq!(get("REMOTE_PORT"), Some("5555"));
        assert_eq!(
            get("CONTENT_TYPE"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(get("CONTENT_LENGTH"), Some("3"));
        assert_eq!(get("PATH_INFO"), Some("/extra"));
        assert_eq!(get("PATH_TRANSLATED"), Some("/www/extra"));
        assert_eq!(get("HTTP_X_FORWARDED_FOR"), Some("1.2.3.4"));
        assert_eq!(
            meta_variables(&parts, &cx, &script)
                .iter()
                .filter(|(name, _)| name == "HTTP_X_FORWARDED_FOR")
                .count(),
            1
        );
        assert_eq!(get("HTTP_HOST"), Some("example.com:8080"));
        assert_eq!(
            get("CONTENT_TYPE"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(get("HTTP_COOKIE"), Some("a=1; b=2"));
        assert_eq!(get("REDIRECT_STATUS"), Some("200"));
        assert_eq!(get("HTTPS"), None);
        for withheld in [
            "HTTP_AUTHORIZATION",
            "HTTP_PROXY",
            "HTTP_CONTENT_TYPE",
            "AUTH_TYPE",
        ] {
            assert_eq!(get(withheld), None, "{withheld}");
        }
    }
}

//! The request as RFC 3875 meta-variables: the host's side of the CGI core (`wasmbridge-cgi`).

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

fn endpoint<'a>(
    addr: Option<std::net::SocketAddr>,
    ip: &'a Option<String>,
) -> Option<wasmbridge_cgi::Endpoint<'a>> {
    Some(wasmbridge_cgi::Endpoint {
        ip: ip.as_deref()?.as_bytes(),
        port: addr?.port(),
    })
}

/// The request's meta-variables, by the rules of the CGI core (the `wasmbridge-cgi` crate).
pub fn meta_variables(
    parts: &Parts,
    cx: &RequestContext,
    script: &Script,
) -> Vec<(String, String)> {
    let headers: Vec<(&[u8], &[u8])> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
        .collect();
    let local_ip = cx.local.map(|a| a.ip().to_string());
    let remote_ip = cx.remote.map(|a| a.ip().to_string());
    let protocol = format!("{:?}", parts.version);
    let software = concat!("wasmbridge/", env!("CARGO_PKG_VERSION"));
    let request = wasmbridge_cgi::Request {
        method: parts.method.as_str().as_bytes(),
        https: matches!(
            cx.scheme,
            wasmtime_wasi_http::p2::bindings::http::types::Scheme::Https
        ),
        protocol: Some(protocol.as_bytes()),
        target: parts
            .uri
            .path_and_query()
            .map_or(&b"/"[..], |p| p.as_str().as_bytes()),
        authority: parts.uri.authority().map(|a| a.as_str().as_bytes()),
        headers: &headers,
        server_software: software.as_bytes(),
        local: endpoint(cx.local, &local_ip),
        remote: endpoint(cx.remote, &remote_ip),
        auth_type: cx.auth_type.as_deref().map(str::as_bytes),
        remote_user: cx.remote_user.as_deref().map(str::as_bytes),
    };
    let script = wasmbridge_cgi::Script {
        filename: script.filename.as_bytes(),
        name: script.name.as_bytes(),
        path_info: script.path_info.as_bytes(),
        document_root: script.document_root.as_bytes(),
    };
    // A variable in WASI is text.
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut vars = Vec::with_capacity(32);
    wasmbridge_cgi::meta_variables(&request, &script, |name, value| {
        vars.push((text(name), text(value)));
    });
    vars
}

#[cfg(test)]
mod tests {
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

//! Which hosts an app's outgoing `wasi:http` requests may reach: Spin's
//! `allowed_outbound_hosts` rules (`https://api.example.com`, `http://*.example.com:8080`,
//! `*://example.com:*`).
//!
//! A host named in a rule is reached wherever it points. A wildcard never reaches a loopback,
//! private, link-local or otherwise internal address: the guest would otherwise get at the
//! services beside the server (a metadata endpoint, an admin port) through a name it controls.

use std::net::IpAddr;
use std::sync::Arc;

use wasmtime::{Result, bail};

/// One rule: a scheme, a host and a port, each of which may be `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    /// `http`, `https`, or `None` for `*`.
    scheme: Option<String>,
    host: HostRule,
    /// `None` for `*`; the scheme's default when the rule names none.
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostRule {
    Any,
    /// `*.example.com`: names under the domain, not the domain itself.
    Subdomain(String),
    Exact(String),
}

/// The rules of one app; none allows nothing.
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts(Arc<Vec<Rule>>);

/// What the rules say of one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Denied,
    /// Allowed by a rule that names the host.
    Named,
    /// Allowed by a wildcard: only if the host resolves to public addresses.
    PublicOnly,
}

impl AllowedHosts {
    /// Parses rules as Spin writes them. Schemes other than `http` and `https` (Spin's
    /// `redis://`, `postgres://`) are refused, as is `self`, which has no meaning outside Spin.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<AllowedHosts> {
        rules
            .iter()
            .map(|rule| parse_rule(rule.as_ref()))
            .collect::<Result<Vec<_>>>()
            .map(|rules| AllowedHosts(Arc::new(rules)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a request to `scheme://host:port` may go out.
    pub fn check(&self, scheme: &str, host: &str, port: u16) -> Verdict {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut verdict = Verdict::Denied;
        for rule in self.0.iter() {
            if rule.scheme.as_deref().is_some_and(|s| s != scheme)
                || rule.port.is_some_and(|p| p != port)
            {
                continue;
            }
            match &rule.host {
                HostRule::Exact(name) if name.eq_ignore_ascii_case(host) => return Verdict::Named,
                HostRule::Subdomain(domain)
                    if host.len() > domain.len() + 1
                        && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
                        && host.as_bytes()[host.len() - domain.len() - 1] == b'.' =>
                {
                    verdict = Verdict::PublicOnly
                }
                HostRule::Any => verdict = Verdict::PublicOnly,
                _ => {}
            }
        }
        verdict
    }
}

fn parse_rule(rule: &str) -> Result<Rule> {
    let Some((scheme, rest)) = rule.split_once("://") else {
        bail!(
            "`{rule}` is not an outbound host rule (SCHEME://HOST[:PORT], e.g. `https://example.com`)"
        );
    };
    let scheme = match scheme {
        "*" => None,
        "http" | "https" => Some(scheme.to_string()),
        other => bail!(
            "`{rule}`: outgoing requests are HTTP; `{other}://` is not a scheme wasmbridge serves"
        ),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.is_empty() {
        bail!("`{rule}`: a rule names a host and a port, not a path");
    }
    // `[::1]:8080`, `example.com:*`, `example.com`.
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (rest, None),
    };
    let port = match port {
        Some("*") => None,
        Some(port) => Some(
            port.parse::<u16>()
                .map_err(|_| wasmtime::format_err!("`{rule}`: `{port}` is not a port"))?,
        ),
        None => match scheme.as_deref() {
            Some("http") => Some(80),
            Some("https") => Some(443),
            _ => bail!("`{rule}`: with `*://` the rule needs a port (`:443`, or `:*` for any)"),
        },
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host {
        "*" => HostRule::Any,
        "self" | "self.alt" => {
            bail!("`{rule}`: `self` (the app itself) has no meaning here; name its address")
        }
        _ if host.starts_with("*.") && !host[2..].contains('*') => {
            HostRule::Subdomain(host[2..].to_string())
        }
        _ if host.is_empty() || host.contains('*') => {
            bail!("`{rule}`: `*` stands for a whole host or a leading label (`*.example.com`)")
        }
        _ => HostRule::Exact(host.to_string()),
    };
    Ok(Rule { scheme, host, port })
}

/// Whether an address is one a wildcard must not reach: loopback, private, link-local,
/// shared (CGNAT), unique-local, unspecified, multicast or broadcast.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, _] = ip.octets();
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || (a == 192 && b == 0 && c == 0)
        }
        IpAddr::V6(ip) => {
            let s = ip.segments();
            // IPv4 inside IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d) and NAT64
            // (64:ff9b::/96, 64:ff9b:1::/48) all reach the IPv4 address they carry.
            let embedded = if let Some(v4) = ip.to_ipv4_mapped() {
                Some(v4)
            } else if s[..6] == [0; 6] || (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4]) {
                Some(std::net::Ipv4Addr::from(
                    ((s[6] as u32) << 16) | s[7] as u32,
                ))
            } else {
                None
            };
            match embedded {
                _ if ip.is_loopback() || ip.is_unspecified() => true,
                Some(v4) => is_internal(IpAddr::V4(v4)),
                None => {
                    ip.is_multicast()
                        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
                        || (s[0] & 0xfe00) == 0xfc00
                        || (s[0] & 0xffc0) == 0xfe80
                        || (s[0] & 0xffc0) == 0xfec0
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let hosts = AllowedHosts::parse(&[
            "https://api.example.com",
            "http://*.example.org:8080",
            "*://localhost:*",
        ])
        .unwrap();
        assert_eq!(hosts.check("https", "API.example.com", 443), Verdict::Named);
        assert_eq!(hosts.check("http", "api.example.com", 80), Verdict::Denied);
        assert_eq!(
            hosts.check("https", "api.example.com", 8443),
            Verdict::Denied
        );
        assert_eq!(
            hosts.check("http", "a.example.org", 8080),
            Verdict::PublicOnly
        );
        assert_eq!(hosts.check("http", "example.org", 8080), Verdict::Denied);
        assert_eq!(hosts.check("http", "localhost", 3000), Verdict::Named);
        assert!(AllowedHosts::parse(&["redis://x"]).is_err());
        assert!(AllowedHosts::parse(&["*://x"]).is_err());
        assert!(AllowedHosts::parse(&["https://x/path"]).is_err());
        assert!(is_internal("10.1.2.3".parse().unwrap()));
        assert!(is_internal("::ffff:127.0.0.1".parse().unwrap()));
        assert!(is_internal("169.254.169.254".parse().unwrap()));
        assert!(!is_internal("93.184.216.34".parse().unwrap()));
        assert!(is_internal("64:ff9b::a00:1".parse().unwrap()));
        assert!(is_internal("::127.0.0.1".parse().unwrap()));
        assert!(!is_internal("2606:4700::1111".parse().unwrap()));
    }
}

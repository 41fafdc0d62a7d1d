//! What the subcommands share: how a CGI program finds its scripts, and the grants and
//! durations their flags take.

use std::time::Duration;

use wasmtime::{Result, bail, format_err};

use wasmbridge::cgi::CgiConfig;
use wasmbridge::sandbox::Preopen;

/// How URL paths find a CGI program's script; `wasmbridge wrap` takes the same options.
#[derive(clap::Args)]
pub(crate) struct CgiOptions {
    /// CGI docroot style: URL paths name scripts inside this guest directory (a granted one,
    /// `--dir`); the script is appended to the program's arguments.
    #[arg(long, value_name = "GUEST_DIR")]
    pub(crate) cgi_docroot: Option<String>,

    /// CGI docroot style: the script a directory's URL runs, first found wins (repeat for
    /// more; like Apache's DirectoryIndex).
    #[arg(long, value_name = "FILE", default_values = ["index.php", "index.py", "index.cgi"])]
    pub(crate) cgi_index: Vec<String>,

    /// CGI docroot style: the script (a URL path in the docroot, e.g. `/index.php`) for URLs
    /// that name no script, as a front controller wants (like Apache's FallbackResource).
    #[arg(long, value_name = "URL_PATH", requires = "cgi_docroot")]
    pub(crate) cgi_fallback: Option<String>,

    /// CGI docroot style: the extension of the scripts the program runs (repeat for more;
    /// default by the program's name: `php` for PHP, `py` for Python, else `cgi`). Other files
    /// are never handed to it, and dot-files and dot-directories are refused.
    #[arg(long, value_name = "EXT", requires = "cgi_docroot", value_parser = parse_extension)]
    pub(crate) cgi_ext: Vec<String>,
}

/// `php` or `.php`; a name, not a path or a pattern.
fn parse_extension(s: &str) -> Result<String> {
    let ext = s.strip_prefix('.').unwrap_or(s);
    if ext.is_empty()
        || !ext
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        bail!("`{s}` is not a file extension");
    }
    Ok(ext.to_string())
}

impl CgiOptions {
    /// The CGI configuration, with `args` after the program's name.
    pub(crate) fn config(&self, args: Vec<String>) -> CgiConfig {
        CgiConfig {
            args,
            docroot: self.cgi_docroot.clone(),
            index: self.cgi_index.clone(),
            fallback: self.cgi_fallback.clone(),
            extensions: self.cgi_ext.clone(),
            ..CgiConfig::default()
        }
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration> {
    wasmbridge::limits::parse_duration(s)
}

pub(crate) fn parse_dir(s: &str) -> Result<Preopen> {
    Preopen::parse(s)
}

/// Adds the `--env` grants to `env`: `NAME=VAL`, or `NAME` for the host's value (nothing when
/// it is unset); a name granted again replaces what `env` had for it.
pub(crate) fn grant_env(
    env: &mut Vec<(String, String)>,
    vars: &[(String, Option<String>)],
) -> Result<()> {
    for (name, value) in vars {
        let value = match value {
            Some(value) => value.clone(),
            None => match std::env::var_os(name) {
                Some(value) => utf8(name, value)?,
                None => continue,
            },
        };
        env.retain(|(existing, _)| existing != name);
        env.push((name.clone(), value));
    }
    Ok(())
}

pub(crate) fn utf8(name: &str, value: std::ffi::OsString) -> Result<String> {
    value
        .into_string()
        .map_err(|_| format_err!("environment variable `{name}` is not UTF-8"))
}

pub(crate) fn parse_env(s: &str) -> Result<(String, Option<String>)> {
    let mut parts = s.splitn(2, '=');
    Ok((
        parts.next().unwrap_or_default().to_string(),
        parts.next().map(str::to_string),
    ))
}

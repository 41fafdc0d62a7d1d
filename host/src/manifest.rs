//! Many apps in one server: a manifest lists them with their routes, code, grants and limits.
//! `wasmbridge serve` takes wasmbridge's own manifest (below) or a Spin application manifest
//! (version 2, [`spin`]).
//!
//! ```toml
//! [[app]]
//! name = "shop"
//! routes = ["/shop/..."]
//! source = "apps/shop.wasm"          # relative to the manifest
//! kind = "wsgi"                      # component, cgi, cgi-workers or wsgi; default: by exports
//! wsgi = "shop:app"
//! python_path = ["/app"]
//! dirs = ["apps/shop::/app::ro"]     # as `--dir`, host paths relative to the manifest
//! env = { SHOP_MODE = "production" }
//! allowed_outbound_hosts = ["https://api.example.com"]
//!
//! [app.limits]
//! memory = "128M"
//! timeout = "10s"
//! ```
//!
//! The command line's options are every app's defaults; a manifest's keys override them. A key
//! the manifest does not know, a route taken twice, a file that is not there or a limit that
//! does not parse stops the load, with the file, the line and the reason.

pub mod spin;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use wasmtime::{Engine, Result, format_err};

use crate::cache::CompileCache;
use crate::limits::{parse_duration, parse_size};
use crate::metrics::Registry;
use crate::outbound::AllowedHosts;
use crate::router::{Route, RoutePattern, Router};
use crate::sandbox::Preopen;
use crate::{App, AppConfig, Mode};

/// What loading a manifest needs besides the manifest.
pub struct Loader<'a> {
    pub engine: &'a Engine,
    pub cache: Option<&'a CompileCache>,
    pub allow_precompiled: bool,
    /// Every app's settings before the manifest's keys: the command line's.
    pub defaults: &'a AppConfig,
    /// Where each app's counters are kept across reloads.
    pub stats: &'a Registry,
}

/// Whether a file is a manifest rather than a program: by its `.toml` name.
pub fn is_manifest(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "toml")
}

/// Reads a manifest (wasmbridge's or Spin's) and loads its apps.
pub fn load(path: &Path, loader: &Loader) -> Result<Router> {
    let file = SourceFile::read(path)?;
    let plans = if spin::is_spin(&file.text) {
        spin::plans(&file, loader.defaults)?
    } else {
        plans(&file, loader.defaults)?
    };
    build(&file, plans, loader)
}

/// A manifest's text, to tell lines from byte offsets.
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    fn read(path: &Path) -> Result<SourceFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format_err!("cannot read the manifest {}: {e}", path.display()))?;
        Ok(SourceFile {
            path: path.to_path_buf(),
            text,
        })
    }

    /// `FILE:LINE: reason` for the key or value at `span`.
    pub fn error(&self, span: Range<usize>, reason: impl std::fmt::Display) -> wasmtime::Error {
        let line = self.text[..span.start.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1;
        format_err!("{}:{line}: {reason}", self.path.display())
    }

    /// A TOML error (a syntax error, an unknown key, a value of the wrong type), at its line.
    pub fn toml_error(&self, error: toml::de::Error) -> wasmtime::Error {
        let reason = error.message().trim_end().to_string();
        match error.span() {
            Some(span) => self.error(span, reason),
            None => format_err!("{}: {reason}", self.path.display()),
        }
    }

    /// A path in the manifest, relative to the manifest's directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        dir.join(path)
    }
}

/// One app of a manifest, ready to load.
pub struct AppPlan {
    pub routes: Vec<Spanned<RoutePattern>>,
    pub source: Spanned<PathBuf>,
    pub config: AppConfig,
    pub spin_headers: bool,
}

/// Loads the planned apps and routes them; every error names the manifest's line.
pub fn build(file: &SourceFile, plans: Vec<AppPlan>, loader: &Loader) -> Result<Router> {
    let mut routes: Vec<Route> = Vec::new();
    let mut taken: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for plan in plans {
        for route in &plan.routes {
            let key = route.get_ref().to_string();
            if let Some((app, _)) = taken.get(&key) {
                return Err(file.error(
                    route.span(),
                    format!(
                        "route `{key}` is taken twice: by app `{app}` and by app `{}`",
                        plan.config.name
                    ),
                ));
            }
            taken.insert(key, (plan.config.name.clone(), route.span().start));
        }
        let source = plan.source.get_ref();
        if !source.is_file() {
            return Err(file.error(
                plan.source.span(),
                format!(
                    "app `{}`: `{}` is not a file",
                    plan.config.name,
                    source.display()
                ),
            ));
        }
        let name = plan.config.name.clone();
        let mut config = plan.config;
        config.stats = loader.stats.stats(&name);
        let app = App::load(
            loader.engine,
            source,
            loader.cache,
            loader.allow_precompiled,
            config,
        )
        .map_err(|e| file.error(plan.source.span(), format!("app `{name}`: {e:#}")))?;
        let app = Arc::new(app);
        routes.extend(plan.routes.into_iter().map(|pattern| Route {
            pattern: pattern.into_inner(),
            app: app.clone(),
            spin_headers: plan.spin_headers,
        }));
    }
    if routes.is_empty() {
        return Err(format_err!(
            "{}: the manifest routes no request to any app",
            file.path.display()
        ));
    }
    Router::new(routes)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    app: Vec<Spanned<AppEntry>>,
}

/// `[[app]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppEntry {
    name: Spanned<String>,
    #[serde(default)]
    route: Option<Spanned<String>>,
    #[serde(default)]
    routes: Vec<Spanned<String>>,
    source: Spanned<String>,
    kind: Option<Spanned<String>>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    dirs: Vec<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    allowed_outbound_hosts: Option<Spanned<Vec<String>>>,
    wsgi: Option<String>,
    #[serde(default)]
    python_path: Vec<String>,
    workers: Option<Spanned<usize>>,
    #[serde(default)]
    limits: LimitsEntry,
    #[serde(default)]
    cgi: CgiEntry,
}

/// `[app.limits]`: as the command line's flags, for this app.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsEntry {
    memory: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    fuel: Option<u64>,
    max_request_body_size: Option<Spanned<String>>,
    body_read_timeout: Option<Spanned<String>>,
    max_concurrent: Option<Spanned<usize>>,
    max_instance_reuse_count: Option<Spanned<usize>>,
    max_instance_concurrent_reuse_count: Option<Spanned<usize>>,
    idle_instance_timeout: Option<Spanned<String>>,
}

/// `[app.cgi]`: how URL paths find a CGI program's script.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CgiEntry {
    docroot: Option<String>,
    index: Option<Vec<String>>,
    fallback: Option<String>,
    #[serde(default)]
    ext: Vec<String>,
    worker_wait: Option<Spanned<String>>,
}

fn plans(file: &SourceFile, defaults: &AppConfig) -> Result<Vec<AppPlan>> {
    let manifest: Manifest = toml::from_str(&file.text).map_err(|e| file.toml_error(e))?;
    if manifest.app.is_empty() {
        return Err(format_err!(
            "{}: no `[[app]]`: a manifest lists its apps as `[[app]]` tables (or is a Spin \
             manifest with `spin_manifest_version = 2`)",
            file.path.display()
        ));
    }
    let mut names = BTreeMap::new();
    let mut plans = Vec::new();
    for entry in manifest.app {
        let span = entry.span();
        let entry = entry.into_inner();
        let name = entry.name.get_ref().clone();
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(file.error(entry.name.span(), format!("`{name}` is not an app name")));
        }
        if names.insert(name.clone(), ()).is_some() {
            return Err(file.error(entry.name.span(), format!("app `{name}` is named twice")));
        }
        let mut routes = Vec::new();
        for route in entry.route.iter().chain(&entry.routes) {
            let pattern = RoutePattern::parse(route.get_ref())
                .map_err(|e| file.error(route.span(), format!("app `{name}`: {e}")))?;
            routes.push(Spanned::new(route.span(), pattern));
        }
        if routes.is_empty() {
            return Err(file.error(
                span,
                format!("app `{name}` has no `route` or `routes` (e.g. `route = \"/...\"`)"),
            ));
        }
        let config = app_config(file, defaults, &name, &entry)?;
        plans.push(AppPlan {
            routes,
            source: Spanned::new(entry.source.span(), file.resolve(entry.source.get_ref())),
            config,
            spin_headers: false,
        });
    }
    Ok(plans)
}

fn app_config(
    file: &SourceFile,
    defaults: &AppConfig,
    name: &str,
    entry: &AppEntry,
) -> Result<AppConfig> {
    let error =
        |span: Range<usize>, e: wasmtime::Error| file.error(span, format!("app `{name}`: {e:#}"));
    let mut config = AppConfig {
        name: name.to_string(),
        ..defaults.clone()
    };
    config.cgi.args = entry.args.clone();
    if let Some(kind) = &entry.kind {
        let default_workers = crate::cgi::default_wsgi_workers();
        (config.mode, config.cgi.workers) = match kind.get_ref().as_str() {
            "component" => (Mode::Http, 0),
            "cgi" => (Mode::Cgi, 0),
            "cgi-workers" | "wsgi" => (Mode::Cgi, default_workers),
            other => {
                return Err(file.error(
                    kind.span(),
                    format!(
                        "app `{name}`: kind `{other}` is not one of component, cgi, cgi-workers, wsgi"
                    ),
                ));
            }
        };
        if (kind.get_ref() == "wsgi") != entry.wsgi.is_some() {
            return Err(file.error(
                kind.span(),
                format!(
                    "app `{name}`: kind `wsgi` and the `wsgi = \"MODULE:CALLABLE\"` key go together"
                ),
            ));
        }
    } else if entry.wsgi.is_some() {
        config.mode = Mode::Cgi;
        config.cgi.workers = crate::cgi::default_wsgi_workers();
    }
    config.cgi.wsgi = entry.wsgi.clone();
    if let Some(workers) = &entry.workers {
        config.cgi.workers = *workers.get_ref();
        if config.cgi.workers == 0
            && entry
                .kind
                .as_ref()
                .is_some_and(|k| k.get_ref() == "cgi-workers")
        {
            return Err(file.error(
                workers.span(),
                format!("app `{name}`: kind `cgi-workers` with `workers = 0`; use kind `cgi` for a fresh instance per request"),
            ));
        }
    }
    let cgi = &entry.cgi;
    config.cgi.docroot = cgi.docroot.clone();
    if let Some(index) = &cgi.index {
        config.cgi.index = index.clone();
    } else if config.cgi.index.is_empty() {
        config.cgi.index = ["index.php", "index.py", "index.cgi"]
            .map(String::from)
            .to_vec();
    }
    config.cgi.fallback = cgi.fallback.clone();
    config.cgi.extensions = cgi
        .ext
        .iter()
        .map(|e| e.trim_start_matches('.').to_string())
        .collect();
    if let Some(wait) = &cgi.worker_wait {
        config.cgi.worker_wait =
            parse_duration(wait.get_ref()).map_err(|e| error(wait.span(), e))?;
    }

    let sandbox = &mut config.sandbox;
    sandbox.dirs = Vec::new();
    for dir in &entry.dirs {
        let mut preopen = Preopen::parse(dir.get_ref()).map_err(|e| error(dir.span(), e))?;
        preopen.host = file.resolve(&preopen.host.to_string_lossy());
        if !preopen.host.is_dir() {
            return Err(error(
                dir.span(),
                format_err!("`{}` is not a directory", preopen.host.display()),
            ));
        }
        sandbox.dirs.push(preopen);
    }
    for (var, value) in &entry.env {
        sandbox.env.retain(|(existing, _)| existing != var);
        sandbox.env.push((var.clone(), value.clone()));
    }
    sandbox.add_python_path(&entry.python_path);
    if let Some(hosts) = &entry.allowed_outbound_hosts {
        sandbox.allowed_outbound_hosts =
            AllowedHosts::parse(hosts.get_ref()).map_err(|e| error(hosts.span(), e))?;
    }
    if let Some(docroot) = &config.cgi.docroot
        && config.sandbox.host_path(docroot).is_none()
    {
        return Err(file.error(
            entry.name.span(),
            format!("app `{name}`: its CGI docroot `{docroot}` is not inside any of its `dirs`"),
        ));
    }

    let limits = &entry.limits;
    let duration = |value: &Spanned<String>| -> Result<Option<Duration>> {
        let d = parse_duration(value.get_ref()).map_err(|e| error(value.span(), e))?;
        Ok((!d.is_zero()).then_some(d))
    };
    let size = |value: &Spanned<String>| -> Result<Option<u64>> {
        let n = parse_size(value.get_ref()).map_err(|e| error(value.span(), e))?;
        Ok((n != 0).then_some(n))
    };
    if let Some(memory) = &limits.memory {
        config.limits.max_memory_size = size(memory)?.map(|n| n as usize);
    }
    if let Some(timeout) = &limits.timeout {
        config.limits.timeout = duration(timeout)?;
    }
    if let Some(fuel) = limits.fuel {
        // 0: none, for an app that cannot have a budget (CGI workers) under a default one.
        config.limits.fuel = (fuel != 0).then_some(fuel);
    }
    let at_least_one = |value: &Spanned<usize>, key: &str| match *value.get_ref() {
        0 => Err(error(
            value.span(),
            format_err!("`{key}` must be at least 1"),
        )),
        n => Ok(Some(n)),
    };
    if let Some(n) = &limits.max_instance_reuse_count {
        config.reuse.max_requests = at_least_one(n, "max_instance_reuse_count")?;
    }
    if let Some(n) = &limits.max_instance_concurrent_reuse_count {
        config.reuse.max_concurrent = at_least_one(n, "max_instance_concurrent_reuse_count")?;
    }
    if let Some(idle) = &limits.idle_instance_timeout {
        config.reuse.idle_timeout =
            Some(parse_duration(idle.get_ref()).map_err(|e| error(idle.span(), e))?);
    }
    if let Some(max) = &limits.max_request_body_size {
        config.limits.body.max_size = size(max)?;
    }
    if let Some(pause) = &limits.body_read_timeout {
        config.limits.body.read_timeout = duration(pause)?;
    }
    if let Some(max) = &limits.max_concurrent {
        if *max.get_ref() == 0 {
            return Err(error(
                max.span(),
                format_err!("`max_concurrent` must be at least 1"),
            ));
        }
        config.max_concurrent = (*max.get_ref()).min(defaults.max_concurrent);
    }
    Ok(config)
}

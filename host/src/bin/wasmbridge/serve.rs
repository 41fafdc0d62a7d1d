//! `wasmbridge serve`: the flags of `wasmtime serve`, with the same meanings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use http::{HeaderName, HeaderValue};
use wasmtime::error::Context as _;
use wasmtime::{Result, bail, format_err};
use wasmtime_cli_flags::CommonOptions;

use wasmbridge::access_log::AccessLog;
use wasmbridge::body::BodyLimits;
use wasmbridge::cache::CompileCache;
use wasmbridge::cgi::CgiConfig;
use wasmbridge::engine::{EpochTicker, new_engine};
use wasmbridge::limits::Limits;
use wasmbridge::log::StderrLog;
use wasmbridge::manifest::{self, Loader};
use wasmbridge::metrics::{AppStats, Registry};
use wasmbridge::outbound::AllowedHosts;
use wasmbridge::reuse::InstanceReuse;
use wasmbridge::router::Router;
use wasmbridge::sandbox::{Preopen, Sandbox};
use wasmbridge::server::{ServerOptions, Site, serve, serve_metrics};
use wasmbridge::{App, AppConfig, Mode};

use crate::common::{CgiOptions, grant_env, parse_dir, parse_duration, parse_env, utf8};

/// Serve a wasi:http component, a CGI program, or the apps of a manifest, over HTTP/1.1 and
/// HTTP/2.
#[derive(Parser)]
pub struct ServeCommand {
    #[command(flatten)]
    common: CommonOptions,

    /// Allow running a component precompiled with `wasmtime compile`.
    #[arg(long = "allow-precompiled")]
    allow_precompiled: bool,

    /// Grant access to a host directory, under the same path or under GUEST_DIR; `::ro` at
    /// the end grants it read-only (the syntax proposed in wasmtime issue #9608).
    #[arg(long = "dir", value_name = "HOST_DIR[::GUEST_DIR][::ro]", value_parser = parse_dir)]
    dirs: Vec<Preopen>,

    /// Pass an environment variable to the guest; with no value, the host's value (if set).
    #[arg(long = "env", number_of_values = 1, value_name = "NAME[=VAL]", value_parser = parse_env)]
    vars: Vec<(String, Option<String>)>,

    /// Socket address for the web server to bind to.
    #[arg(long, value_name = "SOCKADDR", default_value = "0.0.0.0:8080")]
    addr: SocketAddr,

    /// Serve HTTPS with this certificate chain (PEM, the server's certificate first); HTTP/2
    /// is offered over ALPN. SIGHUP reads it again.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Serve each app's metrics in Prometheus' text format on this address (any path).
    #[arg(long, value_name = "SOCKADDR")]
    metrics_addr: Option<SocketAddr>,

    /// Reload when the manifest, a program or a certificate changes (looked at every second),
    /// as SIGHUP does: requests in flight finish on the old code.
    #[arg(long)]
    watch: bool,

    /// Let outgoing HTTP requests reach this host: `https://api.example.com`,
    /// `http://*.example.com:8080`, `*://example.com:*` (Spin's `allowed_outbound_hosts`);
    /// repeat for more. A wildcard never reaches a loopback or private address.
    #[arg(long = "allowed-outbound-host", value_name = "SCHEME://HOST[:PORT]")]
    allowed_outbound_hosts: Vec<String>,

    /// Socket address where a connection starts a graceful shutdown (as SIGINT/SIGTERM do).
    #[arg(long, value_name = "SOCKADDR")]
    shutdown_addr: Option<SocketAddr>,

    /// Do not prefix guest output with `stdout [ID] :: ` / `stderr [ID] :: `.
    #[arg(long)]
    no_logging_prefix: bool,

    /// Requests one instance of a WASI 0.3 component serves before it is dropped. Default
    /// 128; WASI 0.2 components and CGI programs get a fresh instance for every request.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_instance_reuse_count: Option<u64>,

    /// Requests one instance of a WASI 0.3 component serves at once. Default 16.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_instance_concurrent_reuse_count: Option<u64>,

    /// How long an idle instance of a WASI 0.3 component is kept for the next request.
    /// Default 1s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    idle_instance_timeout: Option<Duration>,

    /// Replace or add a request header (`name: value`) before the component sees it;
    /// `@FILE` reads one header a line.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,

    /// Requests processed at once; more wait for a free slot. Default 1000.
    #[arg(long)]
    max_concurrent_requests: Option<usize>,

    /// Connections held at once. Default 1000.
    #[arg(long)]
    max_concurrent_connections: Option<usize>,

    /// Log every request to FILE (`-`: stdout) in Apache's combined format, followed by the
    /// request id, the app and the microseconds it took.
    #[arg(long, value_name = "FILE")]
    access_log: Option<PathBuf>,

    /// How long a client may take to send a request's headers (HTTP/1.1); 0 for no limit.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    header_read_timeout: Option<Duration>,

    /// How long an idle connection (no request in flight, no traffic) stays open; 0 for no
    /// limit.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_alive_timeout: Option<Duration>,

    /// How long a request body may pause between two pieces before the request is answered
    /// 408; 0 for no limit.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    body_read_timeout: Option<Duration>,

    /// Largest request body, in bytes (K, M or G may follow); a larger one is answered 413.
    /// 0 for no limit.
    #[arg(long, value_name = "BYTES", value_parser = wasmbridge::limits::parse_size)]
    max_request_body_size: Option<u64>,

    /// Where compiled code is cached (default: $XDG_CACHE_HOME/wasmbridge). `-C cache=n` turns
    /// the cache off.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Serve the program in CGI mode even if it also exports a wasi:http handler.
    #[arg(long)]
    cgi: bool,

    #[command(flatten)]
    cgi_options: CgiOptions,

    /// CGI mode with up to N long-lived instances that serve one request after another over
    /// FastCGI on stdin and stdout (php-cgi from guests/php does), like PHP-FPM's children;
    /// 0 starts a fresh instance for every request. Default: 0, and with `--wsgi` one worker
    /// per CPU.
    #[arg(long, value_name = "N")]
    cgi_workers: Option<usize>,

    /// Serve a WSGI app (PEP 3333) with python.wasm from guests/python: `MODULE:CALLABLE`
    /// (`MODULE` alone means its `application`), imported from `--python-path`. It runs in CGI
    /// workers (see `--cgi-workers`), or in a fresh instance per request with
    /// `--cgi-workers 0` (from a snapshot that imported it: `wasmbridge wizer --init-func
    /// wasmbridge-warm`). The server does not start if the app does not import.
    #[arg(long, value_name = "MODULE:CALLABLE", conflicts_with = "cgi_docroot")]
    wsgi: Option<String>,

    /// A guest directory to import Python modules from (PYTHONPATH), e.g. the app's and its
    /// packages'; repeat for more.
    #[arg(long, value_name = "GUEST_DIR")]
    python_path: Vec<String>,

    /// How long a request waits for a free CGI worker before it is answered 503.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    cgi_worker_wait: Option<Duration>,

    /// The program to serve: a wasi:http component, or a CGI program (a WASI preview-1 command
    /// module or a wasi:cli/command component). Or a manifest (`.toml`): wasmbridge's
    /// `[[app]]` list, or a Spin application manifest, whose apps take the options given here
    /// as their defaults.
    #[arg(value_name = "WASM")]
    component: PathBuf,

    /// Arguments for a CGI program, after its name (e.g. the script an interpreter runs).
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

impl ServeCommand {
    pub fn execute(mut self) -> Result<()> {
        // Parses the `-O/-C/-W/-S` groups; logging itself stays off.
        self.common.init_logging()?;
        self.check_supported()?;
        // SIGHUP is taken from the start: before the apps have loaded, a reload (a
        // `systemctl reload` right after the start) waits for them instead of ending the process.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let hangup = {
            let _in_runtime = runtime.enter();
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?
        };
        let use_cache = self.common.codegen.cache.take().unwrap_or(true);
        let max_requests = self.max_concurrent_requests.unwrap_or(1000);
        let engine = new_engine(
            &mut self.common,
            u32::try_from(max_requests).unwrap_or(u32::MAX),
        )?;

        let cache = match (use_cache, &self.cache_dir) {
            (false, _) => None,
            // One the user named must be usable.
            (true, Some(dir)) => Some(CompileCache::open(dir)?),
            (true, None) => CompileCache::default_dir().and_then(|dir| {
                CompileCache::open(dir)
                    .inspect_err(|e| eprintln!("wasmbridge: compiling without a cache: {e:#}"))
                    .ok()
            }),
        };
        let defaults = self.app_config(max_requests)?;
        let is_manifest = manifest::is_manifest(&self.component);
        if is_manifest {
            // Grants and how an app runs are each app's own: given here they would reach every
            // app of the manifest. Limits are fine as everyone's defaults.
            let wasi = &self.common.wasi;
            let per_app = [
                ("program arguments", "args", !self.args.is_empty()),
                ("`--dir`", "dirs", !self.dirs.is_empty()),
                ("`--env`", "env", !self.vars.is_empty()),
                ("`-S inherit-env`", "env", wasi.inherit_env == Some(true)),
                (
                    "`-S inherit-network`",
                    "allowed_outbound_hosts",
                    wasi.inherit_network == Some(true),
                ),
                (
                    "`-S allow-ip-name-lookup`",
                    "allowed_outbound_hosts",
                    wasi.allow_ip_name_lookup == Some(true),
                ),
                (
                    "`--allowed-outbound-host`",
                    "allowed_outbound_hosts",
                    !self.allowed_outbound_hosts.is_empty(),
                ),
                (
                    "`--python-path`",
                    "python_path",
                    !self.python_path.is_empty(),
                ),
                ("`--wsgi`", "wsgi", self.wsgi.is_some()),
                ("`--cgi`", "kind", self.cgi),
                ("`--cgi-workers`", "workers", self.cgi_workers.is_some()),
                (
                    "`--cgi-docroot`",
                    "[app.cgi] docroot",
                    self.cgi_options.cgi_docroot.is_some(),
                ),
                (
                    "`--cgi-fallback`",
                    "[app.cgi] fallback",
                    self.cgi_options.cgi_fallback.is_some(),
                ),
                (
                    "`--cgi-ext`",
                    "[app.cgi] ext",
                    !self.cgi_options.cgi_ext.is_empty(),
                ),
                (
                    "`--max-instance-reuse-count`",
                    "[app.limits] max_instance_reuse_count",
                    self.max_instance_reuse_count.is_some(),
                ),
                (
                    "`--max-instance-concurrent-reuse-count`",
                    "[app.limits] max_instance_concurrent_reuse_count",
                    self.max_instance_concurrent_reuse_count.is_some(),
                ),
                (
                    "`--idle-instance-timeout`",
                    "[app.limits] idle_instance_timeout",
                    self.idle_instance_timeout.is_some(),
                ),
            ];
            if let Some((flag, key, _)) = per_app.iter().find(|(_, _, given)| *given) {
                bail!(
                    "{flag} is one app's: with a manifest, give it as `{key}` in that app's table"
                );
            }
        }
        let sites = Arc::new(SiteLoader {
            engine: engine.clone(),
            cache,
            allow_precompiled: self.allow_precompiled,
            defaults,
            stats: Registry::default(),
            source: self.component.clone(),
            is_manifest,
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
        });
        let (router, tls) = sites.load()?;
        if !is_manifest {
            let app = &router.apps()[0];
            if !app.is_cgi() && (!self.args.is_empty() || self.cgi_options.cgi_docroot.is_some()) {
                bail!(
                    "arguments and `--cgi-docroot` are for CGI programs; `{}` is a wasi:http component",
                    self.component.display()
                );
            }
            if self.wsgi.is_some() && !self.args.is_empty() {
                bail!("`--wsgi` serves the app it names: no arguments may follow the program");
            }
            if let Some(docroot) = self
                .cgi_options
                .cgi_docroot
                .as_deref()
                .filter(|d| app.config().sandbox.host_path(d).is_none())
            {
                bail!("`--cgi-docroot {docroot}` is not inside any `--dir` grant");
            }
        }
        let defaults = ServerOptions::default();
        let options = ServerOptions {
            max_connections: self.max_concurrent_connections.unwrap_or(1000),
            max_requests,
            request_headers: parse_headers(&self.headers)?,
            header_read_timeout: limit(self.header_read_timeout, defaults.header_read_timeout),
            keep_alive_timeout: limit(self.keep_alive_timeout, defaults.keep_alive_timeout),
            access_log: match &self.access_log {
                Some(path) => Some(Arc::new(AccessLog::open(path)?)),
                None => None,
            },
        };
        print_limits(&sites.defaults, &options);
        for app in router.apps().iter().filter(|app| app.reuses_instances()) {
            let reuse = &app.config().reuse;
            eprintln!(
                "WASI 0.3 instances of `{}`: up to {} requests each (--max-instance-reuse-count), {} at once \
                 (--max-instance-concurrent-reuse-count), kept {:?} idle (--idle-instance-timeout)",
                app.name(),
                reuse.max_requests(),
                reuse.max_concurrent(),
                reuse.idle_timeout()
            );
        }

        runtime.block_on(async {
            for app in router.apps() {
                app.check_start().await?;
            }
            if is_manifest {
                print_routes(&router);
            }
            let https = tls.is_some();
            let site = Arc::new(Site::new(router, tls));
            let shutdown = shutdown_signal(self.shutdown_addr).await?;
            let listener = bind(self.addr)?;
            if let Some(addr) = self.metrics_addr {
                let metrics = bind(addr)?;
                eprintln!(
                    "Serving metrics on http://{}/metrics",
                    metrics.local_addr()?
                );
                tokio::spawn(serve_metrics(metrics, site.clone()));
            }
            tokio::spawn(reload_on_signal(
                hangup,
                sites.clone(),
                site.clone(),
                options.access_log.clone(),
                self.watch,
            ));
            match https {
                true => eprintln!("Serving HTTPS on https://{}/", listener.local_addr()?),
                false => eprintln!("Serving HTTP on http://{}/", listener.local_addr()?),
            }
            let _ticker = EpochTicker::start(&engine);
            serve(listener, site, options, shutdown).await
        })
    }

    /// Options that `wasmtime serve` accepts but that make no sense here, or are not built in,
    /// stop the start with their name rather than being ignored.
    fn check_supported(&self) -> Result<()> {
        let wasi = &self.common.wasi;
        if wasi.http == Some(false) {
            bail!("`-S http=n`: wasi:http is what `serve` runs; it cannot be disabled");
        }
        if self.common.wasm.component_model == Some(false) {
            bail!("`-W component-model=n`: `serve` runs components; it cannot be disabled");
        }
        if wasi.common.is_some() && wasi.cli.is_some() {
            bail!("`-S common` is a deprecated alias of `-S cli`; pass only one of them");
        }
        let unsupported = [
            ("-S nn", wasi.nn == Some(true) || !wasi.nn_graph.is_empty()),
            ("-S threads", wasi.threads == Some(true)),
            (
                "-S config",
                wasi.config == Some(true) || !wasi.config_var.is_empty(),
            ),
            (
                "-S keyvalue",
                wasi.keyvalue == Some(true) || !wasi.keyvalue_in_memory_data.is_empty(),
            ),
            ("-S tls", wasi.tls == Some(true)),
            ("-S listenfd", wasi.listenfd == Some(true)),
            ("-S tcplisten", !wasi.tcplisten.is_empty()),
            ("-S preview0", wasi.preview0 == Some(true)),
            (
                "-C cache-config",
                self.common.codegen.cache_config.is_some(),
            ),
            ("-D debugger", self.common.debug.debugger.is_some()),
            ("-D coredump", self.common.debug.coredump.is_some()),
            ("--target", self.common.target.is_some()),
            (
                "-R (execution recording)",
                self.common.record.path.is_some(),
            ),
        ];
        if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
            bail!("`{name}` is not supported by `wasmbridge serve`");
        }
        Ok(())
    }

    fn app_config(&self, max_concurrent: usize) -> Result<AppConfig> {
        let wasi = &self.common.wasi;
        let wasm = &self.common.wasm;

        // `-S inherit-env` first, so that `--env` can override what it brings.
        let mut env = Vec::new();
        if wasi.inherit_env == Some(true) {
            for (name, value) in std::env::vars_os() {
                let name = name
                    .into_string()
                    .map_err(|n| format_err!("environment variable {n:?} is not UTF-8"))?;
                let value = utf8(&name, value)?;
                env.push((name, value));
            }
        }
        grant_env(&mut env, &self.vars)?;

        let mut sandbox = Sandbox {
            env,
            dirs: self.dirs.clone(),
            cwd: wasi.cwd.clone(),
            inherit_network: wasi.inherit_network == Some(true),
            allow_ip_name_lookup: wasi.allow_ip_name_lookup == Some(true),
            tcp: wasi.tcp,
            udp: wasi.udp,
            max_random_size: wasi.max_random_size,
            allowed_outbound_hosts: AllowedHosts::parse(&self.allowed_outbound_hosts)?,
        };
        sandbox.add_python_path(&self.python_path);
        // What a server can survive unless told otherwise; 0 turns the deadline off.
        let limits = Limits {
            max_memory_size: Some(wasm.max_memory_size.unwrap_or(MAX_MEMORY_SIZE)),
            timeout: limit(wasm.timeout, Some(TIMEOUT)),
            fuel: wasm.fuel,
            max_resources: wasi.max_resources,
            max_table_elements: wasm.max_table_elements,
            max_instances: wasm.max_instances,
            max_tables: wasm.max_tables,
            max_memories: wasm.max_memories,
            trap_on_grow_failure: wasm.trap_on_grow_failure == Some(true),
            hostcall_fuel: wasi.hostcall_fuel,
            max_component_handles: wasi.max_component_handles,
            body: BodyLimits {
                max_size: match self.max_request_body_size {
                    Some(0) => None,
                    Some(max) => Some(max),
                    None => Some(MAX_REQUEST_BODY_SIZE),
                },
                read_timeout: limit(self.body_read_timeout, Some(BODY_READ_TIMEOUT)),
            },
        };
        let name = self
            .component
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app".into());
        Ok(AppConfig {
            name,
            mode: if self.cgi || self.wsgi.is_some() {
                Mode::Cgi
            } else {
                Mode::Auto
            },
            cgi: CgiConfig {
                wsgi: self.wsgi.clone(),
                workers: self.cgi_workers.unwrap_or(match self.wsgi {
                    Some(_) => wasmbridge::cgi::default_wsgi_workers(),
                    None => 0,
                }),
                worker_wait: self.cgi_worker_wait.unwrap_or(wasmbridge::cgi::WORKER_WAIT),
                ..self.cgi_options.config(self.args.clone())
            },
            sandbox,
            limits,
            link_cli: wasi.cli.or(wasi.common).unwrap_or(true),
            link_p3: wasi.p3.unwrap_or(true),
            reuse: InstanceReuse {
                max_requests: self.max_instance_reuse_count.map(|n| n as usize),
                max_concurrent: self.max_instance_concurrent_reuse_count.map(|n| n as usize),
                idle_timeout: self.idle_instance_timeout,
            },
            max_concurrent,
            max_http_fields_size: wasi.max_http_fields_size,
            outgoing_body_buffer_chunks: wasi.http_outgoing_body_buffer_chunks,
            outgoing_body_chunk_size: wasi.http_outgoing_body_chunk_size,
            log: Arc::new(StderrLog {
                guest_prefix: !self.no_logging_prefix,
            }),
            stats: AppStats::new(),
        })
    }
}

/// Default for `-W max-memory-size`: linear memory per request (as mod_wasm's `WasmMaxMemory`).
const MAX_MEMORY_SIZE: usize = 512 << 20;
/// Default for `-W timeout`: the deadline of a request (as mod_wasm's `WasmTimeout`).
const TIMEOUT: Duration = Duration::from_secs(60);
/// Default for `--max-request-body-size` (as Apache's `LimitRequestBody`).
const MAX_REQUEST_BODY_SIZE: u64 = 1 << 30;
/// Default for `--body-read-timeout` (mod_reqtimeout's body limit).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A limit given on the command line, else its default; 0 means none.
fn limit(given: Option<Duration>, default: Option<Duration>) -> Option<Duration> {
    match given {
        Some(zero) if zero.is_zero() => None,
        Some(given) => Some(given),
        None => default,
    }
}

/// One line at start-up with the limits every request is held to.
fn print_limits(config: &AppConfig, options: &ServerOptions) {
    let duration = |d: Option<Duration>| d.map_or("none".to_string(), |d| format!("{d:?}"));
    let limits = &config.limits;
    eprintln!(
        "Limits per request: memory {} (-W max-memory-size), deadline {} (-W timeout), body {} \
         (--max-request-body-size), body pauses {} (--body-read-timeout); connections: headers {} \
         (--header-read-timeout), idle {} (--keep-alive-timeout)",
        limits
            .max_memory_size
            .map_or("none".to_string(), |m| format!("{} MiB", m >> 20)),
        duration(limits.timeout),
        limits
            .body
            .max_size
            .map_or("none".to_string(), |m| format!("{} MiB", m >> 20)),
        duration(limits.body.read_timeout),
        duration(options.header_read_timeout),
        duration(options.keep_alive_timeout),
    );
}

fn parse_headers(args: &[String]) -> Result<Vec<(HeaderName, HeaderValue)>> {
    let mut headers = Vec::new();
    for arg in args {
        if let Some(path) = arg.strip_prefix('@') {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read header file `{path}`"))?;
            for line in text.lines().filter(|line| !line.trim().is_empty()) {
                headers.push(parse_header(line)?);
            }
        } else {
            headers.push(parse_header(arg)?);
        }
    }
    Ok(headers)
}

fn parse_header(header: &str) -> Result<(HeaderName, HeaderValue)> {
    let (name, value) = header
        .split_once(':')
        .with_context(|| format!("header `{header}` is missing `:`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .with_context(|| format!("invalid header name in `{header}`"))?;
    let value = HeaderValue::from_str(value.trim_start())
        .with_context(|| format!("invalid header value in `{header}`"))?;
    Ok((name, value))
}

/// Binds with `SO_REUSEADDR`, so a restarted server gets its port back at once.
fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("cannot listen on {addr}"))?;
    Ok(socket.listen(1024)?)
}

/// Resolves at the first SIGINT, SIGTERM or connection to `shutdown_addr`; a second signal
/// ends the process without waiting.
async fn shutdown_signal(shutdown_addr: Option<SocketAddr>) -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let shutdown_listener = match shutdown_addr {
        Some(addr) => {
            let listener = bind(addr)?;
            eprintln!(
                "Listening for shutdown on tcp://{}/",
                listener.local_addr()?
            );
            Some(listener)
        }
        None => None,
    };
    Ok(async move {
        let by_connection = async {
            match &shutdown_listener {
                Some(listener) => drop(listener.accept().await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
            _ = by_connection => {}
        }
        eprintln!("Shutting down: waiting for requests in flight (signal again to quit at once)");
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            // Exiting here drops no instance: CGI workers would leave their directories.
            wasmbridge::remove_scratch_dirs();
            std::process::exit(130);
        });
    })
}

/// Loads what the server serves, at start and at each reload.
struct SiteLoader {
    engine: wasmtime::Engine,
    cache: Option<CompileCache>,
    allow_precompiled: bool,
    /// Every app's settings unless its manifest says otherwise: the command line's.
    defaults: AppConfig,
    stats: Registry,
    /// The program, or the manifest.
    source: PathBuf,
    is_manifest: bool,
    /// `--tls-cert` and `--tls-key`.
    tls: Option<(PathBuf, PathBuf)>,
}

impl SiteLoader {
    fn load(&self) -> Result<(Router, Option<tokio_rustls::TlsAcceptor>)> {
        let router = if self.is_manifest {
            let loader = Loader {
                engine: &self.engine,
                cache: self.cache.as_ref(),
                allow_precompiled: self.allow_precompiled,
                defaults: &self.defaults,
                stats: &self.stats,
            };
            manifest::load(&self.source, &loader)?
        } else {
            let config = AppConfig {
                stats: self.stats.stats(&self.defaults.name),
                ..self.defaults.clone()
            };
            let app = App::load(
                &self.engine,
                &self.source,
                self.cache.as_ref(),
                self.allow_precompiled,
                config,
            )?;
            Router::single(Arc::new(app))
        };
        let tls = match &self.tls {
            Some((cert, key)) => Some(wasmbridge::tls::acceptor(cert, key)?),
            None => None,
        };
        Ok((router, tls))
    }

    /// The files a reload reads, with when each last changed.
    fn fingerprint(&self, router: &Router) -> Vec<(PathBuf, Option<std::time::SystemTime>)> {
        let mut files = vec![self.source.clone()];
        files.extend(
            router
                .apps()
                .iter()
                .filter_map(|app| app.source().map(PathBuf::from)),
        );
        if let Some((cert, key)) = &self.tls {
            files.extend([cert.clone(), key.clone()]);
        }
        files
            .into_iter()
            .map(|file| {
                let modified = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
                (file, modified)
            })
            .collect()
    }
}

/// Reloads at each SIGHUP (which also opens the access log anew), and with `watch` whenever a
/// file it read changes. A reload that fails is logged and changes nothing: the running apps
/// keep serving. With `watch`, a failed load is tried again every second (and logged again
/// only when it fails differently), since the file that fixes it may be one the old apps never
/// read.
async fn reload_on_signal(
    mut hangup: tokio::signal::unix::Signal,
    sites: Arc<SiteLoader>,
    site: Arc<Site>,
    access_log: Option<Arc<AccessLog>>,
    watch: bool,
) {
    let mut seen = sites.fingerprint(&site.router());
    let mut failing: Option<String> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let why = tokio::select! {
            _ = hangup.recv() => {
                // As logrotate expects: it moves the file away, SIGHUP opens a new one.
                if let Some(Err(e)) = access_log.as_ref().map(|log| log.reopen()) {
                    eprintln!("wasmbridge: keeping the old access log: {e:#}");
                }
                failing = None;
                "SIGHUP"
            }
            _ = tick.tick(), if watch => {
                let now = sites.fingerprint(&site.router());
                if now == seen && failing.is_none() {
                    continue;
                }
                seen = now;
                "a changed file"
            }
        };
        // Files that change while the load runs are loaded again at the next tick.
        let before = std::time::SystemTime::now();
        let loaded = tokio::task::block_in_place(|| sites.load());
        let checked = match loaded {
            Ok((router, tls)) => {
                let mut checked = Ok(());
                for app in router.apps() {
                    if let Err(e) = app.check_start().await {
                        checked = Err(e);
                        break;
                    }
                }
                checked.map(|()| (router, tls))
            }
            Err(e) => Err(e),
        };
        match checked {
            Ok((router, tls)) => {
                let apps = router.apps().len();
                site.replace(router, tls);
                seen = sites.fingerprint(&site.router());
                if seen
                    .iter()
                    .any(|(_, modified)| modified.is_some_and(|m| m >= before))
                {
                    seen.clear();
                }
                failing = None;
                eprintln!(
                    "wasmbridge: reloaded {} on {why}: {apps} app(s); requests in flight finish on the old code",
                    sites.source.display()
                );
            }
            Err(e) => {
                let message = format!("{e:#}");
                if failing.as_deref() != Some(message.as_str()) {
                    eprintln!(
                        "wasmbridge: reload on {why} failed, the running apps keep serving: {message}"
                    );
                }
                failing = watch.then_some(message);
            }
        }
    }
}

/// The routes of a manifest, one line each, at start-up.
fn print_routes(router: &Router) {
    for route in router.routes() {
        eprintln!("Route {} -> app `{}`", route.pattern, route.app.name());
    }
}

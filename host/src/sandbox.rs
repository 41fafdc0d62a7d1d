//! What a guest may reach. Everything is denied unless granted here: no environment variables,
//! no directories, no sockets and no outgoing HTTP requests by default.

use std::path::PathBuf;

use wasmtime::{Result, bail};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// A host directory made visible to the guest under another path.
#[derive(Clone, Debug)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
}

impl Preopen {
    /// `HOST[::GUEST][::ro|::rw]`, as `--dir` takes it: the guest path defaults to the host's,
    /// and `::ro` at the end grants the directory read-only (the syntax proposed in
    /// wasmtime#9608). Anything else after a second `::` is refused, not taken for read-write.
    pub fn parse(spec: &str) -> Result<Preopen> {
        let parts: Vec<&str> = spec.split("::").collect();
        let (host, guest, writable) = match parts[..] {
            [host] => (host, host, true),
            [host, guest] => (host, guest, true),
            [host, guest, "ro"] => (host, guest, false),
            [host, guest, "rw"] => (host, guest, true),
            [_, _, mode] => bail!(
                "`{spec}`: `{mode}` is not an access mode; `ro` grants the directory read-only, `rw` read-write"
            ),
            _ => bail!("`{spec}` is not HOST[::GUEST][::ro]"),
        };
        if host.is_empty() || guest.is_empty() {
            bail!("`{spec}` is not HOST[::GUEST][::ro]");
        }
        Ok(Preopen {
            host: host.into(),
            guest: guest.into(),
            writable,
        })
    }
}

/// The grants of one app.
#[derive(Clone, Debug, Default)]
pub struct Sandbox {
    /// Environment variables the guest sees, in order.
    pub env: Vec<(String, String)>,
    /// Directories the guest can open.
    pub dirs: Vec<Preopen>,
    /// The guest's initial working directory, if any.
    pub cwd: Option<String>,
    /// Use the host's network for `wasi:sockets` (`-S inherit-network`); also allows outgoing
    /// `wasi:http` requests.
    pub inherit_network: bool,
    /// Allow `wasi:sockets/ip-name-lookup` (`-S allow-ip-name-lookup`).
    pub allow_ip_name_lookup: bool,
    /// Override TCP or UDP support (`-S tcp`, `-S udp`).
    pub tcp: Option<bool>,
    pub udp: Option<bool>,
    /// Largest `wasi:random` request, in bytes (`-S max-random-size`).
    pub max_random_size: Option<u64>,
    /// Hosts outgoing `wasi:http` requests may reach without `inherit_network`
    /// (`--allowed-outbound-host`, a manifest's `allowed_outbound_hosts`).
    pub allowed_outbound_hosts: crate::outbound::AllowedHosts,
}

impl Sandbox {
    /// Grants `dirs` (guest paths) as python.wasm's import path: first in `PYTHONPATH`, before
    /// what a granted `PYTHONPATH` already holds (`--python-path`, `WasmPythonPath`).
    pub fn add_python_path(&mut self, dirs: &[String]) {
        if dirs.is_empty() {
            return;
        }
        let mut path = dirs.join(":");
        if let Some(i) = self.env.iter().position(|(name, _)| name == "PYTHONPATH") {
            path = format!("{path}:{}", self.env.remove(i).1);
        }
        self.env.push(("PYTHONPATH".into(), path));
    }

    /// Checks the grants against the host once, at start-up, so that a typo in a directory
    /// fails loudly instead of on the first request.
    pub fn validate(&self) -> Result<()> {
        for dir in &self.dirs {
            if !dir.host.is_dir() {
                bail!(
                    "cannot grant directory `{}`: it does not exist or is not a directory",
                    dir.host.display()
                );
            }
        }
        Ok(())
    }

    /// The host path behind a guest path, through the granted directories.
    pub fn host_path(&self, guest: &str) -> Option<PathBuf> {
        self.dirs.iter().find_map(|dir| {
            let base = dir.guest.trim_end_matches('/');
            let rest = guest.strip_prefix(base)?;
            if !rest.is_empty() && !rest.starts_with('/') {
                return None;
            }
            Some(dir.host.join(rest.trim_start_matches('/')))
        })
    }

    /// Applies the grants to a fresh WASI context.
    pub(crate) fn configure(&self, builder: &mut WasiCtxBuilder) -> Result<()> {
        for (name, value) in &self.env {
            builder.env(name, value);
        }
        for dir in &self.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder.preopened_dir(&dir.host, &dir.guest, perms)?;
        }
        if let Some(cwd) = &self.cwd {
            builder.initial_cwd(cwd);
        }
        if self.inherit_network {
            builder.inherit_network();
        }
        builder.allow_ip_name_lookup(self.allow_ip_name_lookup);
        if let Some(enable) = self.tcp {
            builder.allow_tcp(enable);
        }
        if let Some(enable) = self.udp {
            builder.allow_udp(enable);
        }
        if let Some(max) = self.max_random_size {
            builder.max_random_size(max);
        }
        Ok(())
    }
}

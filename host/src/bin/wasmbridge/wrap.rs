//! `wasmbridge wrap`: make a CGI program a standalone wasi:http component.

use std::path::PathBuf;

use clap::Parser;
use wasmtime::Result;
use wasmtime::error::Context as _;

use wasmbridge::wrap::{WrapConfig, wrap};

use crate::common::{CgiOptions, grant_env, parse_env};

/// Make a CGI program (a WASI preview-1 command) a standalone wasi:http component.
///
/// The program — an interpreter and its script, say — becomes a `wasi:http/proxy` component
/// that any wasi:http host serves: `wasmbridge serve`, Apache's mod_wasm, `wasmtime serve -S
/// cli`. Each request runs the program once, CGI-style. The directories it reads are granted
/// by the host that serves it (`--dir`), under the guest paths given here.
#[derive(Parser)]
pub struct WrapCommand {
    /// An environment variable every request sees (e.g. PYTHONHOME); with no value, the
    /// host's value now. Requests cannot override it.
    #[arg(long = "env", number_of_values = 1, value_name = "NAME[=VAL]", value_parser = parse_env)]
    vars: Vec<(String, Option<String>)>,

    #[command(flatten)]
    cgi_options: CgiOptions,

    /// Where to write the component.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,

    /// The CGI program: a WASI preview-1 command module.
    #[arg(value_name = "WASM")]
    program: PathBuf,

    /// Arguments after the program's name (e.g. the script an interpreter runs).
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

impl WrapCommand {
    pub fn execute(self) -> Result<()> {
        let wasm = std::fs::read(&self.program)
            .with_context(|| format!("cannot read {}", self.program.display()))?;
        let mut env = Vec::new();
        grant_env(&mut env, &self.vars)?;
        let config = WrapConfig {
            program: self.program.file_name().map_or("app.wasm".into(), |name| {
                name.to_string_lossy().into_owned()
            }),
            cgi: self.cgi_options.config(self.args),
            env,
        };
        let component = wrap(&wasm, &config)
            .with_context(|| format!("cannot wrap {}", self.program.display()))?;
        std::fs::write(&self.output, component)
            .with_context(|| format!("cannot write {}", self.output.display()))
    }
}

//! `wasmbridge wizer`: pre-initialize a preview-1 module, as `wasmtime wizer` does.

use std::path::PathBuf;

use clap::Parser;
use wasmtime::Result;
use wasmtime::error::Context as _;

use wasmbridge::preinit::{DEFAULT_INIT_FUNC, preinitialize};
use wasmbridge::sandbox::{Preopen, Sandbox};

use crate::common::{grant_env, parse_dir, parse_env};

/// Run a module's initialization function once and write the module it leaves behind, so that
/// every later start begins initialized (an interpreter with its runtime loaded, say).
#[derive(Parser)]
pub struct WizerCommand {
    /// Grant read access to a host directory while initializing, under the same path or
    /// under GUEST_DIR. Serve the result with the same directories in the same order.
    #[arg(long = "dir", value_name = "HOST_DIR[::GUEST_DIR]", value_parser = parse_dir)]
    dirs: Vec<Preopen>,

    /// Pass an environment variable while initializing; with no value, the host's value.
    #[arg(long = "env", number_of_values = 1, value_name = "NAME[=VAL]", value_parser = parse_env)]
    vars: Vec<(String, Option<String>)>,

    /// The exported function that initializes the module.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_INIT_FUNC)]
    init_func: String,

    /// Where to write the pre-initialized module.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,

    /// The preview-1 module to initialize.
    input: PathBuf,
}

impl WizerCommand {
    pub fn execute(self) -> Result<()> {
        let wasm = std::fs::read(&self.input)
            .with_context(|| format!("cannot read {}", self.input.display()))?;
        let mut env = Vec::new();
        grant_env(&mut env, &self.vars)?;
        let sandbox = Sandbox {
            env,
            // Initialization only reads.
            dirs: self
                .dirs
                .iter()
                .map(|dir| Preopen {
                    writable: false,
                    ..dir.clone()
                })
                .collect(),
            ..Sandbox::default()
        };
        sandbox.validate()?;
        let snapshot = preinitialize(&wasm, &sandbox, &self.init_func)
            .with_context(|| format!("cannot pre-initialize {}", self.input.display()))?;
        std::fs::write(&self.output, snapshot)
            .with_context(|| format!("cannot write {}", self.output.display()))
    }
}

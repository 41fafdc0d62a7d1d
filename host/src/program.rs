//! Turning a `.wasm` file into a compiled component: components as they are, WASI preview-1
//! command modules wrapped with the preview-1 adapter first, so that one execution path
//! serves both.

use wasmtime::component::Component;
use wasmtime::error::Context as _;
use wasmtime::wasmparser::{Parser, Payload};
use wasmtime::{Engine, Result, bail};

use crate::Mode;
use crate::cache::CompileCache;

/// Names the adapter in cache keys: a new adapter means a new wrapped component.
const ADAPTER_ID: &str = concat!("wasi-preview1-command-adapter-", "48.0.8");

pub(crate) fn compile(
    engine: &Engine,
    wasm: &[u8],
    cache: Option<&CompileCache>,
    mode: Mode,
) -> Result<Component> {
    if Parser::is_component(wasm) {
        return match cache {
            Some(cache) => cache.component(engine, &[wasm], || Ok(wasm.to_vec())),
            None => Component::new(engine, wasm),
        };
    }
    if !Parser::is_core_wasm(wasm) {
        bail!("it is not a WebAssembly file");
    }
    if mode == Mode::Http {
        bail!(
            "it is a core WebAssembly module, not a component: a wasi:http app must be a component \
             exporting `wasi:http/incoming-handler` (build it for wasm32-wasip2)"
        );
    }
    if !exports_start(wasm)? {
        bail!(
            "it is a core WebAssembly module without a `_start` export: only WASI preview-1 commands \
             (programs with a main function) can be served, in CGI mode"
        );
    }
    match cache {
        Some(cache) => cache.component(engine, &[wasm, ADAPTER_ID.as_bytes()], || {
            wrap_preview1(wasm)
        }),
        None => Component::new(engine, wrap_preview1(wasm)?),
    }
}

/// Wraps a preview-1 command module into a `wasi:cli/command` component.
pub fn wrap_preview1(module: &[u8]) -> Result<Vec<u8>> {
    let adapter = wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER;
    let fail = |e: anyhow::Error| wasmtime::format_err!("{e:#}");
    let encoded = wit_component::ComponentEncoder::default()
        .module(module)
        .map_err(fail)?
        .adapter("wasi_snapshot_preview1", adapter)
        .map_err(fail)?
        .validate(true)
        .encode()
        .map_err(fail);
    encoded.context("cannot wrap the preview-1 module into a component")
}

fn exports_start(wasm: &[u8]) -> Result<bool> {
    for payload in Parser::new(0).parse_all(wasm) {
        if let Payload::ExportSection(exports) = payload? {
            for export in exports {
                if export?.name == "_start" {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

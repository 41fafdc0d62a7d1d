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
/// (and how the wrapping describes other imports: the worker channel since 2).
const ADAPTER_ID: &str = concat!("wasi-preview1-command-adapter-", "48.0.8", "/2");

pub(crate) fn compile(
    engine: &Engine,
    wasm: &[u8],
    cache: Option<&CompileCache>,
    mode: Mode,
) -> Result<Component> {
    let wrapped = needs_adapter(wasm, mode)?;
    let build = || match wrapped {
        true => wrap_preview1(wasm),
        false => Ok(wasm.to_vec()),
    };
    match cache {
        Some(cache) => cache.component(engine, &cache_key(wasm, wrapped), build),
        None => Component::new(engine, build()?),
    }
}

/// Compiles the program at `path` into `cache` ahead of serving it, so that the processes that
/// serve it later load compiled code. Nothing is loaded here: the process that fills a cache
/// for others never maps code from it.
pub fn precompile(engine: &Engine, path: &std::path::Path, cache: &CompileCache) -> Result<()> {
    let wasm = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let compiled = needs_adapter(&wasm, Mode::Auto).and_then(|wrapped| {
        let build = || match wrapped {
            true => wrap_preview1(&wasm),
            false => Ok(wasm.clone()),
        };
        cache.ensure(engine, &cache_key(&wasm, wrapped), build)
    });
    compiled.with_context(|| format!("cannot compile `{}`", path.display()))
}

/// What a compiled program is made from: the wasm, and the adapter if it wraps one.
fn cache_key(wasm: &[u8], wrapped: bool) -> Vec<&[u8]> {
    match wrapped {
        true => vec![wasm, ADAPTER_ID.as_bytes()],
        false => vec![wasm],
    }
}

/// Whether `wasm` is a preview-1 command that the adapter must wrap (false for a component);
/// an error for anything that cannot be served in `mode`.
fn needs_adapter(wasm: &[u8], mode: Mode) -> Result<bool> {
    if Parser::is_component(wasm) {
        return Ok(false);
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
    Ok(true)
}

/// Wraps a preview-1 command module into a `wasi:cli/command` component. A module that
/// imports the worker channel (`wasmbridge:worker/channel`) gets it as a component import.
pub fn wrap_preview1(module: &[u8]) -> Result<Vec<u8>> {
    let adapter = wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER;
    let fail = |e: anyhow::Error| wasmtime::format_err!("{e:#}");
    let mut module = route_proc_exit(module).map_err(fail)?;
    if crate::cgi::channel::imported_by(&module)? {
        crate::cgi::channel::describe(&mut module)?;
    }
    let encoded = wit_component::ComponentEncoder::default()
        .module(&module)
        .map_err(fail)?
        .adapter("wasi_snapshot_preview1", adapter)
        .map_err(fail)?
        .validate(true)
        .encode()
        .map_err(fail);
    encoded.context("cannot wrap the preview-1 module into a component")
}

/// `wasi:cli/exit` with the call that keeps an exit status (the adapter only reports 0 or 1).
const EXIT_WIT: &str = r#"
package wasi:cli@0.2.12;

@since(version = 0.2.0)
interface exit {
  @since(version = 0.2.0)
  exit: func(status: result);
  @since(version = 0.2.12)
  exit-with-code: func(status-code: u8);
}

world proc-exit {
  import exit;
}
"#;

/// Points the module's `proc_exit` import straight at `wasi:cli/exit.exit-with-code`, so that
/// `exit(3)` is logged as status 3: the preview-1 adapter would turn every failure into 1.
/// Both take one i32 and never return, so only the import's name changes.
fn route_proc_exit(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
    use wasmtime::wasmparser::TypeRef;

    let mut output = wasm_encoder::Module::new();
    let mut routed = false;
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload?;
        match &payload {
            Payload::ImportSection(imports) => {
                let mut section = wasm_encoder::ImportSection::new();
                for import in imports.clone().into_imports() {
                    let import = import?;
                    let ty = RoundtripReencoder.entity_type(import.ty)?;
                    if import.module == "wasi_snapshot_preview1"
                        && import.name == "proc_exit"
                        && matches!(import.ty, TypeRef::Func(_))
                    {
                        section.import("wasi:cli/exit@0.2.12", "exit-with-code", ty);
                        routed = true;
                    } else {
                        section.import(import.module, import.name, ty);
                    }
                }
                output.section(&section);
            }
            _ => {
                if let Some((id, range)) = payload.as_section() {
                    output.section(&wasm_encoder::RawSection {
                        id,
                        data: &module[range],
                    });
                }
            }
        }
    }
    if !routed {
        return Ok(module.to_vec());
    }
    let mut module = output.finish();
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str("proc-exit.wit", EXIT_WIT)?;
    let world = resolve.select_world(&[package], Some("proc-exit"))?;
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )?;
    Ok(module)
}

/// What a `.wasm` file holds, as far as serving it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A component exporting `wasi:http/incoming-handler` (WASI 0.2).
    HttpComponent,
    /// A component exporting `wasi:http/handler` (WASI 0.3), whose instances serve many
    /// requests.
    Http3Component,
    /// A component exporting `wasi:cli/run`: a CGI program.
    CommandComponent,
    /// A WASI preview-1 core module with `_start`: a CGI program.
    Preview1Command,
}

/// Tells what `wasm` is by reading its exports, without compiling it: cheap enough to check a
/// configuration with.
/// Whether a CGI program can serve as a CGI worker: it imports the worker channel
/// (`wasmbridge:worker/channel`), as a core module or as a component.
pub fn serves_workers(wasm: &[u8]) -> Result<bool> {
    if Parser::is_core_wasm(wasm) {
        return crate::cgi::channel::imported_by(wasm);
    }
    let mut depth = 0;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    if import?.name.name == crate::cgi::channel::INTERFACE {
                        return Ok(true);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

pub fn inspect(wasm: &[u8]) -> Result<Kind> {
    if Engine::detect_precompiled(wasm).is_some() {
        bail!("it is precompiled code (`wasmtime compile`), not a WebAssembly file");
    }
    if Parser::is_core_wasm(wasm) {
        if !exports_start(wasm)? {
            bail!(
                "it is a core WebAssembly module without a `_start` export: only WASI preview-1 \
                 commands (programs with a main function) can be served, in CGI mode"
            );
        }
        return Ok(Kind::Preview1Command);
    }
    if !Parser::is_component(wasm) {
        bail!("it is not a WebAssembly file");
    }
    // Only the outermost component's exports count; nested modules and components have
    // their own Version ... End.
    let (mut depth, mut exports) = (0, Vec::new());
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    exports.push(export?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    let exports_any = |prefix: &str| exports.iter().any(|name| name.starts_with(prefix));
    if exports_any("wasi:http/handler@") {
        Ok(Kind::Http3Component)
    } else if exports_any("wasi:http/incoming-handler@") {
        Ok(Kind::HttpComponent)
    } else if exports_any("wasi:cli/run@") {
        Ok(Kind::CommandComponent)
    } else {
        bail!(
            "it is a component that exports none of `wasi:http/handler`, \
             `wasi:http/incoming-handler` and `wasi:cli/run` (it exports {})",
            if exports.is_empty() {
                "nothing".into()
            } else {
                exports.join(", ")
            }
        )
    }
}

pub(crate) fn exports_start(wasm: &[u8]) -> Result<bool> {
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

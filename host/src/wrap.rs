//! `wasmbridge wrap`: a CGI program (a WASI preview-1 command) made into a standalone
//! `wasi:http/proxy` component. wit-component links the program with the CGI adapter
//! (guests/cgi-adapter) in place of `wasi_snapshot_preview1`; the adapter serves each request
//! by running the program once, CGI-style. What the app needs fixed (its arguments, a fixed
//! environment, the docroot rule) is written into the adapter as code, since an adapter may
//! not have data.

use wasm_encoder::{Function, Instruction, MemArg};
use wasmtime::error::Context as _;
use wasmtime::wasmparser::{ExternalKind, Parser, Payload, TypeRef};
use wasmtime::{Result, bail, format_err};

use crate::cgi::CgiConfig;

/// The adapter, built from guests/cgi-adapter by build.rs.
const ADAPTER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cgi_adapter.wasm"));

/// The adapter function whose body `wrap` replaces with the app's configuration.
const CONFIG_FUNCTION: &str = "wasmbridge_cgi_config";

/// What a wrapped app is given at wrap time.
#[derive(Clone, Debug, Default)]
pub struct WrapConfig {
    /// argv\[0\], the program's name.
    pub program: String,
    /// The script rule, as in CGI mode: arguments, docroot, index files, fallback.
    pub cgi: CgiConfig,
    /// Environment variables every request sees; a request cannot override them.
    pub env: Vec<(String, String)>,
}

/// Wraps the preview-1 program `wasm` into a `wasi:http/proxy` component.
pub fn wrap(wasm: &[u8], config: &WrapConfig) -> Result<Vec<u8>> {
    if Parser::is_component(wasm) {
        bail!("it is a component already; `wrap` takes a WASI preview-1 module (a CGI program)");
    }
    if !Parser::is_core_wasm(wasm) {
        bail!("it is not a WebAssembly file");
    }
    check_imports(wasm)?;
    let adapter = configured_adapter(&encode_config(config)?)?;
    let fail = |e: anyhow::Error| format_err!("{e:#}");
    let mut encoder = wit_component::ComponentEncoder::default()
        .module(wasm)
        .map_err(fail)?
        .adapter("wasi_snapshot_preview1", &adapter)
        .map_err(fail)?;
    // A wrapped program runs once per request and never serves as a worker: its worker channel
    // is closed from the start.
    if crate::cgi::channel::imported_by(wasm)? {
        encoder = encoder
            .adapter(crate::cgi::channel::INTERFACE, &closed_channel())
            .map_err(fail)?;
    }
    encoder
        .validate(true)
        .encode()
        .map_err(fail)
        .context("cannot link the program with the CGI adapter")
}

/// An adapter for the worker channel of a program that is not a worker: `read` finds it
/// closed (an empty list), `write` fails.
fn closed_channel() -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, EntityType, ExportKind, ExportSection, FunctionSection, ImportSection,
        MemoryType, Module, TypeSection, ValType,
    };
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32, ValType::I32], []);
    types
        .ty()
        .function([ValType::I32, ValType::I32], [ValType::I32]);
    let mut imports = ImportSection::new();
    let memory = MemoryType {
        minimum: 0,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    };
    imports.import("env", "memory", EntityType::Memory(memory));
    let mut functions = FunctionSection::new();
    functions.function(0).function(1);
    let mut exports = ExportSection::new();
    exports.export("read", ExportKind::Func, 0);
    exports.export("write", ExportKind::Func, 1);
    let mut code = CodeSection::new();
    // read(max, result): the result is an empty list, at address 0 with length 0.
    let mut read = Function::new([]);
    read.instruction(&Instruction::LocalGet(1))
        .instruction(&Instruction::I64Const(0))
        .instruction(&Instruction::I64Store(MemArg {
            offset: 0,
            align: 2,
            memory_index: 0,
        }))
        .instruction(&Instruction::End);
    code.function(&read);
    let mut write = Function::new([]);
    write
        .instruction(&Instruction::I32Const(0))
        .instruction(&Instruction::End);
    code.function(&write);
    let mut module = Module::new();
    module
        .section(&types)
        .section(&imports)
        .section(&functions)
        .section(&exports)
        .section(&code);
    module.finish()
}

/// A program must be a command, and may import only preview-1 functions the adapter has;
/// anything else is named, rather than left to wit-component's terser message.
fn check_imports(wasm: &[u8]) -> Result<()> {
    let adapter_exports = exports(ADAPTER)?;
    let mut missing = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let Payload::ImportSection(imports) = payload? else {
            continue;
        };
        for import in imports.into_imports() {
            let import = import?;
            if !matches!(import.ty, TypeRef::Func(_)) {
                continue;
            }
            if import.module == crate::cgi::channel::INTERFACE {
                continue;
            }
            if import.module != "wasi_snapshot_preview1" {
                bail!(
                    "it imports `{}::{}`: a CGI program may import WASI preview-1 \
                     functions (`wasi_snapshot_preview1`) only",
                    import.module,
                    import.name
                );
            }
            if !adapter_exports.iter().any(|name| name == import.name) {
                missing.push(import.name.to_string());
            }
        }
    }
    if !crate::program::exports_start(wasm)? {
        bail!(
            "it has no `_start` export: only WASI preview-1 commands (programs with a main function) can be wrapped"
        );
    }
    if !missing.is_empty() {
        bail!(
            "it imports WASI preview-1 functions the CGI adapter does not provide: {} \
             (they are not part of wasi_snapshot_preview1; build the program for plain \
             wasm32-wasip1 without those extensions)",
            missing.join(", ")
        );
    }
    Ok(())
}

fn exports(module: &[u8]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::ExportSection(section) = payload? {
            for export in section {
                names.push(export?.name.to_string());
            }
        }
    }
    Ok(names)
}

/// The configuration as the adapter reads it: `key NUL value NUL` pairs.
fn encode_config(config: &WrapConfig) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut put = |key: &str, value: &str| -> Result<()> {
        if value.contains('\0') {
            bail!("`{value}` contains a NUL byte");
        }
        out.extend_from_slice(key.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
        Ok(())
    };
    put("program", &config.program)?;
    for arg in &config.cgi.args {
        put("arg", arg)?;
    }
    for (name, value) in &config.env {
        if name.is_empty() || name.contains('=') {
            bail!("`{name}` is not an environment variable name");
        }
        put("env", &format!("{name}={value}"))?;
    }
    if let Some(docroot) = &config.cgi.docroot {
        put("docroot", docroot)?;
        for index in &config.cgi.index {
            put("index", index)?;
        }
        if let Some(fallback) = &config.cgi.fallback {
            put("fallback", fallback)?;
        }
        let extensions = match config.cgi.extensions.is_empty() {
            true => crate::cgi::default_extensions(&config.program),
            false => config.cgi.extensions.clone(),
        };
        for ext in &extensions {
            put("ext", ext)?;
        }
    }
    Ok(out)
}

/// The adapter with `wasmbridge_cgi_config`'s body replaced by one that writes `config`:
/// `(dst, cap) -> len`, storing 8-byte immediates when `cap` holds them.
fn configured_adapter(config: &[u8]) -> Result<Vec<u8>> {
    let words = config.len().div_ceil(8);
    let mut body = Function::new([]);
    body.instruction(&Instruction::LocalGet(1))
        .instruction(&Instruction::I32Const((words * 8) as i32))
        .instruction(&Instruction::I32GeU)
        .instruction(&Instruction::If(wasm_encoder::BlockType::Empty));
    for (i, chunk) in config.chunks(8).enumerate() {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        body.instruction(&Instruction::LocalGet(0))
            .instruction(&Instruction::I64Const(i64::from_le_bytes(word)))
            .instruction(&Instruction::I64Store(MemArg {
                offset: (i * 8) as u64,
                align: 0,
                memory_index: 0,
            }));
    }
    body.instruction(&Instruction::End)
        .instruction(&Instruction::I32Const(config.len() as i32))
        .instruction(&Instruction::End);

    // The function's index among the module's own functions (after the imported ones).
    let mut imported = 0;
    let mut target = None;
    for payload in Parser::new(0).parse_all(ADAPTER) {
        match payload? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    imported += matches!(import?.ty, TypeRef::Func(_)) as u32;
                }
            }
            Payload::ExportSection(section) => {
                for export in section {
                    let export = export?;
                    if export.name == CONFIG_FUNCTION && export.kind == ExternalKind::Func {
                        target = Some(export.index);
                    }
                }
            }
            _ => {}
        }
    }
    let target = target
        .and_then(|index| index.checked_sub(imported))
        .ok_or_else(|| format_err!("the CGI adapter has no `{CONFIG_FUNCTION}` function"))?;

    let mut module = wasm_encoder::Module::new();
    for payload in Parser::new(0).parse_all(ADAPTER) {
        let payload = payload?;
        match payload {
            Payload::CodeSectionStart { range, .. } => {
                module.section(&code_section(range, target, &body)?);
            }
            Payload::CodeSectionEntry(_) | Payload::End(_) => {}
            _ => {
                if let Some((id, range)) = payload.as_section() {
                    module.section(&wasm_encoder::RawSection {
                        id,
                        data: &ADAPTER[range],
                    });
                }
            }
        }
    }
    Ok(module.finish())
}

/// The adapter's code section with function `target`'s body replaced by `body`.
fn code_section(
    range: std::ops::Range<usize>,
    target: u32,
    body: &Function,
) -> Result<wasm_encoder::CodeSection> {
    use wasmtime::wasmparser::{BinaryReader, CodeSectionReader};
    let reader = CodeSectionReader::new(BinaryReader::new(&ADAPTER[range.clone()], range.start))?;
    let mut section = wasm_encoder::CodeSection::new();
    for (index, function) in reader.into_iter().enumerate() {
        let function = function?;
        if index as u32 == target {
            section.function(body);
        } else {
            section.raw(&ADAPTER[function.range()]);
        }
    }
    Ok(section)
}

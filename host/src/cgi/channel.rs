//! The worker channel (`wasmbridge:worker/channel`, wit/worker/channel.wit): how the host and a
//! CGI worker exchange FastCGI records, out of reach of the program's own stdin and stdout. A
//! script the worker runs can write to stdout (it goes to the log), but cannot forge a record:
//! it has no way to call the channel, whatever its libc can do with file descriptors.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wasmtime::component::Linker;
use wasmtime::wasmparser::{Parser, Payload, TypeRef};
use wasmtime::{Result, format_err};

use super::pipe::{PipeReader, PipeWriter};
use crate::state::RequestState;

/// The interface, as a component imports it and as a core module names its import module.
pub const INTERFACE: &str = "wasmbridge:worker/channel@0.1.0";

const WIT: &str = include_str!("../../../wit/worker/channel.wit");

/// Largest read the host answers at once.
const MAX_READ: usize = 64 * 1024;

/// The host's ends of a worker's channel: the server's records go in, the worker's come out.
pub(crate) struct Channel {
    pub input: PipeReader,
    pub output: PipeWriter,
}

/// Provides the channel to the guests of `linker`; a guest that calls it without being a
/// worker traps.
pub(crate) fn add_to_linker(linker: &mut Linker<RequestState>) -> Result<()> {
    let mut instance = linker.instance(INTERFACE)?;
    instance.func_wrap_async("read", |store, (max,): (u32,)| {
        let input = store.data().channel.as_ref().map(|c| c.input.clone());
        Box::new(async move {
            let mut input = input.ok_or_else(not_a_worker)?;
            let mut buf = vec![0; (max as usize).clamp(1, MAX_READ)];
            let n = input.read(&mut buf).await.unwrap_or(0);
            buf.truncate(n);
            Ok((buf,))
        })
    })?;
    instance.func_wrap_async("write", |store, (data,): (Vec<u8>,)| {
        let output = store.data().channel.as_ref().map(|c| c.output.clone());
        Box::new(async move {
            let mut output = output.ok_or_else(not_a_worker)?;
            Ok((output.write_all(&data).await.is_ok(),))
        })
    })?;
    Ok(())
}

fn not_a_worker() -> wasmtime::Error {
    format_err!("the program called {INTERFACE} but is not serving as a CGI worker")
}

/// Whether a core module imports the channel.
pub(crate) fn imported_by(module: &[u8]) -> Result<bool> {
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::ImportSection(imports) = payload? {
            for import in imports.into_imports() {
                let import = import?;
                if import.module == INTERFACE && matches!(import.ty, TypeRef::Func(_)) {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// Describes a core module's import of the channel in the module itself (a `component-type`
/// section), so that wrapping it makes the import a component import the host provides.
pub(crate) fn describe(module: &mut Vec<u8>) -> Result<()> {
    let fail = |e: anyhow::Error| format_err!("{e:#}");
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve
        .push_str("wit/worker/channel.wit", WIT)
        .map_err(fail)?;
    let world = resolve
        .select_world(&[package], Some("worker"))
        .map_err(fail)?;
    wit_component::embed_component_metadata(
        module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .map_err(fail)
}

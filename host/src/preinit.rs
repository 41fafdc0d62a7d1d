//! Pre-initialization with wizer: run a preview-1 module's initialization function once, at build
//! time, and write out a module whose memory starts where that function left it.
//!
//! An interpreter spends most of a short request starting up (CPython: ~20 ms of a 22 ms hello).
//! A snapshot taken after start-up turns that into copy-on-write pages that every request maps
//! for free. The initialization function may use WASI (read its stdlib, its environment): it
//! runs against the grants given here, which are not part of the snapshot.

use wasmtime::error::Context as _;
use wasmtime::{Engine, Instance, Linker, Module, Result, Store, Val};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wizer::{InstanceState, SnapshotVal, ValType, Wizer};

use crate::sandbox::Sandbox;

/// The export wizer calls unless told otherwise.
pub const DEFAULT_INIT_FUNC: &str = "wizer-initialize";

/// Runs `init_func` of the preview-1 module `wasm` with the grants of `sandbox` (its output goes
/// to this process's stdout and stderr) and returns the pre-initialized module.
pub fn preinitialize(wasm: &[u8], sandbox: &Sandbox, init_func: &str) -> Result<Vec<u8>> {
    let mut wizer = Wizer::new();
    wizer.init_func(init_func);
    let (cx, instrumented) = wizer.instrument(wasm)?;

    let engine = Engine::default();
    let module = Module::new(&engine, &instrumented).context("failed to compile the module")?;
    let mut wasi = WasiCtxBuilder::new();
    sandbox.configure(&mut wasi)?;
    wasi.inherit_stdout().inherit_stderr();
    let mut store = Store::new(&engine, wasi.build_p1());
    let mut linker = Linker::<WasiP1Ctx>::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |wasi| wasi)?;
    // What the server provides later (a CGI worker's channel) is not called while it starts.
    linker.define_unknown_imports_as_traps(&module)?;
    let instance = linker
        .instantiate(&mut store, &module)
        .context("failed to instantiate the module")?;

    // A reactor initializes its runtime in `_initialize`; a command's exports do it themselves.
    if let Some(initialize) = instance.get_func(&mut store, "_initialize") {
        initialize
            .typed::<(), ()>(&store)?
            .call(&mut store, ())
            .context("`_initialize` failed")?;
    }
    instance
        .get_typed_func::<(), ()>(&mut store, init_func)
        .with_context(|| format!("the module has no `{init_func}` export of type `[] -> []`"))?
        .call(&mut store, ())
        .with_context(|| format!("`{init_func}` failed"))?;

    let mut state = Snapshot {
        store: &mut store,
        instance,
    };
    // The state is read synchronously, so the future completes on its first poll.
    futures::executor::block_on(wizer.snapshot(&cx, &mut state))
}

/// What wizer reads from the initialized instance: its globals and memories.
struct Snapshot<'a> {
    store: &'a mut Store<WasiP1Ctx>,
    instance: Instance,
}

impl InstanceState for Snapshot<'_> {
    async fn global_get(&mut self, name: &str, _: ValType) -> SnapshotVal {
        let global = self.instance.get_global(&mut *self.store, name).unwrap();
        match global.get(&mut *self.store) {
            Val::I32(x) => SnapshotVal::I32(x),
            Val::I64(x) => SnapshotVal::I64(x),
            Val::F32(x) => SnapshotVal::F32(x),
            Val::F64(x) => SnapshotVal::F64(x),
            Val::V128(x) => SnapshotVal::V128(x.as_u128()),
            other => panic!("wizer asked for a global of unsupported type {other:?}"),
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        let memory = self.instance.get_memory(&mut *self.store, name).unwrap();
        contents(memory.data(&*self.store))
    }
}

//! A WASI preview-1 implementation that turns a CGI program into a `wasi:http/proxy`
//! component. wit-component links it in place of `wasi_snapshot_preview1`: the component
//! exports `wasi:http/incoming-handler`, and each request runs the program's `_start` once,
//! with the request as RFC 3875 meta-variables, the request body on fd 0 and fd 1 parsed as a
//! CGI response (see `cgi`). Files pass through to `wasi:filesystem` (see `preview1`).
//!
//! An adapter shares the program's memory and may not have data of its own: no `static`s (the
//! state hangs off a wasm global, see build.rs), no data segments (string constants are built
//! on the stack with `lit!`), and what the wrapped app needs fixed (argv, environment, docroot)
//! comes from `wasmbridge_cgi_config`, whose body `wasmbridge wrap` writes.

#![no_std]

extern crate alloc;

#[macro_use]
extern crate wasmbridge_cgi;

use wasmbridge_cgi::text;
mod bindings {
    wit_bindgen_rust_macro::generate!({
        path: "../../wit",
        world: "wasmbridge:host/cgi-adapter",
        // The helpers are function pointers in statics: data, which an adapter may not have.
        disable_custom_section_link_helpers: true,
        runtime_path: "crate::bindings::rt",
        bitflags_path: "bitflags",
        generate_all,
    });

    /// What the generated bindings need of wit-bindgen's runtime crate, which itself keeps a
    /// function pointer in a static (data, which an adapter may not have).
    pub mod rt {
        use core::alloc::Layout;

        /// Memory for arguments lowered into a list, freed when dropped.
        pub struct Cleanup {
            ptr: *mut u8,
            layout: Layout,
        }

        impl Cleanup {
            pub fn new(layout: Layout) -> (*mut u8, Option<Cleanup>) {
                if layout.size() == 0 {
                    return (core::ptr::null_mut(), None);
                }
                let ptr = unsafe { alloc::alloc::alloc(layout) };
                if ptr.is_null() {
                    crate::trap();
                }
                (ptr, Some(Cleanup { ptr, layout }))
            }
        }

        impl Drop for Cleanup {
            fn drop(&mut self) {
                unsafe { alloc::alloc::dealloc(self.ptr, self.layout) };
            }
        }

        /// For the generated export, which the adapter writes out itself (`handle`).
        pub fn run_ctors_once() {}
    }
}
mod alloc_arena;
mod cgi;
mod config;
mod preview1;
mod state;

use bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    trap()
}

/// Stops the instance. (Not `unreachable!()`: its message would need a data segment.)
pub fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[global_allocator]
static ALLOCATOR: alloc_arena::Arena = alloc_arena::Arena;

#[link(wasm_import_module = "__main_module__")]
unsafe extern "C" {
    /// The program's entry point; wasi-libc traps if it is entered twice, so every request
    /// gets a fresh instance.
    fn _start();
}

/// `wasi:http/incoming-handler#handle`, written out rather than generated: the generated
/// export keeps a flag and a function pointer in statics.
#[unsafe(export_name = "wasi:http/incoming-handler@0.2.12#handle")]
pub extern "C" fn handle(request: u32, response_out: u32) {
    let (request, response_out) = unsafe {
        (
            IncomingRequest::from_handle(request),
            ResponseOutparam::from_handle(response_out),
        )
    };
    let state = state::State::get();
    if !state.begin(request, response_out) {
        return; // answered already: no script for this URL
    }
    unsafe { _start() };
    state.finish(0);
}

/// Where the canonical ABI puts lists and strings that imports return to the adapter.
///
/// # Safety
/// Called by the canonical ABI only, with a block it had from here (or null) and its layout.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_import_realloc(
    old: *mut u8,
    old_size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    unsafe { alloc_arena::realloc(old, old_size, align, new_size) }
}

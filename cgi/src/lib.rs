//! The CGI rules (RFC 3875), written once for every server wasmbridge has: the meta-variables a
//! request becomes ([`meta_variables`]) and what a program's output means ([`parse_head`]).
//! `wasmbridge serve` and mod_wasm use it through the host; the CGI adapter, which turns a CGI
//! program into a `wasi:http/proxy` component, links it into the component.
//!
//! The adapter shares the program's memory and may have no data of its own, so nothing here
//! keeps a constant in memory: text is built on the stack with [`lit!`], and `core::fmt` (whose
//! format strings are data) is not used.

#![no_std]
// `b"\n"` would be a constant in memory; an array of bytes is built in place.
#![allow(clippy::byte_char_slices)]

extern crate alloc;

#[macro_use]
pub mod text;
mod meta;
mod response;

pub use meta::{
    Endpoint, Request, Script, decode_path, decode_segment, meta_variables, split_host,
};
pub use response::{Head, MAX_HEADER_BLOCK, Malformed, header_end, parse_head};

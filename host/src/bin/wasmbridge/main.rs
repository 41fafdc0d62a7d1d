//! The `wasmbridge` command line.

use std::process::ExitCode;

use clap::Parser;

// Requests allocate on one thread and free on another; glibc's arenas make that costly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;
mod new;
mod serve;
mod wizer;
mod wrap;

/// A WebAssembly host for web servers: wasi:http components, sandboxed and metered.
#[derive(Parser)]
#[command(name = "wasmbridge", version)]
enum Command {
    New(new::NewCommand),
    Serve(Box<serve::ServeCommand>),
    Wizer(wizer::WizerCommand),
    Wrap(wrap::WrapCommand),
}

fn main() -> ExitCode {
    let result = match Command::parse() {
        Command::New(new) => new.execute(),
        Command::Serve(serve) => serve.execute(),
        Command::Wizer(wizer) => wizer.execute(),
        Command::Wrap(wrap) => wrap.execute(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

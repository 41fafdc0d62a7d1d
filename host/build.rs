//! Builds the CGI adapter (guests/cgi-adapter) for `wasmbridge wrap`, which embeds it. It is
//! a crate of its own, for wasm32-unknown-unknown with its own profile, so it gets a cargo of
//! its own, run from its directory so that its `.cargo/config.toml` applies.
//!
//! `wasmbridge new` embeds guests/templates and wit/deps: rebuild when one of them changes.
//!
//! Both are the command line's (the `cli` feature): the library alone, as mod_wasm links it,
//! builds nothing here.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    if std::env::var_os("CARGO_FEATURE_CLI").is_none() {
        return;
    }
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let adapter = manifest.join("../guests/cgi-adapter");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let target_dir = out.join("cgi-adapter");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&adapter)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's settings are for the host, not for the adapter; nor is a clippy run
    // (CI lints the adapter on its own).
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let outer = ["RUSTFLAGS", "RUSTC_WORKSPACE_WRAPPER", "CLIPPY_ARGS"];
        if name.starts_with("CARGO_") && name != "CARGO_HOME" || outer.contains(&&*name) {
            build.env_remove(&*name);
        }
    }
    let status = build
        .status()
        .expect("cannot run cargo to build the CGI adapter");
    if !status.success() {
        panic!(
            "building the CGI adapter (guests/cgi-adapter) failed; it needs the Rust target \
             wasm32-unknown-unknown (`rustup target add wasm32-unknown-unknown`)"
        );
    }
    let wasm = target_dir.join("wasm32-unknown-unknown/release/wasmbridge_cgi_adapter.wasm");
    std::fs::copy(&wasm, out.join("cgi_adapter.wasm")).unwrap();
    for path in ["src", "Cargo.toml", "Cargo.lock", "build.rs", ".cargo"] {
        println!("cargo:rerun-if-changed={}", adapter.join(path).display());
    }
    // The CGI core the adapter links.
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../cgi/src").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../wit").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../guests/templates").display()
    );
}

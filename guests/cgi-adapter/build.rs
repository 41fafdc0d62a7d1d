//! The adapter keeps its per-instance state behind a mutable wasm global: it has no memory of
//! its own, so a Rust `static` would land inside the program's memory. Stable Rust cannot
//! declare a wasm global, so this writes a relocatable object (`state.o`) that defines one,
//! `state`, with two accessors, `get_state` and `set_state`, and links it in.
//!
//! There is deliberately no `allocation_state` global: with one, wit-component allocates the
//! adapter's stack through the program's `cabi_realloc`, and a command module's exports run its
//! constructors first, which call back into the adapter (wasi-libc reads the environment)
//! before it has a stack. Without it, the stack comes from `memory.grow` at instantiation.

use std::path::PathBuf;

use wasm_encoder::{
    ConstExpr, CustomSection, Encode, FunctionSection, GlobalSection, GlobalType, Instruction,
    Module, RawSection, SectionId, TypeSection, ValType,
};

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("state.o");
    std::fs::write(&out, state_object()).unwrap();
    println!("cargo:rustc-link-arg={}", out.display());
    // The adapter uses the program's memory and gets its stack from wit-component.
    println!("cargo:rustc-link-arg=--import-memory");
    println!("cargo:rustc-link-arg=-zstack-size=0");
    println!("cargo:rerun-if-changed=build.rs");
}

fn state_object() -> Vec<u8> {
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I32]);
    types.ty().function([ValType::I32], []);
    module.section(&types);
    let mut functions = FunctionSection::new();
    functions.function(0);
    functions.function(1);
    module.section(&functions);
    let mut globals = GlobalSection::new();
    let ty = GlobalType {
        val_type: ValType::I32,
        mutable: true,
        shared: false,
    };
    globals.global(ty, &ConstExpr::i32_const(0));
    module.section(&globals);

    // The code section is written by hand, as wasm-encoder's does not tell offsets: the
    // relocations need those of the global indices inside it, padded to five bytes.
    let mut code = Vec::new();
    let mut offsets = Vec::new();
    2u32.encode(&mut code);
    // get_state: global.get; set_state: global.set
    for (opcode, takes_arg) in [(0x23u8, false), (0x24, true)] {
        let mut body = Vec::new();
        0u32.encode(&mut body); // no locals
        if takes_arg {
            Instruction::LocalGet(0).encode(&mut body);
        }
        body.push(opcode);
        let at = body.len();
        body.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x00]); // global 0, padded LEB
        Instruction::End.encode(&mut body);
        body.len().encode(&mut code);
        offsets.push(code.len() + at);
        code.extend_from_slice(&body);
    }
    module.section(&RawSection {
        id: SectionId::Code as u8,
        data: &code,
    });

    let mut symbols = Vec::new();
    3u32.encode(&mut symbols);
    for (index, name) in ["get_state", "set_state"].iter().enumerate() {
        symbols.push(0); // SYMTAB_FUNCTION
        0u32.encode(&mut symbols); // global binding, default visibility
        (index as u32).encode(&mut symbols);
        name.encode(&mut symbols);
    }
    symbols.push(2); // SYMTAB_GLOBAL
    2u32.encode(&mut symbols); // WASM_SYM_BINDING_LOCAL
    0u32.encode(&mut symbols);
    "state".encode(&mut symbols);
    let mut linking = vec![2u8]; // version
    linking.push(8); // WASM_SYMBOL_TABLE
    symbols.encode(&mut linking);
    module.section(&CustomSection {
        name: "linking".into(),
        data: linking.into(),
    });

    let mut reloc = Vec::new();
    3u32.encode(&mut reloc); // the code section's index
    (offsets.len() as u32).encode(&mut reloc);
    for offset in offsets {
        reloc.push(7); // R_WASM_GLOBAL_INDEX_LEB
        (offset as u32).encode(&mut reloc);
        2u32.encode(&mut reloc); // symbol `state`
    }
    module.section(&CustomSection {
        name: "reloc.CODE".into(),
        data: reloc.into(),
    });
    module.finish()
}

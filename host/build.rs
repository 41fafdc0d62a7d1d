// `wasmbridge new` embeds guests/templates: rebuild when a template changes or is added.
fn main() {
    println!("cargo:rerun-if-changed=../guests/templates");
}

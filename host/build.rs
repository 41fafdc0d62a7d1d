// `wasmbridge new` embeds guests/templates and wit/deps: rebuild when one of them changes.
fn main() {
    println!("cargo:rerun-if-changed=../guests/templates");
    println!("cargo:rerun-if-changed=../wit/deps");
}

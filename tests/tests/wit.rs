//! The pinned WIT in wit/ resolves, and its world is the one wasmbridge serves.

use std::path::Path;

#[test]
fn the_pinned_wit_resolves_to_the_http_app_world() {
    let mut resolve = wit_parser::Resolve::default();
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let (package, _) = resolve.push_dir(&wit).expect("wit/ does not parse");
    let world = resolve.select_world(&[package], Some("http-app")).unwrap();
    let world = &resolve.worlds[world];
    let name = |key: &wit_parser::WorldKey| resolve.name_world_key(key);
    let exports: Vec<String> = world.exports.keys().map(name).collect();
    let imports: Vec<String> = world.imports.keys().map(name).collect();
    assert_eq!(exports, ["wasi:http/incoming-handler@0.2.12"]);
    for needed in [
        "wasi:http/outgoing-handler@0.2.12",
        "wasi:cli/environment@0.2.12",
        "wasi:filesystem/preopens@0.2.12",
    ] {
        assert!(
            imports.iter().any(|i| i == needed),
            "{needed} missing from {imports:?}"
        );
    }
}

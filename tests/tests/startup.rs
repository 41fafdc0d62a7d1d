//! What happens before the first request: bad input is refused with a message that names it,
//! and compiled code is cached across restarts but never trusted blindly.

use wasmbridge_tests::{Server, client, guest, start_error};

#[test]
fn a_component_with_nothing_to_serve_is_refused_with_what_it_exports() {
    let log = start_error(&[&guest("library")]);
    assert!(
        log.contains("it exports nothing")
            && log.contains("wasi:http/incoming-handler@0.2")
            && log.contains("wasi:cli/run@0.2"),
        "{log}"
    );
}

#[test]
fn cgi_flags_are_refused_for_a_wasi_http_component() {
    let log = start_error(&["--cgi", &guest("hello_http")]);
    assert!(
        log.contains("not a CGI program") && log.contains("wasi:cli/run@0.2"),
        "{log}"
    );
    let log = start_error(&[&guest("hello_http"), "an-argument"]);
    assert!(
        log.contains("arguments and `--cgi-docroot` are for CGI programs"),
        "{log}"
    );
}

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    let path = wasmbridge_tests::temp_dir("not-wasm").join("not-wasm.wasm");
    std::fs::write(&path, "hello").unwrap();
    let log = start_error(&[path.to_str().unwrap()]);
    assert!(log.contains("is not a WebAssembly file"), "{log}");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn unknown_and_unsupported_options_are_named() {
    assert!(start_error(&["--bogus", &guest("hello_http")]).contains("'--bogus'"));
    assert!(start_error(&["-W", "bogus=1", &guest("hello_http")]).contains("bogus"));
    assert!(start_error(&["-S", "nn", &guest("hello_http")]).contains("`-S nn` is not supported"));
    assert!(start_error(&["-S", "http=n", &guest("hello_http")]).contains("-S http=n"));
    let log = start_error(&["--max-instance-reuse-count", "5", &guest("hello_http")]);
    assert!(log.contains("--max-instance-reuse-count"), "{log}");
}

#[test]
fn a_missing_directory_is_named() {
    let log = start_error(&["--dir", "/no/such/dir::/data", &guest("probe")]);
    assert!(log.contains("/no/such/dir"), "{log}");
}

#[test]
fn without_cli_only_the_proxy_world_is_linked() {
    // Rust's std imports wasi:cli; with `-S cli=n` that is refused, as by `wasmtime serve`.
    let log = start_error(&["-S", "cli=n", &guest("trap")]);
    assert!(
        log.contains("wasi:http/proxy world") && log.contains("wasi:cli/"),
        "{log}"
    );
}

#[tokio::test]
async fn compiled_code_is_cached_and_a_corrupt_entry_is_recompiled() {
    let cache = wasmbridge_tests::temp_dir("cache-test").join("cache");
    let cache_arg = cache.to_str().unwrap();
    let args = ["--cache-dir", cache_arg, &guest("hello_http")];

    let entries = || -> Vec<_> {
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    {
        let server = Server::start(&args);
        assert_eq!(
            client().get(server.url("/")).send().await.unwrap().status(),
            200
        );
    }
    let first = entries();
    assert_eq!(first.len(), 1, "{first:?}");
    let written = std::fs::metadata(&first[0]).unwrap().modified().unwrap();

    // A second start reuses the entry as it is.
    {
        let server = Server::start(&args);
        assert_eq!(
            client().get(server.url("/")).send().await.unwrap().status(),
            200
        );
        assert!(!server.log().contains("recompiling"), "{}", server.log());
    }
    assert_eq!(
        std::fs::metadata(&first[0]).unwrap().modified().unwrap(),
        written
    );

    // A flipped byte in the middle is noticed, and the entry is replaced.
    let mut bytes = std::fs::read(&first[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&first[0], &bytes).unwrap();
    {
        let server = Server::start(&args);
        assert!(server.log().contains("is corrupt"), "{}", server.log());
        let response = client().get(server.url("/")).send().await.unwrap();
        assert_eq!(response.text().await.unwrap(), "Hello from WebAssembly!\n");
    }
    // The replacement is sound: the next start uses it without complaint.
    {
        let server = Server::start(&args);
        assert!(!server.log().contains("recompiling"), "{}", server.log());
    }

    // An option that changes what is compiled, yet not wasmtime's own compatibility hash
    // (whether instances start from a memory image), gets an entry of its own.
    {
        let _server = Server::start(&[
            "-O",
            "memory-guaranteed-dense-image-size=1048576",
            "--cache-dir",
            cache_arg,
            &guest("hello_http"),
        ]);
    }
    assert_eq!(entries().len(), 2, "{:?}", entries());

    // `-C cache=n` neither reads nor writes the cache.
    std::fs::remove_dir_all(&cache).unwrap();
    {
        let server = Server::start(&[
            "-C",
            "cache=n",
            "--cache-dir",
            cache_arg,
            &guest("hello_http"),
        ]);
        assert_eq!(
            client().get(server.url("/")).send().await.unwrap().status(),
            200
        );
    }
    assert!(!cache.exists());
}

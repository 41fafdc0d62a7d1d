//! php-cgi.wasm against Debian's native php-cgi 8.2, which the test runs itself on the same
//! scripts (guests/fixtures/php-extensions): every function of every extension built is there,
//! but for the exceptions guests/php/README.md lists, and the extensions compute what the
//! native ones compute.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use wasmbridge_tests::{Server, get, interpreter_dist, temp_dir, warm_php_snapshot};

/// The extensions the PHP guest is built with (guests/php/README.md).
const EXTENSIONS: &[&str] = &[
    "bcmath",
    "calendar",
    "ctype",
    "date",
    "dom",
    "exif",
    "fileinfo",
    "filter",
    "gd",
    "hash",
    "iconv",
    "intl",
    "json",
    "libxml",
    "mbstring",
    "openssl",
    "pcre",
    "pdo",
    "pdo_sqlite",
    "phar",
    "posix",
    "random",
    "reflection",
    "session",
    "simplexml",
    "sodium",
    "spl",
    "sqlite3",
    "standard",
    "tokenizer",
    "xml",
    "xmlreader",
    "xmlwriter",
    "zend opcache",
    "zlib",
];

/// What Debian's php8.2 defines and php-cgi.wasm does not, each for the reason the README gives.
const EXCEPTIONS: &[&str] = &[
    // libsodium offers AES-256-GCM only on CPUs with AES-NI: never in WebAssembly.
    "sodium sodium_crypto_aead_aes256gcm_decrypt",
    "sodium sodium_crypto_aead_aes256gcm_encrypt",
    "sodium sodium_crypto_aead_aes256gcm_keygen",
    // No libavif (and its AV1 codecs) or libXpm (X11) in the build.
    "gd imageavif",
    "gd imagecreatefromavif",
    "gd imagecreatefromxpm",
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../guests/fixtures/php-extensions")
        .canonicalize()
        .unwrap()
}

/// Where DejaVu Sans is (Debian's fonts-dejavu-core), for gd's FreeType text.
const FONTS: &str = "/usr/share/fonts/truetype/dejavu";

/// Debian's php-cgi running `script` as a CGI request, as Apache's mod_cgi would.
fn native(script: &str) -> String {
    let php = std::env::var_os("WASMBRIDGE_NATIVE_PHP_CGI").unwrap_or("php-cgi8.2".into());
    let output = Command::new(&php)
        .env("REDIRECT_STATUS", "200")
        .env("REQUEST_METHOD", "GET")
        .env("SCRIPT_FILENAME", fixtures().join(script))
        .env("FONTS", FONTS)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; the test command installs Debian's php8.2-cgi",
                php.to_string_lossy()
            )
        });
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{}: {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // The CGI response's body.
    let body = [
        stdout.find("\r\n\r\n").map(|i| i + 4),
        stdout.find("\n\n").map(|i| i + 2),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or_else(|| panic!("no CGI head in {stdout}"));
    stdout[body..].to_string()
}

/// php-cgi.wasm serving `docroot` at /www, with a writable /tmp and the fonts.
fn start(docroot: &Path, mode: &[&str]) -> Server {
    start_module(
        &interpreter_dist("php", "php-cgi.wasm").join("php-cgi.wasm"),
        docroot,
        mode,
    )
}

fn start_module(php: &Path, docroot: &Path, mode: &[&str]) -> Server {
    let tmp = temp_dir("php-extensions-tmp");
    let mut args = vec![
        "--dir".to_string(),
        format!("{}::/www::ro", docroot.display()),
        "--dir".into(),
        format!("{}::/tmp", tmp.display()),
        "--dir".into(),
        format!("{FONTS}::/fonts::ro"),
        "--env".into(),
        "FONTS=/fonts".into(),
        "--cgi-docroot".into(),
        "/www".into(),
    ];
    args.extend(mode.iter().map(|s| s.to_string()));
    args.push(php.display().to_string());
    Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `extension function` lines, for the extensions in `only`.
fn functions(listing: &str, only: &BTreeSet<&str>) -> BTreeSet<String> {
    listing
        .lines()
        // (An extension's name may have a space: "zend opcache".)
        .filter(|line| only.contains(line.rsplit_once(' ').unwrap().0))
        .map(str::to_string)
        .collect()
}

fn extensions(listing: &str) -> BTreeSet<&str> {
    listing
        .lines()
        .filter_map(|line| line.strip_suffix(" -"))
        .collect()
}

#[tokio::test]
async fn every_function_of_debians_php_is_defined_but_the_documented_exceptions() {
    let native_listing = native("functions.php");
    let server = start(&fixtures(), &[]);
    let (status, wasm_listing) = get(server.url("/functions.php")).await;
    assert_eq!(status, 200, "{}", server.log());

    let built = extensions(&wasm_listing);
    let expected: BTreeSet<&str> = EXTENSIONS.iter().copied().collect();
    let missing: Vec<_> = expected.difference(&built).collect();
    assert!(missing.is_empty(), "extensions not built: {missing:?}");
    let native_extensions = extensions(&native_listing);
    let not_native: Vec<_> = built.difference(&native_extensions).collect();
    assert!(
        not_native.is_empty(),
        "Debian's php-cgi lacks {not_native:?} to compare with: the test command installs its extension packages"
    );

    let native_functions = functions(&native_listing, &built);
    let wasm_functions = functions(&wasm_listing, &built);
    let undefined: BTreeSet<&str> = native_functions
        .difference(&wasm_functions)
        .map(String::as_str)
        .collect();
    let allowed: BTreeSet<&str> = EXCEPTIONS.iter().copied().collect();
    let unexplained: Vec<_> = undefined.difference(&allowed).collect();
    assert!(
        unexplained.is_empty(),
        "undefined in php-cgi.wasm, defined in Debian's php-cgi: {unexplained:?}"
    );
    // An exception that went away leaves the list (and the README).
    let stale: Vec<_> = allowed.difference(&undefined).collect();
    assert!(
        stale.is_empty(),
        "no longer missing, still excepted: {stale:?}"
    );
}

#[tokio::test]
async fn each_extension_computes_what_debians_computes() {
    let expected = native("work.php");
    assert!(expected.ends_with("done\n"), "{expected}");
    for mode in [&[][..], &["--cgi-workers", "1"]] {
        let server = start(&fixtures(), mode);
        // Twice: a worker's second request must not differ from its first.
        for _ in 0..2 {
            let (status, page) = get(server.url("/work.php")).await;
            assert_eq!(status, 200, "{}", server.log());
            assert_eq!(page, expected, "{mode:?}");
        }
    }
}

/// OPcache, linked in: a worker compiles a script once and takes it from the cache after, and
/// sees the file change (timestamps checked every 2 s, as Debian's php.ini has it); a fresh
/// instance, which serves one request, has it off.
#[tokio::test]
async fn a_worker_keeps_compiled_scripts_in_opcache_and_sees_them_change() {
    let www = temp_dir("opcache-www");
    let page = www.join("page.php");
    // OPcache leaves alone a file changed in the last 2 s (opcache.file_update_protection).
    let write = |version: u32| {
        write_script(
            &page,
            version,
            &format!(
                "<?php\nheader('Content-Type: text/plain');\n$status = opcache_get_status(false);\n\
                 echo 'version {version}, opcache ', $status['opcache_enabled'] ? 'on, hits ' . $status['opcache_statistics']['hits'] : 'off', \"\\n\";\n"
            ),
        )
    };
    write(1);

    let fresh = start(&www, &[]);
    assert_eq!(
        get(fresh.url("/page.php")).await,
        (200, "version 1, opcache off\n".into()),
        "{}",
        fresh.log()
    );

    let worker = start(&www, &["--cgi-workers", "1"]);
    let url = worker.url("/page.php");
    assert_eq!(
        get(url.clone()).await,
        (200, "version 1, opcache on, hits 0\n".into())
    );
    assert_eq!(
        get(url.clone()).await,
        (200, "version 1, opcache on, hits 1\n".into())
    );
    write(2);
    // Checked once the 2 s since the last check have passed, counted in whole seconds.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (status, text) = get(url.clone()).await;
    assert_eq!(status, 200);
    assert!(text.starts_with("version 2, opcache on"), "{text}");
}

/// Writes a script as at `version` seconds past a minute ago: OPcache leaves alone a file
/// changed in the last 2 s (opcache.file_update_protection), and each version has a
/// timestamp of its own.
fn write_script(path: &Path, version: u32, text: &str) {
    std::fs::write(path, text).unwrap();
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60 - version as u64);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(past)
        .unwrap();
}

/// `wasmbridge wizer --init-func wasmbridge-warm`: a snapshot of php-cgi.wasm with an app's
/// scripts compiled into OPcache, so that every fresh instance starts with them compiled (and
/// nothing else crosses requests); a script changed since is compiled anew.
#[tokio::test]
async fn a_warmed_snapshot_starts_each_fresh_instance_with_the_app_compiled() {
    let www = temp_dir("warm-www");
    let lib = www.join("lib.php");
    write_script(&lib, 1, "<?php\nfunction lib_version() { return 1; }\n");
    write_script(
        &www.join("page.php"),
        1,
        "<?php\nheader('Content-Type: text/plain');\n\
         echo 'lib cached: ', opcache_is_script_cached('/www/lib.php') ? 'yes' : 'no', \"\\n\";\n\
         require '/www/lib.php';\n\
         echo 'lib version ', lib_version(), ', hits ', opcache_get_status(false)['opcache_statistics']['hits'], \"\\n\";\n",
    );
    // "php" in the name: `--cgi-docroot` runs the scripts of the interpreter its name says.
    let warm = temp_dir("warm-snapshot").join("app-php.wasm");
    let stderr = warm_php_snapshot(
        &format!("{}::/www::ro", www.display()),
        "/www:/nowhere.php",
        &warm,
    );
    assert!(
        stderr.contains("wasmbridge-warm: 2 scripts compiled into OPcache")
            && stderr.contains("not compiled: /nowhere.php (No such file or directory)"),
        "{stderr}"
    );

    // Each request is a fresh instance of the snapshot: both find lib.php compiled, and
    // neither sees the other's hits.
    let server = start_module(&warm, &www, &[]);
    for _ in 0..2 {
        assert_eq!(
            get(server.url("/page.php")).await,
            (200, "lib cached: yes\nlib version 1, hits 2\n".into()),
            "{}",
            server.log()
        );
    }
    write_script(&lib, 2, "<?php\nfunction lib_version() { return 2; }\n");
    let (status, text) = get(server.url("/page.php")).await;
    assert_eq!(status, 200, "{}", server.log());
    assert!(text.ends_with("lib version 2, hits 1\n"), "{text}");
}

//! The PHP guest (guests/php: php-cgi 8.2 built from Debian's source) serving a docroot of
//! scripts (guests/fixtures/php) through `wasmbridge serve`.

use std::path::{Path, PathBuf};

use futures::StreamExt as _;

use wasmbridge_tests::{
    Server, check_php_session, check_php_upload, client, get, no_redirect_client, post_form,
    temp_dir,
};

fn dist() -> PathBuf {
    let dist = std::env::var_os("WASMBRIDGE_PHP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guests/php/dist"));
    assert!(
        dist.join("php-cgi.wasm").exists(),
        "{} has no php-cgi.wasm; run the README's test command",
        dist.display()
    );
    dist
}

/// Serves the fixture docroot the way guests/php/README.md says: the docroot read-only, /tmp
/// (uploads, sessions) and /data (SQLite) writable.
fn start_with(data: &Path, mode: &[&str], extra: &[&str]) -> Server {
    let dist = dist();
    let docroot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guests/fixtures/php");
    let mut args = vec![
        "-W".to_string(),
        "timeout=3s".into(),
        "--dir".into(),
        format!("{}::/www::ro", docroot.display()),
        "--dir".into(),
        format!("{}::/tmp", temp_dir("tmp").display()),
        "--dir".into(),
        format!("{}::/data", data.display()),
        "--cgi-docroot".into(),
        "/www".into(),
    ];
    args.extend(mode.iter().chain(extra).map(|s| s.to_string()));
    args.push(dist.join("php-cgi.wasm").display().to_string());
    Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn start(mode: &[&str]) -> Server {
    start_with(&temp_dir("data"), mode, &[])
}

/// Every test runs in both of CGI mode's ways: a fresh instance per request, and long-lived
/// workers that take request after request over FastCGI.
const MODES: [&[&str]; 2] = [&[], &["--cgi-workers", "2"]];

#[tokio::test]
async fn phpinfo_lists_the_extensions() {
    for mode in MODES {
        let server = start(mode);
        let (status, page) = get(server.url("/info.php")).await;
        assert_eq!(status, 200, "{}", server.log());
        assert!(page.contains("PHP Version 8.2"), "{page}");
        for extension in [
            "ctype",
            "tokenizer",
            "filter",
            "session",
            "mbstring",
            "json",
            "bcmath",
            "fileinfo",
            "pdo_sqlite",
            "sqlite3",
        ] {
            assert!(
                page.contains(&format!("<h2><a name=\"module_{extension}\"")),
                "{extension} missing"
            );
        }
    }
}

#[tokio::test]
async fn urls_map_to_scripts_directories_to_their_index_and_the_rest_is_path_info() {
    for mode in MODES {
        let server = start(mode);
        assert_eq!(
            get(server.url("/")).await,
            (200, "index of /index.php\nuri: /\n".into())
        );
        assert_eq!(
            get(server.url("/sub/")).await,
            (200, "sub index: /sub/index.php\n".into())
        );
        let (status, page) = get(server.url("/path.php/extra/x?q=1")).await;
        assert_eq!(status, 200, "{}", server.log());
        assert!(
        page.contains("SCRIPT_NAME=/path.php\nSCRIPT_FILENAME=/www/path.php\nPATH_INFO=/extra/x\nREQUEST_URI=/path.php/extra/x?q=1\nQUERY_STRING=q=1\nDOCUMENT_ROOT=/www\n"),
        "{page}"
    );
        // RFC 3875: PATH_INFO is decoded (REQUEST_URI is not), as every front end passes it.
        let (_, page) = get(server.url("/path.php/J%C3%BCrgen?q=1")).await;
        assert!(
            page.contains("PATH_INFO=/Jürgen\nREQUEST_URI=/path.php/J%C3%BCrgen?q=1\n"),
            "{page}"
        );
        assert_eq!(get(server.url("/articles/42")).await.0, 404);
    }
}

#[tokio::test]
async fn a_front_controller_gets_every_url_that_names_no_script() {
    for mode in MODES {
        let server = start_with(&temp_dir("data"), mode, &["--cgi-fallback", "/index.php"]);
        assert_eq!(
            get(server.url("/articles/42?x=1")).await,
            (200, "index of /index.php\nuri: /articles/42?x=1\n".into())
        );
        // Scripts that exist are still served themselves.
        assert!(
            get(server.url("/path.php"))
                .await
                .1
                .contains("SCRIPT_NAME=/path.php\n")
        );
    }
}

#[tokio::test]
async fn get_and_post_forms_reach_the_extensions() {
    for mode in MODES {
        let server = start(mode);
        let (status, page) =
            get(server.url("/form.php?n=123&email=a%40example.org&name=h%C3%A9llo")).await;
        assert_eq!(status, 200, "{}", server.log());
        assert_eq!(
            page,
            "method: GET\nget n: 123\nget email: a@example.org\nget name: héllo\nctype: digits\n\
         filter: 'a@example.org'\nmb: HÉLLO (5)\nbc: 12345678901234567891\n\
         json: {\"ok\":true,\"tokens\":5}\n"
        );
        let (status, page) = post_form(server.url("/form.php"), "n=x1&email=nope&name=wasm").await;
        assert_eq!(status, 200);
        assert!(
        page.starts_with("method: POST\npost n: x1\npost email: nope\npost name: wasm\nctype: other\nfilter: false\nmb: WASM (4)\n"),
        "{page}"
    );
    }
}

#[tokio::test]
async fn a_multipart_upload_lands_in_the_writable_tmp() {
    for mode in MODES {
        let server = start(mode);
        check_php_upload(&server.url(""), || server.log()).await;
    }
}

#[tokio::test]
async fn a_session_survives_across_requests() {
    for mode in MODES {
        let server = start(mode);
        check_php_session(&server.url(""), || server.log()).await;
    }
}

#[tokio::test]
async fn a_sqlite_app_creates_reads_updates_and_deletes_rows_that_persist() {
    for mode in MODES {
        let data = temp_dir("data");
        {
            let server = start_with(&data, mode, &[]);
            for (text, id) in [("first", 1), ("second", 2)] {
                let url = server.url("/notes.php?action=create");
                let (status, body) = post_form(url, &format!("text={text}")).await;
                assert_eq!(status, 200, "{}", server.log());
                assert_eq!(body, format!("{{\"id\":{id}}}"));
            }
            let url = server.url("/notes.php?action=update&id=2");
            let updated = post_form(url, "text=changed").await;
            assert_eq!(updated, (200, "{\"updated\":1}".into()));
            let deleted = get(server.url("/notes.php?action=delete&id=1")).await;
            assert_eq!(deleted, (200, "{\"deleted\":1}".into()));
        }
        // A new server over the same directory finds the rows.
        let server = start_with(&data, mode, &[]);
        let (status, page) = get(server.url("/notes.php")).await;
        assert_eq!(status, 200, "{}", server.log());
        assert!(
            page.starts_with(
                "{\"notes\":[{\"id\":2,\"text\":\"changed\"}],\"count\":1,\"sqlite\":\"3."
            ),
            "{page}"
        );
        assert!(data.join("notes.db").exists());
    }
}

#[tokio::test]
async fn header_and_cookies_reach_the_client() {
    for mode in MODES {
        let server = start(mode);
        let response = client()
            .get(server.url("/headers.php"))
            .header("cookie", "flavour=ginger")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", server.log());
        assert_eq!(response.headers()["x-powered-by-guest"], "php-cgi.wasm");
        let cookie = response.headers()["set-cookie"].to_str().unwrap();
        assert!(
            cookie.starts_with("flavour=oatmeal; path=/; HttpOnly"),
            "{cookie}"
        );
        assert_eq!(response.text().await.unwrap(), "cookie: ginger\n");

        let moved = no_redirect_client()
            .get(server.url("/redirect.php"))
            .send()
            .await
            .unwrap();
        assert_eq!(moved.status(), 302);
        assert_eq!(moved.headers()["location"], "/index.php");
    }
}

#[tokio::test]
async fn a_fatal_error_is_a_500_with_the_message_in_the_log() {
    for mode in MODES {
        let server = start(mode);
        let (status, page) = get(server.url("/fatal.php")).await;
        assert_eq!(status, 500, "{}", server.log());
        assert!(!page.contains("undefined_function"), "{page}");
        assert!(
            server.wait_for_log(
                "Call to undefined function undefined_function_for_the_test()",
                std::time::Duration::from_secs(5)
            ),
            "{}",
            server.log()
        );
        // Past memory_limit: PHP's own error, not a crash.
        let (status, _) = get(server.url("/memory.php")).await;
        assert_eq!(status, 500, "{}", server.log());
        assert!(
            server.wait_for_log(
                "Allowed memory size of 33554432 bytes exhausted",
                std::time::Duration::from_secs(5)
            ),
            "{}",
            server.log()
        );
        assert_eq!(get(server.url("/")).await.0, 200);
    }
}

/// A missing include, a function that is not built (pcntl: no processes), an upload over
/// `upload_max_filesize`: PHP's own error, nothing of it in the page, and the next request is
/// served.
#[tokio::test]
async fn bad_scripts_and_uploads_get_phps_own_errors() {
    for mode in MODES {
        let server = start(mode);
        for (script, message) in [
            (
                "/include.php",
                "Failed opening required '/www/no/such/file.php'",
            ),
            ("/fork.php", "Call to undefined function pcntl_fork()"),
        ] {
            let (status, page) = get(server.url(script)).await;
            assert_eq!(status, 500, "{script}: {}", server.log());
            // What the script printed before is PHP's to send; the error is not in it.
            assert!(!page.contains("/www") && !page.contains("pcntl"), "{page}");
            assert!(
                server.wait_for_log(message, std::time::Duration::from_secs(5)),
                "{}",
                server.log()
            );
        }
        // 33 MB: over upload_max_filesize (32M), under post_max_size (40M).
        let data = vec![b'x'; 33 << 20];
        let (status, text) = wasmbridge_tests::post_multipart(
            server.url("/upload.php"),
            ("title", "big"),
            ("file", "big.bin", &data),
        )
        .await;
        assert_eq!(
            (status, text.as_str()),
            (400, "no upload (error 1)\n"),
            "{}",
            server.log()
        );
        assert_eq!(get(server.url("/")).await.0, 200);
    }
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_the_deadline() {
    for mode in MODES {
        let server = start(mode);
        let (status, _) = get(server.url("/loop.php")).await;
        assert_eq!(status, 504, "{}", server.log());
        // The line is written as the request ends, which may be just after the answer.
        assert!(
            server.wait_for_log("(504)", std::time::Duration::from_secs(5)),
            "{}",
            server.log()
        );
        assert_eq!(get(server.url("/")).await.0, 200);
    }
}

#[tokio::test]
async fn files_outside_the_grants_cannot_be_read_or_written() {
    for mode in MODES {
        let server = start(mode);
        for file in [
            "/etc/passwd",
            "/etc/apache2/apache2.conf",
            "../../../../etc/passwd",
            "/www/../../etc/passwd",
        ] {
            let (status, page) = get(server.url(&format!("/read.php?file={file}"))).await;
            assert_eq!(status, 404, "{file}: {page}");
            assert!(page.starts_with("cannot read: "), "{page}");
            assert!(!page.contains("root:"), "{page}");
        }
        // Inside the docroot it can.
        let (status, page) = get(server.url("/read.php?file=/www/index.php")).await;
        assert_eq!(status, 200);
        assert!(page.starts_with("<?php"), "{page}");
        // The read-only docroot cannot be changed by a script; the writable /tmp can.
        let (status, page) = get(server.url("/write.php?file=/www/index.php")).await;
        assert_eq!(status, 403, "{page}");
        assert!(
            get(server.url("/index.php"))
                .await
                .1
                .starts_with("index of")
        );
        assert_eq!(
            get(server.url("/write.php?file=/tmp/note.txt")).await,
            (200, "written\n".into())
        );
    }
}

#[tokio::test]
async fn what_wasi_cannot_do_fails_with_a_message() {
    for mode in MODES {
        let server = start(mode);
        let (status, page) = get(server.url("/unsupported.php")).await;
        assert_eq!(status, 200, "{}", server.log());
        assert!(
            page.contains("fiber: Exception: Fibers are not available in WebAssembly"),
            "{page}"
        );
        assert!(
            page.contains("warning: exec(): Unable to fork [ls]\nfalse\n"),
            "{page}"
        );
        assert!(
            page.contains("proc_open: warning: proc_open(): Unable to create pipe Function not implemented\nfalse\n"),
            "{page}"
        );
        assert!(
            page.contains("popen: warning: popen(ls,r): Function not implemented\nfalse\n"),
            "{page}"
        );
        assert!(page.contains("fsockopen: false"), "{page}");
    }
}

/// One worker serves every request below, or its replacement: nothing of a request reaches
/// the next, a failed or stopped request takes its worker with it, and a body whose length
/// PHP cannot know does not put the next request out of step.
#[tokio::test]
async fn a_worker_keeps_requests_apart_and_is_replaced_when_one_fails() {
    let server = start(&["--cgi-workers", "1"]);
    let (status, page) = get(server.url("/form.php?n=98765&name=first")).await;
    assert_eq!(status, 200, "{}", server.log());
    assert!(page.contains("get n: 98765\n"), "{page}");
    let (_, page) = get(server.url("/form.php?name=second")).await;
    assert!(!page.contains("98765"), "{page}");
    let (status, _) = get(server.url("/session.php")).await;
    assert_eq!(status, 200);

    assert_eq!(get(server.url("/fatal.php")).await.0, 500);
    assert_eq!(get(server.url("/loop.php")).await.0, 504);
    assert!(
        server.wait_for_log("(504)", std::time::Duration::from_secs(5)),
        "{}",
        server.log()
    );
    assert_eq!(get(server.url("/form.php?n=7")).await.0, 200);

    // A chunked body, with no CONTENT_LENGTH for PHP: it reads none of it, and the worker
    // that may still hold it is not used again.
    // (Small enough to be sent whole: a server may close the connection after answering
    // without reading a large body, which the client sees as a broken pipe.)
    let chunks = futures::stream::iter(0..4)
        .map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 4 * 1024])));
    let response = client()
        .post(server.url("/form.php"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", server.log());
    assert!(response.text().await.unwrap().starts_with("method: POST\n"));
    let (status, page) = post_form(server.url("/form.php"), "n=42").await;
    assert_eq!(status, 200, "{}", server.log());
    assert!(page.contains("post n: 42\n"), "{page}");

    // Forty requests at once wait their turn for the one worker.
    let pages =
        futures::future::join_all((0..40).map(|i| get(server.url(&format!("/form.php?n={i}")))))
            .await;
    for (i, (status, page)) in pages.into_iter().enumerate() {
        assert_eq!(status, 200, "{}", server.log());
        assert!(page.contains(&format!("get n: {i}\n")), "{page}");
    }
}

/// A program that does not speak FastCGI cannot be a worker: each request says why, and the
/// server goes on.
#[tokio::test]
async fn a_program_that_is_no_fastcgi_worker_is_refused_at_start() {
    let hello = wasmbridge_tests::guest_p1("cgi-hello");
    let (_, log) = Server::try_start(&["--cgi-workers", "1", &hello], &[])
        .err()
        .unwrap();
    assert!(
        log.contains("CGI workers take their requests over `wasmbridge:worker/channel@0.1.0`"),
        "{log}"
    );
    // Workers are for CGI programs, without a fuel budget shared by their requests.
    let component = wasmbridge_tests::guest("hello_http");
    let (_, log) = Server::try_start(&["--cgi-workers", "2", &component], &[])
        .err()
        .unwrap();
    assert!(log.contains("CGI workers are for CGI programs"), "{log}");
    let php = dist().join("php-cgi.wasm").display().to_string();
    let (_, log) = Server::try_start(&["--cgi-workers", "2", "-W", "fuel=1000000", &php], &[])
        .err()
        .unwrap();
    assert!(log.contains("fuel budget"), "{log}");
}

/// The same docroot through Apache: Apache finds the script (DirectoryIndex, PATH_INFO) and
/// mod_wasm maps its SCRIPT_FILENAME into the guest.
#[tokio::test]
async fn apache_serves_the_php_docroot_through_mod_wasm() {
    // Fresh instances, then four workers per child (the Apache side of --cgi-workers).
    for workers in ["", "WasmCGIWorkers 4"] {
        use wasmbridge_tests::apache::{Apache, fixtures};
        let writable = |name: &str| {
            let dir = temp_dir(name);
            std::process::Command::new("chmod")
                .arg("777")
                .arg(&dir)
                .status()
                .unwrap();
            dir
        };
        let (tmp, data) = (writable("apache-tmp"), writable("apache-data"));
        let apache = Apache::start(
            "event",
            &format!(
                "LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so\n\
             LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so\n\
             Alias /php {{fixtures}}/www/php\n\
             <Directory {{fixtures}}/www/php>\n\
             DirectoryIndex index.php\n\
             <FilesMatch \"\\.php$\">\n SetHandler wasm-handler\n</FilesMatch>\n\
             WasmModule {{fixtures}}/php/php-cgi.wasm\n\
             WasmMapDir /www {{fixtures}}/www/php ro\n\
             WasmMapDir /tmp {}\n\
             WasmMapDir /data {}\n\
             WasmEnableCGI On\n\
             WasmMapCGIFileNames On\n\
             WasmTimeout 3\n\
             {workers}\n\
             </Directory>",
                tmp.display(),
                data.display()
            ),
        );
        let get = |path: &str| get(apache.url(path));
        assert_eq!(
            get("/php/").await,
            (200, "index of /php/index.php\nuri: /php/\n".into()),
            "{}",
            apache.error_log()
        );
        let (_, page) = get("/php/path.php/J%C3%BCrgen").await;
        assert!(page.contains("PATH_INFO=/Jürgen\n"), "{page}");
        let (status, page) = get("/php/path.php/extra?q=1").await;
        assert_eq!(status, 200);
        assert!(
            page.contains(
                "SCRIPT_NAME=/php/path.php\nSCRIPT_FILENAME=/www/path.php\nPATH_INFO=/extra\n"
            ),
            "{page}"
        );
        // Apache's CGI variables, without the server's own PATH.
        assert!(page.ends_with("\nPATH=\n"), "{page}");
        let created = post_form(
            apache.url("/php/notes.php?action=create"),
            "text=from+apache",
        )
        .await;
        assert_eq!(created, (200, "{\"id\":1}".into()));
        assert!(
            get("/php/notes.php")
                .await
                .1
                .contains("\"text\":\"from apache\"")
        );
        let (status, page) = get("/php/read.php?file=/etc/apache2/apache2.conf").await;
        assert_eq!(status, 404, "{page}");
        let fixtures_conf = format!("{}/../httpd.conf", fixtures().display());
        assert_eq!(
            get(&format!("/php/read.php?file={fixtures_conf}")).await.0,
            404
        );
        // The docroot is mapped read-only: a script cannot change it.
        assert_eq!(get("/php/write.php?file=/www/index.php").await.0, 403);
        let (status, _) = get("/php/fatal.php").await;
        assert_eq!(status, 500);
        assert!(
            apache.wait_for_log(
                "Call to undefined function",
                std::time::Duration::from_secs(5)
            ),
            "{}",
            apache.error_log()
        );
        assert_eq!(get("/php/loop.php").await.0, 504);
        assert_eq!(get("/php/").await.0, 200);
    }
}

/// Workers under Apache's MPMs: a burst of requests through a child's workers (mpm_event,
/// threads sharing them) and through one-thread children (mpm_prefork, one worker each).
#[tokio::test]
async fn apache_workers_take_a_burst_under_mpm_event_and_mpm_prefork() {
    use wasmbridge_tests::apache::Apache;
    for mpm in ["event", "prefork"] {
        let apache = Apache::start(
            mpm,
            "LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so\n\
             Alias /php {fixtures}/www/php\n\
             <Directory {fixtures}/www/php>\n\
             SetHandler wasm-handler\n\
             WasmModule {fixtures}/php/php-cgi.wasm\n\
             WasmMapDir /www {fixtures}/www/php ro\n\
             WasmEnableCGI On\n\
             WasmMapCGIFileNames On\n\
             WasmCGIWorkers 4\n\
             </Directory>",
        );
        let client = client();
        let pages = futures::future::join_all((0..200).map(|i| {
            let request = client.get(apache.url(&format!("/php/form.php?n={i}")));
            async move {
                let response = request.send().await?;
                Ok::<_, reqwest::Error>((response.status(), response.text().await?))
            }
        }))
        .await;
        for (i, page) in pages.into_iter().enumerate() {
            let (status, page) =
                page.unwrap_or_else(|e| panic!("{mpm}: {e:?}\n{}", apache.error_log()));
            assert_eq!(status, 200, "{mpm}: {page}\n{}", apache.error_log());
            assert!(page.contains(&format!("get n: {i}\n")), "{mpm}: {page}");
        }
    }
}

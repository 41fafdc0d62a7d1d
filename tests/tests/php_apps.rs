//! Real PHP applications from Debian's archive, unchanged, on php-cgi.wasm: DokuWiki,
//! MediaWiki, phpLiteAdmin and a Slim 3 app on Debian's php-slim. The test command unpacks the
//! packages into one tree laid out as Debian installs them (`WASMBRIDGE_PHP_APPS`); each test
//! copies what its app needs and grants it at the paths Debian uses, so the app finds its code,
//! its configuration and its libraries where it expects them. Each app gets its own writable
//! state and nothing else writable. Every app runs through `wasmbridge serve --cgi-docroot` and
//! through Apache with mod_wasm, each with a fresh instance per request and with CGI workers.
use std::path::{Path, PathBuf};
use std::process::Command;

use wasmbridge_tests::apache::Apache;
use wasmbridge_tests::{Server, interpreter_dist, readable, temp_dir, warm_php_snapshot};

/// The unpacked packages.
fn debian() -> PathBuf {
    let root = std::env::var_os("WASMBRIDGE_PHP_APPS")
        .map(PathBuf::from)
        .expect("WASMBRIDGE_PHP_APPS is not set: run the README's test command");
    assert!(root.is_dir(), "{} is missing", root.display());
    root
}

/// A host directory the app sees at `guest`, read-only or writable.
struct Grant {
    guest: &'static str,
    host: PathBuf,
    writable: bool,
}

impl Grant {
    fn ro(guest: &'static str, host: PathBuf) -> Grant {
        Grant {
            guest,
            host,
            writable: false,
        }
    }

    fn rw(guest: &'static str, host: PathBuf) -> Grant {
        Grant {
            guest,
            host,
            writable: true,
        }
    }
}

/// Copies `paths` (e.g. `usr/share/dokuwiki`) of the Debian tree into a new directory of the
/// same layout, links resolved: a guest cannot follow a link out of a granted directory.
fn install(name: &str, paths: &[&str]) -> PathBuf {
    let dir = temp_dir(name);
    for path in paths {
        let to = dir.join(path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let status = Command::new("cp")
            .arg("-rL")
            .arg(debian().join(path))
            .arg(&to)
            .status()
            .unwrap();
        assert!(status.success(), "cp -rL {path}");
    }
    readable(&dir);
    dir
}

/// A new empty directory the app may write (Apache's children run as www-data).
fn state(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    Command::new("chmod").arg("777").arg(&dir).status().unwrap();
    readable(&dir);
    dir
}

/// Makes a copied directory the app's writable state.
fn writable(dir: &Path) {
    Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(dir)
        .status()
        .unwrap();
}

/// One of the four ways an app is served.
#[derive(Clone, Copy, Debug)]
enum Front {
    Serve { workers: bool },
    Apache { workers: bool },
}

const FRONTS: [Front; 4] = [
    Front::Serve { workers: false },
    Front::Serve { workers: true },
    Front::Apache { workers: false },
    Front::Apache { workers: true },
];

enum Site {
    Serve(Server),
    Apache(Apache),
}

/// The deadline for one request. MediaWiki's installer creating its database is the slowest
/// page here: half a minute in a fresh instance.
const DEADLINE_SECS: u32 = 120;

/// Where Apache serves the app: under a path of its own, as Debian's apache2 configs do.
const APACHE_BASE: &str = "/app";

impl Site {
    /// Serves the app whose scripts are under `docroot` (a guest path, found in `grants`).
    /// `fallback`: the front controller every URL that names no script goes to.
    fn start(
        front: Front,
        grants: &[Grant],
        docroot: &str,
        fallback: Option<&str>,
        env: &[(&str, &str)],
    ) -> Site {
        let php = match front {
            Front::Serve { .. } => interpreter_dist("php", "php-cgi.wasm").join("php-cgi.wasm"),
            Front::Apache { .. } => readable_php(),
        };
        Site::start_module(front, &php, grants, docroot, fallback, env)
    }

    /// The same with another build of php-cgi.wasm (Apache's children must be able to read it).
    fn start_module(
        front: Front,
        php: &Path,
        grants: &[Grant],
        docroot: &str,
        fallback: Option<&str>,
        env: &[(&str, &str)],
    ) -> Site {
        match front {
            Front::Serve { workers } => {
                let mut args = vec!["-W".to_string(), format!("timeout={DEADLINE_SECS}s")];
                for grant in grants {
                    let mode = if grant.writable { "" } else { "::ro" };
                    args.push("--dir".into());
                    args.push(format!("{}::{}{mode}", grant.host.display(), grant.guest));
                }
                for (name, value) in env {
                    args.push("--env".into());
                    args.push(format!("{name}={value}"));
                }
                args.extend(["--cgi-docroot".into(), docroot.into()]);
                if let Some(fallback) = fallback {
                    args.extend(["--cgi-fallback".into(), fallback.into()]);
                }
                if workers {
                    args.extend(["--cgi-workers".into(), "2".into()]);
                }
                args.push(php.display().to_string());
                Site::Serve(Server::start(
                    &args.iter().map(String::as_str).collect::<Vec<_>>(),
                ))
            }
            Front::Apache { workers } => {
                let host_docroot = host_path(grants, docroot);
                let maps: String = grants
                    .iter()
                    .map(|grant| {
                        let mode = if grant.writable { "" } else { " ro" };
                        format!(
                            "WasmMapDir {} {}{mode}\n",
                            grant.guest,
                            grant.host.display()
                        )
                    })
                    .collect();
                let envs: String = env
                    .iter()
                    .map(|(name, value)| format!("WasmEnv {name} {value}\n"))
                    .collect();
                let fallback = fallback
                    .map(|script| format!("FallbackResource {APACHE_BASE}{script}\n"))
                    .unwrap_or_default();
                let workers = if workers { "WasmCGIWorkers 2\n" } else { "" };
                let conf = format!(
                    "LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so\n\
                     LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so\n\
                     LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so\n\
                     TypesConfig /etc/mime.types\n\
                     Alias {APACHE_BASE} {docroot}\n\
                     <Directory {docroot}>\n\
                     DirectoryIndex index.php doku.php phpliteadmin.php\n\
                     {fallback}\
                     <FilesMatch \"\\.php$\">\nSetHandler wasm-handler\n</FilesMatch>\n\
                     WasmModule {php}\n\
                     {maps}{envs}\
                     WasmEnableCGI On\n\
                     WasmMapCGIFileNames On\n\
                     WasmTimeout {DEADLINE_SECS}\n\
                     {workers}\
                     </Directory>",
                    docroot = host_docroot.display(),
                    php = php.display(),
                );
                Site::Apache(Apache::start("event", &conf))
            }
        }
    }

    /// The URL of `path` in the app.
    fn url(&self, path: &str) -> String {
        match self {
            Site::Serve(server) => server.url(path),
            Site::Apache(apache) => apache.url(&format!("{APACHE_BASE}{path}")),
        }
    }

    /// What the app's base path is in its links.
    fn base(&self) -> &'static str {
        match self {
            Site::Serve(_) => "",
            Site::Apache(_) => APACHE_BASE,
        }
    }

    fn log(&self) -> String {
        match self {
            Site::Serve(server) => server.log(),
            Site::Apache(apache) => apache.error_log(),
        }
    }
}

/// The host directory behind guest path `guest`.
fn host_path(grants: &[Grant], guest: &str) -> PathBuf {
    grants
        .iter()
        .filter_map(|grant| {
            let rest = guest.strip_prefix(grant.guest)?;
            Some(grant.host.join(rest.trim_start_matches('/')))
        })
        .next()
        .unwrap_or_else(|| panic!("no grant holds {guest}"))
}

/// php-cgi.wasm where www-data can read it.
fn readable_php() -> PathBuf {
    wasmbridge_tests::apache::fixtures().join("php/php-cgi.wasm")
}

/// A client that keeps cookies (a login, a session) and follows redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .build()
        .unwrap()
}

async fn fetch(client: &reqwest::Client, url: String) -> (u16, String) {
    let response = client.get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn submit(client: &reqwest::Client, url: String, form: &[(&str, &str)]) -> (u16, String) {
    let response = client.post(url).form(form).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The `value` of the input named `name` in an HTML form.
fn input_value(page: &str, name: &str) -> String {
    for quote in ['"', '\''] {
        let needle = format!("name={quote}{name}{quote} value={quote}");
        if let Some(start) = page.find(&needle) {
            let rest = &page[start + needle.len()..];
            return rest[..rest.find(quote).unwrap()].to_string();
        }
    }
    panic!("no input {name} in {page}");
}

/// DokuWiki's code as Debian installs it, with the PHP libraries it uses.
fn dokuwiki_code() -> PathBuf {
    install(
        "dokuwiki-code",
        &[
            "usr/share/dokuwiki",
            "usr/share/php",
            "usr/share/javascript",
        ],
    )
}

#[tokio::test]
async fn dokuwiki_creates_a_page_through_its_edit_form_reads_it_back_and_finds_it() {
    let code = dokuwiki_code();
    for front in FRONTS {
        dokuwiki_edit_and_search(front, &code, None).await;
    }
}

/// DokuWiki in fresh instances of a snapshot with its scripts compiled into OPcache
/// (`wasmbridge wizer --init-func wasmbridge-warm`, guests/php/README.md).
#[tokio::test]
async fn dokuwiki_runs_from_a_snapshot_with_its_scripts_compiled() {
    let code = dokuwiki_code();
    let dir = temp_dir("dokuwiki-warm");
    let warm = dir.join("dokuwiki-php.wasm");
    let stderr = warm_php_snapshot(
        &format!("{}::/usr/share::ro", code.join("usr/share").display()),
        "/usr/share/dokuwiki:/usr/share/php",
        &warm,
    );
    assert!(stderr.contains("scripts compiled into OPcache"), "{stderr}");
    assert!(!stderr.contains("not compiled"), "{stderr}");
    readable(&dir);
    let fresh = [
        Front::Serve { workers: false },
        Front::Apache { workers: false },
    ];
    for front in fresh {
        dokuwiki_edit_and_search(front, &code, Some(&warm)).await;
    }
}

/// Through `front`: DokuWiki's start page, a page created through the edit form, read back
/// by another client, found by full-text search; the stylesheet and scripts. `php`: another
/// build of php-cgi.wasm than dist's.
async fn dokuwiki_edit_and_search(front: Front, code: &Path, php: Option<&Path>) {
    // The wiki's pages, index and caches (Debian's /var/lib/dokuwiki) and its
    // configuration (/etc/dokuwiki, read-only) are the app's own, fresh for each front end.
    let data = install("dokuwiki-data", &["var/lib/dokuwiki", "etc/dokuwiki"]);
    writable(&data.join("var/lib/dokuwiki"));
    let grants = [
        Grant::ro("/usr/share", code.join("usr/share")),
        Grant::ro("/etc/dokuwiki", data.join("etc/dokuwiki")),
        Grant::rw("/var/lib/dokuwiki", data.join("var/lib/dokuwiki")),
        Grant::rw("/tmp", state("dokuwiki-tmp")),
    ];
    let site = match php {
        Some(php) => Site::start_module(front, php, &grants, "/usr/share/dokuwiki", None, &[]),
        None => Site::start(front, &grants, "/usr/share/dokuwiki", None, &[]),
    };
    let client = browser();

    let (status, page) = fetch(&client, site.url("/doku.php?id=start")).await;
    assert_eq!(status, 200, "{front:?}: {}", site.log());
    assert!(page.contains("This topic does not exist yet"), "{page}");

    let (status, form) = fetch(&client, site.url("/doku.php?id=wasm_notes&do=edit")).await;
    assert_eq!(status, 200, "{front:?}: {}", site.log());
    let text = "===== Wasm notes =====\nServed by **wasmbridge**, with zanzibarite.";
    let fields = [
        ("id", "wasm_notes".to_string()),
        ("sectok", input_value(&form, "sectok")),
        ("rev", input_value(&form, "rev")),
        ("date", input_value(&form, "date")),
        ("prefix", input_value(&form, "prefix")),
        ("suffix", input_value(&form, "suffix")),
        ("changecheck", input_value(&form, "changecheck")),
        ("target", input_value(&form, "target")),
        ("summary", "first version".into()),
        ("wikitext", text.into()),
        ("do[save]", "1".into()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, page) = submit(&client, site.url("/doku.php"), &fields).await;
    assert_eq!(status, 200, "{front:?}: {}", site.log());
    assert!(page.contains("<strong>wasmbridge</strong>"), "{page}");

    // Read back by a client of its own, and the page's file is where Debian keeps it.
    let (status, page) = fetch(&browser(), site.url("/doku.php?id=wasm_notes")).await;
    assert_eq!(status, 200);
    assert!(page.contains(">Wasm notes</h2>"), "{page}");
    assert!(page.contains("zanzibarite"), "{page}");
    let stored = data.join("var/lib/dokuwiki/data/pages/wasm_notes.txt");
    assert_eq!(std::fs::read_to_string(stored).unwrap(), text);

    // The indexer runs (as a browser's page view triggers it), then full-text search finds it.
    let (status, _) = fetch(&client, site.url("/lib/exe/taskrunner.php?id=wasm_notes")).await;
    assert_eq!(status, 200, "{front:?}: {}", site.log());
    let (status, page) = fetch(&client, site.url("/doku.php?do=search&q=zanzibarite")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!(
            "href=\"{}/doku.php?id=wasm_notes&amp;s[]=zanzibarite\"",
            site.base()
        )),
        "{front:?}: {page}"
    );
    assert!(page.contains("1 Hits"), "{page}");
    // The stylesheet and scripts a browser loads come from PHP too.
    let (status, css) = fetch(&client, site.url("/lib/exe/css.php")).await;
    assert_eq!(status, 200, "{front:?}: {}", site.log());
    assert!(css.len() > 10_000, "{css}");
    let (status, js) = fetch(&client, site.url("/lib/exe/js.php")).await;
    assert_eq!(status, 200, "{front:?}: {}", site.log());
    assert!(js.contains("jQuery"), "{}", &js[..js.len().min(500)]);
}

/// The hidden inputs of the form whose opening tag contains `marker`, unescaped.
fn hidden_inputs(page: &str, marker: &str) -> Vec<(String, String)> {
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {page}"));
    let form = &page[start..start + page[start..].find("</form>").unwrap()];
    let attribute = |tag: &str, name: &str| {
        let needle = format!(" {name}=\"");
        let at = tag.find(&needle)? + needle.len();
        Some(tag[at..at + tag[at..].find('"')?].to_string())
    };
    form.split("<input")
        .skip(1)
        .map(|rest| &rest[..rest.find('>').unwrap()])
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| {
            let value = attribute(tag, "value").unwrap_or_default();
            Some((attribute(tag, "name")?, unescape(&value)))
        })
        .collect()
}

fn unescape(html: &str) -> String {
    html.replace("&quot;", "\"")
        .replace("&#039;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// `fields` and `more`, as a form to submit.
fn form<'a>(
    fields: &'a [(String, String)],
    more: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut form: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    form.extend_from_slice(more);
    form
}

#[tokio::test]
async fn mediawiki_installs_on_sqlite_through_its_installer_then_renders_and_edits_pages() {
    // Debian links /usr/share/mediawiki's extensions, images and config to /var/lib/mediawiki;
    // the copy has them resolved. LocalSettings.php is where Debian keeps it, /etc/mediawiki,
    // named by MW_CONFIG_FILE (MediaWiki's own way to point at it).
    let code = install("mediawiki-code", &["usr/share/mediawiki"]);
    for front in FRONTS {
        // The database, uploads and caches: Debian's /var/lib and /var/cache.
        let data = state("mediawiki-data");
        let config = state("mediawiki-config");
        let grants = [
            Grant::ro("/usr/share/mediawiki", code.join("usr/share/mediawiki")),
            Grant::ro("/etc/mediawiki", config.clone()),
            Grant::rw("/var/lib/mediawiki", data.clone()),
            Grant::rw("/var/cache/mediawiki", state("mediawiki-cache")),
            Grant::rw("/tmp", state("mediawiki-tmp")),
        ];
        let env = [("MW_CONFIG_FILE", "/etc/mediawiki/LocalSettings.php")];
        let site = Site::start(front, &grants, "/usr/share/mediawiki", None, &env);
        let client = browser();
        let installer = site.url("/mw-config/index.php");
        let step = |page: &str| format!("{installer}?page={page}");

        // The installer, page by page, as a browser goes through it.
        let (status, page) = fetch(&client, installer.clone()).await;
        assert_eq!(status, 200, "{front:?}: {}", site.log());
        let fields = hidden_inputs(&page, "page=Language");
        let language = form(
            &fields,
            &[
                ("uselang", "en"),
                ("ContLang", "en"),
                ("submit-continue", "1"),
            ],
        );
        let (status, page) = submit(&client, step("Language"), &language).await;
        assert_eq!(status, 200, "{front:?}: {}", site.log());
        assert!(page.contains("You can install MediaWiki."), "{page}");
        let next = [("submit-continue", "1")];
        let (_, page) = submit(&client, step("Welcome"), &next).await;
        assert!(page.contains("sqlite_wgSQLiteDataDir"), "{page}");
        let database = [
            ("DBType", "sqlite"),
            ("sqlite_wgSQLiteDataDir", "/var/lib/mediawiki/data"),
            ("sqlite_wgDBname", "wasm_wiki"),
            ("submit-continue", "1"),
        ];
        let (_, page) = submit(&client, step("DBConnect"), &database).await;
        assert!(page.contains("config_wgSitename"), "{page}");
        let name = [
            ("config_wgSitename", "Wasm Wiki"),
            ("config__NamespaceType", "site-name"),
            ("config_wgMetaNamespace", "Wasm_Wiki"),
            ("config__AdminName", "Admin"),
            ("config__AdminPassword", "a sandboxed wiki, 2026"),
            ("config__AdminPasswordConfirm", "a sandboxed wiki, 2026"),
            ("config__AdminEmail", ""),
            ("config__SkipOptional", "skip"),
            ("submit-continue", "1"),
        ];
        let (_, page) = submit(&client, step("Name"), &name).await;
        assert!(page.contains("you will begin the installation"), "{page}");
        let (status, page) = submit(&client, step("Install"), &next).await;
        assert_eq!(status, 200, "{front:?}: {}", site.log());
        assert!(page.contains("Database was successfully set up"), "{page}");
        let (_, page) = submit(&client, step("Install"), &next).await;
        assert!(page.contains("localsettings=1"), "{page}");
        assert!(data.join("data/wasm_wiki.sqlite").is_file());
        // The administrator puts the LocalSettings.php it offers in place.
        let (status, settings) = fetch(&client, format!("{installer}?localsettings=1")).await;
        assert_eq!(status, 200);
        assert!(settings.contains("$wgDBtype = \"sqlite\";"), "{settings}");
        std::fs::write(config.join("LocalSettings.php"), settings).unwrap();
        readable(&config);

        // The Main Page the installer wrote.
        let (status, page) = fetch(&browser(), site.url("/index.php?title=Main_Page")).await;
        assert_eq!(status, 200, "{front:?}: {}", site.log());
        assert!(page.contains("<title>Wasm Wiki</title>"), "{page}");
        assert!(page.contains("MediaWiki has been installed"), "{page}");

        // A new page through the edit form, then read back by another client.
        let editor = browser();
        let edit = site.url("/index.php?title=Wasm_notes&action=edit");
        let (status, page) = fetch(&editor, edit).await;
        assert_eq!(status, 200, "{front:?}: {}", site.log());
        let fields = hidden_inputs(&page, "id=\"editform\"");
        let text = "== Wasm notes ==\nServed by '''wasmbridge''', see [[Main Page]]. Zanzibarite.";
        let edit = form(
            &fields,
            &[
                ("wpTextbox1", text),
                ("wpSummary", "first version"),
                ("wpSave", "Save page"),
            ],
        );
        let save = site.url("/index.php?title=Wasm_notes&action=submit");
        let (status, page) = submit(&editor, save, &edit).await;
        assert_eq!(status, 200, "{front:?}: {}", site.log());
        assert!(page.contains("<b>wasmbridge</b>"), "{page}");
        let (status, page) = fetch(&browser(), site.url("/index.php?title=Wasm_notes")).await;
        assert_eq!(status, 200);
        assert!(page.contains("id=\"Wasm_notes\""), "{page}");
        assert!(page.contains("Zanzibarite"), "{page}");
        let history = site.url("/index.php?title=Wasm_notes&action=history");
        let (_, page) = fetch(&browser(), history).await;
        assert!(page.contains("first version"), "{page}");
    }
}

#[tokio::test]
async fn phpliteadmin_logs_in_creates_a_table_in_the_data_directory_and_lists_its_rows() {
    let code = install("phpliteadmin-code", &["usr/share/phpliteadmin"]);
    for front in FRONTS {
        // Debian's /etc/phpliteadmin.config.php keeps databases in /var/lib/phpliteadmin.
        let databases = state("phpliteadmin-data");
        let grants = [
            Grant::ro(
                "/usr/share/phpliteadmin",
                code.join("usr/share/phpliteadmin"),
            ),
            Grant::rw("/var/lib/phpliteadmin", databases.clone()),
            Grant::rw("/tmp", state("phpliteadmin-tmp")),
        ];
        let site = Site::start(front, &grants, "/usr/share/phpliteadmin", None, &[]);
        let client = browser();
        let admin = site.url("/phpliteadmin.php");

        let (status, page) = fetch(&client, admin.clone()).await;
        assert_eq!(status, 200, "{front:?}: {}", site.log());
        let token = input_value(&page, "token");
        let (status, page) = submit(
            &client,
            admin.clone(),
            &[("token", &token), ("password", "wrong"), ("login", "true")],
        )
        .await;
        assert_eq!(status, 200);
        assert!(page.contains("Incorrect password"), "{page}");
        let (status, page) = submit(
            &client,
            admin.clone(),
            &[("token", &token), ("password", "admin"), ("login", "true")],
        )
        .await;
        assert_eq!(status, 200, "{front:?}: {}", site.log());
        assert!(
            page.contains("could not find any valid SQLite databases"),
            "{page}"
        );

        let (status, _) = submit(
            &client,
            admin.clone(),
            &[("token", &token), ("new_dbname", "orchard")],
        )
        .await;
        assert_eq!(status, 200, "{front:?}: {}", site.log());
        assert!(databases.join("orchard").is_file());

        let database = "?database=%2Fvar%2Flib%2Fphpliteadmin%2Forchard";
        let (status, page) = submit(
            &client,
            format!("{admin}{database}&view=sql"),
            &[
                ("token", &token),
                ("delimiter", ";"),
                ("query", "Go"),
                (
                    "queryval",
                    "CREATE TABLE fruit (id INTEGER PRIMARY KEY, name TEXT);\n\
                     INSERT INTO fruit (name) VALUES ('quince'), ('medlar');",
                ),
            ],
        )
        .await;
        assert_eq!(status, 200, "{front:?}: {}", site.log());
        assert!(!page.contains("Error in query"), "{page}");

        let (status, page) = fetch(
            &client,
            format!("{admin}{database}&table=fruit&action=row_view"),
        )
        .await;
        assert_eq!(status, 200);
        assert!(page.contains("Total: 2"), "{page}");
        assert!(page.contains("quince") && page.contains("medlar"), "{page}");
        // Another client is not logged in.
        let (_, page) = fetch(&browser(), format!("{admin}{database}")).await;
        assert!(!page.contains("medlar"), "{page}");
        assert!(page.contains("name='password'"), "{page}");
    }
}

#[tokio::test]
async fn a_slim_app_on_debians_php_slim_routes_json_in_and_out() {
    let code = install(
        "slim-code",
        &[
            "usr/share/php/Slim",
            "usr/share/php/Pimple",
            "usr/share/php/FastRoute",
            "usr/share/php/Psr",
        ],
    );
    let app = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guests/fixtures/php-slim");
    let www = temp_dir("slim-www");
    std::fs::copy(app.join("index.php"), www.join("index.php")).unwrap();
    readable(&www);
    for front in FRONTS {
        let data = state("slim-data");
        let grants = [
            Grant::ro("/usr/share/php", code.join("usr/share/php")),
            Grant::ro("/www", www.clone()),
            Grant::rw("/data", data.clone()),
        ];
        let site = Site::start(
            front,
            &grants,
            "/www",
            Some("/index.php"),
            &[("DATA_DIR", "/data")],
        );
        let client = browser();

        let (status, body) = fetch(&client, site.url("/hello/wasm")).await;
        assert_eq!(
            (status, body),
            (200, r#"{"hello":"wasm"}"#.to_string()),
            "{front:?}: {}",
            site.log()
        );

        let response = client
            .post(site.url("/notes"))
            .header("content-type", "application/json")
            .body(r#"{"text":"routes, JSON in and out"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201, "{front:?}: {}", site.log());
        assert_eq!(response.headers()["location"], "/notes/1");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"id":1,"text":"routes, JSON in and out"}"#
        );
        let (status, body) = fetch(&client, site.url("/notes/1")).await;
        assert_eq!(
            (status, body),
            (
                200,
                r#"{"id":1,"text":"routes, JSON in and out"}"#.to_string()
            )
        );
        let (status, body) = fetch(&client, site.url("/notes")).await;
        assert_eq!(
            (status, body),
            (
                200,
                r#"[{"id":1,"text":"routes, JSON in and out"}]"#.to_string()
            )
        );
        assert!(data.join("notes.json").is_file());

        // Slim's own answers: a bad body, no such route, a method the route does not take.
        let response = client
            .post(site.url("/notes"))
            .header("content-type", "application/json")
            .body(r#"{"title":"no text"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 422);
        let (status, _) = fetch(&client, site.url("/nowhere")).await;
        assert_eq!(status, 404);
        let response = client.delete(site.url("/notes")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 405);
        assert_eq!(response.headers()["allow"], "GET, POST");
    }
}

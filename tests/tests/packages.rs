//! The Debian packages the test command builds (packaging/build-debs.sh), installed on this
//! machine as an admin would: `apt-get install ./...deb`, `a2enmod wasm`, an app configured
//! under /etc, Debian's own Apache started from /etc/apache2; then removed again.
//!
//! It changes the machine while it runs (packages, /etc/apache2), so it needs root, and it
//! puts everything back when it ends, also when it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use wasmbridge_tests::{get, temp_dir};

const CONF: &str = "wasmbridge-install-test";

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn debs() -> Vec<PathBuf> {
    let dir = std::env::var_os("WASMBRIDGE_DEBS")
        .map(PathBuf::from)
        .expect("WASMBRIDGE_DEBS is not set: run the README's test command");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    assert_eq!(debs.len(), 2, "two packages in {}: {debs:?}", dir.display());
    debs
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Puts the machine back: stops what was started, removes the configuration and the packages.
struct Installed {
    run_dir: PathBuf,
    serve: Option<std::process::Child>,
}

impl Installed {
    fn apache(&self, action: &str) -> Output {
        // Debian's own way, with its envvars; the run-time files in a directory of the test's.
        let script = format!(
            ". /etc/apache2/envvars; export APACHE_PID_FILE={dir}/apache2.pid \
             APACHE_RUN_DIR={dir} APACHE_LOCK_DIR={dir} APACHE_LOG_DIR={dir}; \
             exec /usr/sbin/apache2 -k {action}",
            dir = self.run_dir.display()
        );
        Command::new("sh").args(["-c", &script]).output().unwrap()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.run_dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(mut serve) = self.serve.take() {
            let _ = serve.kill();
            let _ = serve.wait();
        }
        if let Ok(pid) = std::fs::read_to_string(self.run_dir.join("apache2.pid")) {
            let _ = self.apache("stop");
            let pid = pid.trim().to_string();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
        let _ = Command::new("a2disconf").args(["-q", CONF]).output();
        let _ = std::fs::remove_file(format!("/etc/apache2/conf-available/{CONF}.conf"));
        let _ = Command::new("apt-get")
            .args([
                "remove",
                "--purge",
                "-y",
                "-qq",
                "wasmbridge",
                "libapache2-mod-wasm",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_debian_packages_install_serve_under_debians_apache_and_remove_cleanly() {
    assert!(
        wasmbridge_tests::apache::is_root(),
        "installing packages needs root"
    );
    let debs = debs();
    let run_dir = temp_dir("debian-apache");
    let mut installed = Installed {
        run_dir,
        serve: None,
    };
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&debs)
        .env("DEBIAN_FRONTEND", "noninteractive"));

    // What the wasmbridge package put in place.
    for file in [
        "/usr/bin/wasmbridge",
        "/lib/systemd/system/wasmbridge.service",
        "/etc/wasmbridge/apps.toml",
        "/usr/share/man/man1/wasmbridge.1.gz",
        "/usr/share/man/man1/wasmbridge-serve.1.gz",
        "/usr/lib/apache2/modules/mod_wasm.so",
        "/etc/apache2/mods-available/wasm.load",
    ] {
        assert!(Path::new(file).exists(), "{file} is missing");
    }
    let unit = std::fs::read_to_string("/lib/systemd/system/wasmbridge.service").unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/wasmbridge serve"),
        "{unit}"
    );

    // The packaged server, with the packaged manifest.
    let port = free_port();
    let serve = Command::new("/usr/bin/wasmbridge")
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .arg("/etc/wasmbridge/apps.toml")
        .env("XDG_CACHE_HOME", &installed.run_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    installed.serve = Some(serve);
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match wasmbridge_tests::client().get(&url).send().await {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                assert_eq!(response.text().await.unwrap(), "Hello from WebAssembly!\n");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "wasmbridge serve: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Debian's Apache from /etc/apache2, with the module enabled the Debian way and an app
    // configured under /etc.
    run(Command::new("a2enmod").args(["-q", "wasm"]));
    let port = free_port();
    std::fs::write(
        format!("/etc/apache2/conf-available/{CONF}.conf"),
        format!(
            "Listen 127.0.0.1:{port}\n<VirtualHost 127.0.0.1:{port}>\n    <Location /hello>\n        \
             SetHandler wasm-handler\n        WasmModule /usr/share/wasmbridge/examples/hello.wasm\n    \
             </Location>\n</VirtualHost>\n"
        ),
    )
    .unwrap();
    run(Command::new("a2enconf").args(["-q", CONF]));
    let started = installed.apache("start");
    assert!(
        started.status.success(),
        "apache2 -k start: {}{}\n{}",
        String::from_utf8_lossy(&started.stdout),
        String::from_utf8_lossy(&started.stderr),
        installed.error_log()
    );
    let url = format!("http://127.0.0.1:{port}/hello");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = match wasmbridge_tests::client().get(&url).send().await {
            Ok(response) => (response.status().as_u16(), response.text().await.unwrap()),
            Err(_) => (0, String::new()),
        };
        if status == 200 {
            assert_eq!(body, "Hello from WebAssembly!\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Debian's Apache did not serve {url} ({status}):\n{}",
            installed.error_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server = wasmbridge_tests::client().get(&url).send().await.unwrap();
    assert!(
        server.headers()["server"]
            .to_str()
            .unwrap()
            .starts_with("Apache")
    );
    let _ = get(url).await;

    // Removed again: nothing of it stays.
    drop(installed);
    for file in [
        "/usr/bin/wasmbridge",
        "/usr/lib/apache2/modules/mod_wasm.so",
    ] {
        assert!(!Path::new(file).exists(), "{file} is still there");
    }
    assert!(!Path::new("/etc/apache2/mods-enabled/wasm.load").exists());
}

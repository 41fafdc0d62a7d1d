//! A real Apache httpd (Debian's apache2) with mod_wasm loaded, run from a generated
//! configuration with its own ServerRoot, PidFile and runtime directory in a temp dir, on a
//! free loopback port, and stopped by PID when the test ends, passed or failed.
//!
//! - `WASMBRIDGE_MOD_WASM`: the module (default: `mod_wasm/mod_wasm.so` in the target dir).
//!
//! Apache's children run as www-data, which may not read the build's target directory (CI keeps
//! it under root's home). The guests a test serves are therefore copied once per test binary to
//! a world-readable fixtures directory: `{fixtures}` in a configuration names it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const APACHE: &str = "/usr/sbin/apache2";
const MODULES: &str = "/usr/lib/apache2/modules";

/// The mod_wasm.so under test.
pub fn module_path() -> PathBuf {
    if let Some(path) = std::env::var_os("WASMBRIDGE_MOD_WASM") {
        return path.into();
    }
    // target/<profile>/deps/<test>  ->  target/mod_wasm/mod_wasm.so
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .and_then(|profile| profile.parent())
        .expect("target dir")
        .join("mod_wasm/mod_wasm.so")
}

/// Guests and apps, readable by www-data. Layout:
/// - `wasm/NAME.wasm` (wasm32-wasip2 guests), `wasm-p1/NAME.wasm` (wasm32-wasip1 ones);
/// - `python/python.wasm`, `python/lib/python3.11` (the CPython guest, as built);
/// - `www/python/` (PrettyFy with Pygments and its files, mod_wasm's demo layout, with the
///   stdlib at `www/python/wasi-python/lib/python3.11`);
/// - `www/cases/` (the Python test scripts);
/// - `php/php-cgi.wasm` (the PHP guest, as built), `www/php/` (the PHP
///   test scripts).
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = crate::temp_dir("apache-fixtures");
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let p2 = PathBuf::from(crate::guest("echo"));
        let p1 = PathBuf::from(crate::guest_p1("cgi-hello"));
        let dist = root.join("guests/python/dist");
        let copy = |from: &Path, to: &str| {
            let to = dir.join(to);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            let status = Command::new("cp")
                .arg("-r")
                .arg(from)
                .arg(&to)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "cp -r {} {}",
                from.display(),
                to.display()
            );
        };
        copy(p2.parent().unwrap(), "wasm");
        copy(p1.parent().unwrap(), "wasm-p1");
        copy(&dist, "python");
        copy(&root.join("guests/python/apps/prettyfy"), "www/python");
        copy(
            &dist.join("lib/python3.11"),
            "www/python/wasi-python/lib/python3.11",
        );
        copy(&root.join("guests/fixtures/python"), "www/cases");
        copy(&root.join("guests/php/dist"), "php");
        copy(&root.join("guests/fixtures/php"), "www/php");
        let status = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success());
        dir
    })
}

/// Compiled code shared by every Apache of every test run (the module keys it by content).
fn cache_dir() -> PathBuf {
    std::env::temp_dir().join("wasmbridge-apache-cache")
}

/// A running Apache.
pub struct Apache {
    dir: PathBuf,
    conf: PathBuf,
    pub port: u16,
}

impl Apache {
    /// Starts Apache with `mpm` (event, worker, prefork) and `body` appended to the generated
    /// configuration; panics with the error log if it does not answer.
    pub fn start(mpm: &str, body: &str) -> Apache {
        let apache = Apache::configure(mpm, body);
        let output = apache.ctl("start");
        assert!(
            output.status.success(),
            "apache2 -k start failed: {}",
            text(&output)
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", apache.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Apache did not start:\n{}",
                apache.error_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        apache
    }

    /// Runs `apache2 -k start` without waiting for an answer: for a configuration that passes
    /// its checks and fails later, as it starts; the error log says why.
    pub fn launch(mpm: &str, body: &str) -> Apache {
        let apache = Apache::configure(mpm, body);
        let _ = apache.ctl("start");
        apache
    }

    /// Writes the configuration without starting anything.
    pub fn configure(mpm: &str, body: &str) -> Apache {
        let dir = tempdir();
        let port = free_port();
        let user = if is_root() {
            "User www-data\nGroup www-data\n"
        } else {
            ""
        };
        // A temporary directory of its own, which Apache's User may write, as /tmp.
        let tmp = dir.join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let _ = Command::new("chmod").arg("1777").arg(&tmp).status();
        let conf = dir.join("httpd.conf");
        let text = format!(
            "ServerRoot {dir}\n\
             ServerName 127.0.0.1\n\
             PidFile {dir}/httpd.pid\n\
             DefaultRuntimeDir {dir}\n\
             ErrorLog {dir}/error.log\n\
             LogLevel info\n\
             Listen 127.0.0.1:{port}\n\
             {user}\
             LoadModule mpm_{mpm}_module {MODULES}/mod_mpm_{mpm}.so\n\
             LoadModule authz_core_module {MODULES}/mod_authz_core.so\n\
             LoadModule wasm_module {module}\n\
             CustomLog {dir}/access.log \"%r %>s %b\"\n\
             WasmCacheDir {cache}\n\
             {body}\n",
            dir = dir.display(),
            module = module_path().display(),
            cache = cache_dir().display(),
            body = body.replace("{fixtures}", &fixtures().to_string_lossy()),
        );
        std::fs::write(&conf, text).unwrap();
        Apache { dir, conf, port }
    }

    /// `apache2 -t`: whether the configuration is accepted, and what Apache said.
    pub fn configtest(&self) -> (bool, String) {
        let output = Command::new(APACHE)
            .arg("-t")
            .arg("-f")
            .arg(&self.conf)
            .output()
            .unwrap();
        (output.status.success(), text(&output))
    }

    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// Waits until the error log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for(|| self.error_log(), needle, timeout)
    }

    /// Waits until the access log contains `needle` (Apache logs a request after answering it).
    pub fn wait_for_access_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for(|| self.access_log(), needle, timeout)
    }

    fn wait_for(&self, log: impl Fn() -> String, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `apache2 -k graceful`: re-reads the configuration; new children replace the old ones.
    pub fn graceful(&self) {
        let output = self.ctl("graceful");
        assert!(output.status.success(), "graceful: {}", text(&output));
    }

    /// `apache2 -k graceful` that may be refused: whether it went ahead, and what it said.
    pub fn try_graceful(&self) -> (bool, String) {
        let output = self.ctl("graceful");
        (output.status.success(), text(&output))
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("httpd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The temporary directory (`TMPDIR`) of this Apache's processes.
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Stops Apache and waits until every process of it has ended.
    pub fn stop(&self) {
        let Some(pid) = self.pid() else {
            return;
        };
        let _ = self.ctl("stop");
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever did not stop in time is killed by PID: the parent, and every process started
        // from this configuration — children of any generation, also one the parent lost.
        for pid in std::iter::once(pid).chain(started_from(&self.conf)) {
            if alive(pid) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }

    fn ctl(&self, action: &str) -> std::process::Output {
        Command::new(APACHE)
            .arg("-f")
            .arg(&self.conf)
            .args(["-k", action])
            .env("TMPDIR", self.tmp_dir())
            .output()
            .unwrap()
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `pid` still runs: a zombie (whose parent has not reaped it yet) does not.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// The processes whose command line names `conf` (Apache's are all `apache2 -f CONF ...`).
fn started_from(conf: &Path) -> Vec<i32> {
    let conf = conf.to_string_lossy();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == conf.as_bytes())
                .then_some(pid)
        })
        .collect()
}

fn tempdir() -> PathBuf {
    let dir = crate::temp_dir("httpd");
    let _ = Command::new("chmod").arg("755").arg(&dir).status();
    dir
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

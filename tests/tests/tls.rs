//! HTTPS in `wasmbridge serve` (`--tls-cert`, `--tls-key`): HTTP/2 over ALPN beside HTTP/1.1,
//! the scheme apps see, certificates renewed on SIGHUP, and the errors bad files get.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use wasmbridge_tests::{Server, guest, guest_p1, start_error, temp_dir};

/// A self-signed certificate for 127.0.0.1 and its key, made by openssl: (cert, key).
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        // A server's certificate, not a CA's: rustls will not take a CA as the server.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed by the test command");
    assert!(status.success());
    (cert, key)
}

fn client_trusting(certs: &[&Path], http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_info(true);
    for cert in certs {
        let pem = std::fs::read(cert).unwrap();
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

/// The DER of a PEM certificate, to compare with what a connection presented.
fn der(cert: &Path) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(["x509", "-outform", "der", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    output.stdout
}

fn presented(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("a TLS connection")
        .to_vec()
}

/// `wasmbridge serve --tls-cert CERT --tls-key KEY PROGRAM`.
fn serve_https(cert: &Path, key: &Path, program: &str) -> Server {
    let server = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        program,
    ]);
    assert_eq!(server.scheme, "https");
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_http2_and_http11_and_apps_see_the_https_scheme() {
    let dir = temp_dir("tls");
    let (cert, key) = certificate(&dir, "first");
    let server = serve_https(&cert, &key, &guest_p1("cgi-probe"));

    // ALPN picks HTTP/2 when the client offers it, HTTP/1.1 otherwise.
    let response = client_trusting(&[&cert], false)
        .get(server.url("/env"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let env = response.text().await.unwrap();
    for line in ["HTTPS=on\n", "REQUEST_SCHEME=https\n"] {
        assert!(env.contains(line), "{line:?} missing:\n{env}");
    }
    let response = client_trusting(&[&cert], true)
        .get(server.url("/env"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);

    // Plain HTTP on the HTTPS port gets no answer, and the server serves on.
    let plain = wasmbridge_tests::client()
        .get(format!("http://{}/env", server.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() == 400);
    let status = client_trusting(&[&cert], false)
        .get(server.url("/env"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_certificate_is_served_after_sighup() {
    let dir = temp_dir("tls-renew");
    let (cert, key) = certificate(&dir, "first");
    let server = serve_https(&cert, &key, &guest("hello_http"));
    let old_der = der(&cert);
    let (new_cert, new_key) = certificate(&dir, "second");
    let client = || client_trusting(&[&cert, &new_cert], false);
    let response = client().get(server.url("/")).send().await.unwrap();
    assert_eq!(presented(&response), old_der);

    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    server.signal("HUP");
    assert!(
        server.wait_for_log("wasmbridge: reloaded", Duration::from_secs(30)),
        "{}",
        server.log()
    );
    let response = client().get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(presented(&response), der(&new_cert));
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_certificate_or_key_stops_the_start_with_the_file_and_the_reason() {
    let dir = temp_dir("tls-bad");
    let (cert, key) = certificate(&dir, "good");
    let (_, other_key) = certificate(&dir, "other");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let hello = guest("hello_http");
    for (cert, key, says) in [
        (&empty, &key, "empty.pem: it holds no PEM `CERTIFICATE`"),
        (&cert, &empty, "cannot read the private key"),
        (&cert, &other_key, "do not make a usable pair"),
        (&dir.join("missing.pem"), &key, "missing.pem"),
    ] {
        let log = start_error(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            &hello,
        ]);
        assert!(log.contains(says), "expected {says:?}:\n{log}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

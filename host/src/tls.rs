//! HTTPS for `wasmbridge serve`: a certificate chain and its key, in PEM files, served with
//! rustls; ALPN offers HTTP/2 before HTTP/1.1.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use wasmtime::error::Context as _;
use wasmtime::{Result, bail, format_err};

/// Reads `cert` (the chain, the server's certificate first) and `key` (PKCS#8, PKCS#1 or
/// SEC1), and checks that they belong together. Errors name the file and the reason.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format_err!("cannot read the certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        bail!(
            "cannot read the certificate {}: it holds no PEM `CERTIFICATE`",
            cert.display()
        );
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format_err!("cannot read the private key {}: {e}", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS")?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .with_context(|| {
            format!(
                "the certificate {} and the private key {} do not make a usable pair",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

//! HTTPS: the server's certificate and key (`[tls]`), read from PEM files at start and again on
//! SIGHUP. A reload that fails (a missing file, a bad certificate, a key that does not match)
//! keeps the configuration in use and says why; new connections take the new one, open ones
//! keep theirs.

use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Largest certificate or key file read.
pub const PEM_FILE_BYTES_MAX: u64 = 1 << 20;
/// Certificates in a chain, at most.
pub const CHAIN_CERTIFICATES_MAX: usize = 16;

/// The TLS configuration new connections are accepted with.
pub struct Tls {
    config: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Loads `cert` and `key`; an error names the file and what is wrong.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, String> {
        Ok(Tls {
            config: RwLock::new(Arc::new(server_config(cert, key)?)),
        })
    }

    /// Loads `cert` and `key` again; on failure the configuration in use is kept.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), String> {
        let config = server_config(cert, key)?;
        *self.config.write() = Arc::new(config);
        Ok(())
    }

    /// An acceptor with the configuration in use now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.read().clone())
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let fail = |e: std::io::Error| format!("cannot read the TLS {what} {}: {e}", path.display());
    let len = std::fs::metadata(path).map_err(fail)?.len();
    if len > PEM_FILE_BYTES_MAX {
        return Err(format!(
            "the TLS {what} {} is {len} bytes, over the maximum {PEM_FILE_BYTES_MAX}",
            path.display()
        ));
    }
    std::fs::read(path).map_err(fail)
}

fn server_config(cert_path: &Path, key_path: &Path) -> Result<ServerConfig, String> {
    let cert_pem = read_pem(cert_path, "certificate")?;
    let key_pem = read_pem(key_path, "key")?;
    let bad_cert =
        |e: &dyn std::fmt::Display| format!("the TLS certificate {}: {e}", cert_path.display());
    let mut chain = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&cert_pem) {
        chain.push(cert.map_err(|e| bad_cert(&e))?);
        if chain.len() > CHAIN_CERTIFICATES_MAX {
            return Err(bad_cert(&format!(
                "more than {CHAIN_CERTIFICATES_MAX} certificates"
            )));
        }
    }
    if chain.is_empty() {
        return Err(bad_cert(&"no PEM certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("the TLS key {}: {e}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "the TLS certificate {} and key {} do not make a usable pair: {e}",
                cert_path.display(),
                key_path.display()
            )
        })?;
    // HTTP/1.1 only (the server speaks nothing else).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

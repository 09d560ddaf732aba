//! TLS on a listener (rustls): the certificate and key come from PEM files
//! and are read again on every config reload (`SIGHUP`, `POST /admin/reload`),
//! so a renewed certificate is served without a restart. New handshakes get
//! the new certificate; connections already open keep theirs.
//!
//! ALPN offers `h2` and `http/1.1`, like the plain port's automatic protocol
//! detection. A handshake must finish within the header read timeout, so a
//! client that opens TLS and stalls is dropped like a slow request head.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::ListenerTlsConfig;

/// A listener's TLS: what handshakes use, and the certificate a reload swaps.
pub struct ListenerTls {
    acceptor: TlsAcceptor,
    cert: Arc<CurrentCert>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls").finish_non_exhaustive()
    }
}

impl ListenerTls {
    /// Reads the certificate chain and key named by `cfg`.
    pub fn load(cfg: &ListenerTlsConfig) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = Arc::new(CurrentCert(ArcSwap::from(certified_key(cfg, &provider)?)));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert,
            provider,
        })
    }

    /// Reads `cfg`'s files again; the current certificate stays if they do
    /// not hold a valid pair. Returns what [`Self::install`] takes.
    pub fn read(&self, cfg: &ListenerTlsConfig) -> Result<Arc<CertifiedKey>, String> {
        certified_key(cfg, &self.provider)
    }

    /// Serves `key` to the next handshakes.
    pub fn install(&self, key: Arc<CertifiedKey>) {
        self.cert.0.store(key);
    }

    /// The TLS handshake on an accepted connection.
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.acceptor.accept(io).await
    }
}

/// The certificate every handshake gets (one per listener; no SNI choice).
#[derive(Debug)]
struct CurrentCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The chain of `cert_file` with the key of `key_file`, checked to match.
fn certified_key(
    cfg: &ListenerTlsConfig,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let (cert_file, key_file) = (Path::new(&cfg.cert_file), Path::new(&cfg.key_file));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("cannot read {}: {e}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        format!(
            "{} holds no usable PEM private key: {e}",
            key_file.display()
        )
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: {e}", key_file.display()))?;
    let pair = CertifiedKey::new(certs, signing);
    pair.keys_match().map_err(|e| {
        format!(
            "{} is not the key of {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })?;
    Ok(Arc::new(pair))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> ListenerTlsConfig {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_file = dir.join(format!("{name}.crt"));
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&cert_file, key.cert.pem()).unwrap();
        std::fs::write(&key_file, key.signing_key.serialize_pem()).unwrap();
        ListenerTlsConfig {
            cert_file: cert_file.display().to_string(),
            key_file: key_file.display().to_string(),
        }
    }

    #[test]
    fn a_pair_loads_and_a_reload_keeps_the_old_one_on_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (write_pair(dir.path(), "a"), write_pair(dir.path(), "b"));
        let tls = ListenerTls::load(&a).unwrap();
        let first = tls.cert.0.load_full();
        // b's certificate with a's key: refused, naming both files.
        let mixed = ListenerTlsConfig {
            cert_file: b.cert_file.clone(),
            key_file: a.key_file.clone(),
        };
        let err = tls.read(&mixed).unwrap_err();
        assert!(err.contains("a.key") && err.contains("b.crt"), "{err}");
        let missing = ListenerTlsConfig {
            cert_file: dir.path().join("nope.crt").display().to_string(),
            key_file: a.key_file.clone(),
        };
        assert!(tls.read(&missing).unwrap_err().contains("nope.crt"));
        assert!(Arc::ptr_eq(&first, &tls.cert.0.load_full()), "unchanged");
        tls.install(tls.read(&b).unwrap());
        assert!(!Arc::ptr_eq(&first, &tls.cert.0.load_full()));
    }
}

//! HTTPS to upstreams: rustls (ring) trusting the Mozilla roots (`webpki-roots`)
//! plus, per upstream, the certificates of an optional PEM `ca_file` (a private CA
//! or a self-signed test server). ALPN offers `h2` then `http/1.1`, so an upstream
//! that speaks HTTP/2 gets it (one multiplexed connection) and others get pooled
//! keep-alive HTTP/1.1.
//!
//! Like the plain client, each data-plane thread keeps its own client (and pool)
//! per TLS configuration, so connections stay on the thread that uses them.

use crate::body::Body;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// A pooled client speaking HTTPS (HTTP/2 or HTTP/1.1, by ALPN).
type HttpsClient = Client<HttpsConnector<HttpConnector>, Body>;

thread_local! {
    /// This thread's clients, by TLS configuration (`Arc` address).
    static CLIENTS: RefCell<HashMap<usize, HttpsClient>> = RefCell::new(HashMap::new());
}

/// The TLS side of one `https://` upstream.
pub struct UpstreamTls {
    config: Arc<rustls::ClientConfig>,
}

impl UpstreamTls {
    /// Trusts the Mozilla roots, plus every certificate in `ca_file` when given.
    pub fn new(ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            for cert in load_ca_file(path).map_err(anyhow::Error::msg)? {
                roots.add(cert)?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// Sends `req` on this thread's client for this configuration.
    pub fn request(&self, req: http::Request<Body>) -> ResponseFuture {
        let key = Arc::as_ptr(&self.config) as usize;
        CLIENTS.with(|clients| {
            clients
                .borrow_mut()
                .entry(key)
                .or_insert_with(|| self.client())
                .request(req)
        })
    }

    fn client(&self) -> HttpsClient {
        let mut http = tcp_connector();
        http.enforce_http(false);
        let https = HttpsConnectorBuilder::new()
            .with_tls_config((*self.config).clone())
            .https_only()
            .enable_all_versions()
            .wrap_connector(http);
        client_builder().build(https)
    }
}

/// Reads the certificates of a PEM file; an error says what is wrong with it.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// TCP connections to HTTPS upstreams: no Nagle delay, the pool's connect timeout.
fn tcp_connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(super::pool::CONNECT_TIMEOUT));
    connector
}

/// The HTTPS client's pool settings, the same as the plain pool's.
fn client_builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(super::pool::IDLE_TIMEOUT)
        .pool_max_idle_per_host(super::pool::MAX_IDLE);
    builder
}

//! `https://` upstreams: a real TLS server on loopback with a self-signed certificate
//! for `localhost`, trusted through the upstream's `tls.ca_file`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{client, get, start};

/// A TLS server answering every request with the HTTP version it arrived over.
/// Returns its address and the PEM of its certificate.
async fn tls_upstream() -> (SocketAddr, String) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = key.cert.pem();
    let certs = vec![CertificateDer::from(key.cert.der().to_vec())];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the certificate fails here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let body = format!("{:?} {}", req.version(), req.uri().path());
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, cert_pem)
}

fn config(port: u16, tls: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
upstreams:
  vendor: {{ url: "https://localhost:{port}", timeout: 2s{tls} }}
routes:
  - name: vendor
    match: {{ method: GET, path: /vendor/{{id}} }}
    upstream: vendor
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_is_verified_and_gets_http2_by_alpn() {
    let (addr, pem) = tls_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let tls = format!(", tls: {{ ca_file: {:?} }}", ca.display().to_string());
    let j = start(&config(addr.port(), &tls)).await;
    for id in 1..=3 {
        let resp = client()
            .get(format!("http://{}/vendor/{id}", j.data))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // The upstream saw HTTP/2 (negotiated by ALPN) and the proxied path.
        assert_eq!(resp.text().await.unwrap(), format!("HTTP/2.0 /vendor/{id}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_502_and_nothing_is_proxied() {
    let (addr, _pem) = tls_upstream().await;
    // Without the ca_file, the self-signed certificate is not trusted.
    let j = start(&config(addr.port(), "")).await;
    let resp = get(j.data, "/vendor/1").await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}

#[test]
fn tls_settings_are_checked_when_the_config_loads() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let yaml = format!(
        r#"
listen: 127.0.0.1:0
upstreams:
  plain: {{ url: "http://127.0.0.1:1", tls: {{}} }}
  bad_ca: {{ url: "https://localhost:1", tls: {{ ca_file: {:?} }} }}
routes:
  - name: a
    match: {{ method: GET, path: /a }}
    upstream: plain
"#,
        not_pem.display().to_string()
    );
    let err = format!(
        "{:?}",
        junction_gateway::config::load_str(&yaml, "tls.yaml").unwrap_err()
    );
    assert!(err.contains("upstreams.plain.tls"), "{err}");
    assert!(err.contains("https://"), "{err}");
    assert!(err.contains("upstreams.bad_ca.tls.ca_file"), "{err}");
    assert!(err.contains(r#"file: "tls.yaml", line: 4"#), "{err}");
    assert!(err.contains(r#"file: "tls.yaml", line: 5"#), "{err}");
}

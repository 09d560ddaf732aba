//! HTTPS on Junction's own listeners (`tls`, `admin.tls`) through the real
//! binary: requests over TLS on both ports, a renewed certificate served after
//! `SIGHUP` without a restart, a broken one refused with the old one kept.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use junction_testkit::FakeUpstream;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::process::free_addr;

/// A self-signed certificate for `localhost` written as `NAME.crt` / `NAME.key`;
/// returns its DER.
fn write_cert(dir: &Path, name: &str) -> CertificateDer<'static> {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), key.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        key.signing_key.serialize_pem(),
    )
    .unwrap();
    CertificateDer::from(key.cert.der().to_vec())
}

/// GET `path` over HTTPS at `addr`, trusting `roots`: the status, the body and
/// the certificate the server presented; `Err` when the handshake fails.
async fn https_get(
    addr: &str,
    roots: &[&CertificateDer<'static>],
    path: &str,
) -> Result<(u16, String, CertificateDer<'static>), String> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned(), served))
}

#[tokio::test]
async fn both_listeners_speak_tls_and_a_renewed_certificate_needs_no_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_cert(dir.path(), "first");
    let up = FakeUpstream::start().await;
    let (data, admin) = (free_addr(), free_addr());
    let d = dir.path().display();
    let config = dir.path().join("junction.yaml");
    std::fs::write(
        &config,
        format!(
            r#"listen: {data}
tls: {{ cert_file: {d}/live.crt, key_file: {d}/live.key }}
admin: {{ listen: {admin}, tls: {{ cert_file: {d}/live.crt, key_file: {d}/live.key }} }}
upstreams:
  up: {{ url: "{}" }}
routes:
  - {{ name: items, match: {{ method: GET, path: /items }}, upstream: up }}
"#,
            up.url()
        ),
    )
    .unwrap();
    for ext in ["crt", "key"] {
        std::fs::copy(
            dir.path().join(format!("first.{ext}")),
            dir.path().join(format!("live.{ext}")),
        )
        .unwrap();
    }
    let log = dir.path().join("junction.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_junction"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(&log).unwrap_or_default();
    let t0 = Instant::now();
    while https_get(&admin, &[&first], "/readyz").await.map(|r| r.0) != Ok(200) {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "not ready over TLS: {}",
            stderr()
        );
        assert!(child.try_wait().unwrap().is_none(), "exited: {}", stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Both ports: TLS only, with the configured certificate.
    let (status, _, served) = https_get(&data, &[&first], "/items").await.unwrap();
    assert_eq!((status, &served), (200, &first));
    let plain = super::client()
        .get(format!("http://{data}/items"))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.unwrap().status() != 200,
        "plain HTTP is not served on a TLS port"
    );

    // A renewed certificate: SIGHUP, and new handshakes get it, no restart.
    let second = write_cert(dir.path(), "second");
    for ext in ["crt", "key"] {
        std::fs::copy(
            dir.path().join(format!("second.{ext}")),
            dir.path().join(format!("live.{ext}")),
        )
        .unwrap();
    }
    let hup = |child: &std::process::Child| {
        Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap()
    };
    hup(&child);
    let t0 = Instant::now();
    loop {
        let served = https_get(&data, &[&first, &second], "/items").await;
        if served.as_ref().map(|r| &r.2) == Ok(&second) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the renewed certificate is not served: {served:?}\n{}",
            stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, served) = https_get(&admin, &[&second], "/healthz").await.unwrap();
    assert_eq!((status, &served), (200, &second), "the admin port too");

    // A broken pair: the reload is refused and the current certificate stays.
    std::fs::write(dir.path().join("live.key"), "not a key").unwrap();
    hup(&child);
    let t0 = Instant::now();
    while !stderr().contains("config reload refused") {
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stderr().contains("live.key"), "{}", stderr());
    let (status, _, served) = https_get(&data, &[&second], "/items").await.unwrap();
    assert_eq!((status, &served), (200, &second));
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_missing_certificate_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("junction.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {}\nadmin: {{ listen: {} }}\ntls: {{ cert_file: /nonexistent/x.crt, key_file: /nonexistent/x.key }}\n",
            free_addr(),
            free_addr()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_junction"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls") && err.contains("/nonexistent/x.crt"),
        "{err}"
    );
}

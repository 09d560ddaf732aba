//! `--serve ADDR`: the smallest HTTP front to a JetStream publish, the floor
//! under any HTTP gateway that answers once JetStream acknowledged: each POST's
//! body is published on the stream's subject, the answer is 202 after the ack
//! (503 when it fails). No validation, no envelope, no metrics. Two runtime
//! shapes (`--shape`):
//!   mt   one multi-thread tokio runtime (2 workers) with one NATS client;
//!   tpc  2 threads, each a current-thread runtime with its own SO_REUSEPORT
//!        listener and its own NATS client (publishes never leave the thread).
//! Serves until killed.

use async_nats::jetstream;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};

async fn publish(js: &jetstream::Context, subject: &str, req: Request<Incoming>) -> u16 {
    let Ok(body) = req.into_body().collect().await else {
        return 400;
    };
    match js.publish(subject.to_owned(), body.to_bytes()).await {
        Ok(ack) => match ack.await {
            Ok(_) => 202,
            Err(_) => 503,
        },
        Err(_) => 503,
    }
}

async fn serve(listener: TcpListener, js: jetstream::Context, subject: String) {
    loop {
        let (stream, _) = listener.accept().await.expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        let (js, subject) = (js.clone(), subject.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (js, subject) = (js.clone(), subject.clone());
                async move {
                    let status = publish(&js, &subject, req).await;
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(b"{\"status\":\"accepted\"}")))
                            .expect("a response"),
                    )
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reuseport_listener(addr: &str) -> TcpListener {
    let s = TcpSocket::new_v4().expect("socket");
    s.set_reuseaddr(true).expect("reuseaddr");
    s.set_reuseport(true).expect("reuseport");
    s.bind(addr.parse().expect("an address")).expect("bind");
    s.listen(1024).expect("listen")
}

async fn context(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.expect("connect to nats"))
}

/// Serves `addr` until killed, publishing on `subject` (the stream exists).
pub fn run(addr: &str, shape: &str, url: &str, subject: &str) {
    match shape {
        "tpc" => {
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (addr, url, subject) =
                        (addr.to_owned(), url.to_owned(), subject.to_owned());
                    std::thread::spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("runtime");
                        rt.block_on(async move {
                            let js = context(&url).await;
                            serve(reuseport_listener(&addr), js, subject).await
                        })
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("a serving thread");
            }
        }
        _ => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let js = context(url).await;
                serve(reuseport_listener(addr), js, subject.to_owned()).await
            });
        }
    }
}

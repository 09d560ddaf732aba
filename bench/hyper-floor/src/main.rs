//! Smallest hyper 1 reverse proxy: what the HTTP stack alone costs on this machine.
//!
//! No policies, no metrics, no header rewriting: accept, forward through a pooled
//! hyper-util client, stream the response back. It is the floor under any
//! hyper-based gateway, so `bench/sync-proxy.sh` runs it beside Junction to tell
//! the cost of the stack from the cost of Junction's own layers, and to compare
//! two runtime shapes.
//!
//! Usage: hyper-floor LISTEN UPSTREAM_URL [mt | tpc N]
//!   mt    one multi-thread tokio runtime, one listener (default; what Junction does);
//!   tpc N N threads, each a current-thread runtime with its own SO_REUSEPORT
//!         listener and its own client pool (thread per core, as nginx workers).
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpSocket};

type Body = BoxBody<Bytes, hyper::Error>;

async fn serve(listener: TcpListener, upstream: String) {
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                let pq = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let uri: Uri = format!("{upstream}{pq}").parse().unwrap();
                *req.uri_mut() = uri;
                async move {
                    Ok::<Response<Body>, hyper::Error>(match client.request(req).await {
                        Ok(r) => r.map(|b| b.boxed()),
                        Err(_) => Response::builder()
                            .status(502)
                            .body(Empty::new().map_err(|n| match n {}).boxed())
                            .unwrap(),
                    })
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reuseport_listener(addr: &str) -> TcpListener {
    let s = TcpSocket::new_v4().unwrap();
    s.set_reuseaddr(true).unwrap();
    s.set_reuseport(true).unwrap();
    s.bind(addr.parse().unwrap()).unwrap();
    s.listen(1024).unwrap()
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream) = (a[0].clone(), a[1].clone());
    match a.get(2).map(String::as_str).unwrap_or("mt") {
        "tpc" => {
            let n: usize = a.get(3).map(|s| s.parse().unwrap()).unwrap_or(2);
            let threads: Vec<_> = (0..n)
                .map(|_| {
                    let (listen, upstream) = (listen.clone(), upstream.clone());
                    std::thread::spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .unwrap();
                        rt.block_on(
                            async move { serve(reuseport_listener(&listen), upstream).await },
                        )
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
        _ => {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(
                async move { serve(TcpListener::bind(&listen).await.unwrap(), upstream).await },
            );
        }
    }
}

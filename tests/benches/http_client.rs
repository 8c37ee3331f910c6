//! Outgoing HTTP: GET of a small body from a local hyper server, side by side in one run, at
//! concurrency 1:
//!
//! (a) baseline: a plain hyper-util pooled client in this process;
//! (b) the component: `examples/http-fetcher` invoked in-process (`Host::invoke_http`), its
//!     `wasi:http/outgoing-handler` call routed locally to the http-client provider built
//!     into the same host, which makes the request with its pooled client;
//! (c) the same, reached over HTTP through the built-in http-server provider (the whole
//!     path a user sees: client → http-server → fetcher → http-client → server);
//! (d) for scale, an invocation of `examples/http-hello` in-process: what any component
//!     call costs before it makes an outgoing request.
//!
//! The figure to watch is (b)'s p50 over (a)'s (target ≤ 2×).
//! `cargo bench -p trellis-tests --bench http_client`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use trellis_lattice::ctl::Link;
use trellis_tests::components::http_fetcher;
use trellis_tests::hosts::start_host;
use trellis_tests::http::{free_addr, get_until};
use trellis_tests::scenario::Lattice;

const RUN: Duration = Duration::from_secs(4);

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Runs `one` back to back for [`RUN`]; the sorted latencies.
async fn measure<F, Fut>(mut one: F) -> anyhow::Result<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    // Warm pools and compiled code first.
    for _ in 0..50 {
        one().await?;
    }
    let start = Instant::now();
    let mut lat = Vec::new();
    while start.elapsed() < RUN {
        let t = Instant::now();
        one().await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    Ok(lat)
}

/// A hyper server answering `hello` to everything.
async fn server() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let svc = hyper::service::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"hello"))))
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
        }
    });
    Ok(addr)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let target = server().await?;
    let nats = trellis_tests::nats::NatsServer::start().await?;
    let host = start_host(&nats.url(), &[]).await?;
    let mut l = Lattice::on(&nats).await;
    l.start_provider(&host, "http-client", "builtin://http-client", &[]).await;
    l.start_provider(&host, "http", "builtin://http-server", &[]).await;
    l.start_component(&host, "fetcher", http_fetcher(), 16, None).await;
    l.start_component(&host, "hello", trellis_tests::components::http_hello(), 16, None).await;
    l.ctl.put_config("fetcher-out", &[("allowed_hosts".to_string(), "127.0.0.1".to_string())].into_iter().collect()).await?;
    l.ctl
        .put_link(&Link {
            source_id: "fetcher".into(),
            target: "http-client".into(),
            name: "default".into(),
            wit_namespace: "wasi".into(),
            wit_package: "http".into(),
            interfaces: vec!["outgoing-handler".into()],
            source_config: vec![],
            target_config: vec!["fetcher-out".into()],
        })
        .await?;
    let addr = free_addr()?;
    l.link("http", "fetcher", "fetcher-addr", &[("address", &addr.to_string())]).await;
    let path = format!("/?url=http%3A%2F%2F{}%2Fsmall", target);
    get_until(addr, &path, 200, Duration::from_secs(30)).await?;

    // (a)
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{target}/small").parse()?;
    let plain = measure(|| {
        let (client, uri) = (client.clone(), uri.clone());
        async move {
            let resp = client.get(uri).await?;
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::ensure!(body.as_ref() == b"hello");
            Ok(())
        }
    })
    .await?;
    // (b)
    let component = measure(|| {
        let (host, path) = (host.clone(), path.clone());
        async move {
            let req = http::Request::get(path).header("host", "bench").body(Bytes::new())?;
            let resp = host.invoke_http("fetcher", req).await?;
            anyhow::ensure!(resp.status() == 200 && resp.body().as_ref() == b"hello", "{:?}", resp.body());
            Ok(())
        }
    })
    .await?;
    // (d)
    let hello = measure(|| {
        let host = host.clone();
        async move {
            let req = http::Request::get("/").header("host", "bench").body(Bytes::new())?;
            let resp = host.invoke_http("hello", req).await?;
            anyhow::ensure!(resp.status() == 200);
            Ok(())
        }
    })
    .await?;
    // (c)
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let sender = std::sync::Arc::new(tokio::sync::Mutex::new(sender));
    let full = measure(|| {
        let (sender, path) = (sender.clone(), path.clone());
        async move {
            let mut sender = sender.lock().await;
            sender.ready().await?;
            let resp = sender.send_request(http::Request::get(path).header("host", "bench").body(Full::new(Bytes::new()))?).await?;
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::ensure!(body.as_ref() == b"hello");
            Ok(())
        }
    })
    .await?;

    println!("outgoing GET of a 5-byte body from a local hyper server, concurrency 1, {RUN:?} per row, 2 cores shared");
    println!("{:<64} {:>9} {:>9} {:>9}", "path", "p50 µs", "p99 µs", "p50 vs (a)");
    let base = pct(&plain, 0.5).as_secs_f64();
    for (name, lat) in [
        ("(a) plain hyper client (baseline)", &plain),
        ("(b) component → http-client (local routing) → server", &component),
        ("(c) HTTP in → http-server → component → http-client → server", &full),
        ("(d) for scale: invoking http-hello in-process (no outgoing call)", &hello),
    ] {
        let (p50, p99) = (pct(lat, 0.5).as_secs_f64(), pct(lat, 0.99).as_secs_f64());
        println!("{:<64} {:>9.0} {:>9.0} {:>8.2}×", name, p50 * 1e6, p99 * 1e6, p50 / base);
    }
    host.stop(Duration::from_secs(1)).await;
    Ok(())
}

//! Load for the benches: keep-alive HTTP GETs, and latency figures from what was timed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// What a load measured.
pub struct Figures {
    /// Requests answered.
    pub requests: usize,
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

impl Figures {
    /// The figures of requests that took `latencies`, in `elapsed` all together.
    pub fn from_latencies(mut latencies: Vec<Duration>, elapsed: Duration) -> Self {
        latencies.sort();
        let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or_default();
        Self { requests: latencies.len(), rps: latencies.len() as f64 / elapsed.as_secs_f64(), p50: pct(0.50), p99: pct(0.99) }
    }
}

/// `concurrency` keep-alive connections to `addr`, each sending `GET /` back to back for
/// `run`, every answer checked to be a 200 with body `expect`.
pub async fn http_gets(addr: SocketAddr, concurrency: usize, run: Duration, expect: &'static [u8]) -> anyhow::Result<Figures> {
    let start = Instant::now();
    let workers = (0..concurrency).map(|_| async move {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut lat = Vec::new();
        while start.elapsed() < run {
            sender.ready().await?;
            let t = Instant::now();
            let req = http::Request::get("/").header("host", "bench").body(Full::new(Bytes::new()))?;
            let resp = sender.send_request(req).await?;
            anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::ensure!(body.as_ref() == expect, "unexpected body {body:?}");
            lat.push(t.elapsed());
        }
        anyhow::Ok(lat)
    });
    let mut all = Vec::new();
    for r in futures::future::join_all(workers).await {
        all.extend(r?);
    }
    Ok(Figures::from_latencies(all, start.elapsed()))
}

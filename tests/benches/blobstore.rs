//! Blobstore throughput and host memory, filesystem vs NATS object store, side by side in one
//! run: a 100 MiB object written (HTTP PUT) and read back (HTTP GET) through
//! `examples/http-blobstore` behind the http-server provider, the blobstore provider built into
//! the same `trellis-host` process (local routing), one fresh host per backend so each peak
//! resident set (VmHWM, /proc) is its own. `cargo bench -p trellis-tests --bench blobstore`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use trellis_lattice::ctl::Link;
use trellis_tests::components::http_blobstore;
use trellis_tests::hosts::ProcessHost;
use trellis_tests::http::{free_addr, get_until, request};
use trellis_tests::nats::NatsServer;
use trellis_tests::scenario::{WAIT, lattice};

const SIZE: usize = 100 << 20;
const ROUNDS: usize = 3;

fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse::<u64>().ok());
    kb.map(|kb| kb * 1024).ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{pid}/status"))
}

/// Streams `GET path`, counting bytes.
async fn download(addr: SocketAddr, path: &str) -> anyhow::Result<u64> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::builder().uri(path).header(http::header::HOST, addr.to_string()).body(http_body_util::Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    anyhow::ensure!(resp.status() == 200, "GET {path}: {}", resp.status());
    let mut body = resp.into_body();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            len += data.len() as u64;
        }
    }
    Ok(len)
}

struct Row {
    backend: &'static str,
    write: Duration,
    read: Duration,
    rss_before: u64,
    rss_peak: u64,
}

async fn measure(backend: &'static str, cfg: &[(&str, &str)]) -> anyhow::Result<Row> {
    let nats = NatsServer::start().await?;
    let host = ProcessHost::start(&nats.url(), &["--max-execution-time-ms", "300000"]).await?;
    let mut l = lattice(nats).await;
    l.start_provider_on(&host.id, "http", "builtin://http-server", &[]).await;
    l.start_provider_on(&host.id, "blobstore", "builtin://blobstore", &[]).await;
    l.start_component_on(&host.id, "files", http_blobstore(), 2, None).await;
    let addr = free_addr()?;
    l.link("http", "files", "files-addr", &[("address", &addr.to_string()), ("timeout_ms", "300000")]).await;
    l.put_config("files-blobs", cfg).await;
    l.ctl
        .put_link(&Link {
            source_id: "files".into(),
            target: "blobstore".into(),
            name: "default".into(),
            wit_namespace: "wasi".into(),
            wit_package: "blobstore".into(),
            interfaces: vec!["blobstore".into()],
            source_config: vec![],
            target_config: vec!["files-blobs".into()],
        })
        .await?;
    get_until(addr, "/", 400, WAIT).await?;
    let warm = request(addr, "PUT", "/bench/warm", Bytes::from(vec![1u8; 1 << 20]), Duration::from_secs(60)).await?;
    anyhow::ensure!(warm.status == 200, "warm-up PUT: {}", warm.text());
    download(addr, "/bench/warm").await?;
    let pid = host.pid()?;
    let rss_before = peak_rss(pid)?;
    let data = Bytes::from((0..SIZE).map(|i| (i.wrapping_mul(7) ^ (i >> 11)) as u8).collect::<Vec<u8>>());
    let (mut write, mut read) = (Duration::MAX, Duration::MAX);
    for round in 0..ROUNDS {
        let path = format!("/bench/object-{round}.bin");
        let t = Instant::now();
        let up = request(addr, "PUT", &path, data.clone(), Duration::from_secs(300)).await?;
        anyhow::ensure!(up.status == 200, "PUT {path}: {}", up.text());
        write = write.min(t.elapsed());
        let t = Instant::now();
        let len = download(addr, &path).await?;
        anyhow::ensure!(len == SIZE as u64, "GET {path}: {len} bytes");
        read = read.min(t.elapsed());
        let del = request(addr, "DELETE", &path, Bytes::new(), Duration::from_secs(60)).await?;
        anyhow::ensure!(del.status == 200, "DELETE {path}: {}", del.text());
    }
    Ok(Row { backend, write, read, rss_before, rss_peak: peak_rss(pid)? })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let rows = [
        measure("filesystem", &[("root", root.path().to_str().unwrap_or("/nonexistent"))]).await?,
        measure("NATS object store", &[("backend", "nats")]).await?,
    ];
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let rate = |d: Duration| SIZE as f64 / f64::from(1 << 20) / d.as_secs_f64();
    println!("wasi:blobstore, a 100 MiB object through examples/http-blobstore (HTTP in, provider built into the host), best of {ROUNDS}, 2 cores");
    println!("{:<20} {:>12} {:>12} {:>18} {:>16} {:>10}", "backend", "write MiB/s", "read MiB/s", "host VmHWM before", "host VmHWM peak", "growth");
    for r in &rows {
        println!(
            "{:<20} {:>12.1} {:>12.1} {:>14.1} MiB {:>12.1} MiB {:>6.1} MiB",
            r.backend,
            rate(r.write),
            rate(r.read),
            mib(r.rss_before),
            mib(r.rss_peak),
            mib(r.rss_peak.saturating_sub(r.rss_before))
        );
    }
    Ok(())
}

//! HTTP throughput and latency of `examples/http-hello`, side by side in one run:
//!
//! (a) baseline: an HTTP server in this process that invokes the component in-process
//!     (`Host::invoke_http`), the way an in-host server would;
//! (b) the lattice: the http-server provider built into host B, the component on host A,
//!     every request provider → NATS → host → component and back;
//! (c) local routing: the http-server provider built into the host that runs the component,
//!     calls handed over in memory.
//!
//! Each at concurrency 1 and 64 (keep-alive connections, one request at a time each), plus a
//! raw NATS request/reply round trip as the floor for (b)'s latency.
//!
//! Then path (b) with observability off and on, side by side: `trellis-host` processes
//! (telemetry is per process) with traces off (`OTEL_SDK_DISABLED=true`), and exporting every
//! span to a real OTLP receiver in this process at sampler ratio 1.0 and 0.01
//! (`parentbased_traceidratio`), as ratios to off. With `TRELLIS_BENCH_BASE_HOST` naming a
//! `trellis-host` built from an earlier commit, that build is measured too ("today").
//! `cargo bench -p trellis-tests --bench http`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use trellis_host::Host;
use trellis_tests::components::http_hello;
use trellis_tests::hosts::ProcessHost;
use trellis_tests::hosts::start_host;
use trellis_tests::http::{free_addr, get_until};
use trellis_tests::otlp::OtlpReceiver;
use trellis_tests::scenario::Lattice;

const RUN: Duration = Duration::from_secs(4);

struct Figures {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// `concurrency` keep-alive connections, each sending GET / back to back for `RUN`.
async fn load(addr: SocketAddr, concurrency: usize) -> anyhow::Result<Figures> {
    let start = Instant::now();
    let workers = (0..concurrency).map(|_| async move {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut lat = Vec::new();
        while start.elapsed() < RUN {
            sender.ready().await?;
            let t = Instant::now();
            let req = http::Request::get("/").header("host", "bench").body(Full::new(Bytes::new()))?;
            let resp = sender.send_request(req).await?;
            anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::ensure!(body.as_ref() == b"Hello from Trellis!\n");
            lat.push(t.elapsed());
        }
        anyhow::Ok(lat)
    });
    let mut all = Vec::new();
    for r in futures::future::join_all(workers).await {
        all.extend(r?);
    }
    let elapsed = start.elapsed();
    all.sort();
    Ok(Figures { rps: all.len() as f64 / elapsed.as_secs_f64(), p50: pct(&all, 0.50), p99: pct(&all, 0.99) })
}

/// (a): a plain hyper server calling the component in-process.
async fn in_process_server(host: Host) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let host = host.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let host = host.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        let resp = match host.invoke_http("hello", http::Request::from_parts(parts, body)).await {
                            Ok(r) => r.map(Full::new),
                            Err(e) => http::Response::builder().status(500).body(Full::new(Bytes::from(e.to_string()))).unwrap_or_default(),
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}

/// The built-in http-server `id` on `host`, linked to `target` at a fresh address; returns the
/// address once it answers.
async fn provider(l: &mut Lattice, host: &Host, id: &str, target: &str) -> anyhow::Result<SocketAddr> {
    let addr = free_addr()?;
    l.start_provider(host, id, "builtin://http-server", &[]).await;
    l.link(id, target, &format!("{id}-addr"), &[("address", &addr.to_string())]).await;
    get_until(addr, "/", 200, Duration::from_secs(30)).await?;
    Ok(addr)
}

async fn nats_round_trip(client: &async_nats::Client) -> anyhow::Result<(Duration, Duration)> {
    let mut sub = client.subscribe("bench.echo").await?;
    let responder = client.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(r) = m.reply {
                let _ = responder.publish(r, m.payload).await;
            }
        }
    });
    client.flush().await?;
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let t = Instant::now();
        client.request("bench.echo", Bytes::from_static(b"ping")).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    Ok((pct(&lat, 0.5), pct(&lat, 0.99)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let nats = trellis_tests::nats::NatsServer::start().await?;
    let a = start_host(&nats.url(), &[]).await?;
    let b = start_host(&nats.url(), &[]).await?;
    let mut l = Lattice::on(&nats).await;
    l.start_component(&a, "hello", http_hello(), 128, None).await;
    l.start_component(&b, "hello-b", http_hello(), 128, None).await;
    let baseline = in_process_server(a.clone()).await?;
    // (b): provider on host B, component `hello` only on host A.
    let lattice = provider(&mut l, &b, "http-remote", "hello").await?;
    // (c): provider on host B, component `hello-b` on host B too.
    let local = provider(&mut l, &b, "http-local", "hello-b").await?;

    let (rt50, rt99) = nats_round_trip(l.ctl.nats()).await?;
    println!("http-hello over HTTP, {RUN:?} per cell, keep-alive connections, 2 cores shared with the load generator");
    println!("raw NATS request/reply round trip: p50 {:.0} µs, p99 {:.0} µs", rt50.as_secs_f64() * 1e6, rt99.as_secs_f64() * 1e6);
    println!("{:<44} {:>5} {:>10} {:>9} {:>9} {:>8}", "path", "conc", "req/s", "p50 µs", "p99 µs", "vs (a)");
    for conc in [1usize, 64] {
        let mut base_rps = 0.0;
        for (name, addr) in
            [("(a) in-process (baseline)", baseline), ("(b) provider → NATS → host", lattice), ("(c) local routing (built-in, same host)", local)]
        {
            let f = load(addr, conc).await?;
            if base_rps == 0.0 {
                base_rps = f.rps;
            }
            println!(
                "{:<44} {:>5} {:>10.0} {:>9.0} {:>9.0} {:>7.0}%",
                name,
                conc,
                f.rps,
                f.p50.as_secs_f64() * 1e6,
                f.p99.as_secs_f64() * 1e6,
                f.rps / base_rps * 100.0
            );
        }
    }
    a.stop(Duration::from_secs(1)).await;
    b.stop(Duration::from_secs(1)).await;
    observability(&nats.url(), &mut l).await
}

/// A setting of the observability comparison: its name, the `trellis-host` to run (this
/// build when `None`) and the environment it runs with.
type Setting = (&'static str, Option<std::path::PathBuf>, Vec<(String, String)>);

/// Path (b) through host processes with traces off, on at ratio 1.0 and on at 0.01 (and a
/// baseline build when `TRELLIS_BENCH_BASE_HOST` names one), measured in turns so that every
/// setting sees the same machine.
async fn observability(url: &str, l: &mut Lattice) -> anyhow::Result<()> {
    let otlp = OtlpReceiver::start().await?;
    let sampled = |ratio: &str| otlp.env(&[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", ratio)]);
    let off = vec![("OTEL_SDK_DISABLED".to_string(), "true".to_string())];
    let mut settings: Vec<Setting> = Vec::new();
    if let Some(base) = std::env::var_os("TRELLIS_BENCH_BASE_HOST") {
        settings.push(("today (earlier build)", Some(base.into()), vec![]));
    }
    settings.push(("off", None, off));
    settings.push(("on, ratio 1.0", None, sampled("1.0")));
    settings.push(("on, ratio 0.01", None, sampled("0.01")));
    let mut running = Vec::new();
    for (i, (name, binary, env)) in settings.iter().enumerate() {
        let start = || async {
            match binary {
                Some(b) => ProcessHost::start_binary(b, url, &[], env).await,
                None => ProcessHost::start_env(url, &[], env, Some(std::path::Path::new("/dev/null"))).await,
            }
        };
        let (a, b) = (start().await?, start().await?);
        let (component, provider) = (format!("hello-{i}"), format!("http-{i}"));
        l.start_component_on(&a.id, &component, http_hello(), 128, None).await;
        let addr = free_addr()?;
        l.start_provider_on(&b.id, &provider, "builtin://http-server", &[]).await;
        l.link(&provider, &component, &format!("{provider}-addr"), &[("address", &addr.to_string())]).await;
        get_until(addr, "/", 200, Duration::from_secs(30)).await?;
        running.push((*name, addr, a, b));
    }
    println!();
    println!("(b) provider → NATS → host, host processes, observability off vs on (spans to an OTLP receiver in this process)");
    println!("{:<44} {:>5} {:>10} {:>9} {:>9} {:>8}", "setting", "conc", "req/s", "p50 µs", "p99 µs", "vs off");
    const ROUNDS: usize = 2;
    for conc in [1usize, 64] {
        // Each setting runs once per round, the order turning each round; the figures are means.
        let mut sums = vec![(0.0f64, 0.0f64, 0.0f64); running.len()];
        for round in 0..ROUNDS {
            for k in 0..running.len() {
                let i = (k + round) % running.len();
                let f = load(running[i].1, conc).await?;
                sums[i].0 += f.rps / ROUNDS as f64;
                sums[i].1 += f.p50.as_secs_f64() / ROUNDS as f64;
                sums[i].2 += f.p99.as_secs_f64() / ROUNDS as f64;
            }
        }
        let rows: Vec<(&str, Figures)> = running
            .iter()
            .zip(&sums)
            .map(|((name, ..), (rps, p50, p99))| (*name, Figures { rps: *rps, p50: Duration::from_secs_f64(*p50), p99: Duration::from_secs_f64(*p99) }))
            .collect();
        let off = rows.iter().find(|(n, _)| *n == "off").map_or(1.0, |(_, f)| f.rps);
        for (name, f) in rows {
            println!("{:<44} {:>5} {:>10.0} {:>9.0} {:>9.0} {:>8.3}", name, conc, f.rps, f.p50.as_secs_f64() * 1e6, f.p99.as_secs_f64() * 1e6, f.rps / off);
        }
    }
    // The spans still queued leave within the export interval.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (spans, requests) = otlp.received();
    println!("the receiver took {spans} spans in {requests} export requests");
    Ok(())
}

//! Key-value calls from a component, side by side in one run:
//!
//! - raw NATS: a request/reply round trip between two connections (the floor);
//! - lattice: `tests/components/kvbench` on host A calls `wasi:keyvalue` get / increment,
//!   served by the keyvalue provider (memory backend) built into host B: component → host →
//!   NATS → provider → backend and back;
//! - local: the same with the provider built into host A (calls handed over in memory).
//!
//! The component times each call itself (wasi monotonic clock), so instantiation and HTTP are
//! not in the figures. Concurrency 1. `cargo bench -p trellis-tests --bench keyvalue`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use trellis_host::Host;
use trellis_lattice::ctl::Link;
use trellis_tests::components::kvbench;
use trellis_tests::hosts::start_host;
use trellis_tests::scenario::Lattice;

const CALLS: usize = 3000;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Runs `/{op}?n={n}` on `id` and returns the sorted per-call durations.
async fn run(host: &Host, id: &str, op: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let req = http::Request::get(format!("http://bench/{op}?n={n}")).body(Bytes::new())?;
    let resp = host.invoke_http(id, req).await?;
    let text = String::from_utf8_lossy(resp.body()).into_owned();
    anyhow::ensure!(resp.status() == 200, "{id} {op}: {} {text}", resp.status());
    let mut lat = text.lines().map(|l| l.parse::<u64>().map(Duration::from_nanos)).collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(lat.len() == n, "{id} {op}: {} timings for {n} calls", lat.len());
    lat.sort();
    Ok(lat)
}

async fn nats_round_trip(requester: &async_nats::Client, responder: async_nats::Client, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut sub = responder.subscribe("bench.kv.echo").await?;
    responder.flush().await?;
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(r) = m.reply {
                let _ = responder.publish(r, m.payload).await;
            }
        }
    });
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        requester.request("bench.kv.echo", Bytes::from_static(b"ping")).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    Ok(lat)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let nats = trellis_tests::nats::NatsServer::start().await?;
    let a = start_host(&nats.url(), &[]).await?;
    let b = start_host(&nats.url(), &[]).await?;
    let mut l = Lattice::on(&nats).await;
    // (component, its host, provider, the provider's host)
    let setups = [("kv-remote", &a, "kv-b", &b), ("kv-local", &a, "kv-a", &a)];
    for (component, host, provider, provider_host) in setups {
        l.start_component(host, component, kvbench(), 4, None).await;
        l.start_provider(provider_host, provider, "builtin://keyvalue", &[]).await;
        l.ctl
            .put_link(&Link {
                source_id: component.into(),
                target: provider.into(),
                name: "default".into(),
                wit_namespace: "wasi".into(),
                wit_package: "keyvalue".into(),
                interfaces: vec!["store".into(), "atomics".into()],
                source_config: vec![],
                target_config: vec![],
            })
            .await?;
    }
    // Ready when a call goes through; then warm up.
    for (component, host, ..) in setups {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = run(host, component, "get", 1).await {
            anyhow::ensure!(Instant::now() < deadline, "{component} never got ready: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        run(host, component, "get", 300).await?;
    }

    let raw = nats_round_trip(&nats.client().await?, nats.client().await?, CALLS).await?;
    let (raw50, raw99) = (pct(&raw, 0.5), pct(&raw, 0.99));
    println!("wasi:keyvalue from a component, memory backend, {CALLS} calls per row at concurrency 1, 2 cores");
    println!("{:<52} {:>9} {:>9} {:>12}", "path", "p50 µs", "p99 µs", "p50 vs raw");
    println!("{:<52} {:>9.0} {:>9.0} {:>11.2}×", "raw NATS request/reply (two connections)", us(raw50), us(raw99), 1.0);
    for (component, host, ..) in setups {
        for op in ["get", "increment"] {
            let lat = run(host, component, op, CALLS).await?;
            let (p50, p99) = (pct(&lat, 0.5), pct(&lat, 0.99));
            let path =
                if component == "kv-remote" { "component → NATS → provider on another host" } else { "local routing (provider built into the same host)" };
            println!("{:<52} {:>9.0} {:>9.0} {:>11.2}×", format!("{op:<9} {path}"), us(p50), us(p99), p50.as_secs_f64() / raw50.as_secs_f64());
        }
    }
    a.stop(Duration::from_secs(1)).await;
    b.stop(Duration::from_secs(1)).await;
    Ok(())
}

//! Start latency of the hello component by where it comes from, side by side in one run, rounds
//! interleaved: `component.scale` → `component_scaled`, and → the first answered invocation,
//! (a) from a file with a cold compiled-code cache, (b) from the registry with cold caches,
//! (c) from the registry on a restarted host with warm caches, (d) a second id of the same bytes
//! on that host; then pull throughput of a 15 MB component from the registry and from the
//! lattice store (no cache).
//!
//! `cargo bench -p trellis-tests --bench artifacts` (needs docker-registry, as the tests do).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use trellis_host::Host;
use trellis_host::artifacts::{Artifacts, Kind, OciSettings, StoreAccess};
use trellis_host::publish::{self, Payload};
use trellis_lattice::artifact::{ArtifactRef, LatticeRef, LatticeStore};
use trellis_lattice::ctl::ScaleComponentCommand;
use trellis_tests::components::{file_ref, http_hello};
use trellis_tests::hosts::{Events, config};
use trellis_tests::nats::NatsServer;
use trellis_tests::registry::Registry;

const ROUNDS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Scales `reference` as `id` on `host`; (time to `component_scaled`, time to the first answer).
async fn start(ctl: &trellis_lattice::client::CtlClient, events: &mut Events, host: &Host, id: &str, reference: &str) -> (Duration, Duration) {
    let began = Instant::now();
    ctl.scale_component(&ScaleComponentCommand {
        component_ref: reference.into(),
        component_id: id.into(),
        max_instances: 4,
        host_id: host.id().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let ev = events.wait_for_any(&["component_scaled", "component_scale_failed"], Duration::from_secs(60), |e| e.data["component_id"] == id).await.unwrap();
    assert_eq!(ev.name(), "component_scaled", "{}", ev.data);
    let scaled = began.elapsed();
    let req = http::Request::get("http://localhost/").body(Bytes::new()).unwrap();
    let reply = host.invoke_http(id, req).await.unwrap();
    assert_eq!(reply.status(), 200);
    (scaled, began.elapsed())
}

fn host_config(nats: &str, registry: &Registry, cache: &std::path::Path) -> trellis_host::HostConfig {
    let mut c = config(nats, &[]);
    c.oci = OciSettings { allowed_insecure: vec![registry.addr.clone()], ..Default::default() };
    c.cache_dir = Some(cache.into());
    c
}

#[tokio::main]
async fn main() {
    let registry = Registry::start().await.unwrap();
    let nats = NatsServer::start().await.unwrap();
    let ctl = trellis_lattice::client::CtlClient::new(nats.client().await.unwrap(), "default");
    let mut events = Events::subscribe(ctl.nats(), "default").await.unwrap();
    let hello = std::fs::read(http_hello()).unwrap();
    let oci = OciSettings { allowed_insecure: vec![registry.addr.clone()], ..Default::default() };
    let reference = registry.reference("bench/hello:1.0");
    let ArtifactRef::Oci(r) = ArtifactRef::parse(&reference).unwrap() else { unreachable!() };
    publish::push_oci(&oci, &r, Payload::Wasm, hello.clone()).await.unwrap();

    let names = ["(a) file, cold compile", "(b) registry, cold caches", "(c) registry, restarted host, warm caches", "(d) second id, same bytes"];
    let mut scaled: Vec<Vec<Duration>> = vec![Vec::new(); 4];
    let mut answered: Vec<Vec<Duration>> = vec![Vec::new(); 4];
    for round in 0..ROUNDS {
        // (a)
        let cold = tempfile::tempdir().unwrap();
        let host = Host::start(host_config(&nats.url(), &registry, cold.path())).await.unwrap();
        let (s, a) = start(&ctl, &mut events, &host, &format!("a{round}"), &file_ref(http_hello())).await;
        scaled[0].push(s);
        answered[0].push(a);
        host.stop(Duration::from_secs(5)).await;
        // (b)
        let cache = tempfile::tempdir().unwrap();
        let host = Host::start(host_config(&nats.url(), &registry, cache.path())).await.unwrap();
        let (s, a) = start(&ctl, &mut events, &host, &format!("b{round}"), &reference).await;
        scaled[1].push(s);
        answered[1].push(a);
        // Give the compiled-code cache its write (it runs beside the start, not in it).
        tokio::time::sleep(Duration::from_millis(300)).await;
        host.stop(Duration::from_secs(5)).await;
        // (c), then (d) on the same host
        let host = Host::start(host_config(&nats.url(), &registry, cache.path())).await.unwrap();
        let (s, a) = start(&ctl, &mut events, &host, &format!("c{round}"), &reference).await;
        scaled[2].push(s);
        answered[2].push(a);
        let (s, a) = start(&ctl, &mut events, &host, &format!("d{round}"), &reference).await;
        scaled[3].push(s);
        answered[3].push(a);
        host.stop(Duration::from_secs(5)).await;
    }
    println!("start latency of http-hello ({} bytes), median of {ROUNDS} interleaved rounds:", hello.len());
    println!("{:<44} {:>12} {:>14}", "path", "→ scaled ms", "→ answered ms");
    let medians: Vec<(Duration, Duration)> = (0..4).map(|i| (median(scaled[i].clone()), median(answered[i].clone()))).collect();
    for (i, name) in names.iter().enumerate() {
        println!("{name:<44} {:>12} {:>14}", ms(medians[i].0), ms(medians[i].1));
    }
    let ratio = |x: Duration, y: Duration| x.as_secs_f64() / y.as_secs_f64();
    println!("(c)/(d) to scaled: {:.2}x; (a)/(c) to scaled: {:.1}x", ratio(medians[2].0, medians[3].0), ratio(medians[0].0, medians[2].0));

    // Pull throughput of a 15 MB component (hello plus a 15 MB custom section).
    let mut big = hello.clone();
    let padding: Vec<u8> = (0..15u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let name = b"trellis-bench-padding";
    let mut section = Vec::new();
    leb128(&mut section, name.len() as u64);
    section.extend_from_slice(name);
    section.extend_from_slice(&padding);
    big.push(0);
    leb128(&mut big, section.len() as u64);
    big.extend_from_slice(&section);
    let big_ref = registry.reference("bench/big:1.0");
    let ArtifactRef::Oci(r) = ArtifactRef::parse(&big_ref).unwrap() else { unreachable!() };
    publish::push_oci(&oci, &r, Payload::Wasm, big.clone()).await.unwrap();
    let js = trellis_lattice::state::jetstream(ctl.nats().clone(), None);
    LatticeStore::new(js, "default")
        .put(&LatticeRef { name: "bench/big".into(), tag: Some("1.0".into()), digest: None }, trellis_lattice::artifact::WASM_LAYER, &big)
        .await
        .unwrap();
    let mb = big.len() as f64 / (1 << 20) as f64;
    println!("pull of a {mb:.1} MiB component, no cache, median of 3:");
    for (what, reference) in [("registry", big_ref.as_str()), ("lattice store", "lattice://bench/big:1.0")] {
        let mut times = Vec::new();
        for _ in 0..3 {
            let store = StoreAccess { nats: ctl.nats().clone(), lattice: "default".into(), js_domain: None };
            let artifacts = Artifacts::new(oci.clone(), false, None, Some(store));
            let began = Instant::now();
            let fetched = artifacts.fetch(reference, Kind::Component).await.unwrap();
            times.push(began.elapsed());
            assert_eq!(fetched.bytes.len(), big.len());
        }
        let t = median(times);
        println!("  {what:<14} {:>8} ms  {:>7.1} MiB/s", ms(t), mb / t.as_secs_f64());
    }
}

fn leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

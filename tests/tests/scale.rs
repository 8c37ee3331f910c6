//! At scale: 10,000 idle components (one small example component under 10,000 ids) on one
//! `trellis-host` process. Heartbeats keep flowing and stay small, `host.get` and
//! `wash get inventory` answer (paged), and the host's RSS, read from `/proc`, stays under
//! 600 MiB.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use futures::StreamExt;
use trellis_lattice::client::CtlClient;
use trellis_lattice::ctl::*;
use trellis_lattice::event::CloudEvent;
use trellis_lattice::subject::{self, CtlOp, CtlSubjects};
use trellis_tests::components::{file_ref, http_hello};
use trellis_tests::hosts::{ProcessHost, workspace_binary};
use trellis_tests::nats::NatsServer;

const COMPONENTS: usize = 10_000;

/// The resident set of process `pid`, in bytes, from `/proc/{pid}/status`.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).unwrap().parse().unwrap();
    kib * 1024
}

/// The next heartbeat of `host` on `sub`, with its size on the wire.
async fn heartbeat(sub: &mut async_nats::Subscriber, host: &str) -> (HostInventory, usize) {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.expect("a heartbeat within 10 s").unwrap();
        let ev = CloudEvent::from_slice(&msg.payload).unwrap();
        if ev.source == host {
            return (serde_json::from_value(ev.data).unwrap(), msg.payload.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_components_on_one_host() {
    let nats = NatsServer::start().await.unwrap();
    let host = ProcessHost::start(&nats.url(), &[]).await.unwrap();
    let pid = host.pid().unwrap();
    let client = nats.client().await.unwrap();
    let ctl = CtlClient::new(client.clone(), "default").with_timeout(Duration::from_secs(30));
    let mut beats = client.subscribe(subject::event("default", "host_heartbeat")).await.unwrap();
    let mut failures = client.subscribe(subject::event("default", "component_scale_failed")).await.unwrap();
    let rss_idle = rss(pid);

    // 10,000 scale requests, 32 in flight; each is acknowledged at once and done in order.
    let started = Instant::now();
    let reference = file_ref(http_hello());
    futures::stream::iter(0..COMPONENTS)
        .for_each_concurrent(32, |n| {
            let (ctl, reference, host_id) = (ctl.clone(), reference.clone(), host.id.clone());
            async move {
                let cmd = ScaleComponentCommand { component_ref: reference, component_id: format!("c{n:05}"), max_instances: 1, host_id, ..Default::default() };
                ctl.scale_component(&cmd).await.unwrap();
            }
        })
        .await;
    // Wait for a heartbeat that counts them all.
    let deadline = Instant::now() + Duration::from_secs(300);
    let (beat, size) = loop {
        let (beat, size) = tokio::select! {
            beat = heartbeat(&mut beats, &host.id) => beat,
            Some(failed) = failures.next() => panic!("a scale failed: {}", String::from_utf8_lossy(&failed.payload)),
        };
        if beat.summary.as_ref().is_some_and(|s| s.components == COMPONENTS) {
            break (beat, size);
        }
        assert!(Instant::now() < deadline, "10,000 components did not start within 300 s (at {:?})", beat.summary);
    };
    let scaled_in = started.elapsed();

    // Heartbeats keep flowing, and are counts and a digest rather than 2 MB of inventory.
    let summary = beat.summary.clone().unwrap();
    assert!(!summary.listed && beat.components.is_empty(), "a heartbeat leaves the lists out at this size");
    assert!(size <= HEARTBEAT_BUDGET, "a heartbeat is {size} bytes");
    let (next_beat, _) = heartbeat(&mut beats, &host.id).await;
    assert_eq!(next_beat.summary.as_ref().map(|s| s.digest.clone()), Some(summary.digest.clone()), "idle: the digest holds still");

    // host.get: one page for a client that does not page, the whole for CtlClient.
    let raw = client.request(CtlSubjects::new("default").subject(&CtlOp::HostGet(host.id.clone())), "".into()).await.unwrap();
    assert!(raw.payload.len() <= REPLY_BUDGET + 4096, "a page of host.get is {} bytes", raw.payload.len());
    let first: CtlResponse<HostInventory> = serde_json::from_slice(&raw.payload).unwrap();
    assert!(first.next.is_some(), "host.get at 10,000 components is paged");
    let asked = Instant::now();
    let inv = ctl.get_host_inventory(&host.id).await.unwrap();
    let get_took = asked.elapsed();
    assert_eq!(inv.components.len(), COMPONENTS);
    assert_eq!(InventorySummary::of(&inv.components, &inv.providers, true).digest, summary.digest, "the pages put together are the inventory");
    let mut ids: Vec<&str> = inv.components.iter().map(|c| c.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), COMPONENTS, "no component listed twice");

    // wash get inventory, through the same client.
    let wash = workspace_binary("wash", "wash").unwrap();
    let asked = Instant::now();
    let out = std::process::Command::new(wash)
        .args(["get", "inventory", &host.id, "-o", "json", "--ctl-port", &nats.port().to_string()])
        .env("WASH_TIMEOUT_MS", "30000")
        .env("WASH_HOME", std::env::temp_dir())
        .output()
        .unwrap();
    let wash_took = asked.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = json.pointer("/inventories/0/components");
    assert_eq!(listed.and_then(|c| c.as_array()).map(Vec::len), Some(COMPONENTS), "wash lists them all: {:.300}", String::from_utf8_lossy(&out.stdout));

    // The host still answers pings.
    assert_eq!(ctl.ping_hosts().await.unwrap().len(), 1);

    let rss_full = rss(pid);
    println!(
        "10,000 components: started in {scaled_in:?}; heartbeat {size} bytes; host.get (paged) {get_took:?}; wash get inventory {wash_took:?}; RSS {} MiB idle, {} MiB with 10,000",
        rss_idle >> 20,
        rss_full >> 20
    );
    assert!(rss_full < 600 << 20, "RSS is {} MiB", rss_full >> 20);
}

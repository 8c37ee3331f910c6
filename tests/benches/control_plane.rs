//! How the control plane grows with the number of hosts: for 5, 20 and 50 hosts in one lattice
//! (in-process hosts, plus one `trellis-host` process to lose), with one app whose
//! spreadscaler puts 2 replicas of `http-hello` on every host, it measures
//!
//! - the time from `model.put` + `model.deploy` to `Deployed`;
//! - the leader's reconcile pass at rest (median and max over the rest window), from the
//!   leader's `trellis_host::apps::pass` debug line;
//! - messages per second on the lattice at rest: the server's own counters (`/varz` `in_msgs`,
//!   what clients published, and `out_msgs`, what it delivered), and what a `>` subscriber sees,
//!   by kind;
//! - the time to re-place the replicas of a host killed with SIGKILL (its heartbeats stop;
//!   the reconciler's host-loss window is 3 heartbeat intervals of 1 s).
//!
//! Then prints a table. `cargo bench -p trellis-tests --bench control_plane` (`HOSTS=5,20`
//! picks the sizes; `REST_SECONDS` the rest window, default 10).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use trellis_host::{Host, HostConfig};
use trellis_lattice::app::{AppClient, StatusType};
use trellis_lattice::client::CtlClient;
use trellis_tests::components::{file_ref, http_hello};
use trellis_tests::hosts::ProcessHost;
use trellis_tests::nats::NatsServer;

const APP: &str = "spread";
const ID: &str = "spread-hello";
const REPLICAS_PER_HOST: u32 = 2;

/// The leader's reconcile pass times (µs), as logged.
#[derive(Clone, Default)]
struct Passes(Arc<Mutex<Vec<u64>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Passes {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "trellis_host::apps::pass" {
            return;
        }
        struct Us(Option<u64>);
        impl tracing::field::Visit for Us {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "pass_us" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut us = Us(None);
        event.record(&mut us);
        if let Some(us) = us.0 {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(us);
        }
    }
}

impl Passes {
    fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn manifest(instances: u32) -> String {
    format!(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: {APP}\n  annotations:\n    version: v1\nspec:\n  components:\n    - name: hello\n      type: component\n      properties:\n        image: {}\n        id: {ID}\n      traits:\n        - type: spreadscaler\n          properties:\n            instances: {instances}\n",
        file_ref(http_hello())
    )
}

/// A host as the tests make them (1 s heartbeat), without the pooling allocator: 50 engines'
/// worth of reserved address space is more than this bench needs.
async fn in_process_host(url: &str) -> anyhow::Result<Host> {
    let mut c: HostConfig = trellis_tests::hosts::config(url, &[]);
    c.runtime.pooling = false;
    c.runtime.max_total_instances = 16;
    c.builtins = Vec::new();
    Ok(Host::start(c).await?)
}

struct Row {
    hosts: usize,
    deploy: Duration,
    pass_median: Duration,
    pass_max: Duration,
    passes: usize,
    in_per_s: f64,
    out_per_s: f64,
    seen: BTreeMap<String, f64>,
    replace: Duration,
}

/// What a subject is, for the message counts.
fn kind(subject: &str) -> String {
    let parts: Vec<&str> = subject.split('.').collect();
    match parts.as_slice() {
        ["wasmbus", "evt", _, name, ..] => format!("evt.{name}"),
        ["wasmbus", "ctl", "v1", _, op, ..] => format!("ctl.{op}"),
        ["$JS", "API", rest @ ..] => format!("$JS.API.{}", rest.first().unwrap_or(&"")),
        ["$KV", bucket, ..] => format!("$KV.{}", bucket.split('_').next().unwrap_or(bucket)),
        ["$JS", second, ..] => format!("$JS.{second}"),
        ["_INBOX", ..] => "_INBOX (replies)".into(),
        [first, ..] => format!("{first}.…"),
        [] => String::new(),
    }
}

async fn total_replicas(ctl: &CtlClient, hosts: &[String]) -> u32 {
    let invs = futures::future::join_all(hosts.iter().map(|h| ctl.get_host_inventory(h))).await;
    invs.into_iter().flatten().flat_map(|inv| inv.components).filter(|c| c.id == ID).map(|c| c.max_instances).sum()
}

async fn measure(n: usize, passes: &Passes, rest: Duration) -> anyhow::Result<Row> {
    let nats = NatsServer::start().await?;
    let url = nats.url();
    let mut hosts = Vec::new();
    for _ in 0..n - 1 {
        hosts.push(in_process_host(&url).await?);
    }
    // The one to lose: a process, so that SIGKILL stops its heartbeats with no host_stopped.
    let mut doomed = ProcessHost::start(&url, &["--max-total-instances", "16"]).await?;
    let client = nats.client().await?;
    let ctl = CtlClient::new(client.clone(), "default").with_timeout(Duration::from_secs(10));
    let apps = AppClient::new(client.clone(), "default").with_timeout(Duration::from_secs(10));
    let ids: Vec<String> = hosts.iter().map(|h| h.id().to_string()).chain([doomed.id.clone()]).collect();
    // Every host is heard before the deploy (the leader places on the hosts it hears from).
    let deadline = Instant::now() + Duration::from_secs(60);
    while ctl.ping_hosts().await.map(|h| h.len()).unwrap_or(0) < n {
        anyhow::ensure!(Instant::now() < deadline, "not all {n} hosts answer a ping");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let instances = REPLICAS_PER_HOST * n as u32;
    let started = Instant::now();
    apps.put(&manifest(instances)).await?;
    apps.deploy(APP, None).await?;
    loop {
        if apps.status(APP).await.is_ok_and(|s| s.state() == StatusType::Deployed) {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "{n} hosts: not Deployed within 600 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deploy = started.elapsed();
    anyhow::ensure!(total_replicas(&ctl, &ids).await == instances, "Deployed, but the replicas are not all there");
    // Let the last events and watches settle before measuring rest.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // At rest: the server's counters over the window (no subscriber of ours adds to them), and
    // the leader's passes.
    passes.take();
    let varz0 = nats.monitor("varz").await?;
    let t0 = Instant::now();
    tokio::time::sleep(rest).await;
    let varz1 = nats.monitor("varz").await?;
    let secs = t0.elapsed().as_secs_f64();
    let count = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let in_per_s = (count(&varz1, "in_msgs") - count(&varz0, "in_msgs")) / secs;
    let out_per_s = (count(&varz1, "out_msgs") - count(&varz0, "out_msgs")) / secs;
    let mut times = passes.take();
    times.sort_unstable();
    let pass_median = Duration::from_micros(times.get(times.len() / 2).copied().unwrap_or(0));
    let pass_max = Duration::from_micros(times.last().copied().unwrap_or(0));

    // What is published, by kind, for another window (a `>` subscriber sees every message of
    // the account once).
    let mut all = client.subscribe(">").await?;
    client.flush().await?;
    let mut seen: BTreeMap<String, f64> = BTreeMap::new();
    let window = Instant::now();
    while window.elapsed() < rest {
        match tokio::time::timeout(rest.saturating_sub(window.elapsed()), all.next()).await {
            Ok(Some(msg)) => *seen.entry(kind(msg.subject.as_str())).or_default() += 1.0,
            _ => break,
        }
    }
    let secs = window.elapsed().as_secs_f64();
    seen.values_mut().for_each(|v| *v /= secs);
    drop(all);

    // Lose a host: its replicas must be re-placed on the others.
    let survivors: Vec<String> = hosts.iter().map(|h| h.id().to_string()).collect();
    let killed = Instant::now();
    doomed.signal("KILL")?;
    let _ = doomed.wait(Duration::from_secs(5)).await;
    loop {
        if total_replicas(&ctl, &survivors).await == instances {
            break;
        }
        anyhow::ensure!(killed.elapsed() < Duration::from_secs(300), "{n} hosts: the lost replicas were not re-placed within 300 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let replace = killed.elapsed();
    for h in &hosts {
        h.stop(Duration::from_secs(2)).await;
    }
    Ok(Row { hosts: n, deploy, pass_median, pass_max, passes: times.len(), in_per_s, out_per_s, seen, replace })
}

fn main() -> anyhow::Result<()> {
    let passes = Passes::default();
    let filter = tracing_subscriber::EnvFilter::new("warn,trellis_host::apps::pass=debug");
    // Printed: warnings only (the pass lines are for `Passes`).
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(tracing_subscriber::filter::LevelFilter::WARN);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(filter).with(passes.clone()).with(fmt))?;
    let sizes: Vec<usize> =
        std::env::var("HOSTS").ok().map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect()).unwrap_or_else(|| vec![5, 20, 50]);
    let rest = Duration::from_secs(std::env::var("REST_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rows = Vec::new();
    for n in sizes {
        eprintln!("control plane: {n} hosts …");
        let row = rt.block_on(measure(n.max(2), &passes, rest))?;
        eprintln!(
            "  {n} hosts: deploy {:.1} s, pass {:?} median / {:?} max, {:.0} in/s, {:.0} out/s, re-placed in {:.1} s",
            row.deploy.as_secs_f64(),
            row.pass_median,
            row.pass_max,
            row.in_per_s,
            row.out_per_s,
            row.replace.as_secs_f64()
        );
        rows.push(row);
    }
    println!();
    println!(
        "| hosts | deploy → Deployed | reconcile pass (median / max, n) | msgs/s in (published) | msgs/s out (delivered) | out/s per host | re-place a lost host |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} s | {:.1} ms / {:.1} ms ({}) | {:.0} | {:.0} | {:.1} | {:.1} s |",
            r.hosts,
            r.deploy.as_secs_f64(),
            r.pass_median.as_secs_f64() * 1e3,
            r.pass_max.as_secs_f64() * 1e3,
            r.passes,
            r.in_per_s,
            r.out_per_s,
            r.out_per_s / r.hosts as f64,
            r.replace.as_secs_f64()
        );
    }
    println!();
    println!("Published at rest, per second, by kind (a `>` subscriber):");
    let kinds: std::collections::BTreeSet<&String> = rows.iter().flat_map(|r| r.seen.keys()).collect();
    print!("| kind |");
    rows.iter().for_each(|r| print!(" {} hosts |", r.hosts));
    println!();
    println!("|---|{}", "---|".repeat(rows.len()));
    for k in kinds {
        print!("| {k} |");
        rows.iter().for_each(|r| print!(" {:.1} |", r.seen.get(k).copied().unwrap_or(0.0)));
        println!();
    }
    Ok(())
}

//! A lattice on a three-node NATS cluster: state buckets replicated over the nodes
//! (`HostConfig::js_replicas`, `--js-replicas`), and one node killed under HTTP load and link,
//! config and app writes without losing anything.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use tokio::time::Instant;
use trellis_host::Host;
use trellis_lattice::app::{AppClient, apps_bucket};
use trellis_lattice::client::CtlClient;
use trellis_lattice::ctl::Link;
use trellis_lattice::state;
use trellis_tests::components::{file_ref, http_hello};
use trellis_tests::hosts::{config, init_tracing};
use trellis_tests::http::{Load, free_addr, get_until};
use trellis_tests::nats::{NatsCluster, NatsServer};
use trellis_tests::scenario::{Lattice, WAIT};

/// A host on `url` whose state buckets get `replicas` copies.
async fn host(url: &str, replicas: usize) -> anyhow::Result<Host> {
    init_tracing();
    let mut c = config(url, &[]);
    c.js_replicas = replicas;
    Ok(Host::start(c).await?)
}

/// The replica count of KV bucket `bucket`, as the server has it.
async fn replicas_of(js: &async_nats::jetstream::Context, bucket: &str) -> usize {
    let mut stream = js.get_stream(format!("KV_{bucket}")).await.unwrap();
    stream.info().await.unwrap().config.num_replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_buckets_are_replicated_as_configured() {
    let cluster = NatsCluster::start(3).await.unwrap();
    let client = cluster.client().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    // A bucket left from a single-server past (one replica) is scaled up to the host's count.
    let old = state::BucketSpec::latest(state::config_bucket("default"));
    state::create_bucket(&js, &old, 1).await.unwrap();
    assert_eq!(replicas_of(&js, &old.name).await, 1);

    let mut c = config(&cluster.url(), &[]);
    c.js_replicas = 3;
    c.secrets_xkey_seed = Some(nkeys::XKey::new().seed().unwrap());
    let h = Host::start(c).await.unwrap();
    let secrets = trellis_lattice::secrets::bucket("default");
    for bucket in [state::lattice_bucket("default"), state::config_bucket("default"), apps_bucket("default"), secrets.clone()] {
        assert_eq!(replicas_of(&js, &bucket).await, 3, "bucket {bucket}");
    }
    // What the secrets bucket was created with besides the replicas is kept.
    let mut stream = js.get_stream(format!("KV_{secrets}")).await.unwrap();
    assert_eq!(stream.info().await.unwrap().config.max_messages_per_subject, 10);
    h.stop(Duration::from_secs(5)).await;

    // On one server three replicas cannot be made: the host says so and does not start.
    let single = NatsServer::start().await.unwrap();
    let err = host(&single.url(), 3).await.err().unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("cannot create KV bucket `LATTICEDATA_default` with 3 replicas"), "{msg}");
    // A count JetStream would refuse is refused before anything is sent.
    let err = host(&single.url(), 9).await.err().unwrap();
    assert!(format!("{err:#}").contains("replica count must be 1 to 5; got 9"), "{err:#}");
}

/// Every write the writer saw acknowledged, by kind.
#[derive(Default)]
struct Acked {
    links: BTreeSet<String>,
    configs: BTreeSet<String>,
    versions: BTreeSet<String>,
    /// The longest one write took to be acknowledged, retries included.
    slowest: Duration,
    /// Attempts that failed (and were retried).
    retried: usize,
}

fn writer_link(i: usize) -> Link {
    Link {
        source_id: format!("writer-{i}"),
        target: "hello".into(),
        name: "default".into(),
        wit_namespace: "wasi".into(),
        wit_package: "keyvalue".into(),
        interfaces: vec!["store".into()],
        source_config: vec![],
        target_config: vec![],
    }
}

fn app_version(i: usize) -> String {
    format!(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: stored\n  annotations:\n    version: v{i}\nspec:\n  components:\n    - name: hello\n      type: component\n      properties:\n        image: {}\n",
        file_ref(http_hello())
    )
}

/// Retries `op` until it succeeds or `stop` is set (then the write is not counted); how long
/// it took. Each retry of a link, config or app put is idempotent.
async fn until_acked<F, Fut>(acked: &Mutex<Acked>, stop: &std::sync::atomic::AtomicBool, mut op: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis_lattice::Error>>,
{
    let started = Instant::now();
    loop {
        match op().await {
            Ok(()) => {
                let mut a = acked.lock().unwrap();
                a.slowest = a.slowest.max(started.elapsed());
                return true;
            }
            Err(_) if stop.load(std::sync::atomic::Ordering::Relaxed) => return false,
            Err(_) => {
                acked.lock().unwrap().retried += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_nats_node_loses_no_state_and_requests_resume() {
    let mut cluster = NatsCluster::start(3).await.unwrap();
    let url = cluster.url();
    let a = host(&url, 3).await.unwrap();
    let b = host(&url, 3).await.unwrap();
    let web = host(&url, 3).await.unwrap();
    let mut l = Lattice::over(cluster.client().await.unwrap(), &url).await;
    l.start_component(&a, "hello", http_hello(), 4, None).await;
    l.start_component(&b, "hello", http_hello(), 4, None).await;
    l.start_provider(&web, "http", "builtin://http-server", &[]).await;
    let addr = free_addr().unwrap();
    l.link_at("http", "hello", addr, &[]).await;
    assert_eq!(get_until(addr, "/", 200, WAIT).await.unwrap().text(), "Hello from Trellis!\n");

    // The node to kill: the one the HTTP provider's host is connected to, so that both the
    // HTTP path and a host's control and state traffic have to move.
    let web_name = format!("trellis-host {}", web.id());
    let mut victim = None;
    for i in 0..cluster.len() {
        if cluster.node(i).client_names().await.unwrap().contains(&web_name) {
            victim = Some(i);
        }
    }
    let victim = victim.expect("the web host is connected to no node");

    // Writers: links, config and app versions, one after another, each retried until
    // acknowledged, on a client of their own (any node).
    let writer_client = cluster.client().await.unwrap();
    let ctl = CtlClient::new(writer_client.clone(), "default").with_timeout(Duration::from_secs(2));
    let apps = AppClient::new(writer_client, "default").with_timeout(Duration::from_secs(2));
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let (acked, stop) = (acked.clone(), stop.clone());
        async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let cfg = format!("cfg-{i}");
                let values = [("i".to_string(), i.to_string())].into();
                if until_acked(&acked, &stop, || ctl.put_config(&cfg, &values)).await {
                    acked.lock().unwrap().configs.insert(cfg);
                }
                let link = writer_link(i);
                if until_acked(&acked, &stop, || ctl.put_link(&link)).await {
                    acked.lock().unwrap().links.insert(link.source_id.clone());
                }
                let manifest = app_version(i);
                if until_acked(&acked, &stop, || async { apps.put(&manifest).await.map(|_| ()) }).await {
                    acked.lock().unwrap().versions.insert(format!("v{i}"));
                }
                i += 1;
            }
        }
    });

    let load = Load::start(addr, &[b"Hello from Trellis!\n"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = Instant::now();
    cluster.kill(victim);
    eprintln!("killed node {victim} ({})", cluster.node(victim).url());

    // Every host is connected to a surviving node again.
    let names: Vec<String> = [&a, &b, &web].iter().map(|h| format!("trellis-host {}", h.id())).collect();
    let reconnected = loop {
        let mut seen = BTreeSet::new();
        for i in (0..cluster.len()).filter(|i| *i != victim) {
            seen.extend(cluster.node(i).client_names().await.unwrap_or_default());
        }
        if names.iter().all(|n| seen.contains(n)) {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < WAIT, "hosts not back on the surviving nodes: {names:?} vs {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A link put now reaches every host's live view (their watches moved with them).
    let after = Link { source_id: "after-kill".into(), ..writer_link(0) };
    let put_at = Instant::now();
    loop {
        match l.ctl.put_link(&after).await {
            Ok(()) => break,
            Err(e) => assert!(put_at.elapsed() < WAIT, "no link put after the kill: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let link_acked = killed.elapsed();
    // Before the live view checked quiet watches against the stream, a host whose watch
    // consumer went with the node never saw it (2 runs of 3).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let missing: Vec<&str> = [&a, &b, &web].iter().filter(|h| !h.links().contains(&after)).map(|h| h.id()).collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let mut on = Vec::new();
            for i in (0..cluster.len()).filter(|i| *i != victim) {
                on.push((i, cluster.node(i).client_names().await.unwrap_or_default()));
            }
            panic!("the link put after the kill reached no view of {missing:?} in 30 s (web {}, clients per node {on:?})", web.id());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let link_applied = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let requests = load.stop().await;
    writer.await.unwrap();

    // Requests: how many failed, and the longest time nothing was answered after the kill.
    let mut answered: Vec<Instant> = requests.iter().filter(|r| r.error.is_none()).map(|r| r.done).collect();
    answered.sort();
    let failed: Vec<&str> = requests.iter().filter_map(|r| r.error.as_deref()).collect();
    let mut last = killed;
    let mut stall = Duration::ZERO;
    for t in answered.iter().filter(|t| **t > killed) {
        stall = stall.max(*t - last);
        last = *t;
    }
    let resumed = answered.iter().find(|t| **t > killed).map(|t| *t - killed);
    let a_ = std::mem::take(&mut *acked.lock().unwrap());
    eprintln!(
        "node kill: {} requests, {} failed {:?}; longest stall after the kill {stall:?} (first answer {resumed:?}); hosts reconnected in {reconnected:?}; \
         a new link was acknowledged {link_acked:?} and reached every host {link_applied:?} after the kill; writes acknowledged: {} links, {} configs, {} app versions ({} retried attempts, slowest write {:?})",
        requests.len(),
        failed.len(),
        &failed[..failed.len().min(3)],
        a_.links.len(),
        a_.configs.len(),
        a_.versions.len(),
        a_.retried,
        a_.slowest
    );
    assert!(stall < Duration::from_secs(10), "requests stalled for {stall:?} after the node was killed");
    assert!(answered.iter().filter(|t| **t > killed + stall).count() > 20, "too few requests answered after the kill");
    assert!(a_.links.len() > 3, "too few writes to mean anything");

    // Nothing acknowledged was lost: not in the registry, not in any host's view.
    let links: BTreeSet<String> = l.ctl.get_links().await.unwrap().into_iter().map(|k| k.source_id).filter(|s| s.starts_with("writer-")).collect();
    let missing: Vec<&String> = a_.links.difference(&links).collect();
    assert!(missing.is_empty(), "acknowledged links lost: {missing:?}");
    for h in [&a, &b, &web] {
        let seen: BTreeSet<String> = h.links().into_iter().map(|k| k.source_id).collect();
        assert!(a_.links.is_subset(&seen), "host {} misses acknowledged links", h.id());
    }
    for cfg in &a_.configs {
        let got = l.ctl.get_config(cfg).await.unwrap_or_else(|e| panic!("acknowledged config {cfg} lost: {e}"));
        assert_eq!(got["i"], cfg.trim_start_matches("cfg-"));
    }
    let versions: BTreeSet<String> = AppClient::new(l.client(), "default").versions("stored").await.unwrap().into_iter().map(|v| v.version).collect();
    let missing: Vec<&String> = a_.versions.difference(&versions).collect();
    assert!(missing.is_empty(), "acknowledged app versions lost: {missing:?}");
}

/// What a node loss does to a state watch, without the cluster: the server-side consumers of the
/// links bucket vanish. The live view notices at the next change (its watch is quiet, yet the
/// stream moved on) rather than when async-nats misses two 5 s heartbeats, or never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_consumer_vanished_resumes_at_the_next_change() {
    let nats = NatsServer::start().await.unwrap();
    let h = host(&nats.url(), 1).await.unwrap();
    let l = Lattice::on(&nats).await;
    let first = writer_link(1);
    l.put_link_seen(&[&h], &first).await;
    let js = async_nats::jetstream::new(l.client());
    let stream = js.get_stream(format!("KV_{}", state::lattice_bucket("default"))).await.unwrap();
    let names: Vec<String> = stream.consumer_names().map(|n| n.unwrap()).collect().await;
    assert!(!names.is_empty(), "the host watches the links bucket");
    for name in names {
        stream.delete_consumer(&name).await.unwrap();
    }
    let put = Instant::now();
    let second = writer_link(2);
    l.ctl.put_link(&second).await.unwrap();
    while !h.links().contains(&second) {
        assert!(put.elapsed() < Duration::from_secs(30), "the link never reached the host's view");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = put.elapsed();
    eprintln!("a link put after the watch's consumer vanished reached the view in {took:?}");
    // Quiet for 2 s, one stream-info request, 0.5 s before the new watch: well under the 5 s
    // (at least) async-nats takes to miss two heartbeats.
    assert!(took < Duration::from_secs(4), "the view took {took:?}");
}

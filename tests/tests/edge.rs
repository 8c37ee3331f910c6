//! Edge and cloud: a hub nats-server with JetStream in domain `hub`, and edge hosts behind
//! leaf-node servers. Lattice state stays in the hub's domain, so an edge host (`--js-domain
//! hub`) shares the registry, config and apps with every other host, and an app deployed from
//! the hub places, links and serves across the leaf connection.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use trellis_host::{Host, HostError};
use trellis_lattice::app::{AppClient, StatusType};
use trellis_lattice::client::CtlClient;
use trellis_lattice::ctl::Link;
use trellis_tests::apps::wait_status;
use trellis_tests::components::{file_ref, http_hello, http_kv_counter};
use trellis_tests::hosts::{ProcessHost, config, host_binary, http_server_provider_binary, init_tracing, start_host};
use trellis_tests::http::{free_addr, get, get_until};
use trellis_tests::nats::NatsServer;
use trellis_tests::scenario::{Lattice, WAIT, wait_until};

const LONG: Duration = Duration::from_secs(90);

/// The manifest of `examples/edge-and-cloud` (the counter at the edge, its key-value provider
/// in the cloud, counts in the hub's bucket `edge-counters`), with this build's component and
/// the http-server listening on `addr`.
fn edge_manifest(addr: std::net::SocketAddr) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/edge-and-cloud/wadm.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for part in ["file://../../target/wasm/wasm32-wasip2/release/http_kv_counter.wasm", "address: 0.0.0.0:8002"] {
        assert!(text.contains(part), "{} no longer holds `{part}`; update this test", path.display());
    }
    text.replace("file://../../target/wasm/wasm32-wasip2/release/http_kv_counter.wasm", &file_ref(http_kv_counter()))
        .replace("address: 0.0.0.0:8002", &format!("address: \"{addr}\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_deployed_from_the_hub_counts_at_the_edge_in_a_cloud_bucket() {
    let hub = NatsServer::start_hub("hub").await.unwrap();
    let cloud = start_host(&hub.url(), &[("zone", "cloud")]).await.unwrap();
    // A real `trellis-host` that starts its own leaf server, as on an edge box.
    let leaf_port = free_addr().unwrap().port().to_string();
    let leaf_dir = tempfile::tempdir().unwrap();
    let leaf_url = hub.leaf_url().unwrap();
    let edge_args = [
        "--nats-remote-url",
        &leaf_url,
        "--js-domain",
        "hub",
        "--nats-js-domain",
        "edge",
        "--nats-port",
        &leaf_port,
        "--nats-leaf-dir",
        leaf_dir.path().to_str().unwrap(),
        "-l",
        "zone=edge",
    ];
    let edge = ProcessHost::start_with(&edge_args).await.unwrap();
    let hub_client = hub.client().await.unwrap();
    let ctl = CtlClient::new(hub_client.clone(), "default");
    wait_for_hosts(&ctl, &[cloud.id(), &edge.id]).await;
    let hosts = ctl.ping_hosts().await.unwrap();
    let edge_info = hosts.iter().find(|h| h.id == edge.id).unwrap();
    assert_eq!(edge_info.js_domain.as_deref(), Some("hub"), "{edge_info:?}");
    assert_eq!(edge_info.labels.get("zone").map(String::as_str), Some("edge"));

    // Deployed from the hub.
    let addr = free_addr().unwrap();
    let apps = AppClient::new(hub_client.clone(), "default");
    apps.put(&edge_manifest(addr)).await.unwrap();
    apps.deploy("edge-counter", None).await.unwrap();
    wait_status(&apps, "edge-counter", StatusType::Deployed, LONG).await;
    // Placed where the manifest says: the counter and the http-server at the edge, the
    // key-value provider in the cloud.
    let at_edge = ctl.get_host_inventory(&edge.id).await.unwrap();
    assert_eq!(at_edge.components.iter().filter(|c| c.id == "edge_counter-counter").map(|c| c.max_instances).sum::<u32>(), 2, "{at_edge:?}");
    assert!(at_edge.providers.iter().any(|p| p.id == "edge_counter-httpserver"), "{at_edge:?}");
    let in_cloud = ctl.get_host_inventory(cloud.id()).await.unwrap();
    assert!(in_cloud.providers.iter().any(|p| p.id == "edge_counter-keyvalue"), "{in_cloud:?}");
    assert!(in_cloud.components.is_empty(), "{in_cloud:?}");

    // HTTP at the edge counts in the cloud's bucket.
    if let Err(e) = get_until(addr, "/warm-up", 200, WAIT).await {
        panic!("{e:#}\n{}", edge_diagnostics(&ctl, &edge.id, leaf_dir.path(), &leaf_port).await);
    }
    for n in 1..=3 {
        let reply = get(addr, "/visits").await.unwrap();
        assert_eq!((reply.status, reply.text()), (200, format!("{n}\n")));
    }
    let bucket = async_nats::jetstream::new(hub_client.clone()).get_key_value("edge-counters").await.unwrap();
    let stored = bucket.get("visits").await.unwrap().expect("the count is stored in the hub's domain");
    assert_eq!(stored.as_ref(), b"3");

    // The edge box crashes (SIGKILL: its leaf server, in a process group of its own, lives on
    // and holds the port) and its host comes back: the new run stops the leftover server and
    // starts its own, the app is placed on the new host, and the count goes on.
    drop(edge);
    let edge = ProcessHost::start_with(&edge_args).await.unwrap();
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let inv = ctl.get_host_inventory(&edge.id).await.unwrap();
        let counters = inv.components.iter().filter(|c| c.id == "edge_counter-counter").map(|c| c.max_instances).sum::<u32>();
        if counters == 2 && inv.providers.iter().any(|p| p.id == "edge_counter-httpserver") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the app never came back to the restarted edge host: {inv:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    get_until(addr, "/warm-up", 200, WAIT).await.unwrap();
    assert_eq!(get(addr, "/visits").await.unwrap().text(), "4\n");

    apps.undeploy("edge-counter").await.unwrap();
    let deadline = tokio::time::Instant::now() + LONG;
    while !ctl.get_host_inventory(&edge.id).await.unwrap().components.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "undeploy left the counter at the edge");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // An orderly stop takes the leaf server down with the host.
    let mut edge = edge;
    edge.sigterm().unwrap();
    assert!(edge.wait(Duration::from_secs(20)).await.unwrap().success());
    let pid_file = leaf_dir.path().join("nats.pid");
    assert!(!pid_file.exists(), "the leaf server's pid file outlived the host");
    assert!(
        !matches!(trellis_host::nats_server::probe("127.0.0.1", leaf_port.parse().unwrap()).await, Ok(trellis_host::nats_server::Probe::Nats)),
        "the leaf server outlived the host"
    );
}

/// What the edge side looks like when its listener does not answer: the links and config as
/// the hub and the edge's leaf server show them, the edge host's inventory, and the tail of
/// the leaf server's log.
async fn edge_diagnostics(ctl: &CtlClient, edge_id: &str, leaf_dir: &std::path::Path, leaf_port: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!("hub links: {:?}\n", ctl.get_links().await));
    out.push_str(&format!("hub config edge-counter-http: {:?}\n", ctl.get_config("edge-counter-http").await));
    out.push_str(&format!("edge inventory: {:?}\n", ctl.get_host_inventory(edge_id).await));
    match async_nats::connect(format!("nats://127.0.0.1:{leaf_port}")).await {
        Ok(leaf) => out.push_str(&format!("links via the leaf: {:?}\n", CtlClient::new(leaf, "default").get_links().await)),
        Err(e) => out.push_str(&format!("cannot connect to the leaf server: {e}\n")),
    }
    let log = std::fs::read_to_string(leaf_dir.join("nats.log")).unwrap_or_else(|e| format!("no leaf log: {e}"));
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    out.push_str("leaf nats.log (last 40 lines):\n");
    for line in tail.into_iter().rev() {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_behind_a_leaf_shares_the_hubs_registry_and_is_told_what_a_wrong_domain_means() {
    init_tracing();
    let hub = NatsServer::start_hub("hub").await.unwrap();
    let leaf = NatsServer::start_leaf(&hub, Some("edge")).await.unwrap();
    let mut edge_config = config(&leaf.url(), &[("zone", "edge")]);
    edge_config.js_domain = Some("hub".into());
    let edge = Host::start(edge_config).await.unwrap();

    // A link put at the hub reaches the edge host's view, and one put at the edge the hub's.
    let hub_ctl = CtlClient::new(hub.client().await.unwrap(), "default");
    let leaf_ctl = CtlClient::new(leaf.client().await.unwrap(), "default");
    let link = |source: &str| Link {
        source_id: source.into(),
        target: "counter".into(),
        name: "default".into(),
        wit_namespace: "wasi".into(),
        wit_package: "keyvalue".into(),
        interfaces: vec!["store".into()],
        source_config: vec![],
        target_config: vec![],
    };
    hub_ctl.put_link(&link("from-hub")).await.unwrap();
    wait_until("the edge host sees the hub's link", || edge.links().iter().any(|l| l.source_id == "from-hub")).await;
    leaf_ctl.put_link(&link("from-edge")).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !hub_ctl.get_links().await.unwrap().iter().any(|l| l.source_id == "from-edge") {
        assert!(tokio::time::Instant::now() < deadline, "the hub never saw the edge's link");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A provider process the edge host starts gets the domain too: the http-server learns its
    // link (put at the hub) and serves a component that runs in the cloud.
    let cloud = start_host(&hub.url(), &[("zone", "cloud")]).await.unwrap();
    let mut l = Lattice::on(&hub).await;
    l.start_component(&cloud, "hello", http_hello(), 4, None).await;
    l.start_provider(&edge, "http", &file_ref(http_server_provider_binary().unwrap()), &[]).await;
    let addr = free_addr().unwrap();
    l.link("http", "hello", "edge-hello-addr", &[("address", &addr.to_string())]).await;
    assert_eq!(get_until(addr, "/", 200, WAIT).await.unwrap().text(), "Hello from Trellis!\n");

    // A domain nobody serves: the host refuses to start and says what to fix.
    let mut wrong = config(&leaf.url(), &[]);
    wrong.js_domain = Some("nowhere".into());
    let err = match Host::start(wrong).await {
        Err(e @ HostError::Registry(_)) => e.to_string(),
        other => panic!("expected a registry error, got {:?}", other.map(|h| h.id().to_string())),
    };
    assert!(err.contains("JetStream domain `nowhere` (--js-domain) did not answer") && err.contains("jetstream { domain: nowhere }"), "{err}");

    // Without --js-domain, `--nats-remote-url` would split the lattice's state: refused.
    let out = tokio::process::Command::new(host_binary().unwrap())
        .args(["--nats-remote-url", &hub.leaf_url().unwrap(), "--nats-port", &free_addr().unwrap().port().to_string()])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--nats-remote-url needs --js-domain naming the hub's JetStream domain"), "{stderr}");
    edge.stop(Duration::from_secs(2)).await;
    cloud.stop(Duration::from_secs(2)).await;
}

async fn wait_for_hosts(ctl: &CtlClient, ids: &[&str]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = ctl.ping_hosts().await.unwrap();
        if ids.iter().all(|id| seen.iter().any(|h| h.id == *id)) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "hosts {ids:?} did not all answer pings at the hub: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

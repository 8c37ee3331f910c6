//! A NATS server that restarts under a running lattice: hosts reconnect, resubscribe and keep
//! their state; the registry (JetStream KV, on disk) and the data plane work again.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use trellis_lattice::client::CtlClient;
use trellis_tests::components::http_hello;
use trellis_tests::hosts::start_host;
use trellis_tests::http::{free_addr, get_until};
use trellis_tests::nats::NatsServer;
use trellis_tests::scenario::{Lattice, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lattice_survives_a_nats_restart() {
    let mut nats = NatsServer::start().await.unwrap();
    let url = nats.url();
    let host = start_host(&url, &[("zone", "restart")]).await.unwrap();
    let web = start_host(&url, &[]).await.unwrap();
    // A control client of our own, so that the scenario's may be dropped with its server handle.
    let ctl = CtlClient::new(nats.client().await.unwrap(), "default").with_auction_timeout(Duration::from_millis(750));
    let addr = free_addr().unwrap();
    {
        let mut l = Lattice::on(&nats).await;
        l.start_component(&host, "hello", http_hello(), 4, None).await;
        l.start_provider(&web, "http", "builtin://http-server", &[]).await;
        l.link("http", "hello", "hello-addr", &[("address", &addr.to_string())]).await;
    }
    assert_eq!(get_until(addr, "/", 200, WAIT).await.unwrap().text(), "Hello from Trellis!\n");

    nats.restart().await.unwrap();

    // Control plane: both hosts answer again once reconnected.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let hosts = ctl.ping_hosts().await.unwrap_or_default();
        if hosts.len() == 2 {
            assert!(hosts.iter().any(|h| h.labels.get("zone").map(String::as_str) == Some("restart")));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "hosts did not come back after the restart: {hosts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // State: the link and its config are still there, and new writes work.
    let links = ctl.get_links().await.unwrap();
    assert_eq!(links.len(), 1, "{links:?}");
    ctl.put_config("after-restart", &[("k".to_string(), "v".to_string())].into()).await.unwrap();
    assert_eq!(ctl.get_config("after-restart").await.unwrap()["k"], "v");
    // Data plane: the request crosses NATS again.
    assert_eq!(get_until(addr, "/", 200, WAIT).await.unwrap().text(), "Hello from Trellis!\n");
    assert_eq!(ctl.get_host_inventory(host.id()).await.unwrap().components[0].id, "hello");
}

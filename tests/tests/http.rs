//! HTTP across the lattice: the http-server provider (as a process and built in) hands requests
//! to components on other hosts over the data plane, and back.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use bytes::Bytes;
use trellis_tests::components::{http_hello, misbehave};
use trellis_tests::hosts::start_host;
use trellis_tests::http::{free_addr, get, get_until, request};
use trellis_tests::nats::NatsServer;
use trellis_tests::scenario::{WAIT, behind_provider_process, lattice};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_provider_process_reaches_a_component_on_another_host() {
    let (l, a, _b, addr) = behind_provider_process("hello", http_hello(), &[]).await;

    let r = get_until(addr, "/", 200, WAIT).await.unwrap();
    assert_eq!(r.text(), "Hello from Trellis!\n");
    assert_eq!(r.headers["content-type"], "text/plain");
    assert_eq!(a.invocations("hello").await, 1, "host A ran it");

    // The link goes: the next request is a 503 that names what is missing.
    l.unlink("http", "hello").await;
    let r = get_until(addr, "/", 503, WAIT).await.unwrap();
    assert!(r.text().contains("no link from `http` for wasi:http/incoming-handler"), "{}", r.text());
    // It comes back: served again, nothing restarted.
    l.link_at("http", "hello", addr, &[]).await;
    assert_eq!(get_until(addr, "/", 200, WAIT).await.unwrap().text(), "Hello from Trellis!\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_routing_shares_one_port_between_components_on_two_hosts() {
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let other = start_host(&nats.url(), &[]).await.unwrap();
    let mut l = lattice(nats).await;
    l.start_component(&host, "hello", http_hello(), 2, None).await;
    l.start_component(&other, "other", misbehave(), 2, None).await;
    let addr = free_addr().unwrap();
    l.start_provider(&host, "web", "builtin://http-server", &[("routing_mode", "path"), ("default_address", &addr.to_string())]).await;
    l.link("web", "hello", "hello-path", &[("path", "/hello")]).await;
    l.link("web", "other", "other-path", &[("path", "/other")]).await;

    assert_eq!(get_until(addr, "/hello", 200, WAIT).await.unwrap().text(), "Hello from Trellis!\n");
    assert_eq!(get_until(addr, "/other", 200, WAIT).await.unwrap().text(), "misbehave v1\n");
    assert_eq!(get(addr, "/hello/deeper?x=1").await.unwrap().text(), "Hello from Trellis!\n");
    let r = get(addr, "/nowhere").await.unwrap();
    assert_eq!(r.status, 503);
    assert!(r.text().contains("for path `/nowhere`"), "{}", r.text());
    let inv = l.ctl.get_host_inventory(host.id()).await.unwrap();
    assert_eq!(inv.providers[0].id, "web");
    assert_eq!(inv.providers[0].image_ref.as_deref(), Some("builtin://http-server"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_two_hosts_share_the_load() {
    let nats = NatsServer::start().await.unwrap();
    let a = start_host(&nats.url(), &[]).await.unwrap();
    let b = start_host(&nats.url(), &[]).await.unwrap();
    let edge = start_host(&nats.url(), &[]).await.unwrap();
    let mut l = lattice(nats).await;
    l.start_component(&a, "hello", http_hello(), 8, None).await;
    l.start_component(&b, "hello", http_hello(), 8, None).await;
    let addr = free_addr().unwrap();
    l.start_provider(&edge, "http", "builtin://http-server", &[]).await;
    l.link_at("http", "hello", addr, &[]).await;
    get_until(addr, "/", 200, WAIT).await.unwrap();

    let mut ok = 0;
    for _ in 0..10 {
        for r in futures::future::join_all((0..20).map(|_| get(addr, "/"))).await {
            let r = r.unwrap();
            assert_eq!(r.text(), "Hello from Trellis!\n");
            ok += 1;
        }
    }
    assert_eq!(ok, 200);
    let (na, nb) = (a.invocations("hello").await, b.invocations("hello").await);
    assert_eq!(na + nb, 201, "every request ran exactly once");
    assert!(na > 10 && nb > 10, "both replicas served: {na} and {nb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_stream_and_failures_name_what_is_missing() {
    let (l, _a, _b, addr) = behind_provider_process("echo", misbehave(), &[("timeout_ms", "600")]).await;
    get_until(addr, "/", 200, WAIT).await.unwrap();

    // 10 MiB through provider → NATS → component → NATS → provider, intact.
    let big: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let r = request(addr, "POST", "/echo", Bytes::from(big.clone()), Duration::from_secs(60)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body.len(), big.len());
    assert!(r.body.as_ref() == big.as_slice(), "the echoed body differs");

    // Past the link's timeout: 408, quickly.
    let started = std::time::Instant::now();
    let r = get(addr, "/loop").await.unwrap();
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // No replica anywhere: the error names lattice, source, target and interface.
    let ghost = free_addr().unwrap();
    l.link_at("http", "ghost", ghost, &[]).await;
    let r = get_until(ghost, "/", 503, WAIT).await.unwrap();
    let t = r.text();
    for part in ["no running replica of `ghost`", "lattice `default`", "source `http`", "target `ghost`", "interface `wasi:http/incoming-handler`"] {
        assert!(t.contains(part), "{t}");
    }
    // The host is fine: still serving.
    assert_eq!(get(addr, "/").await.unwrap().text(), "misbehave v1\n");
}

//! WASI 0.3 components (`wasi:http/handler@0.3.0`, async handlers) beside 0.2 ones: served over
//! the lattice (the http-server provider as a process on another host), by local routing (the
//! built-in provider on the component's host) and by direct invocation, under the same limits.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use trellis_lattice::ctl::Link;
use trellis_tests::components::{file_ref, http_hello, http_hello_p3, misbehave_p3, ponger};
use trellis_tests::hosts::{http_server_provider_binary, start_host};
use trellis_tests::http::{free_addr, get_until, request};
use trellis_tests::nats::NatsServer;
use trellis_tests::scenario::{WAIT, lattice, wait_until};

const HELLO_P3: &str = "Hello from Trellis (WASI 0.3)!\n";

fn get_req(path: &str) -> http::Request<Bytes> {
    http::Request::get(format!("http://localhost{path}")).body(Bytes::new()).unwrap()
}

fn limits(pairs: &[(&str, u64)]) -> Option<BTreeMap<String, String>> {
    Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// A body of `n` bytes that is not one repeated byte, so a lost or reordered chunk shows.
fn pattern(n: usize) -> Bytes {
    (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_p3_hello_answers_over_the_lattice_and_locally_beside_the_p2_hello() {
    let nats = NatsServer::start().await.unwrap();
    let a = start_host(&nats.url(), &[]).await.unwrap();
    let b = start_host(&nats.url(), &[]).await.unwrap();
    let mut l = lattice(nats).await;
    l.start_component(&a, "hello3", http_hello_p3(), 4, None).await;
    l.start_component(&a, "hello2", http_hello(), 4, None).await;

    // The lattice path: the provider runs as a process on host B; the components on host A.
    let provider = file_ref(http_server_provider_binary().unwrap());
    l.start_provider(&b, "http", &provider, &[]).await;
    let (addr3, addr2) = (free_addr().unwrap(), free_addr().unwrap());
    l.link_at("http", "hello3", addr3, &[]).await;
    l.link_at("http", "hello2", addr2, &[]).await;
    let t = Instant::now();
    let r = get_until(addr3, "/", 200, WAIT).await.unwrap();
    eprintln!("first answer took {:?}", t.elapsed());
    assert_eq!(r.text(), HELLO_P3);
    assert_eq!(r.headers["content-type"], "text/plain");
    assert_eq!(get_until(addr2, "/", 200, WAIT).await.unwrap().text(), "Hello from Trellis!\n");
    assert_eq!(a.invocations("hello3").await, 1, "host A ran the 0.3 hello");

    // A streamed body both ways, larger than one NATS message (it travels chunked), through
    // the 0.3 component's `stream<u8>` in and out.
    let big = pattern(3 << 20);
    let t = Instant::now();
    let r = request(addr3, "POST", "/echo", big.clone(), WAIT).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body.len(), big.len());
    assert!(r.body == big, "the echoed body differs");
    eprintln!("echo of 3 MiB took {:?}", t.elapsed());

    // Local routing: the built-in provider on host A reaches both without NATS.
    let local = free_addr().unwrap();
    l.start_provider(&a, "web", "builtin://http-server", &[("routing_mode", "path"), ("default_address", &local.to_string())]).await;
    l.link("web", "hello3", "hello3-path", &[("path", "/p3")]).await;
    l.link("web", "hello2", "hello2-path", &[("path", "/p2")]).await;
    assert_eq!(get_until(local, "/p3", 200, WAIT).await.unwrap().text(), HELLO_P3);
    assert_eq!(get_until(local, "/p2", 200, WAIT).await.unwrap().text(), "Hello from Trellis!\n");

    // Direct invocation (what the host's own callers use).
    assert_eq!(a.invoke_http("hello3", get_req("/sleep?ms=10")).await.unwrap().body().as_ref(), b"slept 10\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_spinning_p3_handler_hits_its_deadline_and_the_host_stays_responsive() {
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let mut l = lattice(nats).await;
    l.start_component(&host, "slow", misbehave_p3(), 1, limits(&[("max_execution_time_ms", 500)])).await;
    l.start_component(&host, "hello3", http_hello_p3(), 1, None).await;

    for path in ["/sleep?ms=30000", "/loop"] {
        let started = Instant::now();
        // Meanwhile another component on the host answers: no worker is held by the guest.
        let (err, other) = tokio::join!(host.invoke_http("slow", get_req(path)), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            host.invoke_http("hello3", get_req("/")).await
        });
        let err = err.unwrap_err().to_string();
        assert!(err.contains("did not finish within its deadline of 500 ms"), "{path}: {err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{path}: the deadline was not enforced: {:?}", started.elapsed());
        assert_eq!(other.unwrap().body().as_ref(), HELLO_P3.as_bytes());
        // Its only instance slot came back: the next request is served.
        assert_eq!(host.invoke_http("slow", get_req("/")).await.unwrap().body().as_ref(), b"misbehave-p3 v1\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p3_component_over_its_memory_cap_is_stopped_cleanly() {
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let mut l = lattice(nats).await;
    // A generous deadline, so that the cap, not the clock, stops it.
    l.start_component(&host, "hog", misbehave_p3(), 1, limits(&[("max_linear_memory_bytes", 32 << 20), ("max_execution_time_ms", 20_000)])).await;
    let err = host.invoke_http("hog", get_req("/grow")).await.unwrap_err().to_string();
    assert!(err.contains("memory"), "{err}");
    assert!(!err.contains("deadline"), "{err}");
    assert!(!err.contains("wasm backtrace"), "the backtrace belongs in the debug log: {err}");
    eprintln!("memory trap as a caller sees it: {err}");
    assert_eq!(host.invoke_http("hog", get_req("/")).await.unwrap().body().as_ref(), b"misbehave-p3 v1\n");
}

fn sample(text: &str, name: &str, id: &str) -> Option<f64> {
    let prefix = format!("{name}{{component_id=\"{id}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_instances_limits_p3_requests_in_flight_until_their_last_body_byte() {
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let mut l = lattice(nats).await;
    l.start_component(&host, "two", misbehave_p3(), 2, None).await;

    // Six requests against a limit of two. Each guest returns its head at once and writes its
    // body 600 ms later from a task that outlives `handle`: the slot is held until that body
    // is done, so two run, four queue, and the whole takes three rounds.
    let started = Instant::now();
    let calls = futures::future::join_all((0..6).map(|_| host.invoke_http("two", get_req("/late?ms=600"))));
    let watch = wait_until("two in flight and four queued", || {
        let text = host.metrics_text();
        sample(&text, "trellis_component_active_instances", "two") == Some(2.0) && sample(&text, "trellis_component_queued_calls", "two") == Some(4.0)
    });
    let (answers, ()) = tokio::join!(calls, watch);
    for a in answers {
        assert_eq!(a.unwrap().body().as_ref(), b"late 600\n");
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1800), "six 600 ms requests at two at a time took only {took:?}");
    let text = host.metrics_text();
    assert_eq!(sample(&text, "trellis_component_active_instances", "two"), Some(0.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p3_component_calls_a_0_2_form_interface_through_a_link_and_gets_no_ambient_authority() {
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let mut l = lattice(nats).await;
    l.start_component(&host, "m3", misbehave_p3(), 1, None).await;
    l.start_component(&host, "ponger", ponger(), 1, None).await;

    // No link yet: the call fails with the host's message naming what to add.
    let err = host.invoke_http("m3", get_req("/ping?message=hi")).await.unwrap_err().to_string();
    assert!(err.contains("trellis:examples/pingpong") && err.contains("wash link put"), "{err}");
    let link = Link {
        source_id: "m3".into(),
        target: "ponger".into(),
        name: "default".into(),
        wit_namespace: "trellis".into(),
        wit_package: "examples".into(),
        interfaces: vec!["pingpong".into()],
        source_config: vec![],
        target_config: vec![],
    };
    l.put_link_seen(&[&host], &link).await;
    let r = host.invoke_http("m3", get_req("/ping?message=hi")).await.unwrap();
    assert_eq!(String::from_utf8_lossy(r.body()), "pong hi #1\n");

    // Deny by default through the 0.3 interfaces too: no directories, no environment, no TCP.
    let r = host.invoke_http("m3", get_req("/authority")).await.unwrap();
    assert_eq!(String::from_utf8_lossy(r.body()), "dirs=0 env=0 tcp=create:ErrorCode::AccessDenied\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_importing_wasi_0_3_in_a_form_the_host_lacks_fails_to_start_naming_it() {
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let mut l = lattice(nats).await;
    let dir = tempfile::tempdir().unwrap();
    // A component built against a WASI 0.3 release candidate: its `wasi:io` is gone in 0.3.0.
    let wasm = wat::parse_str(r#"(component (import "wasi:io/streams@0.3.0" (instance (export "read" (func (result u32))))))"#).unwrap();
    let path = dir.path().join("old-p3.wasm");
    std::fs::write(&path, wasm).unwrap();
    l.ctl
        .scale_component(&trellis_lattice::ctl::ScaleComponentCommand {
            component_ref: file_ref(&path),
            component_id: "old".into(),
            max_instances: 1,
            host_id: host.id().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let ev = l.events.wait_for("component_scale_failed", WAIT, |e| e.data["component_id"] == "old").await.unwrap();
    let error = ev.data["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("`wasi:io/streams@0.3.0`") && error.contains("`wasi:io@0.2.x`"), "{error}");
    // The host serves on.
    l.start_component(&host, "hello3", http_hello_p3(), 1, None).await;
    assert_eq!(host.invoke_http("hello3", get_req("/")).await.unwrap().body().as_ref(), HELLO_P3.as_bytes());
}

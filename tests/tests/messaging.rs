//! `wasmcloud:messaging` end to end: the messaging-nats provider (built in, and as a `file://`
//! process) subscribes for its handler links and delivers to `examples/messaging-echo`, which
//! answers through its consumer link; `tests/components/messenger` drives `request` and
//! `publish` from HTTP, so broker failures can be seen as the error values a component gets.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use trellis_host::Host;
use trellis_lattice::ctl::*;
use trellis_tests::assert_contains_all;
use trellis_tests::components::{file_ref, messaging_echo, messenger};
use trellis_tests::hosts::workspace_binary;
use trellis_tests::nats::NatsServer;
use trellis_tests::scenario::{Lattice, WAIT, lattice};

const PROVIDER: &str = "messaging";

/// Starts the messaging provider (`reference`) as `messaging` on `host`.
async fn start_provider(lattice: &mut Lattice, host: &Host, reference: &str) {
    lattice.start_provider(host, PROVIDER, reference, &[]).await;
}

/// The provider delivers the subscriptions of config `cfg` to `component`.
fn handler_link(component: &str, cfg: &str) -> Link {
    Link {
        source_id: PROVIDER.into(),
        target: component.into(),
        name: "default".into(),
        wit_namespace: "wasmcloud".into(),
        wit_package: "messaging".into(),
        interfaces: vec!["handler".into()],
        source_config: vec![cfg.into()],
        target_config: vec![],
    }
}

/// `component` publishes and requests through the provider.
fn consumer_link(component: &str, target_config: &[&str]) -> Link {
    Link {
        source_id: component.into(),
        target: PROVIDER.into(),
        name: "default".into(),
        wit_namespace: "wasmcloud".into(),
        wit_package: "messaging".into(),
        interfaces: vec!["consumer".into()],
        source_config: vec![],
        target_config: target_config.iter().map(|c| c.to_string()).collect(),
    }
}

async fn request(nats: &async_nats::Client, subject: &str, body: &[u8]) -> Result<Bytes, async_nats::RequestError> {
    let req = async_nats::Request::new().payload(Bytes::copy_from_slice(body)).timeout(Some(Duration::from_secs(5)));
    nats.send_request(subject.to_string(), req).await.map(|m| m.payload)
}

fn no_responders(r: &Result<Bytes, async_nats::RequestError>) -> bool {
    matches!(r, Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders)
}

/// Requests until something subscribes to `subject` (the provider, once it has seen its link)
/// and answers.
async fn request_until(nats: &async_nats::Client, subject: &str, body: &[u8]) -> Bytes {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = request(nats, subject, body).await;
        if no_responders(&r) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        return r.unwrap_or_else(|e| panic!("request to `{subject}` failed: {e}"));
    }
}

/// Requests until nothing subscribes to `subject` any more.
async fn until_no_responders(nats: &async_nats::Client, subject: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !no_responders(&request(nats, subject, b"anyone?").await) {
        assert!(tokio::time::Instant::now() < deadline, "`{subject}` still has a subscriber");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls messenger over HTTP: status and body.
async fn messenger_call(host: &Host, path: &str, body: &[u8]) -> (u16, String) {
    let req = http::Request::post(format!("http://localhost{path}")).body(Bytes::copy_from_slice(body)).unwrap();
    let resp = host.invoke_http("messenger", req).await.unwrap();
    (resp.status().as_u16(), String::from_utf8_lossy(resp.body()).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_request_to_a_subscribed_subject_gets_the_components_answer() {
    let mut lattice = Lattice::new().await;
    let (a, b) = (lattice.host().await, lattice.host().await);
    start_provider(&mut lattice, &a, "builtin://messaging-nats").await;
    // The component runs on the other host: delivery and answer both cross NATS.
    lattice.scale(&b, "echo", messaging_echo(), 4).await;
    lattice.put_link_seen(&[&a, &b], &consumer_link("echo", &[])).await;
    lattice.put_config("echo-subs", &[("SUBSCRIPTIONS", "echo.>")]).await;
    lattice.put_link_seen(&[&a, &b], &handler_link("echo", "echo-subs")).await;

    let nats = &lattice.client();
    assert_eq!(request_until(nats, "echo.hi", b"hello, world").await.as_ref(), b"HELLO, WORLD");
    // Bytes pass untouched but ASCII letters; an empty body stays empty.
    assert_eq!(request(nats, "echo.bin", &[0, b'a', 0xff, b'Z']).await.unwrap().as_ref(), &[0, b'A', 0xff, b'Z']);
    assert_eq!(request(nats, "echo.empty", b"").await.unwrap().as_ref(), b"");

    // Concurrent requests, each with its own answer.
    let replies =
        futures::future::join_all((0..24).map(|i| async move { (i, request(nats, &format!("echo.n{i}"), format!("msg {i}").as_bytes()).await) })).await;
    for (i, r) in replies {
        assert_eq!(r.unwrap().as_ref(), format!("MSG {i}").as_bytes());
    }

    // A message without a reply subject is delivered and dropped: nothing to answer.
    let before = b.invocations("echo").await;
    nats.publish("echo.fire-and-forget", Bytes::from_static(b"x")).await.unwrap();
    wait_until_async("the fire-and-forget message to be delivered", || async { b.invocations("echo").await > before }).await;
    // Still answering.
    assert_eq!(request(nats, "echo.after", b"ok").await.unwrap().as_ref(), b"OK");
}

async fn wait_until_async<F: std::future::Future<Output = bool>>(what: &str, cond: impl Fn() -> F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_subscription_on_two_hosts_answers_each_request_exactly_once() {
    let mut lattice = Lattice::new().await;
    let (a, b) = (lattice.host().await, lattice.host().await);
    for h in [&a, &b] {
        start_provider(&mut lattice, h, "builtin://messaging-nats").await;
        lattice.scale(h, "echo", messaging_echo(), 4).await;
    }
    lattice.put_link_seen(&[&a, &b], &consumer_link("echo", &[])).await;
    lattice.put_config("work-subs", &[("SUBSCRIPTIONS", "work.*|workers")]).await;
    lattice.put_link_seen(&[&a, &b], &handler_link("echo", "work-subs")).await;

    // Each provider delivers to the echo on its own host (local routing), so a host's
    // invocation count is what its provider delivered. Warm up until both have subscribed.
    let nats = &lattice.client();
    let count = || async { a.invocations("echo").await + b.invocations("echo").await };
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut warmups = 0;
    while a.invocations("echo").await == 0 || b.invocations("echo").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "both providers never took a message");
        assert_eq!(request_until(nats, "work.warmup", b"w").await.as_ref(), b"W");
        warmups += 1;
    }
    // Warm-up requests were each delivered once too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count().await, warmups);

    const N: u64 = 60;
    let (a0, b0) = (a.invocations("echo").await, b.invocations("echo").await);
    let replies =
        futures::future::join_all((0..N).map(|i| async move { (i, request(nats, &format!("work.job{i}"), format!("job {i}").as_bytes()).await) })).await;
    for (i, r) in replies {
        assert_eq!(r.unwrap().as_ref(), format!("JOB {i}").as_bytes());
    }
    // A duplicate delivery would land after the first answer; give it time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (da, db) = (a.invocations("echo").await - a0, b.invocations("echo").await - b0);
    assert_eq!(da + db, N, "each request is delivered exactly once (host a {da}, host b {db})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_failures_are_error_values_that_name_subject_and_cause() {
    // A small max_payload, to see the payload limit.
    let mut lattice = lattice(NatsServer::start_with_config("max_payload: 65536").await.unwrap()).await;
    let a = lattice.host().await;
    lattice.scale(&a, "messenger", messenger(), 4).await;
    start_provider(&mut lattice, &a, "builtin://messaging-nats").await;

    // No consumer link: the import has nowhere to go and the host says which link is missing.
    let req = http::Request::post("http://localhost/request/anyone").body(Bytes::new()).unwrap();
    let err = a.invoke_http("messenger", req).await.unwrap_err().to_string();
    assert_contains_all(
        &err,
        &["no link from component `messenger` for `wasmcloud:messaging/consumer`", "wash link put messenger <target> wasmcloud messaging --interface consumer"],
    );

    lattice.put_link_seen(&[&a], &consumer_link("messenger", &[])).await;
    let (status, body) = messenger_call(&a, "/request/nobody.home", b"hello?").await;
    assert_eq!((status, body.as_str()), (502, "err request to `nobody.home` failed: no responders (nothing subscribes to `nobody.home`)"));

    // A subscriber that never answers: the request times out after the component's timeout.
    let nats = &lattice.client();
    let mut silent = nats.subscribe("slow.svc").await.unwrap();
    trellis_lattice::round_trip(nats).await.unwrap();
    let started = std::time::Instant::now();
    let (status, body) = messenger_call(&a, "/request/slow.svc?timeout_ms=300", b"tick").await;
    assert_eq!((status, body.as_str()), (502, "err request to `slow.svc` timed out after 300 ms with no reply"));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(silent.next().await.unwrap().payload.as_ref(), b"tick");

    // Bodies over the server's max_payload (64 KiB here) are refused with the sizes.
    let big = vec![b'x'; 100_000];
    let (status, body) = messenger_call(&a, "/publish/big", &big).await;
    assert_eq!((status, body.as_str()), (502, "err publish to `big` failed: the body is 100000 bytes, more than the NATS server's max_payload of 65536 bytes"));
    let (status, body) = messenger_call(&a, "/request/big", &big).await;
    assert_eq!((status, body.as_str()), (502, "err request to `big` failed: the body is 100000 bytes, more than the NATS server's max_payload of 65536 bytes"));

    // Subjects one cannot publish to.
    let (status, body) = messenger_call(&a, "/publish/orders.*", b"x").await;
    assert_eq!(status, 502);
    assert_contains_all(&body, &["err publish to `orders.*` failed", "wildcard"]);

    // The lattice's own subjects are out of reach on the lattice connection: a component
    // that could publish there could link, scale and stop anything.
    let mut ctl = nats.subscribe("wasmbus.>").await.unwrap();
    trellis_lattice::round_trip(nats).await.unwrap();
    for path in ["/publish/wasmbus.ctl.v1.default.host.ping", "/request/$JS.API.STREAM.LIST", "/publish/out.z?reply-to=wasmbus.ctl.v1.default.link.del"] {
        let (status, body) = messenger_call(&a, path, b"{}").await;
        assert_eq!(status, 502, "{path}: {body}");
        assert_contains_all(&body, &["refused", "the lattice's own traffic", "CLUSTER_URIS"]);
    }
    // Events (the hosts' 1 s heartbeats) are the lattice's own traffic on `wasmbus.>`; nothing else may come.
    let leaked = async {
        while let Some(m) = ctl.next().await {
            if !m.subject.starts_with("wasmbus.evt.") {
                return Some(m.subject);
            }
        }
        None
    };
    let leaked = tokio::time::timeout(Duration::from_millis(300), leaked).await.ok().flatten();
    assert!(leaked.is_none(), "a refused message reached {leaked:?}");
    drop(ctl);

    // A publish with a reply subject arrives as sent.
    let mut out = nats.subscribe("out.>").await.unwrap();
    trellis_lattice::round_trip(nats).await.unwrap();
    assert_eq!(messenger_call(&a, "/publish/out.x?reply-to=back.y", b"payload").await, (200, "published".to_string()));
    let msg = tokio::time::timeout(WAIT, out.next()).await.unwrap().unwrap();
    assert_eq!((msg.subject.as_str(), msg.reply.as_deref(), msg.payload.as_ref()), ("out.x", Some("back.y"), &b"payload"[..]));

    // And a request that someone answers: messenger → provider → NATS → provider → echo →
    // provider → NATS → messenger.
    lattice.scale(&a, "echo", messaging_echo(), 2).await;
    lattice.put_link_seen(&[&a], &consumer_link("echo", &[])).await;
    lattice.put_config("echo-subs", &[("SUBSCRIPTIONS", "echo.>")]).await;
    lattice.put_link_seen(&[&a], &handler_link("echo", "echo-subs")).await;
    request_until(nats, "echo.ready", b"").await;
    assert_eq!(messenger_call(&a, "/request/echo.loop", b"round trip").await, (200, "ROUND TRIP".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_handler_link_stops_delivery_and_config_changes_apply_live() {
    let mut lattice = Lattice::new().await;
    let a = lattice.host().await;
    start_provider(&mut lattice, &a, "builtin://messaging-nats").await;
    lattice.scale(&a, "echo", messaging_echo(), 2).await;
    lattice.put_link_seen(&[&a], &consumer_link("echo", &[])).await;
    lattice.put_config("echo-subs", &[("SUBSCRIPTIONS", "echo.>")]).await;
    let link = handler_link("echo", "echo-subs");
    lattice.put_link_seen(&[&a], &link).await;
    let nats = &lattice.client();
    assert_eq!(request_until(nats, "echo.one", b"one").await.as_ref(), b"ONE");

    // New SUBSCRIPTIONS in the link's config: the old subject is dropped, the new one served.
    lattice.put_config("echo-subs", &[("SUBSCRIPTIONS", "shout.>")]).await;
    until_no_responders(nats, "echo.one").await;
    assert_eq!(request_until(nats, "shout.two", b"two").await.as_ref(), b"TWO");

    // Link deleted: the provider unsubscribes and nothing more reaches the component.
    lattice.delete_link_seen(&[&a], &link).await;
    until_no_responders(nats, "shout.two").await;
    let before = a.invocations("echo").await;
    for _ in 0..5 {
        nats.publish("shout.lost", Bytes::from_static(b"x")).await.unwrap();
    }
    nats.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.invocations("echo").await, before);

    // Put back: delivery resumes.
    lattice.put_link_seen(&[&a], &link).await;
    assert_eq!(request_until(nats, "shout.three", b"three").await.as_ref(), b"THREE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_as_a_process_subscribes_publishes_and_requests() {
    // Built (or found current) before anything starts: the build blocks its thread.
    let exe = tokio::task::spawn_blocking(|| workspace_binary("trellis-provider-messaging-nats", "trellis-provider-messaging-nats")).await.unwrap().unwrap();
    let mut lattice = Lattice::new().await;
    let (a, b) = (lattice.host().await, lattice.host().await);
    start_provider(&mut lattice, &a, &file_ref(exe)).await;
    lattice.scale(&b, "echo", messaging_echo(), 2).await;
    lattice.scale(&b, "messenger", messenger(), 2).await;
    lattice.put_link_seen(&[&a, &b], &consumer_link("echo", &[])).await;
    lattice.put_link_seen(&[&a, &b], &consumer_link("messenger", &[])).await;
    lattice.put_config("echo-subs", &[("SUBSCRIPTIONS", "echo.>|echoes")]).await;
    lattice.put_link_seen(&[&a, &b], &handler_link("echo", "echo-subs")).await;

    let nats = &lattice.client();
    assert_eq!(request_until(nats, "echo.proc", b"from a process").await.as_ref(), b"FROM A PROCESS");
    assert_eq!(messenger_call(&b, "/request/echo.via-messenger", b"hi").await, (200, "HI".to_string()));
    let (status, body) = messenger_call(&b, "/request/nobody.home", b"").await;
    assert_eq!((status, body.as_str()), (502, "err request to `nobody.home` failed: no responders (nothing subscribes to `nobody.home`)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_uris_subscribe_and_publish_on_another_nats() {
    let mut lattice = Lattice::new().await;
    let other = NatsServer::start().await.unwrap();
    let a = lattice.host().await;
    start_provider(&mut lattice, &a, "builtin://messaging-nats").await;
    lattice.scale(&a, "echo", messaging_echo(), 2).await;
    let cluster = other.url();
    lattice.put_config("other-cluster", &[("CLUSTER_URIS", &cluster)]).await;
    // The answer must go back on the cluster the request came from: the consumer link names it too.
    lattice.put_link_seen(&[&a], &consumer_link("echo", &["other-cluster"])).await;
    lattice.put_config("ext-subs", &[("subscriptions", "ext.echo"), ("cluster_uris", &cluster)]).await;
    lattice.put_link_seen(&[&a], &handler_link("echo", "ext-subs")).await;

    let other_client = other.client().await.unwrap();
    assert_eq!(request_until(&other_client, "ext.echo", b"far away").await.as_ref(), b"FAR AWAY");
    // Not on the lattice's own NATS.
    assert!(no_responders(&request(&lattice.client(), "ext.echo", b"here").await));
}

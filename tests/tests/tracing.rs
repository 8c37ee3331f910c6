//! Traces end to end: host processes export over OTLP/HTTP to a real receiver in the test
//! (`trellis_tests::otlp`), and the tests assert on the spans it decoded: one HTTP request to
//! `examples/http-kv-counter` is one trace, parented http-server → data plane → counter →
//! key-value provider → store, across hosts, with local routing and after `set-link-name`; a
//! messaging echo continues the publisher's trace; an incoming `traceparent` is honoured; and
//! the component's log lines carry the trace id.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use trellis_lattice::ctl::*;
use trellis_tests::components::{http_kv_counter, messaging_echo, misbehave};
use trellis_tests::hosts::ProcessHost;
use trellis_tests::http::{free_addr, get_until};
use trellis_tests::nats::NatsServer;
use trellis_tests::otlp::{OtlpReceiver, ReceivedSpan, child, kind, trace};
use trellis_tests::scenario::{Lattice, WAIT, lattice};

const HANDLE: &str = "wasi:http/incoming-handler.handle";
const INCREMENT: &str = "wasi:keyvalue/atomics.increment";

/// A traceparent of the test's own, as a caller outside the lattice would send it.
fn our_traceparent(n: u8) -> (String, String, String) {
    let trace_id = format!("{n:02x}{}", "5e7a11ce0ffee000000000000000a1");
    let span_id = format!("{n:02x}00000000c0ffee");
    (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
}

/// `GET path` with headers `headers`; status and body.
async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header(http::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender.send_request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    (status, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
}

/// Everything one request to the counter made, in order down the call chain.
struct Chain {
    http: ReceivedSpan,
    client: ReceivedSpan,
    component: ReceivedSpan,
    kv_client: ReceivedSpan,
    kv_server: ReceivedSpan,
    store: ReceivedSpan,
    /// Every span of the trace.
    all: Vec<ReceivedSpan>,
}

/// The chain of the one request whose HTTP span has `url.path` = `path`, if it is all there.
fn chain(spans: &[ReceivedSpan], path: &str) -> anyhow::Result<Chain> {
    let https: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.kind == kind::SERVER && s.attr("url.path") == path).collect();
    let [http] = https.as_slice() else { anyhow::bail!("{} HTTP spans for {path}", https.len()) };
    let t = trace(spans, &http.trace_id);
    let client = child(&t, http, HANDLE, kind::CLIENT)?;
    let component = child(&t, client, HANDLE, kind::SERVER)?;
    let kv_client = child(&t, component, INCREMENT, kind::CLIENT)?;
    let kv_server = child(&t, kv_client, INCREMENT, kind::SERVER)?;
    let store = child(&t, kv_server, "memory increment", kind::INTERNAL)?;
    Ok(Chain {
        http: (*http).clone(),
        client: client.clone(),
        component: component.clone(),
        kv_client: kv_client.clone(),
        kv_server: kv_server.clone(),
        store: store.clone(),
        all: t.into_iter().cloned().collect(),
    })
}

/// Waits for the whole chain of the request to `path`.
async fn wait_chain(otlp: &OtlpReceiver, path: &str) -> Chain {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match chain(&otlp.spans(), path) {
            Ok(c) => return c,
            Err(e) if tokio::time::Instant::now() >= deadline => panic!("the trace of GET {path} is not whole: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The trace is one tree: one root, every other span's parent in it.
fn assert_whole(c: &Chain, root_parent: &str) {
    let roots: Vec<&ReceivedSpan> = c.all.iter().filter(|s| !c.all.iter().any(|p| p.span_id == s.parent_span_id)).collect();
    assert_eq!(roots.len(), 1, "one root: {:?}", roots.iter().map(|s| &s.name).collect::<Vec<_>>());
    assert_eq!(roots[0].span_id, c.http.span_id, "the HTTP request's span is the root");
    assert_eq!(c.http.parent_span_id, root_parent, "the root's parent");
}

fn kv_link(source: &str, target: &str, name: &str) -> Link {
    Link {
        source_id: source.into(),
        target: target.into(),
        name: name.into(),
        wit_namespace: "wasi".into(),
        wit_package: "keyvalue".into(),
        interfaces: vec!["store".into(), "atomics".into(), "batch".into()],
        source_config: vec![],
        target_config: vec![],
    }
}

struct Traced {
    l: Lattice,
    otlp: OtlpReceiver,
    hosts: Vec<ProcessHost>,
    _logs: tempfile::TempDir,
    logs: Vec<std::path::PathBuf>,
}

/// `n` host processes exporting traces to a fresh receiver (their logs in files).
async fn traced_hosts(n: usize) -> Traced {
    let otlp = OtlpReceiver::start().await.unwrap();
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = otlp.env(&[("RUST_LOG", "info")]);
    let mut hosts = Vec::new();
    let mut logs = Vec::new();
    for i in 0..n {
        let log = dir.path().join(format!("host-{i}.log"));
        hosts.push(ProcessHost::start_env(&nats.url(), &[], &env, Some(&log)).await.unwrap());
        logs.push(log);
    }
    Traced { l: lattice(nats).await, otlp, hosts, _logs: dir, logs }
}

/// The counter on `counter_host`, http-server and keyvalue (memory) providers on
/// `provider_host`, linked; the HTTP address, once it answers.
async fn counter_setup(t: &mut Traced, counter_host: usize, provider_host: usize) -> SocketAddr {
    let (ch, ph) = (t.hosts[counter_host].id.clone(), t.hosts[provider_host].id.clone());
    t.l.start_component_on(&ch, "counter", http_kv_counter(), 4, None).await;
    t.l.start_provider_on(&ph, "http", "builtin://http-server", &[]).await;
    t.l.start_provider_on(&ph, "kv", "builtin://keyvalue", &[]).await;
    t.l.ctl.put_link(&kv_link("counter", "kv", "default")).await.unwrap();
    let addr = free_addr().unwrap();
    t.l.link_at("http", "counter", addr, &[]).await;
    get_until(addr, "/ready", 200, WAIT).await.unwrap();
    addr
}

fn assert_chain_attributes(c: &Chain, counter_host: &str, provider_host: &str, link: &str) {
    assert!(c.http.name.starts_with("GET"), "{}", c.http.name);
    assert_eq!(c.http.attr("http.request.method"), "GET");
    assert_eq!(c.http.attr("http.response.status_code"), "200");
    assert_eq!(c.http.attr("wasmcloud.host.id"), provider_host);
    assert_eq!(c.client.attr("wasmcloud.source"), "http");
    assert_eq!(c.client.attr("wasmcloud.target"), "counter");
    assert_eq!(c.client.attr("wasmcloud.outcome"), "ok");
    assert_eq!(c.component.attr("wasmcloud.host.id"), counter_host, "the counter's span is its host's");
    assert_eq!(c.component.attr("wasmcloud.interface"), "wasi:http/incoming-handler");
    assert_eq!(c.component.attr("wasmcloud.function"), "handle");
    assert_eq!(c.component.attr("wasmcloud.lattice"), "default");
    assert_eq!(c.kv_client.attr("wasmcloud.source"), "counter");
    assert_eq!(c.kv_client.attr("wasmcloud.target"), "kv");
    assert_eq!(c.kv_client.attr("wasmcloud.link.name"), link);
    assert_eq!(c.kv_server.attr("wasmcloud.host.id"), provider_host);
    assert_eq!(c.store.attr("db.system.name"), "memory");
    assert_eq!(c.store.attr("wasmcloud.link.name"), link);
    assert_eq!(c.store.resource.get("service.name").map(String::as_str), Some("trellis-host"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_across_hosts_is_one_whole_trace() {
    let mut t = traced_hosts(2).await;
    let addr = counter_setup(&mut t, 0, 1).await;
    let (status, body) = get_with(addr, "/across", &[]).await;
    assert_eq!((status, body.as_str()), (200, "1\n"));
    let c = wait_chain(&t.otlp, "/across").await;
    assert_whole(&c, "");
    assert_chain_attributes(&c, &t.hosts[0].id, &t.hosts[1].id, "default");

    // An incoming traceparent is honoured: the request's span is its child, in its trace.
    let (tp, trace_id, span_id) = our_traceparent(1);
    assert_eq!(get_with(addr, "/honoured", &[("traceparent", &tp)]).await.0, 200);
    let c = wait_chain(&t.otlp, "/honoured").await;
    assert_eq!(c.http.trace_id, trace_id);
    assert_whole(&c, &span_id);

    // A component that picks another link (`set-link-name`) stays in the trace.
    t.l.ctl.put_link(&kv_link("counter", "kv", "second")).await.unwrap();
    get_until(addr, "/picked?link=second", 200, WAIT).await.unwrap();
    let c = wait_chain(&t.otlp, "/picked").await;
    assert_whole(&c, "");
    assert_chain_attributes(&c, &t.hosts[0].id, &t.hosts[1].id, "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_on_one_host_is_one_whole_trace_with_local_routing() {
    let mut t = traced_hosts(1).await;
    let addr = counter_setup(&mut t, 0, 0).await;
    assert_eq!(get_with(addr, "/local", &[]).await.0, 200);
    let c = wait_chain(&t.otlp, "/local").await;
    assert_whole(&c, "");
    assert_chain_attributes(&c, &t.hosts[0].id, &t.hosts[0].id, "default");
    // Calls routed in memory: the callee's span is on the caller's host.
    assert_eq!(c.kv_client.attr("wasmcloud.host.id"), c.kv_server.attr("wasmcloud.host.id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messaging_echo_continues_the_publishers_trace() {
    let mut t = traced_hosts(2).await;
    let (a, b) = (t.hosts[0].id.clone(), t.hosts[1].id.clone());
    t.l.start_provider_on(&a, "messaging", "builtin://messaging-nats", &[]).await;
    t.l.start_component_on(&b, "echo", messaging_echo(), 4, None).await;
    let link = |source: &str, target: &str, iface: &str, cfg: Vec<String>| Link {
        source_id: source.into(),
        target: target.into(),
        name: "default".into(),
        wit_namespace: "wasmcloud".into(),
        wit_package: "messaging".into(),
        interfaces: vec![iface.into()],
        source_config: cfg,
        target_config: vec![],
    };
    t.l.ctl.put_link(&link("echo", "messaging", "consumer", vec![])).await.unwrap();
    t.l.put_config("echo-subs", &[("SUBSCRIPTIONS", "traced.>")]).await;
    t.l.ctl.put_link(&link("messaging", "echo", "handler", vec!["echo-subs".into()])).await.unwrap();

    let nats = t.l.client();
    let (tp, trace_id, span_id) = our_traceparent(2);
    let deadline = tokio::time::Instant::now() + WAIT;
    let reply = loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("traceparent", tp.as_str());
        let req = async_nats::Request::new().payload(Bytes::from_static(b"hello")).headers(headers).timeout(Some(Duration::from_secs(5)));
        match nats.send_request("traced.hi".to_string(), req).await {
            Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => break r.unwrap(),
        }
    };
    assert_eq!(reply.payload.as_ref(), b"HELLO");
    // The answer the component published carries the trace on.
    let reply_tp = reply.headers.as_ref().and_then(|h| h.get("traceparent")).map(|v| v.as_str().to_string()).expect("the answer has a traceparent");
    assert_eq!(trellis_lattice::telemetry::trace_id(&reply_tp), Some(trace_id.as_str()), "{reply_tp}");

    let spans = t
        .otlp
        .wait_for("the echo's four spans", WAIT, |s| {
            let t = trace(s, &trace_id);
            ["wasmcloud:messaging/handler.handle-message", "wasmcloud:messaging/consumer.publish"]
                .iter()
                .all(|name| [kind::CLIENT, kind::SERVER].iter().all(|k| t.iter().any(|s| s.name == *name && s.kind == *k)))
        })
        .await
        .unwrap();
    let tr = trace(&spans, &trace_id);
    let deliver = tr.iter().find(|s| s.name == "wasmcloud:messaging/handler.handle-message" && s.kind == kind::CLIENT).expect("the delivery's span");
    assert_eq!(deliver.parent_span_id, span_id, "the publisher's span is the parent of handle-message");
    assert_eq!(deliver.attr("wasmcloud.host.id"), a);
    let handled = child(&tr, deliver, "wasmcloud:messaging/handler.handle-message", kind::SERVER).unwrap();
    assert_eq!(handled.attr("wasmcloud.host.id"), b);
    let publish = child(&tr, handled, "wasmcloud:messaging/consumer.publish", kind::CLIENT).unwrap();
    let published = child(&tr, publish, "wasmcloud:messaging/consumer.publish", kind::SERVER).unwrap();
    assert_eq!(reply_tp, format!("00-{trace_id}-{}-01", published.span_id), "the answer's parent is the provider's publish");

    // A message nobody can answer: the component's stderr line carries the trace id.
    let (tp, trace_id, _) = our_traceparent(3);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", tp.as_str());
    nats.publish_with_headers("traced.oneway", headers, Bytes::from_static(b"x")).await.unwrap();
    nats.flush().await.unwrap();
    let line = wait_log_line(&t.logs[1], "no reply-to").await;
    assert!(line.contains(&format!("trace_id={trace_id}")), "{line}");
}

/// Waits for a line holding `needle` in the log at `path`.
async fn wait_log_line(path: &std::path::Path, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "no line with `{needle}` in {}:\n{text}", path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_logging_records_carry_the_trace_id_of_their_invocation() {
    let mut t = traced_hosts(1).await;
    let h = t.hosts[0].id.clone();
    t.l.start_component_on(&h, "misbehave", misbehave(), 4, None).await;
    t.l.start_provider_on(&h, "http", "builtin://http-server", &[]).await;
    let addr = free_addr().unwrap();
    t.l.link_at("http", "misbehave", addr, &[]).await;
    get_until(addr, "/log?warming-up", 200, WAIT).await.unwrap();
    let (tp, trace_id, _) = our_traceparent(4);
    assert_eq!(get_with(addr, "/log?logged-in-a-trace", &[("traceparent", &tp)]).await.0, 200);
    let line = wait_log_line(&t.logs[0], "logged-in-a-trace").await;
    assert!(line.contains(&format!("trace_id={trace_id}")), "{line}");
    assert!(line.contains("component_id=\"misbehave\""), "{line}");
    // Without a trace of its own the request still gets one (the HTTP span is its root).
    let line = wait_log_line(&t.logs[0], "warming-up").await;
    assert!(line.contains("trace_id="), "{line}");
}

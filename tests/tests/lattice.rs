//! The lattice foundation end to end: several hosts on a real nats-server, the full control
//! interface, events, heartbeats, the KV registry, and real components from `examples/`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use trellis_lattice::client::CtlClient;
use trellis_lattice::ctl::*;
use trellis_lattice::event::{ComponentScaleFailed, ComponentScaled, HostHeartbeat};
use trellis_lattice::subject::{CtlOp, CtlSubjects};
use trellis_tests::components::{file_ref, http_hello, misbehave};
use trellis_tests::hosts::{Events, ProcessHost, start_host};
use trellis_tests::nats::NatsServer;

const WAIT: Duration = Duration::from_secs(20);

fn get(path: &str) -> http::Request<Bytes> {
    http::Request::get(format!("http://localhost{path}")).body(Bytes::new()).unwrap()
}

fn scale(host_id: &str, id: &str, reference: &str, max: u32) -> ScaleComponentCommand {
    ScaleComponentCommand { component_ref: reference.into(), component_id: id.into(), max_instances: max, host_id: host_id.into(), ..Default::default() }
}

async fn ctl(nats: &NatsServer) -> CtlClient {
    CtlClient::new(nats.client().await.unwrap(), "default").with_auction_timeout(Duration::from_millis(750))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_answer_ping_get_and_constrained_auctions() {
    let nats = NatsServer::start().await.unwrap();
    let a = start_host(&nats.url(), &[("zone", "cloud"), ("tier", "a")]).await.unwrap();
    let b = start_host(&nats.url(), &[("zone", "cloud"), ("tier", "b")]).await.unwrap();
    let c = ProcessHost::start(&nats.url(), &["-l", "zone=edge"]).await.unwrap();
    let ctl = ctl(&nats).await;

    let mut hosts = ctl.ping_hosts().await.unwrap();
    hosts.sort_by(|x, y| x.id.cmp(&y.id));
    let mut expected = vec![a.id().to_string(), b.id().to_string(), c.id.clone()];
    expected.sort();
    assert_eq!(hosts.iter().map(|h| h.id.clone()).collect::<Vec<_>>(), expected);
    let edge = hosts.iter().find(|h| h.id == c.id).unwrap();
    assert_eq!(edge.labels["zone"], "edge");
    assert_eq!(edge.friendly_name, c.friendly_name);
    assert_eq!(edge.lattice, "default");
    assert!(edge.labels.contains_key("hostcore.arch") && edge.labels.contains_key("hostcore.os"));

    for id in &expected {
        let inv = ctl.get_host_inventory(id).await.unwrap();
        assert_eq!(&inv.host_id, id);
        assert!(inv.components.is_empty());
    }

    let auction = |constraints: &[(&str, &str)]| ComponentAuctionRequest {
        component_ref: file_ref(http_hello()),
        component_id: "hello".into(),
        constraints: constraints.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    let acks = ctl.perform_component_auction(&auction(&[("zone", "edge")])).await.unwrap();
    assert_eq!(acks.iter().map(|a| a.host_id.clone()).collect::<Vec<_>>(), vec![c.id.clone()]);
    let mut cloud: Vec<_> = ctl.perform_component_auction(&auction(&[("zone", "cloud")])).await.unwrap().into_iter().map(|a| a.host_id).collect();
    cloud.sort();
    let mut want = vec![a.id().to_string(), b.id().to_string()];
    want.sort();
    assert_eq!(cloud, want);
    assert_eq!(ctl.perform_component_auction(&auction(&[("zone", "mars")])).await.unwrap().len(), 0);
    assert_eq!(ctl.perform_component_auction(&auction(&[])).await.unwrap().len(), 3);

    // A host that already runs the id does not bid again.
    let mut events = Events::subscribe(ctl.nats(), "default").await.unwrap();
    ctl.scale_component(&scale(a.id(), "hello", &file_ref(http_hello()), 1)).await.unwrap();
    events.wait_for("component_scaled", WAIT, |_| true).await.unwrap();
    let bidders: Vec<_> = ctl.perform_component_auction(&auction(&[("zone", "cloud")])).await.unwrap().into_iter().map(|a| a.host_id).collect();
    assert_eq!(bidders, vec![b.id().to_string()]);

    // Provider auctions follow the same rules.
    let p = ProviderAuctionRequest { provider_ref: "file:///p".into(), provider_id: "p".into(), constraints: [("zone".into(), "edge".into())].into() };
    let acks = ctl.perform_provider_auction(&p).await.unwrap();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].host_id, c.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_invoke_update_and_stop_a_component() {
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let ctl = ctl(&nats).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.unwrap();
    let hello = file_ref(http_hello());

    let mut cmd = scale(host.id(), "hello", &hello, 4);
    cmd.annotations = Some([("owner".to_string(), "tests".to_string())].into());
    ctl.scale_component(&cmd).await.unwrap();
    let ev = events.wait_for("component_scaled", WAIT, |e| e.data["component_id"] == "hello").await.unwrap();
    assert_eq!(ev.source, host.id());
    let data: ComponentScaled = ev.data_as().unwrap();
    assert_eq!(data.host_id, host.id());
    assert_eq!(data.image_ref, hello);
    assert_eq!(data.max_instances, 4);
    assert_eq!(data.annotations["owner"], "tests");

    let inv = ctl.get_host_inventory(host.id()).await.unwrap();
    assert_eq!(inv.components.len(), 1);
    assert_eq!(inv.components[0].id, "hello");
    assert_eq!(inv.components[0].image_ref, hello);
    assert_eq!(inv.components[0].max_instances, 4);

    // The heartbeat carries the inventory too.
    let hb =
        events.wait_for("host_heartbeat", WAIT, |e| e.source == host.id() && e.data["components"].as_array().is_some_and(|c| !c.is_empty())).await.unwrap();
    let hb: HostHeartbeat = hb.data_as().unwrap();
    assert_eq!(hb.0.components[0].id, "hello");

    let resp = host.invoke_http("hello", get("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().as_ref(), b"Hello from Trellis!\n");

    // More concurrent callers than instances: they queue, none fails.
    let calls = (0..16).map(|_| host.invoke_http("hello", get("/")));
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().body().as_ref(), b"Hello from Trellis!\n");
    }

    // Update swaps the ref: the new code answers, the old one is gone from the inventory.
    let other = file_ref(misbehave());
    ctl.update_component(&UpdateComponentCommand {
        component_id: "hello".into(),
        new_component_ref: other.clone(),
        host_id: host.id().into(),
        annotations: None,
    })
    .await
    .unwrap();
    events.wait_for("component_scaled", WAIT, |e| e.data["image_ref"] == other.as_str()).await.unwrap();
    assert_eq!(host.invoke_http("hello", get("/")).await.unwrap().body().as_ref(), b"misbehave v1\n");
    let inv = ctl.get_host_inventory(host.id()).await.unwrap();
    assert_eq!(inv.components.len(), 1);
    assert_eq!(inv.components[0].image_ref, other);
    assert_eq!(inv.components[0].max_instances, 4);

    // Updating something that does not run is refused at once.
    let err = ctl
        .update_component(&UpdateComponentCommand {
            component_id: "nope".into(),
            new_component_ref: other.clone(),
            host_id: host.id().into(),
            annotations: None,
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`nope` is not running"), "{err}");

    // Scale to 0 stops it.
    ctl.scale_component(&scale(host.id(), "hello", &other, 0)).await.unwrap();
    let ev = events.wait_for("component_scaled", WAIT, |e| e.data["max_instances"] == 0).await.unwrap();
    assert_eq!(ev.data["component_id"], "hello");
    assert!(ctl.get_host_inventory(host.id()).await.unwrap().components.is_empty());
    let err = host.invoke_http("hello", get("/")).await.unwrap_err();
    assert!(err.to_string().contains("no component `hello`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_and_config_live_in_the_lattice_registry() {
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let _second = start_host(&nats.url(), &[]).await.unwrap();
    let ctl = ctl(&nats).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.unwrap();

    // Config: put, get, missing, delete.
    let addr: StringMap = [("address".to_string(), "127.0.0.1:8080".to_string())].into();
    ctl.put_config("http-addr", &addr).await.unwrap();
    events.wait_for("config_set", WAIT, |e| e.data["config_name"] == "http-addr").await.unwrap();
    assert_eq!(ctl.get_config("http-addr").await.unwrap(), addr);
    let err = ctl.get_config("missing").await.unwrap_err();
    assert!(err.to_string().contains("no config named `missing`"), "{err}");

    let link = |source: &str, target: &str, iface: &str| Link {
        source_id: source.into(),
        target: target.into(),
        name: "default".into(),
        wit_namespace: "wasi".into(),
        wit_package: "http".into(),
        interfaces: vec![iface.into()],
        source_config: vec![],
        target_config: vec![],
    };
    let mut l1 = link("http", "hello", "incoming-handler");
    l1.source_config = vec!["http-addr".into()];
    ctl.put_link(&l1).await.unwrap();
    events.wait_for("linkdef_set", WAIT, |e| e.data["target"] == "hello").await.unwrap();
    assert_eq!(ctl.get_links().await.unwrap(), vec![l1.clone()]);

    // Same source/package/name, other target, overlapping interface: refused, with an event.
    let err = ctl.put_link(&link("http", "other", "incoming-handler")).await.unwrap_err();
    assert!(err.to_string().contains("link conflict"), "{err}");
    events.wait_for("linkdef_set_failed", WAIT, |e| e.data["target"] == "other").await.unwrap();
    // A config that does not exist: refused.
    let mut bad = link("x", "y", "incoming-handler");
    bad.target_config = vec!["nope".into()];
    let err = ctl.put_link(&bad).await.unwrap_err();
    assert!(err.to_string().contains("config `nope`") && err.to_string().contains("does not exist"), "{err}");
    // Same source/target/package/name replaces.
    let mut l1b = l1.clone();
    l1b.interfaces.push("outgoing-handler".into());
    ctl.put_link(&l1b).await.unwrap();
    assert_eq!(ctl.get_links().await.unwrap(), vec![l1b.clone()]);

    // Two clients put different links at the same moment: both survive.
    let ctl2 = CtlClient::new(nats.client().await.unwrap(), "default");
    let puts: Vec<_> = (0..10)
        .map(|i| {
            let c = if i % 2 == 0 { ctl.clone() } else { ctl2.clone() };
            let l = link(&format!("src{i}"), "hello", "incoming-handler");
            tokio::spawn(async move { c.put_link(&l).await })
        })
        .collect();
    for p in puts {
        p.await.unwrap().unwrap();
    }
    let links = ctl.get_links().await.unwrap();
    assert_eq!(links.len(), 11, "{links:?}");

    // A host started after the puts knows them all from its own view.
    let late = start_host(&nats.url(), &[]).await.unwrap();
    let mut known = late.links();
    known.sort();
    let mut want = links.clone();
    want.sort();
    assert_eq!(known, want);
    assert_eq!(late.config("http-addr"), Some(addr.clone()));

    // Deletes apply to every host's view, live.
    ctl.delete_link(&DeleteLinkRequest { source_id: "src0".into(), name: "default".into(), wit_namespace: "wasi".into(), wit_package: "http".into() })
        .await
        .unwrap();
    let ev = events.wait_for("linkdef_deleted", WAIT, |e| e.data["source_id"] == "src0").await.unwrap();
    assert_eq!(ev.data["target"], "hello");
    assert_eq!(ctl.get_links().await.unwrap().len(), 10);
    let deadline = tokio::time::Instant::now() + WAIT;
    while late.links().len() != 10 || host.links().len() != 10 {
        assert!(tokio::time::Instant::now() < deadline, "views did not converge");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    ctl.delete_config("http-addr").await.unwrap();
    events.wait_for("config_deleted", WAIT, |e| e.data["config_name"] == "http-addr").await.unwrap();
    assert!(ctl.get_config("http-addr").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_can_change_but_not_hostcore() {
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let ctl = ctl(&nats).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.unwrap();
    ctl.put_label(host.id(), "zone", "edge").await.unwrap();
    let ev = events.wait_for("labels_changed", WAIT, |_| true).await.unwrap();
    assert_eq!(ev.data["labels"]["zone"], "edge");
    assert_eq!(ctl.get_host_inventory(host.id()).await.unwrap().labels["zone"], "edge");
    let err = ctl.put_label(host.id(), "hostcore.os", "plan9").await.unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    ctl.delete_label(host.id(), "zone").await.unwrap();
    assert!(!ctl.get_host_inventory(host.id()).await.unwrap().labels.contains_key("zone"));
    assert!(ctl.delete_label(host.id(), "hostcore.arch").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_host_keeps_serving() {
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let ctl = ctl(&nats).await;
    let client = ctl.nats().clone();
    let mut events = Events::subscribe(&client, "default").await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Garbage bytes and a core module as component refs.
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm at all").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module (func (export \"f\")))").unwrap()).unwrap();
    let cases = [
        (file_ref(&garbage), "not WebAssembly"),
        (file_ref(&core), "core WebAssembly module, not a component"),
        (file_ref(dir.path().join("missing.wasm")), "cannot read"),
        ("oci://example/thing:1".to_string(), "does not start with a registry such as ghcr.io"),
    ];
    for (i, (reference, why)) in cases.iter().enumerate() {
        let id = format!("bad{i}");
        ctl.scale_component(&scale(host.id(), &id, reference, 1)).await.unwrap();
        let ev = events.wait_for("component_scale_failed", WAIT, |e| e.data["component_id"] == id.as_str()).await.unwrap();
        let data: ComponentScaleFailed = ev.data_as().unwrap();
        assert!(data.error.contains(why), "{reference}: {}", data.error);
        assert!(data.error.contains(reference.as_str()), "the error names the ref: {}", data.error);
    }
    assert!(ctl.get_host_inventory(host.id()).await.unwrap().components.is_empty());

    // Malformed JSON on every control subject gets {success: false}.
    let subjects = CtlSubjects::new("default");
    let h = || host.id().to_string();
    let ops = CtlOp::every(host.id(), "c");
    for op in &ops {
        for body in [&b"{\"truncated"[..], b"[1,2", &[0xff, 0xfe, 0x00]] {
            let reply = client.request(subjects.subject(op), Bytes::copy_from_slice(body)).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
            assert_eq!(v["success"], false, "{} with {body:?}: {v}", op.name());
            assert!(!v["message"].as_str().unwrap().is_empty());
        }
    }
    // Wrong types, oversized payloads, bad ids, unknown subjects.
    let reply = |subject: String, body: Vec<u8>| {
        let client = client.clone();
        async move { serde_json::from_slice::<serde_json::Value>(&client.request(subject, body.into()).await.unwrap().payload).unwrap() }
    };
    let v = reply(subjects.subject(&CtlOp::ComponentScale(h())), br#"{"component_ref": 5, "component_id": "x", "host_id": "y"}"#.to_vec()).await;
    assert_eq!(v["success"], false);
    assert!(v["message"].as_str().unwrap().contains("component.scale"), "{v}");
    let v = reply(
        subjects.subject(&CtlOp::ComponentScale(h())),
        br#"{"component_ref": "file:///x", "component_id": "a.b", "host_id": "y", "max_instances": 1}"#.to_vec(),
    )
    .await;
    assert!(v["message"].as_str().unwrap().contains("a.b"), "{v}");
    let v = reply(subjects.subject(&CtlOp::ConfigPut("c".into())), vec![b' '; trellis_host::MAX_CTL_PAYLOAD + 1]).await;
    assert!(v["message"].as_str().unwrap().contains("limited to"), "{v}");
    let v = reply(subjects.subject(&CtlOp::ConfigPut("c".into())), br#"{"k": 1}"#.to_vec()).await;
    assert!(v["message"].as_str().unwrap().contains("string"), "{v}");
    let v = reply("wasmbus.ctl.v1.default.frobnicate.now".into(), vec![]).await;
    assert_eq!(v["success"], false);
    assert!(v["message"].as_str().unwrap().contains("unknown control subject"), "{v}");

    // The host still answers and lost nothing.
    assert_eq!(ctl.ping_hosts().await.unwrap().len(), 1);
    ctl.scale_component(&scale(host.id(), "hello", &file_ref(http_hello()), 1)).await.unwrap();
    events.wait_for("component_scaled", WAIT, |e| e.data["component_id"] == "hello").await.unwrap();
    assert_eq!(host.invoke_http("hello", get("/")).await.unwrap().body().as_ref(), b"Hello from Trellis!\n");

    // A provider with a bad ref fails with provider_start_failed.
    for (i, (reference, why)) in
        [("file:///does/not/exist", "cannot read provider"), ("builtin://nope", "no built-in provider"), ("ftp://x", "not supported")].iter().enumerate()
    {
        let id = format!("p{i}");
        ctl.start_provider(&StartProviderCommand {
            provider_id: id.clone(),
            provider_ref: reference.to_string(),
            host_id: host.id().into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let ev = events.wait_for("provider_start_failed", WAIT, |e| e.data["provider_id"] == id.as_str()).await.unwrap();
        assert!(ev.data["error"].as_str().unwrap().contains(why), "{}", ev.data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_components_are_cut_off_and_the_host_serves_on() {
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let ctl = ctl(&nats).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.unwrap();
    let mut cmd = scale(host.id(), "bad", &file_ref(misbehave()), 1);
    cmd.component_limits = Some(BTreeMap::from([("max_execution_time_ms".to_string(), "500".to_string())]));
    ctl.scale_component(&cmd).await.unwrap();
    events.wait_for("component_scaled", WAIT, |_| true).await.unwrap();
    let inv = ctl.get_host_inventory(host.id()).await.unwrap();
    assert_eq!(inv.components[0].limits.as_ref().unwrap()["max_execution_time_ms"], "500");

    let started = std::time::Instant::now();
    let err = host.invoke_http("bad", get("/loop")).await.unwrap_err();
    assert!(err.to_string().contains("did not finish within its deadline of 500 ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "the deadline was not enforced: {:?}", started.elapsed());
    // Its only instance slot came back: the next request is served.
    assert_eq!(host.invoke_http("bad", get("/")).await.unwrap().body().as_ref(), b"misbehave v1\n");

    // A memory hog, with a generous deadline so that the cap, not the clock, stops it.
    let mut hog = scale(host.id(), "hog", &file_ref(misbehave()), 1);
    hog.component_limits = Some(BTreeMap::from([("max_linear_memory_bytes".to_string(), (32u64 << 20).to_string())]));
    ctl.scale_component(&hog).await.unwrap();
    events.wait_for("component_scaled", WAIT, |e| e.data["component_id"] == "hog").await.unwrap();
    let err = host.invoke_http("hog", get("/grow")).await.unwrap_err().to_string();
    assert!(err.contains("memory"), "{err}");
    assert!(!err.contains("deadline"), "{err}");
    assert!(!err.contains("wasm backtrace"), "the backtrace belongs in the debug log: {err}");
    eprintln!("memory trap as a caller sees it: {err}");
    assert_eq!(host.invoke_http("hog", get("/")).await.unwrap().body().as_ref(), b"misbehave v1\n");

    // Least authority: no environment, no arguments.
    let body = host.invoke_http("bad", get("/env")).await.unwrap().into_body();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(text, "env=0 args=0\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_host_stop_publish_host_stopped() {
    let nats = NatsServer::start().await.unwrap();
    let ctl = ctl(&nats).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.unwrap();

    let mut process = ProcessHost::start(&nats.url(), &["-l", "role=proc"]).await.unwrap();
    events.wait_for("host_started", WAIT, |e| e.source == process.id).await.unwrap();
    process.sigterm().unwrap();
    let ev = events.wait_for("host_stopped", WAIT, |e| e.source == process.id).await.unwrap();
    assert_eq!(ev.data["labels"]["role"], "proc");
    assert!(process.wait(WAIT).await.unwrap().success());

    // host.stop on an in-process host.
    let host = start_host(&nats.url(), &[]).await.unwrap();
    ctl.stop_host(host.id(), Some(1000)).await.unwrap();
    tokio::time::timeout(WAIT, host.stopped()).await.unwrap();
    events.wait_for("host_stopped", WAIT, |e| e.source == host.id()).await.unwrap();
    assert!(ctl.ping_hosts().await.unwrap().is_empty());
}

/// A view opened while links are being written misses none of them: the watch starts where
/// the initial listing's snapshot ended, not at "new from now on".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_view_opened_during_writes_misses_nothing() {
    use trellis_lattice::state::{self, StateView, open_bucket};
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let bucket = open_bucket(&js, &state::lattice_bucket("race")).await.unwrap();
    const N: usize = 300;
    let writer = tokio::spawn(async move {
        for i in 0..N {
            let link = Link {
                source_id: format!("src{i}"),
                target: "t".into(),
                name: "default".into(),
                wit_namespace: "wasi".into(),
                wit_package: "keyvalue".into(),
                interfaces: vec!["store".into()],
                source_config: vec![],
                target_config: vec![],
            };
            bucket.put(state::link_key(&link), serde_json::to_vec(&link).unwrap().into()).await.unwrap();
        }
    });
    // Views opened at different points of the writes.
    let mut views = Vec::new();
    for _ in 0..8 {
        views.push(StateView::open(&js, "race").await.unwrap());
    }
    writer.await.unwrap();
    for (n, view) in views.iter().enumerate() {
        let mut changes = view.changes();
        let seen = tokio::time::timeout(WAIT, async {
            while view.links().len() < N {
                changes.changed().await.unwrap();
            }
        })
        .await;
        assert!(seen.is_ok(), "view {n} saw {} of {N} links written while it opened", view.links().len());
    }
}

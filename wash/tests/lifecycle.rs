//! `wash start|stop|scale|update component`, `wash start|stop provider` and `wash stop host`
//! against real hosts on a real nats-server, checked through the control client, the hosts
//! themselves and the event bus.

mod common;

use bytes::Bytes;
use common::{WAIT, Wash, ctl, script};
use futures::StreamExt as _;
use trellis_lattice::subject::{CtlOp, CtlSubjects};
use trellis_tests::components::{file_ref, http_hello, misbehave};
use trellis_tests::hosts::{Events, start_host};
use trellis_tests::nats::NatsServer;

fn get(path: &str) -> http::Request<Bytes> {
    http::Request::get(format!("http://localhost{path}")).body(Bytes::new()).expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_start_scale_update_and_stop() {
    let nats = NatsServer::start().await.expect("nats");
    let host = start_host(&nats.url(), &[("zone", "test")]).await.expect("host");
    let ctl = ctl(&nats).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.expect("events");
    let wash = Wash::on(&nats);

    // A plain path becomes an absolute file:// reference; the auction picks the only host.
    let out = wash.run_async(&["start", "component", http_hello(), "hello"]).await;
    assert!(out.ok().contains(&format!("Component `hello` started on host {}", host.id())), "{}", out.stdout);
    let ev = events.wait_for("component_scaled", WAIT, |e| e.data["component_id"] == "hello").await.expect("scaled");
    assert_eq!(ev.data["image_ref"], file_ref(http_hello()));
    let inv = ctl.get_host_inventory(host.id()).await.expect("inventory");
    assert_eq!(inv.components.len(), 1);
    assert_eq!(inv.components[0].image_ref, file_ref(http_hello()));
    assert_eq!(inv.components[0].max_instances, 1);
    assert_eq!(host.invoke_http("hello", get("/")).await.expect("served").body().as_ref(), b"Hello from Trellis!\n");

    // JSON, constraints, a file:// ref and a limit.
    let v = wash.run_async(&["-o", "json", "start", "component", &file_ref(http_hello()), "hello2", "--max-instances", "2", "-c", "zone=test"]).await.json();
    assert_eq!(v["component_id"], "hello2");
    assert_eq!(v["host_id"], host.id());
    assert_eq!(v["max_instances"], 2);
    let inv = ctl.get_host_inventory(host.id()).await.expect("inventory");
    assert_eq!(inv.components.iter().find(|c| c.id == "hello2").map(|c| c.max_instances), Some(2));

    // The inventory, as text and JSON.
    let text = wash.run_async(&["get", "inventory"]).await.ok().to_string();
    assert!(text.contains(host.id()) && text.contains("hello2") && text.contains(&file_ref(http_hello())), "{text}");
    let v = wash.run_async(&["get", "inventory", host.id(), "-o", "json"]).await.json();
    assert_eq!(v["inventories"][0]["host_id"], host.id());
    assert_eq!(v["inventories"][0]["components"].as_array().map(Vec::len), Some(2));

    // Scale keeps the reference and changes the limit.
    let out = wash.run_async(&["scale", "component", "hello", "--max-instances", "3"]).await;
    assert!(out.ok().contains("scaled to max instances 3"), "{}", out.stdout);
    let inv = ctl.get_host_inventory(host.id()).await.expect("inventory");
    let hello = inv.components.iter().find(|c| c.id == "hello").expect("hello runs");
    assert_eq!((hello.max_instances, hello.image_ref.as_str()), (3, file_ref(http_hello()).as_str()));

    // Update switches the code that answers.
    let v = wash.run_async(&["-o", "json", "update", "component", "hello", misbehave()]).await.json();
    assert_eq!(v["component_ref"], file_ref(misbehave()));
    assert_eq!(host.invoke_http("hello", get("/")).await.expect("served").body().as_ref(), b"misbehave v1\n");
    let inv = ctl.get_host_inventory(host.id()).await.expect("inventory");
    assert_eq!(inv.components.iter().find(|c| c.id == "hello").map(|c| c.image_ref.clone()), Some(file_ref(misbehave())));

    // Stop finds the host from the inventories and scales to 0.
    let out = wash.run_async(&["stop", "component", "hello"]).await;
    assert!(out.ok().contains(&format!("Component `hello` stopped on host {}", host.id())), "{}", out.stdout);
    events.wait_for("component_scaled", WAIT, |e| e.data["component_id"] == "hello" && e.data["max_instances"] == 0).await.expect("stopped");
    let inv = ctl.get_host_inventory(host.id()).await.expect("inventory");
    assert_eq!(inv.components.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec!["hello2"]);
    let v = wash.run_async(&["stop", "component", "hello2", "--host-id", host.id(), "-o", "json"]).await.json();
    assert_eq!(v["host_id"], host.id());
    assert!(ctl.get_host_inventory(host.id()).await.expect("inventory").components.is_empty());

    // Stopping what is not running says so.
    let err = wash.run_async(&["stop", "component", "hello"]).await.error();
    assert!(err.contains("component `hello` is not running in lattice `default`"), "{err}");
    let err = wash.run_async(&["scale", "component", "hello", "--max-instances", "2"]).await.error();
    assert!(err.contains("not running"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_starts_fail_with_one_line_that_says_why() {
    let nats = NatsServer::start().await.expect("nats");
    let host = start_host(&nats.url(), &[("zone", "test")]).await.expect("host");
    let ctl = ctl(&nats).await;
    let wash = Wash::on(&nats);
    let dir = tempfile::tempdir().expect("tempdir");

    // A bad ref: the host's component_scale_failed error, as one line, also as JSON.
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm").expect("write");
    let garbage = garbage.to_string_lossy().to_string();
    let err = wash.run_async(&["start", "component", &garbage, "bad"]).await.error();
    assert!(err.contains(&format!("host `{}` could not scale component `bad`", host.id())), "{err}");
    assert!(err.contains("not WebAssembly"), "{err}");
    let out = wash.run_async(&["-o", "json", "start", "component", &garbage, "bad"]).await;
    out.error();
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON error");
    assert_eq!(v["success"], false);
    assert!(v["error"].as_str().is_some_and(|e| e.contains("not WebAssembly")), "{v}");
    assert!(ctl.get_host_inventory(host.id()).await.expect("inventory").components.is_empty());

    // A missing file is caught before anything is sent.
    let err = wash.run_async(&["start", "component", "no/such/file.wasm", "x"]).await.error();
    assert!(err.contains("no file at `no/such/file.wasm`"), "{err}");

    // An unknown host id.
    let err = wash.run_async(&["start", "component", http_hello(), "x", "--host-id", "NBOGUS", "--timeout-ms", "1000"]).await.error();
    assert!(err.contains("no host with id `NBOGUS` is running in lattice `default`"), "{err}");

    // No host satisfies the constraints.
    let err = wash.run_async(&["start", "component", http_hello(), "x", "-c", "zone=mars"]).await.error();
    assert!(err.contains("no host in lattice `default` bid") && err.contains("constraints zone=mars"), "{err}");

    // Config that does not exist.
    let err = wash.run_async(&["start", "component", http_hello(), "x", "--config", "nope"]).await.error();
    assert!(err.contains("config `nope` does not exist"), "{err}");

    // An id that cannot stand in a subject.
    let err = wash.run_async(&["start", "component", http_hello(), "a.b"]).await.error();
    assert!(err.contains("component id `a.b`"), "{err}");

    // A host that accepts the request but never reports an outcome: the timeout names the host
    // and the awaited event.
    let client = nats.client().await.expect("client");
    let subject = CtlSubjects::new("default").subject(&CtlOp::ComponentScale("NFAKE".into()));
    let mut fake = client.subscribe(subject).await.expect("subscribe");
    trellis_lattice::round_trip(&client).await.expect("round trip");
    tokio::spawn(async move {
        while let Some(msg) = fake.next().await {
            if let Some(reply) = msg.reply {
                let _ = client.publish(reply, r#"{"success":true,"message":""}"#.into()).await;
            }
        }
    });
    let err = wash.run_async(&["start", "component", http_hello(), "slow", "--host-id", "NFAKE", "--timeout-ms", "1500"]).await.error();
    assert!(err.contains("no `component_scaled` for component `slow` from host `NFAKE` within 1500 ms"), "{err}");

    // Nothing of the above started anything.
    assert!(ctl.get_host_inventory(host.id()).await.expect("inventory").components.is_empty());

    // No NATS at all.
    let err = Wash::new(common::free_port()).run_async(&["get", "hosts"]).await.error();
    assert!(err.contains("cannot connect to NATS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_start_and_stop() {
    let nats = NatsServer::start().await.expect("nats");
    let host = start_host(&nats.url(), &[]).await.expect("host");
    let ctl = ctl(&nats).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.expect("events");
    let wash = Wash::on(&nats);
    let dir = tempfile::tempdir().expect("tempdir");
    // The host clears the environment of providers, so no PATH: name the binary in full.
    let sleep = ["/bin/sleep", "/usr/bin/sleep"].into_iter().find(|p| std::path::Path::new(p).exists()).expect("a sleep binary");
    let provider = script(dir.path(), "provider.sh", &format!("#!/bin/sh\nexec {sleep} 600\n"));

    let v = wash.run_async(&["-o", "json", "start", "provider", &provider.to_string_lossy(), "idle"]).await.json();
    assert_eq!(v["provider_id"], "idle");
    assert_eq!(v["host_id"], host.id());
    events.wait_for("provider_started", WAIT, |e| e.data["provider_id"] == "idle").await.expect("started");
    let inv = ctl.get_host_inventory(host.id()).await.expect("inventory");
    assert_eq!(inv.providers.len(), 1);
    assert_eq!(inv.providers[0].image_ref.as_deref(), Some(file_ref(&provider).as_str()));
    let text = wash.run_async(&["get", "inventory"]).await.ok().to_string();
    assert!(text.contains("idle"), "{text}");

    // A second start of the same id: no host bids.
    let err = wash.run_async(&["start", "provider", &provider.to_string_lossy(), "idle"]).await.error();
    assert!(err.contains("no host in lattice `default` bid to run provider `idle`"), "{err}");

    let out = wash.run_async(&["stop", "provider", "idle"]).await;
    assert!(out.ok().contains(&format!("Provider `idle` stopped on host {}", host.id())), "{}", out.stdout);
    events.wait_for("provider_stopped", WAIT, |e| e.data["provider_id"] == "idle").await.expect("stopped");
    assert!(ctl.get_host_inventory(host.id()).await.expect("inventory").providers.is_empty());
    let err = wash.run_async(&["stop", "provider", "idle"]).await.error();
    assert!(err.contains("provider `idle` is not running"), "{err}");

    // A provider that cannot start: the host's provider_start_failed error.
    let err = wash.run_async(&["start", "provider", "file:///does/not/exist", "ghost"]).await.error();
    assert!(err.contains("could not start provider `ghost`") && err.contains("cannot read provider"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_stop_on_request() {
    let nats = NatsServer::start().await.expect("nats");
    let keep = start_host(&nats.url(), &[]).await.expect("host");
    let doomed = start_host(&nats.url(), &[]).await.expect("host");
    let ctl = ctl(&nats).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.expect("events");
    let wash = Wash::on(&nats);

    let v = wash.run_async(&["-o", "json", "stop", "host", doomed.id()]).await.json();
    assert_eq!(v["host_id"], doomed.id());
    events.wait_for("host_stopped", WAIT, |e| e.source == doomed.id()).await.expect("host_stopped");
    let hosts = ctl.ping_hosts().await.expect("ping");
    assert_eq!(hosts.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), vec![keep.id()]);

    let err = wash.run_async(&["stop", "host", "NBOGUS", "--timeout-ms", "1000"]).await.error();
    assert!(err.contains("no host with id `NBOGUS`"), "{err}");
}

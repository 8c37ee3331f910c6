//! `wash link|config|label …`, `wash get hosts|links|claims` and `wash completions`, each
//! checked against what the lattice holds afterwards.

mod common;

use common::{WAIT, Wash, ctl};
use trellis_lattice::ctl::{Link, StringMap};
use trellis_tests::hosts::{Events, start_host};
use trellis_tests::nats::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_put_get_and_del() {
    let nats = NatsServer::start().await.expect("nats");
    let _host = start_host(&nats.url(), &[]).await.expect("host");
    let ctl = ctl(&nats).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.expect("events");
    let wash = Wash::on(&nats);

    let out = wash.run_async(&["config", "put", "addr", "address=127.0.0.1:8080", "url=http://x/?a=b"]).await;
    assert!(out.ok().contains("Config `addr` put (2 key(s))"), "{}", out.stdout);
    events.wait_for("config_set", WAIT, |e| e.data["config_name"] == "addr").await.expect("config_set");
    let want: StringMap = [("address".to_string(), "127.0.0.1:8080".to_string()), ("url".to_string(), "http://x/?a=b".to_string())].into();
    assert_eq!(ctl.get_config("addr").await.expect("stored"), want);

    let text = wash.run_async(&["config", "get", "addr"]).await.ok().to_string();
    assert!(text.lines().any(|l| l.split_whitespace().eq(["address", "127.0.0.1:8080"])), "{text}");
    let v = wash.run_async(&["config", "get", "addr", "-o", "json"]).await.json();
    assert_eq!(v["config"], serde_json::to_value(&want).expect("json"));

    let err = wash.run_async(&["config", "get", "missing"]).await.error();
    assert!(err.contains("no config named `missing`") && err.contains("wash config put missing"), "{err}");
    let err = wash.run_async(&["config", "put", "addr", "novalue"]).await;
    assert!(!err.success && err.stderr.contains("key=value"), "{}", err.stderr);

    let v = wash.run_async(&["config", "del", "addr", "-o", "json"]).await.json();
    assert_eq!(v["existed"], true);
    events.wait_for("config_deleted", WAIT, |e| e.data["config_name"] == "addr").await.expect("config_deleted");
    assert!(ctl.get_config("addr").await.is_err());
    let out = wash.run_async(&["config", "del", "addr"]).await;
    assert!(out.ok().contains("nothing deleted"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_put_get_and_del() {
    let nats = NatsServer::start().await.expect("nats");
    let _host = start_host(&nats.url(), &[]).await.expect("host");
    let ctl = ctl(&nats).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.expect("events");
    let wash = Wash::on(&nats);
    wash.run_async(&["config", "put", "addr", "address=127.0.0.1:8080"]).await.ok();

    let out = wash.run_async(&["link", "put", "http", "hello", "wasi", "http", "--interface", "incoming-handler", "--source-config", "addr"]).await;
    assert!(out.ok().contains("Linked http -> hello for wasi:http/incoming-handler (link name `default`)"), "{}", out.stdout);
    events.wait_for("linkdef_set", WAIT, |e| e.data["target"] == "hello").await.expect("linkdef_set");
    let link = Link {
        source_id: "http".into(),
        target: "hello".into(),
        name: "default".into(),
        wit_namespace: "wasi".into(),
        wit_package: "http".into(),
        interfaces: vec!["incoming-handler".into()],
        source_config: vec!["addr".into()],
        target_config: vec![],
    };
    assert_eq!(ctl.get_links().await.expect("links"), vec![link.clone()]);

    // A second link under another name, with JSON output and two interfaces.
    let v = wash
        .run_async(&["-o", "json", "link", "put", "hello", "kv", "wasi", "keyvalue", "--interface", "store", "--interface", "atomics", "--link-name", "cache"])
        .await
        .json();
    assert_eq!(v["link"]["name"], "cache");
    assert_eq!(ctl.get_links().await.expect("links").len(), 2);

    // Listing, as a table and as JSON, through both spellings.
    let text = wash.run_async(&["link", "get"]).await.ok().to_string();
    let row = text.lines().find(|l| l.starts_with("http")).unwrap_or_else(|| panic!("no http row: {text}"));
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["http", "hello", "wasi:http/incoming-handler", "default", "addr", "-"]);
    assert!(text.contains("wasi:keyvalue/store,atomics"), "{text}");
    let v = wash.run_async(&["get", "links", "-o", "json"]).await.json();
    let mut listed: Vec<Link> = serde_json::from_value(v["links"].clone()).expect("links");
    listed.sort();
    let mut stored = ctl.get_links().await.expect("links");
    stored.sort();
    assert_eq!(listed, stored);

    // A conflicting link: another target for the same source, package, name and interface.
    let err = wash.run_async(&["link", "put", "http", "other", "wasi", "http", "--interface", "incoming-handler"]).await.error();
    assert!(err.contains("link conflict") && err.contains("wash link del http wasi http"), "{err}");
    // A link naming config that does not exist.
    let err = wash.run_async(&["link", "put", "a", "b", "wasi", "http", "--interface", "incoming-handler", "--target-config", "nope"]).await.error();
    assert!(err.contains("config `nope`") && err.contains("does not exist"), "{err}");
    assert_eq!(ctl.get_links().await.expect("links").len(), 2, "refused links must not be stored");
    // No interface at all is a usage error.
    assert!(!wash.run_async(&["link", "put", "a", "b", "wasi", "http"]).await.success);

    let v = wash.run_async(&["-o", "json", "link", "del", "http", "wasi", "http"]).await.json();
    assert_eq!(v["deleted"].as_array().map(Vec::len), Some(1));
    events.wait_for("linkdef_deleted", WAIT, |e| e.data["source_id"] == "http").await.expect("linkdef_deleted");
    let out = wash.run_async(&["link", "del", "hello", "wasi", "keyvalue", "--link-name", "cache"]).await;
    assert!(out.ok().contains("Deleted 1 link(s)"), "{}", out.stdout);
    assert!(ctl.get_links().await.expect("links").is_empty());
    let out = wash.run_async(&["link", "del", "hello", "wasi", "keyvalue"]).await;
    assert!(out.ok().contains("nothing deleted"), "{}", out.stdout);
    assert!(wash.run_async(&["get", "links"]).await.ok().contains("(none)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_and_labels() {
    let nats = NatsServer::start().await.expect("nats");
    let a = start_host(&nats.url(), &[("zone", "cloud")]).await.expect("host");
    let b = start_host(&nats.url(), &[]).await.expect("host");
    let ctl = ctl(&nats).await;
    let mut events = Events::subscribe(ctl.nats(), "default").await.expect("events");
    let wash = Wash::on(&nats);

    let text = wash.run_async(&["get", "hosts"]).await.ok().to_string();
    assert!(text.starts_with("HOST ID"), "{text}");
    for h in [&a, &b] {
        let row = text.lines().find(|l| l.starts_with(h.id())).unwrap_or_else(|| panic!("no row for {}: {text}", h.id()));
        assert!(row.contains(h.friendly_name()) && row.contains("hostcore.os="), "{row}");
    }
    assert!(text.lines().any(|l| l.starts_with(a.id()) && l.contains("zone=cloud")), "{text}");
    let v = wash.run_async(&["get", "hosts", "-o", "json"]).await.json();
    let mut ids: Vec<&str> = v["hosts"].as_array().expect("hosts").iter().filter_map(|h| h["id"].as_str()).collect();
    ids.sort();
    let mut want = vec![a.id(), b.id()];
    want.sort();
    assert_eq!(ids, want);

    let out = wash.run_async(&["label", "put", b.id(), "zone=edge", "gpu=yes"]).await;
    assert!(out.ok().contains("labelled zone=edge,gpu=yes"), "{}", out.stdout);
    events.wait_for("labels_changed", WAIT, |e| e.data["host_id"] == b.id() && e.data["labels"]["gpu"] == "yes").await.expect("labels_changed");
    let labels = ctl.get_host_inventory(b.id()).await.expect("inventory").labels;
    assert_eq!((labels.get("zone").map(String::as_str), labels.get("gpu").map(String::as_str)), (Some("edge"), Some("yes")));
    // The new label steers auctions.
    let err = wash.run_async(&["start", "component", "/dev/null", "x", "-c", "gpu=no"]).await.error();
    assert!(err.contains("constraints gpu=no"), "{err}");

    let v = wash.run_async(&["-o", "json", "label", "del", b.id(), "gpu"]).await.json();
    assert_eq!(v["deleted"], serde_json::json!(["gpu"]));
    assert!(!ctl.get_host_inventory(b.id()).await.expect("inventory").labels.contains_key("gpu"));

    let err = wash.run_async(&["label", "put", b.id(), "hostcore.os=plan9"]).await.error();
    assert!(err.contains("reserved"), "{err}");
    let err = wash.run_async(&["label", "del", b.id(), "nope"]).await.error();
    assert!(err.contains("has no label `nope`"), "{err}");
    let err = wash.run_async(&["label", "put", "NBOGUS", "a=b", "--timeout-ms", "1000"]).await.error();
    assert!(err.contains("no host with id `NBOGUS`"), "{err}");
    let err = wash.run_async(&["get", "inventory", "NBOGUS", "--timeout-ms", "1000"]).await.error();
    assert!(err.contains("no host with id `NBOGUS`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_listed() {
    let nats = NatsServer::start().await.expect("nats");
    let _host = start_host(&nats.url(), &[]).await.expect("host");
    let wash = Wash::on(&nats);
    assert!(wash.run_async(&["get", "claims"]).await.ok().contains("(none)"));

    // What a host stores when it runs a signed component (the host opened the bucket).
    let js = async_nats::jetstream::new(nats.client().await.expect("client"));
    let kv = js.get_key_value(trellis_lattice::state::lattice_bucket("default")).await.expect("bucket");
    let claims: StringMap =
        [("name", "Hello"), ("sub", "MSUBJECT"), ("iss", "AISSUER"), ("rev", "3")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    kv.put(trellis_lattice::state::claims_key("MSUBJECT"), serde_json::to_vec(&claims).expect("json").into()).await.expect("put");

    let text = wash.run_async(&["get", "claims"]).await.ok().to_string();
    let row = text.lines().nth(1).expect("a row");
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["Hello", "MSUBJECT", "AISSUER", "3"]);
    let v = wash.run_async(&["get", "claims", "-o", "json"]).await.json();
    assert_eq!(v["claims"], serde_json::json!([claims]));
}

#[test]
fn completions_for_each_shell() {
    let wash = Wash::new(1);
    let bash = wash.run(&["completions", "bash"]);
    assert!(bash.ok().contains("_wash()"), "{}", bash.stdout);
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let out = wash.run(&["completions", shell]);
        assert!(out.ok().contains("wash"), "{shell}");
    }
    assert!(!wash.run(&["completions", "tcsh"]).success);
}

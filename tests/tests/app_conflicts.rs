//! Apps side by side and over time: two apps that define one link or config differently do not
//! fight over it (the one holding it keeps it, the other is told why), one defined identically
//! is shared and outlives the undeploy of either; a new version removes the links and config the
//! old one put and it no longer defines; a provider on a draining host stops only once it runs
//! elsewhere; replicas leave a host whose labels no longer match.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use trellis_lattice::app::{AppClient, StatusType};
use trellis_lattice::client::CtlClient;
use trellis_lattice::ctl::{Link, StringMap};
use trellis_lattice::event::CloudEvent;
use trellis_tests::apps::{replicas, wait_replicas, wait_status};
use trellis_tests::components::{file_ref, http_hello};
use trellis_tests::hosts::start_host;
use trellis_tests::nats::NatsServer;
use trellis_tests::scenario::lattice;

const LONG: Duration = Duration::from_secs(90);

/// App `app` at `version`, everything on the `zone` hosts: component `web` (id `web`, so two
/// apps can name the same link source) with config `{name: v=value}` if `config`, and, if
/// `target`, a component `store` with that id and a `wasi:keyvalue/store` link `web` → it.
fn manifest(app: &str, version: &str, zone: &str, target: Option<&str>, config: Option<(&str, &str)>) -> String {
    let image = file_ref(http_hello());
    let spread = format!(
        "      traits:\n        - type: spreadscaler\n          properties:\n            instances: 1\n            spread:\n              - name: z\n                requirements:\n                  zone: {zone}\n"
    );
    let mut text = format!(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: {app}\n  annotations:\n    version: {version}\nspec:\n  components:\n    - name: web\n      type: component\n      properties:\n        image: {image}\n        id: web\n"
    );
    if let Some((name, value)) = config {
        text.push_str(&format!("        config:\n          - name: {name}\n            properties:\n              v: \"{value}\"\n"));
    }
    text.push_str(&spread);
    if let Some(target) = target {
        text.push_str(
            "        - type: link\n          properties:\n            namespace: wasi\n            package: keyvalue\n            interfaces: [store]\n            target:\n              name: store\n",
        );
        text.push_str(&format!("    - name: store\n      type: component\n      properties:\n        image: {image}\n        id: {target}\n{spread}"));
    }
    text
}

async fn deploy(apps: &AppClient, text: &str) {
    let put = apps.put(text).await.unwrap();
    apps.deploy(&put.name, Some(&put.current_version)).await.unwrap();
}

/// The targets of the links from `web`.
async fn web_targets(ctl: &CtlClient) -> Vec<String> {
    let links: Vec<Link> = ctl.get_links().await.unwrap();
    let mut out: Vec<String> = links.into_iter().filter(|l| l.source_id == "web").map(|l| l.target).collect();
    out.sort();
    out
}

/// The `v` of config `name`, if it exists.
async fn config_v(ctl: &CtlClient, name: &str) -> Option<String> {
    ctl.get_config(name).await.ok().map(|c: StringMap| c.get("v").cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_defining_one_link_and_config_differently_do_not_fight_and_the_second_takes_over_on_undeploy() {
    let nats = NatsServer::start().await.unwrap();
    let _a = start_host(&nats.url(), &[("zone", "a")]).await.unwrap();
    let _b = start_host(&nats.url(), &[("zone", "b")]).await.unwrap();
    let l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    deploy(&apps, &manifest("first", "v1", "a", Some("store-1"), Some(("cfg", "1")))).await;
    wait_status(&apps, "first", StatusType::Deployed, LONG).await;
    assert_eq!(web_targets(&l.ctl).await, ["store-1"]);

    deploy(&apps, &manifest("second", "v1", "b", Some("store-2"), Some(("cfg", "2")))).await;
    let s = wait_status(&apps, "second", StatusType::Failed, LONG).await;
    assert!(
        s.message().contains(
            "link `web` → `store-2` (wasi:keyvalue, name default) conflicts with app `first`, which defines it → `store-1`; change one of the manifests"
        ),
        "{s:?}"
    );
    assert!(s.message().contains("config `cfg` conflicts with app `first`, which defines it with other values; change one of the manifests"), "{s:?}");
    // Several leader passes later, the first app still holds both, untouched.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(web_targets(&l.ctl).await, ["store-1"]);
    assert_eq!(config_v(&l.ctl, "cfg").await.as_deref(), Some("1"));
    assert_eq!(apps.status("first").await.unwrap().state(), StatusType::Deployed);
    assert_eq!(apps.status("second").await.unwrap().state(), StatusType::Failed);

    // Once the first app goes, the second puts its own.
    apps.undeploy("first").await.unwrap();
    wait_status(&apps, "first", StatusType::Undeployed, LONG).await;
    wait_status(&apps, "second", StatusType::Deployed, LONG).await;
    assert_eq!(web_targets(&l.ctl).await, ["store-2"]);
    assert_eq!(config_v(&l.ctl, "cfg").await.as_deref(), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_and_config_two_apps_define_alike_outlive_the_undeploy_of_either() {
    let nats = NatsServer::start().await.unwrap();
    let _a = start_host(&nats.url(), &[("zone", "a")]).await.unwrap();
    let _b = start_host(&nats.url(), &[("zone", "b")]).await.unwrap();
    let l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    deploy(&apps, &manifest("first", "v1", "a", Some("store"), Some(("cfg", "1")))).await;
    deploy(&apps, &manifest("second", "v1", "b", Some("store"), Some(("cfg", "1")))).await;
    wait_status(&apps, "first", StatusType::Deployed, LONG).await;
    wait_status(&apps, "second", StatusType::Deployed, LONG).await;
    assert_eq!(web_targets(&l.ctl).await, ["store"]);

    apps.undeploy("second").await.unwrap();
    wait_status(&apps, "second", StatusType::Undeployed, LONG).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(web_targets(&l.ctl).await, ["store"], "the link the first app defines too stays");
    assert_eq!(config_v(&l.ctl, "cfg").await.as_deref(), Some("1"), "so does the config");
    assert_eq!(apps.status("first").await.unwrap().state(), StatusType::Deployed);

    // The last app that defines them takes them along.
    apps.undeploy("first").await.unwrap();
    wait_status(&apps, "first", StatusType::Undeployed, LONG).await;
    assert!(web_targets(&l.ctl).await.is_empty());
    assert_eq!(config_v(&l.ctl, "cfg").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_removes_the_links_and_config_the_old_one_put_and_no_longer_defines() {
    let nats = NatsServer::start().await.unwrap();
    let h = start_host(&nats.url(), &[("zone", "a")]).await.unwrap();
    let l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    // Config the app never defined: never touched.
    l.put_config("keep", &[("v", "mine")]).await;
    deploy(&apps, &manifest("app", "v1", "a", Some("store-1"), Some(("old-cfg", "1")))).await;
    wait_status(&apps, "app", StatusType::Deployed, LONG).await;
    assert_eq!(web_targets(&l.ctl).await, ["store-1"]);
    assert_eq!(config_v(&l.ctl, "old-cfg").await.as_deref(), Some("1"));

    // v2: the link points elsewhere, the config has another name.
    deploy(&apps, &manifest("app", "v2", "a", Some("store-2"), Some(("new-cfg", "2")))).await;
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let s = apps.status("app").await.unwrap();
        if s.state() == StatusType::Deployed && s.deployed_version() == Some("v2") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "v2 is not deployed: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(web_targets(&l.ctl).await, ["store-2"]);
    assert_eq!(config_v(&l.ctl, "old-cfg").await, None, "v2 no longer defines `old-cfg`");
    assert_eq!(config_v(&l.ctl, "new-cfg").await.as_deref(), Some("2"));
    assert_eq!(replicas(&l.ctl, &[&h], "store-1").await, [0]);
    assert_eq!(replicas(&l.ctl, &[&h], "store-2").await, [1]);

    // v3: neither link nor config.
    deploy(&apps, &manifest("app", "v3", "a", None, None)).await;
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let s = apps.status("app").await.unwrap();
        if s.state() == StatusType::Deployed && s.deployed_version() == Some("v3") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "v3 is not deployed: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(web_targets(&l.ctl).await.is_empty(), "v3 defines no link");
    assert_eq!(config_v(&l.ctl, "new-cfg").await, None);
    assert_eq!(config_v(&l.ctl, "keep").await.as_deref(), Some("mine"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_host_stops_an_apps_provider_there_only_once_it_runs_elsewhere() {
    let nats = NatsServer::start().await.unwrap();
    let w1 = start_host(&nats.url(), &[("zone", "work")]).await.unwrap();
    let w2 = start_host(&nats.url(), &[("zone", "work")]).await.unwrap();
    let l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    let text = "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: kv\nspec:\n  components:\n    - name: store\n      type: capability\n      properties:\n        image: builtin://keyvalue\n      traits:\n        - type: spreadscaler\n          properties:\n            instances: 1\n            spread:\n              - name: w\n                requirements:\n                  zone: work\n";
    deploy(&apps, text).await;
    wait_status(&apps, "kv", StatusType::Deployed, LONG).await;
    let id = "kv-store";
    let mut on = Vec::new();
    for h in [&w1, &w2] {
        on.push(l.ctl.get_host_inventory(h.id()).await.unwrap().providers.iter().any(|p| p.id == id));
    }
    let (from, to) = match on.as_slice() {
        [true, false] => (&w1, &w2),
        [false, true] => (&w2, &w1),
        other => panic!("provider `{id}` should run on one host: {other:?}"),
    };

    let mut events = l.ctl.subscribe_events().await.unwrap();
    trellis_lattice::round_trip(l.ctl.nats()).await.unwrap();
    l.ctl.drain_host(from.id()).await.unwrap();
    // Every provider event of `id`, in the order the lattice saw them.
    let mut seen: Vec<(String, String)> = Vec::new();
    let deadline = tokio::time::Instant::now() + LONG;
    while !seen.iter().any(|(name, host)| name == "provider_stopped" && host == from.id()) {
        let msg = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut events))
            .await
            .unwrap_or_else(|_| panic!("the provider did not stop on the drained host; saw {seen:?}"))
            .unwrap();
        let Ok(ev) = CloudEvent::from_slice(&msg.payload) else { continue };
        if ev.data.get("provider_id").and_then(|v| v.as_str()) == Some(id) {
            seen.push((ev.name().to_string(), ev.data.get("host_id").and_then(|v| v.as_str()).unwrap_or_default().to_string()));
        }
    }
    let started = seen.iter().position(|(name, host)| name == "provider_started" && host == to.id());
    let stopped = seen.iter().position(|(name, host)| name == "provider_stopped" && host == from.id());
    assert!(started.is_some() && started < stopped, "the provider stopped on the drained host before it ran on the other: {seen:?}");
    wait_status(&apps, "kv", StatusType::Deployed, LONG).await;
    assert!(l.ctl.get_host_inventory(to.id()).await.unwrap().providers.iter().any(|p| p.id == id));
    assert!(!l.ctl.get_host_inventory(from.id()).await.unwrap().providers.iter().any(|p| p.id == id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_leave_a_host_whose_labels_no_longer_match_and_come_back_when_they_do() {
    let nats = NatsServer::start().await.unwrap();
    let w1 = start_host(&nats.url(), &[("zone", "a")]).await.unwrap();
    let w2 = start_host(&nats.url(), &[("zone", "a")]).await.unwrap();
    let l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    deploy(&apps, &manifest("app", "v1", "a", Some("store"), None)).await;
    wait_status(&apps, "app", StatusType::Deployed, LONG).await;
    let hosts = [&w1, &w2];
    let sum = |v: Vec<u32>| v.iter().sum::<u32>();
    assert_eq!(sum(replicas(&l.ctl, &hosts, "web").await) + sum(replicas(&l.ctl, &hosts, "store").await), 2);

    l.ctl.delete_label(w1.id(), "zone").await.unwrap();
    wait_replicas(&l.ctl, &hosts, "web", &[0, 1], LONG).await;
    wait_replicas(&l.ctl, &hosts, "store", &[0, 1], LONG).await;
    wait_status(&apps, "app", StatusType::Deployed, LONG).await;

    l.ctl.put_label(w2.id(), "zone", "b").await.unwrap();
    l.ctl.put_label(w1.id(), "zone", "a").await.unwrap();
    wait_replicas(&l.ctl, &hosts, "web", &[1, 0], LONG).await;
    wait_replicas(&l.ctl, &hosts, "store", &[1, 0], LONG).await;
    wait_status(&apps, "app", StatusType::Deployed, LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_never_changes_or_deletes_the_users_config_or_links() {
    let nats = NatsServer::start().await.unwrap();
    let _h = start_host(&nats.url(), &[("zone", "a")]).await.unwrap();
    let l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    // The user's config, named like one the app defines (the quick start's `hello-http`).
    l.put_config("hello-http", &[("v", "user")]).await;

    deploy(&apps, &manifest("demo", "v1", "a", None, Some(("hello-http", "app")))).await;
    let s = wait_status(&apps, "demo", StatusType::Failed, LONG).await;
    assert!(s.message().contains("config `hello-http` conflicts with the user's config `hello-http` (no app put it)"), "{s:?}");
    // Several leader passes later, the user's values are untouched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(config_v(&l.ctl, "hello-http").await.as_deref(), Some("user"));
    apps.undeploy("demo").await.unwrap();
    wait_status(&apps, "demo", StatusType::Undeployed, LONG).await;
    assert_eq!(config_v(&l.ctl, "hello-http").await.as_deref(), Some("user"), "undeploy deleted the user's config");

    // Defined alike: the app uses it as it is, and undeploy leaves it.
    l.put_config("same", &[("v", "1")]).await;
    deploy(&apps, &manifest("alike", "v1", "a", None, Some(("same", "1")))).await;
    wait_status(&apps, "alike", StatusType::Deployed, LONG).await;
    apps.undeploy("alike").await.unwrap();
    wait_status(&apps, "alike", StatusType::Undeployed, LONG).await;
    assert_eq!(config_v(&l.ctl, "same").await.as_deref(), Some("1"), "undeploy deleted the user's config");

    // The user's link in the slot an app defines: a conflict naming it; never replaced or deleted.
    let users = Link {
        source_id: "web".into(),
        target: "mine".into(),
        name: "default".into(),
        wit_namespace: "wasi".into(),
        wit_package: "keyvalue".into(),
        interfaces: vec!["store".into()],
        source_config: vec![],
        target_config: vec![],
    };
    l.ctl.put_link(&users).await.unwrap();
    deploy(&apps, &manifest("linker", "v1", "a", Some("store"), None)).await;
    let s = wait_status(&apps, "linker", StatusType::Failed, LONG).await;
    assert!(s.message().contains("link `web` → `store` (wasi:keyvalue, name default) conflicts with the user's link → `mine` (no app put it)"), "{s:?}");
    apps.undeploy("linker").await.unwrap();
    wait_status(&apps, "linker", StatusType::Undeployed, LONG).await;
    assert_eq!(web_targets(&l.ctl).await, ["mine"], "the user's link changed");
}

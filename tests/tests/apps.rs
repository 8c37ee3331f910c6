//! Declarative apps end to end: manifests stored and deployed through the app API, placed by
//! the reconciler that every host carries (spread by labels and weights), served over HTTP,
//! undeployed without touching anything else, honest about what it cannot place, kept
//! reconciled when the leading host goes away, and re-placed under HTTP load when a host is
//! killed.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use trellis_host::Host;
use trellis_lattice::app::{AppClient, LEADER_KEY, Lease, PutResult, StatusType, apps_bucket};
use trellis_lattice::ctl::{ComponentDescription, StringMap};
use trellis_lattice::manifest::{APP_SPEC_ANNOTATION, MANAGED_BY_ANNOTATION, Manifest};
use trellis_tests::apps::{replicas, replicas_on, wait_replicas, wait_status};
use trellis_tests::components::{file_ref, http_hello, misbehave};
use trellis_tests::hosts::start_host;
use trellis_tests::http::{Load, LoadRequest, free_addr, get_until};
use trellis_tests::nats::NatsServer;
use trellis_tests::scenario::{WAIT, lattice};

const LONG: Duration = Duration::from_secs(90);

/// An app: `hello` (http-hello) spread by `spread` (name, zone, weight), and an http-server
/// provider linked to it at `addr` through inline config `{app}-http`.
fn manifest(app: &str, instances: u32, spread: &[(&str, &str, u32)], addr: Option<SocketAddr>) -> String {
    let mut spreads = String::new();
    if !spread.is_empty() {
        spreads.push_str("            spread:\n");
        for (name, zone, weight) in spread {
            spreads.push_str(&format!(
                "              - name: {name}\n                requirements:\n                  zone: {zone}\n                weight: {weight}\n"
            ));
        }
    }
    let mut text = format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: {app}
  annotations:
    version: v1
spec:
  components:
    - name: hello
      type: component
      properties:
        image: {image}
      traits:
        - type: spreadscaler
          properties:
            instances: {instances}
{spreads}"#,
        image = file_ref(http_hello())
    );
    if let Some(addr) = addr {
        text.push_str(&format!(
            r#"    - name: http
      type: capability
      properties:
        image: builtin://http-server
      traits:
        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            source:
              config:
                - name: {app}-http
                  properties:
                    address: "{addr}"
            target:
              name: hello
"#
        ));
    }
    text
}

fn managed_by(c: &ComponentDescription, app: &str) -> bool {
    c.annotations.get(APP_SPEC_ANNOTATION).map(String::as_str) == Some(app) && c.annotations.contains_key(MANAGED_BY_ANNOTATION)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spread_app_places_replicas_by_weight_and_serves_http() {
    let nats = NatsServer::start().await.unwrap();
    let c1 = start_host(&nats.url(), &[("zone", "cloud")]).await.unwrap();
    let c2 = start_host(&nats.url(), &[("zone", "cloud")]).await.unwrap();
    let edge = start_host(&nats.url(), &[("zone", "edge")]).await.unwrap();
    let l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    let addr = free_addr().unwrap();
    let text = manifest("hello-app", 6, &[("cloud", "cloud", 2), ("edge", "edge", 1)], Some(addr));

    // A bad manifest is refused with every mistake.
    let bad = apps.put("apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata: {}\nspec:\n  components: 3\n").await.unwrap_err().to_string();
    assert!(bad.contains("metadata.name") && bad.contains("spec.components"), "{bad}");

    let put = apps.put(&text).await.unwrap();
    assert_eq!((put.name.as_str(), put.current_version.as_str(), put.result, put.total_versions), ("hello-app", "v1", PutResult::Created, 1));
    let again = apps.put(&text).await.unwrap();
    assert!(again.total_versions == 1 && again.message.contains("nothing changed"), "the same version again stores nothing new: {again:?}");
    assert!(apps.put(&text.replace("instances: 6", "instances: 5")).await.is_err(), "a different manifest under the same version is refused");
    apps.deploy("hello-app", None).await.unwrap();

    wait_status(&apps, "hello-app", StatusType::Deployed, LONG).await;
    let id = "hello_app-hello";
    let per_host = replicas(&l.ctl, &[&c1, &c2, &edge], id).await;
    assert_eq!(per_host, [2, 2, 2], "4 replicas on the cloud hosts, 2 on the edge one");
    let inv = l.ctl.get_host_inventory(edge.id()).await.unwrap();
    assert!(inv.components.iter().any(|c| c.id == id && managed_by(c, "hello-app")), "{inv:?}");
    let r = get_until(addr, "/", 200, WAIT).await.unwrap();
    assert_eq!(r.text(), "Hello from Trellis!\n");

    let list = apps.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].deployed_version.as_deref(), Some("v1"));
    let versions = apps.versions("hello-app").await.unwrap();
    assert_eq!(versions.len(), 1);
    assert!(versions[0].deployed);
    let got = apps.get("hello-app", None).await.unwrap();
    assert_eq!(Manifest::parse(&got.to_string()).unwrap(), Manifest::parse(&text).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeploy_removes_what_the_app_created_and_nothing_else() {
    let nats = NatsServer::start().await.unwrap();
    let a = start_host(&nats.url(), &[("zone", "cloud")]).await.unwrap();
    let b = start_host(&nats.url(), &[("zone", "edge")]).await.unwrap();
    let mut l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    // Unrelated: a component, a config and a link.
    l.start_component(&a, "other", misbehave(), 1, None).await;
    let other_addr = free_addr().unwrap();
    l.link("bystander", "other", "keep-cfg", &[("address", &other_addr.to_string())]).await;

    let addr = free_addr().unwrap();
    apps.put(&manifest("gone", 2, &[], Some(addr))).await.unwrap();
    apps.deploy("gone", Some("v1")).await.unwrap();
    wait_status(&apps, "gone", StatusType::Deployed, LONG).await;
    assert_eq!(get_until(addr, "/", 200, WAIT).await.unwrap().text(), "Hello from Trellis!\n");
    assert!(l.ctl.get_links().await.unwrap().iter().any(|k| k.source_id == "gone-http"));

    apps.undeploy("gone").await.unwrap();
    wait_status(&apps, "gone", StatusType::Undeployed, LONG).await;
    for h in [&a, &b] {
        let inv = l.ctl.get_host_inventory(h.id()).await.unwrap();
        assert!(!inv.components.iter().any(|c| c.id.starts_with("gone-")), "{inv:?}");
        assert!(!inv.providers.iter().any(|p| p.id.starts_with("gone-")), "{inv:?}");
    }
    let links = l.ctl.get_links().await.unwrap();
    assert!(!links.iter().any(|k| k.source_id == "gone-http"), "{links:?}");
    assert!(l.ctl.get_config("gone-http").await.is_err(), "the app's config is gone");
    // What the app did not create survives.
    assert!(links.iter().any(|k| k.source_id == "bystander" && k.target == "other"), "{links:?}");
    let keep: StringMap = l.ctl.get_config("keep-cfg").await.unwrap();
    assert_eq!(keep["address"], other_addr.to_string());
    let inv = l.ctl.get_host_inventory(a.id()).await.unwrap();
    assert!(inv.components.iter().any(|c| c.id == "other"), "{inv:?}");
    // It can be deleted, and then it is gone.
    apps.delete("gone", None).await.unwrap();
    assert!(apps.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requirement_no_host_meets_is_reported_as_reconciling() {
    let nats = NatsServer::start().await.unwrap();
    let _h = start_host(&nats.url(), &[("zone", "cloud")]).await.unwrap();
    let l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    apps.put(&manifest("mars", 3, &[("cloud", "cloud", 1), ("mars", "mars", 2)], None)).await.unwrap();
    apps.deploy("mars", None).await.unwrap();
    let deadline = tokio::time::Instant::now() + LONG;
    let s = loop {
        let s = apps.status("mars").await.unwrap();
        // Until every host has been heard from, fewer may be placed.
        if s.message().contains("1 of 3 replicas") || tokio::time::Instant::now() >= deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(s.state(), StatusType::Reconciling, "{s:?}");
    assert!(s.message().contains("1 of 3 replicas of `hello`: no host matches zone=mars"), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_host_takes_the_lease_and_replaces_the_lost_replicas() {
    let nats = NatsServer::start().await.unwrap();
    let url = nats.url();
    let hosts = [start_host(&url, &[]).await.unwrap(), start_host(&url, &[]).await.unwrap(), start_host(&url, &[]).await.unwrap()];
    let client = nats.client().await.unwrap();
    let l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    apps.put(&manifest("ha", 3, &[], None)).await.unwrap();
    apps.deploy("ha", None).await.unwrap();
    wait_status(&apps, "ha", StatusType::Deployed, LONG).await;
    assert_eq!(replicas(&l.ctl, &hosts.iter().collect::<Vec<_>>(), "ha-hello").await, [1, 1, 1]);

    let kv = async_nats::jetstream::new(client).get_key_value(apps_bucket("default")).await.unwrap();
    let lease = |v: Option<bytes::Bytes>| serde_json::from_slice::<Lease>(&v.expect("a lease")).unwrap();
    let leader = lease(kv.get(LEADER_KEY).await.unwrap()).host_id;
    let (gone, rest): (Vec<&Host>, Vec<&Host>) = hosts.iter().partition(|h| h.id() == leader);
    assert_eq!(gone.len(), 1, "the leader is one of the hosts");
    gone[0].stop(Duration::from_secs(1)).await;

    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let now = lease(kv.get(LEADER_KEY).await.unwrap());
        if now.host_id != leader && rest.iter().any(|h| h.id() == now.host_id) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no other host took the lease: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let per_host = replicas(&l.ctl, &rest, "ha-hello").await;
        if per_host.iter().sum::<u32>() == 3 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the lost replica was not re-placed: {per_host:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_status(&apps, "ha", StatusType::Deployed, LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_cannot_load_is_reported_as_failed() {
    let nats = NatsServer::start().await.unwrap();
    let _h = start_host(&nats.url(), &[]).await.unwrap();
    let l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    let text = manifest("broken", 1, &[], None).replace(&file_ref(http_hello()), "file:///nonexistent/broken.wasm");
    apps.put(&text).await.unwrap();
    apps.deploy("broken", None).await.unwrap();
    let s = wait_status(&apps, "broken", StatusType::Failed, LONG).await;
    assert!(s.message().contains("`broken-hello` failed to start") && s.message().contains("/nonexistent/broken.wasm"), "{s:?}");
}

/// `drain`: `hello` spread over the `zone=work` hosts, the http-server provider on the
/// `zone=edge` host (so draining a work host never touches it).
fn drain_manifest(version: &str, instances: u32, addr: SocketAddr) -> String {
    drain_manifest_of(version, instances, addr, &file_ref(http_hello()))
}

/// [`drain_manifest`] with `hello` from `image`.
fn drain_manifest_of(version: &str, instances: u32, addr: SocketAddr, image: &str) -> String {
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: drain
  annotations:
    version: {version}
spec:
  components:
    - name: hello
      type: component
      properties:
        image: {image}
      traits:
        - type: spreadscaler
          properties:
            instances: {instances}
            spread:
              - name: work
                requirements:
                  zone: work
    - name: http
      type: capability
      properties:
        image: builtin://http-server
      traits:
        - type: spreadscaler
          properties:
            instances: 1
            spread:
              - name: edge
                requirements:
                  zone: edge
        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            source:
              config:
                - name: drain-http
                  properties:
                    address: "{addr}"
            target:
              name: hello
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_host_under_http_load_loses_no_request_and_cordon_blocks_new_placements() {
    use trellis_lattice::ctl::Schedule;
    let nats = NatsServer::start().await.unwrap();
    let w1 = start_host(&nats.url(), &[("zone", "work")]).await.unwrap();
    let w2 = start_host(&nats.url(), &[("zone", "work")]).await.unwrap();
    let edge = start_host(&nats.url(), &[("zone", "edge")]).await.unwrap();
    let l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    let addr = free_addr().unwrap();
    apps.put(&drain_manifest("v1", 4, addr)).await.unwrap();
    apps.deploy("drain", None).await.unwrap();
    wait_status(&apps, "drain", StatusType::Deployed, LONG).await;
    let id = "drain-hello";
    assert_eq!(replicas(&l.ctl, &[&w1, &w2, &edge], id).await, [2, 2, 0]);
    get_until(addr, "/", 200, WAIT).await.unwrap();

    // Drain w1 under steady load.
    let load = Load::start(addr, &[b"Hello from Trellis!\n"]).await;
    let r = l.ctl.drain_host(w1.id()).await.unwrap();
    assert_eq!(r.schedule, Schedule::Draining);
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let inv = l.ctl.get_host_inventory(w1.id()).await.unwrap();
        if inv.schedule == Schedule::Drained {
            assert!(inv.components.is_empty(), "{inv:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "w1 did not drain: {inv:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_status(&apps, "drain", StatusType::Deployed, LONG).await;
    load.finish("drain").await;
    assert_eq!(replicas(&l.ctl, &[&w1, &w2, &edge], id).await, [0, 4, 0]);
    // A drained host bids in no auction.
    let bids = l
        .ctl
        .perform_component_auction(&trellis_lattice::ctl::ComponentAuctionRequest {
            component_ref: file_ref(http_hello()),
            component_id: "bid".into(),
            constraints: Default::default(),
        })
        .await
        .unwrap();
    assert!(bids.iter().all(|b| b.host_id != w1.id()), "{bids:?}");

    // Uncordon: w1 takes replicas again.
    assert_eq!(l.ctl.uncordon_host(w1.id()).await.unwrap().schedule, Schedule::Schedulable);
    wait_replicas(&l.ctl, &[&w1, &w2], id, &[2, 2], LONG).await;

    // Cordon w1, scale the app up: nothing new lands on w1, what runs there stays.
    assert_eq!(l.ctl.cordon_host(w1.id()).await.unwrap().schedule, Schedule::Cordoned);
    apps.put(&drain_manifest("v2", 6, addr)).await.unwrap();
    apps.deploy("drain", Some("v2")).await.unwrap();
    wait_replicas(&l.ctl, &[&w1, &w2], id, &[2, 4], LONG).await;
    wait_status(&apps, "drain", StatusType::Deployed, LONG).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(replicas(&l.ctl, &[&w1, &w2], id).await, [2, 4], "a cordoned host got new replicas");
    // Uncordoned, it gets its share again.
    l.ctl.uncordon_host(w1.id()).await.unwrap();
    wait_replicas(&l.ctl, &[&w1, &w2], id, &[3, 3], LONG).await;
    get_until(addr, "/", 200, WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_a_new_version_under_http_load_loses_no_request_and_leaves_no_old_replica() {
    let nats = NatsServer::start().await.unwrap();
    let w1 = start_host(&nats.url(), &[("zone", "work")]).await.unwrap();
    let w2 = start_host(&nats.url(), &[("zone", "work")]).await.unwrap();
    let _edge = start_host(&nats.url(), &[("zone", "edge")]).await.unwrap();
    let l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    let addr = free_addr().unwrap();
    let (v1, v2) = (file_ref(http_hello()), file_ref(misbehave()));
    apps.put(&drain_manifest_of("v1", 4, addr, &v1)).await.unwrap();
    apps.deploy("drain", None).await.unwrap();
    wait_status(&apps, "drain", StatusType::Deployed, LONG).await;
    get_until(addr, "/", 200, WAIT).await.unwrap();

    let load = Load::start(addr, &[b"Hello from Trellis!\n", b"misbehave v1\n"]).await;
    apps.put(&drain_manifest_of("v2", 4, addr, &v2)).await.unwrap();
    apps.deploy("drain", Some("v2")).await.unwrap();
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let mut images = Vec::new();
        for h in [&w1, &w2] {
            let inv = l.ctl.get_host_inventory(h.id()).await.unwrap();
            images.extend(inv.components.iter().filter(|c| c.id == "drain-hello").map(|c| (c.image_ref.clone(), c.max_instances)));
        }
        if images.iter().all(|(i, _)| *i == v2) && images.iter().map(|(_, n)| n).sum::<u32>() == 4 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "v1 replicas remain: {images:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_status(&apps, "drain", StatusType::Deployed, LONG).await;
    load.finish("upgrade").await;
    assert_eq!(get_until(addr, "/", 200, WAIT).await.unwrap().text(), "misbehave v1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_host_under_http_load_moves_its_replicas_within_15_s_and_fails_requests_only_then() {
    let nats = NatsServer::start().await.unwrap();
    let url = nats.url();
    let w1 = start_host(&url, &[("zone", "work")]).await.unwrap();
    let w2 = start_host(&url, &[("zone", "work")]).await.unwrap();
    let _edge = start_host(&url, &[("zone", "edge")]).await.unwrap();
    // A real process with a 1 s heartbeat; dropping it kills it (SIGKILL: no host_stopped).
    let doomed = trellis_tests::hosts::ProcessHost::start(&url, &["-l", "zone=work"]).await.unwrap();
    let l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    let addr = free_addr().unwrap();
    let (id, instances) = ("drain-hello", 6);
    apps.put(&drain_manifest("v1", instances, addr)).await.unwrap();
    apps.deploy("drain", None).await.unwrap();
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let on_doomed = replicas_on(&l.ctl, &doomed.id, id).await;
        if on_doomed == 2 && replicas(&l.ctl, &[&w1, &w2], id).await == [2, 2] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the app was not spread over the three work hosts");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_status(&apps, "drain", StatusType::Deployed, LONG).await;
    get_until(addr, "/", 200, WAIT).await.unwrap();

    let load = Load::start(addr, &[b"Hello from Trellis!\n"]).await;
    // The instant is taken just before the signal, so the window cannot start after the kill.
    let killed = tokio::time::Instant::now();
    drop(doomed);
    let replaced = loop {
        let per_host = replicas(&l.ctl, &[&w1, &w2], id).await;
        if per_host.iter().sum::<u32>() == instances {
            break tokio::time::Instant::now();
        }
        assert!(killed.elapsed() < LONG, "the lost replicas were not re-placed: {per_host:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The load goes on 1 s past the re-placement, so requests sent after the window are seen
    // to succeed.
    tokio::time::sleep_until(replaced + Duration::from_secs(1)).await;
    let requests = load.stop().await;
    let took = replaced - killed;
    // Three 1 s heartbeats missed, a lease that may have to lapse, one round.
    assert!(took <= Duration::from_secs(15), "the replicas were re-placed {took:?} after the kill");

    // The window is every moment from the kill to the re-placement seen in the inventories
    // (polled every ~100 ms, so it may end that much late). Every failure must be seen in it:
    // the requests the kill fails are those the killed host had taken (or that NATS still
    // routed to it in the milliseconds before the server saw its connection close). Nobody
    // answers them, but the caller's probe (`rpc::PROBE_AFTER`) finds that no replica holds
    // them any more, so they fail as lost within about a second, well before the re-placement.
    // A request sent after the re-placement must not fail, nor one that failed before the kill.
    let (failed, ok): (Vec<&LoadRequest>, Vec<&LoadRequest>) = requests.iter().partition(|r| r.error.is_some());
    // An instant as a signed offset from the kill.
    let at = |t: tokio::time::Instant| if t >= killed { format!("+{:?}", t - killed) } else { format!("-{:?}", killed - t) };
    let outside: Vec<String> = failed
        .iter()
        .filter(|r| r.sent > replaced || r.done < killed || r.done > replaced)
        .map(|r| format!("sent {}, failed {}: {}", at(r.sent), at(r.done), r.error.as_deref().unwrap_or_default()))
        .collect();
    let answered_after = ok.iter().filter(|r| r.sent > replaced).count();
    let last_sent = failed.iter().map(|r| r.sent.saturating_duration_since(killed)).max().unwrap_or_default();
    let last_seen = failed.iter().map(|r| r.done.saturating_duration_since(killed)).max().unwrap_or_default();
    eprintln!(
        "kill -9: re-placed in {:.1} s; {} requests answered ({answered_after} sent after the re-placement), {} failed, {} (sent at most {} ms after the kill, failed at most {:.1} s after it)",
        took.as_secs_f64(),
        ok.len(),
        failed.len(),
        if outside.is_empty() { "all within the window".to_string() } else { format!("{} outside the window", outside.len()) },
        last_sent.as_millis(),
        last_seen.as_secs_f64(),
    );
    for r in failed.iter().take(10) {
        eprintln!("  sent {}, failed {} (from the kill): {}", at(r.sent), at(r.done), r.error.as_deref().unwrap_or_default());
    }
    assert!(outside.is_empty(), "{} failures outside the window (kill → re-placement, {took:?}): {:?}", outside.len(), &outside[..outside.len().min(5)]);
    assert!(answered_after > 20, "only {answered_after} requests answered after the re-placement");
    wait_status(&apps, "drain", StatusType::Deployed, LONG).await;
    assert_eq!(replicas(&l.ctl, &[&w1, &w2], id).await, [3, 3]);
    assert_eq!(get_until(addr, "/", 200, WAIT).await.unwrap().text(), "Hello from Trellis!\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn how_long_a_silent_host_is_waited_for_is_configurable() {
    let nats = NatsServer::start().await.unwrap();
    let url = nats.url();
    // The only other host waits 8 s (not 3 heartbeats of 1 s) before it presumes one lost.
    let mut patient = trellis_tests::hosts::config(&url, &[]);
    patient.host_lost_after = Some(Duration::from_secs(8));
    let a = Host::start(patient).await.unwrap();
    let doomed = trellis_tests::hosts::ProcessHost::start(&url, &["--host-lost-after-seconds", "8"]).await.unwrap();
    let l = lattice(nats).await;
    let apps = AppClient::new(l.ctl.nats().clone(), "default");
    apps.put(&manifest("patient", 2, &[], None)).await.unwrap();
    apps.deploy("patient", None).await.unwrap();
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let on_doomed = replicas_on(&l.ctl, &doomed.id, "patient-hello").await;
        if on_doomed == 1 && replicas(&l.ctl, &[&a], "patient-hello").await == [1] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the app was not spread over both hosts");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(doomed);
    let killed = tokio::time::Instant::now();
    // Well past 3 heartbeats (and the lease, should the killed host have held it), not yet 8 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(replicas(&l.ctl, &[&a], "patient-hello").await, [1], "re-placed before --host-lost-after-seconds");
    wait_replicas(&l.ctl, &[&a], "patient-hello", &[2], Duration::from_secs(10)).await;
    let took = killed.elapsed();
    assert!(took >= Duration::from_secs(8) && took < Duration::from_secs(15), "re-placed {took:?} after the kill");
}

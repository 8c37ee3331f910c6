//! Key-value end to end: `examples/http-kv-counter` on one host, the keyvalue provider on
//! another, HTTP in through the http-server provider, against each backend (memory, NATS
//! JetStream KV, Redis), all real servers.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;

use trellis_host::Host;
use trellis_lattice::ctl::*;
use trellis_tests::components::{file_ref, http_kv_counter};
use trellis_tests::hosts::{start_host, workspace_binary};
use trellis_tests::http::{free_addr, get, get_until};
use trellis_tests::nats::NatsServer;
use trellis_tests::redis::RedisServer;
use trellis_tests::scenario::{Lattice, WAIT, lattice};

/// A lattice of two hosts: `web` runs the http-server provider and the counter component(s),
/// `store` runs the keyvalue provider.
struct Setup {
    l: Lattice,
    web: Host,
    store: Host,
}

async fn setup(nats: NatsServer) -> Setup {
    let web = start_host(&nats.url(), &[]).await.unwrap();
    let store = start_host(&nats.url(), &[]).await.unwrap();
    let mut l = lattice(nats).await;
    l.start_provider(&web, "http", "builtin://http-server", &[]).await;
    Setup { l, web, store }
}

impl Setup {
    /// Starts counter `id`, links it to HTTP at a fresh address and to key-value provider
    /// `kv` with link target config `cfg`; returns the address.
    async fn counter(&mut self, id: &str, kv: &str, cfg: &[(&str, &str)]) -> SocketAddr {
        self.l.start_component(&self.web, id, http_kv_counter(), 16, None).await;
        let addr = free_addr().unwrap();
        self.l.link("http", id, &format!("{id}-addr"), &[("address", &addr.to_string())]).await;
        self.kv_link(id, kv, cfg).await;
        addr
    }

    /// Links `component` to key-value provider `kv` (store + atomics + cas), target config `cfg`.
    async fn kv_link(&self, component: &str, kv: &str, cfg: &[(&str, &str)]) {
        self.kv_link_named(component, kv, "default", cfg).await
    }

    /// [`Setup::kv_link`] under link name `link`.
    async fn kv_link_named(&self, component: &str, kv: &str, link: &str, cfg: &[(&str, &str)]) {
        let name = format!("{component}-{link}-kv");
        self.l.ctl.put_config(&name, &cfg.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).await.unwrap();
        self.l
            .ctl
            .put_link(&Link {
                source_id: component.into(),
                target: kv.into(),
                name: link.into(),
                wit_namespace: "wasi".into(),
                wit_package: "keyvalue".into(),
                interfaces: vec!["store".into(), "atomics".into(), "batch".into()],
                source_config: vec![],
                target_config: vec![name],
            })
            .await
            .unwrap();
    }
}

/// 200 increments from 32 concurrent clients: every answer is a distinct count and the last
/// is exactly 200.
async fn count_200(addr: SocketAddr, name: &str) {
    let path = format!("/{name}");
    let clients = (0..32).map(|c| {
        let path = path.clone();
        async move {
            let mut seen = Vec::new();
            for _ in 0..(200 / 32 + usize::from(c < 200 % 32)) {
                let r = get(addr, &path).await.unwrap();
                assert_eq!(r.status, 200, "{}", r.text());
                seen.push(r.text().trim().parse::<u64>().unwrap());
            }
            seen
        }
    });
    let mut seen: Vec<u64> = futures::future::join_all(clients).await.into_iter().flatten().collect();
    seen.sort();
    assert_eq!(seen, (1..=200).collect::<Vec<_>>(), "every increment is seen exactly once");
    assert_eq!(get(addr, &format!("{path}?get")).await.unwrap().text(), "200\n");
}

/// Stops provider `id` and starts it again on the same host, as a fresh process/instance.
async fn restart_provider(s: &mut Setup, id: &str, reference: &str) {
    s.l.ctl.stop_provider(&StopProviderCommand { provider_id: id.into(), host_id: s.store.id().into() }).await.unwrap();
    s.l.events.wait_for("provider_stopped", WAIT, |e| e.data["provider_id"] == id).await.unwrap();
    let store = s.store.clone();
    s.l.start_provider(&store, id, reference, &[]).await;
}

fn kv_provider_process() -> String {
    file_ref(workspace_binary("trellis-provider-keyvalue", "trellis-provider-keyvalue").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_on_the_memory_backend_counts_exactly() {
    let mut s = setup(NatsServer::start().await.unwrap()).await;
    let store = s.store.clone();
    s.l.start_provider(&store, "kv", "builtin://keyvalue", &[]).await;
    let addr = s.counter("counter", "kv", &[]).await;
    assert_eq!(get_until(addr, "/warmup", 200, WAIT).await.unwrap().text(), "1\n");
    count_200(addr, "hits").await;
    // Other counters are other keys; ?by adds more than one.
    assert_eq!(get(addr, "/other?by=5").await.unwrap().text(), "5\n");
    assert_eq!(get(addr, "/hits?get").await.unwrap().text(), "200\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_on_jetstream_kv_counts_exactly_and_survives_a_provider_restart() {
    let mut s = setup(NatsServer::start().await.unwrap()).await;
    let store = s.store.clone();
    let process = kv_provider_process();
    s.l.start_provider(&store, "kv", &process, &[]).await;
    let addr = s.counter("counter", "kv", &[("bucket", "counters"), ("enable_bucket_auto_create", "true")]).await;
    assert_eq!(get_until(addr, "/warmup", 200, WAIT).await.unwrap().text(), "1\n");
    count_200(addr, "hits").await;
    restart_provider(&mut s, "kv", &process).await;
    assert_eq!(get_until(addr, "/hits", 200, WAIT).await.unwrap().text(), "201\n", "the count survived the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_on_redis_counts_exactly_survives_a_provider_restart_and_outlives_a_redis_outage() {
    let mut redis = RedisServer::start().await.unwrap();
    let mut s = setup(NatsServer::start().await.unwrap()).await;
    let store = s.store.clone();
    let process = kv_provider_process();
    s.l.start_provider(&store, "kv", &process, &[]).await;
    let url = redis.url();
    let addr = s.counter("counter", "kv", &[("URL", &url)]).await;
    assert_eq!(get_until(addr, "/warmup", 200, WAIT).await.unwrap().text(), "1\n");
    count_200(addr, "hits").await;
    restart_provider(&mut s, "kv", &process).await;
    assert_eq!(get_until(addr, "/hits", 200, WAIT).await.unwrap().text(), "201\n", "the count survived the restart");

    // Redis goes away: the component gets an error value (a 503 it writes itself, not a
    // trap's 500) that names the backend and the cause; the host serves on.
    redis.stop();
    let r = get_until(addr, "/hits", 503, WAIT).await.unwrap();
    let t = r.text().to_lowercase();
    assert!(t.starts_with("keyvalue error:") && t.contains("redis"), "{t}");
    assert!(["refused", "connect", "closed", "broken", "reset", "unavailable"].iter().any(|c| t.contains(c)), "the cause: {t}");
    // Redis is back (empty: persistence is off): the provider recovers by itself.
    redis.restart().await.unwrap();
    assert_eq!(get_until(addr, "/hits", 200, WAIT).await.unwrap().text(), "1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_between_two_components_has_one_winner() {
    let mut s = setup(NatsServer::start().await.unwrap()).await;
    let store = s.store.clone();
    s.l.start_provider(&store, "kv", "builtin://keyvalue", &[]).await;
    let alice = s.counter("alice", "kv", &[]).await;
    let bob = s.counter("bob", "kv", &[]).await;
    get_until(alice, "/warmup", 200, WAIT).await.unwrap();
    get_until(bob, "/warmup", 200, WAIT).await.unwrap();
    for round in 0..20 {
        let path = |who: &str| format!("/race{round}?cas={who}");
        let (pa, pb) = (path("alice"), path("bob"));
        let (a, b) = tokio::join!(get(alice, &pa), get(bob, &pb));
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: {} / {}", a.text(), b.text());
        let (winner, loser) = if a.status == 200 { ("alice", b) } else { ("bob", a) };
        assert_eq!(loser.text(), format!("conflict {winner}\n"), "the loser sees the winner's value");
        // Both see the same value afterwards.
        assert_eq!(get(alice, &format!("/race{round}?get")).await.unwrap().text(), format!("{winner}\n"));
        assert_eq!(get(bob, &format!("/race{round}?get")).await.unwrap().text(), format!("{winner}\n"));
    }
    // A swap from the value one holds succeeds; from a stale one it does not.
    assert_eq!(get(alice, "/race0?get").await.unwrap().status, 200);
    let current = get(alice, "/race0?get").await.unwrap().text().trim().to_string();
    assert_eq!(get(bob, &format!("/race0?cas=next&expect={current}")).await.unwrap().text(), "swapped\n");
    assert_eq!(get(alice, &format!("/race0?cas=again&expect={current}")).await.unwrap().text(), "conflict next\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_bucket_in_the_link_config_applies_without_a_restart_and_a_missing_one_is_an_error_value() {
    let mut s = setup(NatsServer::start().await.unwrap()).await;
    let store = s.store.clone();
    s.l.start_provider(&store, "kv", "builtin://keyvalue", &[]).await;
    let addr = s.counter("counter", "kv", &[("bucket", "one"), ("enable_bucket_auto_create", "true")]).await;
    assert_eq!(get_until(addr, "/n", 200, WAIT).await.unwrap().text(), "1\n");
    assert_eq!(get(addr, "/n").await.unwrap().text(), "2\n");

    // The same config name, a new bucket: the next request counts in the new one.
    s.kv_link("counter", "kv", &[("bucket", "two"), ("enable_bucket_auto_create", "true")]).await;
    let r = get_until(addr, "/n?get", 404, WAIT).await.unwrap();
    assert!(r.text().contains("no key"), "{}", r.text());
    assert_eq!(get(addr, "/n").await.unwrap().text(), "1\n");
    // Bucket `one` is still there, under its own name.
    assert_eq!(get(addr, "/n?get&bucket=one").await.unwrap().text(), "2\n");
    assert!(s.web.invocations("counter").await > 0);

    // A bucket that does not exist, with auto-create off: an error value that says so.
    s.kv_link("counter", "kv", &[("bucket", "missing")]).await;
    let r = get_until(addr, "/n", 503, WAIT).await.unwrap();
    let t = r.text().to_lowercase();
    assert!(t.starts_with("keyvalue error:"), "{t}");
    assert!(t.contains("nats backend: no such store: the kv bucket `missing` does not exist"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_picks_a_named_link_with_wasmcloud_bus() {
    let mut s = setup(NatsServer::start().await.unwrap()).await;
    let (store, web) = (s.store.clone(), s.web.clone());
    s.l.start_provider(&store, "kv", "builtin://keyvalue", &[]).await;
    s.l.start_provider(&web, "secrets", "builtin://keyvalue", &[]).await;
    let addr = s.counter("counter", "kv", &[]).await;
    s.kv_link_named("counter", "secrets", "secrets", &[]).await;
    assert_eq!(get_until(addr, "/n?by=10", 200, WAIT).await.unwrap().text(), "10\n");
    // The same key through the `secrets` link is another store.
    assert_eq!(get_until(addr, "/n?link=secrets", 200, WAIT).await.unwrap().text(), "1\n");
    assert_eq!(get(addr, "/n?link=default").await.unwrap().text(), "11\n");
    // The choice lasts for one invocation: the next request is on `default` again.
    assert_eq!(get(addr, "/n").await.unwrap().text(), "12\n");
    // A link name with no link: an error value that says what to add.
    let r = get(addr, "/n?link=nope").await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("no link named `nope`") && r.text().contains("wash link put counter"), "{}", r.text());
}

//! How the control plane grows: only the reconciler's leader receives the lattice's events (the
//! heartbeats of every host), so a lattice of N hosts costs N heartbeat deliveries per interval,
//! not N² (benches/control_plane.rs measures it at 5, 20 and 50 hosts).
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use trellis_lattice::app::{LEADER_KEY, Lease, apps_bucket};
use trellis_lattice::subject;
use trellis_tests::hosts::start_host;
use trellis_tests::nats::NatsServer;
use trellis_tests::scenario::WAIT;

/// The subjects the client named `name` subscribes to, from the server's `/connz`.
async fn subscriptions(nats: &NatsServer, name: &str) -> Vec<String> {
    let connz = nats.monitor("connz?subs=1&limit=1024").await.unwrap();
    let conn = connz["connections"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no connection named {name}"));
    conn["subscriptions_list"].as_array().map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// The host holding the reconciler's lease.
async fn leader(nats: &NatsServer) -> String {
    let kv = async_nats::jetstream::new(nats.client().await.unwrap()).get_key_value(apps_bucket("default")).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(Some(v)) = kv.get(LEADER_KEY).await
            && let Ok(lease) = serde_json::from_slice::<Lease>(&v)
            && lease.expires_ms > 0
        {
            return lease.host_id;
        }
        assert!(tokio::time::Instant::now() < deadline, "no host took the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_receives_the_lattices_events() {
    let nats = NatsServer::start().await.unwrap();
    let mut hosts = Vec::new();
    for _ in 0..4 {
        hosts.push(start_host(&nats.url(), &[]).await.unwrap());
    }
    let events = subject::events_wildcard("default");
    let first = leader(&nats).await;
    // The leader subscribes once it holds the lease; the others never do.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !subscriptions(&nats, &format!("trellis-host {first}")).await.contains(&events) {
        assert!(tokio::time::Instant::now() < deadline, "the leader does not follow the lattice's events");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A few ticks later, still only the leader.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for h in &hosts {
        let subs = subscriptions(&nats, &format!("trellis-host {}", h.id())).await;
        assert_eq!(subs.contains(&events), h.id() == first, "host {} (leader {first}) subscribes to {subs:?}", h.id());
    }

    // The leader stops: another takes the lease and follows the events from then on.
    let i = hosts.iter().position(|h| h.id() == first).unwrap();
    hosts.remove(i).stop(Duration::from_secs(5)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let next = loop {
        let next = leader(&nats).await;
        if next != first && subscriptions(&nats, &format!("trellis-host {next}")).await.contains(&events) {
            break next;
        }
        assert!(tokio::time::Instant::now() < deadline, "no new leader follows the events");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for h in hosts.iter().filter(|h| h.id() != next) {
        assert!(!subscriptions(&nats, &format!("trellis-host {}", h.id())).await.contains(&events), "host {} is not the leader", h.id());
    }
}

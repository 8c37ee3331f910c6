//! `wash host cordon|uncordon|drain` against real hosts: the host's scheduling state changes,
//! shows in `wash get inventory`, keeps a cordoned host out of auctions, and `drain --wait`
//! returns once the host is drained.

mod common;

use common::Wash;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_uncordon_and_drain() {
    let nats = trellis_tests::nats::NatsServer::start().await.expect("nats");
    let host = trellis_tests::hosts::start_host(&nats.url(), &[]).await.expect("host");
    let wash = Wash::on(&nats);
    let id = host.id().to_string();

    assert_eq!(wash.run_async(&["host", "cordon", &id]).await.ok(), format!("Host {id} is cordoned\n"));
    let inv = wash.run_async(&["get", "inventory", &id]).await;
    assert!(inv.ok().contains("Scheduling: cordoned"), "{}", inv.ok());
    let v = wash.run_async(&["get", "inventory", &id, "-o", "json"]).await.json();
    assert_eq!(v["inventories"][0]["schedule"], "cordoned");
    // A cordoned host bids in no auction.
    let hello = trellis_tests::components::file_ref(trellis_tests::components::http_hello());
    let err = wash.run_async(&["start", "component", &hello, "hello"]).await.error();
    assert!(err.contains("no host"), "{err}");

    let v = wash.run_async(&["host", "uncordon", &id, "-o", "json"]).await.json();
    assert_eq!((v["host_id"].as_str(), v["schedule"].as_str()), (Some(id.as_str()), Some("schedulable")));
    let inv = wash.run_async(&["get", "inventory", &id, "-o", "json"]).await.json();
    assert!(inv["inventories"][0].get("schedule").is_none(), "a schedulable host's inventory is wasmCloud's: {inv}");

    // Nothing managed runs on it: drained at once.
    assert_eq!(wash.run_async(&["host", "drain", &id, "--wait"]).await.ok(), format!("Host {id} is drained\n"));
    assert_eq!(wash.run_async(&["host", "uncordon", &id]).await.ok(), format!("Host {id} is schedulable\n"));
    wash.run_async(&["start", "component", &hello, "hello"]).await.ok();
}

//! Cordon state survives a host restart on the same state directory, and every schedule change
//! is published as `host_schedule_changed`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use trellis_host::Host;
use trellis_lattice::ctl::{ComponentAuctionRequest, Schedule};
use trellis_lattice::event::HostScheduleChanged;
use trellis_tests::hosts::{config, init_tracing};
use trellis_tests::scenario::Lattice;

const WAIT: Duration = Duration::from_secs(10);

async fn host_on(url: &str, dir: &std::path::Path) -> Host {
    init_tracing();
    let mut c = config(url, &[]);
    c.state_dir = Some(dir.to_path_buf());
    Host::start(c).await.unwrap()
}

async fn changed(l: &mut Lattice, host: &str, to: Schedule) -> HostScheduleChanged {
    let host = host.to_string();
    let ev = l
        .events
        .wait_for("host_schedule_changed", WAIT, |e| e.data_as::<HostScheduleChanged>().is_some_and(|d| d.host_id == host && d.schedule == to))
        .await
        .unwrap();
    assert_eq!(ev.source, host, "published by the host itself");
    ev.data_as::<HostScheduleChanged>().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cordon_survives_a_restart_and_every_change_is_an_event() {
    let nats = trellis_tests::nats::NatsServer::start().await.unwrap();
    let url = nats.url();
    let mut l = Lattice::on(&nats).await;
    let dir = tempfile::tempdir().unwrap();

    let first = host_on(&url, dir.path()).await;
    assert_eq!(l.ctl.cordon_host(first.id()).await.unwrap().schedule, Schedule::Cordoned);
    let ev = changed(&mut l, first.id(), Schedule::Cordoned).await;
    assert_eq!(ev.previous, Schedule::Schedulable);
    first.stop(Duration::from_secs(5)).await;

    // The next host on that directory starts cordoned: its inventory says so, it says so on the
    // bus, and it bids in no auction.
    let second = host_on(&url, dir.path()).await;
    assert_ne!(second.id(), first.id());
    assert_eq!(second.inventory().await.schedule, Schedule::Cordoned);
    changed(&mut l, second.id(), Schedule::Cordoned).await;
    let auction = ComponentAuctionRequest { component_ref: "file:///nowhere.wasm".into(), component_id: "c".into(), ..Default::default() };
    let acks = l.ctl.perform_component_auction(&auction).await.unwrap();
    assert!(acks.iter().all(|a| a.host_id != second.id()), "a cordoned host bid: {acks:?}");

    // Drain then uncordon: each change is an event, the drained state too (nothing managed runs).
    l.ctl.drain_host(second.id()).await.unwrap();
    let ev = changed(&mut l, second.id(), Schedule::Draining).await;
    assert_eq!(ev.previous, Schedule::Cordoned);
    assert_eq!(l.ctl.get_host_inventory(second.id()).await.unwrap().schedule, Schedule::Drained);
    changed(&mut l, second.id(), Schedule::Drained).await;
    assert_eq!(l.ctl.uncordon_host(second.id()).await.unwrap().schedule, Schedule::Schedulable);
    let ev = changed(&mut l, second.id(), Schedule::Schedulable).await;
    assert_eq!(ev.previous, Schedule::Drained);
    second.stop(Duration::from_secs(5)).await;

    // Uncordoned is kept too: the third host takes placements and bids.
    let third = host_on(&url, dir.path()).await;
    assert_eq!(third.inventory().await.schedule, Schedule::Schedulable);
    let acks = l.ctl.perform_component_auction(&auction).await.unwrap();
    assert!(acks.iter().any(|a| a.host_id == third.id()), "the uncordoned host did not bid: {acks:?}");
    third.stop(Duration::from_secs(5)).await;
}

//! Helpers for tests of declarative apps: waiting for an app's status and counting a
//! component's replicas per host.

use std::time::Duration;

use trellis_host::Host;
use trellis_lattice::app::{AppClient, Status, StatusType};
use trellis_lattice::client::CtlClient;

/// Waits until app `app` reports `state`, up to `within`; returns that status.
pub async fn wait_status(apps: &AppClient, app: &str, state: StatusType, within: Duration) -> Status {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let s = apps.status(app).await;
        match &s {
            Ok(s) if s.state() == state => return s.clone(),
            _ if tokio::time::Instant::now() >= deadline => panic!("app `{app}` did not become {state:?} within {within:?}; last: {s:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Replicas of component `id` on host `host_id` (an in-process host or a process), from its
/// inventory.
pub async fn replicas_on(ctl: &CtlClient, host_id: &str, id: &str) -> u32 {
    let inv = ctl.get_host_inventory(host_id).await.expect("host inventory");
    inv.components.iter().filter(|c| c.id == id).map(|c| c.max_instances).sum()
}

/// Replicas of component `id` per host, from the hosts' inventories.
pub async fn replicas(ctl: &CtlClient, hosts: &[&Host], id: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for h in hosts {
        out.push(replicas_on(ctl, h.id(), id).await);
    }
    out
}

/// Waits until the replicas of `id` per host are `want`, up to `within`.
pub async fn wait_replicas(ctl: &CtlClient, hosts: &[&Host], id: &str, want: &[u32], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = replicas(ctl, hosts, id).await;
        if now == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "replicas of `{id}` per host are {now:?}, not {want:?}, after {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! The live view the reconciler plans against: which hosts are up (from `host_heartbeat`,
//! `host_started` and `labels_changed` events; gone on `host_stopped` or when unheard for
//! longer than the host-loss window) and the last failed start of each component or provider.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Notify;
use trellis_lattice::client::CtlClient;
use trellis_lattice::event::{
    CloudEvent, ComponentScaleFailed, ComponentScaled, EventData, HostHeartbeat, HostStarted, HostStopped, LabelsChanged, ProviderStartFailed, ProviderStarted,
};

use super::plan::Failure;

/// The hosts seen lately, and failures reported by events.
#[derive(Default)]
pub(super) struct Live {
    /// Host id → when it was last heard from.
    hosts: HashMap<String, Instant>,
    /// Component or provider id → its last failed start.
    failures: BTreeMap<String, Failure>,
}

impl Live {
    /// Records that `host` was heard from; whether the reconciler should look again now (a new
    /// host, or one whose labels may have changed).
    fn seen(&mut self, host: &str, heartbeat: bool) -> bool {
        let new = self.hosts.insert(host.to_string(), Instant::now()).is_none();
        new || !heartbeat
    }

    /// Applies one event; whether the reconciler should look again now.
    fn apply(&mut self, ev: &CloudEvent) -> bool {
        // Presence needs only the event's name and source (a heartbeat's inventory is read
        // from the host when planning, not decoded here).
        let source = ev.source.as_str();
        match ev.name() {
            HostHeartbeat::NAME => return self.seen(source, true),
            HostStarted::NAME | LabelsChanged::NAME => return self.seen(source, false),
            HostStopped::NAME => {
                self.hosts.remove(source);
                return true;
            }
            _ => {}
        }
        let failed = |error: String| Failure { host: source.to_string(), error };
        if let Some(e) = ev.data_as::<ComponentScaleFailed>() {
            self.failures.insert(e.scaled.component_id, failed(e.error));
        } else if let Some(e) = ev.data_as::<ProviderStartFailed>() {
            self.failures.insert(e.provider_id, failed(e.error));
        } else if let Some(e) = ev.data_as::<ComponentScaled>() {
            self.failures.remove(&e.component_id);
        } else if let Some(e) = ev.data_as::<ProviderStarted>() {
            self.failures.remove(&e.provider_id);
        }
        false
    }

    /// The hosts heard from within `lost_after` before `now` (forgetting the others) and the
    /// failures.
    pub(super) fn snapshot(&mut self, now: Instant, lost_after: Duration) -> (Vec<String>, BTreeMap<String, Failure>) {
        self.hosts.retain(|_, seen| now.saturating_duration_since(*seen) <= lost_after);
        let mut hosts: Vec<String> = self.hosts.keys().cloned().collect();
        hosts.sort();
        (hosts, self.failures.clone())
    }
}

/// Adds the hosts that answer a ping to `live` (heard from now).
pub(super) async fn seed(ctl: &CtlClient, live: &Mutex<Live>) {
    if let Ok(hosts) = ctl.ping_hosts().await {
        let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
        for h in hosts {
            l.hosts.entry(h.id).or_insert_with(Instant::now);
        }
    }
}

/// Follows `events` into `live`, waking the leader through `changed` when the set of hosts
/// changes.
pub(super) async fn follow(live: Arc<Mutex<Live>>, changed: Arc<Notify>, mut events: async_nats::Subscriber) {
    while let Some(msg) = events.next().await {
        let Ok(ev) = CloudEvent::from_slice(&msg.payload) else { continue };
        if live.lock().unwrap_or_else(|p| p.into_inner()).apply(&ev) {
            changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_lattice::ctl::HostInventory;

    fn ev<T: trellis_lattice::event::EventData>(source: &str, data: &T) -> CloudEvent {
        CloudEvent::new(source, data).expect("an event")
    }

    #[test]
    fn hosts_come_and_go_with_their_events_and_failures_with_their_outcome() {
        let mut l = Live::default();
        assert!(l.apply(&ev("N1", &HostHeartbeat(HostInventory::default()))), "a new host wakes the leader");
        assert!(!l.apply(&ev("N1", &HostHeartbeat(HostInventory::default()))), "a known host's heartbeat does not");
        assert!(l.apply(&ev("N1", &LabelsChanged::default())), "its labels may have changed");
        assert!(l.apply(&ev("N2", &HostStarted::default())));
        assert_eq!(l.snapshot(Instant::now(), Duration::from_secs(60)).0, ["N1", "N2"]);
        assert!(l.apply(&ev("N2", &HostStopped::default())));
        assert_eq!(l.snapshot(Instant::now(), Duration::from_secs(60)).0, ["N1"]);
        let later = Instant::now() + Duration::from_secs(31);
        assert!(l.snapshot(later, Duration::from_secs(30)).0.is_empty(), "unheard for longer than the window: lost");
        let failed = ComponentScaleFailed { scaled: ComponentScaled { component_id: "c".into(), ..Default::default() }, error: "boom".into() };
        assert!(!l.apply(&ev("N1", &failed)));
        assert_eq!(l.failures.get("c"), Some(&Failure { host: "N1".into(), error: "boom".into() }));
        l.apply(&ev("N1", &ComponentScaled { component_id: "c".into(), ..Default::default() }));
        assert!(l.failures.is_empty());
        l.apply(&ev("N1", &ProviderStartFailed { provider_id: "p".into(), error: "no".into(), ..Default::default() }));
        assert!(l.failures.contains_key("p"));
        l.apply(&ev("N1", &ProviderStarted { provider_id: "p".into(), ..Default::default() }));
        assert!(l.failures.is_empty());
    }
}

//! `wash spy`: a live view of the calls into and out of one component, wherever it runs.
//!
//! Local routing never touches NATS, so the wire alone cannot show every call. Instead each
//! host's [`crate::rpc::Router`] publishes one [`CallRecord`] per call that involves a spied
//! component on [`records_subject`], and only while someone listens:
//!
//! - A spy announces its [`Interest`] on [`interest_subject`] every [`ANNOUNCE_EVERY`], with a
//!   time to live ([`INTEREST_TTL`], at most [`MAX_TTL`]). A router that was started with
//!   [`crate::rpc::Router::start_spy`] keeps the live interests (at most [`MAX_SPIED`]
//!   components) and forgets each once its time to live passes, so a spy that dies stops the
//!   records within seconds.
//! - With no live interest a call costs one relaxed atomic load; nothing is published.
//! - The host of the spied component records its calls: calls into it (a local call, or one
//!   that came over NATS) and calls out of it. So each call appears once per spied component.
//! - `with_bodies` adds the first [`BODY_CAP`] bytes of each side: the HTTP body for
//!   `wasi:http/incoming-handler`, the MessagePack arguments and results
//!   ([`crate::wit_value`]) for any other interface.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// How often a spy announces its interest.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// The time to live a spy asks for: records stop this long after its last announcement.
pub const INTEREST_TTL: Duration = Duration::from_secs(5);
/// The longest time to live a router grants, whatever an interest asks.
pub const MAX_TTL: Duration = Duration::from_secs(30);
/// The most components one router records for at once; further interests are ignored until
/// one expires.
pub const MAX_SPIED: usize = 256;
/// The most bytes of each side of a call (request and response) a record carries with
/// `with_bodies`.
pub const BODY_CAP: usize = 1024;
/// The largest interest message read.
const MAX_INTEREST_BYTES: usize = 4096;

/// Where the records of calls involving `component` are published.
pub fn records_subject(lattice: &str, component: &str) -> String {
    format!("wasmbus.spy.{lattice}.{component}")
}

/// Where spies announce their interest. `$` keeps it apart from every component's records
/// subject, since ids cannot contain it.
pub fn interest_subject(lattice: &str) -> String {
    format!("wasmbus.spy.{lattice}.$interest")
}

/// "Record the calls of this component for a while" (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interest {
    /// The component (or provider) to record.
    pub component_id: String,
    /// Whether records carry the first [`BODY_CAP`] bytes of each side.
    #[serde(default)]
    pub with_bodies: bool,
    /// How long the interest lasts unless announced again, in milliseconds (at most [`MAX_TTL`]).
    pub ttl_ms: u64,
}

/// One call, as the host that saw it records it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// When the call started (RFC 3339, UTC).
    pub time: String,
    /// The host that recorded it.
    pub host_id: String,
    /// The caller.
    pub source: String,
    /// The callee.
    pub target: String,
    /// `namespace:package/interface`.
    pub interface: String,
    /// The function.
    pub function: String,
    /// The link name.
    pub link_name: String,
    /// `local` (handed over in memory) or `nats`.
    pub route: String,
    /// From the start of the call to the end of its response body (or its failure), in µs.
    pub duration_us: u64,
    /// `ok`, `cancelled` (the caller stopped reading), or the error kind (`deadline`, `lost`,
    /// `no_replica`, `busy`, `handler`, …).
    pub outcome: String,
    /// The error's message, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes the call carried: its head (HTTP request head or arguments) and body.
    pub request_bytes: u64,
    /// Bytes the answer carried: its head and body (so far, when it failed or was cancelled).
    pub response_bytes: u64,
    /// With `with_bodies`: the first [`BODY_CAP`] bytes of the request (base64 in JSON).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_base64")]
    pub request: Option<Vec<u8>>,
    /// With `with_bodies`: the first [`BODY_CAP`] bytes of the response.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_base64")]
    pub response: Option<Vec<u8>>,
}

mod opt_base64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => base64::engine::general_purpose::STANDARD.decode(s).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// A live interest: until when, and until when some spy wants bodies (several spies may
/// watch one component; records carry bodies while any of them asks).
#[derive(Clone, Copy)]
struct Want {
    until: Instant,
    bodies_until: Option<Instant>,
}

/// A router's side of spying: the live interests, and where records go.
#[derive(Default)]
pub(crate) struct Tap {
    /// How many components are wanted; 0 makes [`Tap::wants`] one atomic load.
    active: AtomicUsize,
    wanted: RwLock<HashMap<String, Want>>,
    started: OnceLock<Started>,
}

struct Started {
    host_id: String,
    nats: async_nats::Client,
    _task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Tap {
    /// Whether calls of `component` are recorded now, and if so whether with bodies.
    pub(crate) fn wants(&self, component: &str) -> Option<bool> {
        if self.active.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let wanted = self.wanted.read().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        wanted.get(component).filter(|w| w.until > now).map(|w| w.bodies_until.is_some_and(|b| b > now))
    }

    /// Starts following interests on `nats` (idempotent); records name `host_id`.
    pub(crate) async fn start(self: &Arc<Self>, nats: &async_nats::Client, lattice: &str, host_id: &str) -> Result<(), crate::Error> {
        if self.started.get().is_some() {
            return Ok(());
        }
        let subject = interest_subject(lattice);
        let mut sub = nats
            .subscribe(subject.clone())
            .await
            .map_err(|e| crate::Error::new(crate::ErrorKind::Transport, format!("cannot subscribe to `{subject}`")).with_source(e))?;
        let me: Weak<Tap> = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut prune = tokio::time::interval(ANNOUNCE_EVERY);
            loop {
                let msg = tokio::select! {
                    m = sub.next() => m,
                    _ = prune.tick() => {
                        let Some(tap) = me.upgrade() else { return };
                        tap.update(None);
                        continue;
                    }
                };
                let (Some(msg), Some(tap)) = (msg, me.upgrade()) else { return };
                if msg.payload.len() > MAX_INTEREST_BYTES {
                    tracing::debug!(bytes = msg.payload.len(), "ignored a spy interest larger than {MAX_INTEREST_BYTES} bytes");
                    continue;
                }
                match serde_json::from_slice::<Interest>(&msg.payload) {
                    Ok(i) if crate::validate_id("component id", &i.component_id).is_ok() => tap.update(Some(i)),
                    Ok(_) => tracing::debug!("ignored a spy interest whose component id is not an id"),
                    Err(e) => tracing::debug!(error = %e, "ignored a spy interest that is not JSON of the form {{component_id, with_bodies, ttl_ms}}"),
                }
            }
        });
        let started = Started { host_id: host_id.into(), nats: nats.clone(), _task: AbortOnDrop(task) };
        // A second start racing this one: its task is dropped (aborted) with its `Started`.
        let _ = self.started.set(started);
        Ok(())
    }

    /// Adds `interest` (if any) and drops what has expired.
    fn update(&self, interest: Option<Interest>) {
        let now = Instant::now();
        let mut wanted = self.wanted.write().unwrap_or_else(|p| p.into_inner());
        wanted.retain(|_, w| w.until > now);
        if let Some(i) = interest {
            let until = now + Duration::from_millis(i.ttl_ms).min(MAX_TTL);
            let known = wanted.contains_key(&i.component_id);
            if known || wanted.len() < MAX_SPIED {
                let w = wanted.entry(i.component_id).or_insert(Want { until, bodies_until: None });
                w.until = w.until.max(until);
                if i.with_bodies {
                    w.bodies_until = Some(w.bodies_until.map_or(until, |b| b.max(until)));
                }
            } else {
                tracing::debug!(component_id = i.component_id, "ignored a spy interest: {MAX_SPIED} components are spied already");
            }
        }
        self.active.store(wanted.len(), Ordering::Relaxed);
    }

    /// Publishes `record` for each of `components` (in the background: a call never waits for it).
    pub(crate) fn publish(&self, lattice: &str, components: &[String], mut record: CallRecord) {
        let Some(started) = self.started.get() else { return };
        record.host_id.clone_from(&started.host_id);
        let Ok(payload) = serde_json::to_vec(&record) else { return };
        let payload = bytes::Bytes::from(payload);
        let nats = started.nats.clone();
        let subjects: Vec<String> = components.iter().map(|c| records_subject(lattice, c)).collect();
        tokio::spawn(async move {
            for s in subjects {
                let _ = nats.publish(s, payload.clone()).await;
            }
        });
    }
}

/// A spy: announces interest in one component and yields the records of its calls. Dropping
/// it stops the announcements (the records stop once the interest expires).
pub struct Spy {
    records: async_nats::Subscriber,
    _announcer: AbortOnDrop,
}

impl Spy {
    /// Starts spying on `component_id` in `lattice`.
    pub async fn start(nats: &async_nats::Client, lattice: &str, component_id: &str, with_bodies: bool) -> Result<Self, crate::Error> {
        crate::validate_id("component id", component_id)?;
        let subject = records_subject(lattice, component_id);
        let records = nats
            .subscribe(subject.clone())
            .await
            .map_err(|e| crate::Error::new(crate::ErrorKind::Transport, format!("cannot subscribe to `{subject}`")).with_source(e))?;
        let interest =
            serde_json::to_vec(&Interest { component_id: component_id.into(), with_bodies, ttl_ms: INTEREST_TTL.as_millis() as u64 }).unwrap_or_default();
        let (nats2, to) = (nats.clone(), interest_subject(lattice));
        // The records subscription is in place before the first announcement.
        crate::round_trip(nats).await?;
        let announcer = tokio::spawn(async move {
            let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
            loop {
                tick.tick().await;
                if let Err(e) = nats2.publish(to.clone(), interest.clone().into()).await {
                    tracing::debug!(error = %e, "cannot announce spy interest; trying again");
                }
            }
        });
        Ok(Self { records, _announcer: AbortOnDrop(announcer) })
    }

    /// The next record; `None` when the connection closed. A message that is not a record is
    /// skipped.
    pub async fn next(&mut self) -> Option<CallRecord> {
        loop {
            let msg = self.records.next().await?;
            match serde_json::from_slice(&msg.payload) {
                Ok(r) => return Some(r),
                Err(e) => tracing::debug!(error = %e, "skipped a message on the spy subject that is not a call record"),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn interests_expire_and_are_capped() {
        let tap = Tap::default();
        assert_eq!(tap.wants("a"), None);
        tap.update(Some(Interest { component_id: "a".into(), with_bodies: true, ttl_ms: 60_000 }));
        assert_eq!(tap.wants("a"), Some(true));
        assert_eq!(tap.wants("b"), None);
        // The time to live is capped.
        let until = tap.wanted.read().unwrap()["a"].until;
        assert!(until <= Instant::now() + MAX_TTL);
        tap.update(Some(Interest { component_id: "gone".into(), with_bodies: false, ttl_ms: 0 }));
        assert_eq!(tap.wants("gone"), None);
        for i in 0..MAX_SPIED + 10 {
            tap.update(Some(Interest { component_id: format!("c{i}"), with_bodies: false, ttl_ms: 60_000 }));
        }
        assert_eq!(tap.wanted.read().unwrap().len(), MAX_SPIED);
        // One already known is renewed even at the cap; a spy without bodies beside one with
        // them does not turn them off.
        tap.update(Some(Interest { component_id: "a".into(), with_bodies: false, ttl_ms: 60_000 }));
        assert_eq!(tap.wants("a"), Some(true));
        tap.update(Some(Interest { component_id: "c0".into(), with_bodies: false, ttl_ms: 60_000 }));
        assert_eq!(tap.wants("c0"), Some(false));
    }

    #[test]
    fn subjects_and_records() {
        assert_eq!(records_subject("default", "hello"), "wasmbus.spy.default.hello");
        assert!(interest_subject("default").contains('$'));
        let r = CallRecord {
            time: "2026-01-01T00:00:00Z".into(),
            host_id: "N1".into(),
            source: "http".into(),
            target: "hello".into(),
            interface: "wasi:http/incoming-handler".into(),
            function: "handle".into(),
            link_name: "default".into(),
            route: "local".into(),
            duration_us: 12,
            outcome: "ok".into(),
            error: None,
            request_bytes: 3,
            response_bytes: 4,
            request: Some(b"abc".to_vec()),
            response: None,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"request\":\"YWJj\"") && !json.contains("response\":null"), "{json}");
        assert_eq!(serde_json::from_str::<CallRecord>(&json).unwrap(), r);
    }
}

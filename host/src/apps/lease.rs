//! The reconciler's leader lease: key [`LEADER_KEY`] of the apps bucket holds
//! `{host_id, expires_ms}`, created or updated only at the revision read, so two hosts cannot
//! both win. The leader renews it every [`super::TICK`]; a host takes over once it has lapsed
//! ([`LEASE_TTL`]); an orderly stop gives it up at once.

use std::time::Duration;

use async_nats::jetstream::kv;
use trellis_lattice::app::{LEADER_KEY, Lease};

use super::now_ms;

/// How long a lease lasts unless renewed.
pub const LEASE_TTL: Duration = Duration::from_secs(3);

fn encode(lease: &Lease) -> Option<bytes::Bytes> {
    match serde_json::to_vec(lease) {
        Ok(v) => Some(v.into()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode the leader lease");
            None
        }
    }
}

/// Takes or renews the lease; whether this host leads now.
pub(super) async fn hold(store: &kv::Store, host_id: &str) -> bool {
    let Some(value) = encode(&Lease { host_id: host_id.into(), expires_ms: now_ms() + LEASE_TTL.as_millis() as u64 }) else { return false };
    match store.entry(LEADER_KEY).await {
        Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
            let current = serde_json::from_slice::<Lease>(&entry.value).ok();
            let ours = current.as_ref().is_some_and(|l| l.host_id == host_id);
            let lapsed = current.as_ref().is_none_or(|l| l.expires_ms < now_ms());
            if !(ours || lapsed) {
                return false;
            }
            let won = store.update(LEADER_KEY, value, entry.revision).await.is_ok();
            if won && !ours {
                tracing::info!(host_id, "this host now leads the app reconciler");
            }
            won
        }
        Ok(Some(entry)) => store.update(LEADER_KEY, value, entry.revision).await.is_ok(),
        Ok(None) => store.create(LEADER_KEY, value).await.is_ok(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the leader lease");
            false
        }
    }
}

/// Gives the lease up if this host holds it, so another host leads at once.
pub(super) async fn release(store: &kv::Store, host_id: &str) {
    let entry = match store.entry(LEADER_KEY).await {
        Ok(Some(entry)) => entry,
        Ok(None) => return,
        Err(e) => {
            tracing::info!(error = %e, "cannot read the leader lease to give it up; another host leads once it lapses");
            return;
        }
    };
    if !serde_json::from_slice::<Lease>(&entry.value).is_ok_and(|l| l.host_id == host_id) {
        return;
    }
    let Some(expired) = encode(&Lease { host_id: host_id.into(), expires_ms: 0 }) else { return };
    if let Err(e) = store.update(LEADER_KEY, expired, entry.revision).await {
        tracing::info!(error = %e, "cannot give up the leader lease; another host leads once it lapses");
    }
}

//! The components a host runs: their table, their concurrency gates, and invocation.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use trellis_lattice::claims::Claims;
use trellis_lattice::ctl::{ComponentDescription, StringMap};

use crate::error::{HostError, Result};
use crate::runtime::{Limits, Prepared, Runtime};

/// `max_instances` as a concurrency limit: callers beyond it wait in a bounded queue, and only a
/// caller that finds the queue full is turned away. Nobody fails below the limit.
#[derive(Debug)]
pub struct Gate {
    slots: Arc<Semaphore>,
    max_instances: u32,
    queued: AtomicUsize,
    max_queued: usize,
}

/// A held instance slot; released on drop.
#[derive(Debug)]
pub struct Permit(#[allow(dead_code)] OwnedSemaphorePermit);

impl Gate {
    /// A gate for `max_instances` concurrent invocations and `max_queued` waiting callers.
    pub fn new(max_instances: u32, max_queued: usize) -> Self {
        Self { slots: Arc::new(Semaphore::new(max_instances.max(1) as usize)), max_instances: max_instances.max(1), queued: AtomicUsize::new(0), max_queued }
    }

    /// Takes a slot, waiting at most `wait` in the queue.
    pub async fn acquire(&self, id: &str, wait: Duration) -> Result<Permit> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(Permit(p));
        }
        let queued = self.queued.fetch_add(1, Ordering::SeqCst);
        let _leave = scopeguard(|| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        });
        let busy = || HostError::Busy { id: id.into(), max_instances: self.max_instances, queued };
        if queued >= self.max_queued {
            return Err(busy());
        }
        match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Permit(p)),
            _ => Err(busy()),
        }
    }

    /// Slots free right now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// Instances running now (slots taken).
    pub fn active(&self) -> usize {
        (self.max_instances as usize).saturating_sub(self.available())
    }

    /// Callers waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f()
            }
        }
    }
    Guard(Some(f))
}

/// One running component.
pub struct RunningComponent {
    /// Its id.
    pub id: String,
    /// Where it was loaded from.
    pub image_ref: String,
    /// What `image_ref` resolved to (`sha256:…`).
    pub image_digest: Option<String>,
    /// Annotations from the scale request.
    pub annotations: StringMap,
    /// Named config given to it.
    pub config: std::sync::Arc<[String]>,
    /// The compiled component.
    pub prepared: Arc<Prepared>,
    /// Its verified claims, when signed.
    pub claims: Option<Claims>,
    /// Limits in force.
    pub limits: Limits,
    /// Its concurrency gate.
    pub gate: Gate,
    /// Invocations started on this version of it (any interface, any caller).
    pub invocations: AtomicU64,
}

impl RunningComponent {
    /// What an invocation of it runs, with `limits`.
    pub fn guest(&self, limits: Limits) -> crate::runtime::Guest<'_> {
        crate::runtime::Guest { id: &self.id, config: &self.config, prepared: &self.prepared, limits, traceparent: None }
    }

    /// The concurrency limit.
    pub fn max_instances(&self) -> u32 {
        self.gate.max_instances
    }

    /// How it appears in an inventory.
    pub fn describe(&self) -> ComponentDescription {
        ComponentDescription {
            id: self.id.clone(),
            image_ref: self.image_ref.clone(),
            image_digest: self.image_digest.clone(),
            name: self.claims.as_ref().and_then(|c| c.wascap.name.clone()),
            annotations: self.annotations.clone(),
            revision: self.claims.as_ref().and_then(|c| c.wascap.rev).unwrap_or(0),
            max_instances: self.max_instances(),
            limits: Some(StringMap::from([
                ("max_linear_memory_bytes".into(), self.limits.max_linear_memory_bytes.to_string()),
                ("max_execution_time_ms".into(), self.limits.max_execution_time.as_millis().to_string()),
            ])),
        }
    }
}

/// The table of running components. Entries are swapped whole (`Arc`), so an invocation keeps
/// the version it started with while an update or scale replaces the entry. Clones share the
/// table. The lock is never held across an await, so readers that cannot wait (the metrics'
/// gauges) read it too.
#[derive(Default, Clone)]
pub struct Components {
    table: Arc<std::sync::RwLock<HashMap<String, Arc<RunningComponent>>>>,
}

impl Components {
    /// The component `id`, if running.
    pub async fn get(&self, id: &str) -> Option<Arc<RunningComponent>> {
        self.read().get(id).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<RunningComponent>>> {
        // Entries are swapped whole; a panic cannot leave the map half-changed.
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<RunningComponent>>> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `id` runs here (without waiting).
    pub fn contains(&self, id: &str) -> bool {
        self.read().contains_key(id)
    }

    /// Every running component, unsorted (without waiting).
    pub fn snapshot(&self) -> Vec<Arc<RunningComponent>> {
        self.read().values().cloned().collect()
    }

    /// Puts `c` in place of whatever ran under its id; returns the replaced entry.
    pub async fn insert(&self, c: RunningComponent) -> Option<Arc<RunningComponent>> {
        self.write().insert(c.id.clone(), Arc::new(c))
    }

    /// Removes `id`.
    pub async fn remove(&self, id: &str) -> Option<Arc<RunningComponent>> {
        self.write().remove(id)
    }

    /// Every running component, sorted by id.
    pub async fn list(&self) -> Vec<Arc<RunningComponent>> {
        let mut v = self.snapshot();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Removes everything (host shutdown).
    pub async fn clear(&self) -> Vec<Arc<RunningComponent>> {
        self.write().drain().map(|(_, c)| c).collect()
    }
}

/// Invokes the HTTP handler of running component `c`, queueing for a slot if all are busy.
pub async fn invoke_http(runtime: &Runtime, c: &RunningComponent, req: http::Request<Bytes>) -> Result<http::Response<Bytes>> {
    let permit = c.gate.acquire(&c.id, c.limits.max_execution_time).await?;
    c.invocations.fetch_add(1, Ordering::Relaxed);
    runtime.invoke_http(c.guest(c.limits), req, permit).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[tokio::test]
    async fn gate_queues_then_refuses() {
        let gate = Arc::new(Gate::new(1, 1));
        let held = gate.acquire("c", Duration::from_secs(1)).await.unwrap();
        // A second caller queues and gets the slot as soon as it frees.
        let g2 = gate.clone();
        let waiter = tokio::spawn(async move { g2.acquire("c", Duration::from_secs(5)).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A third finds the queue full.
        let err = gate.acquire("c", Duration::from_secs(1)).await.unwrap_err().to_string();
        assert!(err.contains("busy"), "{err}");
        drop(held);
        waiter.await.unwrap().unwrap();
        assert_eq!(gate.available(), 1);
    }
}

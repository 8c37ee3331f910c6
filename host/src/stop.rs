//! The orderly stop's time budget. A host stops within `--shutdown-timeout-seconds` whatever
//! NATS does: each step gets what is left of the budget, and a step that needs NATS is skipped,
//! with one log line naming it and why, when the connection is down or does not answer in time.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// What the steps after the drain (providers, events) keep of the budget: a quarter of it, at
/// most this much.
const RESERVE_CAP: Duration = Duration::from_secs(2);

/// The deadline of one orderly stop, and the connection its NATS steps use.
pub(crate) struct Budget {
    deadline: Instant,
    reserve: Duration,
    nats: async_nats::Client,
}

impl Budget {
    /// A stop that must be over `timeout` from now.
    pub fn new(timeout: Duration, nats: async_nats::Client) -> Self {
        Self { deadline: Instant::now() + timeout, reserve: (timeout / 4).min(RESERVE_CAP), nats }
    }

    /// What is left of the budget.
    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// How long draining may take: what is left, less what the later steps keep.
    pub fn for_draining(&self) -> Duration {
        self.left().saturating_sub(self.reserve)
    }

    /// Whether the connection is up now.
    pub fn connected(&self) -> bool {
        self.nats.connection_state() == async_nats::connection::State::Connected
    }

    /// Runs `step`, which needs NATS, within what is left of the budget. Returns `None`, having
    /// logged that `what` was skipped and why, when NATS is not connected or the step does not
    /// finish in time.
    pub async fn over_nats<T>(&self, what: &str, step: impl Future<Output = T>) -> Option<T> {
        self.over_nats_within(what, Duration::MAX, step).await
    }

    /// [`Budget::over_nats`], giving the step at most `cap` of what is left: for a step that
    /// normally takes milliseconds and must not eat the drain's time when NATS is slow.
    pub async fn over_nats_within<T>(&self, what: &str, cap: Duration, step: impl Future<Output = T>) -> Option<T> {
        if !self.connected() {
            tracing::warn!("stopping: skipped {what}: NATS is not connected ({})", self.nats.connection_state());
            return None;
        }
        let allowed = self.left().min(cap);
        match tokio::time::timeout(allowed, step).await {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!("stopping: skipped {what}: NATS did not answer within {} ms", allowed.as_millis());
                None
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_step_over_a_dead_connection_is_skipped_at_once_and_the_reserve_is_kept() {
        // A client that never connected: its server is not there.
        let nats = async_nats::ConnectOptions::new().retry_on_initial_connect().connect("127.0.0.1:1").await.expect("a client that keeps trying");
        let budget = Budget::new(Duration::from_secs(8), nats);
        assert!(!budget.connected());
        let started = Instant::now();
        assert_eq!(budget.over_nats("a step", std::future::pending::<()>()).await, None);
        assert_eq!(budget.over_nats_within("another", Duration::from_millis(10), std::future::pending::<()>()).await, None);
        assert!(started.elapsed() < Duration::from_secs(1), "skipped, not waited for");
        assert!(budget.for_draining() <= Duration::from_secs(6), "2 s are kept for what follows the drain");
        assert!(budget.left() > Duration::from_secs(7));
    }
}

//! Waiting for the outcome of a request on the lattice's event bus. A watch subscribes before
//! the request is sent, so a fast outcome is never missed.

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use trellis_lattice::client::CtlClient;
use trellis_lattice::event::CloudEvent;

/// A subscription to every event of one lattice.
pub struct Watch {
    sub: async_nats::Subscriber,
}

impl Watch {
    /// Subscribes, and makes sure the server has the subscription before returning.
    pub async fn start(ctl: &CtlClient) -> anyhow::Result<Self> {
        let sub = ctl.subscribe_events().await?;
        ctl.nats().flush().await.context("cannot reach NATS to watch for events")?;
        Ok(Self { sub })
    }

    /// The first value `pick` returns for an event arriving within `timeout`; `None` on timeout.
    pub async fn wait<T>(&mut self, timeout: Duration, mut pick: impl FnMut(&CloudEvent) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.sub.next()).await.ok()??;
            // Someone else's malformed event is not our outcome.
            if let Ok(event) = CloudEvent::from_slice(&msg.payload)
                && let Some(found) = pick(&event)
            {
                return Some(found);
            }
        }
    }
}

/// The error for an outcome that did not arrive: which event, for what, from which host.
pub fn timed_out<E: trellis_lattice::event::EventData>(timeout: Duration, what: &str, host_id: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "no `{}` for {what} from host `{host_id}` within {} ms; the host accepted the request, so check `wash get inventory {host_id}` or raise --timeout-ms",
        E::NAME,
        timeout.as_millis()
    )
}

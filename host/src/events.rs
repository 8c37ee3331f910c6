//! Publishing lattice events as this host.

use trellis_lattice::event::{CloudEvent, EventData};
use trellis_lattice::subject;

/// Publishes CloudEvents on `wasmbus.evt.{lattice}.*` with this host as the source.
#[derive(Clone, Debug)]
pub struct Events {
    nats: async_nats::Client,
    lattice: String,
    host_id: String,
}

impl Events {
    /// A publisher for `host_id` in `lattice`.
    pub fn new(nats: async_nats::Client, lattice: &str, host_id: &str) -> Self {
        Self { nats, lattice: lattice.into(), host_id: host_id.into() }
    }

    /// The id of the host these events come from.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// Publishes `data`. Events are best effort: a failure is logged, never returned, so that
    /// the operation that caused the event is not undone by a bus hiccup.
    pub async fn publish<T: EventData>(&self, data: &T) {
        let result = async {
            let event = CloudEvent::new(&self.host_id, data).map_err(|e| e.to_string())?;
            let bytes = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
            self.nats.publish(subject::event(&self.lattice, T::NAME), bytes.into()).await.map_err(|e| e.to_string())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(event = T::NAME, %error, "cannot publish event");
        }
    }

    /// Publishes and then waits until the server has it (a round trip: a socket flush is not
    /// enough when the connection runs through the guard, whose buffer dies with the process),
    /// for events that must leave before the process exits.
    pub async fn publish_and_flush<T: EventData>(&self, data: &T) {
        self.publish(data).await;
        if let Err(error) = trellis_lattice::round_trip(&self.nats).await {
            tracing::warn!(event = T::NAME, %error, "cannot flush event");
        }
    }
}

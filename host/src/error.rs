//! The host library's error: what failed, in words that say what to do, and a
//! [`HostErrorKind`] to branch on without matching every variant.

use thiserror::Error;

/// Errors of the host library.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HostError {
    /// Talking to the lattice failed.
    #[error(transparent)]
    Lattice(#[from] trellis_lattice::Error),
    /// A component could not be loaded (unreadable, not a component, unsigned, …).
    #[error("cannot load component from `{reference}`: {reason}")]
    Load {
        /// The reference that was asked for.
        reference: String,
        /// Why it failed.
        reason: String,
    },
    /// No component with that id runs on this host.
    #[error("no component `{0}` runs on this host")]
    NoSuchComponent(String),
    /// Every instance slot is busy and the queue is full.
    #[error(
        "component `{id}` is busy: all {max_instances} instances are in use and {queued} callers are queued; retry later or scale it up with `wash scale component`"
    )]
    Busy {
        /// The component id.
        id: String,
        /// Its concurrency limit.
        max_instances: u32,
        /// How many callers wait.
        queued: usize,
    },
    /// The invocation did not finish within the execution deadline.
    #[error("component `{id}` did not finish within its deadline of {deadline_ms} ms and was stopped")]
    Deadline {
        /// The component id.
        id: String,
        /// The deadline in milliseconds.
        deadline_ms: u64,
    },
    /// The component trapped or returned an error.
    #[error("component `{id}` failed: {reason}")]
    Invocation {
        /// The component id.
        id: String,
        /// The trap or error, as wasmtime reports it.
        reason: String,
    },
    /// The component does not export what was asked of it.
    #[error("component `{id}` does not export `{interface}`")]
    NotExported {
        /// The component id.
        id: String,
        /// The missing export.
        interface: String,
    },
    /// The registry (JetStream KV) refused or failed an operation.
    #[error("{0}")]
    Registry(String),
    /// A request was invalid.
    #[error("{0}")]
    Invalid(String),
    /// The wasmtime engine could not be set up.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    /// A provider could not be started or stopped.
    #[error("{0}")]
    Provider(String),
    /// A local nats-server could not be found, started or reached.
    #[error("{0}")]
    NatsServer(String),
    /// Another process could not be signalled or found.
    #[error("{0}")]
    Process(String),
}

/// What kind of failure a [`HostError`] is, for callers that branch on the failure rather than
/// on the variant (the data plane maps it to an `RpcErrorKind`, a client may retry `Busy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HostErrorKind {
    /// Talking to the lattice (NATS, the lattice crate) failed: [`HostError::Lattice`].
    Lattice,
    /// A component could not be loaded, verified or compiled: [`HostError::Load`].
    Load,
    /// The component asked for does not run on this host: [`HostError::NoSuchComponent`].
    NotFound,
    /// Every instance slot is busy and the queue is full; retry later: [`HostError::Busy`].
    Busy,
    /// An invocation ran out of time: [`HostError::Deadline`].
    Deadline,
    /// The component trapped or returned an error: [`HostError::Invocation`].
    Invocation,
    /// The component does not export what was asked of it: [`HostError::NotExported`].
    Unsupported,
    /// The registry (JetStream KV) refused or failed an operation: [`HostError::Registry`].
    Registry,
    /// A request was invalid; sending it again will not help: [`HostError::Invalid`].
    Invalid,
    /// The WebAssembly engine could not be set up: [`HostError::Engine`].
    Engine,
    /// A provider could not be started or stopped: [`HostError::Provider`].
    Provider,
    /// A local nats-server could not be found, started or reached: [`HostError::NatsServer`].
    NatsServer,
    /// Another process could not be signalled or found: [`HostError::Process`].
    Process,
}

impl HostError {
    /// The kind of this error.
    pub fn kind(&self) -> HostErrorKind {
        match self {
            HostError::Lattice(_) => HostErrorKind::Lattice,
            HostError::Load { .. } => HostErrorKind::Load,
            HostError::NoSuchComponent(_) => HostErrorKind::NotFound,
            HostError::Busy { .. } => HostErrorKind::Busy,
            HostError::Deadline { .. } => HostErrorKind::Deadline,
            HostError::Invocation { .. } => HostErrorKind::Invocation,
            HostError::NotExported { .. } => HostErrorKind::Unsupported,
            HostError::Registry(_) => HostErrorKind::Registry,
            HostError::Invalid(_) => HostErrorKind::Invalid,
            HostError::Engine(_) => HostErrorKind::Engine,
            HostError::Provider(_) => HostErrorKind::Provider,
            HostError::NatsServer(_) => HostErrorKind::NatsServer,
            HostError::Process(_) => HostErrorKind::Process,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = HostError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_kind() {
        let s = || String::from("x");
        let cases = [
            (HostError::Lattice(trellis_lattice::Error::new(trellis_lattice::ErrorKind::InvalidInput, s())), HostErrorKind::Lattice),
            (HostError::Load { reference: s(), reason: s() }, HostErrorKind::Load),
            (HostError::NoSuchComponent(s()), HostErrorKind::NotFound),
            (HostError::Busy { id: s(), max_instances: 1, queued: 1 }, HostErrorKind::Busy),
            (HostError::Deadline { id: s(), deadline_ms: 1 }, HostErrorKind::Deadline),
            (HostError::Invocation { id: s(), reason: s() }, HostErrorKind::Invocation),
            (HostError::NotExported { id: s(), interface: s() }, HostErrorKind::Unsupported),
            (HostError::Registry(s()), HostErrorKind::Registry),
            (HostError::Invalid(s()), HostErrorKind::Invalid),
            (HostError::Engine(s()), HostErrorKind::Engine),
            (HostError::Provider(s()), HostErrorKind::Provider),
            (HostError::NatsServer(s()), HostErrorKind::NatsServer),
            (HostError::Process(s()), HostErrorKind::Process),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e:?}");
        }
    }
}

//! The host library's error: what failed, in words that say what to do.

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
}

/// Shorthand for results of this crate.
pub type Result<T, E = HostError> = std::result::Result<T, E>;

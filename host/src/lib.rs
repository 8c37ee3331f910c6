//! # trellis-host
//!
//! A Trellis host joins a lattice over NATS and runs WebAssembly components as actors. It answers
//! the wasmCloud v1 control interface ([`trellis_lattice::subject`]), publishes events and
//! heartbeats, keeps a live view of the lattice registry (links and named config in JetStream
//! KV), and runs components in wasmtime with a fresh store per invocation.
//!
//! Modules, by concern: [`runtime`] (engine, compilation, invocation, limits), `p3` (WASI 0.3
//! components: `wasi:http/handler@0.3.0` beside 0.2's `incoming-handler`), [`c2c`]
//! (component-to-component calls through links, for any interface), [`components`]
//! (the table of running components and their concurrency gates), `ctl` (the control
//! server), [`registry`] (links and config in KV), [`providers`] (provider processes),
//! [`events`], [`identity`], [`nats_server`] (a local, optionally leaf, nats-server), [`metrics`]
//! (OpenTelemetry instruments, Prometheus text, OTLP export) and the admin endpoint.
//!
//! ```no_run
//! # async fn demo() -> Result<(), trellis_host::HostError> {
//! use trellis_host::{Host, HostConfig};
//! let host = Host::start(HostConfig::new("nats://127.0.0.1:4222")).await?;
//! println!("host {} ({}) is up", host.id(), host.friendly_name());
//! host.stopped().await; // until a `host.stop` request arrives
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod admin;
mod apps;
pub mod artifacts;
pub mod blobstore;
pub mod c2c;
pub mod capabilities;
mod claims;
mod compiled;
pub mod components;
mod ctl;
mod deny;
mod error;
pub mod events;
mod host;
pub mod identity;
mod lifecycle;
pub mod metrics;
pub mod nats_server;
pub mod outgoing;
mod p3;
pub mod process;
pub mod providers;
pub mod publish;
pub mod registry;
pub mod runtime;
mod schedule;
mod secrets;
mod serve;
mod stop;

pub use ctl::MAX_CTL_PAYLOAD;
pub use error::{HostError, HostErrorKind, Result};
pub use host::{Host, HostConfig, MAX_COMPONENT_BYTES, VERSION};

/// The providers a host runs in-process as `builtin://NAME` (http-server, keyvalue,
/// messaging-nats, blobstore, http-client): the one list `trellis-host` and `wash up` give their hosts.
pub fn builtins() -> Vec<trellis_provider_sdk::Builtin> {
    vec![
        trellis_provider_http_server::builtin(),
        trellis_provider_keyvalue::builtin(),
        trellis_provider_messaging_nats::builtin(),
        trellis_provider_blobstore::builtin(),
        trellis_provider_http_client::builtin(),
    ]
}

//! # trellis-lattice: the wire
//!
//! Everything that crosses NATS in a Trellis lattice is defined here and nowhere else:
//! the subjects ([`subject`]), the control-interface request and reply types, wire-compatible
//! with wasmCloud 1.x ([`ctl`]), the CloudEvents the hosts publish ([`event`]), the keys of the
//! state buckets in JetStream KV ([`state`]), the typed control client ([`client`]), the
//! claims format of signed components ([`claims`]), app manifests ([`manifest`]) and the one
//! [`connect()`] that every binary uses for credentials and TLS.
//!
//! This crate knows nothing about wasmtime, providers or the CLI.
//!
//! ```no_run
//! # async fn demo() -> Result<(), trellis_lattice::Error> {
//! use trellis_lattice::{connect, ConnectOptions, client::CtlClient};
//! let nats = connect(&ConnectOptions::new("nats://127.0.0.1:4222")).await?;
//! let ctl = CtlClient::new(nats, "default");
//! for host in ctl.ping_hosts().await? {
//!     println!("{} ({})", host.id, host.friendly_name);
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod app;
pub mod artifact;
pub mod blobstore;
pub mod claims;
pub mod client;
mod connect;
pub mod ctl;
mod error;
pub mod event;
pub mod guard;
pub mod keyvalue;
pub mod manifest;
pub mod messaging;
pub mod observe;
pub mod provider;
pub mod rpc;
pub mod secrets;
pub mod spy;
pub mod state;
pub mod subject;
pub mod telemetry;
pub mod wit_value;

pub use connect::{ConnectOptions, MIN_NATS_SERVER_VERSION, check_server_version, connect, round_trip};
pub use error::{Error, ErrorKind};

/// The lattice name used when none is given, as in wasmCloud.
pub const DEFAULT_LATTICE: &str = "default";

/// Checks that an identifier (component id, provider id, link name, config name, lattice) is
/// non-empty and made of `[A-Za-z0-9_-]` only, so it can stand in a NATS subject or a KV key.
///
/// `what` names the thing in the error, e.g. `"component id"`.
pub fn validate_id(what: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    if value.len() > 256 {
        return Err(Error::invalid(format!("{what} is {} bytes long; the limit is 256", value.len())));
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        // The value is shown escaped: it may hold the very control character refused.
        return Err(Error::invalid(format!("{what} `{}` contains {bad:?}; use only letters, digits, `_` and `-`", value.escape_debug())));
    }
    Ok(())
}

/// An [`ErrorKind::Malformed`] error: something read off the wire does not have the shape it must.
pub(crate) fn malformed(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Malformed, message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn ids_are_subject_safe() {
        assert!(validate_id("component id", "http-hello_1").is_ok());
        let err = validate_id("component id", "a.b").unwrap_err().to_string();
        assert!(err.contains("component id `a.b` contains '.'"), "{err}");
        assert!(validate_id("link name", "").is_err());
        let err = validate_id("config name", "a\u{1b}[2J").unwrap_err().to_string();
        assert!(err.contains("config name `a\\u{1b}[2J` contains '\\u{1b}'") && !err.contains('\u{1b}'), "{err:?}");
        assert!(validate_id("x", &"a".repeat(300)).is_err());
    }
}

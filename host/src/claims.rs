//! The host's check of a component's claims before it is compiled: signature, hash, dates,
//! and the host's [`Policy`] (the allowed issuers and the require-signed switch of
//! [`crate::HostConfig`]).

use trellis_lattice::claims::{self, Claims};

use crate::error::{HostError, Result};
use crate::host::HostConfig;

/// Which components a host accepts, as far as claims go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Account keys (`A…`) whose signed components are accepted; empty accepts any issuer.
    pub allowed_issuers: Vec<String>,
    /// Refuse components that carry no claims.
    pub require_signed: bool,
}

impl Policy {
    /// The policy `config` sets (`--allowed-issuers`, `--require-signed`).
    pub fn of(config: &HostConfig) -> Self {
        Self { allowed_issuers: config.allowed_issuers.clone(), require_signed: config.require_signed }
    }
}

/// Verifies the claims embedded in `bytes` (loaded from `reference`) against `policy`.
/// Returns the bytes back with the claims, `None` for an unsigned component this host accepts.
/// Runs off the async workers: hashing a large component takes a while.
pub(crate) async fn check(policy: &Policy, reference: &str, bytes: Vec<u8>) -> Result<(Vec<u8>, Option<Claims>)> {
    let load_err = |reason: String| HostError::Load { reference: reference.into(), reason };
    // Garbage and core modules keep the runtime's own messages.
    crate::runtime::check_component_header(&bytes).map_err(load_err)?;
    let allowed = policy.allowed_issuers.clone();
    let (bytes, verified) = tokio::task::spawn_blocking(move || {
        let verified = claims::verify_component(&bytes, claims::now(), &allowed);
        (bytes, verified)
    })
    .await
    .map_err(|e| load_err(format!("claims verification panicked: {e}")))?;
    match verified.map_err(|e| load_err(e.to_string()))? {
        Some(c) => Ok((bytes, Some(c))),
        None if policy.require_signed => Err(load_err(
            "it is not signed, and this host runs only signed components (--require-signed); \
             sign it with `wash claims sign FILE --name NAME` and start the signed file"
                .into(),
        )),
        None => Ok((bytes, None)),
    }
}

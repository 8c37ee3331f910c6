//! The provider process model: what a host tells a provider it starts.
//!
//! As in wasmCloud, the host writes one line to the provider's stdin, the base64 of a JSON
//! [`HostData`], then closes stdin; the provider connects to NATS itself.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::ctl::{Link, StringMap};
use crate::{Error, ErrorKind};

/// Everything a provider needs to join the lattice.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct HostData {
    /// The starting host's id.
    pub host_id: String,
    /// NATS URL for the lattice.
    pub lattice_rpc_url: String,
    /// The lattice name.
    pub lattice: String,
    /// The provider's id.
    pub provider_key: String,
    /// This run's instance id.
    pub instance_id: String,
    /// Named config merged, in the order given on start.
    #[serde(default)]
    pub config: StringMap,
    /// Links the provider is source or target of.
    #[serde(default)]
    pub link_definitions: Vec<Link>,
    /// NATS user JWT, when the lattice needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lattice_rpc_user_jwt: Option<String>,
    /// NATS nkey seed, when the lattice needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lattice_rpc_user_seed: Option<String>,
    /// The CA certificate file (PEM) to trust for TLS to NATS, when the host was given one
    /// (a Trellis extension; wasmCloud's host data has no such field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lattice_rpc_tls_ca_file: Option<std::path::PathBuf>,
    /// The JetStream domain that holds the lattice's state, when it is not the connected
    /// server's own (a host on a leaf node; a Trellis extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub js_domain: Option<String>,
    /// Log level for the provider (`info`, `debug`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// The secrets granted to the provider (the `SECRET_*` references among its start config),
    /// fetched by the host at start, by the name the provider reads them by. Only the provider
    /// sees them: the line goes to its stdin, and `Debug` shows no value.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub secrets: std::collections::BTreeMap<String, crate::secrets::Secret>,
}

impl HostData {
    /// The stdin line: base64 of the JSON, with a trailing newline.
    pub fn encode(&self) -> Result<String, Error> {
        let json = serde_json::to_vec(self).map_err(|e| Error::new(ErrorKind::Malformed, "cannot encode provider host data").with_source(e))?;
        Ok(format!("{}\n", base64::engine::general_purpose::STANDARD.encode(json)))
    }

    /// Parses the stdin line.
    pub fn decode(line: &str) -> Result<Self, Error> {
        let json = base64::engine::general_purpose::STANDARD
            .decode(line.trim())
            .map_err(|e| Error::new(ErrorKind::Malformed, "provider host data on stdin is not base64").with_source(e))?;
        serde_json::from_slice(&json).map_err(|e| Error::new(ErrorKind::Malformed, "provider host data on stdin is not the expected JSON").with_source(e))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let hd = HostData { host_id: "N1".into(), provider_key: "http".into(), ..Default::default() };
        let line = hd.encode().unwrap();
        assert!(line.ends_with('\n'));
        assert_eq!(HostData::decode(&line).unwrap(), hd);
        assert!(HostData::decode("!!!").is_err());
    }
}

/// Where a provider instance answers health checks (`{"healthy", "message"}` JSON replies).
pub fn health_subject(lattice: &str, provider_id: &str, instance_id: &str) -> String {
    format!("wasmbus.provider.{lattice}.{provider_id}.{instance_id}.health")
}

/// Where a provider instance is asked to shut down gracefully.
pub fn shutdown_subject(lattice: &str, provider_id: &str, instance_id: &str) -> String {
    format!("wasmbus.provider.{lattice}.{provider_id}.{instance_id}.shutdown")
}

/// A provider's answer to a health check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct HealthReport {
    /// Whether it can serve.
    pub healthy: bool,
    /// Why not, or a note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

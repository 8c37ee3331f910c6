//! Declarative apps: where manifests live, the app API's request and reply types, and
//! [`AppClient`].
//!
//! Storage: JetStream KV bucket [`apps_bucket`] (`TRELLIS_APPS_{lattice}`, history 1), keys
//! - `app.{name}.v.{hex(version)}`: one [`StoredVersion`] per version put (the manifest text as
//!   sent); versions are ordered by the key's KV revision (the order they were put in);
//! - `app.{name}.deployment`: the [`Deployment`]: the version to run and its manifest text,
//!   `active: false` once undeployed (the reconciler then removes what the app created);
//! - `app.{name}.status`: the [`AppStatus`] the leader last computed;
//! - `app.{name}.owned`: the [`Owned`] links and config the leader put for the app (so what a
//!   new version drops, and what undeploy removes, is what the app put and nothing else);
//! - `leader`: the reconciler's [`Lease`].
//!
//! API: `wadm.api.{lattice}.model.{put|list}` and `wadm.api.{lattice}.model.{get|versions|del|
//! deploy|undeploy|status}.{name}` (subjects from [`crate::subject::AppOp`]), served by one
//! host of a queue group. Replies use the control envelope `{success, message, response}`;
//! `model.put` takes the manifest text (YAML or JSON) as its body, the others a small JSON
//! object (or nothing).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ctl::CtlResponse;
use crate::subject::AppOp;
use crate::{Error, ErrorKind};

/// The bucket holding manifests, deployments, statuses and the leader lease of `lattice`.
pub fn apps_bucket(lattice: &str) -> String {
    format!("TRELLIS_APPS_{lattice}")
}

/// The key of the reconciler's leader lease.
pub const LEADER_KEY: &str = "leader";

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Key prefix of every version of `app`.
pub fn versions_prefix(app: &str) -> String {
    format!("app.{app}.v.")
}

/// The key of one version of `app` (the version is hex-encoded: versions may hold any character).
pub fn version_key(app: &str, version: &str) -> String {
    format!("{}{}", versions_prefix(app), hex(version))
}

/// The key of `app`'s deployment.
pub fn deployment_key(app: &str) -> String {
    format!("app.{app}.deployment")
}

/// The key of `app`'s status.
pub fn status_key(app: &str) -> String {
    format!("app.{app}.status")
}

/// The key of the links and config the reconciler put for `app`.
pub fn owned_key(app: &str) -> String {
    format!("app.{app}.owned")
}

/// The app name in a key of the apps bucket, and what follows it (`v.…`, `deployment`, `status`,
/// `owned`).
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("app.")?;
    rest.split_once('.')
}

/// One stored version of an app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredVersion {
    /// The version (`metadata.annotations.version`, or generated when absent).
    pub version: String,
    /// The manifest, as put.
    pub manifest: String,
    /// When it was put, in milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// What should run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Deployment {
    /// The deployed version.
    pub version: String,
    /// Its manifest (kept here so deleting versions never strands what runs).
    pub manifest: String,
    /// `false` once undeployed: the reconciler removes what the app created.
    pub active: bool,
    /// When the app was deployed, in milliseconds since the Unix epoch: kept while it stays
    /// deployed (a new version keeps it), so of two apps defining one link or config
    /// differently, the one deployed first keeps it. 0 in records stored without it.
    #[serde(default)]
    pub since_ms: u64,
}

/// The links and config the reconciler put for one app (or found in place as the app defines
/// them): what it removes once a new version no longer defines them, or on undeploy, unless
/// another deployed app defines them too.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Owned {
    /// Links, as put.
    #[serde(default)]
    pub links: Vec<crate::ctl::Link>,
    /// Config names.
    #[serde(default)]
    pub configs: std::collections::BTreeSet<String>,
}

impl Owned {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.configs.is_empty()
    }
}

/// The reconciler's leader lease.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    /// The leader's host id.
    pub host_id: String,
    /// When the lease lapses unless renewed, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// Where an app stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AppState {
    /// Deployed, and what runs is what the manifest asks for.
    Deployed,
    /// Deployed, and work remains (see the details).
    Reconciling,
    /// Deployed, and something failed (see the message).
    Failed,
    /// Undeployed, and something it created still runs.
    Undeploying,
    /// Not deployed; nothing of it runs.
    Undeployed,
}

impl AppState {
    /// Its name, as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployed => "Deployed",
            Self::Reconciling => "Reconciling",
            Self::Failed => "Failed",
            Self::Undeploying => "Undeploying",
            Self::Undeployed => "Undeployed",
        }
    }
}

/// An app's status, as the leader last computed it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppStatus {
    /// The app.
    pub name: String,
    /// The deployed version, if any.
    pub version: Option<String>,
    /// The state.
    pub state: AppState,
    /// One line: what is missing and why, or the error.
    pub message: String,
    /// One line per thing that is missing or failed.
    #[serde(default)]
    pub details: Vec<String>,
    /// When it was computed, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

/// `model.put`'s reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PutResponse {
    /// The app.
    pub name: String,
    /// The version stored.
    pub version: String,
    /// `false` when the same version with the same manifest was already stored.
    pub created: bool,
    /// How many versions are stored now.
    pub total_versions: usize,
}

/// A version, in `model.versions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VersionInfo {
    /// The version.
    pub version: String,
    /// When it was put, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Whether it is the deployed one.
    pub deployed: bool,
}

/// An app, in `model.list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppSummary {
    /// The app.
    pub name: String,
    /// The version put last.
    pub latest_version: Option<String>,
    /// The deployed version.
    pub deployed_version: Option<String>,
    /// The `description` annotation of the latest version.
    pub description: Option<String>,
    /// Its status, if the reconciler computed one.
    pub status: Option<AppStatus>,
}

/// `model.get`'s reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GetResponse {
    /// The app.
    pub name: String,
    /// The version returned.
    pub version: String,
    /// Its manifest, as put.
    pub manifest: String,
    /// Whether it is the deployed one.
    pub deployed: bool,
}

/// The body of `model.get|del|deploy`: a version, or none for the latest (get, deploy) / all (del).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VersionRequest {
    /// The version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A client of the app API of one lattice.
#[derive(Debug, Clone)]
pub struct AppClient {
    nats: async_nats::Client,
    lattice: String,
    timeout: Duration,
}

impl AppClient {
    /// A client for `lattice` over `nats`.
    pub fn new(nats: async_nats::Client, lattice: &str) -> Self {
        Self { nats, lattice: lattice.into(), timeout: crate::client::DEFAULT_TIMEOUT }
    }

    /// Sets the request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn request<T: DeserializeOwned>(&self, op: AppOp, body: Vec<u8>) -> Result<Option<T>, Error> {
        if let Some(n) = op.app() {
            crate::validate_id("application name", n)?;
        }
        let (subject, name) = (op.subject(&self.lattice), op.name());
        let msg = match tokio::time::timeout(self.timeout, self.nats.request(subject.clone(), body.into())).await {
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("no answer on `{subject}` within {} ms; is a host of lattice `{}` running?", self.timeout.as_millis(), self.lattice),
                ));
            }
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Err(Error::new(
                    ErrorKind::NoResponders,
                    format!("{name} failed: no host of lattice `{}` is running; start one with `wash up`", self.lattice),
                ));
            }
            Ok(Err(e)) => return Err(Error::new(ErrorKind::Transport, format!("{name} request on `{subject}` failed")).with_source(e)),
            Ok(Ok(m)) => m,
        };
        let reply: CtlResponse<T> = serde_json::from_slice(&msg.payload)
            .map_err(|e| Error::new(ErrorKind::Malformed, format!("the reply to {name} is not an app API envelope")).with_source(e))?;
        if !reply.success {
            return Err(Error::new(ErrorKind::Refused, reply.message));
        }
        Ok(reply.response)
    }

    async fn value<T: DeserializeOwned>(&self, op: AppOp, body: Vec<u8>) -> Result<T, Error> {
        let name = op.name();
        self.request(op, body).await?.ok_or_else(|| Error::new(ErrorKind::Malformed, format!("the reply to {name} carries no response")))
    }

    fn version_body(version: Option<&str>) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(&VersionRequest { version: version.map(str::to_string) })
            .map_err(|e| Error::new(ErrorKind::Malformed, "cannot encode the version request").with_source(e))
    }

    /// `model.put`: stores a manifest (YAML or JSON) as a new version. A bad manifest is refused
    /// with every mistake, one per line.
    pub async fn put(&self, manifest: &str) -> Result<PutResponse, Error> {
        self.value(AppOp::Put, manifest.as_bytes().to_vec()).await
    }

    /// `model.get.{name}`: a version's manifest (the latest without `version`).
    pub async fn get(&self, name: &str, version: Option<&str>) -> Result<GetResponse, Error> {
        self.value(AppOp::Get(name.into()), Self::version_body(version)?).await
    }

    /// `model.list`: every app.
    pub async fn list(&self) -> Result<Vec<AppSummary>, Error> {
        Ok(self.request(AppOp::List, Vec::new()).await?.unwrap_or_default())
    }

    /// `model.versions.{name}`: every stored version, oldest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, Error> {
        Ok(self.request(AppOp::Versions(name.into()), Vec::new()).await?.unwrap_or_default())
    }

    /// `model.del.{name}`: deletes one version, or every version (a deployed app is undeployed).
    pub async fn delete(&self, name: &str, version: Option<&str>) -> Result<(), Error> {
        self.request::<serde_json::Value>(AppOp::Del(name.into()), Self::version_body(version)?).await.map(|_| ())
    }

    /// `model.deploy.{name}`: deploys a version (the latest without `version`).
    pub async fn deploy(&self, name: &str, version: Option<&str>) -> Result<Deployment, Error> {
        self.value(AppOp::Deploy(name.into()), Self::version_body(version)?).await
    }

    /// `model.undeploy.{name}`: removes everything the app created.
    pub async fn undeploy(&self, name: &str) -> Result<(), Error> {
        self.request::<serde_json::Value>(AppOp::Undeploy(name.into()), Vec::new()).await.map(|_| ())
    }

    /// `model.status.{name}`.
    pub async fn status(&self, name: &str) -> Result<AppStatus, Error> {
        self.value(AppOp::Status(name.into()), Vec::new()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_subjects() {
        assert!(crate::state::is_reserved_bucket(&apps_bucket("default")));
        assert_eq!(version_key("hello", "v1.0"), "app.hello.v.76312e30");
        assert_eq!(parse_key(&deployment_key("hello")), Some(("hello", "deployment")));
        assert_eq!(parse_key(&owned_key("hello")), Some(("hello", "owned")));
    }
}

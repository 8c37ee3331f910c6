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
//! host of a queue group. Requests and replies are wadm 0.21's JSON (the types below mirror
//! `wadm-types`' `api.rs`), so wasmCloud's `wash app` works against Trellis hosts and
//! [`AppClient`] against wadm: replies are bare objects (`model.list` a bare array), and a
//! failure is the operation's reply with `result: "error"` (or `notfound`, `noop`) and a
//! `message`. `model.put` takes the manifest as JSON (what wadm-client sends, with
//! `Content-Type: application/json`) or YAML; the others an empty body or `{"version": …}`.
//! Status updates are also published on [`crate::subject::app_status_subject`] when they change.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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

impl AppStatus {
    /// Its wire form, wadm's [`Status`]: the state as [`StatusType`] (`Undeploying` is
    /// `reconciling`: work remains), the message, one scaler entry per detail (kind
    /// [`DETAIL_KIND`], name the app, the detail as its message) and the deployed version.
    pub fn to_wire(&self) -> Status {
        let status_type = self.state.status_type();
        let scalers = self
            .details
            .iter()
            .enumerate()
            .map(|(i, d)| ScalerStatus {
                id: format!("{}-{i}", self.name),
                kind: DETAIL_KIND.into(),
                name: self.name.clone(),
                info: StatusInfo { status_type, message: d.clone() },
            })
            .collect();
        Status {
            info: StatusInfo { status_type, message: self.message.clone() },
            scalers,
            version: self.version.clone().unwrap_or_default(),
            components: Vec::new(),
        }
    }
}

impl AppState {
    /// The wadm status type that says the same.
    pub fn status_type(self) -> StatusType {
        match self {
            Self::Deployed => StatusType::Deployed,
            Self::Reconciling | Self::Undeploying => StatusType::Reconciling,
            Self::Failed => StatusType::Failed,
            Self::Undeployed => StatusType::Undeployed,
        }
    }
}

// The app API's wire types: wadm 0.21's (`wadm-types`' `api.rs`), field for field, so
// wasmCloud's `wash` and `wadm-client` decode what hosts answer, and `AppClient` decodes
// what wadm answers. Replies are bare objects (a bare array for `model.list`), never the
// control envelope. A failure is the operation's own reply with `result: "error"` (or
// `"notfound"`, `"noop"`) and a `message`.

/// The `kind` of the scaler entries a [`Status`] carries one per detail line of an
/// [`AppStatus`].
pub const DETAIL_KIND: &str = "TrellisReconciler";

/// How a `model.put` ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PutResult {
    /// Refused; see the message.
    Error,
    /// The app's first version was stored.
    Created,
    /// Another version was stored (or, in Trellis, this same one was already).
    NewVersion,
}

/// `model.put`'s reply (wadm's `PutModelResponse`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PutModelResponse {
    /// The outcome.
    pub result: PutResult,
    /// How many versions are stored now.
    #[serde(default)]
    pub total_versions: usize,
    /// The version stored.
    #[serde(default)]
    pub current_version: String,
    /// What happened, or what was wrong.
    #[serde(default)]
    pub message: String,
    /// The app.
    #[serde(default)]
    pub name: String,
}

/// How a `model.get` or `model.versions` ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GetResult {
    /// Failed; see the message.
    Error,
    /// Found.
    Success,
    /// No such app or version.
    NotFound,
}

/// `model.get`'s reply (wadm's `GetModelResponse`); the manifest is its JSON form.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GetModelResponse {
    /// The outcome.
    pub result: GetResult,
    /// What happened, or what was wrong.
    #[serde(default)]
    pub message: String,
    /// The manifest (with `result: success`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<serde_json::Value>,
}

/// A version, in `model.versions` (wadm's `VersionInfo`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VersionInfo {
    /// The version.
    pub version: String,
    /// Whether it is the deployed one.
    pub deployed: bool,
}

/// `model.versions`' reply (wadm's `VersionResponse`), oldest version first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VersionResponse {
    /// The outcome.
    pub result: GetResult,
    /// What happened, or what was wrong.
    #[serde(default)]
    pub message: String,
    /// The versions.
    pub versions: Vec<VersionInfo>,
}

/// An app, in `model.list` (wadm's `ModelSummary`); the reply is a bare array of them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelSummary {
    /// The app.
    pub name: String,
    /// The version put last.
    pub version: String,
    /// The `description` annotation of that version.
    pub description: Option<String>,
    /// The deployed version.
    pub deployed_version: Option<String>,
    /// Its status.
    #[serde(default)]
    pub detailed_status: Status,
    /// Deprecated in wadm, still read by older clients: the status type.
    pub status: StatusType,
    /// Deprecated in wadm, still read by older clients: the status message.
    pub status_message: Option<String>,
}

/// How a `model.del` ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeleteResult {
    /// Deleted.
    Deleted,
    /// Refused; see the message.
    Error,
    /// Nothing to delete.
    Noop,
}

/// `model.del`'s reply (wadm's `DeleteModelResponse`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeleteModelResponse {
    /// The outcome.
    pub result: DeleteResult,
    /// What happened, or what was wrong.
    #[serde(default)]
    pub message: String,
    /// Whether the app was undeployed too.
    #[serde(default)]
    pub undeploy: bool,
}

/// How a `model.deploy` or `model.undeploy` ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeployResult {
    /// Refused; see the message.
    Error,
    /// Recorded; the reconciler acts on it.
    Acknowledged,
    /// No such app.
    NotFound,
}

/// `model.deploy`'s and `model.undeploy`'s reply (wadm's `DeployModelResponse`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeployModelResponse {
    /// The outcome.
    pub result: DeployResult,
    /// What happened, or what was wrong.
    #[serde(default)]
    pub message: String,
    /// The app.
    #[serde(default)]
    pub name: String,
    /// The version deployed (none for undeploy).
    #[serde(default)]
    pub version: Option<String>,
}

/// How a `model.status` ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StatusResult {
    /// Failed; see the message.
    Error,
    /// Here is the status.
    Ok,
    /// No such app.
    NotFound,
}

/// `model.status`'s reply (wadm's `StatusResponse`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusResponse {
    /// The outcome.
    pub result: StatusResult,
    /// What happened, or what was wrong.
    #[serde(default)]
    pub message: String,
    /// The status (with `result: ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// An app's status (wadm's `Status`), also published on `wadm.status.{lattice}.{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// The state and its message (JSON key `status`).
    #[serde(rename = "status")]
    pub info: StatusInfo,
    /// Per scaler; Trellis sends one per detail line (kind [`DETAIL_KIND`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scalers: Vec<ScalerStatus>,
    /// Deprecated in wadm: the deployed version ("" when none).
    #[serde(default)]
    pub version: String,
    /// Deprecated in wadm; Trellis sends none.
    #[serde(default)]
    pub components: Vec<ComponentStatus>,
}

impl Status {
    /// The state.
    pub fn state(&self) -> StatusType {
        self.info.status_type
    }

    /// The one-line message.
    pub fn message(&self) -> &str {
        &self.info.message
    }

    /// The deployed version, if any.
    pub fn deployed_version(&self) -> Option<&str> {
        Some(self.version.as_str()).filter(|v| !v.is_empty())
    }

    /// The detail lines: the messages of the scaler entries.
    pub fn details(&self) -> impl Iterator<Item = &str> {
        self.scalers.iter().map(|s| s.info.message.as_str()).filter(|m| !m.is_empty())
    }
}

/// A state and its message (wadm's `StatusInfo`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusInfo {
    /// The state (JSON key `type`).
    #[serde(rename = "type")]
    pub status_type: StatusType,
    /// What is missing and why, or the error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// wadm's status types, lower-case on the wire.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StatusType {
    /// Waiting for something before it can start (Trellis does not send it).
    Waiting,
    /// Not deployed; nothing of it runs.
    #[default]
    Undeployed,
    /// Work remains (Trellis: also while an undeployed app's parts are removed).
    #[serde(alias = "compensating")]
    Reconciling,
    /// In place.
    #[serde(alias = "ready")]
    Deployed,
    /// Something failed.
    Failed,
    /// Deployed but unhealthy (Trellis does not send it).
    Unhealthy,
}

impl StatusType {
    /// Its name, as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "Waiting",
            Self::Undeployed => "Undeployed",
            Self::Reconciling => "Reconciling",
            Self::Deployed => "Deployed",
            Self::Failed => "Failed",
            Self::Unhealthy => "Unhealthy",
        }
    }
}

/// One scaler's status (wadm's `ScalerStatus`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScalerStatus {
    /// The scaler's id.
    #[serde(default)]
    pub id: String,
    /// Its kind.
    #[serde(default)]
    pub kind: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its state (JSON key `status`).
    #[serde(rename = "status")]
    pub info: StatusInfo,
}

/// A component's status (wadm's deprecated `ComponentStatus`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ComponentStatus {
    /// The component.
    pub name: String,
    /// Its type (JSON key `type`).
    #[serde(rename = "type")]
    pub component_type: String,
    /// Its state (JSON key `status`).
    #[serde(rename = "status")]
    pub info: StatusInfo,
    /// Its traits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traits: Vec<TraitStatus>,
}

/// A trait's status (wadm's `TraitStatus`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraitStatus {
    /// The trait type (JSON key `type`).
    #[serde(rename = "type")]
    pub trait_type: String,
    /// Its state (JSON key `status`).
    #[serde(rename = "status")]
    pub info: StatusInfo,
}

/// The body of `model.get|del|deploy` (wadm's `GetModelRequest`, `DeleteModelRequest`,
/// `DeployModelRequest`): a version, or none (or `latest`, for deploy) for the latest
/// (get, deploy) / every version (del). An empty body means none.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VersionRequest {
    /// The version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The version wadm's deploy takes as "the latest".
pub const LATEST_VERSION: &str = "latest";

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

    async fn request<T: DeserializeOwned>(&self, op: &AppOp, headers: Option<async_nats::HeaderMap>, body: Vec<u8>) -> Result<T, Error> {
        if let Some(n) = op.app() {
            crate::validate_id("application name", n)?;
        }
        let (subject, name) = (op.subject(&self.lattice), op.name());
        let sent = async {
            match headers {
                Some(h) => self.nats.request_with_headers(subject.clone(), h, body.into()).await,
                None => self.nats.request(subject.clone(), body.into()).await,
            }
        };
        let msg = match tokio::time::timeout(self.timeout, sent).await {
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
        serde_json::from_slice(&msg.payload).map_err(|e| {
            // Every reply type decodes an error object; a bare list (model.list) does not.
            if let Ok(Refusal { message, .. }) = serde_json::from_slice::<Refusal>(&msg.payload) {
                return Error::new(ErrorKind::Refused, message);
            }
            Error::new(
                ErrorKind::Malformed,
                format!("the reply to {name} is not wadm's `{}`", std::any::type_name::<T>().rsplit("::").next().unwrap_or("reply")),
            )
            .with_source(e)
        })
    }

    /// wadm-client's bodies: nothing without a version, `{"version": …}` with one.
    fn version_body(version: Option<&str>) -> Result<Vec<u8>, Error> {
        match version {
            None => Ok(Vec::new()),
            Some(v) => serde_json::to_vec(&VersionRequest { version: Some(v.to_string()) })
                .map_err(|e| Error::new(ErrorKind::Malformed, "cannot encode the version request").with_source(e)),
        }
    }

    /// `model.put`: stores a manifest (YAML or JSON; sent as wadm-client sends it, as JSON with
    /// `Content-Type: application/json` when it parses, else as the text) as a new version. A
    /// bad manifest is refused with every mistake, one per line.
    pub async fn put(&self, manifest: &str) -> Result<PutModelResponse, Error> {
        let (headers, body) = match crate::manifest::Manifest::parse(manifest).ok().and_then(|m| serde_json::to_vec(&m).ok()) {
            Some(json) => {
                let mut h = async_nats::HeaderMap::new();
                h.insert("Content-Type", "application/json");
                (Some(h), json)
            }
            None => (None, manifest.as_bytes().to_vec()),
        };
        let r: PutModelResponse = self.request(&AppOp::Put, headers, body).await?;
        match r.result {
            PutResult::Error => Err(Error::new(ErrorKind::Refused, r.message)),
            _ => Ok(r),
        }
    }

    /// `model.get.{name}`: a version's manifest, as JSON (the latest without `version`).
    pub async fn get(&self, name: &str, version: Option<&str>) -> Result<serde_json::Value, Error> {
        let r: GetModelResponse = self.request(&AppOp::Get(name.into()), None, Self::version_body(version)?).await?;
        match (r.result, r.manifest) {
            (GetResult::Success, Some(m)) => Ok(m),
            (GetResult::Success, None) => Err(Error::new(ErrorKind::Malformed, "the reply to model.get says success but carries no manifest")),
            (_, _) => Err(Error::new(ErrorKind::Refused, r.message)),
        }
    }

    /// `model.list`: every app.
    pub async fn list(&self) -> Result<Vec<ModelSummary>, Error> {
        self.request(&AppOp::List, None, Vec::new()).await
    }

    /// `model.versions.{name}`: every stored version, oldest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, Error> {
        let r: VersionResponse = self.request(&AppOp::Versions(name.into()), None, Vec::new()).await?;
        match r.result {
            GetResult::Success => Ok(r.versions),
            _ => Err(Error::new(ErrorKind::Refused, r.message)),
        }
    }

    /// `model.del.{name}`: deletes one version, or every version (a deployed app is undeployed).
    /// Nothing to delete (`noop`) is an error here.
    pub async fn delete(&self, name: &str, version: Option<&str>) -> Result<DeleteModelResponse, Error> {
        let r: DeleteModelResponse = self.request(&AppOp::Del(name.into()), None, Self::version_body(version)?).await?;
        match r.result {
            DeleteResult::Deleted => Ok(r),
            _ => Err(Error::new(ErrorKind::Refused, r.message)),
        }
    }

    /// `model.deploy.{name}`: deploys a version (the latest without `version`).
    pub async fn deploy(&self, name: &str, version: Option<&str>) -> Result<DeployModelResponse, Error> {
        self.deployment(AppOp::Deploy(name.into()), Self::version_body(version)?).await
    }

    /// `model.undeploy.{name}`: removes everything the app created.
    pub async fn undeploy(&self, name: &str) -> Result<DeployModelResponse, Error> {
        self.deployment(AppOp::Undeploy(name.into()), Vec::new()).await
    }

    async fn deployment(&self, op: AppOp, body: Vec<u8>) -> Result<DeployModelResponse, Error> {
        let r: DeployModelResponse = self.request(&op, None, body).await?;
        match r.result {
            DeployResult::Acknowledged => Ok(r),
            _ => Err(Error::new(ErrorKind::Refused, r.message)),
        }
    }

    /// `model.status.{name}`.
    pub async fn status(&self, name: &str) -> Result<Status, Error> {
        let r: StatusResponse = self.request(&AppOp::Status(name.into()), None, Vec::new()).await?;
        match (r.result, r.status) {
            (StatusResult::Ok, Some(s)) => Ok(s),
            (StatusResult::Ok, None) => Err(Error::new(ErrorKind::Malformed, "the reply to model.status says ok but carries no status")),
            (_, _) => Err(Error::new(ErrorKind::Refused, r.message)),
        }
    }
}

/// What every wadm reply decodes as, for a failure: `{"result": "error", "message": …}`.
#[derive(Debug, Deserialize)]
struct Refusal {
    #[allow(dead_code)]
    result: String,
    #[serde(default)]
    message: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn keys_and_subjects() {
        assert!(crate::state::is_reserved_bucket(&apps_bucket("default")));
        assert_eq!(version_key("hello", "v1.0"), "app.hello.v.76312e30");
        assert_eq!(parse_key(&deployment_key("hello")), Some(("hello", "deployment")));
        assert_eq!(parse_key(&owned_key("hello")), Some(("hello", "owned")));
    }

    /// Decodes `json` (written as wadm 0.21 serialises the type) and encodes it again: the same
    /// JSON, field for field.
    fn same_shape<T: DeserializeOwned + Serialize>(json: &str) -> T {
        let v: T = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
        let want: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_value(&v).unwrap(), want, "{json}");
        v
    }

    /// What wadm's `send_error` answers for any operation.
    const WADM_ERROR: &str = r#"{"result":"error","message":"Internal storage error"}"#;

    #[test]
    fn put_replies_are_wadms() {
        let r: PutModelResponse =
            same_shape(r#"{"result":"created","total_versions":1,"current_version":"v1","message":"Successfully put manifest hello v1","name":"hello"}"#);
        assert_eq!((r.result, r.current_version.as_str()), (PutResult::Created, "v1"));
        same_shape::<PutModelResponse>(r#"{"result":"newversion","total_versions":2,"current_version":"v2","message":"","name":"hello"}"#);
        let e: PutModelResponse = serde_json::from_str(WADM_ERROR).unwrap();
        assert_eq!((e.result, e.total_versions, e.name.as_str()), (PutResult::Error, 0, ""));
    }

    #[test]
    fn list_replies_are_a_bare_array_of_model_summaries() {
        let l: Vec<ModelSummary> = same_shape(
            r#"[{"name":"hello","version":"v1","description":null,"deployed_version":"v1",
                "detailed_status":{"status":{"type":"deployed"},"version":"","components":[]},
                "status":"deployed","status_message":""},
               {"name":"other","version":"v2","description":"says hi","deployed_version":null,
                "detailed_status":{"status":{"type":"undeployed","message":"never deployed"},"version":"","components":[]},
                "status":"undeployed","status_message":"never deployed"}]"#,
        );
        assert_eq!((l[0].detailed_status.state(), l[1].description.as_deref()), (StatusType::Deployed, Some("says hi")));
        // `detailed_status` defaults, as in wadm.
        let old: Vec<ModelSummary> =
            serde_json::from_str(r#"[{"name":"a","version":"v1","description":null,"deployed_version":null,"status":"ready","status_message":null}]"#).unwrap();
        assert_eq!((old[0].status, old[0].detailed_status.state()), (StatusType::Deployed, StatusType::Undeployed));
    }

    #[test]
    fn get_and_versions_replies_are_wadms() {
        let g: GetModelResponse = same_shape(
            r#"{"result":"success","message":"Successfully fetched application hello",
                "manifest":{"apiVersion":"core.oam.dev/v1beta1","kind":"Application","metadata":{"name":"hello","annotations":{"version":"v1"}},"spec":{"components":[]}}}"#,
        );
        assert_eq!(g.manifest.unwrap()["metadata"]["name"], "hello");
        let nf: GetModelResponse = same_shape(r#"{"result":"notfound","message":"Application with the name x not found"}"#);
        assert_eq!((nf.result, nf.manifest), (GetResult::NotFound, None));
        let v: VersionResponse =
            same_shape(r#"{"result":"success","message":"","versions":[{"version":"v1","deployed":false},{"version":"v2","deployed":true}]}"#);
        assert!(v.versions[1].deployed);
        same_shape::<VersionResponse>(r#"{"result":"notfound","message":"Application with the name x not found","versions":[]}"#);
    }

    #[test]
    fn delete_and_deploy_replies_are_wadms() {
        let d: DeleteModelResponse = same_shape(r#"{"result":"deleted","message":"Successfully deleted application hello","undeploy":true}"#);
        assert!(d.undeploy);
        same_shape::<DeleteModelResponse>(r#"{"result":"noop","message":"Application hello doesn't exist","undeploy":false}"#);
        assert_eq!(serde_json::from_str::<DeleteModelResponse>(WADM_ERROR).unwrap().result, DeleteResult::Error);
        let a: DeployModelResponse =
            same_shape(r#"{"result":"acknowledged","message":"Successfully deployed application hello v1","name":"hello","version":"v1"}"#);
        assert_eq!(a.version.as_deref(), Some("v1"));
        same_shape::<DeployModelResponse>(r#"{"result":"acknowledged","message":"Successfully undeployed application hello","name":"hello","version":null}"#);
        same_shape::<DeployModelResponse>(r#"{"result":"notfound","message":"Application with the name x not found","name":"x","version":null}"#);
        assert_eq!(serde_json::from_str::<DeployModelResponse>(WADM_ERROR).unwrap().result, DeployResult::Error);
    }

    #[test]
    fn status_replies_are_wadms() {
        let r: StatusResponse = same_shape(
            r#"{"result":"ok","message":"Successfully fetched status for application hello",
                "status":{"status":{"type":"reconciling","message":"waiting"},
                          "scalers":[{"id":"s1","kind":"SpreadScaler","name":"hello","status":{"type":"reconciling","message":"0 of 1"}}],
                          "version":"v1",
                          "components":[{"name":"c","type":"component","status":{"type":"deployed"},"traits":[{"type":"spreadscaler","status":{"type":"deployed"}}]}]}}"#,
        );
        let s = r.status.unwrap();
        assert_eq!((s.state(), s.message(), s.deployed_version()), (StatusType::Reconciling, "waiting", Some("v1")));
        assert_eq!(s.details().collect::<Vec<_>>(), ["0 of 1"]);
        same_shape::<StatusResponse>(r#"{"result":"notfound","message":"no app `x`"}"#);
        // wadm's older names still decode.
        let old: StatusInfo = serde_json::from_str(r#"{"type":"compensating"}"#).unwrap();
        assert_eq!(old.status_type, StatusType::Reconciling);
        let old: StatusInfo = serde_json::from_str(r#"{"type":"ready"}"#).unwrap();
        assert_eq!(old.status_type, StatusType::Deployed);
        for t in ["waiting", "undeployed", "reconciling", "deployed", "failed", "unhealthy"] {
            same_shape::<StatusInfo>(&format!(r#"{{"type":"{t}"}}"#));
        }
    }

    #[test]
    fn our_statuses_become_wadms() {
        let ours = |state, details: &[&str]| AppStatus {
            name: "hello".into(),
            version: Some("v1".into()),
            state,
            message: "m".into(),
            details: details.iter().map(|d| d.to_string()).collect(),
            updated_ms: 1,
        };
        let cases = [
            (AppState::Deployed, StatusType::Deployed),
            (AppState::Reconciling, StatusType::Reconciling),
            (AppState::Failed, StatusType::Failed),
            (AppState::Undeploying, StatusType::Reconciling),
            (AppState::Undeployed, StatusType::Undeployed),
        ];
        for (state, want) in cases {
            assert_eq!(ours(state, &[]).to_wire().state(), want, "{state:?}");
        }
        let wire = ours(AppState::Reconciling, &["waiting for `a` on host h1: 0 of 1 replicas"]).to_wire();
        assert_eq!(
            serde_json::to_value(&wire).unwrap(),
            serde_json::json!({
                "status": {"type": "reconciling", "message": "m"},
                "scalers": [{"id": "hello-0", "kind": DETAIL_KIND, "name": "hello",
                             "status": {"type": "reconciling", "message": "waiting for `a` on host h1: 0 of 1 replicas"}}],
                "version": "v1",
                "components": []
            })
        );
        let back: Status = serde_json::from_value(serde_json::to_value(&wire).unwrap()).unwrap();
        assert_eq!((back.message(), back.details().count(), back.deployed_version()), ("m", 1, Some("v1")));
    }
}

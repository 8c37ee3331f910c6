//! Secrets, as wasmCloud 1.1+ carries them: the secrets subjects, their JSON bodies, the xkey
//! (curve25519) sealing of requests, replies and stored values, secret references in named
//! config, and [`SecretsClient`], the one client (hosts fetch with it, `wash secrets` manages
//! with it).
//!
//! On the wire (`wasmcloud.secrets.v1alpha1.{backend}.{op}`, request/reply):
//! - `server_xkey`: no body; the reply is the backend's public xkey (`X…`) as text.
//! - `get`: a [`SecretRequest`] as JSON, sealed from a fresh requester xkey to the server
//!   xkey, the requester's public key in header `WasmCloud-Host-Xkey`. The reply is a
//!   [`SecretResponse`] as JSON sealed to the requester's key, the sealer's public key in
//!   header `Server-Response-Xkey`; a refusal is an unsealed `SecretResponse` with only `error`.
//! - `put_secret` (wasmCloud's `secrets-nats-kv` extension): a [`PutSecretRequest`], sealed the
//!   same way; the reply is a [`PutSecretResponse`] in clear (it holds no value).
//! - `list_secrets`, `delete_secret.{key}` (Trellis extensions, no values involved): a
//!   [`ListSecretsResponse`] / [`PutSecretResponse`] in clear.
//!
//! No type here prints a secret value in its `Debug` form.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use nkeys::XKey;
use serde::{Deserialize, Serialize};

use crate::ctl::StringMap;
use crate::{Error, ErrorKind};

/// The first tokens of every secrets subject.
pub const SUBJECT_BASE: &str = "wasmcloud.secrets";
/// The secrets API version in the subject.
pub const API_VERSION: &str = "v1alpha1";
/// Header naming the requester's public xkey (the request is sealed by it).
pub const HOST_XKEY_HEADER: &str = "WasmCloud-Host-Xkey";
/// Header naming the public xkey the reply was sealed by.
pub const RESPONSE_XKEY_HEADER: &str = "Server-Response-Xkey";
/// The `type` of a secret reference in config.
pub const SECRET_TYPE: &str = "secret.wasmcloud.dev/v1alpha1";
/// The `type` inside a reference's `policy` JSON.
pub const POLICY_PROPERTIES_TYPE: &str = "properties.secret.wasmcloud.dev/v1alpha1";
/// Named config whose name starts with this is a secret reference, not configuration: a
/// component or provider given config `SECRET_x` is granted the secret the reference names.
pub const CONFIG_PREFIX: &str = "SECRET_";
/// The name the built-in backend answers under unless told otherwise.
pub const DEFAULT_BACKEND: &str = "nats-kv";
/// How long a client waits for a backend.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest secret value accepted, before sealing (a NATS message carries it whole).
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// The JetStream KV bucket holding lattice `lattice`'s secrets, sealed (the `TRELLIS_` prefix
/// keeps components' key-value links out of it).
pub fn bucket(lattice: &str) -> String {
    format!("TRELLIS_SECRETS_{lattice}")
}

/// The config name holding the reference for secret `name`.
pub fn config_name(name: &str) -> String {
    format!("{CONFIG_PREFIX}{name}")
}

/// Whether config `name` is a secret reference.
pub fn is_reference(config_name: &str) -> bool {
    config_name.starts_with(CONFIG_PREFIX)
}

/// An operation of a secrets backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `server_xkey`.
    ServerXkey,
    /// `get`.
    Get,
    /// `put_secret`.
    Put,
    /// `list_secrets` (Trellis).
    List,
    /// `delete_secret.{key}` (Trellis).
    Delete(String),
}

impl Op {
    /// The subject of this operation on backend `backend`.
    pub fn subject(&self, backend: &str) -> String {
        let base = format!("{SUBJECT_BASE}.{API_VERSION}.{backend}");
        match self {
            Op::ServerXkey => format!("{base}.server_xkey"),
            Op::Get => format!("{base}.get"),
            Op::Put => format!("{base}.put_secret"),
            Op::List => format!("{base}.list_secrets"),
            Op::Delete(key) => format!("{base}.delete_secret.{key}"),
        }
    }

    /// Parses a subject a backend named `backend` received.
    pub fn parse(backend: &str, subject: &str) -> Option<Self> {
        let rest = subject.strip_prefix(&format!("{SUBJECT_BASE}.{API_VERSION}.{backend}."))?;
        match rest {
            "server_xkey" => Some(Op::ServerXkey),
            "get" => Some(Op::Get),
            "put_secret" => Some(Op::Put),
            "list_secrets" => Some(Op::List),
            _ => rest.strip_prefix("delete_secret.").filter(|k| valid_key(k)).map(|k| Op::Delete(k.to_string())),
        }
    }

    /// What backend `backend` subscribes to (one queue group per backend).
    pub fn wildcard(backend: &str) -> String {
        format!("{SUBJECT_BASE}.{API_VERSION}.{backend}.>")
    }
}

/// Whether `key` can name a stored secret: 1 to 255 of `[A-Za-z0-9_-/=]`, and `.` between
/// other characters (it becomes one KV key).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 255
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-/=.".contains(&b))
}

/// Who asks, for the backend's policy decisions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Context {
    /// The component's or provider's claims token (empty when unsigned).
    #[serde(default)]
    pub entity_jwt: String,
    /// The host's token (Trellis sends none).
    #[serde(default)]
    pub host_jwt: String,
    /// The app the entity belongs to, and the reference's policy.
    #[serde(default)]
    pub application: Application,
}

/// The app an entity belongs to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Application {
    /// The app's name, if any.
    #[serde(default)]
    pub name: Option<String>,
    /// The reference's policy, as a JSON string.
    #[serde(default)]
    pub policy: String,
}

/// The body of `get`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretRequest {
    /// The secret's key in the backend.
    pub key: String,
    /// A field within the secret (unused by the NATS KV backend).
    #[serde(default)]
    pub field: Option<String>,
    /// The version (the KV revision, as text); latest when absent.
    #[serde(default)]
    pub version: Option<String>,
    /// Who asks.
    pub context: Context,
}

/// A secret's value: text or bytes. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretValue {
    /// Text.
    String(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretValue::String(_) => f.write_str("String(<redacted>)"),
            SecretValue::Bytes(_) => f.write_str("Bytes(<redacted>)"),
        }
    }
}

impl SecretValue {
    /// The value as stored (text as UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            SecretValue::String(s) => s.as_bytes(),
            SecretValue::Bytes(b) => b,
        }
    }

    /// Text when the bytes are UTF-8, else bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        match String::from_utf8(bytes) {
            Ok(s) => SecretValue::String(s),
            Err(e) => SecretValue::Bytes(e.into_bytes()),
        }
    }
}

/// A secret as a backend returns it. `Debug` never shows the value.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// The version returned.
    pub version: String,
    /// The value, when text.
    #[serde(default)]
    pub string_secret: Option<String>,
    /// The value, when bytes.
    #[serde(default)]
    pub binary_secret: Option<Vec<u8>>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret").field("version", &self.version).finish_non_exhaustive()
    }
}

impl Secret {
    /// The value, if the backend sent one.
    pub fn value(self) -> Option<SecretValue> {
        match (self.string_secret, self.binary_secret) {
            (Some(s), _) => Some(SecretValue::String(s)),
            (None, Some(b)) => Some(SecretValue::Bytes(b)),
            (None, None) => None,
        }
    }
}

/// Why a backend refused a `get` (wasmCloud's variants and JSON form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum GetSecretError {
    /// The entity token did not verify.
    #[error("invalid entity token: {0}")]
    InvalidEntityJWT(String),
    /// The host token did not verify.
    #[error("invalid host token: {0}")]
    InvalidHostJWT(String),
    /// No such secret (or version).
    #[error("secret not found")]
    SecretNotFound,
    /// The requester's xkey header is missing or not an xkey.
    #[error("invalid xkey")]
    InvalidXKey,
    /// Sealing the reply failed.
    #[error("error encrypting secret")]
    EncryptionError,
    /// Opening the request (or the stored value) failed.
    #[error("error decrypting secret")]
    DecryptionError,
    /// The store behind the backend failed.
    #[error("error fetching secret: {0}")]
    UpstreamError(String),
    /// The entity may not read this secret.
    #[error("error fetching secret: unauthorized")]
    Unauthorized,
    /// The request did not parse.
    #[error("invalid request")]
    InvalidRequest,
    /// The body was empty.
    #[error("invalid payload")]
    InvalidPayload,
    /// Headers were missing.
    #[error("invalid headers")]
    InvalidHeaders,
    /// Anything else.
    #[error("unknown error fetching secret: {0}")]
    Other(String),
}

/// The reply to `get`: a secret or an error.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SecretResponse {
    /// The secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<GetSecretError>,
}

impl From<GetSecretError> for SecretResponse {
    fn from(e: GetSecretError) -> Self {
        Self { secret: None, error: Some(e) }
    }
}

/// The body of `put_secret`. `Debug` never shows the value.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct PutSecretRequest {
    /// The key to store under.
    pub key: String,
    /// Unused by the NATS KV backend (the revision is the version).
    #[serde(default)]
    pub version: String,
    /// The value, when text.
    #[serde(default)]
    pub string_secret: Option<String>,
    /// The value, when bytes.
    #[serde(default)]
    pub binary_secret: Option<Vec<u8>>,
}

impl fmt::Debug for PutSecretRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutSecretRequest").field("key", &self.key).finish_non_exhaustive()
    }
}

/// The reply to `put_secret` and `delete_secret`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PutSecretResponse {
    /// The KV revision written (0 for a delete).
    #[serde(default)]
    pub revision: u64,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One stored secret, as `list_secrets` shows it: its name and version, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// The key.
    pub name: String,
    /// The latest version (KV revision).
    pub version: String,
}

/// The reply to `list_secrets`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListSecretsResponse {
    /// The stored secrets, by name.
    #[serde(default)]
    pub secrets: Vec<SecretInfo>,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A secret reference, as stored in named config `SECRET_{name}` (wasmCloud's map form:
/// `name`, `type`, `backend`, `key`, `field?`, `version?`, `policy` as a JSON string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretReference {
    /// The name the component asks for (`store.get(name)`).
    pub name: String,
    /// The backend to ask.
    pub backend: String,
    /// The key in the backend.
    pub key: String,
    /// A field within the secret.
    pub field: Option<String>,
    /// A version; latest when absent.
    pub version: Option<String>,
    /// The policy, a JSON string passed to the backend as is.
    pub policy: String,
}

impl SecretReference {
    /// A reference to `key` on the built-in backend, named `name`, with an empty policy.
    pub fn new(name: &str, key: &str) -> Self {
        Self { name: name.into(), backend: DEFAULT_BACKEND.into(), key: key.into(), field: None, version: None, policy: policy_json(&BTreeMap::new()) }
    }

    /// The config map form.
    pub fn to_config(&self) -> StringMap {
        let mut m = StringMap::new();
        m.insert("name".into(), self.name.clone());
        m.insert("type".into(), SECRET_TYPE.into());
        m.insert("backend".into(), self.backend.clone());
        m.insert("key".into(), self.key.clone());
        if let Some(f) = &self.field {
            m.insert("field".into(), f.clone());
        }
        if let Some(v) = &self.version {
            m.insert("version".into(), v.clone());
        }
        m.insert("policy".into(), self.policy.clone());
        m
    }

    /// The `get` request for this reference (no tokens: the host decides access from its
    /// grants, see the README).
    pub fn request(&self) -> SecretRequest {
        SecretRequest {
            key: self.key.clone(),
            field: self.field.clone(),
            version: self.version.clone(),
            context: Context { application: Application { name: None, policy: self.policy.clone() }, ..Default::default() },
        }
    }

    /// Reads a reference from config `config_name`'s values; `None` when they are not one.
    /// A reference without `name` is named by the config name without `SECRET_`.
    pub fn from_config(config_name: &str, m: &StringMap) -> Option<Self> {
        if m.get("type").map(String::as_str) != Some(SECRET_TYPE) {
            return None;
        }
        Some(Self {
            name: m.get("name").cloned().unwrap_or_else(|| config_name.strip_prefix(CONFIG_PREFIX).unwrap_or(config_name).to_string()),
            backend: m.get("backend")?.clone(),
            key: m.get("key")?.clone(),
            field: m.get("field").cloned(),
            version: m.get("version").cloned(),
            policy: m.get("policy").cloned().unwrap_or_default(),
        })
    }
}

/// A reference's `policy` string: `{"type": POLICY_PROPERTIES_TYPE, "properties": {...}}`.
pub fn policy_json(properties: &BTreeMap<String, String>) -> String {
    serde_json::json!({ "type": POLICY_PROPERTIES_TYPE, "properties": properties }).to_string()
}

/// Seals `plain` from `sender` to `recipient`.
pub fn seal(plain: &[u8], sender: &XKey, recipient: &XKey) -> Result<Vec<u8>, Error> {
    sender.seal(plain, recipient).map_err(|e| Error::new(ErrorKind::Malformed, format!("sealing failed: {e}")))
}

/// Opens `sealed`, sealed by `sender` to `recipient`.
pub fn open(sealed: &[u8], recipient: &XKey, sender: &XKey) -> Result<Vec<u8>, Error> {
    recipient.open(sealed, sender).map_err(|_| Error::new(ErrorKind::Malformed, "opening a sealed message failed: wrong key or altered message"))
}

/// Seals a value for storage with the backend's key (sealed to itself, as `secrets-nats-kv` does).
pub fn seal_at_rest(value: &[u8], key: &XKey) -> Result<Vec<u8>, Error> {
    seal(value, key, key)
}

/// Opens a value sealed by [`seal_at_rest`].
pub fn open_at_rest(sealed: &[u8], key: &XKey) -> Result<Vec<u8>, Error> {
    open(sealed, key, key)
}

/// A client of one secrets backend.
#[derive(Clone)]
pub struct SecretsClient {
    nats: async_nats::Client,
    backend: String,
}

impl SecretsClient {
    /// A client of backend `backend` over `nats`.
    pub fn new(nats: async_nats::Client, backend: &str) -> Self {
        Self { nats, backend: backend.into() }
    }

    async fn request(&self, op: Op, headers: Option<async_nats::HeaderMap>, body: Bytes) -> Result<async_nats::Message, Error> {
        let subject = op.subject(&self.backend);
        let nats = self.nats.clone();
        let s = subject.clone();
        let fut = async move {
            match headers {
                Some(h) => nats.request_with_headers(s, h, body).await,
                None => nats.request(s, body).await,
            }
        };
        match tokio::time::timeout(TIMEOUT, fut).await {
            Err(_) => Err(Error::new(ErrorKind::Timeout, format!("secrets backend `{}` did not answer on `{subject}` within {TIMEOUT:?}", self.backend))),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Err(Error::new(
                ErrorKind::NoResponders,
                format!("no secrets backend `{}` answers on `{subject}`; start a host with `--secrets-xkey-seed`", self.backend),
            )),
            Ok(Err(e)) => Err(Error::new(ErrorKind::Transport, format!("request on `{subject}` failed: {e}"))),
            Ok(Ok(m)) => Ok(m),
        }
    }

    /// The backend's public xkey.
    pub async fn server_xkey(&self) -> Result<XKey, Error> {
        let m = self.request(Op::ServerXkey, None, Bytes::new()).await?;
        let text = std::str::from_utf8(&m.payload).unwrap_or_default();
        XKey::from_public_key(text.trim()).map_err(|_| Error::new(ErrorKind::Malformed, format!("secrets backend `{}` sent no xkey", self.backend)))
    }

    /// Sends `body` sealed to the backend from a fresh key; returns the reply and that key.
    async fn sealed(&self, op: Op, body: &[u8]) -> Result<(async_nats::Message, XKey), Error> {
        let server = self.server_xkey().await?;
        let mine = XKey::new();
        let sealed = seal(body, &mine, &server)?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(HOST_XKEY_HEADER, mine.public_key().as_str());
        Ok((self.request(op, Some(headers), sealed.into()).await?, mine))
    }

    /// Fetches a secret: the request and the reply travel sealed.
    pub async fn get(&self, req: &SecretRequest) -> Result<SecretValue, Error> {
        let body = serde_json::to_vec(req).map_err(|e| Error::invalid(e.to_string()))?;
        let (m, mine) = self.sealed(Op::Get, &body).await?;
        let plain = match m.headers.as_ref().and_then(|h| h.get(RESPONSE_XKEY_HEADER)) {
            Some(k) => {
                let sender = XKey::from_public_key(k.as_str()).map_err(|_| Error::new(ErrorKind::Malformed, "the backend's reply key is not an xkey"))?;
                open(&m.payload, &mine, &sender)?
            }
            // A refusal comes unsealed; it carries no value.
            None => m.payload.to_vec(),
        };
        let resp: SecretResponse = serde_json::from_slice(&plain)
            .map_err(|e| Error::new(ErrorKind::Malformed, format!("secrets backend `{}` sent a reply that is not a SecretResponse: {e}", self.backend)))?;
        if let Some(e) = resp.error {
            return Err(Error::new(ErrorKind::Refused, format!("secrets backend `{}` refused `{}`: {e}", self.backend, req.key)));
        }
        resp.secret
            .and_then(Secret::value)
            .ok_or_else(|| Error::new(ErrorKind::Malformed, format!("secrets backend `{}` sent no value for `{}`", self.backend, req.key)))
    }

    /// Stores `value` under `key`; returns the new version.
    pub async fn put(&self, key: &str, value: SecretValue) -> Result<u64, Error> {
        if !valid_key(key) {
            return Err(Error::invalid(format!("`{key}` cannot name a secret: use 1 to 255 of A-Z a-z 0-9 _ - / = and inner dots")));
        }
        if value.as_bytes().len() > MAX_VALUE_BYTES {
            return Err(Error::invalid(format!("secret `{key}` is over {MAX_VALUE_BYTES} bytes")));
        }
        let mut req = PutSecretRequest { key: key.into(), ..Default::default() };
        match value {
            SecretValue::String(s) => req.string_secret = Some(s),
            SecretValue::Bytes(b) => req.binary_secret = Some(b),
        }
        let body = serde_json::to_vec(&req).map_err(|e| Error::invalid(e.to_string()))?;
        let (m, _) = self.sealed(Op::Put, &body).await?;
        self.revision_reply(&m, key)
    }

    fn revision_reply(&self, m: &async_nats::Message, key: &str) -> Result<u64, Error> {
        let resp: PutSecretResponse = serde_json::from_slice(&m.payload)
            .map_err(|_| Error::new(ErrorKind::Malformed, format!("secrets backend `{}` answered: {}", self.backend, String::from_utf8_lossy(&m.payload))))?;
        match resp.error {
            Some(e) => Err(Error::new(ErrorKind::Refused, format!("secrets backend `{}` refused `{key}`: {e}", self.backend))),
            None => Ok(resp.revision),
        }
    }

    /// The stored secrets' names and versions.
    pub async fn list(&self) -> Result<Vec<SecretInfo>, Error> {
        let m = self.request(Op::List, None, Bytes::new()).await?;
        let resp: ListSecretsResponse = serde_json::from_slice(&m.payload)
            .map_err(|_| Error::new(ErrorKind::Malformed, format!("secrets backend `{}` does not list secrets (not a Trellis backend?)", self.backend)))?;
        match resp.error {
            Some(e) => Err(Error::new(ErrorKind::Refused, format!("secrets backend `{}` could not list: {e}", self.backend))),
            None => Ok(resp.secrets),
        }
    }

    /// Deletes `key` with all its versions.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        if !valid_key(key) {
            return Err(Error::invalid(format!("`{key}` cannot name a secret")));
        }
        let m = self.request(Op::Delete(key.into()), None, Bytes::new()).await?;
        self.revision_reply(&m, key).map(|_| ())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        for op in [Op::ServerXkey, Op::Get, Op::Put, Op::List, Op::Delete("db/password".into())] {
            let s = op.subject("nats-kv");
            assert!(s.starts_with("wasmcloud.secrets.v1alpha1.nats-kv."), "{s}");
            assert_eq!(Op::parse("nats-kv", &s), Some(op));
        }
        assert_eq!(Op::Get.subject("nats-kv"), "wasmcloud.secrets.v1alpha1.nats-kv.get");
        assert_eq!(Op::ServerXkey.subject("vault"), "wasmcloud.secrets.v1alpha1.vault.server_xkey");
        assert_eq!(Op::parse("nats-kv", "wasmcloud.secrets.v1alpha1.other.get"), None);
        assert_eq!(Op::parse("nats-kv", "wasmcloud.secrets.v1alpha1.nats-kv.delete_secret..x"), None);
    }

    #[test]
    fn seal_round_trip_and_no_plaintext() {
        let value = b"hunter2-very-secret";
        let server = XKey::new();
        let host = XKey::new();
        let sealed = seal(value, &host, &server).unwrap();
        assert!(!sealed.windows(value.len()).any(|w| w == value));
        assert_eq!(open(&sealed, &server, &host).unwrap(), value);
        assert!(open(&sealed, &server, &XKey::new()).is_err(), "another sender's key must not open it");

        let at_rest = seal_at_rest(value, &server).unwrap();
        assert!(!at_rest.windows(value.len()).any(|w| w == value));
        assert_eq!(open_at_rest(&at_rest, &server).unwrap(), value);
        assert!(open_at_rest(&at_rest, &XKey::new()).is_err());
    }

    #[test]
    fn wire_forms_match_wasmcloud() {
        let req = SecretRequest { key: "k".into(), field: None, version: Some("3".into()), context: Context::default() };
        let v: serde_json::Value = serde_json::to_value(&req).unwrap();
        assert_eq!(v["key"], "k");
        assert_eq!(v["version"], "3");
        assert_eq!(v["context"]["application"]["policy"], "");
        let e = serde_json::to_string(&SecretResponse::from(GetSecretError::SecretNotFound)).unwrap();
        assert_eq!(e, r#"{"error":"SecretNotFound"}"#);
        let e = serde_json::to_string(&SecretResponse::from(GetSecretError::UpstreamError("x".into()))).unwrap();
        assert_eq!(e, r#"{"error":{"UpstreamError":"x"}}"#);
    }

    #[test]
    fn references_round_trip_and_debug_hides_values() {
        let r = SecretReference { field: Some("f".into()), version: Some("2".into()), ..SecretReference::new("api", "prod/api") };
        assert_eq!(SecretReference::from_config("SECRET_api", &r.to_config()), Some(r));
        let mut plain = StringMap::new();
        plain.insert("key".into(), "v".into());
        assert_eq!(SecretReference::from_config("SECRET_x", &plain), None);
        let s = Secret { version: "1".into(), string_secret: Some("hunter2".into()), binary_secret: None };
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", SecretValue::String("hunter2".into())).contains("hunter2"));
        let p = PutSecretRequest { key: "k".into(), string_secret: Some("hunter2".into()), ..Default::default() };
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn keys() {
        assert!(valid_key("db/password"));
        assert!(valid_key("a.b"));
        assert!(!valid_key(""));
        assert!(!valid_key("a..b"));
        assert!(!valid_key("a b"));
        assert!(!valid_key("a*"));
    }
}

//! The built-in secrets backend, run by every host given `--secrets-xkey-seed` (one queue
//! group per backend name, so one host answers each request): wasmCloud's secrets subjects
//! ([`trellis_lattice::secrets`]) over a JetStream KV bucket `TRELLIS_SECRETS_{lattice}`
//! whose values are sealed with the backend's xkey. Every host of a backend must be given the
//! same seed: it both opens stored values and is the transit key clients seal requests to.
//!
//! Access control is the host's (a component gets only the references it was started with,
//! `capabilities.rs`); this backend verifies no entity tokens. Nothing here logs a value, and
//! replies that carry one are sealed to the requester.

use bytes::Bytes;
use futures::StreamExt;
use nkeys::XKey;
use trellis_lattice::secrets::{
    self, GetSecretError, ListSecretsResponse, Op, PutSecretRequest, PutSecretResponse, Secret, SecretInfo, SecretRequest, SecretResponse,
};

use crate::error::{HostError, Result};

/// How many versions of a secret the bucket keeps.
const HISTORY: i64 = 10;
/// At most this many secrets are listed.
const MAX_LISTED: usize = 10_000;

/// What the backend needs.
pub(crate) struct Backend {
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub lattice: String,
    pub name: String,
    pub key: XKey,
    /// How many copies of its bucket JetStream keeps (`HostConfig::js_replicas`).
    pub replicas: usize,
}

/// Opens (or creates) the bucket, subscribes, and serves until the subscription ends.
pub(crate) async fn start(b: Backend) -> Result<tokio::task::JoinHandle<()>> {
    let bucket = secrets::bucket(&b.lattice);
    let spec = trellis_lattice::state::BucketSpec { name: bucket.clone(), description: "Trellis secrets, sealed".into(), history: HISTORY };
    let kv = trellis_lattice::state::create_bucket(&b.js, &spec, b.replicas)
        .await
        .map_err(|e| HostError::Registry(format!("cannot open or create the secrets bucket `{bucket}`: {e}")))?;
    let subject = Op::wildcard(&b.name);
    let mut sub = b
        .nats
        .queue_subscribe(subject.clone(), format!("trellis-secrets.{}", b.name))
        .await
        .map_err(|e| HostError::Registry(format!("cannot subscribe to `{subject}`: {e}")))?;
    tracing::info!(backend = b.name, bucket, public_xkey = b.key.public_key(), "secrets backend serving");
    Ok(tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.clone() else { continue };
            let body = answer(&b, &kv, &msg).await;
            let _ = match body {
                Answer::Clear(body) => b.nats.publish(reply, body).await,
                Answer::Sealed { body, by } => {
                    let mut h = async_nats::HeaderMap::new();
                    h.insert(secrets::RESPONSE_XKEY_HEADER, by.as_str());
                    b.nats.publish_with_headers(reply, h, body).await
                }
            };
        }
    }))
}

enum Answer {
    Clear(Bytes),
    Sealed { body: Bytes, by: String },
}

fn json<T: serde::Serialize>(v: &T) -> Answer {
    Answer::Clear(serde_json::to_vec(v).unwrap_or_default().into())
}

/// Opens a sealed request: the sender's key from the header, the body opened with ours.
fn open_request(b: &Backend, msg: &async_nats::Message) -> std::result::Result<(Vec<u8>, XKey), GetSecretError> {
    if msg.payload.is_empty() {
        return Err(GetSecretError::InvalidPayload);
    }
    let header = msg.headers.as_ref().and_then(|h| h.get(secrets::HOST_XKEY_HEADER)).ok_or(GetSecretError::InvalidHeaders)?;
    let sender = XKey::from_public_key(header.as_str()).map_err(|_| GetSecretError::InvalidXKey)?;
    let plain = secrets::open(&msg.payload, &b.key, &sender).map_err(|_| GetSecretError::DecryptionError)?;
    Ok((plain, sender))
}

async fn answer(b: &Backend, kv: &async_nats::jetstream::kv::Store, msg: &async_nats::Message) -> Answer {
    match Op::parse(&b.name, &msg.subject) {
        Some(Op::ServerXkey) => Answer::Clear(b.key.public_key().into()),
        Some(Op::Get) => get(b, kv, msg).await,
        Some(Op::Put) => json(&put(b, kv, msg).await),
        Some(Op::List) => json(&list(kv).await),
        Some(Op::Delete(key)) => json(&match kv.purge(&key).await {
            Ok(()) => PutSecretResponse::default(),
            Err(e) => PutSecretResponse { revision: 0, error: Some(format!("cannot delete: {e}")) },
        }),
        None => json(&SecretResponse::from(GetSecretError::InvalidRequest)),
    }
}

async fn get(b: &Backend, kv: &async_nats::jetstream::kv::Store, msg: &async_nats::Message) -> Answer {
    let (plain, requester) = match open_request(b, msg) {
        Ok(x) => x,
        Err(e) => return json(&SecretResponse::from(e)),
    };
    let Ok(req) = serde_json::from_slice::<SecretRequest>(&plain) else {
        return json(&SecretResponse::from(GetSecretError::InvalidRequest));
    };
    let secret = match fetch(b, kv, &req).await {
        Ok(s) => s,
        Err(e) => return json(&SecretResponse::from(e)),
    };
    let body = serde_json::to_vec(&SecretResponse { secret: Some(secret), error: None }).unwrap_or_default();
    // A fresh key per reply, as wasmCloud's backend does: only the requester can open it.
    let by = XKey::new();
    match secrets::seal(&body, &by, &requester) {
        Ok(sealed) => Answer::Sealed { body: sealed.into(), by: by.public_key() },
        Err(_) => json(&SecretResponse::from(GetSecretError::EncryptionError)),
    }
}

async fn fetch(b: &Backend, kv: &async_nats::jetstream::kv::Store, req: &SecretRequest) -> std::result::Result<Secret, GetSecretError> {
    if !secrets::valid_key(&req.key) {
        return Err(GetSecretError::SecretNotFound);
    }
    let entry = match &req.version {
        Some(v) => {
            let rev = v.parse::<u64>().map_err(|_| GetSecretError::InvalidRequest)?;
            kv.entry_for_revision(req.key.clone(), rev).await
        }
        None => kv.entry(req.key.clone()).await,
    }
    .map_err(|e| GetSecretError::UpstreamError(e.to_string()))?;
    let entry = entry.filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put).ok_or(GetSecretError::SecretNotFound)?;
    let plain = secrets::open_at_rest(&entry.value, &b.key).map_err(|_| GetSecretError::DecryptionError)?;
    let mut secret = Secret { version: entry.revision.to_string(), ..Default::default() };
    match String::from_utf8(plain) {
        Ok(s) => secret.string_secret = Some(s),
        Err(e) => secret.binary_secret = Some(e.into_bytes()),
    }
    Ok(secret)
}

async fn put(b: &Backend, kv: &async_nats::jetstream::kv::Store, msg: &async_nats::Message) -> PutSecretResponse {
    let refuse = |e: String| PutSecretResponse { revision: 0, error: Some(e) };
    let (plain, _) = match open_request(b, msg) {
        Ok(x) => x,
        Err(e) => return refuse(e.to_string()),
    };
    let Ok(req) = serde_json::from_slice::<PutSecretRequest>(&plain) else {
        return refuse("the request is not a PutSecretRequest".into());
    };
    if !secrets::valid_key(&req.key) {
        return refuse(format!("`{}` cannot name a secret", req.key));
    }
    let value = match (req.string_secret, req.binary_secret) {
        (Some(s), _) => s.into_bytes(),
        (None, Some(v)) => v,
        (None, None) => return refuse("the request carries no value".into()),
    };
    if value.len() > secrets::MAX_VALUE_BYTES {
        return refuse(format!("the value is over {} bytes", secrets::MAX_VALUE_BYTES));
    }
    let sealed = match secrets::seal_at_rest(&value, &b.key) {
        Ok(s) => s,
        Err(e) => return refuse(e.to_string()),
    };
    match kv.put(&req.key, sealed.into()).await {
        Ok(revision) => {
            tracing::info!(key = req.key, revision, "secret stored");
            PutSecretResponse { revision, error: None }
        }
        Err(e) => refuse(format!("cannot store `{}`: {e}", req.key)),
    }
}

async fn list(kv: &async_nats::jetstream::kv::Store) -> ListSecretsResponse {
    let mut keys = match kv.keys().await {
        Ok(k) => k,
        Err(e) => return ListSecretsResponse { secrets: Vec::new(), error: Some(e.to_string()) },
    };
    let mut out = Vec::new();
    while let Some(k) = keys.next().await {
        let Ok(k) = k else { continue };
        if out.len() >= MAX_LISTED {
            break;
        }
        if let Ok(Some(e)) = kv.entry(k.clone()).await {
            out.push(SecretInfo { name: k, version: e.revision.to_string() });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    ListSecretsResponse { secrets: out, error: None }
}

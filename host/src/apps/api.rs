//! The app API server: `wadm.api.{lattice}.model.*` ([`AppOp`]), answered by one host of a
//! queue group from the apps bucket. Replies use the control envelope `{success, message,
//! response}`; every failure names what was wrong and what to do.

use std::collections::BTreeSet;

use async_nats::jetstream::kv;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use trellis_lattice::app::*;
use trellis_lattice::ctl::CtlResponse;
use trellis_lattice::manifest::Manifest;
use trellis_lattice::subject::AppOp;

use super::{Context, now_ms};

/// A failure reply's message.
type Refusal = String;

/// Serves the app API until the subscription ends; one task per request.
pub(super) async fn serve(cx: Context, store: kv::Store, mut sub: async_nats::Subscriber) {
    while let Some(msg) = sub.next().await {
        let (cx, store) = (cx.clone(), store.clone());
        tokio::spawn(async move {
            let Some(reply) = msg.reply.clone() else { return };
            let answer = match AppOp::parse(&cx.lattice, &msg.subject) {
                Ok(op) => handle(&store, &op, &msg.payload).await,
                Err(e) => Err(e.to_string()),
            };
            let body = match answer {
                Ok(v) => serde_json::to_vec(&CtlResponse::ok(v)),
                Err(e) => serde_json::to_vec(&CtlResponse::<()>::error(e)),
            };
            let body = match body {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "cannot encode an app API reply");
                    br#"{"success":false,"message":"cannot encode the reply"}"#.to_vec()
                }
            };
            if let Err(e) = cx.nats.publish(reply, body.into()).await {
                tracing::warn!(subject = %msg.subject, error = %e, "cannot send an app API reply");
            }
        });
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value, Refusal> {
    serde_json::to_value(v).map_err(|e| format!("cannot encode the reply: {e}"))
}

fn encode<T: Serialize>(key: &str, v: &T) -> Result<bytes::Bytes, Refusal> {
    serde_json::to_vec(v).map(Into::into).map_err(|e| format!("cannot encode `{key}`: {e}"))
}

fn parse_body<T: DeserializeOwned + Default>(op: &AppOp, payload: &[u8]) -> Result<T, Refusal> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(payload).map_err(|e| format!("the {} request body is malformed: {e}", op.name()))
}

/// Every stored version of `app` with its KV revision, oldest first.
async fn versions(store: &kv::Store, app: &str) -> Result<Vec<(u64, StoredVersion)>, Refusal> {
    let prefix = versions_prefix(app);
    let mut out = Vec::new();
    let mut keys = store.keys().await.map_err(|e| format!("cannot list the apps bucket: {e}"))?;
    while let Some(key) = keys.next().await {
        let Ok(key) = key else { continue };
        if !key.starts_with(&prefix) {
            continue;
        }
        if let Ok(Some(entry)) = store.entry(&key).await
            && entry.operation == kv::Operation::Put
            && let Ok(v) = serde_json::from_slice::<StoredVersion>(&entry.value)
        {
            out.push((entry.revision, v));
        }
    }
    out.sort_by_key(|(rev, _)| *rev);
    Ok(out)
}

async fn get_json<T: DeserializeOwned>(store: &kv::Store, key: &str) -> Result<Option<T>, Refusal> {
    match store.entry(key).await {
        Ok(Some(e)) if e.operation == kv::Operation::Put => Ok(serde_json::from_slice(&e.value).ok()),
        Ok(_) => Ok(None),
        Err(e) => Err(format!("cannot read `{key}`: {e}")),
    }
}

async fn put_json<T: Serialize>(store: &kv::Store, key: &str, value: &T) -> Result<(), Refusal> {
    store.put(key, encode(key, value)?).await.map(|_| ()).map_err(|e| format!("cannot write `{key}`: {e}"))
}

/// Writes a status the reconciler will overwrite soon; a failure is logged, not refused (the
/// deployment record, written first, is what counts).
async fn put_interim_status(store: &kv::Store, app: &str, d: &Deployment, state: AppState, message: &str) {
    let status =
        AppStatus { name: app.into(), version: d.active.then(|| d.version.clone()), state, message: message.into(), details: vec![], updated_ms: now_ms() };
    if let Err(e) = put_json(store, &status_key(app), &status).await {
        tracing::warn!(app, error = e, "cannot record the app's interim status");
    }
}

async fn deployment(store: &kv::Store, app: &str) -> Result<Option<Deployment>, Refusal> {
    get_json::<Deployment>(store, &deployment_key(app)).await
}

/// The version of `app` named, or the latest.
async fn pick(store: &kv::Store, app: &str, version: Option<&str>) -> Result<StoredVersion, Refusal> {
    let all: Vec<StoredVersion> = versions(store, app).await?.into_iter().map(|(_, v)| v).collect();
    if all.is_empty() {
        return Err(format!("no app `{app}`; store it with `wash app deploy FILE`"));
    }
    let found = match version {
        None => all.into_iter().next_back(),
        Some(v) => all.into_iter().find(|s| s.version == v),
    };
    found.ok_or_else(|| {
        let v = version.unwrap_or_default();
        format!("app `{app}` has no version `{v}`; `wash app history {app}` lists them")
    })
}

async fn handle(store: &kv::Store, op: &AppOp, payload: &[u8]) -> Result<serde_json::Value, Refusal> {
    match op {
        AppOp::Put => put(store, payload).await,
        AppOp::Get(n) => {
            let req: VersionRequest = parse_body(op, payload)?;
            let v = pick(store, n, req.version.as_deref()).await?;
            let deployed = deployment(store, n).await?.is_some_and(|d| d.active && d.version == v.version);
            to_json(&GetResponse { name: n.clone(), version: v.version, manifest: v.manifest, deployed })
        }
        AppOp::Versions(n) => {
            let dep = deployment(store, n).await?.filter(|d| d.active);
            let all = versions(store, n).await?;
            if all.is_empty() {
                return Err(format!("no app `{n}`"));
            }
            let out: Vec<VersionInfo> = all
                .into_iter()
                .map(|(_, v)| VersionInfo { deployed: dep.as_ref().is_some_and(|d| d.version == v.version), version: v.version, created_ms: v.created_ms })
                .collect();
            to_json(&out)
        }
        AppOp::List => list(store).await,
        AppOp::Deploy(n) => {
            let req: VersionRequest = parse_body(op, payload)?;
            let v = pick(store, n, req.version.as_deref()).await?;
            // A new version of a deployed app keeps the time it was first deployed.
            let since_ms = match deployment(store, n).await? {
                Some(d) if d.active => d.since_ms,
                _ => now_ms(),
            };
            let d = Deployment { version: v.version, manifest: v.manifest, active: true, since_ms };
            put_json(store, &deployment_key(n), &d).await?;
            put_interim_status(store, n, &d, AppState::Reconciling, "deployed; waiting for the reconciler").await;
            to_json(&d)
        }
        AppOp::Undeploy(n) => match deployment(store, n).await? {
            Some(d) if d.active => {
                let d = Deployment { active: false, ..d };
                put_json(store, &deployment_key(n), &d).await?;
                put_interim_status(store, n, &d, AppState::Undeploying, "undeployed; waiting for the reconciler").await;
                Ok(serde_json::Value::Null)
            }
            _ => Err(format!("app `{n}` is not deployed")),
        },
        AppOp::Del(n) => {
            let req: VersionRequest = parse_body(op, payload)?;
            delete(store, n, req.version.as_deref()).await
        }
        AppOp::Status(n) => {
            let stored = get_json::<AppStatus>(store, &status_key(n)).await?;
            if versions(store, n).await?.is_empty() && stored.as_ref().is_none_or(|s| s.state == AppState::Undeployed) {
                // Deleted (and cleaned up), or never stored.
                return Err(format!("no app `{n}`"));
            }
            match stored {
                Some(s) => to_json(&s),
                None => to_json(&AppStatus {
                    name: n.clone(),
                    version: None,
                    state: AppState::Undeployed,
                    message: "never deployed".into(),
                    details: vec![],
                    updated_ms: now_ms(),
                }),
            }
        }
    }
}

/// `model.put`: stores the manifest as a new version; the same version with the same text is a
/// no-op, with another text a refusal.
async fn put(store: &kv::Store, payload: &[u8]) -> Result<serde_json::Value, Refusal> {
    let text = std::str::from_utf8(payload).map_err(|_| "the manifest is not UTF-8 text".to_string())?;
    let m = Manifest::parse(text).map_err(|errors| {
        let lines: Vec<String> = errors
            .errors()
            .iter()
            .map(|e| match e.line {
                Some(l) => format!("line {l}: {e}"),
                None => e.to_string(),
            })
            .collect();
        format!("the manifest has {} mistake{}:\n{}", lines.len(), if lines.len() == 1 { "" } else { "s" }, lines.join("\n"))
    })?;
    let created_ms = now_ms();
    let version = m.version().map(str::to_string).unwrap_or_else(|| format!("v{created_ms}"));
    let key = version_key(m.name(), &version);
    let stored = StoredVersion { version: version.clone(), manifest: text.into(), created_ms };
    let created = match store.create(&key, encode(&key, &stored)?).await {
        Ok(_) => true,
        Err(_) => match get_json::<StoredVersion>(store, &key).await? {
            Some(old) if old.manifest == text => false,
            Some(_) => {
                return Err(format!(
                    "version `{version}` of app `{}` is already stored with a different manifest; change metadata.annotations.version",
                    m.name()
                ));
            }
            None => return Err(format!("cannot store version `{version}` of app `{}`", m.name())),
        },
    };
    let total_versions = versions(store, m.name()).await?.len();
    to_json(&PutResponse { name: m.name().into(), version, created, total_versions })
}

/// `model.list`: every app with a stored version or an active deployment.
async fn list(store: &kv::Store) -> Result<serde_json::Value, Refusal> {
    let mut names = BTreeSet::new();
    let mut keys = store.keys().await.map_err(|e| format!("cannot list the apps bucket: {e}"))?;
    while let Some(key) = keys.next().await {
        if let Ok(key) = key
            && let Some((n, _)) = parse_key(&key)
        {
            names.insert(n.to_string());
        }
    }
    let mut out = Vec::new();
    for n in names {
        let all = versions(store, &n).await?;
        let latest = all.last().map(|(_, v)| v);
        let dep = deployment(store, &n).await?;
        if latest.is_none() && !dep.as_ref().is_some_and(|d| d.active) {
            continue;
        }
        let status = get_json::<AppStatus>(store, &status_key(&n)).await?;
        out.push(AppSummary {
            name: n.clone(),
            latest_version: latest.map(|v| v.version.clone()),
            deployed_version: dep.filter(|d| d.active).map(|d| d.version),
            description: latest.and_then(|v| Manifest::parse(&v.manifest).ok()).and_then(|m| m.description().map(str::to_string)),
            status,
        });
    }
    to_json(&out)
}

/// `model.del`: one version (not the deployed one), or every version (undeploying the app).
async fn delete(store: &kv::Store, n: &str, version: Option<&str>) -> Result<serde_json::Value, Refusal> {
    let all = versions(store, n).await?;
    if all.is_empty() {
        return Err(format!("no app `{n}`"));
    }
    let dep = deployment(store, n).await?.filter(|d| d.active);
    match version {
        Some(v) => {
            if !all.iter().any(|(_, s)| s.version == v) {
                return Err(format!("app `{n}` has no version `{v}`"));
            }
            if dep.as_ref().is_some_and(|d| d.version == v) {
                return Err(format!("version `{v}` of app `{n}` is deployed; undeploy it first (`wash app undeploy {n}`)"));
            }
            store.purge(version_key(n, v)).await.map_err(|e| format!("cannot delete version `{v}`: {e}"))?;
        }
        None => {
            if let Some(d) = dep {
                put_json(store, &deployment_key(n), &Deployment { active: false, ..d }).await?;
            }
            for (_, s) in all {
                store.purge(version_key(n, &s.version)).await.map_err(|e| format!("cannot delete version `{}`: {e}", s.version))?;
            }
        }
    }
    Ok(serde_json::Value::Null)
}

//! The app API server: `wadm.api.{lattice}.model.*` ([`AppOp`]), answered by one host of a
//! queue group from the apps bucket. Requests and replies are wadm 0.21's JSON
//! (`trellis_lattice::app`'s mirrored types), bare, without the control envelope; a failure is
//! the operation's own reply with `result: "error"` (or `notfound`, `noop`) and a message that
//! names what was wrong and what to do.

use std::collections::BTreeSet;

use async_nats::jetstream::kv;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use trellis_lattice::app::*;
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
                // Every wadm reply type decodes this (wadm answers what it cannot route the same way).
                Err(e) => Ok(serde_json::json!({"result": "error", "message": e.to_string()})),
            };
            let body = match answer.and_then(|v| serde_json::to_vec(&v).map_err(|e| e.to_string())) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "cannot encode an app API reply");
                    br#"{"result":"error","message":"cannot encode the reply"}"#.to_vec()
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

/// The version of `app` named, or the latest; a failure says whether the app exists.
async fn pick(store: &kv::Store, app: &str, version: Option<&str>) -> Result<StoredVersion, (bool, Refusal)> {
    let all: Vec<StoredVersion> = versions(store, app).await.map_err(|e| (true, e))?.into_iter().map(|(_, v)| v).collect();
    if all.is_empty() {
        return Err((false, format!("no app `{app}`; store it with `wash app deploy FILE`")));
    }
    let found = match version {
        None => all.into_iter().next_back(),
        Some(v) => all.into_iter().find(|s| s.version == v),
    };
    found.ok_or_else(|| {
        let v = version.unwrap_or_default();
        (true, format!("app `{app}` has no version `{v}`; `wash app history {app}` lists them"))
    })
}

/// Answers one operation: always a reply of the operation's wadm type (`Err` only when a reply
/// cannot be encoded).
async fn handle(store: &kv::Store, op: &AppOp, payload: &[u8]) -> Result<serde_json::Value, Refusal> {
    match op {
        AppOp::Put => to_json(&put(store, payload).await.unwrap_or_else(|message| PutModelResponse {
            result: PutResult::Error,
            total_versions: 0,
            current_version: String::new(),
            message,
            name: String::new(),
        })),
        AppOp::Get(n) => to_json(&get(store, op, n, payload).await.unwrap_or_else(|(result, message)| GetModelResponse { result, message, manifest: None })),
        AppOp::Versions(n) => {
            let reply = match versions_of(store, n).await {
                Ok(versions) => VersionResponse { result: GetResult::Success, message: format!("versions of app `{n}`"), versions },
                Err((result, message)) => VersionResponse { result, message, versions: vec![] },
            };
            to_json(&reply)
        }
        AppOp::List => match list(store).await {
            Ok(l) => to_json(&l),
            Err(message) => Ok(serde_json::json!({"result": "error", "message": message})),
        },
        AppOp::Deploy(n) => to_json(&deploy(store, op, n, payload).await.unwrap_or_else(|(result, message)| DeployModelResponse {
            result,
            message,
            name: n.clone(),
            version: None,
        })),
        AppOp::Undeploy(n) => {
            to_json(&undeploy(store, n).await.unwrap_or_else(|(result, message)| DeployModelResponse { result, message, name: n.clone(), version: None }))
        }
        AppOp::Del(n) => {
            let reply = match parse_body::<VersionRequest>(op, payload) {
                Ok(req) => delete(store, n, req.version.as_deref()).await,
                Err(message) => DeleteModelResponse { result: DeleteResult::Error, message, undeploy: false },
            };
            to_json(&reply)
        }
        AppOp::Status(n) => {
            let reply = match status(store, n).await {
                Ok(s) => StatusResponse { result: StatusResult::Ok, message: format!("status of app `{n}`"), status: Some(s.to_wire()) },
                Err((result, message)) => StatusResponse { result, message, status: None },
            };
            to_json(&reply)
        }
    }
}

/// A failed lookup: not found, or an error, with its message.
type Miss<R> = (R, String);

fn storage<R>(error: R) -> impl FnOnce(Refusal) -> Miss<R> {
    move |m| (error, m)
}

async fn get(store: &kv::Store, op: &AppOp, n: &str, payload: &[u8]) -> Result<GetModelResponse, Miss<GetResult>> {
    let req: VersionRequest = parse_body(op, payload).map_err(storage(GetResult::Error))?;
    let v = pick(store, n, req.version.as_deref()).await.map_err(|(found, m)| (if found { GetResult::Error } else { GetResult::NotFound }, m))?;
    // The stored text parsed when it was put; its JSON form is the manifest wadm carries.
    let manifest = Manifest::parse(&v.manifest)
        .map_err(|e| (GetResult::Error, format!("the stored manifest of app `{n}` {} is invalid: {e}", v.version)))
        .and_then(|m| serde_json::to_value(&m).map_err(|e| (GetResult::Error, format!("cannot encode the manifest: {e}"))))?;
    Ok(GetModelResponse { result: GetResult::Success, message: format!("app `{n}` {}", v.version), manifest: Some(manifest) })
}

async fn versions_of(store: &kv::Store, n: &str) -> Result<Vec<VersionInfo>, Miss<GetResult>> {
    let dep = deployment(store, n).await.map_err(storage(GetResult::Error))?.filter(|d| d.active);
    let all = versions(store, n).await.map_err(storage(GetResult::Error))?;
    if all.is_empty() {
        return Err((GetResult::NotFound, format!("no app `{n}`")));
    }
    Ok(all.into_iter().map(|(_, v)| VersionInfo { deployed: dep.as_ref().is_some_and(|d| d.version == v.version), version: v.version }).collect())
}

async fn deploy(store: &kv::Store, op: &AppOp, n: &str, payload: &[u8]) -> Result<DeployModelResponse, Miss<DeployResult>> {
    let req: VersionRequest = parse_body(op, payload).map_err(storage(DeployResult::Error))?;
    let version = req.version.as_deref().filter(|v| *v != LATEST_VERSION);
    let v = pick(store, n, version).await.map_err(|(found, m)| (if found { DeployResult::Error } else { DeployResult::NotFound }, m))?;
    // A new version of a deployed app keeps the time it was first deployed.
    let since_ms = match deployment(store, n).await.map_err(storage(DeployResult::Error))? {
        Some(d) if d.active => d.since_ms,
        _ => now_ms(),
    };
    let d = Deployment { version: v.version, manifest: v.manifest, active: true, since_ms };
    put_json(store, &deployment_key(n), &d).await.map_err(storage(DeployResult::Error))?;
    put_interim_status(store, n, &d, AppState::Reconciling, "deployed; waiting for the reconciler").await;
    Ok(DeployModelResponse {
        result: DeployResult::Acknowledged,
        message: format!("app `{n}` {} deployed; the reconciler puts it in place", d.version),
        name: n.into(),
        version: Some(d.version),
    })
}

async fn undeploy(store: &kv::Store, n: &str) -> Result<DeployModelResponse, Miss<DeployResult>> {
    match deployment(store, n).await.map_err(storage(DeployResult::Error))? {
        Some(d) if d.active => {
            let d = Deployment { active: false, ..d };
            put_json(store, &deployment_key(n), &d).await.map_err(storage(DeployResult::Error))?;
            put_interim_status(store, n, &d, AppState::Undeploying, "undeployed; waiting for the reconciler").await;
            Ok(DeployModelResponse {
                result: DeployResult::Acknowledged,
                message: format!("app `{n}` undeployed; the reconciler removes what it created"),
                name: n.into(),
                version: None,
            })
        }
        Some(_) => Err((DeployResult::Error, format!("app `{n}` is not deployed"))),
        None if versions(store, n).await.map_err(storage(DeployResult::Error))?.is_empty() => Err((DeployResult::NotFound, format!("no app `{n}`"))),
        None => Err((DeployResult::Error, format!("app `{n}` is not deployed"))),
    }
}

async fn status(store: &kv::Store, n: &str) -> Result<AppStatus, Miss<StatusResult>> {
    let stored = get_json::<AppStatus>(store, &status_key(n)).await.map_err(storage(StatusResult::Error))?;
    if versions(store, n).await.map_err(storage(StatusResult::Error))?.is_empty() && stored.as_ref().is_none_or(|s| s.state == AppState::Undeployed) {
        // Deleted (and cleaned up), or never stored.
        return Err((StatusResult::NotFound, format!("no app `{n}`")));
    }
    Ok(stored.unwrap_or_else(|| AppStatus {
        name: n.into(),
        version: None,
        state: AppState::Undeployed,
        message: "never deployed".into(),
        details: vec![],
        updated_ms: now_ms(),
    }))
}

/// `model.put`: stores the manifest as a new version; the same version with the same text is a
/// no-op, with another text a refusal.
async fn put(store: &kv::Store, payload: &[u8]) -> Result<PutModelResponse, Refusal> {
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
    let (result, message) = match (created, total_versions) {
        (false, _) => (PutResult::NewVersion, format!("version `{version}` of app `{}` is already stored with this manifest; nothing changed", m.name())),
        (true, 1) => (PutResult::Created, format!("stored app `{}` {version}", m.name())),
        (true, _) => (PutResult::NewVersion, format!("stored app `{}` {version}", m.name())),
    };
    Ok(PutModelResponse { result, total_versions, current_version: version, message, name: m.name().into() })
}

/// `model.list`: every app with a stored version or an active deployment.
async fn list(store: &kv::Store) -> Result<Vec<ModelSummary>, Refusal> {
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
        let detailed_status = status
            .map(|s| s.to_wire())
            .unwrap_or_else(|| Status { info: StatusInfo { status_type: StatusType::Undeployed, message: "never deployed".into() }, ..Status::default() });
        let dep = dep.filter(|d| d.active);
        out.push(ModelSummary {
            name: n.clone(),
            version: latest.map(|v| v.version.clone()).or_else(|| dep.as_ref().map(|d| d.version.clone())).unwrap_or_default(),
            description: latest.and_then(|v| Manifest::parse(&v.manifest).ok()).and_then(|m| m.description().map(str::to_string)),
            deployed_version: dep.map(|d| d.version),
            status: detailed_status.state(),
            status_message: Some(detailed_status.message().to_string()),
            detailed_status,
        });
    }
    Ok(out)
}

/// `model.del`: one version (not the deployed one), or every version (undeploying the app).
async fn delete(store: &kv::Store, n: &str, version: Option<&str>) -> DeleteModelResponse {
    let refused = |result, message| DeleteModelResponse { result, message, undeploy: false };
    let all = match versions(store, n).await {
        Ok(all) => all,
        Err(e) => return refused(DeleteResult::Error, e),
    };
    if all.is_empty() {
        return refused(DeleteResult::Noop, format!("no app `{n}`"));
    }
    let dep = match deployment(store, n).await {
        Ok(d) => d.filter(|d| d.active),
        Err(e) => return refused(DeleteResult::Error, e),
    };
    match version {
        Some(v) => {
            if !all.iter().any(|(_, s)| s.version == v) {
                return refused(DeleteResult::Noop, format!("app `{n}` has no version `{v}`"));
            }
            if dep.as_ref().is_some_and(|d| d.version == v) {
                return refused(DeleteResult::Error, format!("version `{v}` of app `{n}` is deployed; undeploy it first (`wash app undeploy {n}`)"));
            }
            if let Err(e) = store.purge(version_key(n, v)).await {
                return refused(DeleteResult::Error, format!("cannot delete version `{v}`: {e}"));
            }
            DeleteModelResponse { result: DeleteResult::Deleted, message: format!("deleted version `{v}` of app `{n}`"), undeploy: false }
        }
        None => {
            let undeploy = dep.is_some();
            if let Some(d) = dep
                && let Err(e) = put_json(store, &deployment_key(n), &Deployment { active: false, ..d }).await
            {
                return refused(DeleteResult::Error, e);
            }
            for (_, s) in all {
                if let Err(e) = store.purge(version_key(n, &s.version)).await {
                    return refused(DeleteResult::Error, format!("cannot delete version `{}`: {e}", s.version));
                }
            }
            DeleteModelResponse { result: DeleteResult::Deleted, message: format!("deleted every version of app `{n}`"), undeploy }
        }
    }
}

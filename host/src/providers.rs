//! Providers a host runs, supervised: `file://` executables (cleared environment, host data on
//! stdin) or `builtin://` providers (the same library, run in-process on the host's connection
//! and router through the provider SDK). Each gets periodic health checks (`health_check_*`
//! events); one that exits is restarted with exponential backoff and, reading the lattice state
//! afresh, gets its links and config again; a stop asks it to shut down, then kills it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, oneshot};
use trellis_lattice::ctl::{ProviderDescription, StringMap};
use trellis_lattice::event::{HealthCheckFailed, HealthCheckPassed, HealthCheckStatus, ProviderStarted, ProviderStopped};
use trellis_lattice::provider::{self, HealthReport, HostData};
use trellis_lattice::rpc::Router;
use trellis_lattice::state::StateView;
use trellis_provider_sdk::{Builtin, RunningBuiltin, start_builtin};

use crate::error::{HostError, Result};
use crate::events::Events;

/// How long a provider gets to stop after being asked, before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Restart backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A provider that ran this long before exiting restarts with the minimum backoff again.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// What a provider reference resolves to.
#[derive(Debug, Clone)]
pub enum Source {
    /// An executable.
    Process(PathBuf),
    /// A provider library linked into this host.
    Builtin(Builtin),
}

/// Resolves a provider reference, or says why it cannot run here.
pub fn resolve_ref(reference: &str, allow_file_load: bool, builtins: &[Builtin]) -> Result<Source> {
    if let Some(name) = reference.strip_prefix("builtin://") {
        return builtins.iter().find(|b| b.name == name).map(|b| Source::Builtin(*b)).ok_or_else(|| {
            let names: Vec<_> = builtins.iter().map(|b| b.name).collect();
            HostError::Provider(format!(
                "no built-in provider named `{name}` on this host; built-ins available: {}",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            ))
        });
    }
    let Some(path) = reference.strip_prefix("file://") else {
        return Err(HostError::Provider(format!("provider reference `{reference}` is not supported; use file:///path/to/executable or builtin://NAME")));
    };
    if !allow_file_load {
        return Err(HostError::Provider(format!("`{reference}`: loading from files is disabled on this host (--allow-file-load)")));
    }
    let path = PathBuf::from(path);
    let meta = std::fs::metadata(&path).map_err(|e| HostError::Provider(format!("cannot read provider `{}`: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(HostError::Provider(format!("provider `{}` is not an executable file; chmod +x it", path.display())));
        }
    }
    Ok(Source::Process(path))
}

/// Everything needed to (re)start one provider.
pub struct Launch {
    /// What to run.
    pub source: Source,
    /// The reference it came from.
    pub reference: String,
    /// Annotations from the start request.
    pub annotations: StringMap,
    /// Host data; `instance_id` is set afresh for every run.
    pub host_data: HostData,
    /// For events.
    pub events: Events,
    /// The host's connection, router and state (built-ins share them).
    pub nats: async_nats::Client,
    /// See [`Launch::nats`].
    pub router: Router,
    /// See [`Launch::nats`].
    pub state: StateView,
    /// How often to check health.
    pub health_interval: Duration,
}

/// One run of a provider.
enum Instance {
    Process(Box<Process>),
    Builtin(RunningBuiltin),
}

/// A provider process, and how to reach it on the lattice.
struct Process {
    child: tokio::process::Child,
    nats: async_nats::Client,
    lattice: String,
    id: String,
    instance_id: String,
}

impl Instance {
    async fn spawn(launch: &Launch, host_data: &HostData) -> Result<Self> {
        match &launch.source {
            Source::Builtin(b) => Ok(Instance::Builtin(start_builtin(b, host_data.clone(), launch.nats.clone(), launch.router.clone(), launch.state.clone()))),
            Source::Process(path) => {
                let line = host_data.encode().map_err(|e| HostError::Provider(e.to_string()))?;
                let mut child = tokio::process::Command::new(path)
                    .env_clear()
                    .envs(std::env::vars().filter(|(k, _)| k == "RUST_LOG" || k.starts_with("OTEL_")))
                    .stdin(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| HostError::Provider(format!("cannot start provider `{}`: {e}", path.display())))?;
                if let Some(mut stdin) = child.stdin.take() {
                    // A provider that exits at once closes stdin; its exit is reported by wait().
                    let _ = stdin.write_all(line.as_bytes()).await;
                }
                Ok(Instance::Process(Box::new(Process {
                    child,
                    nats: launch.nats.clone(),
                    lattice: host_data.lattice.clone(),
                    id: host_data.provider_key.clone(),
                    instance_id: host_data.instance_id.clone(),
                })))
            }
        }
    }

    /// Resolves when the instance ends, with why.
    async fn wait(&mut self) -> String {
        match self {
            Instance::Process(p) => match p.child.wait().await {
                Ok(s) => format!("exited ({s})"),
                Err(e) => format!("lost ({e})"),
            },
            Instance::Builtin(b) => match b.wait().await {
                Ok(()) => "returned".into(),
                Err(e) => format!("failed: {e}"),
            },
        }
    }

    async fn health(&self) -> HealthReport {
        match self {
            Instance::Builtin(b) => b.health(),
            Instance::Process(p) => {
                let subject = provider::health_subject(&p.lattice, &p.id, &p.instance_id);
                match tokio::time::timeout(Duration::from_secs(5), p.nats.request(subject, bytes::Bytes::new())).await {
                    Ok(Ok(msg)) => serde_json::from_slice(&msg.payload)
                        .unwrap_or(HealthReport { healthy: false, message: Some("the health reply is not {\"healthy\": bool}".into()) }),
                    Ok(Err(e)) => HealthReport { healthy: false, message: Some(format!("no health answer: {e}")) },
                    Err(_) => HealthReport { healthy: false, message: Some("no health answer within 5 s".into()) },
                }
            }
        }
    }

    /// Asks the instance to stop; kills it after the grace period.
    async fn shutdown(&mut self) {
        match self {
            Instance::Builtin(b) => {
                b.request_shutdown();
                if tokio::time::timeout(STOP_GRACE, b.wait()).await.is_err() {
                    b.abort();
                }
            }
            Instance::Process(p) => {
                let subject = provider::shutdown_subject(&p.lattice, &p.id, &p.instance_id);
                let _ = tokio::time::timeout(Duration::from_secs(1), p.nats.request(subject, bytes::Bytes::new())).await;
                if tokio::time::timeout(STOP_GRACE, p.child.wait()).await.is_err() {
                    let _ = p.child.kill().await;
                }
            }
        }
    }
}

struct Supervised {
    description: ProviderDescription,
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<()>,
}

/// The providers of one host.
#[derive(Default, Clone)]
pub struct Providers {
    table: Arc<Mutex<HashMap<String, Supervised>>>,
}

impl Providers {
    /// Whether `id` runs here.
    pub async fn contains(&self, id: &str) -> bool {
        self.table.lock().await.contains_key(id)
    }

    /// Inventory entries, sorted by id.
    pub async fn list(&self) -> Vec<ProviderDescription> {
        let mut v: Vec<_> = self.table.lock().await.values().map(|r| r.description.clone()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Starts the provider and supervises it until stopped. Fails only when the first run
    /// cannot be started at all; later exits are restarted.
    pub async fn start(&self, launch: Launch) -> Result<()> {
        let id = launch.host_data.provider_key.clone();
        let mut table = self.table.lock().await;
        if table.contains_key(&id) {
            return Err(HostError::Provider(format!("provider `{id}` already runs on this host")));
        }
        let mut host_data = launch.host_data.clone();
        host_data.instance_id = uuid::Uuid::new_v4().to_string();
        let first = Instance::spawn(&launch, &host_data).await?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let description =
            ProviderDescription { id: id.clone(), image_ref: Some(launch.reference.clone()), name: None, revision: 0, annotations: launch.annotations.clone() };
        table.insert(id.clone(), Supervised { description, stop: stop_tx, done: done_rx });
        let table = self.table.clone();
        tokio::spawn(async move {
            supervise(launch, first, host_data.instance_id, stop_rx).await;
            table.lock().await.remove(&id);
            let _ = done_tx.send(());
        });
        Ok(())
    }

    /// Stops provider `id` (graceful, then kill); false if it was not running.
    pub async fn stop(&self, id: &str) -> bool {
        let Some(s) = self.table.lock().await.remove(id) else { return false };
        let _ = s.stop.send(());
        let _ = s.done.await;
        true
    }

    /// Stops every provider.
    pub async fn stop_all(&self) {
        let ids: Vec<String> = self.table.lock().await.keys().cloned().collect();
        for id in ids {
            self.stop(&id).await;
        }
    }
}

async fn supervise(launch: Launch, first: Instance, first_instance_id: String, mut stop: oneshot::Receiver<()>) {
    let hd = &launch.host_data;
    let (host_id, id) = (hd.host_id.clone(), hd.provider_key.clone());
    let mut backoff = BACKOFF_MIN;
    let mut next = Some((first, first_instance_id));
    loop {
        let (mut instance, instance_id) = match next.take() {
            Some(n) => n,
            None => {
                let mut host_data = launch.host_data.clone();
                host_data.instance_id = uuid::Uuid::new_v4().to_string();
                match Instance::spawn(&launch, &host_data).await {
                    Ok(i) => (i, host_data.instance_id),
                    Err(e) => {
                        tracing::warn!(provider_id = id, error = %e, "provider restart failed; retrying");
                        tokio::select! {
                            _ = &mut stop => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
        };
        launch
            .events
            .publish(&ProviderStarted {
                host_id: host_id.clone(),
                image_ref: launch.reference.clone(),
                provider_id: id.clone(),
                annotations: launch.annotations.clone(),
                claims: None,
                instance_id,
            })
            .await;
        let started = Instant::now();
        let mut health = tokio::time::interval_at(tokio::time::Instant::now() + launch.health_interval, launch.health_interval);
        let mut last: Option<bool> = None;
        let reason = loop {
            tokio::select! {
                _ = &mut stop => {
                    instance.shutdown().await;
                    break None;
                }
                reason = instance.wait() => break Some(reason),
                _ = health.tick() => {
                    let report = instance.health().await;
                    let (h, p) = (host_id.clone(), id.clone());
                    match (last, report.healthy) {
                        (Some(a), b) if a == b => launch.events.publish(&HealthCheckStatus { host_id: h, provider_id: p }).await,
                        (_, true) => launch.events.publish(&HealthCheckPassed { host_id: h, provider_id: p }).await,
                        (_, false) => {
                            tracing::warn!(provider_id = id, message = ?report.message, "provider unhealthy");
                            launch.events.publish(&HealthCheckFailed { host_id: h, provider_id: p }).await
                        }
                    }
                    last = Some(report.healthy);
                }
            }
        };
        let stopped = |reason: String| ProviderStopped { host_id: host_id.clone(), provider_id: id.clone(), annotations: launch.annotations.clone(), reason };
        let Some(reason) = reason else {
            tracing::info!(provider_id = id, "provider stopped");
            launch.events.publish(&stopped("stop".into())).await;
            return;
        };
        tracing::warn!(provider_id = id, reason, ?backoff, "provider ended; restarting");
        launch.events.publish(&stopped(reason)).await;
        if started.elapsed() > STABLE_AFTER {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

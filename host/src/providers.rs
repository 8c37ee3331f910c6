//! Providers a host runs, supervised: `file://` executables (cleared environment, host data on
//! stdin) or `builtin://` providers (the same library, run in-process on the host's connection
//! and router through the provider SDK). Each gets periodic health checks (`health_check_*`
//! events); one that exits is restarted with exponential backoff and, reading the lattice state
//! afresh, gets its links and config again; a stop asks it to shut down, then kills it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
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
    /// Forgets the process (pid set, pid file) once it is dropped, after the child handle
    /// (which kills it if it still runs).
    _tracked: Option<Tracked>,
}

/// What a host records of each provider process it runs, in `{state_dir}/providers/{pid}.json`:
/// enough for the next host on that state directory to tell whether the host that started it
/// is gone and the process is still the one it started.
#[derive(Debug, Serialize, Deserialize)]
struct PidRecord {
    host_pid: u32,
    host_started: Option<u64>,
    host_id: String,
    pid: u32,
    started: Option<u64>,
    provider_id: String,
    executable: PathBuf,
}

/// The provider processes this host runs now, by pid (so a second signal can kill them at
/// once), and the folder of their pid files, when the host has a state directory.
#[derive(Default, Clone)]
struct Processes {
    pids: Arc<std::sync::Mutex<BTreeSet<u32>>>,
    dir: Option<PathBuf>,
}

impl Processes {
    /// Records process `pid`, started from `executable` as provider `provider_id` of `host_id`.
    fn track(&self, pid: u32, host_id: &str, provider_id: &str, executable: &Path) -> Tracked {
        self.pids.lock().unwrap_or_else(|p| p.into_inner()).insert(pid);
        let file = self.dir.as_ref().and_then(|dir| {
            let me = std::process::id();
            let record = PidRecord {
                host_pid: me,
                host_started: crate::process::start_time(me),
                host_id: host_id.into(),
                pid,
                started: crate::process::start_time(pid),
                provider_id: provider_id.into(),
                executable: executable.into(),
            };
            let file = dir.join(format!("{pid}.json"));
            let written = std::fs::create_dir_all(dir)
                .and_then(|()| serde_json::to_vec(&record).map_err(std::io::Error::other))
                .and_then(|bytes| std::fs::write(&file, bytes));
            match written {
                Ok(()) => Some(file),
                Err(e) => {
                    tracing::warn!(provider_id, file = %file.display(), error = %e, "cannot record the provider process; a host started after this one is killed will not stop it");
                    None
                }
            }
        });
        Tracked { pids: self.pids.clone(), pid, file }
    }

    /// SIGKILL to every provider process now.
    fn kill_all(&self) {
        let pids: Vec<u32> = self.pids.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
        for pid in pids {
            if let Err(e) = crate::process::signal(pid, "KILL") {
                tracing::warn!(pid, error = %e, "cannot kill a provider process");
            }
        }
    }
}

/// One tracked provider process; dropping it forgets the process.
struct Tracked {
    pids: Arc<std::sync::Mutex<BTreeSet<u32>>>,
    pid: u32,
    file: Option<PathBuf>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.pids.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.pid);
        if let Some(file) = &self.file {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Stops the provider processes that hosts using `state_dir` started and left running when they
/// were killed (`kill -9`, a crash): those whose host process is gone and which are still the
/// process recorded (same pid and start time). Returns how many were stopped.
pub async fn stop_orphans(state_dir: &Path) -> usize {
    let dir = state_dir.join(PID_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else { return 0 };
    let mut stopped = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        // Regular files only, and small: a FIFO or a device here is not ours to read.
        let small_file = entry.metadata().is_ok_and(|m| m.is_file() && m.len() <= MAX_PID_RECORD);
        let record = small_file.then(|| std::fs::read(&path).ok()).flatten().and_then(|b| serde_json::from_slice::<PidRecord>(&b).ok());
        let Some(r) = record else {
            tracing::debug!(file = %path.display(), "ignoring what is not a provider pid record");
            continue;
        };
        let host_alive = match r.host_started {
            Some(t) => crate::process::is_same(r.host_pid, t),
            None => crate::process::alive(r.host_pid),
        };
        if host_alive {
            continue;
        }
        let ours = match r.started {
            Some(t) => crate::process::is_same(r.pid, t),
            None => crate::process::alive(r.pid) && crate::process::looks_like(r.pid, &r.executable.to_string_lossy()),
        };
        if ours {
            match crate::process::terminate(r.pid, STOP_GRACE).await {
                Ok(true) => {
                    stopped += 1;
                    tracing::warn!(
                        pid = r.pid,
                        provider_id = r.provider_id,
                        host_id = r.host_id,
                        host_pid = r.host_pid,
                        "stopped a provider process that a host which is gone left running"
                    );
                }
                Ok(false) => tracing::warn!(pid = r.pid, provider_id = r.provider_id, "a provider process a host left running survived SIGKILL"),
                Err(e) => tracing::warn!(pid = r.pid, provider_id = r.provider_id, error = %e, "cannot stop a provider process a host left running"),
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    stopped
}

/// The folder of the state directory that holds provider pid records.
const PID_DIR: &str = "providers";
/// The largest pid record read.
const MAX_PID_RECORD: u64 = 4096;

impl Instance {
    async fn spawn(launch: &Launch, host_data: &HostData, processes: &Processes) -> Result<Self> {
        match &launch.source {
            Source::Builtin(b) => Ok(Instance::Builtin(start_builtin(b, host_data.clone(), launch.nats.clone(), launch.router.clone(), launch.state.clone()))),
            Source::Process(path) => {
                let line = host_data.encode().map_err(|e| HostError::Provider(e.to_string()))?;
                let mut child = tokio::process::Command::new(path)
                    .env_clear()
                    .envs(std::env::vars().filter(|(k, _)| k == "RUST_LOG" || k.starts_with("OTEL_")))
                    // The host's own trace settings, whatever turned them on, and its id as a resource attribute.
                    .envs(
                        trellis_lattice::telemetry::installed()
                            .map(|c| c.clone().with_resource("wasmcloud.host.id", &host_data.host_id).child_env())
                            .unwrap_or_default(),
                    )
                    .stdin(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| HostError::Provider(format!("cannot start provider `{}`: {e}", path.display())))?;
                let tracked = child.id().map(|pid| processes.track(pid, &host_data.host_id, &host_data.provider_key, path));
                if let Some(mut stdin) = child.stdin.take() {
                    // A provider that exits at once closes stdin; its exit is reported by wait().
                    let _ = stdin.write_all(line.as_bytes()).await;
                }
                Ok(Instance::Process(Box::new(Process {
                    _tracked: tracked,
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

    /// Asks the instance to stop (a process over NATS, or with SIGTERM when NATS is down);
    /// kills it once `grace` (at most [`STOP_GRACE`]) has passed.
    async fn shutdown(&mut self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace.min(STOP_GRACE);
        match self {
            Instance::Builtin(b) => {
                b.request_shutdown();
                if tokio::time::timeout_at(deadline, b.wait()).await.is_err() {
                    b.abort();
                }
            }
            Instance::Process(p) => {
                let asked = p.nats.connection_state() == async_nats::connection::State::Connected && {
                    let subject = provider::shutdown_subject(&p.lattice, &p.id, &p.instance_id);
                    let ask = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
                    matches!(tokio::time::timeout_at(ask, p.nats.request(subject, bytes::Bytes::new())).await, Ok(Ok(_)))
                };
                if !asked && let Some(pid) = p.child.id() {
                    let _ = crate::process::signal(pid, "TERM");
                }
                if tokio::time::timeout_at(deadline, p.child.wait()).await.is_err() {
                    let _ = p.child.kill().await;
                }
            }
        }
    }
}

struct Supervised {
    description: ProviderDescription,
    /// Carries the grace period the provider gets.
    stop: oneshot::Sender<Duration>,
    done: oneshot::Receiver<()>,
}

/// The providers of one host.
#[derive(Default, Clone)]
pub struct Providers {
    table: Arc<Mutex<HashMap<String, Supervised>>>,
    processes: Processes,
}

impl Providers {
    /// No providers yet; with `state_dir`, the processes started are recorded in it (see
    /// [`stop_orphans`]).
    pub fn new(state_dir: Option<&Path>) -> Self {
        Self { table: Arc::default(), processes: Processes { pids: Arc::default(), dir: state_dir.map(|d| d.join(PID_DIR)) } }
    }

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
        let first = Instance::spawn(&launch, &host_data, &self.processes).await?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let description =
            ProviderDescription { id: id.clone(), image_ref: Some(launch.reference.clone()), name: None, revision: 0, annotations: launch.annotations.clone() };
        table.insert(id.clone(), Supervised { description, stop: stop_tx, done: done_rx });
        let (table, processes) = (self.table.clone(), self.processes.clone());
        tokio::spawn(async move {
            supervise(launch, first, host_data.instance_id, stop_rx, processes).await;
            table.lock().await.remove(&id);
            let _ = done_tx.send(());
        });
        Ok(())
    }

    /// Stops provider `id` (graceful, then kill); false if it was not running.
    pub async fn stop(&self, id: &str) -> bool {
        self.stop_within(id, STOP_GRACE).await
    }

    async fn stop_within(&self, id: &str, grace: Duration) -> bool {
        let Some(s) = self.table.lock().await.remove(id) else { return false };
        let _ = s.stop.send(grace);
        let _ = s.done.await;
        true
    }

    /// Stops every provider at once, each asked to stop and killed once `grace` (at most
    /// 3 s) has passed.
    pub async fn stop_all(&self, grace: Duration) {
        let ids: Vec<String> = self.table.lock().await.keys().cloned().collect();
        futures::future::join_all(ids.iter().map(|id| self.stop_within(id, grace))).await;
    }

    /// Kills every provider process now (SIGKILL), without asking: for a host that must exit
    /// at once. Built-in providers end with the process.
    pub fn kill_all(&self) {
        self.processes.kill_all();
    }
}

async fn supervise(launch: Launch, first: Instance, first_instance_id: String, mut stop: oneshot::Receiver<Duration>, processes: Processes) {
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
                match Instance::spawn(&launch, &host_data, &processes).await {
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
                grace = &mut stop => {
                    instance.shutdown(grace.unwrap_or(STOP_GRACE)).await;
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

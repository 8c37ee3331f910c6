//! A host: identity, connection, runtime, registry, control server and heartbeat, tied
//! together in [`HostCtx`], whose parts each consumer gets through a narrow accessor: the
//! component and provider lifecycle ([`crate::lifecycle`]), the scheduling state
//! ([`crate::schedule`]), the lattice connection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use tokio::sync::{RwLock, watch};
use tokio::task::JoinHandle;
use trellis_lattice::ConnectOptions;
use trellis_lattice::ctl::{HEARTBEAT_BUDGET, Host as HostInfo, HostInventory, InventorySummary, Link, Schedule, StringMap};
use trellis_lattice::event::{HostHeartbeat, HostStarted, HostStopped};
use trellis_lattice::rpc::Router;

use crate::components::{self, Components};
use crate::error::{HostError, Result};
use crate::events::Events;
use crate::lifecycle::{self, Lifecycle};
use crate::registry::Registry;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::schedule::Scheduling;
use crate::stop::Budget;
use crate::{ctl, identity};

/// The software version hosts report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use crate::artifacts::MAX_COMPONENT_BYTES;

/// How a host is set up. `Debug` shows no seed (NATS user, secrets key).
#[derive(Clone)]
pub struct HostConfig {
    /// The lattice to join.
    pub lattice: String,
    /// How to reach NATS.
    pub nats: ConnectOptions,
    /// Labels besides the built-in `hostcore.*` ones.
    pub labels: BTreeMap<String, String>,
    /// How often to publish `host_heartbeat`.
    pub heartbeat_interval: Duration,
    /// How long a host may go unheard before this host's reconciler, when it leads, presumes
    /// it lost and places its replicas elsewhere. `None`: 3 heartbeat intervals.
    pub host_lost_after: Option<Duration>,
    /// Engine sizing and default limits.
    pub runtime: RuntimeConfig,
    /// Whether `file://` references may be loaded.
    pub allow_file_load: bool,
    /// How many callers may wait for a component's instance slot before it answers busy.
    pub max_queued_per_component: usize,
    /// Providers this host can run in-process as `builtin://NAME`.
    pub builtins: Vec<trellis_provider_sdk::Builtin>,
    /// How often providers are checked for health.
    pub provider_health_interval: Duration,
    /// Account keys (`A…`) whose signed components this host runs; empty allows any issuer.
    pub allowed_issuers: Vec<String>,
    /// Refuse components that carry no claims.
    pub require_signed: bool,
    /// The JetStream domain holding the lattice's state (registry, config, apps), when it is
    /// not the connected server's own: a host on a leaf node names the hub's domain.
    pub js_domain: Option<String>,
    /// How many copies of each lattice state bucket (links, config, apps, secrets) JetStream
    /// keeps when this host creates one, or scales an existing one up to (`--js-replicas`): 1
    /// on one nats-server, 3 on a three-node cluster. 1 to 5.
    pub js_replicas: usize,
    /// How long an orderly stop may take in all (`--shutdown-timeout-seconds`): draining
    /// components, stopping providers, `host_stopped`, the leader lease; what cannot reach NATS
    /// in time is skipped.
    pub shutdown_timeout: Duration,
    /// Where the host records the provider processes it starts, so that a host started later
    /// with the same directory stops those this one left if it is killed. `None`: not recorded.
    pub state_dir: Option<std::path::PathBuf>,
    /// The seed (`SX…`) of the built-in secrets backend's xkey; with one, this host serves the
    /// backend (`crate::secrets`) beside every other host given the same seed. `None`: it does not.
    pub secrets_xkey_seed: Option<String>,
    /// The name the backend answers under, and the backend secret references name by default.
    pub secrets_backend: String,
    /// How OCI registries are reached (wasmCloud's `--allowed-insecure`, `--allow-latest`, `--oci-*`).
    pub oci: crate::artifacts::OciSettings,
    /// Where pulled artifacts and compiled components are cached (`--cache-dir`); `None`: nothing is.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Where the admin endpoint (`/livez`, `/readyz`, `/metrics`) listens (`--http-admin`);
    /// `None`: it does not.
    pub http_admin: Option<std::net::SocketAddr>,
    /// OTLP export of the metrics (`--enable-observability`, `OTEL_*`); `None`: metrics are
    /// only read on the admin endpoint.
    pub metrics_export: Option<crate::metrics::Export>,
}

impl std::fmt::Debug for HostConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostConfig")
            .field("lattice", &self.lattice)
            .field("nats_url", &self.nats.url)
            .field("nats_seed", &self.nats.nkey_seed.as_ref().map(|_| "<redacted>"))
            .field("labels", &self.labels)
            .field("js_domain", &self.js_domain)
            .field("js_replicas", &self.js_replicas)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("allow_file_load", &self.allow_file_load)
            .field("require_signed", &self.require_signed)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("state_dir", &self.state_dir)
            .field("secrets_xkey_seed", &self.secrets_xkey_seed.as_ref().map(|_| "<redacted>"))
            .field("secrets_backend", &self.secrets_backend)
            .field("oci", &self.oci)
            .field("cache_dir", &self.cache_dir)
            .field("http_admin", &self.http_admin)
            .field("metrics_export", &self.metrics_export)
            .finish_non_exhaustive()
    }
}

/// How long a starting host waits for JetStream to answer "available" (see `Host::start`).
const JETSTREAM_START_WAIT: Duration = Duration::from_secs(10);

/// The longest the orderly stop waits to give up the leader lease.
const LEASE_RELEASE_CAP: Duration = Duration::from_secs(2);

/// The default of [`HostConfig::shutdown_timeout`].
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

impl HostConfig {
    /// Defaults for joining lattice `default` at `nats_url`.
    pub fn new(nats_url: &str) -> Self {
        Self {
            lattice: trellis_lattice::DEFAULT_LATTICE.into(),
            nats: ConnectOptions::new(nats_url),
            labels: BTreeMap::new(),
            heartbeat_interval: Duration::from_secs(10),
            host_lost_after: None,
            runtime: RuntimeConfig::default(),
            allow_file_load: true,
            max_queued_per_component: 1024,
            builtins: Vec::new(),
            provider_health_interval: Duration::from_secs(30),
            allowed_issuers: Vec::new(),
            require_signed: false,
            js_domain: None,
            js_replicas: trellis_lattice::state::DEFAULT_REPLICAS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            state_dir: None,
            secrets_xkey_seed: None,
            secrets_backend: trellis_lattice::secrets::DEFAULT_BACKEND.into(),
            oci: crate::artifacts::OciSettings::default(),
            cache_dir: None,
            http_admin: None,
            metrics_export: None,
        }
    }
}

/// Who a host is.
struct Identity {
    id: String,
    friendly_name: String,
    lattice: String,
    labels: RwLock<BTreeMap<String, String>>,
    started: Instant,
}

/// A host's connection to its lattice.
struct Connection {
    nats: async_nats::Client,
    /// JetStream in the lattice's domain.
    js: jetstream::Context,
    events: Events,
    registry: Registry,
    /// The data plane: remote and local calls.
    router: Router,
}

/// The host's own background tasks, and its stop.
struct Run {
    stopping: AtomicBool,
    stopped_tx: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// Shared state of a running host, handed to the control server and background tasks; each
/// reaches the part it uses through an accessor.
pub(crate) struct HostCtx {
    identity: Identity,
    config: HostConfig,
    conn: Connection,
    /// The runtime, the components and providers, what is served, and the changes to them.
    workloads: Lifecycle,
    /// Whether the host takes new placements (cordon, uncordon, drain).
    schedule: Scheduling,
    run: Run,
    /// The app API and reconciler, once started.
    apps: OnceLock<crate::apps::Apps>,
    /// Metrics, the readiness `/readyz` reports, and the admin endpoint.
    observed: Observed,
}

/// The host's metrics and admin endpoint.
struct Observed {
    metrics: Arc<crate::metrics::Metrics>,
    ready: Arc<crate::admin::Readiness>,
    admin: Option<(std::net::SocketAddr, AbortOnDrop)>,
}

/// Stops a task when dropped (a host whose start fails leaves no admin endpoint behind).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running Trellis host. Dropping it does not stop it; call [`Host::stop`].
#[derive(Clone)]
pub struct Host {
    ctx: Arc<HostCtx>,
}

impl Host {
    /// Connects to NATS, opens the registry, starts the control server and heartbeat, and
    /// publishes `host_started`. Returns once the host answers on the control plane.
    pub async fn start(config: HostConfig) -> Result<Self> {
        trellis_lattice::validate_id("lattice", &config.lattice)?;
        if let Some(dir) = &config.state_dir {
            let stopped = crate::providers::stop_orphans(dir).await;
            if stopped > 0 {
                tracing::warn!(stopped, state_dir = %dir.display(), "stopped provider processes an earlier host left running");
            }
        }
        let id = identity::new_host_id();
        let metrics = crate::metrics::Metrics::new(&id, &config.lattice, config.metrics_export.as_ref())?;
        let ready = Arc::new(crate::admin::Readiness::default());
        let admin = match config.http_admin {
            Some(addr) => {
                let (bound, task) = crate::admin::serve(addr, metrics.clone(), ready.clone()).await?;
                Some((bound, AbortOnDrop(task)))
            }
            None => None,
        };
        let mut nats_opts = config.nats.clone();
        nats_opts.name.get_or_insert_with(|| format!("trellis-host {id}"));
        let nats = trellis_lattice::connect(&nats_opts).await?;
        ready.nats(&nats);
        let js = trellis_lattice::state::jetstream(nats.clone(), config.js_domain.as_deref());
        // JetStream may not answer at once: a leaf server that has just started (`--nats-remote-url`)
        // reaches the hub's domain only once its leaf connection is up, and a server that has just
        // started elects its JetStream meta leader first. Retry "unavailable" for a few seconds.
        let opened = {
            let deadline = tokio::time::Instant::now() + JETSTREAM_START_WAIT;
            loop {
                match Registry::open(&js, &config.lattice, config.js_replicas).await {
                    Err(e) if tokio::time::Instant::now() < deadline && e.to_string().contains("JetStream unavailable") => {
                        tracing::debug!(error = %e, "JetStream not answering yet; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    other => break other,
                }
            }
        };
        let registry = opened.map_err(|e| match config.js_domain.as_deref() {
            Some(d) => HostError::Registry(format!(
                "{e}; JetStream domain `{d}` (--js-domain) did not answer: the hub's nats-server needs `jetstream {{ domain: {d} }}`, and this host's server must reach it as its leaf node or cluster peer"
            )),
            None => e,
        })?;
        ready.buckets_open();
        let router = Router::new(nats.clone(), &config.lattice).with_host_id(&id);
        router.set_observer(metrics.observer());
        router.start_spy(&id).await?;
        let secrets_key = match &config.secrets_xkey_seed {
            Some(seed) => Some(
                nkeys::XKey::from_seed(seed)
                    .map_err(|_| HostError::Invalid("--secrets-xkey-seed is not an xkey seed (`SX…`); make one with `wash keys gen curve`".into()))?,
            ),
            None => None,
        };
        let links = Arc::new(crate::c2c::LatticeLinks { router: router.clone(), registry: registry.clone(), nats: nats.clone() });
        let runtime_config = RuntimeConfig { compiled_cache: config.cache_dir.clone(), ..config.runtime.clone() };
        let runtime = Arc::new(Runtime::new(&runtime_config, links)?);
        let mut labels = identity::builtin_labels();
        for (k, v) in config.labels.iter().filter(|(k, _)| !identity::is_reserved_label(k)) {
            identity::check_label(k, v).map_err(HostError::Invalid)?;
        }
        labels.extend(config.labels.iter().filter(|(k, _)| !identity::is_reserved_label(k)).map(|(k, v)| (k.clone(), v.clone())));
        identity::check_labels(&labels).map_err(|e| HostError::Invalid(format!("{e} (the labels given with -l and WASMCLOUD_LABEL_*/TRELLIS_LABEL_*)")))?;
        let (stopped_tx, _) = watch::channel(false);
        let events = Events::new(nats.clone(), &config.lattice, &id);
        let workloads = Lifecycle::new(
            lifecycle::Conn {
                host_id: id.clone(),
                lattice: config.lattice.clone(),
                nats: nats.clone(),
                events: events.clone(),
                registry: registry.clone(),
                router: router.clone(),
            },
            lifecycle::Settings::of(&config),
            runtime,
        );
        let schedule = Scheduling::load(config.state_dir.as_deref(), events.clone());
        metrics.watch_host(workloads.components().clone(), nats.clone());
        let ctx = Arc::new(HostCtx {
            identity: Identity {
                id,
                friendly_name: identity::friendly_name(),
                lattice: config.lattice.clone(),
                labels: RwLock::new(labels.clone()),
                started: Instant::now(),
            },
            conn: Connection { nats, js, events, registry, router },
            workloads,
            schedule,
            run: Run { stopping: AtomicBool::new(false), stopped_tx, tasks: std::sync::Mutex::new(Vec::new()) },
            apps: OnceLock::new(),
            observed: Observed { metrics, ready, admin },
            config,
        });
        if let Some(key) = secrets_key {
            let backend = crate::secrets::start(crate::secrets::Backend {
                nats: ctx.conn.nats.clone(),
                js: ctx.conn.js.clone(),
                lattice: ctx.identity.lattice.clone(),
                name: ctx.config.secrets_backend.clone(),
                key,
                replicas: ctx.config.js_replicas,
            })
            .await?;
            ctx.run.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(backend);
        }
        let server = ctl::serve(ctx.clone()).await?;
        let heartbeat = tokio::spawn(heartbeat(ctx.clone()));
        ctx.run.tasks.lock().unwrap_or_else(|p| p.into_inner()).extend([server, heartbeat]);
        let (apps, tasks) = crate::apps::start(crate::apps::Context {
            lattice: ctx.identity.lattice.clone(),
            host_id: ctx.identity.id.clone(),
            nats: ctx.conn.nats.clone(),
            js: ctx.conn.js.clone(),
            host_lost_after: ctx.config.host_lost_after.unwrap_or(ctx.config.heartbeat_interval * crate::apps::MISSED_HEARTBEATS),
            js_replicas: ctx.config.js_replicas,
            metrics: ctx.observed.metrics.clone(),
        })
        .await?;
        // The API server and the reconciler loop; not the deployment watch, without which the
        // reconciler still runs each tick.
        ctx.observed.ready.reconciler([tasks.first(), tasks.last()].into_iter().flatten().map(|t| t.abort_handle()).collect());
        let _ = ctx.apps.set(apps);
        ctx.run.tasks.lock().unwrap_or_else(|p| p.into_inner()).extend(tasks);
        let me = &ctx.identity;
        ctx.conn.events.publish_and_flush(&HostStarted { friendly_name: me.friendly_name.clone(), labels, uptime_seconds: 0, version: VERSION.into() }).await;
        ctx.schedule.announce_restored().await;
        tracing::info!(host_id = me.id, friendly_name = me.friendly_name, lattice = me.lattice, "host started");
        Ok(Self { ctx })
    }

    /// The host's id (`N…`).
    pub fn id(&self) -> &str {
        &self.ctx.identity.id
    }

    /// The host's friendly name.
    pub fn friendly_name(&self) -> &str {
        &self.ctx.identity.friendly_name
    }

    /// The host's inventory.
    pub async fn inventory(&self) -> HostInventory {
        self.ctx.inventory().await
    }

    /// The links this host knows, from its own registry view.
    pub fn links(&self) -> Vec<Link> {
        self.ctx.conn.registry.known_links()
    }

    /// Named config this host knows, from its own registry view.
    pub fn config(&self, name: &str) -> Option<StringMap> {
        self.ctx.conn.registry.known_config(name)
    }

    /// Where the admin endpoint listens (the bound address, when `--http-admin` named port 0).
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.ctx.observed.admin.as_ref().map(|(a, _)| *a)
    }

    /// The host's metrics in the Prometheus text format (what `/metrics` serves).
    pub fn metrics_text(&self) -> String {
        self.ctx.observed.metrics.render()
    }

    /// The data-plane router of this host: calls through it reach components on this host
    /// directly and everything else over NATS.
    pub fn router(&self) -> &Router {
        &self.ctx.conn.router
    }

    /// Sends `req` to the `wasi:http/incoming-handler` of component `id` running on this host.
    pub async fn invoke_http(&self, id: &str, req: http::Request<Bytes>) -> Result<http::Response<Bytes>> {
        let workloads = &self.ctx.workloads;
        let c = workloads.components().get(id).await.ok_or_else(|| HostError::NoSuchComponent(id.into()))?;
        components::invoke_http(workloads.runtime(), &c, req).await
    }

    /// How many invocations the running version of component `id` has started on this host.
    pub async fn invocations(&self, id: &str) -> u64 {
        match self.ctx.workloads.components().get(id).await {
            Some(c) => c.invocations.load(Ordering::Relaxed),
            None => 0,
        }
    }

    /// Stops in order, within `timeout` in all: no more control requests, in-flight work
    /// finishes, components and providers stop, `host_stopped` is published, the leader lease
    /// is given up. Steps that need NATS are skipped (and logged) when it is unreachable.
    /// Idempotent.
    pub async fn stop(&self, timeout: Duration) {
        self.ctx.clone().shutdown(timeout).await
    }

    /// Kills every provider process this host started, at once (SIGKILL): for a process that
    /// must exit now, e.g. on a second SIGINT or SIGTERM.
    pub fn kill_providers(&self) {
        self.ctx.workloads.kill_providers();
    }

    /// Resolves once the host has stopped (through [`Host::stop`] or a `host.stop` request).
    pub async fn stopped(&self) {
        let mut rx = self.ctx.run.stopped_tx.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

async fn heartbeat(ctx: Arc<HostCtx>) {
    let mut tick = tokio::time::interval(ctx.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        ctx.conn.events.publish(&HostHeartbeat(heartbeat_of(ctx.inventory().await))).await;
    }
}

/// What a heartbeat carries: the whole inventory (as wasmCloud's) with its summary when it fits
/// in [`HEARTBEAT_BUDGET`], else the summary without the lists, so a heartbeat stays small
/// whatever the host runs.
fn heartbeat_of(mut inv: HostInventory) -> HostInventory {
    inv.summary = Some(InventorySummary::of(&inv.components, &inv.providers, true));
    let size = serde_json::to_vec(&inv).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > HEARTBEAT_BUDGET {
        inv.components = Vec::new();
        inv.providers = Vec::new();
        if let Some(s) = inv.summary.as_mut() {
            s.listed = false;
        }
    }
    inv
}

/// An entry of a paged inventory.
#[derive(Clone, serde::Serialize)]
#[serde(untagged)]
enum Item<'a> {
    Component(&'a trellis_lattice::ctl::ComponentDescription),
    Provider(&'a trellis_lattice::ctl::ProviderDescription),
}

fn human_uptime(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60) {
        (0, 0, 0, sec) => format!("{sec}s"),
        (0, 0, m, sec) => format!("{m}m {sec}s"),
        (0, h, m, sec) => format!("{h}h {m}m {sec}s"),
        (d, h, m, sec) => format!("{d}d {h}h {m}m {sec}s"),
    }
}

impl HostCtx {
    /// The host's id (`N…`).
    pub(crate) fn id(&self) -> &str {
        &self.identity.id
    }

    /// The lattice this host is in.
    pub(crate) fn lattice(&self) -> &str {
        &self.identity.lattice
    }

    /// How long an orderly stop may take unless a `host.stop` request says otherwise.
    pub(crate) fn shutdown_timeout(&self) -> Duration {
        self.config.shutdown_timeout
    }

    /// The host's labels now.
    pub(crate) async fn labels(&self) -> BTreeMap<String, String> {
        self.identity.labels.read().await.clone()
    }

    /// Sets label `key`; returns the labels after, or why not when they would outgrow the
    /// label caps ([`identity::check_labels`]).
    pub(crate) async fn put_label(&self, key: String, value: String) -> std::result::Result<BTreeMap<String, String>, String> {
        let mut labels = self.identity.labels.write().await;
        let mut after = labels.clone();
        after.insert(key, value);
        identity::check_labels(&after)?;
        *labels = after;
        Ok(labels.clone())
    }

    /// Removes label `key`; returns the labels after, `None` if there was no such label.
    pub(crate) async fn remove_label(&self, key: &str) -> Option<BTreeMap<String, String>> {
        let mut labels = self.identity.labels.write().await;
        labels.remove(key)?;
        Some(labels.clone())
    }

    /// The host's NATS connection.
    pub(crate) fn nats(&self) -> &async_nats::Client {
        &self.conn.nats
    }

    /// Events as this host.
    pub(crate) fn events(&self) -> &Events {
        &self.conn.events
    }

    /// Links, config and claims in the lattice's buckets.
    pub(crate) fn registry(&self) -> &Registry {
        &self.conn.registry
    }

    /// The components and providers this host runs, and the changes to them.
    pub(crate) fn workloads(&self) -> &Lifecycle {
        &self.workloads
    }

    /// The running components.
    pub(crate) fn components(&self) -> &Components {
        self.workloads.components()
    }

    /// Cordon, uncordon and drain.
    pub(crate) fn scheduling(&self) -> &Scheduling {
        &self.schedule
    }

    /// The host's scheduling state; a draining host with no managed replica left is drained.
    pub(crate) async fn schedule(&self) -> Schedule {
        self.schedule.current(self.components()).await
    }

    pub(crate) async fn info(&self) -> HostInfo {
        let me = &self.identity;
        let up = me.started.elapsed();
        HostInfo {
            id: me.id.clone(),
            friendly_name: me.friendly_name.clone(),
            labels: self.labels().await,
            lattice: me.lattice.clone(),
            uptime_seconds: up.as_secs(),
            uptime_human: human_uptime(up),
            version: VERSION.into(),
            ctl_host: self.config.nats.url.clone(),
            rpc_host: self.config.nats.url.clone(),
            js_domain: self.config.js_domain.clone(),
            admin_addr: self.observed.admin.as_ref().map(|(a, _)| a.to_string()),
        }
    }

    pub(crate) async fn inventory(&self) -> HostInventory {
        let me = &self.identity;
        let up = me.started.elapsed();
        let schedule = self.schedule().await;
        HostInventory {
            schedule,
            host_id: me.id.clone(),
            friendly_name: me.friendly_name.clone(),
            labels: self.labels().await,
            version: VERSION.into(),
            uptime_human: human_uptime(up),
            uptime_seconds: up.as_secs(),
            components: self.components().list().await.iter().map(|c| c.describe()).collect(),
            providers: self.workloads.providers().list().await,
            summary: None,
        }
    }

    /// One page of the inventory for `host.get`: the host's fields, then the components and
    /// providers after the cursor `after` (`component:{id}` or `provider:{id}`; components
    /// first, each in id order) that fit in `budget` bytes, and the cursor of the next page.
    /// Every page carries the summary of the whole inventory, so a client can check the parts.
    pub(crate) async fn inventory_page(&self, after: Option<&str>, budget: usize) -> (HostInventory, Option<String>) {
        let mut inv = self.inventory().await;
        let summary = InventorySummary::of(&inv.components, &inv.providers, true);
        if serde_json::to_vec(&inv).map(|v| v.len()).unwrap_or(usize::MAX) <= budget && after.is_none() {
            inv.summary = Some(summary);
            return (inv, None);
        }
        let components = std::mem::take(&mut inv.components);
        let providers = std::mem::take(&mut inv.providers);
        inv.summary = Some(InventorySummary { listed: false, ..summary });
        let base = serde_json::to_vec(&inv).map(|v| v.len()).unwrap_or(budget);
        let budget = budget.saturating_sub(base);
        let keyed: Vec<(String, Item<'_>)> = components
            .iter()
            .map(|c| (format!("component:{}", c.id), Item::Component(c)))
            .chain(providers.iter().map(|p| (format!("provider:{}", p.id), Item::Provider(p))))
            .filter(|(k, _)| after.is_none_or(|a| k.as_str() > a))
            .collect();
        let (items, next) = trellis_lattice::ctl::page(keyed.iter().map(|(k, i)| (k.as_str(), i)), budget);
        for item in items {
            match item {
                Item::Component(c) => inv.components.push(c.clone()),
                Item::Provider(p) => inv.providers.push(p.clone()),
            }
        }
        (inv, next)
    }

    /// The orderly stop behind [`Host::stop`] and `host.stop`.
    pub(crate) async fn shutdown(self: Arc<Self>, timeout: Duration) {
        if self.run.stopping.swap(true, Ordering::SeqCst) {
            let mut rx = self.run.stopped_tx.subscribe();
            let _ = rx.wait_for(|s| *s).await;
            return;
        }
        self.observed.ready.stopping();
        for task in self.run.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
        let budget = Budget::new(timeout, self.conn.nats.clone());
        // The lease first, so another host leads while this one drains.
        if let Some(apps) = self.apps.get() {
            // A KV update takes milliseconds; JetStream that does not answer (a leaf whose hub is
            // gone) must not take the drain's time.
            budget.over_nats_within("giving up the app reconciler's leader lease", LEASE_RELEASE_CAP, apps.release()).await;
        }
        let _guard = self.workloads.shutdown(&budget).await;
        let labels = self.labels().await;
        budget.over_nats("publishing host_stopped", self.conn.events.publish_and_flush(&HostStopped { labels })).await;
        tracing::info!(host_id = self.identity.id, "host stopped");
        self.observed.metrics.shutdown();
        if let Some((_, admin)) = &self.observed.admin {
            admin.0.abort();
        }
        self.run.stopped_tx.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_host_config_shows_no_seed() {
        let mut c = super::HostConfig::new("nats://127.0.0.1:4222");
        c.nats.nkey_seed = Some("SUAMK2FG4MI6UE3ACF3FK3OIQBCEIEZV7NSWFFEW63UXMRLFM2XLAXK4GY".into());
        c.secrets_xkey_seed = Some("SXAKJGXQ6A3QHVJ4TPE4XH3ZCV3BHYW6ZVG6S7BCDK36KIIXHBCQFWBJRQ".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("SUAMK") && !shown.contains("SXAKJ"), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("nats://127.0.0.1:4222"), "{shown}");
    }
}

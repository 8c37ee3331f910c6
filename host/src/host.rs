//! A host: identity, connection, runtime, registry, control server and heartbeat, tied
//! together; and the component lifecycle operations the control server calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Mutex, RwLock, watch};
use tokio::task::JoinHandle;
use trellis_lattice::ConnectOptions;
use trellis_lattice::claims::Claims;
use trellis_lattice::ctl::{Host as HostInfo, HostInventory, Link, StringMap};
use trellis_lattice::event::{ComponentScaleFailed, ComponentScaled, HostHeartbeat, HostStarted, HostStopped};
use trellis_lattice::rpc::{Router, Serving};

use crate::components::{self, Components, Gate, RunningComponent};
use crate::error::{HostError, Result};
use crate::events::Events;
use crate::providers::Providers;
use crate::registry::Registry;
use crate::runtime::{Limits, Runtime, RuntimeConfig};
use crate::{ctl, identity};

/// The software version hosts report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest component file a host loads.
pub const MAX_COMPONENT_BYTES: u64 = 128 << 20;

/// How a host is set up.
#[derive(Debug, Clone)]
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
}

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
        }
    }
}

/// Shared state of a running host, handed to the control server and background tasks.
pub(crate) struct HostCtx {
    pub id: String,
    pub friendly_name: String,
    pub lattice: String,
    pub config: HostConfig,
    pub labels: RwLock<BTreeMap<String, String>>,
    pub started: Instant,
    pub nats: async_nats::Client,
    /// JetStream in the lattice's domain.
    pub js: async_nats::jetstream::Context,
    pub events: Events,
    pub runtime: Arc<Runtime>,
    pub components: Components,
    pub providers: Providers,
    pub registry: Registry,
    /// The data plane: remote and local calls.
    pub router: Router,
    /// Data-plane subscriptions of the running components, by id.
    pub serving: Mutex<std::collections::HashMap<String, Serving>>,
    /// Serialises component lifecycle changes so two scale requests cannot interleave.
    pub lifecycle: Mutex<()>,
    pub stopping: AtomicBool,
    pub stopped_tx: watch::Sender<bool>,
    pub tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// The apps bucket, once the reconciler has opened it.
    pub apps: std::sync::OnceLock<async_nats::jetstream::kv::Store>,
    /// Whether the host takes new placements (cordon, uncordon, drain).
    pub schedule: crate::schedule::Scheduling,
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
        let id = identity::new_host_id();
        let mut nats_opts = config.nats.clone();
        nats_opts.name.get_or_insert_with(|| format!("trellis-host {id}"));
        let nats = trellis_lattice::connect(&nats_opts).await?;
        let js = trellis_lattice::state::jetstream(nats.clone(), config.js_domain.as_deref());
        let registry = Registry::open(&js, &config.lattice).await.map_err(|e| match config.js_domain.as_deref() {
            Some(d) => HostError::Registry(format!(
                "{e}; JetStream domain `{d}` (--js-domain) did not answer: the hub's nats-server needs `jetstream {{ domain: {d} }}`, and this host's server must reach it as its leaf node or cluster peer"
            )),
            None => e,
        })?;
        let router = Router::new(nats.clone(), &config.lattice);
        let links = Arc::new(crate::c2c::LatticeLinks { router: router.clone(), registry: registry.clone() });
        let runtime = Arc::new(Runtime::new(&config.runtime, links)?);
        let mut labels = identity::builtin_labels();
        labels.extend(config.labels.iter().filter(|(k, _)| !k.starts_with(identity::RESERVED_LABEL_PREFIX)).map(|(k, v)| (k.clone(), v.clone())));
        let (stopped_tx, _) = watch::channel(false);
        let ctx = Arc::new(HostCtx {
            friendly_name: identity::friendly_name(),
            lattice: config.lattice.clone(),
            events: Events::new(nats.clone(), &config.lattice, &id),
            labels: RwLock::new(labels.clone()),
            started: Instant::now(),
            nats: nats.clone(),
            js,
            runtime,
            components: Components::default(),
            providers: Providers::default(),
            registry,
            router,
            serving: Mutex::new(std::collections::HashMap::new()),
            lifecycle: Mutex::new(()),
            stopping: AtomicBool::new(false),
            stopped_tx,
            tasks: std::sync::Mutex::new(Vec::new()),
            apps: std::sync::OnceLock::new(),
            schedule: Default::default(),
            config,
            id,
        });
        let server = ctl::serve(ctx.clone()).await?;
        let heartbeat = tokio::spawn(heartbeat(ctx.clone()));
        ctx.tasks.lock().unwrap_or_else(|p| p.into_inner()).extend([server, heartbeat]);
        let reconciler = crate::reconciler::start(ctx.clone()).await?;
        ctx.tasks.lock().unwrap_or_else(|p| p.into_inner()).extend(reconciler);
        ctx.events.publish_and_flush(&HostStarted { friendly_name: ctx.friendly_name.clone(), labels, uptime_seconds: 0, version: VERSION.into() }).await;
        tracing::info!(host_id = ctx.id, friendly_name = ctx.friendly_name, lattice = ctx.lattice, "host started");
        Ok(Self { ctx })
    }

    /// The host's id (`N…`).
    pub fn id(&self) -> &str {
        &self.ctx.id
    }

    /// The host's friendly name.
    pub fn friendly_name(&self) -> &str {
        &self.ctx.friendly_name
    }

    /// The host's inventory.
    pub async fn inventory(&self) -> HostInventory {
        self.ctx.inventory().await
    }

    /// The links this host knows, from its own registry view.
    pub fn links(&self) -> Vec<Link> {
        self.ctx.registry.known_links()
    }

    /// Named config this host knows, from its own registry view.
    pub fn config(&self, name: &str) -> Option<StringMap> {
        self.ctx.registry.known_config(name)
    }

    /// The data-plane router of this host: calls through it reach components on this host
    /// directly and everything else over NATS.
    pub fn router(&self) -> &Router {
        &self.ctx.router
    }

    /// Sends `req` to the `wasi:http/incoming-handler` of component `id` running on this host.
    pub async fn invoke_http(&self, id: &str, req: http::Request<Bytes>) -> Result<http::Response<Bytes>> {
        let c = self.ctx.components.get(id).await.ok_or_else(|| HostError::NoSuchComponent(id.into()))?;
        components::invoke_http(&self.ctx.runtime, &c, req).await
    }

    /// How many invocations the running version of component `id` has started on this host.
    pub async fn invocations(&self, id: &str) -> u64 {
        match self.ctx.components.get(id).await {
            Some(c) => c.invocations.load(std::sync::atomic::Ordering::Relaxed),
            None => 0,
        }
    }

    /// Stops in order: no more control requests, in-flight work finishes (up to `grace`),
    /// components and providers stop, `host_stopped` is published. Idempotent.
    pub async fn stop(&self, grace: Duration) {
        self.ctx.clone().shutdown(grace).await
    }

    /// Resolves once the host has stopped (through [`Host::stop`] or a `host.stop` request).
    pub async fn stopped(&self) {
        let mut rx = self.ctx.stopped_tx.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

async fn heartbeat(ctx: Arc<HostCtx>) {
    let mut tick = tokio::time::interval(ctx.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        ctx.events.publish(&HostHeartbeat(ctx.inventory().await)).await;
    }
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
    pub(crate) async fn info(&self) -> HostInfo {
        let up = self.started.elapsed();
        HostInfo {
            id: self.id.clone(),
            friendly_name: self.friendly_name.clone(),
            labels: self.labels.read().await.clone(),
            lattice: self.lattice.clone(),
            uptime_seconds: up.as_secs(),
            uptime_human: human_uptime(up),
            version: VERSION.into(),
            ctl_host: self.config.nats.url.clone(),
            rpc_host: self.config.nats.url.clone(),
            js_domain: self.config.js_domain.clone(),
        }
    }

    /// The host's scheduling state; a draining host with no managed replica left is drained.
    pub(crate) async fn schedule(&self) -> trellis_lattice::ctl::Schedule {
        self.schedule.current(&self.components).await
    }

    pub(crate) async fn inventory(&self) -> HostInventory {
        let up = self.started.elapsed();
        let schedule = self.schedule().await;
        HostInventory {
            schedule,
            host_id: self.id.clone(),
            friendly_name: self.friendly_name.clone(),
            labels: self.labels.read().await.clone(),
            version: VERSION.into(),
            uptime_human: human_uptime(up),
            uptime_seconds: up.as_secs(),
            components: self.components.list().await.iter().map(|c| c.describe()).collect(),
            providers: self.providers.list().await,
        }
    }

    /// Reads a component reference's bytes.
    async fn fetch(&self, reference: &str) -> Result<Vec<u8>> {
        let load_err = |reason: String| HostError::Load { reference: reference.into(), reason };
        let Some(path) = reference.strip_prefix("file://") else {
            return Err(load_err("only file:// references are supported; use file:///absolute/path.wasm".into()));
        };
        if !self.config.allow_file_load {
            return Err(load_err("loading from files is disabled on this host (start it with --allow-file-load)".into()));
        }
        let meta = tokio::fs::metadata(path).await.map_err(|e| load_err(format!("cannot read `{path}`: {e}")))?;
        if meta.len() > MAX_COMPONENT_BYTES {
            return Err(load_err(format!("the file is {} bytes; the limit is {MAX_COMPONENT_BYTES}", meta.len())));
        }
        tokio::fs::read(path).await.map_err(|e| load_err(format!("cannot read `{path}`: {e}")))
    }

    /// The limits for a component: the host's, lowered by the scale request's `component_limits`.
    fn limits_for(&self, overrides: Option<&StringMap>) -> Result<Limits> {
        let mut limits = self.runtime.limits();
        let Some(o) = overrides else { return Ok(limits) };
        let num = |k: &str| -> Result<Option<u64>> {
            o.get(k).map(|v| v.parse::<u64>().map_err(|_| HostError::Invalid(format!("component_limits.{k} must be a whole number, not `{v}`")))).transpose()
        };
        if let Some(ms) = num("max_execution_time_ms")? {
            limits.max_execution_time = limits.max_execution_time.min(Duration::from_millis(ms.max(1)));
        }
        if let Some(bytes) = num("max_linear_memory_bytes")? {
            limits.max_linear_memory_bytes = limits.max_linear_memory_bytes.min(bytes as usize);
        }
        Ok(limits)
    }

    /// Runs `component_ref` as `id` with `max_instances` slots (0 stops it), publishing
    /// `component_scaled` or `component_scale_failed`.
    pub(crate) async fn scale_component(self: &Arc<Self>, cmd: trellis_lattice::ctl::ScaleComponentCommand) {
        let _guard = self.lifecycle.lock().await;
        let annotations = cmd.annotations.clone().unwrap_or_default();
        let outcome: Result<Option<Claims>> = async {
            if cmd.max_instances == 0 {
                // Stop taking calls first (the other replicas get them), answer the calls
                // already taken, then drop the component.
                let wait = self.components.get(&cmd.component_id).await.map(|c| c.limits.max_execution_time).unwrap_or_default();
                self.unserve_gracefully(&cmd.component_id, wait + Duration::from_secs(1)).await;
                let old = self.components.remove(&cmd.component_id).await;
                if let Some(old) = &old {
                    tracing::info!(component_id = old.id, "component stopped");
                }
                self.unserve(&cmd.component_id).await;
                return Ok(old.and_then(|c| c.claims.clone()));
            }
            let limits = self.limits_for(cmd.component_limits.as_ref())?;
            let existing = self.components.get(&cmd.component_id).await;
            let (prepared, claims) = match &existing {
                Some(c) if c.image_ref == cmd.component_ref => (c.prepared.clone(), c.claims.clone()),
                Some(c) if !cmd.allow_update => {
                    return Err(HostError::Invalid(format!(
                        "component `{}` already runs from `{}`; to switch it to `{}` send allow_update or use `wash update component`",
                        c.id, c.image_ref, cmd.component_ref
                    )));
                }
                _ => {
                    let bytes = self.fetch(&cmd.component_ref).await?;
                    let (bytes, claims) = crate::claims::check(&crate::claims::Policy::of(&self.config), &cmd.component_ref, bytes).await?;
                    (self.runtime.prepare(&cmd.component_ref, bytes).await?, claims)
                }
            };
            if let Some(c) = &claims {
                self.registry.put_claims(&c.sub, &c.to_map()).await?;
            }
            self.components
                .insert(RunningComponent {
                    id: cmd.component_id.clone(),
                    image_ref: cmd.component_ref.clone(),
                    annotations: annotations.clone(),
                    config: cmd.config.clone().into(),
                    prepared,
                    claims: claims.clone(),
                    limits,
                    gate: Gate::new(cmd.max_instances, self.config.max_queued_per_component),
                    invocations: Default::default(),
                })
                .await;
            self.serve(&cmd.component_id).await?;
            tracing::info!(component_id = cmd.component_id, max_instances = cmd.max_instances, "component scaled");
            Ok(claims)
        }
        .await;
        match outcome {
            Ok(claims) => {
                self.events
                    .publish(&ComponentScaled {
                        public_key: claims.as_ref().map(|c| c.sub.clone()),
                        claims: claims.as_ref().map(Claims::to_map),
                        annotations,
                        host_id: self.id.clone(),
                        image_ref: cmd.component_ref,
                        max_instances: cmd.max_instances,
                        component_id: cmd.component_id,
                    })
                    .await
            }
            Err(e) => {
                tracing::warn!(component_id = cmd.component_id, error = %e, "component scale failed");
                self.events
                    .publish(&ComponentScaleFailed {
                        public_key: None,
                        claims: None,
                        annotations,
                        host_id: self.id.clone(),
                        image_ref: cmd.component_ref,
                        max_instances: cmd.max_instances,
                        component_id: cmd.component_id,
                        error: e.to_string(),
                    })
                    .await
            }
        }
    }

    /// Answers data-plane calls for component `id` (idempotent): a queue-group subscription
    /// shared with its replicas elsewhere, and a local route for callers in this process.
    async fn serve(self: &Arc<Self>, id: &str) -> Result<()> {
        let mut serving = self.serving.lock().await;
        if serving.contains_key(id) {
            return Ok(());
        }
        let handler: Arc<dyn trellis_lattice::rpc::Handler> = Arc::new(crate::serve::ComponentHandler { ctx: Arc::downgrade(self), id: id.into() });
        let sub = self.router.serve(id, handler.clone()).await?;
        self.router.register_local(id, handler);
        serving.insert(id.into(), sub);
        Ok(())
    }

    /// Like [`Self::unserve`], but the calls already taken are answered (at most `wait`).
    async fn unserve_gracefully(&self, id: &str, wait: Duration) {
        self.router.unregister_local(id);
        let serving = self.serving.lock().await.remove(id);
        if let Some(s) = serving {
            s.drain(wait).await;
        }
    }

    async fn unserve(&self, id: &str) {
        self.router.unregister_local(id);
        self.serving.lock().await.remove(id);
    }

    /// Switches running component `id` to `new_ref`: the new version serves from the moment it
    /// is ready; the old one finishes its in-flight invocations and is dropped.
    pub(crate) async fn update_component(&self, cmd: trellis_lattice::ctl::UpdateComponentCommand) {
        let _guard = self.lifecycle.lock().await;
        let outcome: Result<(Arc<RunningComponent>, Option<Claims>)> = async {
            let old = self.components.get(&cmd.component_id).await.ok_or_else(|| HostError::NoSuchComponent(cmd.component_id.clone()))?;
            let bytes = self.fetch(&cmd.new_component_ref).await?;
            let (bytes, claims) = crate::claims::check(&crate::claims::Policy::of(&self.config), &cmd.new_component_ref, bytes).await?;
            let prepared = self.runtime.prepare(&cmd.new_component_ref, bytes).await?;
            if let Some(c) = &claims {
                self.registry.put_claims(&c.sub, &c.to_map()).await?;
            }
            let annotations = cmd.annotations.clone().unwrap_or_else(|| old.annotations.clone());
            self.components
                .insert(RunningComponent {
                    id: old.id.clone(),
                    image_ref: cmd.new_component_ref.clone(),
                    annotations,
                    config: old.config.clone(),
                    prepared,
                    claims: claims.clone(),
                    limits: old.limits,
                    gate: Gate::new(old.max_instances(), self.config.max_queued_per_component),
                    invocations: Default::default(),
                })
                .await;
            Ok((old, claims))
        }
        .await;
        match outcome {
            Ok((old, claims)) => {
                tracing::info!(component_id = old.id, from = old.image_ref, to = cmd.new_component_ref, "component updated");
                self.events
                    .publish(&ComponentScaled {
                        public_key: claims.as_ref().map(|c| c.sub.clone()),
                        claims: claims.as_ref().map(Claims::to_map),
                        annotations: cmd.annotations.unwrap_or_else(|| old.annotations.clone()),
                        host_id: self.id.clone(),
                        image_ref: cmd.new_component_ref,
                        max_instances: old.max_instances(),
                        component_id: cmd.component_id,
                    })
                    .await
            }
            Err(e) => {
                self.events
                    .publish(&ComponentScaleFailed {
                        host_id: self.id.clone(),
                        image_ref: cmd.new_component_ref,
                        component_id: cmd.component_id,
                        annotations: cmd.annotations.unwrap_or_default(),
                        error: e.to_string(),
                        ..Default::default()
                    })
                    .await
            }
        }
    }

    /// The orderly stop behind [`Host::stop`] and `host.stop`.
    pub(crate) async fn shutdown(self: Arc<Self>, grace: Duration) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            let mut rx = self.stopped_tx.subscribe();
            let _ = rx.wait_for(|s| *s).await;
            return;
        }
        for task in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
        crate::reconciler::release(&self).await;
        let _guard = self.lifecycle.lock().await;
        let components = self.components.clear().await;
        for c in &components {
            self.unserve(&c.id).await;
        }
        // In-flight invocations hold slots; wait for them to come back, up to the grace period.
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && components.iter().any(|c| c.gate.available() < c.max_instances() as usize) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for c in &components {
            self.events
                .publish(&ComponentScaled {
                    annotations: c.annotations.clone(),
                    host_id: self.id.clone(),
                    image_ref: c.image_ref.clone(),
                    max_instances: 0,
                    component_id: c.id.clone(),
                    ..Default::default()
                })
                .await;
        }
        self.providers.stop_all().await;
        let labels = self.labels.read().await.clone();
        self.events.publish_and_flush(&HostStopped { labels }).await;
        tracing::info!(host_id = self.id, "host stopped");
        self.stopped_tx.send_replace(true);
    }
}

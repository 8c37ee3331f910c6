//! The lifecycle of what a host runs: components scaled, updated and stopped (fetched, their
//! claims checked, compiled, put in the table and served), providers started, and the orderly
//! stop of both. Every change is announced as an event; none is returned to the control server,
//! which has acknowledged the request before the work starts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};
use trellis_lattice::ConnectOptions;
use trellis_lattice::artifact::ArtifactRef;
use trellis_lattice::claims::Claims;
use trellis_lattice::ctl::{ScaleComponentCommand, StartProviderCommand, StringMap, UpdateComponentCommand};
use trellis_lattice::event::{ComponentScaleFailed, ComponentScaled, ProviderStartFailed};
use trellis_lattice::provider::HostData;
use trellis_lattice::rpc::Router;

use crate::artifacts::{Artifacts, Kind, OciSettings, StoreAccess};
use crate::claims::{self, Policy};
use crate::components::{Components, Gate, RunningComponent};
use crate::error::{HostError, Result};
use crate::events::Events;
use crate::host::HostConfig;
use crate::providers::{self, Providers};
use crate::registry::Registry;
use crate::runtime::{Limits, Runtime};
use crate::serve::Serving;
use crate::stop::Budget;
use trellis_lattice::secrets::{self, Secret, SecretReference, SecretValue, SecretsClient};

/// The parts of [`HostConfig`] the lifecycle goes by.
pub(crate) struct Settings {
    /// Whether `file://` references may be loaded.
    allow_file_load: bool,
    /// How many callers may wait for a component's instance slot.
    max_queued_per_component: usize,
    /// Which signed and unsigned components are accepted.
    policy: Policy,
    /// Providers this host can run in-process.
    builtins: Vec<trellis_provider_sdk::Builtin>,
    /// How often providers are checked for health.
    provider_health_interval: Duration,
    /// How the host reaches NATS; provider processes get its URL, user and CA.
    nats: ConnectOptions,
    /// The JetStream domain of the lattice's state, for providers.
    js_domain: Option<String>,
    /// Where provider processes are recorded (see [`providers::stop_orphans`]).
    state_dir: Option<std::path::PathBuf>,
    /// How registries are reached.
    oci: OciSettings,
    /// Where artifacts are cached.
    cache_dir: Option<std::path::PathBuf>,
}

impl Settings {
    /// The settings `config` makes.
    pub fn of(config: &HostConfig) -> Self {
        Self {
            allow_file_load: config.allow_file_load,
            max_queued_per_component: config.max_queued_per_component,
            policy: Policy::of(config),
            builtins: config.builtins.clone(),
            provider_health_interval: config.provider_health_interval,
            nats: config.nats.clone(),
            js_domain: config.js_domain.clone(),
            state_dir: config.state_dir.clone(),
            oci: config.oci.clone(),
            cache_dir: config.cache_dir.clone(),
        }
    }
}

/// What the lifecycle uses of the host's identity and lattice connection.
pub(crate) struct Conn {
    /// The host's id (`N…`).
    pub host_id: String,
    /// The lattice's name.
    pub lattice: String,
    /// The host's connection (built-in providers share it).
    pub nats: async_nats::Client,
    /// Events as this host.
    pub events: Events,
    /// Claims, config and links in the lattice's buckets.
    pub registry: Registry,
    /// The data plane.
    pub router: Router,
}

/// A component fetched, checked and compiled, ready to go into the table.
struct Loaded {
    prepared: Arc<crate::runtime::Prepared>,
    claims: Option<Claims>,
    /// What its reference resolved to.
    digest: Option<String>,
}

/// The components and providers of one host, and the changes to them.
pub(crate) struct Lifecycle {
    lattice: Conn,
    settings: Settings,
    runtime: Arc<Runtime>,
    components: Components,
    providers: Providers,
    serving: Serving,
    artifacts: Arc<Artifacts>,
    /// Serialises changes to the component table so two scale requests cannot interleave
    /// (fetching and compiling happen outside it, so a slow source delays only its own scale).
    lock: Mutex<()>,
}

impl Lifecycle {
    /// Nothing running yet, on `lattice`, compiling with `runtime`.
    pub fn new(lattice: Conn, settings: Settings, runtime: Arc<Runtime>) -> Self {
        let components = Components::default();
        let serving = Serving::new(lattice.router.clone(), runtime.clone(), components.clone());
        let providers = Providers::new(settings.state_dir.as_deref());
        let store = StoreAccess { nats: lattice.nats.clone(), lattice: lattice.lattice.clone(), js_domain: settings.js_domain.clone() };
        let artifacts = Artifacts::new(settings.oci.clone(), settings.allow_file_load, settings.cache_dir.clone(), Some(store));
        Self { lattice, settings, runtime, components, providers, serving, artifacts, lock: Mutex::new(()) }
    }

    /// The runtime components run in.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The running components.
    pub fn components(&self) -> &Components {
        &self.components
    }

    /// The running providers.
    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    /// Fetches, checks and compiles the component `reference` names (no lock held).
    async fn load(&self, reference: &str) -> Result<Loaded> {
        // The bytes are copied only when another scale shares this fetch.
        let fetched = Arc::unwrap_or_clone(self.artifacts.fetch(reference, Kind::Component).await?);
        let (bytes, claims) = claims::check(&self.settings.policy, reference, fetched.bytes).await?;
        let prepared = self.runtime.prepare(reference, bytes).await?;
        Ok(Loaded { prepared, claims, digest: Some(fetched.digest) })
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
    pub async fn scale_component(&self, cmd: ScaleComponentCommand) {
        let annotations = cmd.annotations.clone().unwrap_or_default();
        let outcome: Result<Option<Loaded>> = async {
            if cmd.max_instances == 0 {
                let _guard = self.lock.lock().await;
                // Stop taking calls first (the other replicas get them), answer the calls
                // already taken, then drop the component.
                let wait = self.components.get(&cmd.component_id).await.map(|c| c.limits.max_execution_time).unwrap_or_default();
                self.serving.unserve_gracefully(&cmd.component_id, wait + Duration::from_secs(1)).await;
                let old = self.components.remove(&cmd.component_id).await;
                if let Some(old) = &old {
                    tracing::info!(component_id = old.id, "component stopped");
                }
                self.serving.unserve(&cmd.component_id).await;
                return Ok(old.map(|c| Loaded { prepared: c.prepared.clone(), claims: c.claims.clone(), digest: c.image_digest.clone() }));
            }
            let limits = self.limits_for(cmd.component_limits.as_ref())?;
            let refuse_switch = |c: &RunningComponent| {
                HostError::Invalid(format!(
                    "component `{}` already runs from `{}`; to switch it to `{}` send allow_update or use `wash update component`",
                    c.id, c.image_ref, cmd.component_ref
                ))
            };
            // Fetch and compile before taking the lock, unless it already runs from this reference.
            let fresh = match self.components.get(&cmd.component_id).await {
                Some(c) if c.image_ref == cmd.component_ref => None,
                Some(c) if !cmd.allow_update => return Err(refuse_switch(&c)),
                _ => Some(self.load(&cmd.component_ref).await?),
            };
            let _guard = self.lock.lock().await;
            let existing = self.components.get(&cmd.component_id).await;
            let loaded = match (fresh, &existing) {
                (_, Some(c)) if c.image_ref != cmd.component_ref && !cmd.allow_update => return Err(refuse_switch(c)),
                (Some(loaded), _) => loaded,
                (None, Some(c)) if c.image_ref == cmd.component_ref => {
                    Loaded { prepared: c.prepared.clone(), claims: c.claims.clone(), digest: c.image_digest.clone() }
                }
                // It stopped (or changed) while this request waited: load it after all.
                (None, _) => self.load(&cmd.component_ref).await?,
            };
            if let Some(c) = &loaded.claims {
                self.lattice.registry.put_claims(&c.sub, &c.to_map()).await?;
            }
            self.components
                .insert(RunningComponent {
                    id: cmd.component_id.clone(),
                    image_ref: cmd.component_ref.clone(),
                    image_digest: loaded.digest.clone(),
                    annotations: annotations.clone(),
                    config: cmd.config.clone().into(),
                    prepared: loaded.prepared.clone(),
                    claims: loaded.claims.clone(),
                    limits,
                    gate: Gate::new(cmd.max_instances, self.settings.max_queued_per_component),
                    invocations: Default::default(),
                })
                .await;
            self.serving.serve(&cmd.component_id).await?;
            tracing::info!(component_id = cmd.component_id, max_instances = cmd.max_instances, digest = loaded.digest, "component scaled");
            Ok(Some(loaded))
        }
        .await;
        if let Err(e) = &outcome {
            tracing::warn!(component_id = cmd.component_id, error = %e, "component scale failed");
        }
        let scaled = ComponentScaled {
            annotations,
            host_id: self.lattice.host_id.clone(),
            image_ref: cmd.component_ref,
            max_instances: cmd.max_instances,
            component_id: cmd.component_id,
            ..Default::default()
        };
        self.announce(scaled, outcome).await;
    }

    /// Publishes `component_scaled` (with the claims of what runs now) or
    /// `component_scale_failed` (with the error).
    async fn announce(&self, scaled: ComponentScaled, outcome: Result<Option<Loaded>>) {
        let events = &self.lattice.events;
        match outcome {
            Ok(loaded) => {
                let claims = loaded.as_ref().and_then(|l| l.claims.as_ref());
                let scaled = ComponentScaled {
                    public_key: claims.map(|c| c.sub.clone()),
                    claims: claims.map(Claims::to_map),
                    image_digest: loaded.as_ref().and_then(|l| l.digest.clone()),
                    ..scaled
                };
                events.publish(&scaled).await
            }
            Err(e) => events.publish(&ComponentScaleFailed { scaled, error: e.to_string() }).await,
        }
    }

    /// Switches running component `id` to `new_ref`: the new version serves from the moment it
    /// is ready; the old one finishes its in-flight invocations and is dropped.
    pub async fn update_component(&self, cmd: UpdateComponentCommand) {
        let outcome: Result<(Arc<RunningComponent>, Loaded)> = async {
            if self.components.get(&cmd.component_id).await.is_none() {
                return Err(HostError::NoSuchComponent(cmd.component_id.clone()));
            }
            let loaded = self.load(&cmd.new_component_ref).await?;
            let _guard = self.lock.lock().await;
            let old = self.components.get(&cmd.component_id).await.ok_or_else(|| HostError::NoSuchComponent(cmd.component_id.clone()))?;
            if let Some(c) = &loaded.claims {
                self.lattice.registry.put_claims(&c.sub, &c.to_map()).await?;
            }
            let annotations = cmd.annotations.clone().unwrap_or_else(|| old.annotations.clone());
            self.components
                .insert(RunningComponent {
                    id: old.id.clone(),
                    image_ref: cmd.new_component_ref.clone(),
                    image_digest: loaded.digest.clone(),
                    annotations,
                    config: old.config.clone(),
                    prepared: loaded.prepared.clone(),
                    claims: loaded.claims.clone(),
                    limits: old.limits,
                    gate: Gate::new(old.max_instances(), self.settings.max_queued_per_component),
                    invocations: Default::default(),
                })
                .await;
            Ok((old, loaded))
        }
        .await;
        let (annotations, max_instances) = match &outcome {
            Ok((old, _)) => {
                tracing::info!(component_id = old.id, from = old.image_ref, to = cmd.new_component_ref, "component updated");
                (cmd.annotations.unwrap_or_else(|| old.annotations.clone()), old.max_instances())
            }
            Err(_) => (cmd.annotations.unwrap_or_default(), 0),
        };
        let scaled = ComponentScaled {
            annotations,
            host_id: self.lattice.host_id.clone(),
            image_ref: cmd.new_component_ref,
            max_instances,
            component_id: cmd.component_id,
            ..Default::default()
        };
        self.announce(scaled, outcome.map(|(_, loaded)| Some(loaded))).await;
    }

    /// Starts a provider under supervision. A failure is announced as `provider_start_failed`;
    /// success by the supervisor (`provider_started`), on this and every restart.
    pub async fn start_provider(&self, cmd: StartProviderCommand) {
        let (lattice, settings) = (&self.lattice, &self.settings);
        let annotations = cmd.annotations.clone().unwrap_or_default();
        let outcome = async {
            if self.providers.contains(&cmd.provider_id).await {
                return Err(HostError::Provider(format!("provider `{}` already runs on host `{}`", cmd.provider_id, lattice.host_id)));
            }
            let source = self.provider_source(&cmd.provider_ref).await?;
            let mut config = StringMap::new();
            let mut granted = std::collections::BTreeMap::new();
            for name in &cmd.config {
                let values = lattice.registry.get_config(name).await?.ok_or_else(|| {
                    HostError::Provider(format!("config `{name}` given to provider `{}` does not exist; create it with `wash config put`", cmd.provider_id))
                })?;
                // A secret reference grants a secret; its value is fetched now, for host data.
                match secrets::is_reference(name).then(|| SecretReference::from_config(name, &values)).flatten() {
                    Some(reference) => {
                        let secret = self.provider_secret(&cmd.provider_id, &reference).await?;
                        granted.insert(reference.name, secret);
                    }
                    None => config.extend(values),
                }
            }
            let link_definitions =
                lattice.registry.known_links().into_iter().filter(|l| l.source_id == cmd.provider_id || l.target == cmd.provider_id).collect();
            // A provider process gets the host's NATS user (read out of a creds file, if that is how
            // the host has it) and CA, and nothing else of the host's.
            let (jwt, seed) = settings.nats.user_credentials().map_err(|e| HostError::Provider(e.to_string()))?;
            let host_data = HostData {
                host_id: lattice.host_id.clone(),
                lattice_rpc_url: settings.nats.url.clone(),
                lattice: lattice.lattice.clone(),
                provider_key: cmd.provider_id.clone(),
                instance_id: String::new(),
                config,
                link_definitions,
                lattice_rpc_user_jwt: jwt,
                lattice_rpc_user_seed: seed,
                lattice_rpc_tls_ca_file: settings.nats.tls_ca_file.clone(),
                js_domain: settings.js_domain.clone(),
                log_level: None,
                secrets: granted,
            };
            self.providers
                .start(providers::Launch {
                    source,
                    reference: cmd.provider_ref.clone(),
                    annotations: annotations.clone(),
                    host_data,
                    events: lattice.events.clone(),
                    nats: lattice.nats.clone(),
                    router: lattice.router.clone(),
                    state: lattice.registry.view().clone(),
                    health_interval: settings.provider_health_interval,
                })
                .await
        }
        .await;
        if let Err(e) = outcome {
            tracing::warn!(provider_id = cmd.provider_id, error = %e, "provider start failed");
            lattice
                .events
                .publish(&ProviderStartFailed {
                    provider_ref: cmd.provider_ref,
                    provider_id: cmd.provider_id,
                    host_id: lattice.host_id.clone(),
                    error: e.to_string(),
                })
                .await
        }
    }

    /// Stops everything in order, within `budget`: components stop taking calls and answer
    /// the ones they took (all at once, while the budget allows), `component_scaled` with 0
    /// instances is published for each (skipped when NATS is unreachable), then the providers
    /// stop, each killed once what is left of the budget has passed. Returns the lifecycle
    /// lock: the caller holds it until the host is down, so that no scale request starts
    /// anything after this.
    pub async fn shutdown(&self, budget: &Budget) -> MutexGuard<'_, ()> {
        let guard = self.lock.lock().await;
        // Stop taking calls and answer those taken while the components are still in the table
        // (a call taken and then served from an empty table would fail), then drop them.
        let drain = budget.for_draining();
        let serving: Vec<String> = self.components.list().await.iter().map(|c| c.id.clone()).collect();
        futures::future::join_all(serving.iter().map(|id| self.serving.unserve_gracefully(id, drain))).await;
        let components = self.components.clear().await;
        // Calls from this process (local routes) hold slots too; wait for them to come back.
        let until = tokio::time::Instant::now() + budget.for_draining();
        while tokio::time::Instant::now() < until && components.iter().any(|c| c.gate.available() < c.max_instances() as usize) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !components.is_empty() {
            let announce = async {
                for c in &components {
                    let stopped = ComponentScaled {
                        annotations: c.annotations.clone(),
                        host_id: self.lattice.host_id.clone(),
                        image_ref: c.image_ref.clone(),
                        max_instances: 0,
                        component_id: c.id.clone(),
                        ..Default::default()
                    };
                    self.lattice.events.publish(&stopped).await;
                }
            };
            budget.over_nats(&format!("announcing that {} components stopped (component_scaled)", components.len()), announce).await;
        }
        self.providers.stop_all(budget.left()).await;
        guard
    }

    /// Fetches secret `reference` granted to provider `provider_id` from its backend (sealed
    /// both ways), for the provider's host data.
    async fn provider_secret(&self, provider_id: &str, reference: &SecretReference) -> Result<Secret> {
        let client = SecretsClient::new(self.lattice.nats.clone(), &reference.backend);
        let value = client
            .get(&reference.request())
            .await
            .map_err(|e| HostError::Provider(format!("secret `{}` granted to provider `{provider_id}` cannot be read: {e}", reference.name)))?;
        Ok(match value {
            SecretValue::String(s) => Secret { string_secret: Some(s), ..Default::default() },
            SecretValue::Bytes(b) => Secret { binary_secret: Some(b), ..Default::default() },
        })
    }

    /// What provider reference `reference` runs: a built-in, a file, or the executable for this
    /// platform taken out of a provider archive from a registry or the lattice store.
    async fn provider_source(&self, reference: &str) -> Result<providers::Source> {
        match ArtifactRef::parse(reference) {
            Ok(ArtifactRef::Oci(_) | ArtifactRef::Lattice(_)) => {
                let fetched = self.artifacts.fetch(reference, Kind::Provider).await.map_err(|e| HostError::Provider(e.to_string()))?;
                let dir = self.artifacts.provider_dir();
                let (path, claims) =
                    tokio::task::spawn_blocking(move || crate::artifacts::unpack_provider(&fetched.bytes, &dir, trellis_lattice::claims::now()))
                        .await
                        .map_err(|e| HostError::Provider(format!("unpacking `{reference}` panicked: {e}")))?
                        .map_err(|why| HostError::Provider(format!("`{reference}`: {why}")))?;
                tracing::info!(reference, provider_key = claims.sub, path = %path.display(), "provider archive unpacked");
                Ok(providers::Source::Process(path))
            }
            _ => providers::resolve_ref(reference, self.settings.allow_file_load, &self.settings.builtins),
        }
    }

    /// Kills every provider process now, for a host that must exit at once.
    pub fn kill_providers(&self) {
        self.providers.kill_all();
    }
}

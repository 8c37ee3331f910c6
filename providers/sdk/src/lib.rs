//! # trellis-provider-sdk
//!
//! A capability provider is a library with one entry point, a [`RunFn`]: it gets a
//! [`ProviderContext`] (its host data, a NATS connection, the data-plane [`Router`], a live
//! [`StateView`] of links and config) and runs until [`ProviderContext::shutdown_requested`]
//! resolves. The same function runs two ways, never two copies:
//!
//! - as a process: a thin `main` calls [`run_process`], which reads the host data the host
//!   writes on stdin (base64 JSON, as wasmCloud does), connects, answers health checks and
//!   shutdown requests, and exits when the provider returns;
//! - in a host (`builtin://NAME`): the host calls [`start_builtin`] with its own connection and
//!   router, so calls between the provider and components on that host skip NATS.
//!
//! Links and config are delivered live: [`ProviderContext::changes`] ticks after every change
//! and [`ProviderContext::links_as_source`] / [`ProviderContext::links_as_target`] read the
//! current ones. A provider that restarts reads them again from the lattice state.
//!
//! ```no_run
//! use trellis_provider_sdk::{ProviderContext, ProviderError, run_process};
//! fn run(ctx: ProviderContext) -> futures::future::BoxFuture<'static, Result<(), ProviderError>> {
//!     Box::pin(async move {
//!         ctx.shutdown_requested().await;
//!         Ok(())
//!     })
//! }
//! fn main() -> std::process::ExitCode {
//!     run_process("example", run)
//! }
//! ```
#![deny(missing_docs)]

use std::io::BufRead as _;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tracing_subscriber::Layer as _;
pub use trellis_lattice::ctl::{Link, StringMap};
pub use trellis_lattice::provider::{HealthReport, HostData};
pub use trellis_lattice::rpc::Router;
pub use trellis_lattice::state::StateView;
use trellis_lattice::telemetry::{self, TelemetryConfig};
use trellis_lattice::{ConnectOptions, provider};

/// A provider's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// Joining the lattice failed.
    #[error(transparent)]
    Lattice(#[from] trellis_lattice::Error),
    /// The provider's own work failed.
    #[error("{0}")]
    Failed(String),
}

/// A provider's entry point.
pub type RunFn = fn(ProviderContext) -> BoxFuture<'static, Result<(), ProviderError>>;

/// A provider a host can run in-process as `builtin://{name}`.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// The name after `builtin://`.
    pub name: &'static str,
    /// The entry point.
    pub run: RunFn,
}

/// Everything a running provider needs.
#[derive(Clone)]
pub struct ProviderContext {
    host_data: Arc<HostData>,
    nats: async_nats::Client,
    router: Router,
    state: StateView,
    shutdown: watch::Receiver<bool>,
    health: Arc<Mutex<HealthReport>>,
}

impl ProviderContext {
    /// What the host said at start.
    pub fn host_data(&self) -> &HostData {
        &self.host_data
    }

    /// This provider's id.
    pub fn id(&self) -> &str {
        &self.host_data.provider_key
    }

    /// The lattice.
    pub fn lattice(&self) -> &str {
        &self.host_data.lattice
    }

    /// The provider's own config (the named configs given at start, merged).
    pub fn config(&self) -> &StringMap {
        &self.host_data.config
    }

    /// Secret `name`, if it was granted to this provider (a `SECRET_*` reference in its start
    /// config, fetched by the host when it started the provider).
    pub fn secret(&self, name: &str) -> Option<trellis_lattice::secrets::SecretValue> {
        self.host_data.secrets.get(name).cloned().and_then(trellis_lattice::secrets::Secret::value)
    }

    /// The NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// The data-plane router, for calls to components and providers.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The live lattice state.
    pub fn state(&self) -> &StateView {
        &self.state
    }

    /// Links whose source is this provider (it calls their targets), now.
    pub fn links_as_source(&self) -> Vec<Link> {
        self.state.links().into_iter().filter(|l| l.source_id == self.id()).collect()
    }

    /// Links whose target is this provider (their sources call it), now.
    pub fn links_as_target(&self) -> Vec<Link> {
        self.state.links().into_iter().filter(|l| l.target == self.id()).collect()
    }

    /// Ticks after every change of links or config.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.state.changes()
    }

    /// Resolves when the host (or a signal) asks the provider to stop.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Sets what health checks report.
    pub fn set_health(&self, healthy: bool, message: Option<String>) {
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = HealthReport { healthy, message };
    }

    /// Answers the data-plane calls addressed to this provider with `handler`, over NATS and
    /// routed locally from components on the same host, healthy, until the host asks it to
    /// stop. `what` names the provider in the log line.
    pub async fn serve_calls(&self, handler: Arc<dyn trellis_lattice::rpc::Handler>, what: &str) -> Result<(), ProviderError> {
        let serving = self.router().serve(self.id(), handler.clone()).await?;
        self.router().register_local(self.id(), handler);
        self.set_health(true, None);
        tracing::info!(provider_id = self.id(), "{what} provider serving");
        self.shutdown_requested().await;
        self.router().unregister_local(self.id());
        drop(serving);
        Ok(())
    }

    /// The link the caller of `call` holds to this provider for `namespace:package` (with
    /// one of `interfaces`, when any are named), found in the caller's slot of the links
    /// bucket, not by a scan. The error names the link that is missing and the
    /// `wash link put` (all of `interfaces`, the link name, `extra` flags) that adds it.
    pub fn caller_link(&self, call: &trellis_lattice::rpc::CallInfo, namespace: &str, package: &str, interfaces: &[&str], extra: &str) -> Result<Link, String> {
        self.state
            .links_in_slot(&call.source, namespace, package, &call.link_name)
            .into_iter()
            .find(|l| l.target == self.id() && (interfaces.is_empty() || l.interfaces.iter().any(|i| interfaces.contains(&i.as_str()))))
            .ok_or_else(|| {
                let flags: String = interfaces.iter().map(|i| format!(" --interface {i}")).collect();
                let name_flag =
                    if call.link_name == trellis_lattice::ctl::DEFAULT_LINK_NAME { String::new() } else { format!(" --link-name {}", call.link_name) };
                format!(
                    "no {namespace}:{package} link from `{source}` to provider `{id}` (link name `{name}`) in lattice `{lattice}`; add one with \
                     `wash link put {source} {id} {namespace} {package}{flags}{name_flag}{extra}`",
                    source = call.source,
                    id = self.id(),
                    name = call.link_name,
                    lattice = self.lattice(),
                )
            })
    }
}

/// A built-in provider running inside a host.
pub struct RunningBuiltin {
    shutdown: watch::Sender<bool>,
    health: Arc<Mutex<HealthReport>>,
    task: tokio::task::JoinHandle<Result<(), ProviderError>>,
}

impl RunningBuiltin {
    /// What it reports about its health.
    pub fn health(&self) -> HealthReport {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks it to stop.
    pub fn request_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits for it to return.
    pub async fn wait(&mut self) -> Result<(), ProviderError> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(ProviderError::Failed(format!("the provider task ended abnormally: {e}"))),
        }
    }

    /// Stops it at once.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Runs `builtin` inside a host, on the host's connection, router and state view.
pub fn start_builtin(builtin: &Builtin, host_data: HostData, nats: async_nats::Client, router: Router, state: StateView) -> RunningBuiltin {
    let (shutdown, rx) = watch::channel(false);
    let health = Arc::new(Mutex::new(HealthReport { healthy: true, message: None }));
    let ctx = ProviderContext { host_data: Arc::new(host_data), nats, router, state, shutdown: rx, health: health.clone() };
    let task = tokio::spawn((builtin.run)(ctx));
    RunningBuiltin { shutdown, health, task }
}

/// The whole `main` of a provider executable: reads host data from stdin, joins the lattice,
/// runs `run`, answers health checks and shutdown requests, and exits when `run` returns.
pub fn run_process(name: &str, run: RunFn) -> std::process::ExitCode {
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    let host_data = match read.map_err(|e| e.to_string()).and_then(|_| HostData::decode(&line).map_err(|e| e.to_string())) {
        Ok(hd) => hd,
        Err(e) => {
            eprintln!(
                "error: {name} is a Trellis capability provider and expects host data on stdin ({e}); \
                 start it through a host: `wash start provider file://<path> <id>`"
            );
            return std::process::ExitCode::from(2);
        }
    };
    let filter = host_data.log_level.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info".into());
    // Traces from the variables the host passed (its own settings, its id among the resource
    // attributes), under the provider's id as the service name unless OTEL_SERVICE_NAME says.
    let telemetry_config = match TelemetryConfig::from_env(&host_data.provider_key, false) {
        Ok(c) => c.with_resource("wasmcloud.provider.id", &host_data.provider_key).with_resource("wasmcloud.lattice", &host_data.lattice),
        Err(e) => {
            eprintln!("error: {name}: bad observability settings: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colours only on a terminal: a log file gets plain `key=value` fields.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into()))
            .boxed();
        let telemetry = match telemetry::install(&telemetry_config, logs) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("warning: {name}: no logs or traces from this provider: {e}");
                None
            }
        };
        let result = serve_process(host_data, run).await;
        if let Some(t) = telemetry {
            t.shutdown(FINAL_FLUSH).await;
        }
        match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(provider = name, error = %e, "provider failed");
                std::process::ExitCode::FAILURE
            }
        }
    })
}

async fn serve_process(host_data: HostData, run: RunFn) -> Result<(), ProviderError> {
    let opts = ConnectOptions {
        url: host_data.lattice_rpc_url.clone(),
        nkey_seed: host_data.lattice_rpc_user_seed.clone(),
        jwt: host_data.lattice_rpc_user_jwt.clone(),
        tls_ca_file: host_data.lattice_rpc_tls_ca_file.clone(),
        name: Some(format!("provider {}", host_data.provider_key)),
        ..Default::default()
    };
    let nats = trellis_lattice::connect(&opts).await?;
    let router = Router::new(nats.clone(), &host_data.lattice).with_host_id(&host_data.host_id);
    let js = trellis_lattice::state::jetstream(nats.clone(), host_data.js_domain.as_deref());
    let state = StateView::open(&js, &host_data.lattice).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let health = Arc::new(Mutex::new(HealthReport { healthy: true, message: None }));
    let (lattice, id, instance) = (&host_data.lattice, &host_data.provider_key, &host_data.instance_id);
    let sub = |s: String| {
        let nats = nats.clone();
        async move { nats.subscribe(s).await.map_err(|e| ProviderError::Failed(format!("cannot subscribe: {e}"))) }
    };
    let mut health_sub = sub(provider::health_subject(lattice, id, instance)).await?;
    let mut shutdown_sub = sub(provider::shutdown_subject(lattice, id, instance)).await?;
    trellis_lattice::round_trip(&nats).await?;
    let control = {
        let (nats, health, shutdown_tx) = (nats.clone(), health.clone(), shutdown_tx.clone());
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            loop {
                tokio::select! {
                    Some(msg) = health_sub.next() => {
                        let report = health.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        if let (Some(reply), Ok(body)) = (msg.reply, serde_json::to_vec(&report)) {
                            let _ = nats.publish(reply, body.into()).await;
                        }
                    }
                    Some(msg) = shutdown_sub.next() => {
                        if let Some(reply) = msg.reply {
                            let _ = nats.publish(reply, "{}".into()).await;
                            let _ = trellis_lattice::round_trip(&nats).await;
                        }
                        let _ = shutdown_tx.send(true);
                    }
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => futures::future::pending::<()>().await } } => {
                        let _ = shutdown_tx.send(true);
                    }
                    _ = tokio::signal::ctrl_c() => { let _ = shutdown_tx.send(true); }
                }
            }
        })
    };
    let ctx = ProviderContext { host_data: Arc::new(host_data.clone()), nats: nats.clone(), router, state, shutdown: shutdown_rx, health };
    tracing::info!(provider_id = host_data.provider_key, instance_id = host_data.instance_id, "provider running");
    let result = run(ctx).await;
    control.abort();
    // What the provider published last leaves now, unless NATS is gone: then nothing would, and
    // waiting for it must not keep the process (and its host's stop) alive.
    if nats.connection_state() == async_nats::connection::State::Connected
        && tokio::time::timeout(FINAL_FLUSH, trellis_lattice::round_trip(&nats)).await.is_err()
    {
        tracing::warn!("exiting without flushing: NATS did not answer within {} ms", FINAL_FLUSH.as_millis());
    }
    result
}

/// How long a provider process waits, as it exits, for NATS to take what it published last.
const FINAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

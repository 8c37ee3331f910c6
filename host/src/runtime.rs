//! The WebAssembly runtime: one wasmtime [`Engine`] per host (component model, async, pooling
//! allocator, epoch interruption driven by one ticker thread), components compiled once into an
//! [`InstancePre`] and a fresh [`Store`] per invocation.
//!
//! Least authority: the WASI context of every store has no preopened directories, no
//! environment, no arguments and no sockets; outbound HTTP goes only through a
//! `wasi:http/outgoing-handler` link ([`crate::outgoing`]); stdout and stderr go to the host
//! log tagged with the component id and the trace id of the invocation (`trace_id=`).
//!
//! Imports the host does not provide itself are satisfied through links: `prepare` links them
//! in a per-component clone of the host's linker ([`crate::c2c`]), and [`Runtime::invoke_func`]
//! calls an exported function on behalf of another component.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};
use trellis_lattice::ctl::DEFAULT_LINK_NAME;
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable, Val};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::c2c::{self, ExportedFunc, Exports, InterfaceName, Outbound};
use crate::compiled::CompiledCache;
use crate::error::{HostError, Result};

/// How often the epoch advances; the granularity of deadlines and of yielding to tokio.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How much of a linear memory slot of the pool stays resident once its instance is done: the
/// pages the instance dirtied below this (found with the `PAGEMAP_SCAN` ioctl on Linux ≥ 6.7)
/// are reset with `memset` instead of being unmapped, so the next instance in the slot takes
/// no page faults and no TLB shootdowns for them. Each slot that has been used holds at most
/// this much resident, so a host's resident memory grows by at most this times the number of
/// instances it ran at once (the pool reuses the slots it used last).
pub const MEMORY_KEEP_RESIDENT: usize = 2 << 20;
/// The same for each table slot.
pub const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// The packages whose interfaces the host's own linker supplies (wasmtime-wasi and
/// wasi-http). An instance import from any other package is satisfied through a link.
const HOST_PACKAGES: &[&str] = &["wasi:cli", "wasi:clocks", "wasi:filesystem", "wasi:http", "wasi:io", "wasi:random", "wasi:sockets"];

/// Whether the host itself provides the import `name` (`ns:pkg/iface@version`).
pub fn provided_by_host(name: &str) -> bool {
    let package = name.split_once('/').map_or(name, |(p, _)| p);
    HOST_PACKAGES.contains(&package) || crate::capabilities::PACKAGES.contains(&package) || crate::blobstore::PACKAGES.contains(&package)
}

/// What one invocation runs: a compiled component, the id it runs as, the named config it
/// reads and the limits in force.
#[derive(Clone, Copy)]
pub struct Guest<'a> {
    /// The component id (for logs, errors and `wasi:config`).
    pub id: &'a str,
    /// Its named config.
    pub config: &'a Arc<[String]>,
    /// The compiled component.
    pub prepared: &'a Prepared,
    /// The limits for this invocation.
    pub limits: Limits,
    /// The W3C trace context the invocation runs in: its calls out are made in it, and its
    /// log lines carry its trace id.
    pub traceparent: Option<&'a str>,
}

/// Limits applied to every invocation of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget of one invocation.
    pub max_execution_time: Duration,
    /// Cap on each linear memory of an instance, in bytes.
    pub max_linear_memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_execution_time: Duration::from_secs(10), max_linear_memory_bytes: 256 << 20 }
    }
}

/// The default cap of the compiled-code cache: 2 GiB.
pub const DEFAULT_COMPILED_CACHE_BYTES: u64 = 2 << 30;

/// Sizing of the engine.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The host-wide limits; per-component limits may only lower them.
    pub limits: Limits,
    /// How many instances may be alive at once across all components (the pool size).
    pub max_total_instances: u32,
    /// Use the pooling allocator when the address space allows it.
    pub pooling: bool,
    /// Where compiled components are kept across restarts (see [`crate::compiled`]); none when `None`.
    pub compiled_cache: Option<std::path::PathBuf>,
    /// The most the compiled-code cache holds on disk (bytes).
    pub compiled_cache_max_bytes: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_total_instances: 1000,
            pooling: true,
            compiled_cache: None,
            compiled_cache_max_bytes: DEFAULT_COMPILED_CACHE_BYTES,
        }
    }
}

/// The per-invocation state of a store.
pub struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: crate::outgoing::OutgoingHttp,
    limits: StoreLimits,
    link: LinkContext,
    /// Where calls through links go, and where config is read.
    outbound: Arc<dyn Outbound>,
    /// The named config the component was given.
    config: Arc<[String]>,
    /// The denials this store has logged ([`crate::deny`]).
    pub(crate) denials: crate::deny::Denials,
}

/// What a store's calls through links carry.
#[derive(Debug, Clone)]
pub struct LinkContext {
    /// The component the store runs.
    pub component_id: Arc<str>,
    /// Link names the component picked for some interfaces (`wasmcloud:bus/lattice`
    /// `set-link-name`); every other interface travels under `default`.
    pub link_names: Vec<(InterfaceName, String)>,
    /// When the invocation's execution budget runs out.
    pub deadline: Instant,
    /// The W3C trace context the invocation runs in (see [`Guest::traceparent`]).
    pub traceparent: Option<Arc<str>>,
}

impl LinkContext {
    /// The link name calls to `interface` travel under.
    pub fn link_name(&self, interface: &InterfaceName) -> &str {
        self.link_names.iter().rev().find(|(i, _)| i == interface).map_or(DEFAULT_LINK_NAME, |(_, n)| n)
    }
}

impl State {
    /// What calls through links carry.
    pub fn link_context(&self) -> &LinkContext {
        &self.link
    }

    /// Makes later calls to `interfaces` travel under link name `name`.
    pub fn set_link_name(&mut self, name: &str, interfaces: impl IntoIterator<Item = InterfaceName>) {
        for i in interfaces {
            self.link.link_names.retain(|(known, _)| *known != i);
            if name != DEFAULT_LINK_NAME {
                self.link.link_names.push((i, name.to_string()));
            }
        }
        // Outgoing HTTP picks its link by the same names.
        self.hooks.link.link_names.clone_from(&self.link.link_names);
    }

    /// The store's resources.
    pub fn table(&self) -> &ResourceTable {
        &self.table
    }

    /// See [`State::table`].
    pub fn table_mut(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Where calls through links go.
    pub fn outbound(&self) -> &Arc<dyn Outbound> {
        &self.outbound
    }

    /// The names of the component's config.
    pub fn config_names(&self) -> &[String] {
        &self.config
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// A compiled component, ready to instantiate.
pub struct Prepared {
    pre: InstancePre<State>,
    proxy: Option<ProxyPre<State>>,
    /// Its `wasi:http/handler@0.3.0` export, for a WASI 0.3 component ([`crate::p3`]).
    service: Option<wasmtime_wasi_http::p3::bindings::ServicePre<State>>,
    exports: Exports,
    /// Hex SHA-256 of the component bytes.
    pub digest: String,
}

impl Prepared {
    /// The functions it exports, by interface (without `@version`) and name.
    pub fn exports(&self) -> &Exports {
        &self.exports
    }
}

/// Stops the epoch ticker thread when the runtime goes away.
struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One compilation under way: its outcome, once there, for every load that waits on it.
type Compiling = tokio::sync::OnceCell<std::result::Result<Arc<Prepared>, String>>;

/// The host's WebAssembly runtime.
pub struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    /// Where calls through links go.
    outbound: Arc<dyn Outbound>,
    limits: Limits,
    pooling: bool,
    /// Compiled components by digest, so scaling or updating to the same bytes compiles once.
    cache: Mutex<HashMap<String, Weak<Prepared>>>,
    /// Compilations under way, by digest: a second scale of the same bytes (a reconciler
    /// sending again while a large component compiles) waits for the first instead of
    /// compiling beside it.
    compiling: Mutex<HashMap<String, Arc<Compiling>>>,
    /// Compiled components on disk, by the wasm's SHA-256.
    compiled: Option<Arc<CompiledCache>>,
    /// Rate limit of the "outgoing HTTP denied" warnings, per component.
    http_denials: Arc<crate::outgoing::DenialLog>,
    _ticker: Ticker,
}

impl Runtime {
    /// Builds the engine (pooling when possible, else on-demand, with a log line) and linker;
    /// components' calls through links go to `outbound`.
    pub fn new(config: &RuntimeConfig, outbound: Arc<dyn Outbound>) -> Result<Self> {
        let base = || {
            let mut c = Config::new();
            // Component-model async: WASI 0.3 components ([`crate::p3`]).
            c.wasm_component_model(true).wasm_component_model_async(true).epoch_interruption(true);
            c
        };
        let mut engine = None;
        let mut pooling = false;
        if config.pooling {
            let mut pool = PoolingAllocationConfig::default();
            let n = config.max_total_instances;
            pool.total_component_instances(n)
                .total_core_instances(n.saturating_mul(8))
                .total_memories(n.saturating_mul(2))
                .total_tables(n.saturating_mul(8))
                .total_stacks(n)
                .max_memories_per_component(4)
                .max_tables_per_component(16)
                .max_core_instances_per_component(32)
                .max_component_instance_size(1 << 20)
                .max_memory_size(config.limits.max_linear_memory_bytes)
                .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
                .table_keep_resident(TABLE_KEEP_RESIDENT)
                .pagemap_scan(wasmtime::Enabled::Auto);
            let mut c = base();
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
            match Engine::new(&c) {
                Ok(e) => {
                    engine = Some(e);
                    pooling = true;
                }
                Err(e) => tracing::warn!(error = %e, "pooling allocator unavailable (address space too small?); falling back to on-demand allocation"),
            }
        }
        let engine = match engine {
            Some(e) => e,
            None => Engine::new(&base()).map_err(|e| HostError::Engine(e.to_string()))?,
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| HostError::Engine(e.to_string()))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(|e| HostError::Engine(e.to_string()))?;
        // WASI 0.3 (cli, clocks, filesystem, random, sockets, http types and client) beside 0.2.
        wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(|e| HostError::Engine(e.to_string()))?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker).map_err(|e| HostError::Engine(e.to_string()))?;
        crate::capabilities::add_to_linker(&mut linker).map_err(|e| HostError::Engine(e.to_string()))?;
        crate::blobstore::add_to_linker(&mut linker).map_err(|e| HostError::Engine(e.to_string()))?;
        crate::deny::add_to_linker(&mut linker).map_err(|e| HostError::Engine(e.to_string()))?;

        let stop = Arc::new(AtomicBool::new(false));
        let (ticking, stop2) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("trellis-epoch".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| HostError::Engine(format!("cannot start the epoch ticker thread: {e}")))?;
        let compiled = config.compiled_cache.as_deref().map(|root| Arc::new(CompiledCache::new(root, &engine, config.compiled_cache_max_bytes)));
        Ok(Self {
            engine,
            linker,
            outbound,
            limits: config.limits,
            pooling,
            cache: Mutex::new(HashMap::new()),
            compiling: Mutex::default(),
            compiled,
            http_denials: Arc::default(),
            _ticker: Ticker(stop),
        })
    }

    /// Whether the pooling allocator is in use.
    pub fn is_pooling(&self) -> bool {
        self.pooling
    }

    /// The host-wide limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The engine.
    #[cfg(test)]
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The host's own linker (before any component's links).
    #[cfg(test)]
    pub(crate) fn host_linker(&self) -> &Linker<State> {
        &self.linker
    }

    /// Checks that `bytes` are a component, then compiles and pre-instantiates it (off the
    /// async workers), reusing an earlier compilation of the same bytes. Imports the host
    /// does not provide are linked to [`Outbound`] in a clone of the host's linker, once
    /// here and never per invocation.
    pub async fn prepare(self: &Arc<Self>, reference: &str, bytes: Vec<u8>) -> Result<Arc<Prepared>> {
        let load_err = |reason: String| HostError::Load { reference: reference.to_string(), reason };
        check_component_header(&bytes).map_err(load_err)?;
        let digest = hex(&Sha256::digest(&bytes));
        if let Some(p) = self.cache_lock().get(&digest).and_then(Weak::upgrade) {
            return Ok(p);
        }
        let cell = self.compiling.lock().unwrap_or_else(|p| p.into_inner()).entry(digest.clone()).or_default().clone();
        let outcome = cell.get_or_init(|| self.compile(digest.clone(), bytes)).await.clone();
        {
            let mut compiling = self.compiling.lock().unwrap_or_else(|p| p.into_inner());
            if compiling.get(&digest).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                compiling.remove(&digest);
            }
        }
        outcome.map_err(load_err)
    }

    /// Compiles (or loads from the disk cache) and links `bytes`, whose SHA-256 is `digest`.
    async fn compile(self: &Arc<Self>, digest: String, bytes: Vec<u8>) -> std::result::Result<Arc<Prepared>, String> {
        let this = self.clone();
        let digest2 = digest.clone();
        let prepared = tokio::task::spawn_blocking(move || -> std::result::Result<Prepared, String> {
            let cached = this.compiled.as_ref().and_then(|c| c.load(&this.engine, &digest2));
            let component = match cached {
                Some(component) => component,
                None => {
                    let component = Component::new(&this.engine, &bytes).map_err(|e| format!("invalid component: {e:#}"))?;
                    if let Some(cache) = this.compiled.clone() {
                        let (component, digest) = (component.clone(), digest2.clone());
                        tokio::task::spawn_blocking(move || cache.store(&digest, &component));
                    }
                    component
                }
            };
            let mut linker = this.linker.clone();
            c2c::link_imports(&mut linker, &this.engine, &component, &this.outbound)?;
            let exports = Exports::index(&this.engine, &component);
            let pre = linker.instantiate_pre(&component).map_err(|e| crate::p3::explain_unlinkable(&this.engine, &component, &e))?;
            let proxy = ProxyPre::new(pre.clone()).ok();
            let service = crate::p3::service_pre(&this.engine, &component, &pre)?;
            Ok(Prepared { pre, proxy, service, exports, digest: digest2 })
        })
        .await
        .map_err(|e| format!("compilation panicked: {e}"))??;
        let prepared = Arc::new(prepared);
        let mut cache = self.cache_lock();
        cache.retain(|_, w| w.strong_count() > 0);
        cache.insert(digest, Arc::downgrade(&prepared));
        Ok(prepared)
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Prepared>>> {
        // The cache holds no invariant a panic could break; recover from poisoning.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh store for one invocation of `component_id` (given the named configs `config`)
    /// under `limits`, in the trace context `traceparent`.
    pub fn new_store(&self, component_id: &str, config: &Arc<[String]>, limits: Limits, traceparent: Option<&str>) -> Store<State> {
        let deadline = Instant::now() + limits.max_execution_time;
        let id: Arc<str> = Arc::from(component_id);
        let traceparent: Option<Arc<str>> = traceparent.map(Arc::from);
        let trace_id: Option<Arc<str>> = traceparent.as_deref().and_then(trellis_lattice::telemetry::trace_id).map(Arc::from);
        let wasi = WasiCtx::builder()
            .stdout(LogStream { component_id: id.clone(), stream: "stdout", trace_id: trace_id.clone() })
            .stderr(LogStream { component_id: id.clone(), stream: "stderr", trace_id })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = State {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: crate::outgoing::OutgoingHttp {
                outbound: self.outbound.clone(),
                link: LinkContext { component_id: id.clone(), link_names: Vec::new(), deadline, traceparent: traceparent.clone() },
                denials: self.http_denials.clone(),
            },
            limits: StoreLimitsBuilder::new().memory_size(limits.max_linear_memory_bytes).trap_on_grow_failure(true).build(),
            link: LinkContext { component_id: id, link_names: Vec::new(), deadline, traceparent },
            outbound: self.outbound.clone(),
            config: config.clone(),
            denials: Default::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Yield to tokio at every epoch tick so a busy component never holds a worker for
        // long, and trap once the wall-clock deadline has passed.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| Ok(if Instant::now() >= deadline { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) }));
        store
    }

    /// Instantiates `prepared` in a fresh store and hands it `req` through
    /// `wasi:http/incoming-handler`. Returns as soon as the guest has set the response head;
    /// the body streams as the guest writes it and ends with the guest's own error if it
    /// fails later. `permit` (the component's concurrency slot) is held until the guest has
    /// finished, not just until the head; dropping the body stops the guest.
    pub async fn invoke_http_streaming<B, P>(&self, guest: Guest<'_>, req: http::Request<B>, permit: P) -> Result<http::Response<GuestBody>>
    where
        B: hyper::body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
        P: Send + 'static,
    {
        if let Some(service) = guest.prepared.service.clone() {
            return crate::p3::invoke_http(self, service, guest, req, permit).await;
        }
        let Guest { id: component_id, config, prepared, limits, traceparent } = guest;
        let proxy = prepared
            .proxy
            .clone()
            .ok_or_else(|| HostError::NotExported { id: component_id.into(), interface: trellis_lattice::rpc::http::INTERFACE.into() })?;
        let id: Arc<str> = Arc::from(component_id);
        let fail = |reason: String| HostError::Invocation { id: component_id.into(), reason };
        let mut store = self.new_store(component_id, config, limits, traceparent);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let incoming = store.data_mut().http().new_incoming_request(Scheme::Http, req).map_err(|e| fail(format!("{e:#}")))?;
        let out = store.data_mut().http().new_response_outparam(tx).map_err(|e| fail(format!("{e:#}")))?;
        // The guest runs in the task that awaits its head and then reads its body, not in a
        // task of its own: a request then costs no hand-over between tasks (and threads).
        let mut guest: GuestRun = Box::pin(unwinding(async move {
            let _permit = permit;
            let proxy = proxy.instantiate_async(&mut store).await?;
            proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, out).await
        }));
        let deadline = tokio::time::Instant::now() + limits.max_execution_time;
        let errors = GuestErrors { id: id.clone(), deadline_ms: limits.max_execution_time.as_millis() as u64 };
        let mut sleep = Box::pin(tokio::time::sleep_until(deadline));
        let (mut outcome, mut head, mut rx) = (None, None, rx);
        // Until the head: drive the guest, and see whether it has set the response. Without
        // one, the guest's own end (a trap, a return) says what went wrong.
        std::future::poll_fn(|cx| {
            if outcome.is_none()
                && let Poll::Ready(o) = guest.as_mut().poll(cx)
            {
                outcome = Some(o);
            }
            if head.is_none()
                && let Poll::Ready(r) = Pin::new(&mut rx).poll(cx)
            {
                head = Some(r);
            }
            match (&head, &outcome) {
                (Some(Ok(_)), _) | (_, Some(_)) => Poll::Ready(()),
                // Reaching the deadline first: the guest is stopped (dropped).
                _ => sleep.as_mut().poll(cx),
            }
        })
        .await;
        let response = match (head, outcome) {
            (Some(Ok(Ok(resp))), outcome) => (resp, outcome),
            (Some(Ok(Err(code))), _) => return Err(fail(format!("it answered with error code {code:?}"))),
            (_, Some(Ok(()))) => return Err(fail("it returned without setting a response".into())),
            (_, Some(Err(e))) => return Err(errors.guest(e)),
            (_, None) => return Err(errors.deadline()),
        };
        let ((parts, body), outcome) = (response.0.into_parts(), response.1);
        let stream = GuestStream {
            frames: http_body_util::BodyDataStream::new(body).boxed(),
            guest: if outcome.is_none() { Some(guest) } else { None },
            outcome,
            frames_done: None,
            deadline: sleep,
            errors,
            finished: false,
        };
        Ok(http::Response::from_parts(parts, stream.boxed()))
    }

    /// [`Runtime::invoke_http_streaming`] with the request and response bodies in memory.
    pub async fn invoke_http<P: Send + 'static>(&self, guest: Guest<'_>, req: http::Request<Bytes>, permit: P) -> Result<http::Response<Bytes>> {
        let req = req.map(|b| Full::new(b).map_err(|never| -> wasmtime_wasi_http::Error { match never {} }));
        let resp = self.invoke_http_streaming(guest, req, permit).await?;
        let (parts, mut body) = resp.into_parts();
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(http::Response::from_parts(parts, out.freeze()))
    }
}

impl Runtime {
    /// Instantiates `prepared` in a fresh store and calls its exported function `func` with
    /// `params` (already checked against its signature). `permit` is held until the guest has
    /// finished.
    pub async fn invoke_func<P: Send + 'static>(&self, guest: Guest<'_>, func: &ExportedFunc, params: Vec<Val>, permit: P) -> Result<Vec<Val>> {
        let Guest { id: component_id, config, prepared, limits, traceparent } = guest;
        let id: Arc<str> = Arc::from(component_id);
        let errors = GuestErrors { id: id.clone(), deadline_ms: limits.max_execution_time.as_millis() as u64 };
        let mut store = self.new_store(component_id, config, limits, traceparent);
        let (pre, index, n_results) = (prepared.pre.clone(), func.index, func.ty.results().len());
        // Run in the caller's task (no task of its own, so no hand-over); dropping the call
        // drops the guest.
        let run = unwinding(async move {
            let _permit = permit;
            let instance = pre.instantiate_async(&mut store).await?;
            let f = instance.get_func(&mut store, index).ok_or_else(|| wasmtime::Error::msg("the export is not a function"))?;
            let mut results = vec![Val::Bool(false); n_results];
            f.call_async(&mut store, &params, &mut results).await?;
            Ok::<_, wasmtime::Error>(results)
        });
        let deadline = tokio::time::Instant::now() + limits.max_execution_time;
        match tokio::time::timeout_at(deadline, run).await {
            Err(_) => Err(errors.deadline()),
            Ok(Ok(results)) => Ok(results),
            Ok(Err(e)) => Err(errors.guest(e)),
        }
    }
}

/// `run`, with a panic in it (a host function's bug) turned into the guest's error instead of
/// unwinding through the task that runs it.
fn unwinding<T>(
    run: impl Future<Output = std::result::Result<T, wasmtime::Error>> + Send + 'static,
) -> impl Future<Output = std::result::Result<T, wasmtime::Error>> + Send + 'static {
    use futures::FutureExt as _;
    std::panic::AssertUnwindSafe(run).catch_unwind().map(|r| {
        r.unwrap_or_else(|panic| {
            let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
            Err(wasmtime::Error::msg(format!("the invocation panicked: {what}")))
        })
    })
}

/// A guest's response body, as it streams out.
pub type GuestBody = futures::stream::BoxStream<'static, Result<Bytes>>;

/// The guest's run: instantiation and its call, owning its store (and the caller's permit).
type GuestRun = Pin<Box<dyn Future<Output = std::result::Result<(), wasmtime::Error>> + Send>>;

/// Aborts the guest's task (and so frees its store and slot) when the caller goes away (a
/// WASI 0.3 guest runs in a task of its own: `p3.rs`).
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The response body of a guest that runs in the task that reads it: each poll of the body
/// first drives the guest, then takes what it has written. No task of its own, so a request
/// costs no hand-over between tasks; dropping the body drops the guest (and frees its store
/// and slot). The guest's deadline bounds it all; a body that fails or ends early reports the
/// guest's own error (a trap) when there is one.
struct GuestStream {
    frames: futures::stream::BoxStream<'static, std::result::Result<Bytes, wasmtime_wasi_http::Error>>,
    /// The guest, while it runs.
    guest: Option<GuestRun>,
    /// How the guest ended, once it has.
    outcome: Option<std::result::Result<(), wasmtime::Error>>,
    /// The frames ended (`Ok`) or failed (`Err`): only the guest's outcome is still awaited.
    frames_done: Option<std::result::Result<(), wasmtime_wasi_http::Error>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    errors: GuestErrors,
    finished: bool,
}

impl GuestStream {
    /// Drives the guest one step; true once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(guest) = &mut self.guest
            && let Poll::Ready(outcome) = guest.as_mut().poll(cx)
        {
            self.guest = None;
            self.outcome = Some(outcome);
        }
        self.guest.is_none()
    }

    fn end(&mut self, item: Option<Result<Bytes>>) -> Poll<Option<Result<Bytes>>> {
        self.finished = true;
        self.guest = None;
        Poll::Ready(item)
    }
}

impl futures::Stream for GuestStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        let ended = this.drive(cx);
        if this.frames_done.is_none() {
            match this.frames.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => return Poll::Ready(Some(Ok(bytes))),
                Poll::Ready(Some(Err(code))) => this.frames_done = Some(Err(code)),
                Poll::Ready(None) => this.frames_done = Some(Ok(())),
                Poll::Pending => {}
            }
        }
        // The frames are done once the guest is: its store (and the body's sender) went with it.
        let ended = ended || this.drive(cx);
        match (&this.frames_done, ended) {
            (Some(_), true) => {
                let item = match (this.outcome.take(), this.frames_done.take()) {
                    (Some(Err(guest)), _) => Some(Err(this.errors.guest(guest))),
                    (_, Some(Err(code))) => {
                        Some(Err(HostError::Invocation { id: this.errors.id.to_string(), reason: format!("its response body failed: {code}") }))
                    }
                    _ => None,
                };
                this.end(item)
            }
            _ => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let e = this.errors.deadline();
                    this.end(Some(Err(e)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// Turns guest failures into errors that name the component.
pub(crate) struct GuestErrors {
    pub(crate) id: Arc<str>,
    pub(crate) deadline_ms: u64,
}

impl GuestErrors {
    pub(crate) fn deadline(&self) -> HostError {
        HostError::Deadline { id: self.id.to_string(), deadline_ms: self.deadline_ms }
    }

    pub(crate) fn guest(&self, e: wasmtime::Error) -> HostError {
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => self.deadline(),
            _ => {
                tracing::debug!(component_id = %self.id, error = ?e, "guest failed");
                HostError::Invocation { id: self.id.to_string(), reason: guest_error_message(&e) }
            }
        }
    }
}

/// A guest failure in words: the error chain without the wasm backtrace (which goes to the
/// debug log), e.g. `error while executing at wasm backtrace: … ` becomes the trap's message.
pub fn guest_error_message(e: &wasmtime::Error) -> String {
    let parts: Vec<String> = e.chain().map(|c| c.to_string()).filter(|m| !m.starts_with("error while executing at wasm backtrace")).collect();
    if parts.is_empty() { e.to_string() } else { parts.join(": ") }
}

/// Tells garbage and core modules apart from components, with a message that says what to do.
pub fn check_component_header(bytes: &[u8]) -> std::result::Result<(), String> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
            Err("it is a core WebAssembly module, not a component; build it for wasm32-wasip2 or wrap it with `wasm-tools component new`".into())
        }
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', ..]) => Err("it is WebAssembly of an unknown version or layer".into()),
        _ => Err(format!("it is not WebAssembly ({} bytes that do not start with `\\0asm`)", bytes.len())),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Guest stdout/stderr, line by line into the host log, tagged with the component id and the
/// trace id of the invocation that wrote them.
struct LogStream {
    component_id: Arc<str>,
    stream: &'static str,
    trace_id: Option<Arc<str>>,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineLogger { component_id: self.component_id.clone(), stream: self.stream, trace_id: self.trace_id.clone(), buf: Vec::new() })
    }
}

struct LineLogger {
    component_id: Arc<str>,
    stream: &'static str,
    trace_id: Option<Arc<str>>,
    buf: Vec<u8>,
}

impl LineLogger {
    /// Longest line kept before it is logged in pieces, so a guest cannot grow host memory.
    const MAX_LINE: usize = 16 * 1024;

    fn emit(&mut self, upto: usize) {
        let line: Vec<u8> = self.buf.drain(..upto).collect();
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        // `trace_id` is left out of the line when there is none.
        tracing::info!(target: "trellis::component", component_id = %self.component_id, stream = self.stream, trace_id = self.trace_id.as_deref().map(tracing::field::display), "{text}");
    }
}

impl tokio::io::AsyncWrite for LineLogger {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        self.buf.extend_from_slice(data);
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            self.emit(pos + 1);
        }
        if self.buf.len() > Self::MAX_LINE {
            let n = self.buf.len();
            self.emit(n);
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.buf.is_empty() {
            let n = self.buf.len();
            self.emit(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineLogger {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let n = self.buf.len();
            self.emit(n);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn header_sniffing() {
        assert!(check_component_header(b"hello world").unwrap_err().contains("not WebAssembly"));
        let core = wat::parse_str("(module)").unwrap();
        assert!(check_component_header(&core).unwrap_err().contains("core WebAssembly module"));
        let component = wat::parse_str("(component)").unwrap();
        assert!(check_component_header(&component).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_loads_of_the_same_bytes_compile_once() {
        let config = RuntimeConfig { pooling: false, ..RuntimeConfig::default() };
        let runtime = Arc::new(Runtime::new(&config, Arc::new(crate::c2c::tests::Nowhere)).unwrap());
        // Big enough that the second load starts while the first compiles.
        let funcs: String = (0..2000).map(|i| format!("(func (export \"f{i}\") (result i32) i32.const {i})")).collect();
        let bytes = wat::parse_str(format!("(component (core module {funcs}))")).unwrap();
        let (a, b) = tokio::join!(runtime.prepare("a", bytes.clone()), runtime.prepare("b", bytes));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(Arc::ptr_eq(&a, &b), "two compilations of the same bytes");
        assert!(runtime.compiling.lock().unwrap().is_empty());
    }
}

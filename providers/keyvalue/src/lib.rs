//! # trellis-provider-keyvalue
//!
//! Serves `wasi:keyvalue/store`, `wasi:keyvalue/atomics`, `wasi:keyvalue/batch`
//! (`@0.2.0-draft`) and `trellis:keyvalue/cas` to the components linked to it, over one of
//! three backends: in-process memory, NATS JetStream KV, or Redis. It is the link *target*:
//!
//! ```text
//! wash config put kv-cfg bucket=counters enable_bucket_auto_create=true
//! wash start provider builtin://keyvalue kv
//! wash link put COMPONENT kv wasi keyvalue --interface store --interface atomics --interface batch --target-config kv-cfg
//! ```
//!
//! Calls arrive on the data plane in the wire form of [`trellis_lattice::keyvalue`] (the
//! bucket resource travels as the identifier the component opened). For each call the
//! provider finds the caller's `wasi:keyvalue` link to it (source = the calling component,
//! link name as called; `trellis:keyvalue/cas` uses that same link) and reads its settings
//! *at that moment*: the provider's own config overlaid by the link's target config, so a
//! config change (a new bucket, another Redis) applies to the next call without a restart. A
//! call with no such link gets a `wasi:keyvalue` `error::other` naming the missing link and
//! the `wash link put` that adds it; a call that cannot be decoded gets a data-plane error of
//! kind `Malformed` saying what is wrong.
//!
//! ## Settings (provider config, overlaid by the link's target config; keys are case-insensitive)
//!
//! | key | meaning |
//! |---|---|
//! | `backend` | `memory`, `nats` or `redis`. Default: `redis` if `URL` is set, else `nats` if `bucket`, `js_domain` or `cluster_uri` is set, else `memory` |
//! | `bucket` | the bucket that `open("default")` / `open("")` uses (default `default`) |
//! | `cluster_uri` | NATS: the server holding the buckets (default: the provider's own lattice connection) |
//! | `js_domain` | NATS: the JetStream domain. Default: on the lattice connection, the host's `--js-domain` (the lattice's own); with `cluster_uri`, that server's own |
//! | `enable_bucket_auto_create` | NATS: `true` creates a missing bucket on `open` (default `false`: an error, see below) |
//! | `URL` | Redis: `redis://[user:password@]host:port[/db]` (default `redis://127.0.0.1:6379/` when `backend=redis`) |
//!
//! ## Identifiers
//!
//! `open("default")`, `open("")` and `open(B)` where `B` is the configured `bucket` all open
//! the configured bucket. Any other identifier names a bucket of its own:
//!
//! - memory: a separate map (held by this provider run; gone when it stops);
//! - NATS: the JetStream KV bucket of that name (letters, digits, `-`, `_`); a missing one is
//!   an `error::other` starting `nats backend: no such store:` that names the bucket, the
//!   server and the fix (the bare `no-such-store` case carries no words), unless
//!   `enable_bucket_auto_create=true`, which creates it (history 1);
//! - Redis: the same server, keys prefixed `IDENTIFIER:`; the configured bucket uses keys as
//!   they are (as wasmCloud's Redis provider does), so its `list-keys` also sees prefixed
//!   keys of other identifiers.
//!
//! `open` checks that the bucket is usable: NATS that it exists (or creates it), Redis that
//! the server answers `PING`.
//!
//! ## Values and atomicity
//!
//! Counters are ASCII decimal numbers (what wasmCloud stores); a missing key counts as 0 and
//! incrementing anything else is an `error::other` saying so. `list-keys` pages hold at most
//! 1000 keys.
//!
//! - memory: every operation runs under one lock, so increment and compare-and-swap are
//!   atomic; list-keys cursors are offsets into the sorted keys.
//! - NATS: increment and compare-and-swap read the key's revision, decide, and write only if
//!   the revision is unchanged (`update` with the revision read, or 0 for a key never
//!   written); on a conflict they read again and decide again, so they are atomic with respect
//!   to every other writer. Batches are not transactions (each key is written on its own).
//!   list-keys cursors are offsets into the sorted keys.
//! - Redis: `INCRBY` (counters up to `i64::MAX`), compare-and-swap is one Lua script (`EVAL`),
//!   `MGET`/`MSET`/`DEL` for batches (atomic in Redis); list-keys is `SCAN` (its cursor is
//!   Redis' cursor; a key may appear on two pages). The connection is made on first use and
//!   remade after it breaks: while Redis is down every call fails fast with an error naming the
//!   backend, the server and the cause, and calls work again as soon as it is back.
//!
//! Every error is a `wasi:keyvalue` `error` value whose text names the backend and the cause;
//! nothing panics or traps. Backends are cached per (backend, connection settings, bucket), so
//! connections are reused across calls and components.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use trellis_lattice::keyvalue::{KvError, KvResult, Reply, Request};
use trellis_lattice::rpc::{self, CallInfo, Handler, Invocation, Response, RpcError, RpcErrorKind};
use trellis_lattice::telemetry::{self, SpanKind, TraceSpan};
use trellis_lattice::wit_value;
use trellis_provider_sdk::{Builtin, ProviderContext, ProviderError, StringMap};

pub mod memory;
pub mod nats;
pub mod redis;
pub mod store;

pub use self::memory::MemoryStore;
pub use self::nats::NatsStore;
pub use self::redis::{RedisConnection, RedisStore};
pub use self::store::{KeyPage, KeyValue, KeyValueStore, KvFuture, LIST_PAGE_SIZE, execute};

/// The provider's name, as in `builtin://keyvalue`.
pub const NAME: &str = "keyvalue";

/// The bucket name used for the configured bucket when `bucket` is not set.
pub const DEFAULT_BUCKET: &str = "default";

/// The Redis server used when `backend=redis` and no `URL` is given.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// How long connecting to a `cluster_uri` may take.
const NATS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// This provider as a host built-in.
pub fn builtin() -> Builtin {
    Builtin { name: NAME, run }
}

/// The provider's entry point.
pub fn run(ctx: ProviderContext) -> BoxFuture<'static, Result<(), ProviderError>> {
    Box::pin(serve(ctx))
}

async fn serve(ctx: ProviderContext) -> Result<(), ProviderError> {
    let handler =
        Arc::new(KvHandler { inner: Arc::new(Inner { backends: Backends::new(ctx.nats().clone(), ctx.host_data().js_domain.clone()), ctx: ctx.clone() }) });
    ctx.serve_calls(handler, "keyvalue").await
}

/// Which backend serves a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// In-process maps.
    Memory,
    /// NATS JetStream KV.
    Nats,
    /// Redis.
    Redis,
}

/// A link's settings: the provider's config overlaid by the link's target config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The backend.
    pub backend: Backend,
    /// `bucket`: what `open("default")` opens.
    pub bucket: Option<String>,
    /// `cluster_uri` (NATS).
    pub cluster_uri: Option<String>,
    /// `js_domain` (NATS).
    pub js_domain: Option<String>,
    /// `enable_bucket_auto_create` (NATS).
    pub auto_create: bool,
    /// `URL` (Redis).
    pub url: Option<String>,
}

impl Settings {
    /// Reads `provider` config overlaid by `link` config (keys compared case-insensitively,
    /// empty values count as unset). The error names the key and the value that is wrong.
    pub fn from_config(provider: &StringMap, link: &StringMap) -> Result<Self, String> {
        let mut merged: HashMap<String, String> = HashMap::new();
        for (k, v) in provider.iter().chain(link.iter()) {
            merged.insert(k.to_ascii_lowercase(), v.clone());
        }
        let get = |k: &str| merged.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let bucket = get("bucket");
        let cluster_uri = get("cluster_uri");
        let js_domain = get("js_domain");
        let url = get("url");
        let auto_create = match get("enable_bucket_auto_create").map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("false") | Some("no") | Some("0") => false,
            Some("true") | Some("yes") | Some("1") => true,
            Some(other) => return Err(format!("`enable_bucket_auto_create` is `{other}`; use `true` or `false`")),
        };
        let backend = match get("backend").map(|v| v.to_ascii_lowercase()).as_deref() {
            Some("memory") => Backend::Memory,
            Some("nats") => Backend::Nats,
            Some("redis") => Backend::Redis,
            Some(other) => return Err(format!("`backend` is `{other}`; use `memory`, `nats` or `redis`")),
            None if url.is_some() => Backend::Redis,
            None if bucket.is_some() || js_domain.is_some() || cluster_uri.is_some() => Backend::Nats,
            None => Backend::Memory,
        };
        Ok(Self { backend, bucket, cluster_uri, js_domain, auto_create, url })
    }

    /// Whether `identifier` means the configured bucket.
    pub fn is_configured_bucket(&self, identifier: &str) -> bool {
        identifier.is_empty() || identifier == DEFAULT_BUCKET || self.bucket.as_deref() == Some(identifier)
    }

    /// The bucket name `identifier` opens (memory and NATS).
    pub fn bucket_name(&self, identifier: &str) -> String {
        if self.is_configured_bucket(identifier) { self.bucket.clone().unwrap_or_else(|| DEFAULT_BUCKET.to_string()) } else { identifier.to_string() }
    }
}

/// What a cached store is keyed by: backend, connection settings, bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum StoreKey {
    Memory { bucket: String },
    Nats { cluster_uri: Option<String>, js_domain: Option<String>, bucket: String },
    Redis { url: String, prefix: Option<String> },
}

/// Every backend store in use, cached so that connections are made once and reused.
pub struct Backends {
    lattice_nats: async_nats::Client,
    /// The lattice's JetStream domain (the host's `--js-domain`): the default for buckets on
    /// the lattice connection, so a provider on an edge host reaches the same buckets as one
    /// on the hub.
    lattice_js_domain: Option<String>,
    stores: Mutex<HashMap<StoreKey, Arc<dyn KeyValueStore>>>,
    nats_clients: tokio::sync::Mutex<HashMap<String, async_nats::Client>>,
    redis: Mutex<HashMap<String, Arc<RedisConnection>>>,
}

impl Backends {
    /// No stores yet; NATS buckets without `cluster_uri` live on `lattice_nats`, in JetStream
    /// domain `lattice_js_domain` unless the settings name one.
    pub fn new(lattice_nats: async_nats::Client, lattice_js_domain: Option<String>) -> Self {
        Self { lattice_nats, lattice_js_domain, stores: Mutex::default(), nats_clients: tokio::sync::Mutex::default(), redis: Mutex::default() }
    }

    /// The store `identifier` names under `settings`; NATS buckets on the lattice connection
    /// are in `lattice_js_domain` unless the settings name a domain.
    fn key(settings: &Settings, identifier: &str, lattice_js_domain: Option<&str>) -> StoreKey {
        match settings.backend {
            Backend::Memory => StoreKey::Memory { bucket: settings.bucket_name(identifier) },
            Backend::Nats => StoreKey::Nats {
                cluster_uri: settings.cluster_uri.clone(),
                js_domain: match (&settings.js_domain, &settings.cluster_uri) {
                    (Some(d), _) => Some(d.clone()),
                    (None, None) => lattice_js_domain.map(str::to_string),
                    (None, Some(_)) => None,
                },
                bucket: settings.bucket_name(identifier),
            },
            Backend::Redis => StoreKey::Redis {
                url: settings.url.clone().unwrap_or_else(|| DEFAULT_REDIS_URL.to_string()),
                prefix: (!settings.is_configured_bucket(identifier)).then(|| format!("{identifier}:")),
            },
        }
    }

    fn cached(&self, key: &StoreKey) -> Option<Arc<dyn KeyValueStore>> {
        self.stores.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    fn forget(&self, key: &StoreKey) {
        self.stores.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// The store `identifier` opens under `settings`, made (and cached) if needed. NATS: a
    /// missing bucket is [`KvError::NoSuchStore`] unless auto-create is on.
    pub async fn store(&self, settings: &Settings, identifier: &str) -> Result<Arc<dyn KeyValueStore>, KvError> {
        let key = Self::key(settings, identifier, self.lattice_js_domain.as_deref());
        if let StoreKey::Nats { bucket, .. } = &key
            && trellis_lattice::state::is_reserved_bucket(bucket)
        {
            tracing::warn!(bucket, "refused a key-value call on a bucket that holds lattice state");
            return Err(KvError::AccessDenied);
        }
        if let Some(store) = self.cached(&key) {
            return Ok(store);
        }
        let store: Arc<dyn KeyValueStore> = match &key {
            StoreKey::Memory { bucket } => Arc::new(MemoryStore::new(bucket)),
            StoreKey::Nats { cluster_uri, js_domain, bucket } => {
                let client = self.nats_client(cluster_uri.as_deref(), bucket).await?;
                let js = trellis_lattice::state::jetstream(client, js_domain.as_deref());
                Arc::new(NatsStore::open(&js, bucket, settings.auto_create).await?)
            }
            StoreKey::Redis { url, prefix } => Arc::new(RedisStore::new(self.redis_connection(url)?, prefix.clone())),
        };
        // Two first calls may race here; the first store cached wins, so both use the same one.
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        Ok(stores.entry(key).or_insert(store).clone())
    }

    /// `store.open`: the store, checked to be usable now. A cached NATS bucket that was
    /// deleted since is forgotten and opened again (so auto-create can recreate it).
    pub async fn open(&self, settings: &Settings, identifier: &str) -> Result<Arc<dyn KeyValueStore>, KvError> {
        let store = self.store(settings, identifier).await?;
        match store.check().await {
            Err(KvError::NoSuchStore) => {
                self.forget(&Self::key(settings, identifier, self.lattice_js_domain.as_deref()));
                let store = self.store(settings, identifier).await?;
                store.check().await?;
                Ok(store)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(store),
        }
    }

    async fn nats_client(&self, cluster_uri: Option<&str>, bucket: &str) -> Result<async_nats::Client, KvError> {
        let Some(uri) = cluster_uri else { return Ok(self.lattice_nats.clone()) };
        let mut clients = self.nats_clients.lock().await;
        if let Some(client) = clients.get(uri) {
            return Ok(client.clone());
        }
        let client = async_nats::ConnectOptions::new()
            .name("trellis keyvalue provider")
            .connection_timeout(NATS_CONNECT_TIMEOUT)
            .connect(uri)
            .await
            .map_err(|e| KvError::Other(format!("nats backend (bucket `{bucket}`, cluster_uri `{uri}`): cannot connect: {e}")))?;
        clients.insert(uri.to_string(), client.clone());
        Ok(client)
    }

    fn redis_connection(&self, url: &str) -> Result<Arc<RedisConnection>, KvError> {
        let mut conns = self.redis.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conn) = conns.get(url) {
            return Ok(conn.clone());
        }
        let conn = Arc::new(RedisConnection::new(url)?);
        conns.insert(url.to_string(), conn.clone());
        Ok(conn)
    }
}

struct Inner {
    ctx: ProviderContext,
    backends: Backends,
}

/// Answers data-plane calls for the provider.
struct KvHandler {
    inner: Arc<Inner>,
}

impl Handler for KvHandler {
    fn call(&self, inv: Invocation) -> BoxFuture<'static, Result<Response, RpcError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.answer(inv).await })
    }
}

impl Inner {
    async fn answer(&self, inv: Invocation) -> Result<Response, RpcError> {
        let call = inv.call;
        // The interface travels without its version; accept one anyway.
        let interface = call.interface.split_once('@').map_or(call.interface.as_str(), |(i, _)| i);
        let args = wit_value::decode(&inv.head).map_err(|e| {
            RpcError::new(RpcErrorKind::Malformed, &call, format!("the arguments of `{interface}.{}` could not be decoded: {e}", call.function))
        })?;
        let req = Request::from_call(interface, &call.function, args).map_err(|e| RpcError::new(RpcErrorKind::Malformed, &call, e.to_string()))?;
        let outcome = self.execute(&call, req.clone(), inv.traceparent.as_deref()).await;
        if let Err(e) = &outcome {
            tracing::debug!(source = call.source, function = call.function, bucket = req.bucket(), error = %e, "key-value call failed");
        }
        Ok(Response { head: wit_value::encode(&req.encode_results(&outcome)), body: rpc::full_body(Bytes::new()) })
    }

    /// Runs `req` on the backend of the caller's link; with traces on, the backend work is a
    /// span (`{backend} {function}`, OTel's database conventions) under `traceparent`.
    async fn execute(&self, call: &CallInfo, req: Request, traceparent: Option<&str>) -> KvResult {
        let ctx = &self.ctx;
        let link = ctx
            .caller_link(call, "wasi", "keyvalue", &[], " --interface store --interface atomics --interface batch --target-config <config>")
            .map_err(KvError::Other)?;
        let link_config = ctx.state().merged_config(&link.target_config);
        let settings = Settings::from_config(ctx.config(), &link_config)
            .map_err(|e| KvError::Other(format!("key-value provider `{}`: the settings of the link from `{}` are wrong: {e}", ctx.id(), call.source)))?;
        let mut span = backend_span(&settings, call, req.bucket(), traceparent);
        let outcome = async {
            match &req {
                Request::Open { bucket } => self.backends.open(&settings, bucket).await.map(|_| Reply::Unit),
                _ => match self.backends.store(&settings, req.bucket()).await {
                    Ok(store) => execute(store.as_ref(), req.clone()).await,
                    Err(e) => Err(e),
                },
            }
        }
        .await;
        match &outcome {
            Err(e) if span.is_recording() => span.record_error("keyvalue", &e.to_string()),
            Ok(_) => span.set(telemetry::KeyValue::new(telemetry::attr::OUTCOME, "ok")),
            Err(_) => {}
        }
        // `no-such-store` carries no words; say which bucket, where, and what to do.
        outcome.map_err(|e| match e {
            KvError::NoSuchStore => KvError::Other(no_such_store(&settings, req.bucket())),
            e => e,
        })
    }
}

/// The span of one backend operation (disabled when traces are off).
fn backend_span(settings: &Settings, call: &CallInfo, identifier: &str, traceparent: Option<&str>) -> TraceSpan {
    if !telemetry::enabled() {
        return TraceSpan::none();
    }
    let (system, kind) = match settings.backend {
        Backend::Memory => ("memory", SpanKind::Internal),
        Backend::Nats => ("nats", SpanKind::Client),
        Backend::Redis => ("redis", SpanKind::Client),
    };
    let mut span = TraceSpan::start("keyvalue backend", kind, traceparent, || {
        vec![
            telemetry::KeyValue::new("db.system.name", system),
            telemetry::KeyValue::new("db.operation.name", call.function.clone()),
            telemetry::KeyValue::new("db.namespace", settings.bucket_name(identifier)),
            telemetry::KeyValue::new(telemetry::attr::SOURCE, call.source.clone()),
            telemetry::KeyValue::new(telemetry::attr::LINK_NAME, call.link_name.clone()),
        ]
    });
    if span.is_recording() {
        span.rename(format!("{system} {}", call.function));
    }
    span
}

fn no_such_store(settings: &Settings, identifier: &str) -> String {
    let bucket = settings.bucket_name(identifier);
    let server = settings.cluster_uri.as_deref().map_or_else(|| "the lattice's NATS".to_string(), |u| format!("`{u}`"));
    let domain = settings.js_domain.as_deref().map(|d| format!(", JetStream domain `{d}`")).unwrap_or_default();
    format!(
        "nats backend: no such store: the KV bucket `{bucket}` does not exist on {server}{domain}; \
         create it (`nats kv add {bucket}`) or set enable_bucket_auto_create=true in the link's target config"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> StringMap {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn backend_defaults_follow_the_keys_given() {
        let s = |p: &[(&str, &str)], l: &[(&str, &str)]| Settings::from_config(&map(p), &map(l)).unwrap();
        assert_eq!(s(&[], &[]).backend, Backend::Memory);
        assert_eq!(s(&[("URL", "redis://x/")], &[]).backend, Backend::Redis);
        assert_eq!(s(&[], &[("url", "redis://x/")]).url.as_deref(), Some("redis://x/"));
        assert_eq!(s(&[("bucket", "b")], &[]).backend, Backend::Nats);
        assert_eq!(s(&[("js_domain", "d")], &[]).backend, Backend::Nats);
        assert_eq!(s(&[("cluster_uri", "nats://x")], &[]).backend, Backend::Nats);
        assert_eq!(s(&[("bucket", "b"), ("backend", "memory")], &[]).backend, Backend::Memory);
        // The link's config wins over the provider's.
        let both = s(&[("bucket", "a"), ("enable_bucket_auto_create", "false")], &[("bucket", "b"), ("enable_bucket_auto_create", "TRUE")]);
        assert_eq!((both.bucket.as_deref(), both.auto_create), (Some("b"), true));
        assert!(Settings::from_config(&map(&[("backend", "etcd")]), &map(&[])).unwrap_err().contains("`backend` is `etcd`"));
        assert!(Settings::from_config(&map(&[("enable_bucket_auto_create", "maybe")]), &map(&[])).unwrap_err().contains("enable_bucket_auto_create"));
    }

    #[test]
    fn identifiers_name_buckets() {
        let s = Settings::from_config(&map(&[("bucket", "counters")]), &map(&[])).unwrap();
        for id in ["", "default", "counters"] {
            assert!(s.is_configured_bucket(id));
            assert_eq!(s.bucket_name(id), "counters");
        }
        assert_eq!(s.bucket_name("other"), "other");
        let plain = Settings::from_config(&map(&[]), &map(&[])).unwrap();
        assert_eq!(plain.bucket_name(""), DEFAULT_BUCKET);
        let redis = Settings::from_config(&map(&[("URL", "redis://h/")]), &map(&[])).unwrap();
        assert_eq!(Backends::key(&redis, "default", None), StoreKey::Redis { url: "redis://h/".into(), prefix: None });
        assert_eq!(Backends::key(&redis, "sessions", None), StoreKey::Redis { url: "redis://h/".into(), prefix: Some("sessions:".into()) });
    }

    #[test]
    fn nats_buckets_on_the_lattice_connection_default_to_the_lattice_domain() {
        let nats = |cfg: &[(&str, &str)], lattice: Option<&str>| match Backends::key(&Settings::from_config(&map(cfg), &map(&[])).unwrap(), "default", lattice)
        {
            StoreKey::Nats { js_domain, .. } => js_domain,
            other => panic!("{other:?}"),
        };
        assert_eq!(nats(&[("bucket", "b")], Some("hub")).as_deref(), Some("hub"));
        assert_eq!(nats(&[("bucket", "b"), ("js_domain", "other")], Some("hub")).as_deref(), Some("other"));
        assert_eq!(nats(&[("bucket", "b"), ("cluster_uri", "nats://elsewhere:4222")], Some("hub")), None);
        assert_eq!(nats(&[("bucket", "b")], None), None);
    }
}

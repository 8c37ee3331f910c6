//! The interfaces the host implements itself for components, beyond WASI and wasi-http
//! (generated from `interfaces/trellis-host/world.wit`):
//!
//! - `wasi:keyvalue/store`, `atomics`, `batch` (`@0.2.0-draft`) and `trellis:keyvalue/cas`:
//!   one implementation over the data plane. The `bucket` resource stays in the store (it is
//!   the identifier the component opened); every operation becomes a call to the provider the
//!   component's `wasi:keyvalue` link names, in the wire form of [`trellis_lattice::keyvalue`].
//!   Whatever the backend, a failure reaches the component as an `error` value, never a trap.
//! - `wasi:logging/logging`: to the host log, tagged with the component id.
//! - `wasi:config/store` and its earlier name `wasi:config/runtime` (`@0.2.0-draft`): the
//!   component's named config, merged, read from the live registry view at every call.
//! - `wasmcloud:bus/lattice@2.0.0`: `set-link-name` picks the link name later calls to some
//!   interfaces travel under, in this store (every interface starts at `default`); it fails
//!   when no such link exists at call time.
//!
//! - `wasmcloud:secrets/store` and `reveal` (`@0.1.0-draft`): `get(name)` finds the secret
//!   reference named `name` among the component's `SECRET_*` config (what it was started with),
//!   fetches the value from the reference's backend (`trellis_lattice::secrets`, sealed on the
//!   wire) and keeps it in the store's resource table as a `secret`; `reveal` hands it over.
//!   A secret it was not granted, or a backend failure, is a `secrets-error`; no message
//!   carries a value, and nothing here logs one.
//!
//! Messaging and custom interfaces are not here: they reach their targets through the generic
//! link mechanism of [`crate::c2c`].

use trellis_lattice::keyvalue::{self, CasOutcome, KvError, Reply, Request};
use wasmtime::component::{HasSelf, Linker, Resource};

use crate::c2c::{InterfaceName, LinkedCall};
use crate::runtime::State;

mod bindings {
    wasmtime::component::bindgen!({
        path: [
            "../interfaces/wasi-keyvalue",
            "../interfaces/trellis-keyvalue",
            "../interfaces/wasi-logging",
            "../interfaces/wasi-config",
            "../interfaces/wasmcloud-bus",
            "../interfaces/wasmcloud-secrets",
            "../interfaces/trellis-host",
        ],
        world: "trellis:host/host",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
            "wasmcloud:bus/lattice.call-target-interface": crate::c2c::InterfaceName,
            "wasmcloud:secrets/store.secret": super::HeldSecret,
        },
    });
}

use bindings::trellis::keyvalue::cas;
use bindings::wasi::config::{runtime as config_runtime, store as config_store};
use bindings::wasi::keyvalue::{atomics, batch, store};
use bindings::wasi::logging::logging;
use bindings::wasmcloud::bus::lattice;
use bindings::wasmcloud::secrets::{reveal, store as secrets_store};

/// The packages whose interfaces this module implements.
pub const PACKAGES: &[&str] = &["wasi:keyvalue", "trellis:keyvalue", "wasi:logging", "wasi:config", "wasmcloud:bus", "wasmcloud:secrets"];

/// A secret a component holds: its value stays in the host's store until revealed. `Debug`
/// never shows it.
pub struct HeldSecret {
    value: trellis_lattice::secrets::SecretValue,
}

impl std::fmt::Debug for HeldSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeldSecret(<redacted>)")
    }
}

/// A bucket a component opened: the identifier it gave.
#[derive(Debug)]
pub struct Bucket {
    identifier: String,
}

/// Adds every interface of this module to `linker`.
pub fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    store::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    atomics::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    batch::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    cas::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    logging::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    config_store::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    config_runtime::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    lattice::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    secrets_store::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    reveal::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    Ok(())
}

impl From<KvError> for store::Error {
    fn from(e: KvError) -> Self {
        match e {
            KvError::NoSuchStore => Self::NoSuchStore,
            KvError::AccessDenied => Self::AccessDenied,
            KvError::Other(m) => Self::Other(m),
        }
    }
}

type KvOutcome<T> = wasmtime::Result<Result<T, store::Error>>;

impl State {
    fn bucket_id(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<String> {
        Ok(self.table().get(bucket)?.identifier.clone())
    }

    /// Sends `req` to the provider of the component's `wasi:keyvalue` link. Failures of the
    /// link, the lattice or the backend all come back as `Err(KvError)`.
    async fn kv(&mut self, req: Request) -> Result<Reply, KvError> {
        let link = self.link_context();
        let interface = InterfaceName::parse(req.interface()).ok_or_else(|| KvError::Other("bad interface name".into()))?;
        // cas is an extension over the bucket's `store` link; the rest travel on their own.
        let via = (req.interface() == keyvalue::CAS).then(|| InterfaceName::parse(keyvalue::STORE)).flatten();
        let call = LinkedCall {
            source: link.component_id.clone(),
            link_name: link.link_name(via.as_ref().unwrap_or(&interface)).to_string(),
            interface,
            via,
            function: req.function().to_string(),
            deadline: link.deadline,
            args: req.to_args(),
            traceparent: link.traceparent.clone(),
        };
        let results = self.outbound().call(call).await.map_err(KvError::Other)?;
        req.decode_results(results).map_err(|e| KvError::Other(e.to_string()))?
    }
}

fn unexpected(reply: &Reply) -> store::Error {
    store::Error::Other(format!("the key-value provider answered with the wrong kind of reply ({reply:?})"))
}

impl store::Host for State {
    async fn open(&mut self, identifier: String) -> KvOutcome<Resource<Bucket>> {
        match self.kv(Request::Open { bucket: identifier.clone() }).await {
            Ok(Reply::Unit) => Ok(Ok(self.table_mut().push(Bucket { identifier })?)),
            Ok(other) => Ok(Err(unexpected(&other))),
            Err(e) => Ok(Err(e.into())),
        }
    }
}

impl store::HostBucket for State {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> KvOutcome<Option<Vec<u8>>> {
        let bucket = self.bucket_id(&bucket)?;
        Ok(match self.kv(Request::Get { bucket, key }).await {
            Ok(Reply::Value(v)) => Ok(v),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e.into()),
        })
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> KvOutcome<()> {
        let bucket = self.bucket_id(&bucket)?;
        Ok(unit(self.kv(Request::Set { bucket, key, value }).await))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> KvOutcome<()> {
        let bucket = self.bucket_id(&bucket)?;
        Ok(unit(self.kv(Request::Delete { bucket, key }).await))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> KvOutcome<bool> {
        let bucket = self.bucket_id(&bucket)?;
        Ok(match self.kv(Request::Exists { bucket, key }).await {
            Ok(Reply::Exists(b)) => Ok(b),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e.into()),
        })
    }

    async fn list_keys(&mut self, bucket: Resource<Bucket>, cursor: Option<u64>) -> KvOutcome<store::KeyResponse> {
        let bucket = self.bucket_id(&bucket)?;
        Ok(match self.kv(Request::ListKeys { bucket, cursor }).await {
            Ok(Reply::Keys { keys, cursor }) => Ok(store::KeyResponse { keys, cursor }),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e.into()),
        })
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table_mut().delete(bucket)?;
        Ok(())
    }
}

fn unit(r: Result<Reply, KvError>) -> Result<(), store::Error> {
    match r {
        Ok(Reply::Unit) => Ok(()),
        Ok(other) => Err(unexpected(&other)),
        Err(e) => Err(e.into()),
    }
}

impl atomics::Host for State {
    async fn increment(&mut self, bucket: Resource<Bucket>, key: String, delta: u64) -> KvOutcome<u64> {
        let bucket = self.bucket_id(&bucket)?;
        Ok(match self.kv(Request::Increment { bucket, key, delta }).await {
            Ok(Reply::Number(n)) => Ok(n),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e.into()),
        })
    }
}

impl batch::Host for State {
    async fn get_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> KvOutcome<Vec<Option<(String, Vec<u8>)>>> {
        let bucket = self.bucket_id(&bucket)?;
        Ok(match self.kv(Request::GetMany { bucket, keys }).await {
            Ok(Reply::Values(v)) => Ok(v),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e.into()),
        })
    }

    async fn set_many(&mut self, bucket: Resource<Bucket>, key_values: Vec<(String, Vec<u8>)>) -> KvOutcome<()> {
        let bucket = self.bucket_id(&bucket)?;
        Ok(unit(self.kv(Request::SetMany { bucket, items: key_values }).await))
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> KvOutcome<()> {
        let bucket = self.bucket_id(&bucket)?;
        Ok(unit(self.kv(Request::DeleteMany { bucket, keys }).await))
    }
}

impl cas::Host for State {
    async fn compare_and_swap(&mut self, bucket: Resource<Bucket>, key: String, expected: Option<Vec<u8>>, new: Vec<u8>) -> KvOutcome<cas::Outcome> {
        let bucket = self.bucket_id(&bucket)?;
        Ok(match self.kv(Request::CompareAndSwap { bucket, key, expected, new }).await {
            Ok(Reply::Cas(CasOutcome::Swapped)) => Ok(cas::Outcome::Swapped),
            Ok(Reply::Cas(CasOutcome::Conflict(current))) => Ok(cas::Outcome::Conflict(current)),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e.into()),
        })
    }
}

impl logging::Host for State {
    async fn log(&mut self, level: logging::Level, context: String, message: String) -> wasmtime::Result<()> {
        let link = self.link_context();
        let id: &str = &link.component_id;
        // The invocation's trace id; the field is left out when there is none.
        let trace_id = link.traceparent.as_deref().and_then(trellis_lattice::telemetry::trace_id).map(tracing::field::display);
        match level {
            logging::Level::Trace => tracing::trace!(component_id = id, context, trace_id, "{message}"),
            logging::Level::Debug => tracing::debug!(component_id = id, context, trace_id, "{message}"),
            logging::Level::Info => tracing::info!(component_id = id, context, trace_id, "{message}"),
            logging::Level::Warn => tracing::warn!(component_id = id, context, trace_id, "{message}"),
            logging::Level::Error => tracing::error!(component_id = id, context, trace_id, "{message}"),
            logging::Level::Critical => tracing::error!(component_id = id, context, trace_id, critical = true, "{message}"),
        }
        Ok(())
    }
}

impl State {
    fn config_value(&self, key: &str) -> Option<String> {
        self.outbound().config(self.config_names()).remove(key)
    }

    fn config_all(&self) -> Vec<(String, String)> {
        let mut all: Vec<_> = self.outbound().config(self.config_names()).into_iter().collect();
        all.sort();
        all
    }
}

// `store` and `runtime` are the same interface under two names.
impl config_store::Host for State {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, config_store::Error>> {
        Ok(Ok(self.config_value(&key)))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, config_store::Error>> {
        Ok(Ok(self.config_all()))
    }
}

impl config_runtime::Host for State {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, config_runtime::ConfigError>> {
        Ok(Ok(self.config_value(&key)))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, config_runtime::ConfigError>> {
        Ok(Ok(self.config_all()))
    }
}

impl lattice::Host for State {
    async fn set_link_name(&mut self, name: String, interfaces: Vec<Resource<InterfaceName>>) -> wasmtime::Result<Result<(), String>> {
        let mut picked = Vec::with_capacity(interfaces.len());
        for i in interfaces {
            picked.push(self.table_mut().delete(i)?);
        }
        let source = self.link_context().component_id.clone();
        if let Some(missing) = picked.iter().find(|i| !self.outbound().has_link(&source, i, &name)) {
            return Ok(Err(format!(
                "component `{source}` has no link named `{name}` for `{missing}`; add one with \
                 `wash link put {source} <target> {} {} --interface {} --link-name {name}`",
                missing.namespace, missing.package, missing.interface
            )));
        }
        self.set_link_name(&name, picked);
        Ok(Ok(()))
    }
}

impl lattice::HostCallTargetInterface for State {
    async fn new(&mut self, namespace: String, package: String, interface: String) -> wasmtime::Result<Resource<InterfaceName>> {
        Ok(self.table_mut().push(InterfaceName { namespace, package, interface })?)
    }

    async fn drop(&mut self, rep: Resource<InterfaceName>) -> wasmtime::Result<()> {
        self.table_mut().delete(rep)?;
        Ok(())
    }
}

impl State {
    /// The reference named `name` among the component's `SECRET_*` config, if it was granted.
    fn granted_secret(&self, name: &str) -> Option<trellis_lattice::secrets::SecretReference> {
        self.config_names().iter().filter(|c| trellis_lattice::secrets::is_reference(c)).find_map(|c| {
            let values = self.outbound().config(std::slice::from_ref(c));
            trellis_lattice::secrets::SecretReference::from_config(c, &values).filter(|r| r.name == name)
        })
    }
}

impl secrets_store::Host for State {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Resource<HeldSecret>, secrets_store::SecretsError>> {
        let id = self.link_context().component_id.clone();
        let Some(reference) = self.granted_secret(&key) else {
            return Ok(Err(secrets_store::SecretsError::Upstream(format!(
                "secret `{key}` was not granted to component `{id}`; start it with `wash start component … --secret {key}` \
                 or name it in the manifest's `properties.secrets`"
            ))));
        };
        match self.outbound().secret(&id, reference).await {
            Ok(value) => Ok(Ok(self.table_mut().push(HeldSecret { value })?)),
            Err(e) => {
                tracing::warn!(component_id = &*id, secret = key, error = e, "secret fetch failed");
                Ok(Err(secrets_store::SecretsError::Upstream(e)))
            }
        }
    }
}

impl secrets_store::HostSecret for State {
    async fn drop(&mut self, rep: Resource<HeldSecret>) -> wasmtime::Result<()> {
        self.table_mut().delete(rep)?;
        Ok(())
    }
}

impl reveal::Host for State {
    async fn reveal(&mut self, s: Resource<HeldSecret>) -> wasmtime::Result<secrets_store::SecretValue> {
        Ok(match &self.table().get(&s)?.value {
            trellis_lattice::secrets::SecretValue::String(v) => secrets_store::SecretValue::String(v.clone()),
            trellis_lattice::secrets::SecretValue::Bytes(v) => secrets_store::SecretValue::Bytes(v.clone()),
        })
    }
}

//! # trellis-provider-blobstore
//!
//! Serves `wasi:blobstore@0.2.0-draft` (`blobstore`, `container`, `types`) to the components
//! linked to it, over one of two backends behind one trait ([`BlobStore`]): a filesystem
//! root, or NATS JetStream object stores. It is the link *target*:
//!
//! ```text
//! wash config put blobs-cfg root=/srv/blobs
//! wash start provider builtin://blobstore blobstore
//! wash link put COMPONENT blobstore wasi blobstore --interface blobstore --target-config blobs-cfg
//! ```
//!
//! Calls arrive on the data plane in the wire form of [`trellis_lattice::blobstore`]; object
//! data is the call's body (`write-data`) or the reply's (`get-data`), streamed in bounded
//! chunks, never held whole. For each call the provider finds the caller's `wasi:blobstore`
//! link to it (source = the calling component, link name as called) and reads its settings
//! at that moment: the provider's own config overlaid by the link's target config.
//!
//! ## Settings (keys are case-insensitive)
//!
//! | key | meaning |
//! |---|---|
//! | `backend` | `fs` or `nats`. Default: `fs` if `root` is set, else `nats` |
//! | `root` | fs: the one directory the link grants (absolute, must exist); containers are its subdirectories |
//! | `js_domain` | nats: the JetStream domain. Default: the lattice's own (the host's `--js-domain`) |
//!
//! Names (containers and objects) are one path component of 1 to 255 bytes, not `.` or
//! `..`, without `/`, `\` or control characters, and objects not starting `.trellis-`;
//! anything else is refused with an error naming it. See [`fs`] for how the root is kept
//! the whole grant and [`nats`] for how container names map to object store buckets.
//! Listings are pages of at most 1000 names in byte order. Every failure is the WIT `error`
//! string naming the container or object and what to do; nothing panics or traps.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use trellis_lattice::blobstore::{Request, encode_outcome};
use trellis_lattice::rpc::{self, CallInfo, Handler, Invocation, Response, RpcError, RpcErrorKind};
use trellis_provider_sdk::{Builtin, ProviderContext, ProviderError, StringMap};

pub mod fs;
pub mod nats;
pub mod store;

pub use self::fs::FsStore;
pub use self::nats::NatsBlobStore;
pub use self::store::{BlobFuture, BlobStore, execute};

/// The provider's name, as in `builtin://blobstore`.
pub const NAME: &str = "blobstore";

/// This provider as a host built-in.
pub fn builtin() -> Builtin {
    Builtin { name: NAME, run }
}

/// The provider's entry point.
pub fn run(ctx: ProviderContext) -> BoxFuture<'static, Result<(), ProviderError>> {
    Box::pin(serve(ctx))
}

async fn serve(ctx: ProviderContext) -> Result<(), ProviderError> {
    let handler = Arc::new(BlobHandler { inner: Arc::new(Inner { ctx: ctx.clone(), stores: Mutex::default() }) });
    ctx.serve_calls(handler, "blobstore").await
}

/// Which backend serves a link, with its settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Settings {
    /// A filesystem root.
    Fs {
        /// `root`
        root: String,
    },
    /// NATS object stores on the provider's lattice connection.
    Nats {
        /// `js_domain` (or the lattice's).
        js_domain: Option<String>,
    },
}

impl Settings {
    /// Reads `provider` config overlaid by `link` config; `lattice_js_domain` is the default
    /// domain. The error names the key and the value that is wrong.
    pub fn from_config(provider: &StringMap, link: &StringMap, lattice_js_domain: Option<&str>) -> Result<Self, String> {
        let mut merged: HashMap<String, String> = HashMap::new();
        for (k, v) in provider.iter().chain(link.iter()) {
            merged.insert(k.to_ascii_lowercase(), v.clone());
        }
        let get = |k: &str| merged.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let root = get("root");
        match get("backend").map(|b| b.to_ascii_lowercase()).as_deref() {
            Some("fs") | Some("filesystem") => match root {
                Some(root) => Ok(Self::Fs { root }),
                None => Err("`backend` is `fs` but no `root` is set; name the directory to grant, e.g. `root=/srv/blobs`".into()),
            },
            Some("nats") => Ok(Self::Nats { js_domain: get("js_domain").or_else(|| lattice_js_domain.map(str::to_string)) }),
            Some(other) => Err(format!("`backend` is `{other}`; use `fs` or `nats`")),
            None => Ok(match root {
                Some(root) => Self::Fs { root },
                None => Self::Nats { js_domain: get("js_domain").or_else(|| lattice_js_domain.map(str::to_string)) },
            }),
        }
    }
}

struct Inner {
    ctx: ProviderContext,
    /// Backends by settings, made on first use.
    stores: Mutex<HashMap<Settings, Arc<dyn BlobStore>>>,
}

struct BlobHandler {
    inner: Arc<Inner>,
}

impl Handler for BlobHandler {
    fn call(&self, inv: Invocation) -> BoxFuture<'static, Result<Response, RpcError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.answer(inv).await })
    }
}

impl Inner {
    async fn answer(&self, inv: Invocation) -> Result<Response, RpcError> {
        let call = inv.call;
        let req = Request::decode(&inv.head)
            .map_err(|e| RpcError::new(RpcErrorKind::Malformed, &call, format!("the blobstore call `{}` could not be decoded: {e}", call.function)))?;
        let (outcome, body) = match self.store(&call) {
            Ok(store) => execute(store.as_ref(), req, inv.body).await,
            Err(e) => (Err(e), rpc::full_body(Bytes::new())),
        };
        if let Err(e) = &outcome {
            tracing::debug!(source = call.source, function = call.function, error = %e, "blobstore call failed");
        }
        Ok(Response { head: encode_outcome(&outcome), body })
    }

    /// The backend of the caller's link, as its settings say now.
    fn store(&self, call: &CallInfo) -> Result<Arc<dyn BlobStore>, String> {
        let ctx = &self.ctx;
        let link = ctx.caller_link(call, "wasi", "blobstore", &[], " --interface blobstore --target-config <config>")?;
        let link_config = ctx.state().merged_config(&link.target_config);
        let settings = Settings::from_config(ctx.config(), &link_config, ctx.host_data().js_domain.as_deref())
            .map_err(|e| format!("blobstore provider `{}`: the settings of the link from `{}` are wrong: {e}", ctx.id(), call.source))?;
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = stores.get(&settings) {
            return Ok(store.clone());
        }
        let store: Arc<dyn BlobStore> = match &settings {
            Settings::Fs { root } => Arc::new(FsStore::open(root)?),
            Settings::Nats { js_domain } => Arc::new(NatsBlobStore::new(trellis_lattice::state::jetstream(ctx.nats().clone(), js_domain.as_deref()))),
        };
        stores.insert(settings, store.clone());
        Ok(store)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> StringMap {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn settings_pick_the_backend() {
        let s = |p: &[(&str, &str)], l: &[(&str, &str)]| Settings::from_config(&map(p), &map(l), Some("hub"));
        assert_eq!(s(&[], &[("ROOT", "/srv")]).unwrap(), Settings::Fs { root: "/srv".into() });
        assert_eq!(s(&[], &[]).unwrap(), Settings::Nats { js_domain: Some("hub".into()) });
        assert_eq!(s(&[("root", "/a")], &[("backend", "nats"), ("js_domain", "edge")]).unwrap(), Settings::Nats { js_domain: Some("edge".into()) });
        assert!(s(&[], &[("backend", "fs")]).unwrap_err().contains("no `root`"));
        assert!(s(&[], &[("backend", "s3")]).unwrap_err().contains("`backend` is `s3`"));
    }
}

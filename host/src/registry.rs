//! The lattice registry in JetStream KV: links (one key per link, compare-and-set writes), named
//! config and claims, plus a live local view that every host keeps by watching the buckets.
//!
//! Control operations read and write the buckets directly (read-your-writes across hosts);
//! the local view is what the host itself consults, and a host that joins late fills it from
//! the buckets before it reports ready.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::{StreamExt, TryStreamExt};
use trellis_lattice::ctl::{DeleteLinkRequest, Link, StringMap};
use trellis_lattice::{state, validate_id};

use crate::error::{HostError, Result};

/// Largest value accepted in a named config (keys and values together).
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;

/// How often a compare-and-set write is retried when another writer got there first.
const CAS_RETRIES: usize = 8;

/// What the host currently knows of the lattice state.
#[derive(Debug, Default)]
struct View {
    links: BTreeMap<String, Link>,
    config: HashMap<String, StringMap>,
}

/// Handle on the lattice registry.
#[derive(Clone)]
pub struct Registry {
    lattice: String,
    links_kv: kv::Store,
    config_kv: kv::Store,
    view: Arc<RwLock<View>>,
}

fn reg_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> HostError {
    HostError::Registry(format!("{what}: {e}"))
}

async fn open_bucket(js: &jetstream::Context, bucket: &str) -> Result<kv::Store> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let created = js.create_key_value(kv::Config { bucket: bucket.to_string(), history: 1, ..Default::default() }).await;
    match created {
        Ok(store) => Ok(store),
        // Another host created it at the same moment.
        Err(e) => js.get_key_value(bucket).await.map_err(|_| reg_err(format!("cannot create KV bucket `{bucket}`"), e)),
    }
}

impl Registry {
    /// Opens (creating if needed) the buckets of `lattice`, loads the current state, and keeps
    /// the local view current from then on.
    pub async fn open(nats: async_nats::Client, lattice: &str) -> Result<Self> {
        let js = jetstream::new(nats);
        let links_kv = open_bucket(&js, &state::lattice_bucket(lattice)).await?;
        let config_kv = open_bucket(&js, &state::config_bucket(lattice)).await?;
        let registry = Self { lattice: lattice.to_string(), links_kv, config_kv, view: Arc::default() };
        registry.watch(registry.links_kv.clone(), apply_link).await?;
        registry.watch(registry.config_kv.clone(), apply_config).await?;
        Ok(registry)
    }

    /// Starts a watcher that applies every entry of `store` to the view, returning once the
    /// view holds the bucket's current state.
    async fn watch(&self, store: kv::Store, apply: fn(&mut View, &kv::Entry)) -> Result<()> {
        let bucket = store.name.clone();
        // Loading first (rather than trusting the watch alone) tells us when we are current,
        // also for an empty bucket that would never deliver an entry.
        let mut keys = store.keys().await.map_err(|e| reg_err(format!("cannot list `{bucket}`"), e))?;
        let mut initial = Vec::new();
        while let Some(key) = keys.try_next().await.map_err(|e| reg_err(format!("cannot list `{bucket}`"), e))? {
            if let Some(entry) = store.entry(key).await.map_err(|e| reg_err(format!("cannot read `{bucket}`"), e))? {
                initial.push(entry);
            }
        }
        {
            let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
            for entry in &initial {
                apply(&mut view, entry);
            }
        }
        let view = self.view.clone();
        tokio::spawn(async move {
            // Reconnects and NATS restarts end a watch; start it again.
            loop {
                match store.watch_all().await {
                    Ok(mut watch) => {
                        while let Some(entry) = watch.next().await {
                            match entry {
                                Ok(entry) => apply(&mut view.write().unwrap_or_else(|p| p.into_inner()), &entry),
                                Err(e) => {
                                    tracing::warn!(bucket, error = %e, "registry watch failed; restarting it");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(bucket, error = %e, "cannot watch registry bucket; retrying"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Ok(())
    }

    /// Every link this host knows of, from its local view.
    pub fn known_links(&self) -> Vec<Link> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).links.values().cloned().collect()
    }

    /// The named config this host knows of, from its local view.
    pub fn known_config(&self, name: &str) -> Option<StringMap> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).config.get(name).cloned()
    }

    /// Checks a link's fields before it is stored.
    fn validate_link(link: &Link) -> Result<()> {
        let check = |what: &str, v: &str| validate_id(what, v).map_err(|e| HostError::Invalid(e.to_string()));
        check("source_id", &link.source_id)?;
        check("target", &link.target)?;
        check("link name", &link.name)?;
        check("wit_namespace", &link.wit_namespace)?;
        check("wit_package", &link.wit_package)?;
        if link.interfaces.is_empty() {
            return Err(HostError::Invalid(format!(
                "the link from `{}` to `{}` names no interface of {}:{}; give at least one (e.g. --interface incoming-handler)",
                link.source_id, link.target, link.wit_namespace, link.wit_package
            )));
        }
        for i in &link.interfaces {
            check("interface", i)?;
        }
        Ok(())
    }

    /// Stores `link`, applying the reference's rules: every named config must exist; a link
    /// with the same source, package and name but another target may not share an interface;
    /// the same source, target, package and name replaces.
    pub async fn put_link(&self, link: &Link) -> Result<()> {
        Self::validate_link(link)?;
        for name in link.source_config.iter().chain(&link.target_config) {
            if self.get_config(name).await?.is_none() {
                return Err(HostError::Invalid(format!(
                    "config `{name}` named by the link from `{}` to `{}` does not exist; create it first with `wash config put {name} KEY=VALUE`",
                    link.source_id, link.target
                )));
            }
        }
        let slot = state::link_slot_prefix(&link.source_id, &link.wit_namespace, &link.wit_package, &link.name);
        for other in self.links_with_prefix(&slot).await? {
            if other.target != link.target {
                if let Some(i) = other.interfaces.iter().find(|i| link.interfaces.contains(i)) {
                    return Err(HostError::Invalid(format!(
                        "link conflict: `{}` already links {}:{}/{i} under link name `{}` to `{}`; delete that link first \
                         (`wash link del {} {} {}`) or use another link name",
                        link.source_id, link.wit_namespace, link.wit_package, link.name, other.target,
                        link.source_id, link.wit_namespace, link.wit_package
                    )));
                }
            }
        }
        let key = state::link_key(link);
        let value: bytes::Bytes = serde_json::to_vec(link).map_err(|e| reg_err("cannot encode link", e))?.into();
        self.cas_put(&self.links_kv, &key, value).await
    }

    /// Writes `value` under `key` with compare-and-set against the revision just read, retrying
    /// when a concurrent writer moved it, so no write is lost silently.
    async fn cas_put(&self, store: &kv::Store, key: &str, value: bytes::Bytes) -> Result<()> {
        for _ in 0..CAS_RETRIES {
            let current = store.entry(key).await.map_err(|e| reg_err(format!("cannot read `{key}`"), e))?;
            // Update against the revision read (a tombstone has one too); create when absent,
            // which fails if someone else created the key meanwhile.
            let outcome = match current {
                Some(e) => store.update(key, value.clone(), e.revision).await.map(|_| ()).map_err(|e| e.to_string()),
                None => store.create(key, value.clone()).await.map(|_| ()).map_err(|e| e.to_string()),
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) => tracing::debug!(key, error = e, "compare-and-set lost a race; retrying"),
            }
        }
        Err(HostError::Registry(format!("cannot write `{key}`: other writers kept changing it; retry")))
    }

    async fn links_with_prefix(&self, prefix: &str) -> Result<Vec<Link>> {
        let mut out = Vec::new();
        for key in self.keys(&self.links_kv, prefix).await? {
            if let Some(v) = self.links_kv.get(&key).await.map_err(|e| reg_err(format!("cannot read `{key}`"), e))? {
                match serde_json::from_slice::<Link>(&v) {
                    Ok(link) => out.push(link),
                    Err(e) => tracing::warn!(key, error = %e, "skipping an unreadable link in the registry"),
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn keys(&self, store: &kv::Store, prefix: &str) -> Result<Vec<String>> {
        let keys = store.keys().await.map_err(|e| reg_err(format!("cannot list `{}`", store.name), e))?;
        keys.try_filter(|k| futures::future::ready(k.starts_with(prefix)))
            .try_collect()
            .await
            .map_err(|e| reg_err(format!("cannot list `{}`", store.name), e))
    }

    /// Every link in the lattice, read from the bucket.
    pub async fn links(&self) -> Result<Vec<Link>> {
        self.links_with_prefix(state::LINK_PREFIX).await
    }

    /// Deletes every link from `req.source_id` for the package under `req.name`; returns them.
    pub async fn delete_links(&self, req: &DeleteLinkRequest) -> Result<Vec<Link>> {
        let check = |what: &str, v: &str| validate_id(what, v).map_err(|e| HostError::Invalid(e.to_string()));
        check("source_id", &req.source_id)?;
        check("link name", &req.name)?;
        check("wit_namespace", &req.wit_namespace)?;
        check("wit_package", &req.wit_package)?;
        let slot = state::link_slot_prefix(&req.source_id, &req.wit_namespace, &req.wit_package, &req.name);
        let links = self.links_with_prefix(&slot).await?;
        for link in &links {
            let key = state::link_key(link);
            self.links_kv.delete(&key).await.map_err(|e| reg_err(format!("cannot delete `{key}`"), e))?;
        }
        Ok(links)
    }

    /// Stores named config `name`.
    pub async fn put_config(&self, name: &str, values: &StringMap) -> Result<()> {
        validate_id("config name", name).map_err(|e| HostError::Invalid(e.to_string()))?;
        let bytes = serde_json::to_vec(values).map_err(|e| reg_err("cannot encode config", e))?;
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(HostError::Invalid(format!(
                "config `{name}` is {} bytes; the limit is {MAX_CONFIG_BYTES}",
                bytes.len()
            )));
        }
        self.cas_put(&self.config_kv, name, bytes.into()).await
    }

    /// Named config `name`, read from the bucket.
    pub async fn get_config(&self, name: &str) -> Result<Option<StringMap>> {
        validate_id("config name", name).map_err(|e| HostError::Invalid(e.to_string()))?;
        let Some(bytes) = self.config_kv.get(name).await.map_err(|e| reg_err(format!("cannot read config `{name}`"), e))? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| reg_err(format!("config `{name}` in the registry is unreadable"), e))
    }

    /// Deletes named config `name` (no error when it did not exist).
    pub async fn delete_config(&self, name: &str) -> Result<()> {
        validate_id("config name", name).map_err(|e| HostError::Invalid(e.to_string()))?;
        self.config_kv.delete(name).await.map_err(|e| reg_err(format!("cannot delete config `{name}`"), e))
    }

    /// Every stored claims map.
    pub async fn claims(&self) -> Result<Vec<StringMap>> {
        let mut out = Vec::new();
        for key in self.keys(&self.links_kv, state::CLAIMS_PREFIX).await? {
            if let Some(v) = self.links_kv.get(&key).await.map_err(|e| reg_err(format!("cannot read `{key}`"), e))? {
                if let Ok(claims) = serde_json::from_slice::<StringMap>(&v) {
                    out.push(claims);
                }
            }
        }
        Ok(out)
    }

    /// The lattice this registry belongs to.
    pub fn lattice(&self) -> &str {
        &self.lattice
    }
}

fn apply_link(view: &mut View, entry: &kv::Entry) {
    if !entry.key.starts_with(state::LINK_PREFIX) {
        return;
    }
    match entry.operation {
        kv::Operation::Put => match serde_json::from_slice::<Link>(&entry.value) {
            Ok(link) => {
                view.links.insert(entry.key.clone(), link);
            }
            Err(e) => tracing::warn!(key = entry.key, error = %e, "ignoring an unreadable link"),
        },
        kv::Operation::Delete | kv::Operation::Purge => {
            view.links.remove(&entry.key);
        }
    }
}

fn apply_config(view: &mut View, entry: &kv::Entry) {
    match entry.operation {
        kv::Operation::Put => match serde_json::from_slice::<StringMap>(&entry.value) {
            Ok(map) => {
                view.config.insert(entry.key.clone(), map);
            }
            Err(e) => tracing::warn!(key = entry.key, error = %e, "ignoring unreadable config"),
        },
        kv::Operation::Delete | kv::Operation::Purge => {
            view.config.remove(&entry.key);
        }
    }
}

//! The lattice registry in JetStream KV: links (one key per link, compare-and-set writes), named
//! config and claims, plus a live local view that every host keeps by watching the buckets.
//!
//! Control operations read and write the buckets directly (read-your-writes across hosts);
//! the local view is what the host itself consults, and a host that joins late fills it from
//! the buckets before it reports ready.

use async_nats::jetstream::{self, kv};
use futures::TryStreamExt;
use trellis_lattice::ctl::{DeleteLinkRequest, Link, StringMap};
use trellis_lattice::state::StateView;
use trellis_lattice::{state, validate_id};

use crate::error::{HostError, Result};

/// Largest value accepted in a named config (keys and values together).
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;

/// How often a compare-and-set write is retried when another writer got there first.
const CAS_RETRIES: usize = 8;

/// Handle on the lattice registry.
#[derive(Clone)]
pub struct Registry {
    links_kv: kv::Store,
    config_kv: kv::Store,
    view: StateView,
}

fn reg_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> HostError {
    HostError::Registry(format!("{what}: {e}"))
}

impl Registry {
    /// Opens (creating if needed, with `replicas` copies: `--js-replicas`) the buckets of
    /// `lattice`, loads the current state, and keeps the local view current from then on.
    pub async fn open(js: &jetstream::Context, lattice: &str, replicas: usize) -> Result<Self> {
        let links_kv = state::create_bucket(js, &state::BucketSpec::latest(state::lattice_bucket(lattice)), replicas).await?;
        let config_kv = state::create_bucket(js, &state::BucketSpec::latest(state::config_bucket(lattice)), replicas).await?;
        let view = StateView::open(js, lattice).await?;
        Ok(Self { links_kv, config_kv, view })
    }

    /// Every link this host knows of, from its local view.
    pub fn known_links(&self) -> Vec<Link> {
        self.view.links()
    }

    /// The named config this host knows of, from its local view.
    pub fn known_config(&self, name: &str) -> Option<StringMap> {
        self.view.config(name)
    }

    /// The live view itself (for providers run in-process).
    pub fn view(&self) -> &StateView {
        &self.view
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
            let overlap = other.interfaces.iter().find(|i| link.interfaces.contains(i));
            if let (true, Some(i)) = (other.target != link.target, overlap) {
                return Err(HostError::Invalid(format!(
                    "link conflict: `{}` already links {}:{}/{i} under link name `{}` to `{}`; delete that link first \
                     (`wash link del {} {} {} --link-name {}`) or use another link name",
                    link.source_id,
                    link.wit_namespace,
                    link.wit_package,
                    link.name,
                    other.target,
                    link.source_id,
                    link.wit_namespace,
                    link.wit_package,
                    link.name
                )));
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
        keys.try_filter(|k| futures::future::ready(k.starts_with(prefix))).try_collect().await.map_err(|e| reg_err(format!("cannot list `{}`", store.name), e))
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
            return Err(HostError::Invalid(format!("config `{name}` is {} bytes; the limit is {MAX_CONFIG_BYTES}", bytes.len())));
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

    /// Stores the claims map of component `public_key` (`M…`) for `claims.get`. A plain put: the
    /// last component started under that key (on any host) is the one listed.
    pub async fn put_claims(&self, public_key: &str, claims: &StringMap) -> Result<()> {
        let key = state::claims_key(public_key);
        let value = serde_json::to_vec(claims).map_err(|e| reg_err("cannot encode claims", e))?;
        self.links_kv.put(&key, value.into()).await.map(|_| ()).map_err(|e| reg_err(format!("cannot write `{key}`"), e))
    }

    /// Every stored claims map.
    pub async fn claims(&self) -> Result<Vec<StringMap>> {
        let mut out = Vec::new();
        for key in self.keys(&self.links_kv, state::CLAIMS_PREFIX).await? {
            let Some(v) = self.links_kv.get(&key).await.map_err(|e| reg_err(format!("cannot read `{key}`"), e))? else { continue };
            match serde_json::from_slice::<StringMap>(&v) {
                Ok(claims) => out.push(claims),
                Err(e) => tracing::warn!(key, error = %e, "skipping unreadable claims in the registry"),
            }
        }
        Ok(out)
    }
}

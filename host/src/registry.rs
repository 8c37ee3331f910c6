//! The lattice registry in JetStream KV: links (one key per link, compare-and-set writes), named
//! config and claims, plus a live local view that every host keeps by watching the buckets.
//!
//! Control operations write the buckets directly (compare-and-set) and read from the live
//! view after syncing it with the bucket (one `STREAM.INFO` request, then a wait for the watch),
//! so reads see every write made before them on any host and never create a JetStream consumer;
//! a host that joins late fills the view from the buckets before it reports ready. Named config
//! is read with a direct get of its key.

use async_nats::jetstream::{self, kv};
use trellis_lattice::ctl::{DeleteLinkRequest, Link, StringMap, Unreadable, page};
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
    /// the same source, target, package and name replaces. Config lists are deduplicated (the
    /// last mention of a name stays, so merging order is what it was) and capped
    /// ([`MAX_LINK_CONFIGS`]); the returned link is the one stored.
    pub async fn put_link(&self, link: &Link) -> Result<Link> {
        Self::validate_link(link)?;
        let link = Link { source_config: dedupe(&link.source_config), target_config: dedupe(&link.target_config), ..link.clone() };
        for (side, names) in [("source_config", &link.source_config), ("target_config", &link.target_config)] {
            if names.len() > MAX_LINK_CONFIGS {
                return Err(HostError::Invalid(format!(
                    "the link from `{}` to `{}` names {} distinct configs in {side}; the limit is {MAX_LINK_CONFIGS}: merge them into fewer configs",
                    link.source_id,
                    link.target,
                    names.len()
                )));
            }
        }
        for name in link.source_config.iter().chain(&link.target_config) {
            if self.get_config(name).await?.is_none() {
                return Err(HostError::Invalid(format!(
                    "config `{name}` named by the link from `{}` to `{}` does not exist; create it first with `wash config put {name} KEY=VALUE`",
                    link.source_id, link.target
                )));
            }
        }
        self.view.sync_lattice().await?;
        for other in self.view.links_in_slot(&link.source_id, &link.wit_namespace, &link.wit_package, &link.name) {
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
        let key = state::link_key(&link);
        let value: bytes::Bytes = serde_json::to_vec(&link).map_err(|e| reg_err("cannot encode link", e))?.into();
        self.cas_put(&self.links_kv, &key, value).await?;
        Ok(link)
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

    /// One page of the lattice's links after the cursor `after` (a link key), at most `budget`
    /// bytes of JSON, with the cursor of the next page, and the unreadable link entries (on the
    /// first page). Read from the live view once it holds every write made so far.
    pub async fn links_page(&self, after: Option<&str>, budget: usize) -> Result<(Vec<Link>, Option<String>, Vec<Unreadable>)> {
        self.view.sync_lattice().await?;
        let (links, next) = self.view.with_links(|all| {
            let from = match after {
                Some(after) => std::ops::Bound::Excluded(after.to_string()),
                None => std::ops::Bound::Unbounded,
            };
            page(all.range((from, std::ops::Bound::Unbounded)).map(|(k, l)| (k.as_str(), l)), budget)
        });
        let unreadable = if after.is_none() { self.view.unreadable(state::LINK_PREFIX) } else { Vec::new() };
        Ok((links, next, unreadable))
    }

    /// Deletes every link from `req.source_id` for the package under `req.name` (and any
    /// unreadable entry in that slot); returns the links deleted.
    pub async fn delete_links(&self, req: &DeleteLinkRequest) -> Result<Vec<Link>> {
        let check = |what: &str, v: &str| validate_id(what, v).map_err(|e| HostError::Invalid(e.to_string()));
        check("source_id", &req.source_id)?;
        check("link name", &req.name)?;
        check("wit_namespace", &req.wit_namespace)?;
        check("wit_package", &req.wit_package)?;
        self.view.sync_lattice().await?;
        let links = self.view.links_in_slot(&req.source_id, &req.wit_namespace, &req.wit_package, &req.name);
        let slot = state::link_slot_prefix(&req.source_id, &req.wit_namespace, &req.wit_package, &req.name);
        let keys = links.iter().map(state::link_key).chain(self.view.unreadable(&slot).into_iter().map(|u| u.key));
        for key in keys {
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

    /// Every stored claims map with its key (in key order), and the unreadable claims entries,
    /// from the live view once it holds every write made so far. Bounded by the components
    /// that ran: one entry per component key.
    pub async fn claims(&self) -> Result<(Vec<(String, StringMap)>, Vec<Unreadable>)> {
        self.view.sync_lattice().await?;
        Ok((self.view.claims(), self.view.unreadable(state::CLAIMS_PREFIX)))
    }
}

/// Most distinct config names a link may give each side (`source_config`, `target_config`).
pub const MAX_LINK_CONFIGS: usize = 64;

/// `names` without repeats; the last mention of a name stays, so the merge order (later
/// names win) is unchanged.
fn dedupe(names: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = names.iter().rev().filter(|n| seen.insert(n.as_str())).cloned().collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn dedupe_keeps_the_last_mention() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(super::dedupe(&names(&["a", "b", "a", "c", "c"])), names(&["b", "a", "c"]));
        assert_eq!(super::dedupe(&names(&["x"; 35_000])), names(&["x"]));
    }
}

//! The state plane: JetStream KV buckets and their keys.
//!
//! Bucket names follow wasmCloud (`LATTICEDATA_{lattice}`, `CONFIGDATA_{lattice}`). Links are
//! stored one key per link so that writers of different links never overwrite each other, and
//! each write is a compare-and-set on that key's revision.

use crate::ctl::Link;

/// The bucket holding links and claims of `lattice`.
pub fn lattice_bucket(lattice: &str) -> String {
    format!("LATTICEDATA_{lattice}")
}

/// The bucket holding named config of `lattice`.
pub fn config_bucket(lattice: &str) -> String {
    format!("CONFIGDATA_{lattice}")
}

/// Prefixes of the buckets that hold lattice state. No component may reach them through a
/// key-value provider: writing `LATTICEDATA_*` would let it link itself to anything. New
/// Trellis buckets must take the `TRELLIS_` prefix so that this rule covers them.
pub const RESERVED_BUCKET_PREFIXES: &[&str] = &["LATTICEDATA_", "CONFIGDATA_", "TRELLIS_"];

/// Whether `bucket` holds lattice state (see [`RESERVED_BUCKET_PREFIXES`]); case-insensitive.
pub fn is_reserved_bucket(bucket: &str) -> bool {
    let upper = bucket.to_ascii_uppercase();
    RESERVED_BUCKET_PREFIXES.iter().any(|p| upper.starts_with(p))
}

/// Key prefix of links in the lattice bucket.
pub const LINK_PREFIX: &str = "LINKDEF.";
/// Key prefix of claims in the lattice bucket.
pub const CLAIMS_PREFIX: &str = "CLAIMS.";

/// The key of one link: every field that tells two links apart. KV keys allow `[-/_=.a-zA-Z0-9]`;
/// ids, names and WIT identifiers are validated to `[A-Za-z0-9_-]` before they get here.
pub fn link_key(link: &Link) -> String {
    format!("{LINK_PREFIX}{}.{}.{}.{}.{}", link.source_id, link.wit_namespace, link.wit_package, link.name, link.target)
}

/// The key prefix of every link from `source_id` for one package and link name (any target).
pub fn link_slot_prefix(source_id: &str, wit_namespace: &str, wit_package: &str, name: &str) -> String {
    format!("{LINK_PREFIX}{source_id}.{wit_namespace}.{wit_package}.{name}.")
}

/// The key of a component's claims.
pub fn claims_key(public_key: &str) -> String {
    format!("{CLAIMS_PREFIX}{public_key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lattice_buckets_are_reserved() {
        assert!(is_reserved_bucket(&lattice_bucket("default")));
        assert!(is_reserved_bucket(&config_bucket("x")));
        assert!(is_reserved_bucket("latticedata_default"));
        assert!(!is_reserved_bucket("counters"));
    }

    #[test]
    fn link_key_is_inside_its_slot() {
        let link = Link {
            source_id: "http".into(),
            target: "hello".into(),
            name: "default".into(),
            wit_namespace: "wasi".into(),
            wit_package: "http".into(),
            interfaces: vec![],
            source_config: vec![],
            target_config: vec![],
        };
        let key = link_key(&link);
        assert_eq!(key, "LINKDEF.http.wasi.http.default.hello");
        assert!(key.starts_with(&link_slot_prefix("http", "wasi", "http", "default")));
        let slot = link.slot();
        assert_eq!(link_slot_prefix(&slot.source_id, &slot.wit_namespace, &slot.wit_package, &slot.name), "LINKDEF.http.wasi.http.default.");
        let other_target = Link { target: "other".into(), ..link.clone() };
        assert!(link.same_slot(&other_target) && !link.same_target(&other_target));
        let other_name = Link { name: "admin".into(), ..link.clone() };
        assert!(!link.same_slot(&other_name));
    }
}

pub use view::{StateView, open_bucket};

/// The JetStream context that holds the state of a lattice: the connected server's own, or,
/// with `domain`, that JetStream domain's. A host on a NATS leaf node names the hub's domain
/// (`--js-domain`), so its registry, config and apps are the hub's rather than a leaf-local copy.
pub fn jetstream(nats: async_nats::Client, domain: Option<&str>) -> async_nats::jetstream::Context {
    match domain.filter(|d| !d.is_empty()) {
        Some(domain) => async_nats::jetstream::with_domain(nats, domain),
        None => async_nats::jetstream::new(nats),
    }
}

mod view {
    //! A live, local view of the lattice state, kept by watching the buckets. Hosts use it to
    //! route, providers to learn their links and config; a change bumps a counter that
    //! subscribers can await.

    use std::collections::BTreeMap;
    use std::sync::{Arc, RwLock};
    use std::time::Duration;

    use async_nats::jetstream::{self, kv};
    use futures::{StreamExt, TryStreamExt};
    use tokio::sync::watch;

    use crate::ctl::{Link, StringMap};
    use crate::{Error, ErrorKind};

    /// How long a watch may deliver nothing before the view asks the server whether the bucket
    /// changed meanwhile (one stream-info request per bucket per quiet interval).
    const STALL_CHECK: Duration = Duration::from_secs(2);

    #[derive(Debug, Default)]
    struct View {
        links: BTreeMap<String, Link>,
        config: BTreeMap<String, StringMap>,
    }

    /// The live view; cheap to clone.
    #[derive(Clone)]
    pub struct StateView {
        view: Arc<RwLock<View>>,
        changed: Arc<watch::Sender<u64>>,
    }

    fn kv_err(what: String, e: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::new(ErrorKind::Transport, what).with_source(e)
    }

    /// Opens `bucket`, creating it (history 1, [`super::DEFAULT_REPLICAS`]) when it does not
    /// exist. Hosts create the lattice's buckets with their replica count
    /// ([`super::create_bucket`]) before anything opens them this way.
    pub async fn open_bucket(js: &jetstream::Context, bucket: &str) -> Result<kv::Store, Error> {
        super::create_bucket(js, &super::BucketSpec::latest(bucket), super::DEFAULT_REPLICAS).await
    }

    /// The sequence of the bucket's last write, asked of the server now (`Store::status` only
    /// returns what was known when the bucket was opened).
    async fn last_sequence(store: &kv::Store) -> Result<u64, Error> {
        let mut stream = store.stream.clone();
        let info = stream.info().await.map_err(|e| kv_err(format!("cannot read the state of `{}`", store.name), e))?;
        Ok(info.state.last_sequence)
    }

    impl StateView {
        /// Loads the current links and config of `lattice` from `js` (see [`super::jetstream`])
        /// and keeps them current.
        pub async fn open(js: &jetstream::Context, lattice: &str) -> Result<Self, Error> {
            let links = open_bucket(js, &super::lattice_bucket(lattice)).await?;
            let config = open_bucket(js, &super::config_bucket(lattice)).await?;
            let (changed, _) = watch::channel(0);
            let this = Self { view: Arc::default(), changed: Arc::new(changed) };
            this.follow(links, apply_link, |v| v.links.clear()).await?;
            this.follow(config, apply_config, |v| v.config.clear()).await?;
            Ok(this)
        }

        /// Fills the view from `store` now, then applies every later change in the background.
        ///
        /// The watch starts at the stream sequence read *before* the listing, so a change made
        /// while we list (or while the watch is being set up) is delivered rather than lost;
        /// entries applied twice are harmless, since the last one delivered is the newest.
        async fn follow(&self, store: kv::Store, apply: fn(&mut View, &kv::Entry), clear: fn(&mut View)) -> Result<(), Error> {
            let bucket = store.name.clone();
            let mut next = self.load(&store, apply, None).await?;
            let this = self.clone();
            tokio::spawn(async move {
                // A NATS restart ends a watch: resume after the last change applied, or, when
                // the server lost the stream (its sequence went back), load it all again.
                loop {
                    match store.watch_all_from_revision(next).await {
                        Ok(mut watch) => loop {
                            let entry = match tokio::time::timeout(STALL_CHECK, watch.next()).await {
                                Ok(Some(entry)) => entry,
                                Ok(None) => break,
                                // Quiet for a while: make sure the stream is quiet too. A watch
                                // whose server-side consumer was lost with a cluster node (or
                                // that could not be recreated after the client moved to another
                                // node) delivers nothing and may never say so.
                                Err(_) => match last_sequence(&store).await {
                                    Ok(last) if last >= next => {
                                        tracing::warn!(
                                            bucket,
                                            behind = last + 1 - next,
                                            "state watch delivers nothing while the bucket changed; restarting it"
                                        );
                                        break;
                                    }
                                    _ => continue,
                                },
                            };
                            match entry {
                                Ok(entry) => {
                                    next = entry.revision + 1;
                                    this.apply(apply, &entry);
                                }
                                Err(e) => {
                                    tracing::warn!(bucket, error = %e, "state watch failed; restarting it");
                                    break;
                                }
                            }
                        },
                        Err(e) => tracing::warn!(bucket, error = %e, "cannot watch state bucket; retrying"),
                    }
                    if this.changed.is_closed() && Arc::strong_count(&this.view) == 1 {
                        return; // nobody holds the view any more
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    match last_sequence(&store).await {
                        Ok(last) if last + 1 < next => match this.load(&store, apply, Some(clear)).await {
                            Ok(n) => next = n,
                            Err(e) => tracing::warn!(bucket, error = %e, "cannot reload state bucket; retrying"),
                        },
                        _ => {}
                    }
                }
            });
            Ok(())
        }

        /// Reads every live entry of `store` into the view (after `clear`, when given) and
        /// returns the revision a watch must start at to miss nothing.
        async fn load(&self, store: &kv::Store, apply: fn(&mut View, &kv::Entry), clear: Option<fn(&mut View)>) -> Result<u64, Error> {
            let bucket = &store.name;
            let next = last_sequence(store).await? + 1;
            let mut keys = store.keys().await.map_err(|e| kv_err(format!("cannot list `{bucket}`"), e))?;
            let mut initial = Vec::new();
            while let Some(key) = keys.try_next().await.map_err(|e| kv_err(format!("cannot list `{bucket}`"), e))? {
                if let Some(entry) = store.entry(key).await.map_err(|e| kv_err(format!("cannot read `{bucket}`"), e))? {
                    initial.push(entry);
                }
            }
            {
                let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
                if let Some(clear) = clear {
                    clear(&mut view);
                }
                for entry in &initial {
                    apply(&mut view, entry);
                }
            }
            self.changed.send_modify(|n| *n += 1);
            Ok(next)
        }

        fn apply(&self, apply: fn(&mut View, &kv::Entry), entry: &kv::Entry) {
            apply(&mut self.view.write().unwrap_or_else(|p| p.into_inner()), entry);
            self.changed.send_modify(|n| *n += 1);
        }

        /// Every link.
        pub fn links(&self) -> Vec<Link> {
            self.view.read().unwrap_or_else(|p| p.into_inner()).links.values().cloned().collect()
        }

        /// The links from `source_id` for one package under one link name (any target): a
        /// range over the key layout, so a lookup on a call path reads only its candidates.
        pub fn links_in_slot(&self, source_id: &str, wit_namespace: &str, wit_package: &str, name: &str) -> Vec<Link> {
            let prefix = super::link_slot_prefix(source_id, wit_namespace, wit_package, name);
            let view = self.view.read().unwrap_or_else(|p| p.into_inner());
            view.links.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)).map(|(_, l)| l.clone()).collect()
        }

        /// Named config `name`.
        pub fn config(&self, name: &str) -> Option<StringMap> {
            self.view.read().unwrap_or_else(|p| p.into_inner()).config.get(name).cloned()
        }

        /// The named configs merged in order (later names win); missing names are skipped.
        pub fn merged_config(&self, names: &[String]) -> StringMap {
            let view = self.view.read().unwrap_or_else(|p| p.into_inner());
            names.iter().filter_map(|n| view.config.get(n)).flat_map(|m| m.clone()).collect()
        }

        /// A receiver that sees a new value after every change.
        pub fn changes(&self) -> watch::Receiver<u64> {
            self.changed.subscribe()
        }
    }

    fn apply_link(view: &mut View, entry: &kv::Entry) {
        if entry.key.starts_with(super::LINK_PREFIX) {
            apply(&mut view.links, entry, "link");
        }
    }

    fn apply_config(view: &mut View, entry: &kv::Entry) {
        apply(&mut view.config, entry, "config");
    }

    /// Applies one KV change to `map` (keyed by the KV key); an unreadable value is logged
    /// and left out.
    fn apply<T: serde::de::DeserializeOwned>(map: &mut BTreeMap<String, T>, entry: &kv::Entry, what: &str) {
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<T>(&entry.value) {
                Ok(v) => {
                    map.insert(entry.key.clone(), v);
                }
                Err(e) => tracing::warn!(key = entry.key, error = %e, "ignoring an unreadable {what}"),
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                map.remove(&entry.key);
            }
        }
    }
}

/// How many copies of each lattice state bucket JetStream keeps when it creates one: 1 on a
/// single server (and under `wash up`), 3 on a three-node cluster, so that losing a node loses
/// no link, config or app version.
pub const DEFAULT_REPLICAS: usize = 1;
/// The most replicas JetStream allows a stream.
pub const MAX_REPLICAS: usize = 5;

/// A lattice state bucket as it is created: every lattice bucket (`LATTICEDATA_*`,
/// `CONFIGDATA_*`, `TRELLIS_APPS_*`, `TRELLIS_SECRETS_*`) is made by [`create_bucket`] from one.
#[derive(Clone, Debug)]
pub struct BucketSpec {
    /// The bucket's name.
    pub name: String,
    /// What the server shows as its description.
    pub description: String,
    /// How many values it keeps per key.
    pub history: i64,
}

impl BucketSpec {
    /// `name` keeping only the last value of each key.
    pub fn latest(name: impl Into<String>) -> Self {
        Self { name: name.into(), description: String::new(), history: 1 }
    }
}

/// Checks a replica count (`--js-replicas`) before anything is created.
pub fn check_replicas(replicas: usize) -> Result<(), crate::Error> {
    if (1..=MAX_REPLICAS).contains(&replicas) {
        return Ok(());
    }
    Err(crate::Error::new(
        crate::ErrorKind::InvalidInput,
        format!("the JetStream replica count must be 1 to {MAX_REPLICAS}; got {replicas} (use 1 on one nats-server, 3 on a three-node cluster)"),
    ))
}

/// Opens the bucket `spec` names, creating it with `replicas` copies when it does not exist
/// (another host may race us to it: whoever loses opens the winner's). An existing bucket with
/// fewer replicas than asked is scaled up (JetStream moves the data); one the server cannot
/// scale (a single server, too few peers) stays as it is, with a warning naming it.
pub async fn create_bucket(js: &async_nats::jetstream::Context, spec: &BucketSpec, replicas: usize) -> Result<async_nats::jetstream::kv::Store, crate::Error> {
    use async_nats::jetstream::kv;
    check_replicas(replicas)?;
    let transport = |what: String, e: &dyn std::fmt::Display| crate::Error::new(crate::ErrorKind::Transport, format!("{what}: {e}"));
    let bucket = &spec.name;
    let store = match js.get_key_value(bucket).await {
        Ok(store) => store,
        Err(_) => {
            let config = kv::Config {
                bucket: bucket.clone(),
                description: spec.description.clone(),
                history: spec.history,
                num_replicas: replicas,
                ..Default::default()
            };
            match js.create_key_value(config).await {
                Ok(store) => return Ok(store),
                Err(e) => js.get_key_value(bucket).await.map_err(|_| {
                    let hint = if replicas > 1 {
                        format!(" with {replicas} replicas (does the NATS cluster have that many JetStream servers?)")
                    } else {
                        String::new()
                    };
                    transport(format!("cannot create KV bucket `{bucket}`{hint}"), &e)
                })?,
            }
        }
    };
    if replicas > 1 {
        let mut stream = store.stream.clone();
        match stream.info().await {
            Ok(info) if info.config.num_replicas < replicas => {
                let have = info.config.num_replicas;
                let mut config = info.config.clone();
                config.num_replicas = replicas;
                match js.update_stream(&config).await {
                    Ok(_) => tracing::info!(bucket, from = have, to = replicas, "scaled up the replicas of a state bucket"),
                    Err(e) => tracing::warn!(bucket, have, asked = replicas, error = %e, "cannot scale up the replicas of a state bucket; it keeps its own"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(bucket, error = %e, "cannot read a state bucket's replica count"),
        }
    }
    Ok(store)
}

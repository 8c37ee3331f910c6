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

/// The subject of the JetStream advisories about the stream behind KV `bucket`
/// (`$JS.EVENT.ADVISORY.STREAM.{CREATED|DELETED|UPDATED}.KV_{bucket}`): how a [`StateView`]
/// learns at once that its bucket was deleted or created again.
pub fn bucket_advisories(bucket: &str) -> String {
    format!("$JS.EVENT.ADVISORY.STREAM.*.KV_{bucket}")
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
    //! route, answer listings and check links, providers to learn their links and config; a
    //! change bumps a counter that subscribers can await.
    //!
    //! The view and the bucket agree: an entry that cannot be decoded replaces what was there
    //! before (it is listed as unreadable, never routed to), and a bucket that is deleted
    //! empties the view until it exists again. A reader that must see every write made so far
    //! (`link.get`, the checks of `link.put`) calls [`StateView::sync_lattice`] first: one
    //! `STREAM.INFO` request, then a wait until the watch has applied that far. No read ever
    //! creates a JetStream consumer.

    use std::collections::BTreeMap;
    use std::sync::{Arc, RwLock, Weak};
    use std::time::Duration;

    use async_nats::jetstream::{self, kv};
    use futures::{StreamExt, TryStreamExt};
    use tokio::sync::{Notify, watch};

    use crate::ctl::{Link, StringMap, Unreadable};
    use crate::{Error, ErrorKind};

    /// How long a reader waits for the view to catch up with its bucket.
    pub const SYNC_TIMEOUT: Duration = Duration::from_secs(3);
    /// How often a watch checks that its bucket is still the one it loaded, besides the
    /// server's advisories (which a leaf node may not forward).
    const VANISH_CHECK: Duration = Duration::from_secs(5);
    /// How often a missing or unreachable bucket is looked for again.
    const RETRY: Duration = Duration::from_millis(250);
    /// How long a watch may deliver nothing, while its stream has more, before it is restarted:
    /// a watch whose server-side consumer was lost with a cluster node (or could not be made
    /// again after the client moved to another node) delivers nothing and never says so. One
    /// stream-info request per bucket per interval.
    const STALL_CHECK: Duration = Duration::from_secs(2);
    /// Failed looks at a bucket in a row before one warning says so (then every eighth time that many).
    const PROBES_BEFORE_WARNING: u32 = 3;

    #[derive(Debug, Default)]
    struct View {
        links: BTreeMap<String, Link>,
        claims: BTreeMap<String, StringMap>,
        config: BTreeMap<String, StringMap>,
        /// Keys of the lattice bucket whose value cannot be decoded, and why.
        bad_lattice: BTreeMap<String, String>,
        /// The same, of the config bucket.
        bad_config: BTreeMap<String, String>,
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Which {
        Lattice,
        Config,
    }

    impl View {
        fn clear(&mut self, which: Which) {
            match which {
                Which::Lattice => {
                    self.links.clear();
                    self.claims.clear();
                    self.bad_lattice.clear();
                }
                Which::Config => {
                    self.config.clear();
                    self.bad_config.clear();
                }
            }
        }

        fn apply(&mut self, which: Which, entry: &kv::Entry) {
            match which {
                Which::Lattice if entry.key.starts_with(super::LINK_PREFIX) => {
                    let check = |link: &Link| {
                        let key = super::link_key(link);
                        if key == entry.key { Ok(()) } else { Err(format!("the value is the link of key `{key}`")) }
                    };
                    apply(&mut self.links, &mut self.bad_lattice, entry, check)
                }
                Which::Lattice if entry.key.starts_with(super::CLAIMS_PREFIX) => apply(&mut self.claims, &mut self.bad_lattice, entry, |_| Ok(())),
                Which::Lattice => {}
                Which::Config => apply(&mut self.config, &mut self.bad_config, entry, |_| Ok(())),
            }
        }
    }

    /// Applies one KV change to `map` (keyed by the KV key). A value that cannot be decoded
    /// (or fails `check`) removes the old one and is recorded in `bad`, so nothing keeps acting
    /// on a value the bucket no longer holds.
    fn apply<T: serde::de::DeserializeOwned>(
        map: &mut BTreeMap<String, T>,
        bad: &mut BTreeMap<String, String>,
        entry: &kv::Entry,
        check: impl Fn(&T) -> Result<(), String>,
    ) {
        let key = entry.key.clone();
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<T>(&entry.value).map_err(|e| e.to_string()).and_then(|v| check(&v).map(|()| v)) {
                Ok(v) => {
                    bad.remove(&key);
                    map.insert(key, v);
                }
                Err(error) => {
                    tracing::warn!(key, error, "an unreadable entry in the lattice state; it is listed as unreadable and not used");
                    map.remove(&key);
                    bad.insert(key, error);
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                map.remove(&key);
                bad.remove(&key);
            }
        }
    }

    /// Where the view stands in one bucket.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    struct Progress {
        /// When the bucket's stream was created (unix ns), as of the last load; `None` while
        /// the bucket is missing (or before the first load).
        created: Option<i128>,
        /// The revision the watch applies next: every one before it is in the view.
        next: u64,
    }

    /// One bucket's follower: its progress, and a way to ask it to look at the bucket again.
    struct Follower {
        bucket: String,
        stream: jetstream::stream::Stream,
        progress: watch::Sender<Progress>,
        resync: Notify,
    }

    struct Inner {
        view: RwLock<View>,
        changed: watch::Sender<u64>,
        lattice: Arc<Follower>,
        config: Arc<Follower>,
    }

    impl Inner {
        fn follower(&self, which: Which) -> &Arc<Follower> {
            match which {
                Which::Lattice => &self.lattice,
                Which::Config => &self.config,
            }
        }

        fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
            self.view.write().unwrap_or_else(|p| p.into_inner())
        }

        fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
            self.view.read().unwrap_or_else(|p| p.into_inner())
        }
    }

    /// The live view; cheap to clone. Its watches stop once every clone is dropped.
    #[derive(Clone)]
    pub struct StateView {
        inner: Arc<Inner>,
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

    /// What the server says of a bucket now: its stream's creation time and last sequence, or
    /// `Ok(None)` when the stream does not exist.
    async fn stream_state(stream: &jetstream::stream::Stream, bucket: &str) -> Result<Option<(i128, u64)>, Error> {
        let mut stream = stream.clone();
        match stream.info().await {
            Ok(info) => Ok(Some((info.created.unix_timestamp_nanos(), info.state.last_sequence))),
            Err(e) if e.to_string().contains("10059") => Ok(None),
            Err(e) => Err(kv_err(format!("cannot read the state of `{bucket}`"), e)),
        }
    }

    impl StateView {
        /// Loads the current links, claims and config of `lattice` from `js` (see
        /// [`super::jetstream`]) and keeps them current.
        pub async fn open(js: &jetstream::Context, lattice: &str) -> Result<Self, Error> {
            let lattice_kv = open_bucket(js, &super::lattice_bucket(lattice)).await?;
            let config_kv = open_bucket(js, &super::config_bucket(lattice)).await?;
            let follower = |store: &kv::Store| {
                Arc::new(Follower {
                    bucket: store.name.clone(),
                    stream: store.stream.clone(),
                    progress: watch::channel(Progress::default()).0,
                    resync: Notify::new(),
                })
            };
            let inner = Arc::new(Inner { view: RwLock::default(), changed: watch::channel(0).0, lattice: follower(&lattice_kv), config: follower(&config_kv) });
            for (which, store) in [(Which::Lattice, lattice_kv), (Which::Config, config_kv)] {
                load(&inner, which, &store).await?;
                let advisories = js.client().subscribe(super::bucket_advisories(&store.name)).await.ok();
                if advisories.is_none() {
                    tracing::warn!(bucket = store.name, "cannot subscribe to the bucket's advisories; a deleted bucket is noticed by polling");
                }
                let follower = inner.follower(which).clone();
                tokio::spawn(follow(Arc::downgrade(&inner), which, follower, store, advisories));
            }
            Ok(Self { inner })
        }

        /// Waits until the view holds every write made to the lattice bucket (links, claims)
        /// before this call: one `STREAM.INFO` request, then at most [`SYNC_TIMEOUT`].
        pub async fn sync_lattice(&self) -> Result<(), Error> {
            sync(&self.inner.lattice).await
        }

        /// The same for the config bucket.
        pub async fn sync_config(&self) -> Result<(), Error> {
            sync(&self.inner.config).await
        }

        /// Every link.
        pub fn links(&self) -> Vec<Link> {
            self.inner.read().links.values().cloned().collect()
        }

        /// Runs `f` over the links by KV key, in key order, under the view's read lock (for
        /// listings that take a page and must not copy the rest).
        pub fn with_links<R>(&self, f: impl FnOnce(&BTreeMap<String, Link>) -> R) -> R {
            f(&self.inner.read().links)
        }

        /// The links from `source_id` for one package under one link name (any target): a
        /// range over the key layout, so a lookup on a call path reads only its candidates.
        pub fn links_in_slot(&self, source_id: &str, wit_namespace: &str, wit_package: &str, name: &str) -> Vec<Link> {
            let prefix = super::link_slot_prefix(source_id, wit_namespace, wit_package, name);
            let view = self.inner.read();
            view.links.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)).map(|(_, l)| l.clone()).collect()
        }

        /// The entries of the lattice bucket under `prefix` (e.g. [`super::LINK_PREFIX`]) that
        /// cannot be decoded: not in the view, and reported by key.
        pub fn unreadable(&self, prefix: &str) -> Vec<Unreadable> {
            let view = self.inner.read();
            view.bad_lattice
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, e)| Unreadable { key: k.clone(), error: e.clone() })
                .collect()
        }

        /// Every stored claims map with its key, in key order.
        pub fn claims(&self) -> Vec<(String, StringMap)> {
            self.inner.read().claims.iter().map(|(k, c)| (k.clone(), c.clone())).collect()
        }

        /// Named config `name`.
        pub fn config(&self, name: &str) -> Option<StringMap> {
            self.inner.read().config.get(name).cloned()
        }

        /// The named configs merged in order (later names win); missing names are skipped.
        pub fn merged_config(&self, names: &[String]) -> StringMap {
            let view = self.inner.read();
            names.iter().filter_map(|n| view.config.get(n)).flat_map(|m| m.clone()).collect()
        }

        /// A receiver that sees a new value after every change.
        pub fn changes(&self) -> watch::Receiver<u64> {
            self.inner.changed.subscribe()
        }
    }

    async fn sync(f: &Follower) -> Result<(), Error> {
        let bucket = &f.bucket;
        let Some((created, last)) = stream_state(&f.stream, bucket).await? else {
            return Err(Error::new(
                ErrorKind::Transport,
                format!("the lattice state bucket `{bucket}` does not exist (was it deleted?); restart a host to create it again"),
            ));
        };
        let mut rx = f.progress.subscribe();
        let current = *rx.borrow_and_update();
        // A stream created at another time is another bucket (deleted and created again, or
        // lost by the server). A sequence behind ours proves nothing here: writes may have
        // been applied since the server answered.
        if current.created != Some(created) {
            tracing::debug!(bucket, ?current, created, last, "the view is not of the bucket the server holds; reloading it");
            f.resync.notify_one();
        }
        match tokio::time::timeout(SYNC_TIMEOUT, rx.wait_for(|p| p.created == Some(created) && p.next > last)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::new(
                ErrorKind::Timeout,
                format!("the host's view of `{bucket}` did not catch up with revision {last} within {} s; retry", SYNC_TIMEOUT.as_secs()),
            )),
        }
    }

    /// Reads every live entry of `store` into the view (after clearing what it held) and
    /// records where a watch must start to miss nothing.
    ///
    /// The watch starts at the stream sequence read *before* the listing, so a change made
    /// while we list (or while the watch is being set up) is delivered rather than lost;
    /// entries applied twice are harmless, since the last one delivered is the newest.
    async fn load(inner: &Inner, which: Which, store: &kv::Store) -> Result<(), Error> {
        let bucket = &store.name;
        let follower = inner.follower(which);
        let Some((created, last)) = stream_state(&store.stream, bucket).await? else {
            return Err(Error::new(ErrorKind::Transport, format!("the lattice state bucket `{bucket}` does not exist")));
        };
        let mut initial = Vec::new();
        if last > 0 {
            let mut keys = store.keys().await.map_err(|e| kv_err(format!("cannot list `{bucket}`"), e))?;
            while let Some(key) = keys.try_next().await.map_err(|e| kv_err(format!("cannot list `{bucket}`"), e))? {
                if let Some(entry) = store.entry(key).await.map_err(|e| kv_err(format!("cannot read `{bucket}`"), e))? {
                    initial.push(entry);
                }
            }
        }
        {
            let mut view = inner.write();
            view.clear(which);
            for entry in &initial {
                view.apply(which, entry);
            }
        }
        follower.progress.send_replace(Progress { created: Some(created), next: last + 1 });
        inner.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Why a watch was left.
    enum Leave {
        /// It failed or ended (a NATS restart): resume after the last change applied, unless
        /// the bucket changed under it.
        Ended,
        /// The bucket was deleted or created, or a reader saw it is not the one loaded.
        Resync,
        /// Nobody holds the view any more.
        Dropped,
    }

    /// Applies every change of `store` to the view, until the view is dropped. A NATS restart
    /// ends a watch: it resumes after the last change applied. A bucket deleted (or created
    /// again, or whose sequence went back because the server lost it) is noticed from the
    /// server's advisories at once, or by [`VANISH_CHECK`] at the latest: the view empties while
    /// it is missing and loads it whole once it is back.
    async fn follow(inner: Weak<Inner>, which: Which, f: Arc<Follower>, store: kv::Store, mut advisories: Option<async_nats::Subscriber>) {
        let bucket = store.name.clone();
        // A local timer; the server is asked only every STALL_CHECK while the watch is quiet,
        // and every VANISH_CHECK in any case.
        let mut check = tokio::time::interval(Duration::from_millis(500));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = f.progress.borrow().next;
            let (mut last_delivery, mut last_probe) = (tokio::time::Instant::now(), tokio::time::Instant::now());
            let mut failed_probes = 0u32;
            let leave = match store.watch_all_from_revision(next).await {
                Ok(mut watch) => loop {
                    tokio::select! {
                        entry = watch.next() => match entry {
                            Some(Ok(entry)) => {
                                let Some(inner) = inner.upgrade() else { break Leave::Dropped };
                                inner.write().apply(which, &entry);
                                f.progress.send_modify(|p| p.next = p.next.max(entry.revision + 1));
                                inner.changed.send_modify(|n| *n += 1);
                                last_delivery = tokio::time::Instant::now();
                            }
                            Some(Err(e)) => {
                                tracing::warn!(bucket, error = %e, "state watch failed; restarting it");
                                break Leave::Ended;
                            }
                            None => break Leave::Ended,
                        },
                        Some(adv) = next_advisory(&mut advisories) => {
                            tracing::debug!(bucket, subject = %adv.subject, "stream advisory");
                            if is_create_or_delete(&adv) {
                                break Leave::Resync;
                            }
                        }
                        _ = f.resync.notified() => break Leave::Resync,
                        _ = check.tick() => {
                            if inner.strong_count() == 0 {
                                break Leave::Dropped;
                            }
                            let quiet = last_delivery.elapsed() >= STALL_CHECK;
                            if !(quiet && last_probe.elapsed() >= STALL_CHECK) && last_probe.elapsed() < VANISH_CHECK {
                                continue;
                            }
                            last_probe = tokio::time::Instant::now();
                            let now = match stream_state(&f.stream, &bucket).await {
                                Ok(now) => {
                                    failed_probes = 0;
                                    now
                                }
                                Err(e) => {
                                    failed_probes += 1;
                                    if failed_probes == PROBES_BEFORE_WARNING {
                                        tracing::warn!(bucket, error = %e, "the server has not answered for the state bucket's state {PROBES_BEFORE_WARNING} times in a row; a missed change is caught only once it answers");
                                    }
                                    continue;
                                }
                            };
                            {
                                let p = *f.progress.borrow();
                                if now.is_none_or(|(created, last)| Some(created) != p.created || last + 1 < p.next) {
                                    break Leave::Resync;
                                }
                                if let Some((_, last)) = now
                                    && last >= p.next
                                    && quiet
                                {
                                    tracing::warn!(bucket, behind = last + 1 - p.next, "state watch delivers nothing while the bucket changed; restarting it");
                                    break Leave::Ended;
                                }
                            }
                        }
                    }
                },
                Err(e) => {
                    tracing::warn!(bucket, error = %e, "cannot watch state bucket; retrying");
                    tokio::time::sleep(RETRY).await;
                    Leave::Ended
                }
            };
            if matches!(leave, Leave::Dropped) {
                return;
            }
            let mut unreachable = 0u32;
            // Look at the bucket: the same stream resumes where it was; another one (deleted
            // and created again, or lost by the server) is loaded whole; a missing one empties
            // the view until it is back; an unreachable server leaves the view as it is.
            loop {
                let Some(inner) = inner.upgrade() else { return };
                let p = *f.progress.borrow();
                match stream_state(&f.stream, &bucket).await {
                    Ok(Some((created, last))) if Some(created) == p.created && last + 1 >= p.next && matches!(leave, Leave::Ended) => break,
                    Ok(Some(_)) => match load(&inner, which, &store).await {
                        Ok(()) => {
                            tracing::info!(bucket, "state bucket loaded again");
                            break;
                        }
                        Err(e) => tracing::warn!(bucket, error = %e, "cannot reload state bucket; retrying"),
                    },
                    Ok(None) => {
                        if p.created.is_some() {
                            tracing::warn!(bucket, "the state bucket was deleted; the view is empty until it exists again");
                            inner.write().clear(which);
                            f.progress.send_modify(|p| p.created = None);
                            inner.changed.send_modify(|n| *n += 1);
                        }
                    }
                    Err(e) => {
                        unreachable += 1;
                        if unreachable % (PROBES_BEFORE_WARNING * 8) == PROBES_BEFORE_WARNING {
                            tracing::warn!(bucket, error = %e, attempts = unreachable, "cannot reach the state bucket; the view keeps what it has and retries");
                        } else {
                            tracing::debug!(bucket, error = %e, "cannot reach the state bucket; retrying");
                        }
                    }
                }
                drop(inner);
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    Some(_) = next_advisory(&mut advisories) => {}
                }
            }
        }
    }

    /// Whether an advisory says the stream was created or deleted (others, such as updates
    /// and leader elections, leave its contents as they were).
    fn is_create_or_delete(adv: &async_nats::Message) -> bool {
        matches!(adv.subject.as_str().split('.').nth(4), Some("CREATED" | "DELETED"))
    }

    async fn next_advisory(advisories: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
        match advisories {
            Some(sub) => sub.next().await,
            None => std::future::pending().await,
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

//! Declarative apps in every host: the app API (`wadm.api.{lattice}.model.*`, one host of a
//! queue group answers) and the reconciler.
//!
//! Every host runs the reconciler loop; one at a time leads, through a lease in the apps bucket
//! (key `leader`, `{host_id, expires_ms}`, created or updated only at the revision read, so two
//! hosts cannot both win). The leader renews it every [`TICK`]; a host takes over once it has
//! lapsed ([`LEASE_TTL`]). Hosts are known from `host_heartbeat` events: one not heard from for
//! [`MISSED_HEARTBEATS`] heartbeat intervals (or `HostConfig::host_lost_after`), or that sent
//! `host_stopped`, is gone. Each tick,
//! and whenever a deployment changes, the leader computes every deployed app's desired state
//! against the live hosts, compares it with their inventories and the links and config of the
//! lattice, and acts only through the control interface, as wadm does. Everything it starts
//! carries [`managed_annotations`]; the links and config it puts for an app are recorded under
//! [`owned_key`]. Undeploying removes what carries the app's annotation and the links and config
//! it put or its manifest defines, and nothing else; a new version removes what it no longer
//! defines once it is in place. A link (source, package, link name) or config that two deployed
//! apps define alike is shared and stays while either defines it; defined differently, the app
//! whose definition is in place keeps it (else the one deployed first), and the other is
//! `Failed`, naming the conflict, without ever putting its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use trellis_lattice::app::*;
use trellis_lattice::client::CtlClient;
use trellis_lattice::ctl::{
    CtlResponse, DeleteLinkRequest, HostInventory, Link, ScaleComponentCommand, Schedule, StartProviderCommand, StopProviderCommand, StringMap,
};
use trellis_lattice::event::CloudEvent;
use trellis_lattice::manifest::{APP_SPEC_ANNOTATION, ComponentType, ConfigProperty, Manifest, Trait, managed_annotations, spread_counts};
use trellis_lattice::state::open_bucket;
use trellis_lattice::subject;

use crate::error::{HostError, Result};
use crate::host::HostCtx;

/// How often the leader renews its lease and reconciles.
pub const TICK: Duration = Duration::from_secs(1);
/// How long a lease lasts unless renewed.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// A host not heard from for this many heartbeat intervals is gone.
pub const MISSED_HEARTBEATS: u32 = 3;
/// How long an action the leader took is awaited before it is sent again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

fn kv_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> HostError {
    HostError::Registry(format!("{what}: {e}"))
}

/// The hosts seen lately, and failures reported by events.
#[derive(Default)]
struct Live {
    hosts: HashMap<String, (Instant, StringMap)>,
    /// Component or provider id → (host, error) of the last failed start.
    failures: HashMap<String, (String, String)>,
}

/// Starts the app API server and the reconciler; returns their tasks.
pub(crate) async fn start(ctx: Arc<HostCtx>) -> Result<Vec<JoinHandle<()>>> {
    let store = open_bucket(ctx.js(), &apps_bucket(ctx.lattice())).await?;
    let _ = ctx.apps().set(store.clone());
    let api = ctx
        .nats()
        .queue_subscribe(subject::app_api_wildcard(ctx.lattice()), subject::APP_API_QUEUE.into())
        .await
        .map_err(|e| kv_err("cannot subscribe to the app API", e))?;
    let events = ctx.nats().subscribe(subject::events_wildcard(ctx.lattice())).await.map_err(|e| kv_err("cannot subscribe to lattice events", e))?;
    let watch = store.watch("app.*.deployment").await.map_err(|e| kv_err("cannot watch deployments", e))?;
    let live = Arc::new(Mutex::new(Live::default()));
    let changed = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(serve_api(ctx.clone(), store.clone(), api)));
    tasks.push(tokio::spawn(follow_events(ctx.clone(), live.clone(), changed.clone(), events)));
    let notify = changed.clone();
    tasks.push(tokio::spawn(async move {
        let mut watch = watch;
        while let Some(_entry) = watch.next().await {
            notify.notify_one();
        }
    }));
    tasks.push(tokio::spawn(lead(ctx.clone(), store, live, changed)));
    Ok(tasks)
}

/// Gives the lease up on an orderly stop, so another host leads at once.
pub(crate) async fn release(ctx: &HostCtx) {
    let Some(store) = ctx.apps().get() else { return };
    if let Ok(Some(entry)) = store.entry(LEADER_KEY).await
        && let Ok(lease) = serde_json::from_slice::<Lease>(&entry.value)
        && lease.host_id == ctx.id()
    {
        let expired = Lease { host_id: ctx.id().to_string(), expires_ms: 0 };
        let _ = store.update(LEADER_KEY, serde_json::to_vec(&expired).unwrap_or_default().into(), entry.revision).await;
    }
}

async fn follow_events(ctx: Arc<HostCtx>, live: Arc<Mutex<Live>>, changed: Arc<Notify>, mut events: async_nats::Subscriber) {
    // Seed the table with the hosts up now.
    let ctl = CtlClient::new(ctx.nats().clone(), ctx.lattice()).with_auction_timeout(Duration::from_millis(500));
    if let Ok(hosts) = ctl.ping_hosts().await {
        let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
        for h in hosts {
            l.hosts.entry(h.id).or_insert((Instant::now(), h.labels));
        }
    }
    while let Some(msg) = events.next().await {
        let Ok(ev) = CloudEvent::from_slice(&msg.payload) else { continue };
        let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
        let str_of = |k: &str| ev.data.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        match ev.name() {
            "host_heartbeat" | "host_started" | "labels_changed" => {
                let labels: StringMap = ev.data.get("labels").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
                let new = l.hosts.insert(ev.source.clone(), (Instant::now(), labels)).is_none();
                if new || ev.name() != "host_heartbeat" {
                    changed.notify_one();
                }
            }
            "host_stopped" => {
                l.hosts.remove(&ev.source);
                changed.notify_one();
            }
            "component_scale_failed" => {
                l.failures.insert(str_of("component_id"), (ev.source.clone(), str_of("error")));
            }
            "provider_start_failed" => {
                l.failures.insert(str_of("provider_id"), (ev.source.clone(), str_of("error")));
            }
            "component_scaled" => {
                l.failures.remove(&str_of("component_id"));
            }
            "provider_started" => {
                l.failures.remove(&str_of("provider_id"));
            }
            _ => {}
        }
    }
}

/// Takes or renews the lease; whether this host leads now.
async fn hold_lease(store: &kv::Store, host_id: &str) -> bool {
    let mine = Lease { host_id: host_id.into(), expires_ms: now_ms() + LEASE_TTL.as_millis() as u64 };
    let value: bytes::Bytes = serde_json::to_vec(&mine).unwrap_or_default().into();
    match store.entry(LEADER_KEY).await {
        Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
            let current = serde_json::from_slice::<Lease>(&entry.value).ok();
            let ours = current.as_ref().is_some_and(|l| l.host_id == host_id);
            let lapsed = current.as_ref().is_none_or(|l| l.expires_ms < now_ms());
            if !(ours || lapsed) {
                return false;
            }
            let won = store.update(LEADER_KEY, value, entry.revision).await.is_ok();
            if won && !ours {
                tracing::info!(host_id, "this host now leads the app reconciler");
            }
            won
        }
        Ok(Some(entry)) => store.update(LEADER_KEY, value, entry.revision).await.is_ok(),
        Ok(None) => store.create(LEADER_KEY, value).await.is_ok(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the leader lease");
            false
        }
    }
}

async fn lead(ctx: Arc<HostCtx>, store: kv::Store, live: Arc<Mutex<Live>>, changed: Arc<Notify>) {
    let ctl = CtlClient::new(ctx.nats().clone(), ctx.lattice()).with_timeout(Duration::from_secs(3));
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let gone_after = ctx.host_lost_after().unwrap_or(ctx.heartbeat_interval() * MISSED_HEARTBEATS);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = changed.notified() => {}
        }
        if !hold_lease(&store, ctx.id()).await {
            pending.clear();
            continue;
        }
        let (hosts, failures) = {
            let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
            l.hosts.retain(|_, (seen, _)| seen.elapsed() <= gone_after);
            (l.hosts.keys().cloned().collect::<Vec<_>>(), l.failures.clone())
        };
        pending.retain(|_, at| at.elapsed() < RETRY_AFTER);
        if let Err(e) = reconcile_all(&ctl, &store, &hosts, &failures, &mut pending).await {
            tracing::warn!(error = %e, "reconciling apps failed");
        }
    }
}

/// What the lattice looks like now.
struct Actual {
    inventories: Vec<HostInventory>,
    links: Vec<Link>,
}

async fn reconcile_all(
    ctl: &CtlClient,
    store: &kv::Store,
    hosts: &[String],
    failures: &HashMap<String, (String, String)>,
    pending: &mut HashMap<String, Instant>,
) -> Result<()> {
    let mut deployments = Vec::new();
    let mut keys = store.keys().await.map_err(|e| kv_err("cannot list the apps bucket", e))?;
    while let Some(key) = keys.next().await {
        let Ok(key) = key else { continue };
        if let Some((name, "deployment")) = parse_key(&key) {
            let name = name.to_string();
            if let Ok(Some(value)) = store.get(&key).await
                && let Ok(d) = serde_json::from_slice::<Deployment>(&value)
            {
                deployments.push((name, d));
            }
        }
    }
    if deployments.is_empty() {
        return Ok(());
    }
    let mut inventories = Vec::new();
    for (host, inv) in hosts.iter().zip(futures::future::join_all(hosts.iter().map(|h| ctl.get_host_inventory(h))).await) {
        match inv {
            Ok(inv) => inventories.push(inv),
            // A live host that does not answer: acting now could move its replicas for nothing.
            // If it is gone, it drops out of the table after MISSED_HEARTBEATS intervals.
            Err(e) => {
                tracing::debug!(host_id = host, error = %e, "no inventory from a live host; not reconciling this round");
                return Ok(());
            }
        }
    }
    let links = ctl.get_links().await?;
    let actual = Actual { inventories, links };
    // Undeployed apps first: a link or config one frees, another can take in the same pass.
    deployments.sort_by(|(a, x), (b, y)| (x.active, a).cmp(&(y.active, b)));
    let parsed: Vec<(String, Deployment, std::result::Result<Manifest, String>)> = deployments
        .into_iter()
        .map(|(name, d)| {
            let m = Manifest::parse(&d.manifest).map_err(|e| e.to_string());
            (name, d, m)
        })
        .collect();
    let mut owned_of: HashMap<String, Owned> = HashMap::new();
    for (name, _, _) in &parsed {
        if let Ok(Some(v)) = store.get(owned_key(name)).await
            && let Ok(o) = serde_json::from_slice::<Owned>(&v)
        {
            owned_of.insert(name.clone(), o);
        }
    }
    // What every deployed app defines, for conflicts and sharing between apps.
    let defs: Vec<AppDefs> = parsed
        .iter()
        .filter(|(_, d, _)| d.active)
        .filter_map(|(name, d, m)| m.as_ref().ok().map(|m| (name, d, desired_definitions(m))))
        .map(|(name, d, defined)| AppDefs {
            name: name.clone(),
            since_ms: d.since_ms,
            links: defined.links,
            configs: defined.configs,
            owned: owned_of.get(name).cloned().unwrap_or_default(),
        })
        .collect();
    for (name, deployment, manifest) in parsed {
        if !deployment.active
            && let Ok(Some(v)) = store.get(status_key(&name)).await
            && serde_json::from_slice::<AppStatus>(&v).is_ok_and(|s| s.state == AppState::Undeployed)
        {
            continue;
        }
        let before = owned_of.remove(&name).unwrap_or_default();
        let mut owned = before.clone();
        let others: Vec<&AppDefs> = defs.iter().filter(|d| d.name != name).collect();
        let status = match manifest {
            Err(e) => status(&name, &deployment, AppState::Failed, format!("the stored manifest is invalid: {e}"), vec![]),
            Ok(m) => reconcile(ctl, &m, &deployment, &actual, failures, pending, &others, &mut owned).await,
        };
        owned.links.sort();
        if status.state == AppState::Undeployed {
            if !before.is_empty() {
                let _ = store.purge(owned_key(&name)).await;
            }
        } else if owned != before
            && let Err(e) = store.put(owned_key(&name), serde_json::to_vec(&owned).unwrap_or_default().into()).await
        {
            tracing::warn!(app = name, error = %e, "cannot record the links and config the app put");
        }
        let _ = store.put(status_key(&name), serde_json::to_vec(&status).unwrap_or_default().into()).await;
    }
    Ok(())
}

/// What one deployed app defines (whatever the hosts), and what it put.
struct AppDefs {
    name: String,
    since_ms: u64,
    links: Vec<Link>,
    configs: BTreeMap<String, StringMap>,
    owned: Owned,
}

fn status(name: &str, d: &Deployment, state: AppState, message: String, details: Vec<String>) -> AppStatus {
    AppStatus { name: name.into(), version: d.active.then(|| d.version.clone()), state, message, details, updated_ms: now_ms() }
}

/// The desired state of one app.
#[derive(Default)]
struct Desired {
    /// (host, component id) → replicas.
    components: BTreeMap<(String, String), u32>,
    /// component id → (image, config names).
    images: BTreeMap<String, (String, Vec<String>)>,
    /// (host, provider id).
    providers: BTreeSet<(String, String)>,
    links: Vec<Link>,
    configs: BTreeMap<String, StringMap>,
    problems: Vec<String>,
}

fn matches(labels: &StringMap, requirements: &StringMap) -> bool {
    requirements.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn show(requirements: &StringMap) -> String {
    requirements.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn config_names(configs: &[ConfigProperty], into: &mut BTreeMap<String, StringMap>) -> Vec<String> {
    for c in configs {
        if let Some(p) = &c.properties {
            into.insert(c.name.clone(), p.clone());
        }
    }
    configs.iter().map(|c| c.name.clone()).collect()
}

fn desired(m: &Manifest, actual: &Actual) -> Desired {
    let mut d = Desired::default();
    let hosts: Vec<&HostInventory> = actual.inventories.iter().collect();
    let running = |id: &str, host: &str| -> u32 {
        hosts.iter().filter(|h| h.host_id == host).flat_map(|h| h.components.iter()).filter(|c| c.id == id).map(|c| c.max_instances).sum::<u32>()
            + hosts.iter().filter(|h| h.host_id == host).flat_map(|h| h.providers.iter()).filter(|p| p.id == id).count() as u32
    };
    let cordoned = |host: &str| hosts.iter().any(|h| h.host_id == host && h.schedule == Schedule::Cordoned);
    for c in &m.spec.components {
        let id = m.component_id(c);
        let config = config_names(&c.properties.config, &mut d.configs);
        d.images.insert(id.clone(), (c.properties.image.clone(), config));
        let (daemon, scaler) = match c.scaler() {
            Some(Trait::SpreadScaler(s)) => (false, Some(s)),
            Some(Trait::DaemonScaler(s)) => (true, Some(s)),
            _ => (false, None),
        };
        // Spreads as (name, requirements, count); no spread = every host.
        let spreads: Vec<(String, StringMap, u32)> = match scaler {
            None => vec![(String::new(), StringMap::new(), 1)],
            Some(s) if s.spread.is_empty() => vec![(String::new(), StringMap::new(), s.instances)],
            Some(s) => s
                .spread
                .iter()
                .zip(spread_counts(s.instances, &s.spread.iter().map(|x| x.weight).collect::<Vec<_>>()))
                .map(|(x, n)| (x.name.clone(), x.requirements.clone(), n))
                .collect(),
        };
        let total: u32 = spreads.iter().map(|s| s.2).sum();
        let mut assigned: BTreeMap<String, u32> = BTreeMap::new();
        let mut unplaced = Vec::new();
        let mut unplaced_n = 0;
        for (_, req, count) in &spreads {
            // A draining host gets nothing (its replicas go elsewhere); a cordoned one keeps
            // what it runs but gets no more (capped below).
            let mut eligible: Vec<&str> = hosts.iter().filter(|h| !h.schedule.is_draining() && matches(&h.labels, req)).map(|h| h.host_id.as_str()).collect();
            eligible.sort();
            if *count == 0 {
                continue;
            }
            if eligible.is_empty() {
                unplaced_n += count;
                unplaced.push(if req.is_empty() { "no host is running".to_string() } else { format!("no host matches {}", show(req)) });
                continue;
            }
            match (c.kind, daemon) {
                (_, true) => {
                    for h in &eligible {
                        let mut n = if c.kind == ComponentType::Capability { 1 } else { *count };
                        if cordoned(h) {
                            n = n.min(running(&id, h).saturating_sub(assigned.get(*h).copied().unwrap_or(0)));
                            if n == 0 {
                                continue;
                            }
                        }
                        *assigned.entry(h.to_string()).or_default() += n;
                    }
                }
                (ComponentType::Capability, false) => {
                    // A provider runs once per host: `count` distinct hosts, those running it first.
                    let mut order: Vec<&str> = eligible.iter().copied().filter(|h| !cordoned(h) || running(&id, h) > 0).collect();
                    order.sort_by_key(|h| (assigned.contains_key(*h), std::cmp::Reverse(running(&id, h)), h.to_string()));
                    for h in order.into_iter().take(*count as usize) {
                        assigned.insert(h.to_string(), 1);
                    }
                }
                (ComponentType::Component, false) => {
                    for _ in 0..*count {
                        let h = eligible
                            .iter()
                            .filter(|h| !cordoned(h) || assigned.get(**h).copied().unwrap_or(0) < running(&id, h))
                            .min_by_key(|h| (assigned.get(**h).copied().unwrap_or(0), std::cmp::Reverse(running(&id, h)), h.to_string()))
                            .map(|h| h.to_string());
                        match h {
                            Some(h) => *assigned.entry(h).or_default() += 1,
                            None => {
                                unplaced_n += 1;
                                let why = format!("every host matching {} is cordoned", if req.is_empty() { "it".to_string() } else { show(req) });
                                if !unplaced.contains(&why) {
                                    unplaced.push(why);
                                }
                            }
                        }
                    }
                }
            }
        }
        if unplaced_n > 0 {
            let what = if c.kind == ComponentType::Capability { "instances of provider" } else { "replicas of" };
            d.problems.push(format!("{} of {total} {what} `{}`: {}", total - unplaced_n, c.name, unplaced.join("; ")));
        }
        for (h, n) in assigned {
            match c.kind {
                ComponentType::Component => {
                    d.components.insert((h, id.clone()), n);
                }
                ComponentType::Capability => {
                    d.providers.insert((h, id.clone()));
                }
            }
        }
        for l in c.links() {
            let target = m.component(&l.target.name).map(|t| m.component_id(t)).unwrap_or_else(|| l.target.name.clone());
            d.links.push(Link {
                source_id: id.clone(),
                target,
                name: l.link_name().into(),
                wit_namespace: l.namespace.clone(),
                wit_package: l.package.clone(),
                interfaces: l.interfaces.clone(),
                source_config: config_names(&l.source.config, &mut d.configs),
                target_config: config_names(&l.target.config, &mut d.configs),
            });
        }
    }
    d
}

fn owned_by(annotations: &StringMap, app: &str) -> bool {
    annotations.get(APP_SPEC_ANNOTATION).is_some_and(|a| a == app)
}

/// Sends an action unless the same one went out within [`RETRY_AFTER`]; whether it was sent.
fn fresh(pending: &mut HashMap<String, Instant>, key: String) -> bool {
    if pending.contains_key(&key) {
        return false;
    }
    pending.insert(key, Instant::now());
    true
}

#[allow(clippy::too_many_arguments)]
async fn reconcile(
    ctl: &CtlClient,
    m: &Manifest,
    deployment: &Deployment,
    actual: &Actual,
    failures: &HashMap<String, (String, String)>,
    pending: &mut HashMap<String, Instant>,
    others: &[&AppDefs],
    owned: &mut Owned,
) -> AppStatus {
    let app = m.name();
    let annotations = managed_annotations(app);
    let want = if deployment.active { desired(m, actual) } else { Desired::default() };
    let put_before = owned.clone();
    let mut waiting: Vec<String> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    // Links and config another deployed app holds with another definition: reported, never
    // fought over.
    let mut conflicts: Vec<String> = Vec::new();
    // How many wanted configs, replicas and providers are not in place yet.
    let mut starting = 0;
    // Config before anything that names it.
    for (name, values) in &want.configs {
        let current = ctl.get_config(name).await.ok();
        if let Some(c) = config_conflict(app, deployment.since_ms, name, values, others, current.as_ref()) {
            conflicts.push(c);
            continue;
        }
        owned.configs.insert(name.clone());
        if current.as_ref() != Some(values) {
            starting += 1;
            waiting.push(format!("config `{name}`"));
            if let Err(e) = ctl.put_config(name, values).await {
                errors.push(format!("config `{name}`: {e}"));
            }
        }
    }
    // Components and providers.
    for inv in &actual.inventories {
        let host = &inv.host_id;
        for c in &inv.components {
            let want_n = want.components.get(&(host.clone(), c.id.clone())).copied();
            if owned_by(&c.annotations, app) && want_n.is_none() {
                waiting.push(format!("stop `{}` on host {host}", c.id));
                // New before old: a replica goes only once every replica wanted of it runs
                // elsewhere (right count, right image); one the app no longer has at all (a
                // renamed component) once every wanted replica of the app runs.
                let still_wanted = want.components.keys().any(|(_, id)| id == &c.id);
                let replaced = want.components.iter().filter(|((_, id), _)| !still_wanted || id == &c.id).all(|((h, id), n)| {
                    actual
                        .inventories
                        .iter()
                        .find(|i| &i.host_id == h)
                        .and_then(|i| i.components.iter().find(|x| &x.id == id))
                        .is_some_and(|x| x.max_instances >= *n && want.images.get(id).is_some_and(|(image, _)| &x.image_ref == image))
                });
                // ... and, if it is gone from the app, once no link the app now points
                // elsewhere still calls it.
                let still_called =
                    !still_wanted && actual.links.iter().any(|l| l.target == c.id && want.links.iter().any(|w| same_slot(w, l) && w.target != l.target));
                if !replaced || still_called {
                    continue;
                }
                if fresh(pending, format!("scale:{host}:{}:0", c.id)) {
                    let cmd = ScaleComponentCommand {
                        component_ref: c.image_ref.clone(),
                        component_id: c.id.clone(),
                        max_instances: 0,
                        host_id: host.clone(),
                        annotations: Some(annotations.clone()),
                        ..Default::default()
                    };
                    if let Err(e) = ctl.scale_component(&cmd).await {
                        errors.push(format!("stopping `{}` on host {host}: {e}", c.id));
                    }
                }
            }
        }
        for p in &inv.providers {
            if owned_by(&p.annotations, app) && !want.providers.contains(&(host.clone(), p.id.clone())) {
                waiting.push(format!("stop provider `{}` on host {host}", p.id));
                // New before old, as for components: an instance the app no longer wants here
                // (a draining or cordoned host, labels that no longer match) goes only once
                // every wanted instance of that provider runs. One the app no longer has at all
                // goes at once: a renamed provider may need what the old one holds (an address).
                let replaced = want
                    .providers
                    .iter()
                    .filter(|(_, id)| id == &p.id)
                    .all(|(h, id)| actual.inventories.iter().find(|i| &i.host_id == h).is_some_and(|i| i.providers.iter().any(|x| &x.id == id)));
                if !replaced {
                    continue;
                }
                if fresh(pending, format!("stop-provider:{host}:{}", p.id))
                    && let Err(e) = ctl.stop_provider(&StopProviderCommand { host_id: host.clone(), provider_id: p.id.clone() }).await
                {
                    errors.push(format!("stopping provider `{}` on host {host}: {e}", p.id));
                }
            }
        }
    }
    let inventory = |host: &str| actual.inventories.iter().find(|i| i.host_id == host);
    for ((host, id), n) in &want.components {
        let (image, config) = &want.images[id];
        let current = inventory(host).and_then(|i| i.components.iter().find(|c| &c.id == id));
        if current.is_some_and(|c| c.max_instances == *n && &c.image_ref == image) {
            continue;
        }
        let have = current.map(|c| c.max_instances).unwrap_or(0);
        starting += 1;
        waiting.push(format!("`{id}` on host {host}: {have} of {n} replicas"));
        if let Some((h, err)) = failures.get(id) {
            errors.push(format!("`{id}` failed to start on host {h}: {err}"));
        }
        if fresh(pending, format!("scale:{host}:{id}:{n}:{image}")) {
            let cmd = ScaleComponentCommand {
                component_ref: image.clone(),
                component_id: id.clone(),
                annotations: Some(annotations.clone()),
                max_instances: *n,
                host_id: host.clone(),
                config: config.clone(),
                allow_update: true,
                ..Default::default()
            };
            if let Err(e) = ctl.scale_component(&cmd).await {
                errors.push(format!("scaling `{id}` on host {host}: {e}"));
            }
        }
    }
    for (host, id) in &want.providers {
        if inventory(host).is_some_and(|i| i.providers.iter().any(|p| &p.id == id)) {
            continue;
        }
        starting += 1;
        waiting.push(format!("provider `{id}` on host {host}"));
        if let Some((h, err)) = failures.get(id) {
            errors.push(format!("provider `{id}` failed to start on host {h}: {err}"));
        }
        if fresh(pending, format!("start-provider:{host}:{id}")) {
            let (image, config) = &want.images[id];
            let cmd = StartProviderCommand {
                provider_id: id.clone(),
                provider_ref: image.clone(),
                host_id: host.clone(),
                config: config.clone(),
                annotations: Some(annotations.clone()),
            };
            if let Err(e) = ctl.start_provider(&cmd).await {
                errors.push(format!("starting provider `{id}` on host {host}: {e}"));
            }
        }
    }
    // Links. Whether every wanted component, provider and config is in place: only then does a
    // link the app points elsewhere leave its old target (new before old).
    let placed = starting == 0;
    for link in &want.links {
        if let Some(c) = link_conflict(app, deployment.since_ms, link, others, &actual.links) {
            conflicts.push(c);
            continue;
        }
        let in_slot: Vec<&Link> = actual.links.iter().filter(|l| same_slot(l, link)).collect();
        if in_slot.iter().any(|l| same_definition(l, link)) {
            hold_link(owned, link);
            continue;
        }
        let shown = show_link(link);
        // The slot holds a link to another target (the registry takes no second target for an
        // interface): another app's that it no longer defines and is about to remove, or this
        // app's own from an earlier version.
        let old: Vec<&Link> = in_slot.iter().copied().filter(|l| l.target != link.target).collect();
        if let Some((a, l)) = old
            .iter()
            .find_map(|l| others.iter().find(|a| a.owned.links.iter().any(|x| same_link(x, l)) && !a.links.iter().any(|x| same_link(x, l))).map(|a| (a, l)))
        {
            waiting.push(format!("{shown}, once app `{}` removes its old link to `{}`", a.name, l.target));
            continue;
        }
        let ours: Vec<&Link> = old.iter().copied().filter(|l| put_before.links.iter().any(|x| same_link(x, l))).collect();
        if !ours.is_empty() {
            if !placed {
                waiting.push(format!("{shown}, once every component and provider is in place"));
                continue;
            }
            let req = DeleteLinkRequest {
                source_id: link.source_id.clone(),
                name: link.name.clone(),
                wit_namespace: link.wit_namespace.clone(),
                wit_package: link.wit_package.clone(),
            };
            if let Err(e) = ctl.delete_link(&req).await {
                errors.push(format!("deleting the old {}: {e}", show_link(ours[0])));
                continue;
            }
            owned.links.retain(|x| !(same_slot(x, link) && x.target != link.target));
        }
        waiting.push(shown);
        hold_link(owned, link);
        if let Err(e) = ctl.put_link(link).await {
            errors.push(format!("link {} → {}: {e}", link.source_id, link.target));
        }
    }
    if !deployment.active {
        // Undeploy: the links and config the app put or its manifest defines go too, unless
        // another deployed app defines them.
        let defined = desired_definitions(m);
        let mut links = put_before.links.clone();
        for l in defined.links {
            if !links.iter().any(|x| same_link(x, &l)) {
                links.push(l);
            }
        }
        let configs: BTreeSet<String> = put_before.configs.iter().cloned().chain(defined.configs.into_keys()).collect();
        remove(ctl, &links, &configs, others, actual, owned, &mut waiting, &mut errors).await;
        return if waiting.is_empty() {
            status(app, deployment, AppState::Undeployed, "nothing of the app runs".into(), vec![])
        } else {
            status(app, deployment, AppState::Undeploying, format!("removing {}", waiting.join(", ")), waiting)
        };
    }
    // Forget links the app put that are gone and that it still defines elsewhere or not at all.
    owned.links.retain(|x| want.links.iter().any(|l| same_link(l, x)) || actual.links.iter().any(|a| same_link(a, x)));
    if waiting.is_empty() && errors.is_empty() {
        // This version is in place: what the app put before and no longer defines goes (new
        // before old, as for components).
        let links: Vec<Link> = put_before.links.iter().filter(|o| !want.links.iter().any(|l| same_slot(l, o))).cloned().collect();
        let configs: BTreeSet<String> = put_before.configs.iter().filter(|n| !want.configs.contains_key(*n)).cloned().collect();
        remove(ctl, &links, &configs, others, actual, owned, &mut waiting, &mut errors).await;
    }
    if !errors.is_empty() || !conflicts.is_empty() {
        // A conflict makes the app Failed, not Reconciling: waiting does not end it (changing a
        // manifest, or undeploying the other app, does), and `wash app deploy` stops waiting
        // at Failed and shows this message instead of timing out.
        let message: Vec<String> = conflicts.iter().chain(&errors).cloned().collect();
        let mut details = message.clone();
        details.extend(want.problems.iter().cloned());
        return status(app, deployment, AppState::Failed, message.join("; "), details);
    }
    if !want.problems.is_empty() || !waiting.is_empty() {
        let mut details = want.problems.clone();
        details.extend(waiting.iter().map(|w| format!("waiting for {w}")));
        return status(app, deployment, AppState::Reconciling, details.join("; "), details);
    }
    status(app, deployment, AppState::Deployed, "every component, provider, link and config is in place".into(), vec![])
}

/// Deletes `links` and `configs`, which the app put or defined and no longer wants, unless
/// another deployed app defines them too: then they stay for it, and the app forgets them. What
/// is gone already is forgotten; what is deleted now is forgotten once it is seen gone.
#[allow(clippy::too_many_arguments)]
async fn remove(
    ctl: &CtlClient,
    links: &[Link],
    configs: &BTreeSet<String>,
    others: &[&AppDefs],
    actual: &Actual,
    owned: &mut Owned,
    waiting: &mut Vec<String>,
    errors: &mut Vec<String>,
) {
    for link in links {
        let shared = others.iter().any(|o| o.links.iter().any(|l| same_link(l, link)));
        if shared || !actual.links.iter().any(|l| same_link(l, link)) {
            owned.links.retain(|x| !same_link(x, link));
            continue;
        }
        waiting.push(format!("delete {}", show_link(link)));
        let req = DeleteLinkRequest {
            source_id: link.source_id.clone(),
            name: link.name.clone(),
            wit_namespace: link.wit_namespace.clone(),
            wit_package: link.wit_package.clone(),
        };
        if let Err(e) = ctl.delete_link(&req).await {
            errors.push(format!("deleting {}: {e}", show_link(link)));
        }
    }
    for name in configs {
        let shared = others.iter().any(|o| o.configs.contains_key(name));
        if shared || ctl.get_config(name).await.is_err() {
            owned.configs.remove(name);
            continue;
        }
        waiting.push(format!("delete config `{name}`"));
        if let Err(e) = ctl.delete_config(name).await {
            errors.push(format!("deleting config `{name}`: {e}"));
        }
    }
}

/// Records `link` as put by the app (replacing what it recorded for the same target).
fn hold_link(owned: &mut Owned, link: &Link) {
    owned.links.retain(|x| !same_link(x, link));
    owned.links.push(link.clone());
}

fn show_link(l: &Link) -> String {
    format!("link `{}` → `{}` ({}:{}, name {})", l.source_id, l.target, l.wit_namespace, l.wit_package, l.name)
}

/// Same source, package and link name: the links `link.del` removes together.
fn same_slot(a: &Link, b: &Link) -> bool {
    a.source_id == b.source_id && a.name == b.name && a.wit_namespace == b.wit_namespace && a.wit_package == b.wit_package
}

/// The same link in every field.
fn same_definition(a: &Link, b: &Link) -> bool {
    same_link(a, b) && a.interfaces == b.interfaces && a.source_config == b.source_config && a.target_config == b.target_config
}

/// Of the apps defining one thing, the one that keeps it: one whose definition is in place, else
/// the one deployed first, else by name. `candidates` are (in place, deployed since, app).
fn keeper<'a>(candidates: impl Iterator<Item = (bool, u64, &'a str)>) -> Option<&'a str> {
    candidates.min_by_key(|(in_place, since, name)| (!in_place, *since, *name)).map(|(_, _, name)| name)
}

/// Whether `def`, a link of `app` (deployed since `since`), loses its slot to another deployed
/// app that defines the slot otherwise: the message naming that app and what to do, if so. Two
/// apps defining the same link share it.
fn link_conflict(app: &str, since: u64, def: &Link, others: &[&AppDefs], actual: &[Link]) -> Option<String> {
    let rivals: Vec<(&AppDefs, &Link)> = others.iter().flat_map(|o| o.links.iter().filter(|l| same_slot(l, def)).map(move |l| (*o, l))).collect();
    if rivals.iter().all(|(_, l)| same_definition(l, def)) {
        return None;
    }
    let in_place = |l: &Link| actual.iter().any(|a| same_definition(a, l));
    let winner = keeper(std::iter::once((in_place(def), since, app)).chain(rivals.iter().map(|(o, l)| (in_place(l), o.since_ms, o.name.as_str()))))?;
    let (o, l) = rivals.iter().find(|(o, _)| o.name == winner)?;
    if same_definition(l, def) {
        return None;
    }
    let how = if l.target != def.target {
        format!("→ `{}`", l.target)
    } else if l.interfaces != def.interfaces {
        format!("with interfaces [{}]", l.interfaces.join(", "))
    } else {
        "with other source or target config".to_string()
    };
    Some(format!("{} conflicts with app `{}`, which defines it {how}; change one of the manifests", show_link(def), o.name))
}

/// Whether config `name` with `values`, defined by `app` (deployed since `since`), loses to
/// another deployed app that defines it with other values: the message, if so. `current` is
/// what the lattice holds.
fn config_conflict(app: &str, since: u64, name: &str, values: &StringMap, others: &[&AppDefs], current: Option<&StringMap>) -> Option<String> {
    let rivals: Vec<(&AppDefs, &StringMap)> = others.iter().filter_map(|o| o.configs.get(name).map(|v| (*o, v))).collect();
    if rivals.iter().all(|(_, v)| *v == values) {
        return None;
    }
    let in_place = |v: &StringMap| current == Some(v);
    let winner = keeper(std::iter::once((in_place(values), since, app)).chain(rivals.iter().map(|(o, v)| (in_place(v), o.since_ms, o.name.as_str()))))?;
    let (o, v) = rivals.iter().find(|(o, _)| o.name == winner)?;
    if *v == values {
        return None;
    }
    Some(format!("config `{name}` conflicts with app `{}`, which defines it with other values; change one of the manifests", o.name))
}

fn same_link(a: &Link, b: &Link) -> bool {
    a.source_id == b.source_id && a.target == b.target && a.name == b.name && a.wit_namespace == b.wit_namespace && a.wit_package == b.wit_package
}

/// The links and config a manifest defines, whatever the hosts.
fn desired_definitions(m: &Manifest) -> Desired {
    desired(m, &Actual { inventories: vec![], links: vec![] })
}

// ---------------------------------------------------------------------------------------------
// The app API.

async fn serve_api(ctx: Arc<HostCtx>, store: kv::Store, mut sub: async_nats::Subscriber) {
    while let Some(msg) = sub.next().await {
        let (ctx, store) = (ctx.clone(), store.clone());
        tokio::spawn(async move {
            let Some(reply) = msg.reply.clone() else { return };
            let body = match handle_api(&ctx, &store, &msg.subject, &msg.payload).await {
                Ok(v) => serde_json::to_vec(&CtlResponse::ok(v)),
                Err(e) => serde_json::to_vec(&CtlResponse::<()>::error(e)),
            }
            .unwrap_or_default();
            let _ = ctx.nats().publish(reply, body.into()).await;
        });
    }
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(op: &str, payload: &[u8]) -> std::result::Result<T, String> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(payload).map_err(|e| format!("the {op} request body is malformed: {e}"))
}

async fn versions(store: &kv::Store, app: &str) -> std::result::Result<Vec<(u64, StoredVersion)>, String> {
    let prefix = versions_prefix(app);
    let mut out = Vec::new();
    let mut keys = store.keys().await.map_err(|e| format!("cannot list the apps bucket: {e}"))?;
    while let Some(key) = keys.next().await {
        let Ok(key) = key else { continue };
        if !key.starts_with(&prefix) {
            continue;
        }
        if let Ok(Some(entry)) = store.entry(&key).await
            && entry.operation == kv::Operation::Put
            && let Ok(v) = serde_json::from_slice::<StoredVersion>(&entry.value)
        {
            out.push((entry.revision, v));
        }
    }
    out.sort_by_key(|(rev, _)| *rev);
    Ok(out)
}

async fn get_json<T: serde::de::DeserializeOwned>(store: &kv::Store, key: &str) -> std::result::Result<Option<(u64, T)>, String> {
    match store.entry(key).await {
        Ok(Some(e)) if e.operation == kv::Operation::Put => Ok(serde_json::from_slice(&e.value).ok().map(|v| (e.revision, v))),
        Ok(_) => Ok(None),
        Err(e) => Err(format!("cannot read `{key}`: {e}")),
    }
}

async fn put_json<T: serde::Serialize>(store: &kv::Store, key: &str, value: &T) -> std::result::Result<(), String> {
    store.put(key, serde_json::to_vec(value).unwrap_or_default().into()).await.map(|_| ()).map_err(|e| format!("cannot write `{key}`: {e}"))
}

async fn pick(store: &kv::Store, app: &str, version: Option<&str>) -> std::result::Result<StoredVersion, String> {
    let all = versions(store, app).await?;
    if all.is_empty() {
        return Err(format!("no app `{app}`; store it with `wash app deploy FILE`"));
    }
    match version {
        None => Ok(all.into_iter().next_back().map(|(_, v)| v).unwrap_or_else(|| unreachable!())),
        Some(v) => all
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| s.version == v)
            .ok_or_else(|| format!("app `{app}` has no version `{v}`; `wash app history {app}` lists them")),
    }
}

async fn handle_api(ctx: &HostCtx, store: &kv::Store, subject_: &str, payload: &[u8]) -> std::result::Result<serde_json::Value, String> {
    let Some((op, name)) = subject::parse_app_api(ctx.lattice(), subject_) else {
        return Err(format!("`{subject_}` is not an app API subject"));
    };
    let need_name = || -> std::result::Result<&str, String> {
        let n = name.ok_or_else(|| format!("{op} needs the app name as the last token of the subject"))?;
        trellis_lattice::validate_id("application name", n).map_err(|e| e.to_string())?;
        Ok(n)
    };
    match op.as_str() {
        "model.put" => {
            let text = std::str::from_utf8(payload).map_err(|_| "the manifest is not UTF-8 text".to_string())?;
            let m = Manifest::parse(text).map_err(|errors| {
                let lines: Vec<String> = errors
                    .errors()
                    .iter()
                    .map(|e| match e.line {
                        Some(l) => format!("line {l}: {e}"),
                        None => e.to_string(),
                    })
                    .collect();
                format!("the manifest has {} mistake{}:\n{}", lines.len(), if lines.len() == 1 { "" } else { "s" }, lines.join("\n"))
            })?;
            let created_ms = now_ms();
            let version = m.version().map(str::to_string).unwrap_or_else(|| format!("v{created_ms}"));
            let key = version_key(m.name(), &version);
            let stored = StoredVersion { version: version.clone(), manifest: text.into(), created_ms };
            let created = match store.create(&key, serde_json::to_vec(&stored).unwrap_or_default().into()).await {
                Ok(_) => true,
                Err(_) => match get_json::<StoredVersion>(store, &key).await? {
                    Some((_, old)) if old.manifest == text => false,
                    Some(_) => {
                        return Err(format!(
                            "version `{version}` of app `{}` is already stored with a different manifest; change metadata.annotations.version",
                            m.name()
                        ));
                    }
                    None => return Err(format!("cannot store version `{version}` of app `{}`", m.name())),
                },
            };
            let total_versions = versions(store, m.name()).await?.len();
            Ok(to_json(&PutResponse { name: m.name().into(), version, created, total_versions }))
        }
        "model.get" => {
            let n = need_name()?;
            let req: VersionRequest = parse_body(&op, payload)?;
            let v = pick(store, n, req.version.as_deref()).await?;
            let deployed = get_json::<Deployment>(store, &deployment_key(n)).await?.is_some_and(|(_, d)| d.active && d.version == v.version);
            Ok(to_json(&GetResponse { name: n.into(), version: v.version, manifest: v.manifest, deployed }))
        }
        "model.versions" => {
            let n = need_name()?;
            let dep = get_json::<Deployment>(store, &deployment_key(n)).await?.map(|(_, d)| d).filter(|d| d.active);
            let all = versions(store, n).await?;
            if all.is_empty() {
                return Err(format!("no app `{n}`"));
            }
            let out: Vec<VersionInfo> = all
                .into_iter()
                .map(|(_, v)| VersionInfo { deployed: dep.as_ref().is_some_and(|d| d.version == v.version), version: v.version, created_ms: v.created_ms })
                .collect();
            Ok(to_json(&out))
        }
        "model.list" => {
            let mut names = BTreeSet::new();
            let mut keys = store.keys().await.map_err(|e| format!("cannot list the apps bucket: {e}"))?;
            while let Some(key) = keys.next().await {
                if let Ok(key) = key
                    && let Some((n, _)) = parse_key(&key)
                {
                    names.insert(n.to_string());
                }
            }
            let mut out = Vec::new();
            for n in names {
                let all = versions(store, &n).await?;
                let latest = all.last().map(|(_, v)| v);
                let dep = get_json::<Deployment>(store, &deployment_key(&n)).await?.map(|(_, d)| d);
                if latest.is_none() && !dep.as_ref().is_some_and(|d| d.active) {
                    continue;
                }
                let status = get_json::<AppStatus>(store, &status_key(&n)).await?.map(|(_, s)| s);
                out.push(AppSummary {
                    name: n.clone(),
                    latest_version: latest.map(|v| v.version.clone()),
                    deployed_version: dep.filter(|d| d.active).map(|d| d.version),
                    description: latest.and_then(|v| Manifest::parse(&v.manifest).ok()).and_then(|m| m.description().map(str::to_string)),
                    status,
                });
            }
            Ok(to_json(&out))
        }
        "model.deploy" => {
            let n = need_name()?;
            let req: VersionRequest = parse_body(&op, payload)?;
            let v = pick(store, n, req.version.as_deref()).await?;
            // A new version of a deployed app keeps the time it was first deployed.
            let since_ms = match get_json::<Deployment>(store, &deployment_key(n)).await? {
                Some((_, d)) if d.active => d.since_ms,
                _ => now_ms(),
            };
            let d = Deployment { version: v.version, manifest: v.manifest, active: true, since_ms };
            put_json(store, &deployment_key(n), &d).await?;
            let _ = put_json(store, &status_key(n), &status(n, &d, AppState::Reconciling, "deployed; waiting for the reconciler".into(), vec![])).await;
            Ok(to_json(&d))
        }
        "model.undeploy" => {
            let n = need_name()?;
            match get_json::<Deployment>(store, &deployment_key(n)).await? {
                Some((_, d)) if d.active => {
                    let d = Deployment { active: false, ..d };
                    put_json(store, &deployment_key(n), &d).await?;
                    let _ =
                        put_json(store, &status_key(n), &status(n, &d, AppState::Undeploying, "undeployed; waiting for the reconciler".into(), vec![])).await;
                    Ok(serde_json::Value::Null)
                }
                _ => Err(format!("app `{n}` is not deployed")),
            }
        }
        "model.del" => {
            let n = need_name()?;
            let req: VersionRequest = parse_body(&op, payload)?;
            let all = versions(store, n).await?;
            if all.is_empty() {
                return Err(format!("no app `{n}`"));
            }
            let dep = get_json::<Deployment>(store, &deployment_key(n)).await?.map(|(_, d)| d).filter(|d| d.active);
            match &req.version {
                Some(v) => {
                    if !all.iter().any(|(_, s)| &s.version == v) {
                        return Err(format!("app `{n}` has no version `{v}`"));
                    }
                    if dep.as_ref().is_some_and(|d| &d.version == v) {
                        return Err(format!("version `{v}` of app `{n}` is deployed; undeploy it first (`wash app undeploy {n}`)"));
                    }
                    store.purge(version_key(n, v)).await.map_err(|e| format!("cannot delete version `{v}`: {e}"))?;
                }
                None => {
                    if let Some(d) = dep {
                        put_json(store, &deployment_key(n), &Deployment { active: false, ..d }).await?;
                    }
                    for (_, s) in all {
                        store.purge(version_key(n, &s.version)).await.map_err(|e| format!("cannot delete version `{}`: {e}", s.version))?;
                    }
                }
            }
            Ok(serde_json::Value::Null)
        }
        "model.status" => {
            let n = need_name()?;
            let stored = get_json::<AppStatus>(store, &status_key(n)).await?.map(|(_, s)| s);
            if versions(store, n).await?.is_empty() && stored.as_ref().is_none_or(|s| s.state == AppState::Undeployed) {
                // Deleted (and cleaned up), or never stored.
                return Err(format!("no app `{n}`"));
            }
            if let Some(s) = stored {
                return Ok(to_json(&s));
            }
            Ok(to_json(&AppStatus {
                name: n.into(),
                version: None,
                state: AppState::Undeployed,
                message: "never deployed".into(),
                details: vec![],
                updated_ms: now_ms(),
            }))
        }
        other => Err(format!(
            "unknown app API operation `{other}`; the operations are model.put, model.get, model.list, model.versions, model.del, model.deploy, model.undeploy and model.status"
        )),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, zone: &str) -> HostInventory {
        HostInventory { host_id: id.into(), labels: [("zone".to_string(), zone.to_string())].into(), ..Default::default() }
    }

    fn app(traits: &str, kind: &str, image: &str) -> Manifest {
        let text = format!(
            "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: t\nspec:\n  components:\n    - name: c\n      type: {kind}\n      properties:\n        image: {image}\n{traits}"
        );
        Manifest::parse(&text).expect("a valid manifest")
    }

    fn placed(d: &Desired) -> Vec<(String, u32)> {
        d.components.iter().map(|((h, _), n)| (h.clone(), *n)).collect()
    }

    const SPREAD: &str = "      traits:\n        - type: spreadscaler\n          properties:\n            instances: 7\n            spread:\n              - name: a\n                requirements: {zone: cloud}\n                weight: 2\n              - name: b\n                requirements: {zone: edge}\n                weight: 1\n";

    #[test]
    fn spreads_follow_weights_and_fill_the_emptiest_host_first() {
        let actual = Actual { inventories: vec![host("h1", "cloud"), host("h2", "cloud"), host("h3", "edge")], links: vec![] };
        let d = desired(&app(SPREAD, "component", "file:///c.wasm"), &actual);
        // 7 × 2/3 = 4.67 → 5 on cloud (3 + 2), 2 on edge.
        assert_eq!(placed(&d), [("h1".into(), 3), ("h2".into(), 2), ("h3".into(), 2)]);
        assert!(d.problems.is_empty());
        let only_cloud = Actual { inventories: vec![host("h1", "cloud")], links: vec![] };
        let d = desired(&app(SPREAD, "component", "file:///c.wasm"), &only_cloud);
        assert_eq!(placed(&d), [("h1".into(), 5)]);
        assert_eq!(d.problems, ["5 of 7 replicas of `c`: no host matches zone=edge"]);
    }

    #[test]
    fn a_cordoned_host_keeps_what_it_runs_and_a_draining_one_gets_nothing() {
        use trellis_lattice::ctl::ComponentDescription;
        let spread = "      traits:\n        - type: spreadscaler\n          properties:\n            instances: 6\n";
        let m = app(spread, "component", "file:///c.wasm");
        let mut h1 = host("h1", "cloud");
        h1.schedule = Schedule::Cordoned;
        h1.components = vec![ComponentDescription { id: "t-c".into(), image_ref: "file:///c.wasm".into(), max_instances: 2, ..Default::default() }];
        let actual = Actual { inventories: vec![h1.clone(), host("h2", "cloud")], links: vec![] };
        assert_eq!(m.component_id(&m.spec.components[0]), "t-c");
        assert_eq!(placed(&desired(&m, &actual)), [("h1".into(), 2), ("h2".into(), 4)]);
        h1.schedule = Schedule::Draining;
        let actual = Actual { inventories: vec![h1.clone(), host("h2", "cloud")], links: vec![] };
        assert_eq!(placed(&desired(&m, &actual)), [("h2".into(), 6)]);
        h1.schedule = Schedule::Cordoned;
        let only_cordoned = Actual { inventories: vec![h1], links: vec![] };
        let d = desired(&m, &only_cordoned);
        assert_eq!(placed(&d), [("h1".into(), 2)]);
        assert_eq!(d.problems, ["2 of 6 replicas of `c`: every host matching it is cordoned"]);
    }

    #[test]
    fn daemons_go_everywhere_and_providers_once_per_host() {
        let actual = Actual { inventories: vec![host("h1", "cloud"), host("h2", "cloud"), host("h3", "edge")], links: vec![] };
        let daemon = "      traits:\n        - type: daemonscaler\n          properties:\n            instances: 2\n            spread:\n              - name: a\n                requirements: {zone: cloud}\n";
        let d = desired(&app(daemon, "component", "file:///c.wasm"), &actual);
        assert_eq!(placed(&d), [("h1".into(), 2), ("h2".into(), 2)]);
        let d = desired(&app(SPREAD, "capability", "builtin://http-server"), &actual);
        let hosts: Vec<&str> = d.providers.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(hosts, ["h1", "h2", "h3"], "5 instances on 2 cloud hosts: once on each");
        let d = desired(&app("", "capability", "builtin://http-server"), &actual);
        assert_eq!(d.providers.len(), 1, "no scaler: one instance");
    }

    fn http_link(target: &str) -> Link {
        Link {
            source_id: "web".into(),
            target: target.into(),
            name: "default".into(),
            wit_namespace: "wasi".into(),
            wit_package: "http".into(),
            interfaces: vec!["incoming-handler".into()],
            source_config: vec![],
            target_config: vec![],
        }
    }

    fn defs(name: &str, since_ms: u64, links: Vec<Link>, configs: &[(&str, &str)]) -> AppDefs {
        let configs = configs.iter().map(|(n, v)| (n.to_string(), StringMap::from([("v".to_string(), v.to_string())]))).collect();
        AppDefs { name: name.into(), since_ms, links, configs, owned: Owned::default() }
    }

    #[test]
    fn a_link_two_apps_define_differently_stays_with_the_one_that_holds_it_else_the_first_deployed() {
        let other = defs("other", 20, vec![http_link("c")], &[]);
        let mine = http_link("b");
        // Nothing in place: the app deployed first (10 < 20) keeps it; the other is told why.
        assert_eq!(link_conflict("first", 10, &mine, &[&other], &[]), None);
        let early = defs("early", 5, vec![http_link("c")], &[]);
        assert_eq!(
            link_conflict("late", 10, &mine, &[&early], &[]).as_deref(),
            Some("link `web` → `b` (wasi:http, name default) conflicts with app `early`, which defines it → `c`; change one of the manifests")
        );
        // What is in place wins over who came first.
        assert_eq!(link_conflict("late", 10, &mine, &[&early], std::slice::from_ref(&mine)), None);
        assert!(link_conflict("first", 10, &mine, &[&other], &[http_link("c")]).is_some_and(|m| m.contains("app `other`")));
        // The same definition is shared, whoever came first.
        assert_eq!(link_conflict("late", 10, &mine, &[&defs("early", 5, vec![mine.clone()], &[])], &[]), None);
        // Other interfaces, same target.
        let mut wider = http_link("b");
        wider.interfaces.push("outgoing-handler".into());
        let m = link_conflict("late", 10, &mine, &[&defs("early", 5, vec![wider], &[])], &[]).expect("a conflict");
        assert!(m.ends_with("which defines it with interfaces [incoming-handler, outgoing-handler]; change one of the manifests"), "{m}");
        // Another slot (link name) is no conflict.
        let mut named = http_link("c");
        named.name = "admin".into();
        assert_eq!(link_conflict("late", 10, &mine, &[&defs("early", 5, vec![named], &[])], &[]), None);
    }

    #[test]
    fn a_config_two_apps_define_differently_stays_with_the_one_that_holds_it() {
        let v = |s: &str| StringMap::from([("v".to_string(), s.to_string())]);
        let early = defs("early", 5, vec![], &[("cfg", "1")]);
        assert_eq!(config_conflict("late", 10, "cfg", &v("1"), &[&early], None), None, "same values: shared");
        assert_eq!(
            config_conflict("late", 10, "cfg", &v("2"), &[&early], None).as_deref(),
            Some("config `cfg` conflicts with app `early`, which defines it with other values; change one of the manifests")
        );
        assert_eq!(config_conflict("late", 10, "cfg", &v("2"), &[&early], Some(&v("2"))), None, "in place wins");
        assert_eq!(config_conflict("late", 10, "other", &v("2"), &[&early], None), None);
    }
}

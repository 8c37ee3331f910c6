//! The dashboard's lattice side: a live view of hosts, what they run, links and apps, kept
//! current from the lattice's events (`wasmbus.evt.{lattice}.>`) and app status updates
//! (`wadm.status.{lattice}.*`), re-read in full every [`REFRESH_EVERY`]; the Server-Sent Events
//! that carry changes to each page; and the actions (scale, cordon/uncordon/drain, validate,
//! deploy, undeploy), all through `CtlClient` and `AppClient`.
//!
//! NATS need not be up when `wash ui` starts: the backend connects in the background (every
//! [`RECONNECT_EVERY`]) and tells pages whether the lattice is reachable; once connected the
//! NATS client reconnects by itself, and a page is told to re-read the whole view when it is back.
//!
//! Bounds: at most [`MAX_SSE_CLIENTS`] event streams and [`MAX_SPY_STREAMS`] spy streams at
//! once; each stream has a queue of [`CLIENT_QUEUE`] messages, and a page that falls behind it
//! is sent `resync` (re-read the view) instead of what it missed; a relayed event's data is
//! cut to [`MAX_EVENT_DATA`] bytes; the view holds at most [`MAX_HOSTS`] hosts (hosts gone
//! longer than [`GONE_KEPT`] are dropped first) and the links and apps the control interface
//! lists (itself capped at [`trellis_lattice::client::MAX_PAGES`] pages).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt as _;
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use trellis_lattice::ErrorKind;
use trellis_lattice::app::{AppClient, ModelSummary, Status};
use trellis_lattice::client::CtlClient;
use trellis_lattice::ctl::{Host, HostInventory, Link, ScaleComponentCommand};
use trellis_lattice::event::{CloudEvent, ComponentScaleFailed, ComponentScaled};
use trellis_lattice::manifest::Manifest;

use super::Body;
use crate::cli::Global;

/// The most pages with a live event stream at once.
pub const MAX_SSE_CLIENTS: usize = 16;
/// The most spy streams (a component's live calls) at once.
pub const MAX_SPY_STREAMS: usize = 4;
/// Messages queued for one stream; past it the page is told to resync.
pub const CLIENT_QUEUE: usize = 256;
/// The most bytes of an event's data relayed to the feed (more is replaced by its size).
pub const MAX_EVENT_DATA: usize = 16 * 1024;
/// The most hosts the view keeps.
pub const MAX_HOSTS: usize = 1000;
/// How long a host that is gone stays in the view (shown as gone).
pub const GONE_KEPT: Duration = Duration::from_secs(600);
/// How often the whole view is read again (hosts that miss two pings in a row are gone).
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// How often the backend tries to reach NATS until it first does.
pub const RECONNECT_EVERY: Duration = Duration::from_secs(2);
/// How often a stream gets a keep-alive comment (a closed page is noticed by then).
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long `scale` waits for the host's outcome event.
const SCALE_WAIT: Duration = Duration::from_secs(15);

/// An error for the page: a status and one line naming what failed and what to do.
pub type ApiError = (StatusCode, String);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A lattice error as the status that says it best, with its message.
fn lattice_error(e: anyhow::Error) -> ApiError {
    let status = match e.downcast_ref::<trellis_lattice::Error>().map(|e| e.kind()) {
        Some(ErrorKind::InvalidInput) => StatusCode::BAD_REQUEST,
        Some(ErrorKind::Refused) => StatusCode::CONFLICT,
        Some(ErrorKind::Timeout) | Some(ErrorKind::NoResponders) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    (status, format!("{e:#}"))
}

fn bad_id(what: &str, id: &str) -> Result<(), ApiError> {
    trellis_lattice::validate_id(what, id).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
}

/// The clients of a reachable lattice.
#[derive(Clone)]
struct Conn {
    ctl: CtlClient,
    apps: AppClient,
}

/// One host as the page shows it.
#[derive(Debug, Clone, Serialize)]
struct HostEntry {
    /// What the host answered to the last ping (uptime, JetStream domain, admin address).
    info: Option<Host>,
    /// What it runs.
    inventory: HostInventory,
    /// It said goodbye, or missed two pings in a row.
    gone: bool,
    /// When it was last heard from, in milliseconds since the Unix epoch.
    last_seen_ms: u64,
    #[serde(skip)]
    missed_pings: u32,
    #[serde(skip)]
    gone_since: Option<Instant>,
}

#[derive(Default)]
struct View {
    hosts: BTreeMap<String, HostEntry>,
    links: Vec<Link>,
    unreadable_links: usize,
    apps: BTreeMap<String, ModelSummary>,
}

impl View {
    /// Drops the hosts gone longest, then any gone past [`GONE_KEPT`], to stay within [`MAX_HOSTS`].
    fn prune(&mut self) {
        self.hosts.retain(|_, h| h.gone_since.is_none_or(|t| t.elapsed() < GONE_KEPT));
        while self.hosts.len() > MAX_HOSTS {
            let oldest = self.hosts.iter().filter(|(_, h)| h.gone).min_by_key(|(_, h)| h.last_seen_ms).map(|(k, _)| k.clone());
            let victim = oldest.or_else(|| self.hosts.keys().next_back().cloned());
            match victim {
                Some(k) => self.hosts.remove(&k),
                None => break,
            };
        }
    }
}

/// A scale action from the page.
#[derive(Debug, Deserialize)]
pub struct ScaleRequest {
    host_id: String,
    component_id: String,
    max_instances: u32,
}

/// The dashboard's backend.
pub struct Api {
    g: Global,
    conn: tokio::sync::RwLock<Option<Conn>>,
    /// Why the lattice is unreachable ("" while it is).
    problem: Mutex<String>,
    view: Mutex<View>,
    tx: broadcast::Sender<Arc<str>>,
    sse_clients: Arc<AtomicUsize>,
    spy_streams: Arc<AtomicUsize>,
    /// Reads under way (`host:{id}`, `links`, `apps`): `true` when another was asked for meanwhile.
    refreshing: Mutex<HashMap<String, bool>>,
}

/// Decrements a counter when dropped (a stream ended).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Slot {
    fn take(counter: &Arc<AtomicUsize>, cap: usize, what: &str) -> Result<Self, ApiError> {
        if counter.fetch_add(1, Ordering::Relaxed) >= cap {
            counter.fetch_sub(1, Ordering::Relaxed);
            return Err((StatusCode::SERVICE_UNAVAILABLE, format!("{cap} {what} are open already, the limit; close another dashboard tab or view")));
        }
        Ok(Self(counter.clone()))
    }
}

/// One Server-Sent Events message.
fn frame(event: &str, data: &impl Serialize) -> Arc<str> {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    Arc::from(format!("event: {event}\ndata: {json}\n\n"))
}

impl Api {
    /// The backend for the lattice the global flags name; connects in the background.
    pub async fn start(g: &Global) -> Arc<Self> {
        let (tx, _) = broadcast::channel(CLIENT_QUEUE);
        let api = Arc::new(Self {
            g: g.clone(),
            conn: tokio::sync::RwLock::new(None),
            problem: Mutex::new(format!("connecting to NATS at {}", crate::lattice::nats_url(g))),
            view: Mutex::new(View::default()),
            tx,
            sse_clients: Arc::new(AtomicUsize::new(0)),
            spy_streams: Arc::new(AtomicUsize::new(0)),
            refreshing: Mutex::new(HashMap::new()),
        });
        tokio::spawn(api.clone().supervise());
        api
    }

    fn broadcast(&self, event: &str, data: &impl Serialize) {
        let _ = self.tx.send(frame(event, data));
    }

    fn set_problem(&self, problem: String) {
        let changed = {
            let mut p = self.problem.lock().unwrap_or_else(|e| e.into_inner());
            let changed = *p != problem;
            *p = problem.clone();
            changed
        };
        if changed {
            self.broadcast("connection", &json!({"connected": problem.is_empty(), "message": problem}));
        }
    }

    async fn conn(&self) -> Result<Conn, ApiError> {
        match self.conn.read().await.clone() {
            Some(c) if c.ctl.nats().connection_state() == async_nats::connection::State::Connected => Ok(c),
            _ => Err((StatusCode::SERVICE_UNAVAILABLE, format!("the lattice is unreachable ({}); try again once it is back", self.problem_text()))),
        }
    }

    fn problem_text(&self) -> String {
        self.problem.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Connects (retrying), then relays events and watches the connection for good.
    async fn supervise(self: Arc<Self>) {
        let url = crate::lattice::nats_url(&self.g);
        let ctl = loop {
            match crate::lattice::ctl(&self.g).await {
                Ok(ctl) => break ctl,
                Err(e) => {
                    self.set_problem(format!("cannot reach NATS at {url}: {e:#}; retrying every {} s", RECONNECT_EVERY.as_secs()));
                    tokio::time::sleep(RECONNECT_EVERY).await;
                }
            }
        };
        let apps = AppClient::new(ctl.nats().clone(), ctl.lattice()).with_timeout(crate::lattice::timeout(&self.g));
        *self.conn.write().await = Some(Conn { ctl: ctl.clone(), apps });
        // Subscriptions outlive reconnects: the NATS client subscribes again by itself.
        match ctl.subscribe_events().await {
            Ok(sub) => {
                tokio::spawn(self.clone().relay_events(sub));
            }
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to lattice events"),
        }
        match ctl.nats().subscribe(trellis_lattice::subject::app_status_subject(ctl.lattice(), "*")).await {
            Ok(sub) => {
                tokio::spawn(self.clone().relay_statuses(sub));
            }
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to app status updates"),
        }
        let _ = ctl.nats().flush().await;
        self.set_problem(String::new());
        self.refresh_all().await;
        self.broadcast("resync", &json!({"reason": "connected"}));
        // The periodic re-read runs apart from the connection watch: a read that waits out its
        // timeout while NATS is gone must not delay the banner.
        let refresher = self.clone();
        tokio::spawn(async move {
            let mut refresh = tokio::time::interval(REFRESH_EVERY);
            refresh.tick().await;
            loop {
                refresh.tick().await;
                refresher.refresh_all().await;
            }
        });
        let mut check = tokio::time::interval(Duration::from_millis(250));
        let mut was_connected = true;
        loop {
            check.tick().await;
            let state = ctl.nats().connection_state();
            let connected = state == async_nats::connection::State::Connected;
            if connected == was_connected {
                continue;
            }
            was_connected = connected;
            if connected {
                self.set_problem(String::new());
                let api = self.clone();
                tokio::spawn(async move {
                    api.refresh_all().await;
                    api.broadcast("resync", &json!({"reason": "reconnected"}));
                });
            } else {
                self.set_problem(format!("lost the connection to NATS at {url} ({state}); reconnecting"));
            }
        }
    }

    /// Reads hosts (ping and inventories), links and apps again, and tells pages what changed.
    async fn refresh_all(&self) {
        let Ok(c) = self.conn().await else { return };
        let (hosts, links, apps) = tokio::join!(c.ctl.ping_hosts(), c.ctl.get_links_listing(), c.apps.list());
        if let Ok(hosts) = hosts {
            let invs = futures::future::join_all(hosts.iter().map(|h| c.ctl.get_host_inventory(&h.id))).await;
            let mut changed = Vec::new();
            {
                let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
                for (host, inv) in hosts.into_iter().zip(invs) {
                    let id = host.id.clone();
                    let entry = view.hosts.entry(id.clone()).or_insert_with(|| HostEntry {
                        info: None,
                        inventory: HostInventory { host_id: id.clone(), ..Default::default() },
                        gone: false,
                        last_seen_ms: 0,
                        missed_pings: 0,
                        gone_since: None,
                    });
                    entry.info = Some(host);
                    if let Ok(inv) = inv {
                        entry.inventory = inv;
                    }
                    entry.gone = false;
                    entry.gone_since = None;
                    entry.missed_pings = 0;
                    entry.last_seen_ms = now_ms();
                    changed.push(id);
                }
                for (id, h) in view.hosts.iter_mut() {
                    if h.last_seen_ms + 1000 < now_ms() && !changed.contains(id) && !h.gone {
                        h.missed_pings += 1;
                        if h.missed_pings >= 2 {
                            h.gone = true;
                            h.gone_since = Some(Instant::now());
                            changed.push(id.clone());
                        }
                    }
                }
                view.prune();
            }
            for id in changed {
                self.send_host(&id);
            }
        }
        if let Ok(listing) = links {
            self.set_links(listing.links, listing.unreadable.len());
        }
        if let Ok(list) = apps {
            self.set_apps(list);
        }
    }

    fn set_links(&self, links: Vec<Link>, unreadable: usize) {
        let changed = {
            let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
            let changed = view.links != links || view.unreadable_links != unreadable;
            view.links = links;
            view.unreadable_links = unreadable;
            changed
        };
        if changed {
            let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
            self.broadcast("links", &json!({"links": view.links, "unreadable_links": view.unreadable_links}));
        }
    }

    fn set_apps(&self, list: Vec<ModelSummary>) {
        let apps: BTreeMap<String, ModelSummary> = list.into_iter().map(|a| (a.name.clone(), a)).collect();
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if view.apps != apps {
            view.apps = apps;
            self.broadcast("apps", &json!({"apps": view.apps.values().collect::<Vec<_>>()}));
        }
    }

    async fn refresh_apps(&self) {
        if let Ok(c) = self.conn().await
            && let Ok(list) = c.apps.list().await
        {
            self.set_apps(list);
        }
    }

    fn send_host(&self, id: &str) {
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = view.hosts.get(id) {
            self.broadcast("host", &json!({"host_id": id, "host": h}));
        }
    }

    /// Reads one host's inventory again (coalescing requests that come while one is read).
    fn refresh_host(self: &Arc<Self>, id: &str) {
        let host = id.to_string();
        self.coalesced(format!("host:{id}"), move |api| {
            let host = host.clone();
            async move {
                if let Ok(c) = api.conn().await
                    && let Ok(inv) = c.ctl.get_host_inventory(&host).await
                {
                    api.put_inventory(inv);
                }
            }
        });
    }

    /// Reads the links again, off the event relay's path.
    fn refresh_links(self: &Arc<Self>) {
        self.coalesced("links".into(), |api| async move {
            if let Ok(c) = api.conn().await
                && let Ok(listing) = c.ctl.get_links_listing().await
            {
                api.set_links(listing.links, listing.unreadable.len());
            }
        });
    }

    /// Runs `work` in a task unless it runs for `key` already; then it runs once more after.
    fn coalesced<F, Fut>(self: &Arc<Self>, key: String, work: F)
    where
        F: Fn(Arc<Self>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        {
            let mut r = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(again) = r.get_mut(&key) {
                *again = true;
                return;
            }
            r.insert(key.clone(), false);
        }
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                work(api.clone()).await;
                let mut r = api.refreshing.lock().unwrap_or_else(|e| e.into_inner());
                match r.get_mut(&key) {
                    Some(again) if *again => *again = false,
                    _ => {
                        r.remove(&key);
                        break;
                    }
                }
            }
        });
    }

    fn put_inventory(&self, inv: HostInventory) {
        let id = inv.host_id.clone();
        {
            let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
            let entry = view.hosts.entry(id.clone()).or_insert_with(|| HostEntry {
                info: None,
                inventory: HostInventory::default(),
                gone: false,
                last_seen_ms: 0,
                missed_pings: 0,
                gone_since: None,
            });
            entry.inventory = inv;
            entry.gone = false;
            entry.gone_since = None;
            entry.missed_pings = 0;
            entry.last_seen_ms = now_ms();
            view.prune();
        }
        self.send_host(&id);
    }

    async fn relay_events(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            let Ok(event) = CloudEvent::from_slice(&msg.payload) else { continue };
            let name = event.name().to_string();
            let data = match name.as_str() {
                // The feed shows a heartbeat's counts, not the whole inventory.
                "host_heartbeat" => json!({
                    "components": event.data.get("components").and_then(Value::as_array).map(Vec::len)
                        .or_else(|| event.data.pointer("/summary/components").and_then(Value::as_u64).map(|n| n as usize)),
                    "providers": event.data.get("providers").and_then(Value::as_array).map(Vec::len)
                        .or_else(|| event.data.pointer("/summary/providers").and_then(Value::as_u64).map(|n| n as usize)),
                }),
                _ => {
                    let size = serde_json::to_string(&event.data).map(|s| s.len()).unwrap_or(0);
                    if size > MAX_EVENT_DATA {
                        json!({"omitted": format!("{size} bytes of data, more than the {MAX_EVENT_DATA} the feed shows")})
                    } else {
                        event.data.clone()
                    }
                }
            };
            self.broadcast("lattice", &json!({"id": event.id, "time": event.time, "type": name, "source": event.source, "data": data}));
            self.apply(&event).await;
        }
    }

    /// Updates the view for one event.
    async fn apply(self: &Arc<Self>, event: &CloudEvent) {
        let host = event.source.clone();
        match event.name() {
            "host_stopped" => {
                let known = {
                    let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
                    match view.hosts.get_mut(&host) {
                        Some(h) => {
                            h.gone = true;
                            h.gone_since = Some(Instant::now());
                            true
                        }
                        None => false,
                    }
                };
                if known {
                    self.send_host(&host);
                }
            }
            "host_heartbeat" => {
                let Ok(inv) = serde_json::from_value::<HostInventory>(event.data.clone()) else { return };
                let listed = inv.summary.as_ref().is_none_or(|s| s.listed);
                let known_digest = {
                    let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
                    view.hosts.get(&inv.host_id).filter(|h| !h.gone).and_then(|h| h.inventory.summary.as_ref().map(|s| s.digest.clone()))
                };
                if listed {
                    self.put_inventory(inv);
                } else if known_digest.as_deref() != inv.summary.as_ref().map(|s| s.digest.as_str()) {
                    self.refresh_host(&inv.host_id);
                }
            }
            "linkdef_set" | "linkdef_deleted" => self.refresh_links(),
            "config_set" | "config_deleted" => {}
            _ if host.starts_with('N') && trellis_lattice::validate_id("host id", &host).is_ok() => {
                let new = !self.view.lock().unwrap_or_else(|e| e.into_inner()).hosts.contains_key(&host);
                self.refresh_host(&host);
                if new || event.name() == "host_started" {
                    // The ping answer (JetStream domain, admin address) comes with the next
                    // refresh; read it now for a host not seen before.
                    let api = self.clone();
                    tokio::spawn(async move { api.refresh_all().await });
                }
            }
            _ => {}
        }
    }

    async fn relay_statuses(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            let Some(name) = msg.subject.rsplit('.').next().map(str::to_string) else { continue };
            let Ok(status) = serde_json::from_slice::<Status>(&msg.payload) else { continue };
            let known = {
                let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
                match view.apps.get_mut(&name) {
                    Some(app) => {
                        app.status = status.state();
                        app.status_message = Some(status.message().to_string());
                        app.detailed_status = status.clone();
                        true
                    }
                    None => false,
                }
            };
            if known {
                self.broadcast("app", &json!({"name": name, "status": status}));
            } else {
                self.coalesced("apps".into(), |api| async move { api.refresh_apps().await });
            }
        }
    }

    /// Everything the page shows, at once.
    pub async fn snapshot(&self) -> Value {
        let connected = self.conn().await.is_ok();
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        json!({
            "lattice": self.g.lattice,
            "nats_url": crate::lattice::nats_url(&self.g),
            "connected": connected,
            "message": self.problem_text(),
            "hosts": view.hosts.values().collect::<Vec<_>>(),
            "links": view.links,
            "unreadable_links": view.unreadable_links,
            "apps": view.apps.values().collect::<Vec<_>>(),
            "caps": {"max_manifest_bytes": super::MAX_MANIFEST_BYTES, "feed_events": 500, "spy_records": 200},
        })
    }

    /// The stream of changes for one page.
    pub fn event_stream(&self) -> Result<Body, ApiError> {
        let slot = Slot::take(&self.sse_clients, MAX_SSE_CLIENTS, "live event streams")?;
        let rx = self.tx.subscribe();
        let hello = frame("connection", &json!({"connected": self.problem_text().is_empty(), "message": self.problem_text()}));
        let keepalive = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        let first = futures::stream::once(async move { Ok::<_, Infallible>(Frame::data(Bytes::from(hello.to_string()))) });
        let rest = futures::stream::unfold((rx, keepalive, slot), |(mut rx, mut keepalive, slot)| async move {
            let text: Arc<str> = tokio::select! {
                r = rx.recv() => match r {
                    Ok(f) => f,
                    Err(broadcast::error::RecvError::Lagged(n)) => frame("resync", &json!({"reason": format!("this page fell {n} messages behind (its queue holds {CLIENT_QUEUE})")})),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = keepalive.tick() => Arc::from(": keep-alive\n\n"),
            };
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(text.to_string()))), (rx, keepalive, slot)))
        });
        Ok(BodyExt::boxed(StreamBody::new(first.chain(rest))))
    }

    /// The live calls of one component, through `wash spy`'s machinery (no bodies).
    pub async fn spy_stream(&self, component_id: &str) -> Result<Body, ApiError> {
        bad_id("component id", component_id)?;
        let slot = Slot::take(&self.spy_streams, MAX_SPY_STREAMS, "live call views")?;
        let c = self.conn().await?;
        let spy = trellis_lattice::spy::Spy::start(c.ctl.nats(), c.ctl.lattice(), component_id, false).await.map_err(|e| lattice_error(e.into()))?;
        let keepalive = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        let hello = frame("watching", &json!({"component_id": component_id}));
        let first = futures::stream::once(async move { Ok::<_, Infallible>(Frame::data(Bytes::from(hello.to_string()))) });
        let rest = futures::stream::unfold((spy, keepalive, slot), |(mut spy, mut keepalive, slot)| async move {
            let text: Arc<str> = tokio::select! {
                r = spy.next() => match r {
                    Some(mut record) => {
                        record.request = None;
                        record.response = None;
                        frame("call", &record)
                    }
                    None => return None,
                },
                _ = keepalive.tick() => Arc::from(": keep-alive\n\n"),
            };
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(text.to_string()))), (spy, keepalive, slot)))
        });
        Ok(BodyExt::boxed(StreamBody::new(first.chain(rest))))
    }

    /// Cordon, uncordon or drain a host.
    pub async fn schedule(self: &Arc<Self>, host_id: &str, action: &str) -> Result<Value, ApiError> {
        bad_id("host id", host_id)?;
        if !matches!(action, "cordon" | "uncordon" | "drain") {
            return Err((StatusCode::NOT_FOUND, format!("`{}` is not a host action; the actions are cordon, uncordon and drain", action.escape_debug())));
        }
        let c = self.conn().await?;
        let ctl = &c.ctl;
        let reply = match action {
            "cordon" => crate::lattice::on_host(ctl, host_id, ctl.cordon_host(host_id)).await,
            "uncordon" => crate::lattice::on_host(ctl, host_id, ctl.uncordon_host(host_id)).await,
            _ => crate::lattice::on_host(ctl, host_id, ctl.drain_host(host_id)).await,
        }
        .map_err(lattice_error)?;
        self.refresh_host(host_id);
        Ok(json!({"host_id": reply.host_id, "schedule": reply.schedule}))
    }

    /// Scales a component on one host, as `wash scale component` does, and waits for the outcome.
    pub async fn scale(self: &Arc<Self>, req: &ScaleRequest) -> Result<Value, ApiError> {
        bad_id("host id", &req.host_id)?;
        bad_id("component id", &req.component_id)?;
        let c = self.conn().await?;
        let ctl = &c.ctl;
        let inv = crate::lattice::on_host(ctl, &req.host_id, ctl.get_host_inventory(&req.host_id)).await.map_err(lattice_error)?;
        let Some(running) = inv.components.iter().find(|c| c.id == req.component_id) else {
            return Err((
                StatusCode::NOT_FOUND,
                format!("component `{}` is not running on host `{}`; it may have stopped or moved", req.component_id, req.host_id),
            ));
        };
        let mut watch = crate::events::Watch::start(ctl).await.map_err(lattice_error)?;
        let cmd = ScaleComponentCommand {
            component_ref: running.image_ref.clone(),
            component_id: req.component_id.clone(),
            max_instances: req.max_instances,
            host_id: req.host_id.clone(),
            annotations: Some(running.annotations.clone()).filter(|a| !a.is_empty()),
            ..Default::default()
        };
        crate::lattice::on_host(ctl, &req.host_id, ctl.scale_component(&cmd)).await.map_err(lattice_error)?;
        let (host, id, want) = (req.host_id.clone(), req.component_id.clone(), req.max_instances);
        let outcome = watch
            .wait(SCALE_WAIT, |e| {
                if e.source != host {
                    return None;
                }
                if let Some(d) = e.data_as::<ComponentScaled>()
                    && d.component_id == id
                    && d.max_instances == want
                {
                    return Some(Ok(()));
                }
                e.data_as::<ComponentScaleFailed>().filter(|d| d.scaled.component_id == id).map(|d| Err(d.error))
            })
            .await;
        self.refresh_host(&req.host_id);
        match outcome {
            Some(Ok(())) => Ok(json!({"host_id": req.host_id, "component_id": req.component_id, "max_instances": req.max_instances})),
            Some(Err(error)) => Err((StatusCode::CONFLICT, format!("host `{}` could not scale `{}`: {error}", req.host_id, req.component_id))),
            None => Err((
                StatusCode::GATEWAY_TIMEOUT,
                format!("host `{}` accepted the request but sent no outcome within {} s; look at its inventory", req.host_id, SCALE_WAIT.as_secs()),
            )),
        }
    }

    /// Validates a manifest, stores it as a new version and deploys it.
    pub async fn deploy(self: &Arc<Self>, text: &str) -> Result<(StatusCode, Value), ApiError> {
        let manifest = match Manifest::parse(text) {
            Ok(m) => m,
            Err(_) => return Ok((StatusCode::UNPROCESSABLE_ENTITY, validate(text))),
        };
        let c = self.conn().await?;
        // Relative `file://` images are taken from where `wash ui` runs.
        let dir = std::env::current_dir().unwrap_or_default();
        let text = crate::commands::app::resolve_relative_files(text, &manifest, &dir);
        let put = c.apps.put(&text).await.map_err(|e| lattice_error(e.into()))?;
        let d = c.apps.deploy(&put.name, Some(&put.current_version)).await.map_err(|e| lattice_error(e.into()))?;
        self.refresh_apps().await;
        Ok((StatusCode::OK, json!({"name": put.name, "version": d.version.unwrap_or(put.current_version)})))
    }

    /// Undeploys an app.
    pub async fn undeploy(self: &Arc<Self>, name: &str) -> Result<Value, ApiError> {
        bad_id("application name", name)?;
        let c = self.conn().await?;
        c.apps.undeploy(name).await.map_err(|e| lattice_error(e.into()))?;
        self.refresh_apps().await;
        Ok(json!({"name": name}))
    }
}

/// `wash app validate`'s verdict on a manifest, as JSON: every mistake with its field and line.
pub fn validate(text: &str) -> Value {
    match Manifest::parse(text) {
        Ok(m) => {
            json!({"valid": true, "name": m.name(), "version": m.version(), "components": m.spec.components.len(), "links": m.links().count(), "errors": []})
        }
        Err(errors) => json!({"valid": false, "errors": errors.errors()}),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn unreachable_api() -> Arc<Api> {
        use clap::Parser as _;
        // Port 1: nothing answers, so the backend stays disconnected and quiet.
        let cli = crate::cli::Cli::try_parse_from(["wash", "ui", "--ctl-port", "1"]).unwrap();
        Api::start(&cli.global).await
    }

    async fn next_text(body: &mut Body) -> String {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.unwrap().unwrap().unwrap();
        String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_page_that_falls_behind_is_told_to_resync() {
        let api = unreachable_api().await;
        let mut body = api.event_stream().unwrap();
        assert!(next_text(&mut body).await.starts_with("event: connection\n"));
        for i in 0..CLIENT_QUEUE + 10 {
            api.broadcast("lattice", &json!({"n": i}));
        }
        let first = next_text(&mut body).await;
        assert!(first.starts_with("event: resync\n") && first.contains("fell 10 messages behind"), "{first}");
        // Then what is still queued, oldest first.
        assert_eq!(next_text(&mut body).await, "event: lattice\ndata: {\"n\":10}\n\n");
    }

    #[tokio::test]
    async fn event_streams_are_capped() {
        let api = unreachable_api().await;
        let streams: Vec<Body> = (0..MAX_SSE_CLIENTS).map(|_| api.event_stream().unwrap()).collect();
        let (status, message) = api.event_stream().err().unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(message.contains("16 live event streams"), "{message}");
        drop(streams);
        assert!(api.event_stream().is_ok(), "a closed stream frees its slot");
    }
}

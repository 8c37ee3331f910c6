//! Declarative apps in every host: the app API (`wadm.api.{lattice}.model.*`, one host of a
//! queue group answers) and the app reconciler.
//!
//! Every host runs the reconciler loop; one at a time leads, through a lease in the apps bucket
//! ([`lease`]). Hosts are known from their events ([`live`], followed by the leader alone,
//! seeded by a ping when it takes the lease): one not heard from for the
//! host-loss window ([`Context::host_lost_after`]), or that sent `host_stopped`, is gone. Each
//! [`TICK`], and whenever a deployment or the set of hosts changes, the leader gathers every
//! deployed app's manifest, the live hosts' inventories and the lattice's links and config, plans
//! ([`plan`], a pure function with a table test per rule) and runs the actions ([`act`]) through
//! the control interface only, as wadm does. Everything it starts carries the app's managed
//! annotations; the links and config it puts for an app are recorded under its `owned` key.
//!
//! Modules: [`api`] (the app API server), [`lease`] (leadership), [`live`] (hosts and failures
//! from events), [`plan`] (deciding), [`act`] (gathering, acting, recording).

mod act;
mod api;
mod lease;
mod live;
mod plan;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use trellis_lattice::app::apps_bucket;
use trellis_lattice::client::CtlClient;
use trellis_lattice::state;
use trellis_lattice::subject;

use crate::error::{HostError, Result};

/// The `tracing` target of the leader's one line per reconcile pass (debug: `hosts`, `pass_us`,
/// `ok`): `RUST_LOG=trellis_host::apps::pass=debug` shows it.
pub(crate) const PASS_TARGET: &str = "trellis_host::apps::pass";

/// How often the leader renews its lease and reconciles.
pub const TICK: Duration = Duration::from_secs(1);
/// A host not heard from for this many heartbeat intervals is gone (unless the host is
/// configured otherwise, `HostConfig::host_lost_after`).
pub const MISSED_HEARTBEATS: u32 = 3;

/// What the app API and the reconciler need of their host.
#[derive(Clone)]
pub(crate) struct Context {
    /// The lattice.
    pub lattice: String,
    /// This host's id (the lease holder's name).
    pub host_id: String,
    /// The lattice connection.
    pub nats: async_nats::Client,
    /// JetStream in the lattice's domain.
    pub js: async_nats::jetstream::Context,
    /// How long a host may go unheard before its replicas are placed elsewhere.
    pub host_lost_after: Duration,
    /// How many copies of the apps bucket JetStream keeps (`HostConfig::js_replicas`).
    pub js_replicas: usize,
    /// The host's metrics (reconciler passes and actions).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// A running app API server and reconciler; [`Apps::release`] gives up the lease.
pub(crate) struct Apps {
    store: kv::Store,
    host_id: String,
}

impl Apps {
    /// Gives the lease up (on an orderly stop), so another host leads at once.
    pub async fn release(&self) {
        lease::release(&self.store, &self.host_id).await;
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

fn kv_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> HostError {
    HostError::Registry(format!("{what}: {e}"))
}

/// Opens the apps bucket and starts the app API server and the reconciler; returns their tasks
/// (the API server first, the reconciler loop last: `/readyz` watches those two).
pub(crate) async fn start(cx: Context) -> Result<(Apps, Vec<JoinHandle<()>>)> {
    let store = state::create_bucket(&cx.js, &state::BucketSpec::latest(apps_bucket(&cx.lattice)), cx.js_replicas).await?;
    let api = cx
        .nats
        .queue_subscribe(subject::app_api_wildcard(&cx.lattice), subject::APP_API_QUEUE.into())
        .await
        .map_err(|e| kv_err("cannot subscribe to the app API", e))?;
    let watch = store.watch("app.*.deployment").await.map_err(|e| kv_err("cannot watch deployments", e))?;
    let live = Arc::new(Mutex::new(live::Live::default()));
    let changed = Arc::new(Notify::new());
    let notify = changed.clone();
    let tasks = vec![
        tokio::spawn(api::serve(cx.clone(), store.clone(), api)),
        tokio::spawn(async move {
            let mut watch = watch;
            while let Some(_entry) = watch.next().await {
                notify.notify_one();
            }
        }),
        tokio::spawn(lead(cx.clone(), store.clone(), live, changed)),
    ];
    Ok((Apps { store, host_id: cx.host_id }, tasks))
}

/// The leader's following of the lattice's events into its live view; dropping it stops the
/// following (and unsubscribes).
struct Following(JoinHandle<()>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts following the lattice's events into a fresh `live` view, seeded by a ping first so the
/// first pass sees every host. Only the leader does this: every host receiving every other
/// host's heartbeats would cost hosts² deliveries per heartbeat interval (2,500 a second at 50
/// hosts with 1 s heartbeats; benches/control_plane.rs) for a table only the leader reads.
async fn follow_events(cx: &Context, live: &Arc<Mutex<live::Live>>, changed: &Arc<Notify>) -> Option<Following> {
    let events = match cx.nats.subscribe(subject::events_wildcard(&cx.lattice)).await {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to lattice events; not reconciling this round");
            return None;
        }
    };
    *live.lock().unwrap_or_else(|p| p.into_inner()) = live::Live::default();
    let ping = CtlClient::new(cx.nats.clone(), &cx.lattice).with_auction_timeout(Duration::from_millis(500));
    live::seed(&ping, live).await;
    Some(Following(tokio::spawn(live::follow(live.clone(), changed.clone(), events))))
}

/// The reconciler loop: while this host holds the lease, one pass per tick or change.
async fn lead(cx: Context, store: kv::Store, live: Arc<Mutex<live::Live>>, changed: Arc<Notify>) {
    let ctl = CtlClient::new(cx.nats.clone(), &cx.lattice).with_timeout(Duration::from_secs(3));
    let mut pending = act::Pending::default();
    let mut following: Option<Following> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = changed.notified() => {}
        }
        if !lease::hold(&store, &cx.host_id).await {
            pending.clear();
            following = None;
            continue;
        }
        if following.is_none() {
            following = follow_events(&cx, &live, &changed).await;
            if following.is_none() {
                continue;
            }
        }
        let (hosts, failures) = live.lock().unwrap_or_else(|p| p.into_inner()).snapshot(std::time::Instant::now(), cx.host_lost_after);
        let started = std::time::Instant::now();
        let result = act::reconcile(&ctl, &store, &hosts, failures, &mut pending, &cx.metrics).await;
        cx.metrics.reconciler_pass(result.is_ok());
        // What a pass costs as the lattice grows (benches/control_plane.rs reads it).
        tracing::debug!(target: PASS_TARGET, hosts = hosts.len(), pass_us = started.elapsed().as_micros() as u64, ok = result.is_ok(), "reconcile pass");
        if let Err(e) = result {
            tracing::warn!(error = %e, "reconciling apps failed");
        }
    }
}

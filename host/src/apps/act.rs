//! The executor: gathers what [`plan::plan`] needs (deployments and what each app owns from the
//! apps bucket, inventories, links and config through the control interface), runs the planned
//! actions in order through the control interface, and records each app's status and owned
//! links and config. It decides nothing the planner could.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures::StreamExt;
use trellis_lattice::app::{AppState, AppStatus, Deployment, Owned, owned_key, parse_key, status_key};
use trellis_lattice::client::CtlClient;
use trellis_lattice::ctl::Link;
use trellis_lattice::manifest::Manifest;
use trellis_lattice::subject::app_status_subject;

use super::plan::{self, Action, Actual, AppInput, AppPlan, Failure};
use super::{kv_err, now_ms};
use crate::error::Result;

/// How long an action the leader took is awaited before it is sent again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Commands sent lately (by [`Action::resend_key`]): their outcome arrives as an event, and
/// until it does (or [`RETRY_AFTER`] passes) they are not sent again.
#[derive(Default)]
pub(super) struct Pending(HashMap<String, Instant>);

impl Pending {
    /// Forgets everything (this host no longer leads).
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Whether `action` is to be sent now; remembers it if so.
    fn admit(&mut self, action: &Action) -> bool {
        let Some(key) = action.resend_key() else { return true };
        self.0.retain(|_, at| at.elapsed() < RETRY_AFTER);
        if self.0.contains_key(&key) {
            return false;
        }
        self.0.insert(key, Instant::now());
        true
    }
}

/// One pass: gather, plan, act, record.
pub(super) async fn reconcile(
    ctl: &CtlClient,
    store: &kv::Store,
    hosts: &[String],
    failures: BTreeMap<String, Failure>,
    pending: &mut Pending,
    metrics: &crate::metrics::Metrics,
) -> Result<()> {
    let deployments = deployments(store).await?;
    if deployments.is_empty() {
        return Ok(());
    }
    let mut inventories = Vec::new();
    for (host, inv) in hosts.iter().zip(futures::future::join_all(hosts.iter().map(|h| ctl.get_host_inventory(h))).await) {
        match inv {
            Ok(inv) => inventories.push(inv),
            // A live host that does not answer: acting now could move its replicas for nothing.
            // If it is gone, it drops out of the live view once the host-loss window passes.
            Err(e) => {
                tracing::debug!(host_id = host, error = %e, "no inventory from a live host; not reconciling this round");
                return Ok(());
            }
        }
    }
    let links = ctl.get_links().await?;
    let mut apps = Vec::new();
    // Each app's last status, read once: whether an undeployed app is settled, and whether its
    // new status is news for `wadm.status`.
    let mut last_status = HashMap::new();
    for (name, deployment) in deployments {
        let last = read::<AppStatus>(store, &status_key(&name)).await;
        let settled = !deployment.active && last.as_ref().is_some_and(|s| s.state == AppState::Undeployed);
        if let Some(last) = last {
            last_status.insert(name.clone(), last);
        }
        let owned = read::<Owned>(store, &owned_key(&name)).await.unwrap_or_default();
        let manifest = Manifest::parse(&deployment.manifest).map_err(|e| e.to_string());
        apps.push(AppInput { name, deployment, manifest, owned, settled });
    }
    let mut configs = BTreeMap::new();
    for name in plan::config_names(&apps) {
        // A config that cannot be read counts as absent, as it does for `wash config get`.
        if let Ok(values) = ctl.get_config(&name).await {
            configs.insert(name, values);
        }
    }
    let actual = Actual { inventories, links, configs, failures };
    let mut plan = plan::plan(&apps, &actual);
    let failed = execute(ctl, &plan.steps, &mut plan.apps, pending, metrics).await;
    for app in &plan.apps {
        record(ctl, store, app, last_status.get(&app.name), failed.get(&app.name).map(Vec::as_slice).unwrap_or_default()).await;
    }
    Ok(())
}

/// Every app's deployment record.
async fn deployments(store: &kv::Store) -> Result<Vec<(String, Deployment)>> {
    let mut out = Vec::new();
    let mut keys = store.keys().await.map_err(|e| kv_err("cannot list the apps bucket", e))?;
    while let Some(key) = keys.next().await {
        let Ok(key) = key else { continue };
        if let Some((name, "deployment")) = parse_key(&key)
            && let Some(d) = read::<Deployment>(store, &key).await
        {
            out.push((name.to_string(), d));
        }
    }
    Ok(out)
}

/// A JSON record of the apps bucket; `None` when absent, unreadable (logged) or malformed.
async fn read<T: serde::de::DeserializeOwned>(store: &kv::Store, key: &str) -> Option<T> {
    match store.get(key).await {
        Ok(Some(v)) => serde_json::from_slice(&v).inspect_err(|e| tracing::warn!(key, error = %e, "a record of the apps bucket is malformed")).ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(key, error = %e, "cannot read the apps bucket");
            None
        }
    }
}

/// Runs `steps` in order; the failures, per app, as its status shows them. A link replacing the
/// app's own old one is put only once the old one is deleted; if that fails, the app keeps
/// owning the old one.
async fn execute(
    ctl: &CtlClient,
    steps: &[plan::Step],
    apps: &mut [AppPlan],
    pending: &mut Pending,
    metrics: &crate::metrics::Metrics,
) -> HashMap<String, Vec<String>> {
    let mut failed: HashMap<String, Vec<String>> = HashMap::new();
    for step in steps {
        if !pending.admit(&step.action) {
            continue;
        }
        let outcome = match &step.action {
            Action::PutConfig { name, values } => ctl.put_config(name, values).await,
            Action::Scale(cmd) => ctl.scale_component(cmd).await,
            Action::StartProvider(cmd) => ctl.start_provider(cmd).await,
            Action::StopProvider(cmd) => ctl.stop_provider(cmd).await,
            Action::PutLink { link, replacing } => {
                if let Some(old) = replacing.first()
                    && let Err(e) = ctl.delete_link(&link.slot()).await
                {
                    failed.entry(step.app.clone()).or_default().push(format!("deleting the old {}: {e}", plan::show_link(old)));
                    if let Some(app) = apps.iter_mut().find(|a| a.name == step.app) {
                        keep_old(&mut app.owned, &app.before, link, replacing);
                    }
                    continue;
                }
                ctl.put_link(link).await
            }
            Action::DeleteLink(link) => ctl.delete_link(&link.slot()).await,
            Action::DeleteConfig(name) => ctl.delete_config(name).await,
        };
        metrics.reconciler_action(action_name(&step.action), outcome.is_ok());
        if let Err(e) = outcome {
            failed.entry(step.app.clone()).or_default().push(step.action.failed(&e.to_string()));
        }
    }
    failed
}

/// What `trellis_reconciler_actions_total` calls an action.
fn action_name(action: &Action) -> &'static str {
    match action {
        Action::PutConfig { .. } => "put_config",
        Action::Scale(_) => "scale",
        Action::StartProvider(_) => "start_provider",
        Action::StopProvider(_) => "stop_provider",
        Action::PutLink { .. } => "put_link",
        Action::DeleteLink(_) => "delete_link",
        Action::DeleteConfig(_) => "delete_config",
    }
}

/// After a failed delete of the app's `old` links in `link`'s slot: it still owns them, and
/// owns `link` only if it did before.
fn keep_old(owned: &mut Owned, before: &Owned, link: &Link, old: &[Link]) {
    if !before.links.iter().any(|x| x.same_target(link)) {
        owned.links.retain(|x| !x.same_target(link));
    }
    for l in old {
        if !owned.links.iter().any(|x| x.same_target(l)) {
            owned.links.push(l.clone());
        }
    }
    owned.links.sort();
}

/// Writes `app`'s status and what it owns, and publishes the status on
/// `wadm.status.{lattice}.{app}` (wadm's `Status`) when it changed. A failed write is logged:
/// the next pass writes again.
async fn record(ctl: &CtlClient, store: &kv::Store, app: &AppPlan, before: Option<&AppStatus>, failed: &[String]) {
    let status = app.status(failed, now_ms());
    let name = &app.name;
    if before.is_none_or(|b| (b.state, &b.message, &b.details, &b.version) != (status.state, &status.message, &status.details, &status.version)) {
        let subject = app_status_subject(ctl.lattice(), name);
        match serde_json::to_vec(&status.to_wire()) {
            Ok(body) => {
                if let Err(e) = ctl.nats().publish(subject, body.into()).await {
                    tracing::debug!(app = name, error = %e, "cannot publish the app's status");
                }
            }
            Err(e) => tracing::warn!(app = name, error = %e, "cannot encode the app's status"),
        }
    }
    if status.state == AppState::Undeployed {
        if !app.before.is_empty()
            && let Err(e) = store.purge(owned_key(name)).await
        {
            tracing::warn!(app = name, error = %e, "cannot forget the links and config the undeployed app put");
        }
    } else if app.owned != app.before {
        put(store, &owned_key(name), &app.owned, "the links and config the app put").await;
    }
    put(store, &status_key(name), &status, "the app's status").await;
}

async fn put<T: serde::Serialize>(store: &kv::Store, key: &str, value: &T, what: &str) {
    let outcome = match serde_json::to_vec(value) {
        Ok(v) => store.put(key, v.into()).await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = outcome {
        tracing::warn!(key, error = e, "cannot record {what}");
    }
}

//! Planning: a pure function from what the deployed apps want ([`AppInput`]), what the lattice
//! holds ([`Actual`]) and what each app put before ([`Owned`]) to the [`Action`]s that move the
//! lattice toward it and each app's [`AppPlan`] (its status and what it owns afterwards).
//!
//! Nothing here is async or touches NATS: the executor ([`super::act`]) gathers the inputs,
//! runs the actions in order and records the outcome. Every placement and ordering rule is
//! decided here and has a table test below:
//! - spreads split `instances` by weight; a replica goes to the eligible host with the fewest
//!   replicas of it, preferring hosts that already run it; a daemon runs on every eligible host;
//!   a provider runs once per host;
//! - a draining host gets nothing; a cordoned one keeps what it runs and gets no more;
//! - new before old: a replica or provider instance the app no longer wants on a host stops only
//!   once every wanted one runs elsewhere; a link the app points at a new target moves only once
//!   every component, provider and config of the app is in place;
//! - config before what names it;
//! - two apps defining one link slot or config alike share it; defined differently, the app
//!   whose definition is in place keeps it (else the one deployed first) and the other fails,
//!   naming the conflict, without ever putting its own;
//! - a link or config that exists and that no app put (the user's) is never changed or deleted
//!   by an app: defined alike, the app uses it as it is without owning it; defined otherwise,
//!   the app fails, naming it and its owner;
//! - what a new version no longer defines (and the app put) is removed once the version is in
//!   place; undeploying removes what carries the app's annotation and the links and config it
//!   put, unless another deployed app defines them too.

use std::collections::{BTreeMap, BTreeSet};

use trellis_lattice::app::{AppState, AppStatus, Deployment, Owned};
use trellis_lattice::ctl::{HostInventory, Link, ScaleComponentCommand, Schedule, StartProviderCommand, StopProviderCommand, StringMap};
use trellis_lattice::manifest::{APP_SPEC_ANNOTATION, ComponentType, ConfigProperty, Manifest, SecretProperty, Trait, managed_annotations, spread_counts};
use trellis_lattice::secrets::{self, SecretReference};

/// The last failed start of a component or provider, as an event reported it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    /// The host that reported it.
    pub host: String,
    /// Its error.
    pub error: String,
}

/// What the lattice looks like now.
#[derive(Debug, Clone, Default)]
pub(crate) struct Actual {
    /// Every live host's inventory.
    pub inventories: Vec<HostInventory>,
    /// Every link.
    pub links: Vec<Link>,
    /// The values of the named configs the apps define or own that exist.
    pub configs: BTreeMap<String, StringMap>,
    /// Component or provider id → its last failed start (cleared by a success).
    pub failures: BTreeMap<String, Failure>,
}

/// One app with a deployment record.
#[derive(Debug, Clone)]
pub(crate) struct AppInput {
    /// The app.
    pub name: String,
    /// What should run (or, inactive, what to remove).
    pub deployment: Deployment,
    /// The deployment's manifest, parsed; the error when it does not parse.
    pub manifest: Result<Manifest, String>,
    /// The links and config the app put before.
    pub owned: Owned,
    /// Undeployed, and its last status said nothing of it is left: nothing to do.
    pub settled: bool,
}

/// One change to the lattice, made through the control interface.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// `config.put`.
    PutConfig { name: String, values: StringMap },
    /// `component.scale` (0 stops the replica).
    Scale(ScaleComponentCommand),
    /// `provider.start`.
    StartProvider(StartProviderCommand),
    /// `provider.stop`.
    StopProvider(StopProviderCommand),
    /// `link.put`, after deleting the slot when it holds the app's own `replacing` links to
    /// another target. If that delete fails, the link is not put and the app keeps owning
    /// `replacing`.
    PutLink { link: Link, replacing: Vec<Link> },
    /// `link.del` of the link's slot.
    DeleteLink(Link),
    /// `config.del`.
    DeleteConfig(String),
}

impl Action {
    /// Commands whose outcome arrives later as an event are not sent twice while one is in
    /// flight: the key the executor remembers them by.
    pub fn resend_key(&self) -> Option<String> {
        match self {
            Action::Scale(c) => Some(format!("scale:{}:{}:{}:{}", c.host_id, c.component_id, c.max_instances, c.component_ref)),
            Action::StartProvider(c) => Some(format!("start-provider:{}:{}", c.host_id, c.provider_id)),
            Action::StopProvider(c) => Some(format!("stop-provider:{}:{}", c.host_id, c.provider_id)),
            _ => None,
        }
    }

    /// The line an app's status shows when this action failed with `error`.
    pub fn failed(&self, error: &str) -> String {
        match self {
            Action::PutConfig { name, .. } => format!("config `{name}`: {error}"),
            Action::Scale(c) if c.max_instances == 0 => format!("stopping `{}` on host {}: {error}", c.component_id, c.host_id),
            Action::Scale(c) => format!("scaling `{}` on host {}: {error}", c.component_id, c.host_id),
            Action::StartProvider(c) => format!("starting provider `{}` on host {}: {error}", c.provider_id, c.host_id),
            Action::StopProvider(c) => format!("stopping provider `{}` on host {}: {error}", c.provider_id, c.host_id),
            Action::PutLink { link, .. } => format!("link {} → {}: {error}", link.source_id, link.target),
            Action::DeleteLink(link) => format!("deleting {}: {error}", show_link(link)),
            Action::DeleteConfig(name) => format!("deleting config `{name}`: {error}"),
        }
    }
}

/// An action on behalf of one app.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    /// The app.
    pub app: String,
    /// What to do.
    pub action: Action,
}

/// What one app's pass decided, before its actions ran.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AppPlan {
    /// The app.
    pub name: String,
    /// Its deployment.
    pub deployment: Deployment,
    /// What it owned before this pass.
    pub before: Owned,
    /// What it owns once its actions succeed.
    pub owned: Owned,
    /// Where it stands, less the failures of its actions.
    pub outcome: Outcome,
}

/// Where an app stands after planning.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The stored manifest does not parse.
    Invalid(String),
    /// Undeployed: what is still being removed.
    Undeploying { waiting: Vec<String> },
    /// Deployed.
    Deploying {
        /// Links and config another app holds with another definition.
        conflicts: Vec<String>,
        /// Failed starts reported by hosts.
        errors: Vec<String>,
        /// Replicas that cannot be placed, and why.
        problems: Vec<String>,
        /// What is not in place yet.
        waiting: Vec<String>,
    },
}

impl AppPlan {
    /// The app's status, given the failures of its actions (`failed`, from [`Action::failed`]).
    pub fn status(&self, failed: &[String], now_ms: u64) -> AppStatus {
        let (state, message, details) = match &self.outcome {
            Outcome::Invalid(e) => (AppState::Failed, format!("the stored manifest is invalid: {e}"), vec![]),
            Outcome::Undeploying { waiting } if waiting.is_empty() => (AppState::Undeployed, "nothing of the app runs".into(), vec![]),
            Outcome::Undeploying { waiting } => (AppState::Undeploying, format!("removing {}", waiting.join(", ")), waiting.clone()),
            Outcome::Deploying { conflicts, errors, problems, waiting } => {
                if !errors.is_empty() || !conflicts.is_empty() || !failed.is_empty() {
                    // A conflict makes the app Failed, not Reconciling: waiting does not end it
                    // (changing a manifest, or undeploying the other app, does), and `wash app
                    // deploy` stops waiting at Failed and shows this message instead of timing out.
                    let message: Vec<String> = conflicts.iter().chain(errors).chain(failed).cloned().collect();
                    let mut details = message.clone();
                    details.extend(problems.iter().cloned());
                    (AppState::Failed, message.join("; "), details)
                } else if !problems.is_empty() || !waiting.is_empty() {
                    let mut details = problems.clone();
                    details.extend(waiting.iter().map(|w| format!("waiting for {w}")));
                    (AppState::Reconciling, details.join("; "), details)
                } else {
                    (AppState::Deployed, "every component, provider, link and config is in place".into(), vec![])
                }
            }
        };
        let d = &self.deployment;
        AppStatus { name: self.name.clone(), version: d.active.then(|| d.version.clone()), state, message, details, updated_ms: now_ms }
    }
}

/// The whole pass: every action, in order, and every app's plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Plan {
    /// What to do, app by app, in the order to do it.
    pub steps: Vec<Step>,
    /// One per app that was not settled.
    pub apps: Vec<AppPlan>,
}

/// The config names the apps define or own: the executor reads their values into
/// [`Actual::configs`] before planning.
pub(crate) fn config_names(apps: &[AppInput]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for a in apps.iter().filter(|a| !a.settled) {
        names.extend(a.owned.configs.iter().cloned());
        if let Ok(m) = &a.manifest {
            names.extend(definitions(m).configs.into_keys());
        }
    }
    names
}

/// Plans one pass over every app. Undeployed apps come first, so a link or config one frees
/// another can take in the same pass. Timeless: statuses are stamped by [`AppPlan::status`],
/// and the executor keeps what it sent recently.
pub(crate) fn plan(apps: &[AppInput], actual: &Actual) -> Plan {
    let mut order: Vec<&AppInput> = apps.iter().collect();
    order.sort_by(|a, b| (a.deployment.active, &a.name).cmp(&(b.deployment.active, &b.name)));
    // What every deployed app defines, for conflicts and sharing between apps.
    let defs: Vec<AppDefs> = order
        .iter()
        .filter(|a| a.deployment.active)
        .filter_map(|a| a.manifest.as_ref().ok().map(|m| (a, definitions(m))))
        .map(|(a, d)| AppDefs { name: a.name.clone(), since_ms: a.deployment.since_ms, links: d.links, configs: d.configs, owned: a.owned.clone() })
        .collect();
    // What any app, deployed or not, put: whatever else exists in the lattice is the user's.
    let mut app_made = Owned::default();
    for a in apps {
        app_made.links.extend(a.owned.links.iter().cloned());
        app_made.configs.extend(a.owned.configs.iter().cloned());
    }
    let mut out = Plan::default();
    for a in order.into_iter().filter(|a| !a.settled) {
        let others: Vec<&AppDefs> = defs.iter().filter(|d| d.name != a.name).collect();
        let mut pass = Pass {
            app: &a.name,
            since_ms: a.deployment.since_ms,
            before: &a.owned,
            app_made: &app_made,
            actual,
            others: &others,
            steps: &mut out.steps,
            owned: a.owned.clone(),
            waiting: Vec::new(),
        };
        let outcome = match &a.manifest {
            Err(e) => Outcome::Invalid(e.clone()),
            Ok(m) => pass.app(m, a.deployment.active),
        };
        let mut owned = pass.owned;
        owned.links.sort();
        out.apps.push(AppPlan { name: a.name.clone(), deployment: a.deployment.clone(), before: a.owned.clone(), owned, outcome });
    }
    out
}

/// What one deployed app defines (whatever the hosts), and what it put.
#[derive(Debug, Clone)]
pub(crate) struct AppDefs {
    pub name: String,
    pub since_ms: u64,
    pub links: Vec<Link>,
    pub configs: BTreeMap<String, StringMap>,
    pub owned: Owned,
}

/// The desired state of one app.
#[derive(Debug, Default)]
pub(crate) struct Desired {
    /// (host, component id) → replicas.
    pub components: BTreeMap<(String, String), u32>,
    /// component id → (image, config names).
    pub images: BTreeMap<String, (String, Vec<String>)>,
    /// (host, provider id).
    pub providers: BTreeSet<(String, String)>,
    pub links: Vec<Link>,
    pub configs: BTreeMap<String, StringMap>,
    pub problems: Vec<String>,
}

/// One app's planning pass: what it sees, the steps it adds, what it owns and what it waits for.
struct Pass<'a> {
    app: &'a str,
    /// When the app was deployed (the earlier of two rivals keeps what both define).
    since_ms: u64,
    /// What the app put before this pass.
    before: &'a Owned,
    /// What any app put before this pass (the rest of the lattice is the user's).
    app_made: &'a Owned,
    actual: &'a Actual,
    /// What the other deployed apps define and own.
    others: &'a [&'a AppDefs],
    steps: &'a mut Vec<Step>,
    owned: Owned,
    waiting: Vec<String>,
}

impl Pass<'_> {
    fn act(&mut self, action: Action) {
        self.steps.push(Step { app: self.app.to_string(), action });
    }

    fn wait(&mut self, what: String) {
        self.waiting.push(what);
    }

    fn app(&mut self, m: &Manifest, active: bool) -> Outcome {
        let (actual, before) = (self.actual, self.before);
        let want = if active { desired(m, &actual.inventories) } else { Desired::default() };
        let mut conflicts = Vec::new();
        let mut errors = Vec::new();
        // How many wanted configs, replicas and providers are not in place yet: only once none
        // is missing does a link the app points elsewhere leave its old target.
        let mut starting = 0;
        // Config before anything that names it.
        for (name, values) in &want.configs {
            let current = actual.configs.get(name);
            if let Some(c) = config_conflict(self.app, self.since_ms, name, values, self.others, current) {
                conflicts.push(c);
                continue;
            }
            if let Some(users) = current.filter(|_| !self.app_made.configs.contains(name)) {
                // The user's: used as it is when alike, never owned, so never deleted.
                if users != values {
                    conflicts.push(user_config_conflict(name));
                }
                continue;
            }
            self.owned.configs.insert(name.clone());
            if current != Some(values) {
                starting += 1;
                self.wait(format!("config `{name}`"));
                self.act(Action::PutConfig { name: name.clone(), values: values.clone() });
            }
        }
        self.stop_unwanted(&want);
        starting += self.start_wanted(&want, &mut errors);
        self.links(&want, starting == 0, &mut conflicts);
        if !active {
            // Undeploy: the links and config the app put go too, unless another deployed app
            // defines them. Only what it put: what its manifest defines and someone else put
            // (the user's `hello-http`, say) stays.
            self.remove(&before.links, &before.configs);
            return Outcome::Undeploying { waiting: std::mem::take(&mut self.waiting) };
        }
        // Forget links the app put that are gone and that it still defines elsewhere or not at all.
        self.owned.links.retain(|x| want.links.iter().any(|l| l.same_target(x)) || actual.links.iter().any(|a| a.same_target(x)));
        if self.waiting.is_empty() && errors.is_empty() {
            // This version is in place: what the app put before and no longer defines goes (new
            // before old, as for components).
            let links: Vec<Link> = before.links.iter().filter(|o| !want.links.iter().any(|l| l.same_slot(o))).cloned().collect();
            let configs: BTreeSet<String> = before.configs.iter().filter(|n| !want.configs.contains_key(*n)).cloned().collect();
            self.remove(&links, &configs);
        }
        Outcome::Deploying { conflicts, errors, problems: want.problems, waiting: std::mem::take(&mut self.waiting) }
    }

    /// Stops the app's replicas and provider instances it no longer wants where they run, each
    /// once what replaces it runs (new before old).
    fn stop_unwanted(&mut self, want: &Desired) {
        let actual = self.actual;
        let annotations = managed_annotations(self.app);
        for inv in &actual.inventories {
            let host = &inv.host_id;
            for c in inv.components.iter().filter(|c| owned_by(&c.annotations, self.app)) {
                if want.components.contains_key(&(host.clone(), c.id.clone())) {
                    continue;
                }
                self.wait(format!("stop `{}` on host {host}", c.id));
                // A replica goes only once every replica wanted of it runs elsewhere (right
                // count, right image); one the app no longer has at all (a renamed component)
                // once every wanted replica of the app runs...
                let still_wanted = want.components.keys().any(|(_, id)| id == &c.id);
                let replaced = want.components.iter().filter(|((_, id), _)| !still_wanted || id == &c.id).all(|((h, id), n)| {
                    running_component(actual, h, id)
                        .is_some_and(|x| x.max_instances >= *n && want.images.get(id).is_some_and(|(image, _)| &x.image_ref == image))
                });
                // ... and, if it is gone from the app, once no link the app now points
                // elsewhere still calls it.
                let still_called =
                    !still_wanted && actual.links.iter().any(|l| l.target == c.id && want.links.iter().any(|w| w.same_slot(l) && w.target != l.target));
                if replaced && !still_called {
                    self.act(Action::Scale(ScaleComponentCommand {
                        component_ref: c.image_ref.clone(),
                        component_id: c.id.clone(),
                        max_instances: 0,
                        host_id: host.clone(),
                        annotations: Some(annotations.clone()),
                        ..Default::default()
                    }));
                }
            }
            for p in inv.providers.iter().filter(|p| owned_by(&p.annotations, self.app)) {
                if want.providers.contains(&(host.clone(), p.id.clone())) {
                    continue;
                }
                self.wait(format!("stop provider `{}` on host {host}", p.id));
                // New before old, as for components: an instance the app no longer wants here
                // (a draining or cordoned host, labels that no longer match) goes only once
                // every wanted instance of that provider runs. One the app no longer has at all
                // goes at once: a renamed provider may need what the old one holds (an address).
                let replaced = want.providers.iter().filter(|(_, id)| id == &p.id).all(|(h, id)| running_provider(actual, h, id));
                if replaced {
                    self.act(Action::StopProvider(StopProviderCommand { host_id: host.clone(), provider_id: p.id.clone() }));
                }
            }
        }
    }

    /// Starts or rescales what the app wants and is not in place; how many are not.
    fn start_wanted(&mut self, want: &Desired, errors: &mut Vec<String>) -> usize {
        let actual = self.actual;
        let annotations = managed_annotations(self.app);
        let mut starting = 0;
        for ((host, id), n) in &want.components {
            let (image, config) = &want.images[id];
            let current = running_component(actual, host, id);
            if current.is_some_and(|c| c.max_instances == *n && &c.image_ref == image) {
                continue;
            }
            let have = current.map(|c| c.max_instances).unwrap_or(0);
            starting += 1;
            self.wait(format!("`{id}` on host {host}: {have} of {n} replicas"));
            if let Some(f) = actual.failures.get(id) {
                errors.push(format!("`{id}` failed to start on host {}: {}", f.host, f.error));
            }
            self.act(Action::Scale(ScaleComponentCommand {
                component_ref: image.clone(),
                component_id: id.clone(),
                annotations: Some(annotations.clone()),
                max_instances: *n,
                host_id: host.clone(),
                config: config.clone(),
                allow_update: true,
                ..Default::default()
            }));
        }
        for (host, id) in &want.providers {
            if running_provider(actual, host, id) {
                continue;
            }
            starting += 1;
            self.wait(format!("provider `{id}` on host {host}"));
            if let Some(f) = actual.failures.get(id) {
                errors.push(format!("provider `{id}` failed to start on host {}: {}", f.host, f.error));
            }
            let (image, config) = &want.images[id];
            self.act(Action::StartProvider(StartProviderCommand {
                provider_id: id.clone(),
                provider_ref: image.clone(),
                host_id: host.clone(),
                config: config.clone(),
                annotations: Some(annotations.clone()),
            }));
        }
        starting
    }

    /// Puts the links the app wants; one that replaces the app's own link to another target
    /// only once everything else is `placed`.
    fn links(&mut self, want: &Desired, placed: bool, conflicts: &mut Vec<String>) {
        let (actual, before, others) = (self.actual, self.before, self.others);
        for link in &want.links {
            if let Some(c) = link_conflict(self.app, self.since_ms, link, others, &actual.links) {
                conflicts.push(c);
                continue;
            }
            let in_slot: Vec<&Link> = actual.links.iter().filter(|l| l.same_slot(link)).collect();
            // A link in the slot that no app put is the user's: used as it is when alike (never
            // owned, so never deleted), else a conflict; never replaced.
            if let Some(users) = in_slot.iter().find(|l| !self.app_made.links.iter().any(|x| x.same_target(l))) {
                if *users != link {
                    conflicts.push(user_link_conflict(link, users));
                }
                continue;
            }
            if in_slot.contains(&link) {
                hold_link(&mut self.owned, link);
                continue;
            }
            let shown = show_link(link);
            // The slot holds a link to another target (the registry takes no second target for
            // an interface): another app's that it no longer defines and is about to remove, or
            // this app's own from an earlier version.
            let old: Vec<&Link> = in_slot.iter().copied().filter(|l| l.target != link.target).collect();
            let leaving = old.iter().find_map(|l| {
                others.iter().find(|a| a.owned.links.iter().any(|x| x.same_target(l)) && !a.links.iter().any(|x| x.same_target(l))).map(|a| (a, l))
            });
            if let Some((a, l)) = leaving {
                self.wait(format!("{shown}, once app `{}` removes its old link to `{}`", a.name, l.target));
                continue;
            }
            let ours: Vec<Link> = old.iter().filter(|l| before.links.iter().any(|x| x.same_target(l))).map(|l| (*l).clone()).collect();
            if !ours.is_empty() {
                if !placed {
                    self.wait(format!("{shown}, once every component and provider is in place"));
                    continue;
                }
                self.owned.links.retain(|x| !(x.same_slot(link) && x.target != link.target));
            }
            self.wait(shown);
            hold_link(&mut self.owned, link);
            self.act(Action::PutLink { link: link.clone(), replacing: ours });
        }
    }

    /// Deletes `links` and `configs`, which the app put or defined and no longer wants, unless
    /// another deployed app defines them too: then they stay for it, and the app forgets them.
    /// What is gone already is forgotten; what is deleted now is forgotten once it is seen gone.
    fn remove(&mut self, links: &[Link], configs: &BTreeSet<String>) {
        let (actual, others) = (self.actual, self.others);
        for link in links {
            let shared = others.iter().any(|o| o.links.iter().any(|l| l.same_target(link)));
            if shared || !actual.links.iter().any(|l| l.same_target(link)) {
                self.owned.links.retain(|x| !x.same_target(link));
                continue;
            }
            self.wait(format!("delete {}", show_link(link)));
            self.act(Action::DeleteLink(link.clone()));
        }
        for name in configs {
            let shared = others.iter().any(|o| o.configs.contains_key(name));
            if shared || !actual.configs.contains_key(name) {
                self.owned.configs.remove(name);
                continue;
            }
            self.wait(format!("delete config `{name}`"));
            self.act(Action::DeleteConfig(name.clone()));
        }
    }
}

fn running_component<'a>(actual: &'a Actual, host: &str, id: &str) -> Option<&'a trellis_lattice::ctl::ComponentDescription> {
    actual.inventories.iter().find(|i| i.host_id == host).and_then(|i| i.components.iter().find(|c| c.id == id))
}

fn running_provider(actual: &Actual, host: &str, id: &str) -> bool {
    actual.inventories.iter().find(|i| i.host_id == host).is_some_and(|i| i.providers.iter().any(|p| p.id == id))
}

fn owned_by(annotations: &StringMap, app: &str) -> bool {
    annotations.get(APP_SPEC_ANNOTATION).is_some_and(|a| a == app)
}

/// Records `link` as put by the app (replacing what it recorded for the same target).
fn hold_link(owned: &mut Owned, link: &Link) {
    owned.links.retain(|x| !x.same_target(link));
    owned.links.push(link.clone());
}

/// A link as status lines show it.
pub(crate) fn show_link(l: &Link) -> String {
    format!("link `{}` → `{}` ({}:{}, name {})", l.source_id, l.target, l.wit_namespace, l.wit_package, l.name)
}

fn matches(labels: &StringMap, requirements: &StringMap) -> bool {
    requirements.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn show(requirements: &StringMap) -> String {
    requirements.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn config_names_of(configs: &[ConfigProperty], into: &mut BTreeMap<String, StringMap>) -> Vec<String> {
    for c in configs {
        if let Some(p) = &c.properties {
            into.insert(c.name.clone(), p.clone());
        }
    }
    configs.iter().map(|c| c.name.clone()).collect()
}

/// The secrets a component may read, as wasmCloud passes them: one named config per secret,
/// `SECRET_{component id}_{name}`, holding its reference (name, backend from its policy, key,
/// field, version, policy); the component's config list names them. Their names.
fn secret_configs(m: &Manifest, id: &str, secrets: &[SecretProperty], into: &mut BTreeMap<String, StringMap>) -> Vec<String> {
    let mut names = Vec::new();
    for s in secrets {
        let Some(policy) = m.spec.policies.iter().find(|p| p.name == s.properties.policy) else { continue };
        let reference = SecretReference {
            name: s.name.clone(),
            backend: policy.properties.get("backend").cloned().unwrap_or_else(|| secrets::DEFAULT_BACKEND.into()),
            key: s.properties.key.clone(),
            field: s.properties.field.clone(),
            version: s.properties.version.clone(),
            policy: secrets::policy_json(&policy.properties),
        };
        let name = format!("{}{id}_{}", secrets::CONFIG_PREFIX, s.name);
        into.insert(name.clone(), reference.to_config());
        names.push(name);
    }
    names
}

/// The links and config a manifest defines, whatever the hosts.
pub(crate) fn definitions(m: &Manifest) -> Desired {
    desired(m, &[])
}

/// Where one component's replicas go, and why some cannot be placed.
struct Placement<'a> {
    hosts: &'a [HostInventory],
    id: &'a str,
    assigned: BTreeMap<String, u32>,
    unplaced: Vec<String>,
    unplaced_n: u32,
}

impl Placement<'_> {
    /// How many of it run on `host` now (replicas, or 1 for a provider instance).
    fn running(&self, host: &str) -> u32 {
        let on = self.hosts.iter().filter(|h| h.host_id == host);
        on.clone().flat_map(|h| h.components.iter()).filter(|c| c.id == self.id).map(|c| c.max_instances).sum::<u32>()
            + on.flat_map(|h| h.providers.iter()).filter(|p| p.id == self.id).count() as u32
    }

    fn cordoned(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.host_id == host && h.schedule == Schedule::Cordoned)
    }

    fn assigned(&self, host: &str) -> u32 {
        self.assigned.get(host).copied().unwrap_or(0)
    }

    fn unplaced(&mut self, n: u32, why: String) {
        self.unplaced_n += n;
        if !self.unplaced.contains(&why) {
            self.unplaced.push(why);
        }
    }

    /// A daemon: `count` on every eligible host (1 for a provider); a cordoned host keeps at
    /// most what it runs.
    fn daemon(&mut self, eligible: &[&str], count: u32, provider: bool) {
        for h in eligible {
            let mut n = if provider { 1 } else { count };
            if self.cordoned(h) {
                n = n.min(self.running(h).saturating_sub(self.assigned(h)));
                if n == 0 {
                    continue;
                }
            }
            *self.assigned.entry(h.to_string()).or_default() += n;
        }
    }

    /// A provider runs once per host: `count` distinct hosts, those running it first.
    fn providers(&mut self, eligible: &[&str], count: u32) {
        let mut order: Vec<&str> = eligible.iter().copied().filter(|h| !self.cordoned(h) || self.running(h) > 0).collect();
        order.sort_by_key(|h| (self.assigned.contains_key(*h), std::cmp::Reverse(self.running(h)), h.to_string()));
        for h in order.into_iter().take(count as usize) {
            self.assigned.insert(h.to_string(), 1);
        }
    }

    /// Component replicas one by one, each to the eligible host with the fewest so far
    /// (ties: the one running more of it, then by id); a cordoned host only up to what it runs.
    fn replicas(&mut self, eligible: &[&str], count: u32, req: &StringMap) {
        for _ in 0..count {
            let h = eligible
                .iter()
                .filter(|h| !self.cordoned(h) || self.assigned(h) < self.running(h))
                .min_by_key(|h| (self.assigned(h), std::cmp::Reverse(self.running(h)), h.to_string()))
                .map(|h| h.to_string());
            match h {
                Some(h) => *self.assigned.entry(h).or_default() += 1,
                None => self.unplaced(1, format!("every host matching {} is cordoned", if req.is_empty() { "it".to_string() } else { show(req) })),
            }
        }
    }
}

/// What `m` wants on `hosts`.
fn desired(m: &Manifest, hosts: &[HostInventory]) -> Desired {
    let mut d = Desired::default();
    for c in &m.spec.components {
        let id = m.component_id(c);
        let mut config = config_names_of(&c.properties.config, &mut d.configs);
        config.extend(secret_configs(m, &id, &c.properties.secrets, &mut d.configs));
        d.images.insert(id.clone(), (c.properties.image.clone(), config));
        let (daemon, scaler) = match c.scaler() {
            Some(Trait::SpreadScaler(s)) => (false, Some(s)),
            Some(Trait::DaemonScaler(s)) => (true, Some(s)),
            _ => (false, None),
        };
        // Spreads as (requirements, count); no spread = every host.
        let spreads: Vec<(StringMap, u32)> = match scaler {
            None => vec![(StringMap::new(), 1)],
            Some(s) if s.spread.is_empty() => vec![(StringMap::new(), s.instances)],
            Some(s) => s
                .spread
                .iter()
                .zip(spread_counts(s.instances, &s.spread.iter().map(|x| x.weight).collect::<Vec<_>>()))
                .map(|(x, n)| (x.requirements.clone(), n))
                .collect(),
        };
        let total: u32 = spreads.iter().map(|s| s.1).sum();
        let mut p = Placement { hosts, id: &id, assigned: BTreeMap::new(), unplaced: Vec::new(), unplaced_n: 0 };
        let provider = c.kind == ComponentType::Capability;
        for (req, count) in &spreads {
            if *count == 0 {
                continue;
            }
            // A draining host gets nothing (its replicas go elsewhere); a cordoned one keeps
            // what it runs but gets no more.
            let mut eligible: Vec<&str> = hosts.iter().filter(|h| !h.schedule.is_draining() && matches(&h.labels, req)).map(|h| h.host_id.as_str()).collect();
            eligible.sort();
            if eligible.is_empty() {
                p.unplaced_n += count;
                p.unplaced.push(if req.is_empty() { "no host is running".to_string() } else { format!("no host matches {}", show(req)) });
                continue;
            }
            match (provider, daemon) {
                (_, true) => p.daemon(&eligible, *count, provider),
                (true, false) => p.providers(&eligible, *count),
                (false, false) => p.replicas(&eligible, *count, req),
            }
        }
        if p.unplaced_n > 0 {
            let what = if provider { "instances of provider" } else { "replicas of" };
            d.problems.push(format!("{} of {total} {what} `{}`: {}", total - p.unplaced_n, c.name, p.unplaced.join("; ")));
        }
        for (h, n) in p.assigned {
            if provider {
                d.providers.insert((h, id.clone()));
            } else {
                d.components.insert((h, id.clone()), n);
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
                source_config: config_names_of(&l.source.config, &mut d.configs),
                target_config: config_names_of(&l.target.config, &mut d.configs),
            });
        }
    }
    d
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
    let rivals: Vec<(&AppDefs, &Link)> = others.iter().flat_map(|o| o.links.iter().filter(|l| l.same_slot(def)).map(move |l| (*o, l))).collect();
    if rivals.iter().all(|(_, l)| *l == def) {
        return None;
    }
    let in_place = |l: &Link| actual.iter().any(|a| a == l);
    let winner = keeper(std::iter::once((in_place(def), since, app)).chain(rivals.iter().map(|(o, l)| (in_place(l), o.since_ms, o.name.as_str()))))?;
    let (o, l) = rivals.iter().find(|(o, _)| o.name == winner)?;
    if *l == def {
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

/// The status line of an app whose config `name` exists with other values and was put by no
/// app: it is the user's, and the app will not change it.
fn user_config_conflict(name: &str) -> String {
    format!(
        "config `{name}` conflicts with the user's config `{name}` (no app put it), which holds other values; an app never changes or deletes config it did not put: rename it in the manifest, or delete the user's with `wash config del {name}`"
    )
}

/// The status line of an app whose link `def` meets `users`, a link in its slot no app put.
fn user_link_conflict(def: &Link, users: &Link) -> String {
    let how = if users.target != def.target { format!("→ `{}`", users.target) } else { "with other interfaces or config".to_string() };
    format!(
        "{} conflicts with the user's link {how} (no app put it); an app never changes or deletes a link it did not put: change the manifest, or delete the user's with `wash link del {} {} {} --link-name {}`",
        show_link(def),
        users.source_id,
        users.wit_namespace,
        users.wit_package,
        users.name
    )
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

#[cfg(test)]
mod tests;

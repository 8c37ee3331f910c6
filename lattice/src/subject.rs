//! Every NATS subject of the lattice, formatted and parsed in one place.
//!
//! Control subjects follow wasmCloud 1.x exactly: `wasmbus.ctl.v1.{lattice}.{noun}.{verb}[.{arg}]`.
//! Hosts subscribe with [`CtlSubjects::host_subscriptions`] and the client sends with the same
//! functions, so the two cannot drift (a test below proves every client subject parses).
//! One extension of Trellis' own sits beside them, addressed like `host.stop`:
//! `host.cordon|uncordon|drain.{host_id}` (see [`crate::ctl::Schedule`]).

/// The default control prefix (configurable, as in wasmCloud).
pub const DEFAULT_CTL_PREFIX: &str = "wasmbus.ctl";

/// Whether `subject` (a subject, or a subscription pattern) reaches the lattice's own traffic:
/// control, events and the data plane (`wasmbus.…`), or the server's APIs (`$JS.…`, `$KV.…`,
/// `$SYS.…`); a pattern whose first token is a wildcard counts. Tools that publish or subscribe
/// on behalf of components over a lattice connection must refuse these: a component that could
/// publish to `wasmbus.ctl.…` could scale, link and stop anything.
pub fn is_lattice_internal(subject: &str) -> bool {
    let first = subject.trim().split('.').next().unwrap_or_default();
    first.eq_ignore_ascii_case("wasmbus") || first.starts_with('$') || first == "*" || first == ">"
}

/// The subject on which every event of `lattice` named `event_name` is published.
pub fn event(lattice: &str, event_name: &str) -> String {
    format!("wasmbus.evt.{lattice}.{event_name}")
}

/// A wildcard matching every event of `lattice`.
pub fn events_wildcard(lattice: &str) -> String {
    format!("wasmbus.evt.{lattice}.>")
}

/// The app API prefix of `lattice`, as wadm's: `wadm.api.{lattice}`.
pub fn app_api_prefix(lattice: &str) -> String {
    format!("wadm.api.{lattice}")
}

/// Where an app's status is published when it changes (wadm's `wadm.status.{lattice}.{app}`),
/// as an [`crate::app::Status`].
pub fn app_status_subject(lattice: &str, app: &str) -> String {
    format!("wadm.status.{lattice}.{app}")
}

/// What every host subscribes to (in queue group [`APP_API_QUEUE`]) to serve the app API.
pub fn app_api_wildcard(lattice: &str) -> String {
    format!("{}.>", app_api_prefix(lattice))
}

/// The queue group of the app API: one host answers each request.
pub const APP_API_QUEUE: &str = "trellis-app-api";

/// One app API operation, as identified by its subject `wadm.api.{lattice}.model.{verb}[.{app}]`.
/// The client formats subjects with [`AppOp::subject`] and the server parses them with
/// [`AppOp::parse`], so the two cannot drift (a test below round-trips every operation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppOp {
    /// `model.put`: store a manifest as a new version.
    Put,
    /// `model.list`: every app.
    List,
    /// `model.get.{app}`: a stored manifest.
    Get(String),
    /// `model.versions.{app}`: the stored versions.
    Versions(String),
    /// `model.del.{app}`: delete one or every version.
    Del(String),
    /// `model.deploy.{app}`: deploy a version.
    Deploy(String),
    /// `model.undeploy.{app}`: remove what the app created.
    Undeploy(String),
    /// `model.status.{app}`: where the app stands.
    Status(String),
}

/// Every app API operation's name, for messages.
const APP_OPS: &str = "model.put, model.get, model.list, model.versions, model.del, model.deploy, model.undeploy and model.status";

impl AppOp {
    /// The operation's name with the app left out, e.g. `model.get`; used in messages.
    pub fn name(&self) -> &'static str {
        match self {
            AppOp::Put => "model.put",
            AppOp::List => "model.list",
            AppOp::Get(_) => "model.get",
            AppOp::Versions(_) => "model.versions",
            AppOp::Del(_) => "model.del",
            AppOp::Deploy(_) => "model.deploy",
            AppOp::Undeploy(_) => "model.undeploy",
            AppOp::Status(_) => "model.status",
        }
    }

    /// The app the operation is about, for those that name one.
    pub fn app(&self) -> Option<&str> {
        match self {
            AppOp::Put | AppOp::List => None,
            AppOp::Get(a) | AppOp::Versions(a) | AppOp::Del(a) | AppOp::Deploy(a) | AppOp::Undeploy(a) | AppOp::Status(a) => Some(a),
        }
    }

    /// The subject of this operation in `lattice`.
    pub fn subject(&self, lattice: &str) -> String {
        match self.app() {
            Some(app) => format!("{}.{}.{app}", app_api_prefix(lattice), self.name()),
            None => format!("{}.{}", app_api_prefix(lattice), self.name()),
        }
    }

    /// Parses an app API subject of `lattice`. The error names what was wrong (not an app API
    /// subject, an unknown operation, a missing or invalid app name), for the failure reply.
    pub fn parse(lattice: &str, subject: &str) -> Result<AppOp, crate::Error> {
        let invalid = crate::Error::invalid;
        let prefix = app_api_prefix(lattice);
        let rest = subject
            .strip_prefix(prefix.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .ok_or_else(|| invalid(format!("`{subject}` is not an app API subject (under `{prefix}`)")))?;
        let mut parts = rest.splitn(3, '.');
        let op = format!("{}.{}", parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let app = parts.next();
        let named = |make: fn(String) -> AppOp| -> Result<AppOp, crate::Error> {
            let app = app.ok_or_else(|| invalid(format!("{op} needs the app name as the last token of the subject")))?;
            crate::validate_id("application name", app)?;
            Ok(make(app.to_string()))
        };
        let bare = |op_: AppOp| -> Result<AppOp, crate::Error> {
            match app {
                None => Ok(op_),
                Some(extra) => Err(invalid(format!("{op} takes no app name, but the subject ends in `{extra}`"))),
            }
        };
        match op.as_str() {
            "model.put" => bare(AppOp::Put),
            "model.list" => bare(AppOp::List),
            "model.get" => named(AppOp::Get),
            "model.versions" => named(AppOp::Versions),
            "model.del" => named(AppOp::Del),
            "model.deploy" => named(AppOp::Deploy),
            "model.undeploy" => named(AppOp::Undeploy),
            "model.status" => named(AppOp::Status),
            other => Err(invalid(format!("unknown app API operation `{other}`; the operations are {APP_OPS}"))),
        }
    }
}

/// One control operation, as identified by its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // each variant is named after its subject suffix
pub enum CtlOp {
    HostPing,
    HostGet(String),
    HostStop(String),
    /// Trellis' own extension (not in wasmCloud): `host.cordon.{host}`.
    HostCordon(String),
    /// Trellis' own extension: `host.uncordon.{host}`.
    HostUncordon(String),
    /// Trellis' own extension: `host.drain.{host}`.
    HostDrain(String),
    ComponentAuction,
    ComponentScale(String),
    ComponentUpdate(String),
    ProviderAuction,
    ProviderStart(String),
    ProviderStop(String),
    LabelPut(String),
    LabelDel(String),
    LinkPut,
    LinkDel,
    LinkGet,
    ClaimsGet,
    ConfigPut(String),
    ConfigGet(String),
    ConfigDel(String),
}

impl CtlOp {
    /// The subject suffix with the argument left out, e.g. `component.scale`; used in messages.
    pub fn name(&self) -> &'static str {
        match self {
            CtlOp::HostPing => "host.ping",
            CtlOp::HostGet(_) => "host.get",
            CtlOp::HostStop(_) => "host.stop",
            CtlOp::HostCordon(_) => "host.cordon",
            CtlOp::HostUncordon(_) => "host.uncordon",
            CtlOp::HostDrain(_) => "host.drain",
            CtlOp::ComponentAuction => "component.auction",
            CtlOp::ComponentScale(_) => "component.scale",
            CtlOp::ComponentUpdate(_) => "component.update",
            CtlOp::ProviderAuction => "provider.auction",
            CtlOp::ProviderStart(_) => "provider.start",
            CtlOp::ProviderStop(_) => "provider.stop",
            CtlOp::LabelPut(_) => "label.put",
            CtlOp::LabelDel(_) => "label.del",
            CtlOp::LinkPut => "link.put",
            CtlOp::LinkDel => "link.del",
            CtlOp::LinkGet => "link.get",
            CtlOp::ClaimsGet => "claims.get",
            CtlOp::ConfigPut(_) => "config.put",
            CtlOp::ConfigGet(_) => "config.get",
            CtlOp::ConfigDel(_) => "config.del",
        }
    }

    /// Every operation, those addressed to a host addressed to `host_id` and the config ones
    /// to `config`: for tools and tests that probe each subject.
    pub fn every(host_id: &str, config: &str) -> Vec<CtlOp> {
        let h = || host_id.to_string();
        let c = || config.to_string();
        vec![
            CtlOp::HostPing,
            CtlOp::HostGet(h()),
            CtlOp::HostStop(h()),
            CtlOp::HostCordon(h()),
            CtlOp::HostUncordon(h()),
            CtlOp::HostDrain(h()),
            CtlOp::ComponentAuction,
            CtlOp::ComponentScale(h()),
            CtlOp::ComponentUpdate(h()),
            CtlOp::ProviderAuction,
            CtlOp::ProviderStart(h()),
            CtlOp::ProviderStop(h()),
            CtlOp::LabelPut(h()),
            CtlOp::LabelDel(h()),
            CtlOp::LinkPut,
            CtlOp::LinkDel,
            CtlOp::LinkGet,
            CtlOp::ClaimsGet,
            CtlOp::ConfigPut(c()),
            CtlOp::ConfigGet(c()),
            CtlOp::ConfigDel(c()),
        ]
    }

    /// The host this operation is addressed to, when it is addressed to one.
    pub fn target_host(&self) -> Option<&str> {
        match self {
            CtlOp::HostGet(h)
            | CtlOp::HostStop(h)
            | CtlOp::HostCordon(h)
            | CtlOp::HostUncordon(h)
            | CtlOp::HostDrain(h)
            | CtlOp::ComponentScale(h)
            | CtlOp::ComponentUpdate(h)
            | CtlOp::ProviderStart(h)
            | CtlOp::ProviderStop(h)
            | CtlOp::LabelPut(h)
            | CtlOp::LabelDel(h) => Some(h),
            _ => None,
        }
    }
}

/// A subscription a host makes on the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlSubscription {
    /// The subject, possibly with wildcards.
    pub subject: String,
    /// The queue group, for subjects that exactly one host answers.
    pub queue: Option<String>,
    /// Whether this is the catch-all that answers only subjects no other subscription handles.
    pub catch_all: bool,
}

/// The control subjects of one lattice.
#[derive(Debug, Clone)]
pub struct CtlSubjects {
    /// `{prefix}.v1.{lattice}`
    base: String,
}

impl CtlSubjects {
    /// The subjects of `lattice` under the default prefix.
    pub fn new(lattice: &str) -> Self {
        Self::with_prefix(DEFAULT_CTL_PREFIX, lattice)
    }

    /// The subjects of `lattice` under a custom prefix (wasmCloud's `ctl_topic_prefix`).
    pub fn with_prefix(prefix: &str, lattice: &str) -> Self {
        Self { base: format!("{prefix}.v1.{lattice}") }
    }

    /// `wasmbus.ctl.v1.{lattice}`
    pub fn base(&self) -> &str {
        &self.base
    }

    fn sub(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.base)
    }

    /// The subject of `op`.
    pub fn subject(&self, op: &CtlOp) -> String {
        match op.target_host() {
            Some(host) => self.sub(&format!("{}.{host}", op.name())),
            None => match op {
                CtlOp::ConfigPut(n) | CtlOp::ConfigGet(n) | CtlOp::ConfigDel(n) => self.sub(&format!("{}.{n}", op.name())),
                _ => self.sub(op.name()),
            },
        }
    }

    /// Parses a control subject of this lattice into its operation.
    ///
    /// The error says what was wrong with the subject, for the failure reply.
    pub fn parse(&self, subject: &str) -> Result<CtlOp, String> {
        let rest = subject
            .strip_prefix(self.base.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .ok_or_else(|| format!("subject `{subject}` is not under `{}`", self.base))?;
        let parts: Vec<&str> = rest.split('.').collect();
        let arg = |what: &str| -> Result<String, String> {
            match parts.as_slice() {
                [_, _, a] if !a.is_empty() => Ok((*a).to_string()),
                _ => Err(format!(
                    "`{}.{}` needs exactly one more token, the {what}: `{}.{}.<{what}>`",
                    parts[0],
                    parts.get(1).unwrap_or(&""),
                    parts[0],
                    parts.get(1).unwrap_or(&"")
                )),
            }
        };
        let bare = |op: CtlOp| -> Result<CtlOp, String> { if parts.len() == 2 { Ok(op) } else { Err(format!("`{rest}` has unexpected trailing tokens")) } };
        match (parts.first().copied(), parts.get(1).copied()) {
            (Some("host"), Some("ping")) => bare(CtlOp::HostPing),
            (Some("host"), Some("get")) => arg("host id").map(CtlOp::HostGet),
            (Some("host"), Some("stop")) => arg("host id").map(CtlOp::HostStop),
            (Some("host"), Some("cordon")) => arg("host id").map(CtlOp::HostCordon),
            (Some("host"), Some("uncordon")) => arg("host id").map(CtlOp::HostUncordon),
            (Some("host"), Some("drain")) => arg("host id").map(CtlOp::HostDrain),
            (Some("component"), Some("auction")) => bare(CtlOp::ComponentAuction),
            (Some("component"), Some("scale")) => arg("host id").map(CtlOp::ComponentScale),
            (Some("component"), Some("update")) => arg("host id").map(CtlOp::ComponentUpdate),
            (Some("provider"), Some("auction")) => bare(CtlOp::ProviderAuction),
            (Some("provider"), Some("start")) => arg("host id").map(CtlOp::ProviderStart),
            (Some("provider"), Some("stop")) => arg("host id").map(CtlOp::ProviderStop),
            (Some("label"), Some("put")) => arg("host id").map(CtlOp::LabelPut),
            (Some("label"), Some("del")) => arg("host id").map(CtlOp::LabelDel),
            (Some("link"), Some("put")) => bare(CtlOp::LinkPut),
            (Some("link"), Some("del")) => bare(CtlOp::LinkDel),
            (Some("link"), Some("get")) => bare(CtlOp::LinkGet),
            (Some("claims"), Some("get")) => bare(CtlOp::ClaimsGet),
            (Some("config"), Some("put")) => arg("config name").map(CtlOp::ConfigPut),
            (Some("config"), Some("get")) => arg("config name").map(CtlOp::ConfigGet),
            (Some("config"), Some("del")) => arg("config name").map(CtlOp::ConfigDel),
            _ => Err(format!(
                "unknown control subject `{subject}`; known operations are host.ping|get|stop|cordon|uncordon|drain, \
                 component.auction|scale|update, provider.auction|start|stop, label.put|del, \
                 link.put|del|get, claims.get, config.put|get|del"
            )),
        }
    }

    /// What a host with id `host_id` subscribes to: broadcasts, its own subjects, the
    /// queue-grouped registry subjects, and a queue-grouped catch-all so that an unknown
    /// subject gets a failure reply rather than silence.
    pub fn host_subscriptions(&self, host_id: &str) -> Vec<CtlSubscription> {
        let plain = |subject: String| CtlSubscription { subject, queue: None, catch_all: false };
        let queued = |subject: String, queue: String| CtlSubscription { subject, queue: Some(queue), catch_all: false };
        vec![
            plain(self.sub("host.ping")),
            plain(self.sub("component.auction")),
            plain(self.sub("provider.auction")),
            plain(self.sub(&format!("*.*.{host_id}"))),
            queued(self.sub("link.*"), self.sub("link")),
            queued(self.sub("claims.get"), self.sub("claims")),
            queued(self.sub("config.>"), self.sub("config")),
            CtlSubscription { subject: self.sub(">"), queue: Some(self.sub("unknown")), catch_all: true },
        ]
    }
}

/// NATS wildcard match of `subject` against `pattern` (`*` one token, `>` the rest).
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn every_client_subject_reaches_exactly_one_host_handler_and_parses_back() {
        let s = CtlSubjects::new("default");
        let subs = s.host_subscriptions("NHOST");
        for op in CtlOp::every("NHOST", "cfg") {
            let subject = s.subject(&op);
            assert_eq!(s.parse(&subject).as_ref(), Ok(&op), "{subject}");
            let handlers: Vec<_> = subs.iter().filter(|x| !x.catch_all && matches(&x.subject, &subject)).collect();
            assert_eq!(handlers.len(), 1, "{subject} matched {handlers:?}");
        }
    }

    #[test]
    fn subjects_match_the_reference() {
        let s = CtlSubjects::new("lat");
        assert_eq!(s.subject(&CtlOp::HostPing), "wasmbus.ctl.v1.lat.host.ping");
        for internal in ["wasmbus.ctl.v1.lat.link.put", "wasmbus.rpc.lat.x.y.z", "$JS.API.STREAM.LIST", "$KV.LATTICEDATA_lat.k", ">", "*.ctl.>"] {
            assert!(is_lattice_internal(internal), "{internal}");
        }
        for app in ["orders.new", "_INBOX.abc", "echo.>", "a.*.c"] {
            assert!(!is_lattice_internal(app), "{app}");
        }
        assert_eq!(s.subject(&CtlOp::ComponentScale("N1".into())), "wasmbus.ctl.v1.lat.component.scale.N1");
        assert_eq!(s.subject(&CtlOp::ConfigPut("c".into())), "wasmbus.ctl.v1.lat.config.put.c");
        assert_eq!(s.subject(&CtlOp::LinkPut), "wasmbus.ctl.v1.lat.link.put");
        assert_eq!(event("lat", "host_started"), "wasmbus.evt.lat.host_started");
    }

    #[test]
    fn every_app_operation_reaches_the_app_api_and_parses_back() {
        let all = [
            AppOp::Put,
            AppOp::List,
            AppOp::Get("hello".into()),
            AppOp::Versions("hello".into()),
            AppOp::Del("hello".into()),
            AppOp::Deploy("hello".into()),
            AppOp::Undeploy("hello".into()),
            AppOp::Status("hello".into()),
        ];
        for op in all {
            let subject = op.subject("lat");
            assert!(matches(&app_api_wildcard("lat"), &subject), "{subject}");
            assert_eq!(AppOp::parse("lat", &subject).ok().as_ref(), Some(&op), "{subject}");
        }
        assert_eq!(AppOp::Get("hello".into()).subject("default"), "wadm.api.default.model.get.hello");
        assert_eq!(AppOp::Put.subject("default"), "wadm.api.default.model.put");
        let err = |s: &str| AppOp::parse("lat", s).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err("wadm.api.lat.model.frob").contains("unknown app API operation `model.frob`"));
        assert!(err("wadm.api.lat.model.get").contains("needs the app name"));
        assert!(err("wadm.api.lat.model.get.a.b").contains("application name `a.b`"));
        assert!(err("wadm.api.lat.model.list.x").contains("takes no app name"));
        assert!(err("wadm.api.other.model.list").contains("not an app API subject"));
    }

    #[test]
    fn unknown_and_malformed_subjects_are_explained() {
        let s = CtlSubjects::new("default");
        assert!(s.parse("wasmbus.ctl.v1.default.frob.nicate").unwrap_err().contains("unknown control subject"));
        assert!(s.parse("wasmbus.ctl.v1.default.component.scale").unwrap_err().contains("<host id>"));
        assert!(s.parse("wasmbus.ctl.v1.default.host.ping.extra").is_err());
        assert!(s.parse("wasmbus.ctl.v1.other.host.ping").is_err());
    }
}

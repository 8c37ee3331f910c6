//! Control-interface messages, with the JSON field names of wasmCloud 1.x (see the protocol
//! reference). Unknown fields are ignored so newer clients can talk to us; missing optional
//! fields take the reference's defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Labels, annotations and named config are all string maps.
pub type StringMap = BTreeMap<String, String>;

/// The envelope of every control reply: `{"success", "message", "response"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CtlResponse<T> {
    /// Whether the operation was accepted.
    pub success: bool,
    /// Why it failed, or an informative note.
    #[serde(default)]
    pub message: String,
    /// The payload, for operations that return one.
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub response: Option<T>,
    /// Trellis' paging extension: this reply holds one page of a longer listing, and the next
    /// page is asked for with the request body `{"after": next}` ([`PageRequest`]). Absent on
    /// the last (or only) page, so a listing that fits in one reply is wasmCloud's exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Trellis' extension: stored entries the listing could not decode, by key, reported
    /// rather than silently skipped (`link.get`, `claims.get`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
}

impl<T> CtlResponse<T> {
    /// A success carrying `response`.
    pub fn ok(response: T) -> Self {
        Self { success: true, message: String::new(), response: Some(response), next: None, unreadable: Vec::new() }
    }

    /// A failure explaining why.
    pub fn error(message: impl Into<String>) -> Self {
        Self { success: false, message: message.into(), response: None, next: None, unreadable: Vec::new() }
    }
}

impl CtlResponse<()> {
    /// A success with no payload (an ack).
    pub fn ack() -> Self {
        Self::ok(()).without_response()
    }
}

impl<T> CtlResponse<T> {
    fn without_response(mut self) -> Self {
        self.response = None;
        self
    }
}

/// The largest reply body a host sends: listings longer than this (`host.get`, `link.get`,
/// `claims.get`) are paged (see [`CtlResponse::next`]). Half of NATS' default `max_payload`
/// (1 MiB), so that one item (itself bounded by the 512 KiB request that stored it) plus the
/// envelope always fits in one message.
pub const REPLY_BUDGET: usize = 512 * 1024;

/// The request body asking for a later page of a paged listing (Trellis' extension; a request
/// with no body asks for the first page, which wasmCloud clients always get).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PageRequest {
    /// The `next` of the previous page: the reply lists what comes after it.
    #[serde(default)]
    pub after: Option<String>,
}

/// A stored entry that could not be decoded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unreadable {
    /// Its key in the bucket (e.g. `LINKDEF.http.wasi.http.default.hello`).
    pub key: String,
    /// Why it could not be decoded.
    pub error: String,
}

/// One page of `items` (each with the cursor key that orders it, ascending) whose JSON fits in
/// `budget` bytes, and the cursor of the next page when some were left out. A page holds at
/// least one item whatever its size, so paging always progresses.
pub fn page<'a, T: Serialize + Clone + 'a>(items: impl IntoIterator<Item = (&'a str, &'a T)>, budget: usize) -> (Vec<T>, Option<String>) {
    let mut out = Vec::new();
    let mut used = 2; // `[]`
    let mut last: Option<&str> = None;
    for (key, item) in items {
        // Serialising our own types cannot fail; should it, count the item as the whole budget.
        let size = serde_json::to_vec(item).map(|v| v.len() + 1).unwrap_or(budget);
        if !out.is_empty() && used + size > budget {
            return (out, last.map(str::to_string));
        }
        used += size;
        out.push(item.clone());
        last = Some(key);
    }
    (out, None)
}

/// A host's answer to `host.ping`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Host {
    /// The host's public key (`N…`).
    pub id: String,
    /// A human-friendly name such as `bold-dew-8526`.
    #[serde(default)]
    pub friendly_name: String,
    /// The host's labels, `hostcore.*` included.
    #[serde(default)]
    pub labels: StringMap,
    /// The lattice it belongs to.
    #[serde(default)]
    pub lattice: String,
    /// Seconds since it started.
    #[serde(default)]
    pub uptime_seconds: u64,
    /// The same, for people.
    #[serde(default)]
    pub uptime_human: String,
    /// The host's software version.
    #[serde(default)]
    pub version: String,
    /// The NATS URL its control connection uses.
    #[serde(default)]
    pub ctl_host: String,
    /// The NATS URL its data-plane connection uses.
    #[serde(default)]
    pub rpc_host: String,
    /// The JetStream domain, if any.
    #[serde(default)]
    pub js_domain: Option<String>,
    /// Trellis' addition: the address of the host's admin endpoint (`--http-admin`: `/livez`,
    /// `/readyz`, `/metrics`), when it serves one; left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<String>,
}

/// A component as listed in an inventory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ComponentDescription {
    /// The component id.
    pub id: String,
    /// Where it was loaded from.
    pub image_ref: String,
    /// What `image_ref` resolved to when it was loaded (`sha256:…`); a Trellis addition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// Its name from its claims, if signed.
    #[serde(default)]
    pub name: Option<String>,
    /// Annotations given when it was scaled.
    #[serde(default)]
    pub annotations: StringMap,
    /// Its revision from its claims (0 when unsigned).
    #[serde(default)]
    pub revision: i32,
    /// The concurrency limit.
    #[serde(default)]
    pub max_instances: u32,
    /// Resource limits in force, if reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<StringMap>,
}

/// A provider as listed in an inventory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ProviderDescription {
    /// The provider id.
    pub id: String,
    /// Where it was started from.
    #[serde(default)]
    pub image_ref: Option<String>,
    /// Its name, if known.
    #[serde(default)]
    pub name: Option<String>,
    /// Its revision.
    #[serde(default)]
    pub revision: i32,
    /// Annotations given when it was started.
    #[serde(default)]
    pub annotations: StringMap,
}

/// The answer to `host.get.{host}` (and the data of `host_heartbeat`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct HostInventory {
    /// The host's public key.
    pub host_id: String,
    /// Its friendly name.
    #[serde(default)]
    pub friendly_name: String,
    /// Its labels.
    #[serde(default)]
    pub labels: StringMap,
    /// Its software version.
    #[serde(default)]
    pub version: String,
    /// Uptime for people.
    #[serde(default)]
    pub uptime_human: String,
    /// Uptime in seconds.
    #[serde(default)]
    pub uptime_seconds: u64,
    /// The components it runs.
    #[serde(default)]
    pub components: Vec<ComponentDescription>,
    /// The providers it runs.
    #[serde(default)]
    pub providers: Vec<ProviderDescription>,
    /// Whether it takes new placements (Trellis' extension; left out while schedulable, so
    /// wasmCloud tools see the inventory they know).
    #[serde(default, skip_serializing_if = "Schedule::is_schedulable")]
    pub schedule: Schedule,
    /// Trellis' extension: how much the host runs, and a digest of it. Heartbeats always carry
    /// it, and leave the lists out (`listed: false`) when they would outgrow
    /// [`HEARTBEAT_BUDGET`]; paged `host.get` replies carry it so the client can check what it
    /// put together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<InventorySummary>,
}

/// The largest heartbeat with its component and provider lists: past it a heartbeat carries
/// counts and a digest only ([`InventorySummary`]), and the lists are read with `host.get`
/// (paged). About 400 components fit.
pub const HEARTBEAT_BUDGET: usize = 128 * 1024;

/// Counts and a digest of a host's inventory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct InventorySummary {
    /// How many components the host runs.
    pub components: usize,
    /// How many providers it runs.
    pub providers: usize,
    /// SHA-256 (lower-case hex) of the JSON of every component description, then every
    /// provider description, in id order: it changes when anything the host runs does.
    pub digest: String,
    /// Whether `components` and `providers` of this message list them all.
    pub listed: bool,
}

impl InventorySummary {
    /// The summary of `components` and `providers` (each in id order).
    pub fn of(components: &[ComponentDescription], providers: &[ProviderDescription], listed: bool) -> Self {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        for c in components {
            hash.update(serde_json::to_vec(c).unwrap_or_default());
        }
        for p in providers {
            hash.update(serde_json::to_vec(p).unwrap_or_default());
        }
        let digest = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Self { components: components.len(), providers: providers.len(), digest, listed }
    }
}

/// Whether a host takes new work: Trellis' own control extension
/// (`host.cordon|uncordon|drain.{host_id}`), reported in [`HostInventory::schedule`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Takes new placements and auctions.
    #[default]
    Schedulable,
    /// Keeps what it runs, gets no new placements, bids in no auction.
    Cordoned,
    /// Cordoned, and the reconciler moves its managed replicas elsewhere (new before old).
    Draining,
    /// Draining, and no managed replica is left on it.
    Drained,
}

impl Schedule {
    /// Whether new placements may land on the host.
    pub fn is_schedulable(&self) -> bool {
        *self == Schedule::Schedulable
    }

    /// Whether the reconciler should move the host's managed replicas away.
    pub fn is_draining(&self) -> bool {
        matches!(self, Schedule::Draining | Schedule::Drained)
    }

    /// The lower-case name, as on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Schedule::Schedulable => "schedulable",
            Schedule::Cordoned => "cordoned",
            Schedule::Draining => "draining",
            Schedule::Drained => "drained",
        }
    }
}

/// The answer to `host.cordon|uncordon|drain.{host}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct HostScheduleReply {
    /// The host.
    pub host_id: String,
    /// Its state now.
    pub schedule: Schedule,
}

/// `host.stop.{host}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct StopHostCommand {
    /// The host to stop.
    pub host_id: String,
    /// How long to wait for in-flight work, in milliseconds.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// `component.auction`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ComponentAuctionRequest {
    /// The component's image reference.
    pub component_ref: String,
    /// The id it would run under.
    pub component_id: String,
    /// Labels a host must carry, all of them, with these values.
    #[serde(default)]
    pub constraints: StringMap,
}

/// A host's bid in a component auction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ComponentAuctionAck {
    /// Echo of the request.
    pub component_ref: String,
    /// Echo of the request.
    pub component_id: String,
    /// The bidding host.
    pub host_id: String,
    /// Echo of the request.
    #[serde(default)]
    pub constraints: StringMap,
}

/// `provider.auction`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ProviderAuctionRequest {
    /// The provider's reference.
    pub provider_ref: String,
    /// The id it would run under.
    pub provider_id: String,
    /// Labels a host must carry.
    #[serde(default)]
    pub constraints: StringMap,
}

/// A host's bid in a provider auction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ProviderAuctionAck {
    /// Echo of the request.
    pub provider_ref: String,
    /// Echo of the request.
    pub provider_id: String,
    /// The bidding host.
    pub host_id: String,
    /// Echo of the request.
    #[serde(default)]
    pub constraints: StringMap,
}

/// `component.scale.{host}`: run `component_ref` as `component_id` with at most
/// `max_instances` concurrent instances; 0 stops it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ScaleComponentCommand {
    /// Where to load the component from (`file://…`).
    pub component_ref: String,
    /// The id to run it under.
    pub component_id: String,
    /// Annotations to attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<StringMap>,
    /// The concurrency limit; 0 stops the component. `count` is accepted as an alias.
    #[serde(default, alias = "count")]
    pub max_instances: u32,
    /// Per-component limits (`max_linear_memory_bytes`, `max_execution_time_ms`) over the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_limits: Option<StringMap>,
    /// The host the command is for.
    pub host_id: String,
    /// Named config to give the component.
    #[serde(default)]
    pub config: Vec<String>,
    /// Whether a different ref may replace a running one.
    #[serde(default)]
    pub allow_update: bool,
}

/// `component.update.{host}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct UpdateComponentCommand {
    /// The running component.
    pub component_id: String,
    /// The reference to switch to.
    pub new_component_ref: String,
    /// The host the command is for.
    pub host_id: String,
    /// New annotations, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<StringMap>,
}

/// `provider.start.{host}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct StartProviderCommand {
    /// The id to run it under.
    pub provider_id: String,
    /// Where to start it from (`file://…` or `builtin://…`).
    pub provider_ref: String,
    /// The host the command is for.
    pub host_id: String,
    /// Named config to give it.
    #[serde(default)]
    pub config: Vec<String>,
    /// Annotations to attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<StringMap>,
}

/// `provider.stop.{host}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct StopProviderCommand {
    /// The host the command is for.
    pub host_id: String,
    /// The provider to stop.
    pub provider_id: String,
}

/// `label.put.{host}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct HostLabel {
    /// The label key; `hostcore.*` keys are refused.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// `label.del.{host}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct HostLabelIdentifier {
    /// The label key.
    pub key: String,
}

/// The link name of a link that names none (wasmCloud's default).
pub const DEFAULT_LINK_NAME: &str = "default";

fn default_link_name() -> String {
    DEFAULT_LINK_NAME.to_string()
}

/// A link: `source_id` may call `interfaces` of `wit_namespace:wit_package` on `target`,
/// under the link name `name`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Link {
    /// The calling component or provider.
    pub source_id: String,
    /// The called component or provider.
    pub target: String,
    /// The link name (`default` unless given).
    #[serde(default = "default_link_name")]
    pub name: String,
    /// e.g. `wasi`.
    pub wit_namespace: String,
    /// e.g. `http`.
    pub wit_package: String,
    /// e.g. `["incoming-handler"]`.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Named config the source sees for this link.
    #[serde(default)]
    pub source_config: Vec<String>,
    /// Named config the target sees for this link.
    #[serde(default)]
    pub target_config: Vec<String>,
}

/// `link.del`: identifies links by source, package and name (every target).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct DeleteLinkRequest {
    /// The source of the links to delete.
    pub source_id: String,
    /// The link name.
    #[serde(default = "default_link_name")]
    pub name: String,
    /// The WIT namespace.
    pub wit_namespace: String,
    /// The WIT package.
    pub wit_package: String,
}

impl Link {
    /// The slot this link fills: its source, package and link name. The registry holds one
    /// target per slot and interface, and `link.del` removes a whole slot.
    pub fn slot(&self) -> DeleteLinkRequest {
        DeleteLinkRequest {
            source_id: self.source_id.clone(),
            name: self.name.clone(),
            wit_namespace: self.wit_namespace.clone(),
            wit_package: self.wit_package.clone(),
        }
    }

    /// Whether `other` fills the same slot (see [`Link::slot`]).
    pub fn same_slot(&self, other: &Link) -> bool {
        self.source_id == other.source_id && self.name == other.name && self.wit_namespace == other.wit_namespace && self.wit_package == other.wit_package
    }

    /// Whether `other` is the same link: the same slot and target (one registry key,
    /// [`crate::state::link_key`]), whatever its interfaces and config.
    pub fn same_target(&self, other: &Link) -> bool {
        self.same_slot(other) && self.target == other.target
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_matches_reference() {
        let ok = serde_json::to_value(CtlResponse::ok(vec![1])).unwrap();
        assert_eq!(ok, json!({"success": true, "message": "", "response": [1]}));
        let ack = serde_json::to_value(CtlResponse::ack()).unwrap();
        assert_eq!(ack, json!({"success": true, "message": ""}));
        let err: CtlResponse<()> = serde_json::from_value(json!({"success": false, "message": "no"})).unwrap();
        assert_eq!(err, CtlResponse::error("no"));
    }

    #[test]
    fn scale_accepts_reference_json_and_count_alias() {
        let from_ref: ScaleComponentCommand = serde_json::from_value(json!({
            "component_ref": "file:///x.wasm", "component_id": "hello", "count": 4,
            "host_id": "NABC", "config": ["c1"], "allow_update": true, "annotations": {"a": "b"}
        }))
        .unwrap();
        assert_eq!(from_ref.max_instances, 4);
        assert_eq!(from_ref.config, vec!["c1"]);
        let out = serde_json::to_value(&from_ref).unwrap();
        assert_eq!(out["max_instances"], 4);
        assert_eq!(out["component_ref"], "file:///x.wasm");
    }

    #[test]
    fn link_defaults_name_and_round_trips() {
        let v = json!({"source_id": "http", "target": "hello", "wit_namespace": "wasi", "wit_package": "http",
                       "interfaces": ["incoming-handler"], "source_config": ["addr"], "target_config": []});
        let link: Link = serde_json::from_value(v).unwrap();
        assert_eq!(link.name, "default");
        let back = serde_json::to_value(&link).unwrap();
        assert_eq!(back["name"], "default");
        assert_eq!(back["source_config"], json!(["addr"]));
    }

    #[test]
    fn host_and_inventory_field_names() {
        let h: Host = serde_json::from_value(json!({
            "id": "NX", "friendly_name": "bold-dew-1", "labels": {"zone": "edge"}, "lattice": "default",
            "uptime_seconds": 3, "uptime_human": "3s", "version": "0.1.0", "ctl_host": "nats://x",
            "rpc_host": "nats://x", "js_domain": null
        }))
        .unwrap();
        assert_eq!(h.labels["zone"], "edge");
        let inv = HostInventory {
            host_id: "NX".into(),
            components: vec![ComponentDescription { id: "c".into(), image_ref: "file:///c".into(), max_instances: 2, ..Default::default() }],
            ..Default::default()
        };
        let v = serde_json::to_value(inv).unwrap();
        for f in ["host_id", "friendly_name", "labels", "version", "uptime_human", "uptime_seconds", "components", "providers"] {
            assert!(v.get(f).is_some(), "missing {f}");
        }
        assert_eq!(v["components"][0]["max_instances"], 2);
        assert_eq!(v["components"][0]["image_ref"], "file:///c");
    }

    #[test]
    fn pages_fit_the_budget_hold_at_least_one_item_and_name_the_next() {
        let items: Vec<(String, String)> = (0..10).map(|i| (format!("k{i}"), "x".repeat(100))).collect();
        let (page1, next) = page(items.iter().map(|(k, v)| (k.as_str(), v)), 350);
        assert_eq!(page1.len(), 3, "three 103-byte items fit in 350 bytes");
        assert_eq!(next.as_deref(), Some("k2"));
        let (all, next) = page(items.iter().map(|(k, v)| (k.as_str(), v)), 1 << 20);
        assert_eq!((all.len(), next), (10, None));
        let (one, next) = page(items.iter().map(|(k, v)| (k.as_str(), v)), 10);
        assert_eq!((one.len(), next.as_deref()), (1, Some("k0")), "an item larger than the budget still goes alone");
        let small = serde_json::to_value(CtlResponse::ok(vec![1])).unwrap();
        assert!(small.get("next").is_none() && small.get("unreadable").is_none(), "a one-page reply is wasmCloud's exactly: {small}");
    }

    #[test]
    fn malformed_json_is_an_error_not_a_panic() {
        assert!(serde_json::from_slice::<ScaleComponentCommand>(b"{\"component_ref\": 5").is_err());
        assert!(serde_json::from_slice::<Link>(b"{}").is_err());
        assert!(serde_json::from_slice::<HostLabel>(&[0xff, 0xfe]).is_err());
    }
}

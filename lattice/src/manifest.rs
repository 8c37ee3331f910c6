//! App manifests: wadm's OAM format (`core.oam.dev/v1beta1`, kind `Application`), with the
//! reference's field names (protocol reference, section 5).
//!
//! [`Manifest::parse`] reads YAML or JSON and reports *every* mistake at once, each naming the
//! field by its path (`spec.components[2].traits[0].properties.spread[1].weight: must be a
//! positive integer …`) and saying what is expected. It parses the text to a generic tree
//! first, then walks it with a path-tracking validator that builds the typed [`Manifest`], so
//! ill-typed fields, unknown fields and semantic mistakes (a link to a component the manifest
//! does not have, two definitions of one config…) all land in one list.
//!
//! ```
//! use trellis_lattice::manifest::Manifest;
//! let err = Manifest::parse("apiVersion: core.oam.dev/v1beta1\nkind: Aplication\n").unwrap_err();
//! assert_eq!(err.errors()[0].path, "kind");
//! assert!(err.to_string().starts_with("kind: must be `Application`"));
//! ```
//!
//! The typed manifest serializes (serde) to the same format; read it back with
//! [`Manifest::parse`], which accepts JSON too. Helpers for whoever acts on a manifest:
//! [`default_component_id`], [`spread_counts`], [`managed_annotations`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::artifact::ArtifactRef;
use saphyr_parser::{Event, Parser, ScalarStyle, Tag};
use serde::Serialize;

/// The only `apiVersion` accepted.
pub const API_VERSION: &str = "core.oam.dev/v1beta1";
/// The only `kind` accepted.
pub const KIND: &str = "Application";
/// The annotation holding an application's version (`metadata.annotations.version`).
pub const VERSION_ANNOTATION: &str = "version";
/// The annotation holding an application's description.
pub const DESCRIPTION_ANNOTATION: &str = "description";
/// The annotation every component, provider, link and config an app controller starts carries…
pub const MANAGED_BY_ANNOTATION: &str = "wasmcloud.dev/managed-by";
/// …with this value, as in wadm.
pub const MANAGED_BY_VALUE: &str = "wadm";
/// The annotation naming the application that owns it.
pub const APP_SPEC_ANNOTATION: &str = "wasmcloud.dev/appspec";
/// The weight of a spread that gives none.
pub const DEFAULT_WEIGHT: u32 = 100;
/// The link name of a link trait that gives none: the lattice's default link name.
pub use crate::ctl::DEFAULT_LINK_NAME;
/// The largest manifest text accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// At most this many mistakes are listed; a last entry counts the rest.
pub const MAX_ERRORS: usize = 100;
/// YAML and JSON nested deeper than this are refused (no manifest comes close).
pub const MAX_DEPTH: usize = 64;
/// The size of a document once YAML aliases are expanded (values plus bytes of text) is
/// limited to this, so a small file cannot expand into a huge one.
pub const MAX_EXPANDED_SIZE: usize = 4 << 20;

/// String maps: annotations, labels, config properties, spread requirements.
pub type StringMap = BTreeMap<String, String>;

/// An application manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// Always [`API_VERSION`].
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Always [`KIND`].
    pub kind: String,
    /// The application's name, version and description.
    pub metadata: Metadata,
    /// What the application is made of.
    pub spec: Spec,
}

/// `metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// The application name (letters, digits, `_`, `-`).
    pub name: String,
    /// Annotations, among them [`VERSION_ANNOTATION`] and [`DESCRIPTION_ANNOTATION`]. Always
    /// serialised: wadm-types' `Metadata` requires it.
    #[serde(default)]
    pub annotations: StringMap,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: StringMap,
}

/// `spec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    /// The components and capability providers, at least one, with unique names.
    pub components: Vec<Component>,
    /// Policies that components' secrets name (wadm's `spec.policies`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Policy>,
}

/// The type of a policy that names a secrets backend.
pub const SECRET_POLICY_TYPE: &str = "policy.secret.wasmcloud.dev/v1alpha1";

/// One entry of `spec.policies`: a named set of properties; a [`SECRET_POLICY_TYPE`] policy
/// names the secrets backend (`backend`) of the secrets that refer to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Its name, what secrets name.
    pub name: String,
    /// Its type, e.g. [`SECRET_POLICY_TYPE`].
    #[serde(rename = "type")]
    pub ty: String,
    /// Its properties (always serialised: wadm-types' `Policy` requires them).
    #[serde(default)]
    pub properties: StringMap,
}

/// One entry of a component's `properties.secrets`: the secret the component reads as `name`
/// is `key` (and `field`, `version`) in the backend of policy `policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretProperty {
    /// The name the component asks for.
    pub name: String,
    /// Where it comes from.
    pub properties: SecretSource,
}

/// `properties` of a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretSource {
    /// The policy (of [`SECRET_POLICY_TYPE`]) naming the backend.
    pub policy: String,
    /// The key in the backend.
    pub key: String,
    /// A field within the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A version; the latest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One entry of `spec.components`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Component {
    /// Its name in the manifest (what link targets name).
    pub name: String,
    /// Component or capability provider.
    #[serde(rename = "type")]
    pub kind: ComponentType,
    /// Image, id and config.
    pub properties: Properties,
    /// At most one scaler, and links whose source it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traits: Vec<Trait>,
}

/// `type` of a component entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentType {
    /// A WebAssembly component.
    Component,
    /// A capability provider.
    Capability,
}

impl ComponentType {
    /// `component` or `capability`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Component => "component",
            Self::Capability => "capability",
        }
    }
}

/// `properties` of a component entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Properties {
    /// `file://PATH`, `builtin://NAME` (providers only) or an OCI reference.
    pub image: String,
    /// The id to run it under; [`default_component_id`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Named config given to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<ConfigProperty>,
    /// Secrets it may read (a component through `wasmcloud:secrets`, a provider through its
    /// host data).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretProperty>,
}

/// A named config in a manifest: a reference to config that exists, or (with `properties`)
/// config the application defines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigProperty {
    /// The config name.
    pub name: String,
    /// Its values, when the manifest defines them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<StringMap>,
}

/// One entry of a component's `traits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "properties")]
pub enum Trait {
    /// `spreadscaler`: `instances` spread over hosts by label requirements and weights.
    #[serde(rename = "spreadscaler")]
    SpreadScaler(Scaler),
    /// `daemonscaler`: `instances` on every eligible host.
    #[serde(rename = "daemonscaler")]
    DaemonScaler(Scaler),
    /// `link`: the component is the source of this link.
    #[serde(rename = "link")]
    Link(Link),
}

impl Trait {
    /// The trait's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::SpreadScaler(_) => "spreadscaler",
            Self::DaemonScaler(_) => "daemonscaler",
            Self::Link(_) => "link",
        }
    }
}

/// The properties of `spreadscaler` and `daemonscaler`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scaler {
    /// How many instances (in all, or per host for a daemonscaler).
    pub instances: u32,
    /// Where they go; empty means any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spread: Vec<Spread>,
}

impl Scaler {
    /// How many instances each entry of `spread` gets ([`spread_counts`]); empty without spread.
    pub fn spread_counts(&self) -> Vec<u32> {
        let weights: Vec<u32> = self.spread.iter().map(|s| s.weight).collect();
        spread_counts(self.instances, &weights)
    }
}

/// One entry of a scaler's `spread`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spread {
    /// Its name (unique within the scaler).
    pub name: String,
    /// Labels a host must carry, with these values.
    #[serde(default)]
    pub requirements: StringMap,
    /// Its share of the instances, relative to the other entries ([`DEFAULT_WEIGHT`] when absent).
    pub weight: u32,
}

/// The properties of a `link` trait (the component carrying it is the source).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// WIT namespace, e.g. `wasi`.
    pub namespace: String,
    /// WIT package, e.g. `keyvalue`.
    pub package: String,
    /// Interfaces of the package, at least one.
    pub interfaces: Vec<String>,
    /// The link name; [`DEFAULT_LINK_NAME`] when absent (see [`Link::link_name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Config the source sees for this link.
    #[serde(default, skip_serializing_if = "LinkSource::is_empty")]
    pub source: LinkSource,
    /// The component called, and config it sees for this link.
    pub target: LinkTarget,
}

impl Link {
    /// The link name, [`DEFAULT_LINK_NAME`] when not given.
    pub fn link_name(&self) -> &str {
        self.name.as_deref().unwrap_or(DEFAULT_LINK_NAME)
    }
}

/// `source` of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct LinkSource {
    /// Named config for the source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<ConfigProperty>,
}

impl LinkSource {
    /// Whether it says nothing.
    pub fn is_empty(&self) -> bool {
        self.config.is_empty()
    }
}

/// `target` of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkTarget {
    /// The `name` of a component of the same manifest.
    pub name: String,
    /// Named config for the target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<ConfigProperty>,
}

impl Manifest {
    /// Parses and validates a manifest in YAML or JSON; on failure, every mistake found.
    pub fn parse(text: &str) -> Result<Manifest, ManifestErrors> {
        let root = load(text).map_err(|e| ManifestErrors(vec![e]))?;
        let mut walker = Walker::default();
        let manifest = walker.root(&root);
        match manifest {
            Some(m) if walker.errors.is_empty() => Ok(m),
            _ => Err(walker.finish()),
        }
    }

    /// The application name.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The `version` annotation, if any.
    pub fn version(&self) -> Option<&str> {
        self.metadata.annotations.get(VERSION_ANNOTATION).map(String::as_str)
    }

    /// The `description` annotation, if any.
    pub fn description(&self) -> Option<&str> {
        self.metadata.annotations.get(DESCRIPTION_ANNOTATION).map(String::as_str)
    }

    /// The component entry named `name`.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.spec.components.iter().find(|c| c.name == name)
    }

    /// The id `component` runs under: its `properties.id`, else [`default_component_id`].
    pub fn component_id(&self, component: &Component) -> String {
        match &component.properties.id {
            Some(id) => id.clone(),
            None => default_component_id(&self.metadata.name, &component.name),
        }
    }

    /// Every link, with the component that is its source.
    pub fn links(&self) -> impl Iterator<Item = (&Component, &Link)> {
        self.spec.components.iter().flat_map(|c| c.links().map(move |l| (c, l)))
    }
}

impl Component {
    /// Its scaler trait, if any (there is at most one).
    pub fn scaler(&self) -> Option<&Trait> {
        self.traits.iter().find(|t| matches!(t, Trait::SpreadScaler(_) | Trait::DaemonScaler(_)))
    }

    /// Its link traits.
    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.traits.iter().filter_map(|t| match t {
            Trait::Link(l) => Some(l),
            _ => None,
        })
    }
}

/// The id of a component that gives no `properties.id`, as wadm computes it: `{app}-{component}`,
/// each part lower-cased with every character other than an ASCII letter or digit turned into `_`.
///
/// ```
/// assert_eq!(trellis_lattice::manifest::default_component_id("http-kv-counter", "counter"), "http_kv_counter-counter");
/// ```
pub fn default_component_id(app: &str, component: &str) -> String {
    let clean = |s: &str| s.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect::<String>();
    format!("{}-{}", clean(app), clean(component))
}

/// The annotations of everything an app controller starts for application `app`:
/// [`MANAGED_BY_ANNOTATION`]`=`[`MANAGED_BY_VALUE`] and [`APP_SPEC_ANNOTATION`]`=app`.
pub fn managed_annotations(app: &str) -> StringMap {
    StringMap::from([(MANAGED_BY_ANNOTATION.to_string(), MANAGED_BY_VALUE.to_string()), (APP_SPEC_ANNOTATION.to_string(), app.to_string())])
}

/// How many of `instances` each spread gets: `instances × weight / Σweights`, rounded down,
/// then the instances left over handed out one by one, to the spreads with the largest
/// remainders first (ties: in order). The counts always add up to `instances` (unless every
/// weight is 0: then all are 0). No weights, no counts.
///
/// ```
/// use trellis_lattice::manifest::spread_counts;
/// assert_eq!(spread_counts(6, &[2, 1]), [4, 2]);
/// assert_eq!(spread_counts(7, &[1, 1, 1]), [3, 2, 2]);
/// ```
pub fn spread_counts(instances: u32, weights: &[u32]) -> Vec<u32> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return vec![0; weights.len()];
    }
    let mut counts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (i, &w) in weights.iter().enumerate() {
        let exact = u64::from(instances) * u64::from(w);
        // exact / total ≤ instances, so it fits.
        counts.push(u32::try_from(exact / total).unwrap_or(instances));
        remainders.push((exact % total, i));
    }
    let given: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    let left = u64::from(instances).saturating_sub(given);
    // Largest remainder first; a stable sort keeps ties in spread order.
    remainders.sort_by_key(|&(remainder, _)| std::cmp::Reverse(remainder));
    for &(_, i) in remainders.iter().take(usize::try_from(left).unwrap_or(usize::MAX)) {
        counts[i] += 1;
    }
    counts
}

/// One mistake in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestError {
    /// The field, e.g. `spec.components[2].traits[0].properties.spread[1].weight`; empty for
    /// mistakes about the whole text (syntax, size).
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
    /// The line (from 1) in YAML input, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Every mistake found in a manifest (at least one); displays one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestErrors(Vec<ManifestError>);

impl ManifestErrors {
    /// The mistakes, in the order found (document order, then cross-checks).
    pub fn errors(&self) -> &[ManifestError] {
        &self.0
    }

    /// The mistakes, owned.
    pub fn into_vec(self) -> Vec<ManifestError> {
        self.0
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true (there is at least one); for clippy.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

// ---------------------------------------------------------------------------------------------
// The generic tree: what YAML and JSON both parse to.

#[derive(Debug, Clone)]
struct Node {
    value: Value,
    /// 1-based line in YAML; 0 when unknown (JSON).
    line: usize,
    /// The source text of a non-string scalar (`1.0`, `true`, `~`), for messages.
    raw: Option<Box<str>>,
}

#[derive(Debug, Clone)]
enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone)]
struct Key {
    name: String,
    line: usize,
}

impl Node {
    fn new(value: Value, line: usize) -> Self {
        Self { value, line, raw: None }
    }

    fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// What it is, for messages: `the number \`1.0\``, `a list`, ….
    fn describe(&self) -> String {
        let raw = |fallback: String| self.raw.as_deref().map(str::to_string).unwrap_or(fallback);
        match &self.value {
            Value::Null => "nothing".into(),
            Value::Bool(b) => format!("the boolean `{}`", raw(b.to_string())),
            Value::Int(i) => format!("the number `{}`", raw(i.to_string())),
            Value::Float(x) => format!("the number `{}`", raw(format!("{x:?}"))),
            Value::Str(s) => format!("the string {}", quote(s)),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a map".into(),
        }
    }

    /// The text of a scalar that is not a string, to suggest quoting it.
    fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Bool(b) => Some(self.raw.as_deref().map(str::to_string).unwrap_or_else(|| b.to_string())),
            Value::Int(i) => Some(self.raw.as_deref().map(str::to_string).unwrap_or_else(|| i.to_string())),
            Value::Float(x) => Some(self.raw.as_deref().map(str::to_string).unwrap_or_else(|| format!("{x:?}"))),
            _ => None,
        }
    }
}

/// `value` in backticks, shortened when long, with control characters escaped.
fn quote(value: &str) -> String {
    const MAX: usize = 60;
    let mut s: String = value.chars().take(MAX).flat_map(char::escape_debug).collect();
    if value.chars().count() > MAX {
        s.push('…');
    }
    format!("`{s}`")
}

/// `s` with control characters escaped, so a message stays on one line.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect()
}

/// Parses `text` (YAML, or JSON when it starts with `{`) to the generic tree.
fn load(text: &str) -> Result<Node, ManifestError> {
    let whole = |message: String, line: Option<usize>| ManifestError { path: String::new(), message, line };
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(whole(format!("the manifest is {} bytes long; the limit is {MAX_MANIFEST_BYTES}", text.len()), None));
    }
    let body = text.trim_start_matches('\u{feff}');
    if body.trim_start().starts_with('{') {
        let json_error = match load_json(body) {
            Ok(node) => return Ok(node),
            Err(e) => e,
        };
        // A flow-style YAML map (`{apiVersion: …}`) is not JSON but is fine; if it is neither,
        // the JSON error is the one that helps.
        return load_yaml(body).map_err(|_| whole(format!("not valid JSON: {json_error}"), Some(json_error.line()).filter(|&l| l > 0)));
    }
    load_yaml(body)
}

fn load_json(text: &str) -> Result<Node, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let node = serde::Deserialize::deserialize(&mut de)?;
    de.end()?;
    Ok(node)
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> serde::de::Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::new(Value::Bool(v), 0))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::new(Value::Int(v), 0))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Node::new(Value::Int(i), 0),
            Err(_) => Node { value: Value::Float(v as f64), line: 0, raw: Some(v.to_string().into()) },
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::new(Value::Float(v), 0))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::new(Value::Str(v.to_string()), 0))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::new(Value::Str(v), 0))
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::new(Value::Null, 0))
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::new(Value::Null, 0))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::new(Value::Seq(items), 0))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value()?;
            entries.push((Key { name, line: 0 }, value));
        }
        Ok(Node::new(Value::Map(entries), 0))
    }
}

/// A collection being built from YAML events.
enum Frame {
    Seq { anchor: usize, line: usize, size: usize, items: Vec<Node> },
    Map { anchor: usize, line: usize, size: usize, entries: Vec<(Key, Node)>, key: Option<Key> },
}

/// Builds the tree from saphyr's events, without recursion, with limits on depth and on the
/// size after alias expansion.
#[derive(Default)]
struct YamlBuilder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    expanded: usize,
}

fn load_yaml(text: &str) -> Result<Node, ManifestError> {
    let fail = |message: String, line: usize| ManifestError { path: String::new(), message, line: Some(line).filter(|&l| l > 0) };
    let mut parser = Parser::new_from_str(text);
    let mut b = YamlBuilder::default();
    let mut documents = 0;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| {
            fail(format!("not valid YAML: {} (line {}, column {})", printable(e.info()), e.marker().line(), e.marker().col() + 1), e.marker().line())
        })?;
        let line = span.start.line();
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(fail("the file holds more than one YAML document; give one application per file".into(), line));
                }
            }
            Event::Alias(id) => {
                let Some((node, size)) = b.anchors.get(&id) else {
                    return Err(fail("an alias names an anchor that is not defined before it".into(), line));
                };
                let (node, size) = (node.clone(), *size);
                b.add(node, size).map_err(|m| fail(m, line))?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let node = scalar(&text, style, tag.as_deref(), line).map_err(|m| fail(m, line))?;
                let size = 1 + text.len();
                b.remember(anchor, &node, size);
                b.add(node, size).map_err(|m| fail(m, line))?;
            }
            Event::SequenceStart(anchor, tag) => b.open(false, anchor, tag.as_deref(), line).map_err(|m| fail(m, line))?,
            Event::MappingStart(anchor, tag) => b.open(true, anchor, tag.as_deref(), line).map_err(|m| fail(m, line))?,
            Event::SequenceEnd | Event::MappingEnd => {
                let (anchor, node, size) = match b.stack.pop() {
                    Some(Frame::Seq { anchor, line, size, items }) => (anchor, Node::new(Value::Seq(items), line), size),
                    Some(Frame::Map { anchor, line, size, entries, .. }) => (anchor, Node::new(Value::Map(entries), line), size),
                    None => return Err(fail("unbalanced YAML".into(), line)),
                };
                b.remember(anchor, &node, size);
                b.add(node, size).map_err(|m| fail(m, line))?;
            }
        }
    }
    match b.root {
        Some(root) if !root.is_null() => Ok(root),
        _ => Err(fail(format!("the manifest is empty; expected `apiVersion: {API_VERSION}`, `kind: {KIND}`, `metadata` and `spec`"), 0)),
    }
}

impl YamlBuilder {
    /// Starts a list or a map.
    fn open(&mut self, is_map: bool, anchor: usize, tag: Option<&Tag>, line: usize) -> Result<(), String> {
        if let Some(tag) = tag {
            let want = if is_map { "map" } else { "seq" };
            let allowed = (tag.is_yaml_core_schema() && tag.suffix == want) || (tag.handle == "!" && tag.suffix.is_empty());
            if !allowed {
                return Err(format!("the YAML tag `{tag}` is not supported"));
            }
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!("nested more than {MAX_DEPTH} levels deep"));
        }
        self.stack.push(if is_map {
            Frame::Map { anchor, line, size: 1, entries: Vec::new(), key: None }
        } else {
            Frame::Seq { anchor, line, size: 1, items: Vec::new() }
        });
        Ok(())
    }

    fn remember(&mut self, anchor: usize, node: &Node, size: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
    }

    /// Adds a finished node to the collection being built (as a key or a value), or as the root.
    fn add(&mut self, node: Node, size: usize) -> Result<(), String> {
        self.expanded = self.expanded.saturating_add(size);
        if self.expanded > MAX_EXPANDED_SIZE {
            return Err(format!("the manifest expands (through YAML aliases) to more than {MAX_EXPANDED_SIZE} values and bytes"));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { size: total, items, .. }) => {
                *total = total.saturating_add(size);
                items.push(node);
            }
            Some(Frame::Map { size: total, entries, key, .. }) => {
                *total = total.saturating_add(size);
                match key.take() {
                    Some(k) => entries.push((k, node)),
                    None => {
                        let name = match &node.value {
                            Value::Str(s) => s.clone(),
                            Value::Bool(_) | Value::Int(_) | Value::Float(_) => node.scalar_text().unwrap_or_default(),
                            Value::Null => return Err("a map key is empty (null)".into()),
                            Value::Seq(_) | Value::Map(_) => return Err("a map key is a list or a map; keys must be strings".into()),
                        };
                        *key = Some(Key { name, line: node.line });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Resolves a scalar with YAML 1.2's core schema (plain `true` is a boolean, `1.0` a number,
/// `~` null; anything quoted is a string).
fn scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>, line: usize) -> Result<Node, String> {
    let plain = |value: Value| Node { value, line, raw: Some(text.into()) };
    if let Some(tag) = tag {
        if tag.handle == "!" && tag.suffix.is_empty() {
            return Ok(Node::new(Value::Str(text.to_string()), line));
        }
        if !tag.is_yaml_core_schema() {
            return Err(format!("the YAML tag `{tag}` is not supported"));
        }
        return match tag.suffix.as_str() {
            "str" => Ok(Node::new(Value::Str(text.to_string()), line)),
            "int" => match resolve_plain(text) {
                v @ Value::Int(_) => Ok(plain(v)),
                _ => Err(format!("{} is tagged !!int but is not an integer", quote(text))),
            },
            "float" => match resolve_plain(text) {
                Value::Int(i) => Ok(plain(Value::Float(i as f64))),
                v @ Value::Float(_) => Ok(plain(v)),
                _ => Err(format!("{} is tagged !!float but is not a number", quote(text))),
            },
            "bool" => match resolve_plain(text) {
                v @ Value::Bool(_) => Ok(plain(v)),
                _ => Err(format!("{} is tagged !!bool but is not true or false", quote(text))),
            },
            "null" => Ok(plain(Value::Null)),
            _ => Err(format!("the YAML tag `{tag}` is not supported")),
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(Node::new(Value::Str(text.to_string()), line));
    }
    Ok(match resolve_plain(text) {
        Value::Str(s) => Node::new(Value::Str(s), line),
        v => plain(v),
    })
}

fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let digits = |d: &str, radix: u32| !d.is_empty() && d.chars().all(|c| c.is_digit(radix));
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits(unsigned, 10) {
        return match s.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(s.parse().unwrap_or(f64::INFINITY)),
        };
    }
    for (prefix, radix) in [("0o", 8), ("0x", 16)] {
        if let Some(d) = s.strip_prefix(prefix).filter(|d| digits(d, radix)) {
            return match i64::from_str_radix(d, radix) {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Float(f64::INFINITY),
            };
        }
    }
    // [-+]? (\.[0-9]+ | [0-9]+ (\.[0-9]*)?) ([eE][-+]?[0-9]+)?
    if unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && unsigned.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && let Ok(x) = s.parse::<f64>()
    {
        return Value::Float(x);
    }
    Value::Str(s.to_string())
}

// ---------------------------------------------------------------------------------------------
// The validator: walks the tree, tracking the path, building the typed manifest.

const ROOT_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const METADATA_FIELDS: &[&str] = &["name", "annotations", "labels"];
const SPEC_FIELDS: &[&str] = &["components", "policies"];
const POLICY_FIELDS: &[&str] = &["name", "type", "properties"];
const SECRET_FIELDS: &[&str] = &["name", "properties"];
const SECRET_SOURCE_FIELDS: &[&str] = &["policy", "key", "field", "version"];
const COMPONENT_FIELDS: &[&str] = &["name", "type", "properties", "traits"];
const PROPERTIES_FIELDS: &[&str] = &["image", "id", "config", "secrets"];
const CONFIG_FIELDS: &[&str] = &["name", "properties"];
const TRAIT_FIELDS: &[&str] = &["type", "properties"];
const TRAIT_TYPES: &[&str] = &["spreadscaler", "daemonscaler", "link"];
const SCALER_FIELDS: &[&str] = &["instances", "spread"];
const SPREAD_FIELDS: &[&str] = &["name", "requirements", "weight"];
const LINK_FIELDS: &[&str] = &["namespace", "package", "interfaces", "name", "source", "target"];
const LINK_SOURCE_FIELDS: &[&str] = &["config"];
const LINK_TARGET_FIELDS: &[&str] = &["name", "config"];
const IMAGE_EXPECTED: &str = "file://PATH, builtin://NAME, an OCI reference such as ghcr.io/org/name:1.0, or lattice://NAME:TAG";

fn child(path: &str, key: &str) -> String {
    let plain =
        key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{}]", serde_json::Value::String(key.to_string())),
    }
}

/// An optional field's outcome: absent is fine (`Some(None)`), present and valid is
/// `Some(Some(v))`, present and invalid is `None`.
fn absent_ok<T>(field: Option<Option<T>>) -> Option<Option<T>> {
    match field {
        None => Some(None),
        Some(None) => None,
        Some(Some(v)) => Some(Some(v)),
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The entries of one map, looked up by field name; null counts as absent.
struct Fields<'a> {
    line: usize,
    entries: Vec<(&'a str, &'a Node)>,
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a Node> {
        self.entries.iter().find(|(k, _)| *k == name).map(|(_, n)| *n).filter(|n| !n.is_null())
    }
}

/// A config seen somewhere in the manifest, for the cross-check.
struct ConfigSeen {
    name: String,
    properties: Option<StringMap>,
    path: String,
}

/// A link trait seen, for the cross-checks.
struct LinkSeen {
    /// Index of the source component.
    source: usize,
    trait_index: usize,
    path: String,
    line: usize,
    link: Link,
}

#[derive(Default)]
struct Walker {
    errors: Vec<ManifestError>,
    dropped: usize,
    configs: Vec<ConfigSeen>,
    links: Vec<LinkSeen>,
    /// `spec.policies`, once read: (name, type).
    policies: Vec<(String, String)>,
}

impl Walker {
    fn err(&mut self, path: &str, line: usize, message: impl Into<String>) {
        if self.errors.len() >= MAX_ERRORS {
            self.dropped += 1;
            return;
        }
        self.errors.push(ManifestError { path: path.to_string(), message: message.into(), line: Some(line).filter(|&l| l > 0) });
    }

    fn finish(mut self) -> ManifestErrors {
        if self.errors.is_empty() {
            self.errors.push(ManifestError { path: String::new(), message: "not a valid manifest".into(), line: None });
        }
        if self.dropped > 0 {
            self.errors.push(ManifestError { path: String::new(), message: format!("… and {} more mistakes not listed", self.dropped), line: None });
        }
        ManifestErrors(self.errors)
    }

    /// The fields of the map at `path`, reporting a non-map, duplicate keys and unknown keys.
    fn fields<'a>(&mut self, node: &'a Node, path: &str, known: &[&str], unsupported: &[&str]) -> Option<Fields<'a>> {
        let Value::Map(entries) = &node.value else {
            self.err(path, node.line, format!("must be a map of {}; got {}", known.join(", "), node.describe()));
            return None;
        };
        let mut fields = Fields { line: node.line, entries: Vec::new() };
        for (key, value) in entries {
            let key_path = child(path, &key.name);
            if known.contains(&key.name.as_str()) {
                if fields.entries.iter().any(|(k, _)| *k == key.name) {
                    self.err(&key_path, key.line, "is given twice");
                } else {
                    fields.entries.push((&key.name, value));
                }
            } else if unsupported.contains(&key.name.as_str()) {
                self.err(&key_path, key.line, format!("`{}` is not supported by Trellis yet; remove it", key.name));
            } else {
                let hint = did_you_mean(&key.name, known).map(|s| format!("did you mean `{s}`? ")).unwrap_or_default();
                self.err(&key_path, key.line, format!("unknown field; {hint}expected one of: {}", known.join(", ")));
            }
        }
        Some(fields)
    }

    /// A string field; `expected` says what it should hold, for messages.
    fn string(&mut self, node: &Node, path: &str, expected: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                let quote_hint = node.scalar_text().map(|t| format!(" (quote it: \"{t}\")")).unwrap_or_default();
                self.err(path, node.line, format!("must be a string ({expected}); got {}{quote_hint}", node.describe()));
                None
            }
        }
    }

    fn required_string(&mut self, f: &Fields<'_>, key: &str, path: &str, expected: &str) -> Option<String> {
        let path = child(path, key);
        match f.get(key) {
            Some(node) => self.string(node, &path, expected),
            None => {
                self.err(&path, f.line, format!("missing; expected {expected}"));
                None
            }
        }
    }

    /// The required identifier field `name` of the entry at `path` (a `what`); missing, the
    /// error says `expected`.
    fn required_id(&mut self, f: &Fields<'_>, path: &str, what: &str, expected: &str) -> Option<String> {
        let name_path = child(path, "name");
        match f.get("name") {
            Some(n) => self.id(n, &name_path, what),
            None => {
                self.err(&name_path, f.line, format!("missing; expected {expected}"));
                None
            }
        }
    }

    /// An identifier (letters, digits, `_`, `-`), checked with [`crate::validate_id`].
    fn id(&mut self, node: &Node, path: &str, what: &str) -> Option<String> {
        let s = self.string(node, path, &format!("a {what}: letters, digits, `_` and `-`"))?;
        if s.chars().any(char::is_control) {
            self.err(path, node.line, format!("{what} {} contains control characters; use only letters, digits, `_` and `-`", quote(&s)));
            return None;
        }
        match crate::validate_id(what, &s) {
            Ok(()) => Some(s),
            Err(e) => {
                self.err(path, node.line, e.message().to_string());
                None
            }
        }
    }

    fn positive_int(&mut self, node: &Node, path: &str) -> Option<u32> {
        if let Value::Int(i) = node.value
            && let Ok(n) = u32::try_from(i)
            && n > 0
        {
            return Some(n);
        }
        let hint = match &node.value {
            Value::Str(s) if s.trim().parse::<u32>().is_ok() => " (write it without quotes)",
            _ => "",
        };
        self.err(path, node.line, format!("must be a positive integer (1 to {}); got {}{hint}", u32::MAX, node.describe()));
        None
    }

    fn list<'a>(&mut self, node: &'a Node, path: &str, of: &str) -> Option<&'a [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.err(path, node.line, format!("must be a list of {of}; got {}", node.describe()));
                None
            }
        }
    }

    /// A map of strings to strings (`what` names its keys and values for messages).
    fn string_map(&mut self, node: &Node, path: &str, what: &str) -> Option<StringMap> {
        let Value::Map(entries) = &node.value else {
            self.err(path, node.line, format!("must be a map of {what}; got {}", node.describe()));
            return None;
        };
        let mut map = StringMap::new();
        let mut ok = true;
        for (key, value) in entries {
            let key_path = child(path, &key.name);
            if map.contains_key(&key.name) {
                self.err(&key_path, key.line, "is given twice");
                ok = false;
                continue;
            }
            match self.string(value, &key_path, "a string value") {
                Some(v) => {
                    map.insert(key.name.clone(), v);
                }
                None => ok = false,
            }
        }
        ok.then_some(map)
    }

    fn root(&mut self, node: &Node) -> Option<Manifest> {
        let f = self.fields(node, "", ROOT_FIELDS, &[])?;
        let api_version = self.exact(&f, "apiVersion", API_VERSION);
        let kind = self.exact(&f, "kind", KIND);
        let metadata = match f.get("metadata") {
            Some(n) => self.metadata(n),
            None => {
                self.err("metadata", f.line, "missing; expected a map with the application `name`");
                None
            }
        };
        let app = metadata.as_ref().map(|m| m.name.as_str());
        let spec = match f.get("spec") {
            Some(n) => self.spec(n, app),
            None => {
                self.err("spec", f.line, "missing; expected a map with `components`");
                None
            }
        };
        Some(Manifest { api_version: api_version?, kind: kind?, metadata: metadata?, spec: spec? })
    }

    /// A field that must hold exactly `want`.
    fn exact(&mut self, f: &Fields<'_>, key: &str, want: &str) -> Option<String> {
        let got = self.required_string(f, key, "", &format!("`{want}`"))?;
        if got == want {
            return Some(got);
        }
        let line = f.get(key).map_or(f.line, |n| n.line);
        self.err(key, line, format!("must be `{want}`; got {}", quote(&got)));
        None
    }

    fn metadata(&mut self, node: &Node) -> Option<Metadata> {
        let path = "metadata";
        let f = self.fields(node, path, METADATA_FIELDS, &[])?;
        let name = match f.get("name") {
            Some(n) => self.id(n, "metadata.name", "application name"),
            None => {
                self.err("metadata.name", f.line, "missing; expected the application name (letters, digits, `_` and `-`)");
                None
            }
        };
        let annotations = absent_ok(f.get("annotations").map(|n| self.string_map(n, "metadata.annotations", "annotation names to strings")));
        let labels = absent_ok(f.get("labels").map(|n| self.string_map(n, "metadata.labels", "label names to strings")));
        Some(Metadata { name: name?, annotations: annotations?.unwrap_or_default(), labels: labels?.unwrap_or_default() })
    }

    fn spec(&mut self, node: &Node, app: Option<&str>) -> Option<Spec> {
        let f = self.fields(node, "spec", SPEC_FIELDS, &[])?;
        // Policies first: components' secrets name them.
        let policies = match f.get("policies") {
            Some(n) => self.policies(n, "spec.policies"),
            None => Some(Vec::new()),
        };
        let Some(list_node) = f.get("components") else {
            self.err("spec.components", f.line, "missing; expected a list of components (name, type, properties, traits)");
            return None;
        };
        let items = self.list(list_node, "spec.components", "components (name, type, properties, traits)")?;
        if items.is_empty() {
            self.err("spec.components", list_node.line, "is empty; an application needs at least one component");
            return None;
        }
        // Names and types first, so links can be checked against entries that have other mistakes.
        let names: Vec<Option<(String, Option<ComponentType>)>> = items.iter().map(peek_name_and_type).collect();
        let mut components = Vec::new();
        let mut all_ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.component(item, &index("spec.components", i), i) {
                Some(c) => components.push(c),
                None => all_ok = false,
            }
        }
        self.cross_check(items, &names, app);
        let policies = policies?;
        all_ok.then_some(Spec { components, policies })
    }

    fn policies(&mut self, node: &Node, path: &str) -> Option<Vec<Policy>> {
        let items = self.list(node, path, "policies (name, type, properties)")?;
        let mut out: Vec<Policy> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = index(path, i);
            let Some(f) = self.fields(item, &path, POLICY_FIELDS, &[]) else {
                ok = false;
                continue;
            };
            let name = self.required_id(&f, &path, "policy name", "the policy name (letters, digits, `_` and `-`)");
            let ty = self.required_string(&f, "type", &path, &format!("the policy type, e.g. `{SECRET_POLICY_TYPE}`"));
            let properties = absent_ok(f.get("properties").map(|n| self.string_map(n, &child(&path, "properties"), "policy keys to strings")));
            let (Some(name), Some(ty), Some(properties)) = (name, ty, properties) else {
                ok = false;
                continue;
            };
            let properties = properties.unwrap_or_default();
            if out.iter().any(|p| p.name == name) {
                self.err(&child(&path, "name"), f.line, format!("policy `{name}` is defined twice; policy names must be unique"));
                ok = false;
                continue;
            }
            if ty == SECRET_POLICY_TYPE && properties.get("backend").is_none_or(|b| b.is_empty()) {
                self.err(
                    &child(&path, "properties"),
                    f.line,
                    "a secret policy needs `backend`: the secrets backend to ask (Trellis' built-in one is `nats-kv`)",
                );
                ok = false;
                continue;
            }
            self.policies.push((name.clone(), ty.clone()));
            out.push(Policy { name, ty, properties });
        }
        ok.then_some(out)
    }

    fn secrets(&mut self, node: &Node, path: &str) -> Option<Vec<SecretProperty>> {
        let items = self.list(node, path, "secrets (name, properties: policy, key, field, version)")?;
        let mut out: Vec<SecretProperty> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = index(path, i);
            let Some(f) = self.fields(item, &path, SECRET_FIELDS, &[]) else {
                ok = false;
                continue;
            };
            let name = self.required_id(&f, &path, "secret name", "the name the component reads the secret by");
            let props_path = child(&path, "properties");
            let source = match f.get("properties") {
                Some(n) => self.secret_source(n, &props_path),
                None => {
                    self.err(&props_path, f.line, "missing; expected a map with `policy` and `key`");
                    None
                }
            };
            let (Some(name), Some(properties)) = (name, source) else {
                ok = false;
                continue;
            };
            if out.iter().any(|s| s.name == name) {
                self.err(&child(&path, "name"), f.line, format!("secret `{name}` is listed twice"));
                ok = false;
                continue;
            }
            out.push(SecretProperty { name, properties });
        }
        ok.then_some(out)
    }

    fn secret_source(&mut self, node: &Node, path: &str) -> Option<SecretSource> {
        let f = self.fields(node, path, SECRET_SOURCE_FIELDS, &[])?;
        let policy = self.required_string(&f, "policy", path, "the name of a `spec.policies` entry of type policy.secret.wasmcloud.dev/v1alpha1");
        let key = self.required_string(&f, "key", path, "the secret's key in the backend");
        let field = absent_ok(f.get("field").map(|n| self.string(n, &child(path, "field"), "a field within the secret")));
        let version = absent_ok(f.get("version").map(|n| self.string(n, &child(path, "version"), "a version of the secret")));
        let policy = policy.and_then(|p| match self.policies.iter().find(|(n, _)| *n == p) {
            Some((_, ty)) if ty == SECRET_POLICY_TYPE => Some(p),
            Some((_, ty)) => {
                self.err(&child(path, "policy"), f.line, format!("policy `{p}` is of type `{ty}`; a secret needs one of type `{SECRET_POLICY_TYPE}`"));
                None
            }
            None => {
                let known: Vec<&str> = self.policies.iter().map(|(n, _)| n.as_str()).collect();
                let have = if known.is_empty() { "the manifest defines none".to_string() } else { format!("defined: {}", known.join(", ")) };
                self.err(&child(path, "policy"), f.line, format!("names no policy of `spec.policies` ({have})"));
                None
            }
        });
        Some(SecretSource { policy: policy?, key: key?, field: field?, version: version? })
    }

    fn component(&mut self, node: &Node, path: &str, position: usize) -> Option<Component> {
        let f = self.fields(node, path, COMPONENT_FIELDS, &[])?;
        let name = self.required_string(&f, "name", path, "the component's name in this manifest");
        let name = name.and_then(|n| {
            if !valid_component_name(&n) {
                self.err(&child(path, "name"), f.get("name").map_or(f.line, |n| n.line), "must be 1 to 256 characters, none of them control characters");
                None
            } else {
                Some(n)
            }
        });
        let kind = self.required_string(&f, "type", path, "`component` or `capability`").and_then(|t| match t.as_str() {
            "component" => Some(ComponentType::Component),
            "capability" => Some(ComponentType::Capability),
            other => {
                let hint = match other {
                    "provider" | "capability-provider" | "capability_provider" => " (capability providers are `capability`)".to_string(),
                    _ => did_you_mean(other, &["component", "capability"]).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default(),
                };
                self.err(
                    &child(path, "type"),
                    f.get("type").map_or(f.line, |n| n.line),
                    format!("must be `component` or `capability`; got {}{hint}", quote(other)),
                );
                None
            }
        });
        let properties = match f.get("properties") {
            Some(n) => self.properties(n, &child(path, "properties"), kind),
            None => {
                self.err(&child(path, "properties"), f.line, format!("missing; expected a map with `image` ({IMAGE_EXPECTED})"));
                None
            }
        };
        let traits = match f.get("traits") {
            Some(n) => self.traits(n, &child(path, "traits"), position),
            None => Some(Vec::new()),
        };
        Some(Component { name: name?, kind: kind?, properties: properties?, traits: traits? })
    }

    fn properties(&mut self, node: &Node, path: &str, kind: Option<ComponentType>) -> Option<Properties> {
        let f = self.fields(node, path, PROPERTIES_FIELDS, &["application"])?;
        let image_path = child(path, "image");
        let image = self.required_string(&f, "image", path, IMAGE_EXPECTED).and_then(|image| match check_image(&image, kind) {
            Ok(()) => Some(image),
            Err(message) => {
                self.err(&image_path, f.get("image").map_or(f.line, |n| n.line), message);
                None
            }
        });
        let id = absent_ok(f.get("id").map(|n| self.id(n, &child(path, "id"), "component id")));
        let config = f.get("config").map(|n| self.configs(n, &child(path, "config")));
        let secrets = match f.get("secrets") {
            Some(n) => self.secrets(n, &child(path, "secrets")),
            None => Some(Vec::new()),
        };
        Some(Properties { image: image?, id: id?, config: config.unwrap_or(Some(Vec::new()))?, secrets: secrets? })
    }

    fn configs(&mut self, node: &Node, path: &str) -> Option<Vec<ConfigProperty>> {
        let items = self.list(node, path, "named config (name, properties)")?;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = index(path, i);
            let Some(f) = self.fields(item, &path, CONFIG_FIELDS, &[]) else {
                ok = false;
                continue;
            };
            let name = self.required_id(&f, &path, "config name", "the config name (letters, digits, `_` and `-`)");
            let properties = absent_ok(f.get("properties").map(|n| self.string_map(n, &child(&path, "properties"), "config keys to strings")));
            match (name, properties) {
                (Some(name), Some(properties)) => {
                    self.configs.push(ConfigSeen { name: name.clone(), properties: properties.clone(), path: path.clone() });
                    out.push(ConfigProperty { name, properties });
                }
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn traits(&mut self, node: &Node, path: &str, component: usize) -> Option<Vec<Trait>> {
        let items = self.list(node, path, "traits (type, properties)")?;
        let mut out = Vec::new();
        let mut ok = true;
        let mut scaler: Option<(usize, &'static str)> = None;
        for (i, item) in items.iter().enumerate() {
            let path = index(path, i);
            let Some(f) = self.fields(item, &path, TRAIT_FIELDS, &[]) else {
                ok = false;
                continue;
            };
            let type_path = child(&path, "type");
            let props_path = child(&path, "properties");
            let Some(kind) = self.required_string(&f, "type", &path, "spreadscaler, daemonscaler or link") else {
                ok = false;
                continue;
            };
            let kind: &'static str = match TRAIT_TYPES.iter().find(|t| **t == kind) {
                Some(t) => t,
                None => {
                    let hint = did_you_mean(&kind, TRAIT_TYPES).map(|s| format!("did you mean `{s}`? ")).unwrap_or_default();
                    let line = f.get("type").map_or(f.line, |n| n.line);
                    self.err(&type_path, line, format!("unknown trait type {}; {hint}expected spreadscaler, daemonscaler or link", quote(&kind)));
                    ok = false;
                    continue;
                }
            };
            if kind != "link" {
                if let Some((first, first_kind)) = scaler {
                    let line = f.get("type").map_or(f.line, |n| n.line);
                    self.err(&type_path, line, format!("a second scaler; traits[{first}] is already a {first_kind} (a component has at most one)"));
                    ok = false;
                } else {
                    scaler = Some((i, kind));
                }
            }
            let Some(props) = f.get("properties") else {
                let expected = match kind {
                    "link" => "a map of namespace, package, interfaces, target",
                    _ => "a map with `instances`",
                };
                self.err(&props_path, f.line, format!("missing; expected {expected}"));
                ok = false;
                continue;
            };
            let built = match kind {
                "spreadscaler" => self.scaler(props, &props_path).map(Trait::SpreadScaler),
                "daemonscaler" => self.scaler(props, &props_path).map(Trait::DaemonScaler),
                _ => self.link(props, &props_path).map(|link| {
                    self.links.push(LinkSeen { source: component, trait_index: i, path: props_path.clone(), line: props.line, link: link.clone() });
                    Trait::Link(link)
                }),
            };
            match built {
                Some(t) => out.push(t),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn scaler(&mut self, node: &Node, path: &str) -> Option<Scaler> {
        let f = self.fields(node, path, SCALER_FIELDS, &[])?;
        let instances = match f.get("instances") {
            Some(n) => self.positive_int(n, &child(path, "instances")),
            None => {
                self.err(&child(path, "instances"), f.line, "missing; expected a positive integer");
                None
            }
        };
        let spread = match f.get("spread") {
            Some(n) => self.spreads(n, &child(path, "spread")),
            None => Some(Vec::new()),
        };
        Some(Scaler { instances: instances?, spread: spread? })
    }

    fn spreads(&mut self, node: &Node, path: &str) -> Option<Vec<Spread>> {
        let items = self.list(node, path, "spreads (name, requirements, weight)")?;
        let mut out: Vec<Spread> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = index(path, i);
            let Some(f) = self.fields(item, &path, SPREAD_FIELDS, &[]) else {
                ok = false;
                continue;
            };
            let name = self.required_string(&f, "name", &path, "the spread's name").and_then(|name| {
                let line = f.get("name").map_or(f.line, |n| n.line);
                if name.is_empty() {
                    self.err(&child(&path, "name"), line, "must not be empty");
                    None
                } else if let Some(j) = out.iter().position(|s| s.name == name) {
                    self.err(&child(&path, "name"), line, format!("spread {} is already spread[{j}]'s name", quote(&name)));
                    None
                } else {
                    Some(name)
                }
            });
            let requirements = match f.get("requirements") {
                Some(n) => self.string_map(n, &child(&path, "requirements"), "label names to the values hosts must carry"),
                None => Some(StringMap::new()),
            };
            let weight = match f.get("weight") {
                Some(n) => self.positive_int(n, &child(&path, "weight")),
                None => Some(DEFAULT_WEIGHT),
            };
            match (name, requirements, weight) {
                (Some(name), Some(requirements), Some(weight)) => out.push(Spread { name, requirements, weight }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn link(&mut self, node: &Node, path: &str) -> Option<Link> {
        let f = self.fields(node, path, LINK_FIELDS, &[])?;
        let namespace = self.required_string(&f, "namespace", path, "a WIT namespace such as `wasi`");
        let namespace = namespace.and_then(|s| self.wit_name(&s, &child(path, "namespace"), f.get("namespace").map_or(f.line, |n| n.line)));
        let package = self.required_string(&f, "package", path, "a WIT package such as `keyvalue`");
        let package = package.and_then(|s| self.wit_name(&s, &child(path, "package"), f.get("package").map_or(f.line, |n| n.line)));
        let interfaces_path = child(path, "interfaces");
        let interfaces = match f.get("interfaces") {
            None => {
                self.err(&interfaces_path, f.line, "missing; expected a list of interfaces of the package, such as [store, atomics]");
                None
            }
            Some(n) => self.list(n, &interfaces_path, "interface names").and_then(|items| {
                if items.is_empty() {
                    self.err(&interfaces_path, n.line, "is empty; name at least one interface of the package, such as [store]");
                    return None;
                }
                let mut out: Vec<String> = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    let p = index(&interfaces_path, i);
                    match self.string(item, &p, "an interface name such as `store`").and_then(|s| self.wit_name(&s, &p, item.line)) {
                        Some(s) if out.contains(&s) => {
                            self.err(&p, item.line, format!("interface {} is listed twice", quote(&s)));
                            ok = false;
                        }
                        Some(s) => out.push(s),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }),
        };
        let name = absent_ok(f.get("name").map(|n| self.id(n, &child(path, "name"), "link name")));
        let source = match f.get("source") {
            Some(n) => {
                let p = child(path, "source");
                self.fields(n, &p, LINK_SOURCE_FIELDS, &["secrets"]).and_then(|sf| match sf.get("config") {
                    Some(c) => self.configs(c, &child(&p, "config")).map(|config| LinkSource { config }),
                    None => Some(LinkSource::default()),
                })
            }
            None => Some(LinkSource::default()),
        };
        let target_path = child(path, "target");
        let target = match f.get("target") {
            Some(n) => {
                if let Value::Str(s) = &n.value {
                    self.err(&target_path, n.line, format!("must be a map of name, config, such as `target: {{name: NAME}}`; got the string {}", quote(s)));
                    None
                } else {
                    self.fields(n, &target_path, LINK_TARGET_FIELDS, &["secrets"]).and_then(|tf| {
                        let name = self.required_string(&tf, "name", &target_path, "the name of the component this link calls");
                        let config = match tf.get("config") {
                            Some(c) => self.configs(c, &child(&target_path, "config")),
                            None => Some(Vec::new()),
                        };
                        Some(LinkTarget { name: name?, config: config? })
                    })
                }
            }
            None => {
                self.err(&target_path, f.line, "missing; expected a map with the `name` of the component this link calls");
                None
            }
        };
        Some(Link { namespace: namespace?, package: package?, interfaces: interfaces?, name: name?, source: source?, target: target? })
    }

    /// A WIT namespace, package or interface name: kebab-case words of letters and digits.
    fn wit_name(&mut self, s: &str, path: &str, line: usize) -> Option<String> {
        let ok =
            !s.is_empty() && s.split('-').all(|w| w.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) && w.chars().all(|c| c.is_ascii_alphanumeric()));
        if ok {
            return Some(s.to_string());
        }
        self.err(path, line, format!("{} is not a WIT name (kebab-case words of letters and digits, such as `incoming-handler`)", quote(s)));
        None
    }

    /// The checks across components: unique names and ids, link targets, link conflicts,
    /// config defined twice. Each uses hash maps: a large manifest must not take quadratic time.
    fn cross_check(&mut self, items: &[Node], names: &[Option<(String, Option<ComponentType>)>], app: Option<&str>) {
        let line_of = |i: usize, key: &str| match &items[i].value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map_or(items[i].line, |(_, n)| n.line),
            _ => items[i].line,
        };
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        let mut duplicate = vec![false; names.len()];
        for (j, entry) in names.iter().enumerate() {
            let Some((name, _)) = entry else { continue };
            match by_name.get(name.as_str()) {
                Some(&i) => {
                    duplicate[j] = true;
                    self.err(
                        &format!("spec.components[{j}].name"),
                        line_of(j, "name"),
                        format!("component name {} is already spec.components[{i}]'s name", quote(name)),
                    );
                }
                None => {
                    by_name.insert(name, j);
                }
            }
        }

        // Ids: explicit, or computed from the application and component names.
        if let Some(app) = app {
            let mut ids: HashMap<String, usize> = HashMap::new();
            for (j, entry) in names.iter().enumerate() {
                let Some((name, _)) = entry else { continue };
                if duplicate[j] {
                    continue;
                }
                let path = format!("spec.components[{j}]");
                let (id, id_path, line, hint) = match peek_id(&items[j]) {
                    Some((id, line)) => (id.to_string(), format!("{path}.properties.id"), line, ""),
                    None => {
                        let id = default_component_id(app, name);
                        if id.len() > 256 {
                            self.err(
                                &format!("{path}.name"),
                                line_of(j, "name"),
                                format!("the component id made from it (`{{app}}-{{name}}`) is {} bytes long; the limit is 256: set properties.id", id.len()),
                            );
                            continue;
                        }
                        (id, format!("{path}.name"), line_of(j, "name"), "; set properties.id to tell them apart")
                    }
                };
                match ids.get(&id) {
                    Some(&i) => self.err(&id_path, line, format!("component id {} is also spec.components[{i}]'s id{hint}", quote(&id))),
                    None => {
                        ids.insert(id, j);
                    }
                }
            }
        }

        // Links: the target is another component of this manifest; a capability calls components
        // only; no two links of one source collide in the registry (same source, namespace,
        // package and link name: the same target replaces, another target may not share an
        // interface).
        let links = std::mem::take(&mut self.links);
        let known: Vec<&str> = names.iter().zip(&duplicate).filter(|(_, dup)| !**dup).filter_map(|(e, _)| e.as_ref().map(|(n, _)| n.as_str())).collect();
        let known_list = if known.len() > 20 { format!("{}, …", known[..20].join(", ")) } else { known.join(", ") };
        // (source, namespace, package, link name, target or interface)
        type SlotKey<'k> = (usize, &'k str, &'k str, &'k str, &'k str);
        let mut same_target: HashMap<SlotKey<'_>, usize> = HashMap::new();
        let mut by_interface: HashMap<SlotKey<'_>, (&str, usize)> = HashMap::new();
        for seen in &links {
            let link = &seen.link;
            let target = link.target.name.as_str();
            let target_path = format!("{}.target.name", seen.path);
            match by_name.get(target) {
                None => {
                    let hint = did_you_mean(target, &known).map(|s| format!("did you mean `{s}`? ")).unwrap_or_default();
                    self.err(&target_path, seen.line, format!("names no component of this manifest: {}; {hint}expected one of: {known_list}", quote(target)));
                }
                Some(&t) if t == seen.source => self.err(&target_path, seen.line, "a component cannot link to itself"),
                Some(&t) => {
                    let source = names.get(seen.source).and_then(Option::as_ref);
                    let target_kind = names[t].as_ref().and_then(|(_, k)| *k);
                    if let (Some((source_name, Some(ComponentType::Capability))), Some(ComponentType::Capability)) = (source, target_kind) {
                        self.err(
                            &target_path,
                            seen.line,
                            format!("capability {} links to capability {}; a capability provider calls components only", quote(source_name), quote(target)),
                        );
                    }
                }
            }
            let slot = (seen.source, link.namespace.as_str(), link.package.as_str(), link.link_name());
            if let Some(&first) = same_target.get(&(slot.0, slot.1, slot.2, slot.3, target)) {
                self.err(
                    &seen.path,
                    seen.line,
                    format!("repeats the link of traits[{first}] (same namespace, package, name and target); list every interface in one link"),
                );
                continue;
            }
            same_target.insert((slot.0, slot.1, slot.2, slot.3, target), seen.trait_index);
            let mut conflict = None;
            for interface in &link.interfaces {
                let key = (slot.0, slot.1, slot.2, slot.3, interface.as_str());
                match by_interface.get(&key) {
                    Some(&(other, first)) if other != target => {
                        conflict.get_or_insert((first, interface));
                    }
                    Some(_) => {}
                    None => {
                        by_interface.insert(key, (target, seen.trait_index));
                    }
                }
            }
            if let Some((first, interface)) = conflict {
                self.err(
                    &seen.path,
                    seen.line,
                    format!(
                        "conflicts with traits[{first}]: both link {}:{}/{interface} under link name `{}`, to different targets; give one another `name`",
                        link.namespace,
                        link.package,
                        link.link_name()
                    ),
                );
            }
        }

        // Config defined twice, differently.
        let configs = std::mem::take(&mut self.configs);
        let mut defined: HashMap<&str, (&StringMap, &str)> = HashMap::new();
        for seen in &configs {
            let Some(props) = &seen.properties else { continue };
            match defined.get(seen.name.as_str()) {
                Some((first, first_path)) if *first != props => self.err(
                    &format!("{}.properties", seen.path),
                    0,
                    format!("config {} is defined with other properties at {first_path}; give one of them another name", quote(&seen.name)),
                ),
                Some(_) => {}
                None => {
                    defined.insert(&seen.name, (props, &seen.path));
                }
            }
        }
    }
}

/// 1 to 256 bytes, no control characters.
fn valid_component_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 256 && !name.chars().any(char::is_control)
}

/// A component entry's `name` and `type`, where they are well-formed, without reporting anything.
fn peek_name_and_type(node: &Node) -> Option<(String, Option<ComponentType>)> {
    let Value::Map(entries) = &node.value else { return None };
    let get = |key: &str| entries.iter().find(|(k, _)| k.name == key).map(|(_, n)| n);
    let Some(Node { value: Value::Str(name), .. }) = get("name") else { return None };
    if !valid_component_name(name) {
        return None;
    }
    let kind = match get("type") {
        Some(Node { value: Value::Str(t), .. }) if t == "component" => Some(ComponentType::Component),
        Some(Node { value: Value::Str(t), .. }) if t == "capability" => Some(ComponentType::Capability),
        _ => None,
    };
    Some((name.clone(), kind))
}

/// A component entry's `properties.id` and its line, if it is a string.
fn peek_id(node: &Node) -> Option<(&str, usize)> {
    fn get<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
        match &node.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, n)| n),
            _ => None,
        }
    }
    let id = get(get(node, "properties")?, "id")?;
    match &id.value {
        Value::Str(s) => Some((s.as_str(), id.line)),
        _ => None,
    }
}

/// Checks an image reference (the forms of [`crate::artifact`]); `builtin://` names capabilities only.
fn check_image(image: &str, kind: Option<ComponentType>) -> Result<(), String> {
    match ArtifactRef::parse(image)? {
        ArtifactRef::Builtin(_) if kind == Some(ComponentType::Component) => {
            Err(format!("{} names a provider built into the host; a component needs {}", quote(image), crate::artifact::EXPECTED))
        }
        _ => Ok(()),
    }
}

/// The known name closest to `got` (a typo or a case slip), if one is close enough.
fn did_you_mean<'a>(got: &str, known: &[&'a str]) -> Option<&'a str> {
    if got.len() > 64 {
        return None;
    }
    let lower = got.to_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_lowercase()), *k))
        .filter(|(d, k)| (*d <= 2.max(k.len() / 4) && *d < k.len()) || (k.len() >= 4 && lower.starts_with(&k.to_lowercase())))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, counting an adjacent transposition as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests;

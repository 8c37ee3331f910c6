//! Component-to-component calls through links, for any interface.
//!
//! - Caller side: [`link_imports`] runs once per component when it is prepared. Every instance
//!   import the host does not provide itself gets one host function per function of the
//!   interface; a call finds the link for (calling component, namespace, package, interface,
//!   the store's link name) in the host's live view and sends the call to the link's target
//!   through [`Outbound`]. There is no link → the call traps with a message that names the
//!   missing link and the `wash link put` that adds it (imports have no error channel of
//!   their own).
//! - Target side: [`Exports`] indexes, at prepare time, the functions a component exports by
//!   interface name without `@version`; `serve.rs` calls them in a fresh store.
//! - Values: [`to_wit`] and [`from_wit`] turn wasmtime's dynamic [`Val`]s into the wire's
//!   [`WitValue`]s and back, checked against the receiver's own types. Resources, futures and
//!   streams belong to one store and are refused, naming the function and parameter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use trellis_lattice::ctl::DEFAULT_LINK_NAME;
use trellis_lattice::rpc::{self, CallInfo, Invocation, Router};
use trellis_lattice::secrets::{SecretReference, SecretValue, SecretsClient};
use trellis_lattice::wit_value::{self, WitValue};
use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, ComponentExportIndex, Linker, ResourceType, Type, Val};

use crate::registry::Registry;
use crate::runtime::{State, provided_by_host};

/// One call a component makes through an import that a link satisfies.
#[derive(Debug, Clone)]
pub struct LinkedCall {
    /// The calling component.
    pub source: Arc<str>,
    /// The link name in force in the caller's store.
    pub link_name: String,
    /// The interface, e.g. `trellis:examples/pingpong` (no version).
    pub interface: InterfaceName,
    /// The interface whose link carries the call, when not `interface` itself (a call of
    /// `trellis:keyvalue/cas` travels over the `wasi:keyvalue/store` link of its bucket).
    pub via: Option<InterfaceName>,
    /// The function.
    pub function: String,
    /// When the caller's execution budget runs out.
    pub deadline: Instant,
    /// The arguments.
    pub args: Vec<WitValue>,
    /// The W3C trace context the caller runs in.
    pub traceparent: Option<Arc<str>>,
}

/// Where linked calls go. In a host, the lattice ([`LatticeLinks`]).
pub trait Outbound: Send + Sync + 'static {
    /// Makes `call`; the error is the message the caller traps with.
    fn call(&self, call: LinkedCall) -> BoxFuture<'static, Result<Vec<WitValue>, String>>;

    /// The named configs `names`, merged in order (later names win), as they are now.
    fn config(&self, names: &[String]) -> trellis_lattice::ctl::StringMap;

    /// Whether a link named `name` from `source` for `interface` exists now.
    fn has_link(&self, source: &str, interface: &InterfaceName, name: &str) -> bool;

    /// Fetches the secret `reference` names from its backend, for `source`; the error names
    /// the secret and the backend, never a value.
    fn secret(&self, source: &str, reference: SecretReference) -> BoxFuture<'static, Result<SecretValue, String>>;

    /// Makes `call` with an encoded `head` (its `args` unused) and a streamed `body`, and
    /// answers the reply's head and body as they come (`wasi:blobstore` object data,
    /// [`crate::blobstore`]). Without an implementation there is no link to carry it.
    fn call_with_body(&self, call: LinkedCall, head: bytes::Bytes, body: rpc::Body) -> BoxFuture<'static, Result<rpc::Response, String>> {
        let _ = (head, body);
        Box::pin(std::future::ready(Err(format!("no link from component `{}` carries `{}`", call.source, call.interface))))
    }

    /// Sends a component's outgoing HTTP request to the target of its
    /// `wasi:http/outgoing-handler` link ([`crate::outgoing`]). Without an implementation
    /// every request is denied as if there were no link.
    fn send_http(&self, call: crate::outgoing::HttpCall) -> BoxFuture<'static, Result<crate::outgoing::HttpAnswer, crate::outgoing::HttpFailure>> {
        let _ = call;
        Box::pin(std::future::ready(Err(crate::outgoing::HttpFailure::NoLink)))
    }
}

/// `namespace:package/interface`, split.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InterfaceName {
    /// e.g. `trellis`.
    pub namespace: String,
    /// e.g. `examples`.
    pub package: String,
    /// e.g. `pingpong`.
    pub interface: String,
}

impl InterfaceName {
    /// Parses `ns:pkg/iface` or `ns:pkg/iface@version`; the version is dropped.
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.split_once('@').map_or(name, |(n, _)| n);
        let (namespace, rest) = name.split_once(':')?;
        let (package, interface) = rest.split_once('/')?;
        if [namespace, package, interface].iter().any(|s| s.is_empty()) {
            return None;
        }
        Some(Self { namespace: namespace.into(), package: package.into(), interface: interface.into() })
    }
}

impl std::fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.namespace, self.package, self.interface)
    }
}

/// Linked calls over the lattice: the link comes from the registry's live view, the call goes
/// through the data-plane router (locally when the target runs in this process).
pub(crate) struct LatticeLinks {
    pub router: Router,
    pub registry: Registry,
    /// For the secrets backends.
    pub nats: async_nats::Client,
}

impl Outbound for LatticeLinks {
    fn call_with_body(&self, c: LinkedCall, head: bytes::Bytes, body: rpc::Body) -> BoxFuture<'static, Result<rpc::Response, String>> {
        let call = match self.linked_target(&c) {
            Ok(call) => call,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let router = self.router.clone();
        Box::pin(async move {
            let inv = Invocation {
                call,
                traceparent: c.traceparent.as_deref().map(str::to_string),
                deadline: tokio::time::Instant::from_std(c.deadline),
                head,
                body,
            };
            router.call(inv).await.map_err(|e| e.to_string())
        })
    }

    fn send_http(&self, call: crate::outgoing::HttpCall) -> BoxFuture<'static, Result<crate::outgoing::HttpAnswer, crate::outgoing::HttpFailure>> {
        crate::outgoing::send(&self.router, &self.registry, call)
    }

    fn secret(&self, source: &str, r: SecretReference) -> BoxFuture<'static, Result<SecretValue, String>> {
        let client = SecretsClient::new(self.nats.clone(), &r.backend);
        let source = source.to_string();
        Box::pin(async move { client.get(&r.request()).await.map_err(|e| format!("secret `{}` of component `{source}`: {e}", r.name)) })
    }

    fn config(&self, names: &[String]) -> trellis_lattice::ctl::StringMap {
        self.registry.view().merged_config(names)
    }

    fn has_link(&self, source: &str, i: &InterfaceName, name: &str) -> bool {
        self.registry.view().links_in_slot(source, &i.namespace, &i.package, name).iter().any(|l| l.interfaces.contains(&i.interface))
    }

    fn call(&self, c: LinkedCall) -> BoxFuture<'static, Result<Vec<WitValue>, String>> {
        let lattice = self.router.lattice().to_string();
        let i = c.via.as_ref().unwrap_or(&c.interface);
        let link =
            self.registry.view().links_in_slot(&c.source, &i.namespace, &i.package, &c.link_name).into_iter().find(|l| l.interfaces.contains(&i.interface));
        let Some(link) = link else {
            let name_flag = if c.link_name == DEFAULT_LINK_NAME { String::new() } else { format!(" --link-name {}", c.link_name) };
            return Box::pin(std::future::ready(Err(format!(
                "no link from component `{}` for `{i}` (link name `{}`) in lattice `{lattice}`, so its call to `{}.{}` has nowhere to go; \
                 add one with `wash link put {} <target> {} {} --interface {}{name_flag}`",
                c.source, c.link_name, c.interface, c.function, c.source, i.namespace, i.package, i.interface
            ))));
        };
        let router = self.router.clone();
        Box::pin(async move {
            let call = CallInfo {
                lattice,
                source: c.source.to_string(),
                target: link.target,
                interface: c.interface.to_string(),
                function: c.function,
                link_name: c.link_name,
            };
            let head = wit_value::encode(&c.args);
            if head.len() > rpc::MAX_HEAD_BYTES {
                let e = rpc::RpcError::new(
                    rpc::RpcErrorKind::Malformed,
                    &call,
                    format!("the arguments take {} bytes encoded; a linked call carries at most {}", head.len(), rpc::MAX_HEAD_BYTES),
                );
                return Err(e.to_string());
            }
            let inv = Invocation {
                call: call.clone(),
                traceparent: c.traceparent.as_deref().map(str::to_string),
                deadline: tokio::time::Instant::from_std(c.deadline),
                head,
                body: rpc::full_body(bytes::Bytes::new()),
            };
            let resp = router.call(inv).await.map_err(|e| e.to_string())?;
            wit_value::decode(&resp.head)
                .map_err(|e| rpc::RpcError::new(rpc::RpcErrorKind::Malformed, &call, format!("the results could not be decoded: {e}")).to_string())
        })
    }
}

impl LatticeLinks {
    /// Who `c` goes to: the target of the caller's link for its interface (or `via`), or the
    /// message naming the missing link and the `wash link put` that adds it.
    fn linked_target(&self, c: &LinkedCall) -> Result<CallInfo, String> {
        let lattice = self.router.lattice().to_string();
        let i = c.via.as_ref().unwrap_or(&c.interface);
        let view = self.registry.view();
        let Some(link) = view.links_in_slot(&c.source, &i.namespace, &i.package, &c.link_name).into_iter().find(|l| l.interfaces.contains(&i.interface)) else {
            let name_flag = if c.link_name == DEFAULT_LINK_NAME { String::new() } else { format!(" --link-name {}", c.link_name) };
            return Err(format!(
                "no link from component `{}` for `{i}` (link name `{}`) in lattice `{lattice}`, so its call to `{}.{}` has nowhere to go; \
                 add one with `wash link put {} <target> {} {} --interface {}{name_flag}`",
                c.source, c.link_name, c.interface, c.function, c.source, i.namespace, i.package, i.interface
            ));
        };
        Ok(CallInfo {
            lattice,
            source: c.source.to_string(),
            target: link.target,
            interface: c.interface.to_string(),
            function: c.function.clone(),
            link_name: c.link_name.clone(),
        })
    }
}

/// Marks the resource types of linked interfaces: they satisfy the type check, but no value of
/// them can cross a link, so no instance of one is ever made.
struct LinkedResource;

/// Defines, in `linker` (a per-component clone of the host's), every instance import of
/// `component` the host does not provide itself, sending its calls to `outbound`.
pub(crate) fn link_imports(linker: &mut Linker<State>, engine: &Engine, component: &Component, outbound: &Arc<dyn Outbound>) -> Result<(), String> {
    for (name, import) in component.component_type().imports(engine) {
        let ComponentItem::ComponentInstance(instance) = import.ty else { continue };
        if provided_by_host(name) {
            continue;
        }
        let Some(interface) = InterfaceName::parse(name) else { continue };
        let mut li = linker.instance(name).map_err(|e| format!("cannot link import `{name}`: {e}"))?;
        for (item, ty) in instance.exports(engine) {
            match ty.ty {
                ComponentItem::ComponentFunc(func) => {
                    let import = Arc::new(Import { interface: interface.clone(), function: item.to_string(), refusal: refusal(&interface, item, &func) });
                    let outbound = outbound.clone();
                    li.func_new_async(item, move |store, ty, params, results| {
                        let (import, outbound) = (import.clone(), outbound.clone());
                        Box::new(async move {
                            let state = store.data();
                            let call = import.call(state, &ty, params)?;
                            let target_results = outbound.call(call).await.map_err(wasmtime::Error::msg)?;
                            import.results(&ty, target_results, results)?;
                            Ok(())
                        })
                    })
                }
                ComponentItem::Resource(_) => li.resource(item, ResourceType::host::<LinkedResource>(), |_, _| Ok(())),
                _ => Ok(()),
            }
            .map_err(|e| format!("cannot link `{name}.{item}`: {e}"))?;
        }
    }
    Ok(())
}

/// One imported function satisfied by a link.
struct Import {
    interface: InterfaceName,
    function: String,
    /// Why it cannot be called through a link, if it cannot.
    refusal: Option<String>,
}

impl Import {
    fn call(&self, state: &State, ty: &ComponentFunc, params: &[Val]) -> wasmtime::Result<LinkedCall> {
        if let Some(r) = &self.refusal {
            return Err(wasmtime::Error::msg(r.clone()));
        }
        let args = params
            .iter()
            .zip(ty.params())
            .map(|(v, (name, _))| to_wit(v).map_err(|e| wasmtime::Error::msg(format!("parameter `{name}` of `{}.{}` {e}", self.interface, self.function))))
            .collect::<wasmtime::Result<Vec<_>>>()?;
        let link = state.link_context();
        Ok(LinkedCall {
            source: link.component_id.clone(),
            link_name: link.link_name(&self.interface).to_string(),
            interface: self.interface.clone(),
            via: None,
            function: self.function.clone(),
            deadline: link.deadline,
            args,
            traceparent: link.traceparent.clone(),
        })
    }

    fn results(&self, ty: &ComponentFunc, values: Vec<WitValue>, out: &mut [Val]) -> wasmtime::Result<()> {
        let bad = |e: String| wasmtime::Error::msg(format!("the results of `{}.{}` do not match this component's import: {e}", self.interface, self.function));
        if values.len() != out.len() {
            return Err(bad(format!("{} results came back, {} were expected", values.len(), out.len())));
        }
        for ((slot, v), t) in out.iter_mut().zip(values).zip(ty.results()) {
            *slot = from_wit(v, &t).map_err(bad)?;
        }
        Ok(())
    }
}

/// Why `interface.function` cannot cross a link, if it cannot.
pub(crate) fn refusal(interface: &InterfaceName, function: &str, ty: &ComponentFunc) -> Option<String> {
    let what = "resources, futures and streams belong to one component's store and cannot cross a link";
    if function.contains(['.', '[']) {
        return Some(format!("`{interface}.{function}` is a method of a resource; {what}"));
    }
    for (name, t) in ty.params() {
        if let Some(kind) = unlinkable(&t) {
            return Some(format!("parameter `{name}` of `{interface}.{function}` is or holds {kind}; {what}"));
        }
    }
    for t in ty.results() {
        if let Some(kind) = unlinkable(&t) {
            return Some(format!("the result of `{interface}.{function}` is or holds {kind}; {what}"));
        }
    }
    None
}

/// The first kind inside `ty` that has no wire form.
fn unlinkable(ty: &Type) -> Option<&'static str> {
    match ty {
        Type::Own(_) => Some("an owned resource"),
        Type::Borrow(_) => Some("a borrowed resource"),
        Type::Future(_) => Some("a future"),
        Type::Stream(_) => Some("a stream"),
        Type::ErrorContext => Some("an error-context"),
        Type::List(l) => unlinkable(&l.ty()),
        Type::FixedLengthList(l) => unlinkable(&l.ty()),
        Type::Map(m) => unlinkable(&m.key()).or_else(|| unlinkable(&m.value())),
        Type::Record(r) => r.fields().find_map(|f| unlinkable(&f.ty)),
        Type::Tuple(t) => t.types().find_map(|t| unlinkable(&t)),
        Type::Variant(v) => v.cases().find_map(|c| c.ty.as_ref().and_then(unlinkable)),
        Type::Option(o) => unlinkable(&o.ty()),
        Type::Result(r) => r.ok().as_ref().and_then(unlinkable).or_else(|| r.err().as_ref().and_then(unlinkable)),
        _ => None,
    }
}

/// A function a component exports.
pub struct ExportedFunc {
    /// Where it is, valid for every instance of the component.
    pub index: ComponentExportIndex,
    /// Its signature.
    pub ty: ComponentFunc,
    /// Why it cannot be called through a link, if it cannot.
    pub refusal: Option<String>,
}

/// The exported functions of a component, by interface name without `@version`.
#[derive(Default)]
pub struct Exports(HashMap<String, HashMap<String, ExportedFunc>>);

impl Exports {
    /// Indexes the instance exports of `component`. Where one interface is exported in two
    /// versions, the first export wins.
    pub(crate) fn index(engine: &Engine, component: &Component) -> Self {
        let mut out: HashMap<String, HashMap<String, ExportedFunc>> = HashMap::new();
        for (name, export) in component.component_type().exports(engine) {
            let ComponentItem::ComponentInstance(instance) = export.ty else { continue };
            let Some(interface) = InterfaceName::parse(name) else { continue };
            let key = interface.to_string();
            if out.contains_key(&key) {
                continue;
            }
            let Some(instance_index) = component.get_export_index(None, name) else { continue };
            let funcs = instance
                .exports(engine)
                .filter_map(|(item, ty)| {
                    let ComponentItem::ComponentFunc(func) = ty.ty else { return None };
                    let index = component.get_export_index(Some(&instance_index), item)?;
                    let refusal = refusal(&interface, item, &func);
                    Some((item.to_string(), ExportedFunc { index, ty: func, refusal }))
                })
                .collect();
            out.insert(key, funcs);
        }
        Self(out)
    }

    /// The function `function` of `interface` (`ns:pkg/iface`, no version).
    pub fn get(&self, interface: &str, function: &str) -> Option<&ExportedFunc> {
        self.0.get(interface)?.get(function)
    }

    /// Whether any version of `interface` is exported.
    pub fn has_interface(&self, interface: &str) -> bool {
        self.0.contains_key(interface)
    }
}

/// A wasmtime value as a wire value. Fails (with the end of a sentence) for values that have
/// no wire form.
pub fn to_wit(v: &Val) -> Result<WitValue, String> {
    let list = |items: &[Val]| items.iter().map(to_wit).collect::<Result<Vec<_>, _>>();
    let boxed = |v: &Option<Box<Val>>| v.as_deref().map(to_wit).transpose().map(|o| o.map(Box::new));
    Ok(match v {
        Val::Bool(b) => WitValue::Bool(*b),
        Val::S8(n) => WitValue::S8(*n),
        Val::U8(n) => WitValue::U8(*n),
        Val::S16(n) => WitValue::S16(*n),
        Val::U16(n) => WitValue::U16(*n),
        Val::S32(n) => WitValue::S32(*n),
        Val::U32(n) => WitValue::U32(*n),
        Val::S64(n) => WitValue::S64(*n),
        Val::U64(n) => WitValue::U64(*n),
        Val::Float32(n) => WitValue::Float32(*n),
        Val::Float64(n) => WitValue::Float64(*n),
        Val::Char(c) => WitValue::Char(*c),
        Val::String(s) => WitValue::String(s.clone()),
        Val::List(items) if !items.is_empty() && items.iter().all(|v| matches!(v, Val::U8(_))) => {
            WitValue::Bytes(items.iter().map(|v| if let Val::U8(b) = v { *b } else { 0 }).collect())
        }
        Val::List(items) | Val::FixedLengthList(items) => WitValue::List(list(items)?),
        Val::Map(pairs) => WitValue::Map(pairs.iter().map(|(k, v)| Ok((to_wit(k)?, to_wit(v)?))).collect::<Result<_, String>>()?),
        Val::Record(fields) => WitValue::Record(fields.iter().map(|(n, v)| Ok((n.clone(), to_wit(v)?))).collect::<Result<_, String>>()?),
        Val::Tuple(items) => WitValue::Tuple(list(items)?),
        Val::Variant(case, payload) => WitValue::Variant(case.clone(), boxed(payload)?),
        Val::Enum(case) => WitValue::Enum(case.clone()),
        Val::Option(o) => WitValue::Option(boxed(o)?),
        Val::Result(Ok(o)) => WitValue::Result(Ok(boxed(o)?)),
        Val::Result(Err(e)) => WitValue::Result(Err(boxed(e)?)),
        Val::Flags(names) => WitValue::Flags(names.clone()),
        Val::Resource(_) => return Err("holds a resource handle, which cannot cross a link".into()),
        Val::Future(_) => return Err("holds a future, which cannot cross a link".into()),
        Val::Stream(_) => return Err("holds a stream, which cannot cross a link".into()),
        Val::ErrorContext(_) => return Err("holds an error-context, which cannot cross a link".into()),
    })
}

/// A wire value as a wasmtime value of type `ty`. The error says where (`.field`, `[index]`)
/// and what did not match.
pub fn from_wit(v: WitValue, ty: &Type) -> Result<Val, String> {
    from_wit_at(v, ty, &mut String::new())
}

fn from_wit_at(v: WitValue, ty: &Type, path: &mut String) -> Result<Val, String> {
    let at = |path: &str, what: String| if path.is_empty() { what } else { format!("at `{path}`: {what}") };
    let fail = |path: &str, what: String| Err(at(path, what));
    // Descends into `seg`, converts, and comes back.
    fn nested(v: WitValue, ty: &Type, path: &mut String, seg: std::fmt::Arguments<'_>) -> Result<Val, String> {
        let len = path.len();
        std::fmt::Write::write_fmt(path, seg).ok();
        let out = from_wit_at(v, ty, path);
        path.truncate(len);
        out
    }
    Ok(match (ty, v) {
        (Type::Bool, WitValue::Bool(b)) => Val::Bool(b),
        (Type::S8, WitValue::S8(n)) => Val::S8(n),
        (Type::U8, WitValue::U8(n)) => Val::U8(n),
        (Type::S16, WitValue::S16(n)) => Val::S16(n),
        (Type::U16, WitValue::U16(n)) => Val::U16(n),
        (Type::S32, WitValue::S32(n)) => Val::S32(n),
        (Type::U32, WitValue::U32(n)) => Val::U32(n),
        (Type::S64, WitValue::S64(n)) => Val::S64(n),
        (Type::U64, WitValue::U64(n)) => Val::U64(n),
        (Type::Float32, WitValue::Float32(n)) => Val::Float32(n),
        (Type::Float64, WitValue::Float64(n)) => Val::Float64(n),
        (Type::Char, WitValue::Char(c)) => Val::Char(c),
        (Type::String, WitValue::String(s)) => Val::String(s),
        (Type::List(l), WitValue::List(items)) => {
            let t = l.ty();
            Val::List(items.into_iter().enumerate().map(|(i, v)| nested(v, &t, path, format_args!("[{i}]"))).collect::<Result<_, _>>()?)
        }
        (Type::List(l), WitValue::Bytes(bytes)) if l.ty() == Type::U8 => Val::List(bytes.into_iter().map(Val::U8).collect()),
        (Type::FixedLengthList(l), WitValue::List(items)) => {
            if items.len() != l.len() as usize {
                return fail(path, format!("expected a list of {} elements, got {}", l.len(), items.len()));
            }
            let t = l.ty();
            Val::FixedLengthList(items.into_iter().enumerate().map(|(i, v)| nested(v, &t, path, format_args!("[{i}]"))).collect::<Result<_, _>>()?)
        }
        (Type::Map(m), WitValue::Map(pairs)) => {
            let (kt, vt) = (m.key(), m.value());
            let mut out = Vec::with_capacity(pairs.len());
            for (i, (k, v)) in pairs.into_iter().enumerate() {
                out.push((nested(k, &kt, path, format_args!("[{i}].key"))?, nested(v, &vt, path, format_args!("[{i}].value"))?));
            }
            Val::Map(out)
        }
        (Type::Record(r), WitValue::Record(mut fields)) => {
            let mut out = Vec::with_capacity(fields.len());
            for f in r.fields() {
                let Some(pos) = fields.iter().position(|(n, _)| n == f.name) else {
                    return fail(path, format!("the record has no field `{}`", f.name));
                };
                let (name, v) = fields.swap_remove(pos);
                let val = nested(v, &f.ty, path, format_args!(".{name}"))?;
                out.push((name, val));
            }
            if let Some((extra, _)) = fields.first() {
                return fail(path, format!("the record has a field `{extra}` this side does not know"));
            }
            Val::Record(out)
        }
        (Type::Tuple(t), WitValue::Tuple(items)) => {
            if items.len() != t.types().len() {
                return fail(path, format!("expected a tuple of {} elements, got {}", t.types().len(), items.len()));
            }
            Val::Tuple(items.into_iter().zip(t.types()).enumerate().map(|(i, (v, t))| nested(v, &t, path, format_args!(".{i}"))).collect::<Result<_, _>>()?)
        }
        (Type::Variant(vt), WitValue::Variant(case, payload)) => {
            let Some(c) = vt.cases().find(|c| c.name == case) else {
                let known: Vec<_> = vt.cases().map(|c| c.name).collect();
                return fail(path, format!("the variant has no case `{case}` (it has {})", known.join(", ")));
            };
            let payload = match (c.ty, payload) {
                (Some(t), Some(p)) => Some(Box::new(nested(*p, &t, path, format_args!("({case})"))?)),
                (None, None) => None,
                (Some(_), None) => return fail(path, format!("case `{case}` needs a payload and came without one")),
                (None, Some(_)) => return fail(path, format!("case `{case}` has no payload and came with one")),
            };
            Val::Variant(case, payload)
        }
        (Type::Enum(e), WitValue::Enum(case)) => {
            if !e.names().any(|n| n == case) {
                return fail(path, format!("the enum has no case `{case}` (it has {})", e.names().collect::<Vec<_>>().join(", ")));
            }
            Val::Enum(case)
        }
        (Type::Option(o), WitValue::Option(v)) => Val::Option(match v {
            Some(v) => Some(Box::new(nested(*v, &o.ty(), path, format_args!("(some)"))?)),
            None => None,
        }),
        (Type::Result(r), WitValue::Result(res)) => {
            let side = |t: Option<Type>, v: Option<Box<WitValue>>, path: &mut String, which: &str| -> Result<Option<Box<Val>>, String> {
                match (t, v) {
                    (Some(t), Some(v)) => Ok(Some(Box::new(nested(*v, &t, path, format_args!("({which})"))?))),
                    (None, None) => Ok(None),
                    (Some(_), None) => Err(at(path, format!("the {which} side of the result needs a payload and came without one"))),
                    (None, Some(_)) => Err(at(path, format!("the {which} side of the result has no payload and came with one"))),
                }
            };
            Val::Result(match res {
                Ok(v) => Ok(side(r.ok(), v, path, "ok")?),
                Err(v) => Err(side(r.err(), v, path, "err")?),
            })
        }
        (Type::Flags(f), WitValue::Flags(names)) => {
            if let Some(bad) = names.iter().find(|n| !f.names().any(|k| k == n.as_str())) {
                return fail(path, format!("the flags have no flag `{bad}`"));
            }
            Val::Flags(names)
        }
        (ty, v) => return fail(path, format!("expected {}, got {}", type_name(ty), v.kind())),
    })
}

fn type_name(ty: &Type) -> &'static str {
    match ty {
        Type::Bool => "bool",
        Type::S8 => "s8",
        Type::U8 => "u8",
        Type::S16 => "s16",
        Type::U16 => "u16",
        Type::S32 => "s32",
        Type::U32 => "u32",
        Type::S64 => "s64",
        Type::U64 => "u64",
        Type::Float32 => "f32",
        Type::Float64 => "f64",
        Type::Char => "char",
        Type::String => "string",
        Type::List(_) => "list",
        Type::FixedLengthList(_) => "fixed-length list",
        Type::Map(_) => "map",
        Type::Record(_) => "record",
        Type::Tuple(_) => "tuple",
        Type::Variant(_) => "variant",
        Type::Enum(_) => "enum",
        Type::Option(_) => "option",
        Type::Result(_) => "result",
        Type::Flags(_) => "flags",
        Type::Own(_) => "an owned resource (which cannot cross a link)",
        Type::Borrow(_) => "a borrowed resource (which cannot cross a link)",
        Type::Future(_) => "a future (which cannot cross a link)",
        Type::Stream(_) => "a stream (which cannot cross a link)",
        Type::ErrorContext => "an error-context (which cannot cross a link)",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
pub(crate) mod tests {
    use super::*;

    /// A component importing `t:t/i` with a function over nested types, and one that takes a
    /// resource.
    const WAT: &str = r#"
        (component
          (import "t:t/i@1.2.0" (instance
            (type $volume' (enum "quiet" "loud"))
            (export "volume" (type $volume (eq $volume')))
            (type $marks' (flags "urgent" "signed" "twice"))
            (export "marks" (type $marks (eq $marks')))
            (type $outcome' (variant (case "pong" string) (case "refused" string) (case "silence")))
            (export "outcome" (type $outcome (eq $outcome')))
            (type $inner' (record (field "bytes" (list u8)) (field "maybe" (option s8))))
            (export "inner" (type $inner (eq $inner')))
            (type $ping' (record
              (field "message" string)
              (field "count" u32)
              (field "tags" (list string))
              (field "reply-to" (option string))
              (field "volume" $volume)
              (field "marks" $marks)
              (field "outcomes" (list $outcome))
              (field "stats" (tuple u64 s16 f64 char))
              (field "nested" (option (result (list $inner) (error (option bool)))))))
            (export "ping" (type $ping (eq $ping')))
            (export "send" (func (param "p" $ping) (result (result $ping (error string)))))
            (export "res" (type $res (sub resource)))
            (export "take" (func (param "n" u32) (param "r" (borrow $res))))
            (export "other" (type $other (sub resource)))
            (export "make" (func (result (own $other))))
          ))
        )"#;

    fn import_funcs() -> (Engine, HashMap<String, ComponentFunc>) {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config).unwrap();
        let component = Component::new(&engine, WAT).unwrap();
        let mut funcs = HashMap::new();
        for (name, import) in component.component_type().imports(&engine) {
            assert_eq!(name, "t:t/i@1.2.0");
            let ComponentItem::ComponentInstance(instance) = import.ty else { panic!("not an instance") };
            for (item, ty) in instance.exports(&engine) {
                if let ComponentItem::ComponentFunc(f) = ty.ty {
                    funcs.insert(item.to_string(), f);
                }
            }
        }
        (engine, funcs)
    }

    fn ping(nested: Option<Box<Val>>) -> Val {
        let s = |v: &str| Val::String(v.into());
        Val::Record(vec![
            ("message".into(), s("héllo")),
            ("count".into(), Val::U32(u32::MAX)),
            ("tags".into(), Val::List(vec![s("a"), s(""), s("c")])),
            ("reply-to".into(), Val::Option(Some(Box::new(s("inbox"))))),
            ("volume".into(), Val::Enum("loud".into())),
            ("marks".into(), Val::Flags(vec!["urgent".into(), "twice".into()])),
            (
                "outcomes".into(),
                Val::List(vec![
                    Val::Variant("pong".into(), Some(Box::new(s("HI #1")))),
                    Val::Variant("refused".into(), Some(Box::new(s("#3")))),
                    Val::Variant("silence".into(), None),
                ]),
            ),
            ("stats".into(), Val::Tuple(vec![Val::U64(u64::MAX), Val::S16(-3), Val::Float64(0.75), Val::Char('é')])),
            ("nested".into(), Val::Option(nested)),
        ])
    }

    #[test]
    fn nested_values_round_trip_through_the_wire() {
        let (_engine, funcs) = import_funcs();
        let send = &funcs["send"];
        let (pname, pty) = send.params().next().unwrap();
        assert_eq!(pname, "p");
        let rty = send.results().next().unwrap();
        let inner = |bytes: Vec<u8>, maybe: Option<i8>| {
            Val::Record(vec![
                ("bytes".into(), Val::List(bytes.into_iter().map(Val::U8).collect())),
                ("maybe".into(), Val::Option(maybe.map(|n| Box::new(Val::S8(n))))),
            ])
        };
        let cases = [
            ping(None),
            ping(Some(Box::new(Val::Result(Ok(Some(Box::new(Val::List(vec![inner(vec![0, 255], Some(-128)), inner(vec![], None)])))))))),
            ping(Some(Box::new(Val::Result(Err(Some(Box::new(Val::Option(Some(Box::new(Val::Bool(true))))))))))),
            ping(Some(Box::new(Val::Result(Err(Some(Box::new(Val::Option(None)))))))),
        ];
        for case in cases {
            let wire = wit_value::decode(&wit_value::encode(&[to_wit(&case).unwrap()])).unwrap();
            let back = from_wit(wire.into_iter().next().unwrap(), &pty).unwrap();
            assert_eq!(back, case);
        }
        // Results too: ok and err.
        for result in [Val::Result(Ok(Some(Box::new(ping(None))))), Val::Result(Err(Some(Box::new(Val::String("no".into())))))] {
            let wire = wit_value::decode(&wit_value::encode(&[to_wit(&result).unwrap()])).unwrap();
            assert_eq!(from_wit(wire.into_iter().next().unwrap(), &rty).unwrap(), result);
        }
    }

    #[test]
    fn mismatches_say_where_and_what() {
        let (_engine, funcs) = import_funcs();
        let (_, pty) = funcs["send"].params().next().unwrap();
        let good = to_wit(&ping(None)).unwrap();
        type Fields = Vec<(String, WitValue)>;
        let edit = |f: &dyn Fn(&mut Fields)| {
            let mut w = good.clone();
            let WitValue::Record(fields) = &mut w else { panic!("not a record") };
            f(fields);
            from_wit(w, &pty).unwrap_err()
        };
        assert_eq!(edit(&|f| f[1].1 = WitValue::U64(1)), "at `.count`: expected u32, got u64");
        assert_eq!(
            edit(&|f| if let WitValue::List(o) = &mut f[6].1 {
                o[2] = WitValue::Variant("shout".into(), None)
            }),
            "at `.outcomes[2]`: the variant has no case `shout` (it has pong, refused, silence)"
        );
        assert_eq!(edit(&|f| f[3].1 = WitValue::Option(Some(Box::new(WitValue::U8(1))))), "at `.reply-to(some)`: expected string, got u8");
        assert_eq!(edit(&|f| f.retain(|(n, _)| n != "tags")), "the record has no field `tags`");
        assert_eq!(edit(&|f| f.push(("extra".into(), WitValue::Bool(true)))), "the record has a field `extra` this side does not know");
        assert_eq!(from_wit(WitValue::Flags(vec!["loud".into()]), &Type::Bool).unwrap_err(), "expected bool, got flags");
    }

    #[test]
    fn resources_are_refused_naming_function_and_parameter() {
        let (_engine, funcs) = import_funcs();
        let iface = InterfaceName::parse("t:t/i@1.2.0").unwrap();
        assert_eq!(iface.to_string(), "t:t/i");
        assert_eq!(refusal(&iface, "send", &funcs["send"]), None);
        let why = refusal(&iface, "take", &funcs["take"]).unwrap();
        assert!(why.starts_with("parameter `r` of `t:t/i.take` is or holds a borrowed resource;"), "{why}");
        assert!(refusal(&iface, "[method]res.get", &funcs["send"]).unwrap().contains("is a method of a resource"));
    }

    /// An outbound that reaches nothing (for tests that never call out).
    pub(crate) struct Nowhere;

    impl Outbound for Nowhere {
        fn secret(&self, _: &str, _: SecretReference) -> BoxFuture<'static, Result<SecretValue, String>> {
            Box::pin(std::future::ready(Err("nowhere".into())))
        }

        fn call(&self, _: LinkedCall) -> BoxFuture<'static, Result<Vec<WitValue>, String>> {
            Box::pin(std::future::ready(Err("nowhere".into())))
        }

        fn config(&self, _: &[String]) -> trellis_lattice::ctl::StringMap {
            Default::default()
        }

        fn has_link(&self, _: &str, _: &InterfaceName, _: &str) -> bool {
            false
        }
    }

    #[test]
    fn unknown_imports_resources_included_are_linked_once_at_prepare() {
        let (engine, _) = import_funcs();
        let component = Component::new(&engine, WAT).unwrap();
        let mut linker = Linker::<State>::new(&engine);
        assert!(linker.instantiate_pre(&component).is_err());
        let outbound: Arc<dyn Outbound> = Arc::new(Nowhere);
        link_imports(&mut linker, &engine, &component, &outbound).unwrap();
        linker.instantiate_pre(&component).unwrap();
    }

    #[test]
    fn names() {
        let n = InterfaceName::parse("trellis:examples/pingpong@0.1.0").unwrap();
        assert_eq!((n.namespace.as_str(), n.package.as_str(), n.interface.as_str()), ("trellis", "examples", "pingpong"));
        assert_eq!(InterfaceName::parse("trellis:examples/pingpong").unwrap(), n);
        assert!(InterfaceName::parse("plain-name").is_none());
        assert!(InterfaceName::parse("ns:/x").is_none());
        assert!(provided_by_host("wasi:io/poll@0.2.0"));
        assert!(provided_by_host("wasi:http/types@0.2.6"));
        assert!(provided_by_host("wasi:keyvalue/store@0.2.0-draft"));
        assert!(provided_by_host("wasmcloud:bus/lattice@2.0.0"));
        assert!(!provided_by_host("wasmcloud:messaging/consumer@0.2.0"));
        assert!(!provided_by_host("trellis:examples/pingpong@0.1.0"));
    }
}

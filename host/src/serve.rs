//! Serving running components on the data plane: one queue-group subscription per component
//! id (so replicas on other hosts share the load) and a local route for same-host callers.
//! Calls are dispatched by interface: `wasi:http/incoming-handler` to the component's HTTP
//! export, streaming both bodies; any other interface to the exported function of that name
//! (arguments and results as [`trellis_lattice::wit_value`]s, see [`crate::c2c`]).
//! [`Serving`] is the table of what this host serves; [`ComponentHandler`] answers the calls
//! with the component table and the runtime, and nothing else of the host.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::sync::Mutex;
use trellis_lattice::rpc::{self, CallInfo, Handler, Invocation, Response, Router, RpcError, RpcErrorKind};
use trellis_lattice::wit_value;

use crate::c2c;
use crate::components::{Components, RunningComponent};
use crate::error::{HostError, HostErrorKind, Result as HostResult};
use crate::runtime::Runtime;

/// The components this host serves on the data plane: per component id, a queue-group
/// subscription shared with its replicas elsewhere and a local route for callers in this
/// process.
pub(crate) struct Serving {
    router: Router,
    runtime: Arc<Runtime>,
    components: Components,
    /// The data-plane subscriptions, by component id.
    subscriptions: Mutex<HashMap<String, rpc::Serving>>,
}

impl Serving {
    /// Serves the components of `components` (once [`Serving::serve`] names them) through `router`.
    pub fn new(router: Router, runtime: Arc<Runtime>, components: Components) -> Self {
        Self { router, runtime, components, subscriptions: Mutex::new(HashMap::new()) }
    }

    /// Answers data-plane calls for component `id` (idempotent), with whatever version of it the
    /// component table holds when a call comes.
    pub async fn serve(&self, id: &str) -> HostResult<()> {
        let mut subscriptions = self.subscriptions.lock().await;
        if subscriptions.contains_key(id) {
            return Ok(());
        }
        let handler: Arc<dyn Handler> = Arc::new(ComponentHandler { runtime: self.runtime.clone(), components: self.components.clone(), id: id.into() });
        let sub = self.router.serve(id, handler.clone()).await?;
        self.router.register_local(id, handler);
        subscriptions.insert(id.into(), sub);
        Ok(())
    }

    /// Like [`Self::unserve`], but the calls already taken are answered (at most `wait`).
    pub async fn unserve_gracefully(&self, id: &str, wait: Duration) {
        self.router.unregister_local(id);
        let sub = self.subscriptions.lock().await.remove(id);
        if let Some(s) = sub {
            s.drain(wait).await;
        }
    }

    /// Stops answering calls for component `id` at once.
    pub async fn unserve(&self, id: &str) {
        self.router.unregister_local(id);
        self.subscriptions.lock().await.remove(id);
    }
}

/// Answers data-plane calls for component `id` with whatever version of it runs now.
pub(crate) struct ComponentHandler {
    runtime: Arc<Runtime>,
    components: Components,
    id: String,
}

impl Handler for ComponentHandler {
    fn call(&self, inv: Invocation) -> BoxFuture<'static, Result<Response, RpcError>> {
        let (runtime, components, id) = (self.runtime.clone(), self.components.clone(), self.id.clone());
        Box::pin(async move {
            let gone = |call: &CallInfo| RpcError::new(RpcErrorKind::NoReplica, call, format!("component `{id}` is no longer running on this host"));
            let Some(c) = components.get(&id).await else { return Err(gone(&inv.call)) };
            if inv.call.interface == rpc::http::INTERFACE && inv.call.function == rpc::http::FUNCTION {
                return http(&runtime, &c, inv).await;
            }
            func(&runtime, &c, inv).await
        })
    }
}

/// Maps a host error to the data-plane error of `call`.
pub(crate) fn to_rpc(call: &CallInfo, e: HostError) -> RpcError {
    let kind = match e.kind() {
        HostErrorKind::Busy => RpcErrorKind::Busy,
        HostErrorKind::Deadline => RpcErrorKind::Deadline,
        HostErrorKind::Unsupported => RpcErrorKind::Unsupported,
        HostErrorKind::NotFound => RpcErrorKind::NoReplica,
        _ => RpcErrorKind::Handler,
    };
    RpcError::new(kind, call, e.to_string())
}

async fn http(runtime: &Runtime, c: &Arc<RunningComponent>, inv: Invocation) -> Result<Response, RpcError> {
    let call = inv.call;
    let head: rpc::http::RequestHead =
        rpc::http::decode(&inv.head).map_err(|e| RpcError::new(RpcErrorKind::Malformed, &call, format!("the HTTP request head could not be decoded: {e}")))?;
    let mut builder = http::Request::builder().method(head.method.as_str());
    let mut host = None;
    for (name, value) in &head.headers {
        if name.eq_ignore_ascii_case("host") {
            host = std::str::from_utf8(value).ok().map(str::to_string);
        }
        builder = builder.header(name.as_str(), value.as_slice());
    }
    // wasi:http needs an authority: from the URI, else the Host header, else localhost.
    let uri = if head.uri.starts_with('/') { format!("http://{}{}", host.as_deref().unwrap_or("localhost"), head.uri) } else { head.uri };
    let body = StreamBody::new(inv.body.map_ok(Frame::data).map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))));
    let req = builder.uri(uri).body(body).map_err(|e| RpcError::new(RpcErrorKind::Malformed, &call, format!("invalid HTTP request: {e}")))?;
    let wait = inv.deadline.saturating_duration_since(tokio::time::Instant::now());
    let permit = c.gate.acquire(&c.id, wait).await.map_err(|e| to_rpc(&call, e))?;
    c.invocations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let resp = runtime
        .invoke_http_streaming(crate::runtime::Guest { traceparent: inv.traceparent.as_deref(), ..c.guest(c.limits) }, req, permit)
        .await
        .map_err(|e| to_rpc(&call, e))?;
    let (parts, body) = resp.into_parts();
    let head = rpc::http::ResponseHead {
        status: parts.status.as_u16(),
        headers: parts.headers.iter().map(|(k, v)| (k.as_str().to_string(), serde_bytes::ByteBuf::from(v.as_bytes().to_vec()))).collect(),
    };
    let body_call = call.clone();
    Ok(Response { head: rpc::http::encode(&head), body: body.map_err(move |e| to_rpc(&body_call, e)).boxed() })
}

/// Calls the exported function `call.function` of interface `call.interface` (whatever its
/// `@version`) in a fresh instance, with the arguments in the head; the results are the
/// response head.
async fn func(runtime: &Runtime, c: &Arc<RunningComponent>, inv: Invocation) -> Result<Response, RpcError> {
    let call = inv.call;
    let Some(export) = c.prepared.exports().get(&call.interface, &call.function) else {
        let what = if c.prepared.exports().has_interface(&call.interface) {
            format!("component `{}` exports `{}` but no function `{}` in it", c.id, call.interface, call.function)
        } else {
            format!("component `{}` does not export `{}`", c.id, call.interface)
        };
        return Err(RpcError::new(RpcErrorKind::Unsupported, &call, what));
    };
    if let Some(why) = &export.refusal {
        return Err(RpcError::new(RpcErrorKind::Unsupported, &call, why.clone()));
    }
    let malformed = |what: String| RpcError::new(RpcErrorKind::Malformed, &call, what);
    let args = wit_value::decode(&inv.head).map_err(|e| malformed(format!("the arguments could not be decoded: {e}")))?;
    let types: Vec<_> = export.ty.params().collect();
    if args.len() != types.len() {
        return Err(malformed(format!("{} arguments came for `{}`, which takes {}", args.len(), call.function, types.len())));
    }
    let params = args
        .into_iter()
        .zip(&types)
        .map(|(v, (name, ty))| c2c::from_wit(v, ty).map_err(|e| format!("argument `{name}` does not match `{}`: {e}", call.function)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(malformed)?;
    // The callee's own budget, cut short by the caller's deadline.
    let left = inv.deadline.saturating_duration_since(tokio::time::Instant::now());
    let mut limits = c.limits;
    limits.max_execution_time = limits.max_execution_time.min(left);
    let permit = c.gate.acquire(&c.id, left).await.map_err(|e| to_rpc(&call, e))?;
    c.invocations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let results = runtime
        .invoke_func(crate::runtime::Guest { traceparent: inv.traceparent.as_deref(), ..c.guest(limits) }, export, params, permit)
        .await
        .map_err(|e| to_rpc(&call, e))?;
    let results = results
        .iter()
        .map(c2c::to_wit)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RpcError::new(RpcErrorKind::Handler, &call, format!("the result of `{}` {e}", call.function)))?;
    let head = wit_value::encode(&results);
    if head.len() > rpc::MAX_HEAD_BYTES {
        return Err(RpcError::new(
            RpcErrorKind::Handler,
            &call,
            format!("the results take {} bytes encoded; a linked call carries at most {}", head.len(), rpc::MAX_HEAD_BYTES),
        ));
    }
    Ok(Response { head, body: rpc::full_body(bytes::Bytes::new()) })
}

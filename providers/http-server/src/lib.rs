//! # trellis-provider-http-server
//!
//! Serves HTTP and hands each request to the component a link names, over the data plane
//! (`wasi:http/incoming-handler`), streaming both bodies. It is the link *source*:
//! `wash link put http-server hello wasi http --interface incoming-handler --source-config cfg`.
//!
//! Provider config (named config given at start): `routing_mode` = `address` (default: one
//! listener per link, at the link's `address`) or `path` (one listener at `default_address`,
//! requests routed by the link's `path`, longest prefix wins); `default_address` (default
//! `0.0.0.0:8000`); `timeout_ms` (default 30000). Link source config: `address`, `path`,
//! `timeout_ms`. A request past its timeout gets 408; a link without a running replica, or an
//! address whose link was deleted, gets 503 with a body that says what is missing.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyDataStream, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use trellis_lattice::rpc::{self, CallInfo, Invocation, RpcError, RpcErrorKind};
use trellis_provider_sdk::{Builtin, Link, ProviderContext, ProviderError};

/// The provider's name, as in `builtin://http-server`.
pub const NAME: &str = "http-server";

/// This provider as a host built-in.
pub fn builtin() -> Builtin {
    Builtin { name: NAME, run }
}

/// The provider's entry point.
pub fn run(ctx: ProviderContext) -> BoxFuture<'static, Result<(), ProviderError>> {
    Box::pin(serve(ctx))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Address,
    Path,
}

#[derive(Debug, Clone)]
struct Settings {
    mode: Mode,
    default_address: SocketAddr,
    timeout: Duration,
}

impl Settings {
    fn from(ctx: &ProviderContext) -> Result<Self, ProviderError> {
        let c = ctx.config();
        let mode = match c.get("routing_mode").map(String::as_str) {
            None | Some("address") => Mode::Address,
            Some("path") => Mode::Path,
            Some(other) => return Err(ProviderError::Failed(format!("routing_mode `{other}` is not supported; use `address` or `path`"))),
        };
        let default_address = c.get("default_address").map(String::as_str).unwrap_or("0.0.0.0:8000");
        let default_address =
            default_address.parse().map_err(|_| ProviderError::Failed(format!("default_address `{default_address}` is not an IP:port address")))?;
        let timeout = match c.get("timeout_ms") {
            Some(ms) => Duration::from_millis(ms.parse().map_err(|_| ProviderError::Failed(format!("timeout_ms `{ms}` is not a number of milliseconds")))?),
            None => Duration::from_secs(30),
        };
        Ok(Self { mode, default_address, timeout })
    }
}

/// One link, resolved to where and how it is served.
#[derive(Debug, Clone)]
struct Route {
    link: Link,
    address: SocketAddr,
    path: String,
    timeout: Duration,
}

fn routes(ctx: &ProviderContext, settings: &Settings) -> Vec<Arc<Route>> {
    let mut out = Vec::new();
    for link in ctx.links_as_source().into_iter().filter(rpc::http::is_handler_link) {
        let cfg = ctx.state().merged_config(&link.source_config);
        let address = match cfg.get("address").map(|a| a.parse::<SocketAddr>()) {
            Some(Ok(a)) => a,
            Some(Err(_)) => {
                tracing::warn!(target = link.target, address = cfg["address"], "ignoring a link whose address is not IP:port");
                continue;
            }
            None => settings.default_address,
        };
        let path = cfg.get("path").cloned().unwrap_or_else(|| "/".into());
        let timeout = cfg.get("timeout_ms").and_then(|t| t.parse().ok()).map(Duration::from_millis).unwrap_or(settings.timeout);
        out.push(Arc::new(Route { link, address, path, timeout }));
    }
    out
}

struct Shared {
    ctx: ProviderContext,
    settings: Settings,
    routes: RwLock<Vec<Arc<Route>>>,
}

async fn serve(ctx: ProviderContext) -> Result<(), ProviderError> {
    let settings = Settings::from(&ctx)?;
    let shared = Arc::new(Shared { routes: RwLock::new(routes(&ctx, &settings)), ctx: ctx.clone(), settings: settings.clone() });
    let mut listeners: HashMap<SocketAddr, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut changes = ctx.changes();
    loop {
        let wanted: Vec<SocketAddr> = match settings.mode {
            Mode::Path => vec![settings.default_address],
            Mode::Address => shared.routes.read().unwrap_or_else(|p| p.into_inner()).iter().map(|r| r.address).collect(),
        };
        // Listeners stay up once opened, so that a request to an address whose link was
        // deleted gets a 503 that says so rather than a refused connection.
        let mut failures = Vec::new();
        for addr in wanted {
            if listeners.contains_key(&addr) {
                continue;
            }
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    tracing::info!(%addr, "listening");
                    listeners.insert(addr, tokio::spawn(accept(listener, addr, shared.clone())));
                }
                Err(e) => failures.push(format!("cannot listen on {addr}: {e}")),
            }
        }
        if failures.is_empty() {
            ctx.set_health(true, None);
        } else {
            tracing::warn!(errors = ?failures, "some listeners could not start");
            ctx.set_health(false, Some(failures.join("; ")));
        }
        // An address that could not be bound (still held by a previous run, say) is tried
        // again every second until it can be, or until the links change.
        let retry = !failures.is_empty();
        tokio::select! {
            _ = ctx.shutdown_requested() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)), if retry => {}
            changed = changes.changed() => {
                if changed.is_err() { break }
                *shared.routes.write().unwrap_or_else(|p| p.into_inner()) = routes(&ctx, &settings);
            }
        }
    }
    for (_, task) in listeners {
        task.abort();
    }
    Ok(())
}

async fn accept(listener: tokio::net::TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Responses are written head then body; don't let Nagle hold the second write back.
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, addr, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

type ResponseBody = StreamBody<futures::stream::BoxStream<'static, Result<Frame<Bytes>, RpcError>>>;

fn text(status: u16, message: String) -> http::Response<ResponseBody> {
    let body = futures::stream::once(async move { Ok(Frame::data(Bytes::from(message + "\n"))) }).boxed();
    let mut resp = http::Response::new(StreamBody::new(body));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// The route for a request; an `Arc`, so a request costs no copy of the link.
fn find_route(shared: &Shared, addr: SocketAddr, path: &str) -> Option<Arc<Route>> {
    let routes = shared.routes.read().unwrap_or_else(|p| p.into_inner());
    match shared.settings.mode {
        Mode::Address => routes.iter().find(|r| r.address == addr).cloned(),
        Mode::Path => routes
            .iter()
            .filter(|r| {
                let p = r.path.trim_end_matches('/');
                p.is_empty() || path == p || path.starts_with(&format!("{p}/"))
            })
            .max_by_key(|r| r.path.len())
            .cloned(),
    }
}

async fn handle(shared: &Shared, addr: SocketAddr, req: http::Request<Incoming>) -> http::Response<ResponseBody> {
    let ctx = &shared.ctx;
    let path = req.uri().path().to_string();
    let Some(route) = find_route(shared, addr, &path) else {
        let what = match shared.settings.mode {
            Mode::Address => format!("on {addr}"),
            Mode::Path => format!("for path `{path}`"),
        };
        return text(
            503,
            format!(
                "no link from `{}` for wasi:http/incoming-handler {what} in lattice `{}`; add one with \
                 `wash link put {} <component-id> wasi http --interface incoming-handler --source-config <config>`",
                ctx.id(),
                ctx.lattice(),
                ctx.id()
            ),
        );
    };
    let (parts, body) = req.into_parts();
    let head = rpc::http::RequestHead {
        method: parts.method.to_string(),
        uri: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_else(|| "/".into()),
        headers: parts.headers.iter().map(|(k, v)| (k.as_str().to_string(), serde_bytes::ByteBuf::from(v.as_bytes().to_vec()))).collect(),
    };
    let call = CallInfo {
        lattice: ctx.lattice().into(),
        source: ctx.id().into(),
        target: route.link.target.clone(),
        interface: rpc::http::INTERFACE.into(),
        function: rpc::http::FUNCTION.into(),
        link_name: route.link.name.clone(),
    };
    let body_call = call.clone();
    let body =
        BodyDataStream::new(body).map_err(move |e| RpcError::new(RpcErrorKind::Transport, &body_call, format!("reading the request body failed: {e}"))).boxed();
    let inv = Invocation {
        call,
        traceparent: parts.headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string),
        deadline: tokio::time::Instant::now() + route.timeout,
        head: rpc::http::encode(&head),
        body,
    };
    match ctx.router().call(inv).await {
        Ok(resp) => {
            let head: rpc::http::ResponseHead = match rpc::http::decode(&resp.head) {
                Ok(h) => h,
                Err(e) => return text(502, format!("the component's response head could not be decoded: {e}")),
            };
            let mut out = http::Response::new(StreamBody::new(resp.body.map_ok(Frame::data).boxed()));
            *out.status_mut() = http::StatusCode::from_u16(head.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
            for (k, v) in head.headers {
                if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_bytes(&v)) {
                    out.headers_mut().append(k, v);
                }
            }
            out
        }
        Err(e) => {
            let status = match e.kind {
                RpcErrorKind::Deadline => 408,
                RpcErrorKind::NoReplica | RpcErrorKind::NoLink | RpcErrorKind::Busy => 503,
                RpcErrorKind::Unsupported => 501,
                RpcErrorKind::Malformed | RpcErrorKind::Transport | RpcErrorKind::Lost => 502,
                _ => 500,
            };
            text(status, e.to_string())
        }
    }
}

//! # trellis-provider-http-server
//!
//! Serves HTTP and hands each request to the component a link names, over the data plane
//! (`wasi:http/incoming-handler`), streaming both bodies. It is the link *source*:
//! `wash link put http-server hello wasi http --interface incoming-handler --source-config cfg`.
//!
//! Provider config (named config given at start): `routing_mode` = `address` (default: one
//! listener per link, at the link's `address`) or `path` (one listener at `default_address`,
//! requests routed by the link's `path`, longest prefix wins); `default_address` (default
//! `0.0.0.0:8000`); `timeout_ms` (default 30000); `header_read_timeout_ms` (default 10000);
//! `max_connections` (default 1024, per listener); `idempotent_methods` (none beyond `GET`,
//! `HEAD`, `OPTIONS`). Link source config: `address`, `path`, `timeout_ms`,
//! `idempotent_methods`, and in `address` mode `header_read_timeout_ms` and `max_connections`
//! for that link's listener. A request past its timeout gets 408; a link without a running
//! replica, or an address whose link was deleted, gets 503 with a body that says what is
//! missing.
//!
//! Hostile clients: a connection must send a complete request head within
//! `header_read_timeout_ms` of opening, and again of each response (so it is also how long an
//! idle keep-alive connection is kept), or it is closed. A listener holding `max_connections`
//! answers any further connection with one `503` and closes it, so its file descriptors stay
//! bounded whatever clients do.
//!
//! A call whose replica is lost (its host was killed) is sent once more, to another replica,
//! when the request is idempotent and its body is still held (see [`retry`]).
#![deny(missing_docs)]

pub mod retry;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyDataStream, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use trellis_lattice::ctl::StringMap;
use trellis_lattice::rpc::{self, CallInfo, Invocation, RpcError, RpcErrorKind};
use trellis_lattice::telemetry::{self, KeyValue, SpanKind, TraceSpan};
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
    limits: Limits,
    retry: retry::Policy,
}

/// What bounds one listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    /// How long a connection may take to send a complete request head, from when it opens or
    /// its previous response was written (so also the keep-alive idle timeout).
    header_read_timeout: Duration,
    /// Most connections open at once on the listener.
    max_connections: usize,
}

/// Default [`Limits::header_read_timeout`].
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Limits::max_connections`].
const MAX_CONNECTIONS: usize = 1024;
/// Largest `max_connections` accepted (each connection costs a file descriptor).
const MAX_CONNECTIONS_LIMIT: usize = 65_536;
/// Longest `header_read_timeout_ms` accepted: one hour.
const MAX_HEADER_READ_TIMEOUT_MS: u64 = 3_600_000;

/// How long a call whose replica was lost waits for another replica to appear (a replica
/// re-placed elsewhere, say) when its retry finds none, within its deadline.
const REPLICA_WAIT: Duration = Duration::from_secs(10);
/// How often it looks during [`REPLICA_WAIT`].
const REPLICA_POLL: Duration = Duration::from_millis(100);

/// Parses `key` of a config as a whole number in `1..=max`.
fn bounded(cfg: &StringMap, key: &str, max: u64) -> Result<Option<u64>, String> {
    let Some(v) = cfg.get(key) else { return Ok(None) };
    match v.trim().parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(format!("{key} `{}` is not a whole number from 1 to {max}", v.escape_debug())),
    }
}

impl Limits {
    /// `base` with what `cfg` sets.
    fn from(cfg: &StringMap, base: Limits) -> Result<Self, String> {
        let header_read_timeout =
            bounded(cfg, "header_read_timeout_ms", MAX_HEADER_READ_TIMEOUT_MS)?.map(Duration::from_millis).unwrap_or(base.header_read_timeout);
        let max_connections = bounded(cfg, "max_connections", MAX_CONNECTIONS_LIMIT as u64)?.map(|n| n as usize).unwrap_or(base.max_connections);
        Ok(Self { header_read_timeout, max_connections })
    }
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
        let defaults = Limits { header_read_timeout: HEADER_READ_TIMEOUT, max_connections: MAX_CONNECTIONS };
        let limits = Limits::from(c, defaults).map_err(|e| ProviderError::Failed(format!("provider config: {e}")))?;
        let retry = retry::Policy::parse(c.get("idempotent_methods").map(String::as_str).unwrap_or_default())
            .map_err(|e| ProviderError::Failed(format!("provider config: {e}")))?;
        Ok(Self { mode, default_address, timeout, limits, retry })
    }
}

/// One link, resolved to where and how it is served.
#[derive(Debug, Clone)]
struct Route {
    link: Link,
    address: SocketAddr,
    path: String,
    timeout: Duration,
    limits: Limits,
    retry: retry::Policy,
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
        // A bad limit or method list in link config keeps the provider's own, with a warning
        // that says which link and what to fix: the link still serves.
        let limits = Limits::from(&cfg, settings.limits).unwrap_or_else(|e| {
            tracing::warn!(target = link.target, name = link.name, error = e, "link config: using the provider's connection limits");
            settings.limits
        });
        let retry = match cfg.get("idempotent_methods") {
            None => settings.retry.clone(),
            Some(v) => retry::Policy::parse(v).unwrap_or_else(|e| {
                tracing::warn!(target = link.target, name = link.name, error = e, "link config: using the provider's idempotent_methods");
                settings.retry.clone()
            }),
        };
        out.push(Arc::new(Route { link, address, path, timeout, limits, retry }));
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
    // Subscribed before the first read of the links, so a link applied in between is a change
    // seen rather than one lost until the next.
    let mut changes = ctx.changes();
    let shared = Arc::new(Shared { routes: RwLock::new(routes(&ctx, &settings)), ctx: ctx.clone(), settings: settings.clone() });
    let mut listeners: HashMap<SocketAddr, tokio::task::JoinHandle<()>> = HashMap::new();
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

/// The limits of the listener at `addr`: its link's in `address` mode, else the provider's.
fn listener_limits(shared: &Shared, addr: SocketAddr) -> Limits {
    let routes = shared.routes.read().unwrap_or_else(|p| p.into_inner());
    match shared.settings.mode {
        Mode::Address => routes.iter().find(|r| r.address == addr).map_or(shared.settings.limits, |r| r.limits),
        Mode::Path => shared.settings.limits,
    }
}

/// Counts a listener's open connections; dropping it closes the count for one.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept(listener: tokio::net::TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
    let open = Arc::new(AtomicUsize::new(0));
    let refusing = Arc::new(AtomicUsize::new(0));
    let mut refused: u64 = 0;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let limits = listener_limits(&shared, addr);
        if open.fetch_add(1, Ordering::SeqCst) >= limits.max_connections {
            open.fetch_sub(1, Ordering::SeqCst);
            refused += 1;
            // One log line per 1,000 refusals, not one per connection a flood opens.
            if refused % 1000 == 1 {
                tracing::warn!(%addr, max_connections = limits.max_connections, refused, "connection limit reached; refusing connections");
            }
            refuse(stream, addr, limits.max_connections, &refusing);
            continue;
        }
        let guard = Open(open.clone());
        // Responses are written head then body; don't let Nagle hold the second write back.
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, addr, req).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// Most refusals in flight on one listener; past it an over-cap connection is closed at once.
const MAX_REFUSING: usize = 64;
/// How long a refusal waits for the client's request before it answers (a client that sees an
/// answer before it has sent its request takes it for a broken connection).
const REFUSAL_WAIT: Duration = Duration::from_millis(250);

/// Answers a connection over the limit with one `503` and closes it. At most [`MAX_REFUSING`]
/// are answered at once, each within about twice [`REFUSAL_WAIT`]; beyond that a connection is
/// closed unanswered, so a flood costs no more than that many descriptors beyond the cap.
fn refuse(mut stream: tokio::net::TcpStream, addr: SocketAddr, max: usize, refusing: &Arc<AtomicUsize>) {
    use tokio::io::AsyncWriteExt as _;
    if refusing.fetch_add(1, Ordering::SeqCst) >= MAX_REFUSING {
        refusing.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let guard = Open(refusing.clone());
    tokio::spawn(async move {
        let _guard = guard;
        // Readiness may be reported before any byte has come: wait for a read that gets one.
        let _ = tokio::time::timeout(REFUSAL_WAIT, async {
            let mut head = [0u8; 8192];
            loop {
                if stream.readable().await.is_err() {
                    return;
                }
                match stream.try_read(&mut head) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    _ => return,
                }
            }
        })
        .await;
        let body = format!("{addr} holds its limit of {max} connections (max_connections); retry later\n");
        let reply = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(REFUSAL_WAIT, async {
            stream.write_all(reply.as_bytes()).await?;
            stream.shutdown().await
        })
        .await;
    });
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
    // An incoming `traceparent` is honoured: the request's span is its child (with traces
    // off, it is passed on as it came).
    let incoming = parts.headers.get(rpc::TRACEPARENT_HEADER).and_then(|v| v.to_str().ok()).and_then(telemetry::clean_traceparent);
    let mut span = request_span(ctx, &route, &parts, incoming.as_deref());
    let traceparent = span.traceparent().or(incoming);
    let resp = forward(ctx, &route, parts, body, traceparent).await;
    if span.is_recording() {
        let status = resp.status().as_u16();
        span.set(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 500 {
            span.record_error(&status.to_string(), resp.status().canonical_reason().unwrap_or("server error"));
        } else {
            span.set(KeyValue::new(telemetry::attr::OUTCOME, "ok"));
        }
    }
    resp
}

/// The server span of one HTTP request (disabled when traces are off), after OTel's HTTP
/// semantic conventions: named `{method} {route}` (the link's path in path mode, else the
/// method alone), under `traceparent`.
fn request_span(ctx: &ProviderContext, route: &Route, parts: &http::request::Parts, traceparent: Option<&str>) -> TraceSpan {
    if !telemetry::enabled() {
        return TraceSpan::none();
    }
    let method = parts.method.as_str();
    let http_route = (!route.path.is_empty()).then_some(route.path.as_str());
    let mut span = TraceSpan::start("http", SpanKind::Server, traceparent, || {
        let mut attributes = vec![
            KeyValue::new(telemetry::attr::LATTICE, ctx.lattice().to_string()),
            KeyValue::new(telemetry::attr::HOST_ID, ctx.host_data().host_id.clone()),
            KeyValue::new(telemetry::attr::SOURCE, ctx.id().to_string()),
            KeyValue::new(telemetry::attr::TARGET, route.link.target.clone()),
            KeyValue::new(telemetry::attr::LINK_NAME, route.link.name.clone()),
            KeyValue::new(telemetry::attr::INTERFACE, rpc::http::INTERFACE),
            KeyValue::new(telemetry::attr::FUNCTION, rpc::http::FUNCTION),
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("url.path", parts.uri.path().to_string()),
            KeyValue::new("url.scheme", "http"),
        ];
        if let Some(r) = http_route {
            attributes.push(KeyValue::new("http.route", r.to_string()));
        }
        attributes
    });
    if span.is_recording() {
        span.rename(match http_route {
            Some(r) => format!("{method} {r}"),
            None => method.to_string(),
        });
    }
    span
}

/// Sends the request to the route's target and turns the answer into the HTTP response.
async fn forward(
    ctx: &ProviderContext,
    route: &Route,
    parts: http::request::Parts,
    body: Incoming,
    traceparent: Option<String>,
) -> http::Response<ResponseBody> {
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
    let body: rpc::Body =
        BodyDataStream::new(body).map_err(move |e| RpcError::new(RpcErrorKind::Transport, &body_call, format!("reading the request body failed: {e}"))).boxed();
    let invocation = Invocation {
        call,
        traceparent,
        deadline: tokio::time::Instant::now() + route.timeout,
        head: rpc::http::encode(&head),
        body: rpc::full_body(Bytes::new()),
    };
    let outcome = if route.retry.allows(&parts.method) {
        call_retrying(ctx, invocation, body).await
    } else {
        ctx.router().call(Invocation { body, ..invocation }).await.map_err(|mut e| {
            if e.kind == RpcErrorKind::Lost {
                e.message = format!("{}; {}", e.message, route.retry.refusal(&parts.method));
            }
            e
        })
    };
    match outcome {
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

/// Makes the call of `inv` with `body`, and when its replica is lost makes it once more (the
/// request is idempotent: the caller checked), replaying the body, unless more of it was read
/// than [`retry::REPLAY_BYTES`]. A retry that finds no replica at all waits for one, at most
/// [`REPLICA_WAIT`] and never past the deadline: right after a host is lost its replicas are
/// being re-placed.
async fn call_retrying(ctx: &ProviderContext, inv: Invocation, body: rpc::Body) -> Result<rpc::Response, RpcError> {
    let (replay, first) = retry::Replay::new(body, retry::REPLAY_BYTES, inv.call.clone());
    let attempt =
        |body: rpc::Body| Invocation { call: inv.call.clone(), traceparent: inv.traceparent.clone(), deadline: inv.deadline, head: inv.head.clone(), body };
    let lost = match ctx.router().call(attempt(first)).await {
        Err(e) if e.kind == RpcErrorKind::Lost => e,
        other => return other,
    };
    tracing::info!(target = inv.call.target, link = inv.call.link_name, "retrying an idempotent request whose replica was lost");
    let waiting_since = tokio::time::Instant::now();
    loop {
        let Some(body) = replay.attempt().await else {
            return Err(RpcError {
                message: format!("{}; not retried: the request body outgrew the {} KiB kept for a retry", lost.message, retry::REPLAY_BYTES / 1024),
                ..lost
            });
        };
        match ctx.router().call(attempt(body)).await {
            Err(e)
                if e.kind == RpcErrorKind::NoReplica && waiting_since.elapsed() < REPLICA_WAIT && tokio::time::Instant::now() + REPLICA_POLL < inv.deadline =>
            {
                tokio::time::sleep(REPLICA_POLL).await;
            }
            Err(e) if e.kind == RpcErrorKind::Lost => {
                return Err(RpcError { message: format!("{}; it was lost once already and is retried only once", e.message), ..e });
            }
            other => return other,
        }
    }
}

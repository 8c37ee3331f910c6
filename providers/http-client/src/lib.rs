//! # trellis-provider-http-client
//!
//! Serves `wasi:http/outgoing-handler` to the components linked to it: their hosts send each
//! outgoing request here over the data plane ([`trellis_lattice::rpc::outgoing_http`]), this
//! provider makes it with hyper and streams the response back. It is the link *target*:
//!
//! ```text
//! wash start provider builtin://http-client http-client
//! wash config put fetcher-allow allowed_hosts='api.example.com,*.cdn.example.net'
//! wash link put fetcher http-client wasi http --interface outgoing-handler --target-config fetcher-allow
//! ```
//!
//! **Deny by default.** A request is made only when the caller's link to this provider (source
//! = the calling component, the link name it called under) has an `allowed_hosts` entry
//! matching it ([`allow`]); otherwise the answer is `HttpRequestDenied`, naming the host and
//! the key. Loopback, link-local (the cloud metadata address among them) and private
//! addresses are refused unless the host is named exactly, checked on the addresses the name
//! resolves to, right before connecting to them. Redirects are not followed (`wasi:http`
//! hands the guest the 3xx; following one is a new request, checked again).
//!
//! Settings. Link target config: `allowed_hosts` (read at each request, so a change applies
//! to the next one). Provider config (given at start): `tls_ca_file` (a PEM file of extra CA
//! certificates trusted beside webpki's roots and the system's), `max_concurrent_requests`
//! (default [`DEFAULT_MAX_CONCURRENT`]; one more is answered `ConnectionLimitReached`).
//!
//! Timeouts: the guest's connect timeout (default [`client::DEFAULT_CONNECT_TIMEOUT`]),
//! first-byte timeout (until the response head; `HttpResponseTimeout`) and between-bytes
//! timeout (each body chunk; the body fails as a read timeout), all within the call's
//! deadline (the calling invocation's).
//!
//! Caps: a request URI of at most [`MAX_URI_BYTES`], at most
//! [`trellis_lattice::rpc::outgoing_http::MAX_HEADERS`] header fields each way, a response
//! head of at most [`MAX_RESPONSE_HEAD_BYTES`]; the data plane caps any head at
//! [`trellis_lattice::rpc::MAX_HEAD_BYTES`]. Bodies stream in bounded chunks both ways.
//! Connections are pooled per provider (HTTP/1.1 keep-alive, HTTP/2 by ALPN over TLS), idle
//! ones evicted after [`client::POOL_IDLE_TIMEOUT`].
#![deny(missing_docs)]

pub mod allow;
pub mod client;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyDataStream, BodyExt, StreamBody};
use hyper::body::Frame;
use trellis_lattice::rpc::outgoing_http::{self, ErrorCode, HttpError, Reply, RequestHead};
use trellis_lattice::rpc::{self, CallInfo, Handler, Invocation, Response, RpcError, RpcErrorKind};
use trellis_provider_sdk::{Builtin, ProviderContext, ProviderError, StringMap};

use crate::allow::{ALLOWED_HOSTS, AllowList, Verdict};
use crate::client::Clients;

/// The provider's name, as in `builtin://http-client`.
pub const NAME: &str = "http-client";
/// Default of `max_concurrent_requests`.
pub const DEFAULT_MAX_CONCURRENT: usize = 256;
/// Largest `max_concurrent_requests` accepted.
const MAX_CONCURRENT_LIMIT: usize = 65_536;
/// Longest request URI accepted.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest response head (names and values of its fields) passed on.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// Request headers never passed on: hyper sets `host` from the URI (so it always names the
/// host the allow-list checked), and the hop-by-hop ones belong to one connection.
const DROPPED_HEADERS: &[&str] = &["host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "http2-settings"];

/// This provider as a host built-in.
pub fn builtin() -> Builtin {
    Builtin { name: NAME, run }
}

/// The provider's entry point.
pub fn run(ctx: ProviderContext) -> BoxFuture<'static, Result<(), ProviderError>> {
    Box::pin(serve(ctx))
}

async fn serve(ctx: ProviderContext) -> Result<(), ProviderError> {
    let config = lower(ctx.config());
    let clients = Clients::new(config.get("tls_ca_file").map(String::as_str).filter(|s| !s.is_empty())).map_err(ProviderError::Failed)?;
    let max = match config.get("max_concurrent_requests") {
        None => DEFAULT_MAX_CONCURRENT,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_CONCURRENT_LIMIT).contains(&n) => n,
            _ => {
                return Err(ProviderError::Failed(format!(
                    "max_concurrent_requests `{}` is not a whole number from 1 to {MAX_CONCURRENT_LIMIT}",
                    v.escape_debug()
                )));
            }
        },
    };
    let handler = Arc::new(ClientHandler { ctx: ctx.clone(), clients, slots: Arc::new(tokio::sync::Semaphore::new(max)), max });
    tracing::info!(provider_id = ctx.id(), max_concurrent_requests = max, "http-client limits");
    ctx.serve_calls(handler, "http-client").await
}

/// `cfg` with lowercase keys.
fn lower(cfg: &StringMap) -> StringMap {
    cfg.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect()
}

struct ClientHandler {
    ctx: ProviderContext,
    clients: Clients,
    slots: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl Handler for ClientHandler {
    fn call(&self, inv: Invocation) -> BoxFuture<'static, Result<Response, RpcError>> {
        if inv.call.interface != outgoing_http::INTERFACE || inv.call.function != outgoing_http::FUNCTION {
            let e = RpcError::new(
                RpcErrorKind::Unsupported,
                &inv.call,
                format!("the http-client provider serves `{}.{}` only", outgoing_http::INTERFACE, outgoing_http::FUNCTION),
            );
            return Box::pin(std::future::ready(Err(e)));
        }
        let head: RequestHead = match outgoing_http::decode(&inv.head) {
            Ok(h) => h,
            Err(e) => {
                let e = RpcError::new(RpcErrorKind::Malformed, &inv.call, format!("the outgoing request head could not be decoded: {e}"));
                return Box::pin(std::future::ready(Err(e)));
            }
        };
        let allow = self.allow_list(&inv.call);
        let clients = self.clients.clone();
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            let e = HttpError::new(
                ErrorCode::ConnectionLimitReached,
                format!("the http-client has {} requests in flight, its `max_concurrent_requests`", self.max),
            );
            return Box::pin(std::future::ready(Ok(error_reply(e))));
        };
        Box::pin(async move {
            let allow = match allow {
                Ok(a) => a,
                Err(e) => return Ok(error_reply(e)),
            };
            match send(&clients, &allow, head, inv, permit).await {
                Ok(r) => Ok(r),
                Err(e) => Ok(error_reply(e)),
            }
        })
    }
}

impl ClientHandler {
    /// The allow-list of the caller's link; the error says which link is missing or what is
    /// wrong with its `allowed_hosts`.
    fn allow_list(&self, call: &CallInfo) -> Result<AllowList, HttpError> {
        // The caller's slot only (a range of the key layout), not every link in the lattice.
        let link = self
            .ctx
            .caller_link(call, "wasi", "http", &["outgoing-handler"], " --target-config CONFIG")
            .map_err(|e| HttpError::new(ErrorCode::HttpRequestDenied, e))?;
        let cfg = lower(&self.ctx.state().merged_config(&link.target_config));
        AllowList::parse(cfg.get(ALLOWED_HOSTS).map_or("", String::as_str))
            .map_err(|e| HttpError::new(ErrorCode::HttpRequestDenied, format!("{e}; fix the link's target config")))
    }
}

fn error_reply(e: HttpError) -> Response {
    tracing::debug!(code = ?e.code, error = %e.message, "outgoing request refused or failed");
    Response { head: outgoing_http::encode(&Reply::Error(e)), body: rpc::full_body(Bytes::new()) }
}

fn ms(v: Option<u64>) -> Option<Duration> {
    v.map(Duration::from_millis)
}

/// Checks `head` against `allow`, sends it with `inv`'s body, and answers with the response
/// head and its streaming body.
async fn send(
    clients: &Clients,
    allow: &AllowList,
    head: RequestHead,
    inv: Invocation,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<Response, HttpError> {
    if head.uri.len() > MAX_URI_BYTES {
        return Err(HttpError::new(ErrorCode::HttpRequestUriInvalid, format!("the URI is {} bytes; at most {MAX_URI_BYTES} are sent", head.uri.len())));
    }
    if head.headers.len() > outgoing_http::MAX_HEADERS {
        return Err(HttpError::new(
            ErrorCode::HttpRequestHeaderSectionSize,
            format!("the request has {} header fields; at most {} are sent", head.headers.len(), outgoing_http::MAX_HEADERS),
        ));
    }
    let uri: http::Uri = head.uri.parse().map_err(|e| HttpError::new(ErrorCode::HttpRequestUriInvalid, format!("`{}` is not a URI: {e}", head.uri)))?;
    let scheme = match uri.scheme_str() {
        Some("http") => "http",
        Some("https") => "https",
        _ => return Err(HttpError::new(ErrorCode::HttpRequestUriInvalid, format!("`{uri}` is not an absolute http or https URI"))),
    };
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| HttpError::new(ErrorCode::HttpRequestUriInvalid, format!("`{uri}` has no host")))?;
    let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    let client = match allow.verdict(scheme, host, port) {
        Verdict::Denied => {
            return Err(HttpError::new(
                ErrorCode::HttpRequestDenied,
                format!(
                    "`{scheme}://{host}:{port}` is not in the link's `{ALLOWED_HOSTS}`{}; add it (or a pattern that matches it) to the link's target config",
                    if allow.is_empty() { " (which is empty)" } else { "" }
                ),
            ));
        }
        Verdict::Public => &clients.public,
        Verdict::Named => &clients.named,
    };
    let method = http::Method::from_bytes(head.method.as_bytes())
        .map_err(|_| HttpError::new(ErrorCode::HttpRequestMethodInvalid, format!("`{}` is not a method", head.method)))?;
    // An empty body goes out as one (no chunked encoding on a GET); any other streams.
    let mut body = inv.body;
    let request_body = match body.next().await {
        None => http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync(),
        Some(first) => StreamBody::new(futures::stream::once(async move { first }).chain(body).map_ok(Frame::data)).boxed_unsync(),
    };
    let mut request = http::Request::new(request_body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    for (name, value) in head.headers {
        if DROPPED_HEADERS.iter().any(|d| name.eq_ignore_ascii_case(d)) {
            continue;
        }
        let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_bytes(&value)) else {
            return Err(HttpError::new(ErrorCode::HttpProtocolError, format!("header `{}` is not a valid header field", name.escape_debug())));
        };
        request.headers_mut().append(name, value);
    }
    let connect = ms(head.connect_timeout_ms).unwrap_or(client::DEFAULT_CONNECT_TIMEOUT);
    let first_byte = ms(head.first_byte_timeout_ms);
    let between = ms(head.between_bytes_timeout_ms);
    let pending = client::CONNECT_TIMEOUT.scope(connect, client.request(request));
    let response = match first_byte {
        Some(t) => match tokio::time::timeout(t, pending).await {
            Ok(r) => r,
            Err(_) => {
                return Err(HttpError::new(ErrorCode::HttpResponseTimeout, format!("no response head within the first-byte timeout ({} ms)", t.as_millis())));
            }
        },
        None => pending.await,
    };
    let response = response.map_err(|e| client::request_error(&e))?;
    let (parts, body) = response.into_parts();
    if parts.headers.len() > outgoing_http::MAX_HEADERS {
        return Err(HttpError::new(
            ErrorCode::HttpResponseHeaderSectionSize,
            format!("the response has {} header fields; at most {} are passed on", parts.headers.len(), outgoing_http::MAX_HEADERS),
        ));
    }
    let head_bytes: usize = parts.headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if head_bytes > MAX_RESPONSE_HEAD_BYTES {
        return Err(HttpError::new(
            ErrorCode::HttpResponseHeaderSectionSize,
            format!("the response head is {head_bytes} bytes; at most {MAX_RESPONSE_HEAD_BYTES} are passed on"),
        ));
    }
    let reply = Reply::Response(rpc::http::ResponseHead {
        status: parts.status.as_u16(),
        headers: parts.headers.iter().map(|(k, v)| (k.as_str().to_string(), serde_bytes::ByteBuf::from(v.as_bytes().to_vec()))).collect(),
    });
    let call = inv.call;
    let data = BodyDataStream::new(body);
    // The permit is held until the body has been read (or dropped).
    let body = futures::stream::unfold(Some((data, permit)), move |state| {
        let call = call.clone();
        async move {
            let (mut data, permit) = state?;
            let next = match between {
                Some(t) => match tokio::time::timeout(t, data.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        let e = RpcError::new(
                            RpcErrorKind::Deadline,
                            &call,
                            format!("no response body bytes within the between-bytes timeout ({} ms)", t.as_millis()),
                        );
                        return Some((Err(e), None));
                    }
                },
                None => data.next().await,
            };
            match next {
                None => None,
                Some(Ok(bytes)) => Some((Ok(bytes), Some((data, permit)))),
                Some(Err(e)) => Some((Err(RpcError::new(RpcErrorKind::Transport, &call, format!("the response body broke off: {e}"))), None)),
            }
        }
    })
    .boxed();
    Ok(Response { head: outgoing_http::encode(&reply), body })
}

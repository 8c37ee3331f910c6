//! The data plane: calls from a source (provider or component) to a target (component or
//! provider) for one function of one interface.
//!
//! - Subject `wasmbus.rpc.{lattice}.{target}.{ns:pkg/interface}.{function}`; every replica of a
//!   target subscribes to `wasmbus.rpc.{lattice}.{target}.>` in the queue group
//!   `wasmbus.rpc.{lattice}.{target}`, so replicas on different hosts share the load.
//! - NATS headers carry the source id, link name, W3C `traceparent` and the time left before
//!   the caller's deadline; the payload is MessagePack: a function-specific `head` and the
//!   first part of the `body`.
//! - A body larger than what fits in one message streams: the message names an inbox from
//!   which the receiver pulls the rest one chunk at a time, so memory stays bounded by a chunk
//!   on each side however large the body is.
//! - [`Router::call`] routes to a handler registered in this process without touching NATS
//!   (local routing); the [`Invocation`] and [`Response`] are the same either way, and so are
//!   the errors.
//! - Delivery is at-most-once: a call is sent once and never retried by this layer.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Header: the id of the calling component or provider.
pub const SOURCE_HEADER: &str = "Trellis-Source";
/// Header: the link name the call travels under.
pub const LINK_HEADER: &str = "Trellis-Link";
/// Header: the caller's time left, in milliseconds.
pub const TIMEOUT_HEADER: &str = "Trellis-Timeout-Ms";
/// Header: W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Largest function-specific head accepted (HTTP method, URI and headers, call arguments).
pub const MAX_HEAD_BYTES: usize = 256 * 1024;
/// Room left in each message for headers and framing.
const FRAMING_ALLOWANCE: usize = 8 * 1024;

/// The subject of a call.
pub fn subject(lattice: &str, target: &str, interface: &str, function: &str) -> String {
    format!("wasmbus.rpc.{lattice}.{target}.{interface}.{function}")
}

/// What every replica of `target` subscribes to, and the queue group it joins.
pub fn target_subscription(lattice: &str, target: &str) -> (String, String) {
    (format!("wasmbus.rpc.{lattice}.{target}.>"), format!("wasmbus.rpc.{lattice}.{target}"))
}

/// Who calls whom, for routing and for every error message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CallInfo {
    /// The lattice.
    pub lattice: String,
    /// The caller.
    pub source: String,
    /// The callee.
    pub target: String,
    /// `namespace:package/interface`.
    pub interface: String,
    /// The function.
    pub function: String,
    /// The link name.
    pub link_name: String,
}

/// What kind of failure an [`RpcError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RpcErrorKind {
    /// No link allows this call.
    NoLink,
    /// No replica of the target is running.
    NoReplica,
    /// The caller's deadline passed.
    Deadline,
    /// The target is at its concurrency limit with a full queue.
    Busy,
    /// The target ran and failed (trap, error result).
    Handler,
    /// The target does not implement the interface or function.
    Unsupported,
    /// A message could not be decoded or was too large.
    Malformed,
    /// NATS failed below the call.
    Transport,
}

/// A failed call; its message names lattice, source, target, interface, function and link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcError {
    /// The kind of failure.
    pub kind: RpcErrorKind,
    /// What happened and what to do.
    pub message: String,
    /// The call it happened to.
    pub call: CallInfo,
}

impl RpcError {
    /// An error of `kind` about `call`.
    pub fn new(kind: RpcErrorKind, call: &CallInfo, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), call: call.clone() }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.call;
        write!(
            f,
            "{} (lattice `{}`, source `{}`, target `{}`, interface `{}`, function `{}`, link `{}`)",
            self.message, c.lattice, c.source, c.target, c.interface, c.function, c.link_name
        )
    }
}

impl std::error::Error for RpcError {}

/// A body: a stream of byte chunks, pulled lazily.
pub type Body = BoxStream<'static, Result<Bytes, RpcError>>;

/// A body of `bytes`.
pub fn full_body(bytes: Bytes) -> Body {
    if bytes.is_empty() { futures::stream::empty().boxed() } else { futures::stream::once(async move { Ok(bytes) }).boxed() }
}

/// Reads a whole body into memory (for small bodies and tests).
pub async fn collect_body(body: Body) -> Result<Bytes, RpcError> {
    let mut out = BytesMut::new();
    let mut body = body;
    while let Some(chunk) = body.try_next().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// One call.
pub struct Invocation {
    /// Who calls whom.
    pub call: CallInfo,
    /// W3C trace context of the caller.
    pub traceparent: Option<String>,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// Function-specific head (MessagePack).
    pub head: Bytes,
    /// The body.
    pub body: Body,
}

/// A call's result.
pub struct Response {
    /// Function-specific head (MessagePack).
    pub head: Bytes,
    /// The body.
    pub body: Body,
}

/// Something that answers calls: a component, a provider.
pub trait Handler: Send + Sync + 'static {
    /// Answers `inv`.
    fn call(&self, inv: Invocation) -> BoxFuture<'static, Result<Response, RpcError>>;
}

#[derive(Serialize, Deserialize)]
struct WireMessage {
    #[serde(with = "serde_bytes")]
    head: Vec<u8>,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    /// Inbox to pull the rest of the body from.
    more: Option<String>,
}

#[derive(Serialize, Deserialize)]
enum WireReply {
    Ok(WireMessage),
    Err(RpcError),
}

#[derive(Serialize, Deserialize)]
enum WireChunk {
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    End,
    Err(RpcError),
}

fn encode<T: Serialize>(v: &T) -> Bytes {
    // Our wire types always serialise.
    rmp_serde::to_vec(v).map(Bytes::from).unwrap_or_default()
}

/// Sends and receives calls for one lattice; holds the local routes of this process.
#[derive(Clone)]
pub struct Router {
    nats: async_nats::Client,
    lattice: String,
    local: Arc<RwLock<HashMap<String, Arc<dyn Handler>>>>,
    chunk: usize,
}

/// Serving a target on NATS; stops when dropped.
pub struct Serving(tokio::task::JoinHandle<()>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Router {
    /// A router for `lattice` over `nats`.
    pub fn new(nats: async_nats::Client, lattice: &str) -> Self {
        let max = nats.server_info().max_payload;
        let chunk = max.saturating_sub(FRAMING_ALLOWANCE).max(16 * 1024);
        Self { nats, lattice: lattice.into(), local: Arc::default(), chunk }
    }

    /// The lattice.
    pub fn lattice(&self) -> &str {
        &self.lattice
    }

    /// The largest body part sent in one message with no head (a pulled chunk).
    pub fn chunk_size(&self) -> usize {
        self.chunk
    }

    /// How much body fits in a message beside a head of `head_len` bytes.
    fn inline_limit(&self, head_len: usize) -> usize {
        self.chunk.saturating_sub(head_len)
    }

    /// Routes calls to `target` made through this router to `handler` directly.
    pub fn register_local(&self, target: &str, handler: Arc<dyn Handler>) {
        self.local.write().unwrap_or_else(|p| p.into_inner()).insert(target.into(), handler);
    }

    /// Stops routing `target` locally.
    pub fn unregister_local(&self, target: &str) {
        self.local.write().unwrap_or_else(|p| p.into_inner()).remove(target);
    }

    /// Makes a call: locally when the target is registered here, else over NATS.
    pub async fn call(&self, inv: Invocation) -> Result<Response, RpcError> {
        if inv.head.len() > MAX_HEAD_BYTES {
            return Err(head_too_large(&inv.call, inv.head.len()));
        }
        let local = self.local.read().unwrap_or_else(|p| p.into_inner()).get(&inv.call.target).cloned();
        let (call, deadline) = (inv.call.clone(), inv.deadline);
        let result = match local {
            Some(handler) => tokio::time::timeout_at(deadline, handler.call(inv)).await,
            None => tokio::time::timeout_at(deadline, self.call_remote(inv)).await,
        };
        result.unwrap_or_else(|_| Err(deadline_error(&call)))
    }

    async fn call_remote(&self, inv: Invocation) -> Result<Response, RpcError> {
        let call = inv.call;
        let (first, rest) = take_prefix(inv.body, self.inline_limit(inv.head.len())).await?;
        let more = match rest {
            Some(rest) => Some(self.hold(rest, call.clone(), inv.deadline).await?),
            None => None,
        };
        let payload = encode(&WireMessage { head: inv.head.to_vec(), body: first.to_vec(), more });
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(SOURCE_HEADER, call.source.as_str());
        headers.insert(LINK_HEADER, call.link_name.as_str());
        let left = inv.deadline.saturating_duration_since(Instant::now());
        headers.insert(TIMEOUT_HEADER, left.as_millis().to_string().as_str());
        if let Some(tp) = &inv.traceparent {
            headers.insert(TRACEPARENT_HEADER, tp.as_str());
        }
        let subject = subject(&self.lattice, &call.target, &call.interface, &call.function);
        let request = async_nats::Request::new().payload(payload).headers(headers).timeout(Some(left));
        let msg = self.nats.send_request(subject, request).await.map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => RpcError::new(
                RpcErrorKind::NoReplica,
                &call,
                format!("no running replica of `{}` answered; start it (`wash start component`) or check the link's target", call.target),
            ),
            async_nats::RequestErrorKind::TimedOut => deadline_error(&call),
            _ => RpcError::new(RpcErrorKind::Transport, &call, format!("the call could not be sent: {e}")),
        })?;
        match rmp_serde::from_slice::<WireReply>(&msg.payload) {
            Ok(WireReply::Ok(m)) => Ok(Response { head: m.head.into(), body: self.pull_body(m.body.into(), m.more, call, inv.deadline) }),
            Ok(WireReply::Err(e)) => Err(e),
            Err(e) => Err(RpcError::new(RpcErrorKind::Malformed, &call, format!("the reply could not be decoded: {e}"))),
        }
    }

    /// Serves the rest of a body at a fresh inbox, one chunk per pull, until it ends, fails, or
    /// nobody pulls before `deadline`. Returns the inbox.
    async fn hold(&self, mut rest: Body, call: CallInfo, deadline: Instant) -> Result<String, RpcError> {
        let inbox = self.nats.new_inbox();
        let mut pulls = self
            .nats
            .subscribe(inbox.clone())
            .await
            .map_err(|e| RpcError::new(RpcErrorKind::Transport, &call, format!("cannot open a body stream: {e}")))?;
        let (nats, chunk) = (self.nats.clone(), self.chunk);
        tokio::spawn(async move {
            let mut pending = BytesMut::new();
            let mut ended = false;
            while let Ok(Some(pull)) = tokio::time::timeout_at(deadline, pulls.next()).await {
                let Some(reply) = pull.reply else { continue };
                // Fill one chunk from the source stream.
                let mut failed = None;
                while !ended && pending.len() < chunk {
                    match rest.next().await {
                        Some(Ok(b)) => pending.extend_from_slice(&b),
                        Some(Err(e)) => {
                            failed = Some(e);
                            break;
                        }
                        None => ended = true,
                    }
                }
                let frame = if let Some(e) = failed {
                    WireChunk::Err(e)
                } else if pending.is_empty() && ended {
                    WireChunk::End
                } else {
                    let n = pending.len().min(chunk);
                    WireChunk::Data(pending.split_to(n).to_vec())
                };
                let last = !matches!(frame, WireChunk::Data(_));
                if nats.publish(reply, encode(&frame)).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(inbox)
    }

    /// A body whose first part is `first` and whose rest, if any, is pulled from `more`.
    fn pull_body(&self, first: Bytes, more: Option<String>, call: CallInfo, deadline: Instant) -> Body {
        let head = full_body(first);
        let Some(inbox) = more else { return head };
        let nats = self.nats.clone();
        let tail = futures::stream::try_unfold(Some((nats, inbox, call)), move |state| async move {
            let Some((nats, inbox, call)) = state else { return Ok(None) };
            let left = deadline.saturating_duration_since(Instant::now());
            let req = async_nats::Request::new().payload(Bytes::new()).timeout(Some(left.max(Duration::from_millis(1))));
            let msg = nats.send_request(inbox.clone(), req).await.map_err(|e| {
                RpcError::new(RpcErrorKind::Transport, &call, format!("the body stream broke off: {e}"))
            })?;
            match rmp_serde::from_slice::<WireChunk>(&msg.payload) {
                Ok(WireChunk::Data(d)) => Ok(Some((Bytes::from(d), Some((nats, inbox, call))))),
                Ok(WireChunk::End) => Ok(None),
                Ok(WireChunk::Err(e)) => Err(e),
                Err(e) => Err(RpcError::new(RpcErrorKind::Malformed, &call, format!("a body chunk could not be decoded: {e}"))),
            }
        })
        .try_filter(|b| futures::future::ready(!b.is_empty()));
        head.chain(tail).boxed()
    }

    /// Answers calls to `target` from NATS with `handler`, sharing the load with every other
    /// replica of `target`. Local callers reach it only once it is also registered with
    /// [`Router::register_local`].
    pub async fn serve(&self, target: &str, handler: Arc<dyn Handler>) -> Result<Serving, crate::Error> {
        let (subject, queue) = target_subscription(&self.lattice, target);
        let mut sub = self
            .nats
            .queue_subscribe(subject.clone(), queue)
            .await
            .map_err(|e| crate::Error::new(crate::ErrorKind::Transport, format!("cannot subscribe to `{subject}`")).with_source(e))?;
        // Callers elsewhere must find the subscription once we say the target is up.
        crate::round_trip(&self.nats).await?;
        let router = self.clone();
        let target = target.to_string();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let (router, handler, target) = (router.clone(), handler.clone(), target.clone());
                tokio::spawn(async move { router.answer(&target, handler, msg).await });
            }
        });
        Ok(Serving(task))
    }

    async fn answer(&self, target: &str, handler: Arc<dyn Handler>, msg: async_nats::Message) {
        let Some(reply_to) = msg.reply.clone() else { return };
        let header = |name: &str| msg.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_string());
        let prefix = format!("wasmbus.rpc.{}.{target}.", self.lattice);
        let rest = msg.subject.as_str().strip_prefix(&prefix).unwrap_or_default();
        let (interface, function) = rest.rsplit_once('.').unwrap_or((rest, ""));
        let call = CallInfo {
            lattice: self.lattice.clone(),
            source: header(SOURCE_HEADER).unwrap_or_default(),
            target: target.into(),
            interface: interface.into(),
            function: function.into(),
            link_name: header(LINK_HEADER).unwrap_or_else(|| "default".into()),
        };
        let timeout = header(TIMEOUT_HEADER).and_then(|v| v.parse::<u64>().ok()).unwrap_or(30_000);
        let deadline = Instant::now() + Duration::from_millis(timeout);
        let result = match rmp_serde::from_slice::<WireMessage>(&msg.payload) {
            Err(e) => Err(RpcError::new(RpcErrorKind::Malformed, &call, format!("the call could not be decoded: {e}"))),
            Ok(m) if m.head.len() > MAX_HEAD_BYTES => Err(head_too_large(&call, m.head.len())),
            Ok(m) => {
                let inv = Invocation {
                    body: self.pull_body(m.body.into(), m.more, call.clone(), deadline),
                    call: call.clone(),
                    traceparent: header(TRACEPARENT_HEADER),
                    deadline,
                    head: m.head.into(),
                };
                match tokio::time::timeout_at(deadline, handler.call(inv)).await {
                    Ok(r) => r,
                    Err(_) => Err(deadline_error(&call)),
                }
            }
        };
        let reply = match result {
            Ok(resp) if resp.head.len() > MAX_HEAD_BYTES => WireReply::Err(head_too_large(&call, resp.head.len())),
            Ok(resp) => match take_prefix(resp.body, self.inline_limit(resp.head.len())).await {
                Ok((first, rest)) => {
                    let more = match rest {
                        Some(rest) => match self.hold(rest, call.clone(), deadline).await {
                            Ok(inbox) => Some(inbox),
                            Err(e) => {
                                let _ = self.nats.publish(reply_to, encode(&WireReply::Err(e))).await;
                                return;
                            }
                        },
                        None => None,
                    };
                    WireReply::Ok(WireMessage { head: resp.head.to_vec(), body: first.to_vec(), more })
                }
                Err(e) => WireReply::Err(e),
            },
            Err(e) => WireReply::Err(e),
        };
        if let Err(e) = self.nats.publish(reply_to, encode(&reply)).await {
            tracing::warn!(target, error = %e, "cannot send a data-plane reply");
        }
    }
}

fn deadline_error(call: &CallInfo) -> RpcError {
    RpcError::new(RpcErrorKind::Deadline, call, "the call did not complete before the caller's deadline")
}

fn head_too_large(call: &CallInfo, len: usize) -> RpcError {
    RpcError::new(
        RpcErrorKind::Malformed,
        call,
        format!("the head (HTTP headers or call arguments) is {len} bytes; the limit is {MAX_HEAD_BYTES}"),
    )
}

/// The error a data-plane reply carries, if it carries one (for tools and tests that talk to
/// the data plane without a [`Router`]).
pub fn reply_error(payload: &[u8]) -> Option<RpcError> {
    match rmp_serde::from_slice::<WireReply>(payload) {
        Ok(WireReply::Err(e)) => Some(e),
        _ => None,
    }
}

/// Reads `body` until `limit` bytes or its end. Returns what was read and, if the body goes on,
/// the rest (beginning with any excess already read).
pub async fn take_prefix(mut body: Body, limit: usize) -> Result<(Bytes, Option<Body>), RpcError> {
    let mut buf = BytesMut::new();
    while buf.len() < limit {
        match body.next().await {
            Some(chunk) => buf.extend_from_slice(&chunk?),
            None => return Ok((buf.freeze(), None)),
        }
    }
    let first = buf.split_to(limit).freeze();
    let excess = buf.freeze();
    let rest = if excess.is_empty() { body } else { futures::stream::once(async move { Ok(excess) }).chain(body).boxed() };
    Ok((first, Some(rest)))
}

/// The HTTP function of `wasi:http/incoming-handler` on the data plane.
pub mod http {
    use serde::{Deserialize, Serialize};

    /// The interface name.
    pub const INTERFACE: &str = "wasi:http/incoming-handler";
    /// The function name.
    pub const FUNCTION: &str = "handle";

    /// The head of an HTTP request.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
    pub struct RequestHead {
        /// Method, e.g. `GET`.
        pub method: String,
        /// Path and query, or a full URI.
        pub uri: String,
        /// Header names and values.
        pub headers: Vec<(String, serde_bytes::ByteBuf)>,
    }

    /// The head of an HTTP response.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
    pub struct ResponseHead {
        /// Status code.
        pub status: u16,
        /// Header names and values.
        pub headers: Vec<(String, serde_bytes::ByteBuf)>,
    }

    /// Encodes a head.
    pub fn encode<T: Serialize>(head: &T) -> bytes::Bytes {
        super::encode(head)
    }

    /// Decodes a head.
    pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn take_prefix_splits_and_keeps_the_excess() {
        let body = futures::stream::iter([Ok(Bytes::from_static(b"hello ")), Ok(Bytes::from_static(b"world"))]).boxed();
        let (first, rest) = take_prefix(body, 8).await.unwrap();
        assert_eq!(first.as_ref(), b"hello wo");
        assert_eq!(collect_body(rest.unwrap()).await.unwrap().as_ref(), b"rld");
        let (all, rest) = take_prefix(full_body(Bytes::from_static(b"abc")), 8).await.unwrap();
        assert_eq!(all.as_ref(), b"abc");
        assert!(rest.is_none());
    }

    #[test]
    fn errors_name_everything() {
        let call = CallInfo {
            lattice: "default".into(),
            source: "http".into(),
            target: "hello".into(),
            interface: "wasi:http/incoming-handler".into(),
            function: "handle".into(),
            link_name: "default".into(),
        };
        let e = RpcError::new(RpcErrorKind::NoReplica, &call, "no running replica");
        let s = e.to_string();
        for part in ["lattice `default`", "source `http`", "target `hello`", "interface `wasi:http/incoming-handler`", "function `handle`", "link `default`"] {
            assert!(s.contains(part), "{s}");
        }
        let wire: RpcError = rmp_serde::from_slice(&rmp_serde::to_vec(&e).unwrap()).unwrap();
        assert_eq!(wire, e);
    }

    #[test]
    fn subjects() {
        assert_eq!(subject("l", "hello", "wasi:http/incoming-handler", "handle"), "wasmbus.rpc.l.hello.wasi:http/incoming-handler.handle");
        assert_eq!(target_subscription("l", "hello").1, "wasmbus.rpc.l.hello");
    }
}

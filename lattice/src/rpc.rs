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
//! - A call that has waited [`PROBE_AFTER`] asks every replica of the target, on
//!   [`calls_subject`], whether one of them still holds it (by its `Trellis-Call-Id`), and
//!   again each [`PROBE_AFTER`]. When none does, within [`PROBE_TIMEOUT`], the replica that
//!   took it is gone (its host was killed, say), and the call fails then with
//!   [`RpcErrorKind::Lost`] rather than at its deadline. Calls answered sooner cost nothing.

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

use crate::telemetry::{self, Side};

/// Header: the id of the calling component or provider.
pub const SOURCE_HEADER: &str = "Trellis-Source";
/// Header: the link name the call travels under.
pub const LINK_HEADER: &str = "Trellis-Link";
/// Header: the caller's time left, in milliseconds.
pub const TIMEOUT_HEADER: &str = "Trellis-Timeout-Ms";
/// Header: W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Header: the caller's id for the call, unique in the lattice (see [`calls_subject`]).
pub const CALL_ID_HEADER: &str = "Trellis-Call-Id";

/// How long a remote call waits for its reply before it asks whether a replica still holds it,
/// and how often it asks again.
pub const PROBE_AFTER: Duration = Duration::from_secs(1);
/// How long a probe waits for the replica holding the call to say so.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest function-specific head accepted (HTTP method, URI and headers, call arguments).
pub const MAX_HEAD_BYTES: usize = 256 * 1024;
/// Room left in each message for headers and framing.
const FRAMING_ALLOWANCE: usize = 8 * 1024;
/// Deepest nesting of MessagePack arrays and maps accepted in anything decoded off the data
/// plane. Decoding recurses once per level, so without a bound a small message could exhaust
/// the stack of the task decoding it (a tokio worker has 2 MiB) and abort the process. WIT
/// values use at most three levels per level of WIT type, so this leaves room for types
/// nested about 40 deep.
pub const MAX_NESTING: usize = 128;

/// The subject of a call.
pub fn subject(lattice: &str, target: &str, interface: &str, function: &str) -> String {
    format!("wasmbus.rpc.{lattice}.{target}.{interface}.{function}")
}

/// What every replica of `target` subscribes to, and the queue group it joins.
pub fn target_subscription(lattice: &str, target: &str) -> (String, String) {
    (format!("wasmbus.rpc.{lattice}.{target}.>"), format!("wasmbus.rpc.{lattice}.{target}"))
}

/// Where every replica of `target` answers "do you hold call X?" (payload: the call id): the
/// one holding it replies, the others stay silent. `$` keeps it apart from any target's
/// subjects, since ids cannot contain it.
pub fn calls_subject(lattice: &str, target: &str) -> String {
    format!("wasmbus.rpc.{lattice}.$calls.{target}")
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
    /// The replica that took the call is gone (no replica holds it any more); it may or may
    /// not have run.
    Lost,
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
    /// The W3C trace context the call is made in. The caller sets its own; [`Router::call`]
    /// replaces it with the context of its client span, and the callee's handler receives the
    /// context of the server span it runs in (with traces off, the caller's, unchanged).
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

/// Decodes MessagePack from the data plane, refusing nesting deeper than [`MAX_NESTING`]
/// before the (recursive) decoder sees it.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, crate::Error> {
    check_nesting(bytes).map_err(crate::malformed)?;
    rmp_serde::from_slice(bytes).map_err(|e| crate::malformed(e.to_string()))
}

/// Walks the first MessagePack value in `bytes` without recursion and fails if its arrays and
/// maps nest deeper than [`MAX_NESTING`]. Anything else wrong (a truncated value, a reserved
/// marker) is left for the decoder to report. Linear in the length of `bytes`.
fn check_nesting(bytes: &[u8]) -> Result<(), String> {
    /// What follows a marker.
    #[derive(Clone, Copy)]
    enum Next {
        /// This many payload bytes.
        Skip(u64),
        /// A big-endian length of this many bytes, then that many payload bytes plus this many.
        Sized(usize, u64),
        /// A container of this many values.
        Values(u64),
        /// A big-endian count of this many bytes, then count × this many values.
        Counted(usize, u64),
    }
    let be = |pos: usize, n: usize| -> Option<u64> {
        let b = bytes.get(pos..pos.checked_add(n)?)?;
        Some(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
    };
    // Values still to read at each open level; the outermost level holds the one value.
    let mut left: Vec<u64> = vec![1];
    let mut pos = 0usize;
    while let Some(top) = left.last_mut() {
        if *top == 0 {
            left.pop();
            continue;
        }
        *top -= 1;
        let Some(&marker) = bytes.get(pos) else { return Ok(()) };
        pos += 1;
        let next = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => Next::Skip(0),
            0x80..=0x8f => Next::Values(u64::from(marker & 0x0f) * 2),
            0x90..=0x9f => Next::Values(u64::from(marker & 0x0f)),
            0xa0..=0xbf => Next::Skip(u64::from(marker & 0x1f)),
            0xcc | 0xd0 => Next::Skip(1),
            0xcd | 0xd1 => Next::Skip(2),
            0xca | 0xce | 0xd2 => Next::Skip(4),
            0xcb | 0xcf | 0xd3 => Next::Skip(8),
            0xd4 => Next::Skip(2),
            0xd5 => Next::Skip(3),
            0xd6 => Next::Skip(5),
            0xd7 => Next::Skip(9),
            0xd8 => Next::Skip(17),
            0xc4 | 0xd9 => Next::Sized(1, 0),
            0xc5 | 0xda => Next::Sized(2, 0),
            0xc6 | 0xdb => Next::Sized(4, 0),
            0xc7 => Next::Sized(1, 1),
            0xc8 => Next::Sized(2, 1),
            0xc9 => Next::Sized(4, 1),
            0xdc => Next::Counted(2, 1),
            0xdd => Next::Counted(4, 1),
            0xde => Next::Counted(2, 2),
            0xdf => Next::Counted(4, 2),
            0xc1 => return Ok(()),
        };
        let skip = match next {
            Next::Skip(n) => n,
            Next::Sized(width, extra) => {
                let Some(len) = be(pos, width) else { return Ok(()) };
                pos += width;
                len + extra
            }
            Next::Values(n) | Next::Counted(_, n) => {
                let count = match next {
                    Next::Counted(width, _) => {
                        let Some(count) = be(pos, width) else { return Ok(()) };
                        pos += width;
                        count * n
                    }
                    _ => n,
                };
                // `left` holds the outermost level too: its length is the new level's depth.
                if left.len() > MAX_NESTING {
                    return Err(format!("the message nests arrays and maps more than {MAX_NESTING} levels deep"));
                }
                left.push(count);
                continue;
            }
        };
        match usize::try_from(skip).ok().and_then(|s| pos.checked_add(s)) {
            Some(end) if end <= bytes.len() => pos = end,
            _ => return Ok(()),
        }
    }
    Ok(())
}

fn encode<T: Serialize>(v: &T) -> Bytes {
    // Our wire types always serialise.
    rmp_serde::to_vec(v).map(Bytes::from).unwrap_or_default()
}

/// Encodes a function-specific head (MessagePack), for the wire types of other modules.
pub(crate) fn encode_head<T: Serialize>(v: &T) -> Bytes {
    encode(v)
}

/// Sends and receives calls for one lattice; holds the local routes of this process.
#[derive(Clone)]
pub struct Router {
    nats: async_nats::Client,
    lattice: String,
    local: Arc<RwLock<HashMap<String, Arc<dyn Handler>>>>,
    chunk: usize,
    /// The observer (metrics) and the spy tap ([`crate::observe`]).
    hooks: Arc<crate::observe::Hooks>,
    /// The host whose calls these are, for span attributes.
    host_id: Arc<str>,
}

/// Serving a target on NATS; stops when dropped (calls in progress are cut off), or gracefully
/// with [`Serving::drain`].
pub struct Serving {
    /// Takes calls; on an orderly end it waits for the calls it took (see [`Router::serve`]).
    task: Option<tokio::task::JoinHandle<()>>,
    drain: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Serving {
    /// Stops taking calls and waits, at most `wait`, for the calls already taken to be
    /// answered: the queue-group subscription is drained (unsubscribed, then every message
    /// the server had sent before the unsubscribe is still answered), so callers go to the
    /// target's other replicas and none is lost.
    pub async fn drain(mut self, wait: Duration) {
        if let Some(tx) = self.drain.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(wait, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl Router {
    /// A router for `lattice` over `nats`.
    pub fn new(nats: async_nats::Client, lattice: &str) -> Self {
        let max = nats.server_info().max_payload;
        let chunk = max.saturating_sub(FRAMING_ALLOWANCE).max(16 * 1024);
        Self { nats, lattice: lattice.into(), local: Arc::default(), chunk, hooks: Arc::default(), host_id: Arc::from("") }
    }

    /// The same router, naming `host_id` as the host in the spans it makes.
    pub fn with_host_id(mut self, host_id: &str) -> Self {
        self.host_id = Arc::from(host_id);
        self
    }

    /// Tells `observer` how every call through this router (and its clones) goes; the first
    /// observer set stays.
    pub fn set_observer(&self, observer: Arc<dyn crate::observe::Observer>) {
        let _ = self.hooks.observer.set(observer);
    }

    /// Starts recording calls for spies ([`crate::spy`]) as host `host_id`: the router follows
    /// spy interests and publishes a record of each call into or out of a spied component.
    pub async fn start_spy(&self, host_id: &str) -> Result<(), crate::Error> {
        self.hooks.tap.start(&self.nats, &self.lattice, host_id).await
    }

    /// The NATS connection calls go over.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
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

    /// Makes a call: locally when the target is registered here, else over NATS. With traces
    /// on, the call gets a client span under `inv.traceparent` and the callee a server span
    /// under that (see [`crate::telemetry`]).
    pub async fn call(&self, mut inv: Invocation) -> Result<Response, RpcError> {
        if inv.head.len() > MAX_HEAD_BYTES {
            return Err(head_too_large(&inv.call, inv.head.len()));
        }
        let local = self.local.read().unwrap_or_else(|p| p.into_inner()).get(&inv.call.target).cloned();
        let (call, deadline) = (inv.call.clone(), inv.deadline);
        // A timer set in the past may fire only at the next millisecond tick (later under
        // load), after a quick reply: a call whose deadline has passed is not started at all.
        if Instant::now() >= deadline {
            return Err(deadline_error(&call));
        }
        let mut span = telemetry::call_span(Side::Client, &call, &self.host_id, inv.traceparent.as_deref());
        if let Some(tp) = span.traceparent() {
            inv.traceparent = Some(tp);
        }
        let role = if local.is_some() { crate::observe::Role::Local } else { crate::observe::Role::Caller };
        let mut watch = self.hooks.begin(&call, role);
        let inv = match &mut watch {
            Some(w) => w.request(inv),
            None => inv,
        };
        let result = match local {
            Some(handler) => tokio::time::timeout_at(deadline, self.answer_local(handler, inv)).await,
            None => tokio::time::timeout_at(deadline, self.call_remote(inv)).await,
        };
        let result = match result {
            Ok(outcome) => outcome,
            Err(_elapsed) => Err(deadline_error(&call)),
        };
        span.record_outcome(&result);
        match watch {
            Some(w) => w.finish(result),
            None => result,
        }
    }

    /// Hands `inv` to a handler in this process, under a server span when traces are on.
    async fn answer_local(&self, handler: Arc<dyn Handler>, mut inv: Invocation) -> Result<Response, RpcError> {
        let mut span = telemetry::call_span(Side::Server, &inv.call, &self.host_id, inv.traceparent.as_deref());
        if span.is_disabled() {
            return handler.call(inv).await;
        }
        inv.traceparent = span.traceparent();
        let result = handler.call(inv).await;
        span.record_outcome(&result);
        result
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
        let call_id = self.nats.new_inbox();
        headers.insert(CALL_ID_HEADER, call_id.as_str());
        let subject = subject(&self.lattice, &call.target, &call.interface, &call.function);
        let request = async_nats::Request::new().payload(payload).headers(headers).timeout(Some(left));
        let reply = self.nats.send_request(subject, request);
        let msg = tokio::select! {
            biased;
            r = reply => r,
            lost = self.watch_call(&call, &call_id) => return Err(lost),
        };
        let msg = msg.map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => RpcError::new(
                RpcErrorKind::NoReplica,
                &call,
                format!("no running replica of `{}` answered; start it (`wash start component` or `wash start provider`, or deploy its app), or check the link's target", call.target),
            ),
            async_nats::RequestErrorKind::TimedOut => deadline_error(&call),
            _ => RpcError::new(RpcErrorKind::Transport, &call, format!("the call could not be sent: {e}")),
        })?;
        match decode::<WireReply>(&msg.payload) {
            // A replica names its own inbox; a lattice subject is no one's, and pulls from it
            // would go out on this connection.
            Ok(WireReply::Ok(WireMessage { more: Some(inbox), .. })) if is_privileged_subject(&inbox) => {
                Err(foreign_inbox(&call, &inbox, "it is a lattice or app API subject, never a replica's inbox"))
            }
            Ok(WireReply::Ok(m)) => Ok(Response { head: m.head.into(), body: self.pull_body(m.body.into(), m.more, call, inv.deadline) }),
            Ok(WireReply::Err(e)) => Err(e),
            Err(e) => Err(RpcError::new(RpcErrorKind::Malformed, &call, format!("the reply could not be decoded: {e}"))),
        }
    }

    /// Resolves only when the call `call_id` is lost: after [`PROBE_AFTER`], and each
    /// [`PROBE_AFTER`] after that, it asks the target's replicas whether one holds the call;
    /// no replica at all, or none that says so within [`PROBE_TIMEOUT`], means the one that
    /// took it is gone. A probe NATS cannot send (a reconnect, say) proves nothing: the call
    /// waits on for its reply or its deadline.
    async fn watch_call(&self, call: &CallInfo, call_id: &str) -> RpcError {
        loop {
            // Nothing is allocated before the first wait: most calls end within it.
            tokio::time::sleep(PROBE_AFTER).await;
            let probe = async_nats::Request::new().payload(Bytes::copy_from_slice(call_id.as_bytes())).timeout(Some(PROBE_TIMEOUT));
            match self.nats.send_request(calls_subject(&self.lattice, &call.target), probe).await {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), async_nats::RequestErrorKind::NoResponders | async_nats::RequestErrorKind::TimedOut) => {
                    return RpcError::new(
                        RpcErrorKind::Lost,
                        call,
                        format!(
                            "the replica of `{}` that took the call is gone (its host stopped or lost NATS) and no other holds it; it may or may not have run, so retry it only if that is safe",
                            call.target
                        ),
                    );
                }
                Err(e) => tracing::debug!(error = %e, target = call.target, "cannot ask whether a call is still held; waiting on"),
            }
        }
    }

    /// Serves the rest of a body at a fresh inbox, one chunk per pull, until it ends, fails, or
    /// nobody pulls before `deadline`. Returns the inbox.
    async fn hold(&self, mut rest: Body, call: CallInfo, deadline: Instant) -> Result<String, RpcError> {
        let inbox = self.nats.new_inbox();
        let mut pulls =
            self.nats.subscribe(inbox.clone()).await.map_err(|e| RpcError::new(RpcErrorKind::Transport, &call, format!("cannot open a body stream: {e}")))?;
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
            let msg = nats
                .send_request(inbox.clone(), req)
                .await
                .map_err(|e| RpcError::new(RpcErrorKind::Transport, &call, format!("the body stream broke off: {e}")))?;
            match decode::<WireChunk>(&msg.payload) {
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
        let calls = calls_subject(&self.lattice, target);
        let mut probes = self
            .nats
            .subscribe(calls.clone())
            .await
            .map_err(|e| crate::Error::new(crate::ErrorKind::Transport, format!("cannot subscribe to `{calls}`")).with_source(e))?;
        // Callers elsewhere must find the subscriptions once we say the target is up.
        crate::round_trip(&self.nats).await?;
        let router = self.clone();
        let target = target.to_string();
        let (drain_tx, mut drain_rx) = tokio::sync::oneshot::channel::<()>();
        // Each answer holds a sender; when all are dropped the calls taken are answered.
        // Answers run detached, so an abort stops taking calls but cuts none off; and the
        // probe task, which owns the receiver, says which calls are held until the last one
        // is answered, whether the serving task ended in order or was aborted.
        let (answering, mut answered) = tokio::sync::mpsc::channel::<()>(1);
        let held: Arc<std::sync::Mutex<HashMap<String, usize>>> = Arc::default();
        let probe_task = {
            let (nats, held) = (self.nats.clone(), held.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = answered.recv() => break,
                        Some(probe) = probes.next() => {
                            let id = String::from_utf8_lossy(&probe.payload);
                            let holds = held.lock().unwrap_or_else(|p| p.into_inner()).contains_key(id.as_ref());
                            if let (true, Some(reply)) = (holds, probe.reply) {
                                let _ = nats.publish(reply, Bytes::new()).await;
                            }
                        }
                    }
                }
            })
        };
        let task = tokio::spawn(async move {
            let mut draining = false;
            loop {
                let msg = tokio::select! {
                    m = sub.next() => m,
                    r = &mut drain_rx, if !draining => {
                        draining = true;
                        if r.is_ok() {
                            // Unsubscribe; what the server sent before still arrives, then the stream ends.
                            let _ = sub.drain().await;
                            continue;
                        }
                        // The handle is gone without a drain: keep serving until aborted.
                        continue;
                    }
                };
                let Some(msg) = msg else { break };
                let guard = HeldCall::new(&held, &msg);
                let (router, handler, target, token) = (router.clone(), handler.clone(), target.clone(), answering.clone());
                tokio::spawn(async move {
                    router.answer(&target, handler, msg).await;
                    drop(guard);
                    drop(token);
                });
            }
            drop(answering);
            let _ = probe_task.await;
        });
        Ok(Serving { task: Some(task), drain: Some(drain_tx) })
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
            link_name: header(LINK_HEADER).unwrap_or_else(|| crate::ctl::DEFAULT_LINK_NAME.into()),
        };
        let timeout = header(TIMEOUT_HEADER).and_then(|v| v.parse::<u64>().ok()).unwrap_or(30_000);
        let deadline = Instant::now() + Duration::from_millis(timeout);
        let mut watch = self.hooks.begin(&call, crate::observe::Role::Callee);
        // The server span of a call that is handled; a refused call has none.
        let mut span = telemetry::TraceSpan::none();
        let result = match decode::<WireMessage>(&msg.payload) {
            Err(e) => Err(RpcError::new(RpcErrorKind::Malformed, &call, format!("the call could not be decoded: {e}"))),
            Ok(m) if m.head.len() > MAX_HEAD_BYTES => Err(head_too_large(&call, m.head.len())),
            // The caller had less than a millisecond left: no work can finish in time.
            Ok(_) if timeout == 0 => Err(deadline_error(&call)),
            // Pulls would go out on this connection: only the caller's own inbox is pulled from.
            Ok(WireMessage { more: Some(inbox), .. }) if callers_inbox(&reply_to, &inbox).is_err() => {
                let why = callers_inbox(&reply_to, &inbox).err().unwrap_or_default();
                tracing::warn!(target, source = call.source, inbox = %inbox.escape_debug(), "refused a call whose body inbox is not the caller's");
                Err(foreign_inbox(&call, &inbox, &why))
            }
            Ok(m) => {
                let traceparent = header(TRACEPARENT_HEADER).and_then(|tp| telemetry::clean_traceparent(&tp));
                span = telemetry::call_span(Side::Server, &call, &self.host_id, traceparent.as_deref());
                let inv = Invocation {
                    body: self.pull_body(m.body.into(), m.more, call.clone(), deadline),
                    call: call.clone(),
                    traceparent: span.traceparent().or(traceparent),
                    deadline,
                    head: m.head.into(),
                };
                let inv = match &mut watch {
                    Some(w) => w.request(inv),
                    None => inv,
                };
                match tokio::time::timeout_at(deadline, handler.call(inv)).await {
                    Ok(r) => r,
                    Err(_) => Err(deadline_error(&call)),
                }
            }
        };
        span.record_outcome(&result);
        let result = match watch {
            Some(w) => w.finish(result),
            None => result,
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

/// A call a replica holds, by its id, from when the replica takes it until its answer is sent.
struct HeldCall {
    held: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    id: Option<String>,
}

impl HeldCall {
    fn new(held: &Arc<std::sync::Mutex<HashMap<String, usize>>>, msg: &async_nats::Message) -> Self {
        let id = msg.headers.as_ref().and_then(|h| h.get(CALL_ID_HEADER)).map(|v| v.as_str().to_string());
        if let Some(id) = &id {
            *held.lock().unwrap_or_else(|p| p.into_inner()).entry(id.clone()).or_default() += 1;
        }
        Self { held: held.clone(), id }
    }
}

impl Drop for HeldCall {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                held.remove(&id);
            }
        }
    }
}

/// Whether `inbox`, named as the `more` body inbox of a call that came with reply subject
/// `reply`, is the caller's own: the reply of an async-nats request is
/// `{prefix}.{muxer}.{token}` and its inboxes are `{prefix}.{token}` (`prefix` is `_INBOX` or the
/// connection's configured inbox prefix), so the inbox must be the reply's prefix and one more
/// token. Pulls go out on the host's own connection, which may publish where the caller may
/// not: a lattice subject (`wasmbus.…`, `$…`) or the app API (`wadm.…`) is never a caller's
/// inbox, whatever the reply says. `Err` says why not.
pub(crate) fn callers_inbox(reply: &str, inbox: &str) -> Result<(), String> {
    let mut parts = reply.rsplitn(3, '.');
    let prefix = match (parts.next(), parts.next(), parts.next()) {
        (Some(_token), Some(_muxer), Some(prefix)) if !prefix.is_empty() => prefix,
        _ => return Err(format!("its reply subject `{}` has no inbox prefix (an inbox reply is `PREFIX.ID.TOKEN`)", reply.escape_debug())),
    };
    let owned = inbox
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|token| !token.is_empty() && !token.contains('.') && token != "*" && token != ">" && !token.chars().any(char::is_whitespace));
    if !owned {
        return Err(format!(
            "it is not an inbox of the caller, whose reply subject puts its inbox prefix at `{}`; name an inbox `{}.ID` of the calling connection",
            prefix.escape_debug(),
            prefix.escape_debug()
        ));
    }
    if is_privileged_subject(inbox) {
        return Err("it is a lattice or app API subject, never a caller's inbox".into());
    }
    Ok(())
}

/// Subjects a host's connection may reach and a caller must not make it publish to: the
/// lattice's own (`wasmbus.…`, `$…`) and the app API (`wadm.…`).
fn is_privileged_subject(subject: &str) -> bool {
    crate::subject::is_lattice_internal(subject) || subject.split('.').next().is_some_and(|t| t.eq_ignore_ascii_case("wadm"))
}

/// The refusal of a body inbox that is not the caller's.
fn foreign_inbox(call: &CallInfo, inbox: &str, why: &str) -> RpcError {
    RpcError::new(
        RpcErrorKind::Malformed,
        call,
        format!("the call names `{}` as the inbox to pull the rest of its body from, and {why}; nothing was pulled", inbox.escape_debug()),
    )
}

fn deadline_error(call: &CallInfo) -> RpcError {
    RpcError::new(RpcErrorKind::Deadline, call, "the call did not complete before the caller's deadline")
}

fn head_too_large(call: &CallInfo, len: usize) -> RpcError {
    RpcError::new(RpcErrorKind::Malformed, call, format!("the head (HTTP headers or call arguments) is {len} bytes; the limit is {MAX_HEAD_BYTES}"))
}

/// The error a data-plane reply carries, if it carries one (for tools and tests that talk to
/// the data plane without a [`Router`]).
pub fn reply_error(payload: &[u8]) -> Option<RpcError> {
    match decode::<WireReply>(payload) {
        Ok(WireReply::Err(e)) => Some(e),
        _ => None,
    }
}

/// A kind of data-plane message, for [`fuzz_decode_encode`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireKind {
    /// A call, as the callee decodes it.
    Call,
    /// A reply, as the caller decodes it.
    Reply,
    /// A pulled body chunk, as the reader decodes it.
    Chunk,
}

/// Decodes `payload` as the receiving side decodes a message of `kind`, then encodes what it
/// got again as the sending side would; `None` when it does not decode. For the fuzz targets
/// in `lattice/fuzz`; not an API.
#[doc(hidden)]
pub fn fuzz_decode_encode(kind: WireKind, payload: &[u8]) -> Option<Bytes> {
    match kind {
        WireKind::Call => decode::<WireMessage>(payload).ok().map(|m| encode(&m)),
        WireKind::Reply => decode::<WireReply>(payload).ok().map(|r| encode(&r)),
        WireKind::Chunk => decode::<WireChunk>(payload).ok().map(|c| encode(&c)),
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

    /// Whether `link` lets its source call `wasi:http/incoming-handler` on its target (what the
    /// http-server provider serves).
    pub fn is_handler_link(link: &crate::ctl::Link) -> bool {
        let Some((package, interface)) = INTERFACE.split_once('/') else { return false };
        package.split_once(':') == Some((link.wit_namespace.as_str(), link.wit_package.as_str())) && link.interfaces.iter().any(|i| i == interface)
    }
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
    pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, crate::Error> {
        super::decode(bytes)
    }
}

/// Outgoing HTTP on the data plane: a component's `wasi:http/outgoing-handler.handle`, sent by
/// its host to the http-client provider the component is linked to. The request head is
/// [`RequestHead`] (an absolute URI and the guest's request options), the bodies stream both
/// ways as any data-plane body; the reply head is a [`Reply`]: the response head or a typed
/// [`HttpError`] the host turns into the matching `wasi:http` `error-code`.
pub mod outgoing_http {
    use serde::{Deserialize, Serialize};

    /// The interface name.
    pub const INTERFACE: &str = "wasi:http/outgoing-handler";
    /// The function name.
    pub const FUNCTION: &str = "handle";
    /// Most header fields in a request or response head.
    pub const MAX_HEADERS: usize = 256;

    /// An outgoing request head.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
    pub struct RequestHead {
        /// Method, e.g. `GET`.
        pub method: String,
        /// The absolute URI: scheme, authority, path and query.
        pub uri: String,
        /// Header names and values.
        pub headers: Vec<(String, serde_bytes::ByteBuf)>,
        /// The guest's `connect-timeout`, in milliseconds.
        pub connect_timeout_ms: Option<u64>,
        /// The guest's `first-byte-timeout`, in milliseconds.
        pub first_byte_timeout_ms: Option<u64>,
        /// The guest's `between-bytes-timeout`, in milliseconds.
        pub between_bytes_timeout_ms: Option<u64>,
    }

    /// The answer to an outgoing request.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
    pub enum Reply {
        /// The server answered; the body follows.
        Response(super::http::ResponseHead),
        /// The request failed before a response head (the body is empty).
        Error(HttpError),
    }

    /// A failed outgoing request: what `wasi:http` calls it, and what happened in words.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
    pub struct HttpError {
        /// The `wasi:http` error code.
        pub code: ErrorCode,
        /// What happened and what to do.
        pub message: String,
    }

    impl HttpError {
        /// An error of `code`.
        pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
            Self { code, message: message.into() }
        }
    }

    impl std::fmt::Display for HttpError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}: {}", self.code, self.message)
        }
    }

    /// The `wasi:http` `error-code`s an outgoing request can end with (payloads left out).
    #[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum ErrorCode {
        /// The name could not be resolved in time.
        DnsTimeout,
        /// The name does not resolve.
        DnsError,
        /// The destination is unknown.
        DestinationNotFound,
        /// The destination cannot be reached.
        DestinationUnavailable,
        /// The destination's address is not allowed (loopback, private, link-local).
        DestinationIpProhibited,
        /// Nothing listens there.
        ConnectionRefused,
        /// The connection broke off.
        ConnectionTerminated,
        /// Connecting took longer than the connect timeout.
        ConnectionTimeout,
        /// Reading the response took too long.
        ConnectionReadTimeout,
        /// Sending the request took too long.
        ConnectionWriteTimeout,
        /// The provider is at its concurrency limit.
        ConnectionLimitReached,
        /// The TLS handshake failed.
        TlsProtocolError,
        /// The server's certificate is not trusted.
        TlsCertificateError,
        /// The server sent a TLS alert.
        TlsAlertReceived,
        /// No link or allow-list entry permits the request.
        HttpRequestDenied,
        /// The URI is not a valid absolute http(s) URI.
        HttpRequestUriInvalid,
        /// The method is not valid.
        HttpRequestMethodInvalid,
        /// The request head is too large.
        HttpRequestHeaderSectionSize,
        /// The response ended early.
        HttpResponseIncomplete,
        /// The response head is too large.
        HttpResponseHeaderSectionSize,
        /// No response head came within the first-byte timeout.
        HttpResponseTimeout,
        /// The server spoke something that is not HTTP.
        HttpProtocolError,
        /// Anything else.
        InternalError,
    }

    /// Encodes a head or reply.
    pub fn encode<T: Serialize>(head: &T) -> bytes::Bytes {
        super::encode(head)
    }

    /// Decodes a head or reply.
    pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, crate::Error> {
        super::decode(bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {

    #[test]
    fn only_the_callers_own_inbox_may_hold_a_body() {
        // (reply subject of the call, named body inbox, accepted)
        let table = [
            ("_INBOX.abc.1", "_INBOX.xyz", true),
            ("_INBOX.abc.17", "_INBOX.abc", true),
            ("_INBOX_app.q.r.abc.1", "_INBOX_app.q.r.xyz", true),
            ("custom.prefix.abc.1", "custom.prefix.xyz", true),
            ("_INBOX.abc.1", "wasmbus.ctl.v1.default.host.ping", false),
            ("_INBOX.abc.1", "_INBOX.xyz.deeper", false),
            ("_INBOX.abc.1", "_INBOX.", false),
            ("_INBOX.abc.1", "_INBOX.*", false),
            ("_INBOX.abc.1", "_INBOX.>", false),
            ("_INBOX.abc.1", "_INBOXX.xyz", false),
            ("_INBOX.abc.1", "other.xyz", false),
            ("plain", "plain.x", false),
            ("a.b", "a.x", false),
            // A reply in lattice subjects does not make them the caller's.
            ("wasmbus.ctl.v1.default.abc.1", "wasmbus.ctl.v1.default.host", false),
            ("wadm.api.default.model.x.y", "wadm.api.default.model.del", false),
            ("$JS.API.x.y", "$JS.API.STREAM", false),
            ("WASMBUS.ctl.x.y", "WASMBUS.ctl.z", false),
        ];
        for (reply, inbox, ok) in table {
            assert_eq!(callers_inbox(reply, inbox).is_ok(), ok, "reply {reply}, inbox {inbox}: {:?}", callers_inbox(reply, inbox));
        }
        let err = callers_inbox("_INBOX.abc.1", "wasmbus.ctl.v1.default.host.ping").unwrap_err();
        assert!(err.contains("`_INBOX.ID`"), "{err}");
    }
    use super::*;

    #[test]
    fn an_http_handler_link_is_recognised_by_its_package_and_interface() {
        let link = |ns: &str, pkg: &str, iface: &str| crate::ctl::Link {
            source_id: "web".into(),
            target: "hello".into(),
            name: crate::ctl::DEFAULT_LINK_NAME.into(),
            wit_namespace: ns.into(),
            wit_package: pkg.into(),
            interfaces: vec![iface.into()],
            source_config: vec![],
            target_config: vec![],
        };
        assert!(http::is_handler_link(&link("wasi", "http", "incoming-handler")));
        assert!(!http::is_handler_link(&link("wasi", "http", "outgoing-handler")));
        assert!(!http::is_handler_link(&link("wasi", "keyvalue", "incoming-handler")));
    }

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

    /// Runs `f` on a thread with a tokio worker's stack (2 MiB), where the host decodes.
    fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new().stack_size(2 << 20).spawn(f).unwrap().join().unwrap()
    }

    fn nested(prefix: &[u8], level: &[u8], levels: usize, suffix: &[u8]) -> Vec<u8> {
        let mut b = prefix.to_vec();
        for _ in 0..levels {
            b.extend_from_slice(level);
        }
        b.extend_from_slice(suffix);
        b
    }

    /// Found while writing the data_plane fuzz target (lattice/fuzz), by decoding deep inputs on
    /// a tokio worker's 2 MiB stack: decoding recursed once per level of nesting, so one small
    /// message (an unknown field holding 1,000 nested arrays, or a chain of `option`s, which
    /// rmp-serde's own depth limit does not count) overflowed the stack of the task decoding
    /// it and aborted the whole host.
    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = [
            ("call", nested(b"\x81\xa1x", b"\x91", 1_000, b"\xc0")),
            ("reply", nested(b"\x81\xa2Ok\x81\xa1x", b"\x91", 100_000, b"\xc0")),
            ("options", nested(b"\x91", b"\x81\xa6Option", 100_000, b"\xc0")),
            ("lists", nested(b"\x91", b"\x81\xa4List\x91", 1_000, b"\xc0")),
            ("counted", nested(b"", b"\xdd\x00\x00\x00\x01", 1_000, b"\xc0")),
        ];
        for (what, bytes) in deep {
            let errors = on_worker_stack(move || {
                [
                    decode::<WireMessage>(&bytes).err(),
                    decode::<WireReply>(&bytes).err(),
                    decode::<WireChunk>(&bytes).err(),
                    crate::wit_value::decode(&bytes).err(),
                    http::decode::<http::RequestHead>(&bytes).err(),
                ]
            });
            for e in errors {
                let e = e.unwrap_or_else(|| panic!("{what}: decoded"));
                assert!(e.to_string().contains("more than 128 levels deep"), "{what}: {e}");
            }
        }
        assert!(reply_error(&nested(b"\x81\xa3Err", b"\x91", 1_000, b"\xc0")).is_none());
    }

    #[test]
    fn nesting_up_to_the_limit_decodes() {
        use crate::wit_value::WitValue;
        // Records use three levels each: 42 of them, a u8 inside and the argument list make 128.
        let mut v = WitValue::U8(7);
        for _ in 0..42 {
            v = WitValue::Record(vec![("f".into(), v)]);
        }
        let bytes = crate::wit_value::encode(std::slice::from_ref(&v));
        let back = on_worker_stack(move || crate::wit_value::decode(&bytes));
        assert_eq!(back.ok(), Some(vec![v.clone()]));
        let one_more = crate::wit_value::encode(&[WitValue::Option(Some(Box::new(v)))]);
        assert!(crate::wit_value::decode(&one_more).unwrap_err().to_string().contains("levels deep"));
        // Payloads are skipped, not walked into: each below holds 200 bytes that would open an
        // array each if they were read as markers.
        let inner = [0x91u8; 200];
        let with = |head: &[u8]| [head, &inner[..]].concat();
        for payload in [
            with(b"\xd9\xc8"),
            with(b"\xda\x00\xc8"),
            with(b"\xdb\x00\x00\x00\xc8"),
            with(b"\xc4\xc8"),
            with(b"\xc5\x00\xc8"),
            with(b"\xc6\x00\x00\x00\xc8"),
            with(b"\xc7\xc8\x05"),
            with(b"\xc8\x00\xc8\x05"),
            with(b"\xc9\x00\x00\x00\xc8\x05"),
        ] {
            let mut flat = vec![0x9f];
            flat.extend_from_slice(&payload);
            // Fixed-size values: fixext 1/2/4/8/16, floats and integers of every width.
            flat.extend_from_slice(b"\xd4\x01\x91\xd5\x01\x91\x91\xd6\x01\x91\x91\x91\x91");
            flat.extend_from_slice(&[&b"\xd7\x01"[..], &[0x91; 8]].concat());
            flat.extend_from_slice(&[&b"\xd8\x01"[..], &[0x91; 16]].concat());
            flat.extend_from_slice(&[&b"\xcb"[..], &[0x91; 8], b"\xca", &[0x91; 4]].concat());
            flat.extend_from_slice(b"\xcc\x91\xcd\x91\x91\xd0\x91\xd1\x91\x91\xa2\x91\x91\x80\x90");
            assert_eq!(check_nesting(&flat), Ok(()), "{:x?}", &flat[..8]);
            // The same with one more value than the array holds: it is read as a marker.
            flat.push(0x91);
            flat.extend_from_slice(&inner);
            flat[0] = 0xdc;
            flat.splice(1..1, [0, 16]);
            assert!(check_nesting(&flat).is_err(), "{:x?}", &flat[..8]);
        }
    }

    #[test]
    fn subjects() {
        assert_eq!(subject("l", "hello", "wasi:http/incoming-handler", "handle"), "wasmbus.rpc.l.hello.wasi:http/incoming-handler.handle");
        assert_eq!(target_subscription("l", "hello").1, "wasmbus.rpc.l.hello");
    }
}

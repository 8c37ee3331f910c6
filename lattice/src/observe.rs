//! What a [`Router`](crate::rpc::Router) tells about the calls through it: to an [`Observer`]
//! (the host's metrics) and to spies ([`crate::spy`]). One place wraps a call for both, so
//! the router's own code gains a line per path.
//!
//! Cost: with no observer and no spy, nothing. With an observer, a call made over NATS is
//! reported once its reply (or error) is in; a call this router serves (locally or from NATS)
//! gets its response body wrapped, so it is reported when the body ends, fails or is dropped.
//! The observer returns a handle it keeps ready per target and function
//! ([`Observer::serving`]), so the wrapping allocates no attributes.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use crate::rpc::{Body, CallInfo, Invocation, Response, RpcError, RpcErrorKind};
use crate::spy::{BODY_CAP, CallRecord, Tap};

/// How a call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was answered, body and all.
    Ok,
    /// It failed.
    Failed(RpcErrorKind),
    /// The caller stopped reading the response body before its end.
    Cancelled,
}

impl Outcome {
    /// `ok`, `cancelled`, or the error kind in snake case (`no_replica`, `deadline`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Cancelled => "cancelled",
            Outcome::Failed(kind) => kind_name(kind),
        }
    }
}

/// Every error kind, in the order [`kind_index`] numbers them.
pub const KINDS: [RpcErrorKind; 9] = [
    RpcErrorKind::NoLink,
    RpcErrorKind::NoReplica,
    RpcErrorKind::Deadline,
    RpcErrorKind::Busy,
    RpcErrorKind::Handler,
    RpcErrorKind::Unsupported,
    RpcErrorKind::Malformed,
    RpcErrorKind::Transport,
    RpcErrorKind::Lost,
];

/// The position of `kind` in [`KINDS`].
pub fn kind_index(kind: RpcErrorKind) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or(KINDS.len() - 1)
}

/// An error kind in snake case, as metrics and spy records name it.
pub fn kind_name(kind: RpcErrorKind) -> &'static str {
    match kind {
        RpcErrorKind::NoLink => "no_link",
        RpcErrorKind::NoReplica => "no_replica",
        RpcErrorKind::Deadline => "deadline",
        RpcErrorKind::Busy => "busy",
        RpcErrorKind::Handler => "handler",
        RpcErrorKind::Unsupported => "unsupported",
        RpcErrorKind::Malformed => "malformed",
        RpcErrorKind::Transport => "transport",
        RpcErrorKind::Lost => "lost",
    }
}

/// How a call travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Handed to a handler in this process.
    Local,
    /// Over NATS.
    Nats,
}

impl Route {
    /// `local` or `nats`.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Local => "local",
            Route::Nats => "nats",
        }
    }
}

/// Told how the calls through a router went (the host's metrics implement it).
pub trait Observer: Send + Sync + 'static {
    /// A call this router made got its reply head or failed, `elapsed` after it started.
    fn called(&self, route: Route, outcome: Outcome, elapsed: Duration);
    /// A call this router is about to answer (locally or from NATS); the handle returned is
    /// told how it ended. `None`: not observed.
    fn serving(&self, call: &CallInfo) -> Option<Arc<dyn Served>>;
}

/// One served call's end, as an [`Observer`] is told it.
pub trait Served: Send + Sync {
    /// The call ended so, `elapsed` after it started (at the end of its response body).
    fn ended(&self, outcome: Outcome, elapsed: Duration);
}

/// Which side of a call this router is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// It sends the call over NATS.
    Caller,
    /// It calls a handler of its own (caller and callee at once).
    Local,
    /// It answers a call that came over NATS.
    Callee,
}

/// The router's observer and spy tap.
#[derive(Default)]
pub(crate) struct Hooks {
    pub observer: std::sync::OnceLock<Arc<dyn Observer>>,
    pub tap: Arc<Tap>,
}

impl Hooks {
    /// Starts watching one call; `None` when nobody looks (nothing to do for it).
    pub(crate) fn begin(&self, call: &CallInfo, role: Role) -> Option<Watch> {
        let observer = self.observer.get();
        // Who is spied: the caller's host records calls out, the callee's host calls in.
        let mut spied: Vec<String> = Vec::new();
        let mut bodies = false;
        if role != Role::Callee
            && let Some(b) = self.tap.wants(&call.source)
        {
            spied.push(call.source.clone());
            bodies |= b;
        }
        if role != Role::Caller
            && call.target != call.source
            && let Some(b) = self.tap.wants(&call.target)
        {
            spied.push(call.target.clone());
            bodies |= b;
        }
        if observer.is_none() && spied.is_empty() {
            return None;
        }
        let served = match (role, observer) {
            (Role::Caller, _) | (_, None) => None,
            (_, Some(o)) => o.serving(call),
        };
        let spy = (!spied.is_empty()).then(|| {
            Box::new(SpyCall {
                tap: self.tap.clone(),
                call: call.clone(),
                components: spied,
                wall: SystemTime::now(),
                route: if role == Role::Local { Route::Local } else { Route::Nats },
                bodies,
                request: Arc::new(Counted::default()),
                response: Arc::new(Counted::default()),
            })
        });
        Some(Watch { started: Instant::now(), role, http: is_http(call), observer: observer.cloned(), served, spy })
    }
}

/// Bytes seen on one side of a spied call, and the first [`BODY_CAP`] of them when asked.
#[derive(Default)]
struct Counted {
    bytes: AtomicU64,
    kept: std::sync::Mutex<BytesMut>,
}

impl Counted {
    fn saw(&self, data: &[u8], keep: bool) {
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        if keep {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            let room = BODY_CAP.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..room.min(data.len())]);
        }
    }

    fn kept(&self) -> Vec<u8> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).to_vec()
    }
}

/// A spied call, until its record is published.
struct SpyCall {
    tap: Arc<Tap>,
    call: CallInfo,
    components: Vec<String>,
    wall: SystemTime,
    route: Route,
    bodies: bool,
    request: Arc<Counted>,
    response: Arc<Counted>,
}

impl SpyCall {
    fn publish(self, outcome: Outcome, error: Option<String>, elapsed: Duration) {
        let time = time::OffsetDateTime::from(self.wall).format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let c = self.call;
        let record = CallRecord {
            time,
            host_id: String::new(),
            source: c.source,
            target: c.target,
            interface: c.interface,
            function: c.function,
            link_name: c.link_name,
            route: self.route.as_str().into(),
            duration_us: elapsed.as_micros() as u64,
            outcome: outcome.as_str().into(),
            error,
            request_bytes: self.request.bytes.load(Ordering::Relaxed),
            response_bytes: self.response.bytes.load(Ordering::Relaxed),
            request: self.bodies.then(|| self.request.kept()),
            response: self.bodies.then(|| self.response.kept()),
        };
        self.tap.publish(&c.lattice, &self.components, record);
    }
}

/// One call being watched.
pub(crate) struct Watch {
    started: Instant,
    role: Role,
    /// An HTTP call ends with its response body; any other call with its head (the results),
    /// whose body is empty and which callers drop unread.
    http: bool,
    observer: Option<Arc<dyn Observer>>,
    served: Option<Arc<dyn Served>>,
    spy: Option<Box<SpyCall>>,
}

/// Whether an HTTP call keeps its body (the head is an HTTP head) or its head (the arguments).
fn is_http(call: &CallInfo) -> bool {
    call.interface == crate::rpc::http::INTERFACE
}

impl Watch {
    /// The call as it goes out: when spied, its head and body are counted (and kept).
    pub(crate) fn request(&mut self, mut inv: Invocation) -> Invocation {
        let Some(spy) = &self.spy else { return inv };
        let http = is_http(&inv.call);
        // An HTTP head's bytes count, but only its body is kept.
        spy.request.saw(&inv.head, spy.bodies && !http);
        let (counted, keep) = (spy.request.clone(), spy.bodies && http);
        inv.body = inv
            .body
            .inspect(move |chunk| {
                if let Ok(b) = chunk {
                    counted.saw(b, keep);
                }
            })
            .boxed();
        inv
    }

    /// The call's result: reported now if it failed (or nobody needs its body), else its
    /// body is watched to its end.
    #[allow(clippy::result_large_err)] // the data plane's own result, passed through as it is
    pub(crate) fn finish(mut self, result: Result<Response, RpcError>) -> Result<Response, RpcError> {
        let elapsed = self.started.elapsed();
        if self.role != Role::Callee
            && let Some(o) = &self.observer
        {
            let outcome = match &result {
                Ok(_) => Outcome::Ok,
                Err(e) => Outcome::Failed(e.kind),
            };
            o.called(if self.role == Role::Local { Route::Local } else { Route::Nats }, outcome, elapsed);
        }
        match result {
            Err(e) => {
                let ending = Ending { started: self.started, served: self.served.take(), spy: self.spy.take() };
                ending.end(Outcome::Failed(e.kind), Some(&e));
                Err(e)
            }
            Ok(resp) if self.served.is_none() && self.spy.is_none() => Ok(resp),
            Ok(resp) if !self.http => {
                if let Some(s) = &self.spy {
                    s.response.saw(&resp.head, s.bodies);
                }
                let ending = Ending { started: self.started, served: self.served.take(), spy: self.spy.take() };
                ending.end(Outcome::Ok, None);
                Ok(resp)
            }
            Ok(mut resp) => {
                // An HTTP head's bytes count, but only its body is kept.
                let counted = self.spy.as_ref().map(|s| {
                    s.response.saw(&resp.head, false);
                    (s.response.clone(), s.bodies)
                });
                let ending = Ending { started: self.started, served: self.served.take(), spy: self.spy.take() };
                resp.body = Box::pin(Watched { inner: resp.body, counted, ending: Some(ending) });
                Ok(resp)
            }
        }
    }
}

/// What is told once a served or spied call ends.
struct Ending {
    started: Instant,
    served: Option<Arc<dyn Served>>,
    spy: Option<Box<SpyCall>>,
}

impl Ending {
    fn end(self, outcome: Outcome, error: Option<&RpcError>) {
        let elapsed = self.started.elapsed();
        if let Some(s) = self.served {
            s.ended(outcome, elapsed);
        }
        if let Some(spy) = self.spy {
            spy.publish(outcome, error.map(|e| e.message.clone()), elapsed);
        }
    }
}

/// A response body that reports its end.
struct Watched {
    inner: Body,
    counted: Option<(Arc<Counted>, bool)>,
    ending: Option<Ending>,
}

impl Stream for Watched {
    type Item = Result<Bytes, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.poll_next_unpin(cx);
        match &next {
            Poll::Ready(Some(Ok(b))) => {
                if let Some((c, keep)) = &self.counted {
                    c.saw(b, *keep);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(ending) = self.ending.take() {
                    ending.end(Outcome::Failed(e.kind), Some(e));
                }
            }
            Poll::Ready(None) => {
                if let Some(ending) = self.ending.take() {
                    ending.end(Outcome::Ok, None);
                }
            }
            Poll::Pending => {}
        }
        next
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(ending) = self.ending.take() {
            ending.end(Outcome::Cancelled, None);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records what it is told.
    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    impl Observer for Arc<Seen> {
        fn called(&self, route: Route, outcome: Outcome, _: Duration) {
            self.0.lock().unwrap().push(format!("called {} {}", route.as_str(), outcome.as_str()));
        }
        fn serving(&self, call: &CallInfo) -> Option<Arc<dyn Served>> {
            Some(Arc::new(Ended(self.clone(), call.function.clone())))
        }
    }

    struct Ended(Arc<Seen>, String);

    impl Served for Ended {
        fn ended(&self, outcome: Outcome, _: Duration) {
            self.0.0.lock().unwrap().push(format!("served {} {}", self.1, outcome.as_str()));
        }
    }

    fn hooks() -> (Hooks, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let hooks = Hooks::default();
        let _ = hooks.observer.set(Arc::new(seen.clone()));
        (hooks, seen)
    }

    fn call(interface: &str) -> CallInfo {
        CallInfo { lattice: "l".into(), source: "a".into(), target: "b".into(), interface: interface.into(), function: "f".into(), link_name: "default".into() }
    }

    fn body(parts: Vec<Result<Bytes, RpcError>>) -> Body {
        futures::stream::iter(parts).boxed()
    }

    fn take(seen: &Seen) -> Vec<String> {
        std::mem::take(&mut *seen.0.lock().unwrap())
    }

    #[tokio::test]
    async fn a_served_http_call_ends_with_its_body() {
        let (hooks, seen) = hooks();
        let http = call(crate::rpc::http::INTERFACE);
        let ok = || Response { head: Bytes::new(), body: body(vec![Ok(Bytes::from_static(b"x")), Ok(Bytes::from_static(b"y"))]) };
        // Read to its end: ok, once the body has ended.
        let resp = hooks.begin(&http, Role::Local).unwrap().finish(Ok(ok())).unwrap();
        assert_eq!(take(&seen), ["called local ok"]);
        assert_eq!(crate::rpc::collect_body(resp.body).await.unwrap().as_ref(), b"xy");
        assert_eq!(take(&seen), ["served f ok"]);
        // Dropped unread: cancelled.
        drop(hooks.begin(&http, Role::Callee).unwrap().finish(Ok(ok())).unwrap());
        assert_eq!(take(&seen), ["served f cancelled"]);
        // A body that fails: its kind.
        let failing = Response { head: Bytes::new(), body: body(vec![Err(RpcError::new(RpcErrorKind::Deadline, &http, "late"))]) };
        let resp = hooks.begin(&http, Role::Callee).unwrap().finish(Ok(failing)).unwrap();
        assert!(crate::rpc::collect_body(resp.body).await.is_err());
        assert_eq!(take(&seen), ["served f deadline"]);
        // A failed call: reported at once, on both sides of a local call.
        let err = hooks.begin(&http, Role::Local).unwrap().finish(Err(RpcError::new(RpcErrorKind::Busy, &http, "busy")));
        assert!(err.is_err());
        assert_eq!(take(&seen), ["called local busy", "served f busy"]);
        // A call made over NATS: the caller's side only, at its reply head.
        let _resp = hooks.begin(&http, Role::Caller).unwrap().finish(Ok(ok())).unwrap();
        assert_eq!(take(&seen), ["called nats ok"]);
    }

    #[tokio::test]
    async fn any_other_call_ends_with_its_results() {
        let (hooks, seen) = hooks();
        let resp = Response { head: Bytes::from_static(b"\x90"), body: crate::rpc::full_body(Bytes::new()) };
        drop(hooks.begin(&call("x:y/z"), Role::Callee).unwrap().finish(Ok(resp)).unwrap());
        assert_eq!(take(&seen), ["served f ok"]);
    }

    #[test]
    fn nobody_looking_means_no_watch() {
        assert!(Hooks::default().begin(&call("x:y/z"), Role::Local).is_none());
    }
}

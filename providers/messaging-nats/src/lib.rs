//! # trellis-provider-messaging-nats
//!
//! `wasmcloud:messaging@0.2.0` over NATS, in both directions, with no host-specific glue: the
//! calls travel as WIT values over the data plane ([`trellis_lattice::messaging`]).
//!
//! **Delivery** (`wasmcloud:messaging/handler`): for every link whose *source* is this
//! provider and whose interfaces include `handler`, the provider subscribes to the subjects of
//! the link's source config and calls the target's `handle-message` with each message:
//!
//! ```sh
//! wash config put echo-subs SUBSCRIPTIONS='echo.>,jobs|workers'
//! wash link put messaging echo wasmcloud messaging --interface handler --source-config echo-subs
//! ```
//!
//! Link source config: `SUBSCRIPTIONS`, a comma list of `subject` or `subject|queue` (a queue
//! group: each message goes to one of the subscribers in the group, so replicas of this provider
//! on several hosts share the messages instead of each delivering every one); `CLUSTER_URIS`, a
//! comma list of NATS URLs to subscribe on (default: the lattice's own connection);
//! `timeout_ms`, how long one delivery may take (default 30000). Messages are delivered
//! concurrently (up to 1024 in flight per subscription), so their order is not kept; a handler
//! that fails or returns an error is logged, and the message is not redelivered (at most once).
//! Link and config changes apply live: new subscriptions are made, removed ones dropped,
//! unchanged ones kept.
//!
//! **Publishing** (`wasmcloud:messaging/consumer`): a component links to the provider as its
//! target and calls `publish(msg)` (the message's `reply-to`, if any, is the NATS reply
//! subject) or `request(subject, body, timeout-ms)` (a NATS request; the reply comes back as
//! a `broker-message`):
//!
//! ```sh
//! wash link put echo messaging wasmcloud messaging --interface consumer [--target-config C]
//! ```
//!
//! Link target config: `CLUSTER_URIS` (default: the lattice's connection). A broker failure is
//! the error value of the WIT result, naming the subject and the cause (no responders, a
//! timeout, a payload over the server's `max_payload`, an unreachable cluster), never a trap.
//!
//! Provider config (at start): `CLUSTER_URIS` and `timeout_ms`, the defaults for links that
//! set none. Config keys are matched without regard to case. Connections to clusters named by
//! `CLUSTER_URIS` are made on first use, without credentials, and shared by every link naming
//! the same URL list.
#![deny(missing_docs)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::{OnceCell, Semaphore};
use trellis_lattice::messaging::{self, BrokerMessage, ConsumerCall, ConsumerReply, ConsumerResult};
use trellis_lattice::rpc::{self, CallInfo, Handler, Invocation, Response, Router, RpcError, RpcErrorKind};
use trellis_lattice::subject::is_lattice_internal;
use trellis_lattice::wit_value;
use trellis_provider_sdk::{Builtin, Link, ProviderContext, ProviderError, StringMap};

/// The provider's name, as in `builtin://messaging-nats`.
pub const NAME: &str = "messaging-nats";

/// Link config: the subjects to subscribe to.
pub const SUBSCRIPTIONS: &str = "SUBSCRIPTIONS";
/// Link or provider config: the NATS cluster to use.
pub const CLUSTER_URIS: &str = "CLUSTER_URIS";
/// Link or provider config: how long one delivery may take, in milliseconds.
pub const TIMEOUT_MS: &str = "timeout_ms";

/// How long one delivery may take when no config says.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Deliveries in flight per subscription; beyond it, the subscription waits.
const MAX_IN_FLIGHT: usize = 1024;
/// A request stops this much before the caller's deadline, so its timeout reaches the
/// component as an error value rather than as the data-plane deadline.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);
/// Time allowed to connect to a cluster named by `CLUSTER_URIS`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Resubscription backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// This provider as a host built-in.
pub fn builtin() -> Builtin {
    Builtin { name: NAME, run }
}

/// The provider's entry point.
pub fn run(ctx: ProviderContext) -> BoxFuture<'static, Result<(), ProviderError>> {
    Box::pin(serve(ctx))
}

/// `key` in `cfg`: exactly as written, else in any case.
fn setting<'a>(cfg: &'a StringMap, key: &str) -> Option<&'a str> {
    cfg.get(key).or_else(|| cfg.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)).map(String::as_str)
}

/// A `CLUSTER_URIS` value as a cache key: the URLs, trimmed, comma-joined; empty for the
/// lattice's own connection.
fn cluster_key(uris: Option<&str>) -> String {
    uris.unwrap_or_default().split(',').map(str::trim).filter(|u| !u.is_empty()).collect::<Vec<_>>().join(",")
}

/// One NATS subscription a link asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Subscription {
    /// Who gets the messages.
    target: String,
    /// The link's name.
    link_name: String,
    subject: String,
    queue: Option<String>,
    /// See [`cluster_key`].
    cluster: String,
    timeout: Duration,
}

impl std::fmt::Display for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`", self.subject)?;
        if let Some(q) = &self.queue {
            write!(f, " (queue `{q}`)")?;
        }
        if !self.cluster.is_empty() {
            write!(f, " on {}", self.cluster)?;
        }
        write!(f, " for `{}` (link `{}`)", self.target, self.link_name)
    }
}

fn is_link(link: &Link, interface: &str) -> bool {
    link.wit_namespace == messaging::NAMESPACE && link.wit_package == messaging::PACKAGE && link.interfaces.iter().any(|i| i == interface)
}

/// Parses `SUBSCRIPTIONS`: `subject` or `subject|queue`, comma-separated.
fn parse_subscriptions(value: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (subject, queue) = match entry.split_once('|') {
            Some((s, q)) => (s.trim(), Some(q.trim())),
            None => (entry, None),
        };
        if subject.is_empty() {
            return Err(format!("`{entry}` names no subject; write `subject` or `subject|queue`"));
        }
        match queue {
            Some("") => return Err(format!("`{entry}` names no queue after `|`; write `subject` or `subject|queue`")),
            Some(q) if q.contains('|') => return Err(format!("`{entry}` has more than one `|`; write `subject` or `subject|queue`")),
            _ => {}
        }
        out.push((subject.to_string(), queue.map(str::to_string)));
    }
    Ok(out)
}

/// The subscriptions the current links ask for, and what is wrong with the ones that cannot be
/// made.
fn wanted(ctx: &ProviderContext) -> (HashSet<Subscription>, Vec<String>) {
    let (mut subs, mut problems) = (HashSet::new(), Vec::new());
    for link in ctx.links_as_source().into_iter().filter(|l| is_link(l, messaging::HANDLER_INTERFACE)) {
        let cfg = ctx.state().merged_config(&link.source_config);
        let what = format!("link `{}` to `{}`", link.name, link.target);
        let timeout = match setting(&cfg, TIMEOUT_MS).or_else(|| setting(ctx.config(), TIMEOUT_MS)) {
            None => DEFAULT_TIMEOUT,
            Some(ms) => match ms.parse() {
                Ok(ms) => Duration::from_millis(ms),
                Err(_) => {
                    problems.push(format!("{what}: timeout_ms `{ms}` is not a number of milliseconds"));
                    continue;
                }
            },
        };
        let cluster = cluster_key(setting(&cfg, CLUSTER_URIS).or_else(|| setting(ctx.config(), CLUSTER_URIS)));
        let entries = match setting(&cfg, SUBSCRIPTIONS).map(parse_subscriptions) {
            None => Err(format!("its source config sets no {SUBSCRIPTIONS} (a comma list of `subject` or `subject|queue`)")),
            Some(Ok(e)) if e.is_empty() => Err(format!("its {SUBSCRIPTIONS} lists no subject")),
            Some(r) => r,
        };
        let entries = entries.and_then(|e| match e.iter().find(|(s, _)| cluster.is_empty() && is_lattice_internal(s)) {
            Some((s, _)) => Err(format!(
                "`{s}` would receive the lattice's own traffic (`wasmbus.…`, `$…`, or everything); set {CLUSTER_URIS} to subscribe on another NATS"
            )),
            None => Ok(e),
        });
        match entries {
            Ok(entries) => subs.extend(entries.into_iter().map(|(subject, queue)| Subscription {
                target: link.target.clone(),
                link_name: link.name.clone(),
                subject,
                queue,
                cluster: cluster.clone(),
                timeout,
            })),
            Err(e) => problems.push(format!("{what}: {e}")),
        }
    }
    (subs, problems)
}

/// Connections to NATS clusters by URL list; the empty key is the lattice's own connection.
struct Clusters {
    lattice: async_nats::Client,
    name: String,
    others: Mutex<HashMap<String, Arc<OnceCell<async_nats::Client>>>>,
}

impl Clusters {
    async fn get(&self, key: &str) -> Result<async_nats::Client, String> {
        if key.is_empty() {
            return Ok(self.lattice.clone());
        }
        let cell = self.others.lock().unwrap_or_else(|p| p.into_inner()).entry(key.to_string()).or_default().clone();
        cell.get_or_try_init(|| async {
            let addrs = key
                .split(',')
                .map(|u| u.parse::<async_nats::ServerAddr>().map_err(|e| format!("`{u}` in {CLUSTER_URIS} is not a NATS URL: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            let connect = async_nats::ConnectOptions::new().name(&self.name).connection_timeout(CONNECT_TIMEOUT).connect(addrs);
            match tokio::time::timeout(CONNECT_TIMEOUT * 2, connect).await {
                Ok(Ok(client)) => {
                    tracing::info!(cluster = key, "connected to a NATS cluster of CLUSTER_URIS");
                    Ok(client)
                }
                Ok(Err(e)) => Err(format!("cannot connect to NATS at {key}: {e}")),
                Err(_) => Err(format!("cannot connect to NATS at {key}: no connection within {:?}", CONNECT_TIMEOUT * 2)),
            }
        })
        .await
        .cloned()
    }

    /// Drops the connections no key in `used` names.
    fn retain(&self, used: &HashSet<String>) {
        self.others.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| used.contains(k));
    }
}

/// What the provider's tasks share.
struct Shared {
    ctx: ProviderContext,
    clusters: Clusters,
    /// Problems by what they are about; the health report lists them.
    problems: Mutex<BTreeMap<String, String>>,
}

impl Shared {
    /// Records (or clears, with `None`) the problem of `about` and updates the health report.
    fn problem(&self, about: &str, problem: Option<String>) {
        let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        match problem {
            Some(p) => problems.insert(about.to_string(), p),
            None => problems.remove(about),
        };
        if problems.is_empty() {
            self.ctx.set_health(true, None);
        } else {
            self.ctx.set_health(false, Some(problems.values().cloned().collect::<Vec<_>>().join("; ")));
        }
    }
}

/// A task that stops when dropped.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The provider's local route on its router, removed when dropped (a built-in provider shares
/// the host's router and must not leave a dead route behind).
struct LocalRoute(Router, String);

impl Drop for LocalRoute {
    fn drop(&mut self) {
        self.0.unregister_local(&self.1);
    }
}

const CONFIG_PROBLEMS: &str = "\0config";

async fn serve(ctx: ProviderContext) -> Result<(), ProviderError> {
    let shared = Arc::new(Shared {
        clusters: Clusters { lattice: ctx.nats().clone(), name: format!("provider {} (messaging-nats)", ctx.id()), others: Mutex::default() },
        ctx: ctx.clone(),
        problems: Mutex::default(),
    });
    let consumer: Arc<dyn Handler> = Arc::new(Consumer(shared.clone()));
    let _serving = ctx.router().serve(ctx.id(), consumer.clone()).await?;
    ctx.router().register_local(ctx.id(), consumer);
    let _route = LocalRoute(ctx.router().clone(), ctx.id().to_string());

    let mut tasks: HashMap<Subscription, Task> = HashMap::new();
    let mut changes = ctx.changes();
    let mut last_problems = Vec::new();
    loop {
        let (want, problems) = wanted(&ctx);
        if problems != last_problems {
            for p in &problems {
                tracing::warn!(provider = ctx.id(), problem = p, "a messaging link is not served");
            }
            shared.problem(CONFIG_PROBLEMS, (!problems.is_empty()).then(|| problems.join("; ")));
            last_problems = problems;
        }
        tasks.retain(|sub, _| {
            let keep = want.contains(sub);
            if !keep {
                tracing::info!(provider = ctx.id(), subscription = %sub, "unsubscribing");
                shared.problem(&sub.to_string(), None);
            }
            keep
        });
        for sub in want {
            tasks.entry(sub).or_insert_with_key(|sub| Task(tokio::spawn(subscribe(shared.clone(), sub.clone()))));
        }
        let mut used: HashSet<String> = tasks.keys().map(|s| s.cluster.clone()).collect();
        used.extend(consumer_clusters(&ctx));
        shared.clusters.retain(&used);
        tokio::select! {
            _ = ctx.shutdown_requested() => break,
            changed = changes.changed() => if changed.is_err() { break },
        }
    }
    Ok(())
}

/// The clusters the consumer links of this provider name now.
fn consumer_clusters(ctx: &ProviderContext) -> Vec<String> {
    ctx.links_as_target()
        .into_iter()
        .filter(|l| is_link(l, messaging::CONSUMER_INTERFACE))
        .map(|l| cluster_key(setting(&ctx.state().merged_config(&l.target_config), CLUSTER_URIS).or_else(|| setting(ctx.config(), CLUSTER_URIS))))
        .collect()
}

/// Keeps one subscription alive, delivering its messages, until aborted.
async fn subscribe(shared: Arc<Shared>, sub: Subscription) {
    let about = sub.to_string();
    let mut backoff = BACKOFF_MIN;
    loop {
        match open(&shared, &sub).await {
            Ok(mut subscriber) => {
                tracing::info!(provider = shared.ctx.id(), subscription = %sub, "subscribed");
                shared.problem(&about, None);
                backoff = BACKOFF_MIN;
                let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
                while let Some(msg) = subscriber.next().await {
                    let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
                    let (shared, sub) = (shared.clone(), sub.clone());
                    tokio::spawn(async move {
                        deliver(&shared, &sub, msg).await;
                        drop(permit);
                    });
                }
                tracing::warn!(provider = shared.ctx.id(), subscription = %sub, "the subscription ended; subscribing again");
            }
            Err(e) => {
                tracing::warn!(provider = shared.ctx.id(), subscription = %sub, error = e, retry_in = ?backoff, "cannot subscribe");
                shared.problem(&about, Some(format!("cannot subscribe to {about}: {e}")));
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn open(shared: &Shared, sub: &Subscription) -> Result<async_nats::Subscriber, String> {
    let client = shared.clusters.get(&sub.cluster).await?;
    let subscriber = match &sub.queue {
        Some(q) => client.queue_subscribe(sub.subject.clone(), q.clone()).await,
        None => client.subscribe(sub.subject.clone()).await,
    }
    .map_err(|e| e.to_string())?;
    // Once the server has seen the subscription, a message published after this is delivered.
    trellis_lattice::round_trip(&client).await.map_err(|e| e.to_string())?;
    Ok(subscriber)
}

/// Hands one message to the link's target and logs what went wrong, if anything did.
async fn deliver(shared: &Shared, sub: &Subscription, msg: async_nats::Message) {
    let ctx = &shared.ctx;
    let message = BrokerMessage { subject: msg.subject.to_string(), body: msg.payload.to_vec(), reply_to: msg.reply.as_ref().map(|r| r.to_string()) };
    let call = CallInfo {
        lattice: ctx.lattice().into(),
        source: ctx.id().into(),
        target: sub.target.clone(),
        interface: messaging::HANDLER.into(),
        function: messaging::HANDLE_MESSAGE.into(),
        link_name: sub.link_name.clone(),
    };
    let inv = Invocation {
        call,
        traceparent: msg.headers.as_ref().and_then(|h| h.get(rpc::TRACEPARENT_HEADER)).map(|v| v.as_str().to_string()),
        deadline: tokio::time::Instant::now() + sub.timeout,
        head: wit_value::encode(&messaging::handle_message_args(&message)),
        body: rpc::full_body(Bytes::new()),
    };
    let outcome = match ctx.router().call(inv).await {
        Ok(resp) => wit_value::decode(&resp.head).and_then(messaging::decode_handled).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match outcome {
        Ok(Ok(())) => tracing::trace!(subject = message.subject, target = sub.target, "delivered"),
        Ok(Err(e)) => {
            tracing::warn!(subject = message.subject, target = sub.target, link = sub.link_name, error = e, "the component's handle-message returned an error")
        }
        Err(e) => tracing::warn!(subject = message.subject, target = sub.target, link = sub.link_name, error = e, "cannot deliver a message"),
    }
}

/// Answers `wasmcloud:messaging/consumer` calls of linked components.
struct Consumer(Arc<Shared>);

impl Handler for Consumer {
    fn call(&self, inv: Invocation) -> BoxFuture<'static, Result<Response, RpcError>> {
        let shared = self.0.clone();
        Box::pin(async move { consume(&shared, inv).await })
    }
}

async fn consume(shared: &Shared, inv: Invocation) -> Result<Response, RpcError> {
    let ctx = &shared.ctx;
    let c = &inv.call;
    if c.interface != messaging::CONSUMER {
        return Err(RpcError::new(
            RpcErrorKind::Unsupported,
            c,
            format!("provider `{}` ({NAME}) serves `{}`, not `{}`", ctx.id(), messaging::CONSUMER, c.interface),
        ));
    }
    let args = wit_value::decode(&inv.head).map_err(|e| RpcError::new(RpcErrorKind::Malformed, c, format!("the arguments could not be decoded: {e}")))?;
    let call = ConsumerCall::from_call(&c.function, args).map_err(|e| {
        let kind = if [messaging::REQUEST, messaging::PUBLISH].contains(&c.function.as_str()) { RpcErrorKind::Malformed } else { RpcErrorKind::Unsupported };
        RpcError::new(kind, c, e.to_string())
    })?;
    let link = ctx
        .caller_link(c, messaging::NAMESPACE, messaging::PACKAGE, &[messaging::CONSUMER_INTERFACE], "")
        .map_err(|e| RpcError::new(RpcErrorKind::NoLink, c, e))?;
    let cfg = ctx.state().merged_config(&link.target_config);
    let cluster = cluster_key(setting(&cfg, CLUSTER_URIS).or_else(|| setting(ctx.config(), CLUSTER_URIS)));
    let internal = match &call {
        ConsumerCall::Publish(m) => [Some(m.subject.as_str()), m.reply_to.as_deref()].into_iter().flatten().find(|s| is_lattice_internal(s)),
        ConsumerCall::Request { subject, .. } => Some(subject.as_str()).filter(|s| is_lattice_internal(s)),
    };
    let outcome = match (cluster.is_empty(), internal) {
        (true, Some(subject)) => {
            tracing::warn!(source = c.source, subject, "refused a component's message to the lattice's own subjects");
            Err(format!(
                "{} to `{}` refused: `{subject}` is the lattice's own traffic on this connection (`wasmbus.…`, `$…`); \
                 set {CLUSTER_URIS} on the link to reach another NATS",
                call.function(),
                call.subject()
            ))
        }
        _ => consume_on(shared, &cluster, &call, inv.deadline, inv.traceparent.as_deref()).await,
    };
    if let Err(e) = &outcome {
        tracing::debug!(source = c.source, error = e, "a consumer call failed");
    }
    Ok(Response { head: wit_value::encode(&call.encode_results(&outcome)), body: rpc::full_body(Bytes::new()) })
}

/// Sends `call` on `cluster`; the message carries `traceparent` (the context of the
/// component's call) as its `traceparent` header, so whoever receives it continues the trace.
async fn consume_on(shared: &Shared, cluster: &str, call: &ConsumerCall, deadline: tokio::time::Instant, traceparent: Option<&str>) -> ConsumerResult {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(tp) = traceparent {
        headers.insert(rpc::TRACEPARENT_HEADER, tp);
    }
    match shared.clusters.get(cluster).await {
        Err(e) => Err(format!("{} to `{}` failed: {e}", call.function(), call.subject())),
        Ok(client) => match call {
            ConsumerCall::Publish(m) => publish(&client, m, headers).await,
            ConsumerCall::Request { subject, body, timeout_ms } => request(&client, subject, body, *timeout_ms, deadline, headers).await,
        },
    }
}

/// Why `subject` cannot be published to, if it cannot.
fn unpublishable(subject: &str) -> Option<&'static str> {
    if subject.is_empty() {
        Some("it is empty")
    } else if subject.contains(char::is_whitespace) {
        Some("it contains whitespace")
    } else if subject.split('.').any(|t| t.is_empty()) {
        Some("it has an empty token (a leading, trailing or doubled `.`)")
    } else if subject.split('.').any(|t| t == "*" || t == ">") {
        Some("it has a wildcard, which only subscriptions may use")
    } else {
        None
    }
}

fn too_large(what: &str, subject: &str, size: usize, client: &async_nats::Client) -> String {
    format!("{what} to `{subject}` failed: the body is {size} bytes, more than the NATS server's max_payload of {} bytes", client.server_info().max_payload)
}

async fn publish(client: &async_nats::Client, m: &BrokerMessage, headers: async_nats::HeaderMap) -> ConsumerResult {
    let subject = &m.subject;
    if let Some(why) = unpublishable(subject) {
        return Err(format!("publish to `{subject}` failed: `{subject}` is not a subject one can publish to: {why}"));
    }
    if let Some(why) = m.reply_to.as_deref().and_then(unpublishable) {
        return Err(format!(
            "publish to `{subject}` failed: the reply-to `{}` is not a subject one can reply to: {why}",
            m.reply_to.as_deref().unwrap_or_default()
        ));
    }
    let max = client.server_info().max_payload;
    if max > 0 && m.body.len() > max {
        return Err(too_large("publish", subject, m.body.len(), client));
    }
    let body = Bytes::copy_from_slice(&m.body);
    let sent = match &m.reply_to {
        // No context, no headers: the message is what it was before traces.
        Some(reply) if headers.is_empty() => client.publish_with_reply(subject.clone(), reply.clone(), body).await,
        None if headers.is_empty() => client.publish(subject.clone(), body).await,
        Some(reply) => client.publish_with_reply_and_headers(subject.clone(), reply.clone(), headers, body).await,
        None => client.publish_with_headers(subject.clone(), headers, body).await,
    };
    sent.map(|()| ConsumerReply::Published).map_err(|e| match e.kind() {
        async_nats::client::PublishErrorKind::MaxPayloadExceeded => too_large("publish", subject, m.body.len(), client),
        _ => format!("publish to `{subject}` failed: {e}"),
    })
}

async fn request(
    client: &async_nats::Client,
    subject: &str,
    body: &[u8],
    timeout_ms: u32,
    deadline: tokio::time::Instant,
    headers: async_nats::HeaderMap,
) -> ConsumerResult {
    if let Some(why) = unpublishable(subject) {
        return Err(format!("request to `{subject}` failed: `{subject}` is not a subject one can publish to: {why}"));
    }
    let max = client.server_info().max_payload;
    if max > 0 && body.len() > max {
        return Err(too_large("request", subject, body.len(), client));
    }
    // The caller's deadline bounds the wait, so that a timeout reaches it as a value.
    let asked = Duration::from_millis(timeout_ms.into());
    let left = deadline.saturating_duration_since(tokio::time::Instant::now()).saturating_sub(DEADLINE_MARGIN);
    let (timeout, cut) = if asked <= left { (asked, false) } else { (left, true) };
    let mut req = async_nats::Request::new().payload(Bytes::copy_from_slice(body)).timeout(Some(timeout));
    if !headers.is_empty() {
        req = req.headers(headers);
    }
    match client.send_request(subject.to_string(), req).await {
        Ok(reply) => Ok(ConsumerReply::Message(BrokerMessage {
            subject: reply.subject.to_string(),
            body: reply.payload.to_vec(),
            reply_to: reply.reply.map(|r| r.to_string()),
        })),
        Err(e) => Err(match e.kind() {
            async_nats::client::RequestErrorKind::NoResponders => format!("request to `{subject}` failed: no responders (nothing subscribes to `{subject}`)"),
            async_nats::client::RequestErrorKind::TimedOut if cut => format!(
                "request to `{subject}` timed out after {} ms, the time left before the caller's deadline (it asked for {timeout_ms} ms)",
                timeout.as_millis()
            ),
            async_nats::client::RequestErrorKind::TimedOut => format!("request to `{subject}` timed out after {timeout_ms} ms with no reply"),
            async_nats::client::RequestErrorKind::MaxPayloadExceeded => too_large("request", subject, body.len(), client),
            _ => format!("request to `{subject}` failed: {e}"),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn subscriptions_parse_with_and_without_queues() {
        assert_eq!(
            parse_subscriptions(" a.b , c.>|workers,, d ").unwrap(),
            [("a.b".to_string(), None), ("c.>".to_string(), Some("workers".to_string())), ("d".to_string(), None)]
        );
        assert!(parse_subscriptions("").unwrap().is_empty());
        assert!(parse_subscriptions("|q").unwrap_err().contains("names no subject"));
        assert!(parse_subscriptions("a|").unwrap_err().contains("names no queue"));
        assert!(parse_subscriptions("a|b|c").unwrap_err().contains("more than one `|`"));
    }

    #[test]
    fn config_keys_match_in_any_case_and_cluster_lists_normalise() {
        let cfg: StringMap = [("subscriptions".to_string(), "x".to_string()), ("CLUSTER_URIS".to_string(), "u".to_string())].into_iter().collect();
        assert_eq!(setting(&cfg, SUBSCRIPTIONS), Some("x"));
        assert_eq!(setting(&cfg, CLUSTER_URIS), Some("u"));
        assert_eq!(setting(&cfg, TIMEOUT_MS), None);
        assert_eq!(cluster_key(Some(" nats://a:4222, ,nats://b:4222 ")), "nats://a:4222,nats://b:4222");
        assert_eq!(cluster_key(Some(" ")), "");
        assert_eq!(cluster_key(None), "");
    }

    #[test]
    fn publish_subjects_are_checked() {
        assert_eq!(unpublishable("orders.new"), None);
        assert_eq!(unpublishable("_INBOX.abc.1"), None);
        assert!(unpublishable("").is_some());
        assert!(unpublishable("a b").is_some());
        assert!(unpublishable("a..b").is_some());
        assert!(unpublishable("a.").is_some());
        assert!(unpublishable("a.*").unwrap().contains("wildcard"));
        assert!(unpublishable("a.>").unwrap().contains("wildcard"));
        assert_eq!(unpublishable("a.b*"), None);
    }
}

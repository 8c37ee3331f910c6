//! The control server: answers every wasmCloud v1 control subject for this host.
//!
//! Each message is handled in its own task so a slow operation (compiling a component) never
//! delays a ping. Every request that expects an answer gets one: malformed JSON, oversized
//! payloads and unknown subjects get `{success: false}` with a message that names the problem.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use trellis_lattice::ctl::*;
use trellis_lattice::event::{ConfigDeleted, ConfigSet, LabelsChanged, LinkdefDeleted, LinkdefSet, LinkdefSetFailed};
use trellis_lattice::subject::{CtlOp, CtlSubjects};
use trellis_lattice::validate_id;

use crate::error::{HostError, Result};
use crate::host::HostCtx;
use crate::identity::{self, RESERVED_LABEL_PREFIX};

/// Largest control payload accepted, well below NATS' default max_payload of 1 MiB.
pub const MAX_CTL_PAYLOAD: usize = 512 * 1024;

/// What to send back.
enum Reply {
    /// Stay silent (an auction this host does not bid in, a subject another handler answers).
    Silent,
    /// The envelope to send.
    Json(Vec<u8>),
    /// Acknowledge, make sure the ack has left, then stop the host with this grace period.
    AckThenStop(Duration),
}

fn reply<T: Serialize>(r: CtlResponse<T>) -> Reply {
    // Serialising our own types cannot fail; should it, the caller still gets an answer.
    Reply::Json(serde_json::to_vec(&r).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot encode a control reply");
        br#"{"success":false,"message":"cannot encode reply"}"#.to_vec()
    }))
}

fn ok<T: Serialize>(v: T) -> Reply {
    reply(CtlResponse::ok(v))
}

/// One page of a paged listing (see [`CtlResponse::next`]); a listing that has more says so in
/// the message too, for clients that do not page (wasmCloud's), which see the first page.
fn ok_page<T: Serialize>(v: T, next: Option<String>, unreadable: Vec<Unreadable>) -> Reply {
    let mut message = String::new();
    if next.is_some() {
        message.push_str(
            "this reply holds the first part of the listing; ask again with the request body {\"after\": NEXT} for the rest, NEXT being this reply's `next`",
        );
    }
    if !unreadable.is_empty() {
        let keys: Vec<&str> = unreadable.iter().map(|u| u.key.as_str()).collect();
        if !message.is_empty() {
            message.push_str("; ");
        }
        message.push_str(&format!("{} stored entries cannot be read and are left out: {}", keys.len(), keys.join(", ")));
    }
    reply(CtlResponse { message, next, unreadable, ..CtlResponse::ok(v) })
}

/// The largest reply this host sends: [`REPLY_BUDGET`], or half the server's `max_payload`
/// when that is smaller.
fn reply_budget(ctx: &HostCtx) -> usize {
    REPLY_BUDGET.min(ctx.nats().server_info().max_payload / 2)
}

/// The page asked for: none (the first page) for an empty body, else a [`PageRequest`]; any
/// other JSON (wasmCloud clients may send `{}` or `null`) also asks for the first page.
fn page_request(op: &CtlOp, payload: &[u8]) -> std::result::Result<Option<String>, String> {
    expect_no_body(op, payload)?;
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    Ok(serde_json::from_slice::<PageRequest>(payload).ok().and_then(|p| p.after))
}

fn ack() -> Reply {
    reply(CtlResponse::ack())
}

fn fail(message: impl Into<String>) -> Reply {
    reply(CtlResponse::<()>::error(message))
}

/// Parses a request body, naming the operation and the problem on failure.
fn parse<T: DeserializeOwned>(op: &CtlOp, payload: &[u8]) -> std::result::Result<T, String> {
    serde_json::from_slice(payload).map_err(|e| {
        let what = if std::str::from_utf8(payload).is_err() { "is not valid UTF-8 JSON".to_string() } else { format!("is malformed: {e}") };
        format!("the {} request body {what}", op.name())
    })
}

/// Bodiless operations accept an empty payload or any JSON, but not garbage.
fn expect_no_body(op: &CtlOp, payload: &[u8]) -> std::result::Result<(), String> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    parse::<serde_json::Value>(op, payload).map(|_| ())
}

/// Subscribes to this host's control subjects and serves them until aborted.
pub(crate) async fn serve(ctx: Arc<HostCtx>) -> Result<tokio::task::JoinHandle<()>> {
    let subjects = CtlSubjects::new(ctx.lattice());
    let mut streams = Vec::new();
    for sub in subjects.host_subscriptions(ctx.id()) {
        let s = match &sub.queue {
            Some(q) => ctx.nats().queue_subscribe(sub.subject.clone(), q.clone()).await,
            None => ctx.nats().subscribe(sub.subject.clone()).await,
        }
        .map_err(|e| HostError::Registry(format!("cannot subscribe to `{}`: {e}", sub.subject)))?;
        let catch_all = sub.catch_all;
        streams.push(s.map(move |m| (m, catch_all)).boxed());
    }
    // The server must have the subscriptions before the host says it is up.
    trellis_lattice::round_trip(ctx.nats()).await?;
    let mut all = futures::stream::select_all(streams);
    Ok(tokio::spawn(async move {
        while let Some((msg, catch_all)) = all.next().await {
            let ctx = ctx.clone();
            let subjects = subjects.clone();
            tokio::spawn(async move { handle(ctx, subjects, msg, catch_all).await });
        }
    }))
}

async fn handle(ctx: Arc<HostCtx>, subjects: CtlSubjects, msg: async_nats::Message, catch_all: bool) {
    let Some(reply_to) = msg.reply.clone() else { return };
    let parsed = subjects.parse(&msg.subject);
    let answer = match parsed {
        // Known subjects are answered by their own subscription.
        Ok(_) if catch_all => Reply::Silent,
        Err(e) => fail(e),
        Ok(_) if msg.payload.len() > MAX_CTL_PAYLOAD => {
            fail(format!("the request is {} bytes; control requests are limited to {MAX_CTL_PAYLOAD}", msg.payload.len()))
        }
        Ok(op) => dispatch(&ctx, op, &msg.payload).await,
    };
    let (body, stop) = match answer {
        Reply::Silent => return,
        Reply::Json(body) => (body, None),
        Reply::AckThenStop(grace) => match ack() {
            Reply::Json(body) => (body, Some(grace)),
            _ => return,
        },
    };
    if let Err(e) = ctx.nats().publish(reply_to, body.into()).await {
        tracing::warn!(subject = %msg.subject, error = %e, "cannot send control reply");
    }
    if let Some(grace) = stop {
        // The stop unsubscribes us; the ack must be at the server first.
        let _ = trellis_lattice::round_trip(ctx.nats()).await;
        ctx.shutdown(grace).await;
    }
}

async fn dispatch(ctx: &Arc<HostCtx>, op: CtlOp, payload: &[u8]) -> Reply {
    match handle_op(ctx, &op, payload).await {
        Ok(r) => r,
        Err(e) => fail(e),
    }
}

async fn handle_op(ctx: &Arc<HostCtx>, op: &CtlOp, payload: &[u8]) -> std::result::Result<Reply, String> {
    let err = |e: HostError| e.to_string();
    Ok(match op {
        CtlOp::HostPing => {
            expect_no_body(op, payload)?;
            ok(ctx.info().await)
        }
        CtlOp::HostGet(_) => {
            let after = page_request(op, payload)?;
            let (inventory, next) = ctx.inventory_page(after.as_deref(), reply_budget(ctx)).await;
            ok_page(inventory, next, Vec::new())
        }
        CtlOp::HostStop(_) => {
            let cmd: StopHostCommand = if payload.is_empty() { StopHostCommand::default() } else { parse(op, payload)? };
            Reply::AckThenStop(cmd.timeout.map(Duration::from_millis).unwrap_or(ctx.shutdown_timeout()))
        }
        CtlOp::HostCordon(_) | CtlOp::HostUncordon(_) | CtlOp::HostDrain(_) => {
            expect_no_body(op, payload)?;
            match op {
                CtlOp::HostCordon(_) => ctx.scheduling().cordon().await,
                CtlOp::HostUncordon(_) => ctx.scheduling().uncordon().await,
                _ => ctx.scheduling().drain().await,
            };
            ok(HostScheduleReply { host_id: ctx.id().to_string(), schedule: ctx.schedule().await })
        }
        CtlOp::ComponentAuction => {
            let req: ComponentAuctionRequest = parse(op, payload)?;
            if !bids(ctx, &req.constraints).await || ctx.components().get(&req.component_id).await.is_some() {
                return Ok(Reply::Silent);
            }
            ok(ComponentAuctionAck {
                component_ref: req.component_ref,
                component_id: req.component_id,
                host_id: ctx.id().to_string(),
                constraints: req.constraints,
            })
        }
        CtlOp::ProviderAuction => {
            let req: ProviderAuctionRequest = parse(op, payload)?;
            if !bids(ctx, &req.constraints).await || ctx.workloads().providers().contains(&req.provider_id).await {
                return Ok(Reply::Silent);
            }
            ok(ProviderAuctionAck { provider_ref: req.provider_ref, provider_id: req.provider_id, host_id: ctx.id().to_string(), constraints: req.constraints })
        }
        CtlOp::ComponentScale(_) => {
            let cmd: ScaleComponentCommand = parse(op, payload)?;
            validate_id("component_id", &cmd.component_id).map_err(|e| e.to_string())?;
            if cmd.component_ref.is_empty() && cmd.max_instances > 0 {
                return Err("component_ref must not be empty; give file:///path/to/component.wasm".into());
            }
            let ctx = ctx.clone();
            tokio::spawn(async move { ctx.workloads().scale_component(cmd).await });
            ack()
        }
        CtlOp::ComponentUpdate(_) => {
            let cmd: UpdateComponentCommand = parse(op, payload)?;
            validate_id("component_id", &cmd.component_id).map_err(|e| e.to_string())?;
            if ctx.components().get(&cmd.component_id).await.is_none() {
                return Err(format!("component `{}` is not running on host `{}`; start it first", cmd.component_id, ctx.id()));
            }
            let ctx = ctx.clone();
            tokio::spawn(async move { ctx.workloads().update_component(cmd).await });
            ack()
        }
        CtlOp::ProviderStart(_) => {
            let cmd: StartProviderCommand = parse(op, payload)?;
            validate_id("provider_id", &cmd.provider_id).map_err(|e| e.to_string())?;
            let ctx = ctx.clone();
            tokio::spawn(async move { ctx.workloads().start_provider(cmd).await });
            ack()
        }
        CtlOp::ProviderStop(_) => {
            let cmd: StopProviderCommand = parse(op, payload)?;
            validate_id("provider_id", &cmd.provider_id).map_err(|e| e.to_string())?;
            if !ctx.workloads().providers().stop(&cmd.provider_id).await {
                return Err(format!("provider `{}` is not running on host `{}`", cmd.provider_id, ctx.id()));
            }
            ack()
        }
        CtlOp::LabelPut(_) => {
            let label: HostLabel = parse(op, payload)?;
            check_label_key(&label.key)?;
            crate::identity::check_text(&format!("the value of label `{}`", label.key), &label.value)?;
            identity::check_label_size(&label.key, &label.value)?;
            let labels = ctx.put_label(label.key, label.value).await?;
            ctx.events().publish(&LabelsChanged { host_id: ctx.id().to_string(), labels }).await;
            ack()
        }
        CtlOp::LabelDel(_) => {
            let label: HostLabelIdentifier = parse(op, payload)?;
            check_label_key(&label.key)?;
            let Some(labels) = ctx.remove_label(&label.key).await else {
                return Err(format!("host `{}` has no label `{}`", ctx.id(), label.key));
            };
            ctx.events().publish(&LabelsChanged { host_id: ctx.id().to_string(), labels }).await;
            ack()
        }
        CtlOp::LinkPut => {
            let link: Link = parse(op, payload)?;
            match ctx.registry().put_link(&link).await {
                Ok(stored) => {
                    ctx.events().publish(&LinkdefSet(stored)).await;
                    ack()
                }
                Err(e) => {
                    let error = e.to_string();
                    ctx.events().publish(&LinkdefSetFailed { link, error: error.clone() }).await;
                    return Err(error);
                }
            }
        }
        CtlOp::LinkDel => {
            let req: DeleteLinkRequest = parse(op, payload)?;
            let deleted = ctx.registry().delete_links(&req).await.map_err(err)?;
            let target = match deleted.as_slice() {
                [one] => Some(one.target.clone()),
                _ => None,
            };
            ctx.events()
                .publish(&LinkdefDeleted { source_id: req.source_id, name: req.name, wit_namespace: req.wit_namespace, wit_package: req.wit_package, target })
                .await;
            ack()
        }
        CtlOp::LinkGet => {
            let after = page_request(op, payload)?;
            let (links, next, unreadable) = ctx.registry().links_page(after.as_deref(), reply_budget(ctx)).await.map_err(err)?;
            ok_page(links, next, unreadable)
        }
        CtlOp::ClaimsGet => {
            let after = page_request(op, payload)?;
            let (claims, unreadable) = ctx.registry().claims().await.map_err(err)?;
            let from = |k: &str| after.as_deref().is_none_or(|a| k > a);
            let (page, next) = trellis_lattice::ctl::page(claims.iter().filter(|(k, _)| from(k)).map(|(k, c)| (k.as_str(), c)), reply_budget(ctx));
            ok_page(page, next, unreadable)
        }
        CtlOp::ConfigPut(name) => {
            let values: StringMap = parse(op, payload).map_err(|e| format!("{e}; config is a JSON object of string keys to string values"))?;
            ctx.registry().put_config(name, &values).await.map_err(err)?;
            ctx.events().publish(&ConfigSet { config_name: name.clone() }).await;
            ack()
        }
        CtlOp::ConfigGet(name) => {
            expect_no_body(op, payload)?;
            match ctx.registry().get_config(name).await.map_err(err)? {
                Some(values) => ok(values),
                None => return Err(format!("no config named `{name}` in lattice `{}`; create it with `wash config put {name} KEY=VALUE`", ctx.lattice())),
            }
        }
        CtlOp::ConfigDel(name) => {
            expect_no_body(op, payload)?;
            ctx.registry().delete_config(name).await.map_err(err)?;
            ctx.events().publish(&ConfigDeleted { config_name: name.clone() }).await;
            ack()
        }
    })
}

/// Whether this host bids in an auction with `constraints`: it takes new placements and has
/// every constrained label with the value asked for.
async fn bids(ctx: &HostCtx, constraints: &StringMap) -> bool {
    if !ctx.schedule().await.is_schedulable() {
        return false;
    }
    let labels = ctx.labels().await;
    constraints.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn check_label_key(key: &str) -> std::result::Result<(), String> {
    if key.is_empty() {
        return Err("a label key must not be empty".into());
    }
    identity::check_label_size(key, "")?;
    crate::identity::check_text("label key", key)?;
    if crate::identity::is_reserved_label(key) {
        return Err(format!("label `{key}` is reserved: `{RESERVED_LABEL_PREFIX}*` labels (in any letter case) are set by the host itself"));
    }
    Ok(())
}

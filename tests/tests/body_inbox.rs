//! A call's `more` body inbox must be the caller's own: the host pulls the rest of a body on
//! its own connection, so a call naming a control subject there must not make the host publish
//! to it. Exercised with `examples/http-echo`, which reads its request body.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use trellis_lattice::ctl::ScaleComponentCommand;
use trellis_lattice::rpc::{self, CallInfo, Invocation, RpcErrorKind};
use trellis_tests::components::{file_ref, http_echo};
use trellis_tests::hosts::{Events, start_host};
use trellis_tests::nats::NatsServer;

const WAIT: Duration = Duration::from_secs(20);

/// A raw call message `{head, body, more}` as MessagePack.
fn call_naming(head: &[u8], body: &[u8], more: &str) -> Bytes {
    let wire = (serde_bytes::ByteBuf::from(head.to_vec()), serde_bytes::ByteBuf::from(body.to_vec()), Some(more.to_string()));
    Bytes::from(rmp_serde::to_vec(&wire).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_inbox_that_is_not_the_callers_is_refused_and_never_pulled() {
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let client = nats.client().await.unwrap();
    let ctl = trellis_lattice::client::CtlClient::new(client.clone(), "default");
    let mut events = Events::subscribe(&client, "default").await.unwrap();
    ctl.scale_component(&ScaleComponentCommand {
        component_ref: file_ref(http_echo()),
        component_id: "echo".into(),
        max_instances: 2,
        host_id: host.id().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    events.wait_for("component_scaled", WAIT, |e| e.data["component_id"] == "echo").await.unwrap();

    let head = rpc::http::encode(&rpc::http::RequestHead { method: "POST".into(), uri: "/".into(), headers: vec![] });
    let call = CallInfo {
        lattice: "default".into(),
        source: "tests".into(),
        target: "echo".into(),
        interface: rpc::http::INTERFACE.into(),
        function: rpc::http::FUNCTION.into(),
        link_name: "default".into(),
    };
    // A caller on another connection (so the call goes over NATS, not local routing).
    let router = rpc::Router::new(client.clone(), "default");
    let big: Bytes = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    let echo = async |body: Bytes| {
        let inv =
            Invocation { call: call.clone(), traceparent: None, deadline: tokio::time::Instant::now() + WAIT, head: head.clone(), body: rpc::full_body(body) };
        rpc::collect_body(router.call(inv).await.unwrap().body).await.unwrap()
    };
    // A 3 MiB body does not fit in one message: the host pulls it from the caller's own inbox.
    assert_eq!(echo(big.clone()).await, big, "the echoed body differs");

    // Anyone watching the control subject the crafted call names.
    let target = "wasmbus.ctl.v1.default.host.ping";
    let mut spy = nats.client().await.unwrap().subscribe(target).await.unwrap();
    let spy_flushed = client.flush().await;
    assert!(spy_flushed.is_ok());

    let subject = rpc::subject("default", "echo", rpc::http::INTERFACE, rpc::http::FUNCTION);
    for more in [target, "wadm.api.default.model.del.app", "_INBOX", "$JS.API.STREAM.DELETE.KV_CONFIGDATA_default"] {
        let reply = client.request(subject.clone(), call_naming(&head, b"first part", more)).await.unwrap();
        let err = rpc::reply_error(&reply.payload).unwrap_or_else(|| panic!("more = {more}: the call was not refused"));
        assert_eq!(err.kind, RpcErrorKind::Malformed, "{err}");
        assert!(err.to_string().contains(&format!("names `{more}` as the inbox")), "{err}");
    }
    let err = rpc::reply_error(&client.request(subject.clone(), call_naming(&head, b"x", target)).await.unwrap().payload).unwrap();
    assert!(err.to_string().contains("not an inbox of the caller") && err.to_string().contains("`_INBOX.ID`"), "{err}");

    // The host still serves bodies pulled from real inboxes; by the time this one is echoed, a
    // pull sent for the refused calls (on the same connection, before) would have reached the spy.
    assert_eq!(echo(big.clone()).await, big);
    client.flush().await.unwrap();
    let leaked = tokio::time::timeout(Duration::from_millis(200), spy.next()).await;
    assert!(leaked.is_err(), "the host published to {target} for a caller: {:?}", leaked.ok().flatten().map(|m| m.subject));
    assert_eq!(ctl.ping_hosts().await.unwrap().len(), 1);
}

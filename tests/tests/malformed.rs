//! Bad input of every kind, on the control plane and the data plane: each gets an error reply
//! that names the problem, the host keeps answering, and the lattice state is unchanged.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use bytes::Bytes;
use trellis_lattice::client::CtlClient;
use trellis_lattice::ctl::*;
use trellis_lattice::rpc::{self, CallInfo, Invocation, RpcErrorKind};
use trellis_lattice::subject::{CtlOp, CtlSubjects};
use trellis_tests::components::{file_ref, http_hello};
use trellis_tests::hosts::{Events, start_host};
use trellis_tests::nats::NatsServer;

const WAIT: Duration = Duration::from_secs(20);

/// A raw data-plane message: the envelope `{head, body, more}` as MessagePack.
fn envelope(head: &[u8], body: &[u8]) -> Bytes {
    let wire = (serde_bytes::ByteBuf::from(head.to_vec()), serde_bytes::ByteBuf::from(body.to_vec()), Option::<String>::None);
    Bytes::from(rmp_serde::to_vec(&wire).unwrap())
}

/// A raw data-plane message whose body continues at inbox `more`.
fn envelope_more(head: &[u8], body: &[u8], more: &str) -> Bytes {
    let wire = (serde_bytes::ByteBuf::from(head.to_vec()), serde_bytes::ByteBuf::from(body.to_vec()), Some(more.to_string()));
    Bytes::from(rmp_serde::to_vec(&wire).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_kinds_of_bad_input_each_get_an_error_and_change_nothing() {
    let nats = NatsServer::start().await.unwrap();
    let host = start_host(&nats.url(), &[]).await.unwrap();
    let client = nats.client().await.unwrap();
    let ctl = CtlClient::new(client.clone(), "default").with_auction_timeout(Duration::from_millis(200));
    let mut events = Events::subscribe(&client, "default").await.unwrap();

    // State to protect: a component, a config, a link.
    ctl.scale_component(&ScaleComponentCommand {
        component_ref: file_ref(http_hello()),
        component_id: "hello".into(),
        max_instances: 2,
        host_id: host.id().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    events.wait_for("component_scaled", WAIT, |_| true).await.unwrap();
    let config: StringMap = [("address".to_string(), "127.0.0.1:1".to_string())].into();
    ctl.put_config("addr", &config).await.unwrap();
    let link = Link {
        source_id: "web".into(),
        target: "hello".into(),
        name: "default".into(),
        wit_namespace: "wasi".into(),
        wit_package: "http".into(),
        interfaces: vec!["incoming-handler".into()],
        source_config: vec!["addr".into()],
        target_config: vec![],
    };
    ctl.put_link(&link).await.unwrap();

    let s = CtlSubjects::new("default");
    let h = host.id().to_string();
    let sub = |op: CtlOp| s.subject(&op);
    let big = "x".repeat(100_000);
    let huge_config = format!("{{\"k\": \"{}\"}}", "v".repeat(300 * 1024));
    let oversized = vec![b' '; 600 * 1024];
    // (subject, payload, a word the error must contain)
    let control: Vec<(String, Vec<u8>, &str)> = vec![
        // Truncated JSON.
        (sub(CtlOp::ComponentScale(h.clone())), br#"{"component_ref": "file:///x"#.to_vec(), "component.scale"),
        (sub(CtlOp::LinkPut), br#"{"source_id": "a", "targ"#.to_vec(), "link.put"),
        (sub(CtlOp::ConfigPut("c".into())), br#"{"k": "#.to_vec(), "config.put"),
        (sub(CtlOp::LabelPut(h.clone())), br#"{"key""#.to_vec(), "label.put"),
        (sub(CtlOp::HostStop(h.clone())), b"{".to_vec(), "host.stop"),
        // Wrong types.
        (sub(CtlOp::ComponentScale(h.clone())), br#"{"component_ref": 5, "component_id": "x", "host_id": "h"}"#.to_vec(), "component.scale"),
        (
            sub(CtlOp::ComponentScale(h.clone())),
            br#"{"component_ref": "file:///x", "component_id": "x", "host_id": "h", "max_instances": "many"}"#.to_vec(),
            "component.scale",
        ),
        (sub(CtlOp::LinkPut), br#"{"source_id": "a", "target": "b", "wit_namespace": "w", "wit_package": "p", "interfaces": "i"}"#.to_vec(), "link.put"),
        (sub(CtlOp::LabelPut(h.clone())), br#"{"key": "k", "value": {"nested": true}}"#.to_vec(), "label.put"),
        (sub(CtlOp::ConfigPut("c".into())), br#"{"k": 1}"#.to_vec(), "string"),
        (sub(CtlOp::HostStop(h.clone())), br#"{"host_id": "h", "timeout": "soon"}"#.to_vec(), "host.stop"),
        (sub(CtlOp::ComponentAuction), br#"{"component_ref": "r", "component_id": "i", "constraints": ["zone"]}"#.to_vec(), "component.auction"),
        (sub(CtlOp::ProviderStart(h.clone())), br#"[1, 2, 3]"#.to_vec(), "provider.start"),
        (sub(CtlOp::LinkDel), br#""just a string""#.to_vec(), "link.del"),
        // Huge strings.
        (
            sub(CtlOp::ComponentScale(h.clone())),
            format!(r#"{{"component_ref": "file:///x", "component_id": "{big}", "host_id": "h", "max_instances": 1}}"#).into_bytes(),
            "limit is 256",
        ),
        (
            sub(CtlOp::LinkPut),
            format!(r#"{{"source_id": "{big}", "target": "b", "wit_namespace": "w", "wit_package": "p", "interfaces": ["i"]}}"#).into_bytes(),
            "limit is 256",
        ),
        (sub(CtlOp::LabelPut(h.clone())), format!(r#"{{"key": "{big}", "value": "v"}}"#).into_bytes(), "limit is 4096"),
        (sub(CtlOp::LabelPut(h.clone())), format!(r#"{{"key": "k", "value": "{big}"}}"#).into_bytes(), "limit is 4096"),
        (sub(CtlOp::ConfigPut("c".into())), huge_config.into_bytes(), "the limit is"),
        // Oversized payload.
        (sub(CtlOp::LinkPut), oversized.clone(), "limited to"),
        (sub(CtlOp::ComponentScale(h.clone())), oversized, "limited to"),
        // Invalid UTF-8.
        (sub(CtlOp::ComponentScale(h.clone())), vec![0xff, 0xfe, 0xfd], "UTF-8"),
        (sub(CtlOp::LinkPut), b"{\"source_id\": \"\xff\"}".to_vec(), "link.put"),
        (sub(CtlOp::ConfigPut("c".into())), vec![0xc3, 0x28], "UTF-8"),
        (sub(CtlOp::HostPing), vec![0x80], "host.ping"),
        // Unknown subjects.
        ("wasmbus.ctl.v1.default.frobnicate.now".into(), vec![], "unknown control subject"),
        (format!("wasmbus.ctl.v1.default.component.frob.{h}"), vec![], "unknown control subject"),
        ("wasmbus.ctl.v1.default.link".into(), vec![], "unknown control subject"),
        ("wasmbus.ctl.v1.default.config.put".into(), b"{}".to_vec(), "config name"),
        ("wasmbus.ctl.v1.default.host.ping.extra".into(), vec![], "trailing"),
        // Bogus ids and refused values.
        (
            sub(CtlOp::ComponentScale(h.clone())),
            br#"{"component_ref": "file:///x", "component_id": "a b", "host_id": "h", "max_instances": 1}"#.to_vec(),
            "`a b`",
        ),
        (sub(CtlOp::ComponentScale(h.clone())), br#"{"component_ref": "file:///x", "component_id": "", "host_id": "h", "max_instances": 1}"#.to_vec(), "empty"),
        (sub(CtlOp::LinkPut), br#"{"source_id": "a", "target": "t*", "wit_namespace": "w", "wit_package": "p", "interfaces": ["i"]}"#.to_vec(), "`t*`"),
        (sub(CtlOp::LinkPut), br#"{"source_id": "a", "target": "b", "wit_namespace": "w", "wit_package": "p", "interfaces": []}"#.to_vec(), "no interface"),
        (
            sub(CtlOp::LinkPut),
            br#"{"source_id": "a", "target": "b", "wit_namespace": "w", "wit_package": "p", "interfaces": ["i"], "source_config": ["ghost"]}"#.to_vec(),
            "does not exist",
        ),
        (
            sub(CtlOp::LinkPut),
            br#"{"source_id": "web", "target": "other", "wit_namespace": "wasi", "wit_package": "http", "interfaces": ["incoming-handler"]}"#.to_vec(),
            "link conflict",
        ),
        (sub(CtlOp::LinkDel), br#"{"source_id": "a.b", "wit_namespace": "w", "wit_package": "p"}"#.to_vec(), "`a.b`"),
        (sub(CtlOp::LabelPut(h.clone())), br#"{"key": "hostcore.os", "value": "x"}"#.to_vec(), "reserved"),
        // Control characters in labels, ids and config names (never stored; the error names the
        // field and the character, and echoes nothing raw), and the reserved prefix in any case.
        (sub(CtlOp::LabelPut(h.clone())), br#"{"key": "HOSTCORE.os", "value": "x"}"#.to_vec(), "reserved"),
        (sub(CtlOp::LabelPut(h.clone())), br#"{"key": "zone", "value": "\u001b[2J"}"#.to_vec(), "U+001B"),
        (sub(CtlOp::LabelPut(h.clone())), br#"{"key": "zone\nNFAKE", "value": "x"}"#.to_vec(), "U+000A"),
        (sub(CtlOp::LabelPut(h.clone())), br#"{"key": "zone", "value": "\u202etxt"}"#.to_vec(), "U+202E"),
        (sub(CtlOp::LabelPut(h.clone())), br#"{"key": "zone", "value": "\u009b2J"}"#.to_vec(), "U+009B"),
        (
            sub(CtlOp::ComponentScale(h.clone())),
            br#"{"component_ref": "file:///x", "component_id": "a\u001b[2J", "host_id": "h", "max_instances": 1}"#.to_vec(),
            "contains '\\u{1b}'",
        ),
        (sub(CtlOp::ConfigPut("a\u{1b}b".into())), br#"{"k": "v"}"#.to_vec(), "config name `a\\u{1b}b`"),
        (sub(CtlOp::LabelDel(h.clone())), br#"{"key": "never-set"}"#.to_vec(), "no label"),
        (sub(CtlOp::ComponentUpdate(h.clone())), br#"{"component_id": "ghost", "new_component_ref": "file:///x", "host_id": "h"}"#.to_vec(), "not running"),
        (sub(CtlOp::ProviderStop(h.clone())), br#"{"host_id": "h", "provider_id": "ghost"}"#.to_vec(), "not running"),
        (sub(CtlOp::ConfigGet("ghost".into())), vec![], "no config named"),
    ];
    assert!(control.len() >= 40, "{} control cases", control.len());

    let unchanged = async |what: &str| {
        assert_eq!(ctl.ping_hosts().await.unwrap().len(), 1, "the host stopped answering after {what}");
        assert_eq!(ctl.get_links().await.unwrap(), vec![link.clone()], "links changed after {what}");
        assert_eq!(ctl.get_config("addr").await.unwrap(), config, "config changed after {what}");
        assert!(ctl.get_config("c").await.is_err(), "config `c` appeared after {what}");
        let labels = ctl.get_host_inventory(host.id()).await.unwrap().labels;
        assert!(labels.keys().all(|k| k.starts_with("hostcore.")) && labels.len() == 3, "labels changed after {what}: {labels:?}");
    };

    for (subject, payload, word) in &control {
        let what = format!("{subject} with {} bytes", payload.len());
        let reply = client.request(subject.clone(), Bytes::from(payload.clone())).await.unwrap_or_else(|e| panic!("{what}: no reply: {e}"));
        let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_else(|e| panic!("{what}: reply is not JSON: {e}"));
        assert_eq!(v["success"], false, "{what}: {v}");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(message.contains(word), "{what}: expected `{word}` in: {message}");
        assert!(!message.chars().any(char::is_control), "{what}: the error carries a raw control character: {message:?}");
        unchanged(&what).await;
    }

    // The data plane: raw messages to the component's HTTP function.
    let http = rpc::subject("default", "hello", rpc::http::INTERFACE, rpc::http::FUNCTION);
    let head_ok = rpc::http::encode(&rpc::http::RequestHead { method: "GET".into(), uri: "/".into(), headers: vec![] });
    let data: Vec<(String, Bytes, RpcErrorKind, &str)> = vec![
        (http.clone(), Bytes::from_static(b"not msgpack at all"), RpcErrorKind::Malformed, "could not be decoded"),
        (http.clone(), Bytes::new(), RpcErrorKind::Malformed, "could not be decoded"),
        (http.clone(), envelope(b"\xc1\xc1", b""), RpcErrorKind::Malformed, "HTTP request head"),
        (http.clone(), envelope(&vec![0x90; 300 * 1024], b""), RpcErrorKind::Malformed, "the limit is"),
        (rpc::subject("default", "hello", "wasi:keyvalue/store", "get"), envelope(b"\x90", b""), RpcErrorKind::Unsupported, "does not export"),
        (rpc::subject("default", "hello", rpc::http::INTERFACE, "frobnicate"), envelope(&head_ok, b""), RpcErrorKind::Unsupported, "no function `frobnicate`"),
        // A body inbox that is not the caller's: the host would pull from it on its own connection.
        (http.clone(), envelope_more(&head_ok, b"x", "wasmbus.ctl.v1.default.host.ping"), RpcErrorKind::Malformed, "not an inbox of the caller"),
        (http.clone(), envelope_more(&head_ok, b"x", "wadm.api.default.model.del.app"), RpcErrorKind::Malformed, "as the inbox to pull"),
    ];
    for (subject, payload, kind, word) in &data {
        let what = format!("{subject} with {} bytes", payload.len());
        let reply = client.request(subject.clone(), payload.clone()).await.unwrap_or_else(|e| panic!("{what}: no reply: {e}"));
        let err = rpc::reply_error(&reply.payload).unwrap_or_else(|| panic!("{what}: the reply is not an error"));
        assert_eq!(err.kind, *kind, "{what}: {err}");
        assert!(err.to_string().contains(word), "{what}: expected `{word}` in: {err}");
        unchanged(&what).await;
    }
    // Through a router: a head that is not an HTTP request, and a deadline already passed.
    let router = rpc::Router::new(client.clone(), "default");
    let call = CallInfo {
        lattice: "default".into(),
        source: "tests".into(),
        target: "hello".into(),
        interface: rpc::http::INTERFACE.into(),
        function: rpc::http::FUNCTION.into(),
        link_name: "default".into(),
    };
    let inv = |head: Bytes, wait: Duration| Invocation {
        call: call.clone(),
        traceparent: None,
        deadline: tokio::time::Instant::now() + wait,
        head,
        body: rpc::full_body(Bytes::new()),
    };
    let err = router.call(inv(Bytes::from_static(b"\x92\x01\x02"), WAIT)).await.err().unwrap();
    assert_eq!(err.kind, RpcErrorKind::Malformed, "{err}");
    let err = router.call(inv(head_ok.clone(), Duration::ZERO)).await.err().unwrap();
    assert_eq!(err.kind, RpcErrorKind::Deadline, "{err}");
    unchanged("the router calls").await;

    // And after all that, the component still serves.
    let ok = router.call(inv(head_ok, WAIT)).await.unwrap();
    assert_eq!(rpc::collect_body(ok.body).await.unwrap().as_ref(), b"Hello from Trellis!\n");
    println!("{} control and {} data-plane cases", control.len(), data.len() + 2);
}

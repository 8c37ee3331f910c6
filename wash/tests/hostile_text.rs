//! Text from the lattice reaches the terminal escaped: a host (or anything answering
//! `host.ping`) whose name or labels carry an ANSI escape or a line break cannot clear the
//! user's screen or forge a table row, and `wash label put` refuses such a label itself.

mod common;

use common::Wash;
use futures::StreamExt as _;
use trellis_lattice::ctl::{CtlResponse, Host};
use trellis_tests::nats::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_hosts_escapes_control_characters_from_a_rogue_host() {
    let nats = NatsServer::start().await.expect("nats");
    let client = nats.client().await.expect("connect");
    // A rogue responder, not a Trellis host (which refuses such labels): what any process on
    // the lattice could answer to a ping.
    let mut pings = client.subscribe("wasmbus.ctl.v1.default.host.ping").await.expect("subscribe");
    let rogue = Host {
        id: "NROGUE".into(),
        friendly_name: "\u{1b}[2Jcleared".into(),
        labels: [("zone".to_string(), "edge\nNFORGED  fake-host  1s  -".to_string()), ("\u{1b}]0;title\u{7}".to_string(), "\u{202e}txt".to_string())].into(),
        uptime_human: "1s".into(),
        ..Default::default()
    };
    let responder = client.clone();
    tokio::spawn(async move {
        while let Some(msg) = pings.next().await {
            if let Some(reply) = msg.reply {
                let body = serde_json::to_vec(&CtlResponse::ok(rogue.clone())).expect("encode");
                let _ = responder.publish(reply, body.into()).await;
            }
        }
    });
    client.flush().await.expect("flush");

    let wash = Wash::on(&nats);
    let out = wash.run_async(&["get", "hosts"]).await;
    let text = out.ok();
    assert!(!text.chars().any(|c| c != '\n' && (c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c))), "raw control characters reached stdout: {text:?}");
    assert_eq!(text.lines().count(), 2, "one header and one row, no forged one: {text}");
    assert!(!text.lines().any(|l| l.starts_with("NFORGED")), "{text}");
    assert!(text.contains("\\u{1b}[2Jcleared") && text.contains("edge\\nNFORGED") && text.contains("\\u{202e}txt"), "{text}");
    // JSON keeps the values exactly (JSON escapes them itself).
    let v = wash.run_async(&["get", "hosts", "-o", "json"]).await.json();
    assert_eq!(v["hosts"][0]["friendly_name"], "\u{1b}[2Jcleared");

    // wash refuses to send such a label at all, naming it and the character.
    let err = wash.run_async(&["label", "put", "NROGUE", "zone=\u{1b}[2J"]).await.error();
    assert!(err.contains("label `zone`") && err.contains("U+001B"), "{err}");
    assert!(!err.contains('\u{1b}'), "the error itself is escaped: {err:?}");
}

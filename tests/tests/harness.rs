//! Tests for the test harness itself: real nats-server processes and the
//! prebuilt wasm components.

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use trellis_tests::components;
use trellis_tests::nats::{NatsServer, nats_server_binary};

/// Publishes on a fresh subject and expects the message back on a subscription.
async fn round_trip(server: &NatsServer) -> anyhow::Result<()> {
    let client = server.client().await?;
    let mut sub = client.subscribe("harness.ping").await?;
    client.flush().await?; // the subscription must reach the server before the publish
    client.publish("harness.ping", format!("hi {}", server.port()).into()).await?;
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.context("no message within 5 s")?.context("subscription closed")?;
    assert_eq!(msg.payload, format!("hi {}", server.port()).as_bytes());
    Ok(())
}

async fn kv(server: &NatsServer) -> anyhow::Result<async_nats::jetstream::kv::Store> {
    let js = async_nats::jetstream::new(server.client().await?);
    js.create_key_value(async_nats::jetstream::kv::Config { bucket: "T".into(), ..Default::default() }).await.context("creating KV bucket")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_a_recent_enough_binary() -> anyhow::Result<()> {
    let (path, version) = nats_server_binary()?;
    assert!(path.is_file(), "{}", path.display());
    let minor: u32 = version.split('.').nth(1).context("no minor version")?.parse()?;
    assert!(version.starts_with("2.") && minor >= 10, "{version}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_run_side_by_side() -> anyhow::Result<()> {
    let (a, b) = tokio::try_join!(NatsServer::start(), NatsServer::start())?;
    assert_ne!(a.port(), b.port());
    assert_eq!(a.url(), format!("nats://127.0.0.1:{}", a.port()));
    assert_eq!(a.version(), nats_server_binary()?.1);
    round_trip(&a).await?;
    round_trip(&b).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_survives_restart_on_same_port() -> anyhow::Result<()> {
    let mut server = NatsServer::start().await?;
    let port = server.port();
    kv(&server).await?.put("greeting", "hello".into()).await?;

    server.restart().await?;
    assert_eq!(server.port(), port);
    let value = kv(&server).await?.get("greeting").await?;
    assert_eq!(value.as_deref(), Some(&b"hello"[..]));
    round_trip(&server).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_variant_applies_extra_conf() -> anyhow::Result<()> {
    // `max_payload` is visible to clients in the server's INFO.
    let mut server = NatsServer::start_with_config("max_payload: 4096").await?;
    let client = server.client().await?;
    assert_eq!(client.server_info().max_payload, 4096);
    kv(&server).await?.put("k", "v".into()).await?;

    let port = server.port();
    server.restart().await?;
    assert_eq!(server.port(), port);
    assert_eq!(kv(&server).await?.get("k").await?.as_deref(), Some(&b"v"[..]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_reports_server_output() -> anyhow::Result<()> {
    let Err(err) = NatsServer::start_with_config("this is { not valid").await else {
        anyhow::bail!("a broken config must not start");
    };
    let msg = format!("{err:#}");
    // The server's own complaint (printed to stderr) is part of the error.
    assert!(msg.contains("did not start") && msg.contains("Parse error"), "{msg}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_and_kill_stop_the_process() -> anyhow::Result<()> {
    let mut server = NatsServer::start().await?;
    let addr = format!("127.0.0.1:{}", server.port());
    tokio::net::TcpStream::connect(&addr).await?;
    server.kill();
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err(), "kill left {addr} open");
    server.kill(); // idempotent

    let server = NatsServer::start().await?;
    let addr = format!("127.0.0.1:{}", server.port());
    drop(server);
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err(), "drop left {addr} open");
    Ok(())
}

#[test]
fn components_are_built() {
    for path in [components::http_hello(), components::misbehave()] {
        let bytes = std::fs::read(path).unwrap_or_default();
        // Component-model binaries start with "\0asm" and layer 1 (core modules use layer 0).
        assert_eq!(bytes.get(..4), Some(&b"\0asm"[..]), "{path}");
        assert_eq!(bytes.get(6..8), Some(&[1, 0][..]), "{path} is not a component");
    }
    assert_eq!(components::file_ref("/a/b.wasm"), "file:///a/b.wasm");
}

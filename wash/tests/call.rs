//! `wash call`: HTTP requests to components over the data plane (no http-server provider in
//! between), bodies in both directions, text and JSON output, and the error for a target that
//! runs nowhere.

mod common;

use common::{Wash, ctl};
use trellis_tests::components::{http_hello, misbehave};
use trellis_tests::hosts::start_host;
use trellis_tests::nats::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_sends_http_requests_to_components() {
    let nats = NatsServer::start().await.expect("nats");
    let host = start_host(&nats.url(), &[]).await.expect("host");
    let wash = Wash::on(&nats);
    wash.run_async(&["start", "component", http_hello(), "hello"]).await.ok();
    wash.run_async(&["start", "component", misbehave(), "misbehave"]).await.ok();

    // The body, and nothing else, on stdout.
    let out = wash.run_async(&["call", "hello"]).await;
    assert_eq!(out.ok(), "Hello from Trellis!\n");
    assert_eq!(out.stderr, "");
    // -v: the status line and headers on stderr.
    let out = wash.run_async(&["call", "hello", "/", "-v"]).await;
    assert_eq!(out.ok(), "Hello from Trellis!\n");
    assert!(out.stderr.starts_with("HTTP 200 OK\n") && out.stderr.contains("content-type: text/plain"), "{}", out.stderr);
    let v = wash.run_async(&["call", "hello", "-o", "json"]).await.json();
    assert_eq!(v["status"], 200);
    assert_eq!(v["body"], "Hello from Trellis!\n");
    assert_eq!(v["headers"]["content-type"], "text/plain");
    assert!(v.get("body_base64").is_none(), "{v}");

    // A request body reaches the component, which echoes it.
    let out = wash.run_async(&["call", "misbehave", "/echo", "-X", "POST", "-d", "ping pong", "-H", "x-test: 1"]).await;
    assert_eq!(out.ok(), "ping pong");
    // The path routes inside the component.
    assert_eq!(wash.run_async(&["call", "misbehave", "/other"]).await.ok(), "misbehave v1\n");

    // A body larger than NATS' max_payload streams both ways, byte for byte; `-d`/`--data-file`
    // imply POST.
    let dir = tempfile::tempdir().expect("tempdir");
    let max = ctl(&nats).await.nats().server_info().max_payload;
    let big: Vec<u8> = (0..max * 5 / 2).map(|i| (i * 7 % 251) as u8).collect();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &big).expect("write");
    let path = file.to_str().expect("utf-8 path");
    let output = tokio::task::spawn_blocking({
        let mut cmd = wash.cmd(&["call", "misbehave", "/echo", "--data-file", path]);
        move || cmd.output()
    })
    .await
    .expect("joined")
    .expect("wash runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout == big, "the echo differs: {} bytes back for {}", output.stdout.len(), big.len());

    // Bytes that are not UTF-8 come back in JSON as base64 as well.
    let bin = dir.path().join("bin");
    std::fs::write(&bin, [0xff, 0x00, b'x']).expect("write");
    let v = wash.run_async(&["call", "misbehave", "/echo", "--data-file", bin.to_str().expect("utf-8"), "-o", "json"]).await.json();
    assert_eq!(v["body_base64"], "/wB4");
    assert_eq!(v["headers"]["content-type"], "application/octet-stream");

    drop(host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_to_a_component_that_runs_nowhere_fails_naming_it() {
    let nats = NatsServer::start().await.expect("nats");
    let _host = start_host(&nats.url(), &[]).await.expect("host");
    let wash = Wash::on(&nats);

    let err = wash.run_async(&["call", "nowhere", "/"]).await.error();
    for part in ["no running replica of `nowhere`", "lattice `default`", "source `wash`", "target `nowhere`", "interface `wasi:http/incoming-handler`"] {
        assert!(err.contains(part), "`{part}` missing from: {err}");
    }
    let out = wash.run_async(&["call", "nowhere", "-o", "json"]).await;
    assert!(!out.success);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert_eq!(v["success"], false);
    assert!(v["error"].as_str().is_some_and(|e| e.contains("target `nowhere`")), "{v}");

    // Bad arguments are refused before anything is sent.
    let out = wash.run_async(&["call", "hello", "-H", "no colon"]).await;
    assert!(!out.success && out.stderr.contains("is not of the form `Name: value`"), "{}", out.stderr);
    let err = wash.run_async(&["call", "hello", "--data-file", "/nonexistent/body"]).await.error();
    assert!(err.contains("cannot read the request body from /nonexistent/body"), "{err}");
}

//! Component-to-component calls through links for a custom interface: `examples/pinger`
//! (HTTP in, `trellis:examples/pingpong` imported) calls `examples/ponger` (which exports it)
//! across hosts over NATS and on one host through local routing; every value kind of the
//! interface makes the round trip, and missing links and targets fail with messages that name
//! them.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use bytes::Bytes;
use trellis_host::Host;
use trellis_lattice::ctl::*;
use trellis_tests::assert_contains_all;
use trellis_tests::components::{pinger, ponger};
use trellis_tests::scenario::{Lattice, WAIT};

/// Everything the first ping sends comes back, transformed as ponger documents.
const FULL_QUERY: &str = "/?message=hi&count=3&tags=a,b&reply-to=inbox-7&volume=loud&marks=urgent,twice";
const FULL_REPLY: &str = "ok
outcome pong \"HI #1\"
outcome pong \"HI #2\"
outcome refused \"#3 is a multiple of three\"
reply-to some \"inbox-7\"
tags [\"b\", \"a\"]
stats 18446744073709551612 -3 0.75 'i'
marks urgent|twice
";

fn get(path: &str) -> http::Request<Bytes> {
    http::Request::get(format!("http://localhost{path}")).body(Bytes::new()).unwrap()
}

fn pingpong_link(target: &str) -> Link {
    Link {
        source_id: "pinger".into(),
        target: target.into(),
        name: "default".into(),
        wit_namespace: "trellis".into(),
        wit_package: "examples".into(),
        interfaces: vec!["pingpong".into()],
        source_config: vec![],
        target_config: vec![],
    }
}

async fn body(host: &Host, path: &str) -> String {
    let resp = host.invoke_http("pinger", get(path)).await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.body());
    String::from_utf8(resp.body().to_vec()).unwrap()
}

async fn error(host: &Host, path: &str) -> String {
    host.invoke_http("pinger", get(path)).await.unwrap_err().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinger_calls_ponger_on_another_host_through_a_link() {
    let mut lattice = Lattice::new().await;
    let (a, b) = (lattice.host().await, lattice.host().await);
    lattice.scale(&a, "pinger", pinger(), 2).await;
    lattice.scale(&b, "ponger", ponger(), 2).await;

    // No link yet: the call traps, naming the missing link and the command that adds it.
    let no_link = [
        "no link from component `pinger` for `trellis:examples/pingpong` (link name `default`) in lattice `default`",
        "its call to `trellis:examples/pingpong.ping` has nowhere to go",
        "wash link put pinger <target> trellis examples --interface pingpong",
    ];
    assert_contains_all(&error(&a, FULL_QUERY).await, &no_link);

    let link = pingpong_link("ponger");
    lattice.put_link_seen(&[&a], &link).await;
    assert_eq!(body(&a, FULL_QUERY).await, FULL_REPLY);
    // Option none, an empty list, a payload-less variant case, empty flags, a quiet volume
    // and a multi-byte last char (the query is percent-encoded).
    assert_eq!(
        body(&a, "/?message=Quiet%20D%C3%A9j%C3%A0&count=0&volume=quiet").await,
        "ok\noutcome silence\nreply-to none\ntags []\nstats 18446744073709551615 0 0.0 'à'\nmarks none\n"
    );
    // The error side of the result.
    assert_eq!(body(&a, "/?message=&count=2").await, "err \"empty message: nothing to pong\"\n");
    // Concurrent callers share ponger's two instances.
    let calls = (0..8).map(|_| body(&a, FULL_QUERY));
    for reply in futures::future::join_all(calls).await {
        assert_eq!(reply, FULL_REPLY);
    }
    let inv = lattice.ctl.get_host_inventory(a.id()).await.unwrap();
    assert_eq!(inv.components.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["pinger"]);

    // Deleting the link takes effect on the next call.
    lattice.delete_link_seen(&[&a], &link).await;
    assert_contains_all(&error(&a, FULL_QUERY).await, &no_link);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_running_nowhere_is_named_and_a_same_host_target_answers_locally() {
    let mut lattice = Lattice::new().await;
    let a = lattice.host().await;
    lattice.scale(&a, "pinger", pinger(), 1).await;
    lattice.put_link_seen(&[&a], &pingpong_link("ponger")).await;

    let no_replica = [
        "no running replica of `ponger` answered",
        "lattice `default`",
        "source `pinger`",
        "target `ponger`",
        "interface `trellis:examples/pingpong`",
        "function `ping`",
        "link `default`",
    ];
    assert_contains_all(&error(&a, FULL_QUERY).await, &no_replica);

    // Same host: the router hands the call to ponger directly.
    lattice.scale(&a, "ponger", ponger(), 1).await;
    assert_eq!(body(&a, FULL_QUERY).await, FULL_REPLY);
    // pinger and ponger share nothing but the link: two calls in a row see fresh instances.
    assert_eq!(
        body(&a, "/?message=x&count=1&tags=t").await,
        "ok\noutcome pong \"x #1\"\nreply-to none\ntags [\"t\"]\nstats 18446744073709551614 -1 0.25 'x'\nmarks none\n"
    );

    // Stopped again: the same error as before it ever ran, once NATS has seen the
    // subscription go (until then the host itself says ponger is gone).
    lattice.scale(&a, "ponger", ponger(), 0).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut err = error(&a, FULL_QUERY).await;
    while !err.contains(no_replica[0]) && tokio::time::Instant::now() < deadline {
        assert!(err.contains("component `ponger` is no longer running on this host"), "{err}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        err = error(&a, FULL_QUERY).await;
    }
    assert_contains_all(&err, &no_replica);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_a_component_without_the_export_is_unsupported() {
    let mut lattice = Lattice::new().await;
    let a = lattice.host().await;
    lattice.scale(&a, "pinger", pinger(), 1).await;
    lattice.scale(&a, "hello", trellis_tests::components::http_hello(), 1).await;
    lattice.put_link_seen(&[&a], &pingpong_link("hello")).await;
    assert_contains_all(&error(&a, FULL_QUERY).await, &["component `hello` does not export `trellis:examples/pingpong`", "target `hello`", "function `ping`"]);
}

//! The http-server provider under hostile clients: connections that never finish their request
//! head (slow loris), and more connections than a listener allows. They are closed after the
//! header read timeout or refused over the cap, the provider process's file descriptors stay
//! bounded, and ordinary requests are served.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_tests::components::http_hello;
use trellis_tests::hosts::child_pids;
use trellis_tests::http::{get, get_until};
use trellis_tests::scenario::{WAIT, behind_provider_process};

const TIMEOUT: Duration = Duration::from_millis(1500);
const CAP: usize = 150;
const LORIS: usize = 400;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Reads until the server closes the connection (or `within` passes): what it sent, and when
/// it closed, if it did.
async fn until_closed(mut s: TcpStream, within: Duration) -> (Vec<u8>, Option<Instant>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(Instant::now())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_connections_are_closed_after_the_header_timeout_and_capped_per_listener() {
    let timeout_ms = TIMEOUT.as_millis().to_string();
    let cap = CAP.to_string();
    let (_l, _a, _b, addr) = behind_provider_process("hello", http_hello(), &[("header_read_timeout_ms", &timeout_ms), ("max_connections", &cap)]).await;
    assert_eq!(get_until(addr, "/", 200, WAIT).await.unwrap().text(), "Hello from Trellis!\n");
    let pids = child_pids("trellis-provider-http-server");
    assert_eq!(pids.len(), 1, "one provider process: {pids:?}");
    let pid = pids[0];
    let before = open_fds(pid);

    // A keep-alive connection that goes idle after one request is closed after the timeout too.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();

    // Slow loris: each connection sends part of a request head and never the rest. The first
    // dribbles a byte every 200 ms, which must not keep it open either.
    let opened = Instant::now();
    let mut dribbler = TcpStream::connect(addr).await.unwrap();
    dribbler.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let mut loris = Vec::new();
    for _ in 0..LORIS {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ").await.unwrap();
        loris.push(s);
    }
    let dribbling = tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if dribbler.write_all(b"a").await.is_err() || started.elapsed() > Duration::from_secs(20) {
                return started.elapsed();
            }
        }
    });

    // While they are held the process holds at most the cap in sockets, and at most 64 more for
    // refusals being answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = open_fds(pid);
    eprintln!("provider fds: {before} before, {held} with {LORIS} slow-loris connections open (cap {CAP})");
    assert!(held <= before + CAP + 64 + 5, "{held} fds open with {LORIS} slow connections (cap {CAP}, {before} before)");

    // A request now finds the listener full, and is told so.
    let over = get(addr, "/").await.unwrap();
    assert_eq!(over.status, 503, "{}", over.text());
    assert!(over.text().contains(&format!("holds its limit of {CAP} connections (max_connections)")), "{}", over.text());

    // Every slow connection ends: those over the cap at once (a 503, or, past the 64 refusals
    // in flight, closed without an answer), the others when the header timeout passes, not
    // before it.
    let outcomes = futures::future::join_all(loris.into_iter().map(|s| until_closed(s, Duration::from_secs(15)))).await;
    let (mut refused, mut shed, mut timed_out) = (0, 0, 0);
    for (got, closed) in &outcomes {
        let closed = closed.expect("a slow-loris connection was still open 15 s later");
        let text = String::from_utf8_lossy(got);
        let after = closed - opened;
        if text.starts_with("HTTP/1.1 503") {
            refused += 1;
        } else if after >= TIMEOUT - Duration::from_millis(100) {
            timed_out += 1;
        } else {
            assert!(text.is_empty(), "closed {after:?} after opening with {text:?}");
            shed += 1;
        }
    }
    // The early closes without an answer are over-cap connections past the refusal limit: the
    // ones let in (the cap, less the dribbling and idle connections) all wait for the timeout.
    assert!((CAP - 10..=CAP).contains(&timed_out), "{timed_out} closed by the header timeout (cap {CAP}), {refused} refused, {shed} shed");
    let last = outcomes.iter().filter_map(|(_, c)| *c).max().unwrap() - opened;
    eprintln!(
        "{LORIS} slow-loris connections: {refused} refused over the cap, {shed} closed over it without an answer, {timed_out} closed by the header timeout, the last {last:?} after opening"
    );
    assert!(refused > 0 && refused + shed >= LORIS - CAP, "{timed_out} timed out, {refused} refused, {shed} shed (cap {CAP})");
    assert!(last < TIMEOUT + Duration::from_secs(5), "the last one closed {last:?} after opening");
    let dribbled = dribbling.await.unwrap();
    assert!(dribbled < TIMEOUT + Duration::from_secs(5), "a connection dribbling its head stayed open {dribbled:?}");
    let (reply, closed) = until_closed(idle, Duration::from_secs(15)).await;
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&reply));
    assert!(closed.is_some(), "an idle keep-alive connection was kept 15 s");

    // The descriptors are given back, and ordinary requests are served.
    let deadline = Instant::now() + WAIT;
    while open_fds(pid) > before + 5 {
        assert!(Instant::now() < deadline, "{} fds still open after the slow connections closed ({before} before)", open_fds(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..20 {
        assert_eq!(get(addr, "/").await.unwrap().text(), "Hello from Trellis!\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_limit_in_provider_config_is_an_error_naming_the_key() {
    let mut l = trellis_tests::scenario::Lattice::new().await;
    let host = l.host().await;
    for (id, key, value, says) in [
        ("http-a", "max_connections", "lots", "max_connections `lots` is not a whole number from 1 to 65536"),
        ("http-b", "header_read_timeout_ms", "0", "header_read_timeout_ms `0` is not a whole number from 1 to 3600000"),
        ("http-c", "idempotent_methods", "PUT,GET POST", "idempotent_methods: `GET POST` is not an HTTP method"),
    ] {
        l.put_config(id, &[(key, value)]).await;
        let cmd = trellis_lattice::ctl::StartProviderCommand {
            provider_id: id.into(),
            provider_ref: "builtin://http-server".into(),
            host_id: host.id().into(),
            config: vec![id.into()],
            ..Default::default()
        };
        l.ctl.start_provider(&cmd).await.unwrap();
        let ev = l.events.wait_for("provider_stopped", WAIT, |e| e.data["provider_id"] == id).await.unwrap();
        let reason = ev.data["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(says), "{key}={value}: {reason}");
    }
}

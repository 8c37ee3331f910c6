//! One misbehaving client cannot knock a host off the lattice: subjects, reply subjects and
//! headers that are not valid UTF-8, published on `wasmbus.ctl…` and `wasmbus.rpc…` at 400/s,
//! used to make async-nats drop and reconnect the host's connection at each one (~1,870 times in
//! 5 s). The host now keeps one connection, answers every ping, and keeps serving HTTP.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use trellis_tests::components::http_hello;
use trellis_tests::http::{free_addr, get, get_until};
use trellis_tests::scenario::Lattice;

/// What the flooder publishes, in turn: (control line, payload), each a PUB or HPUB a real
/// nats-server accepts and forwards as is.
fn hostile(i: u64) -> Vec<u8> {
    match i % 5 {
        0 => format!("PUB wasmbus.ctl.v1.default.\u{1}{i}.").into_bytes().into_iter().chain(*b"\xff\xfe 2\r\nhi\r\n").collect(),
        1 => [b"PUB wasmbus.rpc.default.hello.wasi:http/incoming-handler.\xc3\x28 2\r\nhi\r\n".as_slice()].concat(),
        // A valid subject the host subscribes to, with a reply subject that is not UTF-8.
        2 => [b"PUB wasmbus.ctl.v1.default.host.ping _INBOX.\xff.x 0\r\n\r\n".as_slice()].concat(),
        // A valid subject with a header block that is not UTF-8.
        3 => [b"HPUB wasmbus.ctl.v1.default.host.ping 17 17\r\nNATS/1.0\r\nk:\xff\r\n\r\n\r\n".as_slice()].concat(),
        _ => [b"PUB wasmbus.ctl.v1.default.component.scale.\xff 2\r\n{}\r\n".as_slice()].concat(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_subjects_at_400_per_second_do_not_disconnect_the_host() {
    let mut l = Lattice::new().await;
    let host = l.host().await;
    l.start_component(&host, "hello", http_hello(), 4, None).await;
    l.start_provider(&host, "http", "builtin://http-server", &[]).await;
    let addr = free_addr().unwrap();
    l.link_at("http", "hello", addr, &[]).await;
    get_until(addr, "/", 200, Duration::from_secs(20)).await.unwrap();
    let connects_before = host.router().nats().statistics().connects.load(Ordering::Relaxed);
    assert_eq!(connects_before, 1, "the host connected once");

    // A raw TCP client (no client library would send these) on the same server.
    let port: u16 = l.ctl.nats().server_info().port;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}\r\n").unwrap();
            let start = Instant::now();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // 400 a second, evenly.
                let due = start + Duration::from_micros(2_500 * i);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                s.write_all(&hostile(i)).unwrap();
                i += 1;
                sent.store(i, Ordering::Relaxed);
            }
            // Pings from the server go unanswered; this client is gone before that matters.
        })
    };

    let until = Instant::now() + Duration::from_secs(5);
    let (mut pings, mut answered, mut requests, mut served) = (0, 0, 0, 0);
    while Instant::now() < until {
        pings += 1;
        if l.ctl.ping_hosts().await.is_ok_and(|hosts| hosts.iter().any(|h| h.id == host.id())) {
            answered += 1;
        }
        for _ in 0..5 {
            requests += 1;
            if get(addr, "/").await.is_ok_and(|r| r.status == 200 && r.body.as_ref() == b"Hello from Trellis!\n") {
                served += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    let connects = host.router().nats().statistics().connects.load(Ordering::Relaxed);
    println!("sent {sent} hostile messages; pings answered {answered}/{pings}; HTTP {served}/{requests}; host connects {connects}");
    assert!(sent >= 1_500, "the flood was too slow to prove anything: {sent} messages");
    assert_eq!(connects, 1, "the host's NATS connection was dropped and re-made {} times", connects - 1);
    assert_eq!(answered, pings, "pings answered: {answered} of {pings}");
    assert_eq!(served, requests, "HTTP requests served: {served} of {requests}");
}

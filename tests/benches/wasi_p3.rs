//! WASI 0.3 vs WASI 0.2: `examples/http-hello-p3` (`wasi:http/handler@0.3.0`, an async
//! handler) against `examples/http-hello` (`wasi:http/incoming-handler@0.2`), side by side in
//! one run, over the same two paths:
//!
//! - the lattice: the http-server provider built into host B, the components on host A
//!   (provider → NATS → host → component and back);
//! - local routing: the built-in provider on host A itself (calls handed over in memory).
//!
//! Each at concurrency 1 and 64 (keep-alive connections, one request at a time each), every
//! request a fresh instance of the component (both kinds), with `max_instances` 128.
//! `cargo bench -p trellis-tests --bench wasi_p3`.

use std::net::SocketAddr;
use std::time::Duration;

use trellis_tests::components::{http_hello, http_hello_p3};
use trellis_tests::hosts::start_host;
use trellis_tests::load::{Figures, http_gets};
use trellis_tests::scenario::Lattice;

const RUN: Duration = Duration::from_secs(3);

/// `concurrency` keep-alive connections, each sending GET / back to back for `RUN`, checking
/// every body is `expect`.
async fn load(addr: SocketAddr, concurrency: usize, expect: &'static [u8]) -> anyhow::Result<Figures> {
    http_gets(addr, concurrency, RUN, expect).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let nats = trellis_tests::nats::NatsServer::start().await?;
    let a = start_host(&nats.url(), &[]).await?;
    let b = start_host(&nats.url(), &[]).await?;
    let mut l = Lattice::on(&nats).await;
    l.start_component(&a, "hello2", http_hello(), 128, None).await;
    l.start_component(&a, "hello3", http_hello_p3(), 128, None).await;
    let paths = [
        ("lattice", l.http_server_on(b.id(), "remote2", "hello2").await?, l.http_server_on(b.id(), "remote3", "hello3").await?),
        ("local", l.http_server_on(a.id(), "local2", "hello2").await?, l.http_server_on(a.id(), "local3", "hello3").await?),
    ];
    const P2: &[u8] = b"Hello from Trellis!\n";
    const P3: &[u8] = b"Hello from Trellis (WASI 0.3)!\n";
    // Warm both (compiled code, connections, pools).
    for (_, p2, p3) in &paths {
        load(*p2, 4, P2).await?;
        load(*p3, 4, P3).await?;
    }
    println!("{:<8} {:>3}  {:>10} {:>9} {:>9}  {:>10} {:>9} {:>9}  {:>6}", "path", "c", "0.2 rps", "p50", "p99", "0.3 rps", "p50", "p99", "0.3/0.2");
    for (name, p2, p3) in &paths {
        for c in [1, 64] {
            let two = load(*p2, c, P2).await?;
            let three = load(*p3, c, P3).await?;
            println!(
                "{name:<8} {c:>3}  {:>10.0} {:>9.2?} {:>9.2?}  {:>10.0} {:>9.2?} {:>9.2?}  {:>6.2}",
                two.rps,
                two.p50,
                two.p99,
                three.rps,
                three.p50,
                three.p99,
                three.rps / two.rps
            );
        }
    }
    Ok(())
}

//! `misbehave-p3`: a test fixture that exercises the host's limits and imports with a WASI 0.3
//! component (`wasi:http/handler@0.3.0`, an `async fn handle`).
//!
//! It picks its behaviour from the request path:
//! - `/loop` spins forever (epoch interruption must stop it at its deadline);
//! - `/grow` allocates 1 MiB chunks forever (a memory cap must stop it);
//! - `/sleep?ms=N` awaits `wasi:clocks/monotonic-clock.wait-for` N ms (at most 60000), then
//!   answers `slept N\n`;
//! - `/late?ms=N` returns its response head at once and writes the body (`late N\n`) N ms
//!   (at most 60000) later, from a task that outlives `handle`;
//! - `/authority` asks the 0.3 WASI interfaces for what the host denies by default: preopened
//!   directories (`wasi:filesystem/preopens@0.3.0`), environment (`wasi:cli/environment`) and a
//!   TCP connection to 127.0.0.1:4222 (`wasi:sockets/types@0.3.0`), and answers
//!   `dirs=N env=N tcp=<outcome>\n`;
//! - `/ping?message=M` calls `trellis:examples/pingpong.ping` (a 0.2-form interface: a plain
//!   sync `func`) through a link and answers `pong <first outcome>\n`, or `err <why>\n`;
//! - anything else answers `misbehave-p3 v1\n`.

use std::hint::black_box;

mod bindings {
    wit_bindgen::generate!({
        inline: "
            package trellis:misbehave-p3;
            world misbehave-p3 {
                include wasi:http/service@0.3.0;
                import wasi:filesystem/preopens@0.3.0;
                import wasi:cli/environment@0.3.0;
                import wasi:sockets/types@0.3.0;
                import trellis:examples/pingpong@0.1.0;
            }
        ",
        path: ["../../../interfaces/wasi-http-0.3", "../../../interfaces/trellis-examples"],
        world: "trellis:misbehave-p3/misbehave-p3",
        generate_all,
    });
}

use bindings::exports::wasi::http::handler::Guest;
use bindings::trellis::examples::pingpong;
use bindings::wasi::http::types::{ErrorCode, Fields, Request, Response};
use bindings::{wit_future, wit_stream};

const CHUNK: usize = 1 << 20;

struct MisbehaveP3;

bindings::export!(MisbehaveP3 with_types_in bindings);

impl Guest for MisbehaveP3 {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        let body = match path.as_str() {
            "/loop" => spin(),
            "/grow" => grow(),
            "/authority" => authority().await,
            p if p.starts_with("/sleep?ms=") => {
                let ms: u64 = p.trim_start_matches("/sleep?ms=").parse().unwrap_or(0).min(60_000);
                bindings::wasi::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                format!("slept {ms}\n")
            }
            p if p.starts_with("/late?ms=") => {
                let ms: u64 = p.trim_start_matches("/late?ms=").parse().unwrap_or(0).min(60_000);
                return Ok(late(ms));
            }
            p if p.starts_with("/ping?message=") => ping(p.trim_start_matches("/ping?message=")),
            _ => "misbehave-p3 v1\n".to_string(),
        };
        Ok(text(body.into_bytes()))
    }
}

fn spin() -> String {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn grow() -> String {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(black_box(vec![1u8; CHUNK]));
    }
}

async fn authority() -> String {
    use bindings::wasi::sockets::types::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, TcpSocket};
    let dirs = bindings::wasi::filesystem::preopens::get_directories().len();
    let env = bindings::wasi::cli::environment::get_environment().len();
    let tcp = match TcpSocket::create(IpAddressFamily::Ipv4) {
        Err(e) => format!("create:{e:?}"),
        Ok(socket) => match socket.connect(IpSocketAddress::Ipv4(Ipv4SocketAddress { port: 4222, address: (127, 0, 0, 1) })).await {
            Ok(()) => "allowed".to_string(),
            Err(e) => format!("connect:{e:?}"),
        },
    };
    format!("dirs={dirs} env={env} tcp={tcp}\n")
}

fn ping(message: &str) -> String {
    let request = pingpong::Request {
        message: message.to_string(),
        count: 1,
        tags: vec![],
        reply_to: None,
        volume: pingpong::Volume::Normal,
        marks: pingpong::Marks::empty(),
    };
    match pingpong::ping(&request) {
        Ok(reply) => match reply.outcomes.first() {
            Some(pingpong::Outcome::Pong(s)) => format!("pong {s}\n"),
            other => format!("pong? {other:?}\n"),
        },
        Err(e) => format!("err {e}\n"),
    }
}

/// A response whose body a spawned task writes `ms` milliseconds after `handle` has returned.
fn late(ms: u64) -> Response {
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (response, _sent) = Response::new(Fields::new(), Some(body_rx), trailers_rx);
    wit_bindgen::spawn(async move {
        bindings::wasi::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
        let _ = body_tx.write_all(format!("late {ms}\n").into_bytes()).await;
    });
    response
}

/// A `text/plain` response whose body a spawned task writes after `handle` has returned.
fn text(body: Vec<u8>) -> Response {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).expect("content-type is a valid header");
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
    wit_bindgen::spawn(async move {
        let _ = body_tx.write_all(body).await;
    });
    response
}

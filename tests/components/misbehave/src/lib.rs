//! `misbehave`: a test fixture that exercises the host's resource limits.
//!
//! It exports `wasi:http/incoming-handler` and picks its behaviour from the
//! request path:
//! - `/loop` spins forever (fuel / epoch interruption must stop it);
//! - `/grow` allocates 1 MiB chunks forever (a memory cap must stop it);
//! - `/env` reports how many environment variables and args it can see
//!   (the host should hand components none of its own);
//! - `/file` tries to read `/etc/hostname` and to create a file in `/tmp`,
//!   and answers with what it got (the host gives components no
//!   directories);
//! - `/socket?port=N` tries a TCP connection to 127.0.0.1:N (default 4222)
//!   through `wasi:sockets` and answers with what it got (the host gives
//!   components no network);
//! - `/config` answers its named config through `wasi:config` (`store.get`
//!   of `greeting`, `runtime.get-all`) as `greeting=… all=k=v,…`;
//! - `/log?MESSAGE` logs MESSAGE at warn through `wasi:logging`;
//! - `/sleep?ms=N` waits N milliseconds (at most 60000), then answers
//!   `slept N\n` (a call that is held for a while: tests kill its host);
//! - `/echo` streams the request body back as the response body, chunk by
//!   chunk, never holding all of it;
//! - anything else answers `misbehave v1\n`, which tests use to tell this
//!   component apart from `http-hello`.

use std::hint::black_box;
use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const CHUNK: usize = 1 << 20;

struct Misbehave;

wasi::http::proxy::export!(Misbehave);

impl Guest for Misbehave {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let body = match request.path_with_query().as_deref() {
            Some("/echo") => return echo(request, response_out),
            Some("/loop") => spin(),
            Some("/grow") => grow(),
            Some("/env") => format!(
                "env={} args={}\n",
                std::env::vars_os().count(),
                std::env::args_os().count()
            ),
            Some("/file") => files(),
            Some("/config") => config(),
            Some(p) if p.starts_with("/log?") => {
                let message = p.trim_start_matches("/log?");
                bindings::wasi::logging::logging::log(bindings::wasi::logging::logging::Level::Warn, "misbehave", message);
                "logged\n".to_string()
            }
            Some(p) if p.starts_with("/sleep?ms=") => {
                let ms: u64 = p.trim_start_matches("/sleep?ms=").parse().unwrap_or(0).min(60_000);
                wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                format!("slept {ms}\n")
            }
            Some(p) if p == "/socket" || p.starts_with("/socket?") => {
                let port = p
                    .split_once("port=")
                    .and_then(|(_, v)| v.split('&').next()?.parse().ok())
                    .unwrap_or(4222);
                socket(port)
            }
            _ => "misbehave v1\n".to_string(),
        };
        respond(response_out, body.as_bytes());
    }
}

mod bindings {
    wit_bindgen::generate!({
        inline: "
            package trellis:misbehave;
            world misbehave {
                import wasi:config/store@0.2.0-draft;
                import wasi:config/runtime@0.2.0-draft;
                import wasi:logging/logging@0.1.0-draft;
            }
        ",
        path: ["../../../interfaces/wasi-config", "../../../interfaces/wasi-logging"],
        world: "trellis:misbehave/misbehave",
        generate_all,
    });
}

/// Its named config through both names of wasi:config: `greeting=… all=k=v,…`.
fn config() -> String {
    use bindings::wasi::config::{runtime, store};
    let greeting = match store::get("greeting") {
        Ok(v) => v.unwrap_or_else(|| "-".into()),
        Err(e) => format!("error {e:?}"),
    };
    let all = match runtime::get_all() {
        Ok(pairs) => pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        Err(e) => format!("error {e:?}"),
    };
    format!("greeting={greeting} all={all}\n")
}

/// Reads a file and creates one; each line says what happened.
fn files() -> String {
    let read = match std::fs::read_to_string("/etc/hostname") {
        Ok(text) => format!("read /etc/hostname: allowed ({} bytes)", text.len()),
        Err(e) => format!("read /etc/hostname: error: {e}"),
    };
    let create = match std::fs::write("/tmp/trellis-misbehave.txt", b"written by a component") {
        Ok(()) => "create /tmp/trellis-misbehave.txt: allowed".to_string(),
        Err(e) => format!("create /tmp/trellis-misbehave.txt: error: {e}"),
    };
    format!("{read}\n{create}\n")
}

/// Connects to 127.0.0.1:`port` over TCP with `wasi:sockets` directly, so the
/// attempt reaches the host whatever the standard library supports.
fn socket(port: u16) -> String {
    use wasi::sockets::network::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
    let what = format!("connect 127.0.0.1:{port}");
    let socket = match wasi::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4) {
        Ok(socket) => socket,
        Err(e) => return format!("{what}: error: cannot create a TCP socket: {e}\n"),
    };
    let network = wasi::sockets::instance_network::instance_network();
    let address = IpSocketAddress::Ipv4(Ipv4SocketAddress { port, address: (127, 0, 0, 1) });
    if let Err(e) = socket.start_connect(&network, address) {
        return format!("{what}: error: {e}\n");
    }
    socket.subscribe().block();
    match socket.finish_connect() {
        Ok(_) => format!("{what}: allowed\n"),
        Err(e) => format!("{what}: error: {e}\n"),
    }
}

/// Copies the request body to the response body as it arrives.
fn echo(request: IncomingRequest, response_out: ResponseOutparam) {
    let incoming = request.consume().expect("body is consumed once");
    let input = incoming.stream().expect("stream is taken once");
    let headers = Fields::from_list(&[("content-type".to_string(), b"application/octet-stream".to_vec())])
        .expect("content-type is a valid header");
    let response = OutgoingResponse::new(headers);
    let outgoing = response.body().expect("body is taken only once");
    ResponseOutparam::set(response_out, Ok(response));
    let mut out = outgoing.write().expect("stream is taken only once");
    loop {
        match input.blocking_read(64 * 1024) {
            Ok(chunk) => out.write_all(&chunk).expect("write body"),
            Err(wasi::io::streams::StreamError::Closed) => break,
            Err(e) => panic!("reading the request body failed: {e:?}"),
        }
    }
    out.flush().expect("flush body");
    drop(out);
    drop(input);
    OutgoingBody::finish(outgoing, None).expect("finish body");
}

/// Never returns. `black_box` hides the counter from the optimiser, which may
/// otherwise delete a side-effect-free infinite loop.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Never returns. Every chunk is written to and kept, so the pages are really
/// committed and nothing can be freed or elided.
fn grow() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        hoard.push(black_box(chunk));
    }
}

/// Sends `200 text/plain` with `body`. A failure panics, trapping the
/// instance, which the host turns into a 500: there is no caller to tell.
fn respond(response_out: ResponseOutparam, body: &[u8]) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
        .expect("content-type is a valid header");
    let response = OutgoingResponse::new(headers);
    let outgoing = response.body().expect("body is taken only once");
    ResponseOutparam::set(response_out, Ok(response));
    let mut out = outgoing.write().expect("stream is taken only once");
    out.write_all(body).expect("write body");
    out.flush().expect("flush body");
    drop(out);
    OutgoingBody::finish(outgoing, None).expect("finish body");
}

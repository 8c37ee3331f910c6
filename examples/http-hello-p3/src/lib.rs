//! `http-hello-p3`: the hello component for WASI 0.3 (native async in the component model).
//!
//! It exports `wasi:http/handler@0.3.0` (the `wasi:http/service` world, from the WIT the host's
//! wasmtime 48 ships, vendored in `interfaces/wasi-http-0.3`) with an `async fn handle`:
//! - `/echo` streams the request body back as the response body, chunk by chunk as it
//!   arrives, never holding all of it (a `stream<u8>` in, a `stream<u8>` out);
//! - `/sleep?ms=N` waits N milliseconds (at most 60000) with the async
//!   `wasi:clocks/monotonic-clock.wait-for`, then answers `slept N\n`: the instance awaits
//!   without blocking anything of the host;
//! - anything else answers `200 OK`, `content-type: text/plain`, `Hello from Trellis (WASI 0.3)!\n`.
//!
//! `handle` returns the response head at once; a task it spawns writes the body after it has
//! returned. Build it with `cargo build --release --target wasm32-wasip2`.

wit_bindgen::generate!({
    path: "../../interfaces/wasi-http-0.3",
    world: "wasi:http/service",
    generate_all,
});

use exports::wasi::http::handler::Guest;
use wasi::http::types::{ErrorCode, Fields, Request, Response};

/// The greeting, shared with the 0.2 hello but for the suffix that tells them apart.
const HELLO: &[u8] = b"Hello from Trellis (WASI 0.3)!\n";

struct HttpHelloP3;

export!(HttpHelloP3);

impl Guest for HttpHelloP3 {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        match request.get_path_with_query().as_deref() {
            Some("/echo") => Ok(echo(request)),
            Some(p) if p.starts_with("/sleep?ms=") => {
                let ms: u64 = p.trim_start_matches("/sleep?ms=").parse().unwrap_or(0).min(60_000);
                wasi::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                Ok(text(format!("slept {ms}\n").into_bytes()))
            }
            _ => Ok(text(HELLO.to_vec())),
        }
    }
}

/// A `text/plain` response whose body a spawned task writes.
fn text(body: Vec<u8>) -> Response {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).expect("content-type is a valid header");
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    drop(trailers_tx); // no trailers: the default above (`Ok(None)`) is sent
    let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
    wit_bindgen::spawn(async move {
        let rest = body_tx.write_all(body).await;
        // The reader went away (the caller hung up): nothing to tell anyone.
        let _ = rest;
    });
    response
}

/// The request body, streamed back as it arrives.
fn echo(request: Request) -> Response {
    let (done_tx, done_rx) = wit_future::new(|| Ok(()));
    let (mut body_in, request_trailers) = Request::consume_body(request, done_rx);
    let (mut body_out, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let headers = Fields::from_list(&[("content-type".to_string(), b"application/octet-stream".to_vec())]).expect("a valid header");
    let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
    wit_bindgen::spawn(async move {
        // Reads of at most 64 KiB, each written out before the next is read.
        loop {
            let (status, chunk) = body_in.read(Vec::with_capacity(64 * 1024)).await;
            if chunk.is_empty() && !matches!(status, wit_bindgen::StreamResult::Complete(_)) {
                break;
            }
            if !body_out.write_all(chunk).await.is_empty() {
                break; // the reader hung up
            }
        }
        drop(body_out);
        let trailers = request_trailers.await;
        let _ = trailers_tx.write(trailers.map(|_| None)).await;
        let _ = done_tx.write(Ok(())).await;
    });
    response
}

//! `kvbench`: times `wasi:keyvalue` calls from inside a component, so the benchmark sees the
//! cost of the call through the lattice and nothing else (no HTTP, no instantiation).
//!
//! `GET /get?n=N` sets key `bench` once, then gets it N times; `GET /increment?n=N`
//! increments key `bench-counter` N times. The body is one line per call: its duration in
//! nanoseconds (wasi:clocks monotonic clock). Any key-value error answers 503 with its text.

use std::io::Write as _;

use wasi::clocks::monotonic_clock::now;
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

mod bindings {
    wit_bindgen::generate!({
        inline: "
            package trellis:kvbench;
            world kvbench {
                import wasi:keyvalue/store@0.2.0-draft;
                import wasi:keyvalue/atomics@0.2.0-draft;
            }
        ",
        path: ["../../../interfaces/wasi-keyvalue"],
        world: "trellis:kvbench/kvbench",
        generate_all,
    });
}

use bindings::wasi::keyvalue::{atomics, store};

struct KvBench;

wasi::http::proxy::export!(KvBench);

impl Guest for KvBench {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let full = request.path_with_query().unwrap_or_default();
        let (path, query) = full.split_once('?').unwrap_or((&full, ""));
        let n: usize = query.strip_prefix("n=").and_then(|n| n.parse().ok()).unwrap_or(100);
        match run(path, n) {
            Ok(text) => respond(out, 200, text.as_bytes()),
            Err(e) => respond(out, 503, e.as_bytes()),
        }
    }
}

fn run(path: &str, n: usize) -> Result<String, String> {
    let err = |e: store::Error| format!("{e:?}\n");
    let bucket = store::open("default").map_err(err)?;
    let mut times = Vec::with_capacity(n);
    match path {
        "/get" => {
            bucket.set("bench", b"value").map_err(err)?;
            for _ in 0..n {
                let t = now();
                let v = bucket.get("bench").map_err(err)?;
                times.push(now() - t);
                if v.as_deref() != Some(b"value".as_slice()) {
                    return Err("get returned the wrong value\n".into());
                }
            }
        }
        "/increment" => {
            for _ in 0..n {
                let t = now();
                atomics::increment(&bucket, "bench-counter", 1).map_err(err)?;
                times.push(now() - t);
            }
        }
        other => return Err(format!("unknown benchmark `{other}`; use /get or /increment\n")),
    }
    Ok(times.iter().map(|t| format!("{t}\n")).collect())
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status");
    let out_body = response.body().expect("body is taken only once");
    ResponseOutparam::set(out, Ok(response));
    let mut stream = out_body.write().expect("stream is taken only once");
    // The blocking write is limited to 4096 bytes per call; write_all loops.
    stream.write_all(body).expect("write body");
    stream.flush().expect("flush body");
    drop(stream);
    OutgoingBody::finish(out_body, None).expect("finish body");
}

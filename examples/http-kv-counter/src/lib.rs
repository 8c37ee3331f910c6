//! `http-kv-counter`: counts requests per path in a key-value store it reaches through a link.
//!
//! It exports `wasi:http/incoming-handler` and imports `wasi:keyvalue/store`, `atomics`
//! (`@0.2.0-draft`, as wasmCloud components do) and `trellis:keyvalue/cas`:
//!
//! - `GET /NAME` (any method) increments the counter `NAME` by one and answers the new count
//!   as the body, e.g. `3`.
//! - `?bucket=ID` opens bucket `ID` instead of `default` (the link's configured bucket).
//! - `?by=N` increments by `N` instead of one.
//! - `?cas=NEW&expect=OLD` instead sets key `NAME` to `NEW` only if it holds `OLD` now (no
//!   `expect`: only if it is absent); `200 swapped`, or `409 conflict CURRENT` (`-` for
//!   absent).
//! - `?get` answers the value of `NAME` without changing it (`404` when absent).
//! - `?link=LINK` first picks the link named `LINK` for the key-value interfaces
//!   (`wasmcloud:bus/lattice` `set-link-name`), e.g. to reach a second store.
//!
//! A key-value error is an ordinary value here, not a trap: the answer is `503` with the
//! error's text, which names the backend and the cause.
//!
//! Build it with `cargo build --release --target wasm32-wasip2`.

use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

mod bindings {
    wit_bindgen::generate!({
    inline: "
        package trellis:http-kv-counter;
        world counter {
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
            import trellis:keyvalue/cas@0.1.0;
            import wasmcloud:bus/lattice@2.0.0;
        }
    ",
    path: ["../../interfaces/wasi-keyvalue", "../../interfaces/trellis-keyvalue", "../../interfaces/wasmcloud-bus"],
    world: "trellis:http-kv-counter/counter",
    generate_all,
    });
}

use bindings::trellis::keyvalue::cas::{Outcome, compare_and_swap};
use bindings::wasi::keyvalue::atomics::increment;
use bindings::wasi::keyvalue::store::{Error, open};
use bindings::wasmcloud::bus::lattice::{CallTargetInterface, set_link_name};

struct Counter;

wasi::http::proxy::export!(Counter);

impl Guest for Counter {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let full = request.path_with_query().unwrap_or_default();
        let (path, query) = full.split_once('?').unwrap_or((&full, ""));
        let name = path.trim_start_matches('/');
        let (status, text) = if name.is_empty() { (400, "name a counter in the path, e.g. /hits\n".to_string()) } else { answer(name, query) };
        respond(response_out, status, text.as_bytes());
    }
}

fn answer(name: &str, query: &str) -> (u16, String) {
    let param = |key: &str| {
        query.split('&').filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k == key).then(|| v.to_string())
        }).next()
    };
    if let Some(link) = param("link") {
        let interfaces = ["store", "atomics"].map(|i| CallTargetInterface::new("wasi", "keyvalue", i));
        if let Err(e) = set_link_name(&link, interfaces.into()) {
            return (400, format!("{e}\n"));
        }
    }
    let bucket = match open(param("bucket").as_deref().unwrap_or("default")) {
        Ok(b) => b,
        Err(e) => return (503, describe(&e)),
    };
    if let Some(new) = param("cas") {
        let expected = param("expect").map(String::into_bytes);
        return match compare_and_swap(&bucket, name, expected.as_deref(), new.as_bytes()) {
            Ok(Outcome::Swapped) => (200, "swapped\n".into()),
            Ok(Outcome::Conflict(current)) => {
                (409, format!("conflict {}\n", current.map(|c| String::from_utf8_lossy(&c[..]).into_owned()).unwrap_or_else(|| "-".into())))
            }
            Err(e) => (503, describe(&e)),
        };
    }
    if param("get").is_some() {
        return match bucket.get(name) {
            Ok(Some(v)) => (200, format!("{}\n", String::from_utf8_lossy(&v))),
            Ok(None) => (404, format!("no key `{name}`\n")),
            Err(e) => (503, describe(&e)),
        };
    }
    let by = match param("by").map(|b| b.parse::<u64>()) {
        None => 1,
        Some(Ok(n)) => n,
        Some(Err(_)) => return (400, "`by` must be a whole number\n".into()),
    };
    match increment(&bucket, name, by) {
        Ok(n) => (200, format!("{n}\n")),
        Err(e) => (503, describe(&e)),
    }
}

fn describe(e: &Error) -> String {
    match e {
        Error::NoSuchStore => "keyvalue error: no such store\n".into(),
        Error::AccessDenied => "keyvalue error: access denied\n".into(),
        Error::Other(m) => format!("keyvalue error: {m}\n"),
    }
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).expect("content-type is a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status");
    let out_body = response.body().expect("body is taken only once");
    ResponseOutparam::set(out, Ok(response));
    let mut stream = out_body.write().expect("stream is taken only once");
    stream.write_all(body).expect("write body");
    stream.flush().expect("flush body");
    drop(stream);
    OutgoingBody::finish(out_body, None).expect("finish body");
}

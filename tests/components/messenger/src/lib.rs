//! `messenger`: a test fixture that drives `wasmcloud:messaging/consumer` from HTTP.
//!
//! It exports `wasi:http/incoming-handler` and imports `wasmcloud:messaging/consumer@0.2.0`:
//! - `/request/SUBJECT?timeout_ms=N` sends the request body as a request to `SUBJECT`
//!   (timeout 5000 ms unless given) and answers `200` with the reply's body;
//! - `/publish/SUBJECT?reply-to=R` publishes the request body to `SUBJECT` (with reply
//!   subject `R` if given) and answers `200 published`;
//! - an error value of the consumer call answers `502` with `err ` and its text.

use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

mod bindings {
    wit_bindgen::generate!({
        inline: "
            package trellis:messenger;
            world messenger {
                import wasmcloud:messaging/consumer@0.2.0;
            }
        ",
        path: ["../../../interfaces/wasmcloud-messaging"],
        world: "trellis:messenger/messenger",
        generate_all,
    });
}

use bindings::wasmcloud::messaging::consumer::{publish, request};
use bindings::wasmcloud::messaging::types::BrokerMessage;

struct Messenger;

wasi::http::proxy::export!(Messenger);

impl Guest for Messenger {
    fn handle(req: IncomingRequest, response_out: ResponseOutparam) {
        let full = req.path_with_query().unwrap_or_default();
        let (path, query) = full.split_once('?').unwrap_or((&full, ""));
        let param = |key: &str| {
            query.split('&').find_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k == key).then(|| v.to_string())
            })
        };
        let body = read_body(req);
        let outcome = if let Some(subject) = path.strip_prefix("/request/") {
            let timeout = param("timeout_ms").and_then(|t| t.parse().ok()).unwrap_or(5000);
            request(subject, &body, timeout).map(|reply| reply.body)
        } else if let Some(subject) = path.strip_prefix("/publish/") {
            let msg = BrokerMessage { subject: subject.to_string(), body, reply_to: param("reply-to") };
            publish(&msg).map(|()| b"published".to_vec())
        } else {
            return respond(response_out, 404, b"use /request/SUBJECT or /publish/SUBJECT\n");
        };
        match outcome {
            Ok(body) => respond(response_out, 200, &body),
            Err(e) => respond(response_out, 502, format!("err {e}").as_bytes()),
        }
    }
}

fn read_body(req: IncomingRequest) -> Vec<u8> {
    let incoming = req.consume().expect("body is consumed once");
    let input = incoming.stream().expect("stream is taken once");
    let mut out = Vec::new();
    loop {
        match input.blocking_read(64 * 1024) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(wasi::io::streams::StreamError::Closed) => break,
            Err(e) => panic!("reading the request body failed: {e:?}"),
        }
    }
    out
}

fn respond(response_out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).expect("content-type is a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status");
    let outgoing = response.body().expect("body is taken only once");
    ResponseOutparam::set(response_out, Ok(response));
    let mut out = outgoing.write().expect("stream is taken only once");
    out.write_all(body).expect("write body");
    out.flush().expect("flush body");
    drop(out);
    OutgoingBody::finish(outgoing, None).expect("finish body");
}

//! `http-echo`: answers every request with its own body.
//!
//! It exports `wasi:http/incoming-handler`, reads the request body as it arrives and writes
//! each piece straight back (`200 OK`, `content-type: application/octet-stream`), so memory
//! stays at one piece whatever the body's size. It is the example that reads a request body:
//! bodies larger than one NATS message reach it pulled chunk by chunk over the data plane.
//!
//! `handle` has no caller to return an error to: if a step fails, panicking traps the
//! instance and the host answers the request with a 500 itself.

use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::io::streams::StreamError;
use wasi::http::types::{Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct HttpEcho;

wasi::http::proxy::export!(HttpEcho);

/// The most read from the request body at a time.
const PIECE: u64 = 64 * 1024;

impl Guest for HttpEcho {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let incoming = request.consume().expect("the request body is taken only once");
        let headers = Fields::from_list(&[("content-type".to_string(), b"application/octet-stream".to_vec())])
            .expect("content-type is a valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("body is taken only once");
        ResponseOutparam::set(response_out, Ok(response));

        {
            let mut input = incoming.stream().expect("the request stream is taken only once");
            let mut out = body.write().expect("the response stream is taken only once");
            loop {
                match input.blocking_read(PIECE) {
                    Ok(piece) => out.write_all(&piece).expect("write the response body"),
                    Err(StreamError::Closed) => break,
                    Err(e) => panic!("read the request body: {e:?}"),
                }
            }
            out.flush().expect("flush the response body");
        } // both streams must be dropped before their bodies are finished
        let _trailers = IncomingBody::finish(incoming);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}

//! `http-hello`: the smallest useful Trellis component.
//!
//! It exports `wasi:http/incoming-handler` and answers every request with
//! `200 OK`, `content-type: text/plain` and the body `Hello from Trellis!\n`.
//! Build it with `cargo build --release --target wasm32-wasip2`.
//!
//! `handle` has no caller to return an error to: if a step fails, panicking
//! traps the instance and the host answers the request with a 500 itself.

use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct HttpHello;

wasi::http::proxy::export!(HttpHello);

impl Guest for HttpHello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
            .expect("content-type is a valid header");
        let response = OutgoingResponse::new(headers); // status defaults to 200
        let body = response.body().expect("body is taken only once");

        // Hand the response head to the host first; the body streams after it.
        ResponseOutparam::set(response_out, Ok(response));

        let mut out = body.write().expect("stream is taken only once");
        out.write_all(b"Hello from Trellis!\n").expect("write body");
        out.flush().expect("flush body");
        drop(out); // the stream must be dropped before the body is finished
        OutgoingBody::finish(body, None).expect("finish body");
    }
}

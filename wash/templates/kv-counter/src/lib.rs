//! `{{name}}`: counts requests per path in a key-value store it reaches through a link.
//! `GET /NAME` adds one to the counter `NAME` and answers its new value.
//! `wash build` builds and signs it; `wash dev` runs it and swaps in each change.

use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "component", generate_all });
}

use bindings::wasi::keyvalue::{atomics, store};

/// Put before each count in the answer.
const PREFIX: &str = "count: ";

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let name = path.split('?').next().unwrap_or_default().trim_start_matches('/');
        let (status, text) = if name.is_empty() {
            (400, "name a counter in the path, e.g. /hits\n".to_string())
        } else {
            match store::open("default").and_then(|bucket| atomics::increment(&bucket, name, 1)) {
                Ok(n) => (200, format!("{PREFIX}{n}\n")),
                Err(e) => (503, format!("the key-value store failed: {e:?}\n")),
            }
        };
        respond(response_out, status, text.as_bytes());
    }
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).expect("a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status");
    let out_body = response.body().expect("the body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let mut stream = out_body.write().expect("the stream is taken once");
    stream.write_all(body).expect("write the body");
    stream.flush().expect("flush the body");
    drop(stream);
    OutgoingBody::finish(out_body, None).expect("finish the body");
}
